/*
 * mem/mcache.c -- per-thread (later per-P) object caches: creation, refill, flush,
 * thread exit, and the registry that statistics walk.
 *
 * A cache holds, per class, a singly linked free list (head) that the fast paths in
 * mem/malloc.c pop and push with no lock. Its length is not stored on the fast path:
 *     len = len_sync + (room_set - room) - (nmalloc - nmalloc_sync)
 * (frees pushed since the last sync, less mallocs popped), computed here. The free
 * fast path may push while room > 0; room starts at max - len, so the list never
 * grows past max = 2 * batch. At that point a batch goes back to mcentral.
 *
 * Threads: a plain thread gets its cache on its first slow path, registered with a
 * pthread key whose destructor flushes and frees it at thread exit; after that the
 * thread is DEAD for the allocator and uses the locked direct paths (destructors of
 * other keys may still allocate). With WEFT_DEBUG=allocfree no cache is ever made:
 * every operation takes the direct, checked path.
 *
 * Locking: the registry (all caches, their pool, the folded counters of dead caches)
 * is under reg_lock, which comes before every mcentral lock. A cache's own fields
 * are written by its owner only; stats read nmalloc/nfree/room racily (relaxed),
 * which can be off by the operations in flight, never more.
 */
#include <pthread.h>
#include <string.h>
#include "mem/mem.h"

struct mcache weft__empty_cache;
__thread struct mcache *weft__tls_cache WEFT_TLS_IE = &weft__empty_cache;

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
    return (int32_t)(2 * weft__class_batch(cls));
}

struct mcache *weft__mcache_create(int kind)
{
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
    for (unsigned cls = 1; cls < WEFT_NCLASS; cls++)
        c->room[cls] = c->room_set[cls] = class_max(cls);
    c->reg_next = reg_head;
    if (reg_head != NULL)
        reg_head->reg_prev = c;
    reg_head = c;
    weft__unlock(&reg_lock);
    return c;
}

/* Bring the bookkeeping of class cls up to date; returns the list length. */
static uint32_t sync_class(struct mcache *c, unsigned cls)
{
    uint32_t pushed = (uint32_t)(c->room_set[cls] - c->room[cls]);
    uint64_t popped = c->nmalloc[cls] - c->nmalloc_sync[cls];
    uint32_t len = c->len_sync[cls] + pushed - (uint32_t)popped;
    c->nfree[cls] += pushed;
    c->len_sync[cls] = len;
    c->nmalloc_sync[cls] = c->nmalloc[cls];
    c->room_set[cls] = c->room[cls];
    return len;
}

static void set_len(struct mcache *c, unsigned cls, uint32_t len)
{
    c->len_sync[cls] = len;
    c->nmalloc_sync[cls] = c->nmalloc[cls];
    c->room[cls] = c->room_set[cls] = class_max(cls) - (int32_t)len;
}

void *weft__mcache_refill_alloc(struct mcache *c, unsigned cls)
{
    sync_class(c, cls);             /* the list is empty here */
    void *head;
    unsigned n = weft__mcentral_get(cls, weft__class_batch(cls), &head);
    if (n == 0)
        return NULL;
    c->head[cls] = *(void **)head;
    c->nmalloc[cls]++;
    set_len(c, cls, n - 1);
    return head;
}

/* Cut the first n objects (n <= len) off list cls; returns them NULL-terminated. */
static void *cut(struct mcache *c, unsigned cls, unsigned n)
{
    void *first = c->head[cls], *last = first;
    for (unsigned i = 1; i < n; i++)
        last = *(void **)last;
    c->head[cls] = *(void **)last;
    *(void **)last = NULL;
    return first;
}

/* The free fast path found no room (the caller undid its decrement). */
void weft__mcache_free_slow(struct mcache *c, void *p, unsigned cls)
{
    uint32_t len = sync_class(c, cls);
    unsigned batch = weft__class_batch(cls);
    /* full after this push: a batch goes back now, so the fast path gets room for a
     * whole batch of frees (else a list that hovers at max would take this slow path
     * on every free) */
    if (len + 1 >= (uint32_t)class_max(cls)) {
        weft__mcentral_put(cls, cut(c, cls, batch), batch);
        len -= batch;
    }
    *(void **)p = c->head[cls];
    c->head[cls] = p;
    c->nfree[cls]++;
    set_len(c, cls, len + 1);
}

void weft__mcache_flush(struct mcache *c)
{
    for (unsigned cls = 1; cls < WEFT_NCLASS; cls++) {
        uint32_t len = sync_class(c, cls);
        unsigned batch = weft__class_batch(cls);
        while (len > 0) {
            unsigned n = len < batch ? len : batch;
            weft__mcentral_put(cls, cut(c, cls, n), n);
            len -= n;
        }
        set_len(c, cls, 0);
    }
}

void weft__mcache_destroy(struct mcache *c)
{
    weft__mcache_flush(c);
    weft__lock(&reg_lock);
    for (unsigned cls = 1; cls < WEFT_NCLASS; cls++) {
        dead_nmalloc[cls] += c->nmalloc[cls];
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
            int32_t pushed = __atomic_load_n(&c->room_set[cls], __ATOMIC_RELAXED) -
                             __atomic_load_n(&c->room[cls], __ATOMIC_RELAXED);
            nmalloc[cls] += __atomic_load_n(&c->nmalloc[cls], __ATOMIC_RELAXED);
            nfree[cls] += __atomic_load_n(&c->nfree[cls], __ATOMIC_RELAXED) + (pushed > 0 ? (uint32_t)pushed : 0);
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
    if (weft__tls_cache == c)
        weft__tls_cache = &weft__empty_cache;
    weft__mcache_destroy(c);
}

static void make_key(void)
{
    if (pthread_key_create(&thread_key, thread_exit) != 0)
        weft__throw("mcache: pthread_key_create failed");
}

struct mcache *weft__thread_cache(void)
{
    struct mcache *c = weft__tls_cache;
    if (c != &weft__empty_cache)
        return c;
    if (tls_state == TLS_DEAD || weft__debug.allocfree)
        return NULL;
    pthread_once(&thread_key_once, make_key);
    c = weft__mcache_create(MCACHE_THREAD);
    if (c == NULL)
        return NULL;
    tls_state = TLS_CACHE;
    tls_own = c;
    weft__tls_cache = c;
    pthread_setspecific(thread_key, c);   /* may allocate: the cache is in place */
    return c;
}

void weft__mcache_use(struct mcache *c)
{
    weft__tls_cache = c != NULL ? c : tls_own != NULL ? tls_own : &weft__empty_cache;
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
