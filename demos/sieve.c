/*
 * demos/sieve.c -- the concurrent prime sieve (Go's classic example, after McIlroy and
 * Hoare): a generator green thread sends 2, 3, 4, ... down an unbuffered channel; each
 * prime found gets a filter green thread that passes on what its prime does not divide.
 *
 *   generate --ch0--> filter(2) --ch1--> filter(3) --ch2--> filter(5) --> ... --> main
 *
 * main receives a prime from the last channel, prints it, and puts a filter for it at
 * the end of the chain; after N primes there are N filters and N + 1 channels.
 *
 * The end (Go's version just exits): main closes the last channel, the one it receives
 * from. Every channel is closed by its receiver, and a sender that finds its channel
 * closed (-EPIPE) closes its own input and ends, so the close runs up the chain to the
 * generator (a filter waiting in a receive gets a number soon: the generator never
 * stops). Then every green thread has ended and every channel is freed.
 *
 * The answer is checked against an array sieve (exit status 1 if it differs).
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "weft.h"

struct filter {
    weft_chan *in, *out;
    long prime;
};

static weft_wg threads = WEFT_WG_INIT;
static atomic_ulong handoffs;           /* sends that met their receive */
static long nprimes = 1000;
static bool print_all;

static void generate(void *arg)
{
    weft_chan *out = arg;
    unsigned long sent = 0;
    for (long i = 2; weft_chan_send(out, &i) == 0; i++)
        sent++;
    atomic_fetch_add_explicit(&handoffs, sent, memory_order_relaxed);
    weft_wg_done(&threads);
}

static void filter(void *arg)
{
    struct filter *f = arg;
    unsigned long sent = 0;
    long v;
    /* only this thread closes `in`, so the receive never fails */
    while (weft_chan_recv(f->in, &v) == 0) {
        if (v % f->prime == 0)
            continue;
        if (weft_chan_send(f->out, &v) != 0) {
            weft_chan_close(f->in);     /* downstream is gone: pass the end upstream */
            break;
        }
        sent++;
    }
    atomic_fetch_add_explicit(&handoffs, sent, memory_order_relaxed);
    weft_wg_done(&threads);
}

static double now_s(void)
{
    return (double)weft_now() / 1e9;
}

/* The first n primes the plain way, into out[0..n). */
static void array_sieve(long *out, long n)
{
    long limit = 16;
    for (;;) {
        char *composite = calloc((size_t)limit, 1);
        if (composite == NULL) {
            fprintf(stderr, "sieve: out of memory\n");
            exit(1);
        }
        long k = 0;
        for (long i = 2; i < limit && k < n; i++) {
            if (composite[i])
                continue;
            out[k++] = i;
            for (long j = i * i; j < limit; j += i)
                composite[j] = 1;
        }
        free(composite);
        if (k == n)
            return;
        limit *= 2;
    }
}

static int sieve_main(void *arg)
{
    (void)arg;
    long n = nprimes;
    long *primes = malloc((size_t)n * sizeof *primes);
    weft_chan **chans = malloc((size_t)(n + 1) * sizeof *chans);
    struct filter *filters = malloc((size_t)n * sizeof *filters);
    if (primes == NULL || chans == NULL || filters == NULL) {
        fprintf(stderr, "sieve: out of memory\n");
        return 1;
    }
    printf("sieve: the first %ld primes through a chain of %ld filter green threads (%d Ps)\n",
           n, n, weft_nprocs());
    double t0 = now_s();
    if (weft_chan_make(&chans[0], sizeof(long), 0) != 0)
        return 1;
    weft_wg_add(&threads, 1);
    weft_spawn(generate, chans[0]);
    for (long i = 0; i < n; i++) {
        weft_chan_recv(chans[i], &primes[i]);
        if (weft_chan_make(&chans[i + 1], sizeof(long), 0) != 0) {
            fprintf(stderr, "sieve: out of memory\n");
            exit(1);
        }
        filters[i] = (struct filter){ chans[i], chans[i + 1], primes[i] };
        weft_wg_add(&threads, 1);
        if (weft_spawn(filter, &filters[i]) != 0) {
            fprintf(stderr, "sieve: cannot spawn a filter\n");
            exit(1);
        }
    }
    double t1 = now_s();
    weft_chan_close(chans[n]);          /* the end, up the chain */
    weft_wg_wait(&threads);
    double t2 = now_s();
    for (long i = 0; i <= n; i++)
        weft_chan_free(chans[i]);

    if (print_all) {
        for (long i = 0; i < n; i++)
            printf("%ld%c", primes[i], i % 10 == 9 || i == n - 1 ? '\n' : ' ');
    } else {
        printf(" ");
        for (long i = 0; i < n; i++) {
            if (i == 10 && n > 16) {
                printf(" ...");
                i = n - 6;      /* and on with the last six */
            }
            printf(" %ld", primes[i]);
        }
        printf("\n");
    }
    long *want = malloc((size_t)n * sizeof *want);
    if (want == NULL)
        return 1;
    array_sieve(want, n);
    long bad = -1;
    for (long i = 0; i < n && bad < 0; i++)
        if (primes[i] != want[i])
            bad = i;
    if (bad >= 0)
        printf("  WRONG: prime #%ld is %ld, not %ld\n", bad + 1, primes[bad], want[bad]);
    else
        printf("  the %ld%s prime is %ld (checked: all %ld match an array sieve)\n", n,
               n % 10 == 1 && n % 100 != 11 ? "st" : n % 10 == 2 && n % 100 != 12 ? "nd"
               : n % 10 == 3 && n % 100 != 13 ? "rd" : "th", primes[n - 1], n);
    unsigned long h = atomic_load(&handoffs);
    printf("  %.3f s to the last prime: %.0f primes/s; %ld green threads\n"
           "  %lu channel handoffs (a send meets a receive) in %.3f s, the teardown included:"
           " %.2f M/s\n", t1 - t0, (double)n / (t1 - t0), n + 1, h, t2 - t0,
           (double)h / (t2 - t0) / 1e6);
    free(want);
    free(filters);
    free(chans);
    free(primes);
    return bad >= 0 ? 1 : 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sieve [N] [--procs P] [--print]\n"
               "  The concurrent prime sieve: the first N primes (default 1000, at most\n"
               "  1000000) through a chain of N green threads joined by unbuffered channels.\n"
               "  --print lists every prime (else the first and last few).\n");
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
        } else if (strcmp(a, "--print") == 0) {
            print_all = true;
        } else if (strcmp(a, "--procs") == 0 && i + 1 < argc) {
            long v = strtol(argv[++i], &end, 10);
            if (end == argv[i] || *end != '\0' || v < 1 || v > 1024) {
                fprintf(stderr, "sieve: bad --procs '%s' (1-1024)\n", argv[i]);
                return 2;
            }
            cfg.nprocs = (int)v;
        } else if (a[0] != '-' && !have_n) {
            long v = strtol(a, &end, 10);
            if (end == a || *end != '\0' || v < 1 || v > 1000000) {
                fprintf(stderr, "sieve: bad N '%s' (1-1000000)\n", a);
                return 2;
            }
            nprimes = v;
            have_n = true;
        } else {
            fprintf(stderr, "sieve: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    int r = weft_run(sieve_main, NULL, &cfg);
    if (r < 0) {
        fprintf(stderr, "sieve: weft_run: %s\n", weft_strerror(r));
        return 1;
    }
    return r;
}
