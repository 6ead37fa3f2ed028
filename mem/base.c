/*
 * mem/base.c -- the runtime's words to the user: throw (Go's runtime.throw), an
 * allocation-free printf to stderr, and weft_strerror. With mem/options.c (WEFT_DEBUG)
 * and mem/lock.c (the futex lock) it implements include/weft/base.h: what every module
 * needs, depending on nothing of weft's. It lives in mem/ because mem/ is the bottom
 * of the dependency chain (io/ -> sched/ -> mem/).
 *
 * Nothing here may call malloc: it runs inside the allocator, possibly before libc
 * has finished starting (libweft-malloc.so is asked for memory by ld.so itself).
 * A throw names the green thread it happened on through a function that sched/
 * installs (weft__throw_set_context): mem/ never calls up into sched/ by name.
 * Callers: every module, on any thread, with any lock held (throw and printf take
 * none); weft_strerror is public.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weft.h"
#include "weft/base.h"

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

void weft__throw_set_context(weft_throw_context_fn fn)
{
    atomic_store_explicit(&throw_context, fn, REL);
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
    weft_throw_context_fn ctx = context ? atomic_load_explicit(&throw_context, ACQ)
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
