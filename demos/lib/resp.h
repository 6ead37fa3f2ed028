/*
 * demos/lib/resp.h -- requests in the Redis protocol (RESP2), parsed incrementally from
 * the caller's buffer: no allocation, no runtime calls (it links alone into the fuzz
 * target tests/fuzz/fuzz_resp.c).
 *
 * A request is either a multibulk, "*<n>\r\n" then n bulks "$<len>\r\n<len bytes>\r\n",
 * what every client library sends, or an inline command, one line of words ending in
 * "\n" (or "\r\n"), what a person types into nc or telnet. Inline words split on blanks;
 * "double quotes" take the escapes \n \r \t \b \a \xHH and \<any>, 'single quotes' take
 * \' only; a closing quote must be followed by a blank or the end of the line; a NUL
 * byte ends the line early (Redis reads the line as a C string). Words are unescaped
 * in place: an inline request's bytes are rewritten, never more than its own bytes.
 *
 * Redis's leniencies kept: the byte after a header's '\r' and the two bytes after a
 * bulk's data are skipped unread (Redis assumes they are "\n" and "\r\n"); "*0" and
 * "*-1" (and a blank inline line) are requests with no arguments, which a server
 * skips. Numbers in headers are strict decimals ("01", "+1", "-0", " 1" are errors).
 *
 * Limits (each a protocol error, after which the connection must be closed, as Redis
 * closes it: the stream cannot be resynchronised):
 *   RESP_MAX_ARGS      arguments in one multibulk (Redis's 1024 * 1024)
 *   RESP_MAX_REQUEST   bytes in one request, headers included (64 MiB; Redis limits a
 *                      bulk to 512 MB; a bulk over this one is "invalid bulk length")
 *   RESP_MAX_LINE      bytes of an inline request, or of a header, without its line end
 *                      (Redis's 64 KiB "too big inline request / count string")
 * So a buffer of RESP_MAX_REQUEST bytes always holds a whole request, and offsets fit
 * in 32 bits.
 *
 * The call: resp_parse(p, buf, len, argv, cap, &argc, &used) looks at the request that
 * starts at buf, of which len bytes have arrived, and returns
 *   RESP_DONE  a whole request: argc arguments, argv[i] = (offset from buf, length),
 *              each inside the request's used bytes (used <= len). argc may be 0: an
 *              empty request, to be skipped. p is fresh again: the next request
 *              starts at buf + used.
 *   RESP_MORE  incomplete: call again with the same request at the start of the buffer
 *              (it may have moved) and more bytes after it; p->need is how many bytes
 *              from buf it needs before it can progress (> len; a hint for sizing the
 *              buffer and for not calling again too early).
 *   RESP_ARGV  the request has argc arguments, more than cap: call again (same bytes)
 *              with an argv of at least argc entries.
 *   RESP_ERR   a protocol error: p->err says which ("Protocol error: ..."), to be
 *              sent as "-ERR <err>\r\n" before closing the connection.
 * A multibulk is parsed incrementally: p remembers the arguments already parsed (their
 * entries in argv stay valid across calls, so keep argv's contents when growing it),
 * and a call after RESP_MORE resumes there; large requests cost O(bytes), not
 * O(bytes x calls). Zero-filled storage is a fresh parser; resp_reset makes one.
 */
#ifndef DEMOS_RESP_H
#define DEMOS_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RESP_MAX_ARGS    (1024 * 1024)
#define RESP_MAX_REQUEST ((size_t)64 * 1024 * 1024)
#define RESP_MAX_LINE    (64 * 1024)

/* One argument: buf + off, len bytes. */
typedef struct resp_arg {
    uint32_t off, len;
} resp_arg;

enum resp_status { RESP_ERR = -1, RESP_MORE = 0, RESP_DONE = 1, RESP_ARGV = 2 };

struct resp_parser {
    size_t pos;         /* multibulk in progress: bytes parsed (header + `got` bulks) */
    size_t argc;        /* its announced count */
    size_t got;         /* arguments parsed so far, in argv[0..got) */
    size_t need;        /* after RESP_MORE: bytes wanted from buf before progress */
    char err[72];       /* after RESP_ERR: the message, NUL-terminated */
};

static inline void resp_reset(struct resp_parser *p)
{
    p->pos = p->argc = p->got = p->need = 0;
    p->err[0] = '\0';
}

int resp_parse(struct resp_parser *p, char *buf, size_t len, resp_arg *argv, size_t cap,
               size_t *argc, size_t *used);

/* Redis's strict decimal (its string2ll): an optional '-', then digits with no leading
 * zero ("0" itself is fine, "-0" is not), at most 20 bytes, within long long. */
bool resp_parse_ll(const char *s, size_t n, long long *out);

#endif
