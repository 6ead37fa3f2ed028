/*
 * tests/bench/sched_bench.c -- scheduler benchmarks (tests/bench/run.sh runs them and
 * the Go twins in tests/bench/go/ side by side).
 *
 *   sched_bench spawn  [N]    spawn N green threads that each bump a counter, wait for all;
 *                             prints ns per green thread
 *   sched_bench skynet [N]    Go's skynet: a 10-ary tree of N leaves (N a power of 10),
 *                             each node sums its children over an unbuffered channel; ms
 *   sched_bench pingpong [N]  unbuffered ping-pong between two green threads; ns per round trip
 *   sched_bench chanbuf [N]   1 producer, 1 consumer, a 128-slot channel; ns per element
 *   sched_bench mutex [N]     8 green threads share a mutex (N lock/unlock each); ns per lock
 *   sched_bench sleep [N] [K] N green threads each sleep 10 ms ten times; wall ms, CPU ns per
 *                             sleep; K: their stacks' size in KiB (default: the runtime's, 256)
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
    j->waiter = weft__current_g();
    weft__sched_park(join_unlock, j, "join");
}

static void join_done(struct join *j)
{
    if (atomic_fetch_sub(&j->count, 1) == 1 && atomic_exchange(&j->wake, 1) == 2)
        weft__sched_ready(j->waiter);
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

/* ---- skynet (Go's, on unbuffered channels) -------------------------------------------------- */
struct sky {
    long num, size;
    weft_chan *out;
};

static void skynet(void *arg)
{
    struct sky *s = arg;
    long sum = 0;
    if (s->size == 1) {
        sum = s->num;
    } else {
        struct sky kids[10];
        weft_chan *rc;
        if (weft_chan_make(&rc, sizeof(long), 0) != 0)
            abort();
        long sz = s->size / 10;
        for (int i = 0; i < 10; i++) {
            kids[i] = (struct sky){ s->num + i * sz, sz, rc };
            if (weft_spawn(skynet, &kids[i]) != 0)
                abort();
        }
        for (int i = 0; i < 10; i++) {
            long v;
            weft_chan_recv(rc, &v);
            sum += v;
        }
        weft_chan_free(rc);
    }
    weft_chan_send(s->out, &sum);
}

static int skynet_main(void *arg)
{
    long n = *(long *)arg;
    weft_chan *c;
    weft_chan_make(&c, sizeof(long), 0);
    struct sky root = { 0, n, c };
    double t0 = now_s();
    weft_spawn(skynet, &root);
    long sum;
    weft_chan_recv(c, &sum);
    double ms = (now_s() - t0) * 1e3;
    if (sum != n * (n - 1) / 2) {
        fprintf(stderr, "skynet: sum %ld, want %ld\n", sum, n * (n - 1) / 2);
        return 1;
    }
    printf("skynet %.1f ms\n", ms);
    return 0;
}

/* ---- channels ---------------------------------------------------------------------------------- */
static weft_chan *ping, *pong;
static void ponger(void *arg)
{
    (void)arg;
    long v;
    while (weft_chan_recv(ping, &v) == 0)
        weft_chan_send(pong, &v);
}

static int pingpong_main(void *arg)
{
    long n = *(long *)arg;
    weft_chan_make(&ping, sizeof(long), 0);
    weft_chan_make(&pong, sizeof(long), 0);
    weft_spawn(ponger, NULL);
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        long v = i;
        weft_chan_send(ping, &v);
        weft_chan_recv(pong, &v);
    }
    printf("pingpong %.1f ns\n", (now_s() - t0) * 1e9 / (double)n);
    weft_chan_close(ping);
    return 0;
}

static weft_chan *buf;
static void producer(void *arg)
{
    long n = *(long *)arg;
    for (long i = 0; i < n; i++)
        weft_chan_send(buf, &i);
    weft_chan_close(buf);
}

static int chanbuf_main(void *arg)
{
    weft_chan_make(&buf, sizeof(long), 128);
    double t0 = now_s();
    weft_spawn(producer, arg);
    long v, n = 0;
    while (weft_chan_recv(buf, &v) == 0)
        n++;
    printf("chanbuf %.1f ns\n", (now_s() - t0) * 1e9 / (double)n);
    return 0;
}

/* ---- mutex ---------------------------------------------------------------------------------------- */
static weft_mutex mu = WEFT_MUTEX_INIT;
static weft_wg mu_wg = WEFT_WG_INIT;
static long mu_count;
static void locker(void *arg)
{
    long n = *(long *)arg;
    for (long i = 0; i < n; i++) {
        weft_mutex_lock(&mu);
        mu_count++;
        weft_mutex_unlock(&mu);
    }
    weft_wg_done(&mu_wg);
}

static int mutex_main(void *arg)
{
    long n = *(long *)arg;
    weft_wg_add(&mu_wg, 8);
    double t0 = now_s();
    for (int i = 0; i < 8; i++)
        weft_spawn(locker, arg);
    weft_wg_wait(&mu_wg);
    if (mu_count != 8 * n)
        return 1;
    printf("mutex %.1f ns\n", (now_s() - t0) * 1e9 / (double)(8 * n));
    return 0;
}

/* ---- sleep ------------------------------------------------------------------------------------------ */
static weft_wg sl_wg = WEFT_WG_INIT;
static void sleeper(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10; i++)
        weft_sleep(10 * WEFT_MILLISECOND);
    weft_wg_done(&sl_wg);
}

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static int sleep_main(void *arg)
{
    long n = *(long *)arg;
    weft_wg_add(&sl_wg, n);
    double t0 = now_s(), c0 = cpu_s();
    for (long i = 0; i < n; i++)
        weft_spawn(sleeper, NULL);
    weft_wg_wait(&sl_wg);
    printf("sleep %.1f ms wall, %.0f ns cpu per sleep\n", (now_s() - t0) * 1e3,
           (cpu_s() - c0) * 1e9 / (double)(10 * n));
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
    weft__sched_park(never, NULL, "forever");
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
        fprintf(stderr, "usage: sched_bench spawn|skynet|yield|parked|pingpong|chanbuf|mutex|sleep [N]\n");
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
    } else if (strcmp(what, "pingpong") == 0) {
        fn = pingpong_main;
        n = n ? n : 1000000;
    } else if (strcmp(what, "chanbuf") == 0) {
        fn = chanbuf_main;
        n = n ? n : 5000000;
    } else if (strcmp(what, "mutex") == 0) {
        fn = mutex_main;
        n = n ? n : 500000;
    } else if (strcmp(what, "sleep") == 0) {
        fn = sleep_main;
        n = n ? n : 100000;
        cfg.stack_size = argc > 3 ? (size_t)atol(argv[3]) * 1024 : 0;
    } else {
        fprintf(stderr, "sched_bench: unknown benchmark %s\n", what);
        return 2;
    }
    return weft_run(fn, &n, &cfg);
}
