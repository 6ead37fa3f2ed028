/*
 * sched/sync.c -- mutex, rwmutex, cond, wait group, semaphore, once (Go's sync, on
 * wait.h). Every one parks green threads and blocks plain threads on a futex; every
 * wait honours the caller's deadline (-ETIMEDOUT).
 *
 * Each object is a small internal struct in the user's size-only storage (weft.h),
 * valid when zero-filled: a weft_lock that guards its fields and a FIFO wait queue.
 *
 * mutex: state LOCKED bit; lock = one CAS when free. Waiters queue FIFO; unlock wakes
 *   the first, which competes with newcomers (throughput). A waiter that has waited
 *   over 1 ms marks the mutex starving: from then on unlock hands ownership straight
 *   to the first waiter (LOCKED stays set, w->handoff), and a re-queued waiter goes to
 *   the front, so no waiter waits forever (Go's starvation mode). The mode ends when
 *   the queue empties or the waiter served waited under 1 ms.
 *   Invariant (lock held): queue non-empty => WAITERS bit set; a newcomer may take a
 *   free mutex with a CAS only while STARVING is clear. No owner is recorded: as with
 *   Go's sync.Mutex any thread may unlock (a hand-over); only unlocking an unlocked
 *   mutex aborts, naming the public call that did it (weft_cond_wait* unlock too).
 * rwmutex: readers count, writer flag, waiting-writers count. A waiting writer holds
 *   back new readers (no writer starvation); a writer's unlock admits all waiting
 *   readers before the next writer.
 * cond: a queue; wait = enqueue, unlock the mutex, block, relock (also on timeout).
 * wg: counter; wait blocks until 0; add reaching 0 wakes every waiter; an add that
 *   takes it below 0 or past INT64_MAX aborts (each with its own message).
 * sema: count; release hands the permit straight to the first waiter if any.
 * once: 0 -> 1 (running) -> 2 (done); latecomers wait on a queue.
 *
 * Callers: the public weft_mutex_*, weft_rwmutex_*, weft_cond_*, weft_wg_*,
 * weft_sema_*, weft_once calls, from green and plain threads. Calls: wait.c, timer.c
 * (the caller's deadline), current.c.
 *
 * Rejected: reading the clock on every contended lock (it cost a fifth of a contended
 * lock/unlock, and most are won by spinning: the clock is read only once a waiter
 * blocks).
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include "sched/wait.h"

#define STARVE_NS 1000000

static void unlock_lk(void *arg)
{
    weft__unlock(arg);
}

/* Block on q (lk held, released while blocked). Returns 0 when claimed, else
 * -ETIMEDOUT with the waiter unlinked. lk is NOT held on return. */
static int block_on(struct waitq *q, weft_lock *lk, struct waiter *w, bool front, int64_t dl,
                    const char *reason)
{
    struct waitctx wc;
    w->wc = &wc;
    weft__wait_begin(&wc);
    wc.exclusive = dl < 0;
    weft__waitq_push(q, w, front);
    int r = weft__wait_block(&wc, unlock_lk, lk, dl, reason);
    if (r != 0) {
        weft__lock(lk);
        weft__waitq_remove(q, w);
        weft__unlock(lk);
    }
    return r;
}

static inline bool expired(int64_t dl)
{
    return dl >= 0 && dl <= weft__time_now();
}

/* ---- mutex ------------------------------------------------------------------------ */
enum { MU_LOCKED = 1, MU_STARVING = 2, MU_WAITERS = 4, MU_WOKEN = 8 };
struct mutex {
    _Atomic uint32_t state;    /* MU_*; WAITERS, STARVING, WOKEN change under lk (WOKEN
                                  is also cleared by the woken waiter's acquiring CAS) */
    weft_lock lk;
    struct waitq q;
};
_Static_assert(sizeof(struct mutex) <= sizeof(weft_mutex), "weft_mutex too small");

#define MU_SPINS 40

int weft_mutex_trylock(weft_mutex *wm)
{
    struct mutex *m = (struct mutex *)wm;
    uint32_t s = atomic_load_explicit(&m->state, RLX);
    /* acquire: the critical section starts after the previous unlock's release */
    while (!(s & (MU_LOCKED | MU_STARVING)))
        if (atomic_compare_exchange_weak_explicit(&m->state, &s, s | MU_LOCKED, ACQ, RLX))
            return 0;
    return -EBUSY;
}

static int mutex_lock_slow(struct mutex *m)
{
    int64_t dl = weft__deadline_now();
    /* when we first blocked (the clock is read only then: most contended locks are
     * won by spinning, and a clock read cost a fifth of a contended lock/unlock) */
    int64_t start = -1;
    bool waited = false, multi = weft_nprocs() > 1;
    for (int spin = 0;; spin++) {
        uint32_t s = atomic_load_explicit(&m->state, RLX);
        if (!(s & (MU_LOCKED | MU_STARVING))) {
            /* a woken waiter takes the WOKEN mark with it */
            uint32_t want = (s | MU_LOCKED) & (waited ? ~(uint32_t)MU_WOKEN : ~0u);
            if (atomic_compare_exchange_weak_explicit(&m->state, &s, want, ACQ, RLX))
                return 0;
            continue;
        }
        /* the holder runs on another P and critical sections are short: spin a little
         * (Go's active spinning) rather than park at once */
        if (multi && spin < MU_SPINS && !(s & MU_STARVING)) {
            for (int k = 0; k < 30; k++)
                weft__cpu_relax();
            continue;
        }
        weft__lock(&m->lk);
        s = atomic_load_explicit(&m->state, RLX);
        for (;;) {
            if (!(s & (MU_LOCKED | MU_STARVING))) {
                uint32_t want = (s | MU_LOCKED) & (waited ? ~(uint32_t)MU_WOKEN : ~0u);
                if (atomic_compare_exchange_weak_explicit(&m->state, &s, want, ACQ, RLX)) {
                    weft__unlock(&m->lk);
                    return 0;
                }
                continue;
            }
            /* WAITERS makes the unlocker's fast CAS fail, so it will look at the queue;
             * going back to sleep drops our WOKEN mark so the next unlock wakes someone */
            uint32_t want = (s | MU_WAITERS) & (waited ? ~(uint32_t)MU_WOKEN : ~0u);
            if (waited && weft__time_now() - start > STARVE_NS)
                want |= MU_STARVING;
            if (atomic_compare_exchange_weak_explicit(&m->state, &s, want, RLX, RLX))
                break;
        }
        if (expired(dl)) {
            /* (our WOKEN mark, if any, was dropped by the CAS above) */
            if (weft__waitq_empty(&m->q))
                atomic_fetch_and_explicit(&m->state, ~(uint32_t)(MU_WAITERS | MU_STARVING), RLX);
            weft__unlock(&m->lk);
            return -ETIMEDOUT;
        }
        if (start < 0)
            start = weft__time_now();
        struct waiter w = { .since = start };
        int r = block_on(&m->q, &m->lk, &w, waited, dl, "mutex");
        if (r != 0) {
            weft__lock(&m->lk);
            if (weft__waitq_empty(&m->q))
                atomic_fetch_and_explicit(&m->state, ~(uint32_t)(MU_WAITERS | MU_STARVING), RLX);
            weft__unlock(&m->lk);
            return r;
        }
        if (w.handoff)
            return 0;                  /* starving: the unlocker gave it to us, LOCKED stayed */
        waited = true;
        spin = 0;
    }
}

int weft_mutex_lock(weft_mutex *wm)
{
    struct mutex *m = (struct mutex *)wm;
    uint32_t z = 0;
    if (WEFT_LIKELY(atomic_compare_exchange_strong_explicit(&m->state, &z, MU_LOCKED, ACQ, RLX)))
        return 0;
    return mutex_lock_slow(m);
}

static void mutex_unlock_slow(struct mutex *m, uint32_t s, const char *who);

/* who: the public call, named if the mutex is not locked (weft_cond_wait unlocks too) */
static inline void mutex_unlock(struct mutex *m, const char *who)
{
    uint32_t s = MU_LOCKED;
    /* release: publishes the critical section */
    if (WEFT_LIKELY(atomic_compare_exchange_strong_explicit(&m->state, &s, 0, REL, RLX)))
        return;
    mutex_unlock_slow(m, s, who);
}

void weft_mutex_unlock(weft_mutex *wm)
{
    mutex_unlock((struct mutex *)wm, "weft_mutex_unlock");
}

static WEFT_NOINLINE void mutex_unlock_slow(struct mutex *m, uint32_t s, const char *who)
{
    if (!(s & MU_LOCKED))
        weft__throwf("%s: the mutex is not locked", who);
    if (!(s & MU_STARVING) && (s & MU_WOKEN)) {
        /* a woken waiter is already on its way: just unlock, wake nobody */
        while (!atomic_compare_exchange_weak_explicit(&m->state, &s, s & ~(uint32_t)MU_LOCKED, REL, RLX))
            if (!(s & MU_WOKEN) || (s & MU_STARVING))
                break;
        if (!(s & MU_LOCKED) || ((s & MU_WOKEN) && !(s & MU_STARVING)))
            return;
    }
    weft__lock(&m->lk);
    s = atomic_load_explicit(&m->state, RLX);
    struct waiter *w = weft__waitq_claim(&m->q);
    uint32_t rest = weft__waitq_empty(&m->q) ? 0 : MU_WAITERS;
    if (w != NULL && (s & MU_STARVING)) {
        /* hand-off: LOCKED stays; starvation ends with the queue or with a short wait */
        bool still = rest != 0 && weft__time_now() - w->since >= STARVE_NS;
        atomic_store_explicit(&m->state, MU_LOCKED | rest | (still ? MU_STARVING : 0), RLX);
        w->handoff = true;
        weft__unlock(&m->lk);
        weft__waiter_wake(w);
        return;
    }
    /* clear LOCKED (a newcomer may barge in); the woken waiter competes, marked WOKEN */
    uint32_t keep = s & MU_STARVING && rest ? MU_STARVING : 0;
    atomic_store_explicit(&m->state, rest | keep | (w != NULL ? MU_WOKEN : 0), REL);
    weft__unlock(&m->lk);
    if (w != NULL)
        weft__waiter_wake(w);
}

/* ---- rwmutex ------------------------------------------------------------------------- */
struct rwmutex {
    weft_lock lk;
    uint32_t writer;           /* held by a writer */
    int64_t readers;           /* readers holding it */
    int64_t wwait;             /* writers waiting */
    struct waitq rq, wq;
};
_Static_assert(sizeof(struct rwmutex) <= sizeof(weft_rwmutex), "weft_rwmutex too small");

int weft_rwmutex_rlock(weft_rwmutex *wrw)
{
    struct rwmutex *rw = (struct rwmutex *)wrw;
    int64_t dl = weft__deadline_now();
    weft__lock(&rw->lk);
    if (!rw->writer && rw->wwait == 0) {
        rw->readers++;
        weft__unlock(&rw->lk);
        return 0;
    }
    if (expired(dl)) {
        weft__unlock(&rw->lk);
        return -ETIMEDOUT;
    }
    struct waiter w = { 0 };
    return block_on(&rw->rq, &rw->lk, &w, false, dl, "rwmutex read");   /* admitted counted */
}

/* lk held: let the next writer in, or every waiting reader. Returns the waiters to wake. */
static struct waiter *rw_admit(struct rwmutex *rw)
{
    struct waiter *list = NULL, *w;
    if (rw->readers == 0 && !rw->writer && (w = weft__waitq_claim(&rw->wq)) != NULL) {
        rw->wwait--;
        rw->writer = 1;
        w->next = NULL;
        return w;
    }
    if (!rw->writer && rw->wwait == 0) {
        while ((w = weft__waitq_claim(&rw->rq)) != NULL) {
            rw->readers++;
            w->next = list;
            list = w;
        }
    }
    return list;
}

static void wake_list(struct waiter *list)
{
    while (list != NULL) {
        struct waiter *w = list;
        list = w->next;            /* read before the wake */
        weft__waiter_wake(w);
    }
}

void weft_rwmutex_runlock(weft_rwmutex *wrw)
{
    struct rwmutex *rw = (struct rwmutex *)wrw;
    weft__lock(&rw->lk);
    if (rw->readers <= 0) {
        weft__unlock(&rw->lk);
        weft__throw("weft_rwmutex_runlock: not read-locked");
    }
    rw->readers--;
    struct waiter *list = rw_admit(rw);
    weft__unlock(&rw->lk);
    wake_list(list);
}

int weft_rwmutex_lock(weft_rwmutex *wrw)
{
    struct rwmutex *rw = (struct rwmutex *)wrw;
    int64_t dl = weft__deadline_now();
    weft__lock(&rw->lk);
    if (!rw->writer && rw->readers == 0) {
        rw->writer = 1;
        weft__unlock(&rw->lk);
        return 0;
    }
    if (expired(dl)) {
        weft__unlock(&rw->lk);
        return -ETIMEDOUT;
    }
    rw->wwait++;
    struct waiter w = { 0 };
    int r = block_on(&rw->wq, &rw->lk, &w, false, dl, "rwmutex write");
    if (r != 0) {
        /* gave up: readers held back for us may go now */
        weft__lock(&rw->lk);
        rw->wwait--;
        struct waiter *list = rw_admit(rw);
        weft__unlock(&rw->lk);
        wake_list(list);
    }
    return r;
}

void weft_rwmutex_unlock(weft_rwmutex *wrw)
{
    struct rwmutex *rw = (struct rwmutex *)wrw;
    weft__lock(&rw->lk);
    if (!rw->writer) {
        weft__unlock(&rw->lk);
        weft__throw("weft_rwmutex_unlock: not write-locked");
    }
    rw->writer = 0;
    /* readers first after a writer, so that a stream of writers cannot starve them */
    struct waiter *list = NULL, *w;
    while ((w = weft__waitq_claim(&rw->rq)) != NULL) {
        rw->readers++;
        w->next = list;
        list = w;
    }
    if (list == NULL)
        list = rw_admit(rw);
    weft__unlock(&rw->lk);
    wake_list(list);
}

/* ---- cond -------------------------------------------------------------------------------- */
struct cond {
    weft_lock lk;
    struct waitq q;
};
_Static_assert(sizeof(struct cond) <= sizeof(weft_cond), "weft_cond too small");

static int cond_wait(struct cond *c, weft_mutex *m, int64_t dl, const char *who)
{
    struct waiter w = { 0 };
    weft__lock(&c->lk);
    mutex_unlock((struct mutex *)m, who);
    int r = expired(dl) ? (weft__unlock(&c->lk), -ETIMEDOUT) : block_on(&c->q, &c->lk, &w, false, dl, "cond");
    int lr;
    /* hold the mutex again on return, whatever the deadline says */
    int64_t saved = weft_deadline(-1);
    lr = weft_mutex_lock(m);
    weft_deadline(saved);
    (void)lr;
    return r;
}

int weft_cond_wait(weft_cond *wc, weft_mutex *m)
{
    return cond_wait((struct cond *)wc, m, weft__deadline_now(), "weft_cond_wait");
}

int weft_cond_wait_timeout(weft_cond *wc, weft_mutex *m, int64_t ns)
{
    int64_t dl = weft__deadline_min(weft__deadline_now(), weft__time_after(weft__time_now(), ns));
    return cond_wait((struct cond *)wc, m, dl, "weft_cond_wait_timeout");
}

void weft_cond_signal(weft_cond *wc)
{
    struct cond *c = (struct cond *)wc;
    weft__lock(&c->lk);
    struct waiter *w = weft__waitq_claim(&c->q);
    weft__unlock(&c->lk);
    if (w != NULL)
        weft__waiter_wake(w);
}

void weft_cond_broadcast(weft_cond *wc)
{
    struct cond *c = (struct cond *)wc;
    struct waiter *list = NULL, *w;
    weft__lock(&c->lk);
    while ((w = weft__waitq_claim(&c->q)) != NULL) {
        w->next = list;
        list = w;
    }
    weft__unlock(&c->lk);
    wake_list(list);
}

/* ---- wait group ------------------------------------------------------------------------------- */
struct wg {
    weft_lock lk;
    _Atomic int64_t count;
    struct waitq q;
};
_Static_assert(sizeof(struct wg) <= sizeof(weft_wg), "weft_wg too small");

void weft_wg_add(weft_wg *wwg, int64_t n)
{
    struct wg *wg = (struct wg *)wwg;
    /* acq_rel: work done before done() happens before the waiter returns */
    int64_t old = atomic_fetch_add_explicit(&wg->count, n, memory_order_acq_rel), v;
    /* (the atomic add wraps; a counter past INT64_MAX read as negative, and the abort
     * blamed a "negative counter" on an add that overflowed it) */
    if (__builtin_add_overflow(old, n, &v))
        weft__throwf("weft_wg_add: counter overflow (%lld + %lld is out of range)", (long long)old,
                     (long long)n);
    if (v < 0)
        weft__throwf("weft_wg_add: the counter went negative (%lld)", (long long)v);
    if (v > 0 || n == 0)
        return;
    struct waiter *list = NULL, *w;
    weft__lock(&wg->lk);
    if (atomic_load_explicit(&wg->count, ACQ) == 0) {
        while ((w = weft__waitq_claim(&wg->q)) != NULL) {
            w->next = list;
            list = w;
        }
    }
    weft__unlock(&wg->lk);
    wake_list(list);
}

void weft_wg_done(weft_wg *wg)
{
    weft_wg_add(wg, -1);
}

int weft_wg_wait(weft_wg *wwg)
{
    struct wg *wg = (struct wg *)wwg;
    if (atomic_load_explicit(&wg->count, ACQ) == 0)
        return 0;
    int64_t dl = weft__deadline_now();
    weft__lock(&wg->lk);
    if (atomic_load_explicit(&wg->count, ACQ) == 0) {
        weft__unlock(&wg->lk);
        return 0;
    }
    if (expired(dl)) {
        weft__unlock(&wg->lk);
        return -ETIMEDOUT;
    }
    struct waiter w = { 0 };
    return block_on(&wg->q, &wg->lk, &w, false, dl, "wait group");
}

/* ---- semaphore ------------------------------------------------------------------------------------ */
struct sema {
    weft_lock lk;
    int64_t count;
    struct waitq q;
};
_Static_assert(sizeof(struct sema) <= sizeof(weft_sema), "weft_sema too small");

int weft_sema_init(weft_sema *ws, int64_t n)
{
    if (n < 0)
        return -EINVAL;
    memset(ws, 0, sizeof *ws);
    ((struct sema *)ws)->count = n;
    return 0;
}

int weft_sema_try_acquire(weft_sema *ws)
{
    struct sema *s = (struct sema *)ws;
    weft__lock(&s->lk);
    int r = s->count > 0 ? (s->count--, 0) : -EAGAIN;
    weft__unlock(&s->lk);
    return r;
}

int weft_sema_acquire(weft_sema *ws)
{
    struct sema *s = (struct sema *)ws;
    int64_t dl = weft__deadline_now();
    weft__lock(&s->lk);
    if (s->count > 0) {
        s->count--;
        weft__unlock(&s->lk);
        return 0;
    }
    if (expired(dl)) {
        weft__unlock(&s->lk);
        return -ETIMEDOUT;
    }
    struct waiter w = { 0 };
    return block_on(&s->q, &s->lk, &w, false, dl, "semaphore");   /* claimed = permit given */
}

void weft_sema_release(weft_sema *ws)
{
    struct sema *s = (struct sema *)ws;
    weft__lock(&s->lk);
    struct waiter *w = weft__waitq_claim(&s->q);
    if (w == NULL) {
        if (s->count == INT64_MAX) {
            weft__unlock(&s->lk);
            weft__throw("weft_sema_release: count overflow");
        }
        s->count++;
    }
    weft__unlock(&s->lk);
    if (w != NULL)
        weft__waiter_wake(w);
}

/* ---- once ----------------------------------------------------------------------------------------- */
struct once {
    _Atomic uint32_t state;    /* 0 not run, 1 running, 2 done */
    weft_lock lk;
    struct waitq q;
};
_Static_assert(sizeof(struct once) <= sizeof(weft_once), "weft_once too small");

void weft_once_do(weft_once *wo, void (*fn)(void))
{
    struct once *o = (struct once *)wo;
    /* acquire: pairs with the release store of 2 after fn ran */
    if (WEFT_LIKELY(atomic_load_explicit(&o->state, ACQ) == 2))
        return;
    uint32_t z = 0;
    if (atomic_compare_exchange_strong_explicit(&o->state, &z, 1, ACQ, RLX)) {
        fn();
        weft__lock(&o->lk);
        atomic_store_explicit(&o->state, 2, REL);
        struct waiter *list = NULL, *w;
        while ((w = weft__waitq_claim(&o->q)) != NULL) {
            w->next = list;
            list = w;
        }
        weft__unlock(&o->lk);
        wake_list(list);
        return;
    }
    weft__lock(&o->lk);
    if (atomic_load_explicit(&o->state, ACQ) == 2) {
        weft__unlock(&o->lk);
        return;
    }
    int64_t saved = weft_deadline(-1);     /* once waits cannot time out: fn must finish */
    struct waiter w = { 0 };
    block_on(&o->q, &o->lk, &w, false, -1, "once");
    weft_deadline(saved);
}
