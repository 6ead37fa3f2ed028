/*
 * weft/base.h -- internal attributes, asserts and the throw used by every module.
 * Not installed.
 */
#ifndef WEFT_BASE_H
#define WEFT_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdatomic.h>

#define WEFT_LIKELY(x)   __builtin_expect(!!(x), 1)
#define WEFT_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define WEFT_NOINLINE    __attribute__((noinline))
#define WEFT_INLINE      static inline __attribute__((always_inline))
#define WEFT_HIDDEN      __attribute__((visibility("hidden")))
#define WEFT_NORETURN    __attribute__((noreturn))
#define WEFT_COLD        __attribute__((cold))
#define WEFT_TLS_IE      __attribute__((tls_model("initial-exec")))

/* Memory orders, shortened: every atomic access names its order (never the implicit
 * seq_cst of a plain atomic operator), and a comment says why when it is not RLX. */
#define RLX memory_order_relaxed
#define ACQ memory_order_acquire
#define REL memory_order_release
#define SC  memory_order_seq_cst

/* A spin-wait hint (pause / yield). */
static inline void weft__cpu_relax(void)
{
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* The runtime's one random generator: xorshift64 (Marsaglia), state never 0; the high
 * half is returned (its low bits are the weak ones). Not for anything secret: victim
 * choice, select's poll order. weft__rand_seed makes a nonzero state from any value. */
static inline uint64_t weft__rand_seed(uint64_t x)
{
    return x * 0x9e3779b97f4a7c15ull | 1;
}
static inline uint32_t weft__rand_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 32);
}

#ifndef WEFT_DEBUG_LEVEL
#define WEFT_DEBUG_LEVEL 0
#endif

/* Go's throw: print "weft: <msg>" to stderr, then abort. Never allocates. */
WEFT_HIDDEN WEFT_NORETURN WEFT_COLD void weft__throw(const char *msg);
/* printf-like, formatted into a stack buffer; never allocates. */
WEFT_HIDDEN WEFT_NORETURN WEFT_COLD void weft__throwf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
/* Write a formatted line to fd 2 without allocating. */
WEFT_HIDDEN void weft__printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Who is throwing: mem/ knows nothing of green threads, so sched/ installs a function
 * that writes the calling thread's green thread ("green thread 17 (worker)") into buf
 * (cap bytes, NUL-terminated) and returns its length, 0 when the caller is not on a
 * green thread. weft__throw / weft__throwf append it to their line as
 * " [in green thread 17 (worker)]". It runs in throw, perhaps in a signal handler:
 * it must not allocate, lock or throw. */
typedef size_t (*weft_throw_context_fn)(char *buf, size_t cap);
WEFT_HIDDEN void weft__throw_set_context(weft_throw_context_fn fn);

#define weft_assert_always(cond) \
    ((void)(WEFT_LIKELY(cond) ? 0 : (weft__throwf("assertion failed: %s (%s:%d)", #cond, __FILE__, __LINE__), 0)))
#if WEFT_DEBUG_LEVEL >= 1
#define weft_assert(cond) weft_assert_always(cond)
#else
#define weft_assert(cond) ((void)0)
#endif
#if WEFT_DEBUG_LEVEL >= 2
#define weft_assert_internal(cond) weft_assert_always(cond)
#else
#define weft_assert_internal(cond) ((void)0)
#endif

/* ---- runtime knobs: WEFT_DEBUG=name=value,... (parsed once, never allocates) */
struct weft_debug {
    int allocfree;    /* poison freed memory, catch double and foreign frees */
    int migrate;      /* move a green thread to another M at every yield point */
    int schedtrace;   /* print a schedtrace line every N ms */
    int deadlock;     /* -1 (deadlock=0): no deadlock detection */
    int pagemap;      /* -1 (pagemap=0): no page class map (mem/pagemap.c's fallback) */
};
WEFT_HIDDEN extern struct weft_debug weft__debug;
WEFT_HIDDEN void weft__debug_init(void);  /* idempotent; safe before libc is up */

/* ---- futex lock: 0 free, 1 locked, 2 locked with waiters (Drepper). */
typedef struct weft_lock { _Atomic uint32_t state; } weft_lock;
#define WEFT_LOCK_INIT { 0 }
WEFT_HIDDEN void weft__lock_slow(weft_lock *l);
WEFT_HIDDEN void weft__unlock_slow(weft_lock *l);
static inline void weft__lock(weft_lock *l)
{
    uint32_t z = 0;
    /* acquire: pairs with the release in weft__unlock */
    if (WEFT_UNLIKELY(!atomic_compare_exchange_strong_explicit(&l->state, &z, 1,
                            ACQ, RLX)))
        weft__lock_slow(l);
}
static inline void weft__unlock(weft_lock *l)
{
    /* release: publishes the critical section to the next acquirer */
    if (WEFT_UNLIKELY(atomic_exchange_explicit(&l->state, 0, REL) == 2))
        weft__unlock_slow(l);
}
static inline void weft__lock_reinit(weft_lock *l) { atomic_store_explicit(&l->state, 0, RLX); }

WEFT_HIDDEN void weft__futex_wait(_Atomic uint32_t *addr, uint32_t val);
WEFT_HIDDEN void weft__futex_wait_timeout(_Atomic uint32_t *addr, uint32_t val, int64_t ns);
WEFT_HIDDEN void weft__futex_wake(_Atomic uint32_t *addr, int n);

#endif
