/*
 * tests/common.h -- helpers shared by the Criterion test files.
 */
#ifndef WEFT_TESTS_COMMON_H
#define WEFT_TESTS_COMMON_H
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* make test SAN=... sets WEFT_TEST_SAN: scale work down, skip RSS and signal checks. */
static inline bool sanitized(void)
{
    const char *s = getenv("WEFT_TEST_SAN");
    return s != NULL && *s != 0;
}

/* Run fn in a forked child with its stderr captured into out (NUL-terminated); the
 * child exits with fn's value. Returns the child's wait status. */
static inline int child_stderr(int (*fn)(void), char *out, size_t cap)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
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
