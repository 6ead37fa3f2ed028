/*
 * tests/test_context.c -- sched/context.h: weft__ctx_switch and weft__ctx_init, no scheduler.
 *
 * Registers are checked twice: from assembly (check_switch loads known values into every
 * callee-saved register, switches away and back, and compares: exact, whatever the
 * compiler does), and from C (many live integer and floating-point values across
 * switches to a context that scribbles over every callee-saved register first). The
 * entry of a fresh context is probed from assembly too (stack pointer, frame pointer).
 * Stacks are mmap'd with a PROT_NONE guard page below, so an overflow faults at once.
 * Under ASan every switch is announced (__sanitizer_start/finish_switch_fiber), as the
 * scheduler does (sched/san.h); the context layer itself knows nothing of sanitizers.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "sched/context.h"
#include "tests/common.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifdef TEST_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

/* ---- assembly helpers ----------------------------------------------------------------------- */
/* check_switch(from, to): put known values in every callee-saved register, switch, and on
 *   return report which ones changed (a bit mask; 0 = all intact).
 * clobber_switch(from, to): put garbage in every callee-saved register, then switch; its
 *   own caller's registers are saved and restored around that. */
int test_ctx_check_switch(struct weft_ctx *from, struct weft_ctx *to);
void test_ctx_clobber_switch(struct weft_ctx *from, struct weft_ctx *to);
/* entry_probe(arg): a context entry that records sp and fp as it finds them, then
 * tail-calls probe_entry_c(arg) with the stack untouched. */
void test_ctx_entry_probe(void *arg);
void test_ctx_probe_entry_c(void *arg);
uintptr_t test_ctx_probe_sp, test_ctx_probe_fp;

#if defined(__x86_64__)
__asm__(
    "        .text\n"
    "        .globl test_ctx_check_switch\n"
    "        .hidden test_ctx_check_switch\n"
    "        .type test_ctx_check_switch, @function\n"
    "        .p2align 4\n"
    "test_ctx_check_switch:\n"
    "        pushq %rbp\n pushq %rbx\n pushq %r12\n pushq %r13\n pushq %r14\n pushq %r15\n"
    "        subq $8, %rsp\n"
    "        movabs $0x0101010101010101, %rbx\n"
    "        movabs $0x0202020202020202, %rbp\n"
    "        movabs $0x0303030303030303, %r12\n"
    "        movabs $0x0404040404040404, %r13\n"
    "        movabs $0x0505050505050505, %r14\n"
    "        movabs $0x0606060606060606, %r15\n"
    "        call weft__ctx_switch\n"
    "        xorl %eax, %eax\n"
    "        movabs $0x0101010101010101, %rcx\n cmpq %rcx, %rbx\n je 1f\n orl $1, %eax\n1:\n"
    "        movabs $0x0202020202020202, %rcx\n cmpq %rcx, %rbp\n je 1f\n orl $2, %eax\n1:\n"
    "        movabs $0x0303030303030303, %rcx\n cmpq %rcx, %r12\n je 1f\n orl $4, %eax\n1:\n"
    "        movabs $0x0404040404040404, %rcx\n cmpq %rcx, %r13\n je 1f\n orl $8, %eax\n1:\n"
    "        movabs $0x0505050505050505, %rcx\n cmpq %rcx, %r14\n je 1f\n orl $16, %eax\n1:\n"
    "        movabs $0x0606060606060606, %rcx\n cmpq %rcx, %r15\n je 1f\n orl $32, %eax\n1:\n"
    "        addq $8, %rsp\n"
    "        popq %r15\n popq %r14\n popq %r13\n popq %r12\n popq %rbx\n popq %rbp\n"
    "        ret\n"
    "        .size test_ctx_check_switch, .-test_ctx_check_switch\n"
    "\n"
    "        .globl test_ctx_clobber_switch\n"
    "        .hidden test_ctx_clobber_switch\n"
    "        .type test_ctx_clobber_switch, @function\n"
    "        .p2align 4\n"
    "test_ctx_clobber_switch:\n"
    "        pushq %rbp\n pushq %rbx\n pushq %r12\n pushq %r13\n pushq %r14\n pushq %r15\n"
    "        subq $8, %rsp\n"
    "        movabs $0xdeadbeefdeadbee1, %rbx\n"
    "        movabs $0xdeadbeefdeadbee2, %rbp\n"
    "        movabs $0xdeadbeefdeadbee3, %r12\n"
    "        movabs $0xdeadbeefdeadbee4, %r13\n"
    "        movabs $0xdeadbeefdeadbee5, %r14\n"
    "        movabs $0xdeadbeefdeadbee6, %r15\n"
    "        call weft__ctx_switch\n"
    "        addq $8, %rsp\n"
    "        popq %r15\n popq %r14\n popq %r13\n popq %r12\n popq %rbx\n popq %rbp\n"
    "        ret\n"
    "        .size test_ctx_clobber_switch, .-test_ctx_clobber_switch\n"
    "\n"
    "        .globl test_ctx_entry_probe\n"
    "        .hidden test_ctx_entry_probe\n"
    "        .type test_ctx_entry_probe, @function\n"
    "        .p2align 4\n"
    "test_ctx_entry_probe:\n"
#if defined(__CET__) && (__CET__ & 1)
    "        endbr64\n"
#endif
    "        movq %rsp, test_ctx_probe_sp(%rip)\n"
    "        movq %rbp, test_ctx_probe_fp(%rip)\n"
    "        jmp test_ctx_probe_entry_c\n"
    "        .size test_ctx_entry_probe, .-test_ctx_entry_probe\n");
#define CALLEE_SAVED_INT 6      /* bits in check_switch's mask */
#elif defined(__aarch64__)
__asm__(
    "        .text\n"
    "        .globl test_ctx_check_switch\n"
    "        .hidden test_ctx_check_switch\n"
    "        .type test_ctx_check_switch, %function\n"
    "        .p2align 4\n"
    "test_ctx_check_switch:\n"
    "        stp x29, x30, [sp, #-160]!\n"
    "        stp x19, x20, [sp, #16]\n stp x21, x22, [sp, #32]\n stp x23, x24, [sp, #48]\n"
    "        stp x25, x26, [sp, #64]\n stp x27, x28, [sp, #80]\n"
    "        stp d8, d9, [sp, #96]\n stp d10, d11, [sp, #112]\n"
    "        stp d12, d13, [sp, #128]\n stp d14, d15, [sp, #144]\n"
    "        mov x19, #0x1901\n mov x20, #0x2001\n mov x21, #0x2101\n mov x22, #0x2201\n"
    "        mov x23, #0x2301\n mov x24, #0x2401\n mov x25, #0x2501\n mov x26, #0x2601\n"
    "        mov x27, #0x2701\n mov x28, #0x2801\n mov x29, #0x2901\n"
    "        mov x9, #0x0801\n fmov d8, x9\n  mov x9, #0x0901\n fmov d9, x9\n"
    "        mov x9, #0x1001\n fmov d10, x9\n mov x9, #0x1101\n fmov d11, x9\n"
    "        mov x9, #0x1201\n fmov d12, x9\n mov x9, #0x1301\n fmov d13, x9\n"
    "        mov x9, #0x1401\n fmov d14, x9\n mov x9, #0x1501\n fmov d15, x9\n"
    "        bl weft__ctx_switch\n"
    "        mov w0, #0\n"
    "        mov x9, #0x1901\n cmp x19, x9\n b.eq 1f\n orr w0, w0, #0x1\n1:\n"
    "        mov x9, #0x2001\n cmp x20, x9\n b.eq 1f\n orr w0, w0, #0x2\n1:\n"
    "        mov x9, #0x2101\n cmp x21, x9\n b.eq 1f\n orr w0, w0, #0x4\n1:\n"
    "        mov x9, #0x2201\n cmp x22, x9\n b.eq 1f\n orr w0, w0, #0x8\n1:\n"
    "        mov x9, #0x2301\n cmp x23, x9\n b.eq 1f\n orr w0, w0, #0x10\n1:\n"
    "        mov x9, #0x2401\n cmp x24, x9\n b.eq 1f\n orr w0, w0, #0x20\n1:\n"
    "        mov x9, #0x2501\n cmp x25, x9\n b.eq 1f\n orr w0, w0, #0x40\n1:\n"
    "        mov x9, #0x2601\n cmp x26, x9\n b.eq 1f\n orr w0, w0, #0x80\n1:\n"
    "        mov x9, #0x2701\n cmp x27, x9\n b.eq 1f\n orr w0, w0, #0x100\n1:\n"
    "        mov x9, #0x2801\n cmp x28, x9\n b.eq 1f\n orr w0, w0, #0x200\n1:\n"
    "        mov x9, #0x2901\n cmp x29, x9\n b.eq 1f\n orr w0, w0, #0x400\n1:\n"
    "        fmov x10, d8\n  mov x9, #0x0801\n cmp x10, x9\n b.eq 1f\n orr w0, w0, #0x800\n1:\n"
    "        fmov x10, d9\n  mov x9, #0x0901\n cmp x10, x9\n b.eq 1f\n orr w0, w0, #0x1000\n1:\n"
    "        fmov x10, d10\n mov x9, #0x1001\n cmp x10, x9\n b.eq 1f\n orr w0, w0, #0x2000\n1:\n"
    "        fmov x10, d11\n mov x9, #0x1101\n cmp x10, x9\n b.eq 1f\n orr w0, w0, #0x4000\n1:\n"
    "        fmov x10, d12\n mov x9, #0x1201\n cmp x10, x9\n b.eq 1f\n orr w0, w0, #0x8000\n1:\n"
    "        fmov x10, d13\n mov x9, #0x1301\n cmp x10, x9\n b.eq 1f\n orr w0, w0, #0x10000\n1:\n"
    "        fmov x10, d14\n mov x9, #0x1401\n cmp x10, x9\n b.eq 1f\n orr w0, w0, #0x20000\n1:\n"
    "        fmov x10, d15\n mov x9, #0x1501\n cmp x10, x9\n b.eq 1f\n orr w0, w0, #0x40000\n1:\n"
    "        ldp x19, x20, [sp, #16]\n ldp x21, x22, [sp, #32]\n ldp x23, x24, [sp, #48]\n"
    "        ldp x25, x26, [sp, #64]\n ldp x27, x28, [sp, #80]\n"
    "        ldp d8, d9, [sp, #96]\n ldp d10, d11, [sp, #112]\n"
    "        ldp d12, d13, [sp, #128]\n ldp d14, d15, [sp, #144]\n"
    "        ldp x29, x30, [sp], #160\n"
    "        ret\n"
    "        .size test_ctx_check_switch, .-test_ctx_check_switch\n"
    "\n"
    "        .globl test_ctx_clobber_switch\n"
    "        .hidden test_ctx_clobber_switch\n"
    "        .type test_ctx_clobber_switch, %function\n"
    "        .p2align 4\n"
    "test_ctx_clobber_switch:\n"
    "        stp x29, x30, [sp, #-160]!\n"
    "        stp x19, x20, [sp, #16]\n stp x21, x22, [sp, #32]\n stp x23, x24, [sp, #48]\n"
    "        stp x25, x26, [sp, #64]\n stp x27, x28, [sp, #80]\n"
    "        stp d8, d9, [sp, #96]\n stp d10, d11, [sp, #112]\n"
    "        stp d12, d13, [sp, #128]\n stp d14, d15, [sp, #144]\n"
    "        mov x19, #0xdead\n mov x20, #0xdead\n mov x21, #0xdead\n mov x22, #0xdead\n"
    "        mov x23, #0xdead\n mov x24, #0xdead\n mov x25, #0xdead\n mov x26, #0xdead\n"
    "        mov x27, #0xdead\n mov x28, #0xdead\n mov x29, #0xdead\n"
    "        fmov d8, #-3.0\n fmov d9, #-3.0\n fmov d10, #-3.0\n fmov d11, #-3.0\n"
    "        fmov d12, #-3.0\n fmov d13, #-3.0\n fmov d14, #-3.0\n fmov d15, #-3.0\n"
    "        bl weft__ctx_switch\n"
    "        ldp x19, x20, [sp, #16]\n ldp x21, x22, [sp, #32]\n ldp x23, x24, [sp, #48]\n"
    "        ldp x25, x26, [sp, #64]\n ldp x27, x28, [sp, #80]\n"
    "        ldp d8, d9, [sp, #96]\n ldp d10, d11, [sp, #112]\n"
    "        ldp d12, d13, [sp, #128]\n ldp d14, d15, [sp, #144]\n"
    "        ldp x29, x30, [sp], #160\n"
    "        ret\n"
    "        .size test_ctx_clobber_switch, .-test_ctx_clobber_switch\n"
    "\n"
    "        .globl test_ctx_entry_probe\n"
    "        .hidden test_ctx_entry_probe\n"
    "        .type test_ctx_entry_probe, %function\n"
    "        .p2align 4\n"
    "test_ctx_entry_probe:\n"
#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
    "        hint #34\n"
#endif
    "        adrp x9, test_ctx_probe_sp\n"
    "        mov x10, sp\n"
    "        str x10, [x9, :lo12:test_ctx_probe_sp]\n"
    "        adrp x9, test_ctx_probe_fp\n"
    "        str x29, [x9, :lo12:test_ctx_probe_fp]\n"
    "        b test_ctx_probe_entry_c\n"
    "        .size test_ctx_entry_probe, .-test_ctx_entry_probe\n");
#define CALLEE_SAVED_INT 19     /* x19-x29 and d8-d15 */
#else
#error "tests/test_context.c: no assembly helpers for this architecture"
#endif

/* ---- fibers: a context, its mmap'd stack, and what ASan needs to know ----------------------- */
#define GUARD 4096

struct fiber {
    struct weft_ctx ctx;
    char *map;              /* guard page + stack */
    size_t size;            /* usable stack bytes, above the guard page */
    const void *lo;         /* stack bounds, for ASan */
    size_t len;
    void *fake;             /* ASan's fake stack while switched away */
};

static struct fiber main_f;

static void fiber_main_init(void)
{
    memset(&main_f, 0, sizeof main_f);
#ifdef TEST_ASAN
    pthread_attr_t attr;
    void *addr;
    size_t size;
    cr_assert_eq(pthread_getattr_np(pthread_self(), &attr), 0);
    cr_assert_eq(pthread_attr_getstack(&attr, &addr, &size), 0);
    pthread_attr_destroy(&attr);
    main_f.lo = addr;
    main_f.len = size;
#endif
}

/* A stack of `size` bytes (a multiple of the page size) whose top is offset by `skew`
 * bytes below the mapping's end: weft__ctx_init must align it itself. */
static void fiber_make_skewed(struct fiber *f, size_t size, size_t skew, void (*fn)(void *),
                              void *arg)
{
    memset(f, 0, sizeof *f);
    f->map = mmap(NULL, size + GUARD, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(f->map, MAP_FAILED, "mmap of a %zu byte stack", size);
    cr_assert_eq(mprotect(f->map, GUARD, PROT_NONE), 0);
    f->size = size;
    f->lo = f->map + GUARD;
    f->len = size;
    weft__ctx_init(&f->ctx, f->map + GUARD + size - skew, fn, arg);
}

static void fiber_make(struct fiber *f, size_t size, void (*fn)(void *), void *arg)
{
    fiber_make_skewed(f, size, 0, fn, arg);
}

/* A stack given back or reused may still hold the shadow of the frames of a context that
 * was abandoned mid-call: ASan would see them as live redzones (a stack pool must do the
 * same under ASan). */
static void fiber_unpoison(struct fiber *f)
{
#ifdef TEST_ASAN
    __asan_unpoison_memory_region(f->lo, f->len);
#else
    (void)f;
#endif
}

static void fiber_free(struct fiber *f)
{
    fiber_unpoison(f);
    cr_assert_eq(munmap(f->map, f->size + GUARD), 0);
    f->map = NULL;
}

static inline void san_before(struct fiber *from, struct fiber *to)
{
#ifdef TEST_ASAN
    __sanitizer_start_switch_fiber(&from->fake, to->lo, to->len);
#else
    (void)from, (void)to;
#endif
}

static inline void san_after(struct fiber *self)
{
#ifdef TEST_ASAN
    __sanitizer_finish_switch_fiber(self != NULL ? self->fake : NULL, NULL, NULL);
#else
    (void)self;
#endif
}

static void fswitch(struct fiber *from, struct fiber *to)
{
    san_before(from, to);
    weft__ctx_switch(&from->ctx, &to->ctx);
    san_after(from);
}

/* First thing in every context entry function. */
static void fiber_started(void)
{
    san_after(NULL);
}

TestSuite(context, .init = fiber_main_init, .timeout = 10);

/* ---- fn and arg arrive; a context runs on its own stack ------------------------------------- */
static struct fiber basic_f;
static void *basic_arg_seen;
static uintptr_t basic_local_addr;
static int basic_runs;

static void basic_entry(void *arg)
{
    fiber_started();
    int local = 0;
    basic_arg_seen = arg;
    basic_local_addr = (uintptr_t)&local;
    basic_runs++;
    fswitch(&basic_f, &main_f);
    cr_assert_fail("a context that was never resumed again ran");
}

Test(context, fn_and_arg_arrive, .timeout = 10)
{
    static int token;
    fiber_make(&basic_f, 64 * 1024, basic_entry, &token);
    cr_assert_eq(basic_runs, 0, "weft__ctx_init must not run fn");
    fswitch(&main_f, &basic_f);
    cr_assert_eq(basic_runs, 1);
    cr_assert_eq(basic_arg_seen, &token);
    cr_assert(basic_local_addr >= (uintptr_t)basic_f.map + GUARD &&
              basic_local_addr < (uintptr_t)basic_f.map + GUARD + basic_f.size,
              "the entry's locals are on the context's stack");
    cr_assert_neq(basic_f.ctx.sp, NULL);
    fiber_free(&basic_f);
}

Test(context, switch_to_self_returns_at_once, .timeout = 10)
{
    struct weft_ctx self = { NULL };
    int n = 0;
    for (int i = 0; i < 1000; i++) {
        weft__ctx_switch(&self, &self);
        n++;
    }
    cr_assert_eq(n, 1000);
    cr_assert_neq(self.sp, NULL);
}

/* ---- callee-saved registers, exactly, from assembly ----------------------------------------- */
static struct fiber reg_f;
static long reg_peer_rounds;

static void clobber_entry(void *arg)
{
    (void)arg;
    fiber_started();
    for (;;) {
        reg_peer_rounds++;
        san_before(&reg_f, &main_f);
        test_ctx_clobber_switch(&reg_f.ctx, &main_f.ctx);
        san_after(&reg_f);
    }
}

Test(context, callee_saved_registers_survive_exactly, .timeout = 10)
{
    fiber_make(&reg_f, 64 * 1024, clobber_entry, NULL);
    for (int i = 0; i < 1000; i++) {
        san_before(&main_f, &reg_f);
        int bad = test_ctx_check_switch(&main_f.ctx, &reg_f.ctx);
        san_after(&main_f);
        cr_assert_eq(bad, 0, "round %d: callee-saved registers changed across a switch "
                     "(mask %#x, bit i = register i of %d)", i, (unsigned)bad, CALLEE_SAVED_INT);
    }
    cr_assert_eq(reg_peer_rounds, 1000);
    fiber_free(&reg_f);
}

/* ---- many live values in C across switches -------------------------------------------------- */
static volatile long seed_i = 3;
static volatile double seed_d = 1.5;

struct live { unsigned long i[10]; double d[10]; };  /* unsigned: wraps, no UB */

/* With other == NULL it computes the same values without switching: the reference. */
__attribute__((noinline)) static void live_across(struct fiber *self, struct fiber *other,
                                                  int iters, struct live *out)
{
    unsigned long a = (unsigned long)seed_i, b = a * 3, c = a * 5 + 1, d = a * 7 + 2;
    unsigned long e = a * 11 + 3, f = a * 13 + 4, g = a * 17 + 5, h = a * 19 + 6;
    unsigned long k = a * 23 + 7, m = a * 29 + 8;
    double x = seed_d, y = x * 2.5, z = x * 3.25, w = x - 7.0, u = x * x;
    double v = x + 100.0, q = x * 0.125, t = x * 9.0, r = x / 3.0, o = x - 0.375;
    for (int n = 0; n < iters; n++) {
        if (other != NULL)
            fswitch(self, other);
        a += 1; b += a; c ^= b; d += c; e -= d; f += e; g ^= f; h += g; k -= h; m ^= k;
        x += 0.5; y *= 1.0000001; z -= 0.25; w += x; u += 0.125;
        v -= 0.5; q += y; t += z; r *= 0.999999; o += r;
    }
    struct live l = { { a, b, c, d, e, f, g, h, k, m }, { x, y, z, w, u, v, q, t, r, o } };
    *out = l;
}

Test(context, live_integer_and_fp_values_survive, .timeout = 10)
{
    struct live want, got;
    live_across(NULL, NULL, 5000, &want);
    reg_peer_rounds = 0;
    fiber_make(&reg_f, 64 * 1024, clobber_entry, NULL);
    live_across(&main_f, &reg_f, 5000, &got);
    cr_assert_eq(reg_peer_rounds, 5000);
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(got.i[i], want.i[i], "integer %d: %lu, want %lu", i, got.i[i], want.i[i]);
        cr_assert(memcmp(&got.d[i], &want.d[i], sizeof(double)) == 0,
                  "double %d: %a, want %a", i, got.d[i], want.d[i]);
    }
    fiber_free(&reg_f);
}

/* ---- ping-pong ------------------------------------------------------------------------------ */
#define PINGPONG 1000000
static struct fiber pong_f;
static volatile long pp_counter;
static long pong_errors;

static void pong_entry(void *arg)
{
    fiber_started();
    long *rounds = arg;
    for (;;) {
        if (pp_counter != 2 * *rounds + 1)      /* main made it odd */
            pong_errors++;
        pp_counter++;
        (*rounds)++;
        fswitch(&pong_f, &main_f);
    }
}

Test(context, ping_pong_a_million_times, .timeout = 10)
{
    static long rounds;
    rounds = 0;
    pp_counter = 0;
    fiber_make(&pong_f, 64 * 1024, pong_entry, &rounds);
    for (long i = 0; i < PINGPONG; i++) {
        cr_assert_eq(pp_counter, 2 * i);
        pp_counter++;
        fswitch(&main_f, &pong_f);
        if (pp_counter != 2 * i + 2)
            cr_assert_fail("round %ld: counter %ld, want %ld", i, (long)pp_counter, 2 * i + 2);
    }
    cr_assert_eq(rounds, PINGPONG);
    cr_assert_eq(pong_errors, 0);
    fiber_free(&pong_f);
}

/* ---- the entry of a fresh context: ABI alignment, frame pointer, stack top ------------------ */
static struct fiber probe_f;
static uintptr_t probe_local16, probe_local64, probe_frame;

__attribute__((noinline)) static void probe_aligned_locals(void)
{
    _Alignas(16) volatile char a16[16];
    _Alignas(64) volatile char a64[64];
    a16[0] = 1;
    a64[0] = 2;
    probe_local16 = (uintptr_t)a16;
    probe_local64 = (uintptr_t)a64;
    probe_frame = (uintptr_t)__builtin_frame_address(0);
}

void test_ctx_probe_entry_c(void *arg)
{
    (void)arg;
    fiber_started();
    probe_aligned_locals();
    fswitch(&probe_f, &main_f);
    cr_assert_fail("resumed a finished probe");
}

Test(context, entry_is_abi_aligned_with_a_zero_frame_pointer, .timeout = 10)
{
    static const size_t skews[] = { 0, 1, 3, 7, 8, 9, 15, 16, 24, 40 };
    for (size_t i = 0; i < sizeof skews / sizeof skews[0]; i++) {
        test_ctx_probe_sp = test_ctx_probe_fp = 1;
        fiber_make_skewed(&probe_f, 64 * 1024, skews[i], test_ctx_entry_probe, NULL);
        uintptr_t top = ((uintptr_t)probe_f.map + GUARD + probe_f.size - skews[i]) & ~(uintptr_t)15;
        fswitch(&main_f, &probe_f);
#if defined(__x86_64__)
        /* SysV: at entry rsp + 8 is 16-byte aligned (the call pushed the return address) */
        cr_assert_eq((test_ctx_probe_sp + 8) % 16, 0, "skew %zu: rsp %#lx at entry", skews[i],
                     (unsigned long)test_ctx_probe_sp);
        cr_assert_eq(test_ctx_probe_sp, top - 8, "skew %zu: entry rsp is the aligned top - 8",
                     skews[i]);
#else
        /* AAPCS64: sp is 16-byte aligned at every public interface */
        cr_assert_eq(test_ctx_probe_sp % 16, 0, "skew %zu: sp %#lx at entry", skews[i],
                     (unsigned long)test_ctx_probe_sp);
        cr_assert_eq(test_ctx_probe_sp, top, "skew %zu: entry sp is the aligned top", skews[i]);
#endif
        cr_assert_eq(test_ctx_probe_fp, 0, "skew %zu: the frame pointer is zero at entry "
                     "(backtraces stop)", skews[i]);
        cr_assert_eq(probe_local16 % 16, 0, "skew %zu", skews[i]);
        cr_assert_eq(probe_local64 % 64, 0, "skew %zu", skews[i]);
        cr_assert_eq(probe_frame % 16, 0, "skew %zu: frame address %#lx", skews[i],
                     (unsigned long)probe_frame);
        cr_assert(probe_local16 < top && probe_local16 > top - 4096);
        fiber_free(&probe_f);
    }
}

/* ---- nested: main -> A -> B -> C, and back -------------------------------------------------- */
static struct fiber nest_f[3];      /* A B C */
static char nest_log[64];
static int nest_len;

static void nest_note(char c)
{
    if (nest_len < (int)sizeof nest_log - 1)
        nest_log[nest_len++] = c;
}

static void nest_entry(void *arg)
{
    fiber_started();
    long i = (long)(intptr_t)arg;
    struct fiber *self = &nest_f[i];
    struct fiber *parent = i == 0 ? &main_f : &nest_f[i - 1];
    for (;;) {
        nest_note((char)('A' + i));                 /* going down */
        if (i < 2)
            fswitch(self, &nest_f[i + 1]);           /* ... and its child comes back here */
        nest_note((char)('a' + i));                 /* coming back up */
        fswitch(self, parent);
    }
}

Test(context, nested_switches_unwind_in_order, .timeout = 10)
{
    for (long i = 0; i < 3; i++)
        fiber_make(&nest_f[i], 64 * 1024, nest_entry, (void *)(intptr_t)i);
    for (int round = 0; round < 100; round++) {
        nest_len = 0;
        memset(nest_log, 0, sizeof nest_log);
        fswitch(&main_f, &nest_f[0]);
        cr_assert_str_eq(nest_log, "ABCcba", "round %d", round);
    }
    for (int i = 0; i < 3; i++)
        fiber_free(&nest_f[i]);
}

/* ---- many contexts in a ring ---------------------------------------------------------------- */
#define RING 64
#define RING_LAPS 1000
static struct fiber ring_f[RING];
static long ring_count[RING];

static void ring_entry(void *arg)
{
    fiber_started();
    long i = (long)(intptr_t)arg;
    for (;;) {
        ring_count[i]++;
        long lap = ring_count[i];
        if (i == RING - 1)
            fswitch(&ring_f[i], &main_f);
        else
            fswitch(&ring_f[i], &ring_f[i + 1]);
        cr_assert_eq(ring_count[i], lap, "context %ld ran while switched away", i);
    }
}

Test(context, a_ring_of_64_contexts, .timeout = 10)
{
    for (long i = 0; i < RING; i++) {
        ring_count[i] = 0;
        fiber_make(&ring_f[i], 16 * 1024, ring_entry, (void *)(intptr_t)i);
    }
    for (int lap = 1; lap <= RING_LAPS; lap++) {
        fswitch(&main_f, &ring_f[0]);
        for (int i = 0; i < RING; i++)
            if (ring_count[i] != lap)
                cr_assert_fail("lap %d: context %d ran %ld times", lap, i, ring_count[i]);
    }
    for (int i = 0; i < RING; i++)
        fiber_free(&ring_f[i]);
}

/* ---- deep recursion on a 256 KiB stack, switching away at the bottom ------------------------ */
#define DEEP_STACK (256 * 1024)
#define DEEP_USE (224 * 1024)
static struct fiber deep_f;
static uintptr_t deep_top, deep_lowest;
static long deep_depth, deep_result;

__attribute__((noinline)) static long recurse(long n)
{
    volatile char buf[96];
    for (int i = 0; i < (int)sizeof buf; i++)
        buf[i] = (char)(n + i);
    uintptr_t fp = (uintptr_t)__builtin_frame_address(0);
    long r;
    if (deep_top - fp < DEEP_USE && n < 1000000) {
        r = recurse(n + 1);
    } else {
        deep_lowest = fp;
        deep_depth = n;
        fswitch(&deep_f, &main_f);                  /* switch away from the bottom */
        r = 0;
    }
    return r + buf[n % (long)sizeof buf] - (char)(n + n % (long)sizeof buf) + 1;
}

static void deep_entry(void *arg)
{
    (void)arg;
    fiber_started();
    deep_result = recurse(0);
    fswitch(&deep_f, &main_f);
    cr_assert_fail("resumed a finished context");
}

Test(context, deep_recursion_on_a_256k_stack, .timeout = 10)
{
    fiber_make(&deep_f, DEEP_STACK, deep_entry, NULL);
    deep_top = (uintptr_t)deep_f.map + GUARD + DEEP_STACK;
    deep_result = -1;
    fswitch(&main_f, &deep_f);                      /* runs down to the bottom */
    cr_assert_geq(deep_top - deep_lowest, DEEP_USE, "used %lu bytes",
                  (unsigned long)(deep_top - deep_lowest));
    cr_assert_gt(deep_lowest, (uintptr_t)deep_f.map + GUARD, "stayed above the guard page");
    cr_assert_eq(deep_result, -1, "still at the bottom");
    fswitch(&main_f, &deep_f);                      /* unwinds and returns */
    cr_assert_eq(deep_result, deep_depth + 1, "every frame's buffer survived");
    fiber_free(&deep_f);
}

/* ---- a stack reused: re-initialised after its context was abandoned ------------------------- */
static struct fiber reuse_f;
static long reuse_sum;

static void reuse_entry(void *arg)
{
    fiber_started();
    reuse_sum += (long)(intptr_t)arg;
    fswitch(&reuse_f, &main_f);                     /* never resumed: abandoned */
    cr_assert_fail("resumed an abandoned context");
}

Test(context, reinit_on_the_same_stack, .timeout = 10)
{
    fiber_make(&reuse_f, 16 * 1024, reuse_entry, (void *)(intptr_t)1);
    for (long i = 1; i <= 1000; i++) {
        if (i > 1) {
            fiber_unpoison(&reuse_f);
            weft__ctx_init(&reuse_f.ctx, reuse_f.map + GUARD + reuse_f.size, reuse_entry,
                           (void *)(intptr_t)i);
        }
        fswitch(&main_f, &reuse_f);
        cr_assert_eq(reuse_sum, i * (i + 1) / 2);
    }
    fiber_free(&reuse_f);
}

/* ---- the floating-point environment belongs to the M, not to the context -------------------- */
static unsigned long fpenv_get(void)
{
#if defined(__x86_64__)
    unsigned int csr;
    __asm__ volatile("stmxcsr %0" : "=m"(csr));
    return csr;
#else
    unsigned long fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    return fpcr;
#endif
}

static void fpenv_set(unsigned long v)
{
#if defined(__x86_64__)
    unsigned int csr = (unsigned int)v;
    __asm__ volatile("ldmxcsr %0" : : "m"(csr));
#else
    __asm__ volatile("msr fpcr, %0" : : "r"(v));
#endif
}

#if defined(__x86_64__)
#define ROUND_MASK 0x6000ul     /* MXCSR.RC */
#define ROUND_UP   0x4000ul
#else
#define ROUND_MASK 0xc00000ul   /* FPCR.RMode */
#define ROUND_UP   0x400000ul
#endif

static struct fiber fpenv_f;

static void fpenv_entry(void *arg)
{
    fiber_started();
    *(unsigned long *)arg = fpenv_get();
    fpenv_set((fpenv_get() & ~ROUND_MASK) | ROUND_UP);
    fswitch(&fpenv_f, &main_f);
    cr_assert_fail("resumed a finished context");
}

Test(context, fp_control_is_not_switched, .timeout = 10)
{
    unsigned long before = fpenv_get(), seen_inside = 0;
    fiber_make(&fpenv_f, 64 * 1024, fpenv_entry, &seen_inside);
    fswitch(&main_f, &fpenv_f);
    unsigned long after = fpenv_get();
    fpenv_set(before);
    cr_assert_eq(seen_inside, before, "a fresh context inherits the M's rounding mode");
    cr_assert_eq(after & ROUND_MASK, ROUND_UP,
                 "documented in context.h: a context that changes the rounding mode changes "
                 "it for the M");
    fiber_free(&fpenv_f);
}

/* ---- an entry function that returns: message, abort ----------------------------------------- */
static struct fiber ret_f;

static void returning_entry(void *arg)
{
    (void)arg;
    fiber_started();
}

static int run_returning_entry(void)
{
    fiber_make(&ret_f, 64 * 1024, returning_entry, NULL);
    fswitch(&main_f, &ret_f);
    return 0;                                       /* not reached */
}

Test(context, entry_that_returns_aborts_with_a_message, .timeout = 10)
{
    char err[256];
    int status = child_stderr(run_returning_entry, err, sizeof err);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
              "the child ended with status %#x, not SIGABRT", status);
    cr_assert_str_eq(err, "weft: green thread entry returned\n");
}
