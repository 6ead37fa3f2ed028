/*
 * mem/options.c -- the runtime knobs: WEFT_DEBUG=name=value,... parsed once into
 * weft__debug (like Go's GODEBUG, mimalloc's options.c). Every option of every module
 * is read here, the scheduler's too: mem/ is the bottom of the dependency chain
 * (io/ -> sched/ -> mem/), and the allocator needs its options before anything runs.
 *
 * Options: allocfree (mem: poison freed memory, check every free), pagemap=0 (mem: no
 * page class map), migrate, schedtrace=N, deadlock=0 (sched). Unknown names are
 * ignored. The struct and its meaning are in include/weft/base.h.
 *
 * Invariants: weft__debug is written by weft__debug_init only, before its done flag is
 *   published (release); every reader runs after weft__mem_init (mem/mem.h), whose
 *   slow path (mem/init.c) calls weft__debug_init once, under its lock.
 * Callers: weft__mem_init_slow only. Never allocates, and needs nothing of libc that
 *   is not ready before libc is initialised (libweft-malloc.so's first malloc may come
 *   from ld.so): environ when it is set, else /proc/self/environ read by raw syscalls.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "weft/base.h"

struct weft_debug weft__debug;

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
    if (atomic_load_explicit(&done, ACQ))
        return;
    if (environ != NULL) {
        for (char **e = environ; *e; e++)
            if (strncmp(*e, "WEFT_DEBUG=", 11) == 0)
                parse_debug(*e + 11);
    } else {
        debug_from_proc();
    }
    /* release: the parsed flags are visible to whoever sees done */
    atomic_store_explicit(&done, 1, REL);
}
