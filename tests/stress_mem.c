/*
 * tests/stress_mem.c -- the allocator under 8 threads: random sizes 1 B .. 1 MiB (mostly
 * small), cross-thread frees through mailboxes, every object's content checked before
 * it is freed; then many short-lived threads (caches flushed at exit).
 * 10+ million operations in the release build; a tenth under the sanitizers.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "weft.h"

TestSuite(stress_mem, .timeout = 240);

#define NTHREADS 8
#define SLOTS 512
#define MAILBOX 4096

struct obj { uint32_t size, seed; };

struct mailbox {
    pthread_mutex_t mu;
    void *items[MAILBOX];
    int n;
};
static struct mailbox boxes[NTHREADS];
static long ops_per_thread;
static _Atomic long bad;

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
        return 1 + rnd(s) % 256;
    if (r < 990)
        return 257 + rnd(s) % 32000;
    return 32769 + rnd(s) % (1 << 20);
}

/* The header lives in the usable bytes (every class holds at least 8), so even a
 * 1-byte request carries its size and seed. */
static void fill(struct obj *o, size_t size, uint32_t seed)
{
    unsigned char *p = (unsigned char *)o;
    o->size = (uint32_t)size;
    o->seed = seed;
    size_t n = size - 1 < 256 ? size - 1 : 256;     /* a head pattern, a tail byte */
    for (size_t i = sizeof *o; i < n; i++)
        p[i] = (unsigned char)(seed + i);
    if (size > sizeof *o)
        p[size - 1] = (unsigned char)(seed ^ 0x5a);
}

static void check_free(void *v)
{
    struct obj *o = v;
    unsigned char *p = v;
    if (o->size > weft_usable_size(v)) {
        atomic_fetch_add(&bad, 1);
    } else if (o->size > sizeof *o) {
        size_t n = o->size - 1 < 256 ? o->size - 1 : 256;
        for (size_t i = sizeof *o; i < n; i++)
            if (p[i] != (unsigned char)(o->seed + i)) {
                atomic_fetch_add(&bad, 1);
                break;
            }
        if (p[o->size - 1] != (unsigned char)(o->seed ^ 0x5a))
            atomic_fetch_add(&bad, 1);
    }
    weft_free(v);
}

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1);
    void *slots[SLOTS] = { 0 };
    for (long op = 0; op < ops_per_thread; op++) {
        int k = (int)(rnd(&s) % SLOTS);
        if (slots[k] != NULL) {
            if (rnd(&s) % 4 == 0) {
                /* hand it to another thread, which frees it */
                struct mailbox *b = &boxes[(id + 1 + rnd(&s) % (NTHREADS - 1)) % NTHREADS];
                pthread_mutex_lock(&b->mu);
                if (b->n < MAILBOX) {
                    b->items[b->n++] = slots[k];
                    slots[k] = NULL;
                }
                pthread_mutex_unlock(&b->mu);
            }
            if (slots[k] != NULL)
                check_free(slots[k]);
        }
        size_t size = pick_size(&s);
        slots[k] = weft_malloc(size);
        if (slots[k] == NULL) {
            atomic_fetch_add(&bad, 1);
            continue;
        }
        fill(slots[k], size, (uint32_t)rnd(&s));
        if ((op & 63) == 0) {
            struct mailbox *b = &boxes[id];
            pthread_mutex_lock(&b->mu);
            int n = b->n;
            void *items[MAILBOX];
            memcpy(items, b->items, (size_t)n * sizeof(void *));
            b->n = 0;
            pthread_mutex_unlock(&b->mu);
            for (int i = 0; i < n; i++)
                check_free(items[i]);
        }
    }
    for (int k = 0; k < SLOTS; k++)
        if (slots[k] != NULL)
            check_free(slots[k]);
    return NULL;
}

Test(stress_mem, eight_threads_cross_thread_frees)
{
    const char *san = getenv("WEFT_TEST_SAN");
    long total = san != NULL && *san ? 1000000 : 10000000;   /* each op: a malloc and a free */
    ops_per_thread = total / NTHREADS;
    for (int i = 0; i < NTHREADS; i++)
        pthread_mutex_init(&boxes[i].mu, NULL);
    weft_mem_stats a, b;
    weft_mem_stats_read(&a);
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < NTHREADS; i++)
        for (int k = 0; k < boxes[i].n; k++)
            check_free(boxes[i].items[k]);
    cr_assert_eq(atomic_load(&bad), 0, "%ld corrupted objects", atomic_load(&bad));
    weft_mem_stats_read(&b);
    cr_assert_eq(b.mallocs - a.mallocs, b.frees - a.frees);
    cr_assert_geq(b.mallocs - a.mallocs, (uint64_t)total);
    cr_assert_eq(b.heap_alloc, a.heap_alloc);
}

static void *short_lived(void *arg)
{
    uint64_t s = (uint64_t)(uintptr_t)arg * 7919 + 1;
    void *keep[64];
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 64; i++)
            keep[i] = weft_malloc(pick_size(&s) % 4096 + 1);
        for (int i = 0; i < 64; i++)
            weft_free(keep[i]);       /* they sit in this thread's cache at exit */
    }
    return NULL;
}

Test(stress_mem, short_lived_threads_flush_their_caches)
{
    weft_mem_stats a, b;
    weft_mem_stats_read(&a);
    for (int i = 0; i < 200; i++) {
        pthread_t t;
        pthread_create(&t, NULL, short_lived, (void *)(intptr_t)i);
        pthread_join(t, NULL);
    }
    weft_mem_stats_read(&b);
    cr_assert_eq(b.mallocs - a.mallocs, 200 * 20 * 64);
    cr_assert_eq(b.frees - a.frees, 200 * 20 * 64);
    cr_assert_eq(b.heap_alloc, a.heap_alloc);
}
