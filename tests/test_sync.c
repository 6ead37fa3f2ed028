/*
 * tests/test_sync.c -- mutex, rwmutex, cond, wait group, semaphore and once through the
 * public API: exclusion under heavy contention, the non-blocking forms, misuse aborts,
 * plain pthreads and green threads on the same objects.
 *
 * Every scenario runs with nprocs 1 and 2, and again with fewer iterations under
 * WEFT_DEBUG=migrate=1 (every yield hands the green thread to another OS thread). The
 * allocator reads WEFT_DEBUG at the first weft call of the process; Criterion runs each
 * test in a fresh process, so each test sets it first. Under the sanitizers
 * (WEFT_TEST_SAN non-empty) the iteration counts are 10x smaller.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "weft.h"
#include "tests/common.h"

TestSuite(sync, .timeout = 60);

static void expect_abort(int (*child)(void), const char *needle)
{
    char buf[8192];
    int status = child_stderr(child, buf, sizeof buf);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "status %#x, stderr: %s", status, buf);
    cr_assert_not_null(strstr(buf, needle), "expected \"%s\" in stderr: %s", needle, buf);
}

/* ---- mutex: exclusion under contention, with a yield inside the critical section ----- */
static struct {
    weft_mutex mu;
    long counter;            /* plain: only the mutex protects it */
    long per;
    _Atomic long done, inside, overlap;
} mx = { .mu = WEFT_MUTEX_INIT };

static void mx_worker(void *arg)
{
    (void)arg;
    for (long i = 0; i < mx.per; i++) {
        cr_assert_eq(weft_mutex_lock(&mx.mu), 0);
        if (atomic_fetch_add(&mx.inside, 1) != 0)
            atomic_fetch_add(&mx.overlap, 1);
        long v = mx.counter;
        weft_yield();               /* others run, find it locked and park */
        mx.counter = v + 1;
        atomic_fetch_sub(&mx.inside, 1);
        weft_mutex_unlock(&mx.mu);
    }
    atomic_fetch_add(&mx.done, 1);
}

struct mxarg { long threads, per; };
static int mutex_main(void *arg)
{
    struct mxarg *a = arg;
    long threads = a->threads, per = a->per;
    if (g_migrate) {
        threads = 20;
        per = 20;
    } else if (sanitized()) {
        threads = threads / 10 > 0 ? threads / 10 : 1;
    }
    mx.per = per;
    for (long i = 0; i < threads; i++)
        cr_assert_eq(weft_spawn(mx_worker, NULL), 0);
    cr_assert(await_ge(&mx.done, threads, 110000), "%ld of %ld workers finished", atomic_load(&mx.done),
              threads);
    cr_assert_eq(atomic_load(&mx.overlap), 0, "%ld times two green threads held the mutex",
                 atomic_load(&mx.overlap));
    cr_assert_eq(weft_mutex_trylock(&mx.mu), 0);
    cr_assert_eq(weft_mutex_trylock(&mx.mu), -EBUSY);
    cr_assert_eq(mx.counter, threads * per, "counter %ld, expected %ld", mx.counter, threads * per);
    weft_mutex_unlock(&mx.mu);
    return 0;
}

static struct mxarg mx_big = { 1000, 1000 };
Test(sync, mutex_1000x1000_1p, .timeout = 120) { run(mutex_main, &mx_big, 1, 0); }
Test(sync, mutex_1000x1000_2p, .timeout = 120) { run(mutex_main, &mx_big, 2, 0); }
Test(sync, mutex_contended_migrate, .timeout = 60) { run(mutex_main, &mx_big, 2, 1); }

/* ---- mutex: trylock, a holder on another green thread --------------------------------- */
static struct {
    weft_mutex mu;
    _Atomic long held, release, released, waiter_got, waiter_done;
} tl = { .mu = WEFT_MUTEX_INIT };

static void tl_holder(void *arg)
{
    (void)arg;
    cr_assert_eq(weft_mutex_lock(&tl.mu), 0);
    atomic_store(&tl.held, 1);
    while (!atomic_load(&tl.release))
        weft_yield();
    weft_mutex_unlock(&tl.mu);
    atomic_store(&tl.released, 1);
}

static void tl_waiter(void *arg)
{
    (void)arg;
    cr_assert_eq(weft_mutex_lock(&tl.mu), 0);
    atomic_store(&tl.waiter_got, 1);
    weft_mutex_unlock(&tl.mu);
    atomic_store(&tl.waiter_done, 1);
}

static int trylock_main(void *arg)
{
    (void)arg;
    weft_mutex m = WEFT_MUTEX_INIT;
    cr_assert_eq(weft_mutex_trylock(&m), 0);
    cr_assert_eq(weft_mutex_trylock(&m), -EBUSY, "trylock of a held mutex");
    weft_mutex_unlock(&m);
    cr_assert_eq(weft_mutex_trylock(&m), 0);
    weft_mutex_unlock(&m);
    cr_assert_eq(weft_mutex_lock(&m), 0);
    cr_assert_eq(weft_mutex_trylock(&m), -EBUSY);
    weft_mutex_unlock(&m);

    /* zero-filled storage is an unlocked mutex */
    weft_mutex *z = calloc(1, sizeof *z);
    cr_assert_eq(weft_mutex_trylock(z), 0);
    weft_mutex_unlock(z);
    free(z);

    /* held by another green thread: -EBUSY; a blocked lock gets it on release */
    cr_assert_eq(weft_spawn(tl_holder, NULL), 0);
    cr_assert(await_ge(&tl.held, 1, 10000));
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(weft_mutex_trylock(&tl.mu), -EBUSY);
        weft_yield();
    }
    cr_assert_eq(weft_spawn(tl_waiter, NULL), 0);
    yield_for(2000);
    cr_assert_eq(atomic_load(&tl.waiter_got), 0, "lock returned while another green thread held it");
    atomic_store(&tl.release, 1);
    cr_assert(await_ge(&tl.released, 1, 10000));
    cr_assert(await_ge(&tl.waiter_got, 1, 10000), "unlock did not wake the waiter");
    cr_assert(await_ge(&tl.waiter_done, 1, 10000));   /* it holds the lock until then */
    cr_assert_eq(weft_mutex_trylock(&tl.mu), 0);
    weft_mutex_unlock(&tl.mu);
    return 0;
}

VARIANTS(sync, mutex_trylock, trylock_main, NULL, 30)

/* ---- mutex misuse aborts --------------------------------------------------------------------- */
static int unlock_unlocked_main(void *arg)
{
    (void)arg;
    weft_mutex m = WEFT_MUTEX_INIT;
    weft_mutex_unlock(&m);
    return 0;
}

static int unlock_unlocked_child(void)
{
    return weft_run(unlock_unlocked_main, NULL, NULL) + 100;
}

static int unlock_twice_main(void *arg)
{
    (void)arg;
    weft_mutex m = WEFT_MUTEX_INIT;
    weft_mutex_lock(&m);
    weft_mutex_unlock(&m);
    weft_mutex_unlock(&m);
    return 0;
}

static int unlock_twice_child(void)
{
    return weft_run(unlock_twice_main, NULL, NULL) + 100;
}

static int unlock_plain_child(void)
{
    weft_mutex m = WEFT_MUTEX_INIT;
    weft_mutex_unlock(&m);        /* a plain thread, no runtime */
    return 100;
}

Test(sync, mutex_unlock_unlocked_aborts, .timeout = 30)
{
    expect_abort(unlock_unlocked_child, "weft_mutex_unlock");
    expect_abort(unlock_twice_child, "weft_mutex_unlock");
    expect_abort(unlock_plain_child, "weft_mutex_unlock");
}

/* ---- mutex shared by plain pthreads and green threads ------------------------------------------ */
static struct {
    weft_mutex mu;
    long counter;
    long per_plain, per_green;
    _Atomic long green_done, inside, overlap;
} mix = { .mu = WEFT_MUTEX_INIT };

static void mix_enter(void)
{
    if (atomic_fetch_add(&mix.inside, 1) != 0)
        atomic_fetch_add(&mix.overlap, 1);
}

static void *mix_plain(void *arg)
{
    (void)arg;
    for (long i = 0; i < mix.per_plain; i++) {
        if (weft_mutex_lock(&mix.mu) != 0)
            return (void *)1;
        mix_enter();
        long v = mix.counter;
        if (i % 16 == 0)
            sched_yield();
        mix.counter = v + 1;
        atomic_fetch_sub(&mix.inside, 1);
        weft_mutex_unlock(&mix.mu);
    }
    return NULL;
}

static void mix_green(void *arg)
{
    (void)arg;
    for (long i = 0; i < mix.per_green; i++) {
        cr_assert_eq(weft_mutex_lock(&mix.mu), 0);
        mix_enter();
        long v = mix.counter;
        if (i % 4 == 0)
            weft_yield();
        mix.counter = v + 1;
        atomic_fetch_sub(&mix.inside, 1);
        weft_mutex_unlock(&mix.mu);
    }
    atomic_fetch_add(&mix.green_done, 1);
}

static void mutex_mixed(int nprocs, int migrate)
{
    mode(migrate);
    enum { NPLAIN = 3, NGREEN = 8 };
    mix.per_plain = iters(20000, 100);
    mix.per_green = iters(5000, 50);
    weft_config cfg = { .nprocs = nprocs };
    cr_assert_eq(weft_start(&cfg), 0);
    pthread_t th[NPLAIN];
    for (int i = 0; i < NPLAIN; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, mix_plain, NULL), 0);
    for (int i = 0; i < NGREEN; i++)
        cr_assert_eq(weft_spawn(mix_green, NULL), 0);
    for (int i = 0; i < NPLAIN; i++) {
        void *r = (void *)1;
        pthread_join(th[i], &r);
        cr_assert_null(r);
    }
    cr_assert_eq(weft_stop(), 0);
    cr_assert_eq(atomic_load(&mix.green_done), NGREEN);
    cr_assert_eq(atomic_load(&mix.overlap), 0, "%ld overlapping critical sections", atomic_load(&mix.overlap));
    cr_assert_eq(mix.counter, NPLAIN * mix.per_plain + NGREEN * mix.per_green);
}

Test(sync, mutex_plain_and_green_1p, .timeout = 60) { mutex_mixed(1, 0); }
Test(sync, mutex_plain_and_green_2p, .timeout = 60) { mutex_mixed(2, 0); }
Test(sync, mutex_plain_and_green_migrate, .timeout = 60) { mutex_mixed(2, 1); }

/* ---- cond: broadcast wakes all, signal wakes one, wait_timeout ------------------------------------ */
static struct {
    weft_mutex mu;
    weft_cond cv;
    long waiting, woken;        /* under mu */
    _Atomic long exited;
} cv = { .mu = WEFT_MUTEX_INIT, .cv = WEFT_COND_INIT };

static void cv_waiter(void *arg)
{
    (void)arg;
    cr_assert_eq(weft_mutex_lock(&cv.mu), 0);
    cv.waiting++;
    cr_assert_eq(weft_cond_wait(&cv.cv, &cv.mu), 0);
    /* the mutex is ours again */
    cr_assert_eq(weft_mutex_trylock(&cv.mu), -EBUSY);
    cv.woken++;
    weft_mutex_unlock(&cv.mu);
    atomic_fetch_add(&cv.exited, 1);
}

/* Wait (yielding) until n waiters are inside weft_cond_wait: they count themselves under
 * the mutex before waiting, and the wait releases it only once they are queued. */
static void cv_await_waiting(long n)
{
    int64_t t0 = weft_now();
    for (;;) {
        cr_assert_eq(weft_mutex_lock(&cv.mu), 0);
        long w = cv.waiting;
        weft_mutex_unlock(&cv.mu);
        if (w >= n)
            return;
        cr_assert_lt(ms_since(t0), 10000, "%ld of %ld waiters arrived", w, n);
        weft_yield();
    }
}

static long cv_woken(void)
{
    cr_assert_eq(weft_mutex_lock(&cv.mu), 0);
    long w = cv.woken;
    weft_mutex_unlock(&cv.mu);
    return w;
}

static int cond_main(void *arg)
{
    (void)arg;
    long n = iters(200, 20);
    /* broadcast wakes every waiter */
    for (long i = 0; i < n; i++)
        cr_assert_eq(weft_spawn(cv_waiter, NULL), 0);
    cv_await_waiting(n);
    cr_assert_eq(cv_woken(), 0);
    cr_assert_eq(weft_mutex_lock(&cv.mu), 0);
    weft_cond_broadcast(&cv.cv);
    weft_mutex_unlock(&cv.mu);
    cr_assert(await_ge(&cv.exited, n, 10000), "broadcast woke %ld of %ld", atomic_load(&cv.exited), n);
    cr_assert_eq(cv_woken(), n);

    /* signal wakes exactly one at a time */
    cv.waiting = cv.woken = 0;
    atomic_store(&cv.exited, 0);
    long k = 5;
    for (long i = 0; i < k; i++)
        cr_assert_eq(weft_spawn(cv_waiter, NULL), 0);
    cv_await_waiting(k);
    for (long i = 1; i <= k; i++) {
        weft_cond_signal(&cv.cv);
        cr_assert(await_ge(&cv.exited, i, 10000), "signal #%ld woke nobody", i);
        yield_for(2000);
        cr_assert_eq(atomic_load(&cv.exited), i, "signal #%ld woke %ld", i, atomic_load(&cv.exited));
    }
    /* signal and broadcast with nobody waiting are no-ops */
    weft_cond_signal(&cv.cv);
    weft_cond_broadcast(&cv.cv);

    /* wait_timeout: -ETIMEDOUT after the time, with the mutex held again */
    cr_assert_eq(weft_mutex_lock(&cv.mu), 0);
    int64_t t0 = weft_now();
    cr_assert_eq(weft_cond_wait_timeout(&cv.cv, &cv.mu, 20 * WEFT_MILLISECOND), -ETIMEDOUT);
    int64_t el = weft_now() - t0;
    cr_assert_geq(el, 20 * WEFT_MILLISECOND, "timed out after %lld ns", (long long)el);
    cr_assert_lt(el, 200 * WEFT_MILLISECOND, "timed out after %lld ns", (long long)el);
    cr_assert_eq(weft_mutex_trylock(&cv.mu), -EBUSY, "the mutex must be held after a timeout");
    weft_mutex_unlock(&cv.mu);
    cr_assert_eq(weft_mutex_trylock(&cv.mu), 0);
    weft_mutex_unlock(&cv.mu);
    return 0;
}

VARIANTS(sync, cond, cond_main, NULL, 30)

/* wait_timeout that is signalled in time returns 0 */
static struct { weft_mutex mu; weft_cond cv; int flag; _Atomic long waiting; } cs = {
    .mu = WEFT_MUTEX_INIT, .cv = WEFT_COND_INIT };

static void cs_signaller(void *arg)
{
    (void)arg;
    cr_assert(await_ge(&cs.waiting, 1, 10000));
    cr_assert_eq(weft_mutex_lock(&cs.mu), 0);   /* the waiter is inside the wait */
    cs.flag = 1;
    weft_cond_signal(&cs.cv);
    weft_mutex_unlock(&cs.mu);
}

static int cond_signalled_main(void *arg)
{
    (void)arg;
    cr_assert_eq(weft_mutex_lock(&cs.mu), 0);
    cr_assert_eq(weft_spawn(cs_signaller, NULL), 0);
    atomic_store(&cs.waiting, 1);
    int64_t t0 = weft_now();
    int r = 0;
    while (!cs.flag && r == 0)
        r = weft_cond_wait_timeout(&cs.cv, &cs.mu, 5 * WEFT_SECOND);
    cr_assert_eq(r, 0);
    cr_assert_lt(weft_now() - t0, 4 * WEFT_SECOND);
    cr_assert_eq(cs.flag, 1);
    weft_mutex_unlock(&cs.mu);
    return 0;
}

VARIANTS(sync, cond_wait_timeout_signalled, cond_signalled_main, NULL, 30)

/* A plain thread waits on a cond that a green thread signals */
static void *cond_plain_waiter(void *arg)
{
    (void)arg;
    if (weft_mutex_lock(&cs.mu) != 0)
        return (void *)1;
    atomic_store(&cs.waiting, 1);
    while (!cs.flag)
        if (weft_cond_wait(&cs.cv, &cs.mu) != 0)
            return (void *)2;
    weft_mutex_unlock(&cs.mu);
    return NULL;
}

Test(sync, cond_plain_thread_waits_for_green, .timeout = 30)
{
    weft_config cfg = { .nprocs = 2 };
    cr_assert_eq(weft_start(&cfg), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, cond_plain_waiter, NULL), 0);
    cr_assert_eq(weft_spawn(cs_signaller, NULL), 0);
    void *r = (void *)3;
    pthread_join(th, &r);
    cr_assert_null(r);
    cr_assert_eq(weft_stop(), 0);
}

/* ---- rwmutex ------------------------------------------------------------------------------------------ */
static struct {
    weft_rwmutex rw;
    _Atomic long readers_in, writers_in, bad, r1, r2, w_waiting, w_got, w_release, r3_got, r1_release;
    long per;
    _Atomic long done;
} rw = { .rw = WEFT_RWMUTEX_INIT };

/* two readers hold the lock at the same time */
static void rw_reader_pair(void *arg)
{
    long me = (long)(intptr_t)arg;
    cr_assert_eq(weft_rwmutex_rlock(&rw.rw), 0);
    atomic_store(me == 1 ? &rw.r1 : &rw.r2, 1);
    /* wait for the other one while still holding the read lock */
    cr_assert(await_ge(me == 1 ? &rw.r2 : &rw.r1, 1, 10000), "reader %ld: the other reader never got in", me);
    weft_rwmutex_runlock(&rw.rw);
    atomic_fetch_add(&rw.done, 1);
}

static void rw_mixed(void *arg)
{
    long id = (long)(intptr_t)arg;
    for (long i = 0; i < rw.per; i++) {
        if ((id + i) % 4 == 0) {
            cr_assert_eq(weft_rwmutex_lock(&rw.rw), 0);
            if (atomic_fetch_add(&rw.writers_in, 1) != 0 || atomic_load(&rw.readers_in) != 0)
                atomic_fetch_add(&rw.bad, 1);
            weft_yield();
            if (atomic_load(&rw.readers_in) != 0)
                atomic_fetch_add(&rw.bad, 1);
            atomic_fetch_sub(&rw.writers_in, 1);
            weft_rwmutex_unlock(&rw.rw);
        } else {
            cr_assert_eq(weft_rwmutex_rlock(&rw.rw), 0);
            atomic_fetch_add(&rw.readers_in, 1);
            if (atomic_load(&rw.writers_in) != 0)
                atomic_fetch_add(&rw.bad, 1);
            weft_yield();
            if (atomic_load(&rw.writers_in) != 0)
                atomic_fetch_add(&rw.bad, 1);
            atomic_fetch_sub(&rw.readers_in, 1);
            weft_rwmutex_runlock(&rw.rw);
        }
    }
    atomic_fetch_add(&rw.done, 1);
}

static void rw_writer(void *arg)
{
    (void)arg;
    atomic_store(&rw.w_waiting, 1);
    cr_assert_eq(weft_rwmutex_lock(&rw.rw), 0);
    atomic_store(&rw.w_got, 1);
    while (!atomic_load(&rw.w_release))
        weft_yield();
    atomic_store(&rw.w_got, 2);
    weft_rwmutex_unlock(&rw.rw);
}

static void rw_late_reader(void *arg)
{
    (void)arg;
    cr_assert_eq(weft_rwmutex_rlock(&rw.rw), 0);
    cr_assert_eq(atomic_load(&rw.w_got), 2, "a reader got in while the writer held the lock");
    atomic_store(&rw.r3_got, 1);
    weft_rwmutex_runlock(&rw.rw);
}

static int rwmutex_main(void *arg)
{
    (void)arg;
    /* readers are concurrent */
    cr_assert_eq(weft_spawn(rw_reader_pair, (void *)1), 0);
    cr_assert_eq(weft_spawn(rw_reader_pair, (void *)2), 0);
    cr_assert(await_ge(&rw.done, 2, 20000));
    cr_assert_eq(weft_rwmutex_lock(&rw.rw), 0, "free again after both readers left");
    weft_rwmutex_unlock(&rw.rw);

    /* a waiting writer holds back new readers */
    cr_assert_eq(weft_rwmutex_rlock(&rw.rw), 0);           /* reader 1: us */
    cr_assert_eq(weft_spawn(rw_writer, NULL), 0);
    cr_assert(await_ge(&rw.w_waiting, 1, 10000));
    yield_for(3000);                                        /* the writer is parked now */
    cr_assert_eq(atomic_load(&rw.w_got), 0, "a writer got in while a reader held the lock");
    cr_assert_eq(weft_spawn(rw_late_reader, NULL), 0);
    yield_for(3000);
    cr_assert_eq(atomic_load(&rw.r3_got), 0, "a new reader got in ahead of a waiting writer");
    weft_rwmutex_runlock(&rw.rw);
    cr_assert(await_ge(&rw.w_got, 1, 10000), "the writer did not get the lock after the last reader");
    yield_for(2000);
    cr_assert_eq(atomic_load(&rw.r3_got), 0);
    atomic_store(&rw.w_release, 1);
    cr_assert(await_ge(&rw.r3_got, 1, 10000), "the held-back reader never got in");

    /* readers and writers mixed: writers exclusive */
    atomic_store(&rw.done, 0);
    rw.per = iters(2000, 20);
    long n = 16;
    for (long i = 0; i < n; i++)
        cr_assert_eq(weft_spawn(rw_mixed, (void *)(intptr_t)i), 0);
    cr_assert(await_ge(&rw.done, n, 40000), "%ld of %ld finished", atomic_load(&rw.done), n);
    cr_assert_eq(atomic_load(&rw.bad), 0, "%ld exclusion violations", atomic_load(&rw.bad));
    return 0;
}

VARIANTS(sync, rwmutex, rwmutex_main, NULL, 60)

/* ---- wait group ------------------------------------------------------------------------------------------ */
static struct { weft_wg wg; _Atomic long count; } wgs = { .wg = WEFT_WG_INIT };

static void wg_worker(void *arg)
{
    long k = (long)(intptr_t)arg;
    for (long i = 0; i < k % 5; i++)
        weft_yield();
    atomic_fetch_add(&wgs.count, 1);
    weft_wg_done(&wgs.wg);
}

/* a plain pthread waits while green threads call done */
static void *wg_plain_waiter(void *arg)
{
    long n = (long)(intptr_t)arg;
    if (weft_wg_wait(&wgs.wg) != 0)
        return (void *)1;
    return atomic_load(&wgs.count) == n ? NULL : (void *)2;
}

static void wg_plain(int nprocs, int migrate)
{
    mode(migrate);
    weft_config cfg = { .nprocs = nprocs };
    cr_assert_eq(weft_start(&cfg), 0);
    cr_assert_eq(weft_wg_wait(&wgs.wg), 0, "a zero wait group does not block");
    long n = iters(1000, 50);
    for (int round = 0; round < 3; round++) {   /* reusable */
        atomic_store(&wgs.count, 0);
        weft_wg_add(&wgs.wg, n);
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, wg_plain_waiter, (void *)(intptr_t)n), 0);
        for (long i = 0; i < n; i++)
            cr_assert_eq(weft_spawn(wg_worker, (void *)(intptr_t)i), 0);
        void *r = (void *)3;
        pthread_join(th, &r);
        cr_assert_null(r, "round %d: the plain waiter returned %p", round, r);
        /* the test's own thread waits too */
        cr_assert_eq(weft_wg_wait(&wgs.wg), 0);
        cr_assert_eq(atomic_load(&wgs.count), n);
    }
    cr_assert_eq(weft_stop(), 0);
}

Test(sync, waitgroup_plain_waiter_1p, .timeout = 30) { wg_plain(1, 0); }
Test(sync, waitgroup_plain_waiter_2p, .timeout = 30) { wg_plain(2, 0); }
Test(sync, waitgroup_plain_waiter_migrate, .timeout = 30) { wg_plain(2, 1); }

/* green waiters, add with n > 1 and negative n */
static _Atomic long wg_waiters_done;
static void wg_green_waiter(void *arg)
{
    (void)arg;
    cr_assert_eq(weft_wg_wait(&wgs.wg), 0);
    cr_assert_eq(atomic_load(&wgs.count), 1);
    atomic_fetch_add(&wg_waiters_done, 1);
}

static int wg_green_main(void *arg)
{
    (void)arg;
    weft_wg_add(&wgs.wg, 5);
    weft_wg_add(&wgs.wg, -3);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(weft_spawn(wg_green_waiter, NULL), 0);
    yield_for(2000);
    cr_assert_eq(atomic_load(&wg_waiters_done), 0, "wait returned with a counter of 2");
    weft_wg_done(&wgs.wg);
    yield_for(1000);
    cr_assert_eq(atomic_load(&wg_waiters_done), 0, "wait returned with a counter of 1");
    atomic_store(&wgs.count, 1);
    weft_wg_add(&wgs.wg, -1);
    cr_assert(await_ge(&wg_waiters_done, 10, 10000), "the counter reached 0: %ld of 10 woke",
              atomic_load(&wg_waiters_done));
    cr_assert_eq(weft_wg_wait(&wgs.wg), 0);
    return 0;
}

VARIANTS(sync, waitgroup_green_waiters, wg_green_main, NULL, 30)

static int wg_negative_main(void *arg)
{
    (void)arg;
    weft_wg wg = WEFT_WG_INIT;
    weft_wg_add(&wg, 1);
    weft_wg_add(&wg, -2);
    return 0;
}

static int wg_negative_child(void)
{
    return weft_run(wg_negative_main, NULL, NULL) + 100;
}

static int wg_done_zero_child(void)
{
    weft_wg wg = WEFT_WG_INIT;
    weft_wg_done(&wg);
    return 100;
}

Test(sync, waitgroup_negative_aborts, .timeout = 30)
{
    expect_abort(wg_negative_child, "weft_wg_add");
    expect_abort(wg_done_zero_child, "weft_wg_add");
}

/* ---- semaphore bounds concurrency ------------------------------------------------------------------------ */
static struct { weft_sema s; _Atomic long inside, max, done; } sm;

static void sema_worker(void *arg)
{
    (void)arg;
    cr_assert_eq(weft_sema_acquire(&sm.s), 0);
    long now = atomic_fetch_add(&sm.inside, 1) + 1;
    long m = atomic_load(&sm.max);
    while (now > m && !atomic_compare_exchange_weak(&sm.max, &m, now))
        ;
    for (int i = 0; i < 5; i++)
        weft_yield();
    atomic_fetch_sub(&sm.inside, 1);
    weft_sema_release(&sm.s);
    atomic_fetch_add(&sm.done, 1);
}

static int sema_main(void *arg)
{
    (void)arg;
    weft_sema t;
    cr_assert_eq(weft_sema_init(&t, -1), -EINVAL);
    cr_assert_eq(weft_sema_init(&t, 2), 0);
    cr_assert_eq(weft_sema_try_acquire(&t), 0);
    cr_assert_eq(weft_sema_try_acquire(&t), 0);
    cr_assert_eq(weft_sema_try_acquire(&t), -EAGAIN);
    weft_sema_release(&t);
    cr_assert_eq(weft_sema_acquire(&t), 0);
    cr_assert_eq(weft_sema_try_acquire(&t), -EAGAIN);
    cr_assert_eq(weft_sema_init(&t, 0), 0);
    cr_assert_eq(weft_sema_try_acquire(&t), -EAGAIN);

    cr_assert_eq(weft_sema_init(&sm.s, 3), 0);
    long n = 50;
    for (int round = 0; round < (g_migrate ? 1 : 20); round++) {
        atomic_store(&sm.done, 0);
        for (long i = 0; i < n; i++)
            cr_assert_eq(weft_spawn(sema_worker, NULL), 0);
        cr_assert(await_ge(&sm.done, n, 20000), "%ld of %ld finished", atomic_load(&sm.done), n);
        cr_assert_leq(atomic_load(&sm.max), 3, "%ld inside at once with 3 permits", atomic_load(&sm.max));
    }
    cr_assert_eq(atomic_load(&sm.max), 3, "the 3 permits were never all in use (max %ld)", atomic_load(&sm.max));
    /* every permit came back */
    for (int i = 0; i < 3; i++)
        cr_assert_eq(weft_sema_try_acquire(&sm.s), 0);
    cr_assert_eq(weft_sema_try_acquire(&sm.s), -EAGAIN);
    return 0;
}

VARIANTS(sync, semaphore, sema_main, NULL, 30)

/* a plain thread blocks in acquire until a green thread releases */
static void sema_release_later(void *arg)
{
    (void)arg;
    weft_sleep(20 * WEFT_MILLISECOND);
    weft_sema_release(&sm.s);
}

Test(sync, semaphore_plain_thread, .timeout = 30)
{
    weft_config cfg = { .nprocs = 2 };
    cr_assert_eq(weft_start(&cfg), 0);
    cr_assert_eq(weft_sema_init(&sm.s, 0), 0);
    int64_t t0 = weft_now();
    cr_assert_eq(weft_spawn(sema_release_later, NULL), 0);
    cr_assert_eq(weft_sema_acquire(&sm.s), 0);
    cr_assert_geq(weft_now() - t0, 20 * WEFT_MILLISECOND);
    cr_assert_eq(weft_stop(), 0);
}

/* ---- once --------------------------------------------------------------------------------------------------- */
static weft_once once = WEFT_ONCE_INIT;
static _Atomic long once_calls, once_finished, once_returned, once_early;

static void once_fn(void)
{
    atomic_fetch_add(&once_calls, 1);
    for (int i = 0; i < 10; i++)       /* the others arrive meanwhile and must wait */
        weft_yield();
    weft_sleep(2 * WEFT_MILLISECOND);
    atomic_store(&once_finished, 1);
}

static void once_caller(void *arg)
{
    (void)arg;
    weft_once_do(&once, once_fn);
    if (atomic_load(&once_finished) != 1)
        atomic_fetch_add(&once_early, 1);
    atomic_fetch_add(&once_returned, 1);
}

static int once_main(void *arg)
{
    (void)arg;
    long n = 100;
    for (long i = 0; i < n; i++)
        cr_assert_eq(weft_spawn(once_caller, NULL), 0);
    cr_assert(await_ge(&once_returned, n, 20000), "%ld of %ld returned", atomic_load(&once_returned), n);
    cr_assert_eq(atomic_load(&once_calls), 1, "fn ran %ld times", atomic_load(&once_calls));
    cr_assert_eq(atomic_load(&once_early), 0, "%ld callers returned before fn finished", atomic_load(&once_early));
    weft_once_do(&once, once_fn);
    cr_assert_eq(atomic_load(&once_calls), 1);
    return 0;
}

VARIANTS(sync, once, once_main, NULL, 30)

/* once from plain threads and green threads together */
static void *once_plain(void *arg)
{
    (void)arg;
    weft_once_do(&once, once_fn);
    return atomic_load(&once_finished) == 1 ? NULL : (void *)1;
}

Test(sync, once_plain_and_green, .timeout = 30)
{
    weft_config cfg = { .nprocs = 2 };
    cr_assert_eq(weft_start(&cfg), 0);
    pthread_t th[4];
    for (int i = 0; i < 20; i++)
        cr_assert_eq(weft_spawn(once_caller, NULL), 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, once_plain, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *r = (void *)2;
        pthread_join(th[i], &r);
        cr_assert_null(r);
    }
    cr_assert_eq(weft_stop(), 0);
    cr_assert_eq(atomic_load(&once_calls), 1);
    cr_assert_eq(atomic_load(&once_early), 0);
    cr_assert_eq(atomic_load(&once_returned), 20);
}

/* ---- misuse messages name the call and the green thread (issue 11) --------------------------- */
/* The culprit green thread prints "id=N" (weft_self), then misuses an object; the
 * abort's line must name the call and end "[in green thread N (culprit)]". */
enum { MIS_UNLOCK, MIS_COND, MIS_COND_TIMEOUT, MIS_WG_OVERFLOW, MIS_WG_NEGATIVE };
static int misuse_kind;

static void culprit(void *arg)
{
    (void)arg;
    weft_mutex m = WEFT_MUTEX_INIT;
    weft_cond cvar = WEFT_COND_INIT;
    weft_wg wg = WEFT_WG_INIT;
    if (weft_self() != 0) {
        fprintf(stderr, "id=%llu\n", (unsigned long long)weft_self());
        fflush(stderr);
    }
    switch (misuse_kind) {
    case MIS_UNLOCK:
        weft_mutex_unlock(&m);
        break;
    case MIS_COND:
        weft_cond_wait(&cvar, &m);                    /* without holding m */
        break;
    case MIS_COND_TIMEOUT:
        weft_cond_wait_timeout(&cvar, &m, WEFT_SECOND);
        break;
    case MIS_WG_OVERFLOW:
        weft_wg_add(&wg, INT64_MAX);
        weft_wg_add(&wg, 1);
        break;
    case MIS_WG_NEGATIVE:
        weft_wg_add(&wg, 1);
        weft_wg_add(&wg, -2);
        break;
    }
}

static int misuse_main(void *arg)
{
    (void)arg;
    weft_spawn_opts o = { .name = "culprit" };
    if (weft_spawn_ex(culprit, NULL, &o, NULL) != 0)
        return 1;
    weft_sleep(10 * WEFT_SECOND);               /* the culprit aborts long before */
    return 2;
}

static int misuse_green_child(void)
{
    weft_config cfg = { .nprocs = 2 };
    return weft_run(misuse_main, NULL, &cfg) + 100;
}

static int misuse_plain_child(void)
{
    culprit(NULL);                               /* a plain thread: no green thread to name */
    return 100;
}

static void expect_misuse(int kind, const char *call_msg, const char *not_msg)
{
    char buf[8192], want[128];
    misuse_kind = kind;
    int status = child_stderr(misuse_green_child, buf, sizeof buf);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "status %#x, stderr: %s", status, buf);
    const char *idp = strstr(buf, "id=");
    cr_assert_not_null(idp, "stderr: %s", buf);
    unsigned long long id = strtoull(idp + 3, NULL, 10);
    cr_assert_not_null(strstr(buf, call_msg), "expected \"%s\" in stderr: %s", call_msg, buf);
    snprintf(want, sizeof want, " [in green thread %llu (culprit)]\n", id);
    cr_assert_not_null(strstr(buf, want), "expected \"%s\" in stderr: %s", want, buf);
    if (not_msg != NULL)
        cr_assert_null(strstr(buf, not_msg), "\"%s\" in stderr: %s", not_msg, buf);
    /* on a plain thread: the call, and no green thread */
    status = child_stderr(misuse_plain_child, buf, sizeof buf);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "status %#x, stderr: %s", status, buf);
    cr_assert_not_null(strstr(buf, call_msg), "expected \"%s\" in stderr: %s", call_msg, buf);
    cr_assert_null(strstr(buf, "green thread"), "plain thread: %s", buf);
}

Test(sync, misuse_unlock_names_green_thread, .timeout = 60)
{
    expect_misuse(MIS_UNLOCK, "weft_mutex_unlock: the mutex is not locked", NULL);
}

Test(sync, misuse_cond_wait_names_itself, .timeout = 60)
{
    expect_misuse(MIS_COND, "weft_cond_wait: the mutex is not locked", "weft_mutex_unlock");
    expect_misuse(MIS_COND_TIMEOUT, "weft_cond_wait_timeout: the mutex is not locked", "weft_mutex_unlock");
}

Test(sync, misuse_wg_overflow_says_overflow, .timeout = 60)
{
    expect_misuse(MIS_WG_OVERFLOW, "weft_wg_add: counter overflow", "negative");
    expect_misuse(MIS_WG_NEGATIVE, "weft_wg_add: the counter went negative", "overflow");
}

/* the same misuse in-process: Criterion sees the SIGABRT */
Test(sync, cond_wait_without_the_mutex_raises_sigabrt, .signal = SIGABRT, .timeout = 30)
{
    weft_mutex m = WEFT_MUTEX_INIT;
    weft_cond cvar = WEFT_COND_INIT;
    weft_cond_wait(&cvar, &m);
}

/* ---- a mutex is not owned: another green thread or a plain thread may unlock it ------------- */
/* (Go's sync.Mutex; include/weft.h.) A locks, B unlocks, a waiter blocked meanwhile gets it;
 * then a plain pthread unlocks what a green thread locked, and the other way round. */
static struct {
    weft_mutex mu;
    _Atomic long locked_by_a, waiter_got, plain_unlocked;
} own = { .mu = WEFT_MUTEX_INIT };

static void own_a(void *arg)
{
    (void)arg;
    cr_assert_eq(weft_mutex_lock(&own.mu), 0);
    atomic_store(&own.locked_by_a, 1);          /* and returns, still holding it */
}

static void own_waiter(void *arg)
{
    (void)arg;
    cr_assert_eq(weft_mutex_lock(&own.mu), 0);
    atomic_store(&own.waiter_got, 1);
    weft_mutex_unlock(&own.mu);
}

static void *own_plain_unlock(void *arg)
{
    (void)arg;
    weft_mutex_unlock(&own.mu);                 /* locked by a green thread */
    atomic_store(&own.plain_unlocked, 1);
    return NULL;
}

static void *own_plain_lock(void *arg)
{
    (void)arg;
    cr_assert_eq(weft_mutex_lock(&own.mu), 0); /* unlocked below by a green thread */
    return NULL;
}

static int ownership_main(void *arg)
{
    (void)arg;
    atomic_store(&own.locked_by_a, 0);
    atomic_store(&own.waiter_got, 0);
    atomic_store(&own.plain_unlocked, 0);
    cr_assert_eq(weft_spawn(own_a, NULL), 0);
    cr_assert(await_ge(&own.locked_by_a, 1, 10000));
    cr_assert_eq(weft_mutex_trylock(&own.mu), -EBUSY);
    cr_assert_eq(weft_spawn(own_waiter, NULL), 0);
    yield_for(2000);                             /* the waiter (probably) blocks */
    cr_assert_eq(atomic_load(&own.waiter_got), 0, "the waiter got a mutex A held");
    weft_mutex_unlock(&own.mu);                  /* this green thread is not A */
    cr_assert(await_ge(&own.waiter_got, 1, 10000), "unlock by another green thread woke no waiter");
    /* green locks, plain unlocks */
    cr_assert_eq(weft_mutex_lock(&own.mu), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, own_plain_unlock, NULL), 0);
    cr_assert(await_ge(&own.plain_unlocked, 1, 10000));
    pthread_join(t, NULL);
    cr_assert_eq(weft_mutex_trylock(&own.mu), 0, "a plain thread's unlock did not unlock");
    weft_mutex_unlock(&own.mu);
    /* plain locks, green unlocks */
    cr_assert_eq(pthread_create(&t, NULL, own_plain_lock, NULL), 0);
    pthread_join(t, NULL);
    cr_assert_eq(weft_mutex_trylock(&own.mu), -EBUSY);
    weft_mutex_unlock(&own.mu);
    cr_assert_eq(weft_mutex_trylock(&own.mu), 0);
    weft_mutex_unlock(&own.mu);
    return 0;
}

VARIANTS(sync, mutex_unlocked_by_another_thread, ownership_main, NULL, 30)
