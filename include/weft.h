/*
 * weft.h -- goroutines for C: the public API (the contract is ../shared/API.md).
 *
 * Conventions: every call that can fail returns 0 (or a non-negative count) on
 * success and a negative errno on failure; errno is never the channel, except
 * that the malloc family returns NULL and sets errno = ENOMEM as C requires.
 * Misuse that cannot be returned (freeing a foreign pointer) aborts with a
 * message naming the call.
 */
#ifndef WEFT_H
#define WEFT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define WEFT_API __attribute__((visibility("default")))
#define WEFT_MALLOC_ATTR __attribute__((malloc))
#else
#define WEFT_API
#define WEFT_MALLOC_ATTR
#endif

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1

/* Name any negative errno value that weft returns ("timed out", ...). */
WEFT_API const char *weft_strerror(int err);

/* ---- Memory ---------------------------------------------------------------
 * All of these work on any thread, inside or outside the runtime, before
 * weft_start too. Objects up to 32 KiB come from per-thread (later per-P)
 * caches without a lock; larger ones from dedicated page runs.
 * Small objects are 16-byte aligned (8-byte objects 8-byte aligned).
 */
WEFT_API WEFT_MALLOC_ATTR void *weft_malloc(size_t size);
WEFT_API WEFT_MALLOC_ATTR void *weft_calloc(size_t n, size_t size);   /* overflow-checked */
WEFT_API void  *weft_realloc(void *p, size_t size);
WEFT_API WEFT_MALLOC_ATTR void *weft_aligned_alloc(size_t align, size_t size); /* any power of 2 */
WEFT_API void   weft_free(void *p);                   /* NULL is fine; foreign pointers abort */
WEFT_API size_t weft_usable_size(const void *p);
WEFT_API void   weft_mem_release(void);               /* return free pages to the OS now */

typedef struct weft_mem_stats {
    uint64_t heap_alloc;      /* bytes in live objects (small: their class size) */
    uint64_t heap_inuse;      /* bytes in spans with at least one live object */
    uint64_t heap_sys;        /* bytes mapped from the OS for the heap */
    uint64_t heap_released;   /* bytes returned to the OS and not yet reused */
    uint64_t mallocs, frees;  /* cumulative counts */
    uint64_t stacks_inuse;    /* bytes of green-thread stacks in use */
} weft_mem_stats;
WEFT_API void weft_mem_stats_read(weft_mem_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_H */
