/*
 * tests/bench/malloc_bench.c -- allocator workloads on plain malloc/free, so that the
 * same binary runs on glibc, jemalloc, tcmalloc, mimalloc and weft (LD_PRELOAD).
 * An "op" is one malloc or one free. Prints "WORKLOAD ns_per_op=X rss_kb=Y".
 *   pairs     malloc/free pairs of 16..256 B on one thread
 *   ring      two threads, each keeps a ring of 1000 live objects (16..256 B)
 *   prodcons  allocated on one thread, freed on another (SPSC ring of pointers)
 *   larson    two threads replace random slots (16 B..1 KiB, some up to 8 KiB) and
 *             hand every 64th object to the other thread to free
 *   large     64 KiB .. 4 MiB blocks churned through 16 slots, first and last byte touched
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static inline uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* ---- pairs ----------------------------------------------------------------------- */
static double pairs(void)
{
    enum { N = 20000000 };
    static uint16_t sizes[4096];
    uint64_t s = 1;
    for (int i = 0; i < 4096; i++)
        sizes[i] = (uint16_t)(16 + rnd(&s) % 241);
    double t0 = now_s();
    for (int i = 0; i < N; i++) {
        char *p = malloc(sizes[i & 4095]);
        p[0] = (char)i;
        __asm__ volatile("" : : "r"(p) : "memory");
        free(p);
    }
    return (now_s() - t0) * 1e9 / (2.0 * N);
}

/* ---- ring ------------------------------------------------------------------------ */
#define RING_N 8000000
static void *ring_thread(void *arg)
{
    uint64_t s = (uint64_t)(uintptr_t)arg;
    enum { R = 1000 };
    void *ring[R];
    for (int i = 0; i < R; i++)
        ring[i] = malloc(16 + rnd(&s) % 241);
    for (int i = 0; i < RING_N; i++) {
        int k = i % R;
        free(ring[k]);
        ring[k] = malloc(16 + rnd(&s) % 241);
        *(char *)ring[k] = (char)i;
    }
    for (int i = 0; i < R; i++)
        free(ring[i]);
    return NULL;
}

static double ring(void)
{
    pthread_t a, b;
    double t0 = now_s();
    pthread_create(&a, NULL, ring_thread, (void *)1);
    pthread_create(&b, NULL, ring_thread, (void *)2);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    /* two threads run at once: time per op of one thread */
    return (now_s() - t0) * 1e9 / (2.0 * RING_N);
}

/* ---- producer / consumer --------------------------------------------------------- */
#define PC_N 10000000
#define PC_Q 4096
static void *_Atomic pcq[PC_Q];
static _Atomic uint64_t pc_head, pc_tail;

static void *producer(void *arg)
{
    (void)arg;
    uint64_t s = 7, tail = 0;
    for (int i = 0; i < PC_N; i++) {
        char *p = malloc(16 + rnd(&s) % 241);
        p[0] = (char)i;
        while (tail - atomic_load_explicit(&pc_head, memory_order_acquire) >= PC_Q)
            ;
        atomic_store_explicit(&pcq[tail % PC_Q], p, memory_order_relaxed);
        atomic_store_explicit(&pc_tail, ++tail, memory_order_release);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    (void)arg;
    uint64_t head = 0;
    for (int i = 0; i < PC_N; i++) {
        while (atomic_load_explicit(&pc_tail, memory_order_acquire) == head)
            ;
        void *p = atomic_load_explicit(&pcq[head % PC_Q], memory_order_relaxed);
        atomic_store_explicit(&pc_head, ++head, memory_order_release);
        free(p);
    }
    return NULL;
}

static double prodcons(void)
{
    pthread_t a, b;
    double t0 = now_s();
    pthread_create(&a, NULL, producer, NULL);
    pthread_create(&b, NULL, consumer, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    return (now_s() - t0) * 1e9 / (2.0 * PC_N);
}

/* ---- larson ---------------------------------------------------------------------- */
#define L_SLOTS 4096
#define L_OPS 4000000
#define L_BOX 8192
struct box {
    pthread_mutex_t mu;
    void *items[L_BOX];
    int n;
};
static struct box boxes[2];

static void *larson_thread(void *arg)
{
    int id = (int)(intptr_t)arg;
    uint64_t s = 0x1234567ull * (uint64_t)(id + 3);
    void **slots = calloc(L_SLOTS, sizeof *slots);
    for (int i = 0; i < L_OPS; i++) {
        int k = (int)(rnd(&s) % L_SLOTS);
        if (slots[k] != NULL) {
            struct box *b = &boxes[1 - id];
            if ((i & 63) == 0) {
                pthread_mutex_lock(&b->mu);
                if (b->n < L_BOX) {
                    b->items[b->n++] = slots[k];
                    slots[k] = NULL;
                }
                pthread_mutex_unlock(&b->mu);
            }
            free(slots[k]);
        }
        uint64_t r = rnd(&s);
        size_t n = (r & 255) == 0 ? 1024 + r % 7168 : 16 + r % 1009;
        slots[k] = malloc(n);
        *(char *)slots[k] = (char)i;
        if ((i & 1023) == 0) {
            struct box *mine = &boxes[id];
            pthread_mutex_lock(&mine->mu);
            for (int j = 0; j < mine->n; j++)
                free(mine->items[j]);
            mine->n = 0;
            pthread_mutex_unlock(&mine->mu);
        }
    }
    for (int k = 0; k < L_SLOTS; k++)
        free(slots[k]);
    free(slots);
    return NULL;
}

static double larson(void)
{
    pthread_t a, b;
    for (int i = 0; i < 2; i++)
        pthread_mutex_init(&boxes[i].mu, NULL);
    double t0 = now_s();
    pthread_create(&a, NULL, larson_thread, (void *)0);
    pthread_create(&b, NULL, larson_thread, (void *)1);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < boxes[i].n; j++)
            free(boxes[i].items[j]);
    return (now_s() - t0) * 1e9 / (2.0 * L_OPS);
}

/* ---- large ----------------------------------------------------------------------- */
static double large(void)
{
    enum { SLOTS = 16, N = 200000 };
    char *slot[SLOTS] = { 0 };
    uint64_t s = 99;
    double t0 = now_s();
    for (int i = 0; i < N; i++) {
        int k = (int)(rnd(&s) % SLOTS);
        free(slot[k]);
        size_t n = ((size_t)64 << 10) + rnd(&s) % ((size_t)4 << 20);
        slot[k] = malloc(n);
        slot[k][0] = (char)i;
        slot[k][n - 1] = (char)i;
    }
    for (int k = 0; k < SLOTS; k++)
        free(slot[k]);
    return (now_s() - t0) * 1e9 / (2.0 * N);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: malloc_bench pairs|ring|prodcons|larson|large\n");
        return 2;
    }
    double ns;
    if (strcmp(argv[1], "pairs") == 0)
        ns = pairs();
    else if (strcmp(argv[1], "ring") == 0)
        ns = ring();
    else if (strcmp(argv[1], "prodcons") == 0)
        ns = prodcons();
    else if (strcmp(argv[1], "larson") == 0)
        ns = larson();
    else if (strcmp(argv[1], "large") == 0)
        ns = large();
    else {
        fprintf(stderr, "malloc_bench: unknown workload %s\n", argv[1]);
        return 2;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%s ns_per_op=%.2f rss_kb=%ld\n", argv[1], ns, ru.ru_maxrss);
    return 0;
}
