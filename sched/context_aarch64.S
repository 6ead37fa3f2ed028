/* sched/context_aarch64.S -- weft__ctx_switch and the first-run trampoline (see context.h). */
#if defined(__aarch64__)
        .text
        .globl  weft__ctx_switch
        .hidden weft__ctx_switch
        .type   weft__ctx_switch, %function
        .p2align 4
weft__ctx_switch:                       /* x0 = from, x1 = to */
        .cfi_startproc
        sub     sp, sp, #160
        stp     x19, x20, [sp, #0]
        stp     x21, x22, [sp, #16]
        stp     x23, x24, [sp, #32]
        stp     x25, x26, [sp, #48]
        stp     x27, x28, [sp, #64]
        stp     x29, x30, [sp, #80]
        stp     d8, d9, [sp, #96]
        stp     d10, d11, [sp, #112]
        stp     d12, d13, [sp, #128]
        stp     d14, d15, [sp, #144]
        mov     x9, sp
        str     x9, [x0]
        ldr     x9, [x1]
        mov     sp, x9
        ldp     x19, x20, [sp, #0]
        ldp     x21, x22, [sp, #16]
        ldp     x23, x24, [sp, #32]
        ldp     x25, x26, [sp, #48]
        ldp     x27, x28, [sp, #64]
        ldp     x29, x30, [sp, #80]
        ldp     d8, d9, [sp, #96]
        ldp     d10, d11, [sp, #112]
        ldp     d12, d13, [sp, #128]
        ldp     d14, d15, [sp, #144]
        add     sp, sp, #160
        ret
        .cfi_endproc
        .size   weft__ctx_switch, .-weft__ctx_switch

/* A fresh context "returns" here with x19 = fn, x20 = arg and sp 16-byte aligned. */
        .globl  weft__ctx_trampoline
        .hidden weft__ctx_trampoline
        .type   weft__ctx_trampoline, %function
        .p2align 4
weft__ctx_trampoline:
        .cfi_startproc
        .cfi_undefined x30              /* backtraces end here */
        mov     x29, #0
        mov     x0, x20
        blr     x19
        bl      weft__ctx_returned
        brk     #0
        .cfi_endproc
        .size   weft__ctx_trampoline, .-weft__ctx_trampoline
#endif
        .section .note.GNU-stack,"",%progbits
