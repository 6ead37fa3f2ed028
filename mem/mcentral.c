/*
 * mem/mcentral.c -- one central free list per size class (Go's mcentral, with
 * tcmalloc's transfer cache in front).
 *
 * Objects move between an mcache and here in batches of weft__mcentral_batch(c):
 *   put: a full batch is pushed whole onto the transfer cache (O(1)); when that is
 *        full, or the batch is short, each object goes back to its span's freelist.
 *   get: pops a whole batch from the transfer cache (O(1)); else gathers objects
 *        from partial spans (freelist first, then the never-used bump region), and
 *        takes a new span from the mheap when there is none.
 * So a batch costs one lock round trip, and a producer/consumer pair of threads
 * trades whole batches without touching spans.
 *
 * Spans: a small span is on the partial list exactly while it has a free object
 * (freelist or bump). When its last object comes back (nalloc == 0) it returns to
 * the mheap, unless it is the class's only partial span (no thrash at the edge).
 *
 * Direct paths (alloc_one, free_one): one object per lock round trip, for threads
 * without a cache and for every operation under WEFT_DEBUG=allocfree, where a bitmap
 * per span (allocbits, from the mheap) catches double and interior frees and the
 * poison (WEFT_POISON) in freed objects catches writes after free.
 *
 * Locking: c->lock guards everything of class c, spans' small-object fields
 * included. It may be held while taking the mheap lock, never the other way round;
 * one class at a time, but lock_all (fork) takes them all in class order.
 * Callers: mcache.c (batch, get, put; lock_all/unlock_all from the fork handlers) and
 * malloc.c (the direct paths, drain, stats), any thread, holding no mem lock.
 *
 * Rejected: 32 KiB batches (a list of every class could hold 2 of them, on every
 * thread). They made a ring of 1000 live 16..256 B objects per thread cost 1.19x
 * glibc's peak RSS, a producer/consumer pair 1.42x, larson 1.16x; 8 KiB batches, and
 * one batch on a thread that only frees the class: ~1.08x, ~1.07x, ~1.01x, times
 * unchanged within noise.
 */
#include <string.h>
#include "mem/mem.h"

#define TC_MAX 16
/* A batch holds about this many bytes (2..128 objects). It bounds what a cache parks:
 * a list of class c holds at most 2 batches (1 on a thread that only frees c), about
 * 16 KiB per class (32 KiB batches: see Rejected in the header). */
#define BATCH_BYTES 8192u

struct batch { void *head; uint32_t n; };

struct mcentral {
    weft_lock lock;
    uint32_t ntc;
    struct mspan *partial;
    uint64_t nmalloc, nfree;          /* objects handed out / taken back directly */
    struct batch tc[TC_MAX];
} __attribute__((aligned(64)));

static struct mcentral central[WEFT_NCLASS];

unsigned weft__mcentral_batch(unsigned cls)
{
    unsigned n = BATCH_BYTES / weft__class_size[cls];
    return n < 2 ? 2 : n > 128 ? 128 : n;
}

static void partial_push(struct mcentral *c, struct mspan *s)
{
    s->prev = NULL;
    s->next = c->partial;
    if (c->partial != NULL)
        c->partial->prev = s;
    c->partial = s;
    s->in_partial = 1;
}

static void partial_remove(struct mcentral *c, struct mspan *s)
{
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        c->partial = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
    s->in_partial = 0;
}

static struct mspan *span_grow(struct mcentral *c, unsigned cls)
{
    struct mspan *s = weft__mheap_alloc(weft__class_npages[cls], 1, SPAN_SMALL, cls);
    if (s == NULL)
        return NULL;
    s->elemsize = weft__class_size[cls];
    s->nelems = (uint32_t)(s->npages * WEFT_PAGE_SIZE / s->elemsize);
    s->nalloc = 0;
    s->freelist = NULL;
    s->bump = s->base;
    s->limit = s->base + (uintptr_t)s->nelems * s->elemsize;
    partial_push(c, s);
    return s;
}

/* One object from s (which has one); c->lock held. *recycled: it came from the freelist. */
static void *span_take(struct mcentral *c, struct mspan *s, int *recycled)
{
    void *p = s->freelist;
    if (p != NULL) {
        s->freelist = *(void **)p;
        *recycled = 1;
    } else {
        p = (void *)s->bump;
        s->bump += s->elemsize;
        *recycled = 0;
    }
    s->nalloc++;
    if (s->freelist == NULL && s->bump == s->limit)
        partial_remove(c, s);
    return p;
}

/* Give p back to its span s; c->lock held. Returns s if it became empty and must go
 * back to the mheap (the caller frees it after dropping c->lock). */
static struct mspan *span_give(struct mcentral *c, struct mspan *s, void *p)
{
    /* more objects back than were taken: one of them was freed twice */
    if (WEFT_UNLIKELY(s->nalloc == 0))
        weft__mem_bad_free("weft_free", p,
                           "double free (its span got back more objects than it handed out)");
    *(void **)p = s->freelist;
    s->freelist = p;
    s->nalloc--;
    if (!s->in_partial)
        partial_push(c, s);
    if (s->nalloc == 0 && (c->partial != s || s->next != NULL)) {
        partial_remove(c, s);
        return s;
    }
    return NULL;
}

unsigned weft__mcentral_get(unsigned cls, unsigned want, void **head)
{
    struct mcentral *c = &central[cls];
    weft__lock(&c->lock);
    if (c->ntc > 0) {
        struct batch b = c->tc[--c->ntc];
        weft__unlock(&c->lock);
        *head = b.head;
        return b.n;
    }
    void *list = NULL;
    unsigned n = 0;
    while (n < want) {
        struct mspan *s = c->partial;
        if (s == NULL && (s = span_grow(c, cls)) == NULL)
            break;
        int recycled;
        while (n < want && s->in_partial) {
            void *p = span_take(c, s, &recycled);
            *(void **)p = list;
            list = p;
            n++;
        }
    }
    weft__unlock(&c->lock);
    *head = list;
    return n;
}

/* Every object of a NULL-terminated list back to its span; c->lock held. Returns
 * the spans that became empty, linked through next, for free_spans(). */
static struct mspan *give_list(struct mcentral *c, void *head)
{
    struct mspan *empty = NULL;
    while (head != NULL) {
        void *next = *(void **)head;
        uintptr_t a = (uintptr_t)head;
        struct mspan *s = weft__mheap_arena_of(a)->spans[weft__mheap_page_index(a)];
        struct mspan *e = span_give(c, s, head);
        if (e != NULL) {
            e->next = empty;
            empty = e;
        }
        head = next;
    }
    return empty;
}

static void free_spans(struct mspan *empty)
{
    while (empty != NULL) {
        struct mspan *s = empty;
        empty = s->next;
        weft__mheap_free(s);
    }
}

void weft__mcentral_put(unsigned cls, void *head, unsigned n)
{
    struct mcentral *c = &central[cls];
    weft__lock(&c->lock);
    if (n == weft__mcentral_batch(cls) && c->ntc < TC_MAX) {
        c->tc[c->ntc].head = head;
        c->tc[c->ntc].n = n;
        c->ntc++;
        weft__unlock(&c->lock);
        return;
    }
    struct mspan *empty = give_list(c, head);
    weft__unlock(&c->lock);
    free_spans(empty);
}

/* ---- direct paths: threads without a cache, and WEFT_DEBUG=allocfree ------- */
void *weft__mcentral_alloc_one(unsigned cls)
{
    struct mcentral *c = &central[cls];
    weft__lock(&c->lock);
    struct mspan *s = c->partial;
    if (s == NULL && (s = span_grow(c, cls)) == NULL) {
        weft__unlock(&c->lock);
        return NULL;
    }
    int recycled;
    unsigned char *p = span_take(c, s, &recycled);
    if (s->allocbits != NULL) {
        size_t i = ((uintptr_t)p - s->base) / s->elemsize;
        uint64_t bit = (uint64_t)1 << (i % 64);
        if (atomic_fetch_or_explicit(&s->allocbits[i / 64], bit, RLX) & bit)
            weft__throwf("weft_malloc: object %p handed out twice (heap corrupted)", (void *)p);
        if (recycled) {
            for (size_t k = sizeof(void *); k < s->elemsize; k++)
                if (p[k] != WEFT_POISON)
                    weft__throwf("weft_malloc: freed object %p was written after its free "
                                 "(byte %zu of %u)", (void *)p, k, s->elemsize);
        }
    }
    c->nmalloc++;
    weft__unlock(&c->lock);
    return p;
}

void weft__mcentral_free_one(struct mspan *s, void *p, const char *fn)
{
    struct mcentral *c = &central[s->cls];
    weft__lock(&c->lock);
    if (s->allocbits != NULL) {
        size_t off = (uintptr_t)p - s->base;
        if (off % s->elemsize != 0 || off >= (size_t)s->nelems * s->elemsize) {
            weft__unlock(&c->lock);
            weft__mem_bad_free(fn, p, "not the start of an object");
        }
        size_t i = off / s->elemsize;
        uint64_t bit = (uint64_t)1 << (i % 64);
        if (!(atomic_fetch_and_explicit(&s->allocbits[i / 64], ~bit, RLX) & bit)) {
            weft__unlock(&c->lock);
            weft__mem_bad_free(fn, p, "double free");
        }
        memset((char *)p + sizeof(void *), WEFT_POISON, s->elemsize - sizeof(void *));
    }
    c->nfree++;
    struct mspan *e = span_give(c, s, p);
    weft__unlock(&c->lock);
    if (e != NULL)
        weft__mheap_free(e);
}

/* Every transfer-cache batch back to its spans; empty spans (even a class's last)
 * back to the mheap. */
void weft__mcentral_drain(void)
{
    for (unsigned cls = 1; cls < WEFT_NCLASS; cls++) {
        struct mcentral *c = &central[cls];
        weft__lock(&c->lock);
        uint32_t ntc = c->ntc;
        struct batch tc[TC_MAX];
        memcpy(tc, c->tc, sizeof tc);
        c->ntc = 0;
        weft__unlock(&c->lock);
        for (uint32_t i = 0; i < ntc; i++) {
            weft__lock(&c->lock);
            struct mspan *empty = give_list(c, tc[i].head);
            weft__unlock(&c->lock);
            free_spans(empty);
        }
        /* the last partial span of the class, if it is empty */
        weft__lock(&c->lock);
        struct mspan *s = c->partial;
        if (s != NULL && s->nalloc == 0 && s->next == NULL)
            partial_remove(c, s);
        else
            s = NULL;
        weft__unlock(&c->lock);
        if (s != NULL)
            weft__mheap_free(s);
    }
}

void weft__mcentral_stats(uint64_t *nmalloc, uint64_t *nfree)
{
    for (unsigned cls = 1; cls < WEFT_NCLASS; cls++) {
        weft__lock(&central[cls].lock);
        nmalloc[cls] += central[cls].nmalloc;
        nfree[cls] += central[cls].nfree;
        weft__unlock(&central[cls].lock);
    }
}

void weft__mcentral_lock_all(void)
{
    for (unsigned cls = 1; cls < WEFT_NCLASS; cls++)
        weft__lock(&central[cls].lock);
}

void weft__mcentral_unlock_all(int child)
{
    for (unsigned cls = WEFT_NCLASS - 1; cls >= 1; cls--) {
        if (child)
            weft__lock_reinit(&central[cls].lock);
        else
            weft__unlock(&central[cls].lock);
    }
}
