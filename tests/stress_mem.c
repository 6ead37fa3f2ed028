/*
 * tests/stress_mem.c -- the allocator under 8 threads: random sizes 1 B .. 1 MiB (mostly
 * small, some medium, few large), cross-thread frees through mailboxes, every object
 * filled with a pattern derived from its address and id and checked before it is
 * freed; then many short-lived threads that exit with objects in their caches and
 * objects still live (freed later by another thread).
 * 10+ million mallocs (and as many frees) in the release build; a tenth under the
 * sanitizers. Fixed seeds.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "weft.h"
#include "tests/common.h"

TestSuite(stress_mem, .timeout = 240);

#define NTHREADS 8
#define SLOTS 512
#define MAILBOX 4096

/* Where an object goes, its metadata goes too: kept outside the object, so an object
 * overwritten by another one (the allocator handing out memory twice) shows. */
struct obj {
    unsigned char *p;
    size_t size;
    uint64_t id;
};

struct mailbox {
    pthread_mutex_t mu;
    struct obj items[MAILBOX];
    int n;
};
static struct mailbox boxes[NTHREADS];
static long ops_per_thread;
static _Atomic long bad, checked;
static _Atomic(const void *) first_bad;

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static size_t pick_size(uint64_t *s)
{
    uint64_t r = rnd(s) % 1000;
    if (r < 900)
        return 1 + rnd(s) % 256;               /* 90%: tiny */
    if (r < 990)
        return 257 + rnd(s) % (32768 - 256);   /* 9%: up to the largest class */
    return 32769 + rnd(s) % ((1 << 20) - 32768); /* 1%: large, up to 1 MiB */
}

static inline unsigned char pat(const struct obj *o, size_t i)
{
    uint64_t x = ((uintptr_t)o->p ^ (o->id * 0x9e3779b97f4a7c15ull)) + i * 0x2545f491ull;
    return (unsigned char)(x ^ (x >> 29) ^ (x >> 41));
}

/* The bytes an object's pattern covers: the first 512, the last 64, and one byte in
 * every 4 KiB page between (so large objects are touched all along without a memset
 * of a megabyte on every operation). */
#define HEAD 512
#define TAIL 64
#define STRIDE 4096

static void fill(const struct obj *o)
{
    size_t n = o->size;
    size_t h = n < HEAD ? n : HEAD;
    for (size_t i = 0; i < h; i++)
        o->p[i] = pat(o, i);
    for (size_t i = HEAD; i + TAIL < n; i += STRIDE)
        o->p[i] = pat(o, i);
    for (size_t i = n > h + TAIL ? n - TAIL : h; i < n; i++)
        o->p[i] = pat(o, i);
}

static void report(const struct obj *o)
{
    const void *expected = NULL;
    atomic_compare_exchange_strong(&first_bad, &expected, (const void *)o->p);
    atomic_fetch_add(&bad, 1);
}

static void check_free(const struct obj *o)
{
    size_t n = o->size;
    size_t h = n < HEAD ? n : HEAD;
    bool ok = weft_usable_size(o->p) >= n;
    for (size_t i = 0; ok && i < h; i++)
        ok = o->p[i] == pat(o, i);
    for (size_t i = HEAD; ok && i + TAIL < n; i += STRIDE)
        ok = o->p[i] == pat(o, i);
    for (size_t i = n > h + TAIL ? n - TAIL : h; ok && i < n; i++)
        ok = o->p[i] == pat(o, i);
    if (!ok)
        report(o);
    atomic_fetch_add_explicit(&checked, 1, memory_order_relaxed);
    weft_free(o->p);
}

static void drain(int id)
{
    static _Thread_local struct obj items[MAILBOX];
    struct mailbox *b = &boxes[id];
    pthread_mutex_lock(&b->mu);
    int n = b->n;
    memcpy(items, b->items, (size_t)n * sizeof items[0]);
    b->n = 0;
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < n; i++)
        check_free(&items[i]);
}

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1);
    struct obj *slots = calloc(SLOTS, sizeof *slots);
    uint64_t next_id = (uint64_t)id << 48;
    for (long op = 0; op < ops_per_thread; op++) {
        struct obj *o = &slots[rnd(&s) % SLOTS];
        if (o->p != NULL) {
            if (rnd(&s) % 3 == 0) {
                /* hand it to another thread, which checks and frees it */
                struct mailbox *b = &boxes[(id + 1 + rnd(&s) % (NTHREADS - 1)) % NTHREADS];
                pthread_mutex_lock(&b->mu);
                if (b->n < MAILBOX) {
                    b->items[b->n++] = *o;
                    o->p = NULL;
                }
                pthread_mutex_unlock(&b->mu);
            }
            if (o->p != NULL)
                check_free(o);
        }
        o->size = pick_size(&s);
        o->id = next_id++;
        switch (rnd(&s) % 16) {              /* mostly malloc; some calloc, realloc, aligned */
        case 0:
            o->p = weft_calloc(1, o->size);
            if (o->p != NULL && (o->p[0] != 0 || o->p[o->size - 1] != 0 || o->p[o->size / 2] != 0))
                report(o);
            break;
        case 1:
            o->p = weft_malloc(o->size / 2 + 1);
            if (o->p != NULL)
                o->p = weft_realloc(o->p, o->size);
            break;
        case 2:
            o->p = weft_aligned_alloc((size_t)64 << (rnd(&s) % 8), o->size);
            break;
        default:
            o->p = weft_malloc(o->size);
        }
        if (o->p == NULL) {
            report(o);
            continue;
        }
        fill(o);
        if ((op & 31) == 0)
            drain(id);
    }
    for (int k = 0; k < SLOTS; k++)
        if (slots[k].p != NULL)
            check_free(&slots[k]);
    free(slots);
    return NULL;
}

Test(stress_mem, eight_threads_cross_thread_frees)
{
    long total = sanitized() ? 1000000 : 10000000;   /* each op: a malloc and a free */
    ops_per_thread = total / NTHREADS;
    for (int i = 0; i < NTHREADS; i++)
        pthread_mutex_init(&boxes[i].mu, NULL);
    weft_mem_stats a, b;
    weft_mem_stats_read(&a);
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < NTHREADS; i++)
        drain(i);
    cr_assert_eq(atomic_load(&bad), 0, "%ld corrupted or failed objects, the first at %p", atomic_load(&bad),
                 atomic_load(&first_bad));
    cr_assert_eq(atomic_load(&checked), total, "%ld objects checked", atomic_load(&checked));
    weft_mem_stats_read(&b);
    cr_assert_eq(b.mallocs - a.mallocs, b.frees - a.frees, "mallocs %lu frees %lu",
                 (unsigned long)(b.mallocs - a.mallocs), (unsigned long)(b.frees - a.frees));
    cr_assert_geq(b.mallocs - a.mallocs, (uint64_t)total);
    cr_assert_eq(b.heap_alloc, a.heap_alloc);
    cr_assert_geq(b.heap_sys, b.heap_inuse);
    cr_assert_geq(b.heap_inuse, b.heap_alloc);
}

/* ---- short-lived threads --------------------------------------------------------------- */
#define ROUNDS 20
#define BATCH 64
#define LEFT 16          /* objects each thread leaves live, freed by the main thread */

struct leftover { void *p[LEFT]; size_t n[LEFT]; };

static void *short_lived(void *arg)
{
    struct leftover *out = arg;
    uint64_t s = (uint64_t)(uintptr_t)out * 7919 + 1;
    void *keep[BATCH];
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < BATCH; i++) {
            keep[i] = weft_malloc(pick_size(&s) % 4096 + 1);
            memset(keep[i], round, 8);
        }
        for (int i = 0; i < BATCH; i++)
            weft_free(keep[i]);       /* they sit in this thread's cache at exit */
    }
    for (int i = 0; i < LEFT; i++) {
        out->n[i] = pick_size(&s) % 20000 + 1;
        out->p[i] = weft_malloc(out->n[i]);
        memset(out->p[i], 0x77, out->n[i]);
    }
    return NULL;
}

Test(stress_mem, short_lived_threads_flush_their_caches)
{
    enum { NT = 200, AT_ONCE = 4 };
    static struct leftover left[NT];
    weft_mem_stats a, b, c;
    weft_mem_stats_read(&a);
    /* the first half one after another, the rest a few at a time */
    for (int i = 0; i < NT;) {
        int n = i < NT / 2 ? 1 : AT_ONCE;
        pthread_t t[AT_ONCE];
        for (int k = 0; k < n; k++)
            cr_assert_eq(pthread_create(&t[k], NULL, short_lived, &left[i + k]), 0);
        for (int k = 0; k < n; k++)
            pthread_join(t[k], NULL);
        i += n;
    }
    weft_mem_stats_read(&b);
    cr_assert_eq(b.mallocs - a.mallocs, NT * (ROUNDS * BATCH + LEFT));
    cr_assert_eq(b.frees - a.frees, NT * ROUNDS * BATCH, "frees %lu", (unsigned long)(b.frees - a.frees));
    /* the objects left by threads that have exited are intact, and can be freed */
    uint64_t live = 0;
    for (int i = 0; i < NT; i++)
        for (int k = 0; k < LEFT; k++) {
            unsigned char *p = left[i].p[k];
            cr_assert(p[0] == 0x77 && p[left[i].n[k] - 1] == 0x77, "thread %d object %d", i, k);
            live += weft_usable_size(p);
        }
    cr_assert_eq(b.heap_alloc - a.heap_alloc, live);
    for (int i = 0; i < NT; i++)
        for (int k = 0; k < LEFT; k++)
            weft_free(left[i].p[k]);
    weft_mem_stats_read(&c);
    cr_assert_eq(c.frees - a.frees, c.mallocs - a.mallocs);
    cr_assert_eq(c.heap_alloc, a.heap_alloc);
}

/* ---- large spans: the heap's free structures and the scavenger under churn ------------ *
 * Two threads churn 48 slots each of 32 KiB .. 24 MiB (most below 2 MiB, where spans
 * split and merge most), every object patterned and checked before it is freed, some
 * grown or shrunk by realloc; a third thread calls weft_mem_release() every millisecond,
 * so that spans leave for madvise and come back while the others allocate and free
 * around them. */
static _Atomic int large_stop;

static size_t large_size(uint64_t *s)
{
    uint64_t r = rnd(s) % 16;
    if (r < 12)
        return 32769 + rnd(s) % ((2 << 20) - 32768);
    return (2 << 20) + rnd(s) % (22 << 20);
}

static void *large_churn(void *arg)
{
    enum { NSLOT = 48 };
    uint64_t s = 0xabcdef12345ull * (uint64_t)((intptr_t)arg + 1);
    struct obj slot[NSLOT] = { { 0 } };
    long steps = sanitized() ? 150 : 1500;
    for (long i = 0; i < steps; i++) {
        struct obj *o = &slot[rnd(&s) % NSLOT];
        if (o->p != NULL && rnd(&s) % 4 == 0) {          /* resize: the contents stay */
            size_t keep = o->size;
            struct obj n = { NULL, large_size(&s), o->id };
            n.p = weft_realloc(o->p, n.size);
            if (n.p == NULL) {                           /* counted as damage */
                report(o);
                return NULL;
            }
            /* the kept prefix came along (the pattern is the old address's) */
            size_t m = keep < n.size ? keep : n.size, h = m < HEAD ? m : HEAD;
            for (size_t k = 0; k < h; k++)
                if (n.p[k] != pat(o, k)) {
                    report(&n);
                    break;
                }
            *o = n;
            fill(o);
            continue;
        }
        if (o->p != NULL)
            check_free(o);
        o->size = large_size(&s);
        o->id = (uint64_t)i * 2 + (uint64_t)(intptr_t)arg;
        o->p = weft_malloc(o->size);
        if (o->p == NULL) {
            report(o);
            return NULL;
        }
        fill(o);
    }
    for (int k = 0; k < NSLOT; k++)
        if (slot[k].p != NULL)
            check_free(&slot[k]);
    return NULL;
}

static void *large_releaser(void *arg)
{
    (void)arg;
    while (!atomic_load(&large_stop)) {
        weft_mem_release();
        usleep(2000);
    }
    return NULL;
}

Test(stress_mem, large_spans_churn_while_released)
{
    pthread_t t[3];
    atomic_store(&bad, 0);
    atomic_store(&first_bad, NULL);
    cr_assert_eq(pthread_create(&t[2], NULL, large_releaser, NULL), 0);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, large_churn, (void *)(intptr_t)i), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    atomic_store(&large_stop, 1);
    pthread_join(t[2], NULL);
    cr_assert_eq(atomic_load(&bad), 0, "%ld damaged objects, the first at %p", atomic_load(&bad),
                 atomic_load(&first_bad));
    weft_mem_stats st;
    weft_mem_stats_read(&st);
    cr_assert_leq(st.heap_released, st.heap_sys);
    cr_assert_leq(st.heap_inuse, st.heap_sys);
}
