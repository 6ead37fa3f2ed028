/*
 * demos/lib/http.h -- an HTTP/1.1 request parser and its helpers (RFC 9110, 9112), pure
 * functions over the caller's memory: no allocation, no weft call, no global state, so
 * that the file links alone into a libFuzzer target (tests/fuzz/fuzz_http.c).
 *
 *  - http_parse_request: the request line and the header fields of one request. The
 *    caller keeps its bytes in a buffer and calls again as more arrive (prev_len says
 *    how much it had last time, so only the new bytes are scanned for the end of the
 *    head); the headers come back as slices into that buffer.
 *  - http_chunked_step: the chunked transfer coding, an incremental state machine: the
 *    body arrives in any pieces, and each call hands back a slice of body bytes.
 *  - http_path_normalize: a request target to a clean path ("/a/b"), percent-decoded,
 *    refusing whatever could lead out of the served directory.
 *  - http_date, http_mime_type, http_reason: the small things a response needs.
 *
 * Errors are negative HTTP status codes (-400, -431, -501, ...): the reply to send.
 */
#ifndef DEMOS_HTTP_H
#define DEMOS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEAD     8192  /* request line + header fields + blank line: else 431 / 414 */
#define HTTP_MAX_HEADERS  100   /* header field lines: else 431 */

struct http_slice {
    const char *p;
    size_t n;
};

struct http_header {
    struct http_slice name, value;      /* value without the whitespace around it */
};

enum http_method { HTTP_GET, HTTP_HEAD, HTTP_POST, HTTP_OTHER };

struct http_request {
    /* in: the caller's array for the header fields, and its length */
    struct http_header *headers;
    size_t max_headers;
    /* out, valid when http_parse_request returned > 0 */
    struct http_slice method, target;   /* slices into the buffer */
    enum http_method meth;
    int minor;                          /* HTTP/1.<minor>: 0 or 1 */
    size_t nheaders;
    uint64_t content_length;            /* when has_length; UINT64_MAX for any huger value */
    bool has_length;                    /* a Content-Length field */
    bool chunked;                       /* Transfer-Encoding: chunked */
    bool keep_alive;                    /* the connection may carry another request */
    bool expect_continue;               /* Expect: 100-continue on HTTP/1.1 */
};

/*
 * Parses the request that begins buf[0..len). prev_len: the len of the previous call
 * on the same request in the same buffer (0 the first time), from which the search
 * for the end of the head resumes. Returns:
 *   > 0   the head is complete: its length (the body, if any, begins there); *req set;
 *   0     the head is not complete yet: call again with more bytes;
 *   < 0   the request is malformed: -400 (syntax: request line, a field line, a bare CR,
 *         Content-Length, both Content-Length and Transfer-Encoding, chunked not last
 *         or twice, Transfer-Encoding in HTTP/1.0, a missing or repeated Host on 1.1),
 *         -414 (a request line longer than max_head), -431 (a head longer than
 *         max_head, or more header fields than req->max_headers), -417 (an Expect
 *         other than 100-continue), -501 (a transfer coding other than chunked),
 *         -505 (HTTP/x.y other than 1.0 and 1.1).
 * Empty lines before the request line are skipped (RFC 9112 2.2) and count in the
 * returned length. A line may end in CRLF or in a bare LF; a CR elsewhere is an error.
 * Errors in the request line are reported as soon as that line is complete, and
 * invalid bytes in it as soon as they arrive (garbage is refused at once). The same
 * bytes give the same answer whether they came whole or in pieces.
 */
int http_parse_request(const char *buf, size_t len, size_t prev_len, size_t max_head,
                       struct http_request *req);

/* The value of the first header field named name (case-insensitive), or NULL. */
const struct http_slice *http_header_get(const struct http_request *req, const char *name);

/*
 * The chunked transfer coding (RFC 9112 7.1), decoded incrementally. Zero the struct
 * for a new body. Each call consumes input from in[0..len) and stops after one run of
 * body bytes; *used is the number of input bytes consumed (always set), and then:
 *   HTTP_CHUNK_DATA   *data, *dlen: body bytes (a slice of in): call again with the rest;
 *   HTTP_CHUNK_MORE   all of in consumed, the body is not finished: more input needed;
 *   HTTP_CHUNK_DONE   the last chunk and the trailer section are consumed: the next
 *                     request begins at in + *used;
 *   -400              malformed: a chunk size that is not hex, longer than 15 digits,
 *                     a missing CRLF after the data, a control byte in an extension or
 *                     trailer, or extensions and trailers over HTTP_CHUNK_META_MAX bytes.
 * Chunk extensions are skipped, trailer fields read and dropped.
 */
#define HTTP_CHUNK_META_MAX 8192
enum { HTTP_CHUNK_MORE = 0, HTTP_CHUNK_DATA = 1, HTTP_CHUNK_DONE = 2 };
struct http_chunked {
    int state;                          /* internal */
    int digits;                         /* hex digits of the current size */
    uint64_t left;                      /* data bytes left in the current chunk */
    size_t meta;                        /* extension and trailer bytes so far */
};
int http_chunked_step(struct http_chunked *c, const char *in, size_t len, size_t *used,
                      const char **data, size_t *dlen);

/*
 * The path of a request target, cleaned, into out[0..cap): the length written (out
 * is not NUL-terminated), or an error. The target is origin-form ("/a/b?q") or
 * absolute-form ("http://host/a/b": the path is taken from it); the query and the
 * fragment are dropped; %XX escapes are decoded; empty and "." segments go; a trailing
 * slash goes (but "/" stays). The result starts with '/', holds no empty, "." or ".."
 * segment and no byte below 0x20 or 0x7F, and is never longer than the target.
 * Errors: -400 another form, a bad escape, a control byte (raw or escaped: NUL...);
 * -403 a ".." segment (raw or escaped), an escaped '/' or '\\' (%2F, %5C); -414 out too
 * small (cap >= n is always enough).
 */
int http_path_normalize(const char *target, size_t n, char *out, size_t cap);

/* unix_secs as an IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT": 29 bytes, no NUL. */
#define HTTP_DATE_LEN 29
void http_date(int64_t unix_secs, char out[HTTP_DATE_LEN]);

/* A Content-Type for a path by its extension (case-insensitive): html, css, js, json,
 * txt, png, jpg/jpeg, gif, svg, ico, wasm, pdf; else application/octet-stream. */
const char *http_mime_type(const char *path, size_t n);

/* The reason phrase of a status code ("Not Found"); "Unknown" for others. */
const char *http_reason(int status);

#endif
