/*
 * sched/g.c -- green threads as objects: struct g and spawn records, their free
 * lists, ids and stacks, and the list of every G (our proc.go's malg/gfput/gfget).
 *
 * A spawned G is first a 64-byte spawn record (sched.h struct gspawn); at its first
 * run weft__g_start turns it into a struct g with a stack, and the record goes back.
 * A dead G gives its stack back (weft__g_free) and waits, without one, on its P's
 * free list for the next first run. Records come in 4 KiB chunks that live until
 * teardown (the dump walks them).
 *
 * Invariants:
 *  - Every struct g ever made is on allg (linked at the head under allg_lock, never
 *    unlinked while the runtime runs): the dump and teardown walk it.
 *  - A free G or record is on exactly one free list: its P's (struct flist, owner
 *    only, fewer than GFREE_MAX) or a batch of the global stack (under sched.gflock).
 *  - A G's stack is attached (stack.lo != 0) exactly while it has run and not exited;
 *    its bytes are counted in weft__mem_stack_inuse.
 *  - Ids: unique for the runtime's life, handed out 64 at a time per P.
 *
 * Callers: proc.c (spawn, first run, exit), start.c (teardown, fork), dump.c (the
 * walks). Calls down only: stack.c, san.h, mem/.
 *
 * Rejected: walking a free list that another core freed, one G at a time: the spawn
 * benchmark spent most of weft_spawn in those cache misses (spawner and exits on
 * different Ps); batches move with one touch (flist_put).
 */
#include <string.h>
#include "sched/sched.h"
#include "sched/san.h"

static weft_lock allg_lock = WEFT_LOCK_INIT;
static struct g *allg;

static struct g *newg(void)
{
    struct g *gp = weft_aligned_alloc(64, sizeof *gp);   /* lines as struct g lays out */
    if (gp == NULL)
        return NULL;
    memset(gp, 0, sizeof *gp);
    weft__lock(&allg_lock);
    gp->alllink = allg;
    allg = gp;
    weft__unlock(&allg_lock);
    return gp;
}

/* Free lists (sched.h struct flist) of dead Gs and of spawn records: a list per P
 * (fewer than GFREE_MAX) and a global stack of batches (under gflock): a batch's first
 * object links the next batch and counts its own list. Moving a batch either way
 * touches one object, not each: walking a list that another core freed is one cache
 * miss after another, and the spawn benchmark spent most of weft_spawn there (spawner
 * and exits on different Ps). A P walks only its own, recently freed ones (the split
 * below). */
static void flist_put(struct flist *local, struct fnode **global, struct fnode *x)
{
    x->next = local->head;
    local->head = x;
    if (++local->n < GFREE_MAX)
        return;
    /* the GFREE_MAX / 2 most recently freed stay; the older half goes as one batch */
    struct fnode *last = local->head;
    for (int i = 1; i < GFREE_MAX / 2; i++)
        last = last->next;
    struct fnode *batch = last->next;
    last->next = NULL;
    batch->n = local->n - GFREE_MAX / 2;
    local->n = GFREE_MAX / 2;
    weft__lock(&sched.gflock);
    batch->batch = *global;
    __atomic_store_n(global, batch, __ATOMIC_RELAXED);
    weft__unlock(&sched.gflock);
}

/* One off the P's list (local), refilled with a global batch when empty; or, for a
 * plain thread (local NULL), one off the first global batch. NULL: none free. */
static struct fnode *flist_get(struct flist *local, struct fnode **global)
{
    struct fnode *x;
    /* a racy peek (a relaxed load; the list changes under gflock): at worst a new one */
    if (local != NULL && local->head == NULL &&
        __atomic_load_n(global, __ATOMIC_RELAXED) != NULL) {
        weft__lock(&sched.gflock);
        x = *global;
        if (x != NULL) {
            __atomic_store_n(global, x->batch, __ATOMIC_RELAXED);
            local->head = x;
            local->n = x->n;
        }
        weft__unlock(&sched.gflock);
    }
    if (local != NULL)
        return weft__flist_pop(local);
    if (__atomic_load_n(global, __ATOMIC_RELAXED) == NULL)
        return NULL;
    weft__lock(&sched.gflock);
    x = *global;
    if (x != NULL) {
        struct fnode *rest = x->next;
        if (rest != NULL) {
            rest->batch = x->batch;
            rest->n = x->n - 1;
        } else {
            rest = x->batch;
        }
        __atomic_store_n(global, rest, __ATOMIC_RELAXED);
    }
    weft__unlock(&sched.gflock);
    return x;
}

static struct gspawn *fnode_rec(struct fnode *x)
{
    return x != NULL ? (struct gspawn *)((char *)x - offsetof(struct gspawn, freenode)) : NULL;
}

static struct g *fnode_g(struct fnode *x)
{
    return x != NULL ? (struct g *)((char *)x - offsetof(struct g, freenode)) : NULL;
}

/* A chunk of records: line 0 links the chunks (teardown, dump), then RECS_PER_CHUNK
 * records. The first is returned, the rest become the free list local (the P's, empty
 * when this is called), or, for a plain thread (local NULL), a global batch. */
static struct gspawn *newrecs(struct flist *local)
{
    struct gspawn *c = weft_aligned_alloc(4096, 64 * (RECS_PER_CHUNK + 1));
    if (c == NULL)
        return NULL;
    memset(c, 0, 64 * (RECS_PER_CHUNK + 1));
    for (int i = 2; i < RECS_PER_CHUNK; i++)
        c[i].freenode.next = &c[i + 1].freenode;
    struct fnode *rest = &c[2].freenode;
    if (local != NULL) {
        local->head = rest;
        local->n = RECS_PER_CHUNK - 1;
    }
    weft__lock(&sched.gflock);
    *(void **)c = sched.recchunks;
    sched.recchunks = c;
    if (local == NULL) {
        rest->n = RECS_PER_CHUNK - 1;
        rest->batch = sched.recfree;
        __atomic_store_n(&sched.recfree, rest, __ATOMIC_RELAXED);
    }
    weft__unlock(&sched.gflock);
    return &c[1];
}

struct gspawn *weft__g_rec_alloc_slow(struct p *pp)
{
    struct flist *local = pp != NULL ? &pp->recfree : NULL;
    struct gspawn *r = fnode_rec(flist_get(local, &sched.recfree));
    return r != NULL ? r : newrecs(local);
}

uint64_t weft__g_newid_slow(struct p *pp)
{
    if (pp == NULL)
        return atomic_fetch_add_explicit(&sched.goidgen, 1, RLX) + 1;
    pp->goidcache = atomic_fetch_add_explicit(&sched.goidgen, 64, RLX) + 1;
    pp->goidcacheend = pp->goidcache + 64;
    return pp->goidcache++;
}

static void attach_stack(struct p *pp, struct g *gp, void (*entry)(void *))
{
    if (weft__stack_get(pp, gp->stacksize, &gp->stack) != 0)
        weft__throwf("out of memory for the %zu KiB stack of green thread %llu",
                     gp->stacksize / 1024, (unsigned long long)gp->id);
    weft__san_stack_reuse(gp->stack.lo, gp->stack.hi);
    weft__tsan_fiber_new(gp);
    gp->valgrind_id = weft__valgrind_stack_register(gp->stack.lo, gp->stack.hi);
    atomic_fetch_add_explicit(&weft__mem_stack_inuse, gp->stack.hi - gp->stack.lo, RLX);
    weft__ctx_init(&gp->ctx, (void *)gp->stack.hi, entry, gp);
}

static void release_stack(struct p *pp, struct g *gp)
{
    if (gp->stack.lo == 0)
        return;
    weft__stack_check(gp);
    weft__valgrind_stack_deregister(gp->valgrind_id);
    atomic_fetch_sub_explicit(&weft__mem_stack_inuse, gp->stack.hi - gp->stack.lo, RLX);
    weft__stack_put(pp, &gp->stack);
    __atomic_store_n(&gp->ctx.sp, NULL, __ATOMIC_RELAXED);  /* prefetchers peek at it */
}

struct g *weft__g_start(struct p *pp, struct gspawn *r, void (*entry)(void *))
{
    struct g *gp = fnode_g(flist_get(&pp->gfree, &sched.gfree));
    if (gp == NULL && (gp = newg()) == NULL)
        weft__throwf("out of memory for green thread %llu", (unsigned long long)r->id);
    gp->id = r->id;
    gp->fn = r->fn;
    gp->arg = r->arg;
    gp->name = r->name;
    gp->stacksize = r->stacksize;
    gp->waitreason = NULL;
    gp->asan_fake = NULL;
    gp->deadline = -1;
    /* The dump never misses a G starting: it reads the records first (acquire), then
     * the Gs; the G is runnable before its record is not (release). */
    atomic_store_explicit(&gp->status, G_RUNNABLE, RLX);
    atomic_store_explicit(&r->status, G_IDLE, REL);
    flist_put(&pp->recfree, &sched.recfree, &r->freenode);
    attach_stack(pp, gp, entry);
    return gp;
}

void weft__g_free(struct p *pp, struct g *gp)
{
    atomic_store_explicit(&gp->status, G_IDLE, RLX);
    release_stack(pp, gp);
    flist_put(&pp->gfree, &sched.gfree, &gp->freenode);
}

/* Green threads spawned and not yet exited, from the per-P counters (racy sums: a
 * G spawned on one P and exiting on another may be counted out before in). */
uint64_t weft__g_live_count(void)
{
    uint64_t spawned = atomic_load_explicit(&sched.nspawned_plain, RLX), exited = 0;
    for (int i = 0; i < sched.nprocs; i++) {
        spawned += atomic_load_explicit(&sched.allp[i]->nspawned, RLX);
        exited += atomic_load_explicit(&sched.allp[i]->nexited, RLX);
    }
    return spawned > exited ? spawned - exited : 0;
}

/* The heads of allg and of the record chunks, for the dump: both lists only grow at
 * the head (linked before the unlock) and are freed only by teardown. */
struct g *weft__g_all(void)
{
    weft__lock(&allg_lock);
    struct g *gs = allg;
    weft__unlock(&allg_lock);
    return gs;
}

struct gspawn *weft__g_rec_chunks(void)
{
    weft__lock(&sched.gflock);
    struct gspawn *chunks = sched.recchunks;
    weft__unlock(&sched.gflock);
    return chunks;
}

/* Teardown (every M joined): every G, stack and record chunk freed. */
void weft__g_free_all(void)
{
    weft__lock(&allg_lock);
    struct g *gp = allg;
    allg = NULL;
    weft__unlock(&allg_lock);
    while (gp != NULL) {
        struct g *next = gp->alllink;
        if (!gp->system)
            weft__tsan_fiber_free(gp);
        release_stack(NULL, gp);
        weft_free(gp);
        gp = next;
    }
    sched.gfree = NULL;
    for (void *c = sched.recchunks, *next; c != NULL; c = next) {
        next = *(void **)c;
        weft_free(c);
    }
    sched.recchunks = NULL;
    sched.recfree = NULL;
}

/* A fork child (start.c): the lists are dropped, not walked (their memory stays). */
void weft__g_fork_child(void)
{
    weft__lock_reinit(&allg_lock);
    weft__lock_reinit(&sched.gflock);
    allg = NULL;
    sched.gfree = NULL;
    sched.recfree = NULL;
    sched.recchunks = NULL;
}
