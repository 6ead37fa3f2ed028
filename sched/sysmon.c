/*
 * sched/sysmon.c -- the system monitor: one background thread, no P (Go's sysmon).
 *
 * Every tick (20 us, doubling after 1 ms of nothing to do, up to 10 ms) it:
 *  - retakes Ps stuck in weft_blocking: a P whose syscalltick has not moved for a
 *    whole tick is CASed P_SYSCALL -> P_IDLE and handed to another M when there is
 *    work (weft__sched_handoffp);
 *  - flags green threads that run over 10 ms without a scheduling point (their P's
 *    schedtick did not move): it notes the G's address in its P's overrun (cleared
 *    when the tick moves), for weft_dump and the schedtrace's longrunning count. It
 *    never dereferences the G: the P's M may have switched away from it meanwhile,
 *    and a struct g read through a stale curg races with its reuse (a dead G, a new
 *    one; ThreadSanitizer saw exactly that);
 *  - prints a schedtrace line every N ms (WEFT_DEBUG=schedtrace=N);
 *  - prints weft_dump to stderr after a SIGQUIT (the handler only sets a flag);
 *  - trims the stacks in the global free pool, once each (weft__stack_trim_pool).
 * It sleeps without timeout while every P is idle and nothing is asked of it, so an
 * idle runtime uses no CPU (under weft_run with green threads alive it looks again
 * every 200 ms, for a deadlock whose first check was spoiled by a late switch).
 * Its doorbell (sched.h, inline, so that the files below ring it without calling up
 * into this one): weft__sysmon_poke wakes it when a P leaves the idle list (its tick
 * keeps growing as before); weft__sysmon_wake also brings the tick back to 20 us: a G
 * enters a blocking call, a SIGQUIT. No lost wake-up: sysmon publishes sysmon_idle
 * (seq_cst) and then re-reads npidle; wakers change npidle (seq_cst) and then read
 * sysmon_idle; the futex word is read before the re-check.
 *
 * Callers: start.c (start, stop, fork). Calls down: proc.c (weft__sched_handoffp,
 * weft__sched_wakep), timer.c, stack.c (pool trim), dump.c.
 */
#include <errno.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "sched/sched.h"

#define TICK_MIN_NS WEFT_SYSMON_TICK_MIN_NS
#define TICK_MAX_NS 10000000
#define OVERRUN_NS  10000000

static uint64_t nlongrunning;        /* green threads flagged since the last schedtrace */
static bool started;

static void wait_wake(uint32_t seen, int64_t ns)
{
    struct timespec ts = { ns / 1000000000, ns % 1000000000 };
    syscall(SYS_futex, &sched.sysmon_wake, FUTEX_WAIT_PRIVATE, seen, ns >= 0 ? &ts : NULL, NULL, 0);
}

static bool retake(int64_t now)
{
    bool did = false;
    for (int i = 0; i < sched.nprocs; i++) {
        struct p *pp = sched.allp[i];
        uint32_t st = atomic_load_explicit(&pp->status, ACQ);
        if (st != P_RUNNING)
            __atomic_store_n(&pp->overrun, NULL, __ATOMIC_RELAXED);
        if (st == P_SYSCALL) {
            uint32_t t = atomic_load_explicit(&pp->syscalltick, RLX);
            if (t != pp->sm_syscalltick) {
                pp->sm_syscalltick = t;     /* a new blocking call: give it one tick */
                pp->sm_when = now;
                did = true;                 /* keep ticking fast */
                continue;
            }
            uint32_t expect = P_SYSCALL;
            /* acq_rel: we take over the P's state from the blocked M (its release store) */
            if (atomic_compare_exchange_strong_explicit(&pp->status, &expect, P_IDLE,
                                                        memory_order_acq_rel, RLX)) {
                weft__sched_handoffp(pp);
                did = true;
            }
        } else if (st == P_RUNNING) {
            /* relaxed: the P's M writes both as it goes; a stale value costs a tick */
            struct m *mp = __atomic_load_n(&pp->m, __ATOMIC_RELAXED);
            uint32_t tick = __atomic_load_n(&pp->schedtick, __ATOMIC_RELAXED);
            if (tick != pp->sm_schedtick) {
                pp->sm_schedtick = tick;
                pp->sm_when = now;
                __atomic_store_n(&pp->overrun, NULL, __ATOMIC_RELAXED);
                continue;
            }
            /* a G waits in runnext, or in the ring, behind a G that has not
             * scheduled for a tick: wake a spinner, which takes it (proc.c stealwork,
             * stealnext); no one was woken when it was readied (weft__sched_ready) or
             * when it yielded (a yield queues without a wake-up: a G that yielded
             * behind a spinning one waited for ever with every other M idle) */
            if ((atomic_load_explicit(&pp->runnext, RLX) != NULL || !weft__runq_ring_empty(pp)) &&
                atomic_load_explicit(&sched.npidle, SC) > 0) {
                weft__sched_wakep();
                did = true;                 /* keep ticking fast */
            }
            if (now - pp->sm_when > OVERRUN_NS && mp != NULL) {
                /* relaxed, compared only: a user G (not the M's g0) on a P whose
                 * tick has not moved is the one running, or has just stopped */
                struct g *gp = __atomic_load_n(&mp->curg, __ATOMIC_RELAXED);
                if (gp != NULL && gp != &mp->g0 &&
                    __atomic_exchange_n(&pp->overrun, gp, __ATOMIC_RELAXED) != gp)
                    nlongrunning++;
            }
        }
    }
    return did;
}

static void schedtrace(int64_t start, int64_t now)
{
    char buf[1024];
    weft__lock(&sched.lock);           /* the M counts change under it */
    int mcount = sched.mcount, nmidle = sched.nmidle;
    weft__unlock(&sched.lock);
    int n = snprintf(buf, sizeof buf,
                     "SCHED %lldms: procs=%d idleprocs=%d threads=%d idlethreads=%d "
                     "spinningthreads=%d longrunning=%llu runqueue=%u [",
                     (long long)((now - start) / 1000000), sched.nprocs,
                     atomic_load_explicit(&sched.npidle, RLX), mcount, nmidle,
                     atomic_load_explicit(&sched.nmspinning, RLX),
                     (unsigned long long)nlongrunning, atomic_load_explicit(&sched.runqsize, RLX));
    nlongrunning = 0;
    /* snprintf returns what it would have written: clamp n to what is in buf, or the
     * next size (sizeof buf - n) wraps; the P list stops 16 bytes short of the end
     * (a P's entry is at most 11), which "]\n" always fits */
    if (n < 0 || n > (int)sizeof buf - 16)
        n = n < 0 ? 0 : (int)sizeof buf - 16;
    for (int i = 0; i < sched.nprocs && n < (int)sizeof buf - 16; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "%s%u", i ? " " : "",
                      weft__runq_len(sched.allp[i]));
    n += snprintf(buf + n, sizeof buf - (size_t)n, "]\n");
    if (write(2, buf, (size_t)n) < 0) {
        /* nothing to do */
    }
}

/* Nothing can ever run again: every P idle, no runnable G, no timer, no blocking
 * call, yet green threads are alive (all waiting). Only under weft_run: with
 * weft_start, plain threads may still wake them. */
static uint64_t live_and_switches(uint64_t *switches)
{
    uint64_t spawned = atomic_load_explicit(&sched.nspawned_plain, RLX), exited = 0, sw = 0;
    for (int i = 0; i < sched.nprocs; i++) {
        spawned += atomic_load_explicit(&sched.allp[i]->nspawned, RLX);
        exited += atomic_load_explicit(&sched.allp[i]->nexited, RLX);
        sw += atomic_load_explicit(&sched.allp[i]->nswitches, RLX);
    }
    *switches = sw;
    return spawned > exited ? spawned - exited : 0;
}

static bool maybe_deadlocked(void)
{
    if (!atomic_load_explicit(&sched.run_mode, RLX) || weft__debug.deadlock < 0)
        return false;
    if (atomic_load_explicit(&sched.npidle, SC) != sched.nprocs || weft__poller_pending() ||
        atomic_load_explicit(&sched.runqsize, SC) != 0 ||
        atomic_load_explicit(&sched.nsyscall, SC) != 0 || weft__timer_next() != INT64_MAX)
        return false;
    for (int i = 0; i < sched.nprocs; i++)
        if (!weft__runq_empty(sched.allp[i]))
            return false;
    uint64_t sw;
    return live_and_switches(&sw) > 0;
}

/* Under weft_run with green threads alive, an idle sysmon sleeps at most this long:
 * check_deadlock gives up when anything moved during its quiet 50 ms, and then nothing
 * may ever poke sysmon again (every P idle for good: a missed deadlock, a hang; seen
 * 1 run in 30 under load in timer::deadlock_detected_2p). So it looks again. */
#define DEADLOCK_RECHECK_NS 200000000

static bool deadlock_watch(void)
{
    uint64_t sw;
    return atomic_load_explicit(&sched.run_mode, RLX) && weft__debug.deadlock >= 0 &&
           live_and_switches(&sw) > 0;
}

static void check_deadlock(void)
{
    /* look again after a quiet 50 ms: nothing may have moved in between */
    uint64_t sw0, sw1;
    live_and_switches(&sw0);
    uint32_t seen = atomic_load_explicit(&sched.sysmon_wake, SC);
    wait_wake(seen, 50000000);
    if (atomic_load_explicit(&sched.stopping, RLX) || !maybe_deadlocked())
        return;
    live_and_switches(&sw1);
    if (sw0 != sw1)
        return;
    weft__printf("all green threads are asleep - deadlock!");
    weft__dump_locked(2);
    abort();
}

static void *sysmon_main(void *arg)
{
    (void)arg;
    int64_t start = weft__time_now(), last_trace = start, last_trim = start;
    int idle = 0;
    while (!atomic_load_explicit(&sched.stopping, RLX)) {
        int64_t delay = atomic_load_explicit(&sched.sysmon_tick_ns, RLX);
        if (idle > 50 && delay < TICK_MAX_NS) {
            delay *= 2;
            if (delay > TICK_MAX_NS)
                delay = TICK_MAX_NS;
        } else if (idle == 0) {
            delay = TICK_MIN_NS;
        }
        atomic_store_explicit(&sched.sysmon_tick_ns, delay, RLX);
        uint32_t seen = atomic_load_explicit(&sched.sysmon_wake, SC);
        if (weft__debug.schedtrace > 0 && delay > (int64_t)weft__debug.schedtrace * 1000000)
            delay = (int64_t)weft__debug.schedtrace * 1000000;
        wait_wake(seen, delay);
        if (atomic_load_explicit(&sched.stopping, RLX))
            break;
        int64_t now = weft__time_now();
        if (atomic_exchange_explicit(&sched.sigquit, 0, RLX)) {
            weft__printf("SIGQUIT: dump of every green thread");
            weft__dump_locked(2);
        }
        if (weft__debug.schedtrace > 0 && now - last_trace >= (int64_t)weft__debug.schedtrace * 1000000) {
            schedtrace(start, now);
            last_trace = now;
        }
        if (now - last_trim > 1000000000) {
            weft__stack_trim_pool(1024);
            last_trim = now;
        }
        if (retake(now))
            idle = 0;
        else
            idle++;
        /* I/O completions nobody reaped for POLL_STALE_NS (every M busy: Go's sysmon
         * netpoll); the Gs go to the global queue and wake an M */
        if (weft__poller_pending() &&
            now - atomic_load_explicit(&weft__poll_last, RLX) > POLL_STALE_NS)
            weft__poller->poll(NULL);
        /* backstop: timers overdue by 1 ms (their P's M runs a long green thread) */
        int64_t next = weft__timer_next();
        if (next <= now - 1000000)
            weft__timers_run_all(now);
        /* deep sleep while every P is idle */
        if (weft__debug.schedtrace <= 0 &&
            atomic_load_explicit(&sched.npidle, SC) == sched.nprocs) {
            if (maybe_deadlocked())
                check_deadlock();
            seen = atomic_load_explicit(&sched.sysmon_wake, SC);
            atomic_store_explicit(&sched.sysmon_idle, 1, SC);
            if (atomic_load_explicit(&sched.npidle, SC) == sched.nprocs &&
                !atomic_load_explicit(&sched.stopping, SC) &&
                !atomic_load_explicit(&sched.sigquit, SC))
                wait_wake(seen, deadlock_watch() ? DEADLOCK_RECHECK_NS : -1);
            atomic_store_explicit(&sched.sysmon_idle, 0, SC);
            /* back to 20 us ticks only if a blocking call (or SIGQUIT) asked: a P that
             * merely left the idle list (weft__sysmon_poke) keeps the slow pace, else
             * a runtime that idles between bursts (100 k sleepers: every timer batch)
             * had sysmon tick at 20 us for a millisecond after each */
            if (atomic_exchange_explicit(&sched.sysmon_urgent, 0, RLX))
                idle = 0;
        }
    }
    return NULL;
}

int weft__sysmon_start(void)
{
    atomic_store_explicit(&sched.sysmon_tick_ns, TICK_MIN_NS, RLX);
    int err = pthread_create(&sched.sysmon, NULL, sysmon_main, NULL);
    if (err != 0)
        return -err;
    started = true;
    return 0;
}

void weft__sysmon_stop(void)
{
    if (!started)
        return;
    atomic_fetch_add_explicit(&sched.sysmon_wake, 1, SC);
    weft__futex_wake(&sched.sysmon_wake, 1);
    pthread_join(sched.sysmon, NULL);
    started = false;
}

/* fork child: the sysmon thread is gone (never joined) */
void weft__sysmon_fork_child(void)
{
    started = false;
    nlongrunning = 0;
    atomic_store_explicit(&sched.sysmon_tick_ns, TICK_MIN_NS, RLX);
    atomic_store_explicit(&sched.sysmon_urgent, 0, RLX);
}
