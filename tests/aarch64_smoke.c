/*
 * tests/aarch64_smoke.c -- `make check-aarch64`: the runtime cross-built for aarch64 and
 * run under qemu-user. Self-contained (no Criterion): context switches that must keep
 * callee-saved integer and FP registers, spawn, yield, stealing on 2 Ps, the allocator
 * on green threads; every result checked. Prints "aarch64 smoke: ok".
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "weft.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "aarch64 smoke: FAILED %s (line %d)\n", #c, __LINE__); exit(1); } } while (0)

static _Atomic long sum, done;

/* Many live values across yields: they sit in x19-x28 and d8-d15. */
static __attribute__((noinline)) double work(long id)
{
    long a = id, b = id * 3, c = id * 5, d = id * 7, e = id * 11, f = id * 13;
    double x = (double)id * 0.5, y = x + 1.25, z = y * 2.0, w = z - 0.75;
    for (int i = 0; i < 50; i++) {
        weft_yield();
        a += 1; b += 2; c += 3; d += 4; e += 5; f += 6;
        x += 0.5; y += 0.25; z += 0.125; w -= 0.5;
    }
    CHECK(a == id + 50 && b == id * 3 + 100 && c == id * 5 + 150);
    CHECK(d == id * 7 + 200 && e == id * 11 + 250 && f == id * 13 + 300);
    CHECK(x == (double)id * 0.5 + 25.0 && y == (double)id * 0.5 + 1.25 + 12.5);
    return x + y + z + w;
}

static void worker(void *arg)
{
    long id = (long)(intptr_t)arg;
    char *p = weft_malloc(64 + (size_t)id % 200);
    memset(p, (int)(id & 0xff), 64);
    work(id);
    for (int i = 0; i < 64; i++)
        CHECK(p[i] == (char)(id & 0xff));
    weft_free(p);
    atomic_fetch_add(&sum, id);
    atomic_fetch_add(&done, 1);
}

static void spin(void *arg)
{
    (void)arg;
    volatile unsigned long x = 1;
    for (int i = 0; i < 3000000; i++)
        x = x * 6364136223846793005ul + 1;
    atomic_fetch_add(&done, 1);
}

static void spawner(void *arg)
{
    (void)arg;
    for (int i = 0; i < 8; i++)
        CHECK(weft_spawn(spin, NULL) == 0);
}

static int main_fn(void *arg)
{
    (void)arg;
    CHECK(weft_nprocs() == 2);
    for (long i = 1; i <= 1000; i++)
        CHECK(weft_spawn(worker, (void *)(intptr_t)i) == 0);
    while (atomic_load(&done) < 1000)
        weft_yield();
    CHECK(atomic_load(&sum) == 1000L * 1001 / 2);
    atomic_store(&done, 0);
    CHECK(weft_spawn(spawner, NULL) == 0);
    while (atomic_load(&done) < 8)
        weft_yield();
    weft_sched_stats st;
    weft_sched_stats_read(&st);
    CHECK(st.spawned == 1010);
    printf("aarch64 smoke: %llu switches, %llu steals\n", (unsigned long long)st.switches,
           (unsigned long long)st.steals);
    return 17;
}

int main(void)
{
    weft_config cfg = { .nprocs = 2 };
    CHECK(weft_run(main_fn, NULL, &cfg) == 17);
    atomic_store(&sum, 0);
    atomic_store(&done, 0);
    CHECK(weft_run(main_fn, NULL, &cfg) == 17);      /* and again: restart */
    printf("aarch64 smoke: ok\n");
    return 0;
}
