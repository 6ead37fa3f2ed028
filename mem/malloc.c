/*
 * mem/malloc.c -- the public allocator: weft_malloc, weft_free, weft_calloc,
 * weft_realloc, weft_aligned_alloc, weft_usable_size, weft_mem_release and
 * weft_mem_stats_read. The top of mem/: it calls the files below it (mem/mem.h), and
 * no mem/ file calls it but preload.c.
 * Callers: anyone, on any thread (green, plain, before weft_start, from ld.so when
 * preloaded), holding no mem lock.
 *
 * Fast paths (no lock, no atomic, no call). Counted with callgrind (sh tests/bench/
 * run.sh callgrind: malloc(32)/free pairs through libweft-malloc.so), gcc 12 and
 * clang 14 alike, x86-64: malloc 12 instructions, free 17 (the caller's PLT jump is
 * not in the count; 15 before the double-free check).
 *   weft_malloc(n <= 1024), 12:
 *     c = the current cache (2: the TLS offset from the GOT, then %fs); n <= 1024 (2);
 *     s = c->class_of[n] (1: the size -> slot table is copied into every cache, so
 *     it is addressed from c; the empty cache's maps every n to class 0's slot);
 *     p = head[s], NULL? (3); head[s] = next (2); room[s]++ (1); ret.
 *   weft_free(p), 17:
 *     m = weft__pagemap (1); p below the limit m[-1]? (2); s = m[p >> 13] (3);
 *     c (2); --room[s] < 0? (2); h = head[s], h == p? (3); push p (2); nfree[s]++ (1);
 *     ret. The h == p test (2 instructions) is the double-free check, see below.
 *   room[s] and head[s] are addressed from c with the slot as index and no
 *   displacement (see struct mcache), and the slot is hidden from gcc before nfree
 *   (OPAQUE), so no lea; p is pinned in %rax for gcc (IN_RETURN_REG).
 * Why the free is safe for any p: the map is read only below its limit (2^47 on
 * x86-64, 2^48 on aarch64), and it is readable up to there (mem/pagemap.c); every
 * page that is not a small page of weft's reads slot 0, whose room is never positive
 * (room[0] is 0 but for one free's decrement, undone by its slow path), so foreign
 * pointers, large objects and free pages reach free_slow, and NULL and pointers at or
 * above the limit free_unmapped; both check them through the two-level map and the
 * span (an abort that names weft_free for a pointer weft does not own). Without the
 * map (ulimit -v, WEFT_DEBUG=pagemap=0) every free goes to free_unmapped: the
 * two-level map and an inline push, 58 instructions (callgrind, pagemap=0).
 * Exact stats with one add per operation: see mem/mcache.c. Sizes 1025..32768 take
 * a short detour through malloc_slow but still come from the cache without a lock.
 *
 * Misuse: a pointer that is not in any weft arena, a large-object pointer that is
 * not the start of a live object, and (with WEFT_DEBUG=allocfree=1, on green and plain
 * threads) double frees, interior pointers and writes after free abort with a message
 * naming the call (mem/report.c).
 * Double frees of small objects in the default mode: the free fast path compares p with
 * the head of its list (already in a register for the push): an object freed twice
 * with no other free of its class on that thread in between aborts (2 instructions;
 * glibc's old fastbin "fasttop" check). A double free the fast path misses is caught,
 * if at all, when its span gets back more objects than it handed out (mem/mcentral.c);
 * it may first be handed out twice. allocfree=1 catches every one.
 *
 * Realloc of a large object (realloc_large): in place where the pages after it are free
 * (the heap's top extends contiguously), else moved with half its size as headroom and,
 * from 256 KiB, by mremap instead of a copy; shrinks in place. A growth sequence is
 * linear work in all.
 *
 * Rejected: a key word in each freed object (glibc's tcache) as the default double-free
 * check: it would catch any object still on the list, but costs a store and a compare
 * (3+ instructions on free, against the head compare's 2) and needs a second word,
 * which the 8-byte class does not have. Map-less frees through free_slow: 116
 * instructions, against free_unmapped's 56 (both measured when the fast free was 15,
 * before the double-free check; free_unmapped is 58 now).
 */
#include <errno.h>
#include <string.h>
#include "mem/mem.h"

#define PAGE WEFT_PAGE_SIZE
#define MAX_REQUEST ((size_t)1 << 46)      /* 64 TiB: beyond any machine */

_Atomic uint64_t weft__mem_stack_inuse;

static void *enomem(void)
{
    errno = ENOMEM;
    return NULL;
}

/* x86-64, for gcc (clang needs neither; both are empty asm, no instruction):
 * IN_RETURN_REG pins a value in the return register (gcc otherwise pops into another
 * and adds a mov before the ret); OPAQUE hides that v is unchanged, so that gcc does
 * not share one address computation (an lea) between the accesses before and after. */
#if defined(__x86_64__)
#define IN_RETURN_REG(v) __asm__("" : "+a"(v))
#define OPAQUE(v) __asm__("" : "+r"(v))
#else
#define IN_RETURN_REG(v) ((void)0)
#define OPAQUE(v) ((void)0)
#endif

/* The fast path: pop the current cache's list of slot s, or NULL. */
WEFT_INLINE void *cache_pop(struct mcache *c, size_t s)
{
    void *p = c->slot.head[s];
    IN_RETURN_REG(p);
    if (WEFT_LIKELY(p != NULL)) {
        c->slot.head[s] = *(void **)p;
        c->slot.room[s]++;
    }
    return p;
}

/* A small object of class cls on any path. */
static void *alloc_class(unsigned cls)
{
    struct mcache *c = weft__mcache_tls;
    void *p = cache_pop(c, WEFT_SLOT_BIAS + cls);
    if (WEFT_LIKELY(p != NULL))
        return p;
    weft__mem_init();
    c = weft__mcache_thread();
    p = c != NULL ? weft__mcache_refill_alloc(c, cls) : weft__mcentral_alloc_one(cls);
    return p != NULL ? p : enomem();
}

static void *alloc_large(size_t n, size_t align_pages, int zero)
{
    if (n > MAX_REQUEST)
        return enomem();
    weft__mem_init();
    /* a thread's first object may be large: it gets its cache now, so that its frees
     * decrement its own room[0] (free's fast path), not the shared empty cache's */
    if (WEFT_UNLIKELY(weft__mcache_tls == &weft__mcache_empty))
        weft__mcache_thread();
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
    struct mcache *c = weft__mcache_tls;
    if (WEFT_LIKELY(n <= 1024)) {
        void *p = cache_pop(c, c->class_of[n]);   /* class 0's slot on the empty cache */
        if (WEFT_LIKELY(p != NULL))
            return p;
    } else if (n <= WEFT_MAX_SMALL) {
        /* medium sizes: the class from the second table, the same pop (on the empty
         * cache every head is NULL: the slow path) */
        void *p = cache_pop(c, WEFT_SLOT_BIAS + weft__class_of_medium[(n - 1024 + 127) >> 7]);
        if (WEFT_LIKELY(p != NULL))
            return p;
    }
    return malloc_slow(n);
}

/* The span that p starts an object of, or abort naming fn. */
static struct mspan *owner_span(const void *p, const char *fn)
{
    struct mspan *s = weft__mheap_span_of((uintptr_t)p);
    if (s == NULL)
        weft__mem_bad_free(fn, p, "not allocated by weft, or already freed (double free)");
    if (s->state == SPAN_LARGE && (uintptr_t)p != s->base)
        weft__mem_bad_free(fn, p, "not the start of an object");
    return s;
}

/* Every free the fast path did not take: p not below the class map's limit (c is then
 * NULL), slot 0 (NULL, a large object, a free page, a foreign pointer), no room in
 * slot s of c (a full list, or c the empty cache), or p at the head of the list of slot
 * s (a double free: weft__mcache_free_slow aborts). */
static void free_slow_body(void *p, size_t s, struct mcache *c);

static WEFT_NOINLINE void free_slow(void *p, size_t s, struct mcache *c)
{
    free_slow_body(p, s, c);
    weft__mheap_scav_kick();            /* the cache is consistent again */
}

static void free_slow_body(void *p, size_t s, struct mcache *c)
{
    if (c != NULL) {
        /* undo the fast path's decrement; on the shared empty cache just reset it
         * (non-atomic increments there could race up past 0) */
        if (c == &weft__mcache_empty) {
            c->slot.room[s] = 0;
        } else {
            c->slot.room[s]++;
            if (s != 0) {
                weft__mcache_free_slow(c, p, (unsigned)(s - WEFT_SLOT_BIAS));  /* list full */
                return;
            }
        }
    }
    if (p == NULL)
        return;
    struct mspan *sp = owner_span(p, "weft_free");
    if (sp->state == SPAN_LARGE) {
        if (WEFT_UNLIKELY(c == &weft__mcache_empty))   /* as in alloc_large */
            weft__mcache_thread();
        weft__mheap_free(sp);
        return;
    }
    weft__mem_init();
    c = weft__mcache_thread();
    if (c == NULL)
        weft__mcentral_free_one(sp, p, "weft_free");
    else
        weft__mcache_free_slow(c, p, sp->cls);
}

/* p is not below the class map's limit: there is no map (the fallback: this is its
 * every free), or p is NULL or above the map. The two-level map and the span give the
 * class (58 instructions in all: see the header). */
static WEFT_NOINLINE void free_unmapped(void *p)
{
    struct mspan *sp = weft__mheap_span_of((uintptr_t)p);    /* NULL for NULL and foreign */
    struct mcache *c = weft__mcache_tls;
    if (WEFT_LIKELY(sp != NULL && sp->state == SPAN_SMALL && c != &weft__mcache_empty)) {
        unsigned cls = sp->cls;
        if (WEFT_LIKELY(WEFT_MC_ROOM(c, cls) > 0 && WEFT_MC_HEAD(c, cls) != p)) {
            *(void **)p = WEFT_MC_HEAD(c, cls);
            WEFT_MC_HEAD(c, cls) = p;
            WEFT_MC_ROOM(c, cls)--;
            c->nfree[cls]++;
            return;
        }
        weft__mcache_free_slow(c, p, cls);   /* list full: a batch goes back; or a double free */
        return;
    }
    free_slow(p, 0, NULL);
}

void weft_free(void *p)
{
    uintptr_t a = (uintptr_t)p;
    const uint8_t *m = weft__pagemap_get();
    if (WEFT_LIKELY(a < weft__pagemap_limit(m))) {       /* so the index stays in the map */
        size_t s = m[a >> WEFT_PAGE_SHIFT];
        struct mcache *c = weft__mcache_tls;
        /* unsigned, so that clang tests the decremented value (subl; js), not the old */
        uint32_t room = (uint32_t)c->slot.room[s] - 1;
        c->slot.room[s] = (int32_t)room;
        if (WEFT_LIKELY((int32_t)room >= 0)) {          /* never for slot 0 */
            void *h = c->slot.head[s];
            if (WEFT_LIKELY(h != p)) {                  /* else freed just before */
                *(void **)p = h;
                c->slot.head[s] = p;
                OPAQUE(s);
                c->nfree[s - WEFT_SLOT_BIAS]++;
                return;
            }
        }
        free_slow(p, s, c);             /* a tail jump: also where a double free aborts */
        return;
    }
    free_unmapped(p);
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
    unsigned cls = weft__pagemap_class((uintptr_t)p);
    if (cls != 0)
        return weft__class_size[cls];
    struct mspan *s = owner_span(p, fn);
    return s->state == SPAN_LARGE ? (size_t)s->npages * PAGE : s->elemsize;
}

size_t weft_usable_size(const void *p)
{
    return p == NULL ? 0 : usable(p, "weft_usable_size");
}

/* A large object from realloc: grown in place where the pages after it are free;
 * else moved to a new span with half its size again as headroom (so a growth sequence
 * moves O(log n) times: linear work in all), its frames moved by the kernel from
 * MOVE_MIN up instead of copied (no copy, no page faults on the new pages); shrunk in
 * place. NULL: out of memory, s untouched. */
#define MOVE_MIN ((size_t)256 << 10)
static void *realloc_large(struct mspan *s, size_t n)
{
    size_t old = (size_t)s->npages * PAGE, npages = (n + PAGE - 1) / PAGE;
    void *p = (void *)s->base;
    if (n <= old) {
        weft__mheap_shrink(s, npages);
        return p;
    }
    if (weft__mheap_grow_inplace(s, npages) == 0)
        return p;
    size_t room = n + n / 2 <= MAX_REQUEST ? n + n / 2 : n;
    struct mspan *t = weft__mheap_alloc((room + PAGE - 1) / PAGE, 1, SPAN_LARGE, 0);
    if (t == NULL && room > n)
        t = weft__mheap_alloc(npages, 1, SPAN_LARGE, 0);
    if (t == NULL)
        return enomem();
    if (old >= MOVE_MIN && weft__os_move(p, (void *)t->base, old) == 0) {
        weft__mheap_free_released(s, s->npages);
    } else {
        memcpy((void *)t->base, p, old);
        weft__mheap_free(s);
    }
    return (void *)t->base;
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
    if (old > WEFT_MAX_SMALL && n > WEFT_MAX_SMALL) {
        if (n > MAX_REQUEST)
            return enomem();
        void *q = realloc_large(weft__mheap_span_of((uintptr_t)p), n);
        weft__mheap_scav_kick();
        return q;
    }
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
    struct mcache *c = weft__mcache_tls;
    if (c != &weft__mcache_empty)
        weft__mcache_flush(c);
    weft__mcentral_drain();
    weft__mheap_scavenge_all();
    weft__mheap_scav_kick();
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
    out->stacks_inuse = atomic_load_explicit(&weft__mem_stack_inuse, RLX);
}
