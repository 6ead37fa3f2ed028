/*
 * tests/bench/sched_bench.c -- scheduler benchmarks (tests/bench/run.sh runs them and
 * the Go twins in tests/bench/go/ side by side).
 *
 *   sched_bench spawn  [N]    spawn N green threads that each bump a counter, wait for all;
 *                             prints ns per green thread
 *   sched_bench skynet [N]    Go's skynet: a 10-ary tree of N leaves (N a power of 10),
 *                             each node sums its children; a node waits with a park/ready
 *                             counter (channels replace it once they exist); prints ms
 *   sched_bench yield  [N]    4 green threads on 1 P each yield N times; ns per yield
 *   sched_bench parked [N]    N green threads parked forever; RSS bytes per parked thread
 * Each prints one line "name value unit". nprocs from $WEFT_MAXPROCS (else all CPUs).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "weft.h"
#include "sched/sched.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

/* ---- a join counter: the parent parks until its children are done -------------------- */
struct join {
    _Atomic long count;
    _Atomic int wake;          /* 0 running, 1 done before the parent parked, 2 parked */
    struct g *waiter;
};

static int join_unlock(struct g *gp, void *arg)
{
    (void)gp;
    struct join *j = arg;
    int expect = 0;
    /* park only if no child finished the count yet; else readied at once */
    return atomic_compare_exchange_strong(&j->wake, &expect, 2);
}

static void join_wait(struct join *j)
{
    if (atomic_load(&j->count) == 0)
        return;
    j->waiter = weft__curg();
    weft__park(join_unlock, j, "join");
}

static void join_done(struct join *j)
{
    if (atomic_fetch_sub(&j->count, 1) == 1 && atomic_exchange(&j->wake, 1) == 2)
        weft__ready(j->waiter);
}

/* ---- spawn-join -------------------------------------------------------------------------- */
static struct join spawn_join;
static void leaf(void *arg)
{
    (void)arg;
    join_done(&spawn_join);
}

static int spawn_main(void *arg)
{
    long n = *(long *)arg;
    atomic_store(&spawn_join.count, n);
    double t0 = now_s();
    for (long i = 0; i < n; i++)
        if (weft_spawn(leaf, NULL) != 0)
            return 1;
    join_wait(&spawn_join);
    printf("spawn %.1f ns\n", (now_s() - t0) * 1e9 / (double)n);
    return 0;
}

/* ---- skynet -------------------------------------------------------------------------------- */
struct sky {
    long num, size;
    _Atomic long sum;
    struct sky *parent;
    struct join join;
};

static void skynet(void *arg)
{
    struct sky *s = arg;
    long result;
    if (s->size == 1) {
        result = s->num;
    } else {
        struct sky kids[10];
        long sz = s->size / 10;
        atomic_store(&s->join.count, 10);
        atomic_store(&s->join.wake, 0);
        atomic_store(&s->sum, 0);
        for (int i = 0; i < 10; i++) {
            kids[i].num = s->num + i * sz;
            kids[i].size = sz;
            kids[i].parent = s;
            if (weft_spawn(skynet, &kids[i]) != 0)
                abort();
        }
        join_wait(&s->join);
        result = atomic_load(&s->sum);
    }
    if (s->parent != NULL) {
        atomic_fetch_add(&s->parent->sum, result);
        join_done(&s->parent->join);
    } else {
        atomic_store(&s->sum, result);
    }
}

static int skynet_main(void *arg)
{
    long n = *(long *)arg;
    struct sky root = { .num = 0, .size = n };
    double t0 = now_s();
    skynet(&root);
    double ms = (now_s() - t0) * 1e3;
    long want = n * (n - 1) / 2;
    if (atomic_load(&root.sum) != want) {
        fprintf(stderr, "skynet: sum %ld, want %ld\n", atomic_load(&root.sum), want);
        return 1;
    }
    printf("skynet %.1f ms\n", ms);
    return 0;
}

/* ---- yield ---------------------------------------------------------------------------------- */
static long yield_n;
static struct join yield_join;
static void yielder(void *arg)
{
    (void)arg;
    for (long i = 0; i < yield_n; i++)
        weft_yield();
    join_done(&yield_join);
}

static int yield_main(void *arg)
{
    yield_n = *(long *)arg;
    atomic_store(&yield_join.count, 4);
    double t0 = now_s();
    for (int i = 0; i < 4; i++)
        weft_spawn(yielder, NULL);
    join_wait(&yield_join);
    printf("yield %.1f ns\n", (now_s() - t0) * 1e9 / (double)(4 * yield_n));
    return 0;
}

/* ---- parked ---------------------------------------------------------------------------------- */
static struct join parked_join;
static int never(struct g *gp, void *arg)
{
    (void)gp, (void)arg;
    return 1;
}

static void parker(void *arg)
{
    (void)arg;
    join_done(&parked_join);
    weft__park(never, NULL, "forever");
}

static long rss_bytes(void)
{
    long pages = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * sysconf(_SC_PAGESIZE);
}

static int parked_main(void *arg)
{
    long n = *(long *)arg;
    atomic_store(&parked_join.count, n);
    long before = rss_bytes();
    for (long i = 0; i < n; i++)
        if (weft_spawn(parker, NULL) != 0)
            return 1;
    join_wait(&parked_join);
    long after = rss_bytes();
    printf("parked %.0f bytes\n", (double)(after - before) / (double)n);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: sched_bench spawn|skynet|yield|parked [N]\n");
        return 2;
    }
    const char *what = argv[1];
    long n = argc > 2 ? atol(argv[2]) : 0;
    weft_config cfg = { 0 };
    int (*fn)(void *);
    if (strcmp(what, "spawn") == 0) {
        fn = spawn_main;
        n = n ? n : 1000000;
    } else if (strcmp(what, "skynet") == 0) {
        fn = skynet_main;
        n = n ? n : 1000000;
    } else if (strcmp(what, "yield") == 0) {
        fn = yield_main;
        n = n ? n : 2000000;
        cfg.nprocs = 1;
    } else if (strcmp(what, "parked") == 0) {
        fn = parked_main;
        n = n ? n : 1000000;
    } else {
        fprintf(stderr, "sched_bench: unknown benchmark %s\n", what);
        return 2;
    }
    return weft_run(fn, &n, &cfg);
}
