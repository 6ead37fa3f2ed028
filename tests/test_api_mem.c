/*
 * tests/test_api_mem.c -- the allocator through the public API: sizes, alignment,
 * realloc, calloc, errors, misuse aborts, statistics, memory given back.
 * WEFT_DEBUG is read once, at the first weft call of a process (Criterion runs each
 * test in a fresh process); crash tests run the bad call in a forked child and check
 * both the signal and the message.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "weft.h"
#include "tests/common.h"

TestSuite(api_mem, .timeout = 60);

static long rss_bytes(void)
{
    long pages = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    cr_assert_not_null(f);
    cr_assert_eq(fscanf(f, "%ld %ld", &pages, &res), 2);
    fclose(f);
    return res * sysconf(_SC_PAGESIZE);
}

Test(api_mem, malloc_zero_is_unique)
{
    void *a = weft_malloc(0), *b = weft_malloc(0);
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    cr_assert_neq(a, b);
    weft_free(a);
    weft_free(b);
    weft_free(NULL);
}

Test(api_mem, alignment_and_usable_size)
{
    for (size_t n = 1; n <= 70000; n += (n < 2048 ? 1 : 97)) {
        unsigned char *p = weft_malloc(n);
        cr_assert_not_null(p, "malloc(%zu)", n);
        size_t align = n <= 8 ? 8 : 16;
        cr_assert_eq((uintptr_t)p % align, 0, "malloc(%zu) = %p", n, (void *)p);
        size_t u = weft_usable_size(p);
        cr_assert_geq(u, n);
        if (n > 32768)
            cr_assert_eq(u % 8192, 0, "large usable %zu", u);
        memset(p, 0xab, u);            /* all of it is ours */
        weft_free(p);
    }
    cr_assert_eq(weft_usable_size(NULL), 0);
}

Test(api_mem, realloc_keeps_content)
{
    size_t sizes[] = { 1, 7, 16, 100, 1000, 5000, 32768, 40000, 300000, 2000000, 64, 3 };
    unsigned char *p = NULL;
    size_t have = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        p = weft_realloc(p, n);
        cr_assert_not_null(p);
        size_t keep = have < n ? have : n;
        for (size_t k = 0; k < keep; k++)
            cr_assert_eq(p[k], (unsigned char)(k * 7 + 1), "byte %zu after realloc to %zu", k, n);
        for (size_t k = 0; k < n; k++)
            p[k] = (unsigned char)(k * 7 + 1);
        have = n;
    }
    cr_assert_null(weft_realloc(p, 0));       /* frees, like glibc */
}

Test(api_mem, calloc_zero_after_reuse)
{
    for (int round = 0; round < 200; round++) {
        size_t n = (size_t)(round % 20 + 1) * 97 + (round % 3 ? 0 : 40000);
        unsigned char *p = weft_malloc(n);
        memset(p, 0xff, n);
        weft_free(p);
        unsigned char *q = weft_calloc(1, n);
        cr_assert_not_null(q);
        for (size_t k = 0; k < n; k++)
            cr_assert_eq(q[k], 0, "calloc(%zu) byte %zu", n, k);
        weft_free(q);
    }
}

Test(api_mem, calloc_large_fresh_is_not_touched)
{
    long before = rss_bytes();
    unsigned char *p = weft_calloc(256, 1 << 20);      /* 256 MiB fresh from the OS */
    cr_assert_not_null(p);
    long after = rss_bytes();
    cr_assert_lt(after - before, 16 << 20, "calloc touched %ld bytes", after - before);
    cr_assert_eq(p[12345678], 0);
    weft_free(p);
}

Test(api_mem, overflow_and_absurd_sizes)
{
    cr_assert_null(weft_calloc(SIZE_MAX, 2));
    cr_assert_null(weft_calloc((size_t)1 << 33, (size_t)1 << 33));
    errno = 0;
    cr_assert_null(weft_malloc(SIZE_MAX));
    cr_assert_eq(errno, ENOMEM);
    cr_assert_null(weft_malloc(SIZE_MAX / 2));
    cr_assert_null(weft_malloc((size_t)1 << 60));
    void *p = weft_malloc(100);
    cr_assert_null(weft_realloc(p, SIZE_MAX - 4096));
    weft_free(p);                                        /* p survived the failed realloc */
    cr_assert_null(weft_aligned_alloc(4096, SIZE_MAX - 100));
}

Test(api_mem, aligned_alloc_any_power_of_two)
{
    for (size_t align = 1; align <= ((size_t)1 << 22); align <<= 1) {
        size_t sizes[] = { 1, align / 2 + 1, align, 3 * align + 5, 40000 };
        for (size_t i = 0; i < 5; i++) {
            unsigned char *p = weft_aligned_alloc(align, sizes[i]);
            cr_assert_not_null(p, "aligned_alloc(%zu, %zu)", align, sizes[i]);
            cr_assert_eq((uintptr_t)p % align, 0, "aligned_alloc(%zu, %zu) = %p", align, sizes[i], (void *)p);
            cr_assert_geq(weft_usable_size(p), sizes[i]);
            memset(p, 1, sizes[i]);
            weft_free(p);
        }
    }
    errno = 0;
    cr_assert_null(weft_aligned_alloc(24, 100));
    cr_assert_eq(errno, EINVAL);
    cr_assert_null(weft_aligned_alloc(0, 100));
}

Test(api_mem, strerror_names_codes)
{
    cr_assert_str_eq(weft_strerror(-ETIMEDOUT), "timed out");
    cr_assert_str_eq(weft_strerror(-EPIPE), "channel closed");
    cr_assert_str_eq(weft_strerror(0), "success");
    cr_assert_not_null(weft_strerror(-EHOSTUNREACH));
}

/* ---- statistics ---------------------------------------------------------------------------- */
Test(api_mem, stats_agree_with_the_counts)
{
    enum { N = 1000 };
    static void *ps[N];
    weft_mem_stats a, b, c;
    void *probe = weft_malloc(100);
    size_t cls = weft_usable_size(probe);
    weft_free(probe);
    weft_mem_stats_read(&a);
    for (int i = 0; i < N; i++)
        ps[i] = weft_malloc(100);
    weft_mem_stats_read(&b);
    cr_assert_eq(b.mallocs - a.mallocs, N);
    cr_assert_eq(b.heap_alloc - a.heap_alloc, N * cls);
    cr_assert_geq(b.heap_sys, b.heap_inuse);
    cr_assert_geq(b.heap_inuse, b.heap_alloc);
    for (int i = 0; i < N; i++)
        weft_free(ps[i]);
    weft_mem_stats_read(&c);
    cr_assert_eq(c.frees - b.frees, N);
    cr_assert_eq(c.heap_alloc, a.heap_alloc);
    void *big = weft_malloc(1 << 20);
    weft_mem_stats_read(&b);
    cr_assert_eq(b.heap_alloc - c.heap_alloc, weft_usable_size(big));
    weft_free(big);
    weft_mem_stats_read(&c);
    cr_assert_eq(c.heap_alloc, a.heap_alloc);
    cr_assert_eq(c.mallocs - a.mallocs, c.frees - a.frees);
}

/* ---- memory goes back to the OS --------------------------------------------------------------- */
Test(api_mem, rss_falls_after_weft_mem_release)
{
    if (sanitized())
        cr_skip_test("RSS is the sanitizer's under ASan");
    enum { NS = 131072, NL = 2048 };      /* 128 MiB of 1 KiB + 128 MiB of 64 KiB */
    void **s = malloc(NS * sizeof *s), **l = malloc(NL * sizeof *l);
    long before = rss_bytes();
    for (int i = 0; i < NS; i++)
        memset(s[i] = weft_malloc(1024), 1, 1024);
    for (int i = 0; i < NL; i++)
        memset(l[i] = weft_malloc(65536), 2, 65536);
    long peak = rss_bytes();
    for (int i = 0; i < NS; i++)
        weft_free(s[i]);
    for (int i = 0; i < NL; i++)
        weft_free(l[i]);
    weft_mem_release();
    long after = rss_bytes();
    weft_mem_stats st;
    weft_mem_stats_read(&st);
    cr_assert_gt(st.heap_released, 0);
    cr_assert_lt(after - before, (peak - before) / 2, "rss before %ld peak %ld after %ld", before, peak, after);
    free(s);
    free(l);
}

Test(api_mem, rss_falls_after_a_large_burst_without_any_call)
{
    if (sanitized())
        cr_skip_test("RSS is the sanitizer's under ASan");
    enum { N = 512 };
    void **l = malloc(N * sizeof *l);
    long before = rss_bytes();
    for (int i = 0; i < N; i++)
        memset(l[i] = weft_malloc(1 << 20), 3, 1 << 20);
    long peak = rss_bytes();
    for (int i = 0; i < N; i++)
        weft_free(l[i]);
    long after = rss_bytes();
    cr_assert_lt(after - before, (peak - before) / 2, "rss before %ld peak %ld after %ld", before, peak, after);
    free(l);
}

/* ---- misuse aborts, with a message ---------------------------------------------------------------- */
extern void *__libc_malloc(size_t);

static int free_foreign(void)
{
    weft_free(__libc_malloc(64));
    return 0;
}

static int free_stack(void)
{
    int x;
    weft_free(&x);
    return 0;
}

static int double_free_debug(void)
{
    setenv("WEFT_DEBUG", "allocfree=1", 1);
    void *p = weft_malloc(64);
    weft_free(p);
    weft_free(p);
    return 0;
}

static int interior_free_debug(void)
{
    setenv("WEFT_DEBUG", "allocfree=1", 1);
    char *p = weft_malloc(64);
    weft_free(p + 8);
    return 0;
}

static int double_free_large(void)
{
    void *p = weft_malloc(1 << 20);
    weft_free(p);
    weft_free(p);
    return 0;
}

static int write_after_free_debug(void)
{
    setenv("WEFT_DEBUG", "allocfree=1", 1);
    volatile char *p = weft_malloc(64);
    weft_free((void *)p);
    p[40] = 1;                         /* the next malloc of this class checks the poison */
    for (int i = 0; i < 10000; i++)
        weft_malloc(64);
    return 0;
}

static void expect_abort(int (*fn)(void), const char *a, const char *b)
{
    char buf[4096];
    int status = child_stderr(fn, buf, sizeof buf);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "status %#x, stderr: %s", status, buf);
    cr_assert_not_null(strstr(buf, a), "stderr: %s", buf);
    if (b != NULL)
        cr_assert_not_null(strstr(buf, b), "stderr: %s", buf);
    cr_assert_not_null(strstr(buf, "0x"), "no address in: %s", buf);
}

Test(api_mem, foreign_free_aborts)
{
    if (sanitized())
        cr_skip_test("the sanitizer owns __libc_malloc's pointers");
    expect_abort(free_foreign, "weft_free(", "not allocated by weft");
    expect_abort(free_stack, "weft_free(", "not allocated by weft");
}

Test(api_mem, double_free_of_a_large_object_aborts)
{
    expect_abort(double_free_large, "weft_free(", "double free");
}

Test(api_mem, debug_double_free_aborts)
{
    expect_abort(double_free_debug, "weft_free(", "double free");
}

Test(api_mem, debug_interior_free_aborts)
{
    expect_abort(interior_free_debug, "weft_free(", "not the start of an object");
}

Test(api_mem, debug_write_after_free_aborts)
{
    expect_abort(write_after_free_debug, "weft_malloc", "written after its free");
}

Test(api_mem, debug_poisons_freed_memory)
{
    if (sanitized())
        cr_skip_test("reads freed memory on purpose");
    setenv("WEFT_DEBUG", "allocfree=1", 1);
    unsigned char *p = weft_malloc(64);
    memset(p, 0x11, 64);
    weft_free(p);
    volatile unsigned char *v = p;
    for (int i = 16; i < 64; i++)
        cr_assert_eq(v[i], 0xdf, "byte %d", i);
}
