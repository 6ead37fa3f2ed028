/*
 * tests/bench/fastpath.c -- the instruction count of the malloc and free fast paths, for
 * callgrind (tests/bench/run.sh, section callgrind).
 *
 *   fastpath [K]     warm up, then K (default 100000) malloc(32)/free pairs while 64
 *                    other 32-byte objects stay live
 *
 * The timed pairs go through two wrappers, fp_malloc and fp_free, and only through them:
 * the inclusive cost of the calls made by fp_malloc, divided by K, is the instructions
 * per malloc, whatever name callgrind gives the allocator's entry point (malloc,
 * weft_malloc, mi_malloc, tc_malloc, __libc_malloc ... aliases of one address), and it
 * leaves out start-up, the warm-up and the allocator's first-use initialisation.
 * Plain malloc/free only, so it runs under LD_PRELOAD of any allocator.
 */
#include <stdio.h>
#include <stdlib.h>

void *fp_malloc(size_t n);
void fp_free(void *p);

/* Not inlined, not tail calls (the empty asm runs after the call returns), and the size
 * comes from a volatile so that no constant-propagated clone replaces them. */
__attribute__((noinline)) void *fp_malloc(size_t n)
{
    void *p = malloc(n);
    __asm__ volatile("" : "+r"(p) : : "memory");
    return p;
}

__attribute__((noinline)) void fp_free(void *p)
{
    free(p);
    __asm__ volatile("" : : : "memory");
}

static volatile size_t size = 32;

int main(int argc, char **argv)
{
    long k = argc > 1 ? atol(argv[1]) : 100000;
    enum { WARM = 256, LIVE = 64 };
    void *warm[WARM], *live[LIVE];
    /* warm-up: the allocator initialised, the size class's cache filled, the PLT bound */
    for (int r = 0; r < 4; r++) {
        for (int i = 0; i < WARM; i++)
            warm[i] = malloc(size);
        for (int i = 0; i < WARM; i++)
            free(warm[i]);
    }
    /* other objects of the class stay live, as in a real program: the block freed in the
     * loop is never the last one of its page or span (mimalloc, for one, retires a page
     * whose last block is freed: that is not the fast path) */
    for (int i = 0; i < LIVE; i++)
        live[i] = malloc(size);
    for (long i = 0; i < k; i++) {
        void *p = fp_malloc(size);
        if (p == NULL)
            return 1;
        *(volatile char *)p = (char)i;
        fp_free(p);
    }
    for (int i = 0; i < LIVE; i++)
        free(live[i]);
    return 0;
}
