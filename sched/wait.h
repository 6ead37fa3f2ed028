/*
 * sched/wait.h -- waiting on a queue: the one mechanism under channels, select and
 * every synchronization primitive (Go's sudog + gopark, and futexes for plain threads).
 *
 * A blocking operation:
 *   1. weft__wait_begin(&wc): a new wait generation. For a G, its claim word is
 *      g->wakestate = gen << 2 | WAIT_WAITING; for a plain thread, wc.plain.
 *   2. under the object's lock, links one struct waiter per queue it waits on (select:
 *      one per case, all sharing the claim word) -- waiters live on the caller's stack;
 *   3. weft__wait_block(&wc, unlock, arg, deadline): releases the lock(s) only once the
 *      caller can no longer run (a G: in the park's unlock function, on the next
 *      context; it also arms the deadline timer there), then sleeps;
 *   4. a waker, holding the lock, unlinks a waiter and CLAIMS it (CAS WAITING ->
 *      CLAIMED on the claim word); only the claimer may then hand over data, set
 *      w->result, and weft__waiter_wake() it. A waiter whose claim fails belongs to an
 *      operation that already ended (another case, or its deadline): skip it;
 *   5. the deadline timer CASes WAITING -> TIMEDOUT and readies the G; a plain thread's
 *      timed futex wait does the same CAS itself. Exactly one of 4 and 5 wins;
 *   6. back in the operation: on TIMEDOUT it unlinks its waiters that are still linked
 *      (under the lock) and returns -ETIMEDOUT; on CLAIMED the result is in w->result.
 * The generation in the claim word stops a stale timer of an earlier wait from
 * touching a later one; weft__timer_del waits for a firing timer to finish.
 */
#ifndef WEFT_SCHED_WAIT_H
#define WEFT_SCHED_WAIT_H
#include "sched/sched.h"

enum { WAIT_WAITING = 0, WAIT_CLAIMED = 1, WAIT_TIMEDOUT = 2, WAIT_DONE = 3 };

struct waitctx {
    struct g *g;                  /* NULL: a plain thread */
    _Atomic uint32_t *state;      /* the claim word */
    uint32_t expect;              /* gen << 2 | WAIT_WAITING */
    _Atomic uint32_t plain;       /* a plain thread's claim word (also its futex) */
    int fired;                    /* select: the case whose waiter was claimed */
    bool exclusive;               /* one waiter, no deadline: claims need no CAS */
};

struct waitq;
struct selinfo;

struct waiter {
    struct waiter *next, *prev;
    struct waitq *q;              /* the queue it is linked on; NULL once unlinked */
    struct waitctx *wc;
    void *elem;                   /* channel element to fill or take */
    int result;                   /* set by the claimer */
    int idx;                      /* select case */
    int closed;                   /* select: fired because the channel was closed */
    bool handoff;                 /* mutex: ownership handed over */
    int64_t since;                /* mutex: when it began to wait (starvation) */
    void *sel;                    /* select: the caller's case array (for the claimer) */
};

struct waitq {
    struct waiter *head, *tail;
};

static inline void weft__wait_begin(struct waitctx *wc)
{
    struct g *gp = weft__current_g();
    wc->g = gp;
    wc->exclusive = false;
    if (gp != NULL) {
        uint32_t gen = ++gp->waitgen;
        wc->expect = gen << 2 | WAIT_WAITING;
        atomic_store_explicit(&gp->wakestate, wc->expect, RLX);
        wc->state = &gp->wakestate;
    } else {
        wc->expect = WAIT_WAITING;
        atomic_store_explicit(&wc->plain, WAIT_WAITING, RLX);
        wc->state = &wc->plain;
    }
}

static inline void weft__waitq_push(struct waitq *q, struct waiter *w, bool front)
{
    w->q = q;
    if (front) {
        w->prev = NULL;
        w->next = q->head;
        if (q->head != NULL)
            q->head->prev = w;
        else
            q->tail = w;
        q->head = w;
        return;
    }
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail != NULL)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
}

static inline void weft__waitq_remove(struct waitq *q, struct waiter *w)
{
    if (w->q != q)
        return;
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    w->next = w->prev = NULL;
    w->q = NULL;
}

/* acq_rel: the claimer's later writes (data, result) are ordered after the claim and
 * published by the wake; the acquire side pairs with the waiter's setup. */
static inline bool weft__waiter_claim(struct waiter *w)
{
    uint32_t e = w->wc->expect;
    if (w->wc->exclusive) {
        /* no deadline, one waiter: only a waker holding the queue's lock can claim */
        atomic_store_explicit(w->wc->state, (e & ~3u) | WAIT_CLAIMED, RLX);
        return true;
    }
    return atomic_compare_exchange_strong_explicit(w->wc->state, &e, (e & ~3u) | WAIT_CLAIMED,
                                                   memory_order_acq_rel, RLX);
}

/* Unlink and claim the first claimable waiter, or NULL. Lock held. */
static inline struct waiter *weft__waitq_claim(struct waitq *q)
{
    struct waiter *w;
    while ((w = q->head) != NULL) {
        weft__waitq_remove(q, w);
        if (weft__waiter_claim(w))
            return w;
    }
    return NULL;
}

static inline bool weft__waitq_empty(const struct waitq *q)
{
    return q->head == NULL;
}

WEFT_HIDDEN void weft__waiter_wake(struct waiter *w);   /* after a successful claim */
/* Steps 3 and 5; returns 0 (claimed) or -ETIMEDOUT. */
WEFT_HIDDEN int weft__wait_block(struct waitctx *wc, void (*unlock)(void *), void *arg,
                                 int64_t deadline, const char *reason);
#endif
