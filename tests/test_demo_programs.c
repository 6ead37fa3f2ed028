/*
 * tests/test_demo_programs.c -- the demo programs that are not servers: sieve and skynet
 * print the right answers on 1 and 2 Ps, the tour runs to its end on both I/O backends,
 * and every one answers --help and refuses bad arguments with status 2.
 *
 * Sizes shrink under the sanitizers (TSan makes every green thread a fiber, which costs
 * it a lot): the tour runs with --short there.
 */
#include "tests/common.h"
#include "tests/demo_common.h"

static char out[1 << 16];

/* Run build/.../demos/NAME with args (a shell fragment), its stdout into out; the exit
 * status (124: it ran past limit seconds). */
static int prog(const char *env, int limit, const char *name, const char *args)
{
    return demo_sh(out, sizeof out, "%s timeout -k 5 %d %s/demos/%s %s", env ? env : "", limit,
                   demo_build(), name, args);
}

static void expect_in(const char *want)
{
    cr_assert(strstr(out, want) != NULL, "'%s' not in the output:\n%s", want, out);
}

/* ---- sieve ---------------------------------------------------------------------- */
static void sieve(int procs)
{
    char args[64];
    /* the 1000th prime is 7919; under TSan the 200th, 1223 */
    long n = tsan() ? 200 : 1000;
    snprintf(args, sizeof args, "%ld --procs %d", n, procs);
    int st = prog(NULL, 120, "sieve", args);
    cr_assert_eq(st, 0, "sieve %s: status %d\n%s", args, st, out);
    expect_in(tsan() ? "the 200th prime is 1223 (checked: all 200 match"
                     : "the 1000th prime is 7919 (checked: all 1000 match");
    char want[64];
    snprintf(want, sizeof want, "(%d Ps)", procs);
    expect_in(want);
    snprintf(want, sizeof want, "; %ld green threads", n + 1);
    expect_in(want);
}

Test(demo_programs, sieve_1000th_prime_1p, .timeout = 180) { sieve(1); }
Test(demo_programs, sieve_1000th_prime_2p, .timeout = 180) { sieve(2); }

Test(demo_programs, sieve_prints_every_prime, .timeout = 180)
{
    int st = prog(NULL, 120, "sieve", "30 --print --procs 2");
    cr_assert_eq(st, 0, "status %d\n%s", st, out);
    expect_in("\n2 3 5 7 11 13 17 19 23 29\n31 37 41 43 47 53 59 61 67 71\n"
              "73 79 83 89 97 101 103 107 109 113\n  the 30th prime is 113");
    st = prog(NULL, 120, "sieve", "1");
    cr_assert_eq(st, 0, "status %d\n%s", st, out);
    expect_in("the 1st prime is 2");
}

/* ---- skynet --------------------------------------------------------------------- */
static void skynet(int procs, long leaves)
{
    char args[64], want[128];
    snprintf(args, sizeof args, "%ld --procs %d", leaves, procs);
    int st = prog(NULL, 120, "skynet", args);
    cr_assert_eq(st, 0, "skynet %s: status %d\n%s", args, st, out);
    snprintf(want, sizeof want, "sum %ld (right", leaves * (leaves - 1) / 2);
    expect_in(want);
    snprintf(want, sizeof want, "(%d Ps)", procs);
    expect_in(want);
}

/* 10,000 leaves: 11,111 green threads, the sum 49995000 (TSan: 1,000 and 499500) */
Test(demo_programs, skynet_sum_1p, .timeout = 180) { skynet(1, tsan() ? 1000 : 10000); }
Test(demo_programs, skynet_sum_2p, .timeout = 180)
{
    skynet(2, tsan() ? 1000 : 10000);
    expect_in(tsan() ? "sum 499500 " : "sum 49995000 ");
    expect_in(tsan() ? "1111 green threads" : "11111 green threads");
}
/* not a power of 10: ranges split unevenly, the sum is still n(n-1)/2 */
Test(demo_programs, skynet_uneven_tree, .timeout = 180) { skynet(2, tsan() ? 123 : 12345); }

/* ---- the tour ------------------------------------------------------------------- */
static void tour(const char *env, bool full)
{
    /* the full tour in release (it says it takes well under 30 s; 120 s here for a
     * loaded machine), a short one under the sanitizers */
    int st = prog(env, 120, "tour", full && !sanitized() ? "" : "--short");
    cr_assert_eq(st, 0, "the tour: status %d (124: over 120 s)\n%s", st, out);
    expect_in("10. I/O: an echo server in this process");
    expect_in(" round trips/s, ");
    expect_in(strstr(env, "uv") != NULL ? "(libuv, " : "(io_uring, ");
    expect_in("weft_run returned 0.");
}

Test(demo_programs, tour_runs_to_the_end_uring, .timeout = 180) { tour("WEFT_IO=uring", true); }
Test(demo_programs, tour_short_uv, .timeout = 180) { tour("WEFT_IO=uv", false); }

/* ---- arguments ------------------------------------------------------------------ */
static void args_ok(const char *name, const char *args, int want_status)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "%s 2>/dev/null", args);
    int st = prog(NULL, 60, name, cmd);
    cr_assert_eq(st, want_status, "%s %s: status %d, not %d", name, args, st, want_status);
}

Test(demo_programs, help_and_bad_arguments, .timeout = 120)
{
    const char *names[] = { "sieve", "skynet", "tour" };
    for (int i = 0; i < 3; i++) {
        args_ok(names[i], "--help", 0);
        char want[32];
        snprintf(want, sizeof want, "usage: %s", names[i]);
        expect_in(want);
        args_ok(names[i], "--bogus", 2);
    }
    args_ok("sieve", "0", 2);
    args_ok("sieve", "12x", 2);
    args_ok("sieve", "10 20", 2);
    args_ok("sieve", "--procs 0", 2);
    args_ok("sieve", "--procs", 2);
    args_ok("skynet", "0", 2);
    args_ok("skynet", "-5", 2);
    args_ok("skynet", "1000000000", 2);
    args_ok("skynet", "--procs x", 2);
    args_ok("tour", "extra", 2);
}
