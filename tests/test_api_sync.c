/*
 * tests/test_api_sync.c -- channels, select, synchronization, timers and deadlines,
 * deadlock detection, through the public API. Scenarios run with nprocs 1 and 2, and
 * the main ones again with WEFT_DEBUG=migrate=1 (read at the first weft call of the
 * process; Criterion gives every test a fresh process).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "weft.h"
#include "tests/common.h"

TestSuite(api_sync, .timeout = 60);

/* ---- unbuffered: every send meets a receiver; hand-off in order ------------------------ */
static weft_chan *uc;
static _Atomic int received;
static void slow_receiver(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5; i++)
        weft_yield();
    for (long i = 0; i < 1000; i++) {
        long v;
        cr_assert_eq(weft_chan_recv(uc, &v), 0);
        cr_assert_eq(v, i);
        atomic_store(&received, (int)i + 1);
    }
}

static int unbuffered_main(void *arg)
{
    (void)arg;
    atomic_store(&received, 0);
    cr_assert_eq(weft_chan_make(&uc, sizeof(long), 0), 0);
    cr_assert_eq(weft_chan_cap(uc), 0);
    weft_spawn(slow_receiver, NULL);
    for (long i = 0; i < 1000; i++) {
        cr_assert_eq(weft_chan_send(uc, &i), 0);
        /* the receiver has taken it: a send never completes into nowhere */
        cr_assert_geq(atomic_load(&received) + 1, (int)i + 1);
    }
    long v = 0;
    cr_assert_eq(weft_chan_try_send(uc, &v), -EAGAIN);
    cr_assert_eq(weft_chan_try_recv(uc, &v), -EAGAIN);
    while (atomic_load(&received) < 1000)
        weft_yield();
    weft_chan_free(uc);
    return 0;
}

Test(api_sync, unbuffered_1p) { run(unbuffered_main, NULL, 1, 0); }
Test(api_sync, unbuffered_2p) { run(unbuffered_main, NULL, 2, 0); }
Test(api_sync, unbuffered_migrate) { run(unbuffered_main, NULL, 2, 1); }

/* ---- buffered FIFO, close semantics, odd element sizes --------------------------------- */
struct big { char bytes[4096]; };

static int buffered_main(void *arg)
{
    (void)arg;
    weft_chan *c;
    cr_assert_eq(weft_chan_make(&c, 3, 4), 0);
    for (int i = 0; i < 4; i++) {
        char e[3] = { (char)i, (char)(i + 1), (char)(i + 2) };
        cr_assert_eq(weft_chan_try_send(c, e), 0);
    }
    char e[3] = { 9, 9, 9 };
    cr_assert_eq(weft_chan_try_send(c, e), -EAGAIN);
    cr_assert_eq(weft_chan_len(c), 4);
    cr_assert_eq(weft_chan_cap(c), 4);
    char r[3];
    cr_assert_eq(weft_chan_recv(c, r), 0);
    cr_assert(r[0] == 0 && r[1] == 1 && r[2] == 2);
    weft_chan_close(c);
    cr_assert_eq(weft_chan_send(c, e), -EPIPE);
    for (int i = 1; i < 4; i++) {           /* drains after close, in order */
        cr_assert_eq(weft_chan_recv(c, r), 0);
        cr_assert(r[0] == i && r[1] == i + 1 && r[2] == i + 2);
    }
    cr_assert_eq(weft_chan_recv(c, r), -EPIPE);
    cr_assert_eq(weft_chan_try_recv(c, r), -EPIPE);
    weft_chan_free(c);

    weft_chan *bc;
    cr_assert_eq(weft_chan_make(&bc, sizeof(struct big), 2), 0);
    static struct big in, out;
    for (int i = 0; i < 4096; i++)
        in.bytes[i] = (char)(i * 31);
    cr_assert_eq(weft_chan_send(bc, &in), 0);
    cr_assert_eq(weft_chan_recv(bc, &out), 0);
    cr_assert_eq(memcmp(&in, &out, sizeof in), 0);
    weft_chan_free(bc);
    cr_assert_eq(weft_chan_make(&bc, 1, 0), 0);
    weft_chan_free(bc);
    cr_assert_eq(weft_chan_make(NULL, 1, 0), -EINVAL);
    return 0;
}

Test(api_sync, buffered_fifo_close_drain) { run(buffered_main, NULL, 1, 0); }

/* ---- close wakes every waiter -------------------------------------------------------------- */
static _Atomic int pipes;
static void blocked_recv(void *arg)
{
    long v;
    if (weft_chan_recv(arg, &v) == -EPIPE)
        atomic_fetch_add(&pipes, 1);
}

static void blocked_send(void *arg)
{
    long v = 1;
    if (weft_chan_send(arg, &v) == -EPIPE)
        atomic_fetch_add(&pipes, 1);
}

static int close_main(void *arg)
{
    (void)arg;
    atomic_store(&pipes, 0);
    weft_chan *r, *s;
    weft_chan_make(&r, sizeof(long), 0);
    weft_chan_make(&s, sizeof(long), 1);
    long one = 1;
    weft_chan_send(s, &one);               /* full: senders will block */
    for (int i = 0; i < 50; i++) {
        weft_spawn(blocked_recv, r);
        weft_spawn(blocked_send, s);
    }
    weft_sleep(20 * WEFT_MILLISECOND);
    weft_chan_close(r);
    weft_chan_close(s);
    while (atomic_load(&pipes) < 100)
        weft_yield();
    return 0;
}

Test(api_sync, close_wakes_every_waiter_1p) { run(close_main, NULL, 1, 0); }
Test(api_sync, close_wakes_every_waiter_2p) { run(close_main, NULL, 2, 0); }

/* ---- many producers and consumers; a plain thread on the same channel ----------------------- */
static weft_chan *mc;
static _Atomic long msum;
static weft_wg mwg = WEFT_WG_INIT;
static void producer(void *arg)
{
    long base = (long)(intptr_t)arg;
    for (long i = 0; i < 10000; i++) {
        long v = base * 10000 + i;
        weft_chan_send(mc, &v);
    }
    weft_wg_done(&mwg);
}

static void consumer(void *arg)
{
    (void)arg;
    long v;
    while (weft_chan_recv(mc, &v) == 0)
        atomic_fetch_add(&msum, v);
}

static void *plain_producer(void *arg)
{
    (void)arg;
    for (long i = 0; i < 10000; i++) {
        long v = 8 * 10000 + i;
        weft_chan_send(mc, &v);
    }
    weft_wg_done(&mwg);
    return NULL;
}

static int mpmc_main(void *arg)
{
    size_t cap = (size_t)(intptr_t)arg;
    atomic_store(&msum, 0);
    weft_chan_make(&mc, sizeof(long), cap);
    weft_wg_add(&mwg, 9);
    for (int i = 0; i < 8; i++)
        weft_spawn(consumer, NULL);
    for (int i = 0; i < 8; i++)
        weft_spawn(producer, (void *)(intptr_t)i);
    pthread_t th;
    pthread_create(&th, NULL, plain_producer, NULL);
    cr_assert_eq(weft_wg_wait(&mwg), 0);
    pthread_join(th, NULL);
    weft_chan_close(mc);
    long n = 90000, want = n * (n - 1) / 2;
    for (int i = 0; i < 200 && atomic_load(&msum) != want; i++)
        weft_sleep(WEFT_MILLISECOND);
    cr_assert_eq(atomic_load(&msum), want);
    return 0;
}

Test(api_sync, mpmc_unbuffered_2p) { run(mpmc_main, (void *)0, 2, 0); }
Test(api_sync, mpmc_buffered_1p) { run(mpmc_main, (void *)16, 1, 0); }
Test(api_sync, mpmc_buffered_2p) { run(mpmc_main, (void *)16, 2, 0); }

/* ---- select -------------------------------------------------------------------------------------- */
static int fairness_main(void *arg)
{
    (void)arg;
    weft_chan *a, *b;
    weft_chan_make(&a, sizeof(int), 1);
    weft_chan_make(&b, sizeof(int), 1);
    int x = 1, ra, rb;
    weft_chan_send(a, &x);
    weft_chan_send(b, &x);
    long count[2] = { 0, 0 };
    int n = sanitized() ? 10000 : 100000;
    for (int i = 0; i < n; i++) {
        weft_case cs[2] = { { a, WEFT_RECV, &ra, 0 }, { b, WEFT_RECV, &rb, 0 } };
        int k = weft_select(cs, 2, -1);
        cr_assert(k == 0 || k == 1);
        count[k]++;
        weft_chan_send(k == 0 ? a : b, &x);           /* always ready again */
    }
    double e = n / 2.0, chi = (count[0] - e) * (count[0] - e) / e + (count[1] - e) * (count[1] - e) / e;
    cr_assert_lt(chi, 10.83, "chi-square %.2f (%ld vs %ld)", chi, count[0], count[1]);
    return 0;
}

Test(api_sync, select_is_uniform) { run(fairness_main, NULL, 1, 0); }

static void close_later(void *arg)
{
    weft_sleep(10 * WEFT_MILLISECOND);
    weft_chan_close(arg);
}

static int select_main(void *arg)
{
    (void)arg;
    weft_chan *a, *b;
    weft_chan_make(&a, sizeof(int), 0);
    weft_chan_make(&b, sizeof(int), 1);
    int v = 5, r = 0;
    weft_case cs[3] = { { a, WEFT_RECV, &r, 0 }, { NULL, WEFT_RECV, &r, 0 }, { b, WEFT_SEND, &v, 0 } };
    cr_assert_eq(weft_select(cs, 3, 0), 2);                  /* the send fits */
    cr_assert_eq(weft_select(cs, 2, 0), -EAGAIN);            /* nothing ready */
    int64_t t0 = weft_now();
    cr_assert_eq(weft_select(cs, 2, 20 * WEFT_MILLISECOND), -ETIMEDOUT);
    int64_t took = weft_now() - t0;
    cr_assert(took >= 20 * WEFT_MILLISECOND && took < 70 * WEFT_MILLISECOND, "%lld ns", (long long)took);
    weft_spawn(close_later, a);
    cr_assert_eq(weft_select(cs, 2, -1), 0);                 /* closed while waiting */
    cr_assert_eq(cs[0].closed, 1);
    weft_case bad = { a, 7, &r, 0 };
    cr_assert_eq(weft_select(&bad, 1, 0), -EINVAL);
    weft_case rc = { b, WEFT_RECV, &r, 0 };
    cr_assert_eq(weft_select(&rc, 1, -1), 0);
    cr_assert_eq(r, 5);
    return 0;
}

Test(api_sync, select_timeouts_close_and_sends_1p) { run(select_main, NULL, 1, 0); }
Test(api_sync, select_timeouts_close_and_sends_2p) { run(select_main, NULL, 2, 0); }

/* No lost wake-ups: selecting receivers race on three channels. */
static weft_chan *sc[3];
static _Atomic long sel_got, sel_sum;
static void selector(void *arg)
{
    (void)arg;
    for (;;) {
        long v[3];
        weft_case cs[3] = { { sc[0], WEFT_RECV, &v[0], 0 }, { sc[1], WEFT_RECV, &v[1], 0 },
                            { sc[2], WEFT_RECV, &v[2], 0 } };
        int k = weft_select(cs, 3, -1);
        if (cs[k].closed)
            return;
        atomic_fetch_add(&sel_sum, v[k]);
        atomic_fetch_add(&sel_got, 1);
    }
}

static int race_main(void *arg)
{
    (void)arg;
    atomic_store(&sel_got, 0);
    atomic_store(&sel_sum, 0);
    for (int i = 0; i < 3; i++)
        weft_chan_make(&sc[i], sizeof(long), (size_t)i);
    for (int i = 0; i < 10; i++)
        weft_spawn(selector, NULL);
    long n = sanitized() ? 3000 : 30000;
    for (long i = 0; i < n; i++)
        weft_chan_send(sc[i % 3], &i);
    while (atomic_load(&sel_got) < n)
        weft_yield();
    cr_assert_eq(atomic_load(&sel_got), n);
    cr_assert_eq(atomic_load(&sel_sum), n * (n - 1) / 2);
    for (int i = 0; i < 3; i++)
        weft_chan_close(sc[i]);
    return 0;
}

Test(api_sync, select_no_lost_wakeups_1p) { run(race_main, NULL, 1, 0); }
Test(api_sync, select_no_lost_wakeups_2p) { run(race_main, NULL, 2, 0); }

/* ---- the concurrent prime sieve -------------------------------------------------------------------- */
static void generate(void *arg)
{
    for (long i = 2;; i++)
        if (weft_chan_send(arg, &i) != 0)
            return;
}

struct filter { weft_chan *in, *out; long p; };
static void filter(void *arg)
{
    struct filter *f = arg;
    long v;
    while (weft_chan_recv(f->in, &v) == 0)
        if (v % f->p != 0 && weft_chan_send(f->out, &v) != 0)
            return;
}

static int sieve_main(void *arg)
{
    (void)arg;
    enum { N = 1000 };
    static char composite[8000];
    long want[N];
    int k = 0;
    for (long i = 2; k < N; i++) {
        if (!composite[i]) {
            want[k++] = i;
            for (long j = i * i; j < 8000; j += i)
                composite[j] = 1;
        }
    }
    weft_chan *ch;
    weft_chan_make(&ch, sizeof(long), 0);
    weft_spawn(generate, ch);
    static struct filter fs[N];
    for (int i = 0; i < N; i++) {
        long p;
        cr_assert_eq(weft_chan_recv(ch, &p), 0);
        cr_assert_eq(p, want[i], "prime %d", i);
        weft_chan *out;
        weft_chan_make(&out, sizeof(long), 0);
        fs[i] = (struct filter){ ch, out, p };
        weft_spawn(filter, &fs[i]);
        ch = out;
    }
    return 0;
}

Test(api_sync, prime_sieve_1p) { run(sieve_main, NULL, 1, 0); }
Test(api_sync, prime_sieve_2p) { run(sieve_main, NULL, 2, 0); }

/* ---- mutex: 1000 x 1000 locked increments with yields inside ------------------------------------- */
static weft_mutex mu = WEFT_MUTEX_INIT;
static long mu_count;
static int mu_iters;
static weft_wg mu_wg = WEFT_WG_INIT;
static void incrementer(void *arg)
{
    (void)arg;
    for (int i = 0; i < mu_iters; i++) {
        cr_assert_eq(weft_mutex_lock(&mu), 0);
        long c = mu_count;
        weft_yield();
        mu_count = c + 1;
        weft_mutex_unlock(&mu);
    }
    weft_wg_done(&mu_wg);
}

static int mutex_main(void *arg)
{
    int n = (int)(intptr_t)arg;
    mu_count = 0;
    weft_wg_add(&mu_wg, n);
    for (int i = 0; i < n; i++)
        weft_spawn(incrementer, NULL);
    cr_assert_eq(weft_wg_wait(&mu_wg), 0);
    cr_assert_eq(mu_count, (long)n * mu_iters);
    cr_assert_eq(weft_mutex_trylock(&mu), 0);
    cr_assert_eq(weft_mutex_trylock(&mu), -EBUSY);
    weft_mutex_unlock(&mu);
    return 0;
}

Test(api_sync, mutex_1000x1000_1p, .timeout = 120)
{
    mu_iters = sanitized() ? 100 : 1000;
    run(mutex_main, (void *)1000, 1, 0);
}

Test(api_sync, mutex_1000x1000_2p, .timeout = 120)
{
    mu_iters = sanitized() ? 100 : 1000;
    run(mutex_main, (void *)1000, 2, 0);
}

Test(api_sync, mutex_migrate)
{
    mu_iters = 20;
    run(mutex_main, (void *)10, 2, 1);
}

/* ---- cond, rwmutex, wait group on a plain thread, semaphore, once ------------------------------------ */
static weft_cond cv = WEFT_COND_INIT;
static weft_mutex cm = WEFT_MUTEX_INIT;
static int go_flag;
static _Atomic int woke;   /* counted under cm, polled without it */
static void cond_waiter(void *arg)
{
    (void)arg;
    weft_mutex_lock(&cm);
    while (!go_flag)
        weft_cond_wait(&cv, &cm);
    woke++;
    weft_mutex_unlock(&cm);
}

static int cond_main(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20; i++)
        weft_spawn(cond_waiter, NULL);
    weft_sleep(10 * WEFT_MILLISECOND);
    weft_mutex_lock(&cm);
    go_flag = 1;
    weft_cond_broadcast(&cv);
    weft_mutex_unlock(&cm);
    for (int i = 0; i < 500 && woke < 20; i++)
        weft_sleep(WEFT_MILLISECOND);
    cr_assert_eq(woke, 20);
    weft_mutex_lock(&cm);
    int64_t t0 = weft_now();
    cr_assert_eq(weft_cond_wait_timeout(&cv, &cm, 10 * WEFT_MILLISECOND), -ETIMEDOUT);
    cr_assert_geq(weft_now() - t0, 10 * WEFT_MILLISECOND);
    cr_assert_eq(weft_mutex_trylock(&cm), -EBUSY);   /* held again after the timeout */
    weft_mutex_unlock(&cm);
    return 0;
}

Test(api_sync, cond_broadcast_wakes_all) { run(cond_main, NULL, 2, 0); }

static weft_rwmutex rw = WEFT_RWMUTEX_INIT;
static _Atomic int readers_in, max_readers, writer_in;
static void reader(void *arg)
{
    (void)arg;
    for (int i = 0; i < 200; i++) {
        weft_rwmutex_rlock(&rw);
        int r = atomic_fetch_add(&readers_in, 1) + 1;
        int m = atomic_load(&max_readers);
        while (r > m && !atomic_compare_exchange_weak(&max_readers, &m, r))
            ;
        cr_assert_eq(atomic_load(&writer_in), 0);
        weft_yield();
        atomic_fetch_sub(&readers_in, 1);
        weft_rwmutex_runlock(&rw);
    }
}

static void writer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100; i++) {
        weft_rwmutex_lock(&rw);
        cr_assert_eq(atomic_fetch_add(&writer_in, 1), 0);
        cr_assert_eq(atomic_load(&readers_in), 0);
        weft_yield();
        atomic_fetch_sub(&writer_in, 1);
        weft_rwmutex_unlock(&rw);
        weft_yield();
    }
}

/* Two readers inside at once, with no writer around: each holds its read lock until it
 * sees the other inside (bounded), so an exclusive rlock would show as a timeout. (The
 * mixed phase below cannot assert sharing: with writers pending, whether two readers
 * ever overlap depends on the interleaving.) */
static _Atomic int both_in;
static void pair_reader(void *arg)
{
    (void)arg;
    weft_rwmutex_rlock(&rw);
    atomic_fetch_add(&both_in, 1);
    for (int i = 0; i < 200000 && atomic_load(&both_in) < 2; i++)
        weft_yield();
    int m = atomic_load(&max_readers);
    while (atomic_load(&both_in) > m && !atomic_compare_exchange_weak(&max_readers, &m, 2))
        ;
    weft_rwmutex_runlock(&rw);
}

static int rw_main(void *arg)
{
    (void)arg;
    weft_wg wg = WEFT_WG_INIT;
    (void)wg;
    atomic_store(&both_in, 0);
    atomic_store(&max_readers, 0);
    weft_spawn(pair_reader, NULL);
    weft_spawn(pair_reader, NULL);
    for (int i = 0; i < 2000 && atomic_load(&max_readers) < 2; i++)
        weft_sleep(WEFT_MILLISECOND);
    cr_assert_geq(atomic_load(&max_readers), 2, "readers never shared the lock");
    weft_rwmutex_lock(&rw);                 /* both are out */
    weft_rwmutex_unlock(&rw);
    for (int i = 0; i < 8; i++)
        weft_spawn(reader, NULL);
    for (int i = 0; i < 2; i++)
        weft_spawn(writer, NULL);
    weft_sleep(5 * WEFT_MILLISECOND);
    weft_rwmutex_lock(&rw);                 /* waits for everyone in there */
    weft_rwmutex_unlock(&rw);
    for (int i = 0; i < 2000 && (atomic_load(&readers_in) || atomic_load(&writer_in)); i++)
        weft_sleep(WEFT_MILLISECOND);
    return 0;
}

Test(api_sync, rwmutex_readers_share_writers_exclusive) { run(rw_main, NULL, 2, 0); }

static weft_wg pwg = WEFT_WG_INIT;
static _Atomic int pdone;
static void wg_worker(void *arg)
{
    (void)arg;
    weft_sleep(2 * WEFT_MILLISECOND);
    atomic_fetch_add(&pdone, 1);
    weft_wg_done(&pwg);
}

Test(api_sync, waitgroup_waited_on_by_a_plain_thread)
{
    weft_config cfg = { .nprocs = 2 };
    cr_assert_eq(weft_start(&cfg), 0);
    weft_wg_add(&pwg, 100);
    for (int i = 0; i < 100; i++)
        weft_spawn(wg_worker, NULL);
    cr_assert_eq(weft_wg_wait(&pwg), 0);     /* this is a pthread: it blocks on a futex */
    cr_assert_eq(atomic_load(&pdone), 100);
    cr_assert_eq(weft_stop(), 0);
}

static weft_sema sem;
static _Atomic int inside, max_inside;
static void sem_user(void *arg)
{
    (void)arg;
    weft_sema_acquire(&sem);
    int n = atomic_fetch_add(&inside, 1) + 1;
    int m = atomic_load(&max_inside);
    while (n > m && !atomic_compare_exchange_weak(&max_inside, &m, n))
        ;
    for (int i = 0; i < 5; i++)
        weft_yield();
    atomic_fetch_sub(&inside, 1);
    weft_sema_release(&sem);
    weft_wg_done(&mwg);
}

static int sema_main(void *arg)
{
    (void)arg;
    cr_assert_eq(weft_sema_init(&sem, -1), -EINVAL);
    cr_assert_eq(weft_sema_init(&sem, 3), 0);
    weft_wg_add(&mwg, 50);
    for (int i = 0; i < 50; i++)
        weft_spawn(sem_user, NULL);
    weft_wg_wait(&mwg);
    cr_assert_leq(atomic_load(&max_inside), 3);
    cr_assert_eq(atomic_load(&max_inside), 3);
    return 0;
}

Test(api_sync, semaphore_bounds_concurrency_1p) { run(sema_main, NULL, 1, 0); }
Test(api_sync, semaphore_bounds_concurrency_2p) { run(sema_main, NULL, 2, 0); }

static weft_once once = WEFT_ONCE_INIT;
static _Atomic int once_runs, once_seen;
static void once_fn(void)
{
    weft_yield();
    weft_sleep(WEFT_MILLISECOND);
    atomic_fetch_add(&once_runs, 1);
}

static void once_user(void *arg)
{
    (void)arg;
    weft_once_do(&once, once_fn);
    if (atomic_load(&once_runs) == 1)
        atomic_fetch_add(&once_seen, 1);
    weft_wg_done(&mwg);
}

static int once_main(void *arg)
{
    (void)arg;
    weft_wg_add(&mwg, 100);
    for (int i = 0; i < 100; i++)
        weft_spawn(once_user, NULL);
    weft_wg_wait(&mwg);
    cr_assert_eq(atomic_load(&once_runs), 1);
    cr_assert_eq(atomic_load(&once_seen), 100);
    return 0;
}

Test(api_sync, once_runs_exactly_once) { run(once_main, NULL, 2, 0); }

/* ---- sleep, sleepers, deadlines ------------------------------------------------------------------------ */
static int sleep_main(void *arg)
{
    (void)arg;
    int64_t late[21];
    for (int attempt = 0; attempt < 2; attempt++) {
        for (int i = 0; i < 21; i++) {
            int64_t t0 = weft_now();
            cr_assert_eq(weft_sleep(10 * WEFT_MILLISECOND), 0);
            late[i] = weft_now() - t0 - 10 * WEFT_MILLISECOND;
            cr_assert_geq(late[i], 0, "woke %lld ns early", (long long)-late[i]);
        }
        qsort(late, 21, sizeof late[0], cmp_i64);
        if (late[10] < WEFT_MILLISECOND)
            break;
    }
    cr_assert_lt(late[10], WEFT_MILLISECOND, "median lateness %lld ns", (long long)late[10]);
    return 0;
}

Test(api_sync, sleep_accuracy) { run(sleep_main, NULL, 2, 0); }

static _Atomic long slept;
static void sleeper(void *arg)
{
    (void)arg;
    weft_sleep(10 * WEFT_MILLISECOND);
    atomic_fetch_add(&slept, 1);
}

static int sleepers_main(void *arg)
{
    long n = (long)(intptr_t)arg;
    int64_t t0 = weft_now();
    for (long i = 0; i < n; i++)
        weft_spawn(sleeper, NULL);
    /* every sleeper wakes (a hang fails here); how fast is `make bench`'s to say */
    while (atomic_load(&slept) < n) {
        cr_assert_lt(weft_now() - t0, 40 * WEFT_SECOND, "%ld of %ld sleepers woke",
                     (long)atomic_load(&slept), n);
        weft_sleep(WEFT_MILLISECOND);
    }
    return 0;
}

Test(api_sync, hundred_thousand_sleepers, .timeout = 60)
{
    run(sleepers_main, (void *)(intptr_t)(sanitized() ? 10000 : 100000), 2, 0);
}

Test(api_sync, sleep_on_a_plain_thread)
{
    int64_t t0 = weft_now();
    cr_assert_eq(weft_sleep(5 * WEFT_MILLISECOND), 0);
    cr_assert_geq(weft_now() - t0, 5 * WEFT_MILLISECOND);
    weft_deadline(weft_now() + 5 * WEFT_MILLISECOND);
    cr_assert_eq(weft_sleep(WEFT_SECOND), -ETIMEDOUT);
    weft_deadline(-1);
}

static weft_mutex held = WEFT_MUTEX_INIT;
static int deadline_main(void *arg)
{
    (void)arg;
    weft_chan *c;
    weft_chan_make(&c, sizeof(int), 0);
    int v;
    int64_t t0 = weft_now();      /* before the deadline is set: elapsed >= 20 ms holds */
    cr_assert_eq(weft_deadline(t0 + 20 * WEFT_MILLISECOND), -1);
    cr_assert_eq(weft_chan_recv(c, &v), -ETIMEDOUT);
    cr_assert_geq(weft_now() - t0, 20 * WEFT_MILLISECOND);
    cr_assert_lt(weft_now() - t0, 200 * WEFT_MILLISECOND);
    /* passed: everything that would block fails at once */
    weft_case cs = { c, WEFT_RECV, &v, 0 };
    cr_assert_eq(weft_select(&cs, 1, -1), -ETIMEDOUT);
    weft_mutex_lock(&held);                       /* free: no blocking, succeeds */
    int64_t old = weft_deadline(weft_now() + 10 * WEFT_MILLISECOND);
    cr_assert_gt(old, 0);
    cr_assert_eq(weft_mutex_lock(&held), -ETIMEDOUT);
    weft_deadline(weft_now() + 10 * WEFT_MILLISECOND);
    t0 = weft_now();
    cr_assert_eq(weft_sleep(WEFT_SECOND), -ETIMEDOUT);
    cr_assert_lt(weft_now() - t0, 200 * WEFT_MILLISECOND);
    weft_wg wg = WEFT_WG_INIT;
    weft_wg_add(&wg, 1);
    weft_deadline(weft_now() + 5 * WEFT_MILLISECOND);
    cr_assert_eq(weft_wg_wait(&wg), -ETIMEDOUT);
    weft_sema s;
    weft_sema_init(&s, 0);
    cr_assert_eq(weft_sema_acquire(&s), -ETIMEDOUT);
    weft_chan *b;
    weft_chan_make(&b, sizeof(int), 1);
    v = 3;
    cr_assert_eq(weft_chan_try_send(b, &v), 0);   /* non-blocking calls still work */
    cr_assert_eq(weft_chan_try_recv(b, &v), 0);
    weft_deadline(-1);
    weft_mutex_unlock(&held);
    weft_wg_done(&wg);
    cr_assert_eq(weft_wg_wait(&wg), 0);
    return 0;
}

Test(api_sync, deadlines_1p) { run(deadline_main, NULL, 1, 0); }
Test(api_sync, deadlines_2p) { run(deadline_main, NULL, 2, 0); }

/* A timer of a P whose M is busy still fires on time. */
static _Atomic int64_t woke_after;
static void timed_sleeper(void *arg)
{
    (void)arg;
    int64_t t0 = weft_now();
    weft_sleep(10 * WEFT_MILLISECOND);
    atomic_store(&woke_after, weft_now() - t0);
}

static int busy_main(void *arg)
{
    (void)arg;
    atomic_store(&woke_after, 0);
    weft_spawn(timed_sleeper, NULL);
    weft_yield();                                 /* it is asleep, its timer on our P */
    int64_t t0 = weft_now();
    while (weft_now() - t0 < 200 * WEFT_MILLISECOND)
        ;                                         /* no scheduling point for 200 ms */
    cr_assert_gt(atomic_load(&woke_after), 0);
    cr_assert_lt(atomic_load(&woke_after), 30 * WEFT_MILLISECOND, "woke after %lld ns",
                 (long long)atomic_load(&woke_after));
    return 0;
}

Test(api_sync, timers_fire_while_their_p_is_busy) { run(busy_main, NULL, 2, 0); }

/* ---- deadlock detection ----------------------------------------------------------------------------------- */
static int deadlock_main(void *arg)
{
    (void)arg;
    weft_chan *c;
    weft_chan_make(&c, sizeof(int), 0);
    int v;
    weft_chan_recv(c, &v);                        /* nobody will ever send */
    return 0;
}

static int deadlock_child(void)
{
    return weft_run(deadlock_main, NULL, NULL);
}

Test(api_sync, deadlock_aborts_with_message)
{
    char buf[8192];
    int status = child_stderr(deadlock_child, buf, sizeof buf);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "status %#x: %s", status, buf);
    cr_assert_not_null(strstr(buf, "weft: all green threads are asleep - deadlock!"), "stderr: %s", buf);
    cr_assert_not_null(strstr(buf, "chan receive"), "no dump: %s", buf);
}
