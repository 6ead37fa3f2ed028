/*
 * mem/mcache.c -- per-P and per-thread object caches: creation, refill, flush,
 * thread exit, and the registry that statistics walk.
 *
 * A cache holds, per class, a singly linked free list (head) that the fast paths in
 * mem/malloc.c pop and push with no lock, and room = cap - (list length): malloc adds
 * 1, free takes 1 and may push only while room was positive, so a list never grows
 * past cap; a free that finds no room gives a batch back to mcentral here (room is
 * then batch - 1: the next batch of frees are fast again). A malloc that finds the
 * list empty takes a batch from mcentral. cap is 2 * batch times the class's mult (1,
 * doubled up to MULT_MAX by churn: see "the bound of a list grows"), or one batch on a
 * class that the thread only frees (no pop since the last slow path: the consumer of a
 * producer/consumer pair), which then parks at most one batch of it. cap changes on
 * slow paths only, with room moved by the same amount.
 *
 * Exact counts with one counter per operation: free counts nfree[c] (an add on its
 * fast path); malloc counts nothing, its count follows from the list's length:
 *     mallocs = nget + nfree - nput - (cap - room)
 * (objects taken from mcentral, plus frees, less objects given back, less those still
 * on the list). nget and nput change on slow paths only. So malloc's fast path has
 * exactly one bookkeeping add (room), which the bound on the list needs anyway.
 *
 * Threads: a plain thread gets its cache on its first slow path, registered with a
 * pthread key whose destructor flushes and frees it at thread exit; after that the
 * thread is DEAD for the allocator and uses the locked direct paths (destructors of
 * other keys may still allocate). With WEFT_DEBUG=allocfree no thread cache is made and
 * no P's cache is ever used (weft__mcache_use installs the empty cache): every
 * operation, on green and plain threads alike, takes the direct, checked path.
 *
 * Locking: the registry (all caches, their pool, the folded counters of dead caches)
 * is under reg_lock, which comes before every mcentral lock (mem/mem.h). A cache's own
 * fields are written by its owner only; stats read room/nfree/nget/nput racily
 * (relaxed), which can be off by the operations in flight, never more.
 * Callers: malloc.c (refill_alloc, free_slow, flush, thread, stats: on the thread
 * that owns the cache); sched/ (create a P's cache, use it when an M takes or drops
 * its P, destroy it when no thread uses it any more); thread exit (thread_exit, the
 * pthread key's destructor); pthread_atfork (the fork handlers, which take every mem
 * lock in the order of mem/mem.h).
 */
#include <pthread.h>
#include <string.h>
#include "mem/mem.h"

struct mcache weft__mcache_empty = { .class_of = { [0 ... 1024] = WEFT_SLOT_BIAS } };
__thread struct mcache *weft__mcache_tls WEFT_TLS_IE = &weft__mcache_empty;

enum { TLS_NONE = 0, TLS_CACHE = 1, TLS_DEAD = 2 };
static __thread int tls_state WEFT_TLS_IE;
static __thread struct mcache *tls_own WEFT_TLS_IE;   /* this thread's own cache, if made */

static weft_lock reg_lock = WEFT_LOCK_INIT;
static struct mcache *reg_head;
static struct mcache *pool;
static uint64_t dead_nmalloc[WEFT_NCLASS], dead_nfree[WEFT_NCLASS];
static pthread_key_t thread_key;
static pthread_once_t thread_key_once = PTHREAD_ONCE_INIT;

static inline int32_t class_max(unsigned cls)
{
    return (int32_t)(2 * weft__mcentral_batch(cls));
}

/* ---- the bound of a list grows with churn ----------------------------------- *
 * A class that a thread both allocates and frees at random makes its list's length
 * a random walk between 0 and cap, which reaches an end -- a slow path, a lock round
 * trip to mcentral -- after about (cap / 2)^2 operations: 4 for a class of 2-object
 * batches (4 KiB and up). So a slow path that turns the walk around (a refill after a
 * flush, or a flush after a refill) doubles the class's bound, up to MULT_MAX times
 * 2 batches, while the growth of all the cache's bounds stays within CACHE_EXTRA
 * bytes and the half bound within HALF_MAX objects (classes of 32 objects a batch or
 * more, 256 B and less, keep their bound: their walks are long already, and ring's
 * peak RSS rose 10% when they grew); refills then fill to half the bound and flushes
 * give back to half. A class
 * that only flows one way (a producer refills, a consumer flushes) never grows: its
 * slow paths come once a batch whatever the bound. Bounds never shrink while the
 * cache lives (weft_mem_release empties the lists, not the bounds). */
#define MULT_MAX 8
#define HALF_MAX 32                      /* objects: a half bound never grows past it */
#define CACHE_EXTRA ((uint32_t)2 << 20)
enum { SLOW_REFILL = 1, SLOW_FLUSH = 2 };

static void grow_bound(struct mcache *c, unsigned cls)
{
    uint32_t more = (uint32_t)c->mult[cls] * (uint32_t)class_max(cls) * weft__class_size[cls];
    if (c->mult[cls] >= MULT_MAX || c->extra_bytes + more > CACHE_EXTRA ||
        2u * c->mult[cls] * weft__mcentral_batch(cls) > HALF_MAX)
        return;
    c->extra_bytes += more;
    c->mult[cls] *= 2;
}

struct mcache *weft__mcache_create(int kind)
{
    weft__mem_init();                   /* WEFT_DEBUG is read before any cache is used */
    weft__lock(&reg_lock);
    struct mcache *c = pool;
    if (c != NULL) {
        pool = c->reg_next;
    } else {
        c = weft__os_alloc(sizeof *c);
        if (c == NULL) {
            weft__unlock(&reg_lock);
            return NULL;
        }
    }
    memset(c, 0, sizeof *c);
    c->kind = kind;
    for (unsigned cls = 1; cls < WEFT_NCLASS; cls++) {
        WEFT_MC_ROOM(c, cls) = c->room_sync[cls] = c->cap[cls] = class_max(cls);
        c->mult[cls] = 1;
    }
    for (size_t n = 0; n <= 1024; n++)
        c->class_of[n] = (uint8_t)(WEFT_SLOT_BIAS + weft__class_of_small[n]);
    c->reg_next = reg_head;
    if (reg_head != NULL)
        reg_head->reg_prev = c;
    reg_head = c;
    weft__unlock(&reg_lock);
    return c;
}

static inline uint32_t list_len(const struct mcache *c, unsigned cls)
{
    return (uint32_t)(c->cap[cls] - WEFT_MC_ROOM(c, cls));
}

/* Note the state at a slow path: pops from now on are read off room and nfree. */
static inline void sync_class(struct mcache *c, unsigned cls)
{
    c->room_sync[cls] = WEFT_MC_ROOM(c, cls);
    c->nfree_sync[cls] = c->nfree[cls];
}

void *weft__mcache_refill_alloc(struct mcache *c, unsigned cls)
{
    weft_assert(WEFT_MC_HEAD(c, cls) == NULL && list_len(c, cls) == 0);
    if (c->last_slow[cls] == SLOW_FLUSH)
        grow_bound(c, cls);
    c->last_slow[cls] = SLOW_REFILL;
    unsigned batch = weft__mcentral_batch(cls), want = c->mult[cls] * batch;
    void *head;
    unsigned n = weft__mcentral_get(cls, batch, &head);
    if (n == 0)
        return NULL;
    /* a grown bound: fill to half of it (n stays below the bound: n < want + batch) */
    while (n < want) {
        void *more, *t;
        unsigned m = weft__mcentral_get(cls, batch, &more);
        if (m == 0)
            break;
        for (t = more; *(void **)t != NULL; t = *(void **)t)
            ;
        *(void **)t = head;
        head = more;
        n += m;
    }
    WEFT_MC_HEAD(c, cls) = *(void **)head;
    c->nget[cls] += n;
    /* the thread allocates this class: the full bound again (the list is empty) */
    c->cap[cls] = (int32_t)c->mult[cls] * class_max(cls);
    WEFT_MC_ROOM(c, cls) = c->cap[cls] - (int32_t)(n - 1);
    sync_class(c, cls);
    c->room_sync[cls]--;                /* this refill's pop counts as one */
    return head;
}

/* Cut the first n objects (n <= len) off list cls; returns them NULL-terminated. */
static void *cut(struct mcache *c, unsigned cls, unsigned n)
{
    void *first = WEFT_MC_HEAD(c, cls), *last = first;
    for (unsigned i = 1; i < n; i++)
        last = *(void **)last;
    WEFT_MC_HEAD(c, cls) = *(void **)last;
    *(void **)last = NULL;
    return first;
}

/* A free that the fast path did not take (no room, or it came by the slow path). */
void weft__mcache_free_slow(struct mcache *c, void *p, unsigned cls)
{
    if (WEFT_UNLIKELY(WEFT_MC_HEAD(c, cls) == p))     /* as the fast path checks */
        weft__mem_bad_free("weft_free", p,
                           "double free (the object was freed before and not allocated since)");
    if (WEFT_MC_ROOM(c, cls) <= 0) {
        /* full: batches go back, then batch - 1 fast frees. pops since the last slow
         * path: room rose by one per pop and fell by one per free */
        int32_t batch = (int32_t)weft__mcentral_batch(cls);
        int64_t pops = (int64_t)WEFT_MC_ROOM(c, cls) - c->room_sync[cls] +
                       (int64_t)(c->nfree[cls] - c->nfree_sync[cls]);
        if (pops > 0 && c->last_slow[cls] == SLOW_REFILL)
            grow_bound(c, cls);
        /* a class only freed here is no walk: its first refill later must not grow it */
        c->last_slow[cls] = pops > 0 ? SLOW_FLUSH : 0;
        int32_t cap = pops == 0 ? batch : (int32_t)c->mult[cls] * class_max(cls);
        /* down to below one batch (a class only freed here), or to half the bound */
        int32_t keep = pops == 0 ? 0 : cap / 2;
        int32_t len = (int32_t)list_len(c, cls);
        while (len > keep && len >= batch) {
            weft__mcentral_put(cls, cut(c, cls, (unsigned)batch), (unsigned)batch);
            c->nput[cls] += (uint64_t)batch;
            len -= batch;
        }
        c->cap[cls] = cap;
        WEFT_MC_ROOM(c, cls) = cap - len;
    }
    *(void **)p = WEFT_MC_HEAD(c, cls);
    WEFT_MC_HEAD(c, cls) = p;
    c->nfree[cls]++;
    WEFT_MC_ROOM(c, cls)--;
    sync_class(c, cls);
}

void weft__mcache_flush(struct mcache *c)
{
    for (unsigned cls = 1; cls < WEFT_NCLASS; cls++) {
        uint32_t len = list_len(c, cls);
        unsigned batch = weft__mcentral_batch(cls);
        while (len > 0) {
            unsigned n = len < batch ? len : batch;
            weft__mcentral_put(cls, cut(c, cls, n), n);
            c->nput[cls] += n;
            WEFT_MC_ROOM(c, cls) += (int32_t)n;
            len -= n;
        }
        sync_class(c, cls);             /* room rose by the flush, not by pops */
    }
}

/* Statistics read other threads' counters while their owners write them with plain
 * stores (the fast paths take no atomic instruction): a value read is stale by the
 * operations in flight, never more (aligned loads do not tear). The race is the
 * design, so these loads are left out of ThreadSanitizer's view: it reported the
 * stats of kv's INFO against a malloc on another P. */
#define RACY_READ __attribute__((noinline, no_sanitize_thread))
static RACY_READ int32_t racy_i32(const int32_t *p)
{
    return *(const volatile int32_t *)p;
}

static RACY_READ uint64_t racy_u64(const uint64_t *p)
{
    return *(const volatile uint64_t *)p;
}

/* Cumulative mallocs of class cls from c; racy when c is not the caller's: then off
 * by the operations in flight, never more. */
static uint64_t cache_mallocs(struct mcache *c, unsigned cls)
{
    int32_t room = racy_i32(&WEFT_MC_ROOM(c, cls));
    uint64_t in = racy_u64(&c->nget[cls]) + racy_u64(&c->nfree[cls]);
    int32_t cap = racy_i32(&c->cap[cls]);
    uint64_t out = racy_u64(&c->nput[cls]) + (uint64_t)(cap - room);
    return in > out ? in - out : 0;
}

void weft__mcache_destroy(struct mcache *c)
{
    weft__mcache_flush(c);
    weft__lock(&reg_lock);
    for (unsigned cls = 1; cls < WEFT_NCLASS; cls++) {
        dead_nmalloc[cls] += cache_mallocs(c, cls);
        dead_nfree[cls] += c->nfree[cls];
    }
    if (c->reg_prev != NULL)
        c->reg_prev->reg_next = c->reg_next;
    else
        reg_head = c->reg_next;
    if (c->reg_next != NULL)
        c->reg_next->reg_prev = c->reg_prev;
    c->reg_next = pool;
    pool = c;
    weft__unlock(&reg_lock);
}

void weft__mcache_stats(uint64_t *nmalloc, uint64_t *nfree)
{
    weft__lock(&reg_lock);
    for (unsigned cls = 1; cls < WEFT_NCLASS; cls++) {
        nmalloc[cls] += dead_nmalloc[cls];
        nfree[cls] += dead_nfree[cls];
    }
    for (struct mcache *c = reg_head; c != NULL; c = c->reg_next) {
        for (unsigned cls = 1; cls < WEFT_NCLASS; cls++) {
            nmalloc[cls] += cache_mallocs(c, cls);
            nfree[cls] += racy_u64(&c->nfree[cls]);
        }
    }
    weft__unlock(&reg_lock);
}

/* ---- thread caches -------------------------------------------------------- */
static void thread_exit(void *arg)
{
    struct mcache *c = arg;
    tls_state = TLS_DEAD;
    tls_own = NULL;
    if (weft__mcache_tls == c)
        weft__mcache_tls = &weft__mcache_empty;
    weft__mcache_destroy(c);
}

static void make_key(void)
{
    if (pthread_key_create(&thread_key, thread_exit) != 0)
        weft__throw("mcache: pthread_key_create failed");
}

struct mcache *weft__mcache_thread(void)
{
    struct mcache *c = weft__mcache_tls;
    if (c != &weft__mcache_empty)
        return c;
    if (tls_state == TLS_DEAD || weft__debug.allocfree)
        return NULL;
    pthread_once(&thread_key_once, make_key);
    c = weft__mcache_create(MCACHE_THREAD);
    if (c == NULL)
        return NULL;
    tls_state = TLS_CACHE;
    tls_own = c;
    weft__mcache_tls = c;
    pthread_setspecific(thread_key, c);   /* may allocate: the cache is in place */
    return c;
}

void weft__mcache_use(struct mcache *c)
{
    /* WEFT_DEBUG=allocfree: the P's cache stays unused (empty), so that green threads
     * take the direct, checked paths as plain threads do */
    if (WEFT_UNLIKELY(weft__debug.allocfree))
        c = NULL;
    weft__mcache_tls = c != NULL ? c : tls_own != NULL ? tls_own : &weft__mcache_empty;
}

/* ---- fork: no lock may be held by a thread that does not exist in the child ---- */
static void fork_prepare(void)
{
    weft__lock(&reg_lock);
    weft__mcentral_lock_all();
    weft__mheap_lock_fork();
}

static void fork_parent(void)
{
    weft__mheap_unlock_fork(0);
    weft__mcentral_unlock_all(0);
    weft__unlock(&reg_lock);
}

static void fork_child(void)
{
    weft__mheap_unlock_fork(1);
    weft__mcentral_unlock_all(1);
    weft__lock_reinit(&reg_lock);
}

__attribute__((constructor)) static void mcache_register_atfork(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}
