/*
 * io/uv.c -- the libuv backend: a uv_loop_t per P (the fallback when io_uring cannot
 * be set up, or WEFT_IO=uv).
 *
 * Loops. nprocs loops (struct uvloop, indexed by struct p's id), made at open. A libuv
 * loop is not thread-safe and ours have no fixed thread (a P moves between Ms), so each
 * has a weft_lock: whoever holds it is the loop's thread for the moment -- the G that
 * submits (op), a canceller (any thread), a reaper (poll, wait: try-locks that skip a
 * loop someone holds). Every libuv callback below runs inside uv_run, lock held. The
 * Gs that callbacks complete are queued on the loop (ready) and readied after the
 * lock is released (loop_unlock).
 *
 * Operations (op: a green thread whose M holds a P; that P's loop):
 *  - readiness (Go's model): sockets, and pipes / ttys / character devices except a
 *    write to a blocking one. The operation waits as a waiter of the fd's poll handle
 *    on this loop (struct pollent: libuv allows ONE poll handle per fd per loop, and a
 *    reader and a writer of one socket on one P are common, so the handle is shared:
 *    it polls for the union of its waiters' events). A callback completes the waiters
 *    whose events came (result 0, "ready"); the G then retries the call on its own
 *    stack: recv / send / recvmsg / sendmsg with MSG_DONTWAIT (sends also
 *    MSG_NOSIGNAL), accept4(SOCK_CLOEXEC), SO_ERROR for IO_CONNECT (api.c began the
 *    connect), poll(2) with timeout 0 for IO_POLL (revents; none: wait again), read /
 *    write on a nonblocking pipe or tty. EAGAIN: wait again. Where the fd is blocking
 *    and the call has no per-call nonblocking flag (read(2) on a blocking pipe or tty,
 *    accept4 on a blocking listener) the retry runs in weft_blocking: readiness makes
 *    it return at once, unless another reader took the data first -- then it blocks
 *    the M, not the P. Accept, poll and reads / writes of non-sockets try the call
 *    before they wait (api.c hands them over untried; a blocking fd is probed with
 *    poll(2) first); recv/send and friends come after api.c's own EAGAIN and wait
 *    first.
 *  - the thread pool (uv_queue_work running the plain system call): regular files,
 *    block devices, directories, fds epoll refuses (EPERM: /dev/null ...), writes to a
 *    blocking pipe or tty (a write larger than the room left would block an M: a pool
 *    thread blocks instead), IO_FSYNC, IO_OPENAT. The after-work callback is the
 *    final completion (UV_ECANCELED: -ECANCELED).
 * Which: one fstat for IO_READ/WRITE/READV/WRITEV (+ F_GETFL for pipes and ttys).
 *
 * Operation state (struct uvop.state, under its loop's lock; the struct lives on the
 * G's stack and is reused by each wait of one operation):
 *
 *   IDLE --wait_ready: pe_add--> POLL --poll_cb / op_cancel: op_done--> DONE
 *   IDLE --pool_op: uv_queue_work--> WORK --work_done (result or ECANCELED): op_done--> DONE
 *
 * Poll handle (struct pollent, weft_malloc'd, hashed in its loop by fd):
 *
 *   pe_add (first waiter of fd on this loop): uv_poll_init (fd's flags restored),
 *     uv_poll_start(union) --> ACTIVE --pe_update, last waiter gone: unhashed,
 *     uv_close (stops it: epoll_ctl DEL at once)--> CLOSING --pe_closed (inside
 *     uv_run)--> freed
 * A callback or a cancel changes the handle (pe_update) before it completes the
 * waiters that leave: a completed G may close the fd at once, and its number be
 * reused, so no epoll_ctl may follow a completion.
 *
 * Invariants:
 *  - A loop whose lock is free is clean (every change to its poll handles is in its
 *    epoll set: libuv queues epoll_ctl until uv_run) or dirty with a nudge made after
 *    the unlock. Only reapers run uv_run (loop_run: until no callback
 *    changed a handle), always on an M's own stack or sysmon's: uv__io_poll has a
 *    12 KiB frame, and a G's stack may be 16 KiB. So op and op_cancel, which change
 *    loops on a G's (or any) stack, mark the loop dirty and nudge; wait() does not
 *    sleep while a loop it can lock is dirty, and a loop it cannot lock is being
 *    changed by someone who runs it or nudges after (RMWs on sleeping: nudge).
 *    Pool completions arrive on the loop's async eventfd (libuv's), which is in its
 *    epoll set once the loop has run while alive (primed; a loop that never ran is
 *    marked dirty by its first pool operation).
 *  - An operation's struct is touched by others only from its submission to its final
 *    completion (op_done), and the G leaves op only after that; after op_done only its
 *    ready link (rg, rnext) is written, and only when the G had parked: it stays
 *    parked until loop_unlock readies it. The canceller (timer, weft_close) may run
 *    after op_done: park.c's finish waits for it, and it finds state DONE.
 *  - pending() counts operations submitted and not yet completed; loop_unlock
 *    subtracts the ones it completed after it readied their Gs.
 *  - One poll handle per fd per loop (pe_find before uv_poll_init).
 *  - poll(pp) runs pp's loop only: a G parked on an idle P's loop is reaped by the
 *    waiting M (wait: every loop) or sysmon (poll(NULL) when nobody polled for 10 ms).
 *
 * Lock order: fdtab's bucket lock, then a loop's lock (op_cancel runs under the
 * former); a thread holds one loop lock at a time; sched's locks are taken (readying)
 * only after the loop lock is released; nothing here takes a bucket lock under a
 * loop lock (weft__io_wait_end and park's detach run unlocked).
 *
 * fd flags: weft promises never to change them, and uv_poll_init sets O_NONBLOCK. So
 * pe_add reads F_GETFL first and restores the flags right after, under the fd's flag
 * lock (flag_locks: the flags belong to the open file, shared by every loop), under
 * which the flag reads that decide how to call (fl_get) are made too. A plain
 * thread's blocking call on the fd in those microseconds could still see EAGAIN.
 *
 * Cost: an operation that parks on a fresh handle: F_GETFL, uv__io_check_fd's
 * epoll_ctl ADD + DEL, FIONBIO, F_SETFL, uv_poll_start's DEL (a no-op), the ADD at
 * the next loop run, the DEL when its last waiter leaves, plus the retried call: 8
 * system calls beyond the operation and its retry. Measured (a 64-byte ping-pong over
 * a socketpair, 1 P, a 2-vCPU VM where system calls are dear): ~18 k round trips/s
 * against io_uring's ~58 k. The next lever: a poll handle cached per (loop, fd) while
 * the fd lives (dropped by weft_close; its file checked by fstat when reused) -- one
 * epoll_ctl per park, flags touched once per loop. Each loop
 * holds 4 fds (epoll, libuv's async eventfd and signal pipe), plus one wake eventfd:
 * 4 * nprocs + 1 fds. A thread-pool operation: a hand-off to a pool thread and back
 * through the loop's eventfd.
 *
 * Thread pool size: libuv reads UV_THREADPOOL_SIZE once per process, at its first
 * uv_queue_work; open sets it, when unset, to 4 x nprocs (4 .. 128) -- libuv's 4 would
 * serialise the file operations of a many-core machine. A value set by the program
 * wins; a process that used libuv's pool before weft_start keeps the size it got.
 *
 * Rejected:
 *  - a uv_poll_t per operation on the G's stack: libuv allows one poll handle per fd
 *    per loop (a second one on the same fd takes over the first's epoll entry);
 *  - uv_fs_read / uv_fs_write / uv_fs_open: uv_fs_open adds O_CLOEXEC (io.h: the
 *    caller's flags), and a uv_fs_t is ~440 bytes of the G's stack; uv_queue_work runs
 *    exactly our call (iovecs as given, no uv_buf_t copy);
 *  - a uv_async_t per loop for requests from other threads (DESIGN.md): a canceller
 *    takes the loop's lock and changes it itself, then nudges;
 *  - running the loop in op (UV_RUN_NOWAIT right after a submission): the 12 KiB frame
 *    on a green thread's stack;
 *  - UV_RUN_ONCE in wait: the one waiter sleeps on every loop at once, so it ppolls
 *    their backend fds with the eventfd.
 *
 * Not handled: a plain close(2) of an fd that a green thread waits on here leaves a
 * poll handle on a closed fd; when that number is reused on the same loop libuv's
 * epoll_ctl fails and libuv aborts. Close such fds with weft_close.
 *
 * Callers: api.c (op), sched through poller.h. Calls down: park.c, fdtab.c (through
 * park.c), sched (ready, weft_blocking), libuv.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include "io/io.h"

#define PE_HASH 64                 /* a loop's poll handles, in buckets by fd */
#define READY_BATCH 64
#define UNPOLLABLE (-1000000)      /* wait_ready: epoll refuses the fd (not an errno) */
#define STOP_NOTICE_NS 5000000000LL
#define FLAG_LOCKS 64              /* fd flag locks, by fd (fl_get, pe_add) */

enum { OP_IDLE, OP_POLL, OP_WORK, OP_DONE };

struct uvloop;

struct uvop {
    struct io_wait w;
    struct io_req *r;
    int loop;                      /* the index of the loop it was submitted to */
    int state;                     /* OP_*, under that loop's lock */
    int ev;                        /* the UV_* events it waits for; 0: any (IO_POLL) */
    bool sock;                     /* READ/WRITE kinds on a socket: recv / send */
    struct pollent *pe;            /* OP_POLL */
    struct uvop *next, *prev;      /* pe's waiters (OP_POLL), the loop's work (OP_WORK) */
    struct g *rg;                  /* completed with its G parked: the G to ready */
    struct uvop *rnext;            /* the loop's ready list */
    ssize_t res;                   /* OP_WORK: the pool thread's result */
    uv_work_t work;
};

struct pollent {
    uv_poll_t h;                   /* h.data: this */
    struct uvloop *L;
    int fd;
    int ev;                        /* what h polls for: the union of the waiters' */
    struct uvop *waiters;
    struct pollent *hnext;         /* L->tab's bucket */
};

struct uvloop {
    weft_lock lock;
    /* operations in flight + handles closing: written under lock, read anywhere as a
     * hint (poll and wait skip a loop with none) */
    _Atomic int busy;
    bool dirty;                    /* changed since uv_run last ran (invariants) */
    bool primed;                   /* has run while alive: its async eventfd is polled */
    int ndone;                     /* operations completed under this hold of the lock */
    struct uvop *ready;            /* completed with parked Gs, to ready at unlock */
    struct uvop *work;             /* pool operations in flight (stop cancels them) */
    struct pollent *tab[PE_HASH];
    uv_loop_t loop;                /* loop.data: this */
} __attribute__((aligned(64)));

static struct {
    struct uvloop *loops;
    int n;
    int efd;                       /* the wake eventfd */
    struct pollfd *pfds;           /* every loop's backend fd, then efd (wait's) */
    _Atomic int sleeping;          /* wait() is in, or about to enter, ppoll */
    _Atomic long inflight;
} B = { .efd = -1 };

/* An fd's flags are its open file description's, shared by every loop: two loops'
 * pe_add on one fd interleaved (get, set O_NONBLOCK, get -- sees it --, restore) left
 * it nonblocking. So pe_add's get / uv_poll_init / restore, and every read of the
 * flags that decides how to call (fl_get), hold the fd's flag lock. A leaf lock. */
static weft_lock flag_locks[FLAG_LOCKS];

static void poll_cb(uv_poll_t *h, int status, int events);
static void op_cancel(struct io_wait *w);

/* ---- the loop lock and what its release does --------------------------------- */
static bool loop_trylock(struct uvloop *L)
{
    uint32_t zero = 0;
    /* acquire: pairs with weft__unlock's release, as weft__lock does */
    return atomic_load_explicit(&L->lock.state, RLX) == 0 &&
           atomic_compare_exchange_strong_explicit(&L->lock.state, &zero, 1, ACQ, RLX);
}

/* Ready the Gs of a ready list; returns how many. */
static int ready_list(struct uvop *op)
{
    struct g *gs[READY_BATCH];
    int n = 0, total = 0;
    while (op != NULL) {
        struct uvop *next = op->rnext;     /* read before its G can run and leave */
        gs[n++] = op->rg;
        op = next;
        if (n == READY_BATCH || op == NULL) {
            weft__sched_ready_batch(gs, n);
            total += n;
            n = 0;
        }
    }
    return total;
}

/* Release L; ready the Gs completed meanwhile, then count their operations done. */
static int loop_unlock(struct uvloop *L)
{
    struct uvop *list = L->ready;
    int ndone = L->ndone;
    L->ready = NULL;
    L->ndone = 0;
    weft__unlock(&L->lock);
    int n = ready_list(list);
    if (ndone > 0)
        atomic_fetch_sub_explicit(&B.inflight, ndone, RLX);
    return n;
}

/* After a change that left a loop dirty and was unlocked by a thread that will not
 * run the loop: make the waiter look, if it sleeps or is about to. */
static void nudge(void)
{
    /* An RMW on sleeping, not a fence (which ThreadSanitizer cannot see): it and
     * wait()'s exchange are ordered in sleeping's modification order. Ours first:
     * wait's exchange reads from it (acquire: our unlock, the loop dirty, are seen by
     * its look at the loops); ours second: we read 1 and write the eventfd. */
    if (atomic_fetch_add_explicit(&B.sleeping, 0, SC)) {
        uint64_t one = 1;
        ssize_t r = write(B.efd, &one, sizeof one);
        (void)r;
    }
}

/* Run L's loop (lock held) until no callback left a change unapplied. Reapers only:
 * on an M's stack or sysmon's, never a G's (uv__io_poll's frame is ~12 KiB). */
static void loop_run(struct uvloop *L)
{
    do {
        L->dirty = false;
        if (!L->primed && uv_loop_alive(&L->loop))
            L->primed = true;          /* this run's epoll_ctl adds the async eventfd */
        uv_run(&L->loop, UV_RUN_NOWAIT);
    } while (L->dirty);                /* each round removed a waiter: it ends */
}

/* The final completion of op (L's lock held). */
static void op_done(struct uvloop *L, struct uvop *op, ssize_t res)
{
    op->state = OP_DONE;
    L->ndone++;
    atomic_fetch_sub_explicit(&L->busy, 1, RLX);
    struct g *gp = weft__io_wait_complete(&op->w, res);
    if (gp != NULL) {                  /* parked: op stays put until we ready it */
        op->rg = gp;
        op->rnext = L->ready;
        L->ready = op;
    }
}

/* ---- poll handles ------------------------------------------------------------ */
/* fd's flags (F_GETFL), not in the middle of a pe_add's change; -errno on failure */
static int fl_get(int fd)
{
    weft_lock *fl = &flag_locks[(unsigned)fd % FLAG_LOCKS];
    weft__lock(fl);
    int r = fcntl(fd, F_GETFL);
    if (r < 0)
        r = -errno;
    weft__unlock(fl);
    return r;
}

static struct pollent **pe_bucket(struct uvloop *L, int fd)
{
    return &L->tab[(unsigned)fd % PE_HASH];
}

static struct pollent *pe_find(struct uvloop *L, int fd)
{
    struct pollent *pe = *pe_bucket(L, fd);
    while (pe != NULL && pe->fd != fd)
        pe = pe->hnext;
    return pe;
}

static void pe_unhash(struct uvloop *L, struct pollent *pe)
{
    struct pollent **pp = pe_bucket(L, pe->fd);
    while (*pp != pe)
        pp = &(*pp)->hnext;
    *pp = pe->hnext;
}

static void waiter_link(struct pollent *pe, struct uvop *op)
{
    op->pe = pe;
    op->prev = NULL;
    op->next = pe->waiters;
    if (pe->waiters != NULL)
        pe->waiters->prev = op;
    pe->waiters = op;
}

static void waiter_unlink(struct pollent *pe, struct uvop *op)
{
    if (op->prev != NULL)
        op->prev->next = op->next;
    else
        pe->waiters = op->next;
    if (op->next != NULL)
        op->next->prev = op->prev;
}

/* What a waiter makes its handle poll for: an IO_POLL for none of libuv's events
 * (waiting for POLLHUP / POLLERR alone, which epoll reports unasked) polls for
 * UV_PRIORITIZED, which is rare, so that the handle runs. */
static int waiter_mask(const struct uvop *op)
{
    return op->ev != 0 ? op->ev : UV_PRIORITIZED;
}

static void pe_closed(uv_handle_t *h)
{
    struct pollent *pe = h->data;
    atomic_fetch_sub_explicit(&pe->L->busy, 1, RLX);
    weft_free(pe);
}

/* Waiters left pe (lock held): poll for what the others want (L dirty: a loop run
 * applies the change), or close the handle when none is left (its close callback
 * runs at the end of the loop run we are in, or of the next one). */
static void pe_update(struct uvloop *L, struct pollent *pe)
{
    if (pe->waiters == NULL) {
        pe_unhash(L, pe);
        atomic_fetch_add_explicit(&L->busy, 1, RLX);   /* closing: until pe_closed */
        /* stops it first (uv__poll_close): epoll_ctl DEL now, not queued */
        uv_close((uv_handle_t *)&pe->h, pe_closed);
        return;
    }
    int m = 0;
    for (struct uvop *op = pe->waiters; op != NULL; op = op->next)
        m |= waiter_mask(op);
    if (m != pe->ev) {
        uv_poll_start(&pe->h, m, poll_cb);
        pe->ev = m;
        L->dirty = true;
    }
}

/* op becomes a waiter of fd's handle on L (lock held): 0, UNPOLLABLE, or -errno. */
static int pe_add(struct uvloop *L, struct uvop *op, int fd)
{
    struct pollent *pe = pe_find(L, fd);
    if (pe == NULL) {
        pe = weft_malloc(sizeof *pe);
        if (pe == NULL)
            return -ENOMEM;
        weft_lock *flk = &flag_locks[(unsigned)fd % FLAG_LOCKS];
        weft__lock(flk);
        int fl = fcntl(fd, F_GETFL);
        int rc = fl < 0 ? -errno : uv_poll_init(&L->loop, &pe->h, fd);
        if (rc == 0 && !(fl & O_NONBLOCK))
            (void)fcntl(fd, F_SETFL, fl);              /* uv_poll_init set O_NONBLOCK */
        weft__unlock(flk);
        if (rc < 0) {
            weft_free(pe);
            return rc == UV_EPERM ? UNPOLLABLE : rc;   /* UV_E* are -errno on Linux */
        }
        pe->h.data = pe;
        pe->L = L;
        pe->fd = fd;
        pe->ev = 0;
        pe->waiters = NULL;
        struct pollent **b = pe_bucket(L, fd);
        pe->hnext = *b;
        *b = pe;
    }
    waiter_link(pe, op);
    int m = pe->ev | waiter_mask(op);
    if (m != pe->ev) {
        uv_poll_start(&pe->h, m, poll_cb);             /* epoll_ctl at the next run */
        pe->ev = m;
        L->dirty = true;
    }
    return 0;
}

/* libuv: events came for pe (inside uv_run, lock held). status < 0: POLLERR (libuv
 * has stopped the handle): every waiter is ready, its retry reports the error. */
static void poll_cb(uv_poll_t *h, int status, int events)
{
    struct pollent *pe = h->data;
    struct uvloop *L = pe->L;
    struct uvop *done = NULL;
    struct uvop *op = pe->waiters;
    while (op != NULL) {
        struct uvop *next = op->next;
        if (status < 0 || op->ev == 0 || (op->ev & events)) {
            waiter_unlink(pe, op);
            op->next = done;
            done = op;
        }
        op = next;
    }
    /* the handle first (its epoll_ctl), then the completions: a completed G may
     * close the fd at once, and the number be reused */
    pe_update(L, pe);
    while (done != NULL) {
        op = done;
        done = op->next;               /* read before op_done: then op may vanish */
        op_done(L, op, 0);
    }
}

/* ---- the system calls ---------------------------------------------------------- */
/* One try of r's system call, without blocking where the fd or the call allows it
 * (sock: a READ/WRITE kind on a socket goes through recv/send). Returns the result
 * or -errno; EINTR is retried. */
static ssize_t try_call(const struct io_req *r, bool sock)
{
    ssize_t n;
    do {
        struct msghdr m = { .msg_iov = (struct iovec *)r->iov, .msg_iovlen = (size_t)r->iovcnt };
        switch (r->kind) {
        case IO_READ:
            n = sock ? recv(r->fd, r->buf, r->len, MSG_DONTWAIT)
                : r->off < 0 ? read(r->fd, r->buf, r->len) : pread(r->fd, r->buf, r->len, r->off);
            break;
        case IO_WRITE:
            n = sock ? send(r->fd, r->buf, r->len, MSG_DONTWAIT | MSG_NOSIGNAL)
                : r->off < 0 ? write(r->fd, r->buf, r->len) : pwrite(r->fd, r->buf, r->len, r->off);
            break;
        case IO_READV:
            n = sock ? recvmsg(r->fd, &m, MSG_DONTWAIT)
                : r->off < 0 ? readv(r->fd, r->iov, r->iovcnt) : preadv(r->fd, r->iov, r->iovcnt, r->off);
            break;
        case IO_WRITEV:
            n = sock ? sendmsg(r->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL)
                : r->off < 0 ? writev(r->fd, r->iov, r->iovcnt) : pwritev(r->fd, r->iov, r->iovcnt, r->off);
            break;
        case IO_RECV:
            n = recv(r->fd, r->buf, r->len, r->flags | MSG_DONTWAIT);
            break;
        case IO_SEND:
            n = send(r->fd, r->buf, r->len, r->flags | MSG_DONTWAIT | MSG_NOSIGNAL);
            break;
        case IO_RECVMSG:
            n = recvmsg(r->fd, r->msg, r->flags | MSG_DONTWAIT);
            break;
        case IO_SENDMSG:
            n = sendmsg(r->fd, r->msg, r->flags | MSG_DONTWAIT | MSG_NOSIGNAL);
            break;
        case IO_ACCEPT:
            n = accept4(r->fd, r->addr, r->addrlen, SOCK_CLOEXEC);
            break;
        case IO_CONNECT: {
            int err = 0;
            socklen_t len = sizeof err;
            n = getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (n == 0)
                return -err;
            break;
        }
        case IO_POLL: {
            struct pollfd p = { .fd = r->fd, .events = (short)r->flags };
            n = poll(&p, 1, 0);
            if (n > 0)
                return p.revents;
            if (n == 0)
                return -EAGAIN;
            break;
        }
        case IO_FSYNC:
            n = fsync(r->fd);
            break;
        case IO_OPENAT:
            n = open(r->path, r->flags, r->mode);
            break;
        default:
            errno = EINVAL;
            n = -1;
        }
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return n;
}

struct bcall {
    const struct io_req *r;
    ssize_t res;
};

static void bcall_run(void *arg)
{
    struct bcall *b = arg;
    b->res = try_call(b->r, false);
}

/* ---- operations ---------------------------------------------------------------- */
/* The loop of the P the calling G's M holds (its index in *idx). */
static struct uvloop *current_loop(int *idx)
{
    struct m *mp = weft__current_m();
    weft_assert(mp != NULL && mp->p != NULL);
    *idx = mp->p->id;
    return &B.loops[*idx];
}

/* Park until r's fd is ready for op->ev on the current P's loop: 0, -ETIMEDOUT,
 * -EBADF (weft_close), UNPOLLABLE, or another -errno (uv_poll_init's). */
static ssize_t wait_ready(struct uvop *op, int64_t deadline)
{
    struct uvloop *L = current_loop(&op->loop);
    op->state = OP_IDLE;               /* before the cancel can come (begin arms it) */
    int rc = weft__io_wait_begin(&op->w, op->r->fd, deadline, op_cancel);
    if (rc < 0)
        return rc;
    weft__lock(&L->lock);
    /* relaxed: a canceller sets why before it takes this lock */
    if (atomic_load_explicit(&op->w.why, RLX) != IOW_NONE) {
        loop_unlock(L);
        return weft__io_wait_end(&op->w, -ECANCELED);
    }
    rc = pe_add(L, op, op->r->fd);
    if (rc < 0) {
        loop_unlock(L);
        return weft__io_wait_end(&op->w, rc);
    }
    op->state = OP_POLL;
    op->w.submitted = true;
    atomic_fetch_add_explicit(&L->busy, 1, RLX);
    atomic_fetch_add_explicit(&B.inflight, 1, RLX);
    bool dirty = L->dirty;
    loop_unlock(L);
    if (dirty)
        nudge();
    return weft__io_wait_park(&op->w, "io");
}

/* The call of a readiness operation once. blocking: the fd may block it (no per-call
 * nonblocking flag): in weft_blocking, so that a lost race blocks the M, not the P. */
static ssize_t ready_call(struct uvop *op, bool blocking)
{
    if (!blocking)
        return try_call(op->r, op->sock);
    struct bcall b = { .r = op->r };
    weft_blocking(bcall_run, &b);
    return b.res;
}

/* A readiness operation: (the call first -- when blocking, only if poll(2) says the
 * fd is ready: data in a pipe costs one probe, not a park), then wait for ev and
 * retry until the call does not say EAGAIN. */
static ssize_t ready_op(struct uvop *op, int ev, bool blocking, bool first, int64_t deadline)
{
    op->ev = ev;
    if (first) {
        struct pollfd p = { .fd = op->r->fd, .events = ev & UV_READABLE ? POLLIN : POLLOUT };
        if (!blocking || poll(&p, 1, 0) > 0) {
            ssize_t n = ready_call(op, blocking);
            if (n != -EAGAIN)
                return n;
        }
    }
    for (;;) {
        ssize_t rc = wait_ready(op, deadline);
        if (rc < 0)
            return rc;
        ssize_t n = ready_call(op, blocking);
        if (n != -EAGAIN)
            return n;
    }
}

/* libuv's pool thread: the operation's system call. */
static void work_run(uv_work_t *req)
{
    struct uvop *op = (struct uvop *)((char *)req - offsetof(struct uvop, work));
    op->res = try_call(op->r, false);
}

/* libuv: the pool is done with req (inside uv_run, lock held): the final completion. */
static void work_done(uv_work_t *req, int status)
{
    struct uvop *op = (struct uvop *)((char *)req - offsetof(struct uvop, work));
    struct uvloop *L = req->loop->data;
    if (op->prev != NULL)
        op->prev->next = op->next;
    else
        L->work = op->next;
    if (op->next != NULL)
        op->next->prev = op->prev;
    op_done(L, op, status == UV_ECANCELED ? -ECANCELED : op->res);
}

/* An operation on libuv's thread pool; fd -1: none to attach (IO_OPENAT). */
static ssize_t pool_op(struct uvop *op, int fd, int64_t deadline)
{
    struct uvloop *L = current_loop(&op->loop);
    op->state = OP_IDLE;
    int rc = weft__io_wait_begin(&op->w, fd, deadline, op_cancel);
    if (rc < 0)
        return rc;
    weft__lock(&L->lock);
    /* relaxed: a canceller sets why before it takes this lock */
    if (atomic_load_explicit(&op->w.why, RLX) != IOW_NONE) {
        loop_unlock(L);
        return weft__io_wait_end(&op->w, -ECANCELED);
    }
    rc = uv_queue_work(&L->loop, &op->work, work_run, work_done);
    if (rc < 0) {
        loop_unlock(L);
        return weft__io_wait_end(&op->w, rc);
    }
    op->state = OP_WORK;
    op->w.submitted = true;
    op->prev = NULL;
    op->next = L->work;
    if (L->work != NULL)
        L->work->prev = op;
    L->work = op;
    atomic_fetch_add_explicit(&L->busy, 1, RLX);
    atomic_fetch_add_explicit(&B.inflight, 1, RLX);
    if (!L->primed)
        L->dirty = true;               /* its async eventfd is not polled yet */
    bool dirty = L->dirty;
    loop_unlock(L);
    if (dirty)
        nudge();
    return weft__io_wait_park(&op->w, "io");
}

/* io.h's cancel (the deadline timer, weft_close; any thread; why set): a waiter is
 * completed here with -ECANCELED; queued pool work is cancelled (its work_done then
 * completes it), running pool work is let finish. */
static void op_cancel(struct io_wait *w)
{
    struct uvop *op = (struct uvop *)((char *)w - offsetof(struct uvop, w));
    struct uvloop *L = &B.loops[op->loop];
    weft__lock(&L->lock);
    if (op->state == OP_POLL) {
        struct pollent *pe = op->pe;
        waiter_unlink(pe, op);
        if (pe->waiters == NULL)
            L->dirty = true;           /* the close callback: run the loop soon */
        pe_update(L, pe);              /* before op_done, as in poll_cb */
        op_done(L, op, -ECANCELED);
    } else if (op->state == OP_WORK) {
        (void)uv_cancel((uv_req_t *)&op->work);   /* UV_EBUSY: running; libuv wakes the loop */
    }
    bool dirty = L->dirty;
    loop_unlock(L);
    if (dirty)
        nudge();
}

/* IO_POLL's poll(2) events as libuv's. */
static int poll_events_uv(int events)
{
    int ev = 0;
    if (events & (POLLIN | POLLRDNORM))
        ev |= UV_READABLE;
    if (events & (POLLOUT | POLLWRNORM | POLLWRBAND))
        ev |= UV_WRITABLE;
    if (events & (POLLPRI | POLLRDBAND))
        ev |= UV_PRIORITIZED;
    if (events & POLLRDHUP)
        ev |= UV_DISCONNECT;
    return ev;
}

/* IO_READ, IO_WRITE, IO_READV, IO_WRITEV: by readiness or on the pool, by the fd. */
static ssize_t rw_op(struct uvop *op, int64_t deadline)
{
    struct io_req *r = op->r;
    bool wr = r->kind == IO_WRITE || r->kind == IO_WRITEV;
    int ev = wr ? UV_WRITABLE : UV_READABLE;
    struct stat st;
    if (fstat(r->fd, &st) < 0)
        return -errno;
    if (S_ISSOCK(st.st_mode)) {
        if (r->off >= 0)
            return -ESPIPE;            /* pread(2)'s answer */
        op->sock = true;
        return ready_op(op, ev, false, true, deadline);
    }
    if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
        int fl = fl_get(r->fd);
        if (fl < 0)
            return fl;
        ssize_t n = UNPOLLABLE;
        if (fl & O_NONBLOCK)
            n = ready_op(op, ev, false, true, deadline);
        else if (!wr)
            n = ready_op(op, ev, true, true, deadline);
        if (n != UNPOLLABLE)
            return n;
    }
    return pool_op(op, r->fd, deadline);
}

static ssize_t uvio_op(struct io_req *r, int64_t deadline)
{
    struct uvop op;
    op.r = r;
    op.sock = false;
    op.ev = 0;
    ssize_t n;
    switch (r->kind) {
    case IO_READ:
    case IO_WRITE:
    case IO_READV:
    case IO_WRITEV:
        return rw_op(&op, deadline);
    case IO_FSYNC:
        return pool_op(&op, r->fd, deadline);
    case IO_OPENAT:
        return pool_op(&op, -1, deadline);
    case IO_RECV:
    case IO_RECVMSG:
        n = ready_op(&op, UV_READABLE, false, false, deadline);
        break;
    case IO_SEND:
    case IO_SENDMSG:
    case IO_CONNECT:
        n = ready_op(&op, UV_WRITABLE, false, false, deadline);
        break;
    case IO_ACCEPT: {
        int fl = fl_get(r->fd);
        if (fl < 0)
            return fl;
        bool nb = (fl & O_NONBLOCK) != 0;
        n = ready_op(&op, UV_READABLE, !nb, true, deadline);
        break;
    }
    case IO_POLL:
        n = ready_op(&op, poll_events_uv(r->flags), false, true, deadline);
        break;
    default:
        return -EINVAL;
    }
    return n == UNPOLLABLE ? -EPERM : n;
}

/* ---- the poller ------------------------------------------------------------------ */
/* Run L's loop unless someone holds it (they run it) or it has nothing in flight. */
static int poll_loop(struct uvloop *L)
{
    if (atomic_load_explicit(&L->busy, RLX) == 0 || !loop_trylock(L))
        return 0;
    loop_run(L);
    return loop_unlock(L);
}

static int uvio_poll(struct p *pp)
{
    atomic_store_explicit(&weft__poll_last, weft__time_now(), RLX);
    if (pp != NULL)
        return poll_loop(&B.loops[pp->id]);
    int n = 0;
    for (int i = 0; i < B.n; i++)
        n += poll_loop(&B.loops[i]);
    return n;
}

static int uvio_wait(int64_t until)
{
    /* seq_cst exchange: pairs with nudge's RMW (see there) and, as a seq_cst store,
     * with the scheduler's wake order (poller.h) */
    atomic_exchange_explicit(&B.sleeping, 1, SC);
    int64_t tmo = -1;                  /* ns; -1: no limit */
    if (until != INT64_MAX) {
        int64_t d = until - weft__time_now();
        tmo = d > 0 ? d : 0;
    }
    /* never longer than a loop may wait: 0 with callbacks due (closing handles) or
     * changes to apply (dirty). A loop someone holds is theirs to run or to nudge. */
    for (int i = 0; i < B.n && tmo != 0; i++) {
        struct uvloop *L = &B.loops[i];
        if (atomic_load_explicit(&L->busy, RLX) == 0 || !loop_trylock(L))
            continue;
        if (L->dirty) {
            tmo = 0;
        } else if (uv_loop_alive(&L->loop)) {  /* an idle loop's timeout is 0 */
            int ms = uv_backend_timeout(&L->loop);
            if (ms >= 0 && (tmo < 0 || (int64_t)ms * 1000000 < tmo))
                tmo = (int64_t)ms * 1000000;
        }
        weft__unlock(&L->lock);        /* nothing completed: no Gs to ready */
    }
    int rc = 0;
    if (tmo != 0) {
        struct timespec ts = { .tv_sec = tmo / 1000000000, .tv_nsec = tmo % 1000000000 };
        rc = ppoll(B.pfds, (nfds_t)B.n + 1, tmo < 0 ? NULL : &ts, NULL);
    }
    atomic_store_explicit(&B.sleeping, 0, SC);
    if (rc > 0 && (B.pfds[B.n].revents & POLLIN)) {
        uint64_t v;
        ssize_t r = read(B.efd, &v, sizeof v);
        (void)r;
    }
    return uvio_poll(NULL);
}

/* Called only for an M whose inpoll is set (weft__m_unpark): always written, since that
 * M may have read its park word and not yet set sleeping; the eventfd counts. */
static void uvio_wake(void)
{
    uint64_t one = 1;
    ssize_t r = write(B.efd, &one, sizeof one);
    (void)r;
}

static bool uvio_pending(void)
{
    return atomic_load_explicit(&B.inflight, RLX) != 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (h->type == UV_POLL && !uv_is_closing(h)) {
        atomic_fetch_add_explicit(&((struct pollent *)h->data)->L->busy, 1, RLX);
        uv_close(h, pe_closed);
    }
}

/* Teardown, every M joined: the Gs still parked here are dropped with the runtime
 * (their stacks are freed after this returns). Queued pool work is cancelled; work a
 * pool thread runs is waited for -- it may write into a G's buffer or stack. */
static void uvio_stop(void)
{
    for (int i = 0; i < B.n; i++) {
        struct uvloop *L = &B.loops[i];
        weft__lock(&L->lock);
        uv_walk(&L->loop, close_walk, NULL);
        memset(L->tab, 0, sizeof L->tab);
        for (struct uvop *op = L->work; op != NULL; op = op->next)
            (void)uv_cancel((uv_req_t *)&op->work);
        int64_t t0 = weft__time_now();
        bool told = false;
        for (;;) {
            uv_run(&L->loop, UV_RUN_NOWAIT);
            if (!uv_loop_alive(&L->loop))
                break;
            struct pollfd p = { .fd = uv_backend_fd(&L->loop), .events = POLLIN };
            (void)poll(&p, 1, 100);
            if (!told && weft__time_now() - t0 > STOP_NOTICE_NS) {
                weft__printf("weft: teardown still waiting for file operations on libuv's "
                             "thread pool (a write to a pipe nobody reads?)");
                told = true;
            }
        }
        L->ready = NULL;               /* completed Gs are not readied: nothing runs */
        L->ndone = 0;
        L->work = NULL;
        (void)uv_loop_close(&L->loop);
        weft__unlock(&L->lock);
    }
    if (B.efd >= 0)
        close(B.efd);
    weft_free(B.pfds);
    weft_free(B.loops);
    B.loops = NULL;
    B.pfds = NULL;
    B.n = 0;
    B.efd = -1;
    atomic_store_explicit(&B.sleeping, 0, RLX);
    atomic_store_explicit(&B.inflight, 0, RLX);
}

/* The child of a fork: forget the loops (their fds and memory stay, unused). */
static void uvio_fork_child(void)
{
    B.loops = NULL;
    B.pfds = NULL;
    B.n = 0;
    B.efd = -1;
    atomic_store_explicit(&B.sleeping, 0, RLX);
    atomic_store_explicit(&B.inflight, 0, RLX);
}

static const struct io_backend backend = {
    .poller = {
        .name = "libuv",
        .stop = uvio_stop,
        .poll = uvio_poll,
        .wait = uvio_wait,
        .wake = uvio_wake,
        .pending = uvio_pending,
        .fork_child = uvio_fork_child,
    },
    .op = uvio_op,
};

/* libuv's pool size, unless the program chose one (see the header). */
static void pool_size(int nprocs)
{
    if (getenv("UV_THREADPOOL_SIZE") != NULL)
        return;
    int n = nprocs > 32 ? 128 : 4 * nprocs;
    if (n < 4)
        n = 4;
    char buf[16];
    snprintf(buf, sizeof buf, "%d", n);
    setenv("UV_THREADPOOL_SIZE", buf, 0);
}

const struct io_backend *weft__io_uv_open(int nprocs, int *err)
{
    if (nprocs < 1) {
        *err = -EINVAL;
        return NULL;
    }
    if (B.loops != NULL) {
        *err = -EBUSY;
        return NULL;
    }
    pool_size(nprocs);
    struct uvloop *loops = weft_aligned_alloc(64, (size_t)nprocs * sizeof *loops);
    struct pollfd *pfds = weft_malloc(((size_t)nprocs + 1) * sizeof *pfds);
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int rc = efd < 0 ? -errno : 0;
    if (loops == NULL || pfds == NULL)
        rc = -ENOMEM;
    int made = 0;
    if (rc == 0) {
        memset(loops, 0, (size_t)nprocs * sizeof *loops);
        for (; made < nprocs; made++) {
            struct uvloop *L = &loops[made];
            rc = uv_loop_init(&L->loop);
            if (rc < 0)
                break;
            L->loop.data = L;
            pfds[made] = (struct pollfd){ .fd = uv_backend_fd(&L->loop), .events = POLLIN };
        }
    }
    if (rc < 0) {
        while (made > 0)
            (void)uv_loop_close(&loops[--made].loop);
        if (efd >= 0)
            close(efd);
        weft_free(pfds);
        weft_free(loops);
        *err = rc;
        return NULL;
    }
    pfds[nprocs] = (struct pollfd){ .fd = efd, .events = POLLIN };
    B.loops = loops;
    B.pfds = pfds;
    B.n = nprocs;
    B.efd = efd;
    atomic_store_explicit(&B.sleeping, 0, RLX);
    atomic_store_explicit(&B.inflight, 0, RLX);
    *err = 0;
    return &backend;
}
