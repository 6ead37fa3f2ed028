/*
 * tests/demo_common.h -- end-to-end tests of the demo servers: start one on a free
 * loopback port, drive it with real clients (curl, redis-cli, nc) through the shell,
 * stop it and check it stopped gracefully.
 *
 * A demo prints "NAME: listening on ADDR:PORT (...)" as its first line on stdout
 * (demos/lib/serve.h); demo_start waits for that line (up to 20 s: the sanitizer
 * builds start slowly) and reads the port from it. The binaries are those of the
 * flavour under test: $WEFT_TEST_BUILD/demos/NAME (make test builds them).
 */
#ifndef WEFT_TESTS_DEMO_COMMON_H
#define WEFT_TESTS_DEMO_COMMON_H

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct demo {
    pid_t pid;
    int port;
    int out;                    /* the server's stdout (after the first line) */
    char line[256];             /* its first line */
};

static inline const char *demo_build(void)
{
    const char *b = getenv("WEFT_TEST_BUILD");
    return b != NULL && *b ? b : "build/release";
}

static inline double demo_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Start demos/NAME with the arguments (NULL-terminated; "--port 0" is added) and
 * the environment variable env ("WEFT_IO=uv", or NULL); asserts it started. The
 * server's stderr goes to the test's stderr. */
static inline void demo_start(struct demo *d, const char *name, const char *env, ...)
{
    char path[512];
    snprintf(path, sizeof path, "%s/demos/%s", demo_build(), name);
    cr_assert(access(path, X_OK) == 0, "%s: not built (make demos)", path);
    const char *argv[32];
    int argc = 0;
    argv[argc++] = path;
    argv[argc++] = "--port";
    argv[argc++] = "0";
    va_list ap;
    va_start(ap, env);
    for (const char *a; argc < 31 && (a = va_arg(ap, const char *)) != NULL;)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    int p[2];
    cr_assert(pipe2(p, O_CLOEXEC) == 0);
    memset(d, 0, sizeof *d);
    d->pid = fork();
    cr_assert(d->pid >= 0);
    if (d->pid == 0) {
        /* a test that fails an assertion ends its process: the server goes with it */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(p[1], STDOUT_FILENO);
        if (env != NULL)
            putenv((char *)env);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    d->out = p[0];
    size_t n = 0;
    double until = demo_now() + 20;
    while (n < sizeof d->line - 1 && demo_now() < until) {
        struct pollfd pfd = { .fd = d->out, .events = POLLIN };
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t r = read(d->out, d->line + n, 1);
        if (r <= 0)
            break;
        if (d->line[n] == '\n')
            break;
        n++;
    }
    d->line[n] = '\0';
    /* the port: after the last ':' of the address, before " (" */
    const char *at = strstr(d->line, "listening on ");
    const char *c = NULL;
    for (const char *q = at; q != NULL && *q && *q != '('; q++)
        if (*q == ':')
            c = q;
    d->port = c != NULL ? atoi(c + 1) : 0;
    if (d->port <= 0) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
        cr_assert_fail("%s did not say where it listens: '%s'", name, d->line);
    }
}

/* SIGTERM (or sig), then wait up to `secs`; returns the wait status (-1: it had to be
 * killed). */
static inline int demo_stop_sig(struct demo *d, int sig, double secs)
{
    kill(d->pid, sig);
    double until = demo_now() + secs;
    int status;
    for (;;) {
        pid_t r = waitpid(d->pid, &status, WNOHANG);
        if (r == d->pid)
            break;
        if (demo_now() > until) {
            kill(d->pid, SIGKILL);
            waitpid(d->pid, &status, 0);
            status = -1;
            break;
        }
        usleep(10000);
    }
    close(d->out);
    return status;
}

/* Stop it and assert it exited 0 (a graceful stop) within 30 s. */
static inline void demo_stop(struct demo *d)
{
    int status = demo_stop_sig(d, SIGTERM, 30);
    cr_assert(status != -1, "the server did not stop within 30 s of SIGTERM");
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the server's stop: status %#x", status);
}

/* A TCP connection to 127.0.0.1:port (blocking), or -1 with errno. */
static inline int demo_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* read(2) that waits at most secs for the first byte: the count, 0 at end of file,
 * -1 on an error or when nothing came (errno ETIMEDOUT). */
static inline ssize_t demo_read_within(int fd, void *buf, size_t n, double secs)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    int r = poll(&pfd, 1, (int)(secs * 1000));
    if (r <= 0) {
        errno = r == 0 ? ETIMEDOUT : errno;
        return -1;
    }
    return read(fd, buf, n);
}

/* Is it still running? */
static inline int demo_alive(const struct demo *d)
{
    return waitpid(d->pid, NULL, WNOHANG) == 0;
}

/* The server's resident set in KiB (0 when it cannot be read). */
static inline long demo_rss_kib(const struct demo *d)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", (int)d->pid);
    FILE *f = fopen(path, "r");
    long kib = 0;
    if (f == NULL)
        return 0;
    while (fgets(buf, sizeof buf, f) != NULL)
        if (sscanf(buf, "VmRSS: %ld", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* Run a shell command (printf-style; %d for the port as you need), its stdout into
 * out (NUL-terminated, truncated to cap); returns its exit status (-1: not run). The
 * command's stderr goes to the test's stderr. */
static inline int demo_sh(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *f = popen(cmd, "r");
    if (f == NULL)
        return -1;
    size_t n = 0;
    if (out != NULL && cap > 0) {
        size_t r;
        while (n < cap - 1 && (r = fread(out + n, 1, cap - 1 - n, f)) > 0)
            n += r;
        out[n] = '\0';
    }
    char sink[4096];
    while (fread(sink, 1, sizeof sink, f) > 0) {
    }
    int status = pclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Assert that the client `cmd` (curl, redis-cli, nc) is installed (make deps does). */
static inline void demo_need(const char *cmd)
{
    char c[256];
    snprintf(c, sizeof c, "command -v %s >/dev/null 2>&1", cmd);
    cr_assert(system(c) == 0, "%s is not installed: run make deps", cmd);
}

#endif
