/*
 * tests/tsan/criterion/criterion.h -- the part of Criterion's API our tests use, for
 * the ThreadSanitizer build (make test SAN=thread). Criterion itself cannot start
 * under TSan (Snaipe/Criterion#274), so there the same test files compile against
 * this header and link tests/tsan/runner.c: each test runs in a forked child, as
 * Criterion runs it, and a data race TSan reports fails it (TSan's exit status 66).
 * Same command line (--filter, --jobs ignored) and the same synthesis line.
 */
#ifndef WEFT_TSAN_CRITERION_H
#define WEFT_TSAN_CRITERION_H
#include <string.h>

struct shim_attrs {
    void (*init)(void);
    void (*fini)(void);
    double timeout;        /* seconds; 0: the suite's */
    int signal;            /* the test passes if it dies of this signal */
};

struct shim_test {
    const char *suite, *name;
    void (*fn)(void);
    struct shim_attrs attrs;
    struct shim_test *next;
};

void shim_register(struct shim_test *t);
void shim_register_suite(const char *suite, struct shim_attrs *attrs);
__attribute__((noreturn, format(printf, 4, 5)))
void shim_fail(const char *file, int line, const char *expr, const char *fmt, ...);
__attribute__((noreturn, format(printf, 1, 2))) void shim_skip(const char *fmt, ...);

#define Test(suite, name, ...)                                                          \
    static void shim_fn_##suite##_##name(void);                                         \
    static struct shim_test shim_t_##suite##_##name = {                                 \
        #suite, #name, shim_fn_##suite##_##name, { __VA_ARGS__ }, NULL };               \
    __attribute__((constructor)) static void shim_reg_##suite##_##name(void)            \
    {                                                                                   \
        shim_register(&shim_t_##suite##_##name);                                        \
    }                                                                                   \
    static void shim_fn_##suite##_##name(void)

#define TestSuite(suite, ...)                                                           \
    static struct shim_attrs shim_suite_##suite = { __VA_ARGS__ };                      \
    __attribute__((constructor)) static void shim_suite_reg_##suite(void)               \
    {                                                                                   \
        shim_register_suite(#suite, &shim_suite_##suite);                               \
    }

#define cr_assert(cond, ...)                                                            \
    do {                                                                                \
        if (!(cond))                                                                    \
            shim_fail(__FILE__, __LINE__, #cond, " " __VA_ARGS__);                      \
    } while (0)
#define cr_assert_eq(a, b, ...) cr_assert((a) == (b), __VA_ARGS__)
#define cr_assert_neq(a, b, ...) cr_assert((a) != (b), __VA_ARGS__)
#define cr_assert_lt(a, b, ...) cr_assert((a) < (b), __VA_ARGS__)
#define cr_assert_leq(a, b, ...) cr_assert((a) <= (b), __VA_ARGS__)
#define cr_assert_gt(a, b, ...) cr_assert((a) > (b), __VA_ARGS__)
#define cr_assert_geq(a, b, ...) cr_assert((a) >= (b), __VA_ARGS__)
#define cr_assert_null(p, ...) cr_assert((p) == NULL, __VA_ARGS__)
#define cr_assert_not_null(p, ...) cr_assert((p) != NULL, __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) cr_assert(strcmp((a), (b)) == 0, __VA_ARGS__)
#define cr_assert_fail(...) shim_fail(__FILE__, __LINE__, "failed", " " __VA_ARGS__)
/* cr_expect_*: here they end the test at the first failure, as cr_assert_* do */
#define cr_expect(cond, ...) cr_assert(cond, __VA_ARGS__)
#define cr_expect_eq cr_assert_eq
#define cr_expect_neq cr_assert_neq
#define cr_expect_lt cr_assert_lt
#define cr_expect_leq cr_assert_leq
#define cr_expect_gt cr_assert_gt
#define cr_expect_geq cr_assert_geq
#define cr_expect_null cr_assert_null
#define cr_expect_not_null cr_assert_not_null
#define cr_expect_str_eq cr_assert_str_eq
#define cr_skip_test(...) shim_skip(" " __VA_ARGS__)
#endif
