/*
 * tests/helpers/scav_nothread.c -- the allocator where no scavenger thread can start:
 * this program's pthread_create always fails (EAGAIN), so mem/mheap.c's fallback must
 * give memory back from the frees' outer calls. Four rounds of 320 MiB allocated,
 * written and freed; exit 0 when every round ends with at least 200 MiB released
 * (the slack kept is max(48 MiB, in use / 8) = 48 MiB), 1 otherwise.
 * Run by tests/test_api_mem.c (api_mem::no_scavenger_thread_frees_release_themselves).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "weft.h"

int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    (void)t; (void)attr; (void)fn; (void)arg;
    return EAGAIN;
}

int main(void)
{
    enum { N = 320 };
    static void *l[N];
    int ok = 1;
    for (int r = 0; r < 4; r++) {
        for (int i = 0; i < N; i++) {
            l[i] = weft_malloc(1 << 20);
            if (l[i] == NULL)
                return 1;
            memset(l[i], r + 1, 1 << 20);
        }
        for (int i = 0; i < N; i++)
            weft_free(l[i]);
        weft_mem_stats st;
        weft_mem_stats_read(&st);
        printf("round %d: released %llu MiB of %llu\n", r, (unsigned long long)(st.heap_released >> 20),
               (unsigned long long)(st.heap_sys >> 20));
        if (st.heap_released < ((uint64_t)200 << 20))
            ok = 0;
    }
    return ok ? 0 : 1;
}
