/*
 * sched/sched.h -- G, M, P and the scheduler's shared state (our runtime2.go), the
 * folder's map, its invariants and its lock order.
 *
 *   G  a green thread: saved context, stack (attached at its first run), status, id,
 *      entry. Until its first run it is a 64-byte spawn record (struct gspawn, queued
 *      as a struct g pointer); then a struct g, allocated apart from the stack (64-byte
 *      aligned, laid out by cache line: struct g below). Both recycled through free lists.
 *   M  an OS worker thread; runs the scheduler loop on its own pthread stack (g0).
 *   P  a logical processor: run queue (256-slot ring + runnext), mcache, free Gs.
 *      An M must hold a P to run Gs; nprocs Ps exist.
 *
 * Files, each calling only the ones above it in this list (the scheduling core and
 * the timers call each other, as Go's proc.go and time.go do; sysmon is rung through
 * its doorbell below, not called):
 *   current.c   the current M and G, the clock
 *   context.c   weft__ctx_init, weft__ctx_switch (context_*.S), san.h (sanitizer hooks)
 *   stack.c     stacks: slab, per-P cache, pool, guards, overflow signals
 *   runq.c      the per-P ring and runnext, the global queue
 *   g.c         struct g and spawn records: allocation, free lists, ids, stacks, allg
 *   proc.c      the scheduling core: spawn, switch, yield, park, ready, exit, the M
 *               loop with find-work and stealing, blocking calls
 *   timer.c     per-P timer heaps, the timer M, sleeps and deadlines
 *   wait.c      the waiter a blocking primitive parks on (claim by CAS, timeout)
 *   chan.c, sync.c   channels and select; mutex, rwmutex, cond, waitgroup, once, sema
 *   dump.c      weft_dump, weft_sched_stats_read
 *   sysmon.c    the system monitor thread
 *   start.c     weft_start, weft_run, weft_stop, teardown, default nprocs, signals, fork
 *
 * G status (each arrow names the function that takes it):
 *
 *   IDLE --weft_spawn_ex--> RUNNABLE --gswitch--> RUNNING --gexit--> DEAD --weft__g_free--> IDLE
 *   (a record)                 ^      (first_run: a struct g) |  |  \
 *                              |                              |  |   \--weft_blocking--> SYSCALL
 *                              |                              |  \--weft__sched_park--> WAITING
 *                              +-----------weft_yield---------+                |         |
 *                              +-------------weft__sched_ready-----------------+         |
 *                              +---weft_blocking's return (P lost, no idle P)------------+
 *
 * Switching: every switch goes through gswitch(from, to, action). The thread of control
 * that resumes -- a G or an M's g0 -- first runs after_switch(), which completes the
 * previous G's action on the new stack: put it on a run queue (yield), call its
 * unlock function (park), free it (exit). So a G is never visible to other Ms before
 * its context is saved, and a yield to a local G is one switch, not two.
 *
 * Invariants:
 *  - A G is on at most one queue: a P's ring, runnext, a global ring (all three hold
 *    pointers) or a free list (through freenode). A RUNNABLE G is on exactly one run
 *    queue.
 *  - A queued G with saved sp NULL is a spawn record (struct gspawn): nothing reads
 *    more of it than ctx.sp and status until gswitch hands it to first_run,
 *    which makes it a struct g; the record is free again before that G runs.
 *  - Only the M holding P writes P's runqtail and puts into runnext; stealers CAS
 *    runqhead, and so does the owner (with nprocs > 1); runnext is taken by CAS, by a
 *    stealer only from a P that has not scheduled for 3 us or is in a blocking call
 *    (runq.c, proc.c stealnext).
 *  - An M holds at most one P, and a P is held by at most one M (p->m).
 *  - Spinning: at most (nprocs - npidle) / 2 Ms spin. weft__sched_wakep starts one
 *    only when none spins; a spinning M that finds work wakes another if it was the
 *    last spinner. No lost wake-up: a submitter stores the G, then (seq_cst) reads
 *    nmspinning/npidle; an M going idle decrements nmspinning (seq_cst), then re-reads
 *    every run queue, the global one included (a plain thread's ready only touches the
 *    global queue). runnext is outside this rule: a G readied into an empty runnext
 *    wakes nobody and the idle M's re-check skips runnexts: the P's own M runs it at
 *    its next scheduling point, and if that does not come, sysmon sees the runnext
 *    stale for a tick and wakes a spinner, which steals it (a blocking call:
 *    weft__sched_handoffp). A spawn into runnext does wake a spinner.
 *  - weft__current_m() is the only way to read the current M: a G may resume on
 *    another M after any switch, and compilers cache thread-local addresses (current.c).
 *
 * Lock order (a lock may be taken while holding only locks above it). No lock is held
 * across a switch; a park's unlock function releases its locks on the next context.
 *   1. sched.startlock (start.c): start, teardown, the dump, the stats
 *   2. a channel's lock (chan.c; select takes several, in address order) or a sync
 *      object's lock (sync.c)
 *   3. a P's timerlock (timer.c): under 2 when a wait arms its timeout (wait.c)
 *   4. sched.lock (proc.c, runq.c): idle Ps and Ms, the global run queue, allm
 *   5. sched.gflock (g.c): the global free lists of Gs and records
 *   6. allg_lock (g.c)
 *   7. stack_lock (stack.c)
 *   then the allocator's locks, in mem/mem.h's order (any of the above may allocate).
 */
#ifndef WEFT_SCHED_H
#define WEFT_SCHED_H

#include "weft.h"
#include "weft/base.h"
#include "mem/mem.h"
#include <pthread.h>
#include "sched/context.h"
#include "sched/poller.h"

#define RUNQ_SIZE 256
#define GFREE_MAX 64          /* per-P free Gs before half move to the global list */

enum { G_IDLE, G_RUNNABLE, G_RUNNING, G_WAITING, G_SYSCALL, G_DEAD };
enum { P_IDLE, P_RUNNING, P_SYSCALL, P_STOPPED };
enum { AFTER_NONE, AFTER_YIELD, AFTER_PARK, AFTER_EXIT, AFTER_BLOCKED, AFTER_MIGRATE };

struct stack {
    uintptr_t lo, hi;          /* usable [lo, hi); the guard page (if any) lies below lo */
    size_t mapsize;            /* the whole mapping, guard included, at map */
    uintptr_t map;
    uint8_t guarded;           /* 1: guard page below lo; 0: canary at lo */
    uint8_t trimmed;           /* pooled, and its deep pages already given back */
};

struct m;
struct p;
struct freestk;

/* A ring of G pointers (the global run queue's two halves, runq.c): size Gs from
 * buf[head] on, cap (a power of two) slots. */
struct gring {
    struct g **buf;
    uint32_t cap, head, size;
};
enum { GQ_RAN, GQ_NEW };

/* A timer in a P's 4-ary heap (timer.c). */
struct timer {
    int64_t when;
    struct g *(*f)(struct timer *t);   /* fired: the G to ready, or NULL */
    uint32_t seq;              /* the wait generation it belongs to (wait timeouts) */
    int32_t idx;               /* heap index, or -1 - its slot in the P's in-order ring */
    struct p *_Atomic pp;      /* the P whose heap holds it; NULL: none */
    _Atomic uint8_t firing;    /* popped, f not done (written by its popper only) */
};

/* A heap slot: the timer's `when` is copied in, so that sifting compares without
 * loading each timer (a cold line of its G with 100 k sleepers). */
struct tentry {
    int64_t when;
    struct timer *t;
};

/* Free lists of dead Gs and free spawn records (g.c flist_put): per P (struct
 * flist), and a global stack of batches under gflock (its first batch's first object).
 * An object on one links the next (next); the first of a global batch also links the
 * next batch (batch) and counts its own list (n). */
struct fnode {
    struct fnode *next;
    struct fnode *batch;
    long n;
};
struct flist {
    struct fnode *head;
    long n;
};

/* ThreadSanitizer builds (make SAN=thread): each G is a TSan fiber (sched/san.h). */
#if defined(__SANITIZE_THREAD__)
#define WEFT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WEFT_TSAN 1
#endif
#endif

/* A green thread. Laid out by use, a cache line at a time (newg allocates it 64-byte
 * aligned): with 100 k parked Gs every wake-up of a cold G costs a miss per line it
 * touches. Line 0: what a timer firing, weft__sched_ready and the switch in read (the saved
 * stack pointer, status, the embedded timer, m). Line 1: parking and waiting. The
 * rest: spawn, exit, dump. */
struct g {
    /* line 0: fire, ready, switch in */
    struct weft_ctx ctx;
    _Atomic uint32_t status;
    uint8_t system;            /* g0 */
    struct timer timer;        /* sleep and wait timeouts: a G waits on one thing at a time */
    struct m *m;               /* the M running it */
    /* line 1 (offset 64): park and wait */
    int (*unlockf)(struct g *, void *);
    void *unlockarg;
    void *param;               /* set by whoever readies it */
    const char *waitreason;
    /* waiting (wait.c): wakestate = generation << 2 | WAIT_*; claimed by CAS */
    _Atomic uint32_t wakestate;
    uint32_t waitgen;
    int64_t deadline;          /* weft_now() time after which blocking calls fail; -1 none */
    int64_t runstart;          /* when it last started running (sysmon) */
    /* the rest */
    uint64_t id;
    void (*fn)(void *);
    void *arg;
    const char *name;
    struct fnode freenode;     /* dead: free list (the run queues hold pointers) */
    unsigned valgrind_id;
    struct g *alllink;         /* every G ever made, for dump and teardown */
    struct stack stack;        /* lo == 0: none yet (attached when it first runs) */
    size_t stacksize;          /* what it asked for */
    void *asan_fake;           /* ASan fake stack of a G that switched away */
#ifdef WEFT_TSAN
    void *tsan_fiber;          /* its TSan fiber, kept while the struct lives (san.h); g0: the thread's */
#endif
};
_Static_assert(offsetof(struct g, unlockf) == 64, "struct g: line 0 is what a wake-up reads");

/* A green thread that has not run yet: what weft_spawn records, one cache line. The
 * run queues hold it as a struct g pointer: its first fields are struct g's (saved sp
 * NULL: never run; status), and nothing reads more of a queued G until gswitch, at
 * its first run, moves it into a struct g (first_run, g.c weft__g_start) and frees
 * the record. So a G costs 64 bytes until it runs and a struct g (and a stack) only
 * while it has run and not exited: 100 k spawned at once cost 6.4 MB, not 25 MB of
 * G structs, each page of which is a page fault (~10 us on a VM). Records come in
 * chunks that are never freed while the runtime runs (the dump walks them) and are
 * recycled through per-P free lists, like dead Gs. */
struct gspawn {
    struct weft_ctx ctx;       /* sp == NULL */
    _Atomic uint32_t status;   /* G_RUNNABLE queued, G_IDLE free */
    uint32_t pad;
    uint64_t id;
    const char *name;
    size_t stacksize;
    union {
        struct {               /* queued */
            void (*fn)(void *);
            void *arg;
        };
        struct fnode freenode; /* free */
    };
};
_Static_assert(sizeof(struct gspawn) == 64, "struct gspawn: one cache line");
_Static_assert(offsetof(struct gspawn, ctx) == offsetof(struct g, ctx) &&
               offsetof(struct gspawn, status) == offsetof(struct g, status),
               "struct gspawn: struct g's first fields");
#define RECS_PER_CHUNK 63      /* a 4 KiB chunk: a header line and 63 records */

struct p {
    int id;
    _Atomic uint32_t status;
    struct m *m;
    uint32_t schedtick;
    _Atomic uint32_t syscalltick;
    _Atomic uint32_t runqhead;
    _Atomic uint32_t runqtail;
    struct g *_Atomic runq[RUNQ_SIZE];
    struct g *_Atomic runnext;
    struct mcache *mcache;
    struct flist gfree;        /* dead Gs (without stacks) */
    struct flist recfree;      /* free spawn records */
    struct freestk *stackfree; /* free stacks of the default size */
    int nstackfree;
    uint64_t goidcache, goidcacheend;
    struct p *link;            /* idle list */
    /* counters: owner writes (relaxed), anyone reads */
    _Atomic uint64_t nspawned, nexited, nswitches, nsteals, nparks;
    /* sysmon's view */
    uint32_t sm_schedtick, sm_syscalltick;
    int64_t sm_when;
    struct g *overrun;         /* the G running over 10 ms here (sysmon; compared only) */
    /* timers (timer.c), under timerlock */
    weft_lock timerlock;
    struct tentry *timers;     /* the heap; timers[1..4] start a cache line (timer.c) */
    void *timers_mem;          /* what was allocated for it */
    int ntimers, captimers;
    struct tentry *tfifo;      /* timers added in `when` order: a ring (timer.c) */
    uint32_t tfhead, tfn, tfcap, tfdead; /* first slot, slots used, slots, deleted ones */
    _Atomic int64_t timer0;    /* earliest when, or INT64_MAX */
} __attribute__((aligned(64)));

struct m {
    int id;
    pthread_t thread;
    struct g g0;               /* the scheduler's context on this thread's own stack */
    struct g *curg;            /* the G running (g0 when in the scheduler) */
    struct p *p;
    struct p *nextp;           /* P handed over by startm */
    bool spinning;
    bool exiting;              /* teardown: being joined (under sched.lock) */
    /* 0 while newm's pthread_create runs (the M is on allm already), 1 when it returned
     * and thread is set, -1 when it failed: teardown waits for non-zero before joining */
    _Atomic int started;
    _Atomic uint32_t park;     /* futex word: 1 = wake up */
    _Atomic int inpoll;        /* the timer M waits in the poller (poller.h), not the futex */
    struct m *link;            /* idle list */
    struct m *alllink;
    uint64_t fastrand;
    /* the pending action of the G that switched away (after_switch) */
    int after;
    struct g *after_g;
    void *altstack;
};

struct schedt {
    weft_lock lock;
    _Atomic int running;       /* weft_start succeeded, not yet stopped */
    _Atomic int stopping;
    int nprocs;
    size_t stack_size;
    struct p **allp;
    /* global run queue, under lock: two rings (runq.c), Gs that have run (GQ_RAN:
     * woken, yielded) and Gs never run (GQ_NEW); runqsize, their sum, is read
     * without the lock as a hint */
    struct gring globq[2];
    _Atomic uint32_t runqsize;
    /* idle Ps and Ms, under lock */
    struct p *pidle;
    _Atomic int npidle;
    struct m *midle;
    int nmidle;
    _Atomic int nmspinning;
    struct m *allm;
    int mcount;
    /* global free Gs, under gflock */
    weft_lock gflock;
    struct fnode *gfree;       /* dead Gs (without stacks), in batches (g.c flist_put) */
    struct fnode *recfree;     /* free spawn records, in batches */
    void *recchunks;           /* every chunk of records (under gflock) */
    /* counters for Gs spawned from plain threads */
    _Atomic uint64_t nspawned_plain;
    _Atomic uint64_t goidgen;
    /* sysmon */
    pthread_t sysmon;
    _Atomic uint32_t sysmon_wake;  /* futex: bumped to wake sysmon early */
    _Atomic int sysmon_idle;       /* sysmon sleeps until woken */
    _Atomic int sigquit;           /* SIGQUIT seen: sysmon dumps */
    _Atomic uint32_t stopwait;     /* futex: weft_stop / weft_run wait here */
    /* the idle M that sleeps until the next timer (timer.c) */
    struct m *_Atomic timer_m;
    _Atomic int64_t timer_sleep_until;
    _Atomic int run_mode;          /* 1: under weft_run (deadlock detection applies) */
    _Atomic int nsyscall;          /* green threads inside weft_blocking */
    /* Cold, and last, so that the hot fields above keep the cache lines they had */
    weft_lock startlock;           /* start, teardown, dump, stats (start.c) */
    _Atomic int64_t sysmon_tick_ns;   /* its tick now (sysmon.c), reset by weft__sysmon_wake */
    _Atomic int sysmon_urgent;        /* weft__sysmon_wake asked for quick ticks */
} __attribute__((aligned(64)));   /* its lines as laid out above, wherever it is linked */

WEFT_HIDDEN extern struct schedt weft__sched;
#define sched weft__sched

/* current.c */
WEFT_HIDDEN struct m *weft__current_m(void);             /* the only reader of the current M */
WEFT_HIDDEN void weft__current_set_m(struct m *mp);      /* an M's start and end; fork child */
WEFT_HIDDEN struct g *weft__current_g(void);             /* NULL on a plain thread */
WEFT_HIDDEN int64_t weft__time_now(void);                /* CLOCK_MONOTONIC ns: weft_now() */
WEFT_HIDDEN size_t weft__current_describe(char *buf, size_t cap); /* weft__throw's context */

/* The weft_now() time ns after now, saturating: every deadline that adds a duration
 * to a clock reading is computed here, never with a bare `now + ns` (a huge timeout,
 * INT64_MAX for "practically forever", overflowed to a negative time, which reads as
 * "no deadline": the wait then ignored the caller's deadline too). A sum past
 * INT64_MAX is INT64_MAX, a time that never comes (no timer ever fires at it); ns <= 0
 * is now. now must be a clock reading (>= 0). */
static inline int64_t weft__time_after(int64_t now, int64_t ns)
{
    if (ns <= 0)
        return now;
    return ns > INT64_MAX - now ? INT64_MAX : now + ns;
}

/* The earlier of two deadlines, where -1 (any negative) is "none". */
static inline int64_t weft__deadline_min(int64_t a, int64_t b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

/* runq.c */
/* true if gp (or the G it kicked out of runnext) went to the ring, where stealers see it */
WEFT_HIDDEN bool weft__runq_put(struct p *pp, struct g *gp, bool next);
WEFT_HIDDEN struct g *weft__runq_get(struct p *pp);
WEFT_HIDDEN struct g *weft__runq_steal(struct p *pp, struct p *victim);  /* ring only */
WEFT_HIDDEN struct g *weft__runq_steal_next(struct p *victim);

WEFT_HIDDEN bool weft__runq_empty(struct p *pp);
WEFT_HIDDEN bool weft__runq_ring_empty(struct p *pp);
WEFT_HIDDEN uint32_t weft__runq_len(struct p *pp);
WEFT_HIDDEN void weft__globrunq_put(struct g *gp);        /* sched.lock held */
WEFT_HIDDEN void weft__globrunq_put_batch(struct g *const *gs, uint32_t n); /* lock held */
WEFT_HIDDEN void weft__globrunq_reserve(void);              /* weft_start: first slots */
WEFT_HIDDEN void weft__globrunq_free(void);                 /* teardown */
WEFT_HIDDEN struct g *weft__globrunq_get(struct p *pp, uint32_t max, bool new_first); /* lock held */

/* g.c. Spawn's fast paths are inline here (a record off the P's own list, an id from
 * its cache): as calls into g.c they cost weft_spawn ~20 instructions (callgrind). */
WEFT_HIDDEN struct gspawn *weft__g_rec_alloc_slow(struct p *pp);
WEFT_HIDDEN uint64_t weft__g_newid_slow(struct p *pp);

/* One object off a P's free list, or NULL (owner only). */
static inline struct fnode *weft__flist_pop(struct flist *l)
{
    struct fnode *x = l->head;
    if (x != NULL) {
        l->head = x->next;
        l->n--;
        if (l->head != NULL)
            __builtin_prefetch(l->head, 1);   /* the next one's line */
    }
    return x;
}

/* A free spawn record (pp NULL: a plain thread's, from the global batches), or NULL
 * when out of memory. */
static inline struct gspawn *weft__g_rec_alloc(struct p *pp)
{
    struct fnode *x = pp != NULL ? weft__flist_pop(&pp->recfree) : NULL;
    if (WEFT_UNLIKELY(x == NULL))
        return weft__g_rec_alloc_slow(pp);
    return (struct gspawn *)((char *)x - offsetof(struct gspawn, freenode));
}

/* A new green thread id: unique for the runtime's life, 64 at a time per P. */
static inline uint64_t weft__g_newid(struct p *pp)
{
    if (WEFT_UNLIKELY(pp == NULL || pp->goidcache == pp->goidcacheend))
        return weft__g_newid_slow(pp);
    return pp->goidcache++;
}
/* A record's first run: a struct g (a dead one of pp's if any) with a stack whose
 * context starts at entry(gp); the record is freed. Throws when out of memory. */
WEFT_HIDDEN struct g *weft__g_start(struct p *pp, struct gspawn *r, void (*entry)(void *));
WEFT_HIDDEN void weft__g_free(struct p *pp, struct g *gp); /* dead: stack back, onto pp's list */
WEFT_HIDDEN uint64_t weft__g_live_count(void);
WEFT_HIDDEN struct g *weft__g_all(void);                   /* dump: allg's head */
WEFT_HIDDEN struct gspawn *weft__g_rec_chunks(void);       /* dump: the first record chunk */
WEFT_HIDDEN void weft__g_free_all(void);                   /* teardown */
WEFT_HIDDEN void weft__g_fork_child(void);

/* proc.c */
/* The P this M may use for run queues now (none while in a blocking call). */
static inline struct p *weft__sched_curp(struct m *mp)
{
    return mp != NULL && mp->p != NULL && mp->curg != NULL &&
                   atomic_load_explicit(&mp->curg->status, RLX) != G_SYSCALL
               ? mp->p
               : NULL;
}
WEFT_HIDDEN void weft__sched_pidle_put(struct p *pp);          /* sched.lock held */
WEFT_HIDDEN void weft__sched_ready(struct g *gp);              /* WAITING -> RUNNABLE, from anywhere */
WEFT_HIDDEN void weft__sched_ready_batch(struct g *const *gs, int n);  /* n >= 1 woken together */
/* Park the running G: after it is off its stack, unlockf(gp, arg) runs on the next
 * context; if it returns 0 the G is readied again at once. */
WEFT_HIDDEN void weft__sched_park(int (*unlockf)(struct g *, void *), void *arg, const char *reason);
WEFT_HIDDEN void weft__sched_wakep(void);
WEFT_HIDDEN bool weft__sched_handoffp(struct p *pp);            /* sysmon: P left a blocking call */

/* dump.c */
WEFT_HIDDEN void weft__dump_locked(int fd);             /* sched.startlock held, running */

/* stack.c */
/* A requested stack size (1 .. WEFT_STACK_MAX) in whole pages, at least 16 KiB. */
static inline size_t weft__stack_round(size_t size)
{
    size = (size + 4095) & ~(size_t)4095;      /* no wrap: size <= WEFT_STACK_MAX */
    return size < 16384 ? 16384 : size;
}
WEFT_HIDDEN int weft__stack_alloc(struct p *pp, struct stack *st, size_t size); /* pp may be NULL */
WEFT_HIDDEN void weft__stack_free(struct stack *st);
WEFT_HIDDEN int weft__stack_get(struct p *pp, size_t size, struct stack *st);  /* pp may be NULL */
WEFT_HIDDEN void weft__stack_put(struct p *pp, struct stack *st);
WEFT_HIDDEN void weft__stack_flush(struct p *pp);
WEFT_HIDDEN void weft__stack_trim_pool(int budget);
WEFT_HIDDEN void weft__stack_check(struct g *gp);         /* canary of an unguarded stack */
WEFT_HIDDEN void weft__stack_trim(struct stack *st);      /* give back pages beyond the top */
WEFT_HIDDEN int weft__stack_signals_install(void);
WEFT_HIDDEN void weft__stack_signals_restore(void);
WEFT_HIDDEN void *weft__altstack_new(void);
WEFT_HIDDEN void weft__altstack_free(void *alt);

/* timer.c */
WEFT_HIDDEN void weft__timer_add(struct timer *t);        /* t->when, t->f set */
WEFT_HIDDEN bool weft__timer_del(struct timer *t);        /* true if removed before firing;
                                                             returns once f is not running */
WEFT_HIDDEN void weft__timers_run(struct p *pp, int64_t now);
WEFT_HIDDEN bool weft__timers_run_all(int64_t now);        /* any P's expired timers; ran any? */
WEFT_HIDDEN int64_t weft__timer_next(void);                /* earliest over all Ps, or INT64_MAX */
WEFT_HIDDEN void weft__timers_free(struct p *pp);
WEFT_HIDDEN int64_t weft__deadline_now(void);              /* the caller's deadline, -1 none */
WEFT_HIDDEN void weft__deadline_set_plain(int64_t dl);     /* fork child: the G's, kept */

/* fork (start.c fork_child): each module forgets the state the vanished threads shared */
WEFT_HIDDEN void weft__stack_fork_child(void);
WEFT_HIDDEN void weft__sysmon_fork_child(void);

/* Wake an idle M whose park word the caller just wrote (seq_cst: 1 P handed over or
 * stop, 2 poke): its futex, and the poller if it waits there (poller.h's order). */
static inline void weft__m_unpark(struct m *mp)
{
    weft__futex_wake(&mp->park, 1);
    if (atomic_load_explicit(&mp->inpoll, SC)) {
        const struct weft_poller *pl = weft__poller;
        if (pl != NULL)
            pl->wake();
    }
}

/* sysmon.c */
WEFT_HIDDEN int weft__sysmon_start(void);
WEFT_HIDDEN void weft__sysmon_stop(void);

/* sysmon's doorbell: rung from below (proc.c, start.c's SIGQUIT handler) without a
 * call up into sysmon.c; sysmon waits on sched.sysmon_wake. No lost wake-up: see
 * sysmon.c's header. */
#define WEFT_SYSMON_TICK_MIN_NS 20000
/* Wake it and make it tick fast (a G entered a blocking call: a ~20 us retake). */
static inline void weft__sysmon_wake(void)
{
    /* wake it if it sleeps deeply, or long */
    if (atomic_load_explicit(&sched.sysmon_idle, SC) ||
        atomic_load_explicit(&sched.sysmon_tick_ns, RLX) > WEFT_SYSMON_TICK_MIN_NS) {
        atomic_store_explicit(&sched.sysmon_tick_ns, WEFT_SYSMON_TICK_MIN_NS, RLX);
        atomic_store_explicit(&sched.sysmon_urgent, 1, RLX);
        atomic_fetch_add_explicit(&sched.sysmon_wake, 1, SC);
        weft__futex_wake(&sched.sysmon_wake, 1);
    }
}
/* Out of its deep sleep only (a P left the idle list). */
static inline void weft__sysmon_poke(void)
{
    /* seq_cst: the caller changed npidle (seq_cst) first; see sysmon.c's header */
    if (atomic_load_explicit(&sched.sysmon_idle, SC)) {
        atomic_fetch_add_explicit(&sched.sysmon_wake, 1, SC);
        weft__futex_wake(&sched.sysmon_wake, 1);
    }
}
#endif
