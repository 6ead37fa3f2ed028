/*
 * mem/preload.c -- libweft-malloc.so: the C allocator interface on top of weft's, so
 * that unmodified programs run on it with LD_PRELOAD for their whole life.
 *
 * malloc, free, calloc, realloc and malloc_usable_size are the weft_ functions
 * themselves (link-time aliases, see the Makefile: no extra jump); the rest adapt
 * glibc's signatures. ld.so may call in before libc is initialised: nothing on
 * these paths needs libc beyond syscalls (see mem/base.c and mem/options.c).
 * Built into libweft-malloc.so only (not libweft.a/.so); callers: the whole process,
 * through the dynamic linker.
 */
#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>
#include "weft.h"

#define EXPORT __attribute__((visibility("default")))

EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
    if (align < sizeof(void *) || (align & (align - 1)) != 0)
        return EINVAL;
    int saved = errno;
    void *p = weft_aligned_alloc(align, size);
    if (p == NULL) {
        errno = saved;
        return ENOMEM;
    }
    *out = p;
    return 0;
}

EXPORT void *aligned_alloc(size_t align, size_t size)
{
    return weft_aligned_alloc(align, size);
}

EXPORT void *memalign(size_t align, size_t size)
{
    return weft_aligned_alloc(align, size);
}

static size_t os_page(void)
{
    static size_t page;
    if (page == 0)
        page = (size_t)sysconf(_SC_PAGESIZE);
    return page;
}

EXPORT void *valloc(size_t size)
{
    return weft_aligned_alloc(os_page(), size);
}

EXPORT void *pvalloc(size_t size)
{
    size_t pg = os_page();
    if (size > SIZE_MAX - pg) {
        errno = ENOMEM;
        return NULL;
    }
    return weft_aligned_alloc(pg, (size + pg - 1) & ~(pg - 1));
}

EXPORT void *reallocarray(void *p, size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return weft_realloc(p, total);
}

void cfree(void *p);
EXPORT void cfree(void *p)
{
    weft_free(p);
}
