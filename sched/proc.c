/*
 * sched/proc.c -- the scheduler: Ps, Ms, spawning, switching, parking, finding work,
 * blocking calls, and the runtime's start and stop (our proc.go).
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
 * and a stack (first_run) -- goes to runnext (kicking the old one to the ring);
 * weft_spawn is never a scheduling point. A spawner that outruns the Ps overflows its
 * ring into the global queue's GQ_NEW ring, which is taken only after GQ_RAN (Gs that
 * have run): a flood of new Gs does not delay the Gs that wake meanwhile (runq.c).
 * Dead Gs and spawn records: per-P lists and a global stack of batches (flist_put).
 *
 * Stop: `stopping` makes every M leave its loop at its next scheduling point; idle Ms
 * are woken; all are joined, then every G and stack is released. A G that never
 * reaches a scheduling point (a loop with no yield, a blocking call that never
 * returns) holds its M, and weft_stop/weft_run wait for it; a wait (for live Gs in
 * weft_stop, for an M in the join) that lasts STOP_NOTICE_NS prints once what it waits
 * for, with the dump, and goes on waiting.
 */
#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "sched/sched.h"
#include "sched/san.h"

#define SPIN_NS 20000          /* how long a spinning M looks for work before it parks */

struct schedt weft__sched = { .lock = WEFT_LOCK_INIT, .gflock = WEFT_LOCK_INIT };
#ifdef WEFT_VALGRIND
int weft__on_valgrind;
#endif

static __thread struct m *tls_m WEFT_TLS_IE;
static weft_lock start_lock = WEFT_LOCK_INIT;
static weft_lock allg_lock = WEFT_LOCK_INIT;
static struct g *allg;
static uint64_t nallg;

/* The only reader of the current M: out of line, and opaque to the optimizer, so
 * that no caller keeps a thread-local address across a switch (DESIGN.md). */
WEFT_NOINLINE struct m *weft__current_m(void)
{
    struct m *mp = tls_m;
    __asm__ volatile("" : "+r"(mp));
    return mp;
}

int64_t weft__time_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t weft_now(void)
{
    return weft__time_now();
}

struct g *weft__current_g(void)
{
    struct m *mp = weft__current_m();
    return mp != NULL && mp->curg != NULL && !mp->curg->system ? mp->curg : NULL;
}

static inline void counter_inc(_Atomic uint64_t *c)
{
    /* owner-only writer: a relaxed load and store, no RMW */
    atomic_store_explicit(c, atomic_load_explicit(c, RLX) + 1, RLX);
}

/* The P this M may use for run queues now (none while in a blocking call). */
static inline struct p *curp(struct m *mp)
{
    return mp != NULL && mp->p != NULL && mp->curg != NULL &&
                   atomic_load_explicit(&mp->curg->status, RLX) != G_SYSCALL
               ? mp->p
               : NULL;
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

static void pidleput(struct p *pp)    /* lock held */
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
static void gfput(struct p *pp, struct g *gp);
static void after_switch(struct g *self);
static void startm(struct p *pp, bool spinning);
static WEFT_NORETURN WEFT_TSAN_NOFRAME void gexit(void);

static WEFT_NOINLINE void attach_stack(struct m *mp, struct g *gp);

static WEFT_NOINLINE struct g *first_run(struct m *mp, struct g *rec);

static inline WEFT_TSAN_NOFRAME void gswitch(struct m *mp, struct g *from, struct g *to, int action)
{
    if (WEFT_UNLIKELY(to->ctx.sp == NULL))
        to = first_run(mp, to);     /* a spawn record: now a G, with a stack */
    mp->after = action;
    mp->after_g = from;
    __atomic_store_n(&mp->curg, to, __ATOMIC_RELAXED);   /* sysmon reads it */
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
        gfput(mp->p, prev);
        break;
    case AFTER_BLOCKED:
    case AFTER_GLOBAL:
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

static void attach_stack(struct m *mp, struct g *gp)
{
    if (weft__stack_get(mp->p, gp->stacksize, &gp->stack) != 0)
        weft__throwf("out of memory for the %zu KiB stack of green thread %llu",
                     gp->stacksize / 1024, (unsigned long long)gp->id);
    weft__san_stack_reuse(gp->stack.lo, gp->stack.hi);
    weft__tsan_fiber_new(gp);
    gp->valgrind_id = weft__valgrind_stack_register(gp->stack.lo, gp->stack.hi);
    atomic_fetch_add_explicit(&weft__mem_stack_inuse, gp->stack.hi - gp->stack.lo, RLX);
    weft__ctx_init(&gp->ctx, (void *)gp->stack.hi, gentry, gp);
}

static void release_stack(struct p *pp, struct g *gp)
{
    if (gp->stack.lo == 0)
        return;
    weft__stack_check(gp);
    weft__valgrind_stack_deregister(gp->valgrind_id);
    atomic_fetch_sub_explicit(&weft__mem_stack_inuse, gp->stack.hi - gp->stack.lo, RLX);
    weft__stack_put(pp, &gp->stack);
    __atomic_store_n(&gp->ctx.sp, NULL, __ATOMIC_RELAXED);  /* prefetchers peek at it */
}

static struct g *newg(void)
{
    struct g *gp = weft_aligned_alloc(64, sizeof *gp);   /* lines as struct g lays out */
    if (gp == NULL)
        return NULL;
    memset(gp, 0, sizeof *gp);
    weft__lock(&allg_lock);
    gp->alllink = allg;
    allg = gp;
    nallg++;
    weft__unlock(&allg_lock);
    return gp;
}

/* Free lists (sched.h struct flist) of dead Gs and of spawn records: a list per P
 * (fewer than GFREE_MAX) and a global stack of batches (under gflock): a batch's first
 * object links the next batch and counts its own list. Moving a batch either way
 * touches one object, not each: walking a list that another core freed is one cache
 * miss after another, and the spawn benchmark spent most of weft_spawn there (spawner
 * and exits on different Ps). A P walks only its own, recently freed ones (the split
 * below). */
static void flist_put(struct flist *local, struct fnode **global, struct fnode *x)
{
    x->next = local->head;
    local->head = x;
    if (++local->n < GFREE_MAX)
        return;
    /* the GFREE_MAX / 2 most recently freed stay; the older half goes as one batch */
    struct fnode *last = local->head;
    for (int i = 1; i < GFREE_MAX / 2; i++)
        last = last->next;
    struct fnode *batch = last->next;
    last->next = NULL;
    batch->n = local->n - GFREE_MAX / 2;
    local->n = GFREE_MAX / 2;
    weft__lock(&sched.gflock);
    batch->batch = *global;
    __atomic_store_n(global, batch, __ATOMIC_RELAXED);
    weft__unlock(&sched.gflock);
}

/* One off the P's list (local), refilled with a global batch when empty; or, for a
 * plain thread (local NULL), one off the first global batch. NULL: none free. */
static struct fnode *flist_get(struct flist *local, struct fnode **global)
{
    struct fnode *x;
    /* a racy peek (a relaxed load; the list changes under gflock): at worst a new one */
    if (local != NULL && local->head == NULL &&
        __atomic_load_n(global, __ATOMIC_RELAXED) != NULL) {
        weft__lock(&sched.gflock);
        x = *global;
        if (x != NULL) {
            __atomic_store_n(global, x->batch, __ATOMIC_RELAXED);
            local->head = x;
            local->n = x->n;
        }
        weft__unlock(&sched.gflock);
    }
    if (local != NULL) {
        x = local->head;
        if (x != NULL) {
            local->head = x->next;
            local->n--;
            if (local->head != NULL)
                __builtin_prefetch(local->head, 1);   /* the next one's line */
        }
        return x;
    }
    if (__atomic_load_n(global, __ATOMIC_RELAXED) == NULL)
        return NULL;
    weft__lock(&sched.gflock);
    x = *global;
    if (x != NULL) {
        struct fnode *rest = x->next;
        if (rest != NULL) {
            rest->batch = x->batch;
            rest->n = x->n - 1;
        } else {
            rest = x->batch;
        }
        __atomic_store_n(global, rest, __ATOMIC_RELAXED);
    }
    weft__unlock(&sched.gflock);
    return x;
}

static void gfput(struct p *pp, struct g *gp)
{
    atomic_store_explicit(&gp->status, G_IDLE, RLX);
    release_stack(pp, gp);
    flist_put(&pp->gfree, &sched.gfree, &gp->freenode);
}

/* ---- spawn records (sched.h struct gspawn), recycled like dead Gs ----------------- */
static struct gspawn *fnode_rec(struct fnode *x)
{
    return x != NULL ? (struct gspawn *)((char *)x - offsetof(struct gspawn, freenode)) : NULL;
}

static struct g *fnode_g(struct fnode *x)
{
    return x != NULL ? (struct g *)((char *)x - offsetof(struct g, freenode)) : NULL;
}

/* A chunk of records: line 0 links the chunks (teardown, dump), then RECS_PER_CHUNK
 * records. The first is returned, the rest become the free list local (the P's, empty
 * when this is called), or, for a plain thread (local NULL), a global batch. */
static struct gspawn *newrecs(struct flist *local)
{
    struct gspawn *c = weft_aligned_alloc(4096, 64 * (RECS_PER_CHUNK + 1));
    if (c == NULL)
        return NULL;
    memset(c, 0, 64 * (RECS_PER_CHUNK + 1));
    for (int i = 2; i < RECS_PER_CHUNK; i++)
        c[i].freenode.next = &c[i + 1].freenode;
    struct fnode *rest = &c[2].freenode;
    if (local != NULL) {
        local->head = rest;
        local->n = RECS_PER_CHUNK - 1;
    }
    weft__lock(&sched.gflock);
    *(void **)c = sched.recchunks;
    sched.recchunks = c;
    if (local == NULL) {
        rest->n = RECS_PER_CHUNK - 1;
        rest->batch = sched.recfree;
        __atomic_store_n(&sched.recfree, rest, __ATOMIC_RELAXED);
    }
    weft__unlock(&sched.gflock);
    return &c[1];
}

static struct gspawn *recget(struct p *pp)
{
    struct flist *local = pp != NULL ? &pp->recfree : NULL;
    struct gspawn *r = fnode_rec(flist_get(local, &sched.recfree));
    return r != NULL ? r : newrecs(local);
}

/* A G's first run (gswitch, to a G whose saved sp is NULL: a spawn record): a struct g
 * (a dead one of this P if any) and a stack now; the record goes back. */
static struct g *first_run(struct m *mp, struct g *to)
{
    struct gspawn *r = (struct gspawn *)to;
    struct p *pp = mp->p;
    if (pp == NULL)     /* only an M holding a P runs Gs */
        weft__throwf("first_run: green thread %llu started on an M without a P",
                     (unsigned long long)r->id);
    struct g *gp = fnode_g(flist_get(&pp->gfree, &sched.gfree));
    if (gp == NULL && (gp = newg()) == NULL)
        weft__throwf("out of memory for green thread %llu", (unsigned long long)r->id);
    gp->id = r->id;
    gp->fn = r->fn;
    gp->arg = r->arg;
    gp->name = r->name;
    gp->stacksize = r->stacksize;
    gp->waitreason = NULL;
    __atomic_store_n(&gp->overran, 0, __ATOMIC_RELAXED);    /* sysmon writes it too */
    atomic_store_explicit(&gp->preempt, 0, RLX);
    gp->asan_fake = NULL;
    gp->deadline = -1;
    /* The dump never misses a G starting: it reads the records first (acquire), then
     * the Gs; the G is runnable before its record is not (release). */
    atomic_store_explicit(&gp->status, G_RUNNABLE, RLX);
    atomic_store_explicit(&r->status, G_IDLE, memory_order_release);
    flist_put(&pp->recfree, &sched.recfree, &r->freenode);
    attach_stack(mp, gp);
    return gp;
}

/* A requested stack size (1 .. WEFT_STACK_MAX) in whole pages, at least 16 KiB. */
static size_t stack_round(size_t size)
{
    size = (size + 4095) & ~(size_t)4095;      /* no wrap: size <= WEFT_STACK_MAX */
    return size < 16384 ? 16384 : size;
}

static uint64_t newgoid(struct p *pp)
{
    if (pp == NULL)
        return atomic_fetch_add_explicit(&sched.goidgen, 1, RLX) + 1;
    if (pp->goidcache == pp->goidcacheend) {
        pp->goidcache = atomic_fetch_add_explicit(&sched.goidgen, 64, RLX) + 1;
        pp->goidcacheend = pp->goidcache + 64;
    }
    return pp->goidcache++;
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
        size = stack_round(opts->stack_size);
    }
    struct m *mp = weft__current_m();
    struct p *pp = curp(mp);
    struct gspawn *r = recget(pp);
    if (r == NULL)
        return -ENOMEM;
    r->fn = fn;
    r->arg = arg;
    r->name = opts != NULL ? opts->name : NULL;
    r->id = newgoid(pp);
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
    if (atomic_load_explicit(&sched.runqsize, RLX) > 0 && pp->schedtick % 61 == 0) {
        struct g *gp = fair_global(pp);
        if (gp != NULL)
            return gp;
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
    atomic_store_explicit(&gp->preempt, 0, RLX);
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
    struct p *pp = curp(weft__current_m());
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
        atomic_store_explicit(&mp->started, -1, memory_order_release);
        return NULL;
    }
    /* release: mp->thread, written by pthread_create, for teardown's join */
    atomic_store_explicit(&mp->started, 1, memory_order_release);
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
            pidleput(pp);
            weft__unlock(&sched.lock);
            if (spinning)
                atomic_fetch_sub_explicit(&sched.nmspinning, 1, SC);
        }
        return;
    }
    mp->spinning = spinning;
    mp->nextp = pp;
    /* release: nextp and spinning are visible to the woken M */
    atomic_store_explicit(&mp->park, 1, REL);
    weft__futex_wake(&mp->park, 1);
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
            weft__futex_wait(&mp->park, 0);
            continue;
        }
        /* We are the timer M. Publish how long we sleep, INT64_MAX included: with a
         * stale (earlier) sleep_until, weft__timer_add would not poke us for a timer
         * added after the one we slept for was deleted, and that timer would never run. */
        atomic_store_explicit(&sched.timer_sleep_until, next, SC);
        if (weft__timer_next() < next)
            continue;                      /* an earlier timer came meanwhile */
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
                weft__unlock(&sched.lock);
                break;
            }
        }
        weft__unlock(&sched.lock);
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
            weft__futex_wake(&other->park, 1);
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
    if (atomic_load_explicit(&sched.runqsize, RLX) > 0 && pp->schedtick % 61 == 0 &&
        (gp = fair_global(pp)) != NULL)
        goto found;
    if ((gp = weft__runq_get(pp)) != NULL)
        goto found;
    if (atomic_load_explicit(&sched.runqsize, RLX) > 0) {
        weft__lock(&sched.lock);
        gp = weft__globrunq_get(pp, 0, false);
        weft__unlock(&sched.lock);
        if (gp != NULL)
            goto found;
    }
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
    pidleput(pp);
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
    tls_m = mp;
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
        pidleput(releasep(mp));
        weft__unlock(&sched.lock);
    }
    if (mp->spinning) {
        mp->spinning = false;
        atomic_fetch_sub_explicit(&sched.nmspinning, 1, SC);
    }
    weft__altstack_free(mp->altstack);
    mp->altstack = NULL;
    tls_m = NULL;
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
    pidleput(pp);
    weft__unlock(&sched.lock);
    return false;
}

/* ---- start and stop -------------------------------------------------------------- */
static int read_cpu_quota(const char *path)
{
    char buf[64];
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return 0;
    int n = 0;
    if (fgets(buf, sizeof buf, f) != NULL) {
        long long quota, period;
        if (sscanf(buf, "%lld %lld", &quota, &period) == 2 && quota > 0 && period > 0)
            n = (int)((quota + period - 1) / period);
    }
    fclose(f);
    return n;
}

/* The CPUs this process may use: its affinity mask, capped by the cgroup v2 CPU quota
 * of its cgroup and every ancestor (Go 1.25 does the same). */
static int default_nprocs(void)
{
    cpu_set_t set;
    int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set)
                                                        : (int)sysconf(_SC_NPROCESSORS_ONLN);
    char line[512], path[640];
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f != NULL) {
        while (fgets(line, sizeof line, f) != NULL) {
            if (strncmp(line, "0::", 3) != 0)
                continue;
            char *cg = line + 3;
            cg[strcspn(cg, "\n")] = 0;
            for (;;) {
                snprintf(path, sizeof path, "/sys/fs/cgroup%s/cpu.max", cg);
                int q = read_cpu_quota(path);
                if (q > 0 && q < n)
                    n = q;
                char *slash = strrchr(cg, '/');
                if (slash == NULL || slash == cg)
                    break;
                *slash = 0;
            }
        }
        fclose(f);
    }
    int q = read_cpu_quota("/sys/fs/cgroup/cpu.max");
    if (q > 0 && q < n)
        n = q;
    return n < 1 ? 1 : n;
}

/* weft__throw's context (weft/base.h): the green thread the caller runs, if any. Reads
 * only the caller's own M and G (no lock, no allocation: it may run in a signal
 * handler); a name is cut at 64 bytes. */
static size_t throw_context(char *buf, size_t cap)
{
    struct g *gp = weft__current_g();
    if (gp == NULL || cap == 0)
        return 0;
    int n = gp->name != NULL
                ? snprintf(buf, cap, "green thread %llu (%.64s)", (unsigned long long)gp->id, gp->name)
                : snprintf(buf, cap, "green thread %llu", (unsigned long long)gp->id);
    if (n <= 0)
        return 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}

static void on_sigquit(int sig)
{
    (void)sig;
    atomic_store_explicit(&sched.sigquit, 1, RLX);
    weft__sysmon_wake();
}

static struct sigaction old_quit;

/* ---- fork ---------------------------------------------------------------------------
 * The child of a fork() has one thread, the caller's copy; the Ms and sysmon are gone,
 * and any lock one of them held (sched.lock, gflock, allg_lock, start_lock,
 * stack_lock, a timerlock) would stay held for good. So the child forgets the runtime
 * (fork_child, a pthread_atfork child handler): every lock reinitialised, every list
 * of the old runtime dropped (its memory stays mapped and unused, as a vanished
 * thread's stack does), sched back to "not running": weft_spawn says -ESRCH and
 * weft_start starts a fresh runtime. What each M, P or G was doing at the fork is
 * unknown, so nothing of theirs is walked or freed -- except what the calling thread
 * itself owned, which it was not in the middle of changing: its P's allocator cache
 * (flushed back) and stack cache (to the new, empty pool).
 * The calling thread becomes a plain thread: current M NULL (a caller on a green
 * thread runs on in that G's stack, with the G's deadline as its own), its allocator
 * cache its own thread cache (or the empty one), and its signal mask the one of the
 * thread that started the runtime (an M blocks nearly every signal).
 * Registered at the first weft_start, so after the allocator's handlers (mem/mcache.c,
 * a constructor): child handlers run in registration order, the allocator's locks
 * are usable again by the time this one flushes a cache. Not handled: weft objects
 * (channels, mutexes ...) that other threads were using at the fork, as with pthread
 * mutexes; the child must not use them. */
static sigset_t start_sigmask;       /* written by weft_start under start_lock */

static void fork_child(void)
{
    struct m *mp = tls_m;
    bool running = atomic_load_explicit(&sched.running, RLX);
    weft__lock_reinit(&start_lock);
    weft__lock_reinit(&allg_lock);
    weft__lock_reinit(&sched.lock);
    weft__lock_reinit(&sched.gflock);
    struct p *own = NULL;
    if (mp != NULL) {
        struct g *gp = mp->curg != NULL && !mp->curg->system ? mp->curg : NULL;
        own = curp(mp);                  /* not in a blocking call: the P is ours */
        if (gp != NULL)
            weft__deadline_set_plain(gp->deadline);
        tls_m = NULL;
        weft__mcache_use(NULL);
        pthread_sigmask(SIG_SETMASK, &start_sigmask, NULL);
    }
    if (!running)
        return;
    weft__stack_fork_child();
    if (own != NULL) {
        weft__mcache_destroy(own->mcache);
        weft__stack_flush(own);
    }
    sigaction(SIGQUIT, &old_quit, NULL);
    weft__sysmon_fork_child();
    allg = NULL;
    nallg = 0;
    sched.allp = NULL;
    sched.nprocs = 0;
    sched.globq[GQ_RAN] = (struct gring){ 0 };
    sched.globq[GQ_NEW] = (struct gring){ 0 };
    sched.pidle = NULL;
    sched.midle = NULL;
    sched.nmidle = 0;
    sched.allm = NULL;
    sched.mcount = 0;
    sched.gfree = NULL;
    sched.recfree = NULL;
    sched.recchunks = NULL;
    atomic_store_explicit(&sched.runqsize, 0, RLX);
    atomic_store_explicit(&sched.npidle, 0, RLX);
    atomic_store_explicit(&sched.nmspinning, 0, RLX);
    atomic_store_explicit(&sched.nspawned_plain, 0, RLX);
    atomic_store_explicit(&sched.sigquit, 0, RLX);
    atomic_store_explicit(&sched.timer_m, NULL, RLX);
    atomic_store_explicit(&sched.timer_sleep_until, INT64_MAX, RLX);
    atomic_store_explicit(&sched.run_mode, 0, RLX);
    atomic_store_explicit(&sched.nsyscall, 0, RLX);
    atomic_store_explicit(&sched.stopping, 0, RLX);
    atomic_store_explicit(&weft__mem_stack_inuse, 0, RLX);
    /* relaxed: the child has one thread; the next weft_start publishes with release */
    atomic_store_explicit(&sched.running, 0, RLX);
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, fork_child);
}

static void teardown(const char *who);

int weft_start(const weft_config *cfg)
{
    if (cfg != NULL && cfg->stack_size > WEFT_STACK_MAX)
        return -EINVAL;
    weft__lock(&start_lock);
    if (atomic_load_explicit(&sched.running, RLX)) {
        weft__unlock(&start_lock);
        return -EBUSY;
    }
    weft__mem_init();
    weft__set_throw_context(throw_context);
    static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
    pthread_once(&atfork_once, register_atfork);
    pthread_sigmask(SIG_SETMASK, NULL, &start_sigmask);
#ifdef WEFT_VALGRIND
    weft__on_valgrind = RUNNING_ON_VALGRIND != 0;
#endif
    int n = cfg != NULL ? cfg->nprocs : 0;
    if (n <= 0) {
        const char *env = getenv("WEFT_MAXPROCS");
        n = env != NULL ? atoi(env) : 0;
    }
    if (n <= 0)
        n = default_nprocs();
    if (n > 1024)
        n = 1024;
    size_t ss = stack_round(cfg != NULL && cfg->stack_size != 0 ? cfg->stack_size : 256 * 1024);
    sched.nprocs = n;
    sched.stack_size = ss;
    sched.allp = weft_calloc((size_t)n, sizeof *sched.allp);
    if (sched.allp == NULL) {
        weft__unlock(&start_lock);
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        struct p *pp = weft_aligned_alloc(64, sizeof *pp);
        struct mcache *c = weft__mcache_create(MCACHE_P);
        if (pp == NULL || c == NULL) {
            weft__printf("weft_start: out of memory");
            abort();
        }
        memset(pp, 0, sizeof *pp);
        pp->id = i;
        atomic_store_explicit(&pp->timer0, INT64_MAX, RLX);
        pp->mcache = c;
        sched.allp[i] = pp;
    }
    weft__lock(&sched.lock);
    weft__globrunq_reserve();       /* the ring's first slots: none mapped under load */
    weft__unlock(&sched.lock);
    for (int i = n - 1; i >= 0; i--)
        pidleput(sched.allp[i]);
    weft__stack_signals_install();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigquit;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGQUIT, &sa, &old_quit);
    atomic_store_explicit(&sched.stopping, 0, RLX);
    atomic_store_explicit(&sched.timer_m, NULL, RLX);
    atomic_store_explicit(&sched.timer_sleep_until, INT64_MAX, RLX);
    atomic_store_explicit(&sched.running, 1, REL);
    int err = weft__sysmon_start();
    weft__unlock(&start_lock);
    if (err != 0) {
        teardown("weft_start");
        return err;
    }
    return 0;
}

int weft_nprocs(void)
{
    return atomic_load_explicit(&sched.running, ACQ) ? sched.nprocs : 0;
}

static uint64_t live_count(void)
{
    uint64_t spawned = atomic_load_explicit(&sched.nspawned_plain, RLX), exited = 0;
    for (int i = 0; i < sched.nprocs; i++) {
        spawned += atomic_load_explicit(&sched.allp[i]->nspawned, RLX);
        exited += atomic_load_explicit(&sched.allp[i]->nexited, RLX);
    }
    return spawned > exited ? spawned - exited : 0;
}

/* A stop that waits this long for green threads (weft_stop) or for a worker (a green
 * thread that does not reach a scheduling point) says once what it waits for, then
 * waits on: a silent hang was all a user got. */
#define STOP_NOTICE_NS ((int64_t)5 * 1000000000)

/* Print the notice and the dump's lines (start_lock held: the lists stay). */
static void stop_notice(const char *who, const char *what)
{
    weft__printf("%s: still waiting after %lld s for %s:", who, (long long)(STOP_NOTICE_NS / 1000000000),
                 what);
    if (atomic_load_explicit(&sched.running, ACQ))
        weft__dump_locked(2);
}

/* Join mp's thread; after STOP_NOTICE_NS since t0 say once (*told) what we wait for. */
static void join_m(struct m *mp, const char *who, int64_t t0, bool *told)
{
    if (!*told) {
        int64_t at = weft__time_after(t0, STOP_NOTICE_NS);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);       /* pthread_timedjoin_np: CLOCK_REALTIME */
        int64_t left = at - weft__time_now();
        if (left < 0)
            left = 0;
        ts.tv_sec += (time_t)(left / 1000000000);
        ts.tv_nsec += (long)(left % 1000000000);
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        if (pthread_timedjoin_np(mp->thread, NULL, &ts) == 0)
            return;
        *told = true;
        stop_notice(who, "a worker thread whose green thread does not reach a scheduling point "
                         "(a loop without weft_yield, a call that blocks without weft_blocking)");
    }
    pthread_join(mp->thread, NULL);
}

/* Stop every M and release every G. Green threads still alive are dropped. who: the
 * public call, for the notice (join_m). */
static void teardown(const char *who)
{
    int64_t t0 = weft__time_now();
    bool told = false;
    weft__lock(&start_lock);
    atomic_store_explicit(&sched.stopping, 1, SC);
    weft__lock(&sched.lock);
    for (struct m *mp = sched.midle; mp != NULL; mp = mp->link) {
        mp->nextp = NULL;
        atomic_store_explicit(&mp->park, 1, REL);
        weft__futex_wake(&mp->park, 1);
    }
    sched.midle = NULL;
    sched.nmidle = 0;
    weft__unlock(&sched.lock);
    /* Ms that are running finish at their next scheduling point */
    for (;;) {
        weft__lock(&sched.lock);
        struct m *mp = sched.allm;
        while (mp != NULL && mp->exiting)
            mp = mp->alllink;
        if (mp != NULL)
            mp->exiting = true;
        weft__unlock(&sched.lock);
        if (mp == NULL)
            break;
        /* newm publishes an M on allm before pthread_create returns: reading its thread
         * id before then skipped the join (ThreadSanitizer: a leaked thread; the M then
         * ran on a freed struct m). Acquire: pairs with newm's release. */
        int started;
        while ((started = atomic_load_explicit(&mp->started, ACQ)) == 0)
            sched_yield();
        if (started > 0)
            join_m(mp, who, t0, &told);
    }
    weft__sysmon_stop();
    weft__lock(&sched.lock);
    struct m *mp = sched.allm;
    sched.allm = NULL;
    sched.mcount = 0;
    weft__globrunq_free();
    sched.pidle = NULL;
    atomic_store_explicit(&sched.npidle, 0, RLX);
    atomic_store_explicit(&sched.nmspinning, 0, RLX);
    weft__unlock(&sched.lock);
    while (mp != NULL) {
        struct m *next = mp->alllink;
        weft_free(mp);
        mp = next;
    }
    weft__lock(&allg_lock);
    struct g *gp = allg;
    allg = NULL;
    nallg = 0;
    weft__unlock(&allg_lock);
    while (gp != NULL) {
        struct g *next = gp->alllink;
        if (!gp->system)
            weft__tsan_fiber_free(gp);
        release_stack(NULL, gp);
        weft_free(gp);
        gp = next;
    }
    sched.gfree = NULL;
    for (void *c = sched.recchunks, *next; c != NULL; c = next) {
        next = *(void **)c;
        weft_free(c);
    }
    sched.recchunks = NULL;
    sched.recfree = NULL;
    atomic_store_explicit(&sched.nspawned_plain, 0, RLX);
    for (int i = 0; i < sched.nprocs; i++) {
        weft__timers_free(sched.allp[i]);
        weft__stack_flush(sched.allp[i]);
        weft__mcache_destroy(sched.allp[i]->mcache);
        weft_free(sched.allp[i]);
    }
    weft_free(sched.allp);
    sched.allp = NULL;
    sigaction(SIGQUIT, &old_quit, NULL);
    weft__stack_signals_restore();
    atomic_store_explicit(&sched.running, 0, REL);
    atomic_store_explicit(&sched.run_mode, 0, RLX);
    sched.nprocs = 0;
    atomic_store_explicit(&sched.stopping, 0, RLX);
    weft__unlock(&start_lock);
}

int weft_stop(void)
{
    if (!atomic_load_explicit(&sched.running, ACQ))
        return -ESRCH;
    if (weft__current_g() != NULL)
        return -EDEADLK;     /* a green thread cannot wait for itself to finish */
    int64_t t0 = weft__time_now();
    bool told = false;
    uint64_t n;
    while ((n = live_count()) > 0) {
        if (!told && weft__time_now() - t0 >= STOP_NOTICE_NS) {
            told = true;
            char what[64];
            snprintf(what, sizeof what, "%llu green thread%s to finish", (unsigned long long)n,
                     n == 1 ? "" : "s");
            weft__lock(&start_lock);
            stop_notice("weft_stop", what);
            weft__unlock(&start_lock);
        }
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    teardown("weft_stop");
    return 0;
}

struct run_main {
    int (*fn)(void *);
    void *arg;
    int ret;
    _Atomic uint32_t done;
};

static void run_main_entry(void *arg)
{
    struct run_main *rm = arg;
    rm->ret = rm->fn(rm->arg);
    /* release: ret is visible to weft_run */
    atomic_store_explicit(&rm->done, 1, REL);
    weft__futex_wake(&rm->done, 1);
}

int weft_run(int (*main_fn)(void *), void *arg, const weft_config *cfg)
{
    if (main_fn == NULL)
        return -EINVAL;
    if (weft__current_g() != NULL)
        return -EBUSY;
    int err = weft_start(cfg);
    if (err != 0)
        return err;
    atomic_store_explicit(&sched.run_mode, 1, RLX);
    struct run_main rm = { .fn = main_fn, .arg = arg };
    weft_spawn_opts o = { .name = "main" };
    err = weft_spawn_ex(run_main_entry, &rm, &o, NULL);
    if (err != 0) {
        teardown("weft_run");
        return err;
    }
    while (atomic_load_explicit(&rm.done, ACQ) == 0)
        weft__futex_wait(&rm.done, 0);
    teardown("weft_run");
    return rm.ret;
}

/* ---- introspection ----------------------------------------------------------------- */
void weft_sched_stats_read(weft_sched_stats *out)
{
    memset(out, 0, sizeof *out);
    weft__lock(&start_lock);
    if (!atomic_load_explicit(&sched.running, ACQ)) {
        weft__unlock(&start_lock);
        return;
    }
    out->nprocs = sched.nprocs;
    out->threads_live = live_count();
    out->threads_runnable = atomic_load_explicit(&sched.runqsize, RLX);
    out->spawned = atomic_load_explicit(&sched.nspawned_plain, RLX);
    for (int i = 0; i < sched.nprocs; i++) {
        struct p *pp = sched.allp[i];
        out->threads_runnable += weft__runq_len(pp);
        out->spawned += atomic_load_explicit(&pp->nspawned, RLX);
        out->switches += atomic_load_explicit(&pp->nswitches, RLX);
        out->steals += atomic_load_explicit(&pp->nsteals, RLX);
        out->parks += atomic_load_explicit(&pp->nparks, RLX);
    }
    weft__unlock(&start_lock);
}

static const char *status_name(uint32_t st)
{
    static const char *const names[] = { "idle", "runnable", "running", "waiting", "blocking call", "dead" };
    return st < sizeof names / sizeof names[0] ? names[st] : "?";
}

static void dump_one(int fd, uint64_t id, const char *name, uint32_t st, const char *why,
                     int overran, void (*fn)(void *))
{
    /* fn may be stale (a record freed while we look): dladdr then finds nothing */
    Dl_info info = { 0 };
    char where[160];
    int found = fn != NULL && dladdr((void *)fn, &info) != 0;
    if (found && info.dli_sname != NULL)
        snprintf(where, sizeof where, "%s", info.dli_sname);
    else if (found && info.dli_fname != NULL)   /* not exported: module + offset, for addr2line */
        snprintf(where, sizeof where, "%s+%#lx", info.dli_fname,
                 (unsigned long)((uintptr_t)fn - (uintptr_t)info.dli_fbase));
    else
        snprintf(where, sizeof where, "?");
    dprintf(fd, "green thread %llu%s%s%s [%s%s%s]%s entry %s (%p)\n",
            (unsigned long long)id, name ? " (" : "", name ? name : "", name ? ")" : "",
            status_name(st), why ? ", " : "", why ? why : "",
            overran ? " ran over 10 ms without yielding;" : "", where, (void *)fn);
}

void weft__dump_locked(int fd)
{
    weft__tsan_racy_reads_begin();      /* the fields below are read racily, on purpose */
    dprintf(fd, "weft: %d procs, %d idle, %d threads (%d idle), %d spinning, global runq %u\n",
            sched.nprocs, atomic_load_explicit(&sched.npidle, RLX), sched.mcount, sched.nmidle,
            atomic_load_explicit(&sched.nmspinning, RLX), atomic_load_explicit(&sched.runqsize, RLX));
    /* The lists are walked without their locks, which first runs take (newg: allg_lock;
     * the free lists: gflock): a dump written to a pipe that a not-yet-started G reads
     * would deadlock. Both lists only grow at the head (linked before the unlock) and
     * are freed only by teardown, which cannot run during a dump. Fields are read
     * racily: a G that changes meanwhile may show its old or new state, or be missed. */
    /* never run: spawn records (first: a G starting meanwhile shows as one or the other) */
    weft__lock(&sched.gflock);
    struct gspawn *chunks = sched.recchunks;
    weft__unlock(&sched.gflock);
    for (struct gspawn *c = chunks; c != NULL; c = *(struct gspawn **)c) {
        for (int i = 1; i <= RECS_PER_CHUNK; i++) {
            struct gspawn *r = &c[i];
            void (*fn)(void *) = r->fn;
            if (atomic_load_explicit(&r->status, memory_order_acquire) == G_RUNNABLE)
                dump_one(fd, r->id, r->name, G_RUNNABLE, "not started", 0, fn);
        }
    }
    weft__lock(&allg_lock);
    struct g *gs = allg;
    weft__unlock(&allg_lock);
    for (struct g *gp = gs; gp != NULL; gp = gp->alllink) {
        uint32_t st = atomic_load_explicit(&gp->status, RLX);
        if (st != G_IDLE && st != G_DEAD)
            dump_one(fd, gp->id, gp->name, st, st == G_WAITING ? gp->waitreason : NULL,
                     gp->overran, gp->fn);
    }
    weft__tsan_racy_reads_end();
}

void weft_dump(int fd)
{
    weft__lock(&start_lock);
    if (!atomic_load_explicit(&sched.running, ACQ))
        dprintf(fd, "weft: the runtime is not running\n");
    else
        weft__dump_locked(fd);
    weft__unlock(&start_lock);
}
