/*
 * demos/chat.c -- a chat room over TCP for nc clients. Try it:
 *
 *   build/release/demos/chat --port 7001 &
 *   nc 127.0.0.1 7001          (in two terminals; type, /nick NAME, /who, /quit)
 *
 * Green threads and who owns what:
 *
 *   client --> reader (serve's conn) --EV_*--> room channel --> broadcaster
 *                                                                   |  try_send, never waits
 *             client <-- writer <-- out channel (256 lines) <-------+  (one per client)
 *
 *  - reader: one per connection (serve_opts.conn). It cuts the input into lines and
 *    posts an event per line (a message, /nick, /who) to the room channel, then EV_LEAVE.
 *  - broadcaster: the one owner of the room: the list of clients, their names, the
 *    guest counter. Nothing else reads those, so they need no lock (Go's "share memory
 *    by communicating"). It is the only sender on every client's out channel, and so
 *    the one that closes it.
 *  - writer: one per client; receives lines from its out channel (several at once when
 *    they queue up: one writev) and writes them to the socket.
 *
 * A slow reader: the broadcaster hands a line to a client with weft_chan_try_send. A
 * full out channel (256 lines queued, behind a socket whose buffers are full too: the
 * server sets SO_SNDBUF to 64 KiB) means the client does not read: it is dropped --
 * its socket shut down, its channel closed, "* NAME dropped (too slow)" to the others
 * -- and the room never waits for it. Before that verdict the broadcaster yields once,
 * so a writer that was woken but has not run yet gets its turn.
 *
 * A client's life (every arrow is a channel send or a sema release):
 *
 *   conn: make out, spawn writer, post EV_JOIN ... lines ... post EV_LEAVE
 *         wait `gone` (the broadcaster has forgotten it) and `wdone` (the writer ended)
 *         free out and the client; serve closes the fd
 *   broadcaster, EV_JOIN: name it guestN, add it; EV_LEAVE: remove it (unless dropped
 *         already), close out, release `gone`
 *   writer: recv until the channel is closed and drained; release `wdone`
 *
 * So the fd is shut down (drop, write error) only while the reader still runs: never a
 * closed or reused number. Lines are reference counted (one copy for the whole room).
 *
 * What clients see: on joining "* welcome, guestN: ..." and, like everyone, "* guestN
 * joined"; "NAME: text" for the others' lines (not one's own); "* OLD is now known as
 * NEW" for a /nick; "* N online: a, b" for /who (to the asker only); "! ..." for an
 * error (to the sender only); "* bye" before the server closes after /quit, while the
 * others see "* NAME left".
 *
 * Lines: at most MAX_LINE (4 KiB) bytes of text; a longer one is cut there (the rest,
 * up to its newline, is discarded) and its sender told so. A trailing '\r' is
 * dropped, empty lines are ignored; what follows /quit on the connection is not read.
 *
 * The stop (SIGINT/SIGTERM): serve shuts down every reading side, so every reader sees
 * end of file and posts EV_LEAVE. The first event the broadcaster takes after the stop
 * began sends "* server shutting down" to everyone still in the room (and to anyone
 * joining after), before it removes anyone; the leave lines are not sent then. The
 * writers drain their channels, then the connections close. serve_opts.stop closes the
 * room channel, waits for the broadcaster to end, frees the channel and prints a
 * summary whose "left allocated: 0 clients, 0 lines" the tests check (the lines and
 * clients come from weft_malloc, which LeakSanitizer does not see).
 *
 * Rejected: a locked client list with each reader writing to every socket itself (one
 * client that does not read stalls every sender, and the lock with it); a blocking
 * weft_chan_send to each client's channel (the same stall, moved to the broadcaster);
 * dropping a client as soon as its socket would block (a burst of a few lines on a
 * loaded machine would drop readers that are merely late).
 */
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "weft.h"
#include "lib/serve.h"

#define MAX_LINE  4096                  /* bytes of text in a line; longer ones are cut */
#define OUT_CAP   256                   /* lines queued for a client before it is dropped */
#define ROOM_CAP  1024                  /* events queued for the broadcaster */
#define NAME_MAX_LEN 32
#define WRITE_BATCH 64                  /* lines per writev */
#define SNDBUF    (64 * 1024)           /* per client; the kernel doubles it */

/* A line of output, shared by every client it goes to. */
struct line {
    atomic_int refs;
    size_t len;
    char text[];
};

enum { C_IN_ROOM, C_DROPPING, C_GONE };

struct client {
    int fd;
    weft_chan *out;                     /* struct line *; the broadcaster sends and closes */
    weft_sema gone;                     /* released once the broadcaster forgot it */
    weft_sema wdone;                    /* released as the writer ends */
    /* the broadcaster's alone: */
    int state;
    char name[NAME_MAX_LEN + 1];
    struct client *prev, *next;         /* the room, in join order */
    struct client *dropnext;
};

enum { EV_JOIN, EV_MSG, EV_NICK, EV_WHO, EV_BADCMD, EV_LEAVE };
struct event {
    int kind;
    bool flag;                          /* EV_MSG: the line was cut; EV_LEAVE: /quit */
    struct client *c;
    char *text;                         /* EV_MSG, EV_NICK, EV_BADCMD: weft_malloc'd */
    size_t len;
};

static weft_chan *room_chan;            /* struct event */
static weft_sema bc_done;

/* the broadcaster's state */
static struct client *room_head, *room_tail;
static int room_count;
static unsigned next_guest = 1;
static bool stop_said;
static struct client *dropq;
static uint64_t st_clients, st_messages, st_dropped;
/* what is allocated now: both are 0 after the stop (the summary line says) */
static atomic_long live_lines, live_clients;

/* ---- lines ------------------------------------------------------------------------ */
__attribute__((format(printf, 1, 2)))
static struct line *line_fmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    struct line *l = weft_malloc(sizeof *l + (size_t)n + 1);
    if (l == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(l->text, (size_t)n + 1, fmt, ap);
    va_end(ap);
    atomic_init(&l->refs, 1);
    l->len = (size_t)n;
    atomic_fetch_add_explicit(&live_lines, 1, memory_order_relaxed);
    return l;
}

static void line_unref(struct line *l)
{
    /* acq_rel: the last owner sees every other owner's use of the line */
    if (l != NULL && atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) == 1) {
        weft_free(l);
        atomic_fetch_sub_explicit(&live_lines, 1, memory_order_relaxed);
    }
}

/* ---- the broadcaster -------------------------------------------------------------- */
/* Queue l for c; a full channel (after one yield) marks c for the drop. */
static void deliver(struct client *c, struct line *l)
{
    if (l == NULL || c->state != C_IN_ROOM)
        return;
    atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
    int r = weft_chan_try_send(c->out, &l);
    if (r == -EAGAIN) {
        weft_yield();                   /* a writer woken but not yet run */
        r = weft_chan_try_send(c->out, &l);
    }
    if (r == 0)
        return;
    line_unref(l);
    c->state = C_DROPPING;
    c->dropnext = dropq;
    dropq = c;
}

static void fanout(struct line *l, const struct client *except)
{
    for (struct client *c = room_head; c != NULL; c = c->next)
        if (c != except)
            deliver(c, l);
}

/* Take c out of the room and close its channel: the writer drains it and ends. */
static void unlink_client(struct client *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        room_head = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    else
        room_tail = c->prev;
    c->prev = c->next = NULL;
    room_count--;
    weft_chan_close(c->out);
}

/* Drop the clients that could not keep up; telling the others may drop more. */
static void settle(void)
{
    while (dropq != NULL) {
        struct client *c = dropq;
        dropq = c->dropnext;
        unlink_client(c);
        c->state = C_GONE;
        weft_shutdown(c->fd, SHUT_RDWR);    /* its reader sees EOF, its writer an error */
        st_dropped++;
        struct line *l = line_fmt("* %s dropped (too slow)\n", c->name);
        fanout(l, NULL);
        line_unref(l);
    }
}

/* Say l to one client (the line is made and released here). */
static void tell(struct client *c, struct line *l)
{
    deliver(c, l);
    line_unref(l);
}

static struct client *find_name(const char *name)
{
    for (struct client *c = room_head; c != NULL; c = c->next)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

static bool valid_name(const char *s, size_t n)
{
    if (n < 1 || n > NAME_MAX_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

static void on_join(struct client *c)
{
    char name[NAME_MAX_LEN + 1];
    do
        snprintf(name, sizeof name, "guest%u", next_guest++);
    while (find_name(name) != NULL);    /* someone took "guest7" with /nick */
    memcpy(c->name, name, sizeof name);
    c->state = C_IN_ROOM;
    c->prev = room_tail;
    c->next = NULL;
    if (room_tail != NULL)
        room_tail->next = c;
    else
        room_head = c;
    room_tail = c;
    room_count++;
    st_clients++;
    tell(c, line_fmt("* welcome, %s: /nick NAME to rename, /who to list, /quit to leave\n",
                     c->name));
    if (stop_said) {
        tell(c, line_fmt("* server shutting down\n"));
        return;
    }
    struct line *l = line_fmt("* %s joined\n", c->name);
    fanout(l, NULL);
    line_unref(l);
}

static void on_nick(struct client *c, const char *name, size_t n)
{
    if (!valid_name(name, n)) {
        tell(c, line_fmt("! /nick: a name is 1-%d characters of A-Z a-z 0-9 _ -\n",
                         NAME_MAX_LEN));
    } else if (strcmp(c->name, name) == 0) {
        tell(c, line_fmt("* you are %s already\n", name));
    } else if (find_name(name) != NULL) {
        tell(c, line_fmt("! /nick: %s is taken\n", name));
    } else {
        struct line *l = line_fmt("* %s is now known as %s\n", c->name, name);
        memcpy(c->name, name, n + 1);
        fanout(l, NULL);
        line_unref(l);
    }
}

static void on_who(struct client *c)
{
    size_t len = 64;
    for (struct client *o = room_head; o != NULL; o = o->next)
        len += strlen(o->name) + 2;
    char *s = weft_malloc(len);
    if (s == NULL)
        return;
    size_t at = (size_t)snprintf(s, len, "* %d online:", room_count);
    for (struct client *o = room_head; o != NULL; o = o->next)
        at += (size_t)snprintf(s + at, len - at, "%s %s", o == room_head ? "" : ",", o->name);
    tell(c, line_fmt("%s\n", s));
    weft_free(s);
}

static void on_leave(struct client *c, bool quit)
{
    if (quit && c->state == C_IN_ROOM) {
        tell(c, line_fmt("* bye\n"));
        settle();                       /* the bye may have found c's channel full */
    }
    if (c->state == C_IN_ROOM) {
        unlink_client(c);
        c->state = C_GONE;
        if (!stop_said) {
            struct line *l = line_fmt("* %s left\n", c->name);
            fanout(l, NULL);
            line_unref(l);
        }
    }
    weft_sema_release(&c->gone);        /* after this the broadcaster never touches c */
}

static void handle(struct event *ev)
{
    struct client *c = ev->c;
    if (!stop_said && serve_stopping()) {
        stop_said = true;
        struct line *l = line_fmt("* server shutting down\n");
        fanout(l, NULL);
        line_unref(l);
        settle();
    }
    switch (ev->kind) {
    case EV_JOIN:
        on_join(c);
        break;
    case EV_MSG:
        if (c->state == C_IN_ROOM) {
            st_messages++;
            struct line *l = line_fmt("%s: %.*s\n", c->name, (int)ev->len, ev->text);
            fanout(l, c);
            line_unref(l);
            if (ev->flag)
                tell(c, line_fmt("! your line was cut to %d bytes\n", MAX_LINE));
        }
        break;
    case EV_NICK:
        if (c->state == C_IN_ROOM)
            on_nick(c, ev->text, ev->len);
        break;
    case EV_WHO:
        if (c->state == C_IN_ROOM)
            on_who(c);
        break;
    case EV_BADCMD:
        if (c->state == C_IN_ROOM)
            tell(c, line_fmt("! unknown command %.*s (try /nick NAME, /who, /quit)\n",
                             (int)ev->len, ev->text));
        break;
    case EV_LEAVE:
        on_leave(c, ev->flag);
        break;
    }
    weft_free(ev->text);
    settle();
}

static void broadcaster(void *arg)
{
    (void)arg;
    struct event ev;
    while (weft_chan_recv(room_chan, &ev) == 0)
        handle(&ev);
    weft_sema_release(&bc_done);
}

/* ---- a client's green threads ----------------------------------------------------- */
static void writer(void *arg)
{
    struct client *c = arg;
    struct line *batch[WRITE_BATCH];
    struct iovec iov[WRITE_BATCH];
    bool failed = false;
    while (weft_chan_recv(c->out, &batch[0]) == 0) {
        int n = 1;
        while (n < WRITE_BATCH && weft_chan_try_recv(c->out, &batch[n]) == 0)
            n++;
        if (!failed) {
            for (int i = 0; i < n; i++)
                iov[i] = (struct iovec){ batch[i]->text, batch[i]->len };
            if (weft_writev(c->fd, iov, n) < 0) {
                /* the client is gone: wake its reader; drain what still comes */
                failed = true;
                weft_shutdown(c->fd, SHUT_RDWR);
            }
        }
        for (int i = 0; i < n; i++)
            line_unref(batch[i]);
    }
    weft_sema_release(&c->wdone);
}

static void post(struct client *c, int kind, const char *text, size_t len, bool flag)
{
    struct event ev = { .kind = kind, .flag = flag, .c = c };
    if (text != NULL) {
        ev.text = weft_malloc(len + 1);
        if (ev.text == NULL)
            return;                     /* out of memory: the line is lost */
        memcpy(ev.text, text, len);
        ev.text[len] = '\0';
        ev.len = len;
    }
    weft_chan_send(room_chan, &ev);     /* the room is open while any reader runs */
}

/* One line of input (no newline); false: /quit. */
static bool on_line(struct client *c, char *s, size_t n, bool cut)
{
    if (n > 0 && s[n - 1] == '\r')
        n--;
    if (n > MAX_LINE) {
        n = MAX_LINE;
        cut = true;
    }
    if (n == 0)
        return true;
    if (s[0] != '/') {
        post(c, EV_MSG, s, n, cut);
        return true;
    }
    size_t w = 0;
    while (w < n && s[w] != ' ')
        w++;
    size_t a = w;
    while (a < n && s[a] == ' ')
        a++;
    size_t e = n;
    while (e > a && s[e - 1] == ' ')
        e--;
    if (w == 5 && memcmp(s, "/nick", 5) == 0)
        post(c, EV_NICK, s + a, e - a, false);
    else if (w == 4 && memcmp(s, "/who", 4) == 0)
        post(c, EV_WHO, NULL, 0, false);
    else if (w == 5 && memcmp(s, "/quit", 5) == 0)
        return false;
    else
        post(c, EV_BADCMD, s, w, false);
    return true;
}

static void chat_conn(int fd, void *ctx)
{
    (void)ctx;
    struct client *c = weft_calloc(1, sizeof *c);
    if (c == NULL)
        return;
    atomic_fetch_add_explicit(&live_clients, 1, memory_order_relaxed);
    c->fd = fd;
    int sz = SNDBUF;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    weft_spawn_opts wo = { .name = "chat-writer" };
    if (weft_chan_make(&c->out, sizeof(struct line *), OUT_CAP) != 0 ||
        weft_spawn_ex(writer, c, &wo, NULL) != 0) {
        static const char busy[] = "! server busy\n";
        weft_write(fd, busy, sizeof busy - 1);
        weft_chan_free(c->out);
        weft_free(c);
        atomic_fetch_sub_explicit(&live_clients, 1, memory_order_relaxed);
        return;
    }
    post(c, EV_JOIN, NULL, 0, false);

    char buf[2 * MAX_LINE];
    size_t have = 0;
    bool skipping = false;              /* inside the discarded tail of a cut line */
    bool quit = false;
    while (!quit) {
        ssize_t r = weft_read(fd, buf + have, sizeof buf - have);
        if (r <= 0)
            break;
        have += (size_t)r;
        size_t start = 0;
        for (size_t i = have - (size_t)r; i < have && !quit; i++) {
            if (buf[i] != '\n')
                continue;
            if (!skipping)
                quit = !on_line(c, buf + start, i - start, false);
            skipping = false;
            start = i + 1;
        }
        if (quit)
            break;
        memmove(buf, buf + start, have - start);
        have -= start;
        if (have >= MAX_LINE) {         /* no newline in MAX_LINE bytes: cut */
            if (!skipping)
                on_line(c, buf, MAX_LINE, true);
            skipping = true;
            have = 0;
        }
    }
    post(c, EV_LEAVE, NULL, 0, quit);
    weft_sema_acquire(&c->gone);
    weft_sema_acquire(&c->wdone);
    weft_chan_free(c->out);
    weft_free(c);
    atomic_fetch_sub_explicit(&live_clients, 1, memory_order_relaxed);
}

/* ---- start and stop (serve's hooks, on the main green thread) ---------------------- */
static int chat_start(void *ctx)
{
    (void)ctx;
    int err = weft_chan_make(&room_chan, sizeof(struct event), ROOM_CAP);
    if (err != 0)
        return err;
    weft_spawn_opts bo = { .name = "broadcaster" };
    err = weft_spawn_ex(broadcaster, NULL, &bo, NULL);
    if (err != 0) {
        weft_chan_free(room_chan);
        return err;
    }
    return 0;
}

static void chat_stop(void *ctx)
{
    (void)ctx;
    weft_chan_close(room_chan);         /* every reader has ended: no sender is left */
    weft_sema_acquire(&bc_done);
    weft_chan_free(room_chan);
    printf("chat: %llu clients, %llu messages, %llu dropped as too slow; "
           "left allocated: %ld clients, %ld lines\n",
           (unsigned long long)st_clients, (unsigned long long)st_messages,
           (unsigned long long)st_dropped, atomic_load(&live_clients), atomic_load(&live_lines));
    fflush(stdout);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: chat [--port P] [--host H] [--procs N]\n"
               "  A chat room over TCP for nc clients (port 7001 by default; 0 lets the\n"
               "  kernel pick; the first line on stdout says where it listens).\n"
               "  Commands: /nick NAME (1-32 of A-Z a-z 0-9 _ -), /who, /quit.\n"
               "  Lines over %d bytes are cut; a client that falls %d lines behind is\n"
               "  dropped. SIGINT/SIGTERM: \"* server shutting down\" to all, exit 0.\n",
            MAX_LINE, OUT_CAP);
}

int main(int argc, char **argv)
{
    struct serve_opts o = { .name = "chat", .host = "127.0.0.1", .port = 7001,
                            .conn = chat_conn, .start = chat_start, .stop = chat_stop };
    for (int i = 1, r; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if ((r = serve_parse_arg(&o, argc, argv, &i)) != 0) {
            if (r < 0)
                return 2;
        } else {
            fprintf(stderr, "chat: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    return serve_main(&o);
}
