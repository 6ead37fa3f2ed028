/*
 * sched/current.c -- who is running here: the current M and G, and the clock.
 *
 * Owns the thread-local pointer to the M (tls_m) that this OS thread is; nothing else
 * reads or writes it. A green thread may resume on another M after any switch, and
 * compilers cache a thread-local's address across calls, so:
 *  - weft__current_m() is the only reader: out of line and opaque to the optimizer
 *    (an empty asm that "changes" the value), so no caller keeps a stale address;
 *  - weft__current_set_m() is the only writer: an M's thread at its start and end
 *    (proc.c mstart), a fork child forgetting the runtime (start.c).
 * weft__current_g() is the green thread the caller runs on, NULL on a plain thread
 * and on an M's g0.
 * The clock is CLOCK_MONOTONIC in nanoseconds: weft_now() and every deadline.
 *
 * Callers: every sched/ file. Calls: nothing of sched/ (the bottom of the folder).
 */
#include <stdio.h>
#include <time.h>
#include "sched/sched.h"

static __thread struct m *tls_m WEFT_TLS_IE;

WEFT_NOINLINE struct m *weft__current_m(void)
{
    struct m *mp = tls_m;
    __asm__ volatile("" : "+r"(mp));
    return mp;
}

void weft__current_set_m(struct m *mp)
{
    tls_m = mp;
}

struct g *weft__current_g(void)
{
    struct m *mp = weft__current_m();
    return mp != NULL && mp->curg != NULL && !mp->curg->system ? mp->curg : NULL;
}

int64_t weft__time_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t weft_now(void)
{
    return weft__time_now();
}

/* weft__throw's context (weft/base.h), installed by weft_start: the green thread the
 * caller runs, if any. Reads only the caller's own M and G (no lock, no allocation: it
 * may run in a signal handler); a name is cut at 64 bytes. */
size_t weft__current_describe(char *buf, size_t cap)
{
    struct g *gp = weft__current_g();
    if (gp == NULL || cap == 0)
        return 0;
    int n = gp->name != NULL
                ? snprintf(buf, cap, "green thread %llu (%.64s)", (unsigned long long)gp->id, gp->name)
                : snprintf(buf, cap, "green thread %llu", (unsigned long long)gp->id);
    if (n <= 0)
        return 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}
