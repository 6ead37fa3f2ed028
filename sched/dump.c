/*
 * sched/dump.c -- introspection: weft_dump (every live green thread, one line each)
 * and weft_sched_stats_read.
 *
 * The dump runs from weft_dump, from sysmon after a SIGQUIT, and from a stop that
 * waits too long (start.c). It reads the scheduler racily, on purpose: a dump must
 * never wait for a lock that a green thread it reports may hold. So the G lists are
 * walked without their locks (g.c: they only grow at the head, and only teardown
 * frees them, which sched.startlock keeps out), and each G's fields are read as they are:
 * a G that changes meanwhile shows its old or new state, or is missed.
 *
 * Callers: the public calls below, sysmon.c, start.c (with sched.startlock held).
 * Calls down only: g.c, runq.c.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "sched/sched.h"
#include "sched/san.h"

void weft_sched_stats_read(weft_sched_stats *out)
{
    memset(out, 0, sizeof *out);
    weft__lock(&sched.startlock);
    if (!atomic_load_explicit(&sched.running, ACQ)) {
        weft__unlock(&sched.startlock);
        return;
    }
    out->nprocs = sched.nprocs;
    out->threads_live = weft__g_live_count();
    out->threads_runnable = atomic_load_explicit(&sched.runqsize, RLX);
    out->spawned = atomic_load_explicit(&sched.nspawned_plain, RLX);
    for (int i = 0; i < sched.nprocs; i++) {
        struct p *pp = sched.allp[i];
        out->threads_runnable += weft__runq_len(pp);
        out->spawned += atomic_load_explicit(&pp->nspawned, RLX);
        out->switches += atomic_load_explicit(&pp->nswitches, RLX);
        out->steals += atomic_load_explicit(&pp->nsteals, RLX);
        out->parks += atomic_load_explicit(&pp->nparks, RLX);
    }
    weft__unlock(&sched.startlock);
}

static const char *status_name(uint32_t st)
{
    static const char *const names[] = { "idle", "runnable", "running", "waiting", "blocking call", "dead" };
    return st < sizeof names / sizeof names[0] ? names[st] : "?";
}

static void dump_one(int fd, uint64_t id, const char *name, uint32_t st, const char *why,
                     int overran, void (*fn)(void *))
{
    /* fn may be stale (a record freed while we look): dladdr then finds nothing */
    Dl_info info = { 0 };
    char where[160];
    int found = fn != NULL && dladdr((void *)fn, &info) != 0;
    if (found && info.dli_sname != NULL)
        snprintf(where, sizeof where, "%s", info.dli_sname);
    else if (found && info.dli_fname != NULL)   /* not exported: module + offset, for addr2line */
        snprintf(where, sizeof where, "%s+%#lx", info.dli_fname,
                 (unsigned long)((uintptr_t)fn - (uintptr_t)info.dli_fbase));
    else
        snprintf(where, sizeof where, "?");
    dprintf(fd, "green thread %llu%s%s%s [%s%s%s]%s entry %s (%p)\n",
            (unsigned long long)id, name ? " (" : "", name ? name : "", name ? ")" : "",
            status_name(st), why ? ", " : "", why ? why : "",
            overran ? " ran over 10 ms without yielding;" : "", where, (void *)fn);
}

/* sysmon notes a G running over 10 ms in its P (sysmon.c) */
static int overran(struct g *gp)
{
    for (int i = 0; i < sched.nprocs; i++)
        if (__atomic_load_n(&sched.allp[i]->overrun, __ATOMIC_RELAXED) == gp)
            return 1;
    return 0;
}

void weft__dump_locked(int fd)
{
    weft__tsan_racy_reads_begin();      /* the fields below are read racily, on purpose */
    dprintf(fd, "weft: %d procs, %d idle, %d threads (%d idle), %d spinning, global runq %u\n",
            sched.nprocs, atomic_load_explicit(&sched.npidle, RLX), sched.mcount, sched.nmidle,
            atomic_load_explicit(&sched.nmspinning, RLX), atomic_load_explicit(&sched.runqsize, RLX));
    /* The lists are walked without their locks, which first runs take (g.c newg:
     * allg_lock; the free lists: gflock): a dump written to a pipe that a not-yet-started
     * G reads would deadlock (see the header). */
    /* never run: spawn records (first: a G starting meanwhile shows as one or the other) */
    for (struct gspawn *c = weft__g_rec_chunks(); c != NULL; c = *(struct gspawn **)c) {
        for (int i = 1; i <= RECS_PER_CHUNK; i++) {
            struct gspawn *r = &c[i];
            void (*fn)(void *) = r->fn;
            if (atomic_load_explicit(&r->status, ACQ) == G_RUNNABLE)
                dump_one(fd, r->id, r->name, G_RUNNABLE, "not started", 0, fn);
        }
    }
    for (struct g *gp = weft__g_all(); gp != NULL; gp = gp->alllink) {
        uint32_t st = atomic_load_explicit(&gp->status, RLX);
        if (st != G_IDLE && st != G_DEAD)
            dump_one(fd, gp->id, gp->name, st, st == G_WAITING ? gp->waitreason : NULL,
                     overran(gp), gp->fn);
    }
    weft__tsan_racy_reads_end();
}

void weft_dump(int fd)
{
    weft__lock(&sched.startlock);
    if (!atomic_load_explicit(&sched.running, ACQ))
        dprintf(fd, "weft: the runtime is not running\n");
    else
        weft__dump_locked(fd);
    weft__unlock(&sched.startlock);
}
