/*
 * tests/bench/malloc_bench.c -- allocator workloads on plain malloc/free only, so that
 * the same binary runs on glibc, jemalloc, tcmalloc, mimalloc and weft (LD_PRELOAD).
 *
 *   malloc_bench WORKLOAD [SCALE]     prints "WORKLOAD ns_per_op=X rss_kb=Y"
 *
 *   pairs     malloc/free pairs of 16..256 B on one thread
 *   ring      two threads, each keeps a ring of 1000 live objects (16..256 B):
 *             every step frees the oldest and allocates a new one
 *   prodcons  16..256 B objects allocated on one thread and freed on another, the
 *             pointers passed through a bounded lock-free SPSC ring published in batches
 *   larson    two threads, each with 4096 slots of 16 B..1 KiB (1 in 64: up to 8 KiB),
 *             replace random slots; every 256 steps a thread hands a slice of 32 of its
 *             objects to the other thread, which frees them (cross-thread frees)
 *   xthread   two threads, random sizes 8..16,000 B, 2048 live slots each; a replaced
 *             slot's object is freed by its own thread on even steps and handed to the
 *             other thread on odd ones (every 2nd free is remote; rptest's pattern)
 *   large     64 KiB..4 MiB blocks churned through 16 slots on one thread, the first and
 *             last byte of each new block written (its pages get faulted in)
 *   bigbuf    20 live buffers of 5..25 MiB on one thread, each zero-filled by the
 *             program (memset) when it is allocated; one random slot is filled or
 *             replaced per step, 500 steps (an image or tensor pipeline's scratch
 *             buffers)
 *   regrow64k one buffer grown by realloc in +64 KiB steps from 64 KiB to 64 MiB, each
 *             step writing the new part (memset, as a growing string or bytearray does)
 *             and checking that the old contents came along; then freed
 *   regrow1m  the same in +1 MiB steps from 1 MiB to 256 MiB
 *   regrowmix a buffer grown by realloc in random steps of +4..64 KiB to 128 MiB (written
 *             and checked as above), each step followed by 1..4 mallocs of 16..512 B
 *             that stay live, one step in three also freeing one of them: bytearray +=
 *             or awk's string concatenation, where the pages after the buffer get taken
 *             by other objects; then the buffer and the small objects are freed
 *
 * An "op" is one malloc or one free (a malloc/free pair is 2 ops), except in the regrow
 * workloads, where it is one growth step: one realloc with the writes of the new part
 * (in regrowmix also the small mallocs and frees after it). The buffer starts as NULL,
 * so the first step is realloc(NULL, n); the final frees are timed, not counted.
 * The time is taken with CLOCK_MONOTONIC around the workload: the size table is made
 * before, thread start-up and each thread's initial fill are inside (counted as ops;
 * negligible).
 * With several threads, ns_per_op = elapsed wall time x threads / ops of all threads:
 * the time one thread spends per op, comparable with the one-thread workloads (on two
 * free cores it is the per-op latency; a contended allocator shows up as a larger one).
 * rss_kb is getrusage(RUSAGE_SELF).ru_maxrss at exit: the peak resident set.
 * SCALE (default 1) multiplies the number of operations, e.g. 0.1 for a quick try. The
 * regrow workloads do one pass at scale 1; above, the buffer is freed and grown again
 * from NULL each time it reaches its final size; below, it stops short: smaller peak
 * RSS, and an allocator that copies on realloc (cost growing with the size) looks
 * cheaper per step than at scale 1.
 * Sizes come from a fixed-seed xorshift generator: every run does the same work.
 * Each workload takes roughly 0.2-0.6 s with glibc on a quiet 2-core x86-64 (prodcons
 * and larson up to a few times that when glibc's arenas contend or trim; the regrow
 * workloads, one pass each, are mostly page faults: 0.2-0.8 s with glibc on a 2-core VM
 * where page faults are slow and large takes 3.8 s). Linux only.
 */
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double scale = 1.0;

static long scaled(long n)
{
    long v = (long)((double)n * scale);
    return v < 1 ? 1 : v;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static inline uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Keeps p (and a write through it) from being optimised away. */
static inline void use(void *p, long i)
{
    *(volatile char *)p = (char)i;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__ volatile("pause" ::: "memory");
#elif defined(__aarch64__)
    __asm__ volatile("yield" ::: "memory");
#else
    __asm__ volatile("" ::: "memory");
#endif
}

static void check(void *p)
{
    if (p == NULL) {
        fprintf(stderr, "malloc_bench: out of memory\n");
        exit(1);
    }
}

/* Small sizes, 16..256 B, generated before timing and shared (read-only) by all threads. */
#define NSIZES 4096
static uint16_t small_size[NSIZES];

static void gen_sizes(void)
{
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < NSIZES; i++)
        small_size[i] = (uint16_t)(16 + rnd(&s) % 241);
}

typedef void *(*thread_fn)(void *);

/* Starts n threads, fn[i](arg[i]), and waits for them all. */
static void run_threads(int n, thread_fn *fn, void **arg)
{
    pthread_t t[8];
    for (int i = 0; i < n; i++)
        if (pthread_create(&t[i], NULL, fn[i], arg[i]) != 0) {
            fprintf(stderr, "malloc_bench: pthread_create failed\n");
            exit(1);
        }
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
}

/* ---- pairs ----------------------------------------------------------------------- */
static double pairs(void)
{
    long n = scaled(30000000);
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        void *p = malloc(small_size[i & (NSIZES - 1)]);
        use(p, i);
        free(p);
    }
    double t = now_s() - t0;
    return t * 1e9 / (2.0 * (double)n);
}

/* ---- ring ------------------------------------------------------------------------ */
#define RING_LIVE 1000
static long ring_steps;

static void *ring_thread(void *arg)
{
    long off = (long)(intptr_t)arg * 1777;
    void **ring = malloc(RING_LIVE * sizeof *ring);
    check(ring);
    for (long i = 0; i < RING_LIVE; i++) {
        ring[i] = malloc(small_size[(off + i) & (NSIZES - 1)]);
        check(ring[i]);
    }
    long k = 0;
    for (long i = 0; i < ring_steps; i++) {
        free(ring[k]);
        void *p = malloc(small_size[(off + i) & (NSIZES - 1)]);
        use(p, i);
        ring[k] = p;
        if (++k == RING_LIVE)
            k = 0;
    }
    for (long i = 0; i < RING_LIVE; i++)
        free(ring[i]);
    free(ring);
    return NULL;
}

static double ring(void)
{
    ring_steps = scaled(14000000);
    thread_fn fn[2] = { ring_thread, ring_thread };
    void *arg[2] = { (void *)0, (void *)1 };
    double t0 = now_s();
    run_threads(2, fn, arg);
    double t = now_s() - t0;
    /* 2 threads x 2 * ring_steps ops (the fill and drain, 2 x 2000 ops, are noise) */
    return t * 2 * 1e9 / (4.0 * (double)ring_steps);
}

/* ---- producer / consumer ---------------------------------------------------------- *
 * A single-producer single-consumer ring of pointers. Each side publishes its index only
 * every PC_BATCH elements (and before it waits), and keeps a cached copy of the other
 * side's, so the shared cache lines move about once per batch rather than per element:
 * the allocator, not the queue, is what is measured. A side that finds the ring full
 * (empty) spins briefly, then sleeps on a futex until the other side publishes: when
 * the machine leaves the two threads only one core, they take turns in long batches
 * instead of spinning out their time slices.                                          */
#define PC_Q 4096               /* slots, a power of two */
#define PC_BATCH 64
struct pc_index {
    _Alignas(64) _Atomic unsigned long idx;     /* written by one side only */
    _Atomic uint32_t sleeping;                  /* the other side waits in futex_wait(&ev) */
    _Atomic uint32_t ev;                        /* bumped by a publish that saw it sleeping */
};
static struct {
    struct pc_index tail;       /* the producer's */
    struct pc_index head;       /* the consumer's */
    _Alignas(64) void *slot[PC_Q];
} pc;
static long pc_n;

static void publish(struct pc_index *x, unsigned long v)
{
    atomic_store(&x->idx, v);                   /* seq_cst: ordered before the load below */
    if (atomic_load(&x->sleeping)) {
        atomic_fetch_add(&x->ev, 1);
        syscall(SYS_futex, &x->ev, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    }
}

/* Waits until the other side's index differs from old (it only moves on); returns it. */
static unsigned long await_move(struct pc_index *x, unsigned long old)
{
    unsigned long v;
    for (unsigned spins = 0; (v = atomic_load_explicit(&x->idx, memory_order_acquire)) == old; spins++) {
        if (spins < 256) {
            cpu_relax();
            continue;
        }
        uint32_t ev = atomic_load(&x->ev);
        atomic_store(&x->sleeping, 1);          /* seq_cst: before the load of idx */
        if (atomic_load(&x->idx) == old)        /* else publish() may not have seen us */
            syscall(SYS_futex, &x->ev, FUTEX_WAIT_PRIVATE, ev, NULL, NULL, 0);
        atomic_store(&x->sleeping, 0);
    }
    return v;
}

static void *producer(void *arg)
{
    (void)arg;
    unsigned long tail = 0, head = 0;
    for (long i = 0; i < pc_n; i++) {
        void *p = malloc(small_size[i & (NSIZES - 1)]);
        use(p, i);
        if (tail - head == PC_Q) {
            publish(&pc.tail, tail);
            head = await_move(&pc.head, head);
        }
        pc.slot[tail % PC_Q] = p;
        if (++tail % PC_BATCH == 0)
            publish(&pc.tail, tail);
    }
    publish(&pc.tail, tail);
    return NULL;
}

static void *consumer(void *arg)
{
    (void)arg;
    unsigned long head = 0, tail = 0, n = (unsigned long)pc_n;
    while (head < n) {
        if (head == tail) {
            publish(&pc.head, head);
            tail = await_move(&pc.tail, tail);
        }
        free(pc.slot[head % PC_Q]);
        if (++head % PC_BATCH == 0)
            publish(&pc.head, head);
    }
    return NULL;
}

static double prodcons(void)
{
    pc_n = scaled(6000000);
    thread_fn fn[2] = { producer, consumer };
    void *arg[2] = { NULL, NULL };
    double t0 = now_s();
    run_threads(2, fn, arg);
    double t = now_s() - t0;
    /* pc_n mallocs on one thread and pc_n frees on the other: 2 threads, 2 * pc_n ops */
    return t * 2 * 1e9 / (2.0 * (double)pc_n);
}

/* ---- larson ---------------------------------------------------------------------- */
#define L_SLOTS 4096
#define L_ROUND 256             /* steps between hand-offs */
#define L_SLICE 32              /* objects handed to the other thread per hand-off */
#define L_BOX 8192
struct box {
    pthread_mutex_t mu;
    int n;
    void *item[L_BOX];
};
static struct box box[2];       /* box[i]: objects for thread i to free */
static long l_steps;
static long l_ops[2];

/* Put n objects into b for its thread to free (those beyond its capacity are freed
 * here); returns how many were freed here. */
static long box_put(struct box *b, void **item, int n)
{
    long freed = 0;
    pthread_mutex_lock(&b->mu);
    for (int j = 0; j < n; j++) {
        if (b->n < L_BOX) {
            b->item[b->n++] = item[j];
        } else {
            free(item[j]);
            freed++;
        }
    }
    pthread_mutex_unlock(&b->mu);
    return freed;
}

/* Free everything in b; returns the count. */
static long box_free_all(struct box *b)
{
    pthread_mutex_lock(&b->mu);
    long n = b->n;
    for (int j = 0; j < b->n; j++)
        free(b->item[j]);
    b->n = 0;
    pthread_mutex_unlock(&b->mu);
    return n;
}

/* Runs fn(0) and fn(1) on two threads that trade objects through box[]; each stores
 * its op count in ops[id]. ns per op, as described at the top. */
static double run_pair(thread_fn fn, long *ops)
{
    for (int i = 0; i < 2; i++) {
        pthread_mutex_init(&box[i].mu, NULL);
        box[i].n = 0;
    }
    thread_fn f[2] = { fn, fn };
    void *arg[2] = { (void *)0, (void *)1 };
    double t0 = now_s();
    run_threads(2, f, arg);
    double t = now_s() - t0;
    for (int i = 0; i < 2; i++)          /* the last hand-offs, untimed */
        box_free_all(&box[i]);
    return t * 2 * 1e9 / (double)(ops[0] + ops[1]);
}

static size_t larson_size(uint64_t *s)
{
    if (rnd(s) % 64 == 0)
        return 1024 + rnd(s) % (8192 - 1024 + 1);
    return 16 + rnd(s) % (1024 - 16 + 1);
}

static void *larson_thread(void *arg)
{
    int id = (int)(intptr_t)arg;
    uint64_t s = 0x2545f4914f6cdd1dull * (uint64_t)(id + 1);
    long ops = 0;
    void **slot = malloc(L_SLOTS * sizeof *slot);
    check(slot);
    for (int k = 0; k < L_SLOTS; k++) {
        slot[k] = malloc(larson_size(&s));
        use(slot[k], k);
    }
    ops += L_SLOTS;
    for (long i = 1; i <= l_steps; i++) {
        int k = (int)(rnd(&s) % L_SLOTS);
        if (slot[k] != NULL) {
            free(slot[k]);
            ops++;
        }
        slot[k] = malloc(larson_size(&s));
        use(slot[k], i);
        ops++;
        if (i % L_ROUND != 0)
            continue;
        /* hand a slice of our objects to the other thread ... */
        int from = (int)(rnd(&s) % (L_SLOTS - L_SLICE)), n = 0;
        void *slice[L_SLICE];
        for (int j = from; j < from + L_SLICE; j++)
            if (slot[j] != NULL) {
                slice[n++] = slot[j];
                slot[j] = NULL;
            }
        ops += box_put(&box[1 - id], slice, n);
        /* ... and free what it handed to us */
        ops += box_free_all(&box[id]);
    }
    for (int k = 0; k < L_SLOTS; k++)
        if (slot[k] != NULL) {
            free(slot[k]);
            ops++;
        }
    free(slot);
    l_ops[id] = ops;
    return NULL;
}

static double larson(void)
{
    l_steps = scaled(3000000);
    return run_pair(larson_thread, l_ops);
}

/* ---- large ----------------------------------------------------------------------- */
/* nslot slots of lo..hi bytes, n times one random slot replaced (free, malloc), on one
 * thread; each new block has its first and last byte written (whole = 0), or is
 * zero-filled by the program (whole = 1). Frees of the last blocks are timed too. */
static double churn(int nslot, size_t lo, size_t hi, long n, uint64_t s, int whole)
{
    long ops = 0;
    char *slot[32] = { 0 };
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        int k = (int)(rnd(&s) % (uint64_t)nslot);
        if (slot[k] != NULL) {
            free(slot[k]);
            ops++;
        }
        size_t sz = lo + rnd(&s) % (hi - lo + 1);
        char *p = malloc(sz);
        check(p);
        ops++;
        if (whole) {
            __asm__ volatile("" : "+r"(p));   /* no fusing malloc + memset 0 into calloc */
            memset(p, 0, sz);
            __asm__ volatile("" : : "r"(p) : "memory");   /* the memset is observable */
        } else {
            ((volatile char *)p)[0] = (char)i;
            ((volatile char *)p)[sz - 1] = (char)i;
        }
        slot[k] = p;
    }
    for (int k = 0; k < nslot; k++)
        if (slot[k] != NULL) {
            free(slot[k]);
            ops++;
        }
    double t = now_s() - t0;
    return t * 1e9 / (double)ops;
}

static double large(void)
{
    return churn(16, (size_t)64 << 10, (size_t)4 << 20, scaled(400000), 99, 0);
}

static double bigbuf(void)
{
    return churn(20, (size_t)5 << 20, (size_t)25 << 20, scaled(500), 7, 1);
}

/* ---- xthread ---------------------------------------------------------------------- *
 * rptest's pattern: random sizes over a wide range, half the frees on the other thread.
 * Remote objects travel in batches of X_BATCH through the other thread's box (larson's),
 * which it empties every X_BATCH steps.                                                       */
#define X_SLOTS 2048
#define X_BATCH 32
static long x_steps;
static long x_ops[2];

static void *xthread_thread(void *arg)
{
    int id = (int)(intptr_t)arg;
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 3);
    long ops = 0;
    void **slot = calloc(X_SLOTS, sizeof *slot);
    void *out[X_BATCH];
    int nout = 0;
    check(slot);
    for (long i = 1; i <= x_steps; i++) {
        int k = (int)(rnd(&s) % X_SLOTS);
        if (slot[k] != NULL) {
            if (i & 1) {
                out[nout++] = slot[k];
            } else {
                free(slot[k]);
                ops++;
            }
        }
        size_t sz = 8 + rnd(&s) % (16000 - 8 + 1);
        slot[k] = malloc(sz);
        check(slot[k]);
        use(slot[k], i);
        ((volatile char *)slot[k])[sz - 1] = (char)i;
        ops++;
        if (nout == X_BATCH) {              /* hand the batch to the other thread */
            ops += box_put(&box[1 - id], out, nout);
            nout = 0;
        }
        if (i % X_BATCH == 0)               /* free what the other thread handed us */
            ops += box_free_all(&box[id]);
    }
    for (int j = 0; j < nout; j++)
        free(out[j]);
    for (int k = 0; k < X_SLOTS; k++)
        free(slot[k]);
    ops += nout + X_SLOTS;
    free(slot);
    x_ops[id] = ops;
    return NULL;
}

static double xthread(void)
{
    x_steps = scaled(2000000);
    return run_pair(xthread_thread, x_ops);
}


/* ---- regrow64k, regrow1m, regrowmix ------------------------------------------------ *
 * A buffer grown by realloc the way a growing string or bytearray is: each step asks
 * for the old size plus a bit and writes the new part (memset), then checks that the
 * old contents came along (its first byte and the byte before the new part). The
 * buffer starts as NULL, so the first step of each pass is realloc(NULL, n).         */

/* Makes the writes through p observable, so that no store before a realloc or free
 * can be dropped. */
static inline void touch(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

static void check_kept(const char *q, size_t size, char first, char last)
{
    if (size > 0 && (q[0] != first || q[size - 1] != last)) {
        fprintf(stderr, "malloc_bench: realloc lost the contents of a %zu B block\n", size);
        exit(1);
    }
}

/* scaled(final / step) steps of +step bytes, from step to final bytes: one pass at
 * scale 1; past final, the buffer is freed and grown again from NULL. Returns ns/step. */
static double regrow(size_t step, size_t final)
{
    long n = scaled((long)(final / step));
    char *p = NULL, first = 0;
    size_t size = 0;
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        if (size + step > final) {
            free(p);
            p = NULL;
            size = 0;
        }
        char *q = realloc(p, size + step);
        check(q);
        check_kept(q, size, first, (char)(i - 1));
        if (size == 0)
            first = (char)i;
        memset(q + size, (char)i, step);
        touch(q);
        p = q;
        size += step;
    }
    free(p);
    double t = now_s() - t0;
    return t * 1e9 / (double)n;
}

static double regrow64k(void)
{
    return regrow((size_t)64 << 10, (size_t)64 << 20);
}

static double regrow1m(void)
{
    return regrow((size_t)1 << 20, (size_t)256 << 20);
}

/* scaled(RM_STEPS) steps of +4..64 KiB (any byte count) up to 128 MiB, each followed by
 * 1..4 mallocs of 16..512 B (written, kept) and, one time in three, the free of one of
 * the kept objects at random. A pass ends when the next step would pass 128 MiB: the
 * buffer and the kept objects are freed. Returns ns per step. */
#define RM_STEPS 3863L          /* the steps of the first pass with this seed */
static double regrowmix(void)
{
    const size_t lo = (size_t)4 << 10, hi = (size_t)64 << 10, final = (size_t)128 << 20;
    long n = scaled(RM_STEPS);
    size_t cap = final / lo * 4;
    void **live = malloc(cap * sizeof *live);
    check(live);
    size_t nlive = 0, size = 0;
    char *p = NULL, first = 0;
    uint64_t s = 0x853c49e6748fea9bull;
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        size_t add = lo + rnd(&s) % (hi - lo + 1);
        if (size + add > final) {
            free(p);
            p = NULL;
            size = 0;
            for (size_t j = 0; j < nlive; j++)
                free(live[j]);
            nlive = 0;
        }
        char *q = realloc(p, size + add);
        check(q);
        check_kept(q, size, first, (char)(i - 1));
        if (size == 0)
            first = (char)i;
        memset(q + size, (char)i, add);
        touch(q);
        p = q;
        size += add;
        for (int k = 1 + (int)(rnd(&s) % 4); k > 0; k--) {
            size_t sz = 16 + rnd(&s) % (512 - 16 + 1);
            void *o = malloc(sz);
            check(o);
            memset(o, (char)i, sz);
            touch(o);
            live[nlive++] = o;
        }
        if (rnd(&s) % 3 == 0) {
            size_t j = rnd(&s) % nlive;
            free(live[j]);
            live[j] = live[--nlive];
        }
    }
    free(p);
    for (size_t j = 0; j < nlive; j++)
        free(live[j]);
    double t = now_s() - t0;
    free(live);
    return t * 1e9 / (double)n;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        double (*fn)(void);
    } w[] = {
        { "pairs", pairs }, { "ring", ring }, { "prodcons", prodcons },
        { "larson", larson }, { "xthread", xthread }, { "large", large },
        { "bigbuf", bigbuf }, { "regrow64k", regrow64k },
        { "regrow1m", regrow1m }, { "regrowmix", regrowmix },
    };
    if (argc > 2)
        scale = atof(argv[2]);
    for (size_t i = 0; argc > 1 && scale > 0 && i < sizeof w / sizeof w[0]; i++)
        if (strcmp(argv[1], w[i].name) == 0) {
            gen_sizes();
            double ns = w[i].fn();
            struct rusage ru;
            getrusage(RUSAGE_SELF, &ru);
            printf("%s ns_per_op=%.2f rss_kb=%ld\n", w[i].name, ns, ru.ru_maxrss);
            return 0;
        }
    fprintf(stderr, "usage: malloc_bench pairs|ring|prodcons|larson|xthread|large|bigbuf|regrow64k|regrow1m|"
                    "regrowmix [SCALE]\n");
    return 2;
}
