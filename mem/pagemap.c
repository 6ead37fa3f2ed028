/*
 * mem/pagemap.c -- the page class map: one byte per 8 KiB page of the whole user
 * address space, the class of the small span that holds the page as its mcache slot
 * (WEFT_SLOT_BIAS + class, see struct mcache), or 0: large, free, or not weft's.
 * weft_free's fast path finds an object's slot in one load:
 *     m = weft__pagemap; if (p < m's limit) s = m[p >> 13];
 *
 * Layout: one reservation made by the first arena's growth (mheap lock held):
 *     [HEAD bytes: the limit word at its end][map: 2^(WEFT_MAP_ADDR_BITS - 13) bytes]
 * x86-64: 2^47 >> 13 = 16 GiB of map; aarch64 (48-bit VA): 32 GiB. It is mapped
 * PROT_READ, MAP_NORESERVE: it costs address space (VSZ) only. Reads of a page never
 * written map the kernel's shared zero page (class 0, no RSS); a new arena makes its
 * part of the map writable (8 KiB of map per 64 MiB arena, rounded out to 64 KiB,
 * any OS page size) with one mprotect, and only those parts ever hold memory. A
 * read-only private mapping is not charged against the commit limit, so this works
 * with vm.overcommit_memory=2 too (only the writable parts are charged).
 *
 * Why every read is safe: the fast path reads m[p >> 13] only for p below the limit,
 * so the index stays inside the reservation whatever p is (a garbage pointer >= 2^47,
 * or one from a 57-bit address space, fails the compare and takes the slow path, which
 * aborts on foreign pointers). The limit is read through the map pointer (m[-1]):
 * before the map exists, or when it could not be made, weft__pagemap points just
 * past a static word 0, so every free takes the slow path, which finds the class
 * through weft__mheap_arena_map and the span (the two-level map, always kept): that is
 * the fallback, chosen once. The word is written before the map pointer is published
 * (release); a reader that sees the new pointer sees its limit through the address
 * dependency (acquire under TSan, which does not model dependencies).
 *
 * Slot 0 is never pushed by the fast path: its room is 0 in every cache (see
 * mem/mem.h), so NULL (page 0 reads 0), foreign pointers, large objects and free
 * pages all reach the slow path.
 *
 * No map either under an address-space limit (RLIMIT_AS, ulimit -v: the program
 * counts its VSZ), or with WEFT_DEBUG=pagemap=0 (tests run the fallback with it).
 *
 * Callers: writers are in mheap.c only, under h.lock (weft__pagemap_grow for a new
 * arena here, weft__pagemap_set in mem/mem.h for a span's pages); readers (mem/mem.h's
 * weft__pagemap_get and weft__pagemap_class: malloc.c's free, usable size) are any
 * thread, with no lock.
 */
#include <sys/mman.h>
#include <sys/resource.h>
#include "mem/mem.h"

#define HEAD ((size_t)64 << 10)       /* the largest OS page weft supports */
#define MAP_BYTES ((size_t)1 << (WEFT_MAP_ADDR_BITS - WEFT_PAGE_SHIFT))

static const uintptr_t no_map_limit;  /* 0: the limit while there is no map */
uint8_t *weft__pagemap = (uint8_t *)(uintptr_t)(&no_map_limit + 1);
static int tried;                     /* under the mheap lock */

static void reserve(void)
{
    tried = 1;
    if (weft__debug.pagemap < 0)
        return;
    /* a process under an address-space limit (ulimit -v) counts VSZ: the map would
     * take 16 GiB of it, so it does without */
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur != RLIM_INFINITY)
        return;
    char *r = mmap(NULL, HEAD + MAP_BYTES, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED)
        return;
    if (mprotect(r, HEAD, PROT_READ | PROT_WRITE) != 0) {
        munmap(r, HEAD + MAP_BYTES);
        return;
    }
    uint8_t *m = (uint8_t *)r + HEAD;
    ((uintptr_t *)(void *)m)[-1] = (uintptr_t)1 << WEFT_MAP_ADDR_BITS;
    /* release: pairs with weft__pagemap_get (the limit above is read through m) */
    __atomic_store_n(&weft__pagemap, m, __ATOMIC_RELEASE);
}

int weft__pagemap_grow(uintptr_t base, size_t size)
{
    if (!tried)
        reserve();
    uint8_t *m = weft__pagemap;
    uintptr_t limit = weft__pagemap_limit(m);
    if (base >= limit)
        return 0;                     /* not in the map: its frees take the slow path */
    uintptr_t end = base + size < limit ? base + size : limit;
    uintptr_t lo = (base >> WEFT_PAGE_SHIFT) & ~(uintptr_t)(HEAD - 1);
    uintptr_t hi = ((end >> WEFT_PAGE_SHIFT) + HEAD - 1) & ~(uintptr_t)(HEAD - 1);
    return mprotect(m + lo, hi - lo, PROT_READ | PROT_WRITE) == 0 ? 0 : -1;
}
