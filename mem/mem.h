/*
 * mem/mem.h -- weft's allocator: the internal interface of mem/ (our malloc.go), after
 * Go's runtime and tcmalloc.
 *
 * Files, top down; each calls only files below it (mem/ calls nothing above it):
 *   malloc.c      the public allocator: weft_malloc, weft_free, ..., stats. Its fast
 *                 paths take no lock and no atomic RMW (malloc 12 instructions, free 17).
 *   mcache.c      per P, or per plain thread: a free list per class; thread caches,
 *                 the registry of caches, fork handlers.
 *   mcentral.c    one per class: a transfer cache of whole batches plus the spans with
 *                 free objects; one lock round trip per batch moved.
 *   mheap.c       64 MiB arenas reserved from the OS, carved into runs of 8 KiB pages
 *                 (spans); free runs coalesce; weft__mheap_arena_map[addr >> 26] ->
 *                 struct arena, whose spans[] gives the span of a page; the background
 *                 scavenger thread.
 *   pagemap.c     weft__pagemap[addr >> 13]: the class of every page in one load (the
 *                 free fast path; 16 GiB of address space on x86-64, VSZ only).
 *   os.c          mmap, madvise, mremap: the allocator's only syscalls on memory.
 *   init.c        weft__mem_init's slow half: WEFT_DEBUG read once.
 *   report.c      weft__mem_bad_free: the abort on a bad pointer.
 *   sizeclass.h   n -> class by table lookup, no division (sizeclass_table.h, generated
 *                 by mksizeclass.c at build time).
 *   preload.c     libweft-malloc.so only: the rest of the C allocator's names.
 *   options.c, lock.c, base.c: WEFT_DEBUG, the futex lock, throw/printf/weft_strerror:
 *                 include/weft/base.h's functions, used by every module.
 * Callers of this header: mem/'s files, sched/ (weft__mem_init, weft__mcache_create,
 *   _destroy and _use, weft__mem_stack_inuse) and white-box tests; nothing else.
 *
 * Invariants:
 *  - A small object is in exactly one place: handed out to the user, on one mcache
 *    list, in one transfer-cache batch, on its span's freelist, or in its span's
 *    never-used bump region [bump, limit).
 *  - span->nalloc counts the span's objects that are not on its freelist nor in its
 *    bump region; a span with nalloc == 0 goes back to the mheap.
 *  - The class map's byte of a page != 0 exactly while the page belongs to an in-use
 *    small span (below the map's limit; see mem/pagemap.c); the allocating thread
 *    writes it (heap lock held) before any object of the span is handed out, so a
 *    free of a live object -- which happens after its malloc -- reads it without a
 *    lock. Every other address below the limit reads 0, and the map is readable up
 *    to the limit, so any pointer below it can be looked up.
 *  - arena->spans[page] is exact for every page of a small span and for the first
 *    and last page of large and free spans; other entries may be stale and are only
 *    trusted after a range check (span structs are never unmapped).
 *  - In a cache that a thread owns, the room of class c == cap[c] - (length of its
 *    list), but for the moment between the free fast path's decrement and its slow
 *    path's undo (room -1: the list was full). malloc adds 1, free takes 1.
 *  - Slot 0 (the class map's "not a small page") has room 0 but for that moment, and
 *    nothing ever reads its head; class 0's slot (WEFT_SLOT_BIAS, which the empty
 *    cache's class_of[] gives every size) has a NULL head and is never pushed. So
 *    class 0 always takes the slow paths. On the shared weft__mcache_empty every room
 *    stays <= 0 and every head NULL, so threads without a cache always take the slow
 *    paths (the racy decrements there are benign: every value written is <= 0).
 *
 * Lock order, every lock of mem/ (take an earlier one before a later one, never the
 * other way round). sched/ may hold its own locks when it calls in; mem/ never calls
 * out while holding one (the throw context function sched/ installs takes no lock):
 *   1. reg_lock           mcache.c: the cache registry, its pool, dead caches' counts.
 *   2. central[c].lock    mcentral.c: class c's spans and transfer cache; one class at
 *                         a time, but fork_prepare, which takes them all in class order.
 *   3. scav_lock          mheap.c: one scavenger at a time (its thread, weft_mem_release);
 *                         held while it madvises without h.lock; fork_prepare takes it
 *                         after the mcentral locks, so no span is out during a fork.
 *   4. h.lock             mheap.c: the heap, arena map writes, the page class map
 *                         (pagemap.c runs under it); the last lock: it takes no other.
 *   -  init_lock          init.c: held alone (taken under none, takes none).
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

/* SPAN_SCAV: free pages the scavenger took out of the free structures while it gives
 * them back to the OS without h.lock (mheap.c); neither free nor in use. */
enum { SPAN_FREE = 0, SPAN_SMALL = 1, SPAN_LARGE = 2, SPAN_DEAD = 3, SPAN_SCAV = 4 };

struct mspan {
    uintptr_t base;            /* first byte; page aligned */
    uint32_t npages;
    uint8_t cls;               /* small: its class; else 0 */
    uint8_t state;             /* SPAN_* */
    uint8_t needzero;          /* in use: pages may hold old data (not fresh from the OS) */
    uint8_t in_partial;        /* small: on its mcentral's partial list */
    /* small spans, under their mcentral's lock */
    uint32_t elemsize, nelems, nalloc;
    void *freelist;
    uintptr_t bump, limit;
    _Atomic uint64_t *allocbits;   /* WEFT_DEBUG=allocfree: one bit per live object */
    /* list links: mcentral partial list, or mheap free bin; in the mheap's size-ordered
     * trees of free spans (HEAP_BINS pages and more), next and prev are the children */
    struct mspan *next, *prev;
    /* mheap dirty list (free spans with pages that may be resident), oldest first */
    struct mspan *dnext, *dprev;
    uint32_t ndirty;           /* free span: its pages whose arena->clean bit is 0 */
};

#define WEFT_HUGE_SHIFT 21                          /* 2 MiB: the x86-64 and aarch64 huge page */
struct arena {
    struct mspan *spans[WEFT_ARENA_PAGES];
    uint64_t clean[WEFT_ARENA_PAGES / 64];   /* mheap: page not resident, reads as zero */
    uint32_t huge;                           /* mheap: 2 MiB chunk i was madvised HUGEPAGE */
};
_Static_assert(WEFT_ARENA_SIZE >> WEFT_HUGE_SHIFT <= 32, "a bit per huge chunk of an arena");
/* weft__mheap_arena_map[i]: the arena at address i << WEFT_ARENA_SHIFT, or NULL where
 * weft owns none. */
WEFT_HIDDEN extern struct arena *weft__mheap_arena_map[WEFT_ARENA_MAP_LEN];

static inline struct arena *weft__mheap_arena_of(uintptr_t a)
{
    return weft__mheap_arena_map[(a >> WEFT_ARENA_SHIFT) & (WEFT_ARENA_MAP_LEN - 1)];
}
static inline size_t weft__mheap_page_index(uintptr_t a)
{
    return (a >> WEFT_PAGE_SHIFT) & (WEFT_ARENA_PAGES - 1);
}
/* The span that holds address a, or NULL; exact for small spans, range-checked else. */
WEFT_HIDDEN struct mspan *weft__mheap_span_of(uintptr_t a);

/* A class's slot: its index in an mcache's fast-path arrays, in the class map and in
 * mcache.class_of[]: WEFT_SLOT_BIAS + cls for a small class; the class map's 0 (not a
 * small page) is slot 0. Both fast paths address room[s] and head[s] with no
 * displacement (two arrays overlaid at the start of the cache, whose used parts do
 * not overlap: see struct mcache), so that the compilers use one instruction per
 * access instead of an lea first. */
#define WEFT_SLOT_BIAS 128
#define WEFT_NSLOT (WEFT_SLOT_BIAS + WEFT_NCLASS)
_Static_assert(WEFT_NSLOT <= 256, "a slot must fit the class map's byte");
_Static_assert(4 * WEFT_NSLOT <= 8 * WEFT_SLOT_BIAS, "room[] must end before the first head[]");
#define WEFT_MC_ROOM(c, cls) ((c)->slot.room[WEFT_SLOT_BIAS + (cls)])
#define WEFT_MC_HEAD(c, cls) ((c)->slot.head[WEFT_SLOT_BIAS + (cls)])

/* ---- page class map (mem/pagemap.c) --------------------------------------------- */
/* One byte per 8 KiB page of the user address space below 2^WEFT_MAP_ADDR_BITS: the
 * slot of the class of the small span that holds the page, else 0. The word right below the map,
 * ((uintptr_t *)weft__pagemap)[-1], is its limit: addresses from it up are not in
 * the map (0 while there is no map: before the first arena, or when it could not be
 * reserved). Readers load weft__pagemap first and the limit through it (address
 * dependency; see weft__pagemap_get). */
#if defined(__x86_64__)
#define WEFT_MAP_ADDR_BITS 47                       /* user space: 16 GiB of map */
#else
#define WEFT_MAP_ADDR_BITS 48                       /* aarch64 (48-bit VA): 32 GiB */
#endif
WEFT_HIDDEN extern uint8_t *weft__pagemap;

#if defined(__SANITIZE_THREAD__)
#define WEFT_MAP_ORDER __ATOMIC_ACQUIRE     /* TSan does not see address dependencies */
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WEFT_MAP_ORDER __ATOMIC_ACQUIRE
#endif
#endif
#ifndef WEFT_MAP_ORDER
#define WEFT_MAP_ORDER __ATOMIC_RELAXED     /* the limit is read through the pointer */
#endif
/* The map; its limit is weft__pagemap_limit(m). Relaxed: the limit (and every class
 * byte of the map) is read through the pointer, an address dependency that orders it
 * after the load on every CPU weft runs on; pairs with the release in pagemap.c. */
static inline const uint8_t *weft__pagemap_get(void)
{
    return __atomic_load_n(&weft__pagemap, WEFT_MAP_ORDER);
}
static inline uintptr_t weft__pagemap_limit(const uint8_t *m)
{
    return ((const uintptr_t *)(const void *)m)[-1];
}
/* The class of the page that holds a: 0 for large, free and foreign pages, and for
 * every page when there is no map. */
static inline unsigned weft__pagemap_class(uintptr_t a)
{
    const uint8_t *m = weft__pagemap_get();
    unsigned s = a < weft__pagemap_limit(m) ? m[a >> WEFT_PAGE_SHIFT] : 0;
    return s != 0 ? s - WEFT_SLOT_BIAS : 0;
}
/* mheap lock held. Make the map writable over [base, base + size) (a new arena);
 * 0, or -1 when the OS refuses. Outside the map (above its limit, or no map) there
 * is nothing to do: frees of those pages take the slow path. */
WEFT_HIDDEN int weft__pagemap_grow(uintptr_t base, size_t size);
/* mheap lock held; a is in an arena that went through weft__pagemap_grow. The map
 * holds the class's slot (see struct mcache), 0 for class 0. */
static inline void weft__pagemap_set(uintptr_t a, unsigned cls)
{
    uint8_t *m = weft__pagemap;
    if (a < weft__pagemap_limit(m))
        m[a >> WEFT_PAGE_SHIFT] = (uint8_t)(cls != 0 ? WEFT_SLOT_BIAS + cls : 0);
}

/* ---- mcache (mem/mcache.c) ------------------------------------------------------ */
struct mcache {
    /* fast paths: touched by the owner only; stats read room and nfree racily.
     * room[s] lives in bytes [4s, 4s + 4), head[s] in [8s, 8s + 8): the slots in use,
     * 0 and WEFT_SLOT_BIAS.. for room, WEFT_SLOT_BIAS.. for head, never share a byte
     * (head[0] is never used; room[0] is class 0's, see the invariants). */
    union {
        int32_t room[WEFT_NSLOT];       /* cap - list length (see the invariants) */
        void *head[WEFT_NSLOT];         /* the free list of each class */
    } slot;
    uint64_t nfree[WEFT_NCLASS];        /* cumulative frees into this cache, by class */
    uint8_t class_of[1024 + 1];         /* size -> slot; all WEFT_SLOT_BIAS (class 0) on
                                         * the empty cache */
    /* slow paths, owner only; stats read them racily */
    uint64_t nget[WEFT_NCLASS];         /* objects taken from mcentral */
    uint64_t nput[WEFT_NCLASS];         /* objects given back to mcentral */
    int32_t cap[WEFT_NCLASS];           /* the list's bound: room = cap - length */
    uint8_t mult[WEFT_NCLASS];          /* cap = mult * 2 batches (grown by churn) */
    uint8_t last_slow[WEFT_NCLASS];     /* SLOW_REFILL or SLOW_FLUSH: the last slow path */
    uint32_t extra_bytes;               /* sum of the growth of every class's bound */
    int32_t room_sync[WEFT_NCLASS];     /* room and nfree at the last slow path: pops */
    uint64_t nfree_sync[WEFT_NCLASS];   /* since then = room rise + frees since then */
    int kind;                           /* MCACHE_THREAD, MCACHE_P; 0 on the empty cache;
                                         * no code reads it */
    struct mcache *reg_next, *reg_prev; /* cache registry, under its lock */
};
enum { MCACHE_THREAD = 1, MCACHE_P = 2 };

/* The current cache: the P's while a green thread runs on it, the thread's
 * otherwise. Read it again after anything that can park (see DESIGN.md). */
WEFT_HIDDEN extern __thread struct mcache *weft__mcache_tls WEFT_TLS_IE;
WEFT_HIDDEN extern struct mcache weft__mcache_empty;

WEFT_HIDDEN struct mcache *weft__mcache_create(int kind);   /* registered, empty */
WEFT_HIDDEN void weft__mcache_flush(struct mcache *c);       /* give every cached object back */
WEFT_HIDDEN void weft__mcache_destroy(struct mcache *c);     /* flush, fold stats, pool it */
WEFT_HIDDEN void *weft__mcache_refill_alloc(struct mcache *c, unsigned cls);
WEFT_HIDDEN void weft__mcache_free_slow(struct mcache *c, void *p, unsigned cls);
WEFT_HIDDEN struct mcache *weft__mcache_thread(void);        /* create on first use, or NULL */
/* The scheduler: this thread now allocates from c (a P's cache), or from its own
 * thread cache when c is NULL (the thread dropped its P). */
WEFT_HIDDEN void weft__mcache_use(struct mcache *c);
WEFT_HIDDEN void weft__mcache_stats(uint64_t *nmalloc, uint64_t *nfree); /* per class, all caches */

/* ---- mcentral (mem/mcentral.c) -------------------------------------------------- */
WEFT_HIDDEN unsigned weft__mcentral_batch(unsigned cls);    /* objects per batch: 2..128 */
/* Hand out up to `want` objects as a NULL-terminated list; the count (>= 1), or 0 on OOM. */
WEFT_HIDDEN unsigned weft__mcentral_get(unsigned cls, unsigned want, void **head);
/* Take back a list of n objects (NULL-terminated). */
WEFT_HIDDEN void weft__mcentral_put(unsigned cls, void *head, unsigned n);
WEFT_HIDDEN void *weft__mcentral_alloc_one(unsigned cls);    /* direct path (no cache) */
WEFT_HIDDEN void weft__mcentral_free_one(struct mspan *s, void *p, const char *fn);
WEFT_HIDDEN void weft__mcentral_drain(void);                 /* transfer caches -> spans */
WEFT_HIDDEN void weft__mcentral_stats(uint64_t *nmalloc, uint64_t *nfree);
WEFT_HIDDEN void weft__mcentral_lock_all(void);
WEFT_HIDDEN void weft__mcentral_unlock_all(int child);

/* ---- mheap (mem/mheap.c) -------------------------------------------------------- */
WEFT_HIDDEN struct mspan *weft__mheap_alloc(size_t npages, size_t align_pages, int state,
                                           unsigned cls);
WEFT_HIDDEN void weft__mheap_free(struct mspan *s);
WEFT_HIDDEN void weft__mheap_free_released(struct mspan *s, size_t released_pages);
WEFT_HIDDEN int weft__mheap_grow_inplace(struct mspan *s, size_t npages);   /* large s */
WEFT_HIDDEN void weft__mheap_shrink(struct mspan *s, size_t npages);        /* large s */
WEFT_HIDDEN void weft__mheap_scavenge_all(void);
/* The allocator's outer calls (no cache half-updated on this thread): start the
 * background scavenger if a free deep inside asked for it (mheap.c). */
WEFT_HIDDEN void weft__mheap_scav_kick_slow(void);
WEFT_HIDDEN extern _Atomic int weft__mheap_scav_pending;
static inline void weft__mheap_scav_kick(void)
{
    /* relaxed: a stale 0 only delays the start to the next outer call */
    if (WEFT_UNLIKELY(atomic_load_explicit(&weft__mheap_scav_pending, RLX)))
        weft__mheap_scav_kick_slow();
}
WEFT_HIDDEN void weft__mheap_lock_fork(void);
WEFT_HIDDEN void weft__mheap_unlock_fork(int child);
struct heap_stats { uint64_t sys, released, inuse, large_alloc, large_nmalloc, large_nfree; };
WEFT_HIDDEN void weft__mheap_stats(struct heap_stats *out);

/* ---- os (mem/os.c) -------------------------------------------------------------- */
WEFT_HIDDEN void *weft__os_reserve(size_t size, size_t align, uintptr_t hint);
WEFT_HIDDEN void *weft__os_alloc(size_t size);               /* metadata: zeroed, never freed */
WEFT_HIDDEN void weft__os_release(void *p, size_t size);     /* MADV_DONTNEED */
WEFT_HIDDEN void weft__os_hugepage(void *p, size_t size, bool on);  /* MADV_(NO)HUGEPAGE */
WEFT_HIDDEN void weft__os_unreserve(void *p, size_t size);   /* munmap: never handed out */
/* Move the page frames of [from, from + size) to `to` (page aligned, both ours), without
 * copying; `from` stays mapped and reads as zero. 0, or -1 (then nothing moved). */
WEFT_HIDDEN int weft__os_move(void *from, void *to, size_t size);

/* ---- malloc (mem/malloc.c) ------------------------------------------------------ */
WEFT_HIDDEN extern _Atomic uint64_t weft__mem_stack_inuse;  /* bytes, kept by sched/ */

/* ---- init (mem/init.c) ---------------------------------------------------------- */
WEFT_HIDDEN void weft__mem_init_slow(void);
WEFT_HIDDEN extern _Atomic int weft__mem_ready;
static inline void weft__mem_init(void)
{
    /* acquire: pairs with the release store at the end of weft__mem_init_slow */
    if (WEFT_UNLIKELY(!atomic_load_explicit(&weft__mem_ready, ACQ)))
        weft__mem_init_slow();
}

/* ---- misuse reports (mem/report.c) ---------------------------------------------- */
/* Abort: "<fn>(<p>): <why>". */
WEFT_HIDDEN WEFT_NORETURN WEFT_COLD void weft__mem_bad_free(const char *fn, const void *p,
                                                          const char *why);
/* WEFT_DEBUG=allocfree: the byte freed objects are filled with (mem/mcentral.c) */
#define WEFT_POISON 0xdf

#endif
