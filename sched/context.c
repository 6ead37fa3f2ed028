/*
 * sched/context.c -- the initial frame of a fresh context: exactly what
 * weft__ctx_switch pops, with the trampoline as resume address (see context.h).
 */
#include <stdint.h>
#include <unistd.h>
#include "sched/context.h"

void weft__ctx_trampoline(void) __attribute__((visibility("hidden")));

void weft__ctx_init(struct weft_ctx *ctx, void *stack_top, void (*fn)(void *), void *arg)
{
    uintptr_t top = (uintptr_t)stack_top & ~(uintptr_t)15;
#if defined(__x86_64__)
    /* r15 r14 r13 r12 rbx rbp, resume address; after popping them rsp == top */
    uint64_t *sp = (uint64_t *)(top - 7 * 8);
    sp[0] = 0;
    sp[1] = 0;
    sp[2] = (uint64_t)(uintptr_t)arg;        /* r13 */
    sp[3] = (uint64_t)(uintptr_t)fn;         /* r12 */
    sp[4] = 0;
    sp[5] = 0;                               /* rbp */
    sp[6] = (uint64_t)(uintptr_t)weft__ctx_trampoline;
#elif defined(__aarch64__)
    /* x19..x30 then d8..d15, 160 bytes; after popping them sp == top */
    uint64_t *sp = (uint64_t *)(top - 160);
    for (int i = 0; i < 20; i++)
        sp[i] = 0;
    sp[0] = (uint64_t)(uintptr_t)fn;         /* x19 */
    sp[1] = (uint64_t)(uintptr_t)arg;        /* x20 */
    sp[11] = (uint64_t)(uintptr_t)weft__ctx_trampoline;   /* x30 */
#else
#error "weft: no context switch for this architecture"
#endif
    ctx->sp = sp;
}

void weft__ctx_returned(void)
{
    static const char msg[] = "weft: green thread entry returned\n";
    if (write(2, msg, sizeof msg - 1) < 0) {
        /* nothing more to do */
    }
    __builtin_trap();
}
