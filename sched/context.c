/*
 * sched/context.c -- the initial frame of a fresh context, and what happens if its entry
 * function returns.
 *
 * weft__ctx_init writes, just below the (16-byte aligned) stack top, exactly the frame
 * that weft__ctx_switch pops (layouts in context.h), with fn and arg in two callee-saved
 * slots and weft__ctx_trampoline (context_<arch>.S) as the resume address. The first
 * switch to the context therefore "returns" into the trampoline with sp == top, which
 * moves arg into the first argument register, zeroes the frame pointer and calls fn.
 * Who may call: anyone, on a context that is not running.
 */
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include "sched/context.h"

void weft__ctx_trampoline(void) __attribute__((visibility("hidden")));

void weft__ctx_init(struct weft_ctx *ctx, void *stack_top, void (*fn)(void *), void *arg)
{
    uintptr_t top = (uintptr_t)stack_top & ~(uintptr_t)15;
#if defined(__x86_64__)
    /* r15 r14 r13 r12 rbx rbp, resume address: 56 bytes; popped, rsp == top */
    uint64_t *sp = (uint64_t *)(top - 7 * 8);
    sp[0] = 0;                                            /* r15 */
    sp[1] = 0;                                            /* r14 */
    sp[2] = (uint64_t)(uintptr_t)arg;                     /* r13 */
    sp[3] = (uint64_t)(uintptr_t)fn;                      /* r12 */
    sp[4] = 0;                                            /* rbx */
    sp[5] = 0;                                            /* rbp */
    sp[6] = (uint64_t)(uintptr_t)weft__ctx_trampoline;    /* resume address */
#elif defined(__aarch64__)
    /* x19..x30 then d8..d15: 160 bytes; popped, sp == top */
    uint64_t *sp = (uint64_t *)(top - 160);
    for (int i = 0; i < 20; i++)
        sp[i] = 0;
    sp[0] = (uint64_t)(uintptr_t)fn;                      /* x19 */
    sp[1] = (uint64_t)(uintptr_t)arg;                     /* x20 */
    sp[11] = (uint64_t)(uintptr_t)weft__ctx_trampoline;   /* x30: resume address */
#else
#error "weft: no context switch for this architecture (sched/context_<arch>.S)"
#endif
    /* atomic: another P's run-queue prefetch (runq.c) may peek at a stale G's sp */
    __atomic_store_n(&ctx->sp, (void *)sp, __ATOMIC_RELAXED);
}

/* On the dead green thread's stack, which may be small: no stdio, no allocation. */
void weft__ctx_returned(void)
{
    static const char msg[] = "weft: green thread entry returned\n";
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
        /* nothing better to do: we abort anyway */
    }
    abort();
}
