/*
 * tests/bench/echo_uv.c -- the classic libuv echo server, the baseline of
 * tests/bench/run.sh io: one thread, one uv_loop.
 *
 *   echo_uv PORT
 *
 * Listens on 127.0.0.1:PORT (backlog 1024); each connection (TCP_NODELAY, as Go's and
 * weft's) reads into its own 64 KiB buffer (the alloc callback hands back the same one)
 * and writes back what it read. The write is uv_try_write first -- all of it goes out at
 * once whenever the socket buffer has room, which is always the case for one small
 * message in flight -- and only what is left goes through uv_write, with reading stopped
 * until it completes (the buffer is reused by the next read). Closes on EOF or error.
 * Prints nothing but errors. Not linked with weft's runtime (it is in the binary, unused).
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <uv.h>

#define BUF_SIZE 65536

struct conn {
    uv_tcp_t tcp;               /* first: the handle's address is the conn's */
    uv_write_t req;
    char buf[BUF_SIZE];
};

static uv_loop_t *loop;

static void on_close(uv_handle_t *h)
{
    free(h);                    /* h == &conn->tcp == conn */
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct conn *c = (struct conn *)h;
    *buf = uv_buf_init(c->buf, BUF_SIZE);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    if (status < 0) {
        if (!uv_is_closing((uv_handle_t *)&c->tcp))
            uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = (struct conn *)s;
    if (nread == 0)             /* EAGAIN */
        return;
    if (nread < 0) {            /* UV_EOF or an error */
        if (!uv_is_closing((uv_handle_t *)s))
            uv_close((uv_handle_t *)s, on_close);
        return;
    }
    int n = uv_try_write(s, &(uv_buf_t){ .base = buf->base, .len = (size_t)nread }, 1);
    if (n == nread)
        return;
    if (n < 0 && n != UV_EAGAIN) {
        uv_close((uv_handle_t *)s, on_close);
        return;
    }
    if (n < 0)
        n = 0;
    uv_read_stop(s);
    uv_buf_t rest = uv_buf_init(buf->base + n, (unsigned)(nread - n));
    c->req.data = c;
    if (uv_write(&c->req, s, &rest, 1, on_write) != 0)
        uv_close((uv_handle_t *)s, on_close);
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0) {
        fprintf(stderr, "echo_uv: listen: %s\n", uv_strerror(status));
        return;
    }
    struct conn *c = malloc(sizeof *c);
    if (!c) {
        fprintf(stderr, "echo_uv: out of memory\n");
        exit(1);
    }
    uv_tcp_init(loop, &c->tcp);
    int r = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (r != 0) {
        fprintf(stderr, "echo_uv: accept: %s\n", uv_strerror(r));
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int main(int argc, char **argv)
{
    if (argc != 2 || atoi(argv[1]) <= 0 || atoi(argv[1]) > 65535) {
        fprintf(stderr, "usage: echo_uv PORT\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    loop = uv_default_loop();
    uv_tcp_t server;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr);
    uv_tcp_init(loop, &server);
    int r = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&server, 1024, on_connection);
    if (r != 0) {
        fprintf(stderr, "echo_uv: 127.0.0.1:%s: %s\n", argv[1], uv_strerror(r));
        return 1;
    }
    return uv_run(loop, UV_RUN_DEFAULT);
}
