/*
 * sched/san.h -- telling ASan and Valgrind about green-thread stacks and switches.
 * Without this ASan reports nonsense (false stack-buffer overflows, leaks of fake
 * frames) and Valgrind thinks every switch is a stack overflow. No cost otherwise.
 */
#ifndef WEFT_SCHED_SAN_H
#define WEFT_SCHED_SAN_H
#include "sched/sched.h"

#if defined(__SANITIZE_ADDRESS__)
#define WEFT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT_ASAN 1
#endif
#endif

#ifdef WEFT_ASAN
#include <sanitizer/common_interface_defs.h>
/* Before switching from `from` to `to`; an exiting G passes dying = 1 so ASan drops
 * its fake stack. */
static inline void weft__san_start_switch(struct g *from, struct g *to, int dying)
{
    __sanitizer_start_switch_fiber(dying ? NULL : &from->asan_fake, (const void *)to->stack.lo,
                                   to->stack.hi - to->stack.lo);
}
/* First thing on the resumed context (self is NULL for a fresh G). */
static inline void weft__san_finish_switch(struct g *self)
{
    __sanitizer_finish_switch_fiber(self != NULL ? self->asan_fake : NULL, NULL, NULL);
}
/* A pooled stack may carry ASan marks of frames that never returned (a G dropped by
 * weft_run's end): clear them before the stack is used again. */
#include <sanitizer/asan_interface.h>
static inline void weft__san_stack_reuse(uintptr_t lo, uintptr_t hi)
{
    __asan_unpoison_memory_region((void *)lo, hi - lo);
}
#else
static inline void weft__san_stack_reuse(uintptr_t lo, uintptr_t hi)
{
    (void)lo, (void)hi;
}
static inline void weft__san_start_switch(struct g *from, struct g *to, int dying)
{
    (void)from, (void)to, (void)dying;
}
static inline void weft__san_finish_switch(struct g *self)
{
    (void)self;
}
#endif

/* g0's stack is the thread's own: ASan needs its bounds to switch back to it. */
static inline void weft__san_thread_start(struct g *g0)
{
#ifdef WEFT_ASAN
    pthread_attr_t attr;
    void *addr;
    size_t size;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
            g0->stack.lo = (uintptr_t)addr;
            g0->stack.hi = (uintptr_t)addr + size;
        }
        pthread_attr_destroy(&attr);
    }
#else
    (void)g0;
#endif
}

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define WEFT_VALGRIND 1
#endif
#endif

#ifdef WEFT_VALGRIND
/* RUNNING_ON_VALGRIND, asked once (weft_start): each client request is a dozen
 * instructions, a spawn-join made two */
WEFT_HIDDEN extern int weft__on_valgrind;
#endif

static inline unsigned weft__valgrind_stack_register(uintptr_t lo, uintptr_t hi)
{
#ifdef WEFT_VALGRIND
    return weft__on_valgrind ? VALGRIND_STACK_REGISTER(lo, hi) : 0;
#else
    (void)lo, (void)hi;
    return 0;
#endif
}

static inline void weft__valgrind_stack_deregister(unsigned id)
{
#ifdef WEFT_VALGRIND
    if (weft__on_valgrind)
        VALGRIND_STACK_DEREGISTER(id);
#else
    (void)id;
#endif
}
#endif
