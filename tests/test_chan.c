/*
 * tests/test_chan.c -- channels and select through the public API, with Go's semantics:
 * unbuffered hand-off, buffered FIFO, close, the non-blocking forms, element sizes,
 * many producers and consumers, plain pthreads on channels, select (uniform choice,
 * timeouts, close while waiting, sends and receives mixed, no lost wake-ups, nil cases)
 * and the concurrent prime sieve.
 *
 * Every scenario runs with nprocs 1 and 2, and again with fewer iterations under
 * WEFT_DEBUG=migrate=1 (every yield hands the green thread to another OS thread). The
 * allocator reads WEFT_DEBUG at the first weft call of the process; Criterion runs each
 * test in a fresh process, so each test sets it first. Under the sanitizers
 * (WEFT_TEST_SAN non-empty) the iteration counts are 10x smaller.
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
#include <unistd.h>
#include "weft.h"
#include "tests/common.h"

TestSuite(chan, .timeout = 60);

/* ---- unbuffered: every send meets a receiver ----------------------------------------- */
static struct {
    weft_chan *c;
    long n;
    _Atomic long arrived;    /* the receiver is about to receive value #arrived - 1 */
    _Atomic long done;
    _Atomic long got;
    long value;
} ub;

static void ub_receiver(void *arg)
{
    (void)arg;
    for (long i = 0; i < ub.n; i++) {
        if (i % 16 == 0)
            for (int k = 0; k < 4; k++)   /* arrive late: the sender must wait for us */
                weft_yield();
        atomic_store(&ub.arrived, i + 1);
        long v = -1;
        cr_assert_eq(weft_chan_recv(ub.c, &v), 0);
        cr_assert_eq(v, i * 7 + 1, "received %ld, expected %ld", v, i * 7 + 1);
    }
    atomic_store(&ub.done, 1);
}

static void ub_recv_once(void *arg)
{
    (void)arg;
    long v = -1;
    cr_assert_eq(weft_chan_recv(ub.c, &v), 0);
    ub.value = v;
    atomic_store(&ub.got, 1);
}

static void ub_send_once(void *arg)
{
    long v = (long)(intptr_t)arg;
    cr_assert_eq(weft_chan_send(ub.c, &v), 0);
    atomic_fetch_add(&ub.got, 1);
}

static int unbuffered_main(void *arg)
{
    (void)arg;
    ub.c = mk(sizeof(long), 0);
    ub.n = iters(20000, 300);
    cr_assert_eq(weft_chan_cap(ub.c), 0);
    cr_assert_eq(weft_chan_len(ub.c), 0);
    long v = 5;
    /* nobody waits: the non-blocking forms would block */
    cr_assert_eq(weft_chan_try_send(ub.c, &v), -EAGAIN);
    cr_assert_eq(weft_chan_try_recv(ub.c, &v), -EAGAIN);
    cr_assert_eq(v, 5, "a failed try_recv wrote the element");

    cr_assert_eq(weft_spawn(ub_receiver, NULL), 0);
    for (long i = 0; i < ub.n; i++) {
        v = i * 7 + 1;
        cr_assert_eq(weft_chan_send(ub.c, &v), 0);
        /* the send completed, so the receiver had arrived to take value i */
        long a = atomic_load(&ub.arrived);
        cr_assert_geq(a, i + 1, "send #%ld completed before the receiver arrived (%ld)", i, a);
        cr_assert_eq(weft_chan_len(ub.c), 0);
    }
    cr_assert(await_ge(&ub.done, 1, 10000), "the receiver did not finish");

    /* try_send succeeds when a receiver is parked */
    atomic_store(&ub.got, 0);
    cr_assert_eq(weft_spawn(ub_recv_once, NULL), 0);
    v = 4242;
    int r;
    int64_t t0 = weft_now();
    while ((r = weft_chan_try_send(ub.c, &v)) == -EAGAIN && ms_since(t0) < 10000)
        weft_yield();
    cr_assert_eq(r, 0, "try_send to a waiting receiver: %d", r);
    cr_assert(await_ge(&ub.got, 1, 10000));
    cr_assert_eq(ub.value, 4242);

    /* try_recv succeeds when a sender is parked */
    atomic_store(&ub.got, 0);
    cr_assert_eq(weft_spawn(ub_send_once, (void *)(intptr_t)777), 0);
    v = 0;
    t0 = weft_now();
    while ((r = weft_chan_try_recv(ub.c, &v)) == -EAGAIN && ms_since(t0) < 10000)
        weft_yield();
    cr_assert_eq(r, 0, "try_recv from a waiting sender: %d", r);
    cr_assert_eq(v, 777);
    cr_assert(await_ge(&ub.got, 1, 10000));

    /* a receive blocks until a sender comes */
    struct later l = { .c = ub.c, .after_ns = 20 * WEFT_MILLISECOND, .value = 99 };
    t0 = weft_now();
    cr_assert_eq(weft_spawn(later_fn, &l), 0);
    cr_assert_eq(weft_chan_recv(ub.c, &v), 0);
    cr_assert_eq(v, 99);
    cr_assert_geq(weft_now() - t0, 20 * WEFT_MILLISECOND, "recv returned before the send");
    weft_chan_free(ub.c);
    return 0;
}

VARIANTS(chan, unbuffered_handoff, unbuffered_main, NULL, 30)

/* ---- buffered: FIFO, capacity ----------------------------------------------------------- */
static struct {
    weft_chan *c;
    _Atomic long started, sent;
    int result;
    long m;
} bf;

static void bf_blocked_sender(void *arg)
{
    (void)arg;
    atomic_store(&bf.started, 1);
    int v = 100;
    bf.result = weft_chan_send(bf.c, &v);
    atomic_store(&bf.sent, 1);
}

static void bf_producer(void *arg)
{
    (void)arg;
    for (long i = 0; i < bf.m; i++) {
        if (i % 97 == 0)
            weft_yield();
        cr_assert_eq(weft_chan_send(bf.c, &i), 0);
    }
}

static int buffered_main(void *arg)
{
    (void)arg;
    enum { N = 8 };
    bf.c = mk(sizeof(int), N);
    cr_assert_eq(weft_chan_cap(bf.c), N);
    cr_assert_eq(weft_chan_len(bf.c), 0);
    /* N sends do not block (with 1 P a blocking one would never return) */
    for (int i = 0; i < N / 2; i++)
        cr_assert_eq(weft_chan_send(bf.c, &i), 0);
    for (int i = N / 2; i < N; i++)
        cr_assert_eq(weft_chan_try_send(bf.c, &i), 0);
    cr_assert_eq(weft_chan_len(bf.c), N);
    int x = -1;
    cr_assert_eq(weft_chan_try_send(bf.c, &x), -EAGAIN);
    cr_assert_eq(weft_chan_len(bf.c), N);

    /* the N+1th send blocks until a receive */
    cr_assert_eq(weft_spawn(bf_blocked_sender, NULL), 0);
    cr_assert(await_ge(&bf.started, 1, 10000));
    yield_for(3000);
    cr_assert_eq(atomic_load(&bf.sent), 0, "a send to a full channel did not block");
    cr_assert_eq(weft_chan_len(bf.c), N);
    cr_assert_eq(weft_chan_recv(bf.c, &x), 0);
    cr_assert_eq(x, 0);
    cr_assert(await_ge(&bf.sent, 1, 10000), "the blocked sender was not released by a receive");
    cr_assert_eq(bf.result, 0);
    cr_assert_eq(weft_chan_len(bf.c), N);
    for (int i = 1; i < N; i++) {
        cr_assert_eq(weft_chan_recv(bf.c, &x), 0);
        cr_assert_eq(x, i, "FIFO: got %d, expected %d", x, i);
    }
    cr_assert_eq(weft_chan_recv(bf.c, &x), 0);
    cr_assert_eq(x, 100, "the blocked sender's element must come last, got %d", x);
    cr_assert_eq(weft_chan_len(bf.c), 0);
    cr_assert_eq(weft_chan_try_recv(bf.c, &x), -EAGAIN);

    /* the ring wraps around: random interleaving of try_send / try_recv against a model */
    unsigned seed = 12345;
    int next_in = 0, next_out = 0;
    long steps = iters(200000, 2000);
    for (long s = 0; s < steps; s++) {
        seed = seed * 1103515245u + 12345u;
        int model = next_in - next_out;
        if ((seed >> 16) & 1) {
            int r = weft_chan_try_send(bf.c, &next_in);
            cr_assert_eq(r, model < N ? 0 : -EAGAIN, "try_send with %d of %d: %d", model, N, r);
            if (r == 0)
                next_in++;
        } else {
            int r = weft_chan_try_recv(bf.c, &x);
            cr_assert_eq(r, model > 0 ? 0 : -EAGAIN, "try_recv with %d of %d: %d", model, N, r);
            if (r == 0) {
                cr_assert_eq(x, next_out, "FIFO: got %d, expected %d", x, next_out);
                next_out++;
            }
        }
        cr_assert_eq(weft_chan_len(bf.c), (size_t)(next_in - next_out));
    }
    while (next_out < next_in) {
        cr_assert_eq(weft_chan_recv(bf.c, &x), 0);
        cr_assert_eq(x, next_out++);
    }
    weft_chan_free(bf.c);

    /* one producer, blocking both ways: the consumer sees its order */
    bf.c = mk(sizeof(long), 5);
    bf.m = iters(100000, 300);
    cr_assert_eq(weft_spawn(bf_producer, NULL), 0);
    for (long i = 0; i < bf.m; i++) {
        long v = -1;
        cr_assert_eq(weft_chan_recv(bf.c, &v), 0);
        cr_assert_eq(v, i, "FIFO: got %ld, expected %ld", v, i);
        cr_assert_leq(weft_chan_len(bf.c), 5);
    }
    weft_chan_free(bf.c);
    return 0;
}

VARIANTS(chan, buffered_fifo, buffered_main, NULL, 30)

/* ---- close ----------------------------------------------------------------------------------- */
enum { NW = 10 };
static struct {
    weft_chan *c;
    _Atomic long arrived, finished;
    int results[NW];
} cl;

static void cl_receiver(void *arg)
{
    int i = (int)(intptr_t)arg;
    long v = 12345;
    atomic_fetch_add(&cl.arrived, 1);
    cl.results[i] = weft_chan_recv(cl.c, &v);
    atomic_fetch_add(&cl.finished, 1);
}

static void cl_sender(void *arg)
{
    int i = (int)(intptr_t)arg;
    long v = 1000 + i;
    atomic_fetch_add(&cl.arrived, 1);
    cl.results[i] = weft_chan_send(cl.c, &v);
    atomic_fetch_add(&cl.finished, 1);
}

/* Spawn NW waiters on cl.c, let them park, close, check that each got -EPIPE. */
static void close_wakes(void (*waiter)(void *), const char *what)
{
    atomic_store(&cl.arrived, 0);
    atomic_store(&cl.finished, 0);
    for (int i = 0; i < NW; i++) {
        cl.results[i] = 1;
        cr_assert_eq(weft_spawn(waiter, (void *)(intptr_t)i), 0);
    }
    cr_assert(await_ge(&cl.arrived, NW, 10000));
    yield_for(2000);                  /* let them park */
    cr_assert_eq(atomic_load(&cl.finished), 0, "%s: a waiter returned before the close", what);
    weft_chan_close(cl.c);
    cr_assert(await_ge(&cl.finished, NW, 10000), "%s: close woke only %ld of %d waiters", what,
              atomic_load(&cl.finished), NW);
    for (int i = 0; i < NW; i++)
        cr_assert_eq(cl.results[i], -EPIPE, "%s: waiter %d got %d", what, i, cl.results[i]);
}

static int close_main(void *arg)
{
    (void)arg;
    long v;
    /* receivers blocked on an empty unbuffered channel, then on an empty buffered one */
    cl.c = mk(sizeof(long), 0);
    close_wakes(cl_receiver, "receivers, unbuffered");
    cr_assert_eq(weft_chan_recv(cl.c, &v), -EPIPE);
    cr_assert_eq(weft_chan_try_recv(cl.c, &v), -EPIPE);
    v = 1;
    cr_assert_eq(weft_chan_send(cl.c, &v), -EPIPE);
    cr_assert_eq(weft_chan_try_send(cl.c, &v), -EPIPE);
    weft_chan_free(cl.c);

    cl.c = mk(sizeof(long), 4);
    close_wakes(cl_receiver, "receivers, buffered");
    cr_assert_eq(weft_chan_recv(cl.c, &v), -EPIPE);
    weft_chan_free(cl.c);

    /* senders blocked on an unbuffered channel nobody receives from */
    cl.c = mk(sizeof(long), 0);
    close_wakes(cl_sender, "senders, unbuffered");
    cr_assert_eq(weft_chan_recv(cl.c, &v), -EPIPE, "a blocked sender's element leaked through");
    weft_chan_free(cl.c);

    /* senders blocked on a full channel: theirs never arrive; the buffer still drains */
    cl.c = mk(sizeof(long), 2);
    v = 1;
    cr_assert_eq(weft_chan_send(cl.c, &v), 0);
    v = 2;
    cr_assert_eq(weft_chan_send(cl.c, &v), 0);
    close_wakes(cl_sender, "senders, full buffer");
    cr_assert_eq(weft_chan_len(cl.c), 2);
    cr_assert_eq(weft_chan_recv(cl.c, &v), 0);
    cr_assert_eq(v, 1);
    cr_assert_eq(weft_chan_try_recv(cl.c, &v), 0);
    cr_assert_eq(v, 2);
    cr_assert_eq(weft_chan_recv(cl.c, &v), -EPIPE);
    cr_assert_eq(weft_chan_len(cl.c), 0);
    weft_chan_free(cl.c);

    /* send after close; receive drains what is buffered, then -EPIPE, every time */
    weft_chan *c = mk(sizeof(long), 5);
    for (long i = 0; i < 3; i++)
        cr_assert_eq(weft_chan_send(c, &i), 0);
    weft_chan_close(c);
    v = 9;
    cr_assert_eq(weft_chan_send(c, &v), -EPIPE);
    cr_assert_eq(weft_chan_try_send(c, &v), -EPIPE);
    cr_assert_eq(weft_chan_len(c), 3);
    cr_assert_eq(weft_chan_cap(c), 5);
    for (long i = 0; i < 3; i++) {
        cr_assert_eq(weft_chan_recv(c, &v), 0, "a closed channel must drain first");
        cr_assert_eq(v, i);
    }
    v = 77;
    cr_assert_eq(weft_chan_recv(c, &v), -EPIPE);
    cr_assert_eq(weft_chan_recv(c, &v), -EPIPE);
    cr_assert_eq(weft_chan_try_recv(c, &v), -EPIPE);
    cr_assert_eq(v, 77, "a receive on a closed channel wrote the element");
    weft_chan_free(c);
    return 0;
}

VARIANTS(chan, close_semantics, close_main, NULL, 30)

/* Close on a buffered channel of 3-byte elements: FIFO to capacity, sends refused
 * after the close, the buffer drained in order, then -EPIPE; a 4096-byte element
 * through a buffered channel; a null channel pointer is refused. */
struct big { char bytes[4096]; };
static int fifo_close_drain_main(void *arg)
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

Test(chan, buffered_fifo_close_drain) { run(fifo_close_drain_main, NULL, 1, 0); }

static int close_twice_main(void *arg)
{
    (void)arg;
    weft_chan *c = mk(sizeof(int), 1);
    weft_chan_close(c);
    weft_chan_close(c);
    return 0;
}

static int close_twice_child(void)
{
    return weft_run(close_twice_main, NULL, NULL) + 100;
}

Test(chan, close_twice_aborts, .timeout = 30)
{
    char buf[4096];
    int status = child_stderr(close_twice_child, buf, sizeof buf);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "status %#x, stderr: %s", status, buf);
    cr_assert_not_null(strstr(buf, "weft_chan_close"), "stderr: %s", buf);
}

/* ---- try_send / try_recv, len / cap ------------------------------------------------------------ */
static int try_ops_main(void *arg)
{
    (void)arg;
    weft_chan *c = mk(sizeof(short), 3);
    short s = 0;
    cr_assert_eq(weft_chan_len(c), 0);
    cr_assert_eq(weft_chan_cap(c), 3);
    cr_assert_eq(weft_chan_try_recv(c, &s), -EAGAIN);
    for (short i = 1; i <= 3; i++) {
        cr_assert_eq(weft_chan_try_send(c, &i), 0);
        cr_assert_eq(weft_chan_len(c), (size_t)i);
    }
    s = 4;
    cr_assert_eq(weft_chan_try_send(c, &s), -EAGAIN);
    cr_assert_eq(weft_chan_len(c), 3);
    cr_assert_eq(weft_chan_try_recv(c, &s), 0);
    cr_assert_eq(s, 1);
    cr_assert_eq(weft_chan_len(c), 2);
    s = 4;
    cr_assert_eq(weft_chan_try_send(c, &s), 0);
    for (short i = 2; i <= 4; i++) {
        cr_assert_eq(weft_chan_try_recv(c, &s), 0);
        cr_assert_eq(s, i);
    }
    cr_assert_eq(weft_chan_try_recv(c, &s), -EAGAIN);
    cr_assert_eq(weft_chan_len(c), 0);
    cr_assert_eq(weft_chan_cap(c), 3);
    weft_chan_free(c);

    /* capacity 1 */
    c = mk(sizeof(int), 1);
    int v = 1;
    cr_assert_eq(weft_chan_try_send(c, &v), 0);
    cr_assert_eq(weft_chan_try_send(c, &v), -EAGAIN);
    cr_assert_eq(weft_chan_len(c), 1);
    cr_assert_eq(weft_chan_try_recv(c, &v), 0);
    cr_assert_eq(weft_chan_try_recv(c, &v), -EAGAIN);
    weft_chan_free(c);
    weft_chan_free(NULL);
    return 0;
}

VARIANTS(chan, try_ops_len_cap, try_ops_main, NULL, 30)

/* ---- elements of odd sizes are copied intact ------------------------------------------------------ */
struct blob4k { unsigned char b[4096]; };
enum { GUARD = 32 };

static unsigned char pat(long i, size_t j, size_t size)
{
    return (unsigned char)(i * 31 + (long)j * 7 + (long)size + (long)(j >> 8));
}

struct oddarg { weft_chan *c; size_t size; long m; _Atomic long done; };
static void odd_producer(void *arg)
{
    struct oddarg *a = arg;
    struct blob4k e;
    for (long i = 0; i < a->m; i++) {
        for (size_t j = 0; j < a->size; j++)
            e.b[j] = pat(i, j, a->size);
        cr_assert_eq(weft_chan_send(a->c, e.b), 0);
        memset(e.b, 0xEE, a->size);   /* the channel must have copied it */
        if (i % 5 == 0)
            weft_yield();
    }
    atomic_store(&a->done, 1);
}

static void odd_one(size_t size, size_t cap, long m)
{
    struct oddarg a = { mk(size, cap), size, m, 0 };
    cr_assert_eq(weft_spawn(odd_producer, &a), 0);
    static unsigned char buf[4096 + 2 * GUARD];
    for (long i = 0; i < m; i++) {
        memset(buf, 0xA5, sizeof buf);
        cr_assert_eq(weft_chan_recv(a.c, buf + GUARD), 0);
        for (size_t j = 0; j < size; j++)
            cr_assert_eq(buf[GUARD + j], pat(i, j, size), "size %zu cap %zu: element %ld byte %zu", size,
                         cap, i, j);
        for (size_t j = 0; j < GUARD; j++) {
            cr_assert_eq(buf[j], 0xA5, "size %zu: wrote before the element", size);
            cr_assert_eq(buf[GUARD + size + j], 0xA5, "size %zu: wrote past the element", size);
        }
    }
    cr_assert(await_ge(&a.done, 1, 10000));
    /* buffered: an element sent from a buffer that is then overwritten */
    if (cap > 0) {
        unsigned char src[4096];
        memset(src, 0x3C, size);
        cr_assert_eq(weft_chan_try_send(a.c, src), 0);
        memset(src, 0, size);
        memset(buf, 0xA5, sizeof buf);
        cr_assert_eq(weft_chan_try_recv(a.c, buf + GUARD), 0);
        for (size_t j = 0; j < size; j++)
            cr_assert_eq(buf[GUARD + j], 0x3C);
        cr_assert_eq(buf[GUARD + size], 0xA5);
    }
    weft_chan_free(a.c);
}

static int odd_sizes_main(void *arg)
{
    (void)arg;
    /* 4, 8 and 16 are copied inline (chan.c copy_elem), the others by memcpy */
    static const size_t sizes[] = { 1, 3, 4, 8, 16, 17, 100, sizeof(struct blob4k) };
    static const size_t caps[] = { 0, 1, 5 };
    long m = iters(2000, 30);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (size_t k = 0; k < sizeof caps / sizeof caps[0]; k++)
            odd_one(sizes[s], caps[k], m);
    return 0;
}

VARIANTS(chan, odd_element_sizes, odd_sizes_main, NULL, 30)

/* ---- elem_size 0 and bad arguments ------------------------------------------------------------------ */
static _Atomic long zsent;
static void zero_sender(void *arg)
{
    weft_chan *c = arg;
    cr_assert_eq(weft_chan_send(c, NULL), 0);
    atomic_fetch_add(&zsent, 1);
}

static int zero_size_main(void *arg)
{
    (void)arg;
    weft_chan *c = NULL;
    int r = weft_chan_make(&c, 0, 0);
    cr_assert(r == 0 || r == -EINVAL, "weft_chan_make(&c, 0, 0) = %d", r);
    if (r == 0) {
        /* a signal channel (Go's chan struct{}) */
        cr_assert_eq(weft_spawn(zero_sender, c), 0);
        cr_assert_eq(weft_chan_recv(c, NULL), 0);
        cr_assert(await_ge(&zsent, 1, 10000));
        weft_chan_close(c);
        cr_assert_eq(weft_chan_recv(c, NULL), -EPIPE);
        weft_chan_free(c);
    }
    c = NULL;
    r = weft_chan_make(&c, 0, 4);
    cr_assert(r == 0 || r == -EINVAL, "weft_chan_make(&c, 0, 4) = %d", r);
    if (r == 0) {
        for (int i = 0; i < 4; i++)
            cr_assert_eq(weft_chan_try_send(c, NULL), 0);
        cr_assert_eq(weft_chan_try_send(c, NULL), -EAGAIN);
        cr_assert_eq(weft_chan_len(c), 4);
        for (int i = 0; i < 4; i++)
            cr_assert_eq(weft_chan_recv(c, NULL), 0);
        cr_assert_eq(weft_chan_try_recv(c, NULL), -EAGAIN);
        weft_chan_free(c);
    }
    /* elem_size * capacity overflows */
    c = NULL;
    r = weft_chan_make(&c, SIZE_MAX / 2, 16);
    cr_assert(r == -EINVAL || r == -ENOMEM, "an overflowing size: %d", r);
    return 0;
}

Test(chan, zero_size_elements_1p, .timeout = 30) { run(zero_size_main, NULL, 1, 0); }
Test(chan, zero_size_elements_2p, .timeout = 30) { run(zero_size_main, NULL, 2, 0); }

/* ---- many producers, many consumers ------------------------------------------------------------------ */
enum { NPROD = 8, NCONS = 8 };
static struct {
    weft_chan *c;
    long per;
    _Atomic long sum, count, prod_done, cons_done, dups;
    _Atomic unsigned char *seen;
} mp;

static void mp_producer(void *arg)
{
    long p = (long)(intptr_t)arg;
    for (long i = 0; i < mp.per; i++) {
        long v = p * mp.per + i;
        cr_assert_eq(weft_chan_send(mp.c, &v), 0);
    }
    atomic_fetch_add(&mp.prod_done, 1);
}

static void mp_consumer(void *arg)
{
    (void)arg;
    long v;
    int r;
    while ((r = weft_chan_recv(mp.c, &v)) == 0) {
        cr_assert(v >= 0 && v < NPROD * mp.per, "received a value never sent: %ld", v);
        if (atomic_fetch_add(&mp.seen[v], 1) != 0)
            atomic_fetch_add(&mp.dups, 1);
        atomic_fetch_add(&mp.sum, v);
        atomic_fetch_add(&mp.count, 1);
    }
    cr_assert_eq(r, -EPIPE);
    atomic_fetch_add(&mp.cons_done, 1);
}

static int mpmc_main(void *arg)
{
    size_t cap = (size_t)(intptr_t)arg;
    mp.c = mk(sizeof(long), cap);
    mp.per = iters(10000, 40);
    long total = NPROD * mp.per;
    mp.seen = calloc((size_t)total, 1);
    cr_assert_not_null(mp.seen);
    for (int i = 0; i < NCONS; i++)
        cr_assert_eq(weft_spawn(mp_consumer, NULL), 0);
    for (int i = 0; i < NPROD; i++)
        cr_assert_eq(weft_spawn(mp_producer, (void *)(intptr_t)i), 0);
    cr_assert(await_ge(&mp.prod_done, NPROD, 40000), "producers: %ld of %d finished, %ld received",
              atomic_load(&mp.prod_done), NPROD, atomic_load(&mp.count));
    cr_assert(await_ge(&mp.count, total, 10000), "received %ld of %ld", atomic_load(&mp.count), total);
    weft_chan_close(mp.c);
    cr_assert(await_ge(&mp.cons_done, NCONS, 10000), "close released %ld of %d consumers",
              atomic_load(&mp.cons_done), NCONS);
    cr_assert_eq(atomic_load(&mp.count), total);
    cr_assert_eq(atomic_load(&mp.dups), 0);
    cr_assert_eq(atomic_load(&mp.sum), total * (total - 1) / 2);
    for (long v = 0; v < total; v++)
        cr_assert_eq(mp.seen[v], 1, "value %ld received %d times", v, mp.seen[v]);
    free((void *)mp.seen);
    weft_chan_free(mp.c);
    return 0;
}

VARIANTS(chan, mpmc_unbuffered, mpmc_main, (void *)0, 60)
VARIANTS(chan, mpmc_cap1, mpmc_main, (void *)1, 60)
VARIANTS(chan, mpmc_cap64, mpmc_main, (void *)64, 60)

/* Eight green producers and a plain pthread produce, eight green consumers consume,
 * all on one channel, under weft_run: every value arrives (the sum). */
static weft_chan *mpp_chan;
static _Atomic long mpp_sum;
static weft_wg mpp_wg = WEFT_WG_INIT;
static void mpp_producer(void *arg)
{
    long base = (long)(intptr_t)arg;
    for (long i = 0; i < 10000; i++) {
        long v = base * 10000 + i;
        weft_chan_send(mpp_chan, &v);
    }
    weft_wg_done(&mpp_wg);
}

static void mpp_consumer(void *arg)
{
    (void)arg;
    long v;
    while (weft_chan_recv(mpp_chan, &v) == 0)
        atomic_fetch_add(&mpp_sum, v);
}

static void *mpp_plain_producer(void *arg)
{
    (void)arg;
    for (long i = 0; i < 10000; i++) {
        long v = 8 * 10000 + i;
        weft_chan_send(mpp_chan, &v);
    }
    weft_wg_done(&mpp_wg);
    return NULL;
}

static int mpmc_plain_producer_main(void *arg)
{
    size_t cap = (size_t)(intptr_t)arg;
    atomic_store(&mpp_sum, 0);
    weft_chan_make(&mpp_chan, sizeof(long), cap);
    weft_wg_add(&mpp_wg, 9);
    for (int i = 0; i < 8; i++)
        weft_spawn(mpp_consumer, NULL);
    for (int i = 0; i < 8; i++)
        weft_spawn(mpp_producer, (void *)(intptr_t)i);
    pthread_t th;
    pthread_create(&th, NULL, mpp_plain_producer, NULL);
    cr_assert_eq(weft_wg_wait(&mpp_wg), 0);
    pthread_join(th, NULL);
    weft_chan_close(mpp_chan);
    long n = 90000, want = n * (n - 1) / 2;
    for (int i = 0; i < 200 && atomic_load(&mpp_sum) != want; i++)
        weft_sleep(WEFT_MILLISECOND);
    cr_assert_eq(atomic_load(&mpp_sum), want);
    return 0;
}

/* run(), with weft_run's deadlock check off (WEFT_DEBUG=deadlock=0). The check sees only
 * green threads: with every one waiting for a plain thread (one that sends or wakes
 * them) and every P idle for its quiet 50 ms, it aborts -- whenever the plain thread
 * has not been scheduled for 50 ms, as happens on a loaded machine (a false
 * "deadlock!" in 1 run in ~15 of pthread_under_run under load). A lost wake-up here
 * is still caught: the test hangs past its timeout. */
static void run_with_plain(int (*fn)(void *), void *arg, int nprocs, int migrate)
{
    mode(migrate);
    setenv("WEFT_DEBUG", migrate ? "migrate=1,deadlock=0" : "deadlock=0", 1);
    weft_config cfg = { .nprocs = nprocs };
    cr_assert_eq(weft_run(fn, arg, &cfg), 0);
}

Test(chan, mpmc_plain_producer_unbuffered_2p) { run_with_plain(mpmc_plain_producer_main, (void *)0, 2, 0); }
Test(chan, mpmc_plain_producer_buffered_1p) { run_with_plain(mpmc_plain_producer_main, (void *)16, 1, 0); }
Test(chan, mpmc_plain_producer_buffered_2p) { run_with_plain(mpmc_plain_producer_main, (void *)16, 2, 0); }

/* ---- plain pthreads on channels -------------------------------------------------------------------------- */
static struct {
    weft_chan *ping, *pong, *many;
    long n;
    _Atomic long echo_done, sum, got;
} pl;

static void pl_echo(void *arg)
{
    (void)arg;
    long v;
    while (weft_chan_recv(pl.ping, &v) == 0) {
        v = 2 * v + 1;
        cr_assert_eq(weft_chan_send(pl.pong, &v), 0);
    }
    atomic_store(&pl.echo_done, 1);
}

static void pl_green_sender(void *arg)
{
    long base = (long)(intptr_t)arg;
    for (long i = 0; i < pl.n; i++) {
        long v = base * pl.n + i;
        cr_assert_eq(weft_chan_send(pl.many, &v), 0);
        if (i % 7 == 0)
            weft_yield();
    }
}

static void pl_green_receiver(void *arg)
{
    (void)arg;
    long v;
    while (weft_chan_recv(pl.many, &v) == 0) {
        atomic_fetch_add(&pl.sum, v);
        atomic_fetch_add(&pl.got, 1);
    }
}

/* The test's own thread is a plain thread: it talks to green threads. */
static void plain_thread_scenario(int nprocs, int migrate)
{
    mode(migrate);
    weft_config cfg = { .nprocs = nprocs };
    cr_assert_eq(weft_start(&cfg), 0);
    cr_assert_eq(weft_self(), 0);
    pl.n = iters(20000, 200);
    pl.ping = mk(sizeof(long), 0);
    pl.pong = mk(sizeof(long), 0);
    cr_assert_eq(weft_spawn(pl_echo, NULL), 0);
    for (long i = 0; i < pl.n; i++) {
        long v = i;
        cr_assert_eq(weft_chan_send(pl.ping, &v), 0);
        cr_assert_eq(weft_chan_recv(pl.pong, &v), 0);
        cr_assert_eq(v, 2 * i + 1);
    }

    /* a plain receiver of four green senders (unbuffered: every send meets it) */
    pl.many = mk(sizeof(long), 0);
    for (int s = 0; s < 4; s++)
        cr_assert_eq(weft_spawn(pl_green_sender, (void *)(intptr_t)s), 0);
    long sum = 0, total = 4 * pl.n;
    for (long i = 0; i < total; i++) {
        long v;
        cr_assert_eq(weft_chan_recv(pl.many, &v), 0);
        sum += v;
    }
    cr_assert_eq(sum, total * (total - 1) / 2);

    /* a plain sender to four green receivers; close releases them */
    for (int s = 0; s < 4; s++)
        cr_assert_eq(weft_spawn(pl_green_receiver, NULL), 0);
    for (long v = 0; v < total; v++)
        cr_assert_eq(weft_chan_send(pl.many, &v), 0);
    cr_assert(await_ge(&pl.got, total, 10000));
    cr_assert_eq(atomic_load(&pl.sum), total * (total - 1) / 2);
    weft_chan_close(pl.many);

    /* the plain thread blocks in a receive until a green thread sends; a close wakes it */
    weft_chan *c = mk(sizeof(long), 0);
    struct later l1 = { .c = c, .after_ns = 20 * WEFT_MILLISECOND, .value = 31 };
    int64_t t0 = weft_now();
    cr_assert_eq(weft_spawn(later_fn, &l1), 0);
    long v = 0;
    cr_assert_eq(weft_chan_recv(c, &v), 0);
    cr_assert_eq(v, 31);
    cr_assert_geq(weft_now() - t0, 20 * WEFT_MILLISECOND);
    struct later l2 = { .c = c, .after_ns = 10 * WEFT_MILLISECOND, .close = true };
    cr_assert_eq(weft_spawn(later_fn, &l2), 0);
    cr_assert_eq(weft_chan_recv(c, &v), -EPIPE, "a close must wake a blocked plain thread");

    /* select on a plain thread: timeout, then a case fired by a green thread */
    weft_chan *d = mk(sizeof(long), 0);
    weft_case cs[1] = { { d, WEFT_RECV, &v, 0 } };
    t0 = weft_now();
    cr_assert_eq(weft_select(cs, 1, 20 * WEFT_MILLISECOND), -ETIMEDOUT);
    cr_assert_geq(weft_now() - t0, 20 * WEFT_MILLISECOND);
    struct later l3 = { .c = d, .after_ns = 10 * WEFT_MILLISECOND, .value = 8 };
    cr_assert_eq(weft_spawn(later_fn, &l3), 0);
    cr_assert_eq(weft_select(cs, 1, -1), 0);
    cr_assert_eq(v, 8);

    weft_chan_close(pl.ping);
    cr_assert_eq(weft_stop(), 0);
    cr_assert_eq(atomic_load(&pl.echo_done), 1);
    weft_chan_free(pl.ping);
    weft_chan_free(pl.pong);
    weft_chan_free(pl.many);
    weft_chan_free(c);
    weft_chan_free(d);
}

Test(chan, plain_thread_1p, .timeout = 30) { plain_thread_scenario(1, 0); }
Test(chan, plain_thread_2p, .timeout = 30) { plain_thread_scenario(2, 0); }
Test(chan, plain_thread_migrate, .timeout = 30) { plain_thread_scenario(2, 1); }

/* Under weft_run: a pthread created by a green thread sends and receives. */
static struct { weft_chan *to_green, *to_plain; long n; } pt;

static void *pt_thread(void *arg)
{
    (void)arg;
    for (long i = 0; i < pt.n; i++)
        if (weft_chan_send(pt.to_green, &i) != 0)
            return (void *)1;
    weft_chan_close(pt.to_green);
    long v, sum = 0;
    int r;
    while ((r = weft_chan_recv(pt.to_plain, &v)) == 0)
        sum += v;
    if (r != -EPIPE || sum != pt.n * (pt.n - 1) / 2)
        return (void *)2;
    return NULL;
}

struct joiner { pthread_t th; void *ret; };
static void pt_join(void *arg)
{
    struct joiner *j = arg;
    j->ret = (void *)3;
    pthread_join(j->th, &j->ret);
}

static int pthread_main(void *arg)
{
    (void)arg;
    pt.n = iters(20000, 200);
    pt.to_green = mk(sizeof(long), 0);
    pt.to_plain = mk(sizeof(long), 3);
    struct joiner j;
    cr_assert_eq(pthread_create(&j.th, NULL, pt_thread, NULL), 0);
    long v;
    int r;
    for (long i = 0; (r = weft_chan_recv(pt.to_green, &v)) == 0; i++)
        cr_assert_eq(v, i);
    cr_assert_eq(r, -EPIPE);
    for (long i = 0; i < pt.n; i++)
        cr_assert_eq(weft_chan_send(pt.to_plain, &i), 0);
    weft_chan_close(pt.to_plain);
    weft_blocking(pt_join, &j);
    cr_assert_null(j.ret, "the pthread failed (%p)", j.ret);
    weft_chan_free(pt.to_green);
    weft_chan_free(pt.to_plain);
    return 0;
}

Test(chan, pthread_under_run_1p, .timeout = 30) { run_with_plain(pthread_main, NULL, 1, 0); }
Test(chan, pthread_under_run_2p, .timeout = 30) { run_with_plain(pthread_main, NULL, 2, 0); }
Test(chan, pthread_under_run_migrate, .timeout = 30) { run_with_plain(pthread_main, NULL, 2, 1); }

/* ---- select: uniform choice among ready cases ------------------------------------------------------------ */
/* arg: 2 or 4 receive cases, or -2: one send case and one receive case */
static int uniform_main(void *arg)
{
    int k = (int)(intptr_t)arg;
    bool mixed = k < 0;
    if (mixed)
        k = 2;
    weft_chan *ch[4];
    long vals[4] = { 0 }, counts[4] = { 0 };
    weft_case cases[4];
    for (int i = 0; i < k; i++) {
        ch[i] = mk(sizeof(long), 1);
        long v = i;
        bool send = mixed && i == 0;   /* a send case on an empty cap-1 channel is ready */
        if (!send)
            cr_assert_eq(weft_chan_try_send(ch[i], &v), 0);
        vals[i] = i;
        cases[i] = (weft_case){ ch[i], send ? WEFT_SEND : WEFT_RECV, &vals[i], 0 };
    }
    long n = iters(100000, 20000);
    for (long t = 0; t < n; t++) {
        int r = weft_select(cases, k, -1);
        cr_assert(r >= 0 && r < k, "select returned %d", r);
        cr_assert_eq(cases[r].closed, 0);
        counts[r]++;
        long v = r;
        if (cases[r].op == WEFT_RECV) {
            cr_assert_eq(vals[r], r);
            cr_assert_eq(weft_chan_try_send(ch[r], &v), 0, "refill");
        } else {
            cr_assert_eq(weft_chan_try_recv(ch[r], &v), 0, "drain");
            cr_assert_eq(v, r);
        }
    }
    double expect = (double)n / k, chi2 = 0;
    for (int i = 0; i < k; i++)
        chi2 += (counts[i] - expect) * (counts[i] - expect) / expect;
    /* p = 1e-6: 23.93 for 1 degree of freedom, 30.66 for 3. (p = 0.001 failed a fair
     * select once in ~1000 runs, and CI runs this a dozen times; at 10 000 selects
     * p = 1e-6 still catches a 52.5 / 47.5 split.) */
    double crit = k == 2 ? 23.93 : 30.66;
    cr_assert_lt(chi2, crit, "chi-square %.2f over %ld selects: %ld %ld %ld %ld", chi2, n, counts[0],
                 counts[1], counts[2], counts[3]);
    for (int i = 0; i < k; i++)
        weft_chan_free(ch[i]);
    return 0;
}

VARIANTS(chan, select_uniform_two, uniform_main, (void *)2, 30)
Test(chan, select_uniform_four_2p, .timeout = 30) { run(uniform_main, (void *)4, 2, 0); }
Test(chan, select_uniform_send_and_recv_1p, .timeout = 30) { run(uniform_main, (void *)-2, 1, 0); }

/* ---- select: timeouts ------------------------------------------------------------------------------------------- */
static int select_timeout_main(void *arg)
{
    (void)arg;
    weft_chan *a = mk(sizeof(long), 0), *b = mk(sizeof(long), 2);
    long va = -1, vb = -1;
    weft_case cs[2] = { { a, WEFT_RECV, &va, 0 }, { b, WEFT_RECV, &vb, 0 } };

    /* timeout 0: nothing ready */
    cr_assert_eq(weft_select(cs, 2, 0), -EAGAIN);
    cr_assert_eq(weft_select(NULL, 0, 0), -EAGAIN);
    long full = 0;
    weft_case send_full[1] = { { b, WEFT_SEND, &full, 0 } };
    cr_assert_eq(weft_select(send_full, 1, 0), 0, "a send with room is ready");
    cr_assert_eq(weft_select(send_full, 1, 0), 0);
    cr_assert_eq(weft_select(send_full, 1, 0), -EAGAIN, "a send to a full channel is not ready");
    cr_assert_eq(weft_chan_recv(b, &vb), 0);
    cr_assert_eq(weft_chan_recv(b, &vb), 0);

    /* a positive timeout expires: >= the timeout, and not 1 s later (a loaded machine,
     * ASan: up to ~0.3 s late seen; a timer that never fires hangs the test) */
    int64_t to[] = { 1 * WEFT_MILLISECOND, 20 * WEFT_MILLISECOND, 50 * WEFT_MILLISECOND };
    for (size_t i = 0; i < sizeof to / sizeof to[0]; i++) {
        int64_t t0 = weft_now();
        cr_assert_eq(weft_select(cs, 2, to[i]), -ETIMEDOUT);
        int64_t el = weft_now() - t0;
        cr_assert_geq(el, to[i], "select(%lld ns) returned after %lld ns", (long long)to[i], (long long)el);
        cr_assert_lt(el, to[i] + WEFT_SECOND, "select(%lld ns) returned after %lld ns",
                     (long long)to[i], (long long)el);
    }
    /* no cases at all: a timed select is a sleep */
    int64_t t0 = weft_now();
    cr_assert_eq(weft_select(NULL, 0, 10 * WEFT_MILLISECOND), -ETIMEDOUT);
    cr_assert_geq(weft_now() - t0, 10 * WEFT_MILLISECOND);

    /* -1 waits until a case fires */
    struct later l = { .c = b, .after_ns = 20 * WEFT_MILLISECOND, .value = 77 };
    t0 = weft_now();
    cr_assert_eq(weft_spawn(later_fn, &l), 0);
    cr_assert_eq(weft_select(cs, 2, -1), 1);
    cr_assert_geq(weft_now() - t0, 20 * WEFT_MILLISECOND);
    cr_assert_eq(vb, 77);
    cr_assert_eq(cs[1].closed, 0);

    /* a long timeout: the case fires long before it */
    struct later l2 = { .c = a, .after_ns = 5 * WEFT_MILLISECOND, .value = 66 };
    t0 = weft_now();
    cr_assert_eq(weft_spawn(later_fn, &l2), 0);
    cr_assert_eq(weft_select(cs, 2, 10 * WEFT_SECOND), 0);
    cr_assert_eq(va, 66);
    cr_assert_lt(weft_now() - t0, 5 * WEFT_SECOND);

    /* a ready case wins over a zero or positive timeout */
    long one = 1;
    cr_assert_eq(weft_chan_send(b, &one), 0);
    cr_assert_eq(weft_select(cs, 2, 0), 1);
    cr_assert_eq(weft_chan_send(b, &one), 0);
    cr_assert_eq(weft_select(cs, 2, 5 * WEFT_MILLISECOND), 1);
    weft_chan_free(a);
    weft_chan_free(b);
    return 0;
}

VARIANTS(chan, select_timeouts, select_timeout_main, NULL, 30)

/* ---- select: close while waiting, closed channels --------------------------------------------------------- */
static int select_close_main(void *arg)
{
    (void)arg;
    weft_chan *a = mk(sizeof(long), 0), *b = mk(sizeof(long), 0);
    long va = -1, vb = -1;
    weft_case cs[2] = { { a, WEFT_RECV, &va, 0 }, { b, WEFT_RECV, &vb, 0 } };
    struct later l = { .c = b, .after_ns = 10 * WEFT_MILLISECOND, .close = true };
    cr_assert_eq(weft_spawn(later_fn, &l), 0);
    cs[0].closed = cs[1].closed = 7;
    int r = weft_select(cs, 2, -1);
    cr_assert_eq(r, 1, "close of case 1's channel fired %d", r);
    cr_assert_eq(cs[1].closed, 1);
    cr_assert_eq(cs[0].closed, 0);
    /* again: a closed channel is always ready */
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(weft_select(cs, 2, 0), 1);
        cr_assert_eq(cs[1].closed, 1);
    }
    /* a send case on a closed channel fires with closed = 1 */
    long x = 5;
    weft_case sc[2] = { { a, WEFT_SEND, &x, 0 }, { b, WEFT_SEND, &x, 0 } };
    cr_assert_eq(weft_select(sc, 2, -1), 1);
    cr_assert_eq(sc[1].closed, 1);
    cr_assert_eq(sc[0].closed, 0);

    /* a send case waiting on a full channel, closed meanwhile */
    weft_chan *f = mk(sizeof(long), 1);
    cr_assert_eq(weft_chan_send(f, &x), 0);
    weft_case fc[2] = { { a, WEFT_RECV, &va, 0 }, { f, WEFT_SEND, &x, 0 } };
    struct later l2 = { .c = f, .after_ns = 10 * WEFT_MILLISECOND, .close = true };
    cr_assert_eq(weft_spawn(later_fn, &l2), 0);
    cr_assert_eq(weft_select(fc, 2, -1), 1);
    cr_assert_eq(fc[1].closed, 1);
    /* a receive case on a closed channel drains it first */
    weft_case rf[1] = { { f, WEFT_RECV, &va, 0 } };
    va = 0;
    cr_assert_eq(weft_select(rf, 1, -1), 0);
    cr_assert_eq(rf[0].closed, 0, "a buffered element is received before the close shows");
    cr_assert_eq(va, 5);
    cr_assert_eq(weft_select(rf, 1, -1), 0);
    cr_assert_eq(rf[0].closed, 1);

    weft_chan_free(f);
    weft_chan_free(a);
    weft_chan_free(b);
    return 0;
}

VARIANTS(chan, select_close, select_close_main, NULL, 30)

/* One select over a receive, a nil case and a send: the send that fits is chosen;
 * without it nothing is ready (-EAGAIN), a 20 ms timeout expires in [20, 1020) ms, a
 * close while waiting fires its case with closed = 1, a bad op is -EINVAL, and the
 * element the send case sent arrives. */
static int select_recv_nil_send_main(void *arg)
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
    cr_assert(took >= 20 * WEFT_MILLISECOND && took < 20 * WEFT_MILLISECOND + WEFT_SECOND, "%lld ns",
              (long long)took);
    struct later l = { .c = a, .after_ns = 10 * WEFT_MILLISECOND, .close = true };
    weft_spawn(later_fn, &l);
    cr_assert_eq(weft_select(cs, 2, -1), 0);                 /* closed while waiting */
    cr_assert_eq(cs[0].closed, 1);
    weft_case bad = { a, 7, &r, 0 };
    cr_assert_eq(weft_select(&bad, 1, 0), -EINVAL);
    weft_case rc = { b, WEFT_RECV, &r, 0 };
    cr_assert_eq(weft_select(&rc, 1, -1), 0);
    cr_assert_eq(r, 5);
    return 0;
}

Test(chan, select_timeouts_close_and_sends_1p) { run(select_recv_nil_send_main, NULL, 1, 0); }
Test(chan, select_timeouts_close_and_sends_2p) { run(select_recv_nil_send_main, NULL, 2, 0); }

static struct { weft_chan *c, *other; _Atomic long woke, ready; } sw;
static void sw_waiter(void *arg)
{
    (void)arg;
    long v;
    weft_case cs[2] = { { sw.other, WEFT_RECV, &v, 0 }, { sw.c, WEFT_RECV, &v, 0 } };
    atomic_fetch_add(&sw.ready, 1);
    int r = weft_select(cs, 2, -1);
    cr_assert_eq(r, 1);
    cr_assert_eq(cs[1].closed, 1);
    atomic_fetch_add(&sw.woke, 1);
}

static int select_close_many_main(void *arg)
{
    (void)arg;
    sw.c = mk(sizeof(long), 0);
    sw.other = mk(sizeof(long), 4);
    long n = iters(200, 50);
    for (long i = 0; i < n; i++)
        cr_assert_eq(weft_spawn(sw_waiter, NULL), 0);
    cr_assert(await_ge(&sw.ready, n, 10000));
    yield_for(2000);
    weft_chan_close(sw.c);
    cr_assert(await_ge(&sw.woke, n, 10000), "close woke %ld of %ld selects", atomic_load(&sw.woke), n);
    weft_chan_free(sw.c);
    weft_chan_free(sw.other);
    return 0;
}

VARIANTS(chan, select_close_wakes_all, select_close_many_main, NULL, 30)

/* ---- select mixing sends and receives -------------------------------------------------------------------- */
static struct { weft_chan *s, *r; long n; _Atomic long peer_sends, peer_recvs, peer_done; } mx;

static void mx_peer(void *arg)
{
    (void)arg;
    unsigned seed = 777;
    long next_send = 0, next_recv = 0;
    for (long i = 0; i < mx.n; i++) {
        seed = seed * 1103515245u + 12345u;
        if ((seed >> 16) % 3 == 0) {
            long v = -1;
            cr_assert_eq(weft_chan_recv(mx.s, &v), 0);
            cr_assert_eq(v, next_recv, "the select sent %ld, expected %ld", v, next_recv);
            next_recv++;
        } else {
            cr_assert_eq(weft_chan_send(mx.r, &next_send), 0);
            next_send++;
        }
    }
    atomic_store(&mx.peer_sends, next_send);
    atomic_store(&mx.peer_recvs, next_recv);
    atomic_store(&mx.peer_done, 1);
}

static int select_mixed_main(void *arg)
{
    size_t cap = (size_t)(intptr_t)arg;
    mx.s = mk(sizeof(long), cap);
    mx.r = mk(sizeof(long), cap);
    mx.n = iters(50000, 300);
    cr_assert_eq(weft_spawn(mx_peer, NULL), 0);
    long out = 0, in = -1, sent = 0, recvd = 0;
    weft_case cs[2] = { { mx.s, WEFT_SEND, &out, 0 }, { mx.r, WEFT_RECV, &in, 0 } };
    /* The peer decides; the select follows (with buffering it may send ahead). A short
     * timeout lets it notice the end: the peer done and everything it sent received. */
    int64_t t0 = weft_now();
    while (!(atomic_load(&mx.peer_done) && recvd == atomic_load(&mx.peer_sends))) {
        cr_assert_lt(ms_since(t0), 40000, "stuck: sent %ld received %ld of %ld", sent, recvd, mx.n);
        int r = weft_select(cs, 2, 1 * WEFT_MILLISECOND);
        if (r == -ETIMEDOUT)
            continue;
        cr_assert(r == 0 || r == 1, "select returned %d", r);
        cr_assert_eq(cs[r].closed, 0);
        if (r == 0) {
            sent++;
            out++;
        } else {
            cr_assert_eq(in, recvd, "received %ld, expected %ld", in, recvd);
            recvd++;
        }
    }
    /* every send the select made was received by the peer, or is still buffered */
    cr_assert_eq(sent, atomic_load(&mx.peer_recvs) + (long)weft_chan_len(mx.s), "sent %ld, peer got %ld, %zu buffered",
                 sent, atomic_load(&mx.peer_recvs), weft_chan_len(mx.s));
    cr_assert_eq(sent + recvd, mx.n + (long)weft_chan_len(mx.s));

    /* a send to a full channel is not ready; a ready receive is chosen every time */
    weft_chan *full = mk(sizeof(long), 1), *ready = mk(sizeof(long), 1);
    long x = 3;
    cr_assert_eq(weft_chan_send(full, &x), 0);
    weft_case fc[2] = { { full, WEFT_SEND, &x, 0 }, { ready, WEFT_RECV, &in, 0 } };
    for (int i = 0; i < 200; i++) {
        cr_assert_eq(weft_chan_send(ready, &x), 0);
        cr_assert_eq(weft_select(fc, 2, -1), 1);
    }
    weft_chan_free(full);
    weft_chan_free(ready);
    weft_chan_free(mx.s);
    weft_chan_free(mx.r);
    return 0;
}

VARIANTS(chan, select_mixed_unbuffered, select_mixed_main, (void *)0, 30)
VARIANTS(chan, select_mixed_buffered, select_mixed_main, (void *)2, 30)

/* ---- select: no lost wake-ups -------------------------------------------------------------------------------- */
enum { LW_SEL = 16, LW_PROD = 8 };
static struct {
    weft_chan *ch[3];
    long per;
    _Atomic long received, produced, sel_done, dups, timeouts;
    _Atomic unsigned char *seen;
} lw;

static void lw_selector(void *arg)
{
    int id = (int)(intptr_t)arg;
    long v[3];
    weft_case cs[3];
    for (int i = 0; i < 3; i++)
        cs[i] = (weft_case){ lw.ch[i], WEFT_RECV, &v[i], 0 };
    int open = 3;
    /* a quarter of them use a short timeout: a timeout racing a hand-off must lose nothing */
    int64_t timeout = id % 4 == 3 ? 200 * WEFT_MICROSECOND : -1;
    while (open > 0) {
        int r = weft_select(cs, 3, timeout);
        if (r == -ETIMEDOUT) {
            atomic_fetch_add(&lw.timeouts, 1);
            continue;
        }
        cr_assert(r >= 0 && r < 3, "select returned %d", r);
        if (cs[r].closed) {
            cs[r].chan = NULL;        /* a nil case never fires again */
            open--;
            continue;
        }
        long x = v[r];
        cr_assert(x >= 0 && x < LW_PROD * lw.per, "received a value never sent: %ld", x);
        if (atomic_fetch_add(&lw.seen[x], 1) != 0)
            atomic_fetch_add(&lw.dups, 1);
        atomic_fetch_add(&lw.received, 1);
    }
    atomic_fetch_add(&lw.sel_done, 1);
}

static void lw_producer(void *arg)
{
    long p = (long)(intptr_t)arg;
    for (long i = 0; i < lw.per; i++) {
        long v = p * lw.per + i;
        if (p % 2 == 0) {
            cr_assert_eq(weft_chan_send(lw.ch[(p + i) % 3], &v), 0);
        } else {
            weft_case cs[3];
            for (int k = 0; k < 3; k++)
                cs[k] = (weft_case){ lw.ch[k], WEFT_SEND, &v, 0 };
            int r = weft_select(cs, 3, -1);
            cr_assert(r >= 0 && r < 3, "send select returned %d", r);
            cr_assert_eq(cs[r].closed, 0);
        }
    }
    atomic_fetch_add(&lw.produced, 1);
}

static int lost_wakeups_main(void *arg)
{
    (void)arg;
    lw.ch[0] = mk(sizeof(long), 0);
    lw.ch[1] = mk(sizeof(long), 0);
    lw.ch[2] = mk(sizeof(long), 1);
    lw.per = iters(5000, 30);
    long total = LW_PROD * lw.per;
    lw.seen = calloc((size_t)total, 1);
    cr_assert_not_null(lw.seen);
    for (int i = 0; i < LW_SEL; i++)
        cr_assert_eq(weft_spawn(lw_selector, (void *)(intptr_t)i), 0);
    for (int i = 0; i < LW_PROD; i++)
        cr_assert_eq(weft_spawn(lw_producer, (void *)(intptr_t)i), 0);
    cr_assert(await_ge(&lw.produced, LW_PROD, 40000), "producers stuck: %ld of %d done, %ld of %ld received",
              atomic_load(&lw.produced), LW_PROD, atomic_load(&lw.received), total);
    cr_assert(await_ge(&lw.received, total, 10000), "lost wake-up: received %ld of %ld",
              atomic_load(&lw.received), total);
    for (int i = 0; i < 3; i++)
        weft_chan_close(lw.ch[i]);
    cr_assert(await_ge(&lw.sel_done, LW_SEL, 10000), "%ld of %d selects saw every close",
              atomic_load(&lw.sel_done), LW_SEL);
    cr_assert_eq(atomic_load(&lw.received), total);
    cr_assert_eq(atomic_load(&lw.dups), 0);
    for (long v = 0; v < total; v++)
        cr_assert_eq(lw.seen[v], 1, "value %ld received %d times", v, lw.seen[v]);
    free((void *)lw.seen);
    for (int i = 0; i < 3; i++)
        weft_chan_free(lw.ch[i]);
    return 0;
}

VARIANTS(chan, select_no_lost_wakeups, lost_wakeups_main, NULL, 60)

/* ---- select: NULL channels never fire; bad arguments ------------------------------------------------------- */
static int null_cases_main(void *arg)
{
    (void)arg;
    weft_chan *c = mk(sizeof(long), 1);
    long v = 0, w = 0;
    weft_case cs[4] = {
        { NULL, WEFT_RECV, &w, 0 }, { NULL, WEFT_SEND, &w, 0 }, { c, WEFT_RECV, &v, 0 }, { NULL, WEFT_RECV, &w, 0 },
    };
    cr_assert_eq(weft_select(cs, 4, 0), -EAGAIN);
    int64_t t0 = weft_now();
    cr_assert_eq(weft_select(cs, 2, 10 * WEFT_MILLISECOND), -ETIMEDOUT, "only nil cases: a timed sleep");
    cr_assert_geq(weft_now() - t0, 10 * WEFT_MILLISECOND);
    for (long i = 0; i < 1000; i++) {
        cr_assert_eq(weft_chan_try_send(c, &i), 0);
        int r = weft_select(cs, 4, i % 2 ? 0 : -1);
        cr_assert_eq(r, 2, "a nil case fired: %d", r);
        cr_assert_eq(v, i);
    }
    /* a nil case stays quiet while the select waits for a real one */
    struct later l = { .c = c, .after_ns = 5 * WEFT_MILLISECOND, .value = 42 };
    cr_assert_eq(weft_spawn(later_fn, &l), 0);
    cr_assert_eq(weft_select(cs, 4, -1), 2);
    cr_assert_eq(v, 42);
    cr_assert_eq(w, 0, "a nil case touched its element");

    /* bad arguments */
    cs[2].op = 0;
    cr_assert_eq(weft_select(cs, 4, 0), -EINVAL);
    cs[2].op = 3;
    cr_assert_eq(weft_select(cs, 4, -1), -EINVAL);
    cs[2].op = WEFT_RECV;
    cr_assert_eq(weft_select(cs, -1, 0), -EINVAL);
    weft_chan_free(c);
    return 0;
}

VARIANTS(chan, select_null_cases, null_cases_main, NULL, 30)

/* A select with more cases than fit on its stack (16) */
static int many_cases_main(void *arg)
{
    (void)arg;
    enum { K = 40 };
    weft_chan *ch[K];
    long vals[K];
    weft_case cs[K];
    for (int i = 0; i < K; i++) {
        ch[i] = mk(sizeof(long), 1);
        cs[i] = (weft_case){ ch[i], WEFT_RECV, &vals[i], 0 };
    }
    cr_assert_eq(weft_select(cs, K, 0), -EAGAIN);
    for (int i = 0; i < K; i++) {
        long v = 1000 + i;
        int target = (i * 17) % K;
        struct later l = { .c = ch[target], .after_ns = 100 * WEFT_MICROSECOND, .value = v };
        cr_assert_eq(weft_spawn(later_fn, &l), 0);
        int r = weft_select(cs, K, -1);
        cr_assert_eq(r, target);
        cr_assert_eq(vals[target], v);
    }
    for (int i = 0; i < K; i++)
        weft_chan_free(ch[i]);
    return 0;
}

VARIANTS(chan, select_many_cases, many_cases_main, NULL, 30)

/* ---- the concurrent prime sieve ------------------------------------------------------------------------------ */
static void sieve_generate(void *arg)
{
    weft_chan *out = arg;
    for (long i = 2;; i++)
        if (weft_chan_send(out, &i) != 0)
            return;
}

struct filt { weft_chan *in, *out; long prime; };
static void sieve_filter(void *arg)
{
    struct filt f = *(struct filt *)arg;
    weft_free(arg);
    for (;;) {
        long i;
        if (weft_chan_recv(f.in, &i) != 0)
            return;
        if (i % f.prime != 0 && weft_chan_send(f.out, &i) != 0)
            return;
    }
}

static int sieve_main(void *arg)
{
    (void)arg;
    int n = (int)iters(1000, 100);
    if (sanitized() && !g_migrate)
        n = 300;                      /* the work grows with n^2 */
    long *primes = calloc((size_t)n, sizeof *primes);
    cr_assert_not_null(primes);
    weft_chan *ch = mk(sizeof(long), 0);
    cr_assert_eq(weft_spawn(sieve_generate, ch), 0);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(weft_chan_recv(ch, &primes[i]), 0);
        struct filt *f = weft_malloc(sizeof *f);
        cr_assert_not_null(f);
        *f = (struct filt){ ch, mk(sizeof(long), 0), primes[i] };
        ch = f->out;
        cr_assert_eq(weft_spawn(sieve_filter, f), 0);
    }
    /* a plain sieve of Eratosthenes */
    int lim = 10000;
    char *comp = calloc((size_t)lim, 1);
    int k = 0;
    for (int i = 2; i < lim && k < n; i++) {
        if (comp[i])
            continue;
        cr_assert_eq(primes[k], i, "prime #%d: the sieve says %ld, expected %d", k, primes[k], i);
        k++;
        for (int j = i * 2; j < lim; j += i)
            comp[j] = 1;
    }
    cr_assert_eq(k, n);
    free(comp);
    free(primes);
    /* the generator and the filters stay blocked: weft_run releases them (Go's main) */
    return 0;
}

VARIANTS(chan, prime_sieve, sieve_main, NULL, 60)

/* ---- sizes that cannot be computed are refused (issue 11) ----------------------------------- */
/* elem_size * capacity was checked for overflow, the header added to it was not:
 * (1, SIZE_MAX) made a 96-byte channel with a huge capacity (a heap overflow at the
 * first send). Any size past SIZE_MAX is -EINVAL; one that fits but cannot be had,
 * -ENOMEM. Plain thread, no runtime needed. */
Test(chan, make_refuses_sizes_that_overflow, .timeout = 30)
{
    static const struct { size_t elem, cap; } bad[] = {
        { 1, SIZE_MAX }, { 1, SIZE_MAX - 8 }, { 16, SIZE_MAX / 16 }, { 2, SIZE_MAX / 2 },
        { 64, SIZE_MAX / 64 + 1 }, { (size_t)1 << 30, SIZE_MAX },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        weft_chan *c = (weft_chan *)&c;          /* must come back NULL */
        int r = weft_chan_make(&c, bad[i].elem, bad[i].cap);
        cr_assert_eq(r, -EINVAL, "weft_chan_make(%zu, %#zx): %d, not -EINVAL", bad[i].elem, bad[i].cap, r);
        cr_assert_null(c);
    }
    /* computable but far too large: -ENOMEM */
    weft_chan *c = NULL;
    int r = weft_chan_make(&c, 1, SIZE_MAX / 2);
    cr_assert_eq(r, -ENOMEM, "weft_chan_make(1, SIZE_MAX / 2): %d", r);
    cr_assert_null(c);
    /* zero-size elements need no buffer: any capacity */
    cr_assert_eq(weft_chan_make(&c, 0, SIZE_MAX), 0);
    cr_assert_eq(weft_chan_cap(c), SIZE_MAX);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(weft_chan_try_send(c, NULL), 0);
    cr_assert_eq(weft_chan_len(c), 3);
    cr_assert_eq(weft_chan_try_recv(c, NULL), 0);
    weft_chan_free(c);
    /* and an ordinary one still works to its last slot */
    cr_assert_eq(weft_chan_make(&c, sizeof(long), 4), 0);
    for (long v = 0; v < 4; v++)
        cr_assert_eq(weft_chan_try_send(c, &v), 0);
    long v = 9;
    cr_assert_eq(weft_chan_try_send(c, &v), -EAGAIN);
    for (long want = 0; want < 4; want++) {
        cr_assert_eq(weft_chan_try_recv(c, &v), 0);
        cr_assert_eq(v, want);
    }
    weft_chan_free(c);
}
