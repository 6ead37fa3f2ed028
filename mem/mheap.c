/*
 * mem/mheap.c -- the page heap: arenas, spans, the page map, the scavenger.
 *
 * Address space comes from the OS in 64 MiB-aligned arenas (more for one huge
 * object), each with a header (struct arena) mapped beside it and entered in
 * weft__mheap_arena_map; the page class map (mem/pagemap.c) is made writable over it.
 * Arenas are carved into spans: runs of 8 KiB pages that are free, hold small
 * objects of one class, or one large object.
 *
 * Free spans live in bins by page count (exact bins below HEAP_BINS pages, one
 * best-fit list above) and, while some of their pages may be resident ("dirty"), on the
 * dirty list in the order they were freed. Neighbouring free spans always coalesce,
 * so two free spans are never adjacent.
 *
 * Large requests (8 pages and more) look for a resident free span first
 * (find_dirty_fit), so that churning large objects reuses memory without faults.
 *
 * A large span can change size in place (weft_realloc): grow into the free span that
 * follows it -- at the heap's top, after reserving the next arena at h.hint, which
 * grow() merges into that free span -- or give its tail back. A large object that moves
 * instead is freed with weft__mheap_free_released when the kernel moved its frames away
 * (mremap, mem/os.c): its pages then count as released, and read as zero.
 *
 * Residency is tracked per page: arena->clean has a bit per page, set while the page
 * is known not to be resident (fresh from the OS, or released and not handed out
 * since). A free span counts its pages whose bit is 0 (ndirty); it is on the dirty
 * list, in the order it was (last) freed, while ndirty > 0. Merging adds the counts,
 * splitting recounts the bits, so a merged span of released and resident parts never
 * sends released pages to madvise again, and calloc skips the memset exactly when
 * every page of the span is clean (needzero = any bit 0).
 *
 * Scavenger (runs in weft__mheap_free, under h.lock; sysmon does not pace it yet).
 * Invariant, true whenever h.lock is free: dirty free pages <= retain, where
 *     retain = max(HEAP_RETAIN_MIN = 64 MiB, in-use pages / 4).
 * A free that breaks it releases the oldest dirty spans (MADV_DONTNEED, only the runs
 * of dirty pages) until dirty <= 3/4 retain, so that a burst that is freed gives its
 * pages back at once, without any call, and a steady churn of large objects whose
 * free memory stays under the budget reuses resident pages without faults. The floor
 * is high on purpose (see Rejected). weft_mem_release() scavenges everything. The
 * budget counts whole freed spans as dirty even when the program touched few of their
 * pages; it may overestimate RSS, never underestimate it.
 *
 * Locking: h.lock guards everything here, the page class map's writes included
 * (mem/pagemap.c); it is the last lock in the order (mcentral locks may be held when
 * it is taken). Invariants are stated in mem/mem.h.
 * Callers: mcentral.c (small spans), malloc.c (large objects, realloc, release,
 * stats, span_of), mcache.c (the fork handlers), any thread. span_of takes no lock:
 * the free paths call it on any pointer (span structs and arena records are never
 * unmapped).
 *
 * Rejected: a lower retention floor. On the allocator benchmark's `large` workload (16
 * slots of 64 KiB..4 MiB), a floor of 32 MiB cut peak RSS from 64 to 16 MiB but took
 * 8x the page faults and 10x the time (faults cost 20..300 us on the VMs this runs
 * on); 48 MiB took 3.5x the faults for 58 MiB.
 */
#include <string.h>
#include "mem/mem.h"

#define HEAP_BINS 128
#define HEAP_RETAIN_MIN ((uint64_t)64 << 20)
#define DIRTY_FIRST_PAGES 8
#define PAGE WEFT_PAGE_SIZE

struct arena *weft__mheap_arena_map[WEFT_ARENA_MAP_LEN];

static struct {
    weft_lock lock;
    struct mspan *bins[HEAP_BINS];       /* free spans of exactly i pages */
    uint64_t binmask[HEAP_BINS / 64];
    struct mspan *large;                 /* free spans of >= HEAP_BINS pages */
    struct mspan *dirty_head, *dirty_tail;
    uint64_t dirty_pages, released_pages, inuse_pages, sys;
    uint64_t large_alloc, large_nmalloc, large_nfree;
    uintptr_t hint;                      /* where the next arena would be contiguous */
    struct mspan *span_pool;             /* dead span structs */
    void *bits_pool;                     /* free debug bitmaps (WEFT_DEBUG=allocfree) */
    char *meta;                          /* metadata chunk being carved */
    size_t meta_left;
} h = { .lock = WEFT_LOCK_INIT };

/* ---- span structs: a fixalloc (Go) -- never unmapped ---------------------- */
static struct mspan *span_new(void)
{
    struct mspan *s = h.span_pool;
    if (s != NULL) {
        h.span_pool = s->next;
    } else {
        if (h.meta_left < sizeof *s) {
            h.meta = weft__os_alloc(1 << 16);
            if (h.meta == NULL)
                return NULL;
            h.meta_left = 1 << 16;
        }
        s = (struct mspan *)h.meta;
        h.meta += sizeof *s;
        h.meta_left -= sizeof *s;
    }
    memset(s, 0, sizeof *s);
    return s;
}

static void span_dispose(struct mspan *s)
{
    s->state = SPAN_DEAD;
    s->next = h.span_pool;
    h.span_pool = s;
}

/* A 1024-bit bitmap, enough for any small span (at most 1024 objects). */
#define BITS_BYTES 128
static _Atomic uint64_t *bits_new(void)
{
    void *b = h.bits_pool;
    if (b != NULL) {
        h.bits_pool = *(void **)b;
    } else {
        if (h.meta_left < BITS_BYTES) {
            h.meta = weft__os_alloc(1 << 16);
            if (h.meta == NULL)
                return NULL;
            h.meta_left = 1 << 16;
        }
        b = h.meta;
        h.meta += BITS_BYTES;
        h.meta_left -= BITS_BYTES;
    }
    memset(b, 0, BITS_BYTES);
    return b;
}

static void bits_dispose(_Atomic uint64_t *b)
{
    *(void **)b = h.bits_pool;
    h.bits_pool = (void *)b;
}

static inline uintptr_t span_end(const struct mspan *s)
{
    return s->base + (uintptr_t)s->npages * PAGE;
}

static void map_set(uintptr_t a, struct mspan *s)
{
    weft__mheap_arena_of(a)->spans[weft__mheap_page_index(a)] = s;
}

/* first and last page -> s (enough for free and large spans) */
static void map_ends(struct mspan *s)
{
    map_set(s->base, s);
    map_set(span_end(s) - PAGE, s);
}

struct mspan *weft__mheap_span_of(uintptr_t a)
{
    struct arena *ar = weft__mheap_arena_of(a);
    if (ar == NULL)
        return NULL;
    struct mspan *s = ar->spans[weft__mheap_page_index(a)];
    if (s == NULL || a < s->base || a >= span_end(s))
        return NULL;
    if (s->state != SPAN_SMALL && s->state != SPAN_LARGE)
        return NULL;
    return s;
}

/* ---- page residency: arena->clean ----------------------------------------- *
 * Bit set: the page reads as zero and is not resident (fresh from the OS, or released
 * since it was last handed out). Allocation clears the bits of the pages it hands out;
 * the scavenger sets them again. A free span knows how many of its bits are 0
 * (s->ndirty), so the scavenger madvises only those pages, however often free spans
 * merge. Ranges may cross arenas: each helper works arena by arena. */

static inline uint64_t word_mask(size_t b, size_t m)     /* bits b .. b+m-1, m >= 1 */
{
    return (m == 64 ? ~(uint64_t)0 : (((uint64_t)1 << m) - 1)) << b;
}

/* One arena's piece of [a, a + n pages): its bitmap, first index, page count. */
static size_t piece(uintptr_t a, size_t n, uint64_t **w, size_t *i)
{
    *w = weft__mheap_arena_of(a)->clean;
    *i = weft__mheap_page_index(a);
    return n < WEFT_ARENA_PAGES - *i ? n : WEFT_ARENA_PAGES - *i;
}

enum { BITS_COUNT, BITS_SET, BITS_CLEAR };

/* On the clean bits of [a, a + n pages): count the set ones, set or clear them. */
static size_t bits_apply(uintptr_t a, size_t n, int op)
{
    size_t set = 0;
    while (n > 0) {
        uint64_t *w;
        size_t i, k = piece(a, n, &w, &i);
        a += k * PAGE;
        n -= k;
        while (k > 0) {
            size_t b = i % 64, m = 64 - b < k ? 64 - b : k;
            uint64_t mask = word_mask(b, m);
            if (op == BITS_COUNT)
                set += (size_t)__builtin_popcountll(w[i / 64] & mask);
            else if (op == BITS_SET)
                w[i / 64] |= mask;
            else
                w[i / 64] &= ~mask;
            i += m;
            k -= m;
        }
    }
    return set;
}

/* Pages of [a, a + n pages) that may be resident (clean bit 0). */
static size_t count_dirty(uintptr_t a, size_t n)
{
    return n - bits_apply(a, n, BITS_COUNT);
}

/* Set (v = 1) or clear the clean bits of [a, a + n pages). */
static void mark(uintptr_t a, size_t n, int v)
{
    bits_apply(a, n, v ? BITS_SET : BITS_CLEAR);
}

/* First index in [i, end) whose bit equals v, or end. */
static size_t next_bit(const uint64_t *w, size_t i, size_t end, int v)
{
    while (i < end) {
        size_t b = i % 64;
        uint64_t x = (v ? w[i / 64] : ~w[i / 64]) & (~(uint64_t)0 << b);
        if (x != 0) {
            size_t j = i - b + (size_t)__builtin_ctzll(x);
            return j < end ? j : end;
        }
        i += 64 - b;
    }
    return end;
}

/* Give the dirty pages of [a, a + n pages) back to the OS, one madvise per run. */
static void release_dirty(uintptr_t a, size_t n)
{
    while (n > 0) {
        uint64_t *w;
        size_t i, k = piece(a, n, &w, &i);
        uintptr_t base = a - i * PAGE;
        for (size_t j = next_bit(w, i, i + k, 0); j < i + k; ) {
            size_t e = next_bit(w, j, i + k, 1);
            weft__os_release((void *)(base + j * PAGE), (e - j) * PAGE);
            j = next_bit(w, e, i + k, 0);
        }
        mark(a, k, 1);
        a += k * PAGE;
        n -= k;
    }
}

/* ---- free structures ------------------------------------------------------ */
static void dlist_push(struct mspan **head, struct mspan *s, int at_tail)
{
    s->prev = NULL;
    s->next = *head;
    if (at_tail && *head != NULL) {     /* bins are short; tail insert walks */
        struct mspan *t = *head;
        while (t->next != NULL)
            t = t->next;
        t->next = s;
        s->prev = t;
        s->next = NULL;
        return;
    }
    if (*head != NULL)
        (*head)->prev = s;
    *head = s;
}

static void dlist_remove(struct mspan **head, struct mspan *s)
{
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        *head = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
}

static void free_insert(struct mspan *s)
{
    s->state = SPAN_FREE;
    s->cls = 0;
    map_ends(s);
    /* dirty spans at the head of their bin: reused first, no page faults */
    if (s->npages < HEAP_BINS) {
        dlist_push(&h.bins[s->npages], s, s->ndirty == 0);
        h.binmask[s->npages / 64] |= (uint64_t)1 << (s->npages % 64);
    } else {
        dlist_push(&h.large, s, 0);
    }
    h.released_pages += s->npages - s->ndirty;
    if (s->ndirty > 0) {
        h.dirty_pages += s->ndirty;
        s->dnext = NULL;
        s->dprev = h.dirty_tail;
        if (h.dirty_tail != NULL)
            h.dirty_tail->dnext = s;
        else
            h.dirty_head = s;
        h.dirty_tail = s;
    }
}

static void free_remove(struct mspan *s)
{
    if (s->npages < HEAP_BINS) {
        dlist_remove(&h.bins[s->npages], s);
        if (h.bins[s->npages] == NULL)
            h.binmask[s->npages / 64] &= ~((uint64_t)1 << (s->npages % 64));
    } else {
        dlist_remove(&h.large, s);
    }
    h.released_pages -= s->npages - s->ndirty;
    if (s->ndirty > 0) {
        h.dirty_pages -= s->ndirty;
        if (s->dprev != NULL)
            s->dprev->dnext = s->dnext;
        else
            h.dirty_head = s->dnext;
        if (s->dnext != NULL)
            s->dnext->dprev = s->dprev;
        else
            h.dirty_tail = s->dprev;
        s->dnext = s->dprev = NULL;
    }
}

/* The free span that ends right before a / starts at a, if any. */
static struct mspan *free_neighbour(uintptr_t a, int before)
{
    uintptr_t page = before ? a - PAGE : a;
    struct arena *ar = weft__mheap_arena_of(page);
    if (ar == NULL)
        return NULL;
    struct mspan *t = ar->spans[weft__mheap_page_index(page)];
    if (t == NULL || t->state != SPAN_FREE)
        return NULL;
    if (before ? span_end(t) != a : t->base != a)
        return NULL;
    return t;
}

/* s is not in the free structures yet; merge it with free neighbours, insert. */
static void free_coalesce_insert(struct mspan *s)
{
    struct mspan *t;
    while ((t = free_neighbour(s->base, 1)) != NULL || (t = free_neighbour(span_end(s), 0)) != NULL) {
        free_remove(t);
        if (t->base < s->base)
            s->base = t->base;
        s->npages += t->npages;
        s->ndirty += t->ndirty;
        span_dispose(t);
    }
    free_insert(s);
}

static void scavenge_locked(uint64_t target_pages)
{
    while (h.dirty_head != NULL && h.dirty_pages > target_pages) {
        struct mspan *s = h.dirty_head;
        free_remove(s);
        release_dirty(s->base, s->npages);
        s->ndirty = 0;
        free_insert(s);
    }
}

static uint64_t retain_pages(void)
{
    uint64_t r = h.inuse_pages / 4;
    uint64_t min = HEAP_RETAIN_MIN / PAGE;
    return r > min ? r : min;
}

/* ---- growth --------------------------------------------------------------- */
/* Reserve arenas for at least npages more pages and add them as one free span. On
 * failure the reservation goes back (kept, it would leak 64 MiB or more each time). */
static int grow(size_t npages)
{
    size_t size = ((npages * PAGE) + WEFT_ARENA_SIZE - 1) & ~(WEFT_ARENA_SIZE - 1);
    if (size == 0 || size / PAGE < npages)
        return -1;
    char *p = weft__os_reserve(size, WEFT_ARENA_SIZE, h.hint);
    if (p == NULL)
        return -1;
    size_t entered = 0;
    struct mspan *s = NULL;
    if (((uintptr_t)p + size) >> WEFT_ADDR_BITS) {      /* outside the page map */
        weft__printf("mheap: the OS returned memory above 2^%d; giving it back", WEFT_ADDR_BITS);
        goto fail;
    }
    if (weft__pagemap_grow((uintptr_t)p, size) != 0)
        goto fail;
    for (; entered < size; entered += WEFT_ARENA_SIZE) {
        struct arena *ar = weft__os_alloc(sizeof *ar);
        if (ar == NULL)
            goto fail;
        weft__mheap_arena_map[((uintptr_t)p + entered) >> WEFT_ARENA_SHIFT] = ar;
    }
    if ((s = span_new()) == NULL)
        goto fail;
    h.sys += size;
    h.hint = (uintptr_t)p + size;
    s->base = (uintptr_t)p;
    s->npages = (uint32_t)(size / PAGE);
    mark(s->base, s->npages, 1);  /* fresh: zero and not resident */
    s->ndirty = 0;
    free_coalesce_insert(s);
    return 0;
fail:
    /* The arena records stay mapped (a free of a foreign pointer may be reading one
     * right now); they leave the map, so that the range reads as not ours again. */
    for (size_t off = 0; off < entered; off += WEFT_ARENA_SIZE)
        weft__mheap_arena_map[((uintptr_t)p + off) >> WEFT_ARENA_SHIFT] = NULL;
    weft__os_unreserve(p, size);
    return -1;
}

/* Smallest free span with at least n pages, or NULL. */
static struct mspan *find_fit(size_t n)
{
    if (n < HEAP_BINS) {
        for (size_t w = n / 64; w < HEAP_BINS / 64; w++) {
            uint64_t m = h.binmask[w];
            if (w == n / 64)
                m &= ~(uint64_t)0 << (n % 64);
            if (m != 0)
                return h.bins[w * 64 + (size_t)__builtin_ctzll(m)];
        }
    }
    struct mspan *best = NULL;
    for (struct mspan *s = h.large; s != NULL; s = s->next)
        if (s->npages >= n && (best == NULL || s->npages < best->npages))
            best = s;
    return best;
}

/* Large requests prefer resident (dirty) free spans, even larger ones, to fresh or
 * released pages that would fault in again: the best fit among the most recently
 * freed dirty spans (a bounded look). */
static struct mspan *find_dirty_fit(size_t n)
{
    struct mspan *best = NULL;
    int look = 64;
    for (struct mspan *s = h.dirty_tail; s != NULL && look > 0; s = s->dprev, look--)
        if (s->npages >= n && (best == NULL || s->npages < best->npages))
            best = s;
    return best;
}

/* Split the first n pages off free span s (already removed); the rest goes back. */
static int split_tail(struct mspan *s, size_t n)
{
    if (s->npages == n)
        return 0;
    struct mspan *r = span_new();
    if (r == NULL)
        return -1;
    r->base = s->base + n * PAGE;
    r->npages = s->npages - (uint32_t)n;
    r->ndirty = (uint32_t)count_dirty(r->base, r->npages);
    s->ndirty -= r->ndirty;
    s->npages = (uint32_t)n;
    free_insert(r);          /* its neighbours are s (in use) and a non-free span */
    return 0;
}

struct mspan *weft__mheap_alloc(size_t npages, size_t align_pages, int state, unsigned cls)
{
    if (npages == 0 || npages > ((size_t)1 << 31) / 2)
        return NULL;
    size_t want = npages + (align_pages > 1 ? align_pages - 1 : 0);
    weft__lock(&h.lock);
    struct mspan *s = want >= DIRTY_FIRST_PAGES ? find_dirty_fit(want) : NULL;
    if (s == NULL)
        s = find_fit(want);
    if (s == NULL) {
        if (grow(want) != 0 || (s = find_fit(want)) == NULL) {
            weft__unlock(&h.lock);
            return NULL;
        }
    }
    free_remove(s);
    if (align_pages > 1) {
        uintptr_t align = align_pages * PAGE;
        uintptr_t start = (s->base + align - 1) & ~(align - 1);
        if (start != s->base) {
            struct mspan *lead = span_new();
            if (lead == NULL) {
                free_insert(s);
                weft__unlock(&h.lock);
                return NULL;
            }
            lead->base = s->base;
            lead->npages = (uint32_t)((start - s->base) / PAGE);
            lead->ndirty = (uint32_t)count_dirty(lead->base, lead->npages);
            s->ndirty -= lead->ndirty;
            s->base = start;
            s->npages -= lead->npages;
            free_insert(lead);
        }
    }
    if (split_tail(s, npages) != 0) {
        free_coalesce_insert(s);
        weft__unlock(&h.lock);
        return NULL;
    }
    s->needzero = s->ndirty > 0;
    mark(s->base, s->npages, 0);      /* the owner may touch every page now */
    s->ndirty = s->npages;
    s->state = (uint8_t)state;
    s->cls = (uint8_t)cls;
    h.inuse_pages += npages;
    if (state == SPAN_SMALL) {
        if (weft__debug.allocfree && (s->allocbits = bits_new()) == NULL) {
            free_coalesce_insert(s);
            h.inuse_pages -= npages;
            weft__unlock(&h.lock);
            return NULL;
        }
        for (uintptr_t a = s->base; a < span_end(s); a += PAGE) {
            weft__mheap_arena_of(a)->spans[weft__mheap_page_index(a)] = s;
            weft__pagemap_set(a, cls);
        }
    } else {
        map_ends(s);
        h.large_alloc += npages * PAGE;
        h.large_nmalloc++;
    }
    weft__unlock(&h.lock);
    return s;
}

void weft__mheap_free(struct mspan *s)
{
    weft__mheap_free_released(s, 0);
}

/* Free s whose first `released` pages are known not resident (their frames were moved
 * away by weft__os_move): they count as released, not dirty. */
void weft__mheap_free_released(struct mspan *s, size_t released)
{
    weft__lock(&h.lock);
    h.inuse_pages -= s->npages;
    if (s->state == SPAN_SMALL) {
        for (uintptr_t a = s->base; a < span_end(s); a += PAGE)
            weft__pagemap_set(a, 0);
    } else {
        h.large_alloc -= (uint64_t)s->npages * PAGE;
        h.large_nfree++;
    }
    s->ndirty = s->npages;            /* its clean bits are all 0 since the allocation */
    if (released > 0) {
        released = released < s->npages ? released : s->npages;
        mark(s->base, released, 1);
        s->ndirty -= (uint32_t)released;
    }
    if (s->allocbits != NULL)
        bits_dispose(s->allocbits);
    s->allocbits = NULL;
    free_coalesce_insert(s);
    uint64_t retain = retain_pages();
    if (h.dirty_pages > retain)
        scavenge_locked(retain - retain / 4);
    weft__unlock(&h.lock);
}

/* ---- resizing a large object in place (weft_realloc) ------------------------ */
/* Grow large span s to npages with the free pages that follow it, reserving the next
 * arena first when s (or the free span after it) ends the heap. 0, or -1 when the
 * pages after s are not free (the caller moves the object). */
int weft__mheap_grow_inplace(struct mspan *s, size_t npages)
{
    if (npages <= s->npages)
        return 0;
    if (npages > ((size_t)1 << 31) / 2)
        return -1;
    size_t need = npages - s->npages;
    weft__lock(&h.lock);
    struct mspan *t = free_neighbour(span_end(s), 0);
    uintptr_t end = t != NULL ? span_end(t) : span_end(s);
    size_t have = t != NULL ? t->npages : 0;
    if (have < need && end == h.hint) {
        /* the heap's top: a contiguous reservation extends it (grow merges it with t) */
        if (grow(need - have) == 0)
            t = free_neighbour(span_end(s), 0);
    }
    if (t == NULL || t->npages < need) {
        weft__unlock(&h.lock);
        return -1;
    }
    free_remove(t);
    if (split_tail(t, need) != 0) {
        free_insert(t);
        weft__unlock(&h.lock);
        return -1;
    }
    mark(t->base, need, 0);           /* the owner may touch every page now */
    span_dispose(t);
    s->npages += (uint32_t)need;
    s->ndirty = s->npages;
    map_ends(s);
    h.inuse_pages += need;
    h.large_alloc += need * PAGE;
    weft__unlock(&h.lock);
    return 0;
}

/* Shrink large span s to npages (>= 1), its tail back to the free pages. */
void weft__mheap_shrink(struct mspan *s, size_t npages)
{
    if (npages == 0 || npages >= s->npages)
        return;
    weft__lock(&h.lock);
    struct mspan *r = span_new();
    if (r == NULL) {                  /* no metadata: keep the pages with the object */
        weft__unlock(&h.lock);
        return;
    }
    size_t cut = s->npages - npages;
    r->base = s->base + npages * PAGE;
    r->npages = (uint32_t)cut;
    r->ndirty = (uint32_t)cut;        /* in use until now: clean bits all 0 */
    s->npages = (uint32_t)npages;
    s->ndirty = s->npages;
    map_ends(s);
    h.inuse_pages -= cut;
    h.large_alloc -= cut * PAGE;
    free_coalesce_insert(r);
    uint64_t retain = retain_pages();
    if (h.dirty_pages > retain)
        scavenge_locked(retain - retain / 4);
    weft__unlock(&h.lock);
}

void weft__mheap_scavenge_all(void)
{
    weft__lock(&h.lock);
    scavenge_locked(0);
    weft__unlock(&h.lock);
}

void weft__mheap_stats(struct heap_stats *out)
{
    weft__lock(&h.lock);
    out->sys = h.sys;
    out->released = h.released_pages * PAGE;
    out->inuse = h.inuse_pages * PAGE;
    out->large_alloc = h.large_alloc;
    out->large_nmalloc = h.large_nmalloc;
    out->large_nfree = h.large_nfree;
    weft__unlock(&h.lock);
}

void weft__mheap_lock_fork(void)
{
    weft__lock(&h.lock);
}

void weft__mheap_unlock_fork(int child)
{
    if (child)
        weft__lock_reinit(&h.lock);
    else
        weft__unlock(&h.lock);
}
