/*
 * sched/timer.c -- per-P timers (an in-order ring and a heap), weft_sleep and deadlines (Go's time.go, simplified).
 *
 * Each P keeps its timers under its own timerlock in two structures: a ring of timers
 * added in `when` order (tfifo: a timer whose `when` is not before the ring's last
 * goes to its tail) and a 4-ary min-heap for the rest; pp->timer0 mirrors the
 * earliest `when` of both so that a scan needs no lock. Timers of one duration (sleep
 * loops, a server's per-request timeouts) are added in order, so most never touch the
 * heap: adding is an append, firing takes the ring's head, where a heap pop sifted the
 * last slot down through every level, the lower ones cold with many timers. A timer
 * deleted from the ring leaves a hole (t == NULL) that is skipped when it reaches the
 * head; when holes are half the ring it is compacted. A timer goes to the P that adds
 * it (any P when added from a plain thread) and can be deleted from anywhere. Every
 * timer is a G's (g->timer: its sleep or its wait's timeout). Running:
 * whoever finds timers expired pops up to TIMER_BATCH under the lock, marks them
 * firing, drops the lock and calls each f, which says which G to ready (sleep: its G;
 * a timeout: its G if the timeout won the wait), clears firing, then readies those Gs
 * together. weft__timer_del waits until firing is clear, so the G can re-arm its timer
 * safely right after; a G is readied only after its timer's firing is clear, so no
 * timer is ever popped while its previous firing runs.
 *
 * Who runs timers: an M in findrunnable (its own P first, then every P's when it
 * would otherwise spin or sleep); next_local every 16 scheduling ticks; the "timer
 * M" -- one idle M that sleeps in stopm until the earliest timer of all Ps and runs
 * them without holding a P; sysmon as a backstop for timers overdue by 1 ms or more
 * (a P whose M runs a long green thread). weft__timer_add pokes the timer M when the
 * new timer is earlier than what it sleeps for (sleep_until is published seq_cst
 * before the sleeper re-reads timer0; the adder updates timer0 seq_cst before it
 * reads sleep_until: one of them sees the other).
 *
 * Invariants of the timer M role (sched.timer_m, proc.c stopm/startm):
 *  - while any M is idle, one of them holds the role, also when no timer exists
 *    (it then publishes sleep_until = INT64_MAX, so the next weft__timer_add pokes it);
 *    sleep_until is always exactly what the holder sleeps for, never a stale earlier
 *    value (a stale one made weft__timer_add skip the poke and the timer never ran);
 *  - startm takes the timer M last, and an M that gives the role up (it got a P)
 *    pokes another idle M, which takes the role when it looks again; so does any M
 *    that leaves the idle list while nobody holds the role (the poked M may have
 *    been handed a P before it looked).
 *
 * Callers: proc.c (run the timers of a P, of all Ps; the timer M), wait.c, chan.c and
 * sync.c through wait.c (arm and delete a wait's timeout), sysmon.c (backstop), start.c
 * (free a P's heap). Calls: proc.c (weft__sched_ready_batch, weft__sched_park: the
 * one pair of files that call each other), current.c, mem/.
 *
 * Rejected: a heap alone (every timer of one duration popped by sifting the last slot
 * through every level, the lower ones cold with 100 k sleepers: the in-order ring
 * replaced it for them); firing one timer at a time (one cache miss after another,
 * each waited for by a locked instruction: TIMER_BATCH below).
 */
#include <errno.h>
#include <string.h>
#include <time.h>
#include "sched/sched.h"

/* The ring's head is never a hole (holes there are dropped at once). */
static inline int64_t earliest(struct p *pp)
{
    int64_t w = pp->ntimers > 0 ? pp->timers[0].when : INT64_MAX;
    if (pp->tfn > 0 && pp->tfifo[pp->tfhead].when < w)
        w = pp->tfifo[pp->tfhead].when;
    return w;
}

static inline void set_timer0(struct p *pp)
{
    atomic_store_explicit(&pp->timer0, earliest(pp), SC);
}

/* The heap's slots hold `when` beside the timer pointer (struct tentry, 16 bytes), and
 * slot 1 starts a cache line, so the four children of a slot (4i+1 .. 4i+4) share
 * one line: a sift touches one line of the heap per level plus the idx of each timer
 * it moves, not the four children's timers (Go 1.23's timerWhen does the same). */
static void sift_up(struct p *pp, int i)
{
    struct tentry *h = pp->timers, e = h[i];
    while (i > 0) {
        int parent = (i - 1) / 4;
        if (h[parent].when <= e.when)
            break;
        h[i] = h[parent];
        h[i].t->idx = i;
        i = parent;
    }
    h[i] = e;
    e.t->idx = i;
}

static void sift_down(struct p *pp, int i)
{
    struct tentry *h = pp->timers, e = h[i];
    int n = pp->ntimers;
    for (;;) {
        int c = 4 * i + 1;
        if (c >= n)
            break;
        int best = c;
        int64_t bw = h[c].when;
        int end = c + 4 < n ? c + 4 : n;
        for (int k = c + 1; k < end; k++)
            if (h[k].when < bw) {
                bw = h[k].when;
                best = k;
            }
        if (bw >= e.when)
            break;
        h[i] = h[best];
        h[i].t->idx = i;
        i = best;
    }
    h[i] = e;
    e.t->idx = i;
}

static void heap_remove(struct p *pp, int i)
{
    int last = --pp->ntimers;
    if (i != last) {
        pp->timers[i] = pp->timers[last];
        pp->timers[i].t->idx = i;
        sift_down(pp, i);
        sift_up(pp, pp->timers[i].t->idx);
    }
}

/* Room for one more slot (timerlock held). */
static void heap_grow(struct p *pp)
{
    if (pp->captimers > (1 << 29))          /* (the doubling would overflow int) */
        weft__throw("timer: too many timers on one P");
    int cap = pp->captimers ? pp->captimers * 2 : 64;
    /* 3 spare slots in front: timers = mem + 48 bytes, so &timers[1] is 64-aligned */
    char *mem = weft_aligned_alloc(64, ((size_t)cap + 3) * sizeof(struct tentry));
    if (mem == NULL)
        weft__throw("timer: out of memory for the timer heap");
    struct tentry *h = (struct tentry *)(mem + 3 * sizeof(struct tentry));
    if (pp->ntimers > 0)
        memcpy(h, pp->timers, (size_t)pp->ntimers * sizeof *h);
    weft_free(pp->timers_mem);
    pp->timers_mem = mem;
    pp->timers = h;
    pp->captimers = cap;
}

/* ---- the in-order ring (timerlock held) ---- */
static inline struct tentry *fifo_slot(struct p *pp, uint32_t i)   /* i-th from the head */
{
    return &pp->tfifo[(pp->tfhead + i) & (pp->tfcap - 1)];
}

/* Copy the ring's timers (holes dropped) into a new one of cap slots, from slot 0. */
static void fifo_rebuild(struct p *pp, uint32_t cap)
{
    struct tentry *r = weft_aligned_alloc(64, (size_t)cap * sizeof *r);
    if (r == NULL)
        weft__throw("timer: out of memory for the timer ring");
    uint32_t n = 0;
    for (uint32_t i = 0; i < pp->tfn; i++) {
        struct tentry e = *fifo_slot(pp, i);
        if (e.t == NULL)
            continue;
        e.t->idx = -1 - (int32_t)n;
        r[n++] = e;
    }
    weft_free(pp->tfifo);
    pp->tfifo = r;
    pp->tfcap = cap;
    pp->tfhead = 0;
    pp->tfn = n;
    pp->tfdead = 0;
}

static void fifo_push(struct p *pp, struct timer *t)
{
    if (pp->tfn == pp->tfcap) {
        uint32_t cap = pp->tfcap ? pp->tfcap : 64;
        if (pp->tfdead < pp->tfn / 2)
            cap *= 2;             /* else compacting makes room */
        if (cap > (1u << 30))
            weft__throw("timer: too many timers on one P");
        fifo_rebuild(pp, cap);
    }
    uint32_t slot = (pp->tfhead + pp->tfn++) & (pp->tfcap - 1);
    pp->tfifo[slot] = (struct tentry){ t->when, t };
    t->idx = -1 - (int32_t)slot;
}

/* Drop holes at the head, so that it is always a timer. */
static inline void fifo_trim_head(struct p *pp)
{
    while (pp->tfn > 0 && pp->tfifo[pp->tfhead].t == NULL) {
        pp->tfhead = (pp->tfhead + 1) & (pp->tfcap - 1);
        pp->tfn--;
        pp->tfdead--;
    }
}

static struct timer *fifo_pop(struct p *pp)
{
    struct timer *t = pp->tfifo[pp->tfhead].t;
    pp->tfhead = (pp->tfhead + 1) & (pp->tfcap - 1);
    pp->tfn--;
    fifo_trim_head(pp);
    return t;
}

static void fifo_remove(struct p *pp, uint32_t slot)
{
    pp->tfifo[slot].t = NULL;       /* `when` stays: the ring stays in order */
    pp->tfdead++;
    fifo_trim_head(pp);
    if (pp->tfdead > 64 && pp->tfdead > pp->tfn / 2)
        fifo_rebuild(pp, pp->tfcap);    /* holes were half of it: compact */
}

/* Add t where it belongs; true if it is the new earliest. */
static bool timer_insert(struct p *pp, struct timer *t)
{
    int64_t before = earliest(pp);
    if (pp->tfn == 0 || t->when >= fifo_slot(pp, pp->tfn - 1)->when) {
        fifo_push(pp, t);
    } else {
        if (pp->ntimers == pp->captimers)
            heap_grow(pp);
        pp->timers[pp->ntimers] = (struct tentry){ t->when, t };
        sift_up(pp, pp->ntimers++);
    }
    return t->when < before;
}

static void timer_remove(struct p *pp, struct timer *t)
{
    if (t->idx >= 0)
        heap_remove(pp, t->idx);
    else
        fifo_remove(pp, (uint32_t)(-1 - t->idx));
}

/* The earliest timer, if it is due by now (it is taken out), else NULL. */
static inline struct timer *timer_pop_due(struct p *pp, int64_t now)
{
    bool fifo = pp->tfn > 0 && (pp->ntimers == 0 || pp->tfifo[pp->tfhead].when <= pp->timers[0].when);
    if (fifo) {
        if (pp->tfifo[pp->tfhead].when > now)
            return NULL;
        return fifo_pop(pp);
    }
    if (pp->ntimers == 0 || pp->timers[0].when > now)
        return NULL;
    struct timer *t = pp->timers[0].t;
    heap_remove(pp, 0);
    return t;
}

void weft__timer_add(struct timer *t)
{
    /* t may fire (and be re-armed by its owner) as soon as the heap lock is dropped:
     * nothing of it is read after that */
    int64_t when = t->when;
    struct m *mp = weft__current_m();
    struct p *pp = mp != NULL && mp->p != NULL ? mp->p : sched.allp[0];
    weft__lock(&pp->timerlock);
    bool top = timer_insert(pp, t);
    atomic_store_explicit(&t->pp, pp, RLX);
    /* Not the new earliest (the common case: sleeps of one length queue in order):
     * timer0 stays, and so does every sleeper's view of it -- no seq_cst store, no
     * poke. (A locked instruction here waited for the stores of the switch just made
     * to reach cold stack lines.) */
    if (!top) {
        weft__unlock(&pp->timerlock);
        return;
    }
    set_timer0(pp);
    weft__unlock(&pp->timerlock);
    /* seq_cst: pairs with the timer M's publication of sleep_until */
    if (when < atomic_load_explicit(&sched.timer_sleep_until, SC)) {
        struct m *tm = atomic_load_explicit(&sched.timer_m, SC);
        if (tm != NULL) {
            uint32_t zero = 0;
            if (atomic_compare_exchange_strong_explicit(&tm->park, &zero, 2, SC, RLX))
                weft__m_unpark(tm);
        }
    }
}

bool weft__timer_del(struct timer *t)
{
    bool removed = false;
    for (;;) {
        /* acquire: pairs with the firer's release store of NULL, so that firing,
         * set before it, is seen below */
        struct p *pp = atomic_load_explicit(&t->pp, ACQ);
        if (pp == NULL)
            break;
        weft__lock(&pp->timerlock);
        if (atomic_load_explicit(&t->pp, RLX) == pp) {
            timer_remove(pp, t);
            atomic_store_explicit(&t->pp, NULL, RLX);
            set_timer0(pp);
            removed = true;
            weft__unlock(&pp->timerlock);
            break;
        }
        weft__unlock(&pp->timerlock);
    }
    while (atomic_load_explicit(&t->firing, ACQ))
        weft__cpu_relax();   /* f is a few dozen instructions (a CAS) */
    return removed;
}

/* Expired timers are fired TIMER_BATCH at a time: popped under one hold of the lock,
 * their Gs' first lines prefetched together, fired, then readied together
 * (weft__sched_ready_batch prefetches their saved frames together too). With 100 k sleepers
 * every one of those lines is cold, and one timer at a time meant one miss after
 * another, each waited for by a locked instruction (lock, unlock and two RMWs on the
 * timer per timer); in a batch the misses overlap and the locked instructions are per
 * batch. A popped timer is marked firing (a plain store: only its popper writes it, and
 * its G cannot re-arm it before it is readied, which comes after firing is cleared). */
#define TIMER_BATCH 32

void weft__timers_run(struct p *pp, int64_t now)
{
    if (atomic_load_explicit(&pp->timer0, RLX) > now)
        return;
    struct timer *batch[TIMER_BATCH];
    struct g *ready[TIMER_BATCH];
    weft__lock(&pp->timerlock);
    for (;;) {
        int n = 0;
        struct timer *t;
        while (n < TIMER_BATCH && (t = timer_pop_due(pp, now)) != NULL) {
            /* its G's line 0 (the timer, status, saved stack pointer: all that firing
             * and readying read); every timer is a G's (struct g.timer) */
            __builtin_prefetch(t, 1);
            batch[n++] = t;
        }
        if (n == 0)
            break;
        for (int i = 0; i < n; i++) {
            atomic_store_explicit(&batch[i]->firing, 1, RLX);
            /* release: firing is set before weft__timer_del can see the timer gone */
            atomic_store_explicit(&batch[i]->pp, NULL, REL);
        }
        set_timer0(pp);
        weft__unlock(&pp->timerlock);
        int nr = 0;
        for (int i = 0; i < n; i++) {
            struct g *gp = batch[i]->f(batch[i]);
            /* release: f's reads of the timer and its G happen before a waiting
             * weft__timer_del returns (and its G re-arms the timer) */
            atomic_store_explicit(&batch[i]->firing, 0, REL);
            if (gp != NULL)
                ready[nr++] = gp;
        }
        if (nr > 0)
            weft__sched_ready_batch(ready, nr);
        if (n < TIMER_BATCH)
            return;
        weft__lock(&pp->timerlock);
    }
    set_timer0(pp);
    weft__unlock(&pp->timerlock);
}

bool weft__timers_run_all(int64_t now)
{
    bool ran = false;
    for (int i = 0; i < sched.nprocs; i++) {
        struct p *pp = sched.allp[i];
        if (atomic_load_explicit(&pp->timer0, RLX) <= now) {
            weft__timers_run(pp, now);
            ran = true;
        }
    }
    return ran;
}

int64_t weft__timer_next(void)
{
    int64_t next = INT64_MAX;
    for (int i = 0; i < sched.nprocs; i++) {
        int64_t w = atomic_load_explicit(&sched.allp[i]->timer0, SC);
        if (w < next)
            next = w;
    }
    return next;
}

void weft__timers_free(struct p *pp)
{
    weft_free(pp->timers_mem);
    pp->timers_mem = NULL;
    pp->timers = NULL;
    pp->ntimers = pp->captimers = 0;
    weft_free(pp->tfifo);
    pp->tfifo = NULL;
    pp->tfhead = pp->tfn = pp->tfcap = pp->tfdead = 0;
    atomic_store_explicit(&pp->timer0, INT64_MAX, RLX);
}

/* ---- deadlines and sleep --------------------------------------------------------- */
static __thread int64_t plain_deadline WEFT_TLS_IE = -1;

int64_t weft__deadline_now(void)
{
    struct g *gp = weft__current_g();
    return gp != NULL ? gp->deadline : plain_deadline;
}

void weft__deadline_set_plain(int64_t dl)
{
    plain_deadline = dl < 0 ? -1 : dl;
}

int64_t weft_deadline(int64_t abs_ns)
{
    if (abs_ns < 0)
        abs_ns = -1;
    struct g *gp = weft__current_g();
    int64_t *d = gp != NULL ? &gp->deadline : &plain_deadline;
    int64_t old = *d;
    *d = abs_ns;
    return old;
}

static struct g *sleep_fire(struct timer *t)
{
    return (struct g *)((char *)t - offsetof(struct g, timer));
}

static int sleep_arm(struct g *gp, void *arg)
{
    (void)arg;
    weft__timer_add(&gp->timer);     /* now that gp is off its stack */
    return 1;
}

int weft_sleep(int64_t ns)
{
    int64_t now = weft__time_now(), dl = weft__deadline_now();
    if (dl >= 0 && dl <= now)
        return -ETIMEDOUT;
    int64_t until = weft__time_after(now, ns);
    int ret = 0;
    if (dl >= 0 && dl < until) {
        until = dl;
        ret = -ETIMEDOUT;
    }
    struct g *gp = weft__current_g();
    if (gp == NULL) {
        struct timespec ts = { until / 1000000000, until % 1000000000 };
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        return ret;
    }
    if (ns <= 0) {
        weft_yield();
        return 0;
    }
    gp->timer.when = until;
    gp->timer.f = sleep_fire;
    weft__sched_park(sleep_arm, NULL, "sleep");
    return ret;
}
