/*
 * tests/bench/ctx_switch.c -- the bare cost of weft__ctx_switch (sched/context.h), no
 * scheduler: the main context and one other ping-pong N times (2N switches), 7 runs,
 * median ns per switch. Two shapes:
 *   bare   each side calls weft__ctx_switch straight from its loop (what DESIGN.md quotes);
 *   deep   each side switches three calls deep and returns to its loop after every switch,
 *          as green threads do (weft_yield, a channel op): this is where a resume by
 *          pop + jmp pays for the return-stack buffer it leaves unbalanced.
 * The resume variant is fixed when sched/context_x86_64.S is assembled; build this with
 * the same -DWEFT_CTX_RET=1 / -DWEFT_CTX_JMP=1 so that the label it prints is right:
 *   cc -O2 -std=gnu11 -Iinclude -I. -D_GNU_SOURCE [-DWEFT_CTX_RET=1] tests/bench/ctx_switch.c \
 *      sched/context.c sched/context_x86_64.S sched/context_aarch64.S -o /tmp/ctx_switch
 * Usage: ctx_switch [N = 10000000] [runs = 7]. Prints "ctx_switch <shape> <ns> ns/switch".
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include "sched/context.h"

#define STACK_SIZE (64 * 1024)

static struct weft_ctx main_ctx, peer_ctx;
static long rounds;

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* ---- bare: switch straight from the loop ---------------------------------------------------- */
static void bare_peer(void *arg)
{
    (void)arg;
    for (;;)
        weft__ctx_switch(&peer_ctx, &main_ctx);
}

static void bare_main(long n)
{
    for (long i = 0; i < n; i++)
        weft__ctx_switch(&main_ctx, &peer_ctx);
}

/* ---- deep: switch three calls down, return to the loop -------------------------------------- */
__attribute__((noinline)) static void deep3(struct weft_ctx *from, struct weft_ctx *to)
{
    weft__ctx_switch(from, to);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void deep2(struct weft_ctx *from, struct weft_ctx *to)
{
    deep3(from, to);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void deep1(struct weft_ctx *from, struct weft_ctx *to)
{
    deep2(from, to);
    __asm__ volatile("" ::: "memory");
}

static void deep_peer(void *arg)
{
    (void)arg;
    for (;;) {
        deep1(&peer_ctx, &main_ctx);
        rounds++;
    }
}

static void deep_main(long n)
{
    for (long i = 0; i < n; i++)
        deep1(&main_ctx, &peer_ctx);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median over `runs` of ns per switch; a fresh peer context per run. */
static double measure(void (*peer)(void *), void (*loop)(long), char *stack, long n, int runs)
{
    double *ns = calloc((size_t)runs, sizeof *ns);
    if (ns == NULL)
        abort();
    for (int r = 0; r < runs; r++) {
        weft__ctx_init(&peer_ctx, stack + STACK_SIZE, peer, NULL);
        loop(n / 100 + 1);                                  /* warm up */
        double t0 = now_ns();
        loop(n);
        ns[r] = (now_ns() - t0) / (2.0 * (double)n);
    }
    qsort(ns, (size_t)runs, sizeof *ns, cmp_double);
    double median = ns[runs / 2];
    free(ns);
    return median;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 10000000;
    int runs = argc > 2 ? atoi(argv[2]) : 7;
    if (n <= 0 || runs <= 0) {
        fprintf(stderr, "usage: ctx_switch [N] [runs]\n");
        return 2;
    }
    char *stack = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
    if (stack == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
#if defined(__x86_64__)
    const char *variant = WEFT_CTX_RESUME_JMP ? "pop+jmp" : "ret";
#else
    const char *variant = "ret";
#endif
    printf("# resume by %s; median of %d runs of %ld round trips (2 switches each)\n", variant,
           runs, n);
    printf("ctx_switch bare %.2f ns/switch\n", measure(bare_peer, bare_main, stack, n, runs));
    rounds = 0;
    double deep = measure(deep_peer, deep_main, stack, n, runs);
    /* per run the peer is resumed n + n/100 + 1 times and counts all but its first start */
    long expect = (long)runs * (n + n / 100);
    if (rounds != expect) {
        fprintf(stderr, "ctx_switch: peer counted %ld rounds, expected %ld\n", rounds, expect);
        return 1;
    }
    printf("ctx_switch deep %.2f ns/switch\n", deep);
    munmap(stack, STACK_SIZE);
    return 0;
}
