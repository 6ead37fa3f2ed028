/*
 * sched/proc.c -- the scheduling core (our proc.go): Ps and Ms, spawn, switch, yield,
 * park, ready, exit, the M loop that finds work and steals it, and blocking calls.
 * G objects live in g.c, the life cycle of the runtime in start.c, the dump in dump.c.
 *
 * schedule loop (on each M's g0, mstart):
 *   findrunnable: every 61st tick one G from the global queue first (fairness; every
 *   other time a never-run one first); the local runnext and ring; the global queue
 *   (Gs that have run before new ones); then, if fewer than half the busy Ps
 *   have spinning Ms, spin: steal half of a random victim's ring (4 rounds over all
 *   Ps; in the last round also a runnext gone stale, stealnext). Nothing: give the P
 *   back, drop spinning, look at every ring once more (see the no-lost-wake-up rule
 *   in sched.h), park the M on its futex until startm hands it a P.
 * Switches are direct where they can be: yield, park and exit switch straight to the
 * next local G; only when there is none do they go through g0 (gswitch).
 *
 * weft_blocking (Go's entersyscall/exitsyscall): the P is marked P_SYSCALL and keeps
 * its M; sysmon retakes it after ~20 us (CAS P_SYSCALL -> P_IDLE) and hands it to
 * another M if there is work. On return the G CASes its P back; if the P is gone it
 * takes an idle P, or queues itself globally and its M goes idle.
 *
 * Spawning: a new G -- a 64-byte spawn record until it first runs, then a struct g
 * and a stack (first_run, g.c) -- goes to runnext (kicking the old one to the ring);
 * weft_spawn is never a scheduling point. A spawner that outruns the Ps overflows its
 * ring into the global queue's GQ_NEW ring, which is taken only after GQ_RAN (Gs that
 * have run): a flood of new Gs does not delay the Gs that wake meanwhile (runq.c).
 *
 * Invariants: sched.h's (queues, spinning, no lost wake-up). Stopping: every loop
 * here leaves at its next scheduling point once sched.stopping is set (start.c).
 *
 * Callers: the public calls below; timer.c, wait.c, chan.c, sync.c (park, ready);
 * sysmon.c (handoffp, wakep); start.c (pidle_put). Calls down: g.c, runq.c, stack.c,
 * current.c, context, mem/; and timer.c, which calls back (the one pair allowed).
 *
 * Rejected (figures in the comments where they apply): waking an M for every ready
 * (2P ping-pong kept the other M spinning, ~100 ns a round trip: ready_n); a batch of
 * 16 from the global queue for fairness (100 k sleepers: 2564 ns CPU a sleep, not
 * 1492: fair_global).
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sched/sched.h"
#include "sched/san.h"

#define SPIN_NS 20000          /* how long a spinning M looks for work before it parks */

/* all zero (.bss): sysmon_tick_ns is set by weft__sysmon_start, and until then
 * weft__sysmon_wake has nobody to wake */
struct schedt weft__sched = {
    .startlock = WEFT_LOCK_INIT, .lock = WEFT_LOCK_INIT, .gflock = WEFT_LOCK_INIT,
};

static inline void counter_inc(_Atomic uint64_t *c)
{
    /* owner-only writer: a relaxed load and store, no RMW */
    atomic_store_explicit(c, atomic_load_explicit(c, RLX) + 1, RLX);
}

/* ---- P and M bookkeeping (sched.lock held where noted) -------------------- */
static void acquirep(struct m *mp, struct p *pp)
{
    mp->p = pp;
    __atomic_store_n(&pp->m, mp, __ATOMIC_RELAXED);     /* sysmon reads it */
    atomic_store_explicit(&pp->status, P_RUNNING, REL);
    weft__mcache_use(pp->mcache);
}

static struct p *releasep(struct m *mp)
{
    struct p *pp = mp->p;
    __atomic_store_n(&pp->m, NULL, __ATOMIC_RELAXED);
    atomic_store_explicit(&pp->status, P_IDLE, REL);
    mp->p = NULL;
    weft__mcache_use(NULL);
    return pp;
}

void weft__sched_pidle_put(struct p *pp)    /* lock held */
{
    pp->link = sched.pidle;
    sched.pidle = pp;
    atomic_fetch_add_explicit(&sched.npidle, 1, SC);
}

static struct p *pidleget(void)       /* lock held */
{
    struct p *pp = sched.pidle;
    if (pp != NULL) {
        sched.pidle = pp->link;
        atomic_fetch_sub_explicit(&sched.npidle, 1, SC);
        weft__sysmon_poke();
    }
    return pp;
}

/* ---- switching --------------------------------------------------------------- */
static void after_switch(struct g *self);
static void startm(struct p *pp, bool spinning);
static WEFT_NORETURN WEFT_TSAN_NOFRAME void gexit(void);

static WEFT_NOINLINE struct g *first_run(struct m *mp, struct g *rec);

static inline WEFT_TSAN_NOFRAME void gswitch(struct m *mp, struct g *from, struct g *to, int action)
{
    if (WEFT_UNLIKELY(to->ctx.sp == NULL))
        to = first_run(mp, to);     /* a spawn record: now a G, with a stack */
    mp->after = action;
    mp->after_g = from;
    __atomic_store_n(&mp->curg, to, __ATOMIC_RELAXED);   /* sysmon compares it */
    if (!to->system) {
        to->m = mp;
        atomic_store_explicit(&to->status, G_RUNNING, RLX);
    }
    if (mp->p != NULL)
        counter_inc(&mp->p->nswitches);
    weft__san_start_switch(from, to, action == AFTER_EXIT);
    weft__tsan_switch(to);
    weft__ctx_switch(&from->ctx, &to->ctx);
    after_switch(from);
}

static WEFT_NOINLINE void after_switch_slow(struct m *mp, struct g *prev, int action);

/* Runs first thing on whichever context resumed: completes the action of the G that
 * switched away, now that it is off its stack. A yield's is a tail call; the other
 * actions live out of line, so this needs no stack frame. */
static void after_switch(struct g *self)
{
    struct m *mp = weft__current_m();
    weft__san_finish_switch(self);
    struct g *prev = mp->after_g;
    int action = mp->after;
    mp->after = AFTER_NONE;
    if (action == AFTER_YIELD)
        weft__runq_put(mp->p, prev, false);
    else if (action != AFTER_NONE)
        after_switch_slow(mp, prev, action);
}

static void after_switch_slow(struct m *mp, struct g *prev, int action)
{
    switch (action) {
    case AFTER_PARK:
        if (prev->unlockf != NULL && !prev->unlockf(prev, prev->unlockarg))
            weft__sched_ready(prev);
        break;
    case AFTER_EXIT:
        weft__g_free(mp->p, prev);
        break;
    case AFTER_BLOCKED:
        weft__lock(&sched.lock);
        weft__globrunq_put(prev);
        weft__unlock(&sched.lock);
        weft__sched_wakep();
        break;
    case AFTER_MIGRATE: {
        /* WEFT_DEBUG=migrate: prev resumes on another M. It goes to the tail of the
         * queue (a yield), we hand our P to another M and this M parks (the g0 loop
         * sees p == NULL), so whichever M runs prev next, it is not this one. */
        struct p *pp = mp->p;
        weft__runq_put(pp, prev, false);
        releasep(mp);
        startm(pp, false);          /* not us: we are not on the idle list */
        break;
    }
    }
}

/* ---- Gs ------------------------------------------------------------------------ */
static WEFT_TSAN_NOFRAME void gentry(void *arg)
{
    struct g *gp = arg;
    after_switch(NULL);
    gp->fn(gp->arg);
    gexit();
}

static void gentry(void *arg);

/* A G's first run (gswitch, to a G whose saved sp is NULL: a spawn record): a struct g
 * (a dead one of this P if any) and a stack now; the record goes back (g.c). */
static struct g *first_run(struct m *mp, struct g *to)
{
    struct gspawn *r = (struct gspawn *)to;
    if (mp->p == NULL)     /* only an M holding a P runs Gs */
        weft__throwf("first_run: green thread %llu started on an M without a P",
                     (unsigned long long)r->id);
    return weft__g_start(mp->p, r, gentry);
}


int weft_spawn_ex(void (*fn)(void *), void *arg, const weft_spawn_opts *opts, uint64_t *id_out)
{
    if (fn == NULL)
        return -EINVAL;
    if (!atomic_load_explicit(&sched.running, ACQ) || atomic_load_explicit(&sched.stopping, RLX))
        return -ESRCH;
    size_t size = sched.stack_size;
    if (opts != NULL && opts->stack_size != 0) {
        /* refused here, not at the first run: an absurd size used to wrap in the
         * rounding (SIZE_MAX: a 16 KiB stack) or abort the program when the G first ran */
        if (opts->stack_size > WEFT_STACK_MAX)
            return -EINVAL;
        size = weft__stack_round(opts->stack_size);
    }
    struct m *mp = weft__current_m();
    struct p *pp = weft__sched_curp(mp);
    struct gspawn *r = weft__g_rec_alloc(pp);
    if (r == NULL)
        return -ENOMEM;
    r->fn = fn;
    r->arg = arg;
    r->name = opts != NULL ? opts->name : NULL;
    r->id = weft__g_newid(pp);
    r->stacksize = size;
    atomic_store_explicit(&r->status, G_RUNNABLE, RLX);
    if (id_out != NULL)
        *id_out = r->id;
    struct g *gp = (struct g *)r;      /* queued as a G: sched.h struct gspawn */
    if (pp != NULL) {
        counter_inc(&pp->nspawned);
        /* into runnext, and unlike weft__sched_ready a spinner is woken even when runnext
         * was empty: a spawner usually goes on running, and an idle P can take the new
         * G from runnext once it has waited a few microseconds (stealnext) */
        weft__runq_put(pp, gp, true);
        if (sched.nprocs == 1)
            return 0;
    } else {
        weft__lock(&sched.lock);
        weft__globrunq_put(gp);
        /* counted once queued (no M can take it before the unlock): sysmon's deadlock
         * check must not see a live G that is in no queue yet */
        atomic_fetch_add_explicit(&sched.nspawned_plain, 1, RLX);
        weft__unlock(&sched.lock);
    }
    weft__sched_wakep();
    return 0;
}

int weft_spawn(void (*fn)(void *), void *arg)
{
    return weft_spawn_ex(fn, arg, NULL, NULL);
}

uint64_t weft_self(void)
{
    struct g *gp = weft__current_g();
    return gp != NULL ? gp->id : 0;
}

/* Every 61st tick one G from the global queue goes first, so that its Gs cannot starve
 * behind local work: one that has run, or every other time a never-run one. That is
 * all the service GQ_NEW gets while Gs that have run wait: under sustained load a G k
 * deep in GQ_NEW waits ~122 k ticks for its first run (a helper's stress test on 1 P:
 * 20-45 ms behind two flooding spawners, 13-21 ms with one FIFO). A batch of 16 there
 * instead brought the flood back: 100 k sleepers cost 2564 ns CPU a sleep, not 1492. */
static WEFT_NOINLINE struct g *fair_global(struct p *pp)
{
    weft__lock(&sched.lock);
    struct g *gp = weft__globrunq_get(pp, 1, (pp->schedtick / 61) & 1);
    weft__unlock(&sched.lock);
    return gp;
}

/* The next G this P should run without going through g0, or NULL. */
WEFT_INLINE struct g *next_local(struct p *pp)
{
    if (atomic_load_explicit(&sched.stopping, RLX))
        return NULL;
    __atomic_store_n(&pp->schedtick, pp->schedtick + 1, __ATOMIC_RELAXED);  /* read by stealers, sysmon */
    if ((pp->schedtick & 15) == 0 && atomic_load_explicit(&pp->timer0, RLX) != INT64_MAX)
        weft__timers_run(pp, weft__time_now());
    if (pp->schedtick % 61 == 0) {
        if (weft__poller_pending())
            weft__poller->poll(pp);     /* completions reaped even while local work lasts */
        if (atomic_load_explicit(&sched.runqsize, RLX) > 0) {
            struct g *gp = fair_global(pp);
            if (gp != NULL)
                return gp;
        }
    }
    return weft__runq_get(pp);
}

/* next_local, else (local queue empty) a share of the global queue; NULL while
 * stopping. For a G that lets another run on its P (yield). */
WEFT_INLINE struct g *next_or_global(struct p *pp)
{
    struct g *next = next_local(pp);
    if (next == NULL && atomic_load_explicit(&sched.runqsize, RLX) > 0 &&
        !atomic_load_explicit(&sched.stopping, RLX)) {
        weft__lock(&sched.lock);
        next = weft__globrunq_get(pp, 0, false);
        weft__unlock(&sched.lock);
    }
    return next;
}

void weft_yield(void)
{
    struct m *mp = weft__current_m();
    struct g *gp = mp != NULL ? mp->curg : NULL;
    if (gp == NULL || gp->system) {
        sched_yield();
        return;
    }
    if (weft__debug.migrate) {
        atomic_store_explicit(&gp->status, G_RUNNABLE, RLX);
        gswitch(mp, gp, &mp->g0, AFTER_MIGRATE);
        return;
    }
    /* (NULL while stopping, whatever the ring holds: g0 then leaves) */
    struct g *next = next_or_global(mp->p);
    if (next == NULL) {
        if (!atomic_load_explicit(&sched.stopping, RLX))
            return;          /* nothing else to run here: keep going */
        atomic_store_explicit(&gp->status, G_RUNNABLE, RLX);
        gswitch(mp, gp, &mp->g0, AFTER_YIELD);
        return;
    }
    atomic_store_explicit(&gp->status, G_RUNNABLE, RLX);
    gswitch(mp, gp, next, AFTER_YIELD);
}

void weft__sched_park(int (*unlockf)(struct g *, void *), void *arg, const char *reason)
{
    struct m *mp = weft__current_m();
    struct g *gp = mp->curg;
    if (gp == NULL || gp->system)
        weft__throw("park: not on a green thread");
    gp->unlockf = unlockf;
    gp->unlockarg = arg;
    gp->waitreason = reason;
    counter_inc(&mp->p->nparks);
    atomic_store_explicit(&gp->status, G_WAITING, RLX);
    struct g *next = weft__debug.migrate ? NULL : next_local(mp->p);
    gswitch(mp, gp, next != NULL ? next : &mp->g0, AFTER_PARK);
    gp->waitreason = NULL;
}

/* Ready n Gs (n >= 1), in order: all but the last to the ring, the last to runnext,
 * with one wake-up. Their saved frames, which their switches in pop first, are
 * prefetched first, all together: cold when many Gs wait, each on its own stack page
 * (a TLB miss too), and a batch's misses overlap instead of coming one per switch in.
 * (The saved stack pointer shares the cache line of status: reading it costs no miss.) */
WEFT_INLINE void ready_n(struct g *const *gs, int n)
{
    for (int i = 0; i < n; i++) {
        struct g *gp = gs[i];
        uint32_t st = atomic_load_explicit(&gp->status, RLX);
        if (st != G_WAITING)
            weft__throwf("ready: green thread %llu is not waiting (status %u)",
                         (unsigned long long)gp->id, st);
        atomic_store_explicit(&gp->status, G_RUNNABLE, RLX);
        __builtin_prefetch(gp->ctx.sp, 0);
    }
    struct p *pp = weft__sched_curp(weft__current_m());
    if (pp != NULL) {
        for (int i = 0; i < n - 1; i++)
            weft__runq_put(pp, gs[i], false);
        /* A lone G that lands in an empty runnext wakes nobody: a hand-off, whose
         * waker usually blocks next, so our own M runs it at its next scheduling point
         * (waking an M per ready kept the other M spinning through 2P ping-pong, its
         * look at our queues costing ~100 ns per round trip). If the waker computes
         * on instead, sysmon sees the stale runnext and wakes a spinner, which takes
         * it (stealnext). Only a G that reaches the ring (or one runnext kicked out
         * to it) is work for another M at once. With one P nobody is woken at all. */
        if ((!weft__runq_put(pp, gs[n - 1], true) && n == 1) || sched.nprocs == 1)
            return;
    } else {
        weft__lock(&sched.lock);
        weft__globrunq_put_batch(gs, (uint32_t)n);
        weft__unlock(&sched.lock);
    }
    weft__sched_wakep();
}

void weft__sched_ready(struct g *gp)
{
    ready_n(&gp, 1);
}

/* Gs woken together (expired timers) */
void weft__sched_ready_batch(struct g *const *gs, int n)
{
    ready_n(gs, n);
}

static WEFT_NORETURN WEFT_TSAN_NOFRAME void gexit(void)
{
    struct m *mp = weft__current_m();
    if (WEFT_UNLIKELY(mp == NULL)) {
        /* a fork child's thread left the green thread's function: it was the child's
         * only thread (fork_child), so the child ends, status 0, its stdio flushed; not
         * exit(): the atexit handlers are the parent's (and run on this G's stack,
         * which confused ASan's exit-time checks) */
        fflush(NULL);
        _exit(0);
    }
    struct g *gp = mp->curg;
    atomic_store_explicit(&gp->status, G_DEAD, RLX);
    counter_inc(&mp->p->nexited);
    struct g *next = next_local(mp->p);
    gswitch(mp, gp, next != NULL ? next : &mp->g0, AFTER_EXIT);
    weft__throw("gexit: a dead green thread was resumed");
}

/* ---- Ms ------------------------------------------------------------------------ */
static void *mstart(void *arg);

static struct m *newm(struct p *pp, bool spinning)
{
    struct m *mp = weft_calloc(1, sizeof *mp);
    if (mp == NULL)
        return NULL;
    mp->g0.system = 1;
    mp->nextp = pp;
    mp->spinning = spinning;
    mp->fastrand = weft__rand_seed((uint64_t)(uintptr_t)mp);
    weft__lock(&sched.lock);
    if (atomic_load_explicit(&sched.stopping, RLX)) {
        weft__unlock(&sched.lock);
        weft_free(mp);
        return NULL;
    }
    mp->id = sched.mcount++;
    mp->alllink = sched.allm;
    sched.allm = mp;
    weft__unlock(&sched.lock);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    /* the runtime's threads take no asynchronous signals but SIGQUIT/SIGSEGV */
    sigset_t all, old;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGQUIT);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGABRT);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&mp->thread, &attr, mstart, mp);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (err != 0) {
        weft__printf("cannot start a worker thread: %s", strerror(err));
        /* stays on allm, never joined */
        atomic_store_explicit(&mp->started, -1, REL);
        return NULL;
    }
    /* release: mp->thread, written by pthread_create, for teardown's join */
    atomic_store_explicit(&mp->started, 1, REL);
    return mp;
}

/* Hand pp (or an idle P) to an idle or new M. */
static void startm(struct p *pp, bool spinning)
{
    weft__lock(&sched.lock);
    if (pp == NULL) {
        pp = pidleget();
        if (pp == NULL) {
            weft__unlock(&sched.lock);
            if (spinning)
                atomic_fetch_sub_explicit(&sched.nmspinning, 1, SC);
            return;
        }
    }
    /* the timer M goes last: the others wait with no timeout and would leave the
     * timers of busy Ps to sysmon's backstop */
    struct m **link = &sched.midle;
    if (*link != NULL && *link == atomic_load_explicit(&sched.timer_m, RLX) && (*link)->link != NULL)
        link = &(*link)->link;
    struct m *mp = *link;
    if (mp != NULL) {
        *link = mp->link;
        sched.nmidle--;
    }
    weft__unlock(&sched.lock);
    if (mp == NULL) {
        if (newm(pp, spinning) == NULL) {
            weft__lock(&sched.lock);
            weft__sched_pidle_put(pp);
            weft__unlock(&sched.lock);
            if (spinning)
                atomic_fetch_sub_explicit(&sched.nmspinning, 1, SC);
        }
        return;
    }
    mp->spinning = spinning;
    mp->nextp = pp;
    /* release: nextp and spinning are visible to the woken M */
    /* seq_cst (release is what the P needs): poller.h's order with mp->inpoll */
    atomic_store_explicit(&mp->park, 1, SC);
    weft__m_unpark(mp);
}

void weft__sched_wakep(void)
{
    /* seq_cst: pairs with the idle M's nmspinning decrement and re-check (sched.h) */
    atomic_thread_fence(SC);
    if (atomic_load_explicit(&sched.npidle, SC) == 0)
        return;
    int zero = 0;
    if (atomic_load_explicit(&sched.nmspinning, SC) != 0 ||
        !atomic_compare_exchange_strong_explicit(&sched.nmspinning, &zero, 1, SC, RLX))
        return;
    startm(NULL, true);
}

/* The timer M with I/O in flight: wait in the poller until the next timer (poller.h's
 * order: inpoll published, then the park word re-read). */
static int poll_wait(struct m *mp, int64_t until)
{
    int n = 0;
    atomic_store_explicit(&mp->inpoll, 1, SC);
    if (atomic_load_explicit(&mp->park, SC) == 0)
        n = weft__poller->wait(until);
    atomic_store_explicit(&mp->inpoll, 0, SC);
    return n;
}

/* An idle M (on midle, park 0) takes an idle P for itself, off the idle list: true
 * with mp->nextp set. */
static bool take_idle_p(struct m *mp)
{
    bool took = false;
    weft__lock(&sched.lock);
    if (atomic_load_explicit(&mp->park, ACQ) == 0 && sched.pidle != NULL &&
        !atomic_load_explicit(&sched.stopping, RLX)) {
        struct m **link = &sched.midle;
        while (*link != NULL && *link != mp)
            link = &(*link)->link;
        if (*link == mp) {
            *link = mp->link;
            sched.nmidle--;
            mp->nextp = pidleget();
            took = true;
        }
    }
    weft__unlock(&sched.lock);
    return took;
}

/* Park this M until startm hands it a P; false when the runtime stops. One idle M
 * is the timer M: it sleeps only until the earliest timer of all Ps and runs expired
 * timers without a P (timer.c). park: 0 asleep, 1 P handed over (or stop), 2 poke. */
static bool stopm(struct m *mp)
{
    weft__lock(&sched.lock);
    if (atomic_load_explicit(&sched.stopping, RLX)) {
        weft__unlock(&sched.lock);
        return false;
    }
    mp->link = sched.midle;
    sched.midle = mp;
    sched.nmidle++;
    weft__unlock(&sched.lock);
    for (;;) {
        /* acquire: pairs with startm's release store */
        uint32_t v = atomic_load_explicit(&mp->park, ACQ);
        if (v == 1)
            break;
        if (v == 2) {
            atomic_compare_exchange_strong_explicit(&mp->park, &v, 0, RLX, RLX);
            continue;
        }
        int64_t next = weft__timer_next();
        struct m *none = NULL;
        if (atomic_load_explicit(&sched.timer_m, SC) != mp &&
            !atomic_compare_exchange_strong_explicit(&sched.timer_m, &none, mp, SC, RLX)) {
            /* I/O in flight and the timer M asleep on its futex (it looked before the
             * operation began): poke it, so that it waits in the poller instead */
            struct m *tm = atomic_load_explicit(&sched.timer_m, SC);
            if (tm != NULL && weft__poller_pending() && !atomic_load_explicit(&tm->inpoll, SC)) {
                uint32_t zero = 0;
                if (atomic_compare_exchange_strong_explicit(&tm->park, &zero, 2, SC, RLX))
                    weft__m_unpark(tm);
            }
            weft__futex_wait(&mp->park, 0);
            continue;
        }
        /* We are the timer M. Publish how long we sleep, INT64_MAX included: with a
         * stale (earlier) sleep_until, weft__timer_add would not poke us for a timer
         * added after the one we slept for was deleted, and that timer would never run. */
        atomic_store_explicit(&sched.timer_sleep_until, next, SC);
        if (weft__timer_next() < next)
            continue;                      /* an earlier timer came meanwhile */
        if (weft__poller_pending() && (next == INT64_MAX || next > weft__time_now())) {
            /* completions came: run them ourselves on an idle P (findrunnable reaps
             * its own and the idle Ps' rings), as Go's M that blocked in netpoll
             * does -- not a hand-off that wakes another M; with every P busy, their
             * Ms reap at their next scheduling point, and we reap for them now */
            if (poll_wait(mp, next) > 0) {
                if (take_idle_p(mp))
                    break;
                weft__poller->poll(NULL);  /* readies Gs onto the global queue */
            }
            continue;
        }
        if (next == INT64_MAX) {
            weft__futex_wait(&mp->park, 0);
            continue;
        }
        int64_t now = weft__time_now();
        if (next > now) {
            weft__futex_wait_timeout(&mp->park, 0, next - now);
            continue;
        }
        /* timers are due: with an idle P, take it and run them from findrunnable, so
         * the Gs they ready go to its run queue in one go; else run them P-less */
        if (take_idle_p(mp))
            break;
        weft__timers_run_all(now);         /* readies Gs: wakep may hand us a P */
    }
    atomic_store_explicit(&mp->park, 0, RLX);
    struct m *self = mp;
    bool held = atomic_compare_exchange_strong_explicit(&sched.timer_m, &self, NULL, SC, RLX);
    if (held)
        atomic_store_explicit(&sched.timer_sleep_until, INT64_MAX, SC);
    /* Hand the role on: poke an idle M, which takes it when it looks again. Also when
     * we did not hold it but nobody does: the M poked by the last holder may be us,
     * taken by startm (park 2 overwritten by 1) before it looked, and the other idle
     * Ms sleep with no timeout -- the timers of busy Ps would wait for sysmon. */
    if (held || atomic_load_explicit(&sched.timer_m, SC) == NULL) {
        weft__lock(&sched.lock);
        struct m *other = sched.midle;
        uint32_t zero = 0;
        if (other != NULL && atomic_compare_exchange_strong_explicit(&other->park, &zero, 2, SC, RLX))
            weft__m_unpark(other);
        weft__unlock(&sched.lock);
    }
    if (mp->nextp == NULL)
        return false;        /* woken by the stop */
    acquirep(mp, mp->nextp);
    mp->nextp = NULL;
    return true;
}

static void resetspinning(struct m *mp)
{
    mp->spinning = false;
    if (atomic_fetch_sub_explicit(&sched.nmspinning, 1, SC) == 1)
        weft__sched_wakep();       /* we were the last spinner: let another look for work */
}

/* victim's runnext, if it has waited there for a while (runq.c): the P is in a
 * blocking call, or it is running and its schedtick does not move for RUNNEXT_WAIT_NS
 * (its G computes with no scheduling point). A running P that does schedule (a
 * ping-pong pair) keeps its runnext. Read racily, like sysmon's look: a stale tick
 * only delays or hastens one steal. */
#define RUNNEXT_WAIT_NS 3000
static struct g *stealnext(struct p *victim)
{
    if (atomic_load_explicit(&victim->runnext, RLX) == NULL)
        return NULL;
    if (atomic_load_explicit(&victim->status, RLX) == P_RUNNING) {
        uint32_t tick = __atomic_load_n(&victim->schedtick, __ATOMIC_RELAXED);
        int64_t t0 = weft__time_now();
        while (weft__time_now() - t0 < RUNNEXT_WAIT_NS)
            for (int k = 0; k < 50; k++)
                weft__cpu_relax();
        if (__atomic_load_n(&victim->schedtick, __ATOMIC_RELAXED) != tick)
            return NULL;
    }
    return weft__runq_steal_next(victim);
}

static struct g *stealwork(struct m *mp, struct p *pp)
{
    int n = sched.nprocs;
    for (int round = 0; round < 4; round++) {
        int start = (int)(weft__rand_next(&mp->fastrand) % (uint32_t)n);
        for (int i = 0; i < n; i++) {
            struct p *victim = sched.allp[(start + i) % n];
            if (victim == pp)
                continue;
            struct g *gp = weft__runq_steal(pp, victim);
            if (gp == NULL && round == 3)
                gp = stealnext(victim);
            if (gp != NULL) {
                counter_inc(&pp->nsteals);
                return gp;
            }
        }
    }
    return NULL;
}

/* On g0 holding a P. Returns a G to run, or NULL when the runtime stops. */
static struct g *findrunnable(struct m *mp)
{
    struct g *gp;
top:
    if (atomic_load_explicit(&sched.stopping, RLX))
        return NULL;
    struct p *pp = mp->p;
    __atomic_store_n(&pp->schedtick, pp->schedtick + 1, __ATOMIC_RELAXED);
    if (atomic_load_explicit(&pp->timer0, RLX) != INT64_MAX)
        weft__timers_run(pp, weft__time_now());
    if (pp->schedtick % 61 == 0) {
        /* now and then, completions and the global queue even while local work lasts */
        if (weft__poller_pending())
            weft__poller->poll(pp);
        if (atomic_load_explicit(&sched.runqsize, RLX) > 0 && (gp = fair_global(pp)) != NULL)
            goto found;
    }
    if ((gp = weft__runq_get(pp)) != NULL)
        goto found;
    if (atomic_load_explicit(&sched.runqsize, RLX) > 0) {
        weft__lock(&sched.lock);
        gp = weft__globrunq_get(pp, 0, false);
        weft__unlock(&sched.lock);
        if (gp != NULL)
            goto found;
    }
    /* completed I/O before stealing (Go's findRunnable: netpoll(0)) */
    if (weft__poller_pending() && weft__poller->poll(pp) > 0 && (gp = weft__runq_get(pp)) != NULL)
        goto found;
    int busy = sched.nprocs - atomic_load_explicit(&sched.npidle, RLX);
    if (mp->spinning || 2 * atomic_load_explicit(&sched.nmspinning, RLX) < busy) {
        if (!mp->spinning) {
            mp->spinning = true;
            atomic_fetch_add_explicit(&sched.nmspinning, 1, SC);
        }
        /* Keep looking for a little while (SPIN_NS) before giving the P back: while
         * one M spins, submitters skip wakep, so a burst of hand-offs (ping-pong on
         * another P) costs no futex wake-ups. Bounded, so an idle runtime sleeps. */
        int64_t spin_until = 0;
        for (;;) {
            if ((gp = stealwork(mp, pp)) != NULL)
                goto found;
            if (weft__poller_pending() && weft__poller->poll(pp) > 0 &&
                (gp = weft__runq_get(pp)) != NULL)
                goto found;
            if (atomic_load_explicit(&sched.runqsize, RLX) > 0 ||
                atomic_load_explicit(&sched.stopping, RLX))
                break;
            int64_t now = weft__time_now();
            if (spin_until == 0)
                spin_until = now + SPIN_NS;
            else if (now >= spin_until)
                break;
            if (atomic_load_explicit(&pp->timer0, RLX) <= now)
                break;
            /* between looks, leave the victims' cache lines alone for a while */
            for (int k = 0; k < 256; k++)
                weft__cpu_relax();
        }
    }
    /* the other Ps' expired timers (their Ms may be busy) */
    if (weft__timer_next() != INT64_MAX && weft__timers_run_all(weft__time_now()) &&
        (gp = weft__runq_get(pp)) != NULL)
        goto found;
    /* nothing: give the P back */
    weft__lock(&sched.lock);
    if (atomic_load_explicit(&sched.runqsize, RLX) > 0) {
        gp = weft__globrunq_get(pp, 0, false);
        weft__unlock(&sched.lock);
        goto found;
    }
    releasep(mp);
    weft__sched_pidle_put(pp);
    weft__unlock(&sched.lock);
    if (mp->spinning) {
        mp->spinning = false;
        /* seq_cst: pairs with wakep's fence; then look at every queue once more */
        atomic_fetch_sub_explicit(&sched.nmspinning, 1, SC);
        /* the global queue too: a plain thread may have queued a G after our locked
         * look above, seen us spinning, and skipped its wakep */
        bool work = atomic_load_explicit(&sched.runqsize, SC) > 0;
        for (int i = 0; i < sched.nprocs; i++) {
            /* rings only: a runnext is run by its P's M at its next scheduling
             * point, or taken once stale after sysmon wakes a spinner (sched.h) */
            if (work || !weft__runq_ring_empty(sched.allp[i])) {
                weft__lock(&sched.lock);
                struct p *p2 = pidleget();
                weft__unlock(&sched.lock);
                if (p2 != NULL) {
                    acquirep(mp, p2);
                    mp->spinning = true;
                    atomic_fetch_add_explicit(&sched.nmspinning, 1, SC);
                    goto top;
                }
                break;
            }
        }
    }
    if (!stopm(mp))
        return NULL;
    goto top;
found:
    if (mp->spinning)
        resetspinning(mp);
    return gp;
}

static void *mstart(void *arg)
{
    struct m *mp = arg;
    weft__current_set_m(mp);
    __atomic_store_n(&mp->curg, &mp->g0, __ATOMIC_RELAXED);
    weft__san_thread_start(&mp->g0);
    mp->altstack = weft__altstack_new();
    acquirep(mp, mp->nextp);
    mp->nextp = NULL;
    for (;;) {
        if (mp->p == NULL && !stopm(mp))
            break;
        struct g *gp = findrunnable(mp);
        if (gp == NULL)
            break;
        gswitch(mp, &mp->g0, gp, AFTER_NONE);
    }
    if (mp->p != NULL) {
        weft__lock(&sched.lock);
        weft__sched_pidle_put(releasep(mp));
        weft__unlock(&sched.lock);
    }
    if (mp->spinning) {
        mp->spinning = false;
        atomic_fetch_sub_explicit(&sched.nmspinning, 1, SC);
    }
    weft__altstack_free(mp->altstack);
    mp->altstack = NULL;
    weft__current_set_m(NULL);
    return NULL;
}

/* ---- blocking calls ------------------------------------------------------------ */
void weft_blocking(void (*fn)(void *), void *arg)
{
    struct m *mp = weft__current_m();
    struct g *gp = mp != NULL ? mp->curg : NULL;
    if (gp == NULL || gp->system) {
        fn(arg);
        return;
    }
    struct p *pp = mp->p;
    atomic_fetch_add_explicit(&sched.nsyscall, 1, RLX);
    atomic_store_explicit(&gp->status, G_SYSCALL, RLX);
    weft__mcache_use(NULL);
    atomic_fetch_add_explicit(&pp->syscalltick, 1, RLX);
    /* release: everything this G did is visible to the M that retakes the P */
    atomic_store_explicit(&pp->status, P_SYSCALL, REL);
    weft__sysmon_wake();
    fn(arg);
    atomic_fetch_sub_explicit(&sched.nsyscall, 1, RLX);
    uint32_t expect = P_SYSCALL;
    /* acquire: pairs with sysmon's CAS if it had retaken and released the P */
    if (atomic_compare_exchange_strong_explicit(&pp->status, &expect, P_RUNNING, ACQ, RLX)) {
        weft__mcache_use(pp->mcache);
        atomic_store_explicit(&gp->status, G_RUNNING, RLX);
        return;
    }
    /* the P went to another M */
    mp->p = NULL;
    weft__lock(&sched.lock);
    struct p *p2 = atomic_load_explicit(&sched.stopping, RLX) ? NULL : pidleget();
    weft__unlock(&sched.lock);
    if (p2 != NULL) {
        acquirep(mp, p2);
        atomic_store_explicit(&gp->status, G_RUNNING, RLX);
        return;
    }
    atomic_store_explicit(&gp->status, G_RUNNABLE, RLX);
    gswitch(mp, gp, &mp->g0, AFTER_BLOCKED);
}

/* sysmon took pp (P_SYSCALL -> P_IDLE): give it to an M if there is work. */
bool weft__sched_handoffp(struct p *pp)
{
    __atomic_store_n(&pp->m, NULL, __ATOMIC_RELAXED);
    if (!weft__runq_empty(pp) || atomic_load_explicit(&sched.runqsize, RLX) > 0) {
        startm(pp, false);
        return true;
    }
    int zero = 0;
    if (atomic_load_explicit(&sched.nmspinning, RLX) == 0 &&
        atomic_compare_exchange_strong_explicit(&sched.nmspinning, &zero, 1, SC, RLX)) {
        startm(pp, true);
        return true;
    }
    weft__lock(&sched.lock);
    weft__sched_pidle_put(pp);
    weft__unlock(&sched.lock);
    return false;
}

