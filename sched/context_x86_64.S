/* sched/context_x86_64.S -- weft__ctx_switch and the first-run trampoline (see context.h). */
#if defined(__x86_64__)
#ifdef __CET__
#define ENDBR endbr64
#else
#define ENDBR
#endif
        .text
        .globl  weft__ctx_switch
        .hidden weft__ctx_switch
        .type   weft__ctx_switch, @function
        .p2align 4
weft__ctx_switch:                       /* rdi = from, rsi = to */
        .cfi_startproc
        ENDBR
        pushq   %rbp
        pushq   %rbx
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        movq    %rsp, (%rdi)
        movq    (%rsi), %rsp
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbx
        popq    %rbp
#if defined(WEFT_CTX_JMP) && WEFT_CTX_JMP
        popq    %rcx                    /* resume address */
        jmpq    *%rcx
#else
        ret
#endif
        .cfi_endproc
        .size   weft__ctx_switch, .-weft__ctx_switch

/* A fresh context "returns" here with r12 = fn, r13 = arg and rsp 16-byte aligned. */
        .globl  weft__ctx_trampoline
        .hidden weft__ctx_trampoline
        .type   weft__ctx_trampoline, @function
        .p2align 4
weft__ctx_trampoline:
        .cfi_startproc
        .cfi_undefined rip              /* backtraces end here */
        ENDBR
        xorl    %ebp, %ebp
        movq    %r13, %rdi
        callq   *%r12
        callq   weft__ctx_returned
        ud2
        .cfi_endproc
        .size   weft__ctx_trampoline, .-weft__ctx_trampoline
#endif
        .section .note.GNU-stack,"",%progbits
