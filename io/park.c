/*
 * io/park.c -- the wait an I/O operation parks its green thread on (io.h: struct
 * io_wait), shared by both backends.
 *
 * Invariants:
 *  - w lives on the green thread's stack from weft__io_wait_begin to the return of
 *    weft__io_wait_park / weft__io_wait_end; every other party that holds w -- the
 *    deadline timer, a weft_close through fdtab, the reaper -- is done with it before
 *    then: the timer is deleted (weft__timer_del waits for a firing one), the link is
 *    detached (under fdtab's bucket lock, which weft_close holds while it cancels),
 *    and the reaper's last touch is the exchange that makes state DONE.
 *  - The G parks only while state is RUNNING: the park's unlock function CASes
 *    RUNNING -> PARKED on the next context; a completion that came first made it DONE
 *    and the park is undone (the scheduler readies the G at once).
 *
 * Callers: uring.c, uv.c. Calls down: sched (park, timers), fdtab.c.
 */
#include <errno.h>
#include "io/io.h"

static struct g *deadline_fired(struct timer *t)
{
    struct io_wait *w = (struct io_wait *)((char *)t - offsetof(struct io_wait, timer));
    int none = IOW_NONE;
    if (atomic_compare_exchange_strong_explicit(&w->why, &none, IOW_TIMEDOUT, memory_order_acq_rel, RLX))
        w->cancel(w);
    return NULL;
}

static void closed(struct io_link *l)
{
    struct io_wait *w = (struct io_wait *)((char *)l - offsetof(struct io_wait, link));
    int none = IOW_NONE;
    if (atomic_compare_exchange_strong_explicit(&w->why, &none, IOW_CLOSED, memory_order_acq_rel, RLX))
        w->cancel(w);
}

int weft__io_wait_begin(struct io_wait *w, int fd, int64_t deadline,
                        void (*cancel)(struct io_wait *w))
{
    w->g = weft__current_g();
    atomic_store_explicit(&w->state, IOW_RUNNING, RLX);
    atomic_store_explicit(&w->why, IOW_NONE, RLX);
    w->submitted = false;
    w->res = 0;
    w->cancel = cancel;
    w->link.fd = -1;
    w->link.cancel = closed;
    atomic_store_explicit(&w->timer.pp, NULL, RLX);
    atomic_store_explicit(&w->timer.firing, 0, RLX);
    w->timer.f = NULL;
    if (deadline >= 0 && deadline <= weft__time_now())
        return -ETIMEDOUT;
    if (fd >= 0) {
        int err = weft__io_fd_attach(&w->link, fd);
        if (err < 0)
            return err;
    }
    if (deadline >= 0) {
        w->timer.when = deadline;
        w->timer.f = deadline_fired;
        w->timer.seq = 0;
        weft__timer_add(&w->timer);
    }
    return 0;
}

static ssize_t finish(struct io_wait *w, ssize_t res)
{
    if (w->timer.f != NULL)
        weft__timer_del(&w->timer);     /* waits for a firing one: it may still cancel */
    if (w->link.fd >= 0)
        weft__io_fd_detach(&w->link);
    if (res == -ECANCELED || res == -EINTR) {
        int why = atomic_load_explicit(&w->why, ACQ);
        if (why == IOW_TIMEDOUT)
            return -ETIMEDOUT;
        if (why == IOW_CLOSED)
            return -EBADF;
    }
    return res;
}

ssize_t weft__io_wait_end(struct io_wait *w, ssize_t res)
{
    return finish(w, res);
}

static int park_unlock(struct g *gp, void *arg)
{
    struct io_wait *w = arg;
    uint32_t running = IOW_RUNNING;
    /* acq_rel: our park is complete before a completion can see PARKED and ready us;
     * a failed CAS (DONE) acquires the result */
    return atomic_compare_exchange_strong_explicit(&w->state, &running, IOW_PARKED,
                                                   memory_order_acq_rel, ACQ);
}

ssize_t weft__io_wait_park(struct io_wait *w, const char *reason)
{
    if (atomic_load_explicit(&w->state, ACQ) != IOW_DONE)
        weft__sched_park(park_unlock, w, reason);
    /* DONE here: either the exchange below saw PARKED and readied us, or it came
     * before the park, whose unlock then failed and readied us itself */
    while (atomic_load_explicit(&w->state, ACQ) != IOW_DONE)
        weft__cpu_relax();              /* not reached: readied only after DONE */
    return finish(w, w->res);
}

struct g *weft__io_wait_complete(struct io_wait *w, ssize_t res)
{
    struct g *gp = w->g;
    w->res = res;
    /* acq_rel: res is published with DONE; PARKED means the G is off its stack */
    uint32_t prev = atomic_exchange_explicit(&w->state, IOW_DONE, memory_order_acq_rel);
    return prev == IOW_PARKED ? gp : NULL;
}
