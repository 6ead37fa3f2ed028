/*
 * tests/test_timer.c -- weft_sleep, deadlines and timers through the public API: sleep
 * accuracy, 100k concurrent sleepers, plain-thread sleeps and deadlines, every blocking
 * call honouring the caller's deadline, stale timers, timers of a busy P, deadlock
 * detection (its message and dump).
 *
 * Scenarios run with nprocs 1 and 2, and again with WEFT_DEBUG=migrate=1 (read at the
 * first weft call of the process; Criterion runs each test in a fresh process). Under
 * the sanitizers (WEFT_TEST_SAN non-empty) the counts are 10x smaller, under TSan 100x
 * for the scenarios with many green threads (iters_san in tests/common.h).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "weft.h"
#include "tests/common.h"

TestSuite(timer, .timeout = 60);

#define MS WEFT_MILLISECOND

/* ---- sleep accuracy --------------------------------------------------------------------- */
/* Median of 20 sleeps of 10 ms; every one of them at least 10 ms. */
static int64_t sleep_median(void)
{
    int64_t d[20];
    for (int i = 0; i < 20; i++) {
        int64_t t0 = weft_now();
        cr_assert_eq(weft_sleep(10 * MS), 0);
        d[i] = weft_now() - t0;
        cr_assert_geq(d[i], 10 * MS, "a 10 ms sleep returned after %lld ns", (long long)d[i]);
    }
    qsort(d, 20, sizeof d[0], cmp_i64);
    return (d[9] + d[10]) / 2;
}

static int sleep_accuracy_main(void *arg)
{
    (void)arg;
    int64_t m = sleep_median();
    if (m >= 11 * MS)               /* a noisy machine: measure once more */
        m = sleep_median();
    cr_assert_lt(m, 11 * MS, "median of 20 sleeps of 10 ms: %.3f ms", m / 1e6);
    /* zero and negative sleeps return at once: a yield, no timer. (The bound is loose:
     * in migrate mode the yield hands the P to another M, which a loaded machine may
     * run only milliseconds later; 5 ms failed once under ASan with the CPUs busy.) */
    int64_t t0 = weft_now();
    cr_assert_eq(weft_sleep(0), 0);
    cr_assert_eq(weft_sleep(-5), 0);
    cr_assert_lt(weft_now() - t0, 100 * MS);
    return 0;
}

VARIANTS(timer, sleep_accuracy, sleep_accuracy_main, NULL, 30)

/* ---- many concurrent sleepers ------------------------------------------------------------- */
static _Atomic long slept, sleep_errors, sleep_early;

static void sleeper(void *arg)
{
    (void)arg;
    int64_t t0 = weft_now();
    if (weft_sleep(10 * MS) != 0)
        atomic_fetch_add(&sleep_errors, 1);
    if (weft_now() - t0 < 10 * MS)
        atomic_fetch_add(&sleep_early, 1);
    atomic_fetch_add(&slept, 1);
}

static int sleepers_main(void *arg)
{
    (void)arg;
    long n = iters_san(100000, 1000, 100);
    int64_t t0 = weft_now();
    for (long i = 0; i < n; i++)
        cr_assert_eq(weft_spawn(sleeper, NULL), 0);
    while (atomic_load(&slept) < n) {
        cr_assert_lt(weft_now() - t0, 20 * WEFT_SECOND, "%ld of %ld sleepers woke", atomic_load(&slept), n);
        weft_sleep(1 * MS);
    }
    int64_t wall = weft_now() - t0;
    cr_assert_eq(atomic_load(&sleep_errors), 0);
    cr_assert_eq(atomic_load(&sleep_early), 0, "%ld sleeps ended early", atomic_load(&sleep_early));
    (void)wall;   /* how fast is for `make bench` (sched_bench sleep) to say, not a test */
    return 0;
}

VARIANTS(timer, hundred_thousand_sleepers, sleepers_main, NULL, 60)

/* Sleepers of different lengths each wake after their own time. */
enum { NVAR = 50 };
static int64_t var_elapsed[NVAR];
static _Atomic long var_done;

static void var_sleeper(void *arg)
{
    long i = (long)(intptr_t)arg;
    int64_t d = ((i * 7) % NVAR + 1) * MS;
    int64_t t0 = weft_now();
    cr_assert_eq(weft_sleep(d), 0);
    var_elapsed[i] = weft_now() - t0;
    atomic_fetch_add(&var_done, 1);
}

static int var_sleepers_main(void *arg)
{
    (void)arg;
    for (long i = 0; i < NVAR; i++)
        cr_assert_eq(weft_spawn(var_sleeper, (void *)(intptr_t)i), 0);
    while (atomic_load(&var_done) < NVAR)
        weft_sleep(2 * MS);
    /* under TSan the first runs of the others (a fiber each, ~5 ms) delay a wake-up */
    int64_t late = tsan() ? 500 * MS : 50 * MS;
    for (long i = 0; i < NVAR; i++) {
        int64_t d = ((i * 7) % NVAR + 1) * MS;
        cr_assert_geq(var_elapsed[i], d, "sleep(%lld ms) returned after %lld ns", (long long)(d / MS),
                      (long long)var_elapsed[i]);
        cr_assert_lt(var_elapsed[i], d + late, "sleep(%lld ms) returned after %lld ns", (long long)(d / MS),
                     (long long)var_elapsed[i]);
    }
    return 0;
}

VARIANTS(timer, sleepers_of_different_lengths, var_sleepers_main, NULL, 30)

/* ---- sleep on a plain thread ---------------------------------------------------------------- */
static void plain_sleep_checks(void)
{
    int64_t t0 = weft_now();
    cr_assert_eq(weft_sleep(10 * MS), 0);
    int64_t el = weft_now() - t0;
    cr_assert_geq(el, 10 * MS);
    cr_assert_lt(el, 200 * MS);
    cr_assert_eq(weft_sleep(0), 0);
    /* a plain thread's deadline */
    cr_assert_eq(weft_deadline(-1), -1);
    t0 = weft_now();
    cr_assert_eq(weft_deadline(t0 + 20 * MS), -1);
    cr_assert_eq(weft_sleep(1 * WEFT_SECOND), -ETIMEDOUT);
    el = weft_now() - t0;
    cr_assert_geq(el, 20 * MS, "woke after %lld ns", (long long)el);
    cr_assert_lt(el, 70 * MS, "a 1 s sleep with a 20 ms deadline took %lld ns", (long long)el);
    cr_assert_eq(weft_deadline(-1), t0 + 20 * MS);
}

static void *plain_sleep_thread(void *arg)
{
    (void)arg;
    plain_sleep_checks();
    return NULL;
}

Test(timer, sleep_on_a_plain_thread, .timeout = 30)
{
    /* before the runtime ever started */
    plain_sleep_checks();
    /* while it runs, on the test's thread and another pthread */
    weft_config cfg = { .nprocs = 2 };
    cr_assert_eq(weft_start(&cfg), 0);
    plain_sleep_checks();
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, plain_sleep_thread, NULL), 0);
    pthread_join(th, NULL);
    cr_assert_eq(weft_stop(), 0);
}

/* ---- deadlines: every blocking call gives up at the deadline ---------------------------------- */
static struct {
    weft_chan *empty, *full;
    weft_mutex mu;
    weft_rwmutex rw_read_held, rw_write_held;
    weft_cond cv;
    weft_mutex cv_mu;
    weft_wg wg;
    weft_sema sema;
} dl = { .mu = WEFT_MUTEX_INIT, .rw_read_held = WEFT_RWMUTEX_INIT, .rw_write_held = WEFT_RWMUTEX_INIT,
         .cv = WEFT_COND_INIT, .cv_mu = WEFT_MUTEX_INIT, .wg = WEFT_WG_INIT };

static int op_recv(void)
{
    long v;
    return weft_chan_recv(dl.empty, &v);
}
static int op_send(void)
{
    long v = 1;
    return weft_chan_send(dl.full, &v);
}
static int op_select(void)
{
    long a, b = 2;
    weft_case cs[2] = { { dl.empty, WEFT_RECV, &a, 0 }, { dl.full, WEFT_SEND, &b, 0 } };
    return weft_select(cs, 2, -1);
}
static int op_select_long_timeout(void)
{
    long a;
    weft_case cs[1] = { { dl.empty, WEFT_RECV, &a, 0 } };
    return weft_select(cs, 1, 1 * WEFT_SECOND);   /* the deadline comes first */
}
static int op_mutex(void) { return weft_mutex_lock(&dl.mu); }
static int op_rwlock(void) { return weft_rwmutex_lock(&dl.rw_read_held); }
static int op_rlock(void) { return weft_rwmutex_rlock(&dl.rw_write_held); }
/* trylock: with a past deadline a blocking lock, even of a free mutex, may fail */
static int op_cond(void)
{
    cr_assert_eq(weft_mutex_trylock(&dl.cv_mu), 0);
    int r = weft_cond_wait(&dl.cv, &dl.cv_mu);
    cr_assert_eq(weft_mutex_trylock(&dl.cv_mu), -EBUSY, "the mutex must be held after a timed-out wait");
    weft_mutex_unlock(&dl.cv_mu);
    return r;
}
static int op_cond_timeout(void)
{
    cr_assert_eq(weft_mutex_trylock(&dl.cv_mu), 0);
    int r = weft_cond_wait_timeout(&dl.cv, &dl.cv_mu, 1 * WEFT_SECOND);
    weft_mutex_unlock(&dl.cv_mu);
    return r;
}
static int op_sleep(void) { return weft_sleep(1 * WEFT_SECOND); }
static int op_wg(void) { return weft_wg_wait(&dl.wg); }
static int op_sema(void) { return weft_sema_acquire(&dl.sema); }

static const struct dlop { const char *name; int (*fn)(void); } dlops[] = {
    { "chan recv", op_recv }, { "chan send", op_send }, { "select -1", op_select },
    { "select 1 s", op_select_long_timeout }, { "mutex lock", op_mutex }, { "rwmutex lock", op_rwlock },
    { "rwmutex rlock", op_rlock }, { "cond wait", op_cond }, { "cond wait_timeout 1 s", op_cond_timeout },
    { "sleep 1 s", op_sleep }, { "wg wait", op_wg }, { "sema acquire", op_sema },
};
#define NDLOPS (sizeof dlops / sizeof dlops[0])

/* Every object above would block forever: a held mutex, an empty channel... */
static void dl_setup(void)
{
    dl.empty = mk(sizeof(long), 0);
    dl.full = mk(sizeof(long), 1);
    long v = 0;
    cr_assert_eq(weft_chan_send(dl.full, &v), 0);
    cr_assert_eq(weft_mutex_lock(&dl.mu), 0);
    cr_assert_eq(weft_rwmutex_rlock(&dl.rw_read_held), 0);
    cr_assert_eq(weft_rwmutex_lock(&dl.rw_write_held), 0);
    weft_wg_add(&dl.wg, 1);
    cr_assert_eq(weft_sema_init(&dl.sema, 0), 0);
}

/* After the timeouts every object still works: no waiter was left behind. */
static void dl_after(void)
{
    long v = 7, w = 0;
    cr_assert_eq(weft_chan_try_send(dl.empty, &v), -EAGAIN, "a timed-out receiver is still queued");
    cr_assert_eq(weft_chan_try_recv(dl.full, &w), 0);
    cr_assert_eq(w, 0, "a timed-out sender's element got in");
    cr_assert_eq(weft_chan_try_recv(dl.full, &w), -EAGAIN);
    weft_mutex_unlock(&dl.mu);
    cr_assert_eq(weft_mutex_trylock(&dl.mu), 0, "a timed-out locker got the mutex");
    weft_mutex_unlock(&dl.mu);
    weft_rwmutex_runlock(&dl.rw_read_held);
    cr_assert_eq(weft_rwmutex_lock(&dl.rw_read_held), 0);
    weft_rwmutex_unlock(&dl.rw_read_held);
    weft_rwmutex_unlock(&dl.rw_write_held);
    cr_assert_eq(weft_rwmutex_rlock(&dl.rw_write_held), 0);
    weft_rwmutex_runlock(&dl.rw_write_held);
    weft_sema_release(&dl.sema);
    cr_assert_eq(weft_sema_try_acquire(&dl.sema), 0, "a timed-out acquirer took the permit");
    weft_wg_done(&dl.wg);
    cr_assert_eq(weft_wg_wait(&dl.wg), 0);
}

/* Each op with a deadline 20 ms away: -ETIMEDOUT after >= 20 ms, < 20 + 50 ms. */
static void dl_check_all(void)
{
    for (size_t i = 0; i < NDLOPS; i++) {
        int64_t t0 = weft_now(), d = t0 + 20 * MS;
        int64_t prev = weft_deadline(d);
        cr_assert_eq(prev, -1, "%s: a deadline was left over", dlops[i].name);
        int r = dlops[i].fn();
        int64_t el = weft_now() - t0;
        cr_assert_eq(weft_deadline(-1), d, "%s: weft_deadline returns the previous one", dlops[i].name);
        cr_assert_eq(r, -ETIMEDOUT, "%s: %d", dlops[i].name, r);
        cr_assert_geq(el, 20 * MS, "%s gave up after %lld ns, before the deadline", dlops[i].name, (long long)el);
        cr_assert_lt(el, 70 * MS, "%s gave up after %lld ns", dlops[i].name, (long long)el);
    }
}

/* A deadline already past: blocking calls fail at once; non-blocking ones still work. */
static void dl_check_past(void)
{
    int64_t past = weft_now() - 1;
    weft_deadline(past);
    for (size_t i = 0; i < NDLOPS; i++) {
        int64_t t0 = weft_now();
        int r = dlops[i].fn();
        int64_t el = weft_now() - t0;
        cr_assert_eq(r, -ETIMEDOUT, "%s with a past deadline: %d", dlops[i].name, r);
        cr_assert_lt(el, 20 * MS, "%s with a past deadline took %lld ns", dlops[i].name, (long long)el);
    }
    weft_chan *c = mk(sizeof(long), 2);
    long v = 5;
    cr_assert_eq(weft_chan_try_send(c, &v), 0);
    cr_assert_eq(weft_chan_try_recv(c, &v), 0);
    cr_assert_eq(v, 5);
    cr_assert_eq(weft_chan_try_send(c, &v), 0);
    weft_case cs[1] = { { c, WEFT_RECV, &v, 0 } };
    cr_assert_eq(weft_select(cs, 1, 0), 0, "a ready non-blocking select");
    weft_mutex m = WEFT_MUTEX_INIT;
    cr_assert_eq(weft_mutex_trylock(&m), 0);
    weft_mutex_unlock(&m);
    weft_sema s;
    cr_assert_eq(weft_sema_init(&s, 1), 0);
    cr_assert_eq(weft_sema_try_acquire(&s), 0);
    cr_assert_eq(weft_deadline(-1), past);
    weft_chan_free(c);
}

static int deadlines_main(void *arg)
{
    (void)arg;
    dl_setup();
    dl_check_all();
    dl_check_past();
    dl_after();
    return 0;
}

VARIANTS(timer, deadlines, deadlines_main, NULL, 30)

/* The same from a plain thread while the runtime runs. */
Test(timer, deadlines_plain_thread, .timeout = 30)
{
    weft_config cfg = { .nprocs = 2 };
    cr_assert_eq(weft_start(&cfg), 0);
    dl_setup();
    dl_check_all();
    dl_check_past();
    dl_after();
    cr_assert_eq(weft_stop(), 0);
}

/* A green thread blocked with a deadline on an object a green thread holds; also the
 * waiter's timeout racing the release. */
static struct { weft_mutex mu; _Atomic long held, release, timeouts, got, done; long n; } race = {
    .mu = WEFT_MUTEX_INIT };

static void race_locker(void *arg)
{
    (void)arg;
    for (long i = 0; i < race.n; i++) {
        weft_deadline(weft_now() + 50 * WEFT_MICROSECOND);
        int r = weft_mutex_lock(&race.mu);
        weft_deadline(-1);
        if (r == 0) {
            atomic_fetch_add(&race.got, 1);
            weft_yield();
            weft_mutex_unlock(&race.mu);
        } else {
            cr_assert_eq(r, -ETIMEDOUT);
            atomic_fetch_add(&race.timeouts, 1);
        }
    }
    atomic_fetch_add(&race.done, 1);
}

static int deadline_race_main(void *arg)
{
    (void)arg;
    race.n = iters_san(2000, 100, 100);
    long k = 8;
    for (long i = 0; i < k; i++)
        cr_assert_eq(weft_spawn(race_locker, NULL), 0);
    int64_t t0 = weft_now();
    while (atomic_load(&race.done) < k) {
        cr_assert_lt(weft_now() - t0, 40 * WEFT_SECOND, "stuck: %ld done", atomic_load(&race.done));
        weft_sleep(1 * MS);
    }
    cr_assert_eq(atomic_load(&race.got) + atomic_load(&race.timeouts), k * race.n);
    /* nobody kept the mutex by accident */
    cr_assert_eq(weft_mutex_trylock(&race.mu), 0);
    weft_mutex_unlock(&race.mu);
    return 0;
}

VARIANTS(timer, deadline_races_unlock, deadline_race_main, NULL, 60)

/* ---- weft_deadline: previous value, clearing, per thread ---------------------------------------- */
static _Atomic long other_go, other_result = 1;
static void other_sleeper(void *arg)
{
    (void)arg;
    cr_assert_eq(weft_deadline(-1), -1);
    while (!atomic_load(&other_go))
        weft_yield();
    atomic_store(&other_result, weft_sleep(40 * MS));
}

static int deadline_api_main(void *arg)
{
    (void)arg;
    cr_assert_eq(weft_deadline(-1), -1, "a new green thread has no deadline");
    int64_t d1 = weft_now() + WEFT_SECOND, d2 = d1 + WEFT_SECOND;
    cr_assert_eq(weft_deadline(d1), -1);
    cr_assert_eq(weft_deadline(d2), d1);
    cr_assert_eq(weft_deadline(-1), d2);
    cr_assert_eq(weft_deadline(-1), -1);

    /* a cleared deadline no longer applies */
    weft_deadline(weft_now() + 10 * MS);
    weft_deadline(-1);
    int64_t t0 = weft_now();
    cr_assert_eq(weft_sleep(30 * MS), 0);
    cr_assert_geq(weft_now() - t0, 30 * MS);

    /* a deadline later than the sleep: the sleep ends normally */
    weft_deadline(weft_now() + 200 * MS);
    t0 = weft_now();
    cr_assert_eq(weft_sleep(10 * MS), 0);
    cr_assert_lt(weft_now() - t0, 150 * MS);
    weft_deadline(-1);

    /* the deadline is the calling thread's: another green thread sleeps on */
    cr_assert_eq(weft_spawn(other_sleeper, NULL), 0);
    weft_yield();
    weft_chan *c = mk(sizeof(long), 0);
    weft_deadline(weft_now() + 10 * MS);
    atomic_store(&other_go, 1);
    long v;
    cr_assert_eq(weft_chan_recv(c, &v), -ETIMEDOUT);
    weft_deadline(-1);
    t0 = weft_now();
    while (atomic_load(&other_result) == 1) {
        cr_assert_lt(weft_now() - t0, 10 * WEFT_SECOND);
        weft_sleep(1 * MS);
    }
    cr_assert_eq(atomic_load(&other_result), 0, "another thread's deadline cut this sleep short");
    weft_chan_free(c);
    return 0;
}

VARIANTS(timer, deadline_api, deadline_api_main, NULL, 30)

/* ---- stale timers: an operation's timer must not disturb a later one ------------------------------- */
static int stale_timer_main(void *arg)
{
    (void)arg;
    weft_chan *a = mk(sizeof(long), 0), *b = mk(sizeof(long), 0);
    long v = 0;
    /* a select whose 20 ms timeout is not needed (the value comes at once: with a 1 ms
     * delay a loaded machine could run both timers in one batch and time the select out) */
    struct later l1 = { .c = a, .after_ns = 0, .value = 1 };
    cr_assert_eq(weft_spawn(later_fn, &l1), 0);
    weft_case cs[1] = { { a, WEFT_RECV, &v, 0 } };
    cr_assert_eq(weft_select(cs, 1, 20 * MS), 0);
    cr_assert_eq(v, 1);
    /* a deadline that is not needed, then cleared */
    struct later l2 = { .c = a, .after_ns = 0, .value = 2 };
    cr_assert_eq(weft_spawn(later_fn, &l2), 0);
    weft_deadline(weft_now() + 20 * MS);
    cr_assert_eq(weft_chan_recv(a, &v), 0);
    cr_assert_eq(v, 2);
    weft_deadline(-1);
    /* now a long wait: neither old timer may end it */
    struct later l3 = { .c = b, .after_ns = 80 * MS, .value = 3 };
    int64_t t0 = weft_now();
    cr_assert_eq(weft_spawn(later_fn, &l3), 0);
    cr_assert_eq(weft_chan_recv(b, &v), 0, "a stale timer woke a wait that has no deadline");
    cr_assert_eq(v, 3);
    cr_assert_geq(weft_now() - t0, 80 * MS);
    /* and a sleep after a select timeout */
    t0 = weft_now();
    cr_assert_eq(weft_select(cs, 1, 5 * MS), -ETIMEDOUT);
    cr_assert_eq(weft_sleep(30 * MS), 0);
    cr_assert_geq(weft_now() - t0, 35 * MS);
    weft_chan_free(a);
    weft_chan_free(b);
    return 0;
}

VARIANTS(timer, stale_timers, stale_timer_main, NULL, 30)

/* ---- timers of a P whose M is busy still fire on time ----------------------------------------------- */
static struct { weft_chan *done; int64_t slept; } busy;

static void spinner(void *arg)
{
    (void)arg;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do                                  /* 200 ms without a scheduling point */
        clock_gettime(CLOCK_MONOTONIC, &b);
    while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < 200000000L);
    long v = 2;
    cr_assert_eq(weft_chan_send(busy.done, &v), 0);
}

static void busy_sleeper(void *arg)
{
    (void)arg;
    /* the spinner goes to this P's run queue and takes the P while we sleep */
    cr_assert_eq(weft_spawn(spinner, NULL), 0);
    int64_t t0 = weft_now();
    cr_assert_eq(weft_sleep(10 * MS), 0);
    busy.slept = weft_now() - t0;
    long v = 1;
    cr_assert_eq(weft_chan_send(busy.done, &v), 0);
}

static int busy_p_main(void *arg)
{
    (void)arg;
    int64_t best = INT64_MAX;
    for (int attempt = 0; attempt < 3 && best >= 20 * MS; attempt++) {
        busy.done = mk(sizeof(long), 2);
        cr_assert_eq(weft_spawn(busy_sleeper, NULL), 0);
        long a = 0, b = 0;
        cr_assert_eq(weft_chan_recv(busy.done, &a), 0);
        cr_assert_eq(weft_chan_recv(busy.done, &b), 0);
        cr_assert_geq(busy.slept, 10 * MS);
        if (busy.slept < best)
            best = busy.slept;
        weft_chan_free(busy.done);
    }
    cr_assert_lt(best, 20 * MS, "a 10 ms sleep next to a 200 ms spinner took %.3f ms", best / 1e6);
    return 0;
}

Test(timer, timers_fire_while_their_p_is_busy_2p, .timeout = 30) { run(busy_p_main, NULL, 2, 0); }
Test(timer, timers_fire_while_their_p_is_busy_migrate, .timeout = 30) { run(busy_p_main, NULL, 2, 1); }

/* ---- the timer ring and heap under churn ----------------------------------------------------------
 * A P keeps timers added in `when` order in a ring and the rest in a heap; a deleted timer
 * leaves a hole in the ring, dropped at the head and compacted when holes are half of it
 * (timer.c). Sleepers of mixed lengths (some added in order, most not) must each wake no
 * earlier than asked, and all wake. Receivers waiting with a 2 ms deadline, which the
 * sender mostly beats, delete their timers from the ring's head, middle and tail thousands
 * of times (compactions included): every value sent is received exactly once, and a
 * timeout is reported only once its deadline has passed. */
#define CHURN_SLEEPERS 2000
#define CHURN_RECEIVERS 50
static weft_wg churn_wg = WEFT_WG_INIT;
static _Atomic long churn_early, churn_sum, churn_timeouts, churn_bad_timeout;
static weft_chan *churn_ch;

static void churn_sleeper(void *arg)
{
    long i = (long)(intptr_t)arg;
    int64_t d = (int64_t)((i * 7919) % 40 + 1) * MS / 4;     /* 0.25 .. 10 ms, out of order */
    for (int k = 0; k < 3; k++) {
        int64_t t0 = weft_now();
        cr_assert_eq(weft_sleep(d), 0);
        if (weft_now() - t0 < d)
            atomic_fetch_add(&churn_early, 1);
    }
    weft_wg_done(&churn_wg);
}

static void churn_receiver(void *arg)
{
    (void)arg;
    for (;;) {
        long v;
        int64_t until = weft_now() + 2 * MS;
        weft_deadline(until);
        int r = weft_chan_recv(churn_ch, &v);
        weft_deadline(-1);
        if (r == -EPIPE)
            break;
        if (r == -ETIMEDOUT) {
            atomic_fetch_add(&churn_timeouts, 1);
            if (weft_now() < until)
                atomic_fetch_add(&churn_bad_timeout, 1);
            continue;
        }
        cr_assert_eq(r, 0);
        atomic_fetch_add(&churn_sum, v);
    }
    weft_wg_done(&churn_wg);
}

static int churn_main(void *arg)
{
    (void)arg;
    long n = iters_san(20000, 2000, 100);
    atomic_store(&churn_early, 0);
    atomic_store(&churn_sum, 0);
    atomic_store(&churn_timeouts, 0);
    atomic_store(&churn_bad_timeout, 0);
    churn_ch = mk(sizeof(long), 0);
    weft_wg_add(&churn_wg, CHURN_SLEEPERS + CHURN_RECEIVERS);
    for (long i = 0; i < CHURN_SLEEPERS; i++)
        cr_assert_eq(weft_spawn(churn_sleeper, (void *)(intptr_t)i), 0);
    for (int i = 0; i < CHURN_RECEIVERS; i++)
        cr_assert_eq(weft_spawn(churn_receiver, NULL), 0);
    long gap = n < 4000 ? n / 2 : 2000;     /* at least two pauses, also when scaled down */
    for (long v = 1; v <= n; v++) {
        cr_assert_eq(weft_chan_send(churn_ch, &v), 0);
        if (v % gap == 0)
            cr_assert_eq(weft_sleep(3 * MS), 0);    /* the receivers time out meanwhile */
    }
    weft_chan_close(churn_ch);
    weft_wg_wait(&churn_wg);
    weft_chan_free(churn_ch);
    cr_assert_eq(atomic_load(&churn_early), 0, "a sleep woke before its time");
    cr_assert_eq(atomic_load(&churn_sum), n * (n + 1) / 2, "values lost or received twice");
    cr_assert_eq(atomic_load(&churn_bad_timeout), 0, "a timeout before the deadline");
    cr_assert_gt(atomic_load(&churn_timeouts), 0);
    return 0;
}

VARIANTS(timer, timer_ring_and_heap_churn, churn_main, NULL, 60)

/* ---- deadlock detection ------------------------------------------------------------------------------- */
static const char deadlock_msg[] = "weft: all green threads are asleep - deadlock!";

static int deadlock_recv_main(void *arg)
{
    (void)arg;
    weft_chan *c = mk(sizeof(long), 0);
    long v;
    weft_chan_recv(c, &v);
    return 0;
}

static int deadlock_child_1p(void)
{
    weft_config cfg = { .nprocs = 1 };
    return weft_run(deadlock_recv_main, NULL, &cfg) + 100;
}

static int deadlock_child_2p(void)
{
    weft_config cfg = { .nprocs = 2 };
    return weft_run(deadlock_recv_main, NULL, &cfg) + 100;
}

/* two green threads lock two mutexes in opposite orders, main waits for them */
static weft_mutex ma = WEFT_MUTEX_INIT, mb = WEFT_MUTEX_INIT;
static weft_wg abba_wg = WEFT_WG_INIT;
static _Atomic long abba_held;
static void abba(void *arg)
{
    bool first = arg != NULL;
    weft_mutex_lock(first ? &ma : &mb);
    atomic_fetch_add(&abba_held, 1);
    while (atomic_load(&abba_held) < 2)
        weft_yield();
    weft_mutex_lock(first ? &mb : &ma);
    weft_wg_done(&abba_wg);
}

static int deadlock_abba_main(void *arg)
{
    (void)arg;
    weft_wg_add(&abba_wg, 2);
    weft_spawn(abba, (void *)1);
    weft_spawn(abba, NULL);
    weft_wg_wait(&abba_wg);
    return 0;
}

static int deadlock_abba_child(void)
{
    weft_config cfg = { .nprocs = 2 };
    return weft_run(deadlock_abba_main, NULL, &cfg) + 100;
}

/* The default number of Ps (weft_run with no config). */
static int deadlock_child_default(void)
{
    return weft_run(deadlock_recv_main, NULL, NULL) + 100;
}

/* The child aborts with the deadlock message; its dump, if dump is not NULL, names it. */
static void expect_deadlock(int (*child)(void), const char *dump)
{
    char buf[16384];
    int status = child_stderr(child, buf, sizeof buf);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "status %#x, stderr: %s", status, buf);
    cr_assert_not_null(strstr(buf, deadlock_msg), "stderr: %s", buf);
    if (dump != NULL)
        cr_assert_not_null(strstr(buf, dump), "no dump: %s", buf);
}

Test(timer, deadlock_detected_1p, .timeout = 30) { expect_deadlock(deadlock_child_1p, NULL); }
Test(timer, deadlock_detected_2p, .timeout = 30) { expect_deadlock(deadlock_child_2p, NULL); }
Test(timer, deadlock_detected_abba, .timeout = 30) { expect_deadlock(deadlock_abba_child, NULL); }
Test(timer, deadlock_aborts_with_message) { expect_deadlock(deadlock_child_default, "chan receive"); }

/* Not a deadlock: everyone waits, but a timer will wake someone. */
static int no_deadlock_main(void *arg)
{
    (void)arg;
    weft_chan *c = mk(sizeof(long), 0);
    struct later l = { .c = c, .after_ns = 300 * MS, .value = 9 };
    weft_spawn(later_fn, &l);
    long v = 0;
    if (weft_chan_recv(c, &v) != 0 || v != 9)
        return 1;
    /* and a plain sleep of the only green thread */
    weft_sleep(200 * MS);
    return 0;
}

static int no_deadlock_child(void)
{
    weft_config cfg = { .nprocs = 2 };
    return weft_run(no_deadlock_main, NULL, &cfg) + 100;
}

Test(timer, sleepers_are_not_a_deadlock, .timeout = 30)
{
    char buf[16384];
    int status = child_stderr(no_deadlock_child, buf, sizeof buf);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 100, "status %#x, stderr: %s", status, buf);
    cr_assert_null(strstr(buf, "deadlock"), "stderr: %s", buf);
}

/* ---- huge timeouts keep the deadline (issue 11) ---------------------------------------------- */
/* now + timeout overflowed for a timeout near INT64_MAX: the sum read as "no deadline",
 * so a 50 ms deadline was ignored -- a plain thread waited forever, a green thread
 * under weft_run was reported as a deadlock. Every timeout here is "practically
 * forever" and the 50 ms deadline must win. */
static const int64_t huge_timeouts[] = { INT64_MAX, INT64_MAX - 1, INT64_MAX - 1000 * MS };

static void huge_timeouts_check(void)
{
    weft_chan *c = mk(sizeof(long), 0);
    weft_mutex mu = WEFT_MUTEX_INIT;
    weft_cond cv = WEFT_COND_INIT;
    for (size_t i = 0; i < sizeof huge_timeouts / sizeof huge_timeouts[0]; i++) {
        int64_t to = huge_timeouts[i];
        long v;
        weft_case cs[1] = { { c, WEFT_RECV, &v, 0 } };
        int64_t t0 = weft_now();
        weft_deadline(t0 + 50 * MS);
        int r = weft_select(cs, 1, to);
        int64_t el = weft_now() - t0;
        cr_assert_eq(r, -ETIMEDOUT, "select, timeout %lld: %d", (long long)to, r);
        cr_assert_geq(el, 50 * MS, "select, timeout %lld, gave up after %lld ns", (long long)to, (long long)el);

        cr_assert_eq(weft_mutex_lock(&mu), 0);
        t0 = weft_now();
        weft_deadline(t0 + 50 * MS);
        r = weft_cond_wait_timeout(&cv, &mu, to);
        el = weft_now() - t0;
        weft_deadline(-1);
        cr_assert_eq(r, -ETIMEDOUT, "cond_wait_timeout, timeout %lld: %d", (long long)to, r);
        cr_assert_geq(el, 50 * MS, "cond_wait_timeout, timeout %lld, gave up after %lld ns",
                      (long long)to, (long long)el);
        cr_assert_eq(weft_mutex_trylock(&mu), -EBUSY, "the mutex is held again after the timeout");
        weft_mutex_unlock(&mu);
    }
    weft_chan_free(c);
}

static int huge_timeouts_main(void *arg)
{
    (void)arg;
    huge_timeouts_check();
    return 0;
}

VARIANTS(timer, huge_timeouts_keep_the_deadline, huge_timeouts_main, NULL, 30)

Test(timer, huge_timeouts_keep_the_deadline_plain_thread, .timeout = 30)
{
    /* before weft_start, and while the runtime runs */
    huge_timeouts_check();
    weft_config cfg = { .nprocs = 2 };
    cr_assert_eq(weft_start(&cfg), 0);
    huge_timeouts_check();
    cr_assert_eq(weft_stop(), 0);
}

/* A select with a huge timeout and no deadline still fires when a case becomes ready
 * (the saturated deadline is a real, far one: nothing fires at it). */
struct huge_send { weft_chan *c; };
static void huge_sender(void *arg)
{
    struct huge_send *h = arg;
    weft_sleep(20 * MS);
    long v = 7;
    weft_chan_send(h->c, &v);
}

static int huge_fires_main(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < sizeof huge_timeouts / sizeof huge_timeouts[0]; i++) {
        struct huge_send h = { mk(sizeof(long), 0) };
        cr_assert_eq(weft_spawn(huge_sender, &h), 0);
        long v = 0;
        weft_case cs[1] = { { h.c, WEFT_RECV, &v, 0 } };
        cr_assert_eq(weft_select(cs, 1, huge_timeouts[i]), 0);
        cr_assert_eq(v, 7);
        weft_chan_free(h.c);
    }
    return 0;
}

VARIANTS(timer, huge_timeout_select_fires, huge_fires_main, NULL, 30)
