/*
 * sched/wait.c -- blocking and waking for wait.h (the protocol and its invariants are
 * there). Callers: chan.c, sync.c. Calls: proc.c (weft__sched_park, weft__sched_ready),
 * timer.c (a wait's timeout), mem/ (the futex, for plain threads).
 */
#include <errno.h>
#include "sched/wait.h"

void weft__waiter_wake(struct waiter *w)
{
    struct waitctx *wc = w->wc;
    if (wc->g != NULL) {
        weft__sched_ready(wc->g);
        return;
    }
    /* Everything read from wc before the store: once the waiter sees DONE it returns
     * and its frame, wc with it, is gone (ThreadSanitizer saw wc->state reread for the
     * wake after the store). The wake itself may come after the waiter left: at worst
     * a spurious wake-up of whatever waits on that address next, which every futex
     * waiter here tolerates (each re-checks its word in a loop). */
    _Atomic uint32_t *state = wc->state;
    uint32_t done = (wc->expect & ~3u) | WAIT_DONE;
    /* release: the data and w->result are visible to the woken thread */
    atomic_store_explicit(state, done, REL);
    weft__futex_wake(state, 1);
}

/* The G to ready if the timeout won the wait (timer.c readies it) */
static struct g *timeout_fire(struct timer *t)
{
    struct g *gp = (struct g *)((char *)t - offsetof(struct g, timer));
    uint32_t e = t->seq;
    if (atomic_compare_exchange_strong_explicit(&gp->wakestate, &e, (e & ~3u) | WAIT_TIMEDOUT,
                                                memory_order_acq_rel, RLX))
        return gp;
    return NULL;
}

struct parkarg {
    void (*unlock)(void *);
    void *arg;
    int64_t deadline;
    uint32_t expect;
};

/* Runs on the next context, gp off its stack. *pa lives on gp's stack: once the timer
 * is armed it can fire at once on another M and resume gp, whose frame then goes away,
 * so everything needed from *pa is read before the timer is armed. (The unlock function
 * itself may still read gp's frame -- select's lock list -- because gp, resumed, first
 * takes those same locks, which are held until unlock releases them.) */
static int park_unlock(struct g *gp, void *a)
{
    struct parkarg *pa = a;
    void (*unlock)(void *) = pa->unlock;
    void *arg = pa->arg;
    if (pa->deadline >= 0) {
        gp->timer.when = pa->deadline;
        gp->timer.f = timeout_fire;
        gp->timer.seq = pa->expect;
        weft__timer_add(&gp->timer);
    }
    unlock(arg);
    return 1;
}

int weft__wait_block(struct waitctx *wc, void (*unlock)(void *), void *arg, int64_t deadline,
                     const char *reason)
{
    if (wc->g != NULL) {
        struct parkarg pa = { unlock, arg, deadline, wc->expect };
        weft__sched_park(park_unlock, &pa, reason);
        /* acquire: pairs with the claimer's or the timer's CAS */
        uint32_t st = atomic_load_explicit(&wc->g->wakestate, ACQ) & 3u;
        if (deadline >= 0 && st != WAIT_TIMEDOUT)
            weft__timer_del(&wc->g->timer);
        return st == WAIT_TIMEDOUT ? -ETIMEDOUT : 0;
    }
    unlock(arg);
    for (;;) {
        uint32_t v = atomic_load_explicit(wc->state, ACQ);
        if ((v & 3u) == WAIT_DONE)
            return 0;
        int64_t left = -1;
        if ((v & 3u) == WAIT_WAITING && deadline >= 0) {
            left = deadline - weft__time_now();
            if (left <= 0) {
                uint32_t e = wc->expect;
                if (atomic_compare_exchange_strong_explicit(wc->state, &e, (e & ~3u) | WAIT_TIMEDOUT,
                                                            memory_order_acq_rel, RLX))
                    return -ETIMEDOUT;
                continue;      /* claimed meanwhile: wait for DONE */
            }
        }
        weft__futex_wait_timeout(wc->state, v, left);
    }
}
