/*
 * sched/runq.c -- per-P run queue (a 256-slot ring plus runnext) and the global
 * run queue. After Go's runqput / runqget / runqgrab / runqsteal.
 *
 * Invariants: only the owner P writes runqtail (store-release, publishing the slot it
 * filled); the owner and stealers consume by CAS on runqhead (release, so that the
 * owner, which reads runqhead with acquire before refilling a slot, never overwrites a
 * slot a stealer is still reading); tail - head <= RUNQ_SIZE. Slots are relaxed
 * atomics: a stealer may read a slot the owner is rewriting, and then its CAS on
 * runqhead fails and it retries. With one P nobody steals: the owner then moves
 * runqhead with a plain store-release.
 * runnext: the owner puts and takes it; with more than one P a take is a CAS and a put
 * into a full runnext an exchange (acquire/acq_rel, so a G handed to or taken by a
 * stealer is fully visible; a put into an empty one is a release store: only the owner
 * ever makes it non-NULL), because a stealer may take it by CAS too -- but only
 * from a P that has not scheduled for a while (proc.c stealwork: a P stuck in a
 * blocking call, or a running P whose schedtick did not move while the stealer
 * waited ~3 us: its G computes without a scheduling point, so runnext would wait for
 * it). That keeps a ping-pong pair on one P and still runs a G readied or spawned
 * behind a long computation on an idle P within microseconds. With one P nobody
 * steals: plain loads and stores. Ownership moves with the P, under the
 * release/acquire of acquirep/startm/pidleget and of the P_SYSCALL CASes.
 * weft__runq_put says whether the ring grew: a G put into an empty runnext wakes no
 * spinner from weft__sched_ready (a hand-off: the waker is about to block, usually; if it
 * computes on instead, sysmon notices the stale runnext and wakes one, sysmon.c).
 * The global queue is two growable rings of G pointers under sched.lock, Gs that have
 * run (GQ_RAN) served before Gs never run (GQ_NEW); runqsize is their sum (below).
 *
 * Callers: weft__runq_put/_get only the M holding pp; weft__runq_steal and
 * weft__runq_steal_next any M holding a P (not pp); weft__globrunq_* with sched.lock
 * held. Calls nothing above it: mem/ only (the global rings are mmap'd).
 *
 * Rejected: the global queue as a list through the Gs (Go's schedlink): taking a
 * batch chased one G after another, each a miss on a line another core wrote -- 18%
 * of the spawn benchmark's time. One FIFO for new and woken Gs: a G woken behind a
 * spawn flood waited for every spawned G's first run (each a fresh stack, ~10 us of
 * page faults on this VM). Growing a ring with fresh pages under sched.lock: a fault
 * there cost 12-45 us on this VM (the rings are mapped populated).
 */
#include <sys/mman.h>
#include "sched/sched.h"

/* Move half of the full local ring and gp to the global queue. 0 if it raced. */
static bool runqputslow(struct p *pp, struct g *gp, uint32_t h, uint32_t t)
{
    struct g *batch[RUNQ_SIZE / 2 + 1];
    uint32_t n = (t - h) / 2;
    for (uint32_t i = 0; i < n; i++)
        batch[i] = atomic_load_explicit(&pp->runq[(h + i) % RUNQ_SIZE], RLX);
    /* release: our reads of the slots happen before the owner (us) or anyone reuses them */
    if (!atomic_compare_exchange_strong_explicit(&pp->runqhead, &h, h + n, REL, RLX))
        return false;
    batch[n] = gp;
    weft__lock(&sched.lock);
    weft__globrunq_put_batch(batch, n + 1);
    weft__unlock(&sched.lock);
    return true;
}

/* The ring was full: half of it goes to the global queue (out of line, so that the
 * fast path of weft__runq_put needs no stack frame). */
static WEFT_NOINLINE void runqput_full(struct p *pp, struct g *gp)
{
    for (;;) {
        uint32_t h = atomic_load_explicit(&pp->runqhead, ACQ);
        uint32_t t = atomic_load_explicit(&pp->runqtail, RLX);
        if (t - h < RUNQ_SIZE) {
            atomic_store_explicit(&pp->runq[t % RUNQ_SIZE], gp, RLX);
            atomic_store_explicit(&pp->runqtail, t + 1, REL);
            return;
        }
        if (runqputslow(pp, gp, h, t))
            return;
    }
}

bool weft__runq_put(struct p *pp, struct g *gp, bool next)
{
    if (next) {
        /* Only the owner makes runnext non-NULL, so an empty one stays empty until our
         * store: a plain store fills it (release: publishes gp to a stealer). A full
         * one may be taken by a stealer meanwhile: exchange (acq_rel: the G we kick
         * out is ours again). With one P nobody steals: plain loads and stores. */
        struct g *old = atomic_load_explicit(&pp->runnext, RLX);
        if (old == NULL || sched.nprocs == 1)
            atomic_store_explicit(&pp->runnext, gp, REL);
        else
            old = atomic_exchange_explicit(&pp->runnext, gp, memory_order_acq_rel);
        if (old == NULL)
            return false;
        gp = old;
    }
    /* acquire: pairs with consumers' release CAS (they are done with the slots) */
    uint32_t h = atomic_load_explicit(&pp->runqhead, ACQ);
    uint32_t t = atomic_load_explicit(&pp->runqtail, RLX);
    if (WEFT_LIKELY(t - h < RUNQ_SIZE)) {
        atomic_store_explicit(&pp->runq[t % RUNQ_SIZE], gp, RLX);
        /* release: publishes the slot (and the G) to consumers */
        atomic_store_explicit(&pp->runqtail, t + 1, REL);
        return true;
    }
    runqput_full(pp, gp);
    return true;
}

/* The Gs in ring slots h and h + 1 run soon (after the one being returned): start
 * loading what their switches in will touch first. With many green threads both are
 * cold: the G's struct (its saved stack pointer) and its saved frame, a miss each
 * (~0.2-0.5 us on this VM with 100 k Gs), and the switch waited for one after the
 * other. Two stages, one G apart: slot h + 1's struct now; slot h's frame now, through
 * a struct that the previous call prefetched (as its h + 1). Every return of a G does
 * this, runnext's too. The slot reads are racy on purpose (a stealer may take those
 * Gs meanwhile: then we prefetched for nothing); a G's struct is never freed while the
 * runtime runs, a G never run has no frame yet (sp NULL), and a prefetch never faults. */
static inline void prefetch_next(struct p *pp, uint32_t h, uint32_t t)
{
    if (h != t) {
        struct g *gp = atomic_load_explicit(&pp->runq[h % RUNQ_SIZE], RLX);
        void *sp = __atomic_load_n(&gp->ctx.sp, __ATOMIC_RELAXED);
        if (sp != NULL)
            __builtin_prefetch(sp, 0);
        if (h + 1 != t)
            __builtin_prefetch(atomic_load_explicit(&pp->runq[(h + 1) % RUNQ_SIZE], RLX), 1);
    }
}

static inline void prefetch_ring(struct p *pp)
{
    prefetch_next(pp, atomic_load_explicit(&pp->runqhead, RLX),
                  atomic_load_explicit(&pp->runqtail, RLX));
}

struct g *weft__runq_get(struct p *pp)
{
    struct g *next = atomic_load_explicit(&pp->runnext, RLX);
    if (next != NULL) {
        if (sched.nprocs == 1) {
            atomic_store_explicit(&pp->runnext, NULL, RLX);    /* ours alone */
            prefetch_ring(pp);
            return next;
        }
        /* acquire: pairs with a put's exchange; a stealer's CAS may win instead */
        if (atomic_compare_exchange_strong_explicit(&pp->runnext, &next, NULL, ACQ, RLX)) {
            prefetch_ring(pp);
            return next;
        }
    }
    if (sched.nprocs == 1) {
        /* one P: no stealer, so runqhead is ours alone too and needs no RMW (a yield
         * saves a locked CAS); readers of the queue (sysmon, runqempty) only load.
         * release: like the CAS below, the slot is done with before the head moves
         * past it (runqputslow reads slots after an acquire load of the head) */
        uint32_t h = atomic_load_explicit(&pp->runqhead, RLX);
        uint32_t t = atomic_load_explicit(&pp->runqtail, RLX);
        if (h == t)
            return NULL;
        struct g *gp = atomic_load_explicit(&pp->runq[h % RUNQ_SIZE], RLX);
        atomic_store_explicit(&pp->runqhead, h + 1, REL);
        prefetch_next(pp, h + 1, t);
        return gp;
    }
    for (;;) {
        uint32_t h = atomic_load_explicit(&pp->runqhead, ACQ);
        uint32_t t = atomic_load_explicit(&pp->runqtail, RLX);
        if (t == h)
            return NULL;
        struct g *gp = atomic_load_explicit(&pp->runq[h % RUNQ_SIZE], RLX);
        if (atomic_compare_exchange_weak_explicit(&pp->runqhead, &h, h + 1, REL, RLX)) {
            prefetch_next(pp, h + 1, t);
            return gp;
        }
    }
}

/* Nothing in pp's ring (runnext aside): what an M about to park re-checks. */
bool weft__runq_ring_empty(struct p *pp)
{
    uint32_t h = atomic_load_explicit(&pp->runqhead, ACQ);
    return h == atomic_load_explicit(&pp->runqtail, ACQ);
}

bool weft__runq_empty(struct p *pp)
{
    for (;;) {
        uint32_t h = atomic_load_explicit(&pp->runqhead, ACQ);
        uint32_t t = atomic_load_explicit(&pp->runqtail, ACQ);
        struct g *next = atomic_load_explicit(&pp->runnext, ACQ);
        if (t == atomic_load_explicit(&pp->runqtail, ACQ))
            return h == t && next == NULL;
    }
}

uint32_t weft__runq_len(struct p *pp)
{
    uint32_t h = atomic_load_explicit(&pp->runqhead, ACQ);
    uint32_t t = atomic_load_explicit(&pp->runqtail, ACQ);
    uint32_t n = t - h;
    if (n > RUNQ_SIZE)
        n = 0;
    return n + (atomic_load_explicit(&pp->runnext, RLX) != NULL);
}

/* Take half of victim's ring into batch[bh ...] (batch is pp's ring). */
static uint32_t runqgrab(struct p *victim, struct g *_Atomic *batch, uint32_t bh)
{
    for (;;) {
        uint32_t h = atomic_load_explicit(&victim->runqhead, ACQ);
        /* acquire: pairs with the owner's release store of runqtail */
        uint32_t t = atomic_load_explicit(&victim->runqtail, ACQ);
        uint32_t n = t - h;
        n = n - n / 2;
        if (n == 0)
            return 0;              /* runnext: weft__runq_steal_next, by stealwork's rule */
        if (n > RUNQ_SIZE / 2)
            continue;              /* read h and t at different times: retry */
        for (uint32_t i = 0; i < n; i++) {
            struct g *gp = atomic_load_explicit(&victim->runq[(h + i) % RUNQ_SIZE], RLX);
            atomic_store_explicit(&batch[(bh + i) % RUNQ_SIZE], gp, RLX);
        }
        if (atomic_compare_exchange_strong_explicit(&victim->runqhead, &h, h + n, REL, RLX))
            return n;
    }
}

struct g *weft__runq_steal(struct p *pp, struct p *victim)
{
    uint32_t t = atomic_load_explicit(&pp->runqtail, RLX);
    uint32_t n = runqgrab(victim, pp->runq, t);
    if (n == 0)
        return NULL;
    n--;
    struct g *gp = atomic_load_explicit(&pp->runq[(t + n) % RUNQ_SIZE], RLX);
    if (n == 0)
        return gp;
    /* release: publishes the stolen slots to our own consumers */
    atomic_store_explicit(&pp->runqtail, t + n, REL);
    return gp;
}

/* Take victim's runnext (nprocs > 1; the caller decides whether it may, see the
 * header). acquire: pairs with the owner's exchange that put it there. */
struct g *weft__runq_steal_next(struct p *victim)
{
    struct g *next = atomic_load_explicit(&victim->runnext, RLX);
    if (next != NULL &&
        atomic_compare_exchange_strong_explicit(&victim->runnext, &next, NULL, ACQ, RLX))
        return next;
    return NULL;
}

/* ---- global run queue (sched.lock held) ----------------------------------
 * Two rings of G pointers, grown by doubling (never shrunk while the runtime lives),
 * not lists through the Gs: taking a batch then reads pointers eight to a cache line
 * instead of chasing schedlink from G to G, each a miss on a line another core wrote
 * (18% of the spawn benchmark's time went to that walk).
 * GQ_RAN holds Gs that have run (woken, yielded, preempted), GQ_NEW Gs never run, and
 * a batch comes from GQ_RAN while it has any. Why: a G's first run costs a stack, a
 * fresh one (a page fault, ~10 us on a VM) when no G has exited lately, and a spawner
 * outruns the Ps by far. In one FIFO the Gs woken meanwhile (which overflow a full
 * ring into the global queue) waited behind every G spawned before them: 100 k
 * sleepers all started before any slept twice, 70 k lived at once, each on its own
 * fresh stack. Run first, a woken G finishes sooner and its stack serves a new G.
 * No starvation: every other fairness take (next_local's, every 61st tick) prefers
 * GQ_NEW, so new Gs start at a bounded rate whatever wakes.
 * A G's ring is told by its saved stack pointer (NULL until its first run), which
 * lies on the line its queuer has just written (status). */
#define GLOBRUNQ_MIN 1024

static void gring_grow(struct gring *q, uint32_t need)
{
    uint32_t ncap = q->cap ? q->cap : GLOBRUNQ_MIN;
    /* (2^31 slots at most: the doubling must not wrap to 0 and loop forever) */
    if (need > (1u << 31) - q->size)
        weft__throwf("the global run queue is full (%u green threads)", q->size);
    while (ncap < q->size + need)
        ncap *= 2;
    /* populated: no page fault later under sched.lock, a spinlock (a fault there
     * cost 12-45 us on this VM and widened every race window around the lock) */
    void *p = mmap(NULL, ncap * sizeof(struct g *), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED)
        weft__throwf("out of memory for the global run queue (%u green threads)", q->size);
    struct g **buf = p;
    for (uint32_t i = 0; i < q->size; i++)
        buf[i] = q->buf[(q->head + i) & (q->cap - 1)];
    if (q->buf != NULL)
        munmap(q->buf, q->cap * sizeof(struct g *));
    q->buf = buf;
    q->cap = ncap;
    q->head = 0;
}

/* The rings' first slots (weft_start: the common case maps nothing under the lock). */
void weft__globrunq_reserve(void)
{
    for (int k = 0; k < 2; k++)
        if (sched.globq[k].buf == NULL)
            gring_grow(&sched.globq[k], 0);
}

/* Teardown: the rings go (no G is left in them). */
void weft__globrunq_free(void)
{
    for (int k = 0; k < 2; k++) {
        struct gring *q = &sched.globq[k];
        if (q->buf != NULL)
            munmap(q->buf, q->cap * sizeof(struct g *));
        *q = (struct gring){ 0 };
    }
    atomic_store_explicit(&sched.runqsize, 0, RLX);
}

void weft__globrunq_put(struct g *gp)
{
    weft__globrunq_put_batch(&gp, 1);
}

void weft__globrunq_put_batch(struct g *const *gs, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        struct gring *q = &sched.globq[gs[i]->ctx.sp == NULL ? GQ_NEW : GQ_RAN];
        if (WEFT_UNLIKELY(q->size == q->cap))
            gring_grow(q, n - i);
        q->buf[(q->head + q->size++) & (q->cap - 1)] = gs[i];
    }
    atomic_store_explicit(&sched.runqsize, atomic_load_explicit(&sched.runqsize, RLX) + n, RLX);
}

/* One G to run now; up to max-1 more (0: no limit) go to pp's ring. From GQ_RAN while
 * it has any, unless new_first (and GQ_NEW has any). */
struct g *weft__globrunq_get(struct p *pp, uint32_t max, bool new_first)
{
    struct gring *q = &sched.globq[GQ_RAN], *qn = &sched.globq[GQ_NEW];
    if (q->size == 0 || (new_first && qn->size > 0))
        q = qn;
    uint32_t size = q->size;
    if (size == 0)
        return NULL;
    uint32_t n = size / (uint32_t)sched.nprocs + 1;
    if (n > size)
        n = size;
    if (max > 0 && n > max)
        n = max;
    if (n > RUNQ_SIZE / 2)
        n = RUNQ_SIZE / 2;
    /* never more than pp's ring has room for: a full ring would spill into the global
     * queue, whose lock we hold (weft_yield called this while stopping, with a full
     * ring, and its M deadlocked on sched.lock). A stale head only shrinks the room. */
    uint32_t used = atomic_load_explicit(&pp->runqtail, RLX) -
                    atomic_load_explicit(&pp->runqhead, ACQ);
    uint32_t room = used < RUNQ_SIZE ? RUNQ_SIZE - used : 0;
    if (n > room + 1)
        n = room + 1;
    q->size -= n;
    atomic_store_explicit(&sched.runqsize, atomic_load_explicit(&sched.runqsize, RLX) - n, RLX);
    uint32_t mask = q->cap - 1;
    struct g *gp = q->buf[q->head];
    for (uint32_t i = 1; i < n; i++)
        weft__runq_put(pp, q->buf[(q->head + i) & mask], false);
    q->head = (q->head + n) & mask;
    return gp;
}
