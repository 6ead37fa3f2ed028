/*
 * tests/fuzz/fuzz_http.c -- libFuzzer target for demos/lib/http.c (make fuzz; alone:
 * make build/fuzz/fuzz_http && build/fuzz/fuzz_http -max_total_time=60 tests/fuzz/corpus/http).
 *
 * Each input goes through:
 *  - http_parse_request whole, then in pieces (byte by byte for short inputs, else at a
 *    few split points), each piece a copy of exactly that many bytes so that AddressSanitizer
 *    sees any read past it. Invariants: the head length <= the input; every slice
 *    inside the head; the same answer whole and in pieces;
 *  - http_chunked_step over the body after a chunked head, and over the whole input:
 *    the same decoded bytes, status and consumption whole and in pieces; every data
 *    slice inside its piece; consumption never past the input;
 *  - http_path_normalize over the target and over the whole input: the result starts
 *    with '/', is no longer than the input, and holds no empty, "." or ".." segment and
 *    no control byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/http.h"

#define CHECK(c)                                                                   \
    do {                                                                           \
        if (!(c)) {                                                                \
            fprintf(stderr, "fuzz_http: %s:%d: %s\n", __FILE__, __LINE__, #c);     \
            abort();                                                               \
        }                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int parse_copy(const uint8_t *data, size_t k, size_t prev, struct http_request *req)
{
    char *p = malloc(k ? k : 1);
    CHECK(p != NULL);
    memcpy(p, data, k);
    int r = http_parse_request(p, k, prev, HTTP_MAX_HEAD, req);
    if (r > 0) {
        /* the slices must point into p; rebase them onto data for the caller */
        CHECK(req->method.p >= p && req->method.p + req->method.n <= p + r);
        CHECK(req->target.p >= p && req->target.p + req->target.n <= p + r);
        for (size_t i = 0; i < req->nheaders; i++) {
            const struct http_header *h = &req->headers[i];
            CHECK(h->name.p >= p && h->name.p + h->name.n <= p + r && h->name.n > 0);
            CHECK(h->value.p >= p && h->value.p + h->value.n <= p + r);
        }
    }
    free(p);
    return r;
}

static void check_parse(const uint8_t *data, size_t size)
{
    struct http_header hs[HTTP_MAX_HEADERS];
    struct http_request req = { .headers = hs, .max_headers = HTTP_MAX_HEADERS };
    int whole = parse_copy(data, size, 0, &req);
    CHECK(whole <= (int)size);
    CHECK(whole == 0 || whole > 0 || whole == -400 || whole == -414 || whole == -417 ||
          whole == -431 || whole == -501 || whole == -505);
    if (whole > 0) {
        CHECK(whole <= HTTP_MAX_HEAD);
        CHECK(req.minor == 0 || req.minor == 1);
        CHECK(req.method.n > 0 && req.target.n > 0);
        CHECK(req.nheaders <= HTTP_MAX_HEADERS);
        CHECK(!(req.chunked && req.has_length));
        CHECK(!req.chunked || req.minor == 1);
    }
    /* in pieces: the first nonzero answer must be the whole input's */
    size_t prev = 0;
    int got = 0;
    if (size <= 300) {
        for (size_t k = 1; k <= size && got == 0; k++) {
            got = parse_copy(data, k, prev, &req);
            prev = k;
        }
    } else {
        size_t cuts[4] = { size / 7, size / 3, size / 2, size };
        for (int c = 0; c < 4 && got == 0; c++) {
            if (cuts[c] <= prev)
                continue;
            got = parse_copy(data, cuts[c], prev, &req);
            prev = cuts[c];
        }
    }
    if (got != whole) {
        fprintf(stderr, "fuzz_http: whole %d, in pieces %d (at %zu)\n", whole, got, prev);
        abort();
    }
}

/* Decodes in[0..len) in pieces of `step` bytes (0: whole); the body into out (up to
 * cap, the rest counted), returns the final status and sets *used_total. */
static int chunked_run(const uint8_t *in, size_t len, size_t step, uint8_t *out, size_t cap,
                       size_t *out_n, size_t *used_total)
{
    struct http_chunked c = { 0 };
    size_t off = 0, n = 0;
    int st = HTTP_CHUNK_MORE;
    while (off < len) {
        size_t piece = step == 0 || len - off < step ? len - off : step;
        char *p = malloc(piece);
        CHECK(p != NULL);
        memcpy(p, in + off, piece);
        size_t pos = 0;
        for (;;) {
            size_t used;
            const char *d;
            size_t dn;
            st = http_chunked_step(&c, p + pos, piece - pos, &used, &d, &dn);
            CHECK(used <= piece - pos);
            if (st == HTTP_CHUNK_DATA) {
                CHECK(dn > 0 && d >= p + pos && d + dn <= p + pos + used);
                for (size_t i = 0; i < dn; i++, n++)
                    if (n < cap)
                        out[n] = (uint8_t)d[i];
            }
            pos += used;
            if (st != HTTP_CHUNK_DATA)
                break;
            CHECK(used > 0);
        }
        free(p);
        if (st == HTTP_CHUNK_DONE || st < 0) {
            off += pos;
            break;
        }
        CHECK(pos == piece);
        off += piece;
    }
    *out_n = n;
    *used_total = off;
    return st;
}

static void check_chunked(const uint8_t *in, size_t len)
{
    static uint8_t a[1 << 16], b[1 << 16];
    size_t an, au, bn, bu;
    int sa = chunked_run(in, len, 0, a, sizeof a, &an, &au);
    CHECK(sa == HTTP_CHUNK_MORE || sa == HTTP_CHUNK_DONE || sa == -400);
    CHECK(au <= len);
    CHECK(an <= len);
    size_t steps[3] = { 1, 3, 17 };
    for (int s = 0; s < 3; s++) {
        if (len > 4096 && steps[s] < 17)
            continue;
        int sb = chunked_run(in, len, steps[s], b, sizeof b, &bn, &bu);
        CHECK(sb == sa);
        CHECK(bn == an && bu == au);
        CHECK(memcmp(a, b, an < sizeof a ? an : sizeof a) == 0);
    }
}

static void check_path(const uint8_t *t, size_t n)
{
    char *in = malloc(n ? n : 1);
    char *out = malloc(n + 1);
    CHECK(in != NULL && out != NULL);
    memcpy(in, t, n);
    int r = http_path_normalize(in, n, out, n + 1);
    CHECK(r == -400 || r == -403 || r > 0);
    if (r > 0) {
        size_t m = (size_t)r;
        CHECK(m <= n || m == 1);
        CHECK(out[0] == '/');
        CHECK(m == 1 || out[m - 1] != '/');
        /* segments */
        size_t s = 1;
        for (size_t i = 1; i <= m; i++) {
            if (i == m || out[i] == '/') {
                size_t len = i - s;
                CHECK(m == 1 || len > 0);
                CHECK(!(len == 1 && out[s] == '.'));
                CHECK(!(len == 2 && out[s] == '.' && out[s + 1] == '.'));
                s = i + 1;
            } else {
                unsigned char c = (unsigned char)out[i];
                CHECK(c >= 0x20 && c != 0x7f);
            }
        }
        /* the cleaning is idempotent (but for what decoding made: '%', '?', '#') */
        if (memchr(out, '%', m) == NULL && memchr(out, '?', m) == NULL &&
            memchr(out, '#', m) == NULL) {
            char *again = malloc(m + 1);
            CHECK(again != NULL);
            int r2 = http_path_normalize(out, m, again, m + 1);
            CHECK(r2 == r && memcmp(again, out, m) == 0);
            free(again);
        }
    }
    /* too small an output is refused, never overrun */
    if (n > 1) {
        int r3 = http_path_normalize(in, n, out, n / 2);
        CHECK(r3 <= (int)(n / 2));
    }
    free(in);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_parse(data, size);
    struct http_header hs[HTTP_MAX_HEADERS];
    struct http_request req = { .headers = hs, .max_headers = HTTP_MAX_HEADERS };
    int r = http_parse_request((const char *)data, size, 0, HTTP_MAX_HEAD, &req);
    if (r > 0) {
        check_path((const uint8_t *)req.target.p, req.target.n);
        if (req.chunked)
            check_chunked(data + r, size - (size_t)r);
    }
    check_chunked(data, size);
    check_path(data, size < 4096 ? size : 4096);
    char date[HTTP_DATE_LEN];
    int64_t secs = 0;
    memcpy(&secs, data, size < sizeof secs ? size : sizeof secs);
    http_date(secs, date);
    for (int i = 0; i < HTTP_DATE_LEN; i++)
        CHECK(date[i] >= 0x20 && date[i] < 0x7f);
    CHECK(http_mime_type((const char *)data, size) != NULL);
    return 0;
}
