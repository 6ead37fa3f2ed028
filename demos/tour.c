/*
 * demos/tour.c -- `make demo`: a short tour of what weft does, with real numbers:
 * the allocator, then green threads, channels, select, sleep and deadlines, then I/O:
 * an echo server in this very process, driven by green-thread clients.
 *
 * `tour --short` (or WEFT_TOUR_SHORT=1) runs every part at a small size: the tests
 * run it that way under the sanitizers.
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "weft.h"

/* --short: every part smaller (the sizes below are the full ones, divided) */
static bool short_run;
static long sized(long full, long small)
{
    return short_run ? small : full;
}

static long rss_kib(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void show_stats(const char *when)
{
    weft_mem_stats st;
    weft_mem_stats_read(&st);
    printf("  %-28s live %9.1f KiB  in use %9.1f KiB  mapped %7.1f MiB  released %7.1f MiB  RSS %7.1f MiB\n",
           when, st.heap_alloc / 1024.0, st.heap_inuse / 1024.0, st.heap_sys / 1048576.0,
           st.heap_released / 1048576.0, rss_kib() / 1024.0);
}

#define NOBJ 200000
static void *objs[NOBJ];

static void *producer(void *arg)
{
    (void)arg;
    for (int i = 0; i < NOBJ; i++)
        objs[i] = weft_malloc(64);
    return NULL;
}

/* ---- green threads ---------------------------------------------------------------- */
static weft_wg wg = WEFT_WG_INIT;
static void leaf(void *arg)
{
    (void)arg;
    weft_wg_done(&wg);
}

static weft_chan *ping, *pong;
static void ponger(void *arg)
{
    (void)arg;
    long v;
    while (weft_chan_recv(ping, &v) == 0) {
        v++;
        weft_chan_send(pong, &v);
    }
}

static void napper(void *arg)
{
    weft_sleep((int64_t)(intptr_t)arg * WEFT_MILLISECOND);
    weft_wg_done(&wg);
}

/* ---- I/O: an echo server and its clients, all green threads of this process ---------
 * The server is demos/echo.c's loop (read, write back) behind an accept loop of its
 * own; the clients dial it and do 64-byte round trips until the time is up. The end:
 * the clients close; the listener is shut down, which wakes the parked accept, and
 * closed once the accept loop has ended (no handler is spawned after that); then the
 * handlers, which read end of file, are waited for. */
#define ECHO_MSG 64
static int echo_lfd;
static atomic_bool echo_closing;
static weft_wg echo_handlers = WEFT_WG_INIT, echo_clients = WEFT_WG_INIT;
static weft_sema echo_acceptor_done;
static atomic_long echo_trips, echo_failed;
static int echo_port;
static int64_t echo_until;

static void echo_handler(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[4096];
    for (;;) {
        ssize_t n = weft_read(fd, buf, sizeof buf);
        if (n <= 0 || weft_write(fd, buf, (size_t)n) < 0)
            break;
    }
    weft_close(fd);
    weft_wg_done(&echo_handlers);
}

static void echo_acceptor(void *arg)
{
    (void)arg;
    while (!atomic_load(&echo_closing)) {
        int fd = weft_accept(echo_lfd, NULL, NULL);
        if (fd < 0) {
            if (fd == -EMFILE || fd == -ENFILE)
                weft_sleep(WEFT_MILLISECOND);
            continue;                   /* the loop's test tells a shut listener */
        }
        weft_wg_add(&echo_handlers, 1);
        if (weft_spawn(echo_handler, (void *)(intptr_t)fd) != 0) {
            weft_close(fd);
            weft_wg_done(&echo_handlers);
        }
    }
    weft_sema_release(&echo_acceptor_done);
}

static void echo_client(void *arg)
{
    (void)arg;
    char out[ECHO_MSG], in[ECHO_MSG];
    memset(out, 'w', sizeof out);
    long trips = 0;
    int fd = weft_dial_tcp("127.0.0.1", echo_port);
    if (fd < 0) {
        atomic_fetch_add(&echo_failed, 1);
    } else {
        while (weft_now() < echo_until) {
            if (weft_write(fd, out, sizeof out) < 0)
                break;
            size_t got = 0;
            while (got < sizeof in) {
                ssize_t r = weft_read(fd, in + got, sizeof in - got);
                if (r <= 0)
                    break;
                got += (size_t)r;
            }
            if (got < sizeof in || memcmp(in, out, sizeof in) != 0) {
                atomic_fetch_add(&echo_failed, 1);
                break;
            }
            trips++;
        }
        weft_close(fd);
    }
    atomic_fetch_add(&echo_trips, trips);
    weft_wg_done(&echo_clients);
}

static int echo_tour(void)
{
    int nconns = (int)sized(50, 8);
    double secs = short_run ? 0.3 : 2.0;
    printf("\n10. I/O: an echo server in this process, %d green-thread clients doing %d-byte "
           "round trips for %.1f s.\n", nconns, ECHO_MSG, secs);
    echo_lfd = weft_listen_tcp("127.0.0.1", 0, 0);
    if (echo_lfd < 0) {
        printf("  cannot listen: %s\n", weft_strerror(echo_lfd));
        return 1;
    }
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    getsockname(echo_lfd, (struct sockaddr *)&sa, &len);
    echo_port = ntohs(sa.sin_port);
    weft_spawn(echo_acceptor, NULL);
    echo_until = weft_now() + (int64_t)(secs * 1e9);
    double t0 = now_s();
    weft_wg_add(&echo_clients, nconns);
    for (int i = 0; i < nconns; i++)
        weft_spawn(echo_client, NULL);
    weft_wg_wait(&echo_clients);
    double el = now_s() - t0;
    atomic_store(&echo_closing, true);
    weft_shutdown(echo_lfd, SHUT_RDWR); /* wakes the parked accept */
    weft_sema_acquire(&echo_acceptor_done);
    weft_close(echo_lfd);
    weft_wg_wait(&echo_handlers);       /* the clients closed: each handler reads EOF */
    long trips = atomic_load(&echo_trips), failed = atomic_load(&echo_failed);
    printf("  %ld round trips in %.2f s: %.0f round trips/s, %.1f us each on a connection "
           "(%s, %d Ps)%s\n", trips, el, (double)trips / el,
           trips ? el * 1e6 * nconns / (double)trips : 0.0, weft_io_backend(), weft_nprocs(),
           failed ? "; some clients FAILED" : "");
    return failed || trips == 0 ? 1 : 0;
}

static int green_tour(void *arg)
{
    (void)arg;
    long n = sized(1000000, 2000);
    printf("\n6. %ld green threads: spawn them all, wait for all (%d Ps).\n", n, weft_nprocs());
    double t0 = now_s();
    weft_wg_add(&wg, n);
    for (long i = 0; i < n; i++)
        weft_spawn(leaf, NULL);
    weft_wg_wait(&wg);
    weft_sched_stats st;
    weft_sched_stats_read(&st);
    printf("  %.0f ns per green thread; %llu switches, %llu steals so far\n",
           (now_s() - t0) * 1e9 / (double)n, (unsigned long long)st.switches,
           (unsigned long long)st.steals);

    n = sized(200000, 2000);
    printf("\n7. An unbuffered channel: %ld round trips between two green threads.\n", n);
    weft_chan_make(&ping, sizeof(long), 0);
    weft_chan_make(&pong, sizeof(long), 0);
    weft_spawn(ponger, NULL);
    t0 = now_s();
    long v = 0;
    for (long i = 0; i < n; i++) {
        weft_chan_send(ping, &v);
        weft_chan_recv(pong, &v);
    }
    printf("  %.0f ns per round trip; the counter came back as %ld\n",
           (now_s() - t0) * 1e9 / (double)n, v);
    weft_chan_close(ping);

    printf("\n8. select with a timeout, and a deadline on a blocking receive.\n");
    long got;
    weft_case cs[1] = { { pong, WEFT_RECV, &got, 0 } };
    t0 = now_s();
    int r = weft_select(cs, 1, 15 * WEFT_MILLISECOND);
    printf("  select: %s after %.1f ms\n", weft_strerror(r), (now_s() - t0) * 1e3);
    weft_deadline(weft_now() + 10 * WEFT_MILLISECOND);
    t0 = now_s();
    r = weft_chan_recv(pong, &got);
    weft_deadline(-1);
    printf("  recv with a 10 ms deadline: %s after %.1f ms\n", weft_strerror(r), (now_s() - t0) * 1e3);

    n = sized(100000, 1000);
    printf("\n9. %ld green threads sleep 1..50 ms each.\n", n);
    t0 = now_s();
    weft_wg_add(&wg, n);
    for (long i = 0; i < n; i++)
        weft_spawn(napper, (void *)(intptr_t)(1 + i % 50));
    weft_wg_wait(&wg);
    printf("  all woke within %.0f ms\n", (now_s() - t0) * 1e3);

    return echo_tour();
}

int main(int argc, char **argv)
{
    const char *env = getenv("WEFT_TOUR_SHORT");
    short_run = env != NULL && *env != '\0' && strcmp(env, "0") != 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: tour [--short]\n"
                   "  A tour of weft with real numbers: the allocator, green threads,\n"
                   "  channels, select, timers, and an echo server with its clients.\n"
                   "  --short (or WEFT_TOUR_SHORT=1): every part at a small size.\n");
            return 0;
        } else if (strcmp(argv[i], "--short") == 0) {
            short_run = true;
        } else {
            fprintf(stderr, "tour: unknown argument '%s'\nusage: tour [--short]\n", argv[i]);
            return 2;
        }
    }
    printf("weft tour: the allocator%s\n\n", short_run ? " (short run)" : "");

    printf("1. Size classes: a request is rounded up to its class (at most 12.5%% above 128 B).\n  ");
    size_t sizes[] = { 0, 1, 17, 100, 129, 1000, 1025, 5000, 32768, 32769, 1 << 20 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = weft_malloc(sizes[i]);
        printf("%zu->%zu%s", sizes[i], weft_usable_size(p), i + 1 < sizeof sizes / sizeof sizes[0] ? "  " : "\n");
        weft_free(p);
    }

    long pairs = sized(10000000, 100000);
    printf("\n2. A fast path with no lock: %ld malloc/free pairs of 16..256 bytes.\n", pairs);
    double t0 = now_s();
    unsigned x = 1;
    for (long i = 0; i < pairs; i++) {
        x = x * 1103515245u + 12345u;
        char *p = weft_malloc(16 + (x >> 16) % 241);
        p[0] = (char)i;
        weft_free(p);
    }
    printf("  %.1f ns per pair\n", (now_s() - t0) * 1e9 / (double)pairs);

    const long N1 = sized(262144, 4096), N2 = sized(4096, 64);
    printf("\n3. A burst: %ld MiB in 1 KiB and 64 KiB objects, then freed, then weft_mem_release().\n",
           (N1 * 1024 + N2 * 65536) >> 20);
    show_stats("before");
    void **small = weft_malloc(N1 * sizeof(void *)), **large = weft_malloc(N2 * sizeof(void *));
    for (long i = 0; i < N1; i++)
        memset(small[i] = weft_malloc(1024), 1, 1024);
    for (long i = 0; i < N2; i++)
        memset(large[i] = weft_malloc(65536), 2, 65536);
    show_stats("after the burst");
    for (long i = 0; i < N1; i++)
        weft_free(small[i]);
    for (long i = 0; i < N2; i++)
        weft_free(large[i]);
    show_stats("freed (large pages scavenged)");
    weft_mem_release();
    show_stats("after weft_mem_release()");
    weft_free(small);
    weft_free(large);

    printf("\n4. Cross-thread frees: one thread allocates %d objects, this one frees them.\n", NOBJ);
    pthread_t th;
    pthread_create(&th, NULL, producer, NULL);
    pthread_join(th, NULL);
    for (int i = 0; i < NOBJ; i++)
        weft_free(objs[i]);
    weft_mem_stats st;
    weft_mem_stats_read(&st);
    printf("  mallocs %llu, frees %llu: every object accounted for (%llu live bytes)\n",
           (unsigned long long)st.mallocs, (unsigned long long)st.frees, (unsigned long long)st.heap_alloc);

    printf("\n5. Errors are values: calloc(SIZE_MAX, 2) -> %p; aligned_alloc(3, 8) -> %p.\n",
           weft_calloc((size_t)-1, 2), weft_aligned_alloc(3, 8));
    void *a = weft_aligned_alloc(4096, 100);
    printf("  aligned_alloc(4096, 100) -> %p (aligned: %s)\n", a, ((size_t)a % 4096) == 0 ? "yes" : "no");
    weft_free(a);
    printf("\nRun any program on this allocator: LD_PRELOAD=lib/libweft-malloc.so python3 ...\n");

    printf("\nweft tour: green threads, then I/O\n");
    int r = weft_run(green_tour, NULL, NULL);
    printf("\nweft_run returned %d. Send SIGQUIT to a running weft program for a dump of its "
           "green threads.\n", r);
    return r;
}
