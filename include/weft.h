/*
 * weft.h -- goroutines for C: the public API (the contract is ../shared/API.md).
 *
 * Conventions: every call that can fail returns 0 (or a non-negative count) on
 * success and a negative errno on failure; errno is never the channel, except
 * that the malloc family returns NULL and sets errno = ENOMEM as C requires.
 * Misuse that cannot be returned (freeing a foreign pointer, unlocking an unlocked
 * mutex) aborts with a one-line message naming the call and, when it happens on a
 * green thread, that thread: "weft: weft_mutex_unlock: the mutex is not locked
 * [in green thread 17 (worker)]".
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
 * Both return -EBUSY if the runtime is already running. It can be started again.
 * A stop that has waited 5 s (weft_stop for green threads that do not end; either for
 * a green thread that never reaches a scheduling point and so holds its worker)
 * prints once to stderr what it waits for, with weft_dump's lines, and waits on. */
enum { WEFT_IO_AUTO = 0, WEFT_IO_URING = 1, WEFT_IO_UV = 2 };
/* The largest green-thread stack (weft_config.stack_size, weft_spawn_opts.stack_size):
 * a larger one is -EINVAL from weft_start / weft_run / weft_spawn_ex. A stack is
 * address space backed lazily, page by page, as the thread touches it. */
#define WEFT_STACK_MAX ((size_t)1 << 30)    /* 1 GiB */
typedef struct weft_config {
    int    nprocs;      /* logical processors (P); 0: $WEFT_MAXPROCS, else the CPUs this
                           process may use (affinity mask and cgroup CPU quota) */
    size_t stack_size;  /* default green-thread stack; 0: 256 KiB; rounded up to whole
                           4 KiB pages, at least 16 KiB; above WEFT_STACK_MAX: -EINVAL */
    int    io_backend;  /* WEFT_IO_AUTO (io_uring, else libuv), WEFT_IO_URING, WEFT_IO_UV; $WEFT_IO too */
} weft_config;

/* fork(): in the child the runtime is stopped -- weft_spawn returns -ESRCH, weft_nprocs
 * 0 -- and weft_start / weft_run start a fresh one. The child's one thread (the caller
 * of fork) is a plain thread there: its blocking calls block it, even when it forked
 * from a green thread (it runs on in that green thread's stack, with its deadline; if
 * it returns from the green thread's function the child exits with status 0, stdio
 * flushed, like _exit(0)); its signal mask is that of the thread that called
 * weft_start. Memory allocated before the fork stays valid and freeable. The other
 * green threads do not exist in the child: weft objects they were using at the fork
 * (a channel they waited on, a mutex one held) must not be used there, as with
 * pthread mutexes. */
WEFT_API int weft_run(int (*main_fn)(void *arg), void *arg, const weft_config *cfg);
WEFT_API int weft_start(const weft_config *cfg);
WEFT_API int weft_stop(void);
WEFT_API int weft_nprocs(void);          /* Ps of the running runtime; 0 when stopped */

/* ---- Green threads ------------------------------------------------------ */
/* stack_size: 0 the runtime's default, else as weft_config.stack_size (rounded up to
 * pages, at least 16 KiB, at most WEFT_STACK_MAX). name: shown by weft_dump and in abort
 * messages; the string must outlive the green thread. */
typedef struct weft_spawn_opts { size_t stack_size; const char *name; } weft_spawn_opts;

/* 0 or -errno (-ENOMEM; -EINVAL: fn NULL or a stack_size above WEFT_STACK_MAX; -ESRCH
 * when the runtime is not running, e.g. in the child of a fork()). From green
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

/* ---- Time ------------------------------------------------------------------
 * weft_sleep parks a green thread (a plain thread: nanosleep) and returns 0, or
 * -ETIMEDOUT when the deadline passes first. weft_deadline sets the calling green
 * (or plain) thread's deadline, weft_now()-based, -1 = none, and returns the previous
 * one: every blocking call after it (channel, select, lock, cond, wait group, sema,
 * sleep, later I/O) returns -ETIMEDOUT once it passes. */
#define WEFT_MICROSECOND ((int64_t)1000)
#define WEFT_MILLISECOND ((int64_t)1000000)
#define WEFT_SECOND      ((int64_t)1000000000)
WEFT_API int     weft_sleep(int64_t ns);
WEFT_API int64_t weft_deadline(int64_t abs_ns);

/* ---- Channels and select ---------------------------------------------------
 * Go's semantics. Elements of any size are copied. A send to a closed channel is
 * -EPIPE; a receive drains what is buffered, then returns -EPIPE. An unbuffered send
 * hands its element straight to a parked receiver, which then runs next on the
 * sender's P. Freeing a channel that green threads wait on aborts. */
typedef struct weft_chan weft_chan;
/* 0; -EINVAL: out NULL, elem_size over 1 GiB, or a buffer (elem_size * capacity plus
 * the channel's own bytes) past SIZE_MAX; -ENOMEM: a size weft cannot allocate. */
WEFT_API int    weft_chan_make(weft_chan **out, size_t elem_size, size_t capacity);
WEFT_API int    weft_chan_send(weft_chan *c, const void *elem);   /* 0, -EPIPE, -ETIMEDOUT */
WEFT_API int    weft_chan_recv(weft_chan *c, void *elem);         /* 0, -EPIPE, -ETIMEDOUT */
WEFT_API int    weft_chan_try_send(weft_chan *c, const void *elem); /* -EAGAIN if it would block */
WEFT_API int    weft_chan_try_recv(weft_chan *c, void *elem);
WEFT_API void   weft_chan_close(weft_chan *c);                    /* closing twice aborts */
WEFT_API void   weft_chan_free(weft_chan *c);
WEFT_API size_t weft_chan_len(const weft_chan *c);
WEFT_API size_t weft_chan_cap(const weft_chan *c);

enum { WEFT_SEND = 1, WEFT_RECV = 2 };
typedef struct weft_case { weft_chan *chan; int op; void *elem; int closed; } weft_case;
/* Index of the case that fired; a receive (or send) case on a closed channel fires
 * with closed = 1. A case whose chan is NULL never fires (Go's nil channel).
 * timeout_ns 0: never block, -EAGAIN when no case is ready; -1: wait forever; > 0:
 * -ETIMEDOUT when it expires. Ready cases are chosen uniformly at random.
 * -EINVAL for n < 0 or a bad op. */
WEFT_API int weft_select(weft_case *cases, int n, int64_t timeout_ns);

/* ---- Synchronization --------------------------------------------------------
 * Each parks green threads and blocks plain threads (on a futex), so a pthread can
 * wait for green threads and the other way round. Static initializers; zero-filled
 * storage is a valid unlocked / empty object too. Waits return 0 or -ETIMEDOUT (the
 * caller's deadline). Misuse aborts with a message naming the call: unlocking an
 * unlocked mutex, waiting on a cond without holding its mutex, a wait-group counter
 * that goes negative or past INT64_MAX, releasing a sema past INT64_MAX. */
typedef struct weft_mutex   { uint64_t opaque[4]; } weft_mutex;
typedef struct weft_rwmutex { uint64_t opaque[8]; } weft_rwmutex;
typedef struct weft_cond    { uint64_t opaque[3]; } weft_cond;
typedef struct weft_wg      { uint64_t opaque[4]; } weft_wg;
typedef struct weft_sema    { uint64_t opaque[4]; } weft_sema;
typedef struct weft_once    { uint64_t opaque[5]; } weft_once;
#define WEFT_MUTEX_INIT   { { 0 } }
#define WEFT_RWMUTEX_INIT { { 0 } }
#define WEFT_COND_INIT    { { 0 } }
#define WEFT_WG_INIT      { { 0 } }
#define WEFT_ONCE_INIT    { { 0 } }

/* Mutex: FIFO hand-off once a waiter has waited over 1 ms (Go's starvation mode).
 * Like Go's sync.Mutex it is not owned by a thread: any green or plain thread may
 * unlock a mutex another one locked (a hand-over); unlocking one that is not locked
 * aborts. */
WEFT_API int  weft_mutex_lock(weft_mutex *m);       /* 0 or -ETIMEDOUT */
WEFT_API int  weft_mutex_trylock(weft_mutex *m);    /* 0 or -EBUSY */
WEFT_API void weft_mutex_unlock(weft_mutex *m);
/* Readers-writer lock; a waiting writer holds back new readers. */
WEFT_API int  weft_rwmutex_rlock(weft_rwmutex *rw);
WEFT_API void weft_rwmutex_runlock(weft_rwmutex *rw);
WEFT_API int  weft_rwmutex_lock(weft_rwmutex *rw);
WEFT_API void weft_rwmutex_unlock(weft_rwmutex *rw);
/* Condition variable; the mutex is held again when a wait returns, also on timeout. */
WEFT_API int  weft_cond_wait(weft_cond *c, weft_mutex *m);
WEFT_API int  weft_cond_wait_timeout(weft_cond *c, weft_mutex *m, int64_t ns);
WEFT_API void weft_cond_signal(weft_cond *c);
WEFT_API void weft_cond_broadcast(weft_cond *c);
/* Wait group (Go's sync.WaitGroup): n may be negative. */
WEFT_API void weft_wg_add(weft_wg *wg, int64_t n);
WEFT_API void weft_wg_done(weft_wg *wg);
WEFT_API int  weft_wg_wait(weft_wg *wg);
/* Counting semaphore. */
WEFT_API int  weft_sema_init(weft_sema *s, int64_t n);  /* 0 or -EINVAL (n < 0) */
WEFT_API int  weft_sema_acquire(weft_sema *s);           /* 0 or -ETIMEDOUT */
WEFT_API int  weft_sema_try_acquire(weft_sema *s);       /* 0 or -EAGAIN */
WEFT_API void weft_sema_release(weft_sema *s);
/* fn runs exactly once; every caller returns after it has finished. */
WEFT_API void weft_once_do(weft_once *o, void (*fn)(void));

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
