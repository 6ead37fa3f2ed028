/*
 * sched/context.h -- switching between green-thread contexts (our gogo/mcall).
 *
 * A context is a stack pointer: weft__ctx_switch pushes the callee-saved registers and
 * its return address on the current stack, stores the stack pointer in from->sp, loads
 * to->sp and pops the same set. Everything else is caller-saved by the ABI, so the C
 * compiler has already spilled it. No ucontext: swapcontext makes a sigprocmask
 * system call on every switch.
 *   x86-64 SysV: rbx rbp r12-r15 (+ rsp, rip). Resumes with ret. A pop + indirect jmp
 *     variant (-DWEFT_CTX_JMP=1) avoids return-stack mispredictions in a bare ping-pong,
 *     but inside the scheduler every green thread resumes at the same call site, so ret
 *     predicts well there; measured in the yield benchmark (4 green threads, 1 P, median
 *     of 5): ret 19 ns per yield, jmp 30 ns. So ret is the default.
 *   aarch64 AAPCS64: x19-x28, x29 (fp), x30 (lr), sp, d8-d15.
 * Not saved: MXCSR and the x87 control word (x86-64), FPCR (aarch64). weft never changes
 * them per green thread, like Go and most fiber libraries; a green thread that changes
 * the rounding mode changes it for whatever runs next on that M.
 */
#ifndef WEFT_SCHED_CONTEXT_H
#define WEFT_SCHED_CONTEXT_H

struct weft_ctx {
    void *sp;
};

/* Save the current context in from, resume to. Returns when something switches back. */
__attribute__((visibility("hidden"))) void weft__ctx_switch(struct weft_ctx *from, struct weft_ctx *to);

/* Make ctx start fn(arg) on the stack whose highest address is stack_top, at its first
 * switch. fn must not return (if it does, weft__ctx_returned aborts). */
__attribute__((visibility("hidden"))) void weft__ctx_init(struct weft_ctx *ctx, void *stack_top,
                                                          void (*fn)(void *), void *arg);

__attribute__((visibility("hidden"), noreturn)) void weft__ctx_returned(void);
#endif
