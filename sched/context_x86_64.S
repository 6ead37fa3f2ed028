/*
 * sched/context_x86_64.S -- weft__ctx_switch and the first-run trampoline, x86-64 SysV.
 * Frame layout, resume variants (ret / pop + jmp), CET and what is not saved: context.h.
 * Assembled on every architecture; empty except on x86-64.
 */
#include "sched/context.h"

#if defined(__x86_64__)

#if defined(__CET__) && (__CET__ & 1)
#define ENDBR   endbr64
#else
#define ENDBR
#endif

/* void weft__ctx_switch(struct weft_ctx *from, struct weft_ctx *to)    rdi = from, rsi = to
 * The CFI stays right across the stack swap: both stacks hold the same frame shape, so
 * until the pops a debugger sees weft__ctx_switch called from `to`'s resume site. */
        .text
        .globl  weft__ctx_switch
        .hidden weft__ctx_switch
        .type   weft__ctx_switch, @function
        .p2align 4
weft__ctx_switch:
        .cfi_startproc
        ENDBR
        pushq   %rbp
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rbp, 0
        pushq   %rbx
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rbx, 0
        pushq   %r12
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r12, 0
        pushq   %r13
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r13, 0
        pushq   %r14
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r14, 0
        pushq   %r15
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r15, 0
        movq    %rsp, (%rdi)            /* from->sp */
        movq    (%rsi), %rsp            /* to->sp: same frame shape, same CFI */
        popq    %r15
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r15
        popq    %r14
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r14
        popq    %r13
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r13
        popq    %r12
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r12
        popq    %rbx
        .cfi_adjust_cfa_offset -8
        .cfi_restore %rbx
        popq    %rbp
        .cfi_adjust_cfa_offset -8
        .cfi_restore %rbp
#if WEFT_CTX_RESUME_JMP
        popq    %rcx                    /* resume address; rcx is caller-saved */
        .cfi_adjust_cfa_offset -8
        .cfi_register %rip, %rcx
#if defined(__CET__) && (__CET__ & 1)
        notrack jmpq *%rcx              /* a return site, not an endbr64 target */
#else
        jmpq    *%rcx
#endif
#else
        ret
#endif
        .cfi_endproc
        .size   weft__ctx_switch, .-weft__ctx_switch

/* A fresh context "returns" here from its first switch, with r12 = fn, r13 = arg and
 * rsp == stack_top (16-byte aligned), so the call leaves rsp + 8 16-byte aligned at fn's
 * entry as the ABI requires. rbp = 0 and an undefined return address end backtraces. */
        .globl  weft__ctx_trampoline
        .hidden weft__ctx_trampoline
        .type   weft__ctx_trampoline, @function
        .p2align 4
weft__ctx_trampoline:
        .cfi_startproc
        .cfi_undefined %rip
        ENDBR
        xorl    %ebp, %ebp
        movq    %r13, %rdi
        callq   *%r12
        callq   weft__ctx_returned      /* fn returned: print, abort */
        ud2
        .cfi_endproc
        .size   weft__ctx_trampoline, .-weft__ctx_trampoline

#if defined(__CET__) && (__CET__ & 1)
/* GNU_PROPERTY_X86_FEATURE_1_AND = IBT only: see context.h (no SHSTK). */
        .section .note.gnu.property, "a"
        .p2align 3
        .long   4                       /* name size */
        .long   16                      /* descriptor size */
        .long   5                       /* NT_GNU_PROPERTY_TYPE_0 */
        .asciz  "GNU"
        .long   0xc0000002              /* GNU_PROPERTY_X86_FEATURE_1_AND */
        .long   4
        .long   1                       /* GNU_PROPERTY_X86_FEATURE_1_IBT */
        .p2align 3
#endif

#endif /* __x86_64__ */
        .section .note.GNU-stack, "", %progbits
