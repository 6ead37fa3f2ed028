/*
 * weft.h -- goroutines for C: the public API, and its contract. What each call does,
 * returns and fails with is written here, next to its declaration.
 *
 * Conventions:
 *  - Every call that can fail returns 0 (or a non-negative value) on success and a
 *    negative errno on failure (-EINVAL, -ETIMEDOUT ...; weft_strerror names them).
 *    errno is never the channel -- a green thread can resume on another OS thread --
 *    except that the malloc family returns NULL and sets errno, as C requires.
 *  - Every blocking call works on a green thread (it parks the green thread, never
 *    its OS thread) and on a plain OS thread that is not part of the runtime (it
 *    blocks that thread, on a futex), so pthreads and green threads can wait on each
 *    other.
 *  - Deadlines (weft_deadline): a call that would have to wait returns -ETIMEDOUT
 *    once the caller's deadline has passed; a call that can complete at once (a free
 *    mutex, a ready channel) still does.
 *  - Misuse that cannot be returned (freeing a pointer weft did not allocate,
 *    unlocking an unlocked mutex, closing a channel twice, a NULL channel) aborts
 *    with one line on stderr naming the call and, on a green thread, that thread:
 *    "weft: weft_mutex_unlock: the mutex is not locked [in green thread 17 (worker)]".
 *    Pointer arguments are not checked for NULL unless the comment says so.
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

/* A static, constant description of err, a negative errno value ("timed out" for
 * -ETIMEDOUT, "channel closed" for -EPIPE, else the C library's text or "unknown
 * error"); "success" for err >= 0. Never NULL; safe on any thread. */
WEFT_API const char *weft_strerror(int err);

/* ---- Runtime ------------------------------------------------------------
 * One runtime per process. It can be started again once stopped.
 *
 * weft_run(main_fn, arg, cfg): starts the runtime (cfg NULL: defaults), runs
 *   main_fn(arg) as a green thread named "main" and, once it returns, stops the
 *   runtime and returns main_fn's value. Green threads still alive then are not
 *   resumed and their memory is released (Go's main). Errors, returned before
 *   main_fn runs (a negative main_fn value reads the same): -EINVAL main_fn NULL or
 *   cfg->stack_size above WEFT_STACK_MAX; -EBUSY the runtime is already running
 *   (also: called from a green thread); -ENOMEM; -EAGAIN (or another pthread_create
 *   error) the monitor thread could not be started. Out of memory while setting up
 *   the Ps aborts. When no green thread can ever run again and some are waiting,
 *   it prints "weft: all green threads are asleep - deadlock!" with weft_dump's
 *   lines and aborts (WEFT_DEBUG=deadlock=0 turns that off; weft_start never checks).
 *   The check sees only green threads: with all of them waiting for a plain thread
 *   (one that sends to them, say) that has not run for 50 ms, it aborts too; a
 *   program whose green threads wait for plain threads sets deadlock=0 or uses
 *   weft_start.
 * weft_start(cfg): starts the runtime in the background and returns 0; from then
 *   until weft_stop any thread may spawn. Same errors as weft_run but main_fn's.
 *   While running, weft handles SIGQUIT (weft_dump to stderr) and SIGSEGV/SIGBUS
 *   (stack-overflow report, then the previous handler); stopping restores them.
 * weft_stop(): waits until no green thread is left, then stops the runtime; 0, or
 *   -ESRCH the runtime is not running, -EDEADLK called from a green thread. It waits
 *   forever for green threads that never end.
 * A stop that has waited 5 s (weft_stop for green threads that do not end; either for
 * a green thread that never reaches a scheduling point and so holds its worker)
 * prints once to stderr what it waits for, with weft_dump's lines, and waits on. */
enum { WEFT_IO_AUTO = 0, WEFT_IO_URING = 1, WEFT_IO_UV = 2 };
/* The largest green-thread stack (weft_config.stack_size, weft_spawn_opts.stack_size):
 * a larger one is -EINVAL from weft_start / weft_run / weft_spawn_ex. A stack is
 * address space backed lazily, page by page, as the thread touches it. */
#define WEFT_STACK_MAX ((size_t)1 << 30)    /* 1 GiB */
typedef struct weft_config {
    int    nprocs;      /* logical processors (P); <= 0: $WEFT_MAXPROCS, else the CPUs
                           this process may use (affinity mask and cgroup CPU quota);
                           at most 1024 */
    size_t stack_size;  /* default green-thread stack; 0: 256 KiB; rounded up to whole
                           4 KiB pages, at least 16 KiB; above WEFT_STACK_MAX: -EINVAL */
    int    io_backend;  /* WEFT_IO_AUTO (0): $WEFT_IO (uring|uv), else io_uring, falling
                           back to libuv with a one-line notice when io_uring cannot be
                           set up; WEFT_IO_URING, WEFT_IO_UV: that one (io_uring
                           refused: the fallback, with the notice) */
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
WEFT_API int weft_nprocs(void);          /* Ps of the running runtime; 0 when stopped; never fails */

/* ---- Green threads ------------------------------------------------------ */
/* stack_size: 0 the runtime's default, else as weft_config.stack_size (rounded up to
 * pages, at least 16 KiB, at most WEFT_STACK_MAX). name: shown by weft_dump and in abort
 * messages; the string must outlive the green thread. */
typedef struct weft_spawn_opts { size_t stack_size; const char *name; } weft_spawn_opts;

/* Spawn fn(arg) as a new green thread; it starts later (spawning is never a
 * scheduling point). Returns 0, or -EINVAL fn NULL or opts->stack_size above
 * WEFT_STACK_MAX; -ESRCH the runtime is not running or is stopping (also in the child
 * of a fork()); -ENOMEM no spawn record could be had. Memory for the thread or its
 * stack that cannot be had at its first run aborts, naming the thread. From green
 * threads and from any plain thread while the runtime runs. weft_spawn_ex: opts may be
 * NULL (defaults); *id_out (if id_out is not NULL) gets the new thread's id (> 0), set
 * only on success. A green thread ends when fn returns; it starts with no deadline. */
WEFT_API int      weft_spawn(void (*fn)(void *arg), void *arg);
WEFT_API int      weft_spawn_ex(void (*fn)(void *), void *arg, const weft_spawn_opts *opts,
                                uint64_t *id_out);
/* Let other green threads of this P run; returns at once when none is runnable. On a
 * plain thread: sched_yield(). */
WEFT_API void     weft_yield(void);
WEFT_API uint64_t weft_self(void);       /* id of the running green thread; 0 on a plain thread */
WEFT_API int64_t  weft_now(void);        /* CLOCK_MONOTONIC in nanoseconds; any thread */
/* Run fn(arg), a call that may block the OS thread (getaddrinfo, a database driver):
 * the P is handed to another worker while it runs (sysmon retakes it after ~20 us), so
 * other green threads keep going. fn runs on the caller's stack; it may spawn and wake
 * green threads but must not wait in weft (a channel or lock call that waits, a sleep,
 * a yield). On a plain thread it just calls fn(arg). */
WEFT_API void     weft_blocking(void (*fn)(void *arg), void *arg);

/* ---- Time ------------------------------------------------------------------
 * weft_sleep(ns) parks a green thread for ns nanoseconds (a plain thread sleeps in
 * clock_nanosleep, resumed after signals) and returns 0; ns <= 0 returns 0 at once (a
 * green thread yields). It returns -ETIMEDOUT at once when the caller's deadline has
 * passed, and at the deadline when that comes before the end of the sleep.
 * weft_deadline(abs_ns) sets the caller's deadline -- the green thread's, or the plain
 * OS thread's own -- as a weft_now() time (any negative value: none) and returns the
 * previous one (-1: none). Every wait after it (channel, select, mutex, rwmutex, cond,
 * wait group, sema, sleep) returns -ETIMEDOUT once it passes; weft_once_do ignores it.
 * A new green thread starts with none. It stays set until changed. */
#define WEFT_MICROSECOND ((int64_t)1000)
#define WEFT_MILLISECOND ((int64_t)1000000)
#define WEFT_SECOND      ((int64_t)1000000000)
WEFT_API int     weft_sleep(int64_t ns);
WEFT_API int64_t weft_deadline(int64_t abs_ns);

/* ---- Channels and select ---------------------------------------------------
 * Go's semantics, from green and plain threads alike. Elements of elem_size bytes are
 * copied in and out (elem may be NULL when elem_size is 0; a receive into NULL drops
 * the element). A send to a closed channel is -EPIPE; a receive drains what is
 * buffered, then returns -EPIPE; closing wakes every waiting sender and receiver with
 * -EPIPE. An unbuffered send hands its element straight to a parked receiver, which
 * then runs next on the sender's P. A NULL channel aborts (send, receive, close). */
typedef struct weft_chan weft_chan;
/* *out = a new channel (capacity 0: unbuffered, every send meets a receiver); 0, or
 * -EINVAL: out NULL, elem_size over 1 GiB, or a buffer (elem_size * capacity plus the
 * channel's own bytes) past SIZE_MAX; -ENOMEM: a size weft cannot allocate (*out is
 * then NULL). */
WEFT_API int    weft_chan_make(weft_chan **out, size_t elem_size, size_t capacity);
/* send / recv wait until done: 0, -EPIPE (closed; for recv: closed and drained), or
 * -ETIMEDOUT (the caller's deadline). try_send / try_recv never wait: 0, -EPIPE, or
 * -EAGAIN when they would have to. */
WEFT_API int    weft_chan_send(weft_chan *c, const void *elem);
WEFT_API int    weft_chan_recv(weft_chan *c, void *elem);
WEFT_API int    weft_chan_try_send(weft_chan *c, const void *elem);
WEFT_API int    weft_chan_try_recv(weft_chan *c, void *elem);
WEFT_API void   weft_chan_close(weft_chan *c);                    /* closing twice aborts */
/* NULL is fine; aborts if threads still wait on c. No other use of c may follow. */
WEFT_API void   weft_chan_free(weft_chan *c);
WEFT_API size_t weft_chan_len(const weft_chan *c);   /* elements buffered now (0 if unbuffered) */
WEFT_API size_t weft_chan_cap(const weft_chan *c);   /* capacity, as made */

enum { WEFT_SEND = 1, WEFT_RECV = 2 };
typedef struct weft_case { weft_chan *chan; int op; void *elem; int closed; } weft_case;
/* Wait until one of n cases can proceed, do it, and return its index. A case: op
 * WEFT_SEND (send *elem) or WEFT_RECV (receive into elem, NULL drops it) on chan.
 * closed is set to 0 in every case, and to 1 in the one that fired because its channel
 * is closed (a receive once drained, or a send: Go would panic). A case whose chan is
 * NULL never fires (Go's nil channel). Ready cases are chosen uniformly at random.
 * timeout_ns 0: never wait, -EAGAIN when no case is ready (Go's default:); < 0: no
 * timeout; > 0: -ETIMEDOUT when it expires. The caller's deadline applies too
 * (-ETIMEDOUT) unless timeout_ns is 0. -EINVAL: n < 0, cases NULL with n > 0, or an op
 * that is neither WEFT_SEND nor WEFT_RECV; -ENOMEM: n > 16 and no memory for the
 * select's bookkeeping. n 0 with no timeout and no deadline waits forever. */
WEFT_API int weft_select(weft_case *cases, int n, int64_t timeout_ns);

/* ---- Synchronization --------------------------------------------------------
 * Each parks green threads and blocks plain threads (on a futex), so a pthread can
 * wait for green threads and the other way round. Static initializers; zero-filled
 * storage is a valid unlocked / empty object too (a sema with no permits). An object
 * must not be moved or copied while in use. Waits return 0 or -ETIMEDOUT (the
 * caller's deadline); nothing else. Misuse aborts with a message naming the call:
 * unlocking an unlocked mutex (also by weft_cond_wait*), runlock of an rwmutex that is
 * not read-locked, unlock of one that is not write-locked, a wait-group counter that
 * goes negative or past INT64_MAX, releasing a sema past INT64_MAX. None of the locks
 * is recursive: locking one the caller holds waits forever (or until its deadline). */
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
 * aborts. trylock never waits and ignores the deadline: -EBUSY when the mutex is
 * locked (or being handed to a waiter). */
WEFT_API int  weft_mutex_lock(weft_mutex *m);       /* 0 or -ETIMEDOUT */
WEFT_API int  weft_mutex_trylock(weft_mutex *m);    /* 0 or -EBUSY */
WEFT_API void weft_mutex_unlock(weft_mutex *m);
/* Readers-writer lock: many readers or one writer. A waiting writer holds back new
 * readers (so a reader that read-locks again while a writer waits waits forever); a
 * writer's unlock lets the waiting readers in first. rlock / lock: 0 or -ETIMEDOUT.
 * runlock when not read-locked, unlock when not write-locked: abort. */
WEFT_API int  weft_rwmutex_rlock(weft_rwmutex *rw);
WEFT_API void weft_rwmutex_runlock(weft_rwmutex *rw);
WEFT_API int  weft_rwmutex_lock(weft_rwmutex *rw);
WEFT_API void weft_rwmutex_unlock(weft_rwmutex *rw);
/* Condition variable. wait: unlocks m (which must be locked: else abort), waits for a
 * signal or broadcast, and locks m again before it returns, also on timeout (that
 * relock ignores the deadline). 0 or -ETIMEDOUT: the caller's deadline, or for
 * wait_timeout the end of ns nanoseconds from now, whichever comes first (ns <= 0
 * times out at once). signal wakes the longest waiter, broadcast every waiter; both
 * are no-ops with no waiter and need not hold m. */
WEFT_API int  weft_cond_wait(weft_cond *c, weft_mutex *m);
WEFT_API int  weft_cond_wait_timeout(weft_cond *c, weft_mutex *m, int64_t ns);
WEFT_API void weft_cond_signal(weft_cond *c);
WEFT_API void weft_cond_broadcast(weft_cond *c);
/* Wait group (Go's sync.WaitGroup): add(n) adds n (which may be negative) to the
 * counter, and reaching 0 wakes every waiter; a counter below 0 or past INT64_MAX
 * aborts. done is add(-1). wait: 0 at once when the counter is 0, else 0 once it
 * reaches 0, or -ETIMEDOUT. */
WEFT_API void weft_wg_add(weft_wg *wg, int64_t n);
WEFT_API void weft_wg_done(weft_wg *wg);
WEFT_API int  weft_wg_wait(weft_wg *wg);
/* Counting semaphore. init sets n permits (0 or -EINVAL for n < 0; it must not race
 * with other use of s); zero-filled storage has none. acquire takes one, waiting for
 * it: 0 or -ETIMEDOUT. try_acquire never waits: 0 or -EAGAIN. release gives one back,
 * straight to the longest waiter if any; past INT64_MAX permits it aborts. */
WEFT_API int  weft_sema_init(weft_sema *s, int64_t n);
WEFT_API int  weft_sema_acquire(weft_sema *s);
WEFT_API int  weft_sema_try_acquire(weft_sema *s);
WEFT_API void weft_sema_release(weft_sema *s);
/* fn runs exactly once, on the first caller's thread; every caller returns after it
 * has finished. The wait ignores the caller's deadline; fn calling weft_once_do on the
 * same o waits forever. */
WEFT_API void weft_once_do(weft_once *o, void (*fn)(void));

/* ---- Introspection ------------------------------------------------------ */
/* Ps; green threads alive now (spawned, not ended) and queued to run now; spawns,
 * switches between green threads, run-queue steals and parks since the runtime
 * started. All zero while the runtime is not running. A snapshot read without
 * stopping the workers: off by what happens meanwhile. Never fails. */
typedef struct weft_sched_stats {
    int nprocs; uint64_t threads_live, threads_runnable, spawned, switches, steals, parks;
} weft_sched_stats;
WEFT_API void weft_sched_stats_read(weft_sched_stats *out);
/* Writes to fd a line on the Ps and workers, then one line per green thread: id,
 * name, state, wait reason, entry function (a snapshot: a thread changing meanwhile
 * may show either state); when the runtime is not running, one line saying so. Write
 * errors are ignored. SIGQUIT prints it to stderr while the runtime runs, and the
 * program goes on. */
WEFT_API void weft_dump(int fd);

/* ---- Memory ---------------------------------------------------------------
 * All of these work on any thread, inside or outside the runtime, before
 * weft_start too, and any thread may free what another allocated. Objects up to
 * 32 KiB come without a lock from a cache per P on green threads and a cache per
 * thread on plain threads; larger ones from dedicated runs of 8 KiB pages.
 * Small objects are 16-byte aligned (8-byte objects 8-byte aligned); large ones
 * page-aligned. Failure: NULL with errno = ENOMEM (a size past 64 TiB, or memory the
 * OS does not give). A pointer weft did not allocate aborts wherever one is taken
 * (free, realloc, usable_size), as does a pointer inside a large object. A small
 * object freed twice with no other free of its class on that thread in between aborts;
 * WEFT_DEBUG=allocfree=1 catches every double free, interior pointer and write after
 * free (slower).
 */
/* size 0 gives a unique pointer (an 8-byte object). */
WEFT_API WEFT_MALLOC_ATTR void *weft_malloc(size_t size);
/* zeroed; n * size overflowing is NULL with errno = ENOMEM. */
WEFT_API WEFT_MALLOC_ATTR void *weft_calloc(size_t n, size_t size);
/* p NULL: weft_malloc(size). size 0: frees p and returns NULL (glibc's rule). Else an
 * object of size bytes holding p's contents up to the smaller size: p itself (resized
 * in place) or a new object, p then freed. On failure NULL, errno = ENOMEM, p unchanged. */
WEFT_API void  *weft_realloc(void *p, size_t size);
/* align any power of 2 (size need not be a multiple of it; size 0 gives an object);
 * align 0 or not a power of 2: NULL with errno = EINVAL. Free it with weft_free. */
WEFT_API WEFT_MALLOC_ATTR void *weft_aligned_alloc(size_t align, size_t size);
WEFT_API void   weft_free(void *p);                   /* NULL is fine; foreign pointers abort */
/* Bytes usable at p (>= the size asked for); 0 for NULL. */
WEFT_API size_t weft_usable_size(const void *p);
/* Return free memory to the OS now: the calling thread's cache, the central lists and
 * the free pages (other threads' caches keep theirs). Without it, free pages stay
 * resident up to the most pages in use over the last second or so plus
 * max(48 MiB, 1/8 of that), and a background thread ("weft-scavenge", started by the
 * first free that leaves more than that, every signal blocked) gives the rest back,
 * 16 MiB per 10 ms at most: RSS falls within about a second after a burst is freed. */
WEFT_API void   weft_mem_release(void);

typedef struct weft_mem_stats {
    uint64_t heap_alloc;      /* bytes in live objects (small: their class size;
                                 large: whole pages) */
    uint64_t heap_inuse;      /* bytes in spans with at least one live object */
    uint64_t heap_sys;        /* bytes mapped from the OS for the heap */
    uint64_t heap_released;   /* bytes returned to the OS and not yet reused */
    uint64_t mallocs, frees;  /* cumulative counts */
    uint64_t stacks_inuse;    /* stack sizes of the green threads that have started and
                                 not ended (address space, mostly not resident) */
} weft_mem_stats;
/* A snapshot of every thread's counts, read without stopping them: off by what
 * happens meanwhile. Never fails. */
WEFT_API void weft_mem_stats_read(weft_mem_stats *out);

/* ---- I/O ------------------------------------------------------------------
 * From a green thread these park the green thread, never its worker: sockets try the
 * nonblocking system call first and wait in the runtime's poller (io_uring, a ring per
 * logical processor; or libuv, chosen when io_uring cannot be set up or by
 * weft_config.io_backend / WEFT_IO=uring|uv); files go through the same poller. From a
 * plain thread (or with the runtime stopped) they are the plain system calls: they
 * block that thread. Fds may be blocking or nonblocking; weft never changes their flags.
 *
 * Every call returns a count or 0 on success and -errno on failure. From a green
 * thread it honours the green thread's deadline (weft_deadline): -ETIMEDOUT, the
 * operation cancelled and finished before the call returns (the kernel never writes
 * into the buffer afterwards). A weft_close of the fd wakes green threads parked on
 * it: they return -EBADF. Writes to a reset peer give -EPIPE or -ECONNRESET: weft
 * ignores SIGPIPE at weft_start unless the program installed a handler. */
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
/* Up to n bytes; 0 at end of file / orderly shutdown. */
WEFT_API ssize_t weft_read(int fd, void *buf, size_t n);
/* All n bytes unless an error: then -errno, and the bytes already written are lost to
 * the count (as Go's Write: n < len only with an error). */
WEFT_API ssize_t weft_write(int fd, const void *buf, size_t n);
WEFT_API ssize_t weft_readv(int fd, const struct iovec *iov, int iovcnt);
/* All bytes of every piece unless an error; iovcnt 0..IOV_MAX (more: -EINVAL). */
WEFT_API ssize_t weft_writev(int fd, const struct iovec *iov, int iovcnt);
WEFT_API ssize_t weft_recv(int fd, void *buf, size_t n, int flags);
/* One send (MSG_NOSIGNAL added): a stream socket's short count is possible, as send(2). */
WEFT_API ssize_t weft_send(int fd, const void *buf, size_t n, int flags);
WEFT_API ssize_t weft_recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *from,
                               socklen_t *len);
WEFT_API ssize_t weft_sendto(int fd, const void *buf, size_t n, int flags,
                             const struct sockaddr *to, socklen_t len);
/* Files: what the page cache holds is read (or a buffered write is taken) at once on
 * the calling thread, with no park (RWF_NOWAIT), so a green thread reading a cached
 * file in a loop does not yield: weft_yield now and then if others must run; the rest
 * goes to the poller (io_uring, or libuv's thread pool). pread returns fewer than n
 * bytes only at end of file or with an error after some bytes. */
WEFT_API ssize_t weft_pread(int fd, void *buf, size_t n, off_t off);
WEFT_API ssize_t weft_pwrite(int fd, const void *buf, size_t n, off_t off);  /* all n unless an error */
WEFT_API int     weft_fsync(int fd);
/* The new fd (close-on-exec), or -errno: -EMFILE / -ENFILE at the fd limit, returned
 * at once (never a spin). addr/len may be NULL. */
WEFT_API int     weft_accept(int lfd, struct sockaddr *addr, socklen_t *len);
WEFT_API int     weft_connect(int fd, const struct sockaddr *addr, socklen_t len);
WEFT_API int     weft_shutdown(int fd, int how);
WEFT_API int     weft_open(const char *path, int flags, int mode);
/* close(2), after waking the green threads parked on fd (-EBADF to them). */
WEFT_API int     weft_close(int fd);
/* Park until fd is ready for events (POLLIN, POLLOUT, ...): the revents (POLLERR,
 * POLLHUP included), or -errno. For libraries that do their own nonblocking I/O. */
WEFT_API int     weft_poll(int fd, int events);
/* A listening TCP socket (SO_REUSEADDR, close-on-exec): host NULL or "" every address
 * (IPv6 dual stack where the system has IPv6, else IPv4), else a numeric address or a
 * name (the first address that binds); port 0: the kernel picks (getsockname tells);
 * backlog <= 0: SOMAXCONN. The fd or -errno (-EINVAL bad port; name errors: -ENOENT). */
WEFT_API int     weft_listen_tcp(const char *host, int port, int backlog);
/* A connected TCP socket (close-on-exec, TCP_NODELAY) to host:port, IPv4 or IPv6; a
 * name is resolved in weft_blocking; each address is tried in turn. The fd or -errno
 * (the last address's error; -ENOENT for a name that does not resolve). */
WEFT_API int     weft_dial_tcp(const char *host, int port);
/* "io_uring" or "libuv": the running runtime's backend; "none" when it is not
 * running (the calls then block their thread). */
WEFT_API const char *weft_io_backend(void);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_H */
