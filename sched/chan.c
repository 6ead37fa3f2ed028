/*
 * sched/chan.c -- channels and select (Go's chan.go and select.go, on wait.h).
 *
 * A channel: a lock, a ring buffer of cap elements, the queues of parked senders
 * and receivers, closed. Invariants (lock held):
 *  - count > 0 implies no receiver waits; count < cap implies no sender waits (only
 *    waiters whose claim will fail may linger, and every taker skips those);
 *  - a blocked sender's element stays in its own memory until a receiver (or a
 *    freed buffer slot) takes it: unbuffered hand-off copies sender -> receiver
 *    directly, and the readied receiver goes to the waker's runnext;
 *  - closed never goes back to 0; close claims and wakes every waiter (-EPIPE,
 *    select cases with closed = 1).
 * Select locks its distinct channels in address order (no lock-order cycles), scans
 * the cases in a random order (uniform choice among the ready ones), and otherwise
 * parks with one waiter per case, all sharing one claim word: the first waker to
 * claim it decides the case; the select then unlinks the rest.
 *
 * Callers: the public weft_chan_* and weft_select calls, from green and plain
 * threads. Calls: wait.c (block, wake), timer.c (the caller's deadline), current.c,
 * mem/.
 *
 * Rejected: memcpy with a variable size for every element (~12 instructions a copy,
 * 2 a ping-pong half, against the inline fixed-size copies of copy_elem).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "sched/wait.h"

struct weft_chan {
    weft_lock lock;
    uint32_t closed;
    size_t elemsize, cap, count, sendx, recvx;
    struct waitq recvq, sendq;
    char *buf;
};

int weft_chan_make(weft_chan **out, size_t elem_size, size_t capacity)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    /* Every size that cannot be computed is -EINVAL: the element, the buffer
     * (elem_size * capacity) and the object (the header plus the buffer; unchecked, a
     * capacity near SIZE_MAX wrapped it to a 96-byte object with a huge cap). A size
     * that can be computed but not allocated is -ENOMEM (weft_calloc). */
    size_t bytes, total;
    if (elem_size > ((size_t)1 << 30) || __builtin_mul_overflow(elem_size, capacity, &bytes) ||
        __builtin_add_overflow(bytes, sizeof(weft_chan), &total))
        return -EINVAL;
    weft_chan *c = weft_calloc(1, total);
    if (c == NULL)
        return -ENOMEM;
    c->elemsize = elem_size;
    c->cap = capacity;
    c->buf = (char *)(c + 1);
    *out = c;
    return 0;
}

void weft_chan_free(weft_chan *c)
{
    if (c == NULL)
        return;
    weft__lock(&c->lock);
    bool busy = !weft__waitq_empty(&c->recvq) || !weft__waitq_empty(&c->sendq);
    weft__unlock(&c->lock);
    if (busy)
        weft__throw("weft_chan_free: green threads are still waiting on the channel");
    weft_free(c);
}

size_t weft_chan_len(const weft_chan *c)
{
    return __atomic_load_n(&c->count, __ATOMIC_RELAXED);
}

size_t weft_chan_cap(const weft_chan *c)
{
    return c->cap;
}

/* The common small sizes are copied inline (a fixed-size memcpy is a move; a call
 * to memcpy with a variable size cost ~12 instructions a copy, 2 a ping-pong half) */
static inline void copy_elem(weft_chan *c, void *dst, const void *src)
{
    if (dst == NULL || src == NULL)
        return;
    switch (c->elemsize) {
    case 0:
        return;
    case 4:
        memcpy(dst, src, 4);
        return;
    case 8:
        memcpy(dst, src, 8);
        return;
    case 16:
        memcpy(dst, src, 16);
        return;
    default:
        memcpy(dst, src, c->elemsize);
    }
}

static inline char *slot(weft_chan *c, size_t i)
{
    return c->buf + i * c->elemsize;
}

static void unlock_chan(void *arg)
{
    weft__unlock(&((weft_chan *)arg)->lock);
}

/* The case fired for a select waiter: record it in the caller's case array. */
static inline void fire_case(struct waiter *w, int closed)
{
    if (w->sel != NULL)
        ((weft_case *)w->sel)[w->idx].closed = closed;
    w->closed = closed;
    w->wc->fired = w->idx;
}

/* ---- the non-blocking halves (lock held); 1 done, 0 would block ------------------- */
static int try_send_locked(weft_chan *c, const void *elem)
{
    struct waiter *w = weft__waitq_claim(&c->recvq);
    if (w != NULL) {
        copy_elem(c, w->elem, elem);
        w->result = 0;
        fire_case(w, 0);
        weft__unlock(&c->lock);
        weft__waiter_wake(w);
        return 1;
    }
    if (c->count < c->cap) {
        copy_elem(c, slot(c, c->sendx), elem);
        if (++c->sendx == c->cap)
            c->sendx = 0;
        __atomic_store_n(&c->count, c->count + 1, __ATOMIC_RELAXED);
        weft__unlock(&c->lock);
        return 1;
    }
    return 0;
}

static int try_recv_locked(weft_chan *c, void *elem)
{
    struct waiter *w = weft__waitq_claim(&c->sendq);
    if (w != NULL) {
        if (c->cap == 0) {
            copy_elem(c, elem, w->elem);
        } else {
            /* the queue is full: take its head, the sender's element goes to the tail */
            copy_elem(c, elem, slot(c, c->recvx));
            copy_elem(c, slot(c, c->recvx), w->elem);
            if (++c->recvx == c->cap)
                c->recvx = 0;
            c->sendx = c->recvx;
        }
        w->result = 0;
        fire_case(w, 0);
        weft__unlock(&c->lock);
        weft__waiter_wake(w);
        return 1;
    }
    if (c->count > 0) {
        copy_elem(c, elem, slot(c, c->recvx));
        if (++c->recvx == c->cap)
            c->recvx = 0;
        __atomic_store_n(&c->count, c->count - 1, __ATOMIC_RELAXED);
        weft__unlock(&c->lock);
        return 1;
    }
    return 0;
}

/* ---- send / recv ----------------------------------------------------------------- */
static int chan_op(weft_chan *c, void *elem, bool send, bool block)
{
    if (c == NULL)
        weft__throw(send ? "weft_chan_send: NULL channel" : "weft_chan_recv: NULL channel");
    weft__lock(&c->lock);
    if (send && c->closed) {
        weft__unlock(&c->lock);
        return -EPIPE;
    }
    if (send ? try_send_locked(c, elem) : try_recv_locked(c, elem))
        return 0;
    if (!send && c->closed) {
        weft__unlock(&c->lock);
        return -EPIPE;
    }
    if (!block) {
        weft__unlock(&c->lock);
        return -EAGAIN;
    }
    int64_t dl = weft__deadline_now();
    if (dl >= 0 && dl <= weft__time_now()) {
        weft__unlock(&c->lock);
        return -ETIMEDOUT;
    }
    struct waitctx wc;
    struct waiter w = { .elem = elem, .wc = &wc };
    weft__wait_begin(&wc);
    wc.exclusive = dl < 0;
    weft__waitq_push(send ? &c->sendq : &c->recvq, &w, false);
    int r = weft__wait_block(&wc, unlock_chan, c, dl, send ? "chan send" : "chan receive");
    if (r != 0) {
        weft__lock(&c->lock);
        weft__waitq_remove(send ? &c->sendq : &c->recvq, &w);
        weft__unlock(&c->lock);
        return r;
    }
    return w.result;
}

int weft_chan_send(weft_chan *c, const void *elem)
{
    return chan_op(c, (void *)elem, true, true);
}

int weft_chan_recv(weft_chan *c, void *elem)
{
    return chan_op(c, elem, false, true);
}

int weft_chan_try_send(weft_chan *c, const void *elem)
{
    return chan_op(c, (void *)elem, true, false);
}

int weft_chan_try_recv(weft_chan *c, void *elem)
{
    return chan_op(c, elem, false, false);
}

void weft_chan_close(weft_chan *c)
{
    if (c == NULL)
        weft__throw("weft_chan_close: NULL channel");
    weft__lock(&c->lock);
    if (c->closed) {
        weft__unlock(&c->lock);
        weft__throw("weft_chan_close: channel closed twice");
    }
    c->closed = 1;
    struct waiter *woken = NULL, *w;
    while ((w = weft__waitq_claim(&c->recvq)) != NULL || (w = weft__waitq_claim(&c->sendq)) != NULL) {
        w->result = -EPIPE;
        fire_case(w, 1);
        w->next = woken;        /* unlinked: next is ours to use */
        woken = w;
    }
    weft__unlock(&c->lock);
    while (woken != NULL) {
        w = woken;
        woken = w->next;        /* read before the wake: w dies with its owner's frame */
        weft__waiter_wake(w);
    }
}

/* ---- select ---------------------------------------------------------------------- */
struct selunlock {
    weft_chan **locks;
    int nlocks;
};

/* Also select's park unlock function, with su on the parked G's stack: once a waker or
 * the deadline can resume the G, its frame stays only while locks[0] is held (the G's
 * lock_all takes locks[0] first). So locks[0] goes last and nothing of *su is read
 * after it. */
static void unlock_all(void *arg)
{
    struct selunlock *su = arg;
    weft_chan **locks = su->locks;
    for (int i = su->nlocks - 1; i >= 0; i--)
        weft__unlock(&locks[i]->lock);
}

static void lock_all(weft_chan **locks, int n)
{
    for (int i = 0; i < n; i++)
        weft__lock(&locks[i]->lock);
}

static int cmp_chan(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(weft_chan *const *)a, y = (uintptr_t)*(weft_chan *const *)b;
    return x < y ? -1 : x > y;
}

static uint32_t select_rand(void)
{
    static __thread uint64_t s WEFT_TLS_IE;
    if (s == 0)
        s = weft__rand_seed((uint64_t)weft__time_now());
    return weft__rand_next(&s);
}

/* Unlock every channel but c (its lock was dropped by the try_ helper). */
static void unlock_others(weft_chan **locks, int n, weft_chan *c)
{
    for (int i = n - 1; i >= 0; i--)
        if (locks[i] != c)
            weft__unlock(&locks[i]->lock);
}

#define SELECT_STACK 16

int weft_select(weft_case *cases, int n, int64_t timeout_ns)
{
    if (n < 0 || (n > 0 && cases == NULL))
        return -EINVAL;
    for (int i = 0; i < n; i++) {
        if (cases[i].op != WEFT_SEND && cases[i].op != WEFT_RECV)
            return -EINVAL;
        cases[i].closed = 0;
    }
    /* the earlier of the caller's deadline and the timeout; with no case and no
     * deadline a select waits forever (Go's select {}) */
    int64_t dl = weft__deadline_now();
    if (timeout_ns > 0)          /* (the clock is read only when needed: ~30 ns here) */
        dl = weft__deadline_min(dl, weft__time_after(weft__time_now(), timeout_ns));

    weft_chan *lockbuf[SELECT_STACK];
    int orderbuf[SELECT_STACK];
    struct waiter wbuf[SELECT_STACK];
    weft_chan **locks = lockbuf;
    int *order = orderbuf;
    struct waiter *ws = wbuf;
    void *heap = NULL;
    if (n > SELECT_STACK) {
        size_t bytes;       /* (cannot wrap with a 64-bit size_t; checked for 32-bit ones) */
        if (__builtin_mul_overflow((size_t)n, sizeof *locks + sizeof *order + sizeof *ws, &bytes))
            return -EINVAL;
        heap = weft_malloc(bytes);
        if (heap == NULL)
            return -ENOMEM;
        ws = heap;
        locks = (weft_chan **)(ws + n);
        order = (int *)(locks + n);
    }
    /* distinct channels in address order */
    int nlocks = 0;
    for (int i = 0; i < n; i++)
        if (cases[i].chan != NULL)
            locks[nlocks++] = cases[i].chan;
    qsort(locks, (size_t)nlocks, sizeof *locks, cmp_chan);
    int k = 0;
    for (int i = 0; i < nlocks; i++)
        if (k == 0 || locks[k - 1] != locks[i])
            locks[k++] = locks[i];
    nlocks = k;
    /* a random poll order (Fisher-Yates) */
    for (int i = 0; i < n; i++) {
        int j = (int)(select_rand() % (uint32_t)(i + 1));
        order[i] = order[j];
        order[j] = i;
    }
    int ret;
    lock_all(locks, nlocks);
    for (int oi = 0; oi < n; oi++) {
        int i = order[oi];
        weft_chan *c = cases[i].chan;
        if (c == NULL)
            continue;
        if (cases[i].op == WEFT_RECV) {
            if (try_recv_locked(c, cases[i].elem)) {
                unlock_others(locks, nlocks, c);
                ret = i;
                goto out;
            }
            if (c->closed) {
                cases[i].closed = 1;
                unlock_all(&(struct selunlock){ locks, nlocks });
                ret = i;
                goto out;
            }
        } else {
            if (c->closed) {
                cases[i].closed = 1;
                unlock_all(&(struct selunlock){ locks, nlocks });
                ret = i;
                goto out;
            }
            if (try_send_locked(c, cases[i].elem)) {
                unlock_others(locks, nlocks, c);
                ret = i;
                goto out;
            }
        }
    }
    if (timeout_ns == 0 || (dl >= 0 && dl <= weft__time_now())) {
        unlock_all(&(struct selunlock){ locks, nlocks });
        ret = timeout_ns == 0 ? -EAGAIN : -ETIMEDOUT;
        goto out;
    }
    /* park on every case */
    struct waitctx wc;
    weft__wait_begin(&wc);
    for (int i = 0; i < n; i++) {
        ws[i] = (struct waiter){ .elem = cases[i].elem, .wc = &wc, .idx = i, .sel = cases };
        if (cases[i].chan != NULL)
            weft__waitq_push(cases[i].op == WEFT_RECV ? &cases[i].chan->recvq : &cases[i].chan->sendq,
                             &ws[i], false);
    }
    struct selunlock su = { locks, nlocks };
    int r = weft__wait_block(&wc, unlock_all, &su, dl, "select");
    /* unlink the cases that did not fire (all of them after a timeout) */
    lock_all(locks, nlocks);
    for (int i = 0; i < n; i++)
        if (cases[i].chan != NULL)
            weft__waitq_remove(cases[i].op == WEFT_RECV ? &cases[i].chan->recvq : &cases[i].chan->sendq,
                               &ws[i]);
    unlock_all(&su);
    ret = r == 0 ? wc.fired : r;
out:
    weft_free(heap);
    return ret;
}
