/*
 * sched/start.c -- the runtime's life cycle: weft_start, weft_run, weft_stop and the
 * teardown, the default number of Ps (affinity and cgroup quota), the signals the
 * runtime takes over, and what a fork child does with a runtime it cannot keep.
 *
 * weft_start makes nprocs Ps (each with an allocator cache), puts them all on the idle
 * list and starts sysmon; no M exists until the first spawn wakes one (proc.c
 * startm). Stop: `stopping` makes every M leave its loop at its next scheduling
 * point; idle Ms are woken; all are joined, then every G, stack, timer heap and P is
 * released. A G that never reaches a scheduling point (a loop with no yield, a
 * blocking call that never returns) holds its M, and weft_stop/weft_run wait for it;
 * a wait (for live Gs in weft_stop, for an M in the join) that lasts STOP_NOTICE_NS
 * prints once what it waits for, with the dump, and goes on waiting.
 *
 * Invariants: sched.startlock serialises start, teardown, the dump and the stats:
 * sched.allp and the Ps live from the end of weft_start (running = 1, release) to
 * the teardown's running = 0, and nobody holding startlock sees them freed.
 *
 * Callers: the public calls. Calls down: proc.c, g.c, dump.c, sysmon.c, timer.c,
 * stack.c, runq.c, mem/. The top of the folder: nothing calls up into it.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "sched/sched.h"
#include "sched/san.h"

#ifdef WEFT_VALGRIND
int weft__on_valgrind;
#endif

/* poller.h: set by io/ at load when it is linked; the running runtime's poller */
const struct weft_poller *(*weft__poller_open)(int nprocs, int which);
const struct weft_poller *weft__poller;
_Atomic int64_t weft__poll_last;

static int read_cpu_quota(const char *path)
{
    char buf[64];
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return 0;
    int n = 0;
    if (fgets(buf, sizeof buf, f) != NULL) {
        long long quota, period;
        if (sscanf(buf, "%lld %lld", &quota, &period) == 2 && quota > 0 && period > 0)
            n = (int)((quota + period - 1) / period);
    }
    fclose(f);
    return n;
}

/* The CPUs this process may use: its affinity mask, capped by the cgroup v2 CPU quota
 * of its cgroup and every ancestor (Go 1.25 does the same). */
static int default_nprocs(void)
{
    cpu_set_t set;
    int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set)
                                                        : (int)sysconf(_SC_NPROCESSORS_ONLN);
    char line[512], path[640];
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f != NULL) {
        while (fgets(line, sizeof line, f) != NULL) {
            if (strncmp(line, "0::", 3) != 0)
                continue;
            char *cg = line + 3;
            cg[strcspn(cg, "\n")] = 0;
            for (;;) {
                snprintf(path, sizeof path, "/sys/fs/cgroup%s/cpu.max", cg);
                int q = read_cpu_quota(path);
                if (q > 0 && q < n)
                    n = q;
                char *slash = strrchr(cg, '/');
                if (slash == NULL || slash == cg)
                    break;
                *slash = 0;
            }
        }
        fclose(f);
    }
    int q = read_cpu_quota("/sys/fs/cgroup/cpu.max");
    if (q > 0 && q < n)
        n = q;
    return n < 1 ? 1 : n;
}

static void on_sigquit(int sig)
{
    (void)sig;
    atomic_store_explicit(&sched.sigquit, 1, RLX);
    weft__sysmon_wake();
}

static struct sigaction old_quit;

/* ---- fork ---------------------------------------------------------------------------
 * The child of a fork() has one thread, the caller's copy; the Ms and sysmon are gone,
 * and any lock one of them held (sched.lock, gflock, allg_lock, startlock,
 * stack_lock, a timerlock) would stay held for good. So the child forgets the runtime
 * (fork_child, a pthread_atfork child handler): every lock reinitialised, every list
 * of the old runtime dropped (its memory stays mapped and unused, as a vanished
 * thread's stack does), sched back to "not running": weft_spawn says -ESRCH and
 * weft_start starts a fresh runtime. What each M, P or G was doing at the fork is
 * unknown, so nothing of theirs is walked or freed -- except what the calling thread
 * itself owned, which it was not in the middle of changing: its P's allocator cache
 * (flushed back) and stack cache (to the new, empty pool).
 * The calling thread becomes a plain thread: current M NULL (a caller on a green
 * thread runs on in that G's stack, with the G's deadline as its own), its allocator
 * cache its own thread cache (or the empty one), and its signal mask the one of the
 * thread that started the runtime (an M blocks nearly every signal).
 * Registered at the first weft_start, so after the allocator's handlers (mem/mcache.c,
 * a constructor): child handlers run in registration order, the allocator's locks
 * are usable again by the time this one flushes a cache. Not handled: weft objects
 * (channels, mutexes ...) that other threads were using at the fork, as with pthread
 * mutexes; the child must not use them. */
static sigset_t start_sigmask;       /* written by weft_start under startlock */

static void fork_child(void)
{
    struct m *mp = weft__current_m();
    bool running = atomic_load_explicit(&sched.running, RLX);
    weft__lock_reinit(&sched.startlock);
    weft__lock_reinit(&sched.lock);
    weft__g_fork_child();                /* allg_lock, gflock; the G lists dropped */
    struct p *own = NULL;
    if (mp != NULL) {
        struct g *gp = mp->curg != NULL && !mp->curg->system ? mp->curg : NULL;
        own = weft__sched_curp(mp);      /* not in a blocking call: the P is ours */
        if (gp != NULL)
            weft__deadline_set_plain(gp->deadline);
        weft__current_set_m(NULL);
        weft__mcache_use(NULL);
        pthread_sigmask(SIG_SETMASK, &start_sigmask, NULL);
    }
    if (!running)
        return;
    weft__stack_fork_child();
    if (own != NULL) {
        weft__mcache_destroy(own->mcache);
        weft__stack_flush(own);
    }
    sigaction(SIGQUIT, &old_quit, NULL);
    if (weft__poller != NULL) {
        weft__poller->fork_child();     /* the rings stay the parent's */
        weft__poller = NULL;
    }
    weft__sysmon_fork_child();
    sched.allp = NULL;
    sched.nprocs = 0;
    sched.globq[GQ_RAN] = (struct gring){ 0 };
    sched.globq[GQ_NEW] = (struct gring){ 0 };
    sched.pidle = NULL;
    sched.midle = NULL;
    sched.nmidle = 0;
    sched.allm = NULL;
    sched.mcount = 0;
    atomic_store_explicit(&sched.runqsize, 0, RLX);
    atomic_store_explicit(&sched.npidle, 0, RLX);
    atomic_store_explicit(&sched.nmspinning, 0, RLX);
    atomic_store_explicit(&sched.nspawned_plain, 0, RLX);
    atomic_store_explicit(&sched.sigquit, 0, RLX);
    atomic_store_explicit(&sched.timer_m, NULL, RLX);
    atomic_store_explicit(&sched.timer_sleep_until, INT64_MAX, RLX);
    atomic_store_explicit(&sched.run_mode, 0, RLX);
    atomic_store_explicit(&sched.nsyscall, 0, RLX);
    atomic_store_explicit(&sched.stopping, 0, RLX);
    atomic_store_explicit(&weft__mem_stack_inuse, 0, RLX);
    /* relaxed: the child has one thread; the next weft_start publishes with release */
    atomic_store_explicit(&sched.running, 0, RLX);
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, fork_child);
}

static void teardown(const char *who);

int weft_start(const weft_config *cfg)
{
    if (cfg != NULL && cfg->stack_size > WEFT_STACK_MAX)
        return -EINVAL;
    weft__lock(&sched.startlock);
    if (atomic_load_explicit(&sched.running, RLX)) {
        weft__unlock(&sched.startlock);
        return -EBUSY;
    }
    weft__mem_init();
    weft__throw_set_context(weft__current_describe);
    static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
    pthread_once(&atfork_once, register_atfork);
    pthread_sigmask(SIG_SETMASK, NULL, &start_sigmask);
#ifdef WEFT_VALGRIND
    weft__on_valgrind = RUNNING_ON_VALGRIND != 0;
#endif
    int n = cfg != NULL ? cfg->nprocs : 0;
    if (n <= 0) {
        const char *env = getenv("WEFT_MAXPROCS");
        n = env != NULL ? atoi(env) : 0;
    }
    if (n <= 0)
        n = default_nprocs();
    if (n > 1024)
        n = 1024;
    size_t ss = weft__stack_round(cfg != NULL && cfg->stack_size != 0 ? cfg->stack_size : 256 * 1024);
    sched.nprocs = n;
    sched.stack_size = ss;
    sched.allp = weft_calloc((size_t)n, sizeof *sched.allp);
    if (sched.allp == NULL) {
        weft__unlock(&sched.startlock);
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        struct p *pp = weft_aligned_alloc(64, sizeof *pp);
        struct mcache *c = weft__mcache_create(MCACHE_P);
        if (pp == NULL || c == NULL) {
            weft__printf("weft_start: out of memory");
            abort();
        }
        memset(pp, 0, sizeof *pp);
        pp->id = i;
        atomic_store_explicit(&pp->timer0, INT64_MAX, RLX);
        pp->mcache = c;
        sched.allp[i] = pp;
    }
    weft__lock(&sched.lock);
    weft__globrunq_reserve();       /* the ring's first slots: none mapped under load */
    weft__unlock(&sched.lock);
    for (int i = n - 1; i >= 0; i--)
        weft__sched_pidle_put(sched.allp[i]);
    weft__stack_signals_install();
    /* SIGPIPE: a write to a reset peer is an error return, not the end of the process
     * (Go does the same), unless the program installed a handler of its own */
    struct sigaction cur;
    if (sigaction(SIGPIPE, NULL, &cur) == 0 && cur.sa_handler == SIG_DFL &&
        !(cur.sa_flags & SA_SIGINFO))
        signal(SIGPIPE, SIG_IGN);
    /* the I/O poller, if io/ is linked (poller.h): before any M exists */
    weft__poller = weft__poller_open != NULL
                   ? weft__poller_open(n, cfg != NULL ? cfg->io_backend : WEFT_IO_AUTO) : NULL;
    atomic_store_explicit(&weft__poll_last, weft__time_now(), RLX);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigquit;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGQUIT, &sa, &old_quit);
    atomic_store_explicit(&sched.stopping, 0, RLX);
    atomic_store_explicit(&sched.timer_m, NULL, RLX);
    atomic_store_explicit(&sched.timer_sleep_until, INT64_MAX, RLX);
    atomic_store_explicit(&sched.running, 1, REL);
    int err = weft__sysmon_start();
    weft__unlock(&sched.startlock);
    if (err != 0) {
        teardown("weft_start");
        return err;
    }
    return 0;
}

int weft_nprocs(void)
{
    return atomic_load_explicit(&sched.running, ACQ) ? sched.nprocs : 0;
}

/* A stop that waits this long for green threads (weft_stop) or for a worker (a green
 * thread that does not reach a scheduling point) says once what it waits for, then
 * waits on: a silent hang was all a user got. */
#define STOP_NOTICE_NS ((int64_t)5 * 1000000000)

/* Print the notice and the dump's lines (startlock held: the lists stay). */
static void stop_notice(const char *who, const char *what)
{
    weft__printf("%s: still waiting after %lld s for %s:", who, (long long)(STOP_NOTICE_NS / 1000000000),
                 what);
    if (atomic_load_explicit(&sched.running, ACQ))
        weft__dump_locked(2);
}

/* Join mp's thread; after STOP_NOTICE_NS since t0 say once (*told) what we wait for. */
static void join_m(struct m *mp, const char *who, int64_t t0, bool *told)
{
    if (!*told) {
        int64_t at = weft__time_after(t0, STOP_NOTICE_NS);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);       /* pthread_timedjoin_np: CLOCK_REALTIME */
        int64_t left = at - weft__time_now();
        if (left < 0)
            left = 0;
        ts.tv_sec += (time_t)(left / 1000000000);
        ts.tv_nsec += (long)(left % 1000000000);
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        if (pthread_timedjoin_np(mp->thread, NULL, &ts) == 0)
            return;
        *told = true;
        stop_notice(who, "a worker thread whose green thread does not reach a scheduling point "
                         "(a loop without weft_yield, a call that blocks without weft_blocking)");
    }
    pthread_join(mp->thread, NULL);
}

/* Stop every M and release every G. Green threads still alive are dropped. who: the
 * public call, for the notice (join_m). */
static void teardown(const char *who)
{
    int64_t t0 = weft__time_now();
    bool told = false;
    weft__lock(&sched.startlock);
    atomic_store_explicit(&sched.stopping, 1, SC);
    weft__lock(&sched.lock);
    for (struct m *mp = sched.midle; mp != NULL; mp = mp->link) {
        mp->nextp = NULL;
        atomic_store_explicit(&mp->park, 1, SC);
        weft__m_unpark(mp);
    }
    sched.midle = NULL;
    sched.nmidle = 0;
    weft__unlock(&sched.lock);
    /* Ms that are running finish at their next scheduling point */
    for (;;) {
        weft__lock(&sched.lock);
        struct m *mp = sched.allm;
        while (mp != NULL && mp->exiting)
            mp = mp->alllink;
        if (mp != NULL)
            mp->exiting = true;
        weft__unlock(&sched.lock);
        if (mp == NULL)
            break;
        /* newm publishes an M on allm before pthread_create returns: reading its thread
         * id before then skipped the join (ThreadSanitizer: a leaked thread; the M then
         * ran on a freed struct m). Acquire: pairs with newm's release. */
        int started;
        while ((started = atomic_load_explicit(&mp->started, ACQ)) == 0)
            sched_yield();
        if (started > 0)
            join_m(mp, who, t0, &told);
    }
    weft__sysmon_stop();
    /* every M is joined: nobody polls; closing the rings cancels what is in flight */
    if (weft__poller != NULL) {
        weft__poller->stop();
        weft__poller = NULL;
    }
    weft__lock(&sched.lock);
    struct m *mp = sched.allm;
    sched.allm = NULL;
    sched.mcount = 0;
    weft__globrunq_free();
    sched.pidle = NULL;
    atomic_store_explicit(&sched.npidle, 0, RLX);
    atomic_store_explicit(&sched.nmspinning, 0, RLX);
    weft__unlock(&sched.lock);
    while (mp != NULL) {
        struct m *next = mp->alllink;
        weft_free(mp);
        mp = next;
    }
    weft__g_free_all();
    atomic_store_explicit(&sched.nspawned_plain, 0, RLX);
    for (int i = 0; i < sched.nprocs; i++) {
        weft__timers_free(sched.allp[i]);
        weft__stack_flush(sched.allp[i]);
        weft__mcache_destroy(sched.allp[i]->mcache);
        weft_free(sched.allp[i]);
    }
    weft_free(sched.allp);
    sched.allp = NULL;
    sigaction(SIGQUIT, &old_quit, NULL);
    weft__stack_signals_restore();
    atomic_store_explicit(&sched.running, 0, REL);
    atomic_store_explicit(&sched.run_mode, 0, RLX);
    sched.nprocs = 0;
    atomic_store_explicit(&sched.stopping, 0, RLX);
    weft__unlock(&sched.startlock);
}

int weft_stop(void)
{
    if (!atomic_load_explicit(&sched.running, ACQ))
        return -ESRCH;
    if (weft__current_g() != NULL)
        return -EDEADLK;     /* a green thread cannot wait for itself to finish */
    int64_t t0 = weft__time_now();
    bool told = false;
    uint64_t n;
    while ((n = weft__g_live_count()) > 0) {
        if (!told && weft__time_now() - t0 >= STOP_NOTICE_NS) {
            told = true;
            char what[64];
            snprintf(what, sizeof what, "%llu green thread%s to finish", (unsigned long long)n,
                     n == 1 ? "" : "s");
            weft__lock(&sched.startlock);
            stop_notice("weft_stop", what);
            weft__unlock(&sched.startlock);
        }
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    teardown("weft_stop");
    return 0;
}

struct run_main {
    int (*fn)(void *);
    void *arg;
    int ret;
    _Atomic uint32_t done;
};

static void run_main_entry(void *arg)
{
    struct run_main *rm = arg;
    rm->ret = rm->fn(rm->arg);
    /* release: ret is visible to weft_run */
    atomic_store_explicit(&rm->done, 1, REL);
    weft__futex_wake(&rm->done, 1);
}

int weft_run(int (*main_fn)(void *), void *arg, const weft_config *cfg)
{
    if (main_fn == NULL)
        return -EINVAL;
    if (weft__current_g() != NULL)
        return -EBUSY;
    int err = weft_start(cfg);
    if (err != 0)
        return err;
    atomic_store_explicit(&sched.run_mode, 1, RLX);
    struct run_main rm = { .fn = main_fn, .arg = arg };
    weft_spawn_opts o = { .name = "main" };
    err = weft_spawn_ex(run_main_entry, &rm, &o, NULL);
    if (err != 0) {
        teardown("weft_run");
        return err;
    }
    while (atomic_load_explicit(&rm.done, ACQ) == 0)
        weft__futex_wait(&rm.done, 0);
    teardown("weft_run");
    return rm.ret;
}
