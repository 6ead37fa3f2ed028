/*
 * tests/bench/echo_weft.c -- weft's echo server for tests/bench/run.sh io (the twin of
 * tests/bench/go/echo.go): a green thread per connection.
 *
 *   echo_weft PORT [NPROCS]
 *
 * NPROCS: weft_config.nprocs (default 0: $WEFT_MAXPROCS, else the CPUs); the I/O
 * backend is weft's choice, $WEFT_IO=uring|uv (weft_config.io_backend left at
 * WEFT_IO_AUTO). The main green thread listens on 127.0.0.1:PORT (backlog 1024) and
 * accepts; each connection's green thread (TCP_NODELAY, as Go's) weft_reads into a
 * 64 KiB buffer on its stack (only the page touched is ever resident) and weft_writes
 * back what it read, until EOF or an error, then weft_closes. Prints one line to stderr
 * at start, "echo_weft: backend B, nprocs N", then nothing but errors.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include "weft.h"

#define BUF_SIZE 65536

static void serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[BUF_SIZE];
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (;;) {
        ssize_t n = weft_read(fd, buf, sizeof buf);
        if (n <= 0 || weft_write(fd, buf, (size_t)n) < 0)
            break;
    }
    weft_close(fd);
}

static int serve_main(void *arg)
{
    int port = *(int *)arg;
    int lfd = weft_listen_tcp("127.0.0.1", port, 1024);
    if (lfd < 0) {
        fprintf(stderr, "echo_weft: 127.0.0.1:%d: %s\n", port, weft_strerror(lfd));
        return 1;
    }
    fprintf(stderr, "echo_weft: backend %s, nprocs %d\n", weft_io_backend(), weft_nprocs());
    for (;;) {
        int fd = weft_accept(lfd, NULL, NULL);
        if (fd < 0) {
            fprintf(stderr, "echo_weft: accept: %s\n", weft_strerror(fd));
            if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM)
                weft_sleep(5 * WEFT_MILLISECOND);       /* no spin at the fd limit */
            continue;
        }
        int r = weft_spawn(serve, (void *)(intptr_t)fd);
        if (r != 0) {
            fprintf(stderr, "echo_weft: spawn: %s\n", weft_strerror(r));
            weft_close(fd);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3 || atoi(argv[1]) <= 0 || atoi(argv[1]) > 65535) {
        fprintf(stderr, "usage: echo_weft PORT [NPROCS]\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int port = atoi(argv[1]);
    weft_config cfg = { .nprocs = argc > 2 ? atoi(argv[2]) : 0 };
    int r = weft_run(serve_main, &port, &cfg);
    if (r < 0)
        fprintf(stderr, "echo_weft: weft_run: %s\n", weft_strerror(r));
    return r == 0 ? 0 : 1;
}
