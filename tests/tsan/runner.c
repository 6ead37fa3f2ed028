/*
 * tests/tsan/runner.c -- runs the tests registered through tests/tsan/criterion/criterion.h
 * (the ThreadSanitizer build): each in a forked child, with its suite's and its own
 * init/fini and timeout, as Criterion would. A child that exits 0 passes (or dies of
 * the signal the test expects); a data race reported by TSan makes it exit 66 and
 * fail. Prints Criterion's lines ("[FAIL] suite::name", the synthesis line).
 */
#include <fnmatch.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "criterion/criterion.h"

#define SKIP_STATUS 77
#define MAX_SUITES 16

static struct shim_test *head, **tail = &head;
static struct { const char *name; struct shim_attrs *attrs; } suites[MAX_SUITES];
static int nsuites;

void shim_register(struct shim_test *t)
{
    *tail = t;
    tail = &t->next;
}

void shim_register_suite(const char *suite, struct shim_attrs *attrs)
{
    if (nsuites == MAX_SUITES) {
        fprintf(stderr, "tsan runner: more than %d suites\n", MAX_SUITES);
        exit(2);
    }
    suites[nsuites].name = suite;
    suites[nsuites++].attrs = attrs;
}

void shim_fail(const char *file, int line, const char *expr, const char *fmt, ...)
{
    char msg[2048] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* fmt starts with a space (the macros make it never empty) */
    fprintf(stderr, "[----] %s:%d: Assertion failed: %s%s%s\n", file, line, expr,
            msg[1] ? ":" : "", msg[1] ? msg : "");
    fflush(NULL);
    _exit(1);
}

void shim_skip(const char *fmt, ...)
{
    char msg[1024] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "[SKIP]%s\n", msg);
    fflush(NULL);
    _exit(SKIP_STATUS);
}

static struct shim_attrs *suite_of(const char *name)
{
    static struct shim_attrs none;
    for (int i = 0; i < nsuites; i++)
        if (strcmp(suites[i].name, name) == 0)
            return suites[i].attrs;
    return &none;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

/* 0 passed, 1 failed, 2 crashed or timed out, 3 skipped */
static int run_one(struct shim_test *t)
{
    struct shim_attrs *s = suite_of(t->suite);
    double limit = t->attrs.timeout > 0 ? t->attrs.timeout : s->timeout > 0 ? s->timeout : 60;
    limit *= 5;                         /* TSan runs code 5-15x slower */
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("tsan runner: fork");
        return 2;
    }
    if (pid == 0) {
        if (s->init)
            s->init();
        if (t->attrs.init)
            t->attrs.init();
        t->fn();
        if (t->attrs.fini)
            t->attrs.fini();
        if (s->fini)
            s->fini();
        fflush(NULL);
        exit(0);          /* exit, not _exit: TSan's report at exit decides the status */
    }
    double t0 = now_s();
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (now_s() - t0 > limit) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            printf("[FAIL] %s::%s: Timed out (%.0f s)\n", t->suite, t->name, limit);
            return 2;
        }
        usleep(2000);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == SKIP_STATUS)
        return 3;
    if (t->attrs.signal != 0) {
        if (WIFSIGNALED(status) && WTERMSIG(status) == t->attrs.signal)
            return 0;
        printf("[FAIL] %s::%s: expected signal %d, status %#x\n", t->suite, t->name,
               t->attrs.signal, status);
        return 1;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFSIGNALED(status)) {
        printf("[FAIL] %s::%s: CRASH! (signal %d)\n", t->suite, t->name, WTERMSIG(status));
        return 2;
    }
    printf("[FAIL] %s::%s: exit status %d%s\n", t->suite, t->name, WEXITSTATUS(status),
           WEXITSTATUS(status) == 66 ? " (ThreadSanitizer report)" : "");
    return 1;
}

int main(int argc, char **argv)
{
    const char *filter = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc)
            filter = argv[++i];
        else if (strncmp(argv[i], "--filter=", 9) == 0)
            filter = argv[i] + 9;
        else if (strcmp(argv[i], "--jobs") == 0 && i + 1 < argc)
            i++;                        /* one at a time: TSan is slow enough */
    }
    int tested = 0, passed = 0, failed = 0, crashed = 0;
    for (struct shim_test *t = head; t != NULL; t = t->next) {
        char full[256];
        snprintf(full, sizeof full, "%s/%s", t->suite, t->name);
        if (filter != NULL && fnmatch(filter, full, 0) != 0)
            continue;
        int r = run_one(t);
        if (r == 3)
            continue;
        tested++;
        passed += r == 0;
        failed += r == 1;
        crashed += r == 2;
    }
    printf("[====] Synthesis: Tested: %d | Passing: %d | Failing: %d | Crashing: %d \n",
           tested, passed, failed + crashed, crashed);
    return failed + crashed > 0;
}
