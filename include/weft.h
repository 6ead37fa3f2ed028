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

#include <errno.h>      /* the -E codes weft returns */
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

/* ---- Runtime ------------------------------------------------------------
 * weft_run starts the runtime, runs main_fn(arg) as a green thread and returns its
 * value once it returns; green threads still alive then are not resumed and their
 * memory is released (Go's main). weft_start starts it in the background (then any
 * thread may spawn); weft_stop waits until no green thread is left, then stops it.
 * Both return -EBUSY if the runtime is already running. It can be started again. */
enum { WEFT_IO_AUTO = 0, WEFT_IO_URING = 1, WEFT_IO_UV = 2 };
typedef struct weft_config {
    int    nprocs;      /* logical processors (P); 0: $WEFT_MAXPROCS, else the CPUs this
                           process may use (affinity mask and cgroup CPU quota) */
    size_t stack_size;  /* default green-thread stack; 0: 256 KiB */
    int    io_backend;  /* WEFT_IO_AUTO (io_uring, else libuv), WEFT_IO_URING, WEFT_IO_UV; $WEFT_IO too */
} weft_config;

WEFT_API int weft_run(int (*main_fn)(void *arg), void *arg, const weft_config *cfg);
WEFT_API int weft_start(const weft_config *cfg);
WEFT_API int weft_stop(void);
WEFT_API int weft_nprocs(void);          /* Ps of the running runtime; 0 when stopped */

/* ---- Green threads ------------------------------------------------------ */
typedef struct weft_spawn_opts { size_t stack_size; const char *name; } weft_spawn_opts;

/* 0 or -errno (-ENOMEM; -ESRCH when the runtime is not running). From green
 * threads and from any plain thread while the runtime runs. */
WEFT_API int      weft_spawn(void (*fn)(void *arg), void *arg);
WEFT_API int      weft_spawn_ex(void (*fn)(void *), void *arg, const weft_spawn_opts *opts,
                                uint64_t *id_out);
WEFT_API void     weft_yield(void);      /* on a plain thread: sched_yield() */
WEFT_API uint64_t weft_self(void);       /* id of the running green thread; 0 on a plain thread */
WEFT_API int64_t  weft_now(void);        /* monotonic nanoseconds */
/* Run a call that may block the OS thread: the P is handed to another worker while it
 * runs (sysmon retakes it after ~20 us), so other green threads keep going. */
WEFT_API void     weft_blocking(void (*fn)(void *arg), void *arg);

/* ---- Introspection ------------------------------------------------------ */
typedef struct weft_sched_stats {
    int nprocs; uint64_t threads_live, threads_runnable, spawned, switches, steals, parks;
} weft_sched_stats;
WEFT_API void weft_sched_stats_read(weft_sched_stats *out);
/* Every green thread: id, name, state, wait reason, entry function. SIGQUIT prints it
 * to stderr while the runtime runs, and the program goes on. */
WEFT_API void weft_dump(int fd);

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
