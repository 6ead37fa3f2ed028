/*
 * mem/base.c -- what every module needs and nothing depends on: throw (Go's
 * runtime.throw), an allocation-free printf to stderr, WEFT_DEBUG parsing, the futex
 * lock, and weft_strerror. It lives in mem/ because mem/ is the bottom of the
 * dependency chain (io/ -> sched/ -> mem/).
 *
 * Nothing here may call malloc: it runs inside the allocator, possibly before libc
 * has finished starting (libweft-malloc.so is asked for memory by ld.so itself).
 * A throw names the green thread it happened on through a function that sched/
 * installs (weft__set_throw_context): mem/ never calls up into sched/ by name.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "weft.h"
#include "weft/base.h"

struct weft_debug weft__debug;

static void write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* Set once by sched/ (weft_start); read by every throw. Release/acquire: a pointer
 * to code, published like any other (the function needs nothing else set up). */
static _Atomic(weft_throw_context_fn) throw_context;

void weft__set_throw_context(weft_throw_context_fn fn)
{
    atomic_store_explicit(&throw_context, fn, memory_order_release);
}

/* "<prefix><fmt...>", then " [in <context>]" when a context is given, on one line */
static void vprint(const char *prefix, bool context, const char *fmt, va_list ap)
{
    char buf[512];
    size_t len = strlen(prefix);
    memcpy(buf, prefix, len);
    int n = vsnprintf(buf + len, sizeof buf - len - 1, fmt, ap);
    if (n < 0)
        n = 0;
    len += (size_t)n < sizeof buf - len - 1 ? (size_t)n : sizeof buf - len - 2;
    weft_throw_context_fn ctx = context ? atomic_load_explicit(&throw_context, memory_order_acquire)
                                        : NULL;
    char who[160];
    size_t wn = ctx != NULL ? ctx(who, sizeof who) : 0;
    if (wn > 0 && wn < sizeof who && len + wn + 7 < sizeof buf) {
        memcpy(buf + len, " [in ", 5);
        memcpy(buf + len + 5, who, wn);
        buf[len + 5 + wn] = ']';
        len += wn + 6;
    }
    buf[len++] = '\n';
    write_all(2, buf, len);
}

void weft__printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprint("weft: ", false, fmt, ap);
    va_end(ap);
}

void weft__throwf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprint("weft: ", true, fmt, ap);
    va_end(ap);
    abort();
}

void weft__throw(const char *msg)
{
    weft__throwf("%s", msg);
}

/* ---- WEFT_DEBUG --------------------------------------------------------- */
extern char **environ;

static void parse_debug(const char *s)
{
    while (*s) {
        const char *name = s;
        size_t nlen = strcspn(s, "=,");
        int val = 1;
        s += nlen;
        if (*s == '=') {
            val = atoi(s + 1);
            s += 1 + strcspn(s + 1, ",");
        }
        if (nlen == 9 && memcmp(name, "allocfree", 9) == 0)
            weft__debug.allocfree = val;
        else if (nlen == 7 && memcmp(name, "migrate", 7) == 0)
            weft__debug.migrate = val;
        else if (nlen == 10 && memcmp(name, "schedtrace", 10) == 0)
            weft__debug.schedtrace = val;
        else if (nlen == 8 && memcmp(name, "deadlock", 8) == 0)
            weft__debug.deadlock = val ? 0 : -1;
        else if (nlen == 7 && memcmp(name, "pagemap", 7) == 0)
            weft__debug.pagemap = val ? 0 : -1;
        if (*s == ',')
            s++;
    }
}

/* environ may not be set yet when ld.so calls our malloc: then read /proc. */
static void debug_from_proc(void)
{
    char buf[16384];
    int fd = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/environ", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    size_t len = 0;
    for (;;) {
        ssize_t r = syscall(SYS_read, fd, buf + len, sizeof buf - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == sizeof buf - 1)
            break;
    }
    syscall(SYS_close, fd);
    buf[len] = 0;
    for (size_t i = 0; i < len; i += strlen(buf + i) + 1)
        if (strncmp(buf + i, "WEFT_DEBUG=", 11) == 0)
            parse_debug(buf + i + 11);
}

void weft__debug_init(void)
{
    static _Atomic int done;
    if (atomic_load_explicit(&done, memory_order_acquire))
        return;
    if (environ != NULL) {
        for (char **e = environ; *e; e++)
            if (strncmp(*e, "WEFT_DEBUG=", 11) == 0)
                parse_debug(*e + 11);
    } else {
        debug_from_proc();
    }
    /* release: the parsed flags are visible to whoever sees done */
    atomic_store_explicit(&done, 1, memory_order_release);
}

/* ---- futex lock ---------------------------------------------------------- */
void weft__futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

/* Wait at most ns nanoseconds (relative); returns early on a wake or a change. */
void weft__futex_wait_timeout(_Atomic uint32_t *addr, uint32_t val, int64_t ns)
{
    if (ns < 0) {
        weft__futex_wait(addr, val);
        return;
    }
    struct timespec ts = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, &ts, NULL, 0);
}

void weft__futex_wake(_Atomic uint32_t *addr, int n)
{
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

void weft__lock_slow(weft_lock *l)
{
    /* Spin a little: critical sections here are a few hundred instructions. */
    for (int i = 0; i < 100; i++) {
        uint32_t z = 0;
        if (atomic_load_explicit(&l->state, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&l->state, &z, 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return;
#if defined(__x86_64__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        __asm__ volatile("yield");
#endif
    }
    /* acquire: pairs with weft__unlock's release exchange */
    while (atomic_exchange_explicit(&l->state, 2, memory_order_acquire) != 0)
        weft__futex_wait(&l->state, 2);
}

void weft__unlock_slow(weft_lock *l)
{
    weft__futex_wake(&l->state, 1);
}

/* ---- weft_strerror ---------------------------------------------------------- */
const char *weft_strerror(int err)
{
    if (err >= 0)
        return "success";
    /* strerror_r's GNU form may return a static string and never allocates for known
     * codes; the table below covers the codes weft itself returns. */
    switch (-err) {
    case ENOMEM:    return "out of memory";
    case EINVAL:    return "invalid argument";
    case EAGAIN:    return "resource temporarily unavailable (would block)";
    case ETIMEDOUT: return "timed out";
    case ECANCELED: return "canceled";
    case EPIPE:     return "channel closed";
    case ENOSYS:    return "function not implemented";
    case EPERM:     return "operation not permitted";
    case EBADF:     return "bad file descriptor";
    case ENOENT:    return "no such file or directory";
    case EEXIST:    return "file exists";
    case EINTR:     return "interrupted";
    case ECONNREFUSED: return "connection refused";
    case ECONNRESET:   return "connection reset by peer";
    default:
        break;
    }
    static const char *const sys = "unknown error";
    const char *s = strerrordesc_np(-err);
    return s ? s : sys;
}
