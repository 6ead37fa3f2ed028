/*
 * mem/malloc.c -- the public allocator: weft_malloc, weft_free and friends.
 *
 * Fast paths (no lock, no atomic, no call):
 *   weft_malloc(n <= 1024): class = table[(n + 7) >> 3]; pop the current cache's
 *     list; count it. About 12 instructions.
 *   weft_free(p): arena = map[p >> 26]; class = arena->cls[page]; if the cache has
 *     room, push. Class 0 (large object, free page or foreign) has no room.
 * Everything else is in the slow paths below and in mcache.c / mcentral.c /
 * mheap.c. Sizes 1025..32768 take a short detour through malloc_slow but still
 * come from the cache without a lock.
 *
 * Misuse: a pointer that is not in any weft arena, a large-object pointer that is
 * not the start of a live object, and (with WEFT_DEBUG=allocfree=1) double frees,
 * interior pointers and writes after free abort with a message naming the call.
 * Without the debug mode a double free of a small object is not detected.
 */
#include <errno.h>
#include <string.h>
#include "mem/mem.h"

#define PAGE WEFT_PAGE_SIZE
#define MAX_REQUEST ((size_t)1 << 46)      /* 64 TiB: beyond any machine */

_Atomic int weft__mem_ready;
_Atomic uint64_t weft__stacks_inuse;

void weft__mem_init_slow(void)
{
    static weft_lock init_lock = WEFT_LOCK_INIT;
    weft__lock(&init_lock);
    if (!atomic_load_explicit(&weft__mem_ready, memory_order_relaxed)) {
        weft__debug_init();
        /* release: pairs with weft__mem_init's acquire */
        atomic_store_explicit(&weft__mem_ready, 1, memory_order_release);
    }
    weft__unlock(&init_lock);
}

void weft__bad_free(const char *fn, const void *p, const char *why)
{
    weft__throwf("%s(%p): %s", fn, p, why);
}

static void *enomem(void)
{
    errno = ENOMEM;
    return NULL;
}

/* The fast path: pop the current cache's list of class cls, or NULL. */
WEFT_INLINE void *cache_pop(struct mcache *c, unsigned cls)
{
    void *p = c->head[cls];
    if (WEFT_LIKELY(p != NULL)) {
        c->head[cls] = *(void **)p;
        c->nmalloc[cls]++;
    }
    return p;
}

/* A small object of class cls on any path. */
static void *alloc_class(unsigned cls)
{
    struct mcache *c = weft__tls_cache;
    void *p = cache_pop(c, cls);
    if (WEFT_LIKELY(p != NULL))
        return p;
    weft__mem_init();
    c = weft__thread_cache();
    p = c != NULL ? weft__mcache_refill_alloc(c, cls) : weft__mcentral_alloc_one(cls);
    return p != NULL ? p : enomem();
}

static void *alloc_large(size_t n, size_t align_pages, int zero)
{
    if (n > MAX_REQUEST)
        return enomem();
    weft__mem_init();
    struct mspan *s = weft__mheap_alloc((n + PAGE - 1) / PAGE, align_pages, SPAN_LARGE, 0);
    if (s == NULL)
        return enomem();
    if (zero && s->needzero)
        memset((void *)s->base, 0, (size_t)s->npages * PAGE);
    return (void *)s->base;
}

static WEFT_NOINLINE void *malloc_slow(size_t n)
{
    if (n > WEFT_MAX_SMALL)
        return alloc_large(n, 1, 0);
    return alloc_class(weft__size_to_class(n));
}

void *weft_malloc(size_t n)
{
    if (WEFT_LIKELY(n <= 1024)) {
        void *p = cache_pop(weft__tls_cache, weft__class_of_small[n]);
        if (WEFT_LIKELY(p != NULL))
            return p;
    }
    return malloc_slow(n);
}

/* The span that p starts an object of, or abort naming fn. */
static struct mspan *owner_span(const void *p, const char *fn)
{
    struct mspan *s = weft__span_of((uintptr_t)p);
    if (s == NULL)
        weft__bad_free(fn, p, "not allocated by weft, or already freed (double free)");
    if (s->state == SPAN_LARGE && (uintptr_t)p != s->base)
        weft__bad_free(fn, p, "not the start of an object");
    return s;
}

static WEFT_NOINLINE void free_slow(struct mcache *c, void *p, uintptr_t cls)
{
    /* undo the fast path's decrement; on the shared empty cache just reset it
     * (non-atomic increments there could race up past 0) */
    if (c == &weft__empty_cache)
        c->room[cls] = 0;
    else
        c->room[cls]++;
    if (cls != 0 && c != &weft__empty_cache) {
        weft__mcache_free_slow(c, p, cls);      /* list full: a batch goes back */
        return;
    }
    struct mspan *s = owner_span(p, "weft_free");
    if (s->state == SPAN_LARGE) {
        weft__mheap_free(s);
        return;
    }
    weft__mem_init();
    c = weft__thread_cache();
    if (c == NULL)
        weft__mcentral_free_one(s, p, "weft_free");
    else
        weft__mcache_free_slow(c, p, s->cls);
}

void weft_free(void *p)
{
    uintptr_t a = (uintptr_t)p;
    /* no mask on the index: user pointers are below 2^47 (2^48 on aarch64) */
    uintptr_t e = weft__arena_map[a >> WEFT_ARENA_SHIFT];
    if (WEFT_LIKELY(e != 0)) {
        uintptr_t cls = ((const uint8_t *)e)[a >> WEFT_PAGE_SHIFT];
        struct mcache *c = weft__tls_cache;
        if (WEFT_LIKELY(--c->room[cls] >= 0)) {
            *(void **)p = c->head[cls];
            c->head[cls] = p;
            return;
        }
        free_slow(c, p, cls);
        return;
    }
    if (p != NULL)
        weft__bad_free("weft_free", p, "not allocated by weft");
}

void *weft_calloc(size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total))
        return enomem();
    if (total > WEFT_MAX_SMALL)
        return alloc_large(total, 1, 1);
    void *p = weft_malloc(total);
    if (p != NULL)
        memset(p, 0, total);
    return p;
}

static size_t usable(const void *p, const char *fn)
{
    uintptr_t a = (uintptr_t)p;
    struct arena *ar = weft__arena_of(a);
    if (ar != NULL) {
        unsigned cls = ar->cls[weft__page_index(a)];
        if (cls != 0)
            return weft__class_size[cls];
    }
    struct mspan *s = owner_span(p, fn);
    return s->state == SPAN_LARGE ? (size_t)s->npages * PAGE : s->elemsize;
}

size_t weft_usable_size(const void *p)
{
    return p == NULL ? 0 : usable(p, "weft_usable_size");
}

void *weft_realloc(void *p, size_t n)
{
    if (p == NULL)
        return weft_malloc(n);
    if (n == 0) {                      /* glibc's behaviour: free, return NULL */
        weft_free(p);
        return NULL;
    }
    size_t old = usable(p, "weft_realloc");
    if (n <= old && n >= old / 2)      /* fits, and wastes less than half */
        return p;
    void *q = weft_malloc(n);
    if (q == NULL)
        return NULL;                   /* p stays valid */
    memcpy(q, p, n < old ? n : old);
    weft_free(p);
    return q;
}

void *weft_aligned_alloc(size_t align, size_t size)
{
    if (align == 0 || (align & (align - 1)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    if (align <= 8)
        return weft_malloc(size);
    if (align <= 16)
        return weft_malloc(size < 16 ? 16 : size);
    if (size > MAX_REQUEST || align > MAX_REQUEST)
        return enomem();
    if (align <= PAGE) {
        size_t n = (size + align - 1) & ~(align - 1);
        if (n == 0)
            n = align;
        if (n > WEFT_MAX_SMALL)
            return alloc_large(n, 1, 0);
        /* objects of a class whose size is a multiple of align are aligned: spans
         * start on a page. 32768 is such a class for every align <= PAGE. */
        unsigned cls = weft__size_to_class(n);
        while (weft__class_size[cls] % align != 0)
            cls++;
        return alloc_class(cls);
    }
    return alloc_large(size == 0 ? 1 : size, align / PAGE, 0);
}

void weft_mem_release(void)
{
    weft__mem_init();
    struct mcache *c = weft__tls_cache;
    if (c != &weft__empty_cache)
        weft__mcache_flush(c);
    weft__mcentral_drain();
    weft__mheap_scavenge_all();
}

void weft_mem_stats_read(weft_mem_stats *out)
{
    uint64_t nm[WEFT_NCLASS] = {0}, nf[WEFT_NCLASS] = {0};
    struct heap_stats hs;
    weft__mcache_stats(nm, nf);
    weft__mcentral_stats(nm, nf);
    weft__mheap_stats(&hs);
    memset(out, 0, sizeof *out);
    uint64_t alloc = hs.large_alloc;
    for (unsigned cls = 1; cls < WEFT_NCLASS; cls++) {
        out->mallocs += nm[cls];
        out->frees += nf[cls];
        if (nm[cls] > nf[cls])          /* racy reads of busy caches may cross */
            alloc += (nm[cls] - nf[cls]) * weft__class_size[cls];
    }
    out->mallocs += hs.large_nmalloc;
    out->frees += hs.large_nfree;
    out->heap_alloc = alloc;
    out->heap_inuse = hs.inuse;
    out->heap_sys = hs.sys;
    out->heap_released = hs.released;
    out->stacks_inuse = atomic_load_explicit(&weft__stacks_inuse, memory_order_relaxed);
}
