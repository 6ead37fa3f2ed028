/*
 * tests/common.h -- helpers shared by the Criterion test files.
 */
#ifndef WEFT_TESTS_COMMON_H
#define WEFT_TESTS_COMMON_H
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* make test SAN=... sets WEFT_TEST_SAN: scale work down, skip RSS and signal checks. */
static inline bool sanitized(void)
{
    const char *s = getenv("WEFT_TEST_SAN");
    return s != NULL && *s != 0;
}

/* make test SAN=thread: every green thread is a TSan fiber, which costs TSan
 * milliseconds to make (sched/san.h), and everything runs 5-15x slower: fewer live
 * green threads, looser time bounds. */
static inline bool tsan(void)
{
    const char *s = getenv("WEFT_TEST_SAN");
    return s != NULL && strcmp(s, "thread") == 0;
}

/* Run fn in a forked child with its stderr captured into out (NUL-terminated); the
 * child exits with fn's value. Returns the child's wait status.
 * The child can never outlive the test or hang the suite: it keeps none of Criterion's
 * descriptors (a live child holding the runner's pipe kept the whole runner waiting
 * after the test's own timeout killed it), dies with its parent, and is killed by
 * SIGALRM after CHILD_LIMIT seconds (its status then says signal 14). */
#define CHILD_LIMIT 25
static inline int child_stderr(int (*fn)(void), char *out, size_t cap)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(fds[1], 2);
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0);
        dup2(devnull, 1);
        close_range(3, ~0U, 0);
        alarm(CHILD_LIMIT);
        _exit(fn());
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t r;
    while (len < cap - 1 && (r = read(fds[0], out + len, cap - 1 - len)) > 0)
        len += (size_t)r;
    out[len] = 0;
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    return status;
}
#endif
