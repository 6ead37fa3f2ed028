/*
 * demos/skynet.c -- the skynet benchmark (github.com/atemerev/skynet): a green thread
 * spawns 10 children, each of them 10 more, down to N leaves (a million by default:
 * 1,111,111 green threads in all). Leaf i sends its number i; every other thread sums
 * what its children send and sends the sum up. The root's sum is N(N-1)/2
 * (499999500000 for a million).
 *
 * Each parent makes one channel with room for all its children (so no child waits to
 * send), hands each child its range of numbers in an array on its own stack (the child
 * copies it before its first wait; the parent reads that array no more once it has
 * every sum), receives one sum per child and frees the channel. For an N that is not a
 * power of 10 a range splits into min(10, size) nearly equal parts.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include "weft.h"

#define FANOUT 10

struct node {
    weft_chan *up;                      /* where the sum goes */
    long long num, size;                /* the leaves num .. num + size - 1 */
};

static long long nleaves = 1000000;
static bool spawn_failed;

static void skynet(void *arg)
{
    struct node me = *(const struct node *)arg;
    long long sum = 0;
    if (me.size == 1) {
        sum = me.num;
    } else {
        int k = me.size < FANOUT ? (int)me.size : FANOUT;
        struct node kids[FANOUT];
        weft_chan *rc;
        if (weft_chan_make(&rc, sizeof(long long), (size_t)k) != 0) {
            fprintf(stderr, "skynet: out of memory\n");
            exit(1);
        }
        long long at = me.num;
        for (int i = 0; i < k; i++) {
            long long size = me.size / k + (i < me.size % k ? 1 : 0);
            kids[i] = (struct node){ rc, at, size };
            at += size;
            if (weft_spawn(skynet, &kids[i]) != 0) {
                spawn_failed = true;    /* reported by main; the sum comes out short */
                long long zero = 0;
                weft_chan_send(rc, &zero);
            }
        }
        for (int i = 0; i < k; i++) {
            long long v;
            weft_chan_recv(rc, &v);
            sum += v;
        }
        weft_chan_free(rc);
    }
    weft_chan_send(me.up, &sum);
}

static int skynet_main(void *arg)
{
    (void)arg;
    weft_chan *result;
    if (weft_chan_make(&result, sizeof(long long), 1) != 0)
        return 1;
    weft_sched_stats s0, s1;
    weft_sched_stats_read(&s0);
    int64_t t0 = weft_now();
    struct node root = { result, 0, nleaves };
    if (weft_spawn(skynet, &root) != 0) {
        fprintf(stderr, "skynet: cannot spawn\n");
        return 1;
    }
    long long sum;
    weft_chan_recv(result, &sum);
    double secs = (double)(weft_now() - t0) / 1e9;
    weft_sched_stats_read(&s1);
    weft_chan_free(result);
    unsigned long long threads = s1.spawned - s0.spawned;
    long long want = nleaves * (nleaves - 1) / 2;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("skynet: %lld leaves, %llu green threads (%d Ps)\n", nleaves, threads, weft_nprocs());
    printf("  sum %lld (%s %lld)\n", sum, sum == want ? "right: n(n-1)/2 =" : "WRONG: want", want);
    printf("  %.3f s: %.0f green threads/s (spawned, run, summed, ended); peak RSS %.1f MiB\n",
           secs, (double)threads / secs, (double)ru.ru_maxrss / 1024.0);
    if (spawn_failed)
        printf("  some spawns failed (out of memory)\n");
    return sum == want && !spawn_failed ? 0 : 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: skynet [N] [--procs P]\n"
               "  The skynet benchmark: a tree of green threads, 10 children each, down to N\n"
               "  leaves (default 1000000, at most 100000000), summing 0 .. N-1 through\n"
               "  channels; prints the sum, the time and green threads per second.\n");
}

int main(int argc, char **argv)
{
    weft_config cfg = { 0 };
    bool have_n = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        char *end;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--procs") == 0 && i + 1 < argc) {
            long v = strtol(argv[++i], &end, 10);
            if (end == argv[i] || *end != '\0' || v < 1 || v > 1024) {
                fprintf(stderr, "skynet: bad --procs '%s' (1-1024)\n", argv[i]);
                return 2;
            }
            cfg.nprocs = (int)v;
        } else if (a[0] != '-' && !have_n) {
            long long v = strtoll(a, &end, 10);
            if (end == a || *end != '\0' || v < 1 || v > 100000000) {
                fprintf(stderr, "skynet: bad N '%s' (1-100000000)\n", a);
                return 2;
            }
            nleaves = v;
            have_n = true;
        } else {
            fprintf(stderr, "skynet: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    int r = weft_run(skynet_main, NULL, &cfg);
    if (r < 0) {
        fprintf(stderr, "skynet: weft_run: %s\n", weft_strerror(r));
        return 1;
    }
    return r;
}
