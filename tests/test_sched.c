/*
 * tests/test_sched.c -- the scheduler through the public API: spawn, yield, run/stop,
 * plain-thread spawns, fairness, stealing, blocking calls, stacks, idle CPU, dump.
 * Every scenario runs with nprocs 1 and 2, and again with WEFT_DEBUG=migrate=1
 * (the allocator reads WEFT_DEBUG once, at the first weft call of the process; Criterion
 * runs each test in a fresh process, so each test sets it first).
 */
#include <criterion/criterion.h>
#include <sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "weft.h"
#include "tests/common.h"

/* ---- spawn and finish many ---------------------------------------------------------- */
static _Atomic long done;
static void leaf(void *arg)
{
    (void)arg;
    atomic_fetch_add(&done, 1);
}

struct many { long n; };
static int spawn_many_main(void *arg)
{
    struct many *m = arg;
    for (long i = 0; i < m->n; i++)
        cr_assert_eq(weft_spawn(leaf, NULL), 0);
    while (atomic_load(&done) < m->n)
        weft_yield();
    return 7;
}

static void spawn_many(int nprocs, int migrate, long n)
{
    mode(migrate);
    atomic_store(&done, 0);
    struct many m = { n };
    weft_config cfg = { .nprocs = nprocs };
    cr_assert_eq(weft_run(spawn_many_main, &m, &cfg), 7);
    cr_assert_eq(atomic_load(&done), n);
}

TestSuite(sched, .timeout = 60);

static long many_n(void) { return tsan() ? 10000 : sanitized() ? 100000 : 1000000; }
Test(sched, million_green_threads_1p) { spawn_many(1, 0, many_n()); }
Test(sched, million_green_threads_2p) { spawn_many(2, 0, many_n()); }
Test(sched, many_green_threads_migrate_1p) { spawn_many(1, 1, 2000); }
Test(sched, many_green_threads_migrate_2p) { spawn_many(2, 1, 2000); }

/* ---- weft_run returns main's value; restart ------------------------------------------- */
static int ret_main(void *arg) { return *(int *)arg; }

Test(sched, run_returns_main_value)
{
    int v = 12345;
    cr_assert_eq(weft_run(ret_main, &v, NULL), 12345);
    v = -3;
    cr_assert_eq(weft_run(ret_main, &v, NULL), -3);
    cr_assert_eq(weft_nprocs(), 0);
}

static _Atomic int counter;
static void bump(void *arg) { (void)arg; atomic_fetch_add(&counter, 1); }

Test(sched, start_stop_start_again)
{
    for (int round = 0; round < 3; round++) {
        weft_config cfg = { .nprocs = 1 + round % 2 };
        atomic_store(&counter, 0);
        cr_assert_eq(weft_start(&cfg), 0);
        cr_assert_eq(weft_start(&cfg), -EBUSY);
        cr_assert_eq(weft_nprocs(), cfg.nprocs);
        for (int i = 0; i < 1000; i++)
            cr_assert_eq(weft_spawn(bump, NULL), 0);
        cr_assert_eq(weft_stop(), 0);
        cr_assert_eq(atomic_load(&counter), 1000);
    }
    cr_assert_eq(weft_spawn(bump, NULL), -ESRCH);
    cr_assert_eq(weft_stop(), -ESRCH);
}

/* ---- spawn from plain threads ------------------------------------------------------------ */
static void *plain_spawner(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10000; i++)
        if (weft_spawn(bump, NULL) != 0)
            return (void *)1;
    return NULL;
}

static void plain_spawns(int nprocs, int migrate)
{
    mode(migrate);
    weft_config cfg = { .nprocs = nprocs };
    atomic_store(&counter, 0);
    cr_assert_eq(weft_start(&cfg), 0);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, plain_spawner, NULL);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        cr_assert_null(r);
    }
    cr_assert_eq(weft_self(), 0);
    cr_assert_eq(weft_stop(), 0);
    cr_assert_eq(atomic_load(&counter), 40000);
}

Test(sched, spawn_from_plain_threads_1p) { plain_spawns(1, 0); }
Test(sched, spawn_from_plain_threads_2p) { plain_spawns(2, 0); }
Test(sched, spawn_from_plain_threads_migrate) { plain_spawns(2, 1); }

/* ---- spawns from plain and green threads while dumps run (spawn records, free lists) --- */
static _Atomic long sd_ran, sd_spawned;
static _Atomic int sd_stop_plain, sd_stop_dump;
static _Atomic long sd_dumps;

static void sd_leaf(void *arg)
{
    atomic_fetch_add(&sd_ran, 1);
    if (((uintptr_t)arg & 3) == 0)
        weft_yield();
}

static void sd_spawner(void *arg)
{
    (void)arg;
    for (long i = 0; i < 20; i++) {
        /* names and a non-default stack size: both travel through the record */
        weft_spawn_opts o = { .name = (i & 1) ? "sd-leaf" : NULL,
                              .stack_size = i % 3 == 0 ? 32768 : 0 };
        if (weft_spawn_ex(sd_leaf, (void *)(uintptr_t)i, &o, NULL) == 0)
            atomic_fetch_add(&sd_spawned, 1);
    }
    atomic_fetch_add(&sd_ran, 1);
}

static void *sd_plain(void *arg)
{
    (void)arg;
    for (long i = 0; i < 3000 && !atomic_load(&sd_stop_plain); i++)
        if (weft_spawn(i % 16 == 0 ? sd_spawner : sd_leaf, (void *)(uintptr_t)i) == 0)
            atomic_fetch_add(&sd_spawned, 1);
    return NULL;
}

static void *sd_dumper(void *arg)
{
    (void)arg;
    int fd = open("/dev/null", O_WRONLY);
    while (!atomic_load(&sd_stop_dump)) {
        weft_dump(fd);
        atomic_fetch_add(&sd_dumps, 1);
    }
    close(fd);
    return NULL;
}

static void spawn_dump(int nprocs, int migrate)
{
    mode(migrate);
    atomic_store(&sd_stop_dump, 0);
    pthread_t d;
    pthread_create(&d, NULL, sd_dumper, NULL);
    for (int cycle = 0; cycle < 3; cycle++) {
        weft_config cfg = { .nprocs = nprocs };
        atomic_store(&sd_ran, 0);
        atomic_store(&sd_spawned, 0);
        atomic_store(&sd_stop_plain, 0);
        cr_assert_eq(weft_start(&cfg), 0);
        pthread_t th[3];
        for (int i = 0; i < 3; i++)
            pthread_create(&th[i], NULL, sd_plain, NULL);
        for (int i = 0; i < 3; i++)
            pthread_join(th[i], NULL);
        cr_assert_eq(weft_stop(), 0);
        cr_assert_eq(atomic_load(&sd_ran), atomic_load(&sd_spawned),
                     "cycle %d: %ld ran, %ld spawned", cycle, atomic_load(&sd_ran),
                     atomic_load(&sd_spawned));
    }
    atomic_store(&sd_stop_dump, 1);
    pthread_join(d, NULL);
    cr_assert_gt(atomic_load(&sd_dumps), 0);
}

Test(sched, spawns_while_dumping_1p) { spawn_dump(1, 0); }
Test(sched, spawns_while_dumping_2p) { spawn_dump(2, 0); }
Test(sched, spawns_while_dumping_migrate) { spawn_dump(2, 1); }

/* ---- fairness: two busy yielding green threads on one P both progress ---------------------- */
static _Atomic long prog[2];
static _Atomic int stop_flag;
static void busy_yielder(void *arg)
{
    int i = (int)(intptr_t)arg;
    while (!atomic_load(&stop_flag)) {
        atomic_fetch_add(&prog[i], 1);
        weft_yield();
    }
}

static int fairness_main(void *arg)
{
    long target = (long)(intptr_t)arg;
    weft_spawn(busy_yielder, (void *)0);
    weft_spawn(busy_yielder, (void *)1);
    while (atomic_load(&prog[0]) + atomic_load(&prog[1]) < target)
        weft_yield();
    atomic_store(&stop_flag, 1);
    long a = atomic_load(&prog[0]), b = atomic_load(&prog[1]);
    cr_assert_gt(a, target / 4, "thread 0 starved: %ld vs %ld", a, b);
    cr_assert_gt(b, target / 4, "thread 1 starved: %ld vs %ld", a, b);
    return 0;
}

static void fairness(int migrate, long target)
{
    mode(migrate);
    weft_config cfg = { .nprocs = 1 };
    cr_assert_eq(weft_run(fairness_main, (void *)(intptr_t)target, &cfg), 0);
}

Test(sched, fairness_two_yielders_one_p) { fairness(0, 1000000); }
Test(sched, fairness_migrate) { fairness(1, 2000); }

/* ---- work spreads over Ps ---------------------------------------------------------------------
 * Timing ratios belong to the benchmarks (the suite runs tests in parallel on a small
 * machine); here: with 2 Ps, CPU-bound green threads run at the same time on two
 * different OS threads, and the second P got its work by stealing or the global queue. */
static _Atomic int nbusy;
static struct span { pthread_t th; struct timespec a, b; } spans[8];

static void spin_work(void *arg)
{
    int i = (int)(intptr_t)arg;
    spans[i].th = pthread_self();
    clock_gettime(CLOCK_MONOTONIC, &spans[i].a);
    volatile uint64_t x = (uint64_t)i;
    for (int k = 0; k < 20000000; k++)
        x = x * 6364136223846793005ull + 1;
    clock_gettime(CLOCK_MONOTONIC, &spans[i].b);
    atomic_fetch_add(&nbusy, 1);
}

static double ts(struct timespec t) { return t.tv_sec + t.tv_nsec / 1e9; }
static void spawn_from_here(void);

/* A green thread spawns the work: it lands in its own P's queue, so the other P can
 * only get it by stealing. */
static void steal_spawner(void *arg)
{
    (void)arg;
    for (int i = 0; i < 8; i++)
        weft_spawn(spin_work, (void *)(intptr_t)i);
}

static void spread(void (*how)(void))
{
    weft_config cfg = { .nprocs = 2 };
    atomic_store(&nbusy, 0);
    memset(spans, 0, sizeof spans);
    cr_assert_eq(weft_start(&cfg), 0);
    how();
    while (atomic_load(&nbusy) < 8)
        usleep(1000);
    weft_sched_stats st;
    weft_sched_stats_read(&st);
    cr_assert_eq(weft_stop(), 0);
    int overlaps = 0;
    for (int i = 0; i < 8; i++)
        for (int j = i + 1; j < 8; j++)
            if (!pthread_equal(spans[i].th, spans[j].th) && ts(spans[i].a) < ts(spans[j].b) &&
                ts(spans[j].a) < ts(spans[i].b))
                overlaps++;
    cr_assert_gt(overlaps, 0, "no two green threads ran at the same time on different threads");
    if (how != spawn_from_here)
        cr_assert_gt(st.steals, 0, "the second P got no work by stealing");
}

static void spawn_from_here(void)
{
    for (int i = 0; i < 8; i++)
        weft_spawn(spin_work, (void *)(intptr_t)i);
}

static void spawn_from_green(void)
{
    weft_spawn(steal_spawner, NULL);
}

Test(sched, work_spreads_from_plain_thread, .timeout = 120) { spread(spawn_from_here); }
Test(sched, work_spreads_by_stealing, .timeout = 120) { spread(spawn_from_green); }

/* ---- weft_blocking keeps the others running on 1 P -------------------------------------------- */
static _Atomic long ticks;
static _Atomic int blocker_done;
static void sleep_100ms(void *arg)
{
    (void)arg;
    usleep(100000);
}

static void blocker(void *arg)
{
    (void)arg;
    weft_blocking(sleep_100ms, NULL);
    atomic_store(&blocker_done, 1);
}

static void ticker(void *arg)
{
    (void)arg;
    while (!atomic_load(&blocker_done)) {
        atomic_fetch_add(&ticks, 1);
        weft_yield();
    }
}

static int blocking_main(void *arg)
{
    (void)arg;
    atomic_store(&blocker_done, 0);
    atomic_store(&ticks, 0);
    weft_spawn(blocker, NULL);
    weft_spawn(ticker, NULL);
    while (!atomic_load(&blocker_done))
        weft_yield();
    return 0;
}

static void blocking(int migrate)
{
    mode(migrate);
    weft_config cfg = { .nprocs = 1 };
    cr_assert_eq(weft_run(blocking_main, NULL, &cfg), 0);
    cr_assert_gt(atomic_load(&ticks), 100, "others made %ld steps during a 100 ms blocking call",
                 atomic_load(&ticks));
}

Test(sched, blocking_keeps_others_running) { blocking(0); }

/* ---- a G that waits in a busy P's runnext still runs soon on an idle P ----------------------
 * The spawner (or waker) computes with no scheduling point: the new G sits in its P's
 * runnext, and only another P can run it (Go steals runnext after a few microseconds). */
static _Atomic int rn_flag;
static _Atomic int64_t rn_ran_at;
static void rn_child(void *arg)
{
    (void)arg;
    atomic_store(&rn_ran_at, weft_now());
    atomic_store(&rn_flag, 1);
}

static void rn_receiver(void *arg)
{
    long v;
    cr_assert_eq(weft_chan_recv(arg, &v), 0);
    rn_child(NULL);
}

static int rn_main(void *arg)
{
    bool by_ready = arg != NULL;
    weft_chan *c = NULL;
    if (by_ready) {
        cr_assert_eq(weft_chan_make(&c, sizeof(long), 1), 0);
        cr_assert_eq(weft_spawn(rn_receiver, c), 0);
        weft_yield();                                /* it parks in the receive */
        weft_yield();
    }
    int64_t t0 = weft_now();
    if (by_ready) {
        long v = 1;
        cr_assert_eq(weft_chan_send(c, &v), 0);      /* readies it into our runnext */
    } else {
        cr_assert_eq(weft_spawn(rn_child, NULL), 0); /* spawns it into our runnext */
    }
    while (!atomic_load(&rn_flag) && weft_now() - t0 < 2 * WEFT_SECOND)
        ;                                            /* no scheduling point */
    cr_assert(atomic_load(&rn_flag), "the green thread in a busy P's runnext never ran");
    int64_t lat = atomic_load(&rn_ran_at) - t0;
    cr_assert_lt(lat, 100 * WEFT_MILLISECOND, "it ran after %lld us", (long long)(lat / 1000));
    if (c != NULL)
        weft_chan_free(c);
    return 0;
}

static void runnext_runs(bool by_ready, int migrate)
{
    mode(migrate);
    atomic_store(&rn_flag, 0);
    weft_config cfg = { .nprocs = 2 };
    cr_assert_eq(weft_run(rn_main, by_ready ? (void *)1 : NULL, &cfg), 0);
}

Test(sched, spawned_while_spawner_computes_2p) { runnext_runs(false, 0); }
Test(sched, readied_while_waker_computes_2p) { runnext_runs(true, 0); }
Test(sched, readied_while_waker_computes_migrate) { runnext_runs(true, 1); }

Test(sched, blocking_keeps_others_running_migrate) { blocking(1); }

/* ---- stacks ------------------------------------------------------------------------------------- */
static int recurse(int depth, volatile char *prev)
{
    volatile char buf[256];
    buf[0] = (char)depth;
    buf[255] = prev != NULL ? prev[0] : 0;
    if (depth == 0)
        return buf[0] + buf[255];
    return recurse(depth - 1, buf) + buf[0];
}

static _Atomic int deep_result;
static void deep(void *arg)
{
    /* ~ 300 bytes a frame: 600 frames fit easily in 256 KiB */
    atomic_store(&deep_result, recurse((int)(intptr_t)arg, NULL));
}

static int deep_main(void *arg)
{
    (void)arg;
    atomic_store(&deep_result, -1);
    weft_spawn(deep, (void *)(intptr_t)600);
    while (atomic_load(&deep_result) == -1)
        weft_yield();
    return 0;
}

Test(sched, deep_recursion_within_the_stack)
{
    cr_assert_eq(weft_run(deep_main, NULL, NULL), 0);
    cr_assert_neq(atomic_load(&deep_result), -1);
}

static void overflow(void *arg)
{
    (void)arg;
    recurse(1 << 20, NULL);
}

static int overflow_main(void *arg)
{
    weft_spawn_opts o = { .name = "deep-diver", .stack_size = (size_t)(uintptr_t)arg };
    weft_spawn_ex(overflow, NULL, &o, NULL);
    for (;;)
        weft_yield();
    return 0;
}

static int overflow_child_64k(void)
{
    return weft_run(overflow_main, (void *)(uintptr_t)(64 * 1024), NULL);
}

/* A default-size stack: one of a slab, its guard installed with its batch. */
static int overflow_child_default(void)
{
    return weft_run(overflow_main, NULL, NULL);
}

static void overflow_aborts(int (*child)(void), const char *want)
{
    if (sanitized())
        cr_skip_test("the sanitizers handle SIGSEGV themselves");
    char buf[4096];
    int status = child_stderr(child, buf, sizeof buf);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "status %#x, stderr: %s", status, buf);
    cr_assert_not_null(strstr(buf, "weft: green thread"), "stderr: %s", buf);
    cr_assert_not_null(strstr(buf, want), "stderr: %s", buf);
}

Test(sched, stack_overflow_aborts_with_message)
{
    overflow_aborts(overflow_child_64k, "(deep-diver) overflowed its 64 KiB stack");
}

Test(sched, default_stack_overflow_aborts_with_message)
{
    overflow_aborts(overflow_child_default, "(deep-diver) overflowed its 256 KiB stack");
}

/* ---- fresh stacks claimed a batch at a time by several Ms at once are all distinct ------------------- */
#define DISTINCT_N 3000
static uintptr_t distinct_at[DISTINCT_N];
static _Atomic int distinct_started;
static weft_wg distinct_gate = WEFT_WG_INIT, distinct_done = WEFT_WG_INIT;
static int distinct_spawners;

static void distinct_leaf(void *arg)
{
    volatile char here = 0;
    distinct_at[(intptr_t)arg] = (uintptr_t)&here;
    atomic_fetch_add(&distinct_started, 1);
    weft_wg_wait(&distinct_gate);        /* every leaf holds its stack until all have one */
    weft_wg_done(&distinct_done);
}

static void distinct_spawner(void *arg)
{
    for (intptr_t i = (intptr_t)arg; i < DISTINCT_N; i += distinct_spawners)
        cr_assert_eq(weft_spawn(distinct_leaf, (void *)i), 0);
}

static int cmp_uintptr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

static int distinct_main(void *arg)
{
    distinct_spawners = (int)(intptr_t)arg;
    weft_wg_add(&distinct_gate, 1);
    weft_wg_add(&distinct_done, DISTINCT_N);
    for (int k = 0; k < distinct_spawners; k++)
        weft_spawn(distinct_spawner, (void *)(intptr_t)k);
    while (atomic_load(&distinct_started) < DISTINCT_N)
        weft_sleep(WEFT_MILLISECOND);
    static uintptr_t sorted[DISTINCT_N];
    memcpy(sorted, distinct_at, sizeof sorted);
    qsort(sorted, DISTINCT_N, sizeof sorted[0], cmp_uintptr);
    /* each leaf's local lies near the top of its 256 KiB stack: two on one stack would
     * be a few bytes apart */
    for (int i = 1; i < DISTINCT_N; i++)
        cr_assert_geq(sorted[i] - sorted[i - 1], (uintptr_t)255 * 1024,
                      "two live green threads %#lx and %#lx on one stack",
                      (unsigned long)sorted[i - 1], (unsigned long)sorted[i]);
    weft_mem_stats ms;
    weft_mem_stats_read(&ms);
    cr_assert_geq(ms.stacks_inuse, (uint64_t)DISTINCT_N * 256 * 1024);
    weft_wg_done(&distinct_gate);
    weft_wg_wait(&distinct_done);
    return 0;
}

static void distinct_stacks(int nprocs, int migrate)
{
    mode(migrate);
    weft_config cfg = { .nprocs = nprocs };
    cr_assert_eq(weft_run(distinct_main, (void *)(intptr_t)nprocs, &cfg), 0);
}

Test(sched, fresh_stacks_distinct_2p) { distinct_stacks(2, 0); }
Test(sched, fresh_stacks_distinct_4p) { distinct_stacks(4, 0); }
Test(sched, fresh_stacks_distinct_migrate) { distinct_stacks(4, 1); }

/* ---- an idle runtime uses no CPU ------------------------------------------------------------------- */
static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

Test(sched, idle_runtime_uses_no_cpu, .timeout = 30)
{
    if (tsan())
        cr_skip_test("ThreadSanitizer's own background thread uses CPU");
    weft_config cfg = { .nprocs = 2 };
    cr_assert_eq(weft_start(&cfg), 0);
    atomic_store(&counter, 0);
    for (int i = 0; i < 100; i++)
        weft_spawn(bump, NULL);
    while (atomic_load(&counter) < 100)
        usleep(1000);
    usleep(50000);                     /* let spinning Ms and sysmon settle */
    double c0 = cpu_seconds();
    sleep(1);
    double used = cpu_seconds() - c0;
    cr_assert_eq(weft_stop(), 0);
    cr_assert_lt(used, 0.001, "an idle second cost %.3f ms of CPU", used * 1e3);
}

/* ---- dump --------------------------------------------------------------------------------------------- */
static _Atomic int release_parked;
void napper(void *arg);   /* not static: dladdr names exported symbols (-rdynamic) */
void napper(void *arg)
{
    (void)arg;
    while (!atomic_load(&release_parked))
        weft_yield();
}

static int dump_main(void *arg)
{
    (void)arg;
    weft_spawn_opts o = { .name = "napper-1" };
    weft_spawn_ex(napper, NULL, &o, NULL);
    weft_yield();
    weft_spawn_opts o2 = { .name = "napper-2" };    /* not run before the dump (1 P) */
    weft_spawn_ex(napper, NULL, &o2, NULL);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    weft_dump(fds[1]);
    close(fds[1]);
    char tmp[8192];
    ssize_t r = read(fds[0], tmp, sizeof tmp - 1);
    close(fds[0]);
    cr_assert_gt(r, 0);
    tmp[r] = 0;
    cr_assert_not_null(strstr(tmp, "(napper-1)"), "dump: %s", tmp);
    cr_assert_not_null(strstr(tmp, "entry napper"), "dump: %s", tmp);
    cr_assert_not_null(strstr(tmp, "(main) [running]"), "dump: %s", tmp);
    cr_assert_not_null(strstr(tmp, "(napper-2) [runnable, not started] entry napper"),
                       "dump: %s", tmp);
    atomic_store(&release_parked, 1);
    return 0;
}

/* A dump written into a pipe that a green thread started after it drains: the dump may
 * not hold the locks a first run takes (newg's allg_lock), or both wait forever. */
static weft_wg dp_release = WEFT_WG_INIT, dp_read = WEFT_WG_INIT;
static _Atomic long dp_started, dp_bytes;
static void dp_waiter(void *arg)
{
    (void)arg;
    atomic_fetch_add(&dp_started, 1);
    weft_wg_wait(&dp_release);
}

static void dp_reader(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[4096];
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0)
        atomic_fetch_add(&dp_bytes, r);
    close(fd);
    weft_wg_done(&dp_read);
}

/* starts the reader 5 ms late: by then the dump has filled the pipe and waits */
static void dp_starter(void *arg)
{
    weft_sleep(5 * WEFT_MILLISECOND);
    cr_assert_eq(weft_spawn(dp_reader, arg), 0);
    weft_wg_wait(&dp_release);   /* no exit: its struct g would serve the reader */
}

static int dump_pipe_main(void *arg)
{
    (void)arg;
    enum { N = 1500 };     /* ~100 KB of dump: more than a pipe holds */
    weft_wg_add(&dp_release, 1);
    for (int i = 0; i < N; i++)
        cr_assert_eq(weft_spawn(dp_waiter, NULL), 0);
    while (atomic_load(&dp_started) < N)
        weft_yield();
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    weft_wg_add(&dp_read, 1);
    cr_assert_eq(weft_spawn(dp_starter, (void *)(intptr_t)fds[0]), 0);
    weft_dump(fds[1]);      /* blocks this M until the reader, on the other P, drains */
    close(fds[1]);
    weft_wg_wait(&dp_read);
    cr_assert_gt(atomic_load(&dp_bytes), 65536, "%ld bytes of dump", atomic_load(&dp_bytes));
    weft_wg_done(&dp_release);
    return 0;
}

Test(sched, dump_into_a_pipe_a_new_green_thread_drains, .timeout = 20)
{
    weft_config cfg = { .nprocs = 2 };
    cr_assert_eq(weft_run(dump_pipe_main, NULL, &cfg), 0);
}

/* A spawned G that has not run costs its spawn record (64 bytes), not a struct g:
 * 100 k spawned on 1 P (not run until main waits) take < 80 bytes each of heap. */
static weft_wg unstarted_wg = WEFT_WG_INIT;
static void unstarted(void *arg)
{
    (void)arg;
    weft_wg_done(&unstarted_wg);
}

static int unstarted_main(void *arg)
{
    (void)arg;
    enum { N = 100000 };
    weft_mem_stats m0, m1;
    weft_mem_stats_read(&m0);
    weft_wg_add(&unstarted_wg, N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(weft_spawn(unstarted, NULL), 0);
    weft_mem_stats_read(&m1);
    double per = (double)(m1.heap_alloc - m0.heap_alloc) / N;
    cr_assert_lt(per, 80.0, "%.1f bytes of heap per spawned, not started green thread", per);
    weft_wg_wait(&unstarted_wg);
    weft_sched_stats st;
    weft_sched_stats_read(&st);
    cr_assert_geq(st.spawned, N + 1);
    return 0;
}

Test(sched, spawned_not_started_costs_a_record)
{
    weft_config cfg = { .nprocs = 1 };
    cr_assert_eq(weft_run(unstarted_main, NULL, &cfg), 0);
}

Test(sched, dump_lists_green_threads)
{
    weft_config cfg = { .nprocs = 1 };
    cr_assert_eq(weft_run(dump_main, NULL, &cfg), 0);
}

/* ---- self, now, stats ----------------------------------------------------------------------------------- */
static _Atomic uint64_t seen_id;
static void who(void *arg)
{
    (void)arg;
    atomic_store(&seen_id, weft_self());
}

static int ids_main(void *arg)
{
    (void)arg;
    uint64_t id = 0;
    cr_assert_neq(weft_self(), 0);
    weft_spawn_opts o = { .name = "who" };
    cr_assert_eq(weft_spawn_ex(who, NULL, &o, &id), 0);
    while (atomic_load(&seen_id) == 0)
        weft_yield();
    cr_assert_eq(atomic_load(&seen_id), id);
    int64_t t0 = weft_now();
    weft_yield();
    cr_assert_geq(weft_now(), t0);
    weft_sched_stats st;
    weft_sched_stats_read(&st);
    cr_assert_geq(st.spawned, 2);
    cr_assert_geq(st.threads_live, 1);
    cr_assert_gt(st.switches, 0);
    return 0;
}

Test(sched, self_now_stats)
{
    cr_assert_eq(weft_self(), 0);
    cr_assert_eq(weft_run(ids_main, NULL, NULL), 0);
    cr_assert_eq(weft_spawn_ex(NULL, NULL, NULL, NULL), -EINVAL);
}

/* ---- nprocs ------------------------------------------------------------------------------------------ */
Test(sched, nprocs_from_env_and_default)
{
    setenv("WEFT_MAXPROCS", "3", 1);
    cr_assert_eq(weft_start(NULL), 0);
    cr_assert_eq(weft_nprocs(), 3);
    cr_assert_eq(weft_stop(), 0);
    unsetenv("WEFT_MAXPROCS");
    cr_assert_eq(weft_start(NULL), 0);
    cpu_set_t set;
    cr_assert_eq(sched_getaffinity(0, sizeof set, &set), 0);
    cr_assert_leq(weft_nprocs(), CPU_COUNT(&set));
    cr_assert_geq(weft_nprocs(), 1);
    cr_assert_eq(weft_stop(), 0);
}

/* ---- SIGQUIT dumps and the program goes on; schedtrace prints ---------------------------------------- */
static _Atomic int quit_go;
static void quit_worker(void *arg)
{
    (void)arg;
    while (!atomic_load(&quit_go))
        weft_yield();
}

static int quit_main(void *arg)
{
    (void)arg;
    weft_spawn_opts o = { .name = "quit-worker" };
    weft_spawn_ex(quit_worker, NULL, &o, NULL);
    weft_yield();
    kill(getpid(), SIGQUIT);
    for (int i = 0; i < 200; i++) {      /* give sysmon 200 ms to print */
        struct timespec t = { 0, 1000000 };
        nanosleep(&t, NULL);
        weft_yield();
    }
    atomic_store(&quit_go, 1);
    return 5;
}

static int quit_child(void)
{
    return weft_run(quit_main, NULL, NULL);
}

Test(sched, sigquit_dumps_and_continues)
{
    if (tsan())
        cr_skip_test("ThreadSanitizer holds asynchronous signals back");
    char buf[16384];
    int status = child_stderr(quit_child, buf, sizeof buf);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 5, "status %#x: %s", status, buf);
    cr_assert_not_null(strstr(buf, "SIGQUIT"), "stderr: %s", buf);
    cr_assert_not_null(strstr(buf, "(quit-worker)"), "stderr: %s", buf);
}

static void hog(void *arg)
{
    (void)arg;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do                                  /* 60 ms without a scheduling point */
        clock_gettime(CLOCK_MONOTONIC, &b);
    while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < 60000000L);
}

static int trace_main(void *arg)
{
    (void)arg;
    weft_spawn(hog, NULL);
    struct timespec t = { 0, 100000000 };
    nanosleep(&t, NULL);
    weft_yield();
    return 0;
}

static int trace_child(void)
{
    setenv("WEFT_DEBUG", "schedtrace=10", 1);
    weft_config cfg = { .nprocs = 2 };
    return weft_run(trace_main, NULL, &cfg);
}

Test(sched, schedtrace_prints_and_flags_long_runners)
{
    char buf[65536];
    int status = child_stderr(trace_child, buf, sizeof buf);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x: %s", status, buf);
    cr_assert_not_null(strstr(buf, "SCHED "), "stderr: %s", buf);
    cr_assert_not_null(strstr(buf, "procs=2"), "stderr: %s", buf);
    /* the hog, and main too (its nanosleep holds its P): one or both flagged */
    cr_assert(strstr(buf, "longrunning=1") != NULL || strstr(buf, "longrunning=2") != NULL,
              "stderr: %s", buf);
}

/* ---- stopping while green threads yield with full run queues ---------------------------------------
 * weft_run's teardown sets `stopping` while these still yield; a yield then went to the
 * global queue for more work and, with its ring full, spilled back into the global
 * queue under the lock it held: its M deadlocked on sched.lock and teardown waited. */
static void forever_yielder(void *arg)
{
    (void)arg;
    for (;;)
        weft_yield();
}

static int full_rings_main(void *arg)
{
    (void)arg;
    for (int i = 0; i < (tsan() ? 600 : 3000); i++)
        cr_assert_eq(weft_spawn(forever_yielder, NULL), 0);
    for (int i = 0; i < 2000; i++)
        weft_yield();
    return 0;
}

Test(sched, stop_while_yielding_with_full_rings, .timeout = 60)
{
    for (int round = 0; round < (tsan() ? 6 : 20); round++) {
        weft_config cfg = { .nprocs = 1 + round % 2 };
        cr_assert_eq(weft_run(full_rings_main, NULL, &cfg), 0);
    }
}

/* ---- a spawn flood: green threads that wake meanwhile do not wait behind it -----------------------
 * A spawner that outruns the Ps overflows its ring into the global queue, and so do Gs that
 * wake meanwhile; the global queue runs Gs that have run before never-run ones (runq.c,
 * GQ_RAN / GQ_NEW). In one FIFO the woken Gs waited behind the whole flood (100 k new Gs:
 * a 10 ms sleep took a second). On 1 P: FLOOD_SLEEPERS Gs wait on a channel, n Gs that
 * work ~2 us each are spawned, then the channel is closed; each sleeper, when it runs,
 * notes how many of the flood had started. All must run before half of the flood has
 * started (a ring ahead of them at most: a few hundred; ~n in one FIFO). Every G
 * completes, on 1 and 2 Ps and in migrate mode. */
#define FLOOD_SLEEPERS 500
static _Atomic long flood_started, flood_done, flood_parked, flood_woke_max;
static weft_wg flood_wg = WEFT_WG_INIT;
static weft_chan *flood_ch;

static void flood_worker(void *arg)
{
    (void)arg;
    atomic_fetch_add(&flood_started, 1);
    int64_t t0 = weft_now();
    while (weft_now() - t0 < 2000)
        ;
    atomic_fetch_add(&flood_done, 1);
    weft_wg_done(&flood_wg);
}

static void flood_sleeper(void *arg)
{
    (void)arg;
    int x;
    atomic_fetch_add(&flood_parked, 1);
    cr_assert_eq(weft_chan_recv(flood_ch, &x), -EPIPE);
    long seen = atomic_load(&flood_started), max = atomic_load(&flood_woke_max);
    while (seen > max && !atomic_compare_exchange_weak(&flood_woke_max, &max, seen))
        ;
    weft_wg_done(&flood_wg);
}

static int flood_main(void *arg)
{
    long n = (long)(intptr_t)arg;
    atomic_store(&flood_started, 0);
    atomic_store(&flood_done, 0);
    atomic_store(&flood_parked, 0);
    atomic_store(&flood_woke_max, 0);
    weft_wg_add(&flood_wg, n + FLOOD_SLEEPERS);
    cr_assert_eq(weft_chan_make(&flood_ch, sizeof(int), 0), 0);
    for (int i = 0; i < FLOOD_SLEEPERS; i++)
        cr_assert_eq(weft_spawn(flood_sleeper, NULL), 0);
    while (atomic_load(&flood_parked) < FLOOD_SLEEPERS)
        weft_yield();
    for (long i = 0; i < n; i++)
        cr_assert_eq(weft_spawn(flood_worker, NULL), 0);
    weft_chan_close(flood_ch);
    weft_wg_wait(&flood_wg);
    weft_chan_free(flood_ch);
    cr_assert_eq(atomic_load(&flood_done), n);
    return 0;
}

static void spawn_flood(int nprocs, int migrate, bool check_order)
{
    mode(migrate);
    long n = sanitized() ? 5000 : 30000;
    weft_config cfg = { .nprocs = nprocs };
    cr_assert_eq(weft_run(flood_main, (void *)(intptr_t)n, &cfg), 0);
    if (check_order)
        cr_assert_lt(atomic_load(&flood_woke_max), n / 2,
                     "woken green threads waited behind a flood: %ld of %ld new ones started first",
                     atomic_load(&flood_woke_max), n);
}

Test(sched, spawn_flood_woken_run_first_1p, .timeout = 60) { spawn_flood(1, 0, true); }
Test(sched, spawn_flood_completes_2p, .timeout = 60) { spawn_flood(2, 0, false); }
Test(sched, spawn_flood_completes_migrate, .timeout = 60) { spawn_flood(2, 1, false); }

/* ---- a million live green threads on a stock kernel (vm.max_map_count = 65530) --------------------- */
static _Atomic long started;
static _Atomic int release_all;
static void live_one(void *arg)
{
    (void)arg;
    atomic_fetch_add(&started, 1);
    while (!atomic_load(&release_all))
        weft_yield();
}

static long count_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    long n = 0;
    int c;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static int live_main(void *arg)
{
    long n = (long)(intptr_t)arg;
    for (long i = 0; i < n; i++)
        cr_assert_eq(weft_spawn(live_one, NULL), 0);
    while (atomic_load(&started) < n)
        weft_yield();
    /* every one of them has its own stack now */
    weft_mem_stats ms;
    weft_mem_stats_read(&ms);
    cr_assert_geq(ms.stacks_inuse, (uint64_t)n * 256 * 1024);
    long maps = count_maps();
    cr_assert_lt(maps, 60000, "%ld mappings for %ld live green threads", maps, n);
    atomic_store(&release_all, 1);
    return 0;
}

Test(sched, million_live_green_threads, .timeout = 240)
{
    long n = tsan() ? 2000 : sanitized() ? 50000 : 1000000;
    weft_config cfg = { .nprocs = 2 };
    cr_assert_eq(weft_run(live_main, (void *)(intptr_t)n, &cfg), 0);
    cr_assert_eq(atomic_load(&started), n);
}

/* ---- the allocator on green threads, with their caches per P, also in migrate mode ------------------- */
static _Atomic int alloc_ok;
static void alloc_worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    void *live[32] = { 0 };
    size_t sizes[32] = { 0 };
    for (int i = 0; i < 2000; i++) {
        seed = seed * 1103515245u + 12345u;
        int k = (int)(seed >> 16) % 32;
        if (live[k] != NULL) {
            for (size_t b = 0; b < sizes[k]; b++)
                if (((unsigned char *)live[k])[b] != (unsigned char)(k + sizes[k]))
                    return;
            weft_free(live[k]);
        }
        sizes[k] = 1 + (seed >> 8) % 3000;
        live[k] = weft_malloc(sizes[k]);
        memset(live[k], k + (int)sizes[k], sizes[k]);
        if (i % 50 == 0)
            weft_yield();           /* in migrate mode: resume on another M, another cache */
    }
    for (int k = 0; k < 32; k++)
        weft_free(live[k]);
    atomic_fetch_add(&alloc_ok, 1);
}

static int alloc_main(void *arg)
{
    int n = (int)(intptr_t)arg;
    for (int i = 0; i < n; i++)
        weft_spawn(alloc_worker, (void *)(uintptr_t)(i + 1));
    while (atomic_load(&alloc_ok) < n)
        weft_yield();
    return 0;
}

static void alloc_on_green_threads(int nprocs, int migrate, int n)
{
    mode(migrate);
    weft_config cfg = { .nprocs = nprocs };
    weft_mem_stats a, b;
    weft_mem_stats_read(&a);
    cr_assert_eq(weft_run(alloc_main, (void *)(intptr_t)n, &cfg), 0);
    weft_mem_stats_read(&b);
    cr_assert_eq(atomic_load(&alloc_ok), n);
    cr_assert_eq(b.mallocs - a.mallocs, b.frees - a.frees, "mallocs %llu frees %llu",
                 (unsigned long long)(b.mallocs - a.mallocs), (unsigned long long)(b.frees - a.frees));
}

Test(sched, allocator_on_green_threads_1p) { alloc_on_green_threads(1, 0, 200); }
Test(sched, allocator_on_green_threads_2p) { alloc_on_green_threads(2, 0, 200); }
Test(sched, allocator_on_green_threads_migrate) { alloc_on_green_threads(2, 1, 8); }

/* ---- absurd stack sizes are refused at spawn and start (issue 11) ---------------------------- */
/* 1 << 62 used to be accepted and abort the program at the thread's first run; SIZE_MAX
 * wrapped in the page rounding to a 16 KiB stack. Above WEFT_STACK_MAX: -EINVAL, and the
 * runtime goes on; WEFT_STACK_MAX itself works (address space, backed as touched). */
static const size_t absurd_stacks[] = { (size_t)1 << 62, SIZE_MAX, SIZE_MAX - 4095,
                                        WEFT_STACK_MAX + 1, WEFT_STACK_MAX + 4096 };
static weft_wg big_wg = WEFT_WG_INIT;
static _Atomic long big_sum;

static void big_stack_user(void *arg)
{
    (void)arg;
    volatile char buf[256 * 1024];          /* more than a default stack holds */
    for (size_t i = 0; i < sizeof buf; i += 4096)
        buf[i] = (char)i;
    long s = 0;
    for (size_t i = 0; i < sizeof buf; i += 4096)
        s += buf[i];
    atomic_store(&big_sum, s + 1);
    weft_wg_done(&big_wg);
}

static void absurd_stacks_check(int nprocs)
{
    for (size_t i = 0; i < sizeof absurd_stacks / sizeof absurd_stacks[0]; i++) {
        weft_config bad = { .nprocs = nprocs, .stack_size = absurd_stacks[i] };
        cr_assert_eq(weft_start(&bad), -EINVAL, "weft_start, stack_size %#zx", absurd_stacks[i]);
        cr_assert_eq(weft_run(spawn_many_main, NULL, &bad), -EINVAL, "weft_run, stack_size %#zx",
                     absurd_stacks[i]);
        cr_assert_eq(weft_nprocs(), 0, "a refused start left the runtime running");
    }
    weft_config cfg = { .nprocs = nprocs };
    cr_assert_eq(weft_start(&cfg), 0);
    for (size_t i = 0; i < sizeof absurd_stacks / sizeof absurd_stacks[0]; i++) {
        weft_spawn_opts o = { .stack_size = absurd_stacks[i], .name = "absurd" };
        uint64_t id = 0;
        cr_assert_eq(weft_spawn_ex(big_stack_user, NULL, &o, &id), -EINVAL, "stack_size %#zx",
                     absurd_stacks[i]);
        cr_assert_eq(id, 0, "a refused spawn wrote an id");
    }
    /* the largest allowed, then a large default one */
    weft_wg_add(&big_wg, 2);
    weft_spawn_opts o = { .stack_size = WEFT_STACK_MAX, .name = "big" };
    cr_assert_eq(weft_spawn_ex(big_stack_user, NULL, &o, NULL), 0);
    o.stack_size = 8u << 20;
    cr_assert_eq(weft_spawn_ex(big_stack_user, NULL, &o, NULL), 0);
    cr_assert_eq(weft_wg_wait(&big_wg), 0);
    cr_assert_gt(atomic_load(&big_sum), 0);
    cr_assert_eq(weft_stop(), 0);
    /* WEFT_STACK_MAX as the default stack size */
    weft_config big = { .nprocs = nprocs, .stack_size = WEFT_STACK_MAX };
    cr_assert_eq(weft_start(&big), 0);
    weft_wg_add(&big_wg, 2);
    cr_assert_eq(weft_spawn(big_stack_user, NULL), 0);
    cr_assert_eq(weft_spawn(big_stack_user, NULL), 0);
    cr_assert_eq(weft_wg_wait(&big_wg), 0);
    cr_assert_eq(weft_stop(), 0);
}

Test(sched, absurd_stack_sizes_refused_1p, .timeout = 60) { absurd_stacks_check(1); }
Test(sched, absurd_stack_sizes_refused_2p, .timeout = 60) { absurd_stacks_check(2); }

/* ---- a stop that waits long says once what for (issue 11) ------------------------------------- */
/* In a child (child_stderr): the child's stderr goes through a pipe that a watcher
 * thread reads (and passes on); 2 s after the notice first shows, the watcher lets the
 * stuck green thread go. No timing assumption: without a notice the green thread stays
 * stuck and the child dies of its alarm (CHILD_LIMIT), which fails the test. The 2 s
 * after it would show a notice repeated by a loop that printed at every look. */
static int notice_pipe[2], notice_saved_err;
static _Atomic int notice_seen, notice_release, spinner_started;
static weft_sema stuck_sema;
static const char notice_text[] = "still waiting after 5 s for";

static void *notice_watch(void *arg)
{
    (void)arg;
    static char seen[65536];
    size_t len = 0;
    ssize_t r;
    char chunk[4096];
    while ((r = read(notice_pipe[0], chunk, sizeof chunk)) > 0) {
        if (write(notice_saved_err, chunk, (size_t)r) < 0) {
            /* nothing to do: the parent reads what arrives */
        }
        size_t n = (size_t)r < sizeof seen - 1 - len ? (size_t)r : sizeof seen - 1 - len;
        memcpy(seen + len, chunk, n);
        len += n;
        seen[len] = 0;
        if (!atomic_load(&notice_seen) && strstr(seen, notice_text) != NULL) {
            atomic_store(&notice_seen, 1);
            struct timespec ts = { 2, 0 };
            nanosleep(&ts, NULL);
            atomic_store(&notice_release, 1);
            weft_sema_release(&stuck_sema);
        }
    }
    return NULL;
}

static pthread_t notice_begin(void)
{
    weft_sema_init(&stuck_sema, 0);
    if (pipe(notice_pipe) != 0)
        _exit(90);
    notice_saved_err = dup(2);
    dup2(notice_pipe[1], 2);
    pthread_t t;
    if (pthread_create(&t, NULL, notice_watch, NULL) != 0)
        _exit(91);
    return t;
}

static int notice_end(pthread_t t)
{
    dup2(notice_saved_err, 2);
    close(notice_pipe[1]);
    pthread_join(t, NULL);
    return atomic_load(&notice_seen) ? 0 : 3;
}

static void stuck(void *arg)
{
    (void)arg;
    weft_sema_acquire(&stuck_sema);
}

static int stop_notice_child(void)
{
    pthread_t t = notice_begin();
    weft_config cfg = { .nprocs = 2 };
    if (weft_start(&cfg) != 0)
        return 10;
    weft_spawn_opts o = { .name = "stuck" };
    if (weft_spawn_ex(stuck, NULL, &o, NULL) != 0)
        return 11;
    if (weft_stop() != 0)
        return 12;
    return notice_end(t);
}

static void spinner(void *arg)
{
    (void)arg;
    atomic_store(&spinner_started, 1);
    while (!atomic_load(&notice_release))
        ;                        /* no scheduling point: holds its worker */
}

static int spinner_main(void *arg)
{
    (void)arg;
    weft_spawn_opts o = { .name = "spinner" };
    if (weft_spawn_ex(spinner, NULL, &o, NULL) != 0)
        return 1;
    while (!atomic_load(&spinner_started))
        weft_yield();
    return 0;                    /* weft_run's stop now waits for the spinner's worker */
}

static int run_notice_child(void)
{
    pthread_t t = notice_begin();
    weft_config cfg = { .nprocs = 2 };
    if (weft_run(spinner_main, NULL, &cfg) != 0)
        return 10;
    return notice_end(t);
}

static void expect_one_notice(int (*child)(void), const char *who, const char *line)
{
    char buf[32768];
    int status = child_stderr(child, buf, sizeof buf);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x (signal 14: no notice came), stderr: %s",
              status, buf);
    int count = 0;
    for (const char *p = buf; (p = strstr(p, notice_text)) != NULL; p++)
        count++;
    cr_assert_eq(count, 1, "the notice came %d times: %s", count, buf);
    cr_assert_not_null(strstr(buf, who), "stderr: %s", buf);
    cr_assert_not_null(strstr(buf, line), "the dump's line is missing: %s", buf);
}

Test(sched, stop_waiting_long_says_once_what_for, .timeout = 60)
{
    expect_one_notice(stop_notice_child, "weft: weft_stop: still waiting after 5 s for 1 green thread to finish:",
                      "(stuck) [waiting, semaphore]");
}

Test(sched, run_stop_waiting_for_a_worker_says_once, .timeout = 60)
{
    /* Under ThreadSanitizer the spinner's worker crashed inside TSan's instrumentation
     * (__tsan_func_entry at the G's first run, under the test build's flags only); not
     * understood yet, see the report on issue 11. */
    if (tsan())
        cr_skip_test("a spinning green thread crashes TSan's fiber bookkeeping here");
    expect_one_notice(run_notice_child, "weft: weft_run: still waiting after 5 s for a worker thread",
                      "(spinner) [running]");
}

/* ---- fork: the child's runtime is stopped, and can start afresh (issue 11) -------------------- */
/* The child of a fork() made while the runtime runs (from the main thread, or from a
 * green thread): weft_spawn is -ESRCH, blocking calls work as a plain thread's, memory
 * from before the fork is intact and freeable, and weft_start / spawn / weft_stop work
 * (not under TSan, which kills a child of a multi-threaded process that starts
 * threads: die_after_fork). The child reports by its exit code; the parent waits for
 * it with a limit (on a83af88 the child hung: spawned green threads never ran). */
static void *fork_small[64], *fork_large;
static weft_wg fork_wg = WEFT_WG_INIT;
static _Atomic int fork_stop_busy;
static _Atomic long fork_leaves;

static void fork_leaf(void *arg)
{
    (void)arg;
    void *p = weft_malloc(100);
    weft_free(p);
    atomic_fetch_add(&fork_leaves, 1);
    weft_wg_done(&fork_wg);
}

static void fork_busy(void *arg)
{
    (void)arg;
    while (!atomic_load(&fork_stop_busy)) {     /* Ms allocate and schedule at the fork */
        void *p = weft_malloc(64 + (size_t)(weft_now() & 1023));
        weft_yield();
        weft_free(p);
    }
}

static void fork_alloc(void)
{
    for (int i = 0; i < 64; i++) {
        fork_small[i] = weft_malloc(16 + (size_t)i * 8);
        memset(fork_small[i], i, 16);
    }
    fork_large = weft_malloc(1 << 20);
    memset(fork_large, 0x5a, 1 << 20);
}

static int fork_child_body(void)
{
    if (weft_spawn(fork_leaf, NULL) != -ESRCH)
        return 10;
    if (weft_nprocs() != 0 || weft_self() != 0)
        return 11;
    for (int i = 0; i < 64; i++) {
        if (((unsigned char *)fork_small[i])[15] != i)
            return 12;
        weft_free(fork_small[i]);
    }
    if (((unsigned char *)fork_large)[(1 << 20) - 1] != 0x5a)
        return 13;
    weft_free(fork_large);
    void *p = weft_malloc(200);
    weft_free(p);
    /* blocking calls, as a plain thread */
    if (weft_sleep(1000000) != 0)
        return 14;
    weft_chan *c;
    long v = 5;
    if (weft_chan_make(&c, sizeof v, 1) != 0 || weft_chan_send(c, &v) != 0 || weft_chan_recv(c, &v) != 0)
        return 15;
    weft_chan_free(c);
    weft_mutex mu = WEFT_MUTEX_INIT;
    if (weft_mutex_lock(&mu) != 0)
        return 16;
    weft_mutex_unlock(&mu);
    if (tsan())
        return 0;
    /* a fresh runtime */
    for (int round = 0; round < 2; round++) {
        weft_config cfg = { .nprocs = 2 };
        if (weft_start(&cfg) != 0)
            return 17;
        atomic_store(&fork_leaves, 0);
        weft_wg_add(&fork_wg, 100);
        for (int i = 0; i < 100; i++)
            if (weft_spawn(fork_leaf, NULL) != 0)
                return 18;
        if (weft_wg_wait(&fork_wg) != 0 || atomic_load(&fork_leaves) != 100)
            return 19;
        if (weft_stop() != 0)
            return 20;
    }
    return 0;
}

/* waitpid with a limit: the exit status, or -1 (killed after limit_s) */
static int fork_wait(pid_t pid, int limit_s)
{
    int status;
    for (int i = 0; i < limit_s * 100; i++) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        struct timespec ts = { 0, 10000000 };
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

static void fork_expect_ok(int status, const char *what)
{
    cr_assert_neq(status, -1, "%s: the child did not end in time", what);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: child status %#x (exit %d)", what, status,
              WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

static void fork_from_main(int nprocs)
{
    weft_config cfg = { .nprocs = nprocs };
    cr_assert_eq(weft_start(&cfg), 0);
    atomic_store(&fork_stop_busy, 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(weft_spawn(fork_busy, NULL), 0);
    fork_alloc();
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        _exit(fork_child_body());
    cr_assert_gt(pid, 0);
    fork_expect_ok(fork_wait(pid, 60), "fork from the main thread");
    atomic_store(&fork_stop_busy, 1);
    cr_assert_eq(weft_stop(), 0);
    /* the parent's runtime and memory are untouched */
    for (int i = 0; i < 64; i++)
        weft_free(fork_small[i]);
    weft_free(fork_large);
}

Test(sched, fork_from_main_thread_1p, .timeout = 90) { fork_from_main(1); }
Test(sched, fork_from_main_thread_2p, .timeout = 90) { fork_from_main(2); }

struct fork_wait_arg { pid_t child; _Atomic int status; _Atomic int done; };
static void fork_wait_blocking(void *arg)
{
    struct fork_wait_arg *a = arg;
    atomic_store(&a->status, fork_wait(a->child, 60));
}

static int fork_green_returns;      /* 1: the child returns from the green thread instead */

static void fork_in_green(void *arg)
{
    struct fork_wait_arg *a = arg;
    fork_alloc();
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (fork_green_returns) {
            if (weft_spawn(fork_leaf, NULL) != -ESRCH)
                _exit(10);
            return;                 /* the child's only thread leaves: exit status 0 */
        }
        _exit(fork_child_body());
    }
    if (pid < 0) {
        atomic_store(&a->done, -1);
        return;
    }
    a->child = pid;
    weft_blocking(fork_wait_blocking, a);
    for (int i = 0; i < 64; i++)
        weft_free(fork_small[i]);
    weft_free(fork_large);
    atomic_store(&a->done, 1);
}

static int fork_green_main(void *arg)
{
    (void)arg;
    atomic_store(&fork_stop_busy, 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(weft_spawn(fork_busy, NULL), 0);
    struct fork_wait_arg a = { 0, -1, 0 };
    weft_spawn_opts o = { .name = "forker" };
    cr_assert_eq(weft_spawn_ex(fork_in_green, &a, &o, NULL), 0);
    while (atomic_load(&a.done) == 0)
        weft_sleep(5 * WEFT_MILLISECOND);
    atomic_store(&fork_stop_busy, 1);
    cr_assert_eq(atomic_load(&a.done), 1, "fork failed");
    fork_expect_ok(atomic_load(&a.status), fork_green_returns ? "fork from a green thread that returns"
                                                : "fork from a green thread");
    return 0;
}

static void fork_from_green(int nprocs, int returns)
{
    fork_green_returns = returns;
    weft_config cfg = { .nprocs = nprocs };
    cr_assert_eq(weft_run(fork_green_main, NULL, &cfg), 0);
}

Test(sched, fork_from_green_thread_1p, .timeout = 90) { fork_from_green(1, 0); }
Test(sched, fork_from_green_thread_2p, .timeout = 90) { fork_from_green(2, 0); }
Test(sched, fork_child_leaving_the_green_thread_exits_0, .timeout = 90) { fork_from_green(2, 1); }
