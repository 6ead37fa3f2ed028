/*
 * demos/lib/resp.c -- the RESP2 request parser (resp.h says what it accepts).
 *
 * State of a multibulk in progress (struct resp_parser), relative to buf:
 *
 *   fresh (pos 0) --"*<n>\r\n"--> header read (pos = after it, argc = n, got 0)
 *        --"$<len>\r\n<data>\r\n" x argc--> RESP_DONE, fresh again
 *
 * Only whole elements advance pos: a bulk whose data has not all arrived is parsed
 * again from its "$" on the next call (its header is a few bytes), so nothing but
 * offsets needs remembering, and the buffer may move between calls.
 * Invariants: pos <= len of every call; got <= argc <= cap once the header is past;
 * every argv[i] (i < got) lies inside [0, pos); pos <= RESP_MAX_REQUEST.
 *
 * Inline requests are parsed in one go once their line end has arrived (they are at
 * most RESP_MAX_LINE bytes): a first pass checks the quotes and counts the words
 * (so that RESP_ARGV can be returned before anything is written), a second unescapes
 * them in place. The write position never passes the read position: each word's
 * bytes only shrink.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include "lib/resp.h"

bool resp_parse_ll(const char *s, size_t n, long long *out)
{
    if (n == 0 || n > 20)
        return false;
    if (n == 1 && s[0] == '0') {
        *out = 0;
        return true;
    }
    bool neg = s[0] == '-';
    size_t i = neg;
    if (i == n || s[i] < '1' || s[i] > '9')
        return false;
    unsigned long long v = 0;
    if (n - i <= 18) {                  /* below 10^18: no overflow possible */
        for (; i < n; i++) {
            unsigned d = (unsigned)(unsigned char)s[i] - '0';
            if (d > 9)
                return false;
            v = v * 10 + d;
        }
        *out = neg ? -(long long)v : (long long)v;
        return true;
    }
    for (; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)s[i] - '0';
        if (d > 9 || v > (~0ULL - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (neg) {
        if (v > (unsigned long long)LLONG_MAX + 1)
            return false;
        *out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
    } else {
        if (v > (unsigned long long)LLONG_MAX)
            return false;
        *out = (long long)v;
    }
    return true;
}

static int fail(struct resp_parser *p, const char *msg)
{
    snprintf(p->err, sizeof p->err, "Protocol error: %s", msg);
    return RESP_ERR;
}

static int more(struct resp_parser *p, size_t need)
{
    p->need = need;
    return RESP_MORE;
}

/* A header line at buf[at..len): its type byte, then a number up to "\r". Returns 1
 * with *num and *end (just past the byte after '\r'), 0 when incomplete, or an error. */
/* A header line at buf[at..len): its type byte, then a number up to "\r". Returns 1
 * with *num and *end (just past the byte after '\r'), 0 when incomplete, or an error. */
static inline int header(struct resp_parser *p, const char *buf, size_t len, size_t at,
                         long long *num, size_t *end, const char *toobig, const char *invalid)
{
    /* the usual case: a few digits and "\r" within the next 24 bytes */
    size_t stop = len - at < 24 ? len : at + 24, crpos = at + 1;
    while (crpos < stop && buf[crpos] != '\r')
        crpos++;
    if (crpos == stop) {
        size_t avail = len - at;
        size_t scan = avail < RESP_MAX_LINE ? avail : RESP_MAX_LINE;
        const char *cr = memchr(buf + at, '\r', scan);
        if (cr == NULL) {
            if (avail > RESP_MAX_LINE)
                return fail(p, toobig);
            return more(p, len + 1);
        }
        crpos = (size_t)(cr - buf);
    }
    if (crpos + 2 > len)                       /* the byte after '\r' */
        return more(p, crpos + 2);
    if (!resp_parse_ll(buf + at + 1, crpos - at - 1, num))
        return fail(p, invalid);
    *end = crpos + 2;
    return 1;
}

static int multibulk(struct resp_parser *p, const char *buf, size_t len, resp_arg *argv,
                     size_t cap, size_t *argc, size_t *used)
{
    if (p->pos == 0) {
        long long n = 0;
        size_t end = 0;
        int r = header(p, buf, len, 0, &n, &end, "too big mbulk count string",
                       "invalid multibulk length");
        if (r != 1)
            return r;
        if (n > RESP_MAX_ARGS)
            return fail(p, "invalid multibulk length");
        if (n <= 0) {                           /* "*0", "*-1": nothing to run */
            *argc = 0;
            *used = end;
            resp_reset(p);
            return RESP_DONE;
        }
        p->pos = end;
        p->argc = (size_t)n;
        p->got = 0;
    }
    if (p->argc > cap) {
        *argc = p->argc;
        return RESP_ARGV;
    }
    while (p->got < p->argc) {
        size_t at = p->pos;
        if (at >= len)
            return more(p, at + 1);
        if (buf[at] != '$') {
            char c = buf[at];
            char msg[40];
            if (c == '\r' || c == '\n' || c == '\0')
                c = ' ';                        /* the reply must stay one line */
            snprintf(msg, sizeof msg, "expected '$', got '%c'", c);
            return fail(p, msg);
        }
        long long blen = 0;
        size_t end = 0;
        int r = header(p, buf, len, at, &blen, &end, "too big bulk count string",
                       "invalid bulk length");
        if (r != 1)
            return r;
        if (blen < 0 || (unsigned long long)blen > RESP_MAX_REQUEST)
            return fail(p, "invalid bulk length");
        size_t stop = end + (size_t)blen + 2;   /* data, then the skipped "\r\n" */
        if (stop > RESP_MAX_REQUEST)
            return fail(p, "request too large");
        if (stop > len)
            return more(p, stop);
        argv[p->got].off = (uint32_t)end;
        argv[p->got].len = (uint32_t)blen;
        p->got++;
        p->pos = stop;
    }
    *argc = p->argc;
    *used = p->pos;
    resp_reset(p);
    return RESP_DONE;
}

static bool blank(char c)                       /* isspace(3) in the C locale */
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Split line[0..n) into words (write: unescape them in place into argv, which has room
 * for all of them). Returns the count, or -1 for unbalanced quotes. */
static long split(char *line, size_t n, resp_arg *argv, bool write)
{
    size_t i = 0;
    long count = 0;
    for (;;) {
        while (i < n && blank(line[i]))
            i++;
        if (i == n)
            return count;
        size_t start = i, w = i;
        bool dq = false, sq = false;
        for (;;) {
            if (dq) {
                if (i == n)
                    return -1;                  /* unterminated quotes */
                if (line[i] == '\\' && i + 3 < n && line[i + 1] == 'x' &&
                    hexval(line[i + 2]) >= 0 && hexval(line[i + 3]) >= 0) {
                    if (write)
                        line[w] = (char)(hexval(line[i + 2]) * 16 + hexval(line[i + 3]));
                    w++;
                    i += 4;
                } else if (line[i] == '\\' && i + 1 < n) {
                    char c = line[i + 1];
                    switch (c) {
                    case 'n': c = '\n'; break;
                    case 'r': c = '\r'; break;
                    case 't': c = '\t'; break;
                    case 'b': c = '\b'; break;
                    case 'a': c = '\a'; break;
                    default: break;
                    }
                    if (write)
                        line[w] = c;
                    w++;
                    i += 2;
                } else if (line[i] == '"') {
                    if (i + 1 < n && !blank(line[i + 1]))
                        return -1;              /* a closing quote glued to more */
                    i++;
                    break;
                } else {
                    if (write)
                        line[w] = line[i];
                    w++;
                    i++;
                }
            } else if (sq) {
                if (i == n)
                    return -1;
                if (line[i] == '\\' && i + 1 < n && line[i + 1] == '\'') {
                    if (write)
                        line[w] = '\'';
                    w++;
                    i += 2;
                } else if (line[i] == '\'') {
                    if (i + 1 < n && !blank(line[i + 1]))
                        return -1;
                    i++;
                    break;
                } else {
                    if (write)
                        line[w] = line[i];
                    w++;
                    i++;
                }
            } else {
                if (i == n || line[i] == ' ' || line[i] == '\n' || line[i] == '\r' ||
                    line[i] == '\t')
                    break;
                if (line[i] == '"') {
                    dq = true;
                    i++;
                } else if (line[i] == '\'') {
                    sq = true;
                    i++;
                } else {
                    if (write)
                        line[w] = line[i];
                    w++;
                    i++;
                }
            }
        }
        if (write) {
            argv[count].off = (uint32_t)start;
            argv[count].len = (uint32_t)(w - start);
        }
        count++;
    }
}

static int inline_cmd(struct resp_parser *p, char *buf, size_t len, resp_arg *argv,
                      size_t cap, size_t *argc, size_t *used)
{
    size_t scan = len < RESP_MAX_LINE + 1 ? len : RESP_MAX_LINE + 1;
    char *nl = memchr(buf, '\n', scan);
    if (nl == NULL) {
        if (len > RESP_MAX_LINE)
            return fail(p, "too big inline request");
        return more(p, len + 1);
    }
    size_t end = (size_t)(nl - buf);
    size_t n = end > 0 && buf[end - 1] == '\r' ? end - 1 : end;
    char *nul = memchr(buf, '\0', n);
    if (nul != NULL)
        n = (size_t)(nul - buf);
    long words = split(buf, n, NULL, false);
    if (words < 0)
        return fail(p, "unbalanced quotes in request");
    if ((size_t)words > cap) {
        *argc = (size_t)words;
        return RESP_ARGV;
    }
    split(buf, n, argv, true);
    *argc = (size_t)words;
    *used = end + 1;
    resp_reset(p);
    return RESP_DONE;
}

int resp_parse(struct resp_parser *p, char *buf, size_t len, resp_arg *argv, size_t cap,
               size_t *argc, size_t *used)
{
    p->need = 0;
    if (p->pos > 0)
        return multibulk(p, buf, len, argv, cap, argc, used);
    if (len == 0)
        return more(p, 1);
    if (buf[0] == '*')
        return multibulk(p, buf, len, argv, cap, argc, used);
    return inline_cmd(p, buf, len, argv, cap, argc, used);
}
