/*
 * demos/lib/serve.h -- what every demo server shares: the listener, a green thread per
 * connection, and a graceful stop on SIGINT/SIGTERM.
 *
 * serve_main runs the runtime (weft_run) around a green thread that listens on
 * host:port, prints one line to stdout, "NAME: listening on ADDR:PORT (backend B,
 * N procs)", and accepts; each connection runs o->conn(fd, o->ctx) on a green thread
 * of its own, and serve closes the fd when conn returns.
 *
 * The stop (SIGINT or SIGTERM, or serve_stop): the listener stops accepting; every
 * connection's reading side is shut down (shutdown(2) SHUT_RD), so a handler parked in
 * a read sees end of file, and one that is in the middle of a request finishes it and
 * writes its reply (the writing side stays open); serve_main then waits for every
 * handler and returns 0. A second signal exits at once with status 1.
 * A connection accepted while the stop is under way is shut down as it registers: no
 * handler misses it (both sides hold the registry's lock).
 *
 * Signals: serve_main blocks SIGINT, SIGTERM and SIGPIPE in every thread (the runtime's
 * threads inherit the mask) and takes them with sigwait on a plain thread of its own,
 * which calls only async-signal-free code (no handler runs on a green thread's stack).
 * RLIMIT_NOFILE is raised to its hard limit.
 */
#ifndef DEMOS_SERVE_H
#define DEMOS_SERVE_H

#include <stdbool.h>
#include <stddef.h>

struct serve_opts {
    const char *name;                   /* for messages: "httpd" */
    const char *host;                   /* NULL or "": every address; "127.0.0.1", "::1" */
    int port;                           /* 0: the kernel picks (the line on stdout says) */
    int nprocs;                         /* 0: the runtime's default */
    size_t stack_size;                  /* per connection; 0: the runtime's default */
    void (*conn)(int fd, void *ctx);    /* one connection; serve closes fd after */
    void *ctx;
    /* optional, on the main green thread: before accepting (start the green threads the
     * server needs: a broadcaster, an expiry sweeper; nonzero: serve_main fails with it),
     * and after the last handler returned (stop them) */
    int (*start)(void *ctx);
    void (*stop)(void *ctx);
};

/* Runs the server until the stop; the process's exit status: 0 after a graceful stop,
 * 1 when the listener or the runtime could not start (the reason on stderr). */
int serve_main(const struct serve_opts *o);

/* True once the stop has begun (any thread): long-running loops of the server's own
 * green threads end when they see it. */
bool serve_stopping(void);

/* Begin the stop from inside the server (a QUIT-everything command, a test). */
void serve_stop(void);

/* Parses a port ("0".."65535"); -1 when it is not one. */
int serve_parse_port(const char *s);

/* The options every server takes, at argv[*i]: --port P, --host H, --procs N (1-1024).
 * 1: taken (*i moved past its value); 0: not one of them; -1: a bad or missing value
 * (said on stderr, with o->name): the caller exits 2. */
int serve_parse_arg(struct serve_opts *o, int argc, char **argv, int *i);

#endif
