/*
 * tests/bench/file_pread.c -- random 4 KiB preads of a cached file: weft_pread from green
 * threads against pread(2) from pthreads (tests/bench/run.sh io).
 *
 *   file_pread [GREEN] [K] [NPROCS] [MIB]
 *
 * A file of MIB MiB (default 64) in $TMPDIR (else /tmp), unlinked at once, written with
 * pwrite and read through once so that it sits in the page cache; every 4 KiB block
 * starts with its own index, which each read checks. Then GREEN * K preads of 4 KiB at
 * random 4 KiB-aligned offsets (xorshift, seeded per thread), twice:
 *   weft     GREEN green threads (default 1000) on NPROCS Ps (default 2), K each
 *            (default 1000), through weft_pread; the backend is weft's choice
 *            ($WEFT_IO=uring|uv);
 *   pthread  the same total with plain pread(2) on NPROCS pthreads.
 * Each is timed from the first spawn / pthread_create to the last join. One line,
 * key=value: backend green k nprocs weft_per_s pthread_per_s ratio (weft / pthread).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "weft.h"

#define BLOCK 4096

static int fd;
static long nblocks, green = 1000, k = 1000;
static int nprocs = 2;
static _Atomic long bad;                /* short, failed or wrong reads */
static const char *backend = "none";
static weft_wg wg = WEFT_WG_INIT;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static uint64_t next_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void check(ssize_t n, const unsigned char *buf, uint64_t b)
{
    uint64_t got;
    memcpy(&got, buf, sizeof got);
    if (n != BLOCK || got != b)
        atomic_fetch_add(&bad, 1);
}

/* ---- weft: green threads, weft_pread ------------------------------------------------ */
static void green_reader(void *arg)
{
    uint64_t seed = ((uint64_t)(intptr_t)arg + 1) * 0x9E3779B97F4A7C15ULL;
    unsigned char buf[BLOCK];
    for (long i = 0; i < k; i++) {
        uint64_t b = next_rand(&seed) % (uint64_t)nblocks;
        check(weft_pread(fd, buf, BLOCK, (off_t)(b * BLOCK)), buf, b);
    }
    weft_wg_done(&wg);
}

static int weft_main(void *arg)
{
    double *secs = arg;
    backend = weft_io_backend();
    double t0 = now_s();
    weft_wg_add(&wg, green);
    for (long i = 0; i < green; i++) {
        int r = weft_spawn(green_reader, (void *)(intptr_t)i);
        if (r != 0) {
            fprintf(stderr, "file_pread: weft_spawn: %s\n", weft_strerror(r));
            exit(1);
        }
    }
    weft_wg_wait(&wg);
    *secs = now_s() - t0;
    return 0;
}

/* ---- pthreads: pread(2) ------------------------------------------------------------- */
static void *pthread_reader(void *arg)
{
    long id = (long)(intptr_t)arg;
    long total = green * k, n = total / nprocs + (id < total % nprocs);
    uint64_t seed = ((uint64_t)id + 1) * 0x9E3779B97F4A7C15ULL;
    unsigned char buf[BLOCK];
    for (long i = 0; i < n; i++) {
        uint64_t b = next_rand(&seed) % (uint64_t)nblocks;
        check(pread(fd, buf, BLOCK, (off_t)(b * BLOCK)), buf, b);
    }
    return NULL;
}

static double run_pthreads(void)
{
    pthread_t th[1024];
    double t0 = now_s();
    for (int i = 0; i < nprocs; i++)
        if (pthread_create(&th[i], NULL, pthread_reader, (void *)(intptr_t)i) != 0) {
            fprintf(stderr, "file_pread: pthread_create failed\n");
            exit(1);
        }
    for (int i = 0; i < nprocs; i++)
        pthread_join(th[i], NULL);
    return now_s() - t0;
}

/* the file: each block starts with its index; written, then read once (page cache) */
static int make_file(long mib)
{
    const char *dir = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/weft-file_pread-XXXXXX", dir && *dir ? dir : "/tmp");
    int f = mkstemp(path);
    if (f < 0) {
        fprintf(stderr, "file_pread: %s: %s\n", path, strerror(errno));
        return -1;
    }
    unlink(path);
    nblocks = mib * (1 << 20) / BLOCK;
    enum { CHUNK = 1 << 20 };
    unsigned char *buf = malloc(CHUNK);
    if (!buf)
        return -1;
    for (long b = 0; b < nblocks; b += CHUNK / BLOCK) {
        memset(buf, 0xa5, CHUNK);
        for (long i = 0; i < CHUNK / BLOCK; i++) {
            uint64_t v = (uint64_t)(b + i);
            memcpy(buf + i * BLOCK, &v, sizeof v);
        }
        if (pwrite(f, buf, CHUNK, (off_t)b * BLOCK) != CHUNK) {
            fprintf(stderr, "file_pread: pwrite: %s\n", strerror(errno));
            return -1;
        }
    }
    for (off_t off = 0; off < (off_t)nblocks * BLOCK; off += CHUNK)
        if (pread(f, buf, CHUNK, off) != CHUNK) {
            fprintf(stderr, "file_pread: pread: %s\n", strerror(errno));
            return -1;
        }
    free(buf);
    return f;
}

int main(int argc, char **argv)
{
    long mib = 64;
    if (argc > 1) green = atol(argv[1]);
    if (argc > 2) k = atol(argv[2]);
    if (argc > 3) nprocs = atoi(argv[3]);
    if (argc > 4) mib = atol(argv[4]);
    if (argc > 5 || green < 1 || k < 1 || nprocs < 1 || nprocs > 1024 || mib < 1) {
        fprintf(stderr, "usage: file_pread [GREEN] [K] [NPROCS] [MIB]\n");
        return 2;
    }
    if ((fd = make_file(mib)) < 0)
        return 1;

    double weft_s = 0;
    weft_config cfg = { .nprocs = nprocs };
    int r = weft_run(weft_main, &weft_s, &cfg);
    if (r != 0) {
        fprintf(stderr, "file_pread: weft_run: %s\n", weft_strerror(r));
        return 1;
    }
    double pth_s = run_pthreads();
    if (atomic_load(&bad)) {
        fprintf(stderr, "file_pread: %ld reads short, failed or of the wrong block\n",
                atomic_load(&bad));
        return 1;
    }
    double total = (double)green * (double)k;
    printf("backend=%s green=%ld k=%ld nprocs=%d weft_per_s=%.0f pthread_per_s=%.0f ratio=%.2f\n",
           backend, green, k, nprocs, total / weft_s, total / pth_s, pth_s / weft_s);
    close(fd);
    return 0;
}
