/*
 * mem/report.c -- misuse reports: weft__mem_bad_free aborts naming the call, the
 * pointer and what was wrong with it ("weft: weft_free(0x...): double free ...").
 *
 * Callers: every layer of mem/ that finds a bad pointer (malloc.c: foreign and
 *   interior pointers; mcache.c: a double free the fast path saw; mcentral.c: double
 *   frees seen by a span or by WEFT_DEBUG=allocfree's bitmaps). It calls down only
 *   (weft__throwf, mem/base.c), so no mem/ file calls up to report. Never returns,
 *   never allocates, takes no lock: callers may hold any mem lock (span_give holds its
 *   mcentral's).
 */
#include "mem/mem.h"

void weft__mem_bad_free(const char *fn, const void *p, const char *why)
{
    weft__throwf("%s(%p): %s", fn, p, why);
}
