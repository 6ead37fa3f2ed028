/*
 * tests/bench/http_uv.c -- a plain libuv HTTP server, a baseline of
 * tests/bench/section_http.sh: one thread, one uv_loop, a minimal hand-written parser.
 *
 *   http_uv PORT ROOT
 *
 * Listens on 127.0.0.1:PORT (backlog 1024, TCP_NODELAY). GET / (or HEAD) answers
 * "hello, world\n"; GET /NAME answers the file ROOT/NAME (a name with no '/' and no
 * leading '.'), opened, read (pread, on the loop thread: the file is in the page cache)
 * and closed per request, as httpd and Go do; anything else is 404. Keep-alive unless
 * "Connection: close" (or HTTP/1.0); pipelined requests are parsed out of the read
 * buffer in turn and their replies leave in one write: uv_try_write first, and what is
 * left through uv_write, reading paused meanwhile. Bodies are not supported (no
 * benchmark sends one): a request with Content-Length or Transfer-Encoding is 400 and
 * closed. Every reply has Server, Date, Content-Type and Content-Length, as httpd's.
 * Prints nothing but errors. Not linked with weft's runtime (it is in the binary, unused).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define IN_SIZE 16384

struct conn {
    uv_tcp_t tcp;               /* first: the handle's address is the conn's */
    uv_write_t req;
    size_t len;                 /* bytes in in[] */
    char *out;                  /* replies waiting for uv_write */
    size_t outlen, outcap;
    int closing;
    char in[IN_SIZE];
};

static uv_loop_t *loop;
static const char *root;
static char date[64];
static time_t date_sec = -1;

static void on_close(uv_handle_t *h)
{
    struct conn *c = (struct conn *)h;
    free(c->out);
    free(c);
}

static void conn_close(struct conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct conn *c = (struct conn *)h;
    *buf = uv_buf_init(c->in + c->len, (unsigned)(IN_SIZE - c->len));
}

static int out_reserve(struct conn *c, size_t n)
{
    if (c->outcap - c->outlen >= n)
        return 0;
    size_t cap = c->outcap ? c->outcap : 16384;
    while (cap - c->outlen < n)
        cap *= 2;
    char *p = realloc(c->out, cap);
    if (p == NULL)
        return -1;
    c->out = p;
    c->outcap = cap;
    return 0;
}

static const char *now_date(void)
{
    time_t t = time(NULL);
    if (t != date_sec) {
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        date_sec = t;
    }
    return date;
}

static int reply_head(struct conn *c, int status, const char *reason, const char *type,
                      size_t length, int keep)
{
    if (out_reserve(c, 512 + length) < 0)
        return -1;
    c->outlen += (size_t)snprintf(c->out + c->outlen, c->outcap - c->outlen,
                                  "HTTP/1.1 %d %s\r\nServer: http_uv\r\nDate: %s\r\n"
                                  "Content-Type: %s\r\nContent-Length: %zu\r\n%s\r\n",
                                  status, reason, now_date(), type, length,
                                  keep ? "" : "Connection: close\r\n");
    return 0;
}

/* One request: line = "METHOD TARGET HTTP/1.x", hdr = its fields (up to the blank
 * line). Returns whether the connection stays open. */
static int handle(struct conn *c, const char *line, size_t ll, const char *hdr, size_t hl)
{
    const char *sp1 = memchr(line, ' ', ll);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', ll - (size_t)(sp1 + 1 - line)) : NULL;
    if (sp1 == NULL || sp2 == NULL || (size_t)(line + ll - (sp2 + 1)) != 8 ||
        memcmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        reply_head(c, 400, "Bad Request", "text/plain", 0, 0);
        return 0;
    }
    int minor = sp2[8] - '0';
    int keep = minor == 1;
    int has_body = 0;
    /* the fields: Connection and the framing only */
    for (const char *p = hdr; p < hdr + hl;) {
        const char *e = memchr(p, '\n', (size_t)(hdr + hl - p));
        size_t n = (size_t)((e ? e : hdr + hl) - p);
        if (n >= 11 && strncasecmp(p, "connection:", 11) == 0) {
            const char *v = p + 11;
            size_t vn = n - 11;
            for (; vn > 0 && (*v == ' ' || *v == '\t'); v++, vn--)
                ;
            if (vn >= 5 && strncasecmp(v, "close", 5) == 0)
                keep = 0;
            else if (vn >= 10 && strncasecmp(v, "keep-alive", 10) == 0)
                keep = 1;
        } else if ((n >= 15 && strncasecmp(p, "content-length:", 15) == 0) ||
                   (n >= 18 && strncasecmp(p, "transfer-encoding:", 18) == 0)) {
            has_body = 1;
        }
        p += n + 1;
    }
    if (has_body) {
        reply_head(c, 400, "Bad Request", "text/plain", 0, 0);
        return 0;
    }
    int head = (size_t)(sp1 - line) == 4 && memcmp(line, "HEAD", 4) == 0;
    int get = (size_t)(sp1 - line) == 3 && memcmp(line, "GET", 3) == 0;
    const char *t = sp1 + 1;
    size_t tn = (size_t)(sp2 - t);
    if (!get && !head) {
        reply_head(c, 405, "Method Not Allowed", "text/plain", 0, keep);
        return keep;
    }
    if (tn == 1 && t[0] == '/') {
        static const char hello[] = "hello, world\n";
        if (reply_head(c, 200, "OK", "text/plain; charset=utf-8", sizeof hello - 1, keep) < 0)
            return 0;
        if (!head) {
            memcpy(c->out + c->outlen, hello, sizeof hello - 1);
            c->outlen += sizeof hello - 1;
        }
        return keep;
    }
    char path[1024];
    if (tn < 2 || tn > 512 || t[1] == '.' || memchr(t + 1, '/', tn - 1) != NULL ||
        snprintf(path, sizeof path, "%s/%.*s", root, (int)(tn - 1), t + 1) >= (int)sizeof path) {
        reply_head(c, 404, "Not Found", "text/plain", 0, keep);
        return keep;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        reply_head(c, 404, "Not Found", "text/plain", 0, keep);
        return keep;
    }
    size_t size = (size_t)st.st_size;
    if (reply_head(c, 200, "OK", "application/octet-stream", size, keep) < 0) {
        close(fd);
        return 0;
    }
    if (head) {
        close(fd);
        return keep;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = pread(fd, c->out + c->outlen + got, size - got, (off_t)got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got < size)
        return 0;
    c->outlen += size;
    return keep;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    c->outlen = 0;
    if (status < 0 || c->closing) {
        conn_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* Sends out[0..outlen): at once if the socket takes it all, else by uv_write with
 * reading paused. */
static void flush(struct conn *c)
{
    if (c->outlen == 0) {
        if (c->closing)
            conn_close(c);
        return;
    }
    uv_buf_t b = uv_buf_init(c->out, (unsigned)c->outlen);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)c->outlen) {
        c->outlen = 0;
        if (c->closing)
            conn_close(c);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        conn_close(c);
        return;
    }
    size_t done = n > 0 ? (size_t)n : 0;
    memmove(c->out, c->out + done, c->outlen - done);
    c->outlen -= done;
    b = uv_buf_init(c->out, (unsigned)c->outlen);
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->req.data = c;
    if (uv_write(&c->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0)
        conn_close(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct conn *c = (struct conn *)s;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    c->len += (size_t)nread;
    size_t pos = 0;
    while (!c->closing) {
        char *start = c->in + pos;
        size_t avail = c->len - pos;
        char *end = avail >= 4 ? memmem(start, avail, "\r\n\r\n", 4) : NULL;
        if (end == NULL)
            break;
        char *eol = memchr(start, '\r', (size_t)(end - start) + 1);
        const char *hdr = eol + 2;
        size_t hl = end > eol ? (size_t)(end - hdr) : 0;
        if (!handle(c, start, (size_t)(eol - start), hdr, hl))
            c->closing = 1;
        pos += (size_t)(end + 4 - start);
    }
    memmove(c->in, c->in + pos, c->len - pos);
    c->len -= pos;
    if (c->len == IN_SIZE && !c->closing) {
        reply_head(c, 431, "Request Header Fields Too Large", "text/plain", 0, 0);
        c->closing = 1;
    }
    flush(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return;
    uv_tcp_init(loop, &c->tcp);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int main(int argc, char **argv)
{
    if (argc != 3 || atoi(argv[1]) <= 0 || atoi(argv[1]) > 65535) {
        fprintf(stderr, "usage: http_uv PORT ROOT\n");
        return 2;
    }
    root = argv[2];
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    loop = uv_default_loop();
    uv_tcp_t server;
    uv_tcp_init(loop, &server);
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr);
    int rc = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&server, 1024, on_connection);
    if (rc != 0) {
        fprintf(stderr, "http_uv: listen on port %s: %s\n", argv[1], uv_strerror(rc));
        return 1;
    }
    return uv_run(loop, UV_RUN_DEFAULT);
}
