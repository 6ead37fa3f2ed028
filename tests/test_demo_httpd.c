/*
 * tests/test_demo_httpd.c -- demos/httpd end to end: curl on both I/O backends (bodies,
 * HEAD, HTTP/1.0, keep-alive, chunked uploads, files, symlinks), every malformed case
 * sent raw over a socket (curl would clean the paths and fix the syntax), 10,000
 * pipelined requests in one write, garbage with the RSS flat, a slow client, the
 * request timeout, and the graceful stop with a reply in flight.
 */
#include <pthread.h>
#include <sys/stat.h>
#include "tests/common.h"
#include "tests/demo_common.h"

TestSuite(demo_httpd, .timeout = 120);

/* ---- helpers ------------------------------------------------------------------------ */
struct root {
    char dir[64];
};

static void write_file(const char *dir, const char *name, const void *data, size_t n)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert(f != NULL, "fopen %s", path);
    cr_assert(fwrite(data, 1, n, f) == n);
    fclose(f);
}

/* A --root: a.txt, style.css, sub/index.html, big.bin (size big), an inside link
 * (in.txt -> a.txt) and two that lead out (etc -> /etc, passwd -> /etc/passwd). */
static void root_make(struct root *r, size_t big)
{
    snprintf(r->dir, sizeof r->dir, "/tmp/weft-httpd-XXXXXX");
    cr_assert(mkdtemp(r->dir) != NULL);
    write_file(r->dir, "a.txt", "text file\n", 10);
    write_file(r->dir, "style.css", "p{}\n", 4);
    char p[256];
    snprintf(p, sizeof p, "%s/sub", r->dir);
    cr_assert(mkdir(p, 0755) == 0);
    write_file(r->dir, "sub/index.html", "<p>sub</p>\n", 11);
    char *b = malloc(big);
    cr_assert(b != NULL);
    for (size_t i = 0; i < big; i++)
        b[i] = (char)(i * 7 + i / 251);
    write_file(r->dir, "big.bin", b, big);
    free(b);
    snprintf(p, sizeof p, "%s/in.txt", r->dir);
    cr_assert(symlink("a.txt", p) == 0);
    snprintf(p, sizeof p, "%s/etc", r->dir);
    cr_assert(symlink("/etc", p) == 0);
    snprintf(p, sizeof p, "%s/passwd", r->dir);
    cr_assert(symlink("/etc/passwd", p) == 0);
}

static void root_remove(struct root *r)
{
    demo_sh(NULL, 0, "rm -rf '%s'", r->dir);
}

/* Sends req (n bytes) on a fresh connection and reads until the server closes it (or
 * `secs` pass): the bytes read, NUL-terminated. */
static size_t raw(int port, const char *req, size_t n, char *out, size_t cap, double secs)
{
    int fd = demo_connect(port);
    cr_assert(fd >= 0, "connect: %s", strerror(errno));
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, req + off, n - off);
        if (w <= 0)
            break;          /* the server may refuse early and close */
        off += (size_t)w;
    }
    size_t got = 0;
    double until = demo_now() + secs;
    while (got < cap - 1 && demo_now() < until) {
        ssize_t r = demo_read_within(fd, out + got, cap - 1 - got, until - demo_now());
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    out[got] = '\0';
    close(fd);
    return got;
}

static int status_of(const char *resp)
{
    int st = 0;
    if (sscanf(resp, "HTTP/1.1 %d", &st) != 1)
        return -1;
    return st;
}

/* The status of the first reply to req (read up to the end of that reply's head: a
 * connection kept open does not hold the test). */
static int raw_status(int port, const char *req)
{
    int fd = demo_connect(port);
    cr_assert(fd >= 0, "connect: %s", strerror(errno));
    size_t n = strlen(req);
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, req + off, n - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    char out[8192];
    size_t got = 0;
    double until = demo_now() + 20;
    while (got < sizeof out - 1 && demo_now() < until) {
        ssize_t r = demo_read_within(fd, out + got, sizeof out - 1 - got, until - demo_now());
        if (r <= 0)
            break;
        got += (size_t)r;
        out[got] = '\0';
        if (strstr(out, "\r\n\r\n") != NULL)
            break;
    }
    out[got] = '\0';
    close(fd);
    return status_of(out);
}

static int curl_code(int port, const char *args)
{
    char out[64];
    demo_sh(out, sizeof out, "curl -s -o /dev/null -w '%%{http_code}' --max-time 20 %s "
            "http://127.0.0.1:%d", args, port);
    return atoi(out);
}

static void assert_serving(int port)
{
    char out[256];
    int st = demo_sh(out, sizeof out, "curl -s --max-time 20 http://127.0.0.1:%d/", port);
    cr_assert(st == 0 && strcmp(out, "hello, world\n") == 0, "not serving: %d '%s'", st, out);
}

/* ---- curl, both backends ---------------------------------------------------------------- */
static void curl_main(const char *env)
{
    demo_need("curl");
    struct root r;
    root_make(&r, 1 << 20);
    struct demo d;
    demo_start(&d, "httpd", env, "--root", r.dir, NULL);
    char out[8192];
    int p = d.port;

    /* GET / with no index.html: hello; its head */
    assert_serving(p);
    demo_sh(out, sizeof out, "curl -s -D - -o /dev/null http://127.0.0.1:%d/", p);
    cr_assert(strstr(out, "HTTP/1.1 200 OK\r\n") == out, "%s", out);
    cr_assert(strstr(out, "Content-Type: text/plain; charset=utf-8\r\n") != NULL, "%s", out);
    cr_assert(strstr(out, "Content-Length: 13\r\n") != NULL, "%s", out);
    cr_assert(strstr(out, "Server: weft-httpd\r\n") != NULL, "%s", out);
    cr_assert(strstr(out, " GMT\r\n") != NULL && strstr(out, "Date: ") != NULL, "%s", out);

    /* HEAD: the same head, no body */
    demo_sh(out, sizeof out, "curl -s -I http://127.0.0.1:%d/a.txt", p);
    cr_assert(strstr(out, "HTTP/1.1 200 OK\r\n") == out, "%s", out);
    cr_assert(strstr(out, "Content-Length: 10\r\n") != NULL, "%s", out);
    cr_assert(strstr(out, "text file") == NULL, "%s", out);

    /* files, their types, a directory's index.html, a link inside the root */
    demo_sh(out, sizeof out, "curl -s http://127.0.0.1:%d/a.txt http://127.0.0.1:%d/in.txt "
            "http://127.0.0.1:%d/sub/ http://127.0.0.1:%d/sub", p, p, p, p);
    cr_assert_str_eq(out, "text file\ntext file\n<p>sub</p>\n<p>sub</p>\n");
    demo_sh(out, sizeof out, "curl -s -o /dev/null -o /dev/null -o /dev/null -w '%%{content_type}|' "
            "http://127.0.0.1:%d/style.css "
            "http://127.0.0.1:%d/sub/ http://127.0.0.1:%d/big.bin", p, p, p);
    cr_assert_str_eq(out, "text/css; charset=utf-8|text/html; charset=utf-8|application/octet-stream|");
    demo_sh(out, sizeof out, "curl -s http://127.0.0.1:%d/big.bin | cmp - %s/big.bin && echo same",
            p, r.dir);
    cr_assert_str_eq(out, "same\n");

    /* keep-alive: three URLs, one connection */
    demo_sh(out, sizeof out, "curl -s -o /dev/null -o /dev/null -o /dev/null -w '%%{num_connects}' "
            "http://127.0.0.1:%d/ http://127.0.0.1:%d/a.txt http://127.0.0.1:%d/big.bin", p, p, p);
    cr_assert_str_eq(out, "100", "connections per URL: %s", out);

    /* HTTP/1.0: answered, then closed */
    demo_sh(out, sizeof out, "curl -s -i --http1.0 http://127.0.0.1:%d/", p);
    cr_assert(strstr(out, "Connection: close\r\n") != NULL, "%s", out);
    cr_assert(strstr(out, "\r\n\r\nhello, world\n") != NULL, "%s", out);
    demo_sh(out, sizeof out, "curl -s -o /dev/null -o /dev/null -w '%%{num_connects}' --http1.0 "
            "http://127.0.0.1:%d/ http://127.0.0.1:%d/", p, p);
    cr_assert_str_eq(out, "11");

    /* status codes */
    cr_assert_eq(curl_code(p, "-o /dev/null"), 200);
    demo_sh(out, sizeof out, "curl -s -o /dev/null -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/nope "
            "http://127.0.0.1:%d/sub/nope.txt", p, p);
    cr_assert_str_eq(out, "404404");
    demo_sh(out, sizeof out, "curl -s -o /dev/null -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/etc/passwd "
            "http://127.0.0.1:%d/passwd", p, p);
    cr_assert_str_eq(out, "403403", "symlinks out of the root: %s", out);
    demo_sh(out, sizeof out, "curl -s -i -X DELETE http://127.0.0.1:%d/a.txt", p);
    cr_assert(status_of(out) == 405 && strstr(out, "Allow: GET, HEAD\r\n") != NULL, "%s", out);
    demo_sh(out, sizeof out, "curl -s -i http://127.0.0.1:%d/echo", p);
    cr_assert(status_of(out) == 405 && strstr(out, "Allow: POST\r\n") != NULL, "%s", out);

    /* POST /echo: a Content-Length body and a chunked one (100 KiB) come back whole */
    demo_sh(out, sizeof out, "curl -s -H 'Content-Type: text/x-test' -w '|%%{content_type}' "
            "--data-binary 'hello body' http://127.0.0.1:%d/echo", p);
    cr_assert_str_eq(out, "hello body|text/x-test");
    demo_sh(out, sizeof out,
            "head -c 100000 /dev/urandom > /tmp/weft-httpd-up-$$ && "
            "curl -s -H 'Transfer-Encoding: chunked' --data-binary @/tmp/weft-httpd-up-$$ "
            "http://127.0.0.1:%d/echo | cmp - /tmp/weft-httpd-up-$$ && echo same; "
            "curl -s --data-binary @/tmp/weft-httpd-up-$$ "
            "http://127.0.0.1:%d/echo | cmp - /tmp/weft-httpd-up-$$ && echo same; "
            "rm -f /tmp/weft-httpd-up-$$", p, p);
    cr_assert_str_eq(out, "same\nsame\n");
    /* over 1 MiB: 413, by length and chunked (the reply still reaches curl) */
    demo_sh(out, sizeof out,
            "head -c 1100000 /dev/zero > /tmp/weft-httpd-up-$$ && "
            "curl -s -o /dev/null -w '%%{http_code}' --data-binary @/tmp/weft-httpd-up-$$ "
            "http://127.0.0.1:%d/echo; "
            "curl -s -o /dev/null -w '%%{http_code}' -H 'Transfer-Encoding: chunked' "
            "--data-binary @/tmp/weft-httpd-up-$$ http://127.0.0.1:%d/echo; "
            "rm -f /tmp/weft-httpd-up-$$", p, p);
    cr_assert_str_eq(out, "413413");
    assert_serving(p);
    demo_stop(&d);
    root_remove(&r);
}

Test(demo_httpd, curl_uring) { curl_main("WEFT_IO=uring"); }
Test(demo_httpd, curl_uv) { curl_main("WEFT_IO=uv"); }

/* GET / with an index.html at the root serves it; no --root: only / is there */
Test(demo_httpd, root_index_and_no_root)
{
    demo_need("curl");
    struct root r;
    root_make(&r, 16);
    write_file(r.dir, "index.html", "<p>root</p>\n", 12);
    struct demo d;
    demo_start(&d, "httpd", NULL, "--root", r.dir, NULL);
    char out[256];
    demo_sh(out, sizeof out, "curl -s http://127.0.0.1:%d/", d.port);
    cr_assert_str_eq(out, "<p>root</p>\n");
    demo_stop(&d);
    demo_start(&d, "httpd", NULL, NULL);
    assert_serving(d.port);
    cr_assert_eq(curl_code(d.port, "-o /dev/null -X POST"), 405);
    demo_sh(out, sizeof out, "curl -s -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/a.txt",
            d.port);
    cr_assert_str_eq(out, "404");
    demo_stop(&d);
    root_remove(&r);
}

/* ---- malformed requests, sent raw --------------------------------------------------------- */
struct raw_case {
    const char *req;
    int status;
};

static void malformed_main(const char *env)
{
    struct root r;
    root_make(&r, 16);
    struct demo d;
    demo_start(&d, "httpd", env, "--root", r.dir, NULL);
    static char big_field[12000], many[4000], long_uri[10000];
    snprintf(big_field, sizeof big_field, "GET / HTTP/1.1\r\nHost: h\r\nX-Big: %09000d\r\n\r\n", 1);
    int n = snprintf(many, sizeof many, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 0; i < 100; i++)
        n += snprintf(many + n, sizeof many - (size_t)n, "X-%d: v\r\n", i);
    snprintf(many + n, sizeof many - (size_t)n, "\r\n");
    snprintf(long_uri, sizeof long_uri, "GET /%09000d HTTP/1.1\r\nHost: h\r\n\r\n", 1);
    const struct raw_case cases[] = {
        { "GARBAGE\r\n\r\n", 400 },
        { "GET /\r\n\r\n", 400 },                                               /* HTTP/0.9 */
        { "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400 },
        { "GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400 },
        { "GET / http/1.1\r\nHost: h\r\n\r\n", 400 },
        { "G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400 },
        { "GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n", 400 },
        { "GET / HTTP/1.1\rHost: h\r\n\r\n", 400 },                            /* bare CR */
        { "GET / HTTP/1.1\r\nHost: h\r\nNo colon here\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: h\r\nX-A : b\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: h\r\nX-A: b\r\n folded\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: h\r\nX-A: b\x01\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\n\r\n", 400 },                                     /* no Host */
        { "GET / HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n", 400 },
        { "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\nx", 400 },
        { "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400 },
        { "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\n\r\nx", 400 },
        { "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", 400 },
        { "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400 },
        { "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400 },
        { "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400 },
        { "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1234567890abcdef0\r\n", 400 },
        { "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400 },
        { "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400 },
        { "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501 },
        { "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501 },
        { "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 2000000\r\n\r\n", 413 },
        { "GET / HTTP/1.1\r\nHost: h\r\nExpect: something\r\n\r\n", 417 },
        { "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505 },
        { "GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505 },
        { "GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505 },
        { big_field, 431 },
        { many, 431 },
        { long_uri, 414 },
        /* paths: curl would have cleaned these */
        { "GET /../etc/passwd HTTP/1.1\r\nHost: h\r\n\r\n", 403 },
        { "GET /sub/../../etc/passwd HTTP/1.1\r\nHost: h\r\n\r\n", 403 },
        { "GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: h\r\n\r\n", 403 },
        { "GET /%2E%2E/etc/passwd HTTP/1.1\r\nHost: h\r\n\r\n", 403 },
        { "GET /.%2e/a.txt HTTP/1.1\r\nHost: h\r\n\r\n", 403 },
        { "GET /sub%2F..%2F..%2Fetc%2Fpasswd HTTP/1.1\r\nHost: h\r\n\r\n", 403 },
        { "GET /..%5c..%5cetc HTTP/1.1\r\nHost: h\r\n\r\n", 403 },
        { "GET //etc/passwd HTTP/1.1\r\nHost: h\r\n\r\n", 403 },           /* root/etc */
        { "GET //nothere/passwd HTTP/1.1\r\nHost: h\r\n\r\n", 404 },
        { "GET /etc/passwd HTTP/1.1\r\nHost: h\r\n\r\n", 403 },              /* symlink out */
        { "GET /passwd HTTP/1.1\r\nHost: h\r\n\r\n", 403 },
        { "GET /a.txt%00.html HTTP/1.1\r\nHost: h\r\n\r\n", 400 },
        { "GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n", 400 },
        { "GET a.txt HTTP/1.1\r\nHost: h\r\n\r\n", 400 },
        { "GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400 },
        { "PUT /a.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", 405 },
        /* and what is fine */
        { "GET /./sub/./index.html HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 200 },
        { "GET http://h/a.txt?x=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 200 },
        { "\r\nGET /a.txt HTTP/1.0\r\n\r\n", 200 },
        { "GET /a.txt HTTP/1.1\nHost: h\nConnection: close\n\n", 200 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int st = raw_status(d.port, cases[i].req);
        cr_assert_eq(st, cases[i].status, "case %zu: %.60s: %d, not %d", i, cases[i].req, st,
                     cases[i].status);
    }
    /* a 405 names what is allowed, and an error closes the connection after it */
    char out[8192];
    const char *put = "PUT / HTTP/1.1\r\nHost: h\r\n\r\n"
                      "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    raw(d.port, put, strlen(put), out, sizeof out, 20);
    cr_assert(strstr(out, "Allow: GET, HEAD\r\n") != NULL, "%s", out);
    cr_assert(strstr(out, "hello, world\n") != NULL, "a 405 closed the connection: %s", out);
    const char *bad = "GET / HTTP/9.9\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
    raw(d.port, bad, strlen(bad), out, sizeof out, 20);
    cr_assert(status_of(out) == 505 && strstr(out, "Connection: close\r\n") != NULL, "%s", out);
    cr_assert(strstr(out + 10, "HTTP/1.1") == NULL, "served after an error: %s", out);
    assert_serving(d.port);
    demo_stop(&d);
    root_remove(&r);
}

Test(demo_httpd, malformed_raw_uring) { malformed_main("WEFT_IO=uring"); }
Test(demo_httpd, malformed_raw_uv) { malformed_main("WEFT_IO=uv"); }

/* ---- protocol details, raw -------------------------------------------------------------- */
static size_t count(const char *s, const char *what)
{
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, what)) != NULL; p += strlen(what))
        n++;
    return n;
}

Test(demo_httpd, keep_alive_expect_and_pipelined_bodies)
{
    struct demo d;
    demo_start(&d, "httpd", NULL, NULL);
    char out[8192];
    /* HTTP/1.0 with keep-alive: two answers on one connection, the second closes it */
    const char *ka = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n";
    raw(d.port, ka, strlen(ka), out, sizeof out, 20);
    cr_assert_eq(count(out, "hello, world\n"), 2, "%s", out);
    cr_assert(strstr(out, "Connection: keep-alive\r\n") != NULL, "%s", out);
    /* pipelined: a body by length, a chunked one, HEAD, then close; answered in order */
    const char *pl = "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\none"
                     "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "2;x=y\r\ntw\r\n1\r\no\r\n0\r\nTrailer: t\r\n\r\n"
                     "HEAD / HTTP/1.1\r\nHost: h\r\n\r\n"
                     "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    raw(d.port, pl, strlen(pl), out, sizeof out, 20);
    const char *a = strstr(out, "\r\n\r\none"), *b = strstr(out, "\r\n\r\ntwo");
    const char *c = strstr(out, "Content-Length: 13\r\n"), *e = strstr(out, "hello, world\n");
    cr_assert(a && b && c && e && a < b && b < c && c < e, "%s", out);
    cr_assert_eq(count(out, "HTTP/1.1 200"), 4, "%s", out);
    cr_assert_eq(count(out, "hello, world"), 1, "HEAD sent a body: %s", out);
    /* Expect: 100-continue: the interim reply, then the body's answer */
    int fd = demo_connect(d.port);
    cr_assert(fd >= 0);
    const char *h = "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
    cr_assert_eq(write(fd, h, strlen(h)), (ssize_t)strlen(h));
    ssize_t n = demo_read_within(fd, out, sizeof out - 1, 20);
    cr_assert(n > 0);
    out[n] = '\0';
    cr_assert_str_eq(out, "HTTP/1.1 100 Continue\r\n\r\n");
    cr_assert_eq(write(fd, "hello", 5), 5);
    n = demo_read_within(fd, out, sizeof out - 1, 20);
    cr_assert(n > 0);
    out[n] = '\0';
    cr_assert(status_of(out) == 200 && strstr(out, "\r\n\r\nhello") != NULL, "%s", out);
    close(fd);
    demo_stop(&d);
}

/* ---- 10,000 pipelined requests in one write --------------------------------------------- */
struct writer {
    int fd;
    const char *buf;
    size_t n;
};

static void *write_all(void *p)
{
    struct writer *w = p;
    size_t off = 0;
    while (off < w->n) {
        ssize_t r = write(w->fd, w->buf + off, w->n - off);
        if (r <= 0)
            break;
        off += (size_t)r;
    }
    return NULL;
}

static void pipelined(const char *env)
{
    struct demo d;
    demo_start(&d, "httpd", env, NULL);
    int n = tsan() ? 2000 : 10000;
    static const char one[] = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    static const char last[] = "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    size_t len = (size_t)(n - 1) * (sizeof one - 1) + sizeof last - 1;
    char *buf = malloc(len);
    cr_assert(buf != NULL);
    for (int i = 0; i < n - 1; i++)
        memcpy(buf + (size_t)i * (sizeof one - 1), one, sizeof one - 1);
    memcpy(buf + (size_t)(n - 1) * (sizeof one - 1), last, sizeof last - 1);
    int fd = demo_connect(d.port);
    cr_assert(fd >= 0);
    /* one write(2) of the lot, from a thread: the replies must be read meanwhile */
    struct writer w = { fd, buf, len };
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, write_all, &w), 0);
    static const char body[] = "\r\n\r\nhello, world\n";
    size_t cap = (size_t)n * 200, got = 0;
    char *out = malloc(cap + 1);
    cr_assert(out != NULL);
    for (;;) {
        ssize_t r = demo_read_within(fd, out + got, cap - got, 30);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    out[got] = '\0';
    pthread_join(t, NULL);
    close(fd);
    size_t replies = count(out, "HTTP/1.1 200 OK\r\n"), bodies = count(out, body);
    cr_assert(replies == (size_t)n && bodies == (size_t)n, "%zu replies, %zu bodies of %d",
              replies, bodies, n);
    free(out);
    free(buf);
    assert_serving(d.port);
    demo_stop(&d);
}

Test(demo_httpd, pipelined_10000_uring) { pipelined("WEFT_IO=uring"); }
Test(demo_httpd, pipelined_10000_uv) { pipelined("WEFT_IO=uv"); }

/* ---- garbage leaves the server serving, with its RSS flat ----------------------------- */
static void garbage_round(int port, unsigned seed)
{
    char buf[20000];
    int fd = demo_connect(port);
    cr_assert(fd >= 0);
    size_t n;
    switch (seed % 5) {
    case 0:     /* truncated, then gone */
        n = (size_t)snprintf(buf, sizeof buf, "GET /a.txt HTTP/1.1\r\nHost: h\r\nX-Par");
        break;
    case 1:     /* oversized head */
        memset(buf, 'a', sizeof buf);
        n = (size_t)snprintf(buf, 64, "GET / HTTP/1.1\r\nHost: h\r\nX: ");
        buf[n] = 'a';
        n = sizeof buf;
        break;
    case 2:     /* binary garbage */
        for (size_t i = 0; i < 4096; i++)
            buf[i] = (char)(rand_r(&seed) >> 3);
        n = 4096;
        break;
    case 3:     /* gone in the middle of a body */
        n = (size_t)snprintf(buf, sizeof buf, "POST /echo HTTP/1.1\r\nHost: h\r\n"
                             "Content-Length: 100000\r\n\r\npartial body");
        break;
    default:    /* gone in the middle of a chunked body */
        n = (size_t)snprintf(buf, sizeof buf, "POST /echo HTTP/1.1\r\nHost: h\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n10\r\nabc");
        break;
    }
    ssize_t w = write(fd, buf, n);
    (void)w;
    if (seed % 5 == 1 || seed % 5 == 2) {
        char out[512];
        (void)demo_read_within(fd, out, sizeof out, 20);    /* the 4xx, then close */
    }
    close(fd);
}

Test(demo_httpd, garbage_keeps_it_serving_with_rss_flat)
{
    struct root r;
    root_make(&r, 16);
    struct demo d;
    demo_start(&d, "httpd", "WEFT_IO=uring", "--root", r.dir, NULL);
    int rounds = sanitized() ? 100 : 500;
    for (int i = 0; i < 100; i++)
        garbage_round(d.port, (unsigned)i);     /* warm up: the runtime's caches fill */
    assert_serving(d.port);
    usleep(200000);
    long before = demo_rss_kib(&d);
    for (int i = 0; i < rounds; i++)
        garbage_round(d.port, (unsigned)i + 1000);
    assert_serving(d.port);
    usleep(200000);
    long after = demo_rss_kib(&d);
    if (!sanitized())
        cr_assert(after < before + 32 * 1024, "RSS %ld KiB, then %ld KiB", before, after);
    cr_assert(demo_alive(&d));
    demo_stop(&d);
    root_remove(&r);
}

/* ---- slow clients and the timeout ----------------------------------------------------- */
Test(demo_httpd, slow_client_does_not_stop_others)
{
    demo_need("curl");
    struct demo d;
    demo_start(&d, "httpd", NULL, NULL);
    int slow[20];
    for (int i = 0; i < 20; i++) {
        slow[i] = demo_connect(d.port);
        cr_assert(slow[i] >= 0);
        cr_assert_eq(write(slow[i], "GET / HT", 8), 8);
    }
    for (int i = 0; i < 5; i++)
        assert_serving(d.port);
    for (int i = 0; i < 20; i++) {
        char c;
        cr_assert(demo_read_within(slow[i], &c, 1, 0.05) < 0, "the slow client got a reply");
        close(slow[i]);
    }
    demo_stop(&d);
}

Test(demo_httpd, timeout_408_then_close)
{
    struct demo d;
    demo_start(&d, "httpd", NULL, "--timeout", "1", NULL);
    char out[1024];
    /* part of a request, then nothing: 408 and the close */
    double t0 = demo_now();
    raw(d.port, "GET / HTTP/1.1\r\nHost", 20, out, sizeof out, 30);
    cr_assert_eq(status_of(out), 408, "%s", out);
    cr_assert(strstr(out, "Connection: close\r\n") != NULL, "%s", out);
    cr_assert(demo_now() - t0 >= 0.9, "408 before the timeout");
    /* nothing at all on a new connection: 408 too */
    raw(d.port, "", 0, out, sizeof out, 30);
    cr_assert_eq(status_of(out), 408, "%s", out);
    /* idle after a reply: closed without one */
    const char *req = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    raw(d.port, req, strlen(req), out, sizeof out, 30);
    cr_assert_eq(count(out, "HTTP/1.1 "), 1, "%s", out);
    cr_assert_eq(status_of(out), 200, "%s", out);
    /* a body that stops coming: 408 */
    const char *body = "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc";
    raw(d.port, body, strlen(body), out, sizeof out, 30);
    cr_assert_eq(status_of(out), 408, "%s", out);
    assert_serving(d.port);
    demo_stop(&d);
}

/* ---- the graceful stop with a reply in flight ---------------------------------------- */
struct reader {
    int fd;
    size_t got;
};

static void *read_rest(void *p)
{
    struct reader *r = p;
    char buf[65536];
    usleep(300000);         /* the stop comes while the reply is stuck in the socket */
    for (;;) {
        ssize_t n = demo_read_within(r->fd, buf, sizeof buf, 30);
        if (n <= 0)
            break;
        r->got += (size_t)n;
    }
    return NULL;
}

Test(demo_httpd, sigterm_with_a_reply_in_flight_exits_0)
{
    size_t big = 32u << 20;
    struct root r;
    root_make(&r, big);
    struct demo d;
    demo_start(&d, "httpd", NULL, "--root", r.dir, NULL);
    int fd = demo_connect(d.port);
    cr_assert(fd >= 0);
    int small = 16384;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    const char *req = "GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n";
    cr_assert_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    char head[4096];
    ssize_t n = demo_read_within(fd, head, sizeof head - 1, 20);
    cr_assert(n > 0);
    head[n] = '\0';
    char *end = strstr(head, "\r\n\r\n");
    cr_assert(status_of(head) == 200 && end != NULL, "%s", head);
    struct reader rd = { fd, (size_t)n - (size_t)(end + 4 - head) };
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, read_rest, &rd), 0);
    demo_stop(&d);          /* SIGTERM now: the reply finishes, then exit 0 */
    pthread_join(t, NULL);
    close(fd);
    cr_assert_eq(rd.got, big, "the reply in flight was cut: %zu of %zu bytes", rd.got, big);
    root_remove(&r);
}

Test(demo_httpd, help_and_bad_arguments)
{
    char out[2048];
    char path[512];
    snprintf(path, sizeof path, "%s/demos/httpd", demo_build());
    cr_assert_eq(demo_sh(out, sizeof out, "%s --help", path), 0);
    cr_assert(strstr(out, "usage: httpd") != NULL, "%s", out);
    cr_assert_eq(demo_sh(out, sizeof out, "%s --port 99999 2>/dev/null", path), 2);
    cr_assert_eq(demo_sh(out, sizeof out, "%s --bogus 2>/dev/null", path), 2);
    cr_assert_eq(demo_sh(out, sizeof out, "%s --root /nonexistent/dir 2>/dev/null", path), 2);
    cr_assert_eq(demo_sh(out, sizeof out, "%s --timeout 0 2>/dev/null", path), 2);
}
