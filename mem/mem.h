/*
 * mem/mem.h -- weft's allocator: the internal interface of mem/ (our malloc.go).
 *
 * Pieces, after Go's runtime and tcmalloc:
 *   size classes  mem/sizeclass.h: n -> class by table lookup, no division.
 *   mheap         mem/mheap.c: 64 MiB arenas reserved from the OS, carved into runs
 *                 of 8 KiB pages (spans); free runs coalesce; one lock.
 *   page map      weft__arena_map[addr >> 26] -> struct arena, whose cls[] gives the
 *                 class of every page (0: not a small-object page) and spans[] the span.
 *   mcentral      mem/mcentral.c: one per class; a transfer cache of whole batches plus
 *                 the spans with free objects; one lock per batch moved.
 *   mcache        mem/mcache.c: per thread (later per P): a free list per class.
 *                 Fast paths (mem/malloc.c) take no lock and no atomic RMW.
 *
 * Invariants:
 *  - A small object is in exactly one place: handed out to the user, on one mcache
 *    list, in one transfer-cache batch, on its span's freelist, or in its span's
 *    never-used bump region [bump, limit).
 *  - span->nalloc counts the span's objects that are not on its freelist nor in its
 *    bump region; a span with nalloc == 0 goes back to the mheap.
 *  - arena->cls[page] != 0 exactly while the page belongs to an in-use small span;
 *    the allocating thread writes it (heap lock held) before any object of the span
 *    is handed out, so a free of a live object -- which happens after its malloc --
 *    reads it without a lock.
 *  - arena->spans[page] is exact for every page of a small span and for the first
 *    and last page of large and free spans; other entries may be stale and are only
 *    trusted after a range check (span structs are never unmapped).
 *  - mcache.room[c] counts the frees the fast path may still push onto list c
 *    before the slow path must look at the list length. It only ever goes below 0
 *    by one (the fast path's decrement), which sends that free to the slow path.
 *    room[0] stays 0 (class 0 = large: always the slow path). On the shared
 *    weft__empty_cache every room stays <= 0 and every head NULL, so threads
 *    without a cache always take the slow path (the racy decrements there are
 *    benign: every value written is <= 0).
 * Lock order: cache registry < mcentral[c] (one at a time) < mheap.
 */
#ifndef WEFT_MEM_H
#define WEFT_MEM_H

#include "weft.h"
#include "weft/base.h"
#include "mem/sizeclass.h"

#define WEFT_ARENA_SHIFT 26                         /* 64 MiB arenas */
#define WEFT_ARENA_SIZE  ((size_t)1 << WEFT_ARENA_SHIFT)
#define WEFT_ARENA_PAGES (WEFT_ARENA_SIZE >> WEFT_PAGE_SHIFT)
#define WEFT_ADDR_BITS   48
#define WEFT_ARENA_MAP_LEN ((size_t)1 << (WEFT_ADDR_BITS - WEFT_ARENA_SHIFT))

enum { SPAN_FREE = 0, SPAN_SMALL = 1, SPAN_LARGE = 2, SPAN_DEAD = 3 };

struct mspan {
    uintptr_t base;            /* first byte; page aligned */
    uint32_t npages;
    uint8_t cls;               /* small: its class; else 0 */
    uint8_t state;             /* SPAN_* */
    uint8_t needzero;          /* pages may hold old data (not fresh from the OS) */
    uint8_t released;          /* free span whose pages went back to the OS */
    uint8_t in_partial;        /* small: on its mcentral's partial list */
    /* small spans, under their mcentral's lock */
    uint32_t elemsize, nelems, nalloc;
    void *freelist;
    uintptr_t bump, limit;
    _Atomic uint64_t *allocbits;   /* WEFT_DEBUG=allocfree: one bit per live object */
    /* list links: mcentral partial list, or mheap free bin */
    struct mspan *next, *prev;
    /* mheap dirty list (free spans whose pages are still resident), oldest first */
    struct mspan *dnext, *dprev;
};

struct arena {
    uint8_t cls[WEFT_ARENA_PAGES];
    struct mspan *spans[WEFT_ARENA_PAGES];
};
/* weft__arena_map[i] is 0 where weft owns no arena, else the arena's address minus
 * i << (WEFT_ARENA_SHIFT - WEFT_PAGE_SHIFT): biased so that the class byte of address
 * a is ((uint8_t *)map[a >> WEFT_ARENA_SHIFT])[a >> WEFT_PAGE_SHIFT], with no mask. */
#define WEFT_ARENA_BIAS(i) ((uintptr_t)(i) << (WEFT_ARENA_SHIFT - WEFT_PAGE_SHIFT))
WEFT_HIDDEN extern uintptr_t weft__arena_map[WEFT_ARENA_MAP_LEN];

static inline struct arena *weft__arena_of(uintptr_t a)
{
    size_t i = (a >> WEFT_ARENA_SHIFT) & (WEFT_ARENA_MAP_LEN - 1);
    uintptr_t e = weft__arena_map[i];
    return e != 0 ? (struct arena *)(e + WEFT_ARENA_BIAS(i)) : NULL;
}
static inline size_t weft__page_index(uintptr_t a)
{
    return (a >> WEFT_PAGE_SHIFT) & (WEFT_ARENA_PAGES - 1);
}
/* The span that holds address a, or NULL; exact for small spans, range-checked else. */
WEFT_HIDDEN struct mspan *weft__span_of(uintptr_t a);

/* ---- mcache -------------------------------------------------------------- */
struct mcache {
    /* fast path: touched by the owner only */
    void *head[WEFT_NCLASS];
    int32_t room[WEFT_NCLASS];
    uint64_t nmalloc[WEFT_NCLASS];      /* cumulative; read racily by stats */
    /* slow path bookkeeping, owner only */
    int32_t room_set[WEFT_NCLASS];      /* room when last set */
    uint32_t len_sync[WEFT_NCLASS];     /* list length when room was last set */
    uint64_t nmalloc_sync[WEFT_NCLASS]; /* nmalloc when room was last set */
    uint64_t nfree[WEFT_NCLASS];        /* frees accounted up to the last sync */
    int kind;                           /* MCACHE_THREAD, MCACHE_P */
    struct mcache *reg_next, *reg_prev; /* cache registry, under its lock */
};
enum { MCACHE_EMPTY = 0, MCACHE_THREAD = 1, MCACHE_P = 2 };

/* The current cache: the P's while a green thread runs on it, the thread's
 * otherwise. Read it again after anything that can park (see DESIGN.md). */
WEFT_HIDDEN extern __thread struct mcache *weft__tls_cache WEFT_TLS_IE;
WEFT_HIDDEN extern struct mcache weft__empty_cache;

WEFT_HIDDEN struct mcache *weft__mcache_create(int kind);   /* registered, empty */
WEFT_HIDDEN void weft__mcache_flush(struct mcache *c);       /* give every cached object back */
WEFT_HIDDEN void weft__mcache_destroy(struct mcache *c);     /* flush, fold stats, free */
WEFT_HIDDEN void *weft__mcache_refill_alloc(struct mcache *c, unsigned cls);
WEFT_HIDDEN void weft__mcache_free_slow(struct mcache *c, void *p, unsigned cls);
WEFT_HIDDEN struct mcache *weft__thread_cache(void);         /* create on first use, or NULL */
/* The scheduler: this thread now allocates from c (a P's cache), or from its own
 * thread cache when c is NULL (the thread dropped its P). */
WEFT_HIDDEN void weft__mcache_use(struct mcache *c);
WEFT_HIDDEN void weft__mcache_stats(uint64_t *nmalloc, uint64_t *nfree); /* per class, all caches */

/* ---- mcentral ------------------------------------------------------------ */
WEFT_HIDDEN unsigned weft__class_batch(unsigned cls);
/* Hand out up to `want` objects as a NULL-terminated list; returns the count (>= 1) or 0 on OOM. */
WEFT_HIDDEN unsigned weft__mcentral_get(unsigned cls, unsigned want, void **head);
/* Take back a list of n objects (NULL-terminated). */
WEFT_HIDDEN void weft__mcentral_put(unsigned cls, void *head, unsigned n);
WEFT_HIDDEN void *weft__mcentral_alloc_one(unsigned cls);    /* direct path (no cache) */
WEFT_HIDDEN void weft__mcentral_free_one(struct mspan *s, void *p, const char *fn);
WEFT_HIDDEN void weft__mcentral_drain(void);                 /* transfer caches -> spans */
WEFT_HIDDEN void weft__mcentral_stats(uint64_t *nmalloc, uint64_t *nfree);
WEFT_HIDDEN void weft__mcentral_lock_all(void);
WEFT_HIDDEN void weft__mcentral_unlock_all(int child);

/* ---- mheap --------------------------------------------------------------- */
WEFT_HIDDEN struct mspan *weft__mheap_alloc(size_t npages, size_t align_pages, int state, unsigned cls);
WEFT_HIDDEN void weft__mheap_free(struct mspan *s);
WEFT_HIDDEN void weft__mheap_scavenge_all(void);
WEFT_HIDDEN void weft__mheap_lock_fork(void);
WEFT_HIDDEN void weft__mheap_unlock_fork(int child);
struct heap_stats { uint64_t sys, released, inuse, large_alloc, large_nmalloc, large_nfree; };
WEFT_HIDDEN void weft__mheap_stats(struct heap_stats *out);

/* ---- os ------------------------------------------------------------------ */
WEFT_HIDDEN void *weft__os_reserve(size_t size, size_t align, uintptr_t hint);
WEFT_HIDDEN void *weft__os_alloc(size_t size);               /* metadata: zeroed, never freed */
WEFT_HIDDEN void weft__os_release(void *p, size_t size);     /* MADV_DONTNEED */

WEFT_HIDDEN extern _Atomic uint64_t weft__stacks_inuse;   /* bytes, kept by sched/ */
WEFT_HIDDEN void weft__mem_init_slow(void);
WEFT_HIDDEN extern _Atomic int weft__mem_ready;
static inline void weft__mem_init(void)
{
    /* acquire: pairs with the release store at the end of weft__mem_init_slow */
    if (WEFT_UNLIKELY(!atomic_load_explicit(&weft__mem_ready, memory_order_acquire)))
        weft__mem_init_slow();
}

/* Debug helpers (WEFT_DEBUG=allocfree=1) */
#define WEFT_POISON 0xdf
WEFT_HIDDEN WEFT_NORETURN WEFT_COLD void weft__bad_free(const char *fn, const void *p, const char *why);

#endif
