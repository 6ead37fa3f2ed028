/*
 * sched/context.h -- switching between green-thread contexts (our gogo/mcall).
 *
 * A context is one stack pointer. weft__ctx_switch(from, to) pushes the callee-saved
 * registers on the current stack, stores the stack pointer in from->sp, loads to->sp, pops
 * the same set and resumes where `to` last called weft__ctx_switch (or, the first time, in
 * the trampoline that weft__ctx_init set up). Every other register is caller-saved by the
 * ABI, so the compiler has already spilled whatever it needs across the call: the switch is
 * an ordinary function call as far as C is concerned.
 *
 *   x86-64 SysV  rbx rbp r12 r13 r14 r15, rsp, and the resume address. The xmm registers
 *                are all caller-saved.  Frame, from to->sp upwards:
 *                  r15 r14 r13 r12 rbx rbp resume-address          (7 x 8 bytes)
 *   aarch64      AAPCS64: x19-x28, x29 (fp), x30 (lr), sp, and d8-d15 (only the low 64
 *                bits of v8-v15 are callee-saved). Frame, from to->sp upwards:
 *                  x19 ... x28 x29 x30 d8 ... d15                  (20 x 8 = 160 bytes)
 *
 * Not saved: MXCSR and the x87 control word (x86-64), FPCR/FPSR (aarch64). weft never
 * changes them per green thread, like Go and most fiber libraries (Boost.Context's fcontext
 * does save MXCSR and the x87 control word: stmxcsr/fnstcw/ldmxcsr/fldcw on every switch,
 * tens of cycles). So the floating-point environment belongs to the M: a green thread that
 * changes the rounding mode or the exception masks changes them for whatever runs next on
 * that OS thread, and must restore them before it can be switched away.
 *
 * Why not ucontext: swapcontext saves and restores the signal mask with a sigprocmask
 * system call on every switch, and saves far more state (the whole FP/SSE area) than needed.
 * Why not setjmp/longjmp: glibc mangles the saved stack pointer (PTR_MANGLE) and
 * _FORTIFY_SOURCE's longjmp_chk rejects jumps onto another stack.
 *
 * How x86-64 resumes (the only design choice here). `ret` pops the resume address and is
 * predicted by the return-stack buffer (RSB), which expects the address pushed by the
 * *current* context's call, not the target's: a bare ping-pong between two call sites
 * mispredicts on every switch. The alternative pops the resume address and jumps to it
 * (`jmp *%rcx`), predicted by the indirect-branch predictor, which learns the pattern;
 * but every such switch leaves one call without its ret, so the RSB is off by one and the
 * resumed code's next returns up its call chain mispredict instead. Measured on this
 * project's machines (Xeon, 2 vCPUs, shared; each figure the lowest of 3-5 medians of 7):
 *                             ret    pop+jmp
 *     bare ping-pong          12.3     3.6    ns per switch  tests/bench/ctx_switch (bare)
 *     switch 3 calls deep     16.2    34.4    ns per switch  tests/bench/ctx_switch (deep)
 *     weft_yield, 4 Gs, 1 P   16.0    30.3    ns per yield   tests/bench/sched_bench yield
 * The bare figure is the one DESIGN.md quotes (8 vs 2.7 ns there); but a green thread
 * always returns from the function that switched (weft_yield, a channel operation),
 * which is where pop + jmp loses, and inside the scheduler every G resumes at the same
 * few call sites, so ret is mostly predicted. Default: ret. Choose with -DWEFT_CTX_JMP=1
 * (pop + jmp) or -DWEFT_CTX_RET=1 (ret, explicitly), for the library, its tests and its
 * benchmarks alike; WEFT_CTX_RESUME_JMP below says which one a file was built with.
 * aarch64 always resumes with ret (br x30 has the same return-stack problem).
 *
 * CET: with -fcf-protection the x86-64 entry points start with endbr64 and the jmp
 * variant jumps with `notrack` (resume addresses are return sites, not endbr targets), so
 * the objects are marked IBT-compatible. Shadow stacks (SHSTK) are not supported: a switch
 * resumes at an address that is not on the shadow stack, so the objects do not claim
 * SHSTK and the linker drops it from whatever links them. aarch64: with
 * -mbranch-protection=bti the entry points start with `bti c` and the objects are marked
 * BTI-compatible; pointer authentication needs nothing here (resume addresses are never
 * signed: each C function signs and checks its own lr in its own frame).
 *
 * Sanitizers: this layer does not announce switches; callers do (sched/san.h). Under
 * ASan a stack reused after its context was abandoned mid-call still carries the shadow
 * of that context's frames: unpoison it before weft__ctx_init (tests/test_context.c does).
 * Who may call: any thread, on any stack; `to` must be a context saved by
 * weft__ctx_switch or fresh from weft__ctx_init, and not running anywhere else.
 * from == to is allowed (returns at once).
 */
#ifndef WEFT_SCHED_CONTEXT_H
#define WEFT_SCHED_CONTEXT_H

#if defined(WEFT_CTX_RET) && WEFT_CTX_RET && defined(WEFT_CTX_JMP) && WEFT_CTX_JMP
#error "weft: define at most one of WEFT_CTX_RET and WEFT_CTX_JMP"
#endif
#if defined(WEFT_CTX_JMP) && WEFT_CTX_JMP
#define WEFT_CTX_RESUME_JMP 1       /* x86-64: pop the resume address, jmp to it */
#else
#define WEFT_CTX_RESUME_JMP 0       /* ret: the default, or -DWEFT_CTX_RET=1 */
#endif

#ifndef __ASSEMBLER__

struct weft_ctx {
    void *sp;   /* everything else lives on the stack; NULL until weft__ctx_init */
};

/* Save the callee-saved registers of the calling thread of control on its stack, store
 * its stack pointer in from->sp, load to->sp, restore that context's registers and
 * resume it. Returns when something switches back to `from`. */
__attribute__((visibility("hidden"))) void weft__ctx_switch(struct weft_ctx *from,
                                                            struct weft_ctx *to);

/* Make ctx start fn(arg) on the stack whose highest address is stack_top (16-byte
 * aligned by the callee) the first time it is switched to. fn must never return (if it
 * does, the trampoline calls weft__ctx_returned(), which aborts). Writes 56 (x86-64) or
 * 160 (aarch64) bytes just below stack_top; fn starts with the ABI's entry alignment, a
 * zero frame pointer and no caller frame in CFI (backtraces stop there). */
__attribute__((visibility("hidden"))) void weft__ctx_init(struct weft_ctx *ctx,
                                                          void *stack_top,
                                                          void (*fn)(void *), void *arg);

/* Called by the trampoline if fn returns: "weft: green thread entry returned", abort(). */
__attribute__((visibility("hidden"), noreturn)) void weft__ctx_returned(void);

#endif /* !__ASSEMBLER__ */
#endif
