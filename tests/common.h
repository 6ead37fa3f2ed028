/*
 * tests/common.h -- helpers shared by the Criterion test files (and, under
 * ThreadSanitizer, by the same files built against tests/tsan's stand-in criterion.h).
 */
#ifndef WEFT_TESTS_COMMON_H
#define WEFT_TESTS_COMMON_H
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include "weft.h"

/* make test SAN=... sets WEFT_TEST_SAN: scale work down, skip RSS and signal checks. */
static inline bool sanitized(void)
{
    const char *s = getenv("WEFT_TEST_SAN");
    return s != NULL && *s != 0;
}

/* make test SAN=thread: every green thread is a TSan fiber, which costs TSan
 * milliseconds to make (sched/san.h), and everything runs 5-15x slower: fewer live
 * green threads, looser time bounds. */
static inline bool tsan(void)
{
    const char *s = getenv("WEFT_TEST_SAN");
    return s != NULL && strcmp(s, "thread") == 0;
}

/* Run fn in a forked child with its stderr captured into out (NUL-terminated); the
 * child exits with fn's value. Returns the child's wait status.
 * The child can never outlive the test or hang the suite: it keeps none of Criterion's
 * descriptors (a live child holding the runner's pipe kept the whole runner waiting
 * after the test's own timeout killed it), dies with its parent, and is killed by
 * SIGALRM after CHILD_LIMIT seconds (its status then says signal 14). */
#define CHILD_LIMIT 25
static inline int child_stderr(int (*fn)(void), char *out, size_t cap)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(fds[1], 2);
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0);
        dup2(devnull, 1);
        close_range(3, ~0U, 0);
        alarm(CHILD_LIMIT);
        _exit(fn());
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t r;
    while (len < cap - 1 && (r = read(fds[0], out + len, cap - 1 - len)) > 0)
        len += (size_t)r;
    out[len] = 0;
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    return status;
}

/* ---- the scenario helpers of the green-thread suites (chan, sync, timer, sched) -------- */
/* Set by mode(): this test runs with WEFT_DEBUG=migrate=1. */
static int g_migrate;

/* WEFT_DEBUG=migrate=1 or not (every yield hands the green thread to another OS thread).
 * The allocator reads WEFT_DEBUG at the first weft call of the process; Criterion runs
 * each test in a fresh process, so a test calls this first. */
static inline void mode(int migrate)
{
    setenv("WEFT_DEBUG", migrate ? "migrate=1" : "", 1);
    g_migrate = migrate;
}

/* The iteration count for this run: mig under migrate=1, full / tsan_div under TSan,
 * full / 10 under the other sanitizers (at least 1), full otherwise. */
static inline long iters_san(long full, long mig, long tsan_div)
{
    if (g_migrate)
        return mig;
    long div = tsan() ? tsan_div : sanitized() ? 10 : 1;
    if (div == 1)
        return full;
    return full / div > 0 ? full / div : 1;
}

/* The iteration count for this run: mig under migrate=1, full / 10 under any sanitizer. */
static inline long iters(long full, long mig)
{
    return iters_san(full, mig, 10);
}

/* weft_run(fn, arg) on nprocs Ps, migrate=1 or not; fn must return 0. */
static inline void run(int (*fn)(void *), void *arg, int nprocs, int migrate)
{
    mode(migrate);
    weft_config cfg = { .nprocs = nprocs };
    cr_assert_eq(weft_run(fn, arg, &cfg), 0);
}

/* One scenario, three tests in suite: name_1p, name_2p, name_migrate (2 Ps, migrate=1). */
#define VARIANTS(suite, name, fn, arg, secs)                                   \
    Test(suite, name##_1p, .timeout = secs) { run(fn, arg, 1, 0); }            \
    Test(suite, name##_2p, .timeout = secs) { run(fn, arg, 2, 0); }            \
    Test(suite, name##_migrate, .timeout = secs) { run(fn, arg, 2, 1); }

/* Milliseconds since t0 (a weft_now() value). */
static inline int64_t ms_since(int64_t t0)
{
    return (weft_now() - t0) / WEFT_MILLISECOND;
}

/* Yield until *v >= want; false once limit_ms have passed. Green or plain thread. */
static inline bool await_ge(_Atomic long *v, long want, int64_t limit_ms)
{
    int64_t t0 = weft_now();
    while (atomic_load(v) < want) {
        if (weft_now() - t0 > limit_ms * WEFT_MILLISECOND)
            return false;
        weft_yield();
    }
    return true;
}

/* Yield for about us microseconds (gives other green threads a chance to run). */
static inline void yield_for(int64_t us)
{
    int64_t t0 = weft_now();
    do
        weft_yield();
    while (weft_now() - t0 < us * WEFT_MICROSECOND);
}

/* A channel of elem-byte elements and capacity cap; the test fails if it cannot be made. */
static inline weft_chan *mk(size_t elem, size_t cap)
{
    weft_chan *c = NULL;
    cr_assert_eq(weft_chan_make(&c, elem, cap), 0);
    cr_assert_not_null(c);
    return c;
}

/* later_fn's argument: after after_ns it sends value on c, or closes c. */
struct later { weft_chan *c; int64_t after_ns; long value; bool close; };

/* A green thread (weft_spawn(later_fn, &l)) that sleeps, then sends one long or closes. */
static inline void later_fn(void *arg)
{
    struct later *l = arg;
    weft_sleep(l->after_ns);
    if (l->close)
        weft_chan_close(l->c);
    else
        cr_assert_eq(weft_chan_send(l->c, &l->value), 0);
}

/* qsort's comparison of two int64_t. */
static inline int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}
#endif
