/*
 * demos/lib/serve.c -- the demo servers' common skeleton (serve.h says what it does).
 *
 * Invariants:
 *  - a connection's fd is in the registry from before its handler starts until after
 *    the handler returned and before it is closed: the stop never shuts down a number
 *    that has been closed and reused;
 *  - `stopping` changes (false -> true, once) under reg_lock, and a registration
 *    checks it under the same lock: a connection that registers after the stop's scan
 *    is shut down by its own registration.
 * reg_lock is a pthread mutex: the signal thread is a plain thread, and no one parks
 * while holding it (a handful of instructions and shutdown(2) calls).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include "weft.h"
#include "lib/serve.h"

#define GRACE_NS (10 * 1000000000LL)    /* then writers to clients that do not read give up */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static int *reg_fds;                    /* the connections' fds, unordered */
static size_t reg_n, reg_cap;
static _Atomic bool stopping;
static int listen_fd = -1;
static weft_wg handlers;

struct conn_arg {
    const struct serve_opts *o;
    int fd;
};

bool serve_stopping(void)
{
    return atomic_load_explicit(&stopping, memory_order_acquire);
}

/* Register fd; false when the registry cannot grow (the caller drops the connection). */
static bool reg_add(int fd)
{
    pthread_mutex_lock(&reg_lock);
    if (reg_n == reg_cap) {
        size_t cap = reg_cap ? reg_cap * 2 : 256;
        int *p = realloc(reg_fds, cap * sizeof *p);
        if (p == NULL) {
            pthread_mutex_unlock(&reg_lock);
            return false;
        }
        reg_fds = p;
        reg_cap = cap;
    }
    reg_fds[reg_n++] = fd;
    if (atomic_load_explicit(&stopping, memory_order_relaxed))
        shutdown(fd, SHUT_RD);          /* accepted as the stop began */
    pthread_mutex_unlock(&reg_lock);
    return true;
}

static void reg_del(int fd)
{
    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < reg_n; i++) {
        if (reg_fds[i] == fd) {
            reg_fds[i] = reg_fds[--reg_n];
            break;
        }
    }
    pthread_mutex_unlock(&reg_lock);
}

/* Shut down `how` on every registered connection (and the listener's accepts). */
static void reg_shutdown_all(int how)
{
    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < reg_n; i++)
        shutdown(reg_fds[i], how);
    pthread_mutex_unlock(&reg_lock);
}

void serve_stop(void)
{
    pthread_mutex_lock(&reg_lock);
    bool was = atomic_exchange_explicit(&stopping, true, memory_order_release);
    if (!was) {
        /* a parked accept wakes with an error; the accept loop sees `stopping` */
        if (listen_fd >= 0)
            shutdown(listen_fd, SHUT_RDWR);
        for (size_t i = 0; i < reg_n; i++)
            shutdown(reg_fds[i], SHUT_RD);
    }
    pthread_mutex_unlock(&reg_lock);
}

int serve_parse_port(const char *s)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0 || v > 65535)
        return -1;
    return (int)v;
}

int serve_parse_arg(struct serve_opts *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (strcmp(a, "--port") != 0 && strcmp(a, "--host") != 0 && strcmp(a, "--procs") != 0)
        return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "%s: %s needs a value\n", o->name, a);
        return -1;
    }
    const char *v = argv[++*i];
    if (strcmp(a, "--host") == 0) {
        o->host = v;
    } else if (strcmp(a, "--port") == 0) {
        if ((o->port = serve_parse_port(v)) < 0) {
            fprintf(stderr, "%s: bad port '%s'\n", o->name, v);
            return -1;
        }
    } else {
        char *end;
        long n = strtol(v, &end, 10);
        if (end == v || *end != '\0' || n < 1 || n > 1024) {
            fprintf(stderr, "%s: bad --procs '%s' (1-1024)\n", o->name, v);
            return -1;
        }
        o->nprocs = (int)n;
    }
    return 1;
}

static void *signal_main(void *arg)
{
    sigset_t *set = arg;
    for (int n = 0;;) {
        int sig;
        if (sigwait(set, &sig) != 0 || sig == SIGPIPE)
            continue;
        if (n++ > 0) {
            static const char msg[] = "second signal: exiting now\n";
            if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
                /* nothing to do */
            }
            _exit(1);
        }
        serve_stop();
    }
    return NULL;
}

static void conn_main(void *p)
{
    struct conn_arg *a = p;
    const struct serve_opts *o = a->o;
    int fd = a->fd;
    free(a);
    o->conn(fd, o->ctx);
    reg_del(fd);
    weft_close(fd);
    weft_wg_done(&handlers);
}

/* After the stop: clients that do not read keep their handlers in a write; after
 * GRACE_NS those writes fail (the sockets shut down both ways). */
static void grace_main(void *arg)
{
    (void)arg;
    weft_sleep(GRACE_NS);
    reg_shutdown_all(SHUT_RDWR);
}

static void print_listening(const struct serve_opts *o, int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
            port = ntohs(s6->sin6_port);
        } else {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
            port = ntohs(s4->sin_port);
        }
    }
    printf(ss.ss_family == AF_INET6 ? "%s: listening on [%s]:%d (%s, %d procs)\n"
                                    : "%s: listening on %s:%d (%s, %d procs)\n",
           o->name, host, port, weft_io_backend(), weft_nprocs());
    fflush(stdout);
}

static int serve_green_main(void *arg)
{
    const struct serve_opts *o = arg;
    int lfd = weft_listen_tcp(o->host, o->port, 0);
    if (lfd < 0) {
        fprintf(stderr, "%s: cannot listen on %s:%d: %s\n", o->name,
                o->host && *o->host ? o->host : "*", o->port, strerror(-lfd));
        return 1;
    }
    if (o->start != NULL) {
        int err = o->start(o->ctx);
        if (err != 0) {
            fprintf(stderr, "%s: cannot start: %s\n", o->name, strerror(err < 0 ? -err : err));
            weft_close(lfd);
            return 1;
        }
    }
    pthread_mutex_lock(&reg_lock);
    listen_fd = lfd;
    if (atomic_load_explicit(&stopping, memory_order_relaxed))
        shutdown(lfd, SHUT_RDWR);       /* a signal before we got here */
    pthread_mutex_unlock(&reg_lock);
    print_listening(o, lfd);
    int64_t emfile_said = 0;
    weft_spawn_opts so = { .stack_size = o->stack_size, .name = o->name };
    while (!serve_stopping()) {
        int fd = weft_accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (serve_stopping())
                break;
            if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM) {
                /* out of fds: say so once a second, let connections finish, retry */
                if (weft_now() - emfile_said > 1000000000LL) {
                    fprintf(stderr, "%s: accept: %s (retrying)\n", o->name, strerror(-fd));
                    emfile_said = weft_now();
                }
                weft_sleep(10 * 1000000LL);
            }
            continue;                   /* ECONNABORTED and the like: the next one */
        }
        struct conn_arg *a = malloc(sizeof *a);
        if (a == NULL || !reg_add(fd)) {
            free(a);
            weft_close(fd);
            continue;
        }
        a->o = o;
        a->fd = fd;
        weft_wg_add(&handlers, 1);
        int err = weft_spawn_ex(conn_main, a, &so, NULL);
        if (err != 0) {
            weft_wg_done(&handlers);
            reg_del(fd);
            weft_close(fd);
            free(a);
        }
    }
    pthread_mutex_lock(&reg_lock);
    listen_fd = -1;
    pthread_mutex_unlock(&reg_lock);
    weft_close(lfd);
    weft_spawn(grace_main, NULL);
    weft_wg_wait(&handlers);
    if (o->stop != NULL)
        o->stop(o->ctx);
    return 0;
}

int serve_main(const struct serve_opts *o)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    static sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pthread_t t;
    if (pthread_create(&t, NULL, signal_main, &set) != 0) {
        fprintf(stderr, "%s: cannot start the signal thread\n", o->name);
        return 1;
    }
    pthread_detach(t);
    weft_config cfg = { .nprocs = o->nprocs };
    int ret = weft_run(serve_green_main, (void *)o, &cfg);
    if (ret < 0) {
        fprintf(stderr, "%s: weft_run: %s\n", o->name, weft_strerror(ret));
        return 1;
    }
    return ret;
}
