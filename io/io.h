/*
 * io/io.h -- the I/O module: the public calls (api.c) over two backends (uring.c on
 * liburing, uv.c on libuv), each the scheduler's poller (sched/poller.h) too.
 *
 * Files, each calling only the ones below it:
 *   api.c     weft_read ... weft_dial_tcp, weft_io_backend: plain threads block; green
 *             threads try the nonblocking system call first where that is cheap
 *             (sockets: MSG_DONTWAIT), then hand one operation to the backend; loops
 *             short writes; picks the backend at weft_start (io_open, WEFT_IO)
 *   uring.c   a ring per P (the default)
 *   uv.c      a uv_loop_t per P (the fallback: io_uring refused, or WEFT_IO=uv)
 *   fdtab.c   which operations are in flight on which fd, so that weft_close can
 *             cancel them (weft__io_fd_*)
 *
 * An operation (struct io_req) is one system call's worth: one read, one send (short
 * counts are api.c's to loop). backend->op runs on a green thread whose M holds a P,
 * parks it until the operation's FINAL completion -- after a cancellation too, so that
 * the kernel or a pool thread never writes into a stack or buffer that has moved on
 * -- and returns the result or -errno:
 *   - deadline (weft_now() ns, -1 none): when it passes, the operation is cancelled
 *     and op returns -ETIMEDOUT (unless it completed anyway: then its result);
 *   - weft_close(fd) meanwhile: cancelled, -EBADF (weft__io_fd_close).
 * Backends attach every operation that parks to fdtab (weft__io_fd_attach) before
 * they submit it and detach it after its final completion; weft_close cancels and
 * closes under the fd's bucket lock, so that no operation slips in between the
 * cancellation and close(2).
 *
 * Lock order: fdtab's bucket lock, then a backend's per-P lock (its cancel callback
 * runs under the bucket lock); sched's locks (timers, run queues) may be taken under
 * both; neither is held across a park.
 */
#ifndef WEFT_IO_H
#define WEFT_IO_H
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include "sched/sched.h"
#include "sched/poller.h"

enum io_kind {
    IO_READ,      /* fd, buf, len, off (-1: the file position) */
    IO_WRITE,     /* fd, buf, len, off */
    IO_READV,     /* fd, iov, iovcnt, off */
    IO_WRITEV,    /* fd, iov, iovcnt, off */
    IO_RECV,      /* fd, buf, len, flags (socket) */
    IO_SEND,      /* fd, buf, len, flags (MSG_NOSIGNAL added by api.c) */
    IO_RECVMSG,   /* fd, msg, flags */
    IO_SENDMSG,   /* fd, msg, flags */
    IO_FSYNC,     /* fd */
    IO_OPENAT,    /* path, flags (O_CLOEXEC added by nobody: the caller's), mode; fd unused (-1) */
    IO_ACCEPT,    /* fd, addr, addrlen (may be NULL); the new fd close-on-exec */
    IO_CONNECT,   /* fd, caddr, caddrlen */
    IO_POLL,      /* fd, flags = poll events: returns revents */
    IO_NKINDS
};

struct io_req {
    int kind;
    int fd;
    void *buf;
    size_t len;
    const struct iovec *iov;
    int iovcnt;
    struct msghdr *msg;
    off_t off;
    int flags;
    int mode;
    const char *path;
    struct sockaddr *addr;            /* IO_ACCEPT: out */
    socklen_t *addrlen;
    const struct sockaddr *caddr;     /* IO_CONNECT */
    socklen_t caddrlen;
};

struct io_backend {
    struct weft_poller poller;        /* first: what sched/ sees */
    ssize_t (*op)(struct io_req *r, int64_t deadline);
    /* true: op(IO_READ / IO_RECV) is itself the cheapest first try (io_uring: it
     * completes inline when data is there), so api.c does not try recv(2) first */
    bool reads_first;
};

/* Set up for nprocs Ps: the backend, or NULL with *err = -errno (io_uring refused:
 * -EPERM under a seccomp filter or kernel.io_uring_disabled, -ENOSYS, -ENOMEM under a
 * low RLIMIT_MEMLOCK). */
WEFT_HIDDEN const struct io_backend *weft__io_uring_open(int nprocs, int *err);
WEFT_HIDDEN const struct io_backend *weft__io_uv_open(int nprocs, int *err);

/* The running backend (api.c), or NULL. */
WEFT_HIDDEN const struct io_backend *weft__io_backend_get(void);

/* fdtab.c. An operation in flight, linked under its fd while it may park. cancel is
 * called (bucket lock held; it must not block or park) by weft__io_fd_close: it
 * makes the operation end soon, with -EBADF (the backend's to return). */
struct io_link {
    struct io_link *next, *prev;
    int fd;
    void (*cancel)(struct io_link *l);
};
WEFT_HIDDEN int weft__io_fd_attach(struct io_link *l, int fd);  /* 0 */
WEFT_HIDDEN void weft__io_fd_detach(struct io_link *l);
/* weft_close: cancel fd's operations, close(2) it; 0 or -errno */
WEFT_HIDDEN int weft__io_fd_close(int fd);

/* park.c: the wait every backend's operation parks on (Go's pollDesc, for one
 * operation). Its life, on the green thread's stack:
 *   weft__io_wait_begin(w, fd, deadline, cancel): attached to fd (fd >= 0), the
 *     deadline timer armed; -EBADF (fd being closed) or -ETIMEDOUT (deadline passed)
 *     and nothing to undo;
 *   the backend submits the operation UNDER ITS PER-P LOCK, and only if w->why is 0
 *     (else: weft__io_wait_end(w, -ECANCELED) at once); it sets w->submitted;
 *   weft__io_wait_park(w): parks until weft__io_wait_complete has been called (by
 *     whoever reaps the completion), disarms the timer, detaches, and returns the
 *     result: -ECANCELED becomes -ETIMEDOUT (why TIMEDOUT) or -EBADF (why CLOSED).
 * cancel(w) is called by the deadline timer or weft_close, from any thread, at most
 * once per cause; it takes the backend's per-P lock, sets nothing itself (why is set
 * before the call) and, if w->submitted, asks for a cancellation (io_uring:
 * ASYNC_CANCEL) whose final completion still goes through weft__io_wait_complete.
 * state: RUNNING (the G has not parked) -> PARKED -> DONE, or RUNNING -> DONE (the
 * completion came before the park: the G does not park). Exchanged with acq_rel so
 * that the result is seen by the G and the G's park is complete before it is readied. */
enum { IOW_RUNNING, IOW_PARKED, IOW_DONE };
enum { IOW_NONE, IOW_TIMEDOUT, IOW_CLOSED };
struct io_wait {
    struct io_link link;
    struct g *g;
    _Atomic uint32_t state;
    _Atomic int why;                  /* IOW_NONE, or the first cause of a cancellation */
    bool submitted;                   /* under the backend's per-P lock */
    ssize_t res;
    struct timer timer;               /* the deadline */
    void (*cancel)(struct io_wait *w);
};
WEFT_HIDDEN int weft__io_wait_begin(struct io_wait *w, int fd, int64_t deadline,
                                    void (*cancel)(struct io_wait *w));
WEFT_HIDDEN ssize_t weft__io_wait_park(struct io_wait *w, const char *reason);
/* The final completion: stores res; returns the G to ready (it had parked), else NULL. */
WEFT_HIDDEN struct g *weft__io_wait_complete(struct io_wait *w, ssize_t res);
/* A wait that ends without parking (not submitted): disarm, detach, map res. */
WEFT_HIDDEN ssize_t weft__io_wait_end(struct io_wait *w, ssize_t res);

/* One notice line per process, e.g. the fallback's (api.c). */
WEFT_HIDDEN void weft__io_notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
