/*
 * sched/poller.h -- the I/O poller as the scheduler sees it (Go's netpoll interface):
 * declared here, filled in by io/ (io/uring.c, io/uv.c), so that sched/ never includes
 * io/ (DESIGN.md: io/ -> sched/ -> mem/).
 *
 * io/ registers its chooser with a constructor in the object that holds the I/O calls:
 * a program that links libweft.a and never calls an I/O function has no poller at all
 * (weft__poller stays NULL and nothing below is called). weft_start calls the chooser
 * once, before any M exists; teardown calls stop after every M is joined.
 *
 * Who calls what:
 *  - poll(pp): the M holding pp, at its scheduling points (findrunnable: every 61st
 *    tick, and before it steals), without blocking: enters the operations queued on
 *    pp (a flush: io_uring batches what parks until then) and readies, onto pp, the
 *    Gs whose operations completed on pp's ring or loop -- and on those of idle Ps,
 *    whose Ms are gone. poll(NULL): every P's, readied onto the global queue --
 *    sysmon (when nobody polled for POLL_STALE_NS) and the M that waited with no idle
 *    P to take. Reaping a P's completions is serialised inside io/ (a try-lock: a
 *    reaper that finds it taken skips that P, whose holder reaps).
 *  - wait(until): the timer M (proc.c stopm), without a P, when pending() says an
 *    operation is in flight: blocks until a completion is ready on any P, wake() is
 *    called, or the weft_now() time until (INT64_MAX: no limit). It reaps nothing:
 *    > 0 means completions are ready, and the M takes an idle P and runs them itself
 *    (findrunnable's poll), as Go's M that blocked in netpoll does, instead of
 *    readying them onto the global queue and waking another M; with no idle P it
 *    calls poll(NULL). Only one M waits at a time (the timer M role).
 *  - wake(): from any thread, makes a wait() return soon; cheap when nobody waits (a
 *    sleeping flag is read first, as monoio and glommio do). The scheduler calls it
 *    through weft__m_unpark when the M it wakes is the one waiting (m.inpoll).
 *  - pending(): an operation is in flight somewhere (a relaxed counter): the idle M
 *    waits in the poller only then, and sysmon's deadlock check knows that green
 *    threads parked on I/O are not deadlocked.
 * No lost wake-up between wait() and wake(): the waiter publishes m.inpoll (seq_cst)
 * and then re-reads its park word; a waker writes the park word (seq_cst) and then
 * reads m.inpoll, calling wake() if it is set; the backend's own sleeping flag
 * follows the same order, and its eventfd counts, so a wake before the sleep is kept (wake() writes it whenever
 * the scheduler calls it: only for an M whose inpoll is set).
 */
#ifndef WEFT_SCHED_POLLER_H
#define WEFT_SCHED_POLLER_H
#include <stdbool.h>
#include <stdint.h>
#include "weft/base.h"

struct p;

struct weft_poller {
    const char *name;                  /* "io_uring", "libuv": weft_io_backend() */
    void (*stop)(void);                /* teardown: every M joined */
    int  (*poll)(struct p *pp);        /* Gs readied; pp NULL: every P's */
    int  (*wait)(int64_t until);       /* > 0: completions ready (none reaped) */
    void (*wake)(void);
    bool (*pending)(void);
    void (*fork_child)(void);          /* the child of a fork: forget the rings, close nothing shared */
};

/* The poller of the running runtime, or NULL (none linked, or its start failed and
 * so did the fallback's: I/O calls then block their M, and say so once). */
WEFT_HIDDEN extern const struct weft_poller *weft__poller;
/* Set by io/ at load: makes the poller for nprocs Ps (weft_start; which: weft_config
 * .io_backend, WEFT_IO_*), or NULL. */
WEFT_HIDDEN extern const struct weft_poller *(*weft__poller_open)(int nprocs, int which);

/* sysmon polls when nobody has for this long (Go: 10 ms) */
#define POLL_STALE_NS 10000000
WEFT_HIDDEN extern _Atomic int64_t weft__poll_last;   /* weft_now() of the last poll */

static inline bool weft__poller_pending(void)
{
    const struct weft_poller *pl = weft__poller;
    return pl != NULL && pl->pending();
}

#endif
