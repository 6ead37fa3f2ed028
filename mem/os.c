/*
 * mem/os.c -- the allocator's memory syscalls: reserve address space for arenas, map
 * metadata, give pages back, move page frames. Every call is a syscall; none
 * allocates or locks. (The page class map makes its own reservation: mem/pagemap.c.)
 * Callers: mheap.c (arenas, metadata, the scavenger; under h.lock), mcache.c (cache
 * structs, under reg_lock), malloc.c (weft__os_move, for realloc; no lock).
 */
#include <sys/mman.h>
#include <errno.h>
#include <linux/mman.h>
#include "mem/mem.h"

/* Reserve size bytes aligned to align (a power of two >= the OS page), at hint if
 * the kernel agrees (keeps consecutive arenas contiguous), else anywhere. Fresh
 * anonymous pages read as zero and cost nothing until touched. NULL: out of memory. */
void *weft__os_reserve(size_t size, size_t align, uintptr_t hint)
{
    const int prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS;
    if (hint != 0 && (hint & (align - 1)) == 0) {
        void *p = mmap((void *)hint, size, prot, flags, -1, 0);
        if (p == (void *)hint)
            return p;
        if (p != MAP_FAILED)
            munmap(p, size);
    }
    if (size + align < size)
        return NULL;
    char *p = mmap(NULL, size + align, prot, flags, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    uintptr_t a = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
    if (a > (uintptr_t)p)
        munmap(p, a - (uintptr_t)p);
    uintptr_t end = (uintptr_t)p + size + align;
    if (end > a + size)
        munmap((void *)(a + size), end - (a + size));
    return (void *)a;
}

void *weft__os_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* Give back a reservation (or metadata) that was never handed out. */
void weft__os_unreserve(void *p, size_t size)
{
    munmap(p, size);
}

void weft__os_release(void *p, size_t size)
{
    madvise(p, size, MADV_DONTNEED);
}

/* Ask for transparent huge pages on [p, p + size) (2 MiB aligned), or no longer (on =
 * false): one fault per 2 MiB instead of 512. A hint: where THP is off ("never") or the
 * kernel has none, nothing changes; with THP "always" it is already so. */
void weft__os_hugepage(void *p, size_t size, bool on)
{
#if defined(MADV_HUGEPAGE) && defined(MADV_NOHUGEPAGE)
    madvise(p, size, on ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
#else
    (void)p; (void)size; (void)on;
#endif
}

/* mremap with MREMAP_DONTUNMAP (Linux 5.7; any private anonymous mapping): the frames
 * move and the source range stays mapped with no pages, so no other thread's mmap can
 * land in a hole in our arenas. Fails (EINVAL on older kernels, EFAULT when the range
 * spans two mappings); the caller then copies. */
int weft__os_move(void *from, void *to, size_t size)
{
#ifdef MREMAP_DONTUNMAP
    void *r = mremap(from, size, size, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, to);
    if (r == to)
        return 0;
    if (r != MAP_FAILED)              /* cannot happen with MREMAP_FIXED; never keep it */
        weft__throw("mremap: moved to another address than asked");
#endif
    (void)from; (void)to; (void)size;
    return -1;
}
