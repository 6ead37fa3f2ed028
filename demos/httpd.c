/*
 * demos/httpd.c -- an HTTP/1.1 server: a green thread per connection, each parsing
 * requests out of a buffer on its own stack (demos/lib/http.c) and writing replies.
 * Try it:
 *
 *   build/release/demos/httpd --port 8080 --root /usr/share/doc &
 *   curl -v http://127.0.0.1:8080/
 *
 * What it answers:
 *   GET|HEAD /          with --root, DIR/index.html when there is one; else
 *                       "hello, world\n" (text/plain)
 *   GET|HEAD /PATH      with --root, the file DIR/PATH (a directory: its index.html),
 *                       Content-Type by extension; without --root, 404
 *   POST /echo          the request's body back (Content-Length or chunked), with the
 *                       request's Content-Type (else application/octet-stream)
 *   other methods       405 with Allow (GET, HEAD for files and /; POST for /echo), or
 *                       404 where nothing is
 *   errors              400 a malformed request (request line, field line, bare CR,
 *                       Content-Length, Content-Length with Transfer-Encoding, chunk
 *                       sizes, path escapes such as %00); 403 a path that could leave
 *                       DIR ("..", %2e%2e, %2F, a symlink that leads out); 404; 405;
 *                       408 a request not complete within --timeout seconds (10); 413 a
 *                       body over 1 MiB; 414 a request line over 8 KiB; 417; 431 a head
 *                       over 8 KiB or over 100 fields; 501 a transfer coding other than
 *                       chunked; 505 a version other than HTTP/1.0 and 1.1. After an
 *                       error reply the connection is closed; the server goes on.
 *
 * Connections: HTTP/1.1 keeps the connection unless "Connection: close"; HTTP/1.0
 * closes it unless "Connection: keep-alive". Pipelined requests are answered in order,
 * and the replies to every request already in the buffer go out in one write. Every
 * reply has Date, Server and Content-Length. A connection idle between requests for
 * --timeout seconds is closed without a reply (a 408 there could cross a request the
 * client is sending); one with part of a request in, or that has not sent one yet,
 * gets 408 and is closed. A client that never finishes its request holds its own
 * green thread until then, and nothing else.
 *
 * Files: opened with weft_open (O_NONBLOCK, so that a FIFO cannot hold the open, then
 * cleared), and served only if the file actually opened -- readlink of
 * /proc/self/fd/N, after every symlink -- lies under DIR's realpath: the check is on
 * what was opened, so a symlink swapped meanwhile changes nothing. Bodies up to 8 KiB
 * are read (weft_pread) into the reply buffer and go out with the other replies;
 * larger ones go by sendfile(2), which copies nothing through user space: weft leaves
 * accepted sockets blocking (it never changes an fd's flags), and a blocking sendfile
 * would hold the OS thread, so a connection that sends a file sets O_NONBLOCK on its
 * socket (its own fd) and parks in weft_poll(fd, POLLOUT) when the socket is full.
 * --no-sendfile sends them with weft_pread + weft_write through a 64 KiB buffer
 * instead, which is slower: wrk -t1 -c100 -d3s on a 64 KiB file, io_uring, 2 vCPUs
 * shared with wrk: sendfile 23.6 k requests/s (p99 10 ms), pread + write 15.7 k (p99
 * 12 ms). The socket stays nonblocking afterwards, which weft's calls do not mind.
 *
 * Closing: after an error reply, or one that ends the connection, the writing side is
 * shut and what the client still sends is read and dropped for up to 2 s (linger()),
 * so that a client still uploading (a 413) reads the reply instead of a reset.
 */
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "weft.h"
#include "lib/http.h"
#include "lib/serve.h"

#define IN_CAP        16384                 /* > HTTP_MAX_HEAD: a head always fits */
#define OUT_CAP       16384                 /* replies batched before one write */
#define INLINE_FILE   8192                  /* files up to this go in the reply buffer */
#define COPY_BUF      65536                 /* --no-sendfile's buffer */
#define MAX_BODY      (1024 * 1024)         /* a larger request body: 413 */
#define WRITE_TIMEOUT (30 * WEFT_SECOND)    /* a client that reads nothing for this long */
#define LINGER_TIME   (2 * WEFT_SECOND)     /* see linger() */
#define LINGER_BYTES  (4 * 1024 * 1024)

static const char HELLO[] = "hello, world\n";

static struct {
    const char *root;           /* realpath of --root, or NULL */
    size_t root_len;
    int64_t timeout_ns;
    bool sendfile;
} S = { .timeout_ns = 10 * WEFT_SECOND, .sendfile = true };

struct conn {
    int fd;
    bool nonblock;              /* O_NONBLOCK set on fd (for sendfile) */
    bool served;                /* a reply has gone out */
    size_t pos, len;            /* the unparsed bytes: in[pos..len) */
    size_t outlen;
    int64_t date_sec;           /* date holds this second */
    char date[HTTP_DATE_LEN];
    char in[IN_CAP];
    char out[OUT_CAP];
};

/* ---- the reply buffer --------------------------------------------------------------- */
static int flush(struct conn *c)
{
    if (c->outlen == 0)
        return 0;
    weft_deadline(weft_now() + WRITE_TIMEOUT);
    ssize_t n = weft_write(c->fd, c->out, c->outlen);
    weft_deadline(-1);
    c->outlen = 0;
    return n < 0 ? -1 : 0;
}

/* Room for n more bytes (n <= OUT_CAP), flushing if need be. */
static int reserve(struct conn *c, size_t n)
{
    return OUT_CAP - c->outlen >= n ? 0 : flush(c);
}

static void put(struct conn *c, const char *s, size_t n)
{
    memcpy(c->out + c->outlen, s, n);
    c->outlen += n;
}

#define PUTS(c, lit) put(c, lit, sizeof lit - 1)

static void put_u64(struct conn *c, uint64_t v)
{
    char tmp[20];
    int i = 20;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    put(c, tmp + i, (size_t)(20 - i));
}

static void put_date(struct conn *c)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec != c->date_sec) {
        c->date_sec = ts.tv_sec;
        http_date(ts.tv_sec, c->date);
    }
    put(c, c->date, HTTP_DATE_LEN);
}

/* The status line and the fields every reply has; the caller adds its own fields and
 * the blank line (end_head). The head is under 512 bytes plus `extra`. */
static int begin_head(struct conn *c, int status, const char *type, uint64_t length,
                      bool keep, int minor, size_t extra)
{
    if (reserve(c, 512 + extra) < 0)
        return -1;
    if (status == 200) {
        PUTS(c, "HTTP/1.1 200 OK\r\nServer: weft-httpd\r\nDate: ");
    } else {
        PUTS(c, "HTTP/1.1 ");
        put_u64(c, (uint64_t)status);
        put(c, " ", 1);
        const char *reason = http_reason(status);
        put(c, reason, strlen(reason));
        PUTS(c, "\r\nServer: weft-httpd\r\nDate: ");
    }
    put_date(c);
    PUTS(c, "\r\nContent-Type: ");
    put(c, type, strlen(type));
    PUTS(c, "\r\nContent-Length: ");
    put_u64(c, length);
    if (!keep)
        PUTS(c, "\r\nConnection: close");
    else if (minor == 0)
        PUTS(c, "\r\nConnection: keep-alive");
    PUTS(c, "\r\n");
    return 0;
}

static void end_head(struct conn *c)
{
    PUTS(c, "\r\n");
}

/* A reply whose body is text (an error's reason, hello): body left out for HEAD. */
static int reply_text(struct conn *c, int status, bool keep, int minor, bool head,
                      const char *allow, const char *text, size_t n)
{
    size_t extra = (allow != NULL ? strlen(allow) + 16 : 0) + n;
    if (begin_head(c, status, "text/plain; charset=utf-8", n, keep, minor, extra) < 0)
        return -1;
    if (allow != NULL) {
        PUTS(c, "Allow: ");
        put(c, allow, strlen(allow));
        PUTS(c, "\r\n");
    }
    end_head(c);
    if (!head)
        put(c, text, n);
    return 0;
}

/* An error's reply: its status and reason as the body. */
static int reply_error(struct conn *c, int status, bool keep, int minor, bool head,
                       const char *allow)
{
    char text[64];
    int n = snprintf(text, sizeof text, "%d %s\n", status, http_reason(status));
    return reply_text(c, status, keep, minor, head, allow, text, (size_t)n);
}

/* ---- reading ------------------------------------------------------------------------- */
/* More bytes into in[len..); the bytes before pos are dropped first. >0, 0 at EOF, or
 * -errno (-ETIMEDOUT after `deadline`). */
static ssize_t fill(struct conn *c, int64_t deadline)
{
    if (c->pos > 0) {
        memmove(c->in, c->in + c->pos, c->len - c->pos);
        c->len -= c->pos;
        c->pos = 0;
    }
    if (c->len == IN_CAP)
        return -ENOBUFS;
    weft_deadline(deadline);
    ssize_t n = weft_read(c->fd, c->in + c->len, IN_CAP - c->len);
    weft_deadline(-1);
    if (n > 0)
        c->len += (size_t)n;
    return n;
}

/* The request's body: into *body (weft_malloc, *blen bytes) if keep, else dropped.
 * 0; a status to reply with before closing (400, 408, 413); -1 the connection is gone. */
static int read_body(struct conn *c, const struct http_request *req, bool keep, char **body,
                     size_t *blen)
{
    *body = NULL;
    *blen = 0;
    if (req->chunked) {
        struct http_chunked ch = { 0 };
        size_t cap = 0, n = 0;
        char *b = NULL;
        for (;;) {
            size_t used;
            const char *d;
            size_t dn;
            int st = http_chunked_step(&ch, c->in + c->pos, c->len - c->pos, &used, &d, &dn);
            c->pos += used;
            if (st == HTTP_CHUNK_DATA) {
                if (n + dn > MAX_BODY) {
                    weft_free(b);
                    return 413;
                }
                if (keep) {
                    if (n + dn > cap) {
                        size_t ncap = cap ? cap : 4096;
                        while (ncap < n + dn)
                            ncap *= 2;
                        char *nb = weft_realloc(b, ncap);
                        if (nb == NULL) {
                            weft_free(b);
                            return 413;
                        }
                        b = nb;
                        cap = ncap;
                    }
                    memcpy(b + n, d, dn);
                }
                n += dn;
                continue;
            }
            if (st == HTTP_CHUNK_DONE)
                break;
            if (st < 0) {
                weft_free(b);
                return -st;
            }
            ssize_t r = fill(c, weft_now() + S.timeout_ns);
            if (r <= 0) {
                weft_free(b);
                return r == -ETIMEDOUT ? 408 : -1;
            }
        }
        *body = b;
        *blen = n;
        return 0;
    }
    if (!req->has_length || req->content_length == 0)
        return 0;
    if (req->content_length > MAX_BODY)
        return 413;
    size_t need = (size_t)req->content_length;
    char *b = NULL;
    if (keep && (b = weft_malloc(need)) == NULL)
        return 413;
    size_t got = c->len - c->pos < need ? c->len - c->pos : need;
    if (keep)
        memcpy(b, c->in + c->pos, got);
    c->pos += got;
    while (got < need) {
        ssize_t r;
        weft_deadline(weft_now() + S.timeout_ns);
        if (keep) {
            r = weft_read(c->fd, b + got, need - got);
        } else {
            c->pos = c->len = 0;
            size_t want = need - got < IN_CAP ? need - got : IN_CAP;
            r = weft_read(c->fd, c->in, want);
        }
        weft_deadline(-1);
        if (r <= 0) {
            weft_free(b);
            return r == -ETIMEDOUT ? 408 : -1;
        }
        got += (size_t)r;
    }
    *body = b;
    *blen = need;
    return 0;
}

/* ---- files -------------------------------------------------------------------------------- */
/* Is the file open on fd under the root? (readlink of what was opened, symlinks and all) */
static bool under_root(int fd)
{
    char link[64], real[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, real, sizeof real);
    if (n <= 0 || (size_t)n >= sizeof real)
        return false;
    if (S.root_len == 1)
        return true;                /* --root / */
    return (size_t)n >= S.root_len && memcmp(real, S.root, S.root_len) == 0 &&
           ((size_t)n == S.root_len || real[S.root_len] == '/');
}

/* Opens the regular file root + path (a directory: its index.html): the fd and *st, or
 * -404 / -403. full (cap bytes) gets the path opened, whose extension gives the type. */
static int open_file(const char *path, size_t n, struct stat *st, char *full, size_t cap)
{
    static const char index[] = "/index.html";
    if (S.root_len + n + sizeof index > cap)
        return -404;
    memcpy(full, S.root, S.root_len);
    size_t fl = S.root_len;
    if (n > 1) {
        memcpy(full + fl, path, n);
        fl += n;
    }
    full[fl] = '\0';
    for (int tries = 0; tries < 2; tries++) {
        int fd = weft_open(full, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0);
        if (fd < 0)
            return fd == -EACCES ? -403 : -404;
        if (fstat(fd, st) < 0) {
            weft_close(fd);
            return -404;
        }
        if (S_ISDIR(st->st_mode) && tries == 0) {
            weft_close(fd);
            memcpy(full + fl, index, sizeof index);
            continue;
        }
        if (!S_ISREG(st->st_mode)) {
            weft_close(fd);
            return -404;
        }
        if (!under_root(fd)) {
            weft_close(fd);
            return -403;
        }
        (void)fcntl(fd, F_SETFL, 0);    /* clear O_NONBLOCK: only the open needed it */
        return fd;
    }
    return -404;
}

/* Sends size bytes of ffd after the head in out. 0, or -1 (close the connection). */
static int send_file_body(struct conn *c, int ffd, size_t size)
{
    if (size <= INLINE_FILE && size <= OUT_CAP - c->outlen) {
        size_t got = 0;
        while (got < size) {
            ssize_t r = weft_pread(ffd, c->out + c->outlen + got, size - got, (off_t)got);
            if (r <= 0)
                return -1;          /* the file shrank: the promised length cannot be kept */
            got += (size_t)r;
        }
        c->outlen += size;
        return 0;
    }
    if (!S.sendfile) {
        if (flush(c) < 0)
            return -1;
        char *buf = weft_malloc(COPY_BUF);
        if (buf == NULL)
            return -1;
        size_t off = 0;
        int ret = 0;
        while (off < size) {
            size_t want = size - off < COPY_BUF ? size - off : COPY_BUF;
            ssize_t r = weft_pread(ffd, buf, want, (off_t)off);
            if (r <= 0) {
                ret = -1;
                break;
            }
            weft_deadline(weft_now() + WRITE_TIMEOUT);
            ssize_t w = weft_write(c->fd, buf, (size_t)r);
            weft_deadline(-1);
            if (w < 0) {
                ret = -1;
                break;
            }
            off += (size_t)r;
        }
        weft_free(buf);
        return ret;
    }
    if (!c->nonblock) {
        if (fcntl(c->fd, F_SETFL, O_NONBLOCK) < 0)
            return -1;
        c->nonblock = true;
    }
    /* the head with MSG_MORE: it leaves with the file's first bytes */
    size_t sent = 0;
    weft_deadline(weft_now() + WRITE_TIMEOUT);
    int ret = 0;
    while (sent < c->outlen) {
        ssize_t w = weft_send(c->fd, c->out + sent, c->outlen - sent, MSG_MORE);
        if (w < 0) {
            ret = -1;
            break;
        }
        sent += (size_t)w;
    }
    c->outlen = 0;
    off_t off = 0;
    while (ret == 0 && (size_t)off < size) {
        ssize_t r = sendfile(c->fd, ffd, &off, size - (size_t)off);
        if (r > 0)
            continue;
        if (r == 0) {
            ret = -1;               /* the file shrank */
        } else if (errno == EAGAIN) {
            int ev = weft_poll(c->fd, POLLOUT);
            if (ev < 0 || (ev & (POLLERR | POLLHUP)))
                ret = -1;
        } else if (errno != EINTR) {
            ret = -1;
        }
    }
    weft_deadline(-1);
    return ret;
}

/* ---- one request ----------------------------------------------------------------------- */
/* Answers req, whose head has been consumed. true: the connection may go on. */
static bool handle(struct conn *c, const struct http_request *req)
{
    bool keep = req->keep_alive && !serve_stopping();
    bool head = req->meth == HTTP_HEAD;
    int minor = req->minor;
    char path[HTTP_MAX_HEAD];
    int pn = http_path_normalize(req->target.p, req->target.n, path, sizeof path);
    bool echo = pn == 5 && memcmp(path, "/echo", 5) == 0;
    bool want_body = echo && req->meth == HTTP_POST;
    bool has_body = req->chunked || (req->has_length && req->content_length > 0);

    if (has_body && !req->chunked && req->content_length > MAX_BODY) {
        reply_error(c, 413, false, minor, head, NULL);
        return false;
    }
    /* A client that waits for 100 Continue before its body gets the final reply instead
     * when the body is not wanted; whether it sends the body then is its choice, so the
     * connection closes after the reply. */
    bool skip_body = has_body && req->expect_continue && !(want_body && pn > 0);
    char *body = NULL;
    size_t blen = 0;
    if (skip_body) {
        keep = false;
    } else if (has_body) {
        if (req->expect_continue && (req->chunked || c->len - c->pos < req->content_length)) {
            if (reserve(c, 32) < 0)
                return false;
            PUTS(c, "HTTP/1.1 100 Continue\r\n\r\n");
            if (flush(c) < 0)
                return false;
        }
        int st = read_body(c, req, want_body && pn > 0, &body, &blen);
        if (st != 0) {
            if (st > 0)
                reply_error(c, st, false, minor, head, NULL);
            return false;
        }
    }
    if (pn < 0) {
        keep = keep && pn != -400;      /* a malformed target closes; 403 does not */
        reply_error(c, -pn, keep, minor, head, NULL);
        return keep;
    }
    if (echo) {
        if (req->meth != HTTP_POST) {
            reply_error(c, 405, keep, minor, head, "POST");
            return keep;
        }
        const struct http_slice *ct = http_header_get(req, "content-type");
        char type[256];
        size_t tn = 0;
        if (ct != NULL && ct->n > 0 && ct->n < sizeof type) {
            memcpy(type, ct->p, ct->n);
            tn = ct->n;
        } else {
            memcpy(type, "application/octet-stream", tn = 24);
        }
        type[tn] = '\0';
        int ok = begin_head(c, 200, type, blen, keep, minor, tn);
        if (ok == 0) {
            end_head(c);
            if (blen == 0) {
                /* nothing */
            } else if (blen <= OUT_CAP - c->outlen) {
                put(c, body, blen);
            } else {
                struct iovec iov[2] = { { c->out, c->outlen }, { body, blen } };
                weft_deadline(weft_now() + WRITE_TIMEOUT);
                ssize_t w = weft_writev(c->fd, iov, 2);
                weft_deadline(-1);
                c->outlen = 0;
                ok = w < 0 ? -1 : 0;
            }
        }
        weft_free(body);
        return ok == 0 && keep;
    }
    weft_free(body);
    bool get = req->meth == HTTP_GET || head;
    bool root = pn == 1;
    if (S.root != NULL) {
        char full[PATH_MAX + HTTP_MAX_HEAD + 16];
        struct stat st;
        int ffd = open_file(path, (size_t)pn, &st, full, sizeof full);
        if (ffd < 0 && !(root && ffd == -404)) {
            reply_error(c, -ffd, keep, minor, head, NULL);
            return keep;
        }
        if (ffd >= 0) {
            if (!get) {
                weft_close(ffd);
                reply_error(c, 405, keep, minor, head, "GET, HEAD");
                return keep;
            }
            const char *type = http_mime_type(full, strlen(full));
            size_t size = (size_t)st.st_size;
            int ok = begin_head(c, 200, type, size, keep, minor, 0);
            if (ok == 0) {
                end_head(c);
                if (!head)
                    ok = send_file_body(c, ffd, size);
            }
            weft_close(ffd);
            return ok == 0 && keep;
        }
    }
    if (!root) {
        reply_error(c, 404, keep, minor, head, NULL);
        return keep;
    }
    if (!get) {
        reply_error(c, 405, keep, minor, head, "GET, HEAD");
        return keep;
    }
    if (reply_text(c, 200, keep, minor, head, NULL, HELLO, sizeof HELLO - 1) < 0)
        return false;
    return keep;
}

/* The server closes the connection after a reply (an error, Connection: close, HTTP/1.0):
 * a close with unread bytes in the socket sends the client a reset, which can destroy
 * the reply before the client read it (a 413 while curl still uploads). So the writing
 * side is shut first -- the client sees the end of the reply -- and what the client
 * still sends is read and dropped until it closes, for LINGER_TIME or LINGER_BYTES at
 * most (the "lingering close" of Apache and nginx). */
static void linger(struct conn *c)
{
    if (flush(c) < 0 || shutdown(c->fd, SHUT_WR) < 0)
        return;
    int64_t lt = S.timeout_ns < LINGER_TIME ? S.timeout_ns : LINGER_TIME;
    weft_deadline(weft_now() + lt);
    for (size_t total = 0; total < LINGER_BYTES;) {
        ssize_t n = weft_read(c->fd, c->in, IN_CAP);
        if (n <= 0)
            break;
        total += (size_t)n;
    }
    weft_deadline(-1);
}

/* ---- one connection ---------------------------------------------------------------------- */
static void http_conn(int fd, void *ctx)
{
    (void)ctx;
    struct conn cs;             /* its buffers are left as they are: touched as used */
    struct conn *c = &cs;
    c->fd = fd;
    c->nonblock = c->served = false;
    c->pos = c->len = c->outlen = 0;
    c->date_sec = -1;
    struct http_header hs[HTTP_MAX_HEADERS];
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (;;) {
        struct http_request req = { .headers = hs, .max_headers = HTTP_MAX_HEADERS };
        int64_t deadline = weft_now() + S.timeout_ns;
        size_t prev = 0;
        int r;
        while ((r = http_parse_request(c->in + c->pos, c->len - c->pos, prev, HTTP_MAX_HEAD,
                                       &req)) == 0) {
            prev = c->len - c->pos;
            /* nothing more to parse: the replies so far go out in one write */
            if (flush(c) < 0)
                return;
            ssize_t n = fill(c, deadline);
            if (n == -ETIMEDOUT) {
                if (prev > 0 || !c->served) {
                    reply_error(c, 408, false, 1, false, NULL);
                    flush(c);
                }
                return;
            }
            if (n <= 0)
                return;     /* end of file (a request cut short is dropped) or an error */
        }
        c->served = true;
        if (r < 0) {
            reply_error(c, -r, false, 1, false, NULL);
            linger(c);
            return;
        }
        c->pos += (size_t)r;
        if (!handle(c, &req)) {
            linger(c);
            return;
        }
    }
}

/* ---- main ---------------------------------------------------------------------------------- */
static void usage(FILE *f)
{
    fprintf(f,
            "usage: httpd [--port P] [--host H] [--procs N] [--root DIR] [--timeout SECS]\n"
            "             [--no-sendfile]\n"
            "  HTTP/1.1 server, a green thread per connection (port 8080 by default; 0 lets\n"
            "  the kernel pick; the first line on stdout says where it listens).\n"
            "  GET / answers \"hello, world\" (with --root: DIR/index.html if there is one);\n"
            "  GET /PATH serves DIR/PATH (--root); POST /echo answers with the request's body.\n"
            "  --timeout: seconds a request may take to arrive (408 after; default 10).\n"
            "  --no-sendfile: send files with pread + write instead of sendfile(2).\n"
            "  SIGINT/SIGTERM: stop accepting, finish the requests in hand, exit 0.\n");
}

int main(int argc, char **argv)
{
    struct serve_opts o = { .name = "httpd", .host = "127.0.0.1", .port = 8080,
                            .stack_size = 128 * 1024, .conn = http_conn };
    static char root[PATH_MAX];
    for (int i = 1, r; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if ((r = serve_parse_arg(&o, argc, argv, &i)) != 0) {
            if (r < 0)
                return 2;
        } else if (strcmp(a, "--root") == 0 && i + 1 < argc) {
            struct stat st;
            if (realpath(argv[++i], root) == NULL || stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
                fprintf(stderr, "httpd: --root '%s': not a directory\n", argv[i]);
                return 2;
            }
            S.root = root;
            S.root_len = strlen(root);
        } else if (strcmp(a, "--timeout") == 0 && i + 1 < argc) {
            char *end;
            double secs = strtod(argv[++i], &end);
            if (end == argv[i] || *end != '\0' || !(secs > 0) || secs > 86400) {
                fprintf(stderr, "httpd: bad timeout '%s'\n", argv[i]);
                return 2;
            }
            S.timeout_ns = (int64_t)(secs * 1e9);
        } else if (strcmp(a, "--no-sendfile") == 0) {
            S.sendfile = false;
        } else {
            fprintf(stderr, "httpd: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    return serve_main(&o);
}
