/*
 * sched/san.h -- telling ASan, TSan and Valgrind about green-thread stacks and switches.
 * Without this ASan reports nonsense (false stack-buffer overflows, leaks of fake
 * frames) and Valgrind thinks every switch is a stack overflow. No cost otherwise.
 * Callers: proc.c (switches), g.c (stacks), start.c, dump.c (racy reads on purpose).
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

/* ThreadSanitizer: each struct g is a TSan fiber, so that TSan keeps a call stack and a
 * clock per G and sees each switch (a switch also orders what the G did before it with
 * what the next one does after: the same OS thread). A fiber costs TSan milliseconds
 * to make (a large zeroed context): it stays with its struct g, dead or alive, and a
 * new G on a reused struct g continues it (its previous life's exit reached the reuse
 * through the scheduler anyway). Freed with the struct g at teardown. */
#ifdef WEFT_TSAN
#include <sanitizer/tsan_interface.h>
/* A G's first frames and its exit never return: instrumented, each life would leave
 * its frames on its fiber's shadow call stack, which a reused fiber would pile up until
 * TSan dies (at 64 k frames). The switch, a G's entry and its exit carry no TSan
 * instrumentation (clang keeps function entry and exit under no_sanitize). */
#if defined(__clang__)
#define WEFT_TSAN_NOFRAME __attribute__((disable_sanitizer_instrumentation))
#else
#define WEFT_TSAN_NOFRAME __attribute__((no_sanitize_thread))
#endif
static inline void weft__tsan_fiber_new(struct g *gp)
{
    if (gp->tsan_fiber == NULL)
        gp->tsan_fiber = __tsan_create_fiber(0);
}
static inline void weft__tsan_fiber_free(struct g *gp)   /* not the running one */
{
    if (gp->tsan_fiber != NULL)
        __tsan_destroy_fiber(gp->tsan_fiber);
    gp->tsan_fiber = NULL;
}
static inline void weft__tsan_switch(struct g *to)        /* right before the switch */
{
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
}
/* Reads that race on purpose (the dump: a thread may change while it is printed). */
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
/* Happens-before that goes through the kernel (an io_uring submission and its
 * completion), which TSan cannot see: released by the submitter, acquired by the
 * reaper. */
static inline void weft__tsan_release(void *addr) { __tsan_release(addr); }
static inline void weft__tsan_acquire(void *addr) { __tsan_acquire(addr); }
static inline void weft__tsan_racy_reads_begin(void) { AnnotateIgnoreReadsBegin(__FILE__, __LINE__); }
static inline void weft__tsan_racy_reads_end(void) { AnnotateIgnoreReadsEnd(__FILE__, __LINE__); }
#else
static inline void weft__tsan_release(void *addr) { (void)addr; }
static inline void weft__tsan_acquire(void *addr) { (void)addr; }
static inline void weft__tsan_racy_reads_begin(void) { }
static inline void weft__tsan_racy_reads_end(void) { }
#define WEFT_TSAN_NOFRAME
static inline void weft__tsan_fiber_new(struct g *gp) { (void)gp; }
static inline void weft__tsan_fiber_free(struct g *gp) { (void)gp; }
static inline void weft__tsan_switch(struct g *to) { (void)to; }
#endif

/* g0's stack is the thread's own: ASan needs its bounds to switch back to it. */
static inline void weft__san_thread_start(struct g *g0)
{
#ifdef WEFT_TSAN
    g0->tsan_fiber = __tsan_get_current_fiber();
#endif
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
