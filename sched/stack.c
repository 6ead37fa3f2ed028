/*
 * sched/stack.c -- green-thread stacks: mmap'd, lazily backed, guarded.
 *
 * The map-count problem: a guard page made with mprotect splits a mapping, so every
 * guarded stack costs two kernel mappings, and the stock vm.max_map_count (65530)
 * would cap live green threads near 32 k. weft's answer, in order of preference:
 *  1. MADV_GUARD_INSTALL (Linux 6.13+): guard pages that are page-table markers, not
 *     mappings. Default-size stacks come in slabs of SLAB_STACKS, one mapping each, so
 *     a million guarded stacks cost ~16 k mappings (a slab stays under SLAB_BYTES, so
 *     default stacks over 4 MiB come fewer to a slab, down to one).
 *  2. Older kernels: mprotect guard pages for the first GUARD_BUDGET stacks; beyond
 *     that, stacks come without a guard page and carry a canary word at their lowest
 *     address, checked whenever the green thread switches out or exits (a one-time
 *     notice says so). An overflow then is caught after the fact, not prevented.
 * A fault in a guard page (SIGSEGV on the M's alternate signal stack) prints
 *   weft: green thread N (name) overflowed its K KiB stack
 * and aborts. Other faults go to the previous handler (or the default action).
 *
 * Slab stacks are made ready SLAB_BATCH at a time (batch_prepare): the guard pages and
 * the top page of each stack with one process_madvise call per advice (falling back
 * to one madvise per stack on kernels before 6.13). The top page is populated ahead
 * (MADV_POPULATE_WRITE): every stack touches it at its first run, and a page fault
 * costs several times a populate on a VM with shadow page tables (measured: 12 us
 * against 1-2.5 us). An M that needs a fresh stack claims the next batch of the slab
 * under stack_lock and prepares it after dropping the lock (the two calls take
 * 20-100 us: under the lock, an M needing a stack meanwhile slept on the futex and was
 * woken by another system call); it keeps one stack and puts the others in its P's
 * cache. At most SLAB_BATCH - 1 prepared stacks (their top pages) wait in a cache.
 *
 * Sizes: every size here is at most WEFT_STACK_MAX (1 GiB; weft_spawn_ex and weft_start
 * refuse larger ones), so size + GUARD and a slab's size never wrap.
 *
 * A G gets its stack when it first runs, not when it is spawned, and gives it back
 * when it exits: a million spawned-but-not-started green threads cost 64 bytes
 * each, and spawn-join bursts reuse a handful of hot stacks. Free stacks sit in a
 * per-P cache (no lock; half goes to the global pool past STACKFREE_MAX) and the
 * global pool (stack_lock), which outlives the runtime: slab stacks are never
 * unmapped. sysmon trims pooled stacks once: pages below the top TRIM_KEEP bytes go
 * back with MADV_DONTNEED. Stacks of other sizes are unmapped when freed.
 *
 * Callers: g.c (a G's first run and exit), proc.c (weft__stack_round), start.c
 * (signals, teardown, fork), sysmon.c (trim). Calls: current.c, mem/ (os.c), nothing
 * above it.
 *
 * Rejected: preparing a slab batch under stack_lock (20-100 us of madvise calls held
 * the lock; perf with 100 k sleepers at 2 Ps: ~4% of CPU in futex wait/wake from
 * weft__stack_alloc); a first-run page fault on the top page (12 us against 1-2.5 us
 * for a populate on this VM); mprotect guards for every stack (two mappings each:
 * vm.max_map_count caps live green threads near 32 k).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include "sched/sched.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define GUARD 4096
#define SLAB_STACKS 64
#define SLAB_BATCH 16
#define SLAB_BYTES ((size_t)256 << 20) /* a slab's size cap (stacks over 4 MiB: fewer) */
#define GUARD_BUDGET 16384
#define TRIM_KEEP (16 * 1024)
#define STACKFREE_MAX 64
#define CANARY 0x5745465453544b21ull   /* "WEFTSTK!" */
#define ALTSTACK_SIZE (64 * 1024)

/* A free stack carries its own descriptor and list link in its top bytes (the page
 * every used stack has touched anyway). */
struct freestk {
    struct stack desc;
    struct freestk *next;
};
#define FREESTK(st) ((struct freestk *)((st)->hi - sizeof(struct freestk)))

static weft_lock stack_lock = WEFT_LOCK_INIT;
/* global free stacks, any size: written under stack_lock (relaxed atomic stores, so
 * that weft__stack_get may peek at it without the lock: an empty pool, the common case
 * of a burst of new green threads, then costs no lock round trip) */
static struct freestk *pool;
static long npool;
/* -1 unknown, 1 madvise guards, 0 mprotect/canary. Read without the lock (relaxed: it
 * only picks the faster path; guard() decides under stack_lock). */
static _Atomic int guard_mode = -1;
static long nguarded;                  /* under stack_lock, as is canary_notice */
static bool canary_notice;
/* The slab being cut (under stack_lock): [slab_next, slab_end) not yet claimed by any
 * M, stacks of slab_stack bytes each after a guard page. */
static uintptr_t slab_next, slab_end;
static size_t slab_stack;
static _Atomic bool populate_ok = true; /* false: MADV_POPULATE_WRITE unknown (< 5.14) */

static uintptr_t map_stacks(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    return p == MAP_FAILED ? 0 : (uintptr_t)p;
}

/* Put a guard page at g (GUARD bytes); 1 if guarded. stack_lock held. */
static int guard(uintptr_t g)
{
    if (atomic_load_explicit(&guard_mode, RLX) != 0) {
        if (madvise((void *)g, GUARD, MADV_GUARD_INSTALL) == 0) {
            atomic_store_explicit(&guard_mode, 1, RLX);
            return 1;
        }
        atomic_store_explicit(&guard_mode, 0, RLX);
    }
    if (nguarded < GUARD_BUDGET) {
        if (mprotect((void *)g, GUARD, PROT_NONE) == 0) {
            nguarded++;
            return 1;
        }
    }
    if (!canary_notice) {
        canary_notice = true;
        weft__printf("notice: this kernel has no MADV_GUARD_INSTALL and %d guarded stacks "
                     "are in use; further green-thread stacks have no guard page (overflow is "
                     "caught by a canary when the thread switches out)", GUARD_BUDGET);
    }
    return 0;
}

/* One madvise over many ranges: process_madvise on our own pidfd (any advice on the
 * calling process since Linux 6.13). The pidfd is per process: a forked child closes
 * the inherited one at the fork and opens its own. pidfd_ensure opens it (stack_lock
 * held); madvise_many runs without the lock (relaxed loads: the descriptor number is
 * all it needs, and a stale one fails with EBADF) and returns 0 when every range was
 * advised, -1 otherwise (then the caller goes range by range, or does without). */
static _Atomic int pidfd = -1;
static _Atomic bool many_unsupported;

/* A forked child: the inherited pidfd names the parent. Closed here, at the fork, while
 * its number is surely still ours (a child may close or reuse descriptors later). */
static void pidfd_atfork_child(void)
{
    int fd = atomic_exchange_explicit(&pidfd, -1, RLX);
    if (fd >= 0)
        close(fd);
}

static void pidfd_ensure(void)
{
    static bool atfork;
    if (atomic_load_explicit(&pidfd, RLX) >= 0 ||
        atomic_load_explicit(&many_unsupported, RLX))
        return;
    if (!atfork) {
        atfork = true;
        pthread_atfork(NULL, NULL, pidfd_atfork_child);
    }
    int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);   /* close-on-exec already */
    if (fd < 0)
        atomic_store_explicit(&many_unsupported, true, RLX);
    else
        atomic_store_explicit(&pidfd, fd, RLX);
}

static int madvise_many(struct iovec *iov, int n, int advice)
{
    int fd = atomic_load_explicit(&pidfd, RLX);
    if (fd < 0 || atomic_load_explicit(&many_unsupported, RLX))
        return -1;
    size_t want = 0;
    for (int i = 0; i < n; i++)
        want += iov[i].iov_len;
    long r = syscall(SYS_process_madvise, fd, iov, (size_t)n, advice, 0);
    if (r < 0 && (errno == ENOSYS || errno == EINVAL || errno == EPERM)) {
        atomic_store_explicit(&many_unsupported, true, RLX);
    } else if (r < 0 && errno == EBADF) {
        /* the program closed our descriptor: the next pidfd_ensure opens another */
        atomic_compare_exchange_strong_explicit(&pidfd, &fd, -1, RLX,
                                                RLX);
    }
    return r == (long)want ? 0 : -1;
}

/* Make n claimed stacks of a slab ready (stack_lock not held): a guard page below each
 * and its top page populated (MADV_POPULATE_WRITE), one call per advice for the batch.
 * Populating costs a fraction of the page fault the stack's first frame would take
 * otherwise (2.5 us against 12 us a page on a Firecracker VM with shadow page tables;
 * the batch brings it to ~1 us), and guards installed in a batch do not interleave
 * page-table writes with running green threads. Only the top page: a green thread that
 * goes deeper faults its pages in as usual. guarded[i]: stack i got its guard page. */
static void batch_prepare(uintptr_t first, int n, size_t step, uint8_t *guarded)
{
    struct iovec iov[SLAB_BATCH];
    for (int i = 0; i < n; i++)
        iov[i] = (struct iovec){ (void *)(first + i * step), GUARD };
    if (atomic_load_explicit(&guard_mode, RLX) == 1 &&
        madvise_many(iov, n, MADV_GUARD_INSTALL) == 0) {
        memset(guarded, 1, (size_t)n);
    } else {
        weft__lock(&stack_lock);      /* guard() counts mprotect guards, says when out */
        for (int i = 0; i < n; i++)
            guarded[i] = (uint8_t)guard(first + i * step);
        weft__unlock(&stack_lock);
    }
    for (int i = 0; i < n; i++)
        iov[i] = (struct iovec){ (void *)(first + (i + 1) * step - 4096), 4096 };
    if (madvise_many(iov, n, MADV_POPULATE_WRITE) != 0 &&
        atomic_load_explicit(&populate_ok, RLX)) {
        for (int i = 0; i < n; i++)
            if (madvise(iov[i].iov_base, 4096, MADV_POPULATE_WRITE) != 0) {
                /* before Linux 5.14: pages fault in as used */
                atomic_store_explicit(&populate_ok, false, RLX);
                break;
            }
    }
}

static void cache_put(struct p *pp, struct stack *st);

/* A new stack of size bytes. Default-size stacks come from the slab, claimed a batch
 * at a time: st gets the first, pp's cache (or the pool, without a P) the others. */
int weft__stack_alloc(struct p *pp, struct stack *st, size_t size)
{
    if (size == 0 || size > WEFT_STACK_MAX)   /* refused at spawn and start already */
        return -EINVAL;
    size = weft__stack_round(size);           /* sizes come rounded: a no-op */
    if (size != sched.stack_size) {
        uintptr_t g = map_stacks(size + GUARD);
        if (g == 0)
            return -ENOMEM;
        weft__lock(&stack_lock);
        uint8_t guarded = (uint8_t)guard(g);
        weft__unlock(&stack_lock);
        *st = (struct stack){ .lo = g + GUARD, .hi = g + GUARD + size, .map = g,
                              .mapsize = size + GUARD, .guarded = guarded };
        if (!guarded)
            *(uint64_t *)st->lo = CANARY;
        return 0;
    }
    size_t step = size + GUARD;
    weft__lock(&stack_lock);
    if (slab_next == slab_end || slab_stack != size) {
        /* SLAB_STACKS of them, but no slab over SLAB_BYTES unless one stack is:
         * slabs are never unmapped, and huge default stacks would reserve 64 x */
        size_t nstk = SLAB_BYTES / step;
        nstk = nstk < 1 ? 1 : nstk > SLAB_STACKS ? SLAB_STACKS : nstk;
        uintptr_t s = map_stacks(nstk * step);
        if (s == 0) {
            weft__unlock(&stack_lock);
            return -ENOMEM;
        }
        slab_next = s;
        slab_end = s + nstk * step;
        slab_stack = size;
    }
    int n = (int)((slab_end - slab_next) / step);
    if (n > SLAB_BATCH)
        n = SLAB_BATCH;
    uintptr_t first = slab_next;
    slab_next += (uintptr_t)n * step;      /* ours now: prepared below, lock dropped */
    pidfd_ensure();
    weft__unlock(&stack_lock);
    uint8_t guarded[SLAB_BATCH];
    batch_prepare(first, n, step, guarded);
    /* slab stacks are never unmapped (map 0); the cache hands them out lowest first */
    for (int i = n - 1; i >= 0; i--) {
        uintptr_t g = first + (uintptr_t)i * step;
        struct stack s = { .lo = g + GUARD, .hi = g + step, .guarded = guarded[i] };
        if (!s.guarded)
            *(uint64_t *)s.lo = CANARY;
        if (i == 0)
            *st = s;
        else
            cache_put(pp, &s);
    }
    return 0;
}

/* ---- pools: per P (no lock), then global ------------------------------------- */
int weft__stack_get(struct p *pp, size_t size, struct stack *st)
{
    struct freestk *f = pp != NULL ? pp->stackfree : NULL;
    if (f != NULL && (size_t)(f->desc.hi - f->desc.lo) == size) {
        pp->stackfree = f->next;
        pp->nstackfree--;
        *st = f->desc;
        return 0;
    }
    if (__atomic_load_n(&pool, __ATOMIC_RELAXED) == NULL)
        goto fresh;                           /* a racy peek: at worst a new stack */
    weft__lock(&stack_lock);
    f = pool;
    if (f != NULL && (size_t)(f->desc.hi - f->desc.lo) == size) {
        __atomic_store_n(&pool, f->next, __ATOMIC_RELAXED);
        npool--;
        weft__unlock(&stack_lock);
        *st = f->desc;
        return 0;
    }
    weft__unlock(&stack_lock);
fresh:
    return weft__stack_alloc(pp, st, size);
}

static void pool_put_locked(struct stack *st)
{
    struct freestk *f = FREESTK(st);
    f->desc = *st;
    f->desc.trimmed = 0;
    f->next = pool;
    __atomic_store_n(&pool, f, __ATOMIC_RELAXED);
    npool++;
}

/* st to pp's cache, half of which goes to the pool when it is full; to the pool
 * without a P. The descriptor moves into the stack's top bytes: st may be reused. */
static void cache_put(struct p *pp, struct stack *st)
{
    if (pp == NULL) {
        weft__lock(&stack_lock);
        pool_put_locked(st);
        weft__unlock(&stack_lock);
        return;
    }
    struct freestk *f = FREESTK(st);
    f->desc = *st;
    f->next = pp->stackfree;
    pp->stackfree = f;
    if (++pp->nstackfree < STACKFREE_MAX)
        return;
    weft__lock(&stack_lock);
    while (pp->nstackfree > STACKFREE_MAX / 2) {
        f = pp->stackfree;
        pp->stackfree = f->next;
        pp->nstackfree--;
        f->next = pool;
        __atomic_store_n(&pool, f, __ATOMIC_RELAXED);
        npool++;
    }
    weft__unlock(&stack_lock);
}

void weft__stack_put(struct p *pp, struct stack *st)
{
    if (pp == NULL || (size_t)(st->hi - st->lo) != sched.stack_size) {
        if (st->map != 0) {
            munmap((void *)st->map, st->mapsize);
        } else {
            weft__stack_trim(st);
            cache_put(NULL, st);
        }
    } else {
        cache_put(pp, st);
    }
    memset(st, 0, sizeof *st);
}

/* Every stack of pp's cache to the global pool, trimmed (the runtime stops). */
void weft__stack_flush(struct p *pp)
{
    while (pp->stackfree != NULL) {
        struct freestk *f = pp->stackfree;
        pp->stackfree = f->next;
        struct stack st = f->desc;
        weft__stack_trim(&st);
        weft__lock(&stack_lock);
        pool_put_locked(&st);
        weft__unlock(&stack_lock);
    }
    pp->nstackfree = 0;
}

/* sysmon: give back the deep pages of pooled stacks, a bounded number per call. */
void weft__stack_trim_pool(int budget)
{
    weft__lock(&stack_lock);
    for (struct freestk *f = pool; f != NULL && budget > 0; f = f->next) {
        if (!f->desc.trimmed) {
            struct stack st = f->desc;
            weft__stack_trim(&st);
            f = FREESTK(&st);         /* the trim keeps the top page: f is intact */
            f->desc.trimmed = 1;
            budget--;
        }
    }
    weft__unlock(&stack_lock);
}

void weft__stack_free(struct stack *st)
{
    if (st->map != 0) {
        munmap((void *)st->map, st->mapsize);
    } else {
        /* slab stack of a G that is dropped for good: keep the address range, drop pages */
        madvise((void *)st->lo, st->hi - st->lo, MADV_DONTNEED);
        if (!st->guarded)
            *(uint64_t *)st->lo = CANARY;
    }
}

void weft__stack_trim(struct stack *st)
{
    if (st->hi - st->lo > TRIM_KEEP + 4096) {
        /* an unguarded stack keeps its canary page */
        uintptr_t lo = st->guarded ? st->lo : st->lo + 4096;
        madvise((void *)lo, st->hi - TRIM_KEEP - lo, MADV_DONTNEED);
    }
}

/* (not weft__throwf: the line names the green thread already, and throw's context
 * would name it again) */
static WEFT_NORETURN void overflowed(struct g *gp)
{
    weft__printf("green thread %llu (%s) overflowed its %zu KiB stack",
                 (unsigned long long)gp->id, gp->name ? gp->name : "unnamed",
                 (size_t)(gp->stack.hi - gp->stack.lo) / 1024);
    abort();
}

void weft__stack_check(struct g *gp)
{
    if (!gp->stack.guarded && *(uint64_t *)gp->stack.lo != CANARY)
        overflowed(gp);
}

/* fork child (start.c fork_child): the pool and the slab being cut were shared with
 * threads the child does not have, one of which may have held stack_lock mid-update:
 * forget them (their address space stays mapped, as every vanished thread's stack
 * does) and start empty; the handlers go back to the program's. */
void weft__stack_fork_child(void)
{
    weft__lock_reinit(&stack_lock);
    __atomic_store_n(&pool, NULL, __ATOMIC_RELAXED);
    npool = 0;
    slab_next = slab_end = 0;
    slab_stack = 0;
    weft__stack_signals_restore();
}

/* ---- SIGSEGV on the alternate stack ---------------------------------------- */
static struct sigaction old_segv, old_bus;
static bool installed;

static void on_fault(int sig, siginfo_t *si, void *uc)
{
    struct m *mp = weft__current_m();
    struct g *gp = mp != NULL ? mp->curg : NULL;
    uintptr_t a = (uintptr_t)si->si_addr;
    if (gp != NULL && !gp->system && a < gp->stack.lo && a + 256 * 1024 >= gp->stack.lo)
        overflowed(gp);
    struct sigaction *old = sig == SIGSEGV ? &old_segv : &old_bus;
    if (old->sa_flags & SA_SIGINFO) {
        old->sa_sigaction(sig, si, uc);
    } else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
    } else {
        signal(sig, SIG_DFL);    /* return: the fault repeats and kills us as usual */
    }
}

int weft__stack_signals_install(void)
{
    if (installed)
        return 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &old_segv) != 0 || sigaction(SIGBUS, &sa, &old_bus) != 0)
        return -errno;
    installed = true;
    return 0;
}

void weft__stack_signals_restore(void)
{
    if (!installed)
        return;
    sigaction(SIGSEGV, &old_segv, NULL);
    sigaction(SIGBUS, &old_bus, NULL);
    installed = false;
}

void *weft__altstack_new(void)
{
    void *p = mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    stack_t ss = { .ss_sp = p, .ss_size = ALTSTACK_SIZE, .ss_flags = 0 };
    sigaltstack(&ss, NULL);
    return p;
}

void weft__altstack_free(void *alt)
{
    if (alt == NULL)
        return;
    stack_t ss = { .ss_flags = SS_DISABLE };
    sigaltstack(&ss, NULL);
    munmap(alt, ALTSTACK_SIZE);
}
