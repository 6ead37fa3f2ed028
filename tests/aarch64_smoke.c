/*
 * tests/aarch64_smoke.c -- `make check-aarch64`: the runtime cross-built for aarch64 and
 * run under qemu-user. Self-contained (no Criterion); every result checked.
 *   1. The context layer alone (sched/context.h): the callee-saved registers x19-x29 and
 *      d8-d15 checked exactly from assembly across switches to a context that scribbles
 *      on all of them; many live integer and FP values in C (-O2) across such switches;
 *      a ring of contexts with checked counters; entry alignment and frame pointer.
 *   2. The runtime: spawn, yield, stealing on 2 Ps, the allocator on green threads.
 * Prints "aarch64 smoke: ok". Part 1 alone, without the runtime:
 *   aarch64-linux-gnu-gcc -static -O2 -std=gnu11 -Iinclude -I. -D_GNU_SOURCE \
 *       -DWEFT_SMOKE_CONTEXT_ONLY tests/aarch64_smoke.c sched/context.c sched/context_*.S
 * (it also runs natively on x86-64, without the assembly-level register check).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include "sched/context.h"
#ifndef WEFT_SMOKE_CONTEXT_ONLY
#include "weft.h"
#endif

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "aarch64 smoke: FAILED %s (line %d)\n", #c, __LINE__); exit(1); } } while (0)

/* ---- 1. the context layer alone ----------------------------------------------------- */
#define CTX_STACK (64 * 1024)
static _Alignas(16) char ctx_stacks[4][CTX_STACK];
static struct weft_ctx main_ctx, peer_ctx[3];
static long ctx_switches;

#if defined(__aarch64__)
/* check_switch: known values in x19-x29 and d8-d15, switch, report which changed (bit i).
 * clobber_switch: garbage in all of them, then switch (its caller's values preserved). */
int smoke_check_switch(struct weft_ctx *from, struct weft_ctx *to);
void smoke_clobber_switch(struct weft_ctx *from, struct weft_ctx *to);
#define SAVE_ALL                                                                          \
    "stp x29, x30, [sp, #-160]!\n stp x19, x20, [sp, #16]\n stp x21, x22, [sp, #32]\n"    \
    "stp x23, x24, [sp, #48]\n stp x25, x26, [sp, #64]\n stp x27, x28, [sp, #80]\n"        \
    "stp d8, d9, [sp, #96]\n stp d10, d11, [sp, #112]\n stp d12, d13, [sp, #128]\n"        \
    "stp d14, d15, [sp, #144]\n"
#define RESTORE_ALL                                                                       \
    "ldp x19, x20, [sp, #16]\n ldp x21, x22, [sp, #32]\n ldp x23, x24, [sp, #48]\n"        \
    "ldp x25, x26, [sp, #64]\n ldp x27, x28, [sp, #80]\n ldp d8, d9, [sp, #96]\n"          \
    "ldp d10, d11, [sp, #112]\n ldp d12, d13, [sp, #128]\n ldp d14, d15, [sp, #144]\n"     \
    "ldp x29, x30, [sp], #160\n ret\n"
#define SET(r, v) "mov x9, #" #v "\n fmov " #r ", x9\n"
#define CHK(r, v, bit) "mov x9, #" #v "\n cmp " #r ", x9\n b.eq 1f\n orr w0, w0, #" #bit "\n1:\n"
#define CHKD(r, v, bit) "fmov x10, " #r "\n mov x9, #" #v "\n cmp x10, x9\n b.eq 1f\n" \
    "orr w0, w0, #" #bit "\n1:\n"
__asm__(".text\n .globl smoke_check_switch\n .hidden smoke_check_switch\n"
        ".type smoke_check_switch, %function\n .p2align 4\n"
        "smoke_check_switch:\n" SAVE_ALL
        "mov x19, #0x1901\n mov x20, #0x2001\n mov x21, #0x2101\n mov x22, #0x2201\n"
        "mov x23, #0x2301\n mov x24, #0x2401\n mov x25, #0x2501\n mov x26, #0x2601\n"
        "mov x27, #0x2701\n mov x28, #0x2801\n mov x29, #0x2901\n"
        SET(d8, 0x0801) SET(d9, 0x0901) SET(d10, 0x1001) SET(d11, 0x1101)
        SET(d12, 0x1201) SET(d13, 0x1301) SET(d14, 0x1401) SET(d15, 0x1501)
        "bl weft__ctx_switch\n mov w0, #0\n"
        CHK(x19, 0x1901, 0x1) CHK(x20, 0x2001, 0x2) CHK(x21, 0x2101, 0x4) CHK(x22, 0x2201, 0x8)
        CHK(x23, 0x2301, 0x10) CHK(x24, 0x2401, 0x20) CHK(x25, 0x2501, 0x40)
        CHK(x26, 0x2601, 0x80) CHK(x27, 0x2701, 0x100) CHK(x28, 0x2801, 0x200)
        CHK(x29, 0x2901, 0x400)
        CHKD(d8, 0x0801, 0x800) CHKD(d9, 0x0901, 0x1000) CHKD(d10, 0x1001, 0x2000)
        CHKD(d11, 0x1101, 0x4000) CHKD(d12, 0x1201, 0x8000) CHKD(d13, 0x1301, 0x10000)
        CHKD(d14, 0x1401, 0x20000) CHKD(d15, 0x1501, 0x40000)
        RESTORE_ALL
        ".size smoke_check_switch, .-smoke_check_switch\n"
        ".globl smoke_clobber_switch\n .hidden smoke_clobber_switch\n"
        ".type smoke_clobber_switch, %function\n .p2align 4\n"
        "smoke_clobber_switch:\n" SAVE_ALL
        "mov x19, #0xdead\n mov x20, #0xdead\n mov x21, #0xdead\n mov x22, #0xdead\n"
        "mov x23, #0xdead\n mov x24, #0xdead\n mov x25, #0xdead\n mov x26, #0xdead\n"
        "mov x27, #0xdead\n mov x28, #0xdead\n mov x29, #0xdead\n"
        "fmov d8, #-3.0\n fmov d9, #-3.0\n fmov d10, #-3.0\n fmov d11, #-3.0\n"
        "fmov d12, #-3.0\n fmov d13, #-3.0\n fmov d14, #-3.0\n fmov d15, #-3.0\n"
        "bl weft__ctx_switch\n"
        RESTORE_ALL
        ".size smoke_clobber_switch, .-smoke_clobber_switch\n");
#define SWITCH_CLOBBERING smoke_clobber_switch
#else
#define SWITCH_CLOBBERING weft__ctx_switch
#endif

/* Switches back to main after scribbling on every callee-saved register (aarch64). */
static void clobberer(void *arg)
{
    long *rounds = arg;
    for (;;) {
        (*rounds)++;
        ctx_switches++;
        SWITCH_CLOBBERING(&peer_ctx[0], &main_ctx);
    }
}

static volatile long seed_i = 7;
static volatile double seed_d = 0.75;

/* Many live values across switches: at -O2 on aarch64 they sit in x19-x28 and d8-d15. With
 * to == NULL the same loop runs without switching: the reference. */
static __attribute__((noinline)) void live_values(struct weft_ctx *to, int iters,
                                                  unsigned long iout[10], double dout[8])
{
    unsigned long a = (unsigned long)seed_i, b = a * 3, c = a * 5 + 1, d = a * 7 + 2;
    unsigned long e = a * 11 + 3, f = a * 13 + 4, g = a * 17 + 5, h = a * 19 + 6;
    unsigned long k = a * 23 + 7, m = a * 29 + 8;
    double x = seed_d, y = x * 2.5, z = x * 3.25, w = x - 7.0, u = x * x, v = x + 100.0;
    double q = x * 0.125, t = x * 9.0;
    for (int i = 0; i < iters; i++) {
        if (to != NULL) {
            ctx_switches++;
            weft__ctx_switch(&main_ctx, to);
        }
        a += 1; b += a; c ^= b; d += c; e -= d; f += e; g ^= f; h += g; k -= h; m ^= k;
        x += 0.5; y *= 1.0000001; z -= 0.25; w += x; u += 0.125; v -= 0.5; q += y; t += z;
    }
    unsigned long is[10] = { a, b, c, d, e, f, g, h, k, m };
    double ds[8] = { x, y, z, w, u, v, q, t };
    memcpy(iout, is, sizeof is);
    memcpy(dout, ds, sizeof ds);
}

/* A ring main -> 0 -> 1 -> 2 -> main; each checks its own counter against the lap. */
static long ring_count[3], ring_lap;

static void ring_entry(void *arg)
{
    long i = (long)(intptr_t)arg;
    for (;;) {
        ring_count[i]++;
        CHECK(ring_count[i] == ring_lap);
        ctx_switches++;
        weft__ctx_switch(&peer_ctx[i], i == 2 ? &main_ctx : &peer_ctx[i + 1]);
    }
}

static uintptr_t probe_frame, probe_local;

static void probe_entry(void *arg)
{
    _Alignas(16) volatile char local[16];
    local[0] = 1;
    probe_local = (uintptr_t)local;
    probe_frame = (uintptr_t)__builtin_frame_address(0);
    ctx_switches++;
    weft__ctx_switch((struct weft_ctx *)arg, &main_ctx);
    CHECK(!"a finished probe was resumed");
}

static void context_smoke(void)
{
    long rounds = 0;
#if defined(__aarch64__)
    weft__ctx_init(&peer_ctx[0], ctx_stacks[0] + CTX_STACK, clobberer, &rounds);
    for (int i = 0; i < 1000; i++) {
        ctx_switches++;
        int bad = smoke_check_switch(&main_ctx, &peer_ctx[0]);
        if (bad != 0) {
            fprintf(stderr, "aarch64 smoke: round %d: registers changed across a switch: mask "
                    "%#x (bits 0-10 x19-x29, 11-18 d8-d15)\n", i, (unsigned)bad);
            exit(1);
        }
    }
    CHECK(rounds == 1000);
#endif

    unsigned long iwant[10], igot[10];
    double dwant[8], dgot[8];
    live_values(NULL, 2000, iwant, dwant);
    rounds = 0;
    weft__ctx_init(&peer_ctx[0], ctx_stacks[0] + CTX_STACK, clobberer, &rounds);
    live_values(&peer_ctx[0], 2000, igot, dgot);
    CHECK(rounds == 2000);
    for (int i = 0; i < 10; i++)
        CHECK(igot[i] == iwant[i]);
    for (int i = 0; i < 8; i++)
        CHECK(memcmp(&dgot[i], &dwant[i], sizeof(double)) == 0);

    for (long i = 0; i < 3; i++)
        weft__ctx_init(&peer_ctx[i], ctx_stacks[i] + CTX_STACK, ring_entry, (void *)(intptr_t)i);
    for (ring_lap = 1; ring_lap <= 100000; ring_lap++) {
        ctx_switches++;
        weft__ctx_switch(&main_ctx, &peer_ctx[0]);
        CHECK(ring_count[0] == ring_lap && ring_count[1] == ring_lap && ring_count[2] == ring_lap);
    }

    for (size_t skew = 0; skew < 16; skew++) {      /* the callee aligns stack_top */
        probe_frame = probe_local = 1;
        weft__ctx_init(&peer_ctx[0], ctx_stacks[3] + CTX_STACK - skew, probe_entry, &peer_ctx[0]);
        ctx_switches++;
        weft__ctx_switch(&main_ctx, &peer_ctx[0]);
        CHECK(probe_frame % 16 == 0 && probe_local % 16 == 0);
        CHECK(probe_local < (uintptr_t)ctx_stacks[3] + CTX_STACK - skew);
    }
    printf("aarch64 smoke: context layer ok (%ld switches)\n", ctx_switches);
}

#ifndef WEFT_SMOKE_CONTEXT_ONLY
/* ---- 2. the runtime ----------------------------------------------------------------- */
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

#endif /* !WEFT_SMOKE_CONTEXT_ONLY */

int main(void)
{
    context_smoke();
#ifndef WEFT_SMOKE_CONTEXT_ONLY
    weft_config cfg = { .nprocs = 2 };
    CHECK(weft_run(main_fn, NULL, &cfg) == 17);
    atomic_store(&sum, 0);
    atomic_store(&done, 0);
    CHECK(weft_run(main_fn, NULL, &cfg) == 17);      /* and again: restart */
#endif
    printf("aarch64 smoke: ok\n");
    return 0;
}
