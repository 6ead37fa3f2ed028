/*
 * tests/test_demo_chat.c -- demos/chat end to end, on both I/O backends: clients see
 * each other's lines, /nick, /who, /quit, a cut long line, a real nc client, a stalled
 * reader dropped while the others keep receiving every line, and the graceful stop
 * ("* server shutting down" to everyone, exit 0, nothing left allocated).
 *
 * The clients are plain blocking sockets (demo_connect) read a line at a time with a
 * time bound. The slow-reader test sends in batches and waits for the reading clients
 * to have every line of a batch before the next: a reading client is then never more
 * than a batch behind, however the machine schedules it, so it is never the one
 * dropped; the stalled one (a small receive buffer, never read) falls behind by a
 * batch each time and is dropped after a few.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include "tests/demo_common.h"

#define WAIT 30.0                       /* seconds for any one expected line */

struct cl {
    int fd;
    char buf[16384];
    size_t have;
    char name[64];                      /* guestN, from the welcome line */
};

/* Connect and read the welcome line and the own join line. */
static void cl_open(struct cl *c, int port, int rcvbuf)
{
    memset(c, 0, sizeof *c);
    if (rcvbuf > 0) {
        /* SO_RCVBUF before connect: the window is small from the start */
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(c->fd, 0);
        cr_assert_eq(setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        cr_assert_eq(connect(c->fd, (struct sockaddr *)&sa, sizeof sa), 0, "connect: %s",
                     strerror(errno));
        return;
    }
    c->fd = demo_connect(port);
    cr_assert_geq(c->fd, 0, "connect: %s", strerror(errno));
}

/* The next line (without its newline) into out; 1, 0 at end of file, -1 on timeout or
 * an error. A line longer than cap is returned cut (the rest is the next "line"). */
static int cl_line(struct cl *c, char *out, size_t cap, double secs)
{
    double until = demo_now() + secs;
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->have);
        if (nl != NULL || c->have >= cap - 1 || c->have == sizeof c->buf) {
            size_t n = nl != NULL ? (size_t)(nl - c->buf) : c->have;
            if (n > cap - 1)
                n = cap - 1;
            memcpy(out, c->buf, n);
            out[n] = '\0';
            size_t used = nl != NULL && n == (size_t)(nl - c->buf) ? n + 1 : n;
            memmove(c->buf, c->buf + used, c->have - used);
            c->have -= used;
            return 1;
        }
        double left = until - demo_now();
        if (left <= 0)
            return -1;
        ssize_t r = demo_read_within(c->fd, c->buf + c->have, sizeof c->buf - c->have, left);
        if (r == 0)
            return 0;
        if (r < 0)
            return -1;
        c->have += (size_t)r;
    }
}

/* Assert that the next line is exactly want. */
static void cl_expect(struct cl *c, const char *want)
{
    char got[8192];
    int r = cl_line(c, got, sizeof got, WAIT);
    cr_assert_eq(r, 1, "%s: expected '%.120s', got %s", c->name, want,
                 r == 0 ? "end of file" : "nothing (timeout or error)");
    cr_assert_str_eq(got, want, "%s: expected '%.120s' (%zu bytes), got '%.120s' (%zu bytes)", c->name, want, strlen(want), got, strlen(got));
}

/* Assert that the connection ends (end of file or a reset) next, within WAIT. */
static void cl_expect_eof(struct cl *c)
{
    char got[8192];
    int r = cl_line(c, got, sizeof got, WAIT);
    cr_assert(r == 0 || (r < 0 && errno == ECONNRESET), "%s: expected end of file, got %s%s",
              c->name, r == 1 ? "a line: " : "a timeout", r == 1 ? got : "");
}

static void cl_send(struct cl *c, const char *s)
{
    size_t n = strlen(s);
    cr_assert_eq(write(c->fd, s, n), (ssize_t)n);
}

/* Read the welcome line: it names the client. */
static void cl_welcome(struct cl *c)
{
    char got[512];
    cr_assert_eq(cl_line(c, got, sizeof got, WAIT), 1, "no welcome line");
    cr_assert_eq(sscanf(got, "* welcome, %63[^:]:", c->name), 1, "welcome line: '%s'", got);
    char want[128];
    snprintf(want, sizeof want, "* %s joined", c->name);
    cl_expect(c, want);
}

/* Connect a client; every one already in (others[0..n)) sees it join. */
static void cl_join(struct cl *c, int port, int rcvbuf, struct cl **others, int n)
{
    cl_open(c, port, rcvbuf);
    char want[128];
    if (rcvbuf > 0) {
        /* a stalled client does not read: learn its name from the join line */
        char got[512];
        cr_assert_eq(cl_line(others[0], got, sizeof got, WAIT), 1);
        cr_assert_eq(sscanf(got, "* %63s joined", c->name), 1, "join line: '%s'", got);
        snprintf(want, sizeof want, "* %s joined", c->name);
        cr_assert_str_eq(got, want);
        for (int i = 1; i < n; i++)
            cl_expect(others[i], want);
        return;
    }
    cl_welcome(c);
    snprintf(want, sizeof want, "* %s joined", c->name);
    for (int i = 0; i < n; i++)
        cl_expect(others[i], want);
}

/* SIGTERM, read the server's last stdout line (the summary) until it exits, then assert
 * it exited 0 (demo_stop reaps it) with nothing left allocated. */
static void stop_and_check(struct demo *d)
{
    kill(d->pid, SIGTERM);
    char out[4096];
    size_t n = 0;
    double until = demo_now() + 60;
    while (n < sizeof out - 1 && demo_now() < until) {
        ssize_t r = demo_read_within(d->out, out + n, sizeof out - 1 - n, until - demo_now());
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    out[n] = '\0';
    demo_stop(d);
    cr_assert(strstr(out, "left allocated: 0 clients, 0 lines") != NULL,
              "the stop's summary: '%s'", out);
}

/* ---- three clients: lines, /nick, /who, /quit, a long line, the stop -------------- */
static void room(const char *env)
{
    struct demo d;
    demo_start(&d, "chat", env, NULL);
    struct cl a, b, c;
    cl_join(&a, d.port, 0, NULL, 0);
    cl_join(&b, d.port, 0, (struct cl *[]){ &a }, 1);
    cl_join(&c, d.port, 0, (struct cl *[]){ &a, &b }, 2);
    char want[8192];

    /* /nick: renamed for all; a taken or bad name is an error to the sender only */
    cl_send(&a, "/nick alice\n");
    snprintf(want, sizeof want, "* %s is now known as alice", a.name);
    cl_expect(&a, want);
    cl_expect(&b, want);
    cl_expect(&c, want);
    strcpy(a.name, "alice");
    cl_send(&b, "/nick alice\n/nick b@d\n/nick " "abcdefghijklmnopqrstuvwxyz0123456\n"
                "/nick bob\n");
    cl_expect(&b, "! /nick: alice is taken");
    cl_expect(&b, "! /nick: a name is 1-32 characters of A-Z a-z 0-9 _ -");
    cl_expect(&b, "! /nick: a name is 1-32 characters of A-Z a-z 0-9 _ -");
    snprintf(want, sizeof want, "* %s is now known as bob", b.name);
    cl_expect(&b, want);
    cl_expect(&a, want);
    cl_expect(&c, want);
    strcpy(b.name, "bob");

    /* a message goes to the others, as "NAME: text" (a trailing \r is dropped) */
    cl_send(&c, "hello, room\r\n\n");
    snprintf(want, sizeof want, "%s: hello, room", c.name);
    cl_expect(&a, want);
    cl_expect(&b, want);
    cl_send(&a, "hi\n");
    cl_expect(&b, "alice: hi");
    cl_expect(&c, "alice: hi");

    /* /who to the sender only; an unknown command is an error to the sender */
    cl_send(&c, "/who\n/frob x\n");
    snprintf(want, sizeof want, "* 3 online: alice, bob, %s", c.name);
    cl_expect(&c, want);
    cl_expect(&c, "! unknown command /frob (try /nick NAME, /who, /quit)");

    /* a line over 4096 bytes is cut there; the sender hears so */
    static char big[6001];
    memset(big, 'x', 6000);
    big[6000] = '\n';
    cr_assert_eq(write(b.fd, big, sizeof big), (ssize_t)sizeof big);
    cl_send(&b, "after\n");
    int n = snprintf(want, sizeof want, "bob: ");
    memset(want + n, 'x', 4096);
    want[n + 4096] = '\0';
    cl_expect(&a, want);
    cl_expect(&a, "bob: after");
    cl_expect(&c, want);
    cl_expect(&c, "bob: after");
    cl_expect(&b, "! your line was cut to 4096 bytes");

    /* /quit: a bye, then the server closes; the others see the leave */
    cl_send(&b, "/quit\nnot sent\n");
    cl_expect(&b, "* bye");
    cl_expect_eof(&b);
    close(b.fd);
    cl_expect(&a, "* bob left");
    cl_expect(&c, "* bob left");
    cl_send(&a, "/who\n");
    snprintf(want, sizeof want, "* 2 online: alice, %s", c.name);
    cl_expect(&a, want);

    /* the stop: everyone hears it, then the connection closes */
    stop_and_check(&d);
    cl_expect(&a, "* server shutting down");
    cl_expect_eof(&a);
    cl_expect(&c, "* server shutting down");
    cl_expect_eof(&c);
    close(a.fd);
    close(c.fd);
}

Test(demo_chat, room_nick_who_quit_uring, .timeout = 120) { room("WEFT_IO=uring"); }
Test(demo_chat, room_nick_who_quit_uv, .timeout = 120) { room("WEFT_IO=uv"); }

/* ---- a real nc client talks with a C client ---------------------------------------- */
static void with_nc(const char *env)
{
    demo_need("nc");
    struct demo d;
    demo_start(&d, "chat", env, NULL);
    struct cl a;
    cl_join(&a, d.port, 0, NULL, 0);
    char out[4096];
    /* /quit makes the server close: nc (no -q) ends on that end of file */
    int st = demo_sh(out, sizeof out,
                     "printf '/nick nc_user\\nhello from nc\\n/who\\n/quit\\n' | "
                     "nc -w 20 127.0.0.1 %d", d.port);
    cr_assert_eq(st, 0, "nc: status %d", st);
    char guest[64], want[256];
    cr_assert_eq(sscanf(out, "* welcome, %63[^:]:", guest), 1, "nc's output: '%s'", out);
    char all[2048];
    snprintf(all, sizeof all,
             "* welcome, %s: /nick NAME to rename, /who to list, /quit to leave\n"
             "* %s joined\n"
             "* %s is now known as nc_user\n"
             "* 2 online: %s, nc_user\n"
             "* bye\n", guest, guest, guest, a.name);
    cr_assert_str_eq(out, all);
    snprintf(want, sizeof want, "* %s joined", guest);
    cl_expect(&a, want);
    snprintf(want, sizeof want, "* %s is now known as nc_user", guest);
    cl_expect(&a, want);
    cl_expect(&a, "nc_user: hello from nc");
    cl_expect(&a, "* nc_user left");
    stop_and_check(&d);
    cl_expect(&a, "* server shutting down");
    cl_expect_eof(&a);
    close(a.fd);
}

Test(demo_chat, nc_client_uring, .timeout = 120) { with_nc("WEFT_IO=uring"); }
Test(demo_chat, nc_client_uv, .timeout = 120) { with_nc("WEFT_IO=uv"); }

/* ---- a stalled reader is dropped; the others keep every line ---------------------- */
#define BATCH 50
#define MAX_BATCHES 60                  /* 3000 lines of ~1 KB: the drop comes far sooner */
#define AFTER (4 * BATCH)               /* lines sent after the drop */
#define PAD 1000

struct reader {
    struct cl *c;
    const char *from;                   /* the sender's name */
    const char *dropline;               /* "* guestN dropped (too slow)" */
    atomic_long got;                    /* messages received in order so far */
    atomic_bool dropped_seen, done;
    char err[512];                      /* the first thing wrong, if any */
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    char line[4096];
    char prefix[96];
    int pn = snprintf(prefix, sizeof prefix, "%s: m", r->from);
    for (;;) {
        int k = cl_line(r->c, line, sizeof line, 60);
        if (k != 1) {
            snprintf(r->err, sizeof r->err, "%s: %s after %ld messages", r->c->name,
                     k == 0 ? "end of file" : "no line for 60 s", atomic_load(&r->got));
            break;
        }
        if (strcmp(line, r->dropline) == 0) {
            atomic_store(&r->dropped_seen, true);
            continue;
        }
        char want[16];
        long seq = atomic_load(&r->got);
        if (strncmp(line, prefix, (size_t)pn) == 0 && strcmp(line + pn, "end") == 0)
            break;
        snprintf(want, sizeof want, "%06ld ", seq);
        if (strncmp(line, prefix, (size_t)pn) != 0 || strncmp(line + pn, want, 7) != 0 ||
            strlen(line) != (size_t)pn + 7 + PAD) {
            snprintf(r->err, sizeof r->err, "%s: expected message %ld, got '%.80s'",
                     r->c->name, seq, line);
            break;
        }
        atomic_store(&r->got, seq + 1);
    }
    atomic_store(&r->done, true);
    return NULL;
}

/* Wait until both readers have n messages (or stopped); false if one stopped short. */
static bool await_readers(struct reader *rs, int nr, long n)
{
    double until = demo_now() + 60;
    for (int i = 0; i < nr; i++) {
        while (atomic_load(&rs[i].got) < n) {
            if (atomic_load(&rs[i].done) || demo_now() > until)
                return false;
            usleep(200);
        }
    }
    return true;
}

/* Messages from..to-1 (at most BATCH) from a, in one write. */
static void send_msgs(struct cl *a, long from, long to)
{
    static char buf[BATCH * (PAD + 16)];
    size_t n = 0;
    for (long i = from; i < to; i++) {
        n += (size_t)snprintf(buf + n, sizeof buf - n, "m%06ld ", i);
        memset(buf + n, 'a' + (int)(i % 26), PAD);
        n += PAD;
        buf[n++] = '\n';
    }
    cr_assert_eq(write(a->fd, buf, n), (ssize_t)n);
}

static void slow_reader(const char *env)
{
    struct demo d;
    demo_start(&d, "chat", env, NULL);
    struct cl a, b, c, s;
    cl_join(&a, d.port, 0, NULL, 0);
    cl_join(&b, d.port, 0, (struct cl *[]){ &a }, 1);
    cl_join(&c, d.port, 0, (struct cl *[]){ &a, &b }, 2);
    cl_join(&s, d.port, 4096, (struct cl *[]){ &a, &b, &c }, 3);
    char dropline[128];
    snprintf(dropline, sizeof dropline, "* %s dropped (too slow)", s.name);

    struct reader rs[2] = { { .c = &b }, { .c = &c } };
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        rs[i].from = a.name;
        rs[i].dropline = dropline;
        cr_assert_eq(pthread_create(&th[i], NULL, reader_main, &rs[i]), 0);
    }
    long sent = 0;
    int batches = 0;
    while (!atomic_load(&rs[0].dropped_seen) && batches++ < MAX_BATCHES) {
        send_msgs(&a, sent, sent + BATCH);
        sent += BATCH;
        cr_assert(await_readers(rs, 2, sent), "readers: '%s' '%s'", rs[0].err, rs[1].err);
    }
    cr_assert(atomic_load(&rs[0].dropped_seen), "%s not dropped after %ld lines", s.name, sent);
    /* the room goes on: every later line reaches both readers too */
    for (int i = 0; i < AFTER / BATCH; i++) {
        send_msgs(&a, sent, sent + BATCH);
        sent += BATCH;
    }
    cl_send(&a, "m" "end\n");
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        cr_assert_str_eq(rs[i].err, "", "%s", rs[i].err);
        cr_assert_eq(atomic_load(&rs[i].got), sent, "%s got %ld of %ld", rs[i].c->name,
                     atomic_load(&rs[i].got), sent);
        cr_assert(atomic_load(&rs[i].dropped_seen), "%s missed the drop line", rs[i].c->name);
    }
    /* the sender saw the drop too (its own lines do not come back to it) */
    cl_expect(&a, dropline);
    /* the stalled one finds what was queued for it, then the end */
    char line[4096];
    double until = demo_now() + 60;
    int k;
    while ((k = cl_line(&s, line, sizeof line, 60)) == 1 && demo_now() < until) {
    }
    cr_assert(k == 0 || (k < 0 && errno == ECONNRESET), "the dropped client's socket stays open");
    close(s.fd);

    stop_and_check(&d);
    cl_expect(&a, "* server shutting down");
    cl_expect(&b, "* server shutting down");
    cl_expect(&c, "* server shutting down");
    close(a.fd);
    close(b.fd);
    close(c.fd);
}

Test(demo_chat, stalled_reader_dropped_others_keep_every_line_uring, .timeout = 180)
{
    slow_reader("WEFT_IO=uring");
}
Test(demo_chat, stalled_reader_dropped_others_keep_every_line_uv, .timeout = 180)
{
    slow_reader("WEFT_IO=uv");
}

Test(demo_chat, help_and_bad_arguments)
{
    char out[1024];
    char path[512];
    snprintf(path, sizeof path, "%s/demos/chat", demo_build());
    cr_assert_eq(demo_sh(out, sizeof out, "%s --help", path), 0);
    cr_assert(strstr(out, "usage: chat") != NULL, "%s", out);
    cr_assert_eq(demo_sh(out, sizeof out, "%s --port 99999 2>/dev/null", path), 2);
    cr_assert_eq(demo_sh(out, sizeof out, "%s --procs 0 2>/dev/null", path), 2);
    cr_assert_eq(demo_sh(out, sizeof out, "%s --procs x 2>/dev/null", path), 2);
    cr_assert_eq(demo_sh(out, sizeof out, "%s --bogus 2>/dev/null", path), 2);
    cr_assert_eq(demo_sh(out, sizeof out, "%s --port 2>/dev/null", path), 2);
}
