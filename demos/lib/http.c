/*
 * demos/lib/http.c -- the HTTP/1.1 request parser, the chunked decoder and the path
 * cleaner (http.h says what each returns). Pure: no allocation, no weft, no globals
 * but constant tables, so tests/fuzz/fuzz_http.c links this file alone.
 *
 * The request head, in the order it is checked (RFC 9112 2-7):
 *
 *   *( CRLF )  request-line  *( field-line CRLF )  CRLF
 *      |             |                |              |
 *      |             |                |              +-- find_end: the first empty line
 *      |             |                +-- parse_fields, once the whole head is here
 *      |             +-- scan_line (byte by byte, as bytes arrive: garbage fails at
 *      |                 once), then parse_line when its LF is here
 *      +-- skipped
 *
 * Why checks happen in that order, and only so far: one input must give one answer
 * whether it arrived whole or in pieces (the fuzz target checks that). So an error
 * reported early, on a prefix, is one the whole input reports too: scan_line refuses
 * only bytes that parse_line would refuse with the same code, and scans no further
 * than max_head, past which the length is the error (414 for the request line, 431
 * for the head).
 *
 * Rejected: a state machine that resumes mid-line (as http-parser did). Re-parsing a
 * head from its start once its end is here costs a few hundred nanoseconds, and the
 * search for the end resumes where it stopped (prev_len); a resumable parser is much
 * more code and state for nothing a 8 KiB head needs.
 *
 * The chunked decoder is a resumable state machine, since a body may be large:
 *
 *   SIZE --hex--> SIZE --SP/HT--> SIZE_WS --;--> EXT --CR--> SIZE_LF --LF--+
 *     |  \--;--> EXT   \--CR--> SIZE_LF   \--LF--------------------------+ |
 *     |                                                                  v v
 *     +<-- DATA_LF <--CR-- DATA_CR <-- DATA (size bytes) <--size > 0-- size done
 *     |              \--LF-----------------------------/                 |
 *     |                                                               size 0
 *     |   DONE <--LF-- END_LF <--CR-- TRAILER <--LF-- TRAILER_LF <--+    |
 *     |     ^                           |  ^ \--other--> TRAILER_LINE-+  |
 *     |     +-------------LF------------+  +----------------------------(+)
 */
#include <string.h>
#include "lib/http.h"

/* ---- character classes -------------------------------------------------------- */
/* One table, a bit per class (GNU range designators: gcc and clang both have them):
 * T a tchar (also VCHAR and field), V a VCHAR that is not a tchar. */
enum { C_TCHAR = 1, C_VCHAR = 2, C_FIELD = 4 };
#define T (C_TCHAR | C_VCHAR | C_FIELD)
#define V (C_VCHAR | C_FIELD)
static const unsigned char cls[256] = {
    ['\t'] = C_FIELD, [' '] = C_FIELD,
    ['!'] = T, ['"'] = V, ['#' ... '\''] = T, ['('] = V, [')'] = V, ['*'] = T, ['+'] = T,
    [','] = V, ['-'] = T, ['.'] = T, ['/'] = V, ['0' ... '9'] = T, [':' ... '@'] = V,
    ['A' ... 'Z'] = T, ['['] = V, ['\\'] = V, [']'] = V, ['^' ... '`'] = T,
    ['a' ... 'z'] = T, ['{'] = V, ['|'] = T, ['}'] = V, ['~'] = T,
    [0x80 ... 0xff] = C_FIELD,                          /* obs-text */
};
#undef T
#undef V

static inline bool is_tchar(unsigned char c)
{
    return (cls[c] & C_TCHAR) != 0;
}

/* a byte of a field value: HTAB, SP, VCHAR, obs-text */
static inline bool is_vchar_ws(unsigned char c)
{
    return (cls[c] & C_FIELD) != 0;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* p[0..n) equals the lower-case lit[0..k), ignoring case */
static bool mem_ieq(const char *p, size_t n, const char *lit, size_t k)
{
    if (n != k)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char a = (unsigned char)p[i];
        if (a >= 'A' && a <= 'Z')
            a |= 0x20;
        if (a != (unsigned char)lit[i])
            return false;
    }
    return true;
}

#define IEQ(p, n, lit) mem_ieq(p, n, lit, sizeof lit - 1)

static bool slice_ieq(const char *p, size_t n, const char *lit)
{
    return mem_ieq(p, n, lit, strlen(lit));
}

static bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* ---- the request line ----------------------------------------------------------- */
/* Checks the bytes b[start..to) of a request line that began at `start` and whose line
 * ends (LF, or the end of the input so far) at `e`: -400 for a byte that no request
 * line may hold there, else 0. Only refusals parse_line would make as well, with the
 * same code: a byte outside SP..'~' (but a CR just before e), a method byte that is
 * not a tchar, an empty method, two SPs in a row. */
static int scan_line(const unsigned char *b, size_t start, size_t to, size_t e)
{
    size_t k = start;
    while (k < to && is_tchar(b[k]))
        k++;
    if (k < to && (b[k] != ' ' || k == start))
        return b[k] == '\r' && k + 1 == e ? 0 : -400;
    /* b[k]: the SP after the method, then each byte that ends a run of VCHARs */
    while (k < to) {
        unsigned char c = b[k];
        if (c == ' ') {
            if (b[k - 1] == ' ')
                return -400;
        } else if (c != '\r' || k + 1 != e) {
            return -400;
        }
        k++;
        while (k < to && (cls[b[k]] & C_VCHAR))
            k++;
    }
    return 0;
}

/* The request line b[start..le) (without CR LF), which scan_line has passed whole (so
 * its bytes are SP or VCHAR, its method tchars, and no SP follows another): fills
 * method, target, minor. */
static int parse_line(const unsigned char *b, size_t start, size_t le, struct http_request *req)
{
    const unsigned char *sp1 = memchr(b + start, ' ', le - start);
    if (sp1 == NULL || sp1 == b + start)
        return -400;
    const unsigned char *t = sp1 + 1;
    const unsigned char *sp2 = memchr(t, ' ', (size_t)(b + le - t));
    if (sp2 == NULL || sp2 == t)
        return -400;
    const unsigned char *v = sp2 + 1;
    size_t vn = (size_t)(b + le - v);
    if (vn != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
        v[7] < '0' || v[7] > '9')
        return -400;
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
        return -505;
    req->method.p = (const char *)b + start;
    req->method.n = (size_t)(sp1 - (b + start));
    req->target.p = (const char *)t;
    req->target.n = (size_t)(sp2 - t);
    req->minor = v[7] - '0';
    const char *m = req->method.p;
    size_t mn = req->method.n;
    req->meth = mn == 3 && memcmp(m, "GET", 3) == 0    ? HTTP_GET
              : mn == 4 && memcmp(m, "HEAD", 4) == 0   ? HTTP_HEAD
              : mn == 4 && memcmp(m, "POST", 4) == 0   ? HTTP_POST
                                                         : HTTP_OTHER;
    return 0;
}

/* ---- the header fields ------------------------------------------------------------ */
struct field_state {
    int hosts;
    bool te_seen, te_unknown, te_chunked_last;
    int te_chunked;
    bool conn_close, conn_keep_alive;
};

/* Calls fn on each element of a comma-separated list value (OWS trimmed, empty ones
 * skipped); returns how many there were. */
static int list_each(const char *p, size_t n, void (*fn)(const char *, size_t, void *), void *arg)
{
    int count = 0;
    size_t i = 0;
    while (i <= n) {
        size_t j = i;
        while (j < n && p[j] != ',')
            j++;
        size_t a = i, z = j;
        while (a < z && is_ows((unsigned char)p[a]))
            a++;
        while (z > a && is_ows((unsigned char)p[z - 1]))
            z--;
        if (z > a) {
            fn(p + a, z - a, arg);
            count++;
        }
        i = j + 1;
    }
    return count;
}

static void te_elem(const char *p, size_t n, void *arg)
{
    struct field_state *fs = arg;
    if (IEQ(p, n, "chunked")) {
        fs->te_chunked++;
        fs->te_chunked_last = true;
    } else {
        fs->te_unknown = true;
        fs->te_chunked_last = false;
    }
}

static void conn_elem(const char *p, size_t n, void *arg)
{
    struct field_state *fs = arg;
    if (IEQ(p, n, "close"))
        fs->conn_close = true;
    else if (IEQ(p, n, "keep-alive"))
        fs->conn_keep_alive = true;
}

/* One field's meaning for the framing and the connection. */
static int field_meaning(const struct http_header *h, struct http_request *req,
                         struct field_state *fs)
{
    const char *name = h->name.p;
    size_t nn = h->name.n;
    const char *v = h->value.p;
    size_t vn = h->value.n;
    /* by length first: most fields are none of these */
    if (nn != 4 && nn != 6 && nn != 10 && nn != 14 && nn != 17)
        return 0;
    if (IEQ(name, nn, "content-length")) {
        if (vn == 0)
            return -400;
        uint64_t x = 0;
        for (size_t i = 0; i < vn; i++) {
            if (v[i] < '0' || v[i] > '9')
                return -400;
            unsigned d = (unsigned)(v[i] - '0');
            x = x > (UINT64_MAX - d) / 10 ? UINT64_MAX : x * 10 + d;
        }
        if (req->has_length && req->content_length != x)
            return -400;
        req->has_length = true;
        req->content_length = x;
    } else if (IEQ(name, nn, "transfer-encoding")) {
        fs->te_seen = true;
        if (list_each(v, vn, te_elem, fs) == 0)
            return -400;
    } else if (IEQ(name, nn, "connection")) {
        list_each(v, vn, conn_elem, fs);
    } else if (IEQ(name, nn, "host")) {
        fs->hosts++;
    } else if (IEQ(name, nn, "expect")) {
        if (!IEQ(v, vn, "100-continue"))
            return -417;
        req->expect_continue = req->minor == 1;
    }
    return 0;
}

/* The field lines b[p..pe) (pe: where the empty line begins). */
static int parse_fields(const unsigned char *b, size_t p, size_t pe, struct http_request *req)
{
    struct field_state fs = { 0 };
    while (p < pe) {
        const unsigned char *nl = memchr(b + p, '\n', pe - p);
        size_t q = nl != NULL ? (size_t)(nl - b) : pe;     /* pe follows an LF: never NULL */
        size_t le = q;
        if (le > p && b[le - 1] == '\r')
            le--;
        size_t i = p;
        while (i < le && is_tchar(b[i]))
            i++;
        if (i == p || i == le || b[i] != ':')
            return -400;    /* obs-fold, empty name, a space before ':', no ':' */
        struct http_header h;
        h.name.p = (const char *)b + p;
        h.name.n = i - p;
        i++;
        while (i < le && is_ows(b[i]))
            i++;
        size_t z = le;
        while (z > i && is_ows(b[z - 1]))
            z--;
        for (size_t k = i; k < z; k++)
            if (!is_vchar_ws(b[k]))
                return -400;    /* a CR or another control byte */
        h.value.p = (const char *)b + i;
        h.value.n = z - i;
        if (req->nheaders == req->max_headers)
            return -431;
        req->headers[req->nheaders++] = h;
        int err = field_meaning(&h, req, &fs);
        if (err != 0)
            return err;
        p = q + 1;
    }
    if (fs.te_seen) {
        /* RFC 9112 6.1, 6.3: framing that two parties could read differently is refused */
        if (req->minor == 0 || req->has_length)
            return -400;
        if (fs.te_unknown)
            return -501;
        if (fs.te_chunked != 1 || !fs.te_chunked_last)
            return -400;
        req->chunked = true;
    }
    if (fs.hosts > 1 || (fs.hosts == 0 && req->minor == 1))
        return -400;
    req->keep_alive = req->minor == 1 ? !fs.conn_close : fs.conn_keep_alive && !fs.conn_close;
    return 0;
}

/* The end of the head: the index just past its empty line, or 0 if not here yet. The
 * LFs before `from` have been looked at (each needs up to two bytes after it). */
static size_t find_end(const unsigned char *b, size_t len, size_t from)
{
    while (from < len) {
        const unsigned char *nl = memchr(b + from, '\n', len - from);
        if (nl == NULL)
            return 0;
        size_t q = (size_t)(nl - b);
        if (q + 1 < len) {
            if (b[q + 1] == '\n')
                return q + 2;
            if (b[q + 1] == '\r' && q + 2 < len && b[q + 2] == '\n')
                return q + 3;
        }
        from = q + 1;
    }
    return 0;
}

int http_parse_request(const char *buf, size_t len, size_t prev_len, size_t max_head,
                       struct http_request *req)
{
    const unsigned char *b = (const unsigned char *)buf;
    size_t i = 0;
    /* empty lines before the request line */
    while (i < len) {
        if (b[i] == '\n') {
            i++;
        } else if (b[i] == '\r') {
            if (i + 1 == len)
                break;
            if (b[i + 1] != '\n')
                return -400;
            i += 2;
        } else {
            break;
        }
    }
    if (i >= max_head)
        return -431;
    if (i == len || (b[i] == '\r' && i + 1 == len))
        return len >= max_head ? -431 : 0;
    size_t start = i;
    const unsigned char *nl = memchr(b + start, '\n', len - start);
    size_t e = nl != NULL ? (size_t)(nl - b) : len;
    /* a part scanned by an earlier call is scanned again: a request line is short */
    int err = scan_line(b, start, e < max_head ? e : max_head, e);
    if (err != 0)
        return err;
    if (nl == NULL)
        return len >= max_head ? -414 : 0;
    if (e + 1 > max_head)
        return -414;
    size_t le = e > start && b[e - 1] == '\r' ? e - 1 : e;
    req->nheaders = 0;
    req->content_length = 0;
    req->has_length = req->chunked = req->keep_alive = req->expect_continue = false;
    err = parse_line(b, start, le, req);
    if (err != 0)
        return err;
    size_t from = prev_len >= 3 ? prev_len - 3 : 0;
    if (from < e)
        from = e;
    size_t end = find_end(b, len, from);
    if (end == 0)
        return len >= max_head ? -431 : 0;
    if (end > max_head)
        return -431;
    /* the empty line begins after the last field line's LF */
    size_t pe = b[end - 2] == '\r' ? end - 2 : end - 1;
    err = parse_fields(b, e + 1, pe, req);
    if (err != 0)
        return err;
    return (int)end;
}

const struct http_slice *http_header_get(const struct http_request *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (slice_ieq(req->headers[i].name.p, req->headers[i].name.n, name))
            return &req->headers[i].value;
    return NULL;
}

/* ---- chunked ------------------------------------------------------------------------ */
enum {
    CH_SIZE, CH_SIZE_WS, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF,
    CH_TRAILER, CH_TRAILER_LINE, CH_TRAILER_LF, CH_END_LF, CH_DONE
};

int http_chunked_step(struct http_chunked *c, const char *in, size_t len, size_t *used,
                      const char **data, size_t *dlen)
{
    const unsigned char *b = (const unsigned char *)in;
    size_t i = 0;
    *data = in;
    *dlen = 0;
    while (i < len && c->state != CH_DONE) {
        unsigned char ch = b[i];
        switch (c->state) {
        case CH_SIZE: {
            int v = hex_value(ch);
            if (v >= 0) {
                if (c->digits == 15)
                    goto bad;
                c->left = c->left * 16 + (uint64_t)v;
                c->digits++;
                i++;
                break;
            }
            if (c->digits == 0)
                goto bad;
            if (is_ows(ch)) {
                c->state = CH_SIZE_WS;
            } else if (ch == ';') {
                c->state = CH_EXT;
            } else if (ch == '\r') {
                c->state = CH_SIZE_LF;
            } else if (ch == '\n') {
                i++;
                goto size_done;
            } else {
                goto bad;
            }
            if (++c->meta > HTTP_CHUNK_META_MAX)
                goto bad;
            i++;
            break;
        }
        case CH_SIZE_WS:
            /* BWS is allowed only before a chunk extension */
            if (ch == ';')
                c->state = CH_EXT;
            else if (!is_ows(ch))
                goto bad;
            if (++c->meta > HTTP_CHUNK_META_MAX)
                goto bad;
            i++;
            break;
        case CH_EXT:
            if (ch == '\n') {
                i++;
                goto size_done;
            }
            if (ch == '\r')
                c->state = CH_SIZE_LF;
            else if (!is_vchar_ws(ch))
                goto bad;
            if (++c->meta > HTTP_CHUNK_META_MAX)
                goto bad;
            i++;
            break;
        case CH_SIZE_LF:
            if (ch != '\n')
                goto bad;
            i++;
        size_done:
            c->digits = 0;
            c->state = c->left > 0 ? CH_DATA : CH_TRAILER;
            break;
        case CH_DATA: {
            size_t n = len - i;
            if ((uint64_t)n > c->left)
                n = (size_t)c->left;
            *data = in + i;
            *dlen = n;
            c->left -= n;
            i += n;
            if (c->left == 0)
                c->state = CH_DATA_CR;
            *used = i;
            return HTTP_CHUNK_DATA;
        }
        case CH_DATA_CR:
            if (ch == '\r')
                c->state = CH_DATA_LF;
            else if (ch == '\n')
                c->state = CH_SIZE;
            else
                goto bad;
            i++;
            break;
        case CH_DATA_LF:
            if (ch != '\n')
                goto bad;
            c->state = CH_SIZE;
            i++;
            break;
        case CH_TRAILER:
            if (ch == '\n')
                c->state = CH_DONE;
            else if (ch == '\r')
                c->state = CH_END_LF;
            else if (is_tchar(ch))
                c->state = CH_TRAILER_LINE;
            else
                goto bad;       /* obs-fold or garbage */
            if (c->state == CH_TRAILER_LINE && ++c->meta > HTTP_CHUNK_META_MAX)
                goto bad;
            i++;
            break;
        case CH_TRAILER_LINE:
            if (ch == '\n')
                c->state = CH_TRAILER;
            else if (ch == '\r')
                c->state = CH_TRAILER_LF;
            else if (!is_vchar_ws(ch))
                goto bad;
            if (++c->meta > HTTP_CHUNK_META_MAX)
                goto bad;
            i++;
            break;
        case CH_TRAILER_LF:
        case CH_END_LF:
            if (ch != '\n')
                goto bad;
            c->state = c->state == CH_END_LF ? CH_DONE : CH_TRAILER;
            i++;
            break;
        default:
            goto bad;
        }
    }
    *used = i;
    return c->state == CH_DONE ? HTTP_CHUNK_DONE : HTTP_CHUNK_MORE;
bad:
    *used = i;
    return -400;
}

/* ---- paths ---------------------------------------------------------------------------- */
/* The segment out[seg..*o) just ended: drop it if empty or ".", refuse "..". */
static int end_segment(char *out, size_t seg, size_t *o)
{
    size_t n = *o - seg;
    if (n == 0 || (n == 1 && out[seg] == '.')) {
        *o = seg;
        return 0;
    }
    if (n == 2 && out[seg] == '.' && out[seg + 1] == '.')
        return -403;
    return 0;
}

int http_path_normalize(const char *target, size_t n, char *out, size_t cap)
{
    const unsigned char *t = (const unsigned char *)target;
    size_t i = 0;
    if (n >= 7 && (IEQ(target, 7, "http://") || (n >= 8 && IEQ(target, 8, "https://")))) {
        i = t[4] == ':' ? 7 : 8;
        while (i < n && t[i] != '/' && t[i] != '?' && t[i] != '#')
            i++;
        if (i == n || t[i] != '/') {
            /* "http://host" and "http://host?q": the path is "/" */
            if (cap < 1)
                return -414;
            out[0] = '/';
            return 1;
        }
    } else if (n == 0 || t[0] != '/') {
        return -400;
    }
    if (cap < 1)
        return -414;
    size_t o = 0;
    out[o++] = '/';
    size_t seg = o;         /* where the current segment begins in out */
    for (i++; i < n; i++) {
        unsigned char c = t[i];
        if (c == '?' || c == '#')
            break;
        if (c == '/') {
            int err = end_segment(out, seg, &o);
            if (err != 0)
                return err;
            if (o > seg) {
                if (o >= cap)
                    return -414;
                out[o++] = '/';
            }
            seg = o;
            continue;
        }
        if (c == '%') {
            int hi = i + 2 < n ? hex_value(t[i + 1]) : -1;
            int lo = hi >= 0 ? hex_value(t[i + 2]) : -1;
            if (lo < 0)
                return -400;
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
            if (c == '/' || c == '\\')
                return -403;
        }
        if (c < 0x20 || c == 0x7f)
            return -400;
        if (o >= cap)
            return -414;
        out[o++] = (char)c;
    }
    int err = end_segment(out, seg, &o);
    if (err != 0)
        return err;
    if (o > 1 && out[o - 1] == '/')
        o--;
    return (int)o;
}

/* ---- the small things ------------------------------------------------------------------ */
static void put2(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 10 % 10);
    p[1] = (char)('0' + v % 10);
}

void http_date(int64_t unix_secs, char out[HTTP_DATE_LEN])
{
    static const char wday[7][3] = { {'T','h','u'}, {'F','r','i'}, {'S','a','t'}, {'S','u','n'},
                                     {'M','o','n'}, {'T','u','e'}, {'W','e','d'} };
    static const char mon[12][3] = { {'J','a','n'}, {'F','e','b'}, {'M','a','r'}, {'A','p','r'},
                                     {'M','a','y'}, {'J','u','n'}, {'J','u','l'}, {'A','u','g'},
                                     {'S','e','p'}, {'O','c','t'}, {'N','o','v'}, {'D','e','c'} };
    /* the years 0000..9999 only */
    if (unix_secs < -62167219200LL)
        unix_secs = -62167219200LL;
    if (unix_secs > 253402300799LL)
        unix_secs = 253402300799LL;
    int64_t days = unix_secs / 86400, sod = unix_secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days--;
    }
    int64_t wd = (days % 7 + 7) % 7;                /* 1970-01-01 was a Thursday */
    /* the proleptic Gregorian date of `days`, by 400-year eras from 0000-03-01 (March
     * first, so that the leap day ends each year) */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;                                   /* [0, 146096] */
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;  /* [0, 399] */
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);            /* [0, 365] */
    int64_t mp = (5 * doy + 2) / 153;                                 /* March = 0 */
    unsigned day = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    unsigned month = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    int64_t year = yoe + era * 400 + (month <= 2);
    memcpy(out, wday[wd], 3);
    out[3] = ',';
    out[4] = ' ';
    put2(out + 5, day);
    out[7] = ' ';
    memcpy(out + 8, mon[month - 1], 3);
    out[11] = ' ';
    put2(out + 12, (unsigned)(year / 100));
    put2(out + 14, (unsigned)(year % 100));
    out[16] = ' ';
    put2(out + 17, (unsigned)(sod / 3600));
    out[19] = ':';
    put2(out + 20, (unsigned)(sod / 60 % 60));
    out[22] = ':';
    put2(out + 23, (unsigned)(sod % 60));
    memcpy(out + 25, " GMT", 4);
}

const char *http_mime_type(const char *path, size_t n)
{
    static const struct { const char *ext, *type; } types[] = {
        { "html", "text/html; charset=utf-8" },  { "htm", "text/html; charset=utf-8" },
        { "css", "text/css; charset=utf-8" },    { "js", "text/javascript; charset=utf-8" },
        { "json", "application/json" },          { "txt", "text/plain; charset=utf-8" },
        { "png", "image/png" },                  { "jpg", "image/jpeg" },
        { "jpeg", "image/jpeg" },                { "gif", "image/gif" },
        { "svg", "image/svg+xml" },              { "ico", "image/vnd.microsoft.icon" },
        { "wasm", "application/wasm" },          { "pdf", "application/pdf" },
    };
    size_t dot = n;
    while (dot > 0 && path[dot - 1] != '.' && path[dot - 1] != '/')
        dot--;
    if (dot > 0 && path[dot - 1] == '.') {
        for (size_t k = 0; k < sizeof types / sizeof types[0]; k++)
            if (slice_ieq(path + dot, n - dot, types[k].ext))
                return types[k].type;
    }
    return "application/octet-stream";
}

const char *http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}
