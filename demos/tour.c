/*
 * demos/tour.c -- `make demo`: a short tour of what weft does, with real numbers:
 * the allocator, then green threads, channels, select, sleep and deadlines.
 * (I/O and the servers join the tour when they land.)
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "weft.h"

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

static int green_tour(void *arg)
{
    (void)arg;
    printf("\n6. A million green threads: spawn them all, wait for all (%d Ps).\n", weft_nprocs());
    double t0 = now_s();
    weft_wg_add(&wg, 1000000);
    for (int i = 0; i < 1000000; i++)
        weft_spawn(leaf, NULL);
    weft_wg_wait(&wg);
    weft_sched_stats st;
    weft_sched_stats_read(&st);
    printf("  %.0f ns per green thread; %llu switches, %llu steals so far\n",
           (now_s() - t0) * 1e9 / 1e6, (unsigned long long)st.switches, (unsigned long long)st.steals);

    printf("\n7. An unbuffered channel: 200,000 round trips between two green threads.\n");
    weft_chan_make(&ping, sizeof(long), 0);
    weft_chan_make(&pong, sizeof(long), 0);
    weft_spawn(ponger, NULL);
    t0 = now_s();
    long v = 0;
    for (int i = 0; i < 200000; i++) {
        weft_chan_send(ping, &v);
        weft_chan_recv(pong, &v);
    }
    printf("  %.0f ns per round trip; the counter came back as %ld\n", (now_s() - t0) * 1e9 / 2e5, v);
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

    printf("\n9. 100,000 green threads sleep 1..50 ms each.\n");
    t0 = now_s();
    weft_wg_add(&wg, 100000);
    for (int i = 0; i < 100000; i++)
        weft_spawn(napper, (void *)(intptr_t)(1 + i % 50));
    weft_wg_wait(&wg);
    printf("  all woke within %.0f ms\n", (now_s() - t0) * 1e3);
    return 0;
}

int main(void)
{
    printf("weft tour: the allocator\n\n");

    printf("1. Size classes: a request is rounded up to its class (at most 12.5%% above 128 B).\n  ");
    size_t sizes[] = { 0, 1, 17, 100, 129, 1000, 1025, 5000, 32768, 32769, 1 << 20 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = weft_malloc(sizes[i]);
        printf("%zu->%zu%s", sizes[i], weft_usable_size(p), i + 1 < sizeof sizes / sizeof sizes[0] ? "  " : "\n");
        weft_free(p);
    }

    printf("\n2. A fast path with no lock: 10 million malloc/free pairs of 16..256 bytes.\n");
    double t0 = now_s();
    unsigned x = 1;
    for (int i = 0; i < 10000000; i++) {
        x = x * 1103515245u + 12345u;
        char *p = weft_malloc(16 + (x >> 16) % 241);
        p[0] = (char)i;
        weft_free(p);
    }
    printf("  %.1f ns per pair\n", (now_s() - t0) * 1e9 / 1e7);

    printf("\n3. A burst: 512 MiB in 1 KiB and 64 KiB objects, then freed, then weft_mem_release().\n");
    show_stats("before");
    enum { N1 = 262144, N2 = 4096 };
    void **small = weft_malloc(N1 * sizeof(void *)), **large = weft_malloc(N2 * sizeof(void *));
    for (int i = 0; i < N1; i++)
        memset(small[i] = weft_malloc(1024), 1, 1024);
    for (int i = 0; i < N2; i++)
        memset(large[i] = weft_malloc(65536), 2, 65536);
    show_stats("after the burst");
    for (int i = 0; i < N1; i++)
        weft_free(small[i]);
    for (int i = 0; i < N2; i++)
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

    printf("\nweft tour: green threads\n");
    int r = weft_run(green_tour, NULL, NULL);
    printf("\nweft_run returned %d. Send SIGQUIT to a running weft program for a dump of its "
           "green threads.\n", r);
    return r;
}
