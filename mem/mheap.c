/*
 * mem/mheap.c -- the page heap: arenas, spans, the page map, the scavenger.
 *
 * Address space comes from the OS in 64 MiB-aligned arenas (more for one huge
 * object), each with a header (struct arena) mapped beside it and entered in
 * weft__mheap_arena_map; the page class map (mem/pagemap.c) is made writable over it.
 * Arenas are carved into spans: runs of 8 KiB pages that are free, hold small
 * objects of one class, or one large object.
 *
 * Free spans live in exact bins below HEAP_BINS pages and in two size-ordered treaps
 * above (resident and clean; see "free structures"), and, while some of their pages may
 * be resident ("dirty"), on the dirty list in the order they were freed. Neighbouring
 * free spans always coalesce, so two free spans are never adjacent.
 *
 * Large requests (DIRTY_FIRST_PAGES and more) take the best-fitting free span with
 * resident pages first, however large, and from it the end that holds more resident
 * pages; only when none fits do they take clean (released or fresh) pages, and only
 * when nothing fits does the heap grow. So churning large objects reuses memory
 * without page faults. The 2 MiB-aligned interior of a large object is madvised for
 * transparent huge pages (see "huge pages").
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
 * splitting recounts the bits, and calloc skips the memset exactly when every page of
 * the span is clean (needzero = any bit 0).
 *
 * Scavenger: a background thread, paced (see "the scavenger" below). Frees never
 * release memory themselves; they wake the thread when the resident free pages pass
 * the slack over what is in use. weft_mem_release() scavenges everything, at once.
 *
 * Locking: h.lock guards everything here, the page class map's writes included
 * (mem/pagemap.c); it is the last lock in the order (mcentral locks may be held when
 * it is taken). Invariants are stated in mem/mem.h.
 * Callers: mcentral.c (small spans), malloc.c (large objects, realloc, release,
 * stats, span_of), mcache.c (the fork handlers), any thread. span_of takes no lock:
 * the free paths call it on any pointer (span structs and arena records are never
 * unmapped).
 *
 * Tuning (malloc_bench bigbuf: 20 buffers of 5..25 MiB churned, 2-core VM, against
 * tcmalloc's time and glibc's peak RSS): a slack of max(32 MiB, peak / 16) gave
 * 1.1x tcmalloc's time at 0.96x glibc's RSS; max(64 MiB, peak / 8) 0.7-0.9x the time
 * at 1.02-1.04x the RSS; max(128 MiB, ...) 0.25x the time at 1.09x (no release at
 * all). max(48 MiB, peak / 8) is at 1.0-1.1x and 0.98-1.0x. Every point of that curve
 * is the cost of page faults (refaults after a release) against resident pages.
 * Rejected: releasing inside the free that broke the budget (until 2026-12: a free of
 * one buffer could take milliseconds of madvise, and a churn of 5..25 MiB buffers
 * released pages that the next allocation faulted in again: 10x tcmalloc's time on
 * that pattern); releasing the smallest resident spans first instead of the oldest
 * (more faults, same RSS, on bigbuf).
 */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include "mem/mem.h"

#define HEAP_BINS 128
#define HEAP_RETAIN_MIN ((uint64_t)48 << 20)
#define DIRTY_FIRST_PAGES 8
#define PAGE WEFT_PAGE_SIZE

struct arena *weft__mheap_arena_map[WEFT_ARENA_MAP_LEN];

static struct {
    weft_lock lock;
    struct mspan *bins[HEAP_BINS];       /* free spans of exactly i pages */
    struct mspan *bin_tail[HEAP_BINS];
    uint64_t binmask[HEAP_BINS / 64];    /* bins[i] != NULL */
    uint64_t dirtymask[HEAP_BINS / 64];  /* bins[i] has resident pages at its head */
    struct mspan *tree[2];               /* free spans of >= HEAP_BINS pages: [0] clean,
                                          * [1] with resident pages; by (npages, base) */
    struct mspan *dirty_head, *dirty_tail;
    uint64_t dirty_pages, released_pages, inuse_pages, sys;
    uint64_t scav_pages;                 /* in SPAN_SCAV spans (being released) */
    uint64_t peak_cur, peak_prev;        /* most in-use pages this window, the last one */
    int64_t window_start;                /* ns (CLOCK_MONOTONIC) */
    bool scav_idle;                      /* the background scavenger waits for a wake */
    uint64_t large_alloc, large_nmalloc, large_nfree;
    uintptr_t hint;                      /* where the next arena would be contiguous */
    struct mspan *span_pool;             /* dead span structs */
    void *bits_pool;                     /* free debug bitmaps (WEFT_DEBUG=allocfree) */
    char *meta;                          /* metadata chunk being carved */
    size_t meta_left;
} h = { .lock = WEFT_LOCK_INIT, .scav_idle = true };

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

/* The number of pages of [a, a + n pages) before the first that may be resident
 * (clean bit 0); n when there is none. */
static size_t clean_prefix(uintptr_t a, size_t n)
{
    size_t done = 0;
    while (done < n) {
        uint64_t *w;
        size_t i, k = piece(a, n - done, &w, &i);
        for (size_t j = i; j < i + k; ) {
            size_t b = j % 64;
            uint64_t x = ~w[j / 64] & (~(uint64_t)0 << b);
            if (x != 0) {
                size_t at = j - b + (size_t)__builtin_ctzll(x);
                if (at < i + k)
                    return done + (at - i);
                break;
            }
            j += 64 - b;
        }
        done += k;
        a += k * PAGE;
    }
    return n;
}

/* ---- free structures ------------------------------------------------------ *
 * Spans below HEAP_BINS pages: an exact bin per page count, a doubly linked list with
 * the spans that have resident pages at its head and the clean ones at its tail, and
 * two bitmaps, binmask (bin not empty) and dirtymask (the bin's head has resident
 * pages), so that the smallest fitting bin -- or the smallest fitting bin with resident
 * pages -- is a few word scans away. Larger spans: two treaps ordered by (npages, base),
 * one of spans with resident pages (ndirty > 0), one of clean spans; the best fit is
 * the leftmost node with enough pages (a lower bound: O(log n), lowest address first
 * among equals, which keeps the heap's low end dense). A treap node's priority is a
 * hash of its base, so that no state is kept for balance.                            */
static void bin_mask_update(size_t n)
{
    uint64_t bit = (uint64_t)1 << (n % 64);
    struct mspan *head = h.bins[n];
    if (head != NULL)
        h.binmask[n / 64] |= bit;
    else
        h.binmask[n / 64] &= ~bit;
    if (head != NULL && head->ndirty > 0)
        h.dirtymask[n / 64] |= bit;
    else
        h.dirtymask[n / 64] &= ~bit;
}

static void bin_push(struct mspan *s)
{
    size_t n = s->npages;
    if (s->ndirty > 0 || h.bins[n] == NULL) {             /* at the head */
        s->prev = NULL;
        s->next = h.bins[n];
        if (s->next != NULL)
            s->next->prev = s;
        else
            h.bin_tail[n] = s;
        h.bins[n] = s;
    } else {                                              /* clean: at the tail */
        s->next = NULL;
        s->prev = h.bin_tail[n];
        s->prev->next = s;
        h.bin_tail[n] = s;
    }
    bin_mask_update(n);
}

static void bin_remove(struct mspan *s)
{
    size_t n = s->npages;
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        h.bins[n] = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    else
        h.bin_tail[n] = s->prev;
    s->next = s->prev = NULL;
    bin_mask_update(n);
}

#define T_LEFT(s)  ((s)->prev)
#define T_RIGHT(s) ((s)->next)

static inline bool tkey_less(const struct mspan *a, const struct mspan *b)
{
    return a->npages != b->npages ? a->npages < b->npages : a->base < b->base;
}

static inline uint64_t tprio(const struct mspan *s)
{
    uint64_t x = (s->base >> WEFT_PAGE_SHIFT) * 0x9e3779b97f4a7c15ull;
    return x ^ (x >> 29);
}

/* The child of t on the left (right = 0) or the right (1). */
static inline struct mspan **kid(struct mspan *t, int right)
{
    return right ? &T_RIGHT(t) : &T_LEFT(t);
}

static struct mspan *treap_insert(struct mspan *t, struct mspan *s)
{
    if (t == NULL) {
        T_LEFT(s) = T_RIGHT(s) = NULL;
        return s;
    }
    int d = !tkey_less(s, t);
    struct mspan *c = *kid(t, d) = treap_insert(*kid(t, d), s);
    if (tprio(c) <= tprio(t))
        return t;
    *kid(t, d) = *kid(c, !d);                        /* rotate c up */
    *kid(c, !d) = t;
    return c;
}

/* The union of treaps a and b, every key of a below every key of b. */
static struct mspan *treap_join(struct mspan *a, struct mspan *b)
{
    if (a == NULL)
        return b;
    if (b == NULL)
        return a;
    if (tprio(a) > tprio(b)) {
        T_RIGHT(a) = treap_join(T_RIGHT(a), b);
        return a;
    }
    T_LEFT(b) = treap_join(a, T_LEFT(b));
    return b;
}

static struct mspan *treap_remove(struct mspan *t, struct mspan *s)
{
    if (t == s) {
        struct mspan *j = treap_join(T_LEFT(s), T_RIGHT(s));
        T_LEFT(s) = T_RIGHT(s) = NULL;
        return j;
    }
    if (t == NULL)
        weft__throw("mheap: a free span is missing from its tree");
    if (tkey_less(s, t))
        T_LEFT(t) = treap_remove(T_LEFT(t), s);
    else
        T_RIGHT(t) = treap_remove(T_RIGHT(t), s);
    return t;
}

/* The smallest span of the treap with at least n pages (the lowest address among
 * equals), or NULL. */
static struct mspan *treap_fit(struct mspan *t, size_t n)
{
    struct mspan *best = NULL;
    while (t != NULL) {
        if (t->npages >= n) {
            best = t;
            t = T_LEFT(t);
        } else {
            t = T_RIGHT(t);
        }
    }
    return best;
}

static void free_insert(struct mspan *s)
{
    s->state = SPAN_FREE;
    s->cls = 0;
    map_ends(s);
    if (s->npages < HEAP_BINS)
        bin_push(s);
    else
        h.tree[s->ndirty > 0] = treap_insert(h.tree[s->ndirty > 0], s);
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
    if (s->npages < HEAP_BINS)
        bin_remove(s);
    else
        h.tree[s->ndirty > 0] = treap_remove(h.tree[s->ndirty > 0], s);
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

/* The smallest free span with at least n pages, or NULL; with resident pages only
 * when dirty is set. Among bins, a bin's head is its most recently freed resident span
 * where it has one. */
static struct mspan *find_fit(size_t n, bool dirty)
{
    const uint64_t *mask = dirty ? h.dirtymask : h.binmask;
    if (n < HEAP_BINS) {
        for (size_t w = n / 64; w < HEAP_BINS / 64; w++) {
            uint64_t m = mask[w];
            if (w == n / 64)
                m &= ~(uint64_t)0 << (n % 64);
            if (m != 0)
                return h.bins[w * 64 + (size_t)__builtin_ctzll(m)];
        }
    }
    struct mspan *d = treap_fit(h.tree[1], n);
    if (dirty)
        return d;
    struct mspan *c = treap_fit(h.tree[0], n);
    return d == NULL || (c != NULL && c->npages < d->npages) ? c : d;
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
    /* count the bits of the smaller side: a small span cut off a large free one must
     * not cost a count over the whole heap */
    r->ndirty = (uint32_t)(r->npages <= n ? count_dirty(r->base, r->npages)
                                          : s->ndirty - count_dirty(s->base, n));
    s->ndirty -= r->ndirty;
    s->npages = (uint32_t)n;
    free_insert(r);          /* its neighbours are s (in use) and a non-free span */
    return 0;
}

/* The first n pages of free span s (already removed) go back as a free span of their
 * own; s keeps the rest. */
static int split_lead(struct mspan *s, size_t n)
{
    if (n == 0)
        return 0;
    struct mspan *lead = span_new();
    if (lead == NULL)
        return -1;
    lead->base = s->base;
    lead->npages = (uint32_t)n;
    size_t rest = s->npages - n;      /* count the bits of the smaller side */
    lead->ndirty = (uint32_t)(n <= rest ? count_dirty(s->base, n)
                                        : s->ndirty - count_dirty(s->base + n * PAGE, rest));
    s->ndirty -= lead->ndirty;
    s->base += n * PAGE;
    s->npages -= (uint32_t)n;
    free_insert(lead);       /* its neighbours are a non-free span and s (in use) */
    return 0;
}

static bool scav_want_locked(void);
static void scav_wake(void);

/* ---- huge pages for large objects ------------------------------------------- *
 * The 2 MiB-aligned interior of a large object is madvised MADV_HUGEPAGE the first
 * time an object covers it (arena->huge remembers it; the flag stays with the address
 * range): one fault per 2 MiB. On the VMs this runs on a 4 KiB fault costs 12-20 us,
 * so a fresh 16 MiB buffer took 57 ms to fault in, and 28 ms with huge pages (1.3 ms
 * when the kernel has freed huge pages at hand); MADV_DONTNEED of whole huge pages is
 * 10x cheaper too. A small span taken in a flagged chunk, and a release that ends
 * inside one, unflag that chunk (MADV_NOHUGEPAGE): huge pages there would make pages
 * resident that the clean bits count as released. */
#define HUGE ((uintptr_t)1 << WEFT_HUGE_SHIFT)

/* h.lock held. set: flag the huge chunks inside [base, end); clear: unflag every chunk
 * that [base, end) touches. Returns whether some flag changed, with the range to
 * madvise (after unlocking) in *lo, *hi. Two threads' madvise calls may land in the
 * other order than their flag changes: a chunk then keeps the other setting until
 * its next change (a cost in faults or RSS, never in correctness). */
static bool huge_mark(uintptr_t base, uintptr_t end, bool set, uintptr_t *lo, uintptr_t *hi)
{
    uintptr_t a = set ? (base + HUGE - 1) & ~(HUGE - 1) : base & ~(HUGE - 1);
    uintptr_t b = set ? end & ~(HUGE - 1) : (end + HUGE - 1) & ~(HUGE - 1);
    bool changed = false;
    for (uintptr_t c = a; c < b; c += HUGE) {
        struct arena *ar = weft__mheap_arena_of(c);
        uint32_t bit = (uint32_t)1 << ((c >> WEFT_HUGE_SHIFT) & ((WEFT_ARENA_SIZE >> WEFT_HUGE_SHIFT) - 1));
        if (!(ar->huge & bit) == set) {
            ar->huge ^= bit;
            changed = true;
        }
    }
    *lo = a;
    *hi = b;
    return changed;
}

struct mspan *weft__mheap_alloc(size_t npages, size_t align_pages, int state, unsigned cls)
{
    if (npages == 0 || npages > ((size_t)1 << 31) / 2)
        return NULL;
    size_t want = npages + (align_pages > 1 ? align_pages - 1 : 0);
    weft__lock(&h.lock);
    struct mspan *s = want >= DIRTY_FIRST_PAGES ? find_fit(want, true) : NULL;
    if (s == NULL)
        s = find_fit(want, false);
    if (s == NULL) {
        if (grow(want) != 0 || (s = find_fit(want, false)) == NULL) {
            weft__unlock(&h.lock);
            return NULL;
        }
    }
    free_remove(s);
    size_t lead = 0;
    if (align_pages > 1) {
        uintptr_t align = align_pages * PAGE;
        lead = (((s->base + align - 1) & ~(align - 1)) - s->base) / PAGE;
    } else if (s->npages > npages && s->ndirty > 0 && s->ndirty < s->npages &&
               count_dirty(span_end(s) - npages * PAGE, npages) > count_dirty(s->base, npages)) {
        lead = s->npages - npages;    /* the resident pages are at the end: take those */
    }
    if (split_lead(s, lead) != 0 || split_tail(s, npages) != 0) {
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
    if (h.inuse_pages > h.peak_cur)
        h.peak_cur = h.inuse_pages;
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
        /* small objects in a range a large one had: back to 4 KiB pages, or the first
         * touch of a released chunk would fault in 2 MiB for a few KiB, resident pages
         * that the clean bits do not know of */
        uintptr_t lo, hi;
        bool unhuge = huge_mark(s->base, span_end(s), false, &lo, &hi);
        weft__unlock(&h.lock);
        if (unhuge)
            weft__os_hugepage((void *)lo, hi - lo, false);
        return s;
    }
    map_ends(s);
    h.large_alloc += npages * PAGE;
    h.large_nmalloc++;
    uintptr_t lo, hi;
    bool huge = huge_mark(s->base, span_end(s), true, &lo, &hi);
    weft__unlock(&h.lock);
    if (huge)
        weft__os_hugepage((void *)lo, hi - lo, true);
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
    bool wake = scav_want_locked();
    weft__unlock(&h.lock);
    if (wake)
        scav_wake();
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
    if (h.inuse_pages > h.peak_cur)
        h.peak_cur = h.inuse_pages;
    h.large_alloc += need * PAGE;
    uintptr_t lo, hi;
    bool huge = huge_mark(s->base, span_end(s), true, &lo, &hi);
    weft__unlock(&h.lock);
    if (huge)
        weft__os_hugepage((void *)lo, hi - lo, true);
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
    bool wake = scav_want_locked();
    weft__unlock(&h.lock);
    if (wake)
        scav_wake();
}

/* ---- the scavenger ---------------------------------------------------------- *
 * Free pages stay resident while the heap may need them again: the goal is the most
 * pages in use during the last two windows (SCAV_WINDOW_NS each), plus a slack of
 * max(HEAP_RETAIN_MIN = 48 MiB, an eighth of that peak); resident free pages beyond it are
 * given back, the longest-free spans first, SCAV_STEP_PAGES at most every
 * SCAV_PERIOD_NS, by a background thread of mem/'s own (the frees never do it: their
 * cost stays the cost of a free). The thread exists once some free first leaves more
 * resident free pages than the slack over what is in use (it is started from the
 * allocator's outer calls, weft__mheap_scav_kick: see scav_wake); it sleeps on
 * scav_word while there are not, and ticks while there are (the peak decays as windows
 * pass, so a burst that was freed goes back within about 2 windows plus its release
 * time; under a steady churn above the slack it ticks at 100 Hz, a lock round trip
 * each). Where no thread can start, the free's outer call releases down to the slack.
 * weft_mem_release() is the explicit "now": everything, at once, in the caller.
 *
 * The pages are released without h.lock: the span leaves the free structures as
 * SPAN_SCAV (neither free nor in use: nothing merges with it, span_of does not accept
 * it, allocations look elsewhere), madvise runs, and the span comes back clean and is
 * merged again. scav_lock serialises scavengers (the thread, weft_mem_release) and
 * keeps fork from copying a span that is out (fork_prepare takes it first).
 *
 * The thread was not put in sysmon (sched/): a program that uses weft only as its
 * malloc (libweft-malloc.so, plain threads) has no sysmon, and one pacer for both kinds
 * of program is simpler than two.
 *
 * No lost wake-up: the thread reads scav_word, then (under h.lock) decides to sleep and
 * sets h.scav_idle; a free that finds scav_idle set (under h.lock, so after that
 * decision) clears it and bumps scav_word after unlocking, which the thread's futex
 * wait sees as a changed word. */
#define SCAV_WINDOW_NS  500000000
#define SCAV_PERIOD_NS  10000000
#define SCAV_STEP_PAGES (((size_t)16 << 20) / PAGE)

static weft_lock scav_lock = WEFT_LOCK_INIT;
static _Atomic uint32_t scav_word;
static _Atomic int scav_thread;          /* 0 none, 1 started, 2 could not start */
static int scav_err;                     /* why it could not: an errno */

static int64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static uint64_t slack_pages(uint64_t inuse)
{
    uint64_t r = inuse / 8, min = HEAP_RETAIN_MIN / PAGE;
    return r > min ? r : min;
}

/* h.lock held: the resident free pages the heap may keep now. */
static uint64_t dirty_goal(void)
{
    uint64_t peak = h.peak_cur > h.peak_prev ? h.peak_cur : h.peak_prev;
    if (peak < h.inuse_pages)
        peak = h.inuse_pages;
    return peak - h.inuse_pages + slack_pages(peak);
}

/* h.lock held: whether the (sleeping) scavenger should look; if so it is no longer
 * counted as sleeping, and the caller wakes it (scav_wake) after unlocking. */
static bool scav_want_locked(void)
{
    if (!h.scav_idle || h.dirty_pages <= slack_pages(h.inuse_pages))
        return false;
    h.scav_idle = false;
    return true;
}

/* SCAV_PACED: the thread's step, down to the goal; SCAV_NOW: a freeing thread where no
 * scavenger thread could start, down to the slack over what is in use; SCAV_ALL:
 * weft_mem_release, everything. */
enum { SCAV_PACED, SCAV_NOW, SCAV_ALL };

/* Release up to `budget` resident free pages, oldest first, while more than the mode's
 * target are resident. Takes scav_lock and h.lock; call with neither. Returns whether
 * the thread should tick again (false: it sleeps, h.scav_idle set). */
static bool scavenge(uint64_t budget, int mode)
{
    uint64_t done = 0;
    bool all = mode == SCAV_ALL;
    weft__lock(&scav_lock);
    weft__lock(&h.lock);
    if (mode == SCAV_PACED) {
        int64_t now = mono_ns();
        if (now - h.window_start >= SCAV_WINDOW_NS) {
            h.peak_prev = h.peak_cur;
            h.peak_cur = h.inuse_pages;
            h.window_start = now;
        }
    }
    uint64_t target = all ? 0 : mode == SCAV_NOW ? slack_pages(h.inuse_pages) : dirty_goal();
    while (done < budget && h.dirty_head != NULL && h.dirty_pages > target) {
        struct mspan *s = h.dirty_head;
        free_remove(s);
        /* a span larger than what is left of the budget: the pages from its first
         * resident one only (the clean ones before it and the rest go back as free
         * spans), so that one step stays one step */
        if (budget - done < s->npages &&
            (split_lead(s, clean_prefix(s->base, s->npages)) != 0 ||
             split_tail(s, s->npages < budget - done ? s->npages : (size_t)(budget - done)) != 0)) {
            free_coalesce_insert(s);
            break;
        }
        /* The span's whole huge chunks only, while they hold resident pages: madvise
         * over part of a huge page splits it, and the chunk then faults back in 4 KiB
         * at a time (bigbuf: 61 k small faults, 127 splits, against 476 huge faults).
         * The resident pages at its ends wait until its chunks are clean. Otherwise,
         * and for weft_mem_release, the whole span: its clean pages are not resident,
         * and cost the kernel a page-table walk only. */
        uintptr_t lo = (s->base + HUGE - 1) & ~(HUGE - 1), hi = span_end(s) & ~(HUGE - 1);
        if (all || hi <= lo || count_dirty(lo, (hi - lo) / PAGE) == 0) {
            lo = s->base;
            hi = span_end(s);
        }
        /* a release that ends inside a chunk: that chunk goes back to 4 KiB pages, or
         * khugepaged (max_ptes_none 511) may fill its released pages in again (the
         * chunks wholly inside are empty after the release: nothing to collapse) */
        uintptr_t edge[2] = { lo & ~(HUGE - 1), (hi - 1) & ~(HUGE - 1) }, x, y;
        bool unhuge[2] = { false, false };
        for (int e = 0; e < 2; e++)
            if ((e == 0 ? lo : hi) & (HUGE - 1))
                unhuge[e] = huge_mark(edge[e], edge[e] + 1, false, &x, &y);
        uint32_t before = s->ndirty;
        s->state = SPAN_SCAV;
        h.scav_pages += s->npages;
        weft__unlock(&h.lock);
        for (int e = 0; e < 2; e++)
            if (unhuge[e])
                weft__os_hugepage((void *)edge[e], HUGE, false);
        weft__os_release((void *)lo, hi - lo);
        weft__lock(&h.lock);
        h.scav_pages -= s->npages;
        mark(lo, (hi - lo) / PAGE, 1);
        s->ndirty = (uint32_t)count_dirty(s->base, s->npages);
        done += before - s->ndirty;   /* >= 1: some page of the range was resident */
        free_coalesce_insert(s);
    }
    bool more = true;
    /* SCAV_NOW: there is no thread to tick; the next free past the slack calls again */
    if (mode == SCAV_NOW || (mode == SCAV_PACED && h.dirty_pages <= slack_pages(h.inuse_pages))) {
        h.scav_idle = true;
        more = false;
    }
    weft__unlock(&h.lock);
    weft__unlock(&scav_lock);
    return more;
}

static void *scav_main(void *arg)
{
    (void)arg;
    for (;;) {
        /* acquire: pairs with the release bump in scav_wake */
        uint32_t seen = atomic_load_explicit(&scav_word, ACQ);
        if (!scavenge(SCAV_STEP_PAGES, SCAV_PACED)) {
            weft__futex_wait(&scav_word, seen);
        } else {
            struct timespec ts = { 0, SCAV_PERIOD_NS };
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* Start the thread, with every signal blocked (the program's handlers never run on
 * it); 0, or -1. */
static int scav_start(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_attr_t attr;
    if ((scav_err = pthread_attr_init(&attr)) != 0)
        return -1;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int err = pthread_create(&t, &attr, scav_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if ((scav_err = err) != 0)
        return -1;
    pthread_setname_np(t, "weft-scavenge");
    return 0;
}

/* A free left too many resident free pages: wake the thread. Before it exists, only
 * note that it is wanted: this runs deep inside a free (mcentral giving a span back in
 * the middle of a cache's flush), and pthread_create allocates (glibc callocs on the
 * calling thread): the cache's lists are not consistent there. weft__mheap_scav_kick
 * starts it from the allocator's outer calls. */
_Atomic int weft__mheap_scav_pending;

static void scav_wake(void)
{
    if (atomic_load_explicit(&scav_thread, ACQ) != 1) {
        atomic_store_explicit(&weft__mheap_scav_pending, 1, REL);
        return;
    }
    /* release: the thread's acquire load of the word orders its look after our free */
    atomic_fetch_add_explicit(&scav_word, 1, REL);
    weft__futex_wake(&scav_word, 1);
}

void weft__mheap_scav_kick_slow(void)
{
    /* acquire: pairs with scav_wake's release store */
    if (!atomic_exchange_explicit(&weft__mheap_scav_pending, 0, ACQ))
        return;
    int st = atomic_load_explicit(&scav_thread, ACQ);
    /* acq_rel: one starter; the others see 1 (or 2) and wake (or scavenge) */
    if (st == 0 && atomic_compare_exchange_strong_explicit(&scav_thread, &st, 1,
                                                           memory_order_acq_rel, ACQ)) {
        if (scav_start() == 0)
            return;                   /* its first step looks at once */
        weft__printf("mheap: cannot start the scavenger thread (%s); frees give memory back "
                     "themselves", weft_strerror(-scav_err));
        atomic_store_explicit(&scav_thread, 2, REL);
        st = 2;
    }
    if (st == 2)
        scavenge(UINT64_MAX, SCAV_NOW);
    else
        scav_wake();
}

void weft__mheap_scavenge_all(void)
{
    scavenge(UINT64_MAX, SCAV_ALL);
}

void weft__mheap_stats(struct heap_stats *out)
{
    weft__lock(&h.lock);
    out->sys = h.sys;
    out->released = (h.released_pages + h.scav_pages) * PAGE;   /* being released: released */
    out->inuse = h.inuse_pages * PAGE;
    out->large_alloc = h.large_alloc;
    out->large_nmalloc = h.large_nmalloc;
    out->large_nfree = h.large_nfree;
    weft__unlock(&h.lock);
}

void weft__mheap_lock_fork(void)
{
    weft__lock(&scav_lock);
    weft__lock(&h.lock);
}

/* In the child, the scavenger thread is gone: the next free that needs one starts it. */
void weft__mheap_unlock_fork(int child)
{
    if (child) {
        weft__lock_reinit(&h.lock);
        weft__lock_reinit(&scav_lock);
        h.scav_idle = true;
        atomic_store_explicit(&scav_thread, 0, RLX);   /* a pending start stays pending */
    } else {
        weft__unlock(&h.lock);
        weft__unlock(&scav_lock);
    }
}
