/*
 * mem/init.c -- the allocator's start: weft__mem_init_slow, the slow half of
 * weft__mem_init (mem/mem.h), runs once and reads WEFT_DEBUG (mem/options.c) before
 * the first cache, span or arena is made. Nothing else needs setting up: the heap,
 * the centrals and the empty cache are static and ready at load time.
 *
 * Invariants: weft__mem_ready goes 0 -> 1 once, after weft__debug is final (release;
 *   weft__mem_init's acquire pairs with it), so whoever sees it set sees the options.
 * Callers: weft__mem_init only (any thread, no mem lock held; the slow paths of
 *   malloc.c and mcache.c, and sched/'s weft_start). It calls down only (options.c,
 *   lock.c): no mem/ file is called back.
 * Lock: init_lock, held alone (no other lock is taken under it, and it is never taken
 *   under another mem lock).
 */
#include "mem/mem.h"

_Atomic int weft__mem_ready;

void weft__mem_init_slow(void)
{
    static weft_lock init_lock = WEFT_LOCK_INIT;
    weft__lock(&init_lock);
    if (!atomic_load_explicit(&weft__mem_ready, RLX)) {
        weft__debug_init();
        /* release: pairs with weft__mem_init's acquire */
        atomic_store_explicit(&weft__mem_ready, 1, REL);
    }
    weft__unlock(&init_lock);
}
