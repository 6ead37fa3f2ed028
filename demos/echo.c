/*
 * demos/echo.c -- a TCP echo server: a green thread per connection, each reading into
 * a buffer on its own stack and writing back what it read. Try it:
 *
 *   build/release/demos/echo --port 7000 &
 *   nc 127.0.0.1 7000
 *
 * The blocking-looking loop below is the whole server: weft_read and weft_write park
 * the green thread (io_uring or libuv underneath), never the OS thread, so ten thousand
 * connections are ten thousand small green threads on a couple of OS threads.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "weft.h"
#include "lib/serve.h"

static void echo_conn(int fd, void *ctx)
{
    (void)ctx;
    char buf[16384];
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (;;) {
        ssize_t n = weft_read(fd, buf, sizeof buf);
        if (n <= 0 || weft_write(fd, buf, (size_t)n) < 0)
            return;
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: echo [--port P] [--host H] [--procs N]\n"
               "  TCP echo server, a green thread per connection (port 7000 by default;\n"
               "  0 lets the kernel pick; the first line on stdout says where it listens).\n"
               "  SIGINT/SIGTERM: stop accepting, finish, exit 0.\n");
}

int main(int argc, char **argv)
{
    struct serve_opts o = { .name = "echo", .host = "127.0.0.1", .port = 7000,
                            .stack_size = 64 * 1024, .conn = echo_conn };
    for (int i = 1, r; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if ((r = serve_parse_arg(&o, argc, argv, &i)) != 0) {
            if (r < 0)
                return 2;
        } else {
            fprintf(stderr, "echo: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    return serve_main(&o);
}
