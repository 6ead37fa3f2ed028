/*
 * tests/fuzz/fuzz_resp.c -- libFuzzer target for demos/lib/resp.c (make fuzz).
 *
 * Each input is parsed twice, as a server would see it:
 *  - whole: all bytes in one buffer, requests parsed one after another until the
 *    parser wants more or fails;
 *  - split: the bytes arrive a few at a time (1 to 8, from the first byte), and after
 *    each arrival the parser is called on the request in progress, which is copied
 *    into a buffer of exactly the bytes that have arrived (so ASan catches a read
 *    past them), and resumes from the state it left.
 * Both must give the same transcript (every request's arguments, the final error).
 * Invariants checked on every call: RESP_DONE consumes at least one byte and at most
 * what it was given, its arguments lie inside the consumed bytes and argc fits argv;
 * RESP_MORE asks for more than it has, and a call with fewer bytes than it asked for
 * before is RESP_MORE again; RESP_ARGV asks for more room than given; RESP_ERR says
 * "Protocol error: ...". resp_parse_ll is checked against strtoll.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                        \
    do {                                                                                \
        if (!(c)) {                                                                     \
            fprintf(stderr, "fuzz_resp: %s:%d: %s\n", __FILE__, __LINE__, #c);          \
            abort();                                                                    \
        }                                                                               \
    } while (0)

struct transcript {
    uint8_t *b;
    size_t n, cap;
};

static void put(struct transcript *t, const void *p, size_t n)
{
    if (t->n + n > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->n + n)
            cap *= 2;
        t->b = realloc(t->b, cap);
        CHECK(t->b != NULL);
        t->cap = cap;
    }
    memcpy(t->b + t->n, p, n);
    t->n += n;
}

static void put_done(struct transcript *t, const char *buf, const resp_arg *argv, size_t argc,
                     size_t used, size_t len, size_t cap)
{
    CHECK(used >= 1 && used <= len);
    CHECK(argc <= cap && argc <= RESP_MAX_ARGS);
    put(t, "D", 1);
    put(t, &argc, sizeof argc);
    for (size_t i = 0; i < argc; i++) {
        CHECK(argv[i].off <= used && argv[i].len <= used - argv[i].off);
        put(t, &argv[i].len, sizeof argv[i].len);
        put(t, buf + argv[i].off, argv[i].len);
    }
}

static void put_err(struct transcript *t, const struct resp_parser *p)
{
    CHECK(strncmp(p->err, "Protocol error: ", 16) == 0);
    CHECK(memchr(p->err, '\r', strlen(p->err)) == NULL && memchr(p->err, '\n', strlen(p->err)) == NULL);
    put(t, "E", 1);
    put(t, p->err, strlen(p->err));
}

static resp_arg *grow(resp_arg *argv, size_t *cap, size_t want)
{
    CHECK(want > *cap && want <= RESP_MAX_ARGS);
    resp_arg *a = realloc(argv, want * sizeof *a);
    CHECK(a != NULL);
    *cap = want;
    return a;
}

static void whole(const uint8_t *data, size_t size, struct transcript *t)
{
    char *buf = malloc(size ? size : 1);
    CHECK(buf != NULL);
    memcpy(buf, data, size);
    size_t cap = 2, pos = 0;
    resp_arg *argv = malloc(cap * sizeof *argv);
    struct resp_parser p;
    resp_reset(&p);
    for (;;) {
        size_t argc = 0, used = 0, len = size - pos;
        int r = resp_parse(&p, buf + pos, len, argv, cap, &argc, &used);
        if (r == RESP_DONE) {
            put_done(t, buf + pos, argv, argc, used, len, cap);
            pos += used;
        } else if (r == RESP_ARGV) {
            argv = grow(argv, &cap, argc);
        } else if (r == RESP_MORE) {
            CHECK(p.need > len);
            put(t, "M", 1);
            break;
        } else {
            CHECK(r == RESP_ERR);
            put_err(t, &p);
            break;
        }
    }
    free(argv);
    free(buf);
}

static void split(const uint8_t *data, size_t size, struct transcript *t)
{
    size_t step = size ? 1 + data[0] % 8 : 1;
    char *master = malloc(size ? size : 1);
    CHECK(master != NULL);
    memcpy(master, data, size);
    size_t cap = 2, start = 0, arrived = 0, need = 0;
    resp_arg *argv = malloc(cap * sizeof *argv);
    struct resp_parser p;
    resp_reset(&p);
    bool failed = false;
    for (;;) {
        arrived = arrived + step < size ? arrived + step : size;
        bool last = arrived == size;
        for (;;) {
            size_t len = arrived - start;
            char *win = malloc(len ? len : 1);  /* exactly the bytes that arrived */
            CHECK(win != NULL);
            memcpy(win, master + start, len);
            size_t argc = 0, used = 0;
            int r = resp_parse(&p, win, len, argv, cap, &argc, &used);
            if (len < need)
                CHECK(r == RESP_MORE);
            need = 0;
            if (r == RESP_DONE) {
                put_done(t, win, argv, argc, used, len, cap);
                memcpy(master + start, win, used);      /* inline words unescape in place */
                start += used;
                free(win);
                continue;
            }
            free(win);
            if (r == RESP_ARGV) {
                argv = grow(argv, &cap, argc);
                continue;
            }
            if (r == RESP_MORE) {
                CHECK(p.need > len);
                need = p.need;
                if (last)
                    put(t, "M", 1);
            } else {
                CHECK(r == RESP_ERR);
                put_err(t, &p);
                failed = true;
            }
            break;
        }
        if (last || failed)
            break;
    }
    free(argv);
    free(master);
}

static void check_ll(const uint8_t *data, size_t size)
{
    size_t n = size < 24 ? size : 24;
    char s[25];
    memcpy(s, data, n);
    s[n] = '\0';
    long long got = 0;
    bool ok = resp_parse_ll((const char *)data, n, &got);
    /* the reference: strict form, then strtoll for the range */
    bool form = n > 0 && n <= 20 && memchr(s, '\0', n) == NULL;
    if (form) {
        size_t i = s[0] == '-';
        if (n == 1 && s[0] == '0')
            i = 1;
        else if (i == n || s[i] < '1' || s[i] > '9')
            form = false;
        for (; form && i < n; i++)
            form = s[i] >= '0' && s[i] <= '9';
    }
    long long want = 0;
    if (form) {
        errno = 0;
        want = strtoll(s, NULL, 10);
        form = errno == 0;
    }
    CHECK(ok == form);
    CHECK(!ok || got == want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct transcript a = { 0 }, b = { 0 };
    whole(data, size, &a);
    split(data, size, &b);
    CHECK(a.n == b.n && (a.n == 0 || memcmp(a.b, b.b, a.n) == 0));
    free(a.b);
    free(b.b);
    check_ll(data, size);
    return 0;
}
