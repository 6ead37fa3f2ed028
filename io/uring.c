/*
 * io/uring.c -- the io_uring backend (liburing): a ring per P.
 *
 * Set-up (weft_start, before any M): nprocs rings, the first made with
 * COOP_TASKRUN | TASKRUN_FLAG (no inter-processor interrupt per completion: the
 * kernel runs a ring's completion work when the submitting thread next enters or
 * leaves the kernel, a scheduler tick at the latest -- and it wakes that thread if it
 * sleeps), the others ATTACH_WQ to the first (one io-wq pool for the process) and its
 * workers capped (io_uring_register_iowq_max_workers: bounded 4 x nprocs, unbounded
 * 8 x nprocs). Not SINGLE_ISSUER / DEFER_TASKRUN: they tie a ring to one submitting
 * thread, and a P -- with its ring -- moves between Ms (weft_blocking, hand-offs).
 * Not SQPOLL: a polling kernel thread per ring is a core spent on 2-core machines.
 * A kernel that refuses COOP_TASKRUN (before 5.19) gets a plain ring. Any refusal of
 * io_uring_setup (EPERM under a container's seccomp profile or
 * kernel.io_uring_disabled, ENOSYS, ENOMEM under a low RLIMIT_MEMLOCK) is returned:
 * api.c falls back to libuv.
 *
 * A ring (struct ring) has two locks:
 *  - sqlock (weft_lock) over the submission queue: the G whose M holds the P submits
 *    there; a cancellation (deadline timer, weft_close) from any thread submits its
 *    ASYNC_CANCEL there too. Submissions are entered at once (io_uring_submit), still
 *    under the lock -- an operation is submitted when its G is about to park;
 *  - cqbusy (a try-lock) over reaping the completion queue: the P's M at its
 *    scheduling points (poll(pp)), the idle M that waited (wait), sysmon (poll(NULL))
 *    and a submitter that finds completions ready at once. A reaper that finds it
 *    taken skips the ring: its holder reaps.
 * Completions: user_data is the operation's address with a 16-bit generation (the
 * ring's count of submissions) in the top bits; the operation stores the same
 * generation, and a completion whose generation differs is a bug (the operation's G
 * waits for the final completion of everything it submitted, so no completion can be
 * stale) and aborts. user_data 0 is an ASYNC_CANCEL's own completion: ignored.
 * Cancellation (io.h): ASYNC_CANCEL by user_data on the operation's ring, after
 * which the operation completes with -ECANCELED (or its result, if it won the race):
 * either way that completion is the final one and readies the G.
 * pending() counts operations submitted and not yet reaped (relaxed). stop() cancels
 * and drains every operation in flight before it closes the rings (drain()).
 * wait(until): ppoll on every ring's fd (readable when its completion queue is not
 * empty) and the wake eventfd; returns how many rings are readable, reaping nothing
 * (poller.h); wake() writes the eventfd (only ever for the waiting M). poll(pp) reaps
 * pp's ring and those of idle Ps.
 *
 * Callers: api.c (op), sched through poller.h. Calls down: park.c, sched (ready).
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include "io/io.h"
#include "sched/san.h"

#define SQ_ENTRIES 256
#define CQ_ENTRIES 16384      /* 10 k parked connections per P fit without overflow */
#define REAP_BATCH 64

struct ring {
    struct io_uring ring;
    weft_lock sqlock;
    _Atomic int cqbusy;
    uint16_t gen;             /* under sqlock */
    _Atomic unsigned unsub;   /* SQEs queued and not yet entered (written under sqlock) */
} __attribute__((aligned(64)));

struct uop {
    struct io_wait w;
    struct ring *rg;
    uint64_t ud;              /* its user_data */
};

static struct ring *rings;
static int nrings;
static int wakefd = -1;
static _Atomic long inflight;

#define UD_PTR(ud) ((struct uop *)(uintptr_t)((ud) & ((1ull << 48) - 1)))

/* ---- reaping ----------------------------------------------------------------- */
/* Completions waiting in rg (a hint: read without the cq lock). liburing's
 * io_uring_cq_ready reads the head plainly, and other reapers advance it. */
static inline unsigned cq_ready(struct ring *rg)
{
    return __atomic_load_n(rg->ring.cq.ktail, __ATOMIC_ACQUIRE) -
           __atomic_load_n(rg->ring.cq.khead, __ATOMIC_RELAXED);
}

static bool cq_trylock(struct ring *rg)
{
    int zero = 0;
    /* acquire: the previous reaper's head advance is seen before we read the queue */
    return atomic_load_explicit(&rg->cqbusy, RLX) == 0 &&
           atomic_compare_exchange_strong_explicit(&rg->cqbusy, &zero, 1, ACQ, RLX);
}

static void cq_unlock(struct ring *rg)
{
    atomic_store_explicit(&rg->cqbusy, 0, REL);
}

/* Reap what rg's completion queue holds (its cq lock held); the Gs to ready go to
 * gs (cap REAP_BATCH); returns how many. Stops early when gs is full. */
static int reap_locked(struct ring *rg, struct g **gs)
{
    struct io_uring_cqe *cqes[REAP_BATCH];
    int ng = 0;
    unsigned n = io_uring_peek_batch_cqe(&rg->ring, cqes, REAP_BATCH);
    for (unsigned i = 0; i < n; i++) {
        uint64_t ud = cqes[i]->user_data;
        if (ud == 0)
            continue;                       /* a cancellation's own completion */
        struct uop *op = UD_PTR(ud);
        weft__tsan_acquire(op);             /* the submitter's release, through the kernel */
        if (op->ud != ud)
            weft__throwf("io_uring: a completion for an operation that ended "
                         "(user_data %#llx, expected %#llx)",
                         (unsigned long long)ud, (unsigned long long)op->ud);
        struct g *gp = weft__io_wait_complete(&op->w, cqes[i]->res);
        atomic_fetch_sub_explicit(&inflight, 1, RLX);
        if (gp != NULL)
            gs[ng++] = gp;
    }
    io_uring_cq_advance(&rg->ring, n);
    return ng;
}

/* Reap rg if nobody else is; ready the Gs (onto the caller's P, or the global queue
 * from an M without one). Returns the number readied. */
static int reap(struct ring *rg)
{
    int total = 0;
    struct g *gs[REAP_BATCH];
    while (cq_ready(rg) > 0 && cq_trylock(rg)) {
        int ng = reap_locked(rg, gs);
        cq_unlock(rg);
        if (ng > 0) {
            weft__sched_ready_batch(gs, ng);
            total += ng;
        }
    }
    return total;
}

static void submit(struct ring *rg);

/* Enter rg's queued submissions, if any (the scheduler's flush point). */
static void flush(struct ring *rg)
{
    if (atomic_load_explicit(&rg->unsub, RLX) == 0)
        return;
    weft__lock(&rg->sqlock);
    if (atomic_load_explicit(&rg->unsub, RLX) != 0)
        submit(rg);
    weft__unlock(&rg->sqlock);
}

static int uring_poll(struct p *pp)
{
    int n = 0;
    atomic_store_explicit(&weft__poll_last, weft__time_now(), RLX);
    if (pp != NULL) {
        struct ring *rg = &rings[pp->id];
        flush(rg);
        n = reap(rg);
        /* the rings of idle Ps: their Ms are gone, and this M runs their Gs */
        for (int i = 0; i < nrings; i++)
            if (i != pp->id && cq_ready(&rings[i]) > 0 &&
                atomic_load_explicit(&weft__sched.allp[i]->status, RLX) == P_IDLE)
                n += reap(&rings[i]);
        return n;
    }
    for (int i = 0; i < nrings; i++) {
        flush(&rings[i]);
        n += reap(&rings[i]);
    }
    return n;
}

static int uring_wait(int64_t until)
{
    for (int i = 0; i < nrings; i++)
        flush(&rings[i]);
    struct pollfd fds[1 + nrings];
    fds[0] = (struct pollfd){ .fd = wakefd, .events = POLLIN };
    for (int i = 0; i < nrings; i++)
        fds[1 + i] = (struct pollfd){ .fd = rings[i].ring.ring_fd, .events = POLLIN };
    struct timespec ts, *tsp = NULL;
    if (until != INT64_MAX) {
        int64_t d = until - weft__time_now();
        if (d < 0)
            d = 0;
        ts.tv_sec = d / 1000000000;
        ts.tv_nsec = d % 1000000000;
        tsp = &ts;
    }
    int rc = ppoll(fds, (nfds_t)(1 + nrings), tsp, NULL);
    if (rc <= 0)
        return 0;
    if (fds[0].revents & POLLIN) {
        uint64_t v;
        ssize_t r = read(wakefd, &v, sizeof v);
        (void)r;
        rc--;
    }
    return rc;
}

/* Called only for an M whose inpoll is set (weft__m_unpark): always written, since that
 * M may have read its park word and not yet set `sleeping` (a lost wake-up when this
 * looked at `sleeping` first); the eventfd counts, so the next ppoll returns at once. */
static void uring_wake(void)
{
    uint64_t one = 1;
    ssize_t r = write(wakefd, &one, sizeof one);
    (void)r;
}

static bool uring_pending(void)
{
    return atomic_load_explicit(&inflight, RLX) != 0;
}

/* ---- submitting --------------------------------------------------------------- */
/* An SQE of rg (sqlock held), entering what is queued when the queue is full. */
static struct io_uring_sqe *get_sqe(struct ring *rg)
{
    struct io_uring_sqe *sqe;
    while ((sqe = io_uring_get_sqe(&rg->ring)) == NULL)
        io_uring_submit(&rg->ring);
    return sqe;
}

/* Enter what is queued (sqlock held). The kernel pushes back with EBUSY / EAGAIN
 * while completions overflow: reap (they ready their Gs) and try again. */
static void submit(struct ring *rg)
{
    for (;;) {
        int rc = io_uring_submit(&rg->ring);
        if (rc >= 0) {
            atomic_store_explicit(&rg->unsub, 0, RLX);
            return;
        }
        if (rc == -EINTR)
            continue;
        if (rc == -EBUSY || rc == -EAGAIN) {
            if (reap(rg) == 0)
                weft__cpu_relax();
            continue;
        }
        weft__throwf("io_uring_submit: %s", strerror(-rc));
    }
}

static void uring_cancel(struct io_wait *w)
{
    struct uop *op = (struct uop *)w;
    struct ring *rg = op->rg;
    weft__lock(&rg->sqlock);
    if (w->submitted) {
        struct io_uring_sqe *sqe = get_sqe(rg);
        io_uring_prep_cancel64(sqe, op->ud, 0);
        io_uring_sqe_set_data64(sqe, 0);
        submit(rg);
    }
    weft__unlock(&rg->sqlock);
    /* the cancelled operation's completion may have to wake the waiting M: the ring's
     * fd becomes readable, which its ppoll sees */
}

static void prep(struct io_uring_sqe *sqe, struct io_req *r)
{
    switch (r->kind) {
    case IO_READ:
        io_uring_prep_read(sqe, r->fd, r->buf, (unsigned)(r->len > 0x7ffff000 ? 0x7ffff000 : r->len),
                           (uint64_t)r->off);
        break;
    case IO_WRITE:
        io_uring_prep_write(sqe, r->fd, r->buf, (unsigned)(r->len > 0x7ffff000 ? 0x7ffff000 : r->len),
                            (uint64_t)r->off);
        break;
    case IO_READV:
        io_uring_prep_readv(sqe, r->fd, r->iov, (unsigned)r->iovcnt, (uint64_t)r->off);
        break;
    case IO_WRITEV:
        io_uring_prep_writev(sqe, r->fd, r->iov, (unsigned)r->iovcnt, (uint64_t)r->off);
        break;
    case IO_RECV:
        io_uring_prep_recv(sqe, r->fd, r->buf, r->len, r->flags);
        break;
    case IO_SEND:
        io_uring_prep_send(sqe, r->fd, r->buf, r->len, r->flags);
        break;
    case IO_RECVMSG:
        io_uring_prep_recvmsg(sqe, r->fd, r->msg, (unsigned)r->flags);
        break;
    case IO_SENDMSG:
        io_uring_prep_sendmsg(sqe, r->fd, r->msg, (unsigned)r->flags);
        break;
    case IO_FSYNC:
        io_uring_prep_fsync(sqe, r->fd, 0);
        break;
    case IO_OPENAT:
        io_uring_prep_openat(sqe, AT_FDCWD, r->path, r->flags, (mode_t)r->mode);
        break;
    case IO_ACCEPT:
        io_uring_prep_accept(sqe, r->fd, r->addr, r->addrlen, SOCK_CLOEXEC);
        break;
    case IO_CONNECT:
        io_uring_prep_connect(sqe, r->fd, r->caddr, r->caddrlen);
        break;
    case IO_POLL:
        io_uring_prep_poll_add(sqe, r->fd, (unsigned)r->flags);
        break;
    default:
        weft__throwf("io_uring: unknown operation %d", r->kind);
    }
}

/* Operations that usually wait: entered at the P's next flush point, not at once. */
static bool deferred(const struct io_req *r)
{
    switch (r->kind) {
    case IO_RECV:
    case IO_RECVMSG:
    case IO_ACCEPT:
    case IO_POLL:
        return true;
    case IO_READ:
    case IO_READV:
        return r->off < 0;             /* a stream; a pread goes at once (page cache) */
    default:
        return false;
    }
}

static ssize_t uring_op(struct io_req *r, int64_t deadline)
{
    struct p *pp = weft__sched_curp(weft__current_m());
    if (pp == NULL)
        weft__throw("io_uring: an operation from a thread that holds no P");
    struct ring *rg = &rings[pp->id];
    struct uop op;
    op.rg = rg;
    int err = weft__io_wait_begin(&op.w, r->kind == IO_OPENAT ? -1 : r->fd, deadline,
                                  uring_cancel);
    if (err < 0)
        return err;
    weft__lock(&rg->sqlock);
    if (atomic_load_explicit(&op.w.why, ACQ) != IOW_NONE) {
        weft__unlock(&rg->sqlock);
        return weft__io_wait_end(&op.w, -ECANCELED);
    }
    struct io_uring_sqe *sqe = get_sqe(rg);
    prep(sqe, r);
    uint16_t gen = ++rg->gen;
    op.ud = (uint64_t)(uintptr_t)&op | (uint64_t)gen << 48;
    io_uring_sqe_set_data64(sqe, op.ud);
    atomic_fetch_add_explicit(&inflight, 1, RLX);
    op.w.submitted = true;
    weft__tsan_release(&op);
    if (deferred(r)) {
        /* likely to wait (a read of a socket or a pipe, an accept): queued, and
         * entered with the others of this P at its next flush point -- when its run
         * queue runs dry (findrunnable polls) or every 61st switch: one
         * io_uring_enter for a whole round of connections */
        atomic_store_explicit(&rg->unsub, atomic_load_explicit(&rg->unsub, RLX) + 1, RLX);
        weft__unlock(&rg->sqlock);
        return weft__io_wait_park(&op.w, "io");
    }
    submit(rg);
    weft__unlock(&rg->sqlock);
    /* done already (a page-cache read, a ready socket, an error): reap it now, and any
     * other G's completion with it, instead of a park and a wake-up */
    if (cq_ready(rg) > 0)
        reap(rg);
    return weft__io_wait_park(&op.w, "io");
}

/* ---- life cycle ---------------------------------------------------------------- */
/* Teardown, every M joined: green threads may still be parked in operations whose
 * buffers (and struct uop) are on their stacks, which teardown frees next, and closing
 * a ring does not wait for its requests (the kernel cancels them later, in a worker;
 * an io-wq read may still be copying). So: enter what is queued, cancel everything
 * (IORING_ASYNC_CANCEL_ANY, kernel 5.19) and wait for every final completion, for up
 * to DRAIN_NS (an io-wq worker in an uninterruptible read finishes that first); what
 * is left after it is said on stderr. The completions ready nobody. */
#define DRAIN_NS (10 * 1000000000LL)
static void drain(void)
{
    if (atomic_load_explicit(&inflight, RLX) == 0)
        return;
    for (int i = 0; i < nrings; i++) {
        struct ring *rg = &rings[i];
        weft__lock(&rg->sqlock);
        struct io_uring_sqe *sqe = get_sqe(rg);
        io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
        io_uring_sqe_set_data64(sqe, 0);
        io_uring_submit(&rg->ring);
        atomic_store_explicit(&rg->unsub, 0, RLX);
        weft__unlock(&rg->sqlock);
    }
    int64_t until = weft__time_now() + DRAIN_NS;
    while (atomic_load_explicit(&inflight, RLX) > 0 && weft__time_now() < until) {
        for (int i = 0; i < nrings; i++) {
            struct io_uring_cqe *cqe;
            struct __kernel_timespec ts = { .tv_nsec = 1000000 };
            /* enters the kernel (task work runs), waits at most 1 ms */
            if (io_uring_wait_cqe_timeout(&rings[i].ring, &cqe, &ts) != 0)
                continue;
            struct io_uring_cqe *cqes[REAP_BATCH];
            unsigned n = io_uring_peek_batch_cqe(&rings[i].ring, cqes, REAP_BATCH);
            for (unsigned k = 0; k < n; k++)
                if (cqes[k]->user_data != 0)
                    atomic_fetch_sub_explicit(&inflight, 1, RLX);
            io_uring_cq_advance(&rings[i].ring, n);
        }
    }
    long left = atomic_load_explicit(&inflight, RLX);
    if (left > 0)
        weft__io_notice("teardown: %ld io_uring operations still in flight after %lld s; "
                        "their buffers are freed anyway", left, DRAIN_NS / 1000000000LL);
}

static void uring_stop(void)
{
    drain();
    for (int i = 0; i < nrings; i++)
        io_uring_queue_exit(&rings[i].ring);
    weft_free(rings);
    rings = NULL;
    nrings = 0;
    if (wakefd >= 0)
        close(wakefd);
    wakefd = -1;
    atomic_store_explicit(&inflight, 0, RLX);
}

static void uring_fork_child(void)
{
    /* the rings are the parent's: close our copies of their fds, touch nothing else */
    for (int i = 0; i < nrings; i++)
        close(rings[i].ring.ring_fd);
    if (wakefd >= 0)
        close(wakefd);
    rings = NULL;
    nrings = 0;
    wakefd = -1;
    atomic_store_explicit(&inflight, 0, RLX);
}

static const struct io_backend backend = {
    .poller = {
        .name = "io_uring",
        .stop = uring_stop,
        .poll = uring_poll,
        .wait = uring_wait,
        .wake = uring_wake,
        .pending = uring_pending,
        .fork_child = uring_fork_child,
    },
    .op = uring_op,
    .reads_first = true,
};

const struct io_backend *weft__io_uring_open(int nprocs, int *err)
{
    rings = weft_aligned_alloc(64, (size_t)nprocs * sizeof *rings);
    if (rings == NULL) {
        *err = -ENOMEM;
        return NULL;
    }
    memset(rings, 0, (size_t)nprocs * sizeof *rings);
    int rc = 0;
    for (int i = 0; i < nprocs; i++) {
        struct io_uring_params pr;
        memset(&pr, 0, sizeof pr);
        pr.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
        pr.cq_entries = CQ_ENTRIES;
        if (i > 0) {
            pr.flags |= IORING_SETUP_ATTACH_WQ;
            pr.wq_fd = (uint32_t)rings[0].ring.ring_fd;
        }
        rc = io_uring_queue_init_params(SQ_ENTRIES, &rings[i].ring, &pr);
        if (rc == -EINVAL) {              /* before 5.19: no COOP_TASKRUN */
            pr.flags &= ~(unsigned)(IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG);
            rc = io_uring_queue_init_params(SQ_ENTRIES, &rings[i].ring, &pr);
        }
        if (rc < 0) {
            for (int j = 0; j < i; j++)
                io_uring_queue_exit(&rings[j].ring);
            weft_free(rings);
            rings = NULL;
            *err = rc;
            return NULL;
        }
        if (!(pr.features & IORING_FEAT_NODROP)) {
            for (int j = 0; j <= i; j++)
                io_uring_queue_exit(&rings[j].ring);
            weft_free(rings);
            rings = NULL;
            *err = -ENOSYS;               /* before 5.5: completions could be lost */
            return NULL;
        }
    }
    unsigned maxw[2] = { (unsigned)(4 * nprocs), (unsigned)(8 * nprocs) };
    io_uring_register_iowq_max_workers(&rings[0].ring, maxw);   /* best effort (5.15+) */
    wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wakefd < 0) {
        *err = -errno;
        for (int j = 0; j < nprocs; j++)
            io_uring_queue_exit(&rings[j].ring);
        weft_free(rings);
        rings = NULL;
        return NULL;
    }
    nrings = nprocs;
    atomic_store_explicit(&inflight, 0, RLX);
    *err = 0;
    return &backend;
}
