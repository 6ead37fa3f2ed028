/*
 * tests/bench/fastpath.c -- for callgrind: warm up, then K malloc(32)/free pairs, so that
 * (instructions in malloc) / K and (instructions in free) / K are the fast paths' costs.
 * Usage: fastpath K
 */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    long k = argc > 1 ? atol(argv[1]) : 100000;
    void *warm[256];
    for (int r = 0; r < 4; r++) {
        for (int i = 0; i < 256; i++)
            warm[i] = malloc(32);
        for (int i = 0; i < 256; i++)
            free(warm[i]);
    }
    for (long i = 0; i < k; i++) {
        void *p = malloc(32);
        __asm__ volatile("" : : "r"(p) : "memory");
        free(p);
    }
    return 0;
}
