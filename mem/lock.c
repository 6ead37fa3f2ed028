/*
 * mem/lock.c -- the runtime's lock (weft_lock, include/weft/base.h): a futex mutex,
 * 0 free, 1 locked, 2 locked with waiters (Drepper, "Futexes Are Tricky"); its fast
 * paths are inline in base.h, the waiting here. Also the raw futex calls that sched/
 * parks Ms with.
 *
 * Invariants: state 2 whenever a thread may sleep in the kernel on the lock; the
 * unlocker that swaps out a 2 wakes one sleeper, which takes the lock as 2 again (it
 * cannot know whether others still sleep).
 * Callers: any thread, green or plain, and the allocator itself: never allocates.
 */
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "weft/base.h"

void weft__futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

/* Wait at most ns nanoseconds (relative); returns early on a wake or a change. */
void weft__futex_wait_timeout(_Atomic uint32_t *addr, uint32_t val, int64_t ns)
{
    if (ns < 0) {
        weft__futex_wait(addr, val);
        return;
    }
    struct timespec ts = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, &ts, NULL, 0);
}

void weft__futex_wake(_Atomic uint32_t *addr, int n)
{
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

void weft__lock_slow(weft_lock *l)
{
    /* Spin a little: critical sections here are a few hundred instructions. */
    for (int i = 0; i < 100; i++) {
        uint32_t z = 0;
        if (atomic_load_explicit(&l->state, RLX) == 0 &&
            atomic_compare_exchange_weak_explicit(&l->state, &z, 1, ACQ, RLX))
            return;
        weft__cpu_relax();
    }
    /* acquire: pairs with weft__unlock's release exchange */
    while (atomic_exchange_explicit(&l->state, 2, ACQ) != 0)
        weft__futex_wait(&l->state, 2);
}

void weft__unlock_slow(weft_lock *l)
{
    weft__futex_wake(&l->state, 1);
}
