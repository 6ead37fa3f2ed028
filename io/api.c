/*
 * io/api.c -- the public I/O calls (weft.h "I/O") and the choice of backend.
 *
 * From a green thread whose M holds a P, a call is:
 *   - sockets (read, write, recv, send, readv/writev through recvmsg/sendmsg): the
 *     nonblocking system call first (MSG_DONTWAIT, whatever the fd's flags), as Go
 *     does: a socket that has data, or room, costs one system call and no park; on
 *     EAGAIN one backend operation (io_uring: the RECV/SEND itself, whose completion
 *     carries the data; libuv: readiness, then the call again). read/write on an fd
 *     that is not a socket (ENOTSOCK: pipes, files, ttys) go to the backend at once,
 *     which never blocks the M (io_uring: poll-armed or on its io-wq; libuv: readiness
 *     or its thread pool);
 *   - pread/pwrite: preadv2/pwritev2 with RWF_NOWAIT first (what the page cache can
 *     serve at once: no park), else, and for the rest of a short one, the backend;
 *   - accept, connect, fsync, open, poll: one backend operation
 *     (io_uring tries each inline, without blocking, before it arms a poll or hands
 *     it to a worker: the "system call first" is inside io_uring_enter);
 *   - writes loop until every byte is written or an error comes (short writes).
 * From a plain thread, inside weft_blocking, or with no runtime: the plain system
 * call, which blocks the thread; a nonblocking fd's EAGAIN waits in poll(2). Deadlines
 * apply to green threads (weft_deadline): the backend cancels the operation.
 *
 * Backend choice (weft_start, through sched/poller.h's weft__poller_open, set by this
 * file's constructor -- a program that calls no I/O function links none of io/):
 * weft_config.io_backend, else WEFT_IO=uring|uv, else io_uring; io_uring refused
 * falls back to libuv with a one-line notice on stderr.
 *
 * Callers: programs. Calls down: the backends (uring.c, uv.c), fdtab.c, sched.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "io/io.h"

/* ---- the backend ----------------------------------------------------------------- */
static const struct weft_poller *io_open(int nprocs, int which)
{
    if (which == WEFT_IO_AUTO) {
        const char *env = getenv("WEFT_IO");
        if (env != NULL && *env != 0) {
            if (strcmp(env, "uring") == 0 || strcmp(env, "io_uring") == 0)
                which = WEFT_IO_URING;
            else if (strcmp(env, "uv") == 0 || strcmp(env, "libuv") == 0)
                which = WEFT_IO_UV;
            else
                weft__io_notice("WEFT_IO=%s: not uring or uv; choosing io_uring, else libuv", env);
        }
    }
    const struct io_backend *be = NULL;
    int err = 0;
    if (which != WEFT_IO_UV) {
        be = weft__io_uring_open(nprocs, &err);
        if (be == NULL)
            weft__io_notice("io_uring unavailable (io_uring_setup: %s): using libuv",
                            strerror(-err));
    }
    if (be == NULL) {
        be = weft__io_uv_open(nprocs, &err);
        if (be == NULL) {
            weft__io_notice("libuv loops cannot be set up (%s): I/O calls block their worker",
                            strerror(-err));
            return NULL;
        }
    }
    return &be->poller;
}

__attribute__((constructor)) static void io_register(void)
{
    weft__poller_open = io_open;
}

void weft__io_notice(const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    weft__printf("%s", msg);
}

const struct io_backend *weft__io_backend_get(void)
{
    /* the poller is the first member of the backend (io.h) */
    return (const struct io_backend *)weft__poller;
}

const char *weft_io_backend(void)
{
    const struct weft_poller *pl = weft__poller;
    return atomic_load_explicit(&weft__sched.running, ACQ) && pl != NULL ? pl->name : "none";
}

/* The backend, when the caller is a green thread that may park; else NULL. */
static inline const struct io_backend *green(void)
{
    const struct io_backend *be = weft__io_backend_get();
    if (be == NULL)
        return NULL;
    struct m *mp = weft__current_m();
    if (mp == NULL || weft__sched_curp(mp) == NULL || mp->curg == NULL || mp->curg->system)
        return NULL;
    return be;
}

static inline ssize_t do_op(const struct io_backend *be, struct io_req *r)
{
    return be->op(r, weft__deadline_now());
}

/* The caller's deadline has passed: a call that can complete at once still does, so
 * the nonblocking try comes first even where the backend would rather skip it. */
static inline bool deadline_passed(void)
{
    int64_t dl = weft__deadline_now();
    return dl >= 0 && dl <= weft__time_now();
}

/* ---- plain threads ------------------------------------------------------------- */
/* A nonblocking fd said EAGAIN to a plain thread: wait until it is ready. */
static int plain_wait(int fd, short events)
{
    struct pollfd pfd = { .fd = fd, .events = events };
    int rc;
    while ((rc = poll(&pfd, 1, -1)) < 0 && errno == EINTR)
        ;
    if (rc < 0)
        return -errno;
    if (pfd.revents & POLLNVAL)
        return -EBADF;
    return 0;
}

#define PLAIN(call, events)                                       \
    for (;;) {                                                    \
        ssize_t r_ = (call);                                      \
        if (r_ >= 0)                                              \
            return r_;                                            \
        if (errno == EINTR)                                       \
            continue;                                             \
        if (errno != EAGAIN && errno != EWOULDBLOCK)              \
            return -errno;                                        \
        int e_ = plain_wait(fd, (events));                        \
        if (e_ < 0)                                               \
            return e_;                                            \
    }

/* ---- reads ----------------------------------------------------------------------- */
ssize_t weft_read(int fd, void *buf, size_t n)
{
    const struct io_backend *be = green();
    if (be == NULL)
        PLAIN(read(fd, buf, n), POLLIN);
    if (be->reads_first && !deadline_passed()) {
        struct io_req q = { .kind = IO_READ, .fd = fd, .buf = buf, .len = n, .off = -1 };
        return do_op(be, &q);
    }
    ssize_t r = recv(fd, buf, n, MSG_DONTWAIT);
    if (r >= 0)
        return r;
    struct io_req q = { .fd = fd, .buf = buf, .len = n, .off = -1 };
    if (errno == ENOTSOCK)
        q.kind = IO_READ;
    else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        q.kind = IO_RECV;
    else
        return -errno;
    return do_op(be, &q);
}

ssize_t weft_recv(int fd, void *buf, size_t n, int flags)
{
    const struct io_backend *be = green();
    if (be == NULL)
        PLAIN(recv(fd, buf, n, flags), POLLIN);
    struct io_req q = { .kind = IO_RECV, .fd = fd, .buf = buf, .len = n, .flags = flags };
    if (be->reads_first && !(flags & MSG_DONTWAIT) && !deadline_passed())
        return do_op(be, &q);
    ssize_t r = recv(fd, buf, n, flags | MSG_DONTWAIT);
    if (r >= 0)
        return r;
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return -errno;
    if (flags & MSG_DONTWAIT)
        return -EAGAIN;
    return do_op(be, &q);
}

ssize_t weft_recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *from,
                      socklen_t *len)
{
    const struct io_backend *be = green();
    if (be == NULL)
        PLAIN(recvfrom(fd, buf, n, flags, from, len), POLLIN);
    ssize_t r = recvfrom(fd, buf, n, flags | MSG_DONTWAIT, from, len);
    if (r >= 0)
        return r;
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return -errno;
    if (flags & MSG_DONTWAIT)
        return -EAGAIN;
    struct iovec iov = { .iov_base = buf, .iov_len = n };
    struct msghdr msg = { .msg_name = from, .msg_namelen = len != NULL ? *len : 0,
                          .msg_iov = &iov, .msg_iovlen = 1 };
    struct io_req q = { .kind = IO_RECVMSG, .fd = fd, .msg = &msg, .flags = flags };
    r = do_op(be, &q);
    if (r >= 0 && len != NULL)
        *len = msg.msg_namelen;
    return r;
}

ssize_t weft_readv(int fd, const struct iovec *iov, int iovcnt)
{
    if (iovcnt < 0 || iovcnt > IOV_MAX)
        return -EINVAL;
    const struct io_backend *be = green();
    if (be == NULL)
        PLAIN(readv(fd, iov, iovcnt), POLLIN);
    struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
    ssize_t r = recvmsg(fd, &msg, MSG_DONTWAIT);
    if (r >= 0)
        return r;
    struct io_req q = { .fd = fd, .iov = iov, .iovcnt = iovcnt, .off = -1 };
    if (errno == ENOTSOCK) {
        q.kind = IO_READV;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        q.kind = IO_RECVMSG;
        q.msg = &msg;
    } else {
        return -errno;
    }
    return do_op(be, &q);
}

/* Files, from a green thread: preadv2/pwritev2 with RWF_NOWAIT, which the kernel
 * serves only when it need not wait (the data in the page cache; room for a buffered
 * write), on the calling M: one system call and no park, as a plain thread's pread.
 * -EAGAIN: it would wait (or the file system or kernel cannot say: EOPNOTSUPP,
 * EINVAL), so the backend does it (io_uring inline or on its io-wq; libuv's pool).
 * EINTR counts as EAGAIN. Other errors are the call's (EBADF, ESPIPE, EISDIR). */
static ssize_t try_nowait(ssize_t (*op)(int, const struct iovec *, int, off_t, int), int fd,
                          const void *buf, size_t n, off_t off)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = n };
    ssize_t r = op(fd, &iov, 1, off, RWF_NOWAIT);
    if (r >= 0)
        return r;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EOPNOTSUPP || errno == EINVAL ||
        errno == EINTR)
        return -EAGAIN;
    return -errno;
}

ssize_t weft_pread(int fd, void *buf, size_t n, off_t off)
{
    if (off < 0)
        return -EINVAL;
    const struct io_backend *be = green();
    if (be == NULL) {
        for (;;) {
            ssize_t r = pread(fd, buf, n, off);
            if (r >= 0)
                return r;
            if (errno != EINTR)
                return -errno;
        }
    }
    /* what the page cache holds now costs one system call and no park */
    size_t done = 0;
    ssize_t r = try_nowait(preadv2, fd, buf, n, off);
    if (r >= 0) {
        if ((size_t)r == n || r == 0)
            return r;                   /* all of it, or end of file */
        done = (size_t)r;
    } else if (r != -EAGAIN) {
        return r;
    }
    /* the rest from the backend, until end of file: a reader of a file expects a short
     * count only there */
    while (done < n) {
        struct io_req q = { .kind = IO_READ, .fd = fd, .buf = (char *)buf + done,
                            .len = n - done, .off = off + (off_t)done };
        r = do_op(be, &q);
        if (r < 0)
            return done > 0 ? (ssize_t)done : r;
        if (r == 0)
            break;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

/* ---- writes ----------------------------------------------------------------------- */
/* One write's worth from a green thread: the nonblocking send first on a socket. */
static ssize_t write_once(const struct io_backend *be, int fd, const void *buf, size_t n,
                          bool *notsock)
{
    if (!*notsock) {
        ssize_t r = send(fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r >= 0)
            return r;
        if (errno == ENOTSOCK)
            *notsock = true;
        else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return -errno;
    }
    struct io_req q = { .fd = fd, .buf = (void *)buf, .len = n, .off = -1 };
    if (*notsock) {
        q.kind = IO_WRITE;
    } else {
        q.kind = IO_SEND;
        q.flags = MSG_NOSIGNAL;
    }
    return do_op(be, &q);
}

static ssize_t plain_write_all(int fd, const char *p, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = write(fd, p + done, n - done);
        if (r > 0) {
            done += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int e = plain_wait(fd, POLLOUT);
            if (e < 0)
                return e;
            continue;
        }
        return r < 0 ? -errno : -EIO;
    }
    return (ssize_t)done;
}

ssize_t weft_write(int fd, const void *buf, size_t n)
{
    const struct io_backend *be = green();
    if (be == NULL)
        return plain_write_all(fd, buf, n);
    const char *p = buf;
    size_t done = 0;
    bool notsock = false;
    do {
        ssize_t r = write_once(be, fd, p + done, n - done, &notsock);
        if (r < 0)
            return r;
        if (r == 0 && n > 0)
            return -EIO;                  /* a write that makes no progress */
        done += (size_t)r;
    } while (done < n);
    return (ssize_t)done;
}

ssize_t weft_send(int fd, const void *buf, size_t n, int flags)
{
    const struct io_backend *be = green();
    flags |= MSG_NOSIGNAL;
    if (be == NULL)
        PLAIN(send(fd, buf, n, flags), POLLOUT);
    ssize_t r = send(fd, buf, n, flags | MSG_DONTWAIT);
    if (r >= 0)
        return r;
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return -errno;
    if (flags & MSG_DONTWAIT)
        return -EAGAIN;
    struct io_req q = { .kind = IO_SEND, .fd = fd, .buf = (void *)buf, .len = n, .flags = flags };
    return do_op(be, &q);
}

ssize_t weft_sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *to,
                    socklen_t len)
{
    const struct io_backend *be = green();
    flags |= MSG_NOSIGNAL;
    if (be == NULL)
        PLAIN(sendto(fd, buf, n, flags, to, len), POLLOUT);
    ssize_t r = sendto(fd, buf, n, flags | MSG_DONTWAIT, to, len);
    if (r >= 0)
        return r;
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return -errno;
    if (flags & MSG_DONTWAIT)
        return -EAGAIN;
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = n };
    struct msghdr msg = { .msg_name = (void *)to, .msg_namelen = len, .msg_iov = &iov,
                          .msg_iovlen = 1 };
    struct io_req q = { .kind = IO_SENDMSG, .fd = fd, .msg = &msg, .flags = flags };
    return do_op(be, &q);
}

ssize_t weft_writev(int fd, const struct iovec *iov, int iovcnt)
{
    if (iovcnt < 0 || iovcnt > IOV_MAX)
        return -EINVAL;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    const struct io_backend *be = green();
    bool notsock = false;
    size_t done = 0;
    /* the pieces still to go: iov[0..cnt) with cur[0] the first one's remainder */
    struct iovec stackv[16];
    struct iovec *cur = iovcnt <= 16 ? stackv : weft_malloc((size_t)iovcnt * sizeof *cur);
    if (cur == NULL)
        return -ENOMEM;
    ssize_t rc = 0;
    while (done < total) {
        size_t skip = done;
        int k = 0;
        while (k < iovcnt && skip >= iov[k].iov_len) {
            skip -= iov[k].iov_len;
            k++;
        }
        int cnt = iovcnt - k;
        memcpy(cur, iov + k, (size_t)cnt * sizeof *cur);
        if (cnt > 0 && skip > 0) {
            cur[0].iov_base = (char *)cur[0].iov_base + skip;
            cur[0].iov_len -= skip;
        }
        ssize_t r;
        if (be == NULL) {
            r = writev(fd, cur, cnt);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                int e = plain_wait(fd, POLLOUT);
                if (e < 0) {
                    rc = e;
                    break;
                }
                continue;
            }
            if (r < 0)
                r = -errno;
        } else {
            struct msghdr msg = { .msg_iov = cur, .msg_iovlen = (size_t)cnt };
            r = -ENOTSOCK;
            if (!notsock) {
                r = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (r < 0)
                    r = -errno;
                if (r == -ENOTSOCK)
                    notsock = true;
            }
            if (r == -EAGAIN || r == -EWOULDBLOCK || r == -EINTR) {
                struct io_req q = { .kind = IO_SENDMSG, .fd = fd, .msg = &msg, .flags = MSG_NOSIGNAL };
                r = do_op(be, &q);
            } else if (notsock) {
                struct io_req q = { .kind = IO_WRITEV, .fd = fd, .iov = cur, .iovcnt = cnt, .off = -1 };
                r = do_op(be, &q);
            }
        }
        if (r < 0) {
            rc = r;
            break;
        }
        if (r == 0) {
            rc = -EIO;
            break;
        }
        done += (size_t)r;
    }
    if (cur != stackv)
        weft_free(cur);
    return rc < 0 ? rc : (ssize_t)done;
}

ssize_t weft_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (off < 0)
        return -EINVAL;
    const struct io_backend *be = green();
    const char *p = buf;
    size_t done = 0;
    while (done < n) {
        ssize_t r;
        if (be == NULL) {
            r = pwrite(fd, p + done, n - done, off + (off_t)done);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                r = -errno;
        } else {
            r = try_nowait(pwritev2, fd, p + done, n - done, off + (off_t)done);
            if (r == -EAGAIN) {
                struct io_req q = { .kind = IO_WRITE, .fd = fd, .buf = (void *)(p + done),
                                    .len = n - done, .off = off + (off_t)done };
                r = do_op(be, &q);
            }
        }
        if (r < 0)
            return r;
        if (r == 0)
            return -EIO;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

/* ---- the rest ------------------------------------------------------------------ */
int weft_fsync(int fd)
{
    const struct io_backend *be = green();
    if (be == NULL)
        return fsync(fd) == 0 ? 0 : -errno;
    struct io_req q = { .kind = IO_FSYNC, .fd = fd };
    return (int)do_op(be, &q);
}

int weft_open(const char *path, int flags, int mode)
{
    if (path == NULL)
        return -EFAULT;
    const struct io_backend *be = green();
    if (be == NULL) {
        int fd;
        while ((fd = open(path, flags, mode)) < 0 && errno == EINTR)
            ;
        return fd >= 0 ? fd : -errno;
    }
    struct io_req q = { .kind = IO_OPENAT, .fd = -1, .path = path, .flags = flags, .mode = mode };
    return (int)do_op(be, &q);
}

int weft_accept(int lfd, struct sockaddr *addr, socklen_t *len)
{
    const struct io_backend *be = green();
    if (be == NULL) {
        for (;;) {
            int fd = accept4(lfd, addr, len, SOCK_CLOEXEC);
            if (fd >= 0)
                return fd;
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -errno;
            int e = plain_wait(lfd, POLLIN);
            if (e < 0)
                return e;
        }
    }
    for (;;) {
        struct io_req q = { .kind = IO_ACCEPT, .fd = lfd, .addr = addr, .addrlen = len };
        ssize_t r = do_op(be, &q);
        if (r != -ECONNABORTED && r != -EINTR)
            return (int)r;
    }
}

/* A connect begun without blocking (fd's flags restored): 0 connected, 1 in
 * progress, or -errno. For backends that wait by readiness. */
static int connect_start(int fd, const struct sockaddr *addr, socklen_t len)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    int rc = connect(fd, addr, len) == 0 ? 0 : -errno;
    if (!(fl & O_NONBLOCK))
        fcntl(fd, F_SETFL, fl);
    /* EAGAIN is not "in progress": a Unix socket's full backlog (the connect failed) */
    if (rc == -EINPROGRESS)
        return 1;
    return rc;
}

int weft_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    const struct io_backend *be = green();
    if (be == NULL) {
        int rc = connect(fd, addr, len) == 0 ? 0 : -errno;
        if (rc == -EINTR || rc == -EINPROGRESS) {
            /* the connect goes on in the background: wait for it, then its verdict */
            int e = plain_wait(fd, POLLOUT);
            if (e < 0)
                return e;
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
                return -errno;
            return -soerr;
        }
        return rc;
    }
    struct io_req q = { .kind = IO_CONNECT, .fd = fd, .caddr = addr, .caddrlen = len };
    if (strcmp(be->poller.name, "io_uring") != 0) {
        int rc = connect_start(fd, addr, len);
        if (rc <= 0)
            return rc;
    }
    return (int)do_op(be, &q);
}

int weft_shutdown(int fd, int how)
{
    return shutdown(fd, how) == 0 ? 0 : -errno;
}

int weft_close(int fd)
{
    return weft__io_fd_close(fd);
}

int weft_poll(int fd, int events)
{
    if (fd < 0)
        return -EBADF;
    const struct io_backend *be = green();
    if (be == NULL) {
        struct pollfd pfd = { .fd = fd, .events = (short)events };
        int rc;
        while ((rc = poll(&pfd, 1, -1)) < 0 && errno == EINTR)
            ;
        if (rc < 0)
            return -errno;
        return pfd.revents & POLLNVAL ? -EBADF : pfd.revents;
    }
    struct io_req q = { .kind = IO_POLL, .fd = fd, .flags = events };
    ssize_t r = do_op(be, &q);
    if (r >= 0 && (r & POLLNVAL))
        return -EBADF;
    return (int)r;
}

/* ---- TCP ------------------------------------------------------------------------- */
static int gai_errno(int rc)
{
    switch (rc) {
    case EAI_NONAME:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY:
#endif
        return -ENOENT;
    case EAI_AGAIN:
        return -EAGAIN;
    case EAI_MEMORY:
        return -ENOMEM;
    case EAI_SYSTEM:
        return errno != 0 ? -errno : -EIO;
    default:
        return -EINVAL;
    }
}

struct resolve {
    const char *host, *port;
    struct addrinfo hints, *res;
    int rc;
    int err;
};

static void resolve_fn(void *arg)
{
    struct resolve *rs = arg;
    errno = 0;
    rs->rc = getaddrinfo(rs->host, rs->port, &rs->hints, &rs->res);
    rs->err = errno;
}

/* host:port to addresses, in weft_blocking (getaddrinfo may wait on DNS); 0 or -errno */
static int resolve(const char *host, int port, int flags, struct addrinfo **out)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct resolve rs = { .host = host, .port = ps };
    rs.hints.ai_family = AF_UNSPEC;
    rs.hints.ai_socktype = SOCK_STREAM;
    rs.hints.ai_flags = flags | AI_NUMERICSERV;
    weft_blocking(resolve_fn, &rs);
    if (rs.rc != 0) {
        errno = rs.err;
        return gai_errno(rs.rc);
    }
    *out = rs.res;
    return 0;
}

static int listen_on(int family, const struct sockaddr *sa, socklen_t len, int backlog)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);   /* dual stack */
    if (bind(fd, sa, len) < 0 || listen(fd, backlog) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

int weft_listen_tcp(const char *host, int port, int backlog)
{
    if (port < 0 || port > 65535)
        return -EINVAL;
    if (backlog <= 0)
        backlog = SOMAXCONN;
    if (host == NULL || *host == 0) {
        struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port),
                                   .sin6_addr = IN6ADDR_ANY_INIT };
        int fd = listen_on(AF_INET6, (struct sockaddr *)&a6, sizeof a6, backlog);
        if (fd != -EAFNOSUPPORT && fd != -EADDRNOTAVAIL && fd != -EPROTONOSUPPORT)
            return fd;
        struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                  .sin_addr = { htonl(INADDR_ANY) } };
        return listen_on(AF_INET, (struct sockaddr *)&a4, sizeof a4, backlog);
    }
    struct addrinfo *res;
    int rc = resolve(host, port, AI_PASSIVE, &res);
    if (rc < 0)
        return rc;
    rc = -EADDRNOTAVAIL;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        rc = listen_on(ai->ai_family, ai->ai_addr, ai->ai_addrlen, backlog);
        if (rc >= 0)
            break;
    }
    freeaddrinfo(res);
    return rc;
}

int weft_dial_tcp(const char *host, int port)
{
    if (port <= 0 || port > 65535)
        return -EINVAL;
    if (host == NULL || *host == 0)
        host = "localhost";
    struct addrinfo *res;
    int rc = resolve(host, port, AI_ADDRCONFIG, &res);
    if (rc == -ENOENT)
        rc = resolve(host, port, 0, &res);    /* loopback-only hosts: AI_ADDRCONFIG hides ::1 */
    if (rc < 0)
        return rc;
    rc = -ECONNREFUSED;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        rc = weft_connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (rc == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            rc = fd;
            break;
        }
        close(fd);
        if (rc == -ETIMEDOUT && weft__deadline_now() >= 0 &&
            weft__deadline_now() <= weft__time_now())
            break;                          /* the caller's deadline: no more tries */
    }
    freeaddrinfo(res);
    return rc;
}
