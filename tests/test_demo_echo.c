/*
 * tests/test_demo_echo.c -- demos/echo end to end: nc clients, both I/O backends, the
 * graceful stop with connections open.
 */
#include "tests/demo_common.h"

static void echo_nc(const char *env)
{
    demo_need("nc");
    struct demo d;
    demo_start(&d, "echo", env, NULL);
    char out[4096];
    int st = demo_sh(out, sizeof out, "printf 'hello\\nworld\\n' | nc -q 2 -w 10 127.0.0.1 %d", d.port);
    cr_expect_eq(st, 0, "nc: status %d", st);
    cr_expect_str_eq(out, "hello\nworld\n");
    /* 64 KiB of binary through one connection comes back whole */
    st = demo_sh(out, sizeof out,
                 "head -c 65536 /dev/urandom > /tmp/weft-echo-$$ && "
                 "nc -q 2 -w 10 127.0.0.1 %d < /tmp/weft-echo-$$ | cmp - /tmp/weft-echo-$$ && echo same; "
                 "rm -f /tmp/weft-echo-$$", d.port);
    cr_expect_str_eq(out, "same\n");
    demo_stop(&d);
}

Test(demo_echo, nc_round_trips_uring) { echo_nc("WEFT_IO=uring"); }
Test(demo_echo, nc_round_trips_uv) { echo_nc("WEFT_IO=uv"); }

/* SIGTERM with idle clients connected: they see end of file, the server exits 0 */
static void stop_with_clients(const char *env)
{
    struct demo d;
    demo_start(&d, "echo", env, NULL);
    int fds[10];
    for (int i = 0; i < 10; i++) {
        fds[i] = demo_connect(d.port);
        cr_assert_geq(fds[i], 0, "connect: %s", strerror(errno));
    }
    /* each one is served (a round trip), then idles in the server's read */
    for (int i = 0; i < 10; i++) {
        char c;
        cr_assert_eq(write(fds[i], "x", 1), 1);
        cr_assert_eq(demo_read_within(fds[i], &c, 1, 20), 1);
    }
    double t0 = demo_now();
    demo_stop(&d);
    cr_expect_lt(demo_now() - t0, 20.0, "the stop waited for idle clients");
    for (int i = 0; i < 10; i++) {
        char c;
        cr_expect_eq(demo_read_within(fds[i], &c, 1, 20), 0, "client %d: no end of file", i);
        close(fds[i]);
    }
}

Test(demo_echo, sigterm_with_idle_clients_exits_0_uring) { stop_with_clients("WEFT_IO=uring"); }
Test(demo_echo, sigterm_with_idle_clients_exits_0_uv) { stop_with_clients("WEFT_IO=uv"); }

Test(demo_echo, help_and_bad_arguments)
{
    char out[1024];
    char path[512];
    snprintf(path, sizeof path, "%s/demos/echo", demo_build());
    cr_expect_eq(demo_sh(out, sizeof out, "%s --help", path), 0);
    cr_expect(strstr(out, "usage: echo") != NULL, "%s", out);
    cr_expect_eq(demo_sh(out, sizeof out, "%s --port 99999 2>/dev/null", path), 2);
    cr_expect_eq(demo_sh(out, sizeof out, "%s --bogus 2>/dev/null", path), 2);
}
