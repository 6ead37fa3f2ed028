/*
 * tests/bench/echo_load.c -- closed-loop load for the echo servers (tests/bench/run.sh io).
 *
 *   echo_load -p PORT [-c CONNS] [-d SECS] [-w SECS] [-s SERVER_PID] [-t THREADS] [-m BYTES]
 *   echo_load -p PORT -z [-d SECS]
 *
 * CONNS TCP connections to 127.0.0.1:PORT (default 100), spread over THREADS pthreads
 * (default 2, at most CONNS), each thread driving its share with one epoll set:
 * nonblocking sockets, TCP_NODELAY, level-triggered. Every connection is a closed loop:
 * send an m-byte message (default 64; a sequence number in its first bytes), wait until
 * all m bytes have come back (checked against what was sent), send the next. -w SECS of
 * warm-up (default 1), then -d SECS of measurement (default 3): only round trips that
 * end inside the window count.
 * It prints one line, key=value:
 *   conns threads msg secs        what ran; secs: the window as measured
 *   rt_per_s                      round trips per second, all connections together
 *   p50_us p99_us                 round-trip latency, send to last byte back (a log-linear
 *                                 histogram: 64 buckets per power of two, ~1.6% wide)
 *   server_cpu_us                 utime + stime of SERVER_PID (/proc/PID/stat, in clock
 *                                 ticks: 10 ms at 100 Hz) over the window, per round trip;
 *                                 "nan" without -s
 *   load_cpu_us                   this process's CPU (getrusage) over the window, per round trip
 *   stalled                       connections that did not complete one round trip in the
 *                                 window: a server that serves some connections and starves
 *                                 the others has good-looking latencies (only round trips
 *                                 that end are timed), so this says whether they mean much
 * -z: only wait until the port accepts a connection (up to -d SECS, default 5): exit 0
 * if it did, 1 if not. Without -z the first connect also retries ECONNREFUSED for 5 s,
 * so a server just started need not be waited for.
 * Exit 1 on any error (a connection reset, a short or wrong echo): the numbers would
 * not mean anything.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#define MSG_MAX     4096
#define SUB_BITS    6                       /* 64 buckets per power of two */
#define SUB         (1 << SUB_BITS)
#define NBUCKET     ((64 - SUB_BITS + 1) * SUB)

enum { PHASE_WARMUP, PHASE_MEASURE, PHASE_STOP };
static _Atomic int phase = PHASE_WARMUP;
static int port, msg = 64;

struct conn {
    int fd;
    unsigned got, sent;         /* bytes of the current message back / out */
    uint64_t seq, rts;          /* rts: round trips ended inside the window */
    int64_t t0;                 /* when its first byte went out */
    unsigned char out[MSG_MAX], in[MSG_MAX];
};

struct worker {
    pthread_t th;
    struct conn *conns;
    int nconn, ep;
    uint64_t rts;               /* round trips inside the window */
    uint64_t hist[NBUCKET];
    const char *err;            /* set on the first error: the thread stops */
    int err_no;
};

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* log-linear: values below SUB are exact; above, SUB buckets per power of two */
static unsigned bucket_of(uint64_t v)
{
    if (v < SUB)
        return (unsigned)v;
    unsigned e = 63 - (unsigned)__builtin_clzll(v);        /* e >= SUB_BITS */
    unsigned shift = e - SUB_BITS;
    return (shift + 1) * SUB + (unsigned)((v >> shift) & (SUB - 1));
}

static double bucket_mid(unsigned b)
{
    if (b < SUB)
        return b;
    unsigned shift = b / SUB - 1;
    double lo = (double)(((uint64_t)SUB + b % SUB) << shift);
    return lo + (double)((uint64_t)1 << shift) / 2;
}

static double percentile(const uint64_t *h, uint64_t total, double p)
{
    if (total == 0)
        return NAN;
    uint64_t want = (uint64_t)(p * (double)total), sum = 0;   /* ceil, without libm */
    if ((double)want < p * (double)total || want == 0)
        want++;
    for (unsigned b = 0; b < NBUCKET; b++)
        if ((sum += h[b]) >= want)
            return bucket_mid(b);
    return NAN;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* a connected, nonblocking TCP_NODELAY socket, or -errno; retry_ns: how long to go on
 * retrying ECONNREFUSED (the server may still be starting) */
static int dial(int64_t retry_ns)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int64_t end = now_ns() + retry_ns;
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
            return fd;
        }
        int e = errno;
        close(fd);
        if (e != ECONNREFUSED || now_ns() >= end)
            return -e;
        usleep(10000);
    }
}

static int fail(struct worker *w, const char *what, int e)
{
    w->err = what;
    w->err_no = e;
    return -1;
}

/* send what is left of c's message; 0, or -1 on an error. A short write (never seen with
 * one small message in flight, but possible) waits for EPOLLOUT. */
static int send_rest(struct worker *w, struct conn *c)
{
    while (c->sent < (unsigned)msg) {
        ssize_t n = write(c->fd, c->out + c->sent, (size_t)msg - c->sent);
        if (n < 0 && errno == EAGAIN) {
            struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
            return epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0 ? 0 : fail(w, "epoll_ctl", errno);
        }
        if (n <= 0)
            return fail(w, "write", n < 0 ? errno : EPIPE);
        c->sent += (unsigned)n;
    }
    return 0;
}

static int send_next(struct worker *w, struct conn *c)
{
    c->seq++;
    memcpy(c->out, &c->seq, sizeof c->seq);
    c->got = c->sent = 0;
    c->t0 = now_ns();
    return send_rest(w, c);
}

static int on_ready(struct worker *w, struct conn *c, uint32_t events)
{
    if (events & EPOLLOUT) {
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        if (epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
            return fail(w, "epoll_ctl", errno);
        if (send_rest(w, c) != 0)
            return -1;
    }
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        return 0;
    ssize_t n = read(c->fd, c->in + c->got, (size_t)msg - c->got);
    if (n < 0 && errno == EAGAIN)
        return 0;
    if (n <= 0)
        return fail(w, n == 0 ? "read: connection closed by the server" : "read", n < 0 ? errno : 0);
    c->got += (unsigned)n;
    if (c->got < (unsigned)msg)
        return 0;
    if (c->sent < (unsigned)msg || memcmp(c->in, c->out, (size_t)msg) != 0)
        return fail(w, "echo differs from what was sent", 0);
    int64_t t = now_ns();
    if (atomic_load_explicit(&phase, memory_order_relaxed) == PHASE_MEASURE) {
        w->rts++;
        c->rts++;
        w->hist[bucket_of((uint64_t)(t - c->t0))]++;
    }
    return send_next(w, c);
}

static void *drive(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[256];
    for (int i = 0; i < w->nconn; i++)
        if (send_next(w, &w->conns[i]) != 0)
            return NULL;
    while (atomic_load_explicit(&phase, memory_order_relaxed) != PHASE_STOP) {
        int n = epoll_wait(w->ep, evs, 256, 50);
        if (n < 0 && errno != EINTR) {
            fail(w, "epoll_wait", errno);
            return NULL;
        }
        for (int i = 0; i < n; i++)
            if (on_ready(w, evs[i].data.ptr, evs[i].events) != 0)
                return NULL;
    }
    return NULL;
}

/* utime + stime of pid in seconds, or NAN */
static double proc_cpu_s(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return NAN;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    char *p = strrchr(buf, ')');        /* the command name may hold spaces */
    unsigned long long ut, st;
    /* after ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt
     * cmajflt utime(14) stime(15) */
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                     &ut, &st) != 2)
        return NAN;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void sleep_s(double s)
{
    struct timespec t = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&t, &t) != 0 && errno == EINTR)
        ;
}

static void usage(void)
{
    fprintf(stderr, "usage: echo_load -p PORT [-c CONNS] [-d SECS] [-w SECS] [-s SERVER_PID] "
                    "[-t THREADS] [-m BYTES] | -p PORT -z [-d SECS]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int nconn = 100, nthread = 2, server = 0, probe = 0, opt;
    double secs = -1, warm = 1;
    while ((opt = getopt(argc, argv, "p:c:d:w:s:t:m:z")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'c': nconn = atoi(optarg); break;
        case 'd': secs = atof(optarg); break;
        case 'w': warm = atof(optarg); break;
        case 's': server = atoi(optarg); break;
        case 't': nthread = atoi(optarg); break;
        case 'm': msg = atoi(optarg); break;
        case 'z': probe = 1; break;
        default: usage();
        }
    }
    if (port <= 0 || port > 65535 || nconn < 1 || nthread < 1 || msg < (int)sizeof(uint64_t) ||
        msg > MSG_MAX || warm < 0 || optind != argc)
        usage();
    if (probe) {
        int fd = dial((int64_t)((secs < 0 ? 5 : secs) * 1e9));
        if (fd < 0)
            return 1;
        close(fd);
        return 0;
    }
    if (secs <= 0)
        secs = 3;
    if (nthread > nconn)
        nthread = nconn;
    raise_nofile();

    struct conn *conns = calloc((size_t)nconn, sizeof *conns);
    struct worker *ws = calloc((size_t)nthread, sizeof *ws);
    if (!conns || !ws) {
        fprintf(stderr, "echo_load: out of memory\n");
        return 1;
    }
    for (int i = 0; i < nconn; i++) {
        int fd = dial(i == 0 ? 5000000000 : 0);
        if (fd < 0) {
            fprintf(stderr, "echo_load: connection %d to 127.0.0.1:%d: %s\n", i, port, strerror(-fd));
            return 1;
        }
        conns[i].fd = fd;
        for (int k = 0; k < msg; k++)
            conns[i].out[k] = (unsigned char)(i + k);
    }
    for (int t = 0, first = 0; t < nthread; t++) {
        struct worker *w = &ws[t];
        w->conns = conns + first;
        w->nconn = nconn / nthread + (t < nconn % nthread);
        first += w->nconn;
        if ((w->ep = epoll_create1(EPOLL_CLOEXEC)) < 0) {
            perror("echo_load: epoll_create1");
            return 1;
        }
        for (int i = 0; i < w->nconn; i++) {
            struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &w->conns[i] };
            if (epoll_ctl(w->ep, EPOLL_CTL_ADD, w->conns[i].fd, &ev) != 0) {
                perror("echo_load: epoll_ctl");
                return 1;
            }
        }
        if (pthread_create(&w->th, NULL, drive, w) != 0) {
            fprintf(stderr, "echo_load: pthread_create failed\n");
            return 1;
        }
    }

    sleep_s(warm);
    double s0 = server ? proc_cpu_s(server) : NAN, c0 = self_cpu_s();
    int64_t t0 = now_ns();
    atomic_store(&phase, PHASE_MEASURE);
    sleep_s(secs);
    atomic_store(&phase, PHASE_STOP);
    int64_t t1 = now_ns();
    double s1 = server ? proc_cpu_s(server) : NAN, c1 = self_cpu_s();

    uint64_t rts = 0;
    static uint64_t hist[NBUCKET];
    int bad = 0;
    for (int t = 0; t < nthread; t++) {
        struct worker *w = &ws[t];
        pthread_join(w->th, NULL);
        if (w->err) {
            fprintf(stderr, "echo_load: %s%s%s\n", w->err, w->err_no ? ": " : "",
                    w->err_no ? strerror(w->err_no) : "");
            bad = 1;
        }
        rts += w->rts;
        for (unsigned b = 0; b < NBUCKET; b++)
            hist[b] += w->hist[b];
        close(w->ep);
    }
    int stalled = 0;
    for (int i = 0; i < nconn; i++) {
        stalled += conns[i].rts == 0;
        close(conns[i].fd);
    }
    if (bad)
        return 1;
    double win = (double)(t1 - t0) / 1e9, n = rts ? (double)rts : NAN;
    printf("conns=%d threads=%d msg=%d secs=%.2f rt_per_s=%.0f p50_us=%.1f p99_us=%.1f "
           "server_cpu_us=%.2f load_cpu_us=%.2f stalled=%d\n",
           nconn, nthread, msg, win, (double)rts / win, percentile(hist, rts, 0.50) / 1e3,
           percentile(hist, rts, 0.99) / 1e3, (s1 - s0) * 1e6 / n, (c1 - c0) * 1e6 / n, stalled);
    free(conns);
    free(ws);
    return 0;
}
