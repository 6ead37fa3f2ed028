/*
 * demos/kv.c -- a key-value server in the Redis protocol (RESP2): redis-cli,
 * redis-benchmark and client libraries talk to it unchanged. Try it:
 *
 *   build/release/demos/kv --port 6380 &
 *   redis-cli -p 6380 set greeting hello
 *   redis-benchmark -p 6380 -q -t set,get -P 16
 *
 * Commands: PING ECHO QUIT SELECT(0) SET(EX PX EXAT PXAT NX XX GET KEEPTTL) GET GETSET
 * DEL EXISTS TYPE INCR DECR INCRBY DECRBY APPEND STRLEN MGET MSET EXPIRE PEXPIRE(NX XX GT
 * LT) PERSIST TTL PTTL DBSIZE FLUSHALL FLUSHDB KEYS SCAN(MATCH COUNT TYPE) LPUSH RPUSH
 * LPOP RPOP(count) LRANGE LLEN, and for the clients' sake CONFIG GET, COMMAND (COUNT
 * INFO DOCS LIST), INFO, CLIENT (SETNAME GETNAME ID SETINFO). Replies and error texts
 * are Redis 7's (checked against redis-server 7.0). One database: SELECT 0 only.
 *
 * Connections (kv_conn, a green thread each): read into a buffer, parse every whole
 * request in it (demos/lib/resp.c), append every reply to an output buffer, and write
 * that once per read: a pipeline of N commands costs one read and one write. The input
 * buffer starts at IN_MIN and grows for a large request up to RESP_MAX_REQUEST (64 MiB,
 * the parser's bound), then shrinks back once the request is gone; the output buffer
 * likewise. A protocol error is answered "-ERR Protocol error: ..." and the connection
 * closed, as Redis does; other connections are not affected.
 *
 * The store: NSHARDS shards, chosen by 8 bits of the key's 64-bit hash (seeded at
 * start). Each shard is a weft_mutex and an open-addressing table (linear probing,
 * power-of-two size, load kept between 1/8 and 3/4, deletion by backward shift: no
 * tombstones). A slot is one word: the entry's address in the low 48 bits and 16 more
 * bits of the hash above, so a probe compares keys only when the tags agree. A shard
 * rehashes all at once under its lock (a shard is 1/256 of the keys).
 *
 * An entry is one weft_malloc allocation: a 9-byte header (type, and whether an expiry
 * follows; key length; value length), the expiry (8 bytes, only if it has one), the
 * key, then the value: a string's bytes, or for a list the address of its deque (a
 * ring of pointers to items, each item a length and its bytes). The hash is not kept:
 * it is recomputed where needed (rehash, deletion's shift, SCAN). With
 * redis-benchmark's keys ("key:000000123456", value "xxx") an entry is 28 bytes, a
 * 32-byte size class, plus ~13 bytes of table.
 *
 * Expiry: an absolute weft_now() time. Lazy: any access that finds an expired key
 * deletes it first (KEYS and SCAN skip expired keys without deleting). Active: a green
 * thread (started by serve_opts.start) wakes every 100 ms and walks each shard that has
 * keys with expiries a little further (64 slots), deleting the expired ones, and walks
 * on while more than a quarter of those it met had expired (as Redis's active expiry);
 * it ends at serve_stopping(), and serve_opts.stop waits for it.
 *
 * Locking: a command on one key takes that key's shard lock; MGET, MSET, DEL and EXISTS
 * take all their keys' shards in ascending order (atomic, as in Redis); FLUSHALL takes
 * all shards in order; DBSIZE, KEYS, SCAN, INFO take one shard at a time (a KEYS reply
 * is not one instant's snapshot of the whole store). Nothing parks while holding a
 * shard lock: replies are appended to the connection's buffer under the lock and
 * written after it is released.
 *
 * SCAN's cursor: the shard in the low 8 bits, above it a position in the shard's table
 * counted over the "home" slots (hash & mask) in reverse-binary order, Redis's way, so
 * that a key present for the whole scan is returned at least once even when tables
 * grow or shrink between calls (a home's keys are found by probing its cluster).
 *
 * Memory: weft_malloc / weft_free throughout (the C library's under ASan, which checks
 * it); an allocation that fails aborts with a message (as redis-server does).
 * Rejected: a chained hash table (a next pointer per key: 8 more bytes) and keeping
 * the hash in the entry (4-8 more bytes a key).
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "weft.h"
#include "lib/resp.h"
#include "lib/serve.h"

#define NSHARDS     256
#define IN_MIN      (16 * 1024)
#define OUT_MIN     (16 * 1024)
#define OUT_FLUSH   (1024 * 1024)       /* flush a batch's replies early past this */
#define ARGV_MIN    64
#define MAX_STRING  (512LL * 1024 * 1024)   /* APPEND's limit, Redis's proto-max-bulk-len */
#define SWEEP_SLOTS 64
#define SWEEP_ROUNDS 16

/* ---- memory ------------------------------------------------------------------
 * weft's allocator. Under AddressSanitizer (make SAN=address) the C library's instead,
 * which ASan instruments: weft's own heap is invisible to it, and this file's buffer
 * arithmetic is what the ASan run is there to check. */
#if defined(__SANITIZE_ADDRESS__)
#define KV_LIBC_HEAP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KV_LIBC_HEAP 1
#endif
#endif
#ifdef KV_LIBC_HEAP
#include <malloc.h>
#define mem_malloc  malloc
#define mem_calloc  calloc
#define mem_realloc realloc
#define mem_free    free
#define mem_usable  malloc_usable_size
#else
#define mem_malloc  weft_malloc
#define mem_calloc  weft_calloc
#define mem_realloc weft_realloc
#define mem_free    weft_free
#define mem_usable  weft_usable_size
#endif

static void oom(void)
{
    static const char msg[] = "kv: out of memory\n";
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
        /* nothing to do */
    }
    abort();
}

static void *xmalloc(size_t n)
{
    void *p = mem_malloc(n);
    if (p == NULL)
        oom();
    return p;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = mem_calloc(n, size);
    if (p == NULL)
        oom();
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = mem_realloc(p, n);
    if (q == NULL)
        oom();
    return q;
}

/* ---- hashing ------------------------------------------------------------------- */
static uint64_t hash_seed;

static inline uint64_t mum(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static uint64_t hash_bytes(const void *key, size_t n)
{
    const unsigned char *p = key;
    uint64_t h = hash_seed ^ (n * 0x9e3779b97f4a7c15ULL);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = mum(w ^ 0xa0761d6478bd642fULL, h ^ 0xe7037ed1a0b428dbULL);
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = mum(w ^ 0x8ebc6af09c88c6e3ULL, h ^ 0x589965cc75374cc3ULL ^ n);
    return mum(h, 0x1d8e4e27c47d124fULL) ^ h;
}

/* ---- entries ------------------------------------------------------------------- */
typedef unsigned char ent;              /* see the header comment for the layout */
enum { T_STR = 0, T_LIST = 1 };
#define F_EXP   0x80
#define EHDR    9

struct item {                           /* a list element */
    uint32_t len;
    char data[];
};

struct list {                           /* a deque: a ring of cap (a power of 2) slots */
    size_t head, len, cap;
    struct item **it;
};

static inline unsigned e_type(const ent *e) { return e[0] & 0x0f; }
static inline bool e_hasexp(const ent *e) { return (e[0] & F_EXP) != 0; }
static inline uint32_t e_klen(const ent *e) { uint32_t v; memcpy(&v, e + 1, 4); return v; }
static inline uint32_t e_vlen(const ent *e) { uint32_t v; memcpy(&v, e + 5, 4); return v; }
static inline size_t e_hdr(const ent *e) { return EHDR + (e_hasexp(e) ? 8 : 0); }
static inline int64_t e_exp(const ent *e) { int64_t v; memcpy(&v, e + EHDR, 8); return v; }
static inline ent *e_key(ent *e) { return e + e_hdr(e); }
static inline ent *e_val(ent *e) { return e_key(e) + e_klen(e); }
static inline size_t e_size(bool hasexp, size_t klen, size_t vlen)
{
    return EHDR + (hasexp ? 8 : 0) + klen + vlen;
}

static inline struct list *e_list(ent *e)
{
    struct list *l;
    memcpy(&l, e_val(e), sizeof l);
    return l;
}

/* A new entry; val may be NULL (the caller fills the value). */
static ent *e_new(unsigned type, bool hasexp, int64_t exp, const void *key, size_t klen,
                  const void *val, size_t vlen)
{
    ent *e = xmalloc(e_size(hasexp, klen, vlen));
    e[0] = (unsigned char)(type | (hasexp ? F_EXP : 0));
    uint32_t k = (uint32_t)klen, v = (uint32_t)vlen;
    memcpy(e + 1, &k, 4);
    memcpy(e + 5, &v, 4);
    if (hasexp)
        memcpy(e + EHDR, &exp, 8);
    memcpy(e_key(e), key, klen);
    if (val != NULL)
        memcpy(e_val(e), val, vlen);
    return e;
}

static void list_free(struct list *l)
{
    for (size_t i = 0; i < l->len; i++)
        mem_free(l->it[(l->head + i) & (l->cap - 1)]);
    mem_free(l->it);
    mem_free(l);
}

static void e_free(ent *e)
{
    if (e_type(e) == T_LIST)
        list_free(e_list(e));
    mem_free(e);
}

/* ---- lists ----------------------------------------------------------------------- */
static struct list *list_new(void)
{
    struct list *l = xmalloc(sizeof *l);
    l->head = l->len = 0;
    l->cap = 8;
    l->it = xmalloc(l->cap * sizeof *l->it);
    return l;
}

static void list_resize(struct list *l, size_t cap)
{
    struct item **it = xmalloc(cap * sizeof *it);
    for (size_t i = 0; i < l->len; i++)
        it[i] = l->it[(l->head + i) & (l->cap - 1)];
    mem_free(l->it);
    l->it = it;
    l->cap = cap;
    l->head = 0;
}

static void list_push(struct list *l, bool left, const char *p, size_t n)
{
    if (l->len == l->cap)
        list_resize(l, l->cap * 2);
    struct item *x = xmalloc(sizeof *x + n);
    x->len = (uint32_t)n;
    memcpy(x->data, p, n);
    if (left) {
        l->head = (l->head - 1) & (l->cap - 1);
        l->it[l->head] = x;
    } else {
        l->it[(l->head + l->len) & (l->cap - 1)] = x;
    }
    l->len++;
}

/* Remove and return the first (left) or last item; the caller frees it. len > 0. */
static struct item *list_pop(struct list *l, bool left)
{
    struct item *x;
    if (left) {
        x = l->it[l->head];
        l->head = (l->head + 1) & (l->cap - 1);
    } else {
        x = l->it[(l->head + l->len - 1) & (l->cap - 1)];
    }
    l->len--;
    if (l->cap > 16 && l->len * 4 < l->cap)
        list_resize(l, l->cap / 2);
    return x;
}

static inline struct item *list_at(const struct list *l, size_t i)
{
    return l->it[(l->head + i) & (l->cap - 1)];
}

/* ---- the sharded table --------------------------------------------------------- */
#define PTR_MASK ((1ULL << 48) - 1)
#define NONE     SIZE_MAX

struct shard {
    weft_mutex mu;
    uint64_t *slots;                    /* NULL while empty; else mask + 1 words */
    size_t mask;
    size_t count;                       /* keys, expired ones not yet deleted included */
    size_t nexp;                        /* of which with an expiry */
    size_t sweep;                       /* the active expiry's next slot */
} __attribute__((aligned(64)));

static struct shard shards[NSHARDS];

static atomic_uint_fast64_t st_expired, st_commands, st_conns_total, st_client_id;
static atomic_int st_conns;
static int64_t started_at;

static inline struct shard *shard_of(uint64_t h) { return &shards[(h >> 40) & (NSHARDS - 1)]; }
static inline ent *slot_ent(uint64_t v) { return (ent *)(uintptr_t)(v & PTR_MASK); }
static inline uint64_t slot_make(ent *e, uint64_t h)
{
    if (((uintptr_t)e & ~PTR_MASK) != 0) {
        fprintf(stderr, "kv: an address above 2^48: the slot tags need another layout\n");
        abort();
    }
    return (uint64_t)(uintptr_t)e | (h & ~PTR_MASK);
}
static inline uint64_t ent_hash(ent *e) { return hash_bytes(e_key(e), e_klen(e)); }

static void lock(struct shard *s) { weft_mutex_lock(&s->mu); }
static void unlock(struct shard *s) { weft_mutex_unlock(&s->mu); }

/* Put a slot word into a table that has room (no resize). */
static void put_slot(uint64_t *slots, size_t mask, uint64_t v, uint64_t h)
{
    size_t i = h & mask;
    while (slots[i] != 0)
        i = (i + 1) & mask;
    slots[i] = v;
}

static void rehash(struct shard *s, size_t cap)
{
    uint64_t *slots = cap ? xcalloc(cap, sizeof *slots) : NULL;
    if (s->slots != NULL) {
        for (size_t i = 0; i <= s->mask; i++) {
            uint64_t v = s->slots[i];
            if (v != 0)
                put_slot(slots, cap - 1, v, ent_hash(slot_ent(v)));
        }
        mem_free(s->slots);
    }
    s->slots = slots;
    s->mask = cap ? cap - 1 : 0;
    s->sweep = 0;
}

/* After deletions (never in the middle of a walk over the slots). */
static void maybe_shrink(struct shard *s)
{
    if (s->slots == NULL)
        return;
    size_t cap = s->mask + 1;
    if (s->count == 0)
        rehash(s, 0);
    else if (cap > 16 && s->count * 8 < cap)
        rehash(s, cap / 2 > 16 ? cap / 2 : 16);
}

/* The slot holding key, or NONE. */
static size_t find(struct shard *s, const void *key, size_t klen, uint64_t h)
{
    if (s->slots == NULL)
        return NONE;
    uint64_t tag = h & ~PTR_MASK;
    for (size_t i = h & s->mask;; i = (i + 1) & s->mask) {
        uint64_t v = s->slots[i];
        if (v == 0)
            return NONE;
        if ((v & ~PTR_MASK) == tag) {
            ent *e = slot_ent(v);
            if (e_klen(e) == klen && memcmp(e_key(e), key, klen) == 0)
                return i;
        }
    }
}

/* Take slot i out (backward shift: every key stays reachable from its home). Returns
 * the entry, which the caller frees. */
static ent *unlink_at(struct shard *s, size_t i)
{
    ent *e = slot_ent(s->slots[i]);
    size_t mask = s->mask;
    s->slots[i] = 0;
    for (size_t j = (i + 1) & mask; s->slots[j] != 0; j = (j + 1) & mask) {
        size_t home = ent_hash(slot_ent(s->slots[j])) & mask;
        /* j's key stays when its home lies cyclically in (i, j] */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            s->slots[i] = s->slots[j];
            s->slots[j] = 0;
            i = j;
        }
    }
    s->count--;
    if (e_hasexp(e))
        s->nexp--;
    return e;
}

static void delete_at(struct shard *s, size_t i)
{
    e_free(unlink_at(s, i));
}

/* Insert e (its key absent), growing the table when it would pass 3/4. */
static void insert(struct shard *s, ent *e, uint64_t h)
{
    size_t cap = s->slots ? s->mask + 1 : 0;
    if ((s->count + 1) * 4 > cap * 3)
        rehash(s, cap ? cap * 2 : 16);
    put_slot(s->slots, s->mask, slot_make(e, h), h);
    s->count++;
    if (e_hasexp(e))
        s->nexp++;
}

/* Slot i now holds e (the same key): returns the entry it held, not freed. */
static ent *swap_at(struct shard *s, size_t i, ent *e)
{
    ent *old = slot_ent(s->slots[i]);
    s->slots[i] = (s->slots[i] & ~PTR_MASK) | (uint64_t)(uintptr_t)e;
    s->nexp += (size_t)e_hasexp(e) - (size_t)e_hasexp(old);
    return old;
}

static inline bool expired(ent *e, int64_t *now)
{
    if (!e_hasexp(e))
        return false;
    if (*now == 0)
        *now = weft_now();
    return *now > e_exp(e);
}

/* The live key's slot (an expired one is deleted on the way), or NONE. *now: 0 or a
 * weft_now() reading, filled in when needed. */
static size_t lookup(struct shard *s, const void *key, size_t klen, uint64_t h, int64_t *now)
{
    size_t i = find(s, key, klen, h);
    if (i != NONE && expired(slot_ent(s->slots[i]), now)) {
        delete_at(s, i);
        atomic_fetch_add_explicit(&st_expired, 1, memory_order_relaxed);
        return NONE;
    }
    return i;
}

static inline ent *at(struct shard *s, size_t i) { return slot_ent(s->slots[i]); }

/* Give slot i's entry an expiry (exp) or none: a new layout, so a new allocation. */
static void set_expiry_at(struct shard *s, size_t i, bool hasexp, int64_t exp)
{
    ent *old = at(s, i);
    if (e_hasexp(old) && hasexp) {
        memcpy(old + EHDR, &exp, 8);
        return;
    }
    if (!e_hasexp(old) && !hasexp)
        return;
    ent *e = e_new(e_type(old), hasexp, exp, e_key(old), e_klen(old), e_val(old), e_vlen(old));
    swap_at(s, i, e);
    mem_free(old);                     /* the value (a list's deque too) moved over */
}

enum ttl_mode { TTL_CLEAR, TTL_KEEP, TTL_SET };

/* key := the string val; slot i holds the key now, or NONE. */
static void set_string(struct shard *s, size_t i, const void *key, size_t klen, uint64_t h,
                       const void *val, size_t vlen, enum ttl_mode mode, int64_t exp)
{
    if (i == NONE) {
        insert(s, e_new(T_STR, mode == TTL_SET, exp, key, klen, val, vlen), h);
        return;
    }
    ent *old = at(s, i);
    bool hasexp = mode == TTL_SET || (mode == TTL_KEEP && e_hasexp(old));
    if (mode == TTL_KEEP && hasexp)
        exp = e_exp(old);
    size_t need = e_size(hasexp, klen, vlen);
    if (e_type(old) == T_STR && e_hasexp(old) == hasexp) {
        size_t have = mem_usable(old);
        if (have >= need && have <= need * 2 + 32) {    /* in place, little waste */
            uint32_t v = (uint32_t)vlen;
            memcpy(old + 5, &v, 4);
            if (hasexp)
                memcpy(old + EHDR, &exp, 8);
            memmove(e_val(old), val, vlen);
            return;
        }
    }
    e_free(swap_at(s, i, e_new(T_STR, hasexp, exp, key, klen, val, vlen)));
}

/* Hash every key of argv[first], argv[first + step], ... and lock their shards in
 * ascending order; `held` records which (unlock_all releases them). */
struct lockset {
    uint64_t bits[NSHARDS / 64];
};

static void lock_all(struct lockset *ls)
{
    for (int w = 0; w < NSHARDS / 64; w++)
        for (uint64_t b = ls->bits[w]; b != 0; b &= b - 1)
            lock(&shards[w * 64 + __builtin_ctzll(b)]);
}

static void unlock_all(struct lockset *ls)
{
    for (int w = 0; w < NSHARDS / 64; w++)
        for (uint64_t b = ls->bits[w]; b != 0; b &= b - 1)
            unlock(&shards[w * 64 + __builtin_ctzll(b)]);
}

/* ---- glob patterns (KEYS, SCAN MATCH, CONFIG GET), Redis's semantics ------------- */
/* Does the pattern token at pat[i] match byte c? *next: the index after the token.
 * Tokens: '?', "\x" (x literally), "[...]" (a class: "^" first negates, "a-z" a range,
 * either way round, "\x" a literal; unterminated, it runs to the end), or a byte. */
static bool token_match(const char *pat, size_t plen, size_t i, unsigned char c, size_t *next)
{
    if (pat[i] == '?') {
        *next = i + 1;
        return true;
    }
    if (pat[i] == '\\' && i + 1 < plen) {
        *next = i + 2;
        return (unsigned char)pat[i + 1] == c;
    }
    if (pat[i] != '[') {
        *next = i + 1;
        return (unsigned char)pat[i] == c;
    }
    i++;
    bool neg = i < plen && pat[i] == '^';
    if (neg)
        i++;
    bool match = false;
    while (i < plen) {
        if (pat[i] == '\\' && i + 1 < plen) {
            match |= (unsigned char)pat[i + 1] == c;
            i += 2;
        } else if (pat[i] == ']') {
            i++;
            break;
        } else if (i + 2 < plen && pat[i + 1] == '-') {
            unsigned char lo = (unsigned char)pat[i], hi = (unsigned char)pat[i + 2];
            if (lo > hi) {
                unsigned char t = lo;
                lo = hi;
                hi = t;
            }
            match |= c >= lo && c <= hi;
            i += 3;
        } else {
            match |= (unsigned char)pat[i] == c;
            i++;
        }
    }
    *next = i;
    return match != neg;
}

/* Iterative, with one backtrack point (the last '*'): every other token matches
 * exactly one byte, which makes that enough. As in Redis, an empty string matches
 * only the empty pattern (KEYS * special-cases "*"). */
static bool glob_match(const char *pat, size_t plen, const char *str, size_t slen)
{
    if (slen == 0)
        return plen == 0;
    size_t p = 0, s = 0, star_p = NONE, star_s = 0;
    while (s < slen) {
        if (p < plen && pat[p] == '*') {
            while (p < plen && pat[p] == '*')
                p++;
            if (p == plen)
                return true;
            star_p = p;
            star_s = s;
            continue;
        }
        size_t next;
        if (p < plen && token_match(pat, plen, p, (unsigned char)str[s], &next)) {
            p = next;
            s++;
            continue;
        }
        if (star_p == NONE)
            return false;
        p = star_p;
        s = ++star_s;
    }
    while (p < plen && pat[p] == '*')
        p++;
    return p == plen;
}

/* ---- connections and replies --------------------------------------------------- */
struct conn {
    int fd;
    uint64_t id;
    struct resp_parser p;
    char *in;
    size_t in_len, in_cap, need;
    char *out;
    size_t out_len, out_cap;
    resp_arg *argv;
    size_t argv_cap;
    char *name;                         /* CLIENT SETNAME; NULL: none */
    size_t name_len;
    bool quit;
};

/* One request: its arguments are base + a[i].off, a[i].len bytes. */
struct req {
    char *base;
    const resp_arg *a;
    size_t argc;
};

static inline const char *A(const struct req *r, size_t i) { return r->base + r->a[i].off; }
static inline size_t L(const struct req *r, size_t i) { return r->a[i].len; }
static inline bool is(const struct req *r, size_t i, const char *word)
{
    size_t n = strlen(word);
    return L(r, i) == n && strncasecmp(A(r, i), word, n) == 0;
}

static void out_grow(struct conn *c, size_t n)
{
    size_t cap = c->out_cap * 2;
    if (cap < c->out_len + n)
        cap = c->out_len + n;
    c->out = xrealloc(c->out, cap);
    c->out_cap = cap;
}

static inline char *room(struct conn *c, size_t n)
{
    if (c->out_cap - c->out_len < n)
        out_grow(c, n);
    return c->out + c->out_len;
}

static inline void add(struct conn *c, const void *p, size_t n)
{
    memcpy(room(c, n), p, n);
    c->out_len += n;
}

#define ADD_LIT(c, s) add((c), (s), sizeof(s) - 1)

static size_t fmt_ll(char *buf, long long v)
{
    char tmp[24];
    size_t n = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    size_t k = 0;
    if (v < 0)
        buf[k++] = '-';
    while (n > 0)
        buf[k++] = tmp[--n];
    return k;
}

/* ":v\r\n", "*v\r\n", "$v\r\n" */
static void add_num(struct conn *c, char type, long long v)
{
    char *p = room(c, 24);
    p[0] = type;
    size_t n = 1 + fmt_ll(p + 1, v);
    p[n++] = '\r';
    p[n++] = '\n';
    c->out_len += n;
}

static inline void add_int(struct conn *c, long long v) { add_num(c, ':', v); }
static inline void add_array(struct conn *c, long long n) { add_num(c, '*', n); }
static inline void add_null(struct conn *c) { ADD_LIT(c, "$-1\r\n"); }
static inline void add_ok(struct conn *c) { ADD_LIT(c, "+OK\r\n"); }

static void add_bulk(struct conn *c, const void *p, size_t n)
{
    char *o = room(c, n + 32);
    o[0] = '$';
    size_t k = 1 + fmt_ll(o + 1, (long long)n);
    o[k++] = '\r';
    o[k++] = '\n';
    memcpy(o + k, p, n);
    k += n;
    o[k++] = '\r';
    o[k++] = '\n';
    c->out_len += k;
}

static void add_bulk_str(struct conn *c, const char *s) { add_bulk(c, s, strlen(s)); }

static void add_status(struct conn *c, const char *s)
{
    add(c, "+", 1);
    add(c, s, strlen(s));
    ADD_LIT(c, "\r\n");
}

/* "-<text>\r\n"; the text is formatted, then \r and \n become spaces (as Redis). */
__attribute__((format(printf, 2, 3)))
static void add_err(struct conn *c, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof buf)
        n = sizeof buf - 1;
    for (int i = 0; i < n; i++)
        if (buf[i] == '\r' || buf[i] == '\n')
            buf[i] = ' ';
    add(c, "-", 1);
    add(c, buf, (size_t)n);
    ADD_LIT(c, "\r\n");
}

#define E_WRONGTYPE "WRONGTYPE Operation against a key holding the wrong kind of value"
#define E_NOTINT    "ERR value is not an integer or out of range"
#define E_SYNTAX    "ERR syntax error"
#define E_OVERFLOW  "ERR increment or decrement would overflow"

static void add_err_lit(struct conn *c, const char *s)
{
    add(c, "-", 1);
    add(c, s, strlen(s));
    ADD_LIT(c, "\r\n");
}

/* An array whose length is known only after its elements: note where it starts,
 * append them, then arr_end puts the header in front. */
static size_t arr_begin(struct conn *c) { return c->out_len; }

static void arr_end(struct conn *c, size_t start, long long n)
{
    char hdr[24];
    hdr[0] = '*';
    size_t k = 1 + fmt_ll(hdr + 1, n);
    hdr[k++] = '\r';
    hdr[k++] = '\n';
    room(c, k);
    memmove(c->out + start + k, c->out + start, c->out_len - start);
    memcpy(c->out + start, hdr, k);
    c->out_len += k;
}

/* ---- time -------------------------------------------------------------------------- */
static long long wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The weft_now() time `ms` milliseconds after now (clamped: ~292 years at most). */
static int64_t mono_after(int64_t now, long long ms)
{
    if (ms <= 0)
        return now;
    if (ms > (INT64_MAX - now) / 1000000)
        return INT64_MAX;
    return now + (int64_t)ms * 1000000;
}

/* Milliseconds left (rounded up), 0 when past. */
static long long ms_left(int64_t exp, int64_t now)
{
    return exp <= now ? 0 : (long long)((exp - now + 999999) / 1000000);
}

/* ---- commands: strings ------------------------------------------------------------- */
static void cmd_ping(struct conn *c, struct req *r)
{
    if (r->argc > 2) {
        add_err(c, "ERR wrong number of arguments for 'ping' command");
        return;
    }
    if (r->argc == 2)
        add_bulk(c, A(r, 1), L(r, 1));
    else
        ADD_LIT(c, "+PONG\r\n");
}

static void cmd_echo(struct conn *c, struct req *r) { add_bulk(c, A(r, 1), L(r, 1)); }

static void cmd_quit(struct conn *c, struct req *r)
{
    add_ok(c);
    c->quit = true;
}

static void cmd_select(struct conn *c, struct req *r)
{
    long long db;
    if (!resp_parse_ll(A(r, 1), L(r, 1), &db))
        add_err_lit(c, E_NOTINT);
    else if (db != 0)
        add_err_lit(c, "ERR DB index is out of range");
    else
        add_ok(c);
}

/* Reply with the key's value for GET-like commands: false (after an error reply)
 * when it holds a list. */
static bool reply_value(struct conn *c, struct shard *s, size_t i)
{
    if (i == NONE) {
        add_null(c);
        return true;
    }
    ent *e = at(s, i);
    if (e_type(e) != T_STR) {
        add_err_lit(c, E_WRONGTYPE);
        return false;
    }
    add_bulk(c, e_val(e), e_vlen(e));
    return true;
}

static void cmd_get(struct conn *c, struct req *r)
{
    uint64_t h = hash_bytes(A(r, 1), L(r, 1));
    struct shard *s = shard_of(h);
    int64_t now = 0;
    lock(s);
    reply_value(c, s, lookup(s, A(r, 1), L(r, 1), h, &now));
    unlock(s);
}

enum {
    SET_NX = 1, SET_XX = 2, SET_GET = 4, SET_KEEPTTL = 8,
    SET_EX = 16, SET_PX = 32, SET_EXAT = 64, SET_PXAT = 128,
};

/* SET key value [NX|XX] [GET] [EX s|PX ms|EXAT unix-s|PXAT unix-ms|KEEPTTL] */
static void cmd_set(struct conn *c, struct req *r)
{
    int fl = 0;
    size_t expi = 0;
    for (size_t i = 3; i < r->argc; i++) {
        bool next = i + 1 < r->argc;
        int timed = SET_EX | SET_PX | SET_EXAT | SET_PXAT;
        if (is(r, i, "nx") && !(fl & SET_XX)) {
            fl |= SET_NX;
        } else if (is(r, i, "xx") && !(fl & SET_NX)) {
            fl |= SET_XX;
        } else if (is(r, i, "get")) {
            fl |= SET_GET;
        } else if (is(r, i, "keepttl") && !(fl & timed)) {
            fl |= SET_KEEPTTL;
        } else if (next && !(fl & SET_KEEPTTL) &&
                   ((is(r, i, "ex") && !(fl & (timed & ~SET_EX))) ||
                    (is(r, i, "px") && !(fl & (timed & ~SET_PX))) ||
                    (is(r, i, "exat") && !(fl & (timed & ~SET_EXAT))) ||
                    (is(r, i, "pxat") && !(fl & (timed & ~SET_PXAT))))) {
            fl |= is(r, i, "ex") ? SET_EX : is(r, i, "px") ? SET_PX
                : is(r, i, "exat") ? SET_EXAT : SET_PXAT;
            expi = ++i;
        } else {
            add_err_lit(c, E_SYNTAX);
            return;
        }
    }
    int64_t now = 0, exp = 0;
    bool expired_already = false;
    if (expi != 0) {
        long long ms;
        if (!resp_parse_ll(A(r, expi), L(r, expi), &ms)) {
            add_err_lit(c, E_NOTINT);
            return;
        }
        bool secs = fl & (SET_EX | SET_EXAT);
        long long base = fl & (SET_EX | SET_PX) ? wall_ms() : 0;
        if (ms <= 0 || (secs && ms > LLONG_MAX / 1000)) {
            add_err(c, "ERR invalid expire time in 'set' command");
            return;
        }
        if (secs)
            ms *= 1000;
        if (ms > LLONG_MAX - base) {
            add_err(c, "ERR invalid expire time in 'set' command");
            return;
        }
        ms += base;                     /* a unix time in milliseconds */
        now = weft_now();
        long long left = ms - wall_ms();
        expired_already = left <= 0;
        exp = mono_after(now, left);
    }
    const char *key = A(r, 1);
    size_t klen = L(r, 1);
    uint64_t h = hash_bytes(key, klen);
    struct shard *s = shard_of(h);
    lock(s);
    size_t i = lookup(s, key, klen, h, &now);
    if ((fl & SET_GET) && !reply_value(c, s, i)) {
        unlock(s);
        return;
    }
    if (((fl & SET_NX) && i != NONE) || ((fl & SET_XX) && i == NONE)) {
        unlock(s);
        if (!(fl & SET_GET))
            add_null(c);
        return;
    }
    if (expired_already) {
        if (i != NONE)
            delete_at(s, i);
    } else {
        set_string(s, i, key, klen, h, A(r, 2), L(r, 2),
                   fl & SET_KEEPTTL ? TTL_KEEP : expi ? TTL_SET : TTL_CLEAR, exp);
    }
    maybe_shrink(s);
    unlock(s);
    if (!(fl & SET_GET))
        add_ok(c);
}

static void cmd_getset(struct conn *c, struct req *r)
{
    const char *key = A(r, 1);
    size_t klen = L(r, 1);
    uint64_t h = hash_bytes(key, klen);
    struct shard *s = shard_of(h);
    int64_t now = 0;
    lock(s);
    size_t i = lookup(s, key, klen, h, &now);
    if (reply_value(c, s, i))
        set_string(s, i, key, klen, h, A(r, 2), L(r, 2), TTL_CLEAR, 0);
    unlock(s);
}

/* Lock the shards of keys argv[first], argv[first + step], ...: their hashes into hs. */
static void lock_keys(struct req *r, size_t first, size_t step, uint64_t *hs, struct lockset *ls)
{
    memset(ls, 0, sizeof *ls);
    for (size_t i = first, k = 0; i < r->argc; i += step, k++) {
        hs[k] = hash_bytes(A(r, i), L(r, i));
        size_t sh = (size_t)(shard_of(hs[k]) - shards);
        ls->bits[sh / 64] |= 1ULL << (sh % 64);
    }
    lock_all(ls);
}

/* Room for n hashes: on the stack below 64, else allocated (free with hashes_done). */
static uint64_t *hashes(uint64_t *small, size_t n)
{
    return n <= 64 ? small : xmalloc(n * sizeof(uint64_t));
}

static void hashes_done(uint64_t *small, uint64_t *hs)
{
    if (hs != small)
        mem_free(hs);
}

static void del_or_exists(struct conn *c, struct req *r, bool del)
{
    uint64_t small[64], *hs = hashes(small, r->argc - 1);
    struct lockset ls;
    lock_keys(r, 1, 1, hs, &ls);
    long long n = 0;
    int64_t now = 0;
    for (size_t i = 1; i < r->argc; i++) {
        struct shard *s = shard_of(hs[i - 1]);
        size_t k = lookup(s, A(r, i), L(r, i), hs[i - 1], &now);
        if (k == NONE)
            continue;
        n++;
        if (del)
            delete_at(s, k);
    }
    for (size_t i = 1; i < r->argc; i++)
        maybe_shrink(shard_of(hs[i - 1]));
    unlock_all(&ls);
    hashes_done(small, hs);
    add_int(c, n);
}

static void cmd_del(struct conn *c, struct req *r) { del_or_exists(c, r, true); }
static void cmd_exists(struct conn *c, struct req *r) { del_or_exists(c, r, false); }

static void cmd_type(struct conn *c, struct req *r)
{
    uint64_t h = hash_bytes(A(r, 1), L(r, 1));
    struct shard *s = shard_of(h);
    int64_t now = 0;
    lock(s);
    size_t i = lookup(s, A(r, 1), L(r, 1), h, &now);
    const char *t = i == NONE ? "none" : e_type(at(s, i)) == T_LIST ? "list" : "string";
    unlock(s);
    add_status(c, t);
}

static void incr_by(struct conn *c, struct req *r, long long by)
{
    const char *key = A(r, 1);
    size_t klen = L(r, 1);
    uint64_t h = hash_bytes(key, klen);
    struct shard *s = shard_of(h);
    int64_t now = 0;
    lock(s);
    size_t i = lookup(s, key, klen, h, &now);
    long long v = 0;
    if (i != NONE) {
        ent *e = at(s, i);
        if (e_type(e) != T_STR) {
            unlock(s);
            add_err_lit(c, E_WRONGTYPE);
            return;
        }
        if (!resp_parse_ll((const char *)e_val(e), e_vlen(e), &v)) {
            unlock(s);
            add_err_lit(c, E_NOTINT);
            return;
        }
    }
    if ((by < 0 && v < 0 && by < LLONG_MIN - v) || (by > 0 && v > 0 && by > LLONG_MAX - v)) {
        unlock(s);
        add_err_lit(c, E_OVERFLOW);
        return;
    }
    v += by;
    char buf[24];
    size_t n = fmt_ll(buf, v);
    set_string(s, i, key, klen, h, buf, n, TTL_KEEP, 0);
    unlock(s);
    add_int(c, v);
}

static void cmd_incr(struct conn *c, struct req *r) { incr_by(c, r, 1); }
static void cmd_decr(struct conn *c, struct req *r) { incr_by(c, r, -1); }

static void cmd_incrby(struct conn *c, struct req *r)
{
    long long by;
    if (!resp_parse_ll(A(r, 2), L(r, 2), &by))
        add_err_lit(c, E_NOTINT);
    else
        incr_by(c, r, by);
}

static void cmd_decrby(struct conn *c, struct req *r)
{
    long long by;
    if (!resp_parse_ll(A(r, 2), L(r, 2), &by))
        add_err_lit(c, E_NOTINT);
    else if (by == LLONG_MIN)
        add_err_lit(c, "ERR decrement would overflow");
    else
        incr_by(c, r, -by);
}

static void cmd_append(struct conn *c, struct req *r)
{
    const char *key = A(r, 1);
    size_t klen = L(r, 1);
    uint64_t h = hash_bytes(key, klen);
    struct shard *s = shard_of(h);
    int64_t now = 0;
    lock(s);
    size_t i = lookup(s, key, klen, h, &now);
    if (i == NONE) {
        insert(s, e_new(T_STR, false, 0, key, klen, A(r, 2), L(r, 2)), h);
        unlock(s);
        add_int(c, (long long)L(r, 2));
        return;
    }
    ent *e = at(s, i);
    if (e_type(e) != T_STR) {
        unlock(s);
        add_err_lit(c, E_WRONGTYPE);
        return;
    }
    size_t len = (size_t)e_vlen(e) + L(r, 2);
    if ((long long)len > MAX_STRING) {
        unlock(s);
        add_err_lit(c, "ERR string exceeds maximum allowed size (proto-max-bulk-len)");
        return;
    }
    size_t need = e_size(e_hasexp(e), klen, len);
    if (mem_usable(e) < need) {
        /* grow with headroom (half again, at most 1 MiB more): appends in a loop */
        size_t extra = need / 2 < (1u << 20) ? need / 2 : (1u << 20);
        ent *n = xmalloc(need + extra);
        memcpy(n, e, e_size(e_hasexp(e), klen, e_vlen(e)));
        swap_at(s, i, n);
        mem_free(e);
        e = n;
    }
    memcpy(e_val(e) + e_vlen(e), A(r, 2), L(r, 2));
    uint32_t v = (uint32_t)len;
    memcpy(e + 5, &v, 4);
    unlock(s);
    add_int(c, (long long)len);
}

static void cmd_strlen(struct conn *c, struct req *r)
{
    uint64_t h = hash_bytes(A(r, 1), L(r, 1));
    struct shard *s = shard_of(h);
    int64_t now = 0;
    lock(s);
    size_t i = lookup(s, A(r, 1), L(r, 1), h, &now);
    if (i != NONE && e_type(at(s, i)) != T_STR) {
        unlock(s);
        add_err_lit(c, E_WRONGTYPE);
        return;
    }
    long long n = i == NONE ? 0 : e_vlen(at(s, i));
    unlock(s);
    add_int(c, n);
}

static void cmd_mget(struct conn *c, struct req *r)
{
    uint64_t small[64], *hs = hashes(small, r->argc - 1);
    struct lockset ls;
    lock_keys(r, 1, 1, hs, &ls);
    int64_t now = 0;
    add_array(c, (long long)r->argc - 1);
    for (size_t i = 1; i < r->argc; i++) {
        struct shard *s = shard_of(hs[i - 1]);
        size_t k = lookup(s, A(r, i), L(r, i), hs[i - 1], &now);
        if (k == NONE || e_type(at(s, k)) != T_STR)
            add_null(c);
        else
            add_bulk(c, e_val(at(s, k)), e_vlen(at(s, k)));
    }
    unlock_all(&ls);
    hashes_done(small, hs);
}

static void cmd_mset(struct conn *c, struct req *r)
{
    if (r->argc % 2 == 0) {
        add_err(c, "ERR wrong number of arguments for 'mset' command");
        return;
    }
    size_t n = (r->argc - 1) / 2;
    uint64_t small[64], *hs = hashes(small, n);
    struct lockset ls;
    lock_keys(r, 1, 2, hs, &ls);
    int64_t now = 0;
    for (size_t k = 0; k < n; k++) {
        size_t ki = 1 + 2 * k;
        struct shard *s = shard_of(hs[k]);
        size_t i = lookup(s, A(r, ki), L(r, ki), hs[k], &now);
        set_string(s, i, A(r, ki), L(r, ki), hs[k], A(r, ki + 1), L(r, ki + 1), TTL_CLEAR, 0);
    }
    unlock_all(&ls);
    hashes_done(small, hs);
    add_ok(c);
}

/* ---- commands: expiry ---------------------------------------------------------------- */
enum { EXP_NX = 1, EXP_XX = 2, EXP_GT = 4, EXP_LT = 8 };

static void expire_generic(struct conn *c, struct req *r, bool secs, const char *name)
{
    int fl = 0;
    for (size_t i = 3; i < r->argc; i++) {
        if (is(r, i, "nx"))
            fl |= EXP_NX;
        else if (is(r, i, "xx"))
            fl |= EXP_XX;
        else if (is(r, i, "gt"))
            fl |= EXP_GT;
        else if (is(r, i, "lt"))
            fl |= EXP_LT;
        else {
            add_err(c, "ERR Unsupported option %.*s", (int)L(r, i), A(r, i));
            return;
        }
    }
    if ((fl & EXP_NX) && (fl & (EXP_XX | EXP_GT | EXP_LT))) {
        add_err_lit(c, "ERR NX and XX, GT or LT options at the same time are not compatible");
        return;
    }
    if ((fl & EXP_GT) && (fl & EXP_LT)) {
        add_err_lit(c, "ERR GT and LT options at the same time are not compatible");
        return;
    }
    long long when;
    if (!resp_parse_ll(A(r, 2), L(r, 2), &when)) {
        add_err_lit(c, E_NOTINT);
        return;
    }
    long long base = wall_ms();
    if (secs) {
        if (when > LLONG_MAX / 1000 || when < LLONG_MIN / 1000) {
            add_err(c, "ERR invalid expire time in '%s' command", name);
            return;
        }
        when *= 1000;
    }
    if (when > LLONG_MAX - base) {
        add_err(c, "ERR invalid expire time in '%s' command", name);
        return;
    }
    /* when: milliseconds from now (Redis adds the base, then compares with it) */
    const char *key = A(r, 1);
    size_t klen = L(r, 1);
    uint64_t h = hash_bytes(key, klen);
    struct shard *s = shard_of(h);
    int64_t now = weft_now();
    int64_t exp = mono_after(now, when);
    lock(s);
    size_t i = lookup(s, key, klen, h, &now);
    if (i == NONE) {
        unlock(s);
        add_int(c, 0);
        return;
    }
    ent *e = at(s, i);
    bool has = e_hasexp(e);
    int64_t cur = has ? e_exp(e) : 0;
    if (((fl & EXP_NX) && has) || ((fl & EXP_XX) && !has) ||
        ((fl & EXP_GT) && (!has || exp <= cur)) || ((fl & EXP_LT) && has && exp >= cur)) {
        unlock(s);
        add_int(c, 0);
        return;
    }
    if (when <= 0) {
        delete_at(s, i);
        maybe_shrink(s);
    } else {
        set_expiry_at(s, i, true, exp);
    }
    unlock(s);
    add_int(c, 1);
}

static void cmd_expire(struct conn *c, struct req *r) { expire_generic(c, r, true, "expire"); }
static void cmd_pexpire(struct conn *c, struct req *r) { expire_generic(c, r, false, "pexpire"); }

static void cmd_persist(struct conn *c, struct req *r)
{
    uint64_t h = hash_bytes(A(r, 1), L(r, 1));
    struct shard *s = shard_of(h);
    int64_t now = 0;
    lock(s);
    size_t i = lookup(s, A(r, 1), L(r, 1), h, &now);
    bool done = i != NONE && e_hasexp(at(s, i));
    if (done)
        set_expiry_at(s, i, false, 0);
    unlock(s);
    add_int(c, done);
}

static void ttl_generic(struct conn *c, struct req *r, bool secs)
{
    uint64_t h = hash_bytes(A(r, 1), L(r, 1));
    struct shard *s = shard_of(h);
    int64_t now = weft_now();
    lock(s);
    size_t i = lookup(s, A(r, 1), L(r, 1), h, &now);
    long long v = i == NONE ? -2 : !e_hasexp(at(s, i)) ? -1 : ms_left(e_exp(at(s, i)), now);
    unlock(s);
    add_int(c, v >= 0 && secs ? (v + 500) / 1000 : v);
}

static void cmd_ttl(struct conn *c, struct req *r) { ttl_generic(c, r, true); }
static void cmd_pttl(struct conn *c, struct req *r) { ttl_generic(c, r, false); }

/* ---- commands: the keyspace ------------------------------------------------------------ */
static void cmd_dbsize(struct conn *c, struct req *r)
{
    long long n = 0;
    for (int i = 0; i < NSHARDS; i++) {
        lock(&shards[i]);
        n += (long long)shards[i].count;
        unlock(&shards[i]);
    }
    add_int(c, n);
}

/* Empty every shard; the caller holds every shard's lock (or no one else runs). */
static void drop_all(void)
{
    for (int i = 0; i < NSHARDS; i++) {
        struct shard *s = &shards[i];
        if (s->slots != NULL)
            for (size_t k = 0; k <= s->mask; k++)
                if (s->slots[k] != 0)
                    e_free(slot_ent(s->slots[k]));
        mem_free(s->slots);
        s->slots = NULL;
        s->mask = s->count = s->nexp = s->sweep = 0;
    }
}

static void cmd_flushall(struct conn *c, struct req *r)
{
    if (r->argc > 2 || (r->argc == 2 && !is(r, 1, "async") && !is(r, 1, "sync"))) {
        add_err_lit(c, E_SYNTAX);
        return;
    }
    for (int i = 0; i < NSHARDS; i++)
        lock(&shards[i]);
    drop_all();
    for (int i = NSHARDS - 1; i >= 0; i--)
        unlock(&shards[i]);
    add_ok(c);
}

static void cmd_keys(struct conn *c, struct req *r)
{
    const char *pat = A(r, 1);
    size_t plen = L(r, 1);
    bool all = plen == 1 && pat[0] == '*';
    size_t start = arr_begin(c);
    long long n = 0;
    int64_t now = weft_now();
    for (int k = 0; k < NSHARDS; k++) {
        struct shard *s = &shards[k];
        lock(s);
        for (size_t i = 0; s->slots != NULL && i <= s->mask; i++) {
            if (s->slots[i] == 0)
                continue;
            ent *e = at(s, i);
            if (e_hasexp(e) && now > e_exp(e))
                continue;
            if (all || glob_match(pat, plen, (const char *)e_key(e), e_klen(e))) {
                add_bulk(c, e_key(e), e_klen(e));
                n++;
            }
        }
        unlock(s);
    }
    arr_end(c, start, n);
}

static uint64_t rev64(uint64_t v)
{
    v = ((v >> 1) & 0x5555555555555555ULL) | ((v & 0x5555555555555555ULL) << 1);
    v = ((v >> 2) & 0x3333333333333333ULL) | ((v & 0x3333333333333333ULL) << 2);
    v = ((v >> 4) & 0x0f0f0f0f0f0f0f0fULL) | ((v & 0x0f0f0f0f0f0f0f0fULL) << 4);
    return __builtin_bswap64(v);
}

/* SCAN cursor [MATCH pattern] [COUNT n] [TYPE string|list] */
static void cmd_scan(struct conn *c, struct req *r)
{
    uint64_t cursor = 0;
    const char *cp = A(r, 1);
    size_t cl = L(r, 1);
    bool ok = cl > 0 && cl <= 20;
    for (size_t i = 0; ok && i < cl; i++) {
        unsigned d = (unsigned)(cp[i] - '0');
        ok = d <= 9 && cursor <= (UINT64_MAX - d) / 10;
        cursor = cursor * 10 + d;
    }
    if (!ok) {
        add_err_lit(c, "ERR invalid cursor");
        return;
    }
    const char *pat = NULL, *type = NULL;
    size_t plen = 0, tlen = 0;
    long long count = 10;
    for (size_t i = 2; i < r->argc; i += 2) {
        if (i + 1 >= r->argc) {
            add_err_lit(c, E_SYNTAX);
            return;
        }
        if (is(r, i, "count")) {
            if (!resp_parse_ll(A(r, i + 1), L(r, i + 1), &count)) {
                add_err_lit(c, E_NOTINT);
                return;
            }
            if (count < 1) {
                add_err_lit(c, E_SYNTAX);
                return;
            }
        } else if (is(r, i, "match")) {
            pat = A(r, i + 1);
            plen = L(r, i + 1);
            if (plen == 1 && pat[0] == '*')
                pat = NULL;
        } else if (is(r, i, "type")) {
            type = A(r, i + 1);
            tlen = L(r, i + 1);
        } else {
            add_err_lit(c, E_SYNTAX);
            return;
        }
    }
    size_t sh = (size_t)(cursor % NSHARDS);
    uint64_t v = cursor / NSHARDS;
    long long budget = count > LLONG_MAX / 10 ? LLONG_MAX : count * 10;
    long long seen = 0, n = 0;
    int64_t now = weft_now();
    ADD_LIT(c, "*2\r\n");
    size_t cur_at = c->out_len;         /* the cursor goes here, once known */
    size_t start = arr_begin(c);
    while (sh < NSHARDS && seen < count && budget > 0) {
        struct shard *s = &shards[sh];
        lock(s);
        if (s->slots == NULL) {
            v = 0;
        } else {
            size_t mask = s->mask;
            do {
                size_t home = v & mask;
                for (size_t i = home; s->slots[i] != 0; i = (i + 1) & mask) {
                    ent *e = at(s, i);
                    if ((ent_hash(e) & mask) != home)
                        continue;
                    seen++;
                    if (e_hasexp(e) && now > e_exp(e))
                        continue;
                    if (pat && !glob_match(pat, plen, (const char *)e_key(e), e_klen(e)))
                        continue;
                    if (type) {
                        const char *t = e_type(e) == T_LIST ? "list" : "string";
                        if (tlen != strlen(t) || strncasecmp(type, t, tlen) != 0)
                            continue;
                    }
                    add_bulk(c, e_key(e), e_klen(e));
                    n++;
                }
                v |= ~(uint64_t)mask;
                v = rev64(rev64(v) + 1);
                budget--;
            } while (v != 0 && seen < count && budget > 0);
        }
        unlock(s);
        if (v == 0)
            sh++;
    }
    arr_end(c, start, n);
    uint64_t next = sh >= NSHARDS ? 0 : v * NSHARDS + sh;
    char buf[24];
    int k = snprintf(buf, sizeof buf, "%llu", (unsigned long long)next);
    char hdr[32];
    int hk = snprintf(hdr, sizeof hdr, "$%d\r\n%s\r\n", k, buf);
    room(c, (size_t)hk);
    memmove(c->out + cur_at + hk, c->out + cur_at, c->out_len - cur_at);
    memcpy(c->out + cur_at, hdr, (size_t)hk);
    c->out_len += (size_t)hk;
}

/* ---- commands: lists ------------------------------------------------------------------ */
static void push_generic(struct conn *c, struct req *r, bool left)
{
    const char *key = A(r, 1);
    size_t klen = L(r, 1);
    uint64_t h = hash_bytes(key, klen);
    struct shard *s = shard_of(h);
    int64_t now = 0;
    lock(s);
    size_t i = lookup(s, key, klen, h, &now);
    struct list *l;
    if (i == NONE) {
        l = list_new();
        insert(s, e_new(T_LIST, false, 0, key, klen, &l, sizeof l), h);
    } else if (e_type(at(s, i)) != T_LIST) {
        unlock(s);
        add_err_lit(c, E_WRONGTYPE);
        return;
    } else {
        l = e_list(at(s, i));
    }
    for (size_t k = 2; k < r->argc; k++)
        list_push(l, left, A(r, k), L(r, k));
    long long len = (long long)l->len;
    unlock(s);
    add_int(c, len);
}

static void cmd_lpush(struct conn *c, struct req *r) { push_generic(c, r, true); }
static void cmd_rpush(struct conn *c, struct req *r) { push_generic(c, r, false); }

static void pop_generic(struct conn *c, struct req *r, bool left, const char *name)
{
    if (r->argc > 3) {
        add_err(c, "ERR wrong number of arguments for '%s' command", name);
        return;
    }
    bool hascount = r->argc == 3;
    long long count = 1;
    if (hascount && (!resp_parse_ll(A(r, 2), L(r, 2), &count) || count < 0)) {
        add_err_lit(c, "ERR value is out of range, must be positive");
        return;
    }
    const char *key = A(r, 1);
    size_t klen = L(r, 1);
    uint64_t h = hash_bytes(key, klen);
    struct shard *s = shard_of(h);
    int64_t now = 0;
    lock(s);
    size_t i = lookup(s, key, klen, h, &now);
    if (i == NONE) {
        unlock(s);
        if (hascount)
            ADD_LIT(c, "*-1\r\n");
        else
            add_null(c);
        return;
    }
    if (e_type(at(s, i)) != T_LIST) {
        unlock(s);
        add_err_lit(c, E_WRONGTYPE);
        return;
    }
    struct list *l = e_list(at(s, i));
    if (hascount)
        add_array(c, count < (long long)l->len ? count : (long long)l->len);
    for (long long k = 0; k < count && l->len > 0; k++) {
        struct item *x = list_pop(l, left);
        add_bulk(c, x->data, x->len);
        mem_free(x);
    }
    if (l->len == 0) {
        delete_at(s, i);
        maybe_shrink(s);
    }
    unlock(s);
}

static void cmd_lpop(struct conn *c, struct req *r) { pop_generic(c, r, true, "lpop"); }
static void cmd_rpop(struct conn *c, struct req *r) { pop_generic(c, r, false, "rpop"); }

static void cmd_lrange(struct conn *c, struct req *r)
{
    long long start, stop;
    if (!resp_parse_ll(A(r, 2), L(r, 2), &start) || !resp_parse_ll(A(r, 3), L(r, 3), &stop)) {
        add_err_lit(c, E_NOTINT);
        return;
    }
    uint64_t h = hash_bytes(A(r, 1), L(r, 1));
    struct shard *s = shard_of(h);
    int64_t now = 0;
    lock(s);
    size_t i = lookup(s, A(r, 1), L(r, 1), h, &now);
    if (i == NONE) {
        unlock(s);
        ADD_LIT(c, "*0\r\n");
        return;
    }
    if (e_type(at(s, i)) != T_LIST) {
        unlock(s);
        add_err_lit(c, E_WRONGTYPE);
        return;
    }
    struct list *l = e_list(at(s, i));
    long long len = (long long)l->len;
    if (start < 0)
        start = len + start;
    if (stop < 0)
        stop = len + stop;
    if (start < 0)
        start = 0;
    if (start > stop || start >= len) {
        unlock(s);
        ADD_LIT(c, "*0\r\n");
        return;
    }
    if (stop >= len)
        stop = len - 1;
    add_array(c, stop - start + 1);
    for (long long k = start; k <= stop; k++) {
        struct item *x = list_at(l, (size_t)k);
        add_bulk(c, x->data, x->len);
    }
    unlock(s);
}

static void cmd_llen(struct conn *c, struct req *r)
{
    uint64_t h = hash_bytes(A(r, 1), L(r, 1));
    struct shard *s = shard_of(h);
    int64_t now = 0;
    lock(s);
    size_t i = lookup(s, A(r, 1), L(r, 1), h, &now);
    if (i != NONE && e_type(at(s, i)) != T_LIST) {
        unlock(s);
        add_err_lit(c, E_WRONGTYPE);
        return;
    }
    long long n = i == NONE ? 0 : (long long)e_list(at(s, i))->len;
    unlock(s);
    add_int(c, n);
}

/* ---- commands: the server and its clients ------------------------------------------------ */
static void cmd_config(struct conn *c, struct req *r);
static void cmd_command(struct conn *c, struct req *r);
static void cmd_info(struct conn *c, struct req *r);
static void cmd_client(struct conn *c, struct req *r);

struct command {
    const char *name;                   /* lower case */
    int arity;                          /* Redis's: n exactly, -n at least n */
    void (*fn)(struct conn *c, struct req *r);
    const char *flags;                  /* COMMAND's, space-separated */
    int first, last, step;              /* key positions */
    const char *acl;                    /* COMMAND's categories, space-separated */
    const char *group, *since, *summary;
};

static const struct command commands[] = {
    { "append", 3, cmd_append, "write denyoom fast", 1, 1, 1, "@write @string @fast",
      "string", "2.0.0", "Appends a string to the value of a key. Creates the key if it doesn't exist." },
    { "client", -2, cmd_client, "", 0, 0, 0, "@slow", "connection", "2.4.0",
      "A container for client connection commands." },
    { "command", -1, cmd_command, "loading stale", 0, 0, 0, "@slow @connection", "server",
      "2.8.13", "Returns detailed information about all commands." },
    { "config", -2, cmd_config, "", 0, 0, 0, "@slow", "server", "2.0.0",
      "A container for server configuration commands." },
    { "dbsize", 1, cmd_dbsize, "readonly fast", 0, 0, 0, "@keyspace @read @fast", "server",
      "1.0.0", "Returns the number of keys in the database." },
    { "decr", 2, cmd_decr, "write denyoom fast", 1, 1, 1, "@write @string @fast", "string",
      "1.0.0", "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist." },
    { "decrby", 3, cmd_decrby, "write denyoom fast", 1, 1, 1, "@write @string @fast", "string",
      "1.0.0", "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist." },
    { "del", -2, cmd_del, "write", 1, -1, 1, "@keyspace @write @slow", "generic", "1.0.0",
      "Deletes one or more keys." },
    { "echo", 2, cmd_echo, "fast", 0, 0, 0, "@fast @connection", "connection", "1.0.0",
      "Returns the given string." },
    { "exists", -2, cmd_exists, "readonly fast", 1, -1, 1, "@keyspace @read @fast", "generic",
      "1.0.0", "Determines whether one or more keys exist." },
    { "expire", -3, cmd_expire, "write fast", 1, 1, 1, "@keyspace @write @fast", "generic",
      "1.0.0", "Sets the expiration time of a key in seconds." },
    { "flushall", -1, cmd_flushall, "write", 0, 0, 0, "@keyspace @write @slow @dangerous",
      "server", "1.0.0", "Removes all keys from all databases." },
    { "flushdb", -1, cmd_flushall, "write", 0, 0, 0, "@keyspace @write @slow @dangerous",
      "server", "1.0.0", "Remove all keys from the current database." },
    { "get", 2, cmd_get, "readonly fast", 1, 1, 1, "@read @string @fast", "string", "1.0.0",
      "Returns the string value of a key." },
    { "getset", 3, cmd_getset, "write denyoom fast", 1, 1, 1, "@write @string @fast", "string",
      "1.0.0", "Returns the previous string value of a key after setting it to a new value." },
    { "incr", 2, cmd_incr, "write denyoom fast", 1, 1, 1, "@write @string @fast", "string",
      "1.0.0", "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist." },
    { "incrby", 3, cmd_incrby, "write denyoom fast", 1, 1, 1, "@write @string @fast", "string",
      "1.0.0", "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist." },
    { "info", -1, cmd_info, "loading stale", 0, 0, 0, "@slow @dangerous", "server", "1.0.0",
      "Returns information and statistics about the server." },
    { "keys", 2, cmd_keys, "readonly", 0, 0, 0, "@keyspace @read @slow @dangerous", "generic",
      "1.0.0", "Returns all key names that match a pattern." },
    { "llen", 2, cmd_llen, "readonly fast", 1, 1, 1, "@read @list @fast", "list", "1.0.0",
      "Returns the length of a list." },
    { "lpop", -2, cmd_lpop, "write fast", 1, 1, 1, "@write @list @fast", "list", "1.0.0",
      "Returns the first elements in a list after removing it. Deletes the list if the last element was popped." },
    { "lpush", -3, cmd_lpush, "write denyoom fast", 1, 1, 1, "@write @list @fast", "list",
      "1.0.0", "Prepends one or more elements to a list. Creates the key if it doesn't exist." },
    { "lrange", 4, cmd_lrange, "readonly", 1, 1, 1, "@read @list @slow", "list", "1.0.0",
      "Returns a range of elements from a list." },
    { "mget", -2, cmd_mget, "readonly fast", 1, -1, 1, "@read @string @fast", "string",
      "1.0.0", "Atomically returns the string values of one or more keys." },
    { "mset", -3, cmd_mset, "write denyoom", 1, -1, 2, "@write @string @slow", "string",
      "1.0.1", "Atomically creates or modifies the string values of one or more keys." },
    { "persist", 2, cmd_persist, "write fast", 1, 1, 1, "@keyspace @write @fast", "generic",
      "2.2.0", "Removes the expiration time of a key." },
    { "pexpire", -3, cmd_pexpire, "write fast", 1, 1, 1, "@keyspace @write @fast", "generic",
      "2.6.0", "Sets the expiration time of a key in milliseconds." },
    { "ping", -1, cmd_ping, "fast", 0, 0, 0, "@fast @connection", "connection", "1.0.0",
      "Returns the server's liveliness response." },
    { "pttl", 2, cmd_pttl, "readonly fast", 1, 1, 1, "@keyspace @read @fast", "generic",
      "2.6.0", "Returns the expiration time in milliseconds of a key." },
    { "quit", -1, cmd_quit, "fast", 0, 0, 0, "@fast @connection", "connection", "1.0.0",
      "Closes the connection." },
    { "rpop", -2, cmd_rpop, "write fast", 1, 1, 1, "@write @list @fast", "list", "1.0.0",
      "Returns and removes the last elements of a list. Deletes the list if the last element was popped." },
    { "rpush", -3, cmd_rpush, "write denyoom fast", 1, 1, 1, "@write @list @fast", "list",
      "1.0.0", "Appends one or more elements to a list. Creates the key if it doesn't exist." },
    { "scan", -2, cmd_scan, "readonly", 0, 0, 0, "@keyspace @read @slow", "generic", "2.8.0",
      "Iterates over the key names in the database." },
    { "select", 2, cmd_select, "loading stale fast", 0, 0, 0, "@keyspace @fast", "connection",
      "1.0.0", "Changes the selected database." },
    { "set", -3, cmd_set, "write denyoom", 1, 1, 1, "@write @string @slow", "string", "1.0.0",
      "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist." },
    { "strlen", 2, cmd_strlen, "readonly fast", 1, 1, 1, "@read @string @fast", "string",
      "2.2.0", "Returns the length of a string value." },
    { "ttl", 2, cmd_ttl, "readonly fast", 1, 1, 1, "@keyspace @read @fast", "generic", "1.0.0",
      "Returns the expiration time in seconds of a key." },
    { "type", 2, cmd_type, "readonly fast", 1, 1, 1, "@keyspace @read @fast", "generic",
      "1.0.0", "Determines the type of value stored at a key." },
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

/* Lookup by name: an open-addressing table of indices + 1, built at start. Names are
 * lower-case letters: an input byte matches one when (byte | 0x20) equals it, which
 * is exactly a case-insensitive match for letters (and the hash folds the same way). */
#define CMD_TABLE 128
static uint8_t cmd_table[CMD_TABLE];
static uint8_t cmd_len[NCOMMANDS];

static uint32_t name_hash(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((unsigned char)p[i] | 0x20u)) * 16777619u;
    return h;
}

static void cmd_table_init(void)
{
    for (size_t i = 0; i < NCOMMANDS; i++) {
        cmd_len[i] = (uint8_t)strlen(commands[i].name);
        uint32_t k = name_hash(commands[i].name, cmd_len[i]) % CMD_TABLE;
        while (cmd_table[k] != 0)
            k = (k + 1) % CMD_TABLE;
        cmd_table[k] = (uint8_t)(i + 1);
    }
}

static const struct command *cmd_find(const char *p, size_t n)
{
    if (n == 0 || n > 16)
        return NULL;
    for (uint32_t k = name_hash(p, n) % CMD_TABLE; cmd_table[k] != 0; k = (k + 1) % CMD_TABLE) {
        size_t ci = cmd_table[k] - 1u;
        if (cmd_len[ci] != n)
            continue;
        const char *name = commands[ci].name;
        size_t i = 0;
        while (i < n && ((unsigned char)p[i] | 0x20u) == (unsigned char)name[i])
            i++;
        if (i == n)
            return &commands[ci];
    }
    return NULL;
}

/* "a b c" as an array of status replies */
static void add_words(struct conn *c, const char *words, char prefix)
{
    size_t start = arr_begin(c);
    long long n = 0;
    for (const char *p = words; *p;) {
        while (*p == ' ')
            p++;
        const char *q = p;
        while (*q && *q != ' ')
            q++;
        if (q > p) {
            add(c, &prefix, 1);
            add(c, p, (size_t)(q - p));
            ADD_LIT(c, "\r\n");
            n++;
        }
        p = q;
    }
    arr_end(c, start, n);
}

static void add_help(struct conn *c, const char *const *lines)
{
    size_t n = 0;
    while (lines[n] != NULL)
        n++;
    add_array(c, (long long)n);
    for (size_t i = 0; i < n; i++)
        add_status(c, lines[i]);
}

static void command_info(struct conn *c, const struct command *cmd)
{
    add_array(c, 10);
    add_bulk_str(c, cmd->name);
    add_int(c, cmd->arity);
    add_words(c, cmd->flags, '+');
    add_int(c, cmd->first);
    add_int(c, cmd->last);
    add_int(c, cmd->step);
    add_words(c, cmd->acl, '+');
    ADD_LIT(c, "*0\r\n*0\r\n*0\r\n");   /* tips, key specs, subcommands */
}

static void command_docs(struct conn *c, const struct command *cmd)
{
    add_bulk_str(c, cmd->name);
    add_array(c, 6);
    add_bulk_str(c, "summary");
    add_bulk_str(c, cmd->summary);
    add_bulk_str(c, "since");
    add_bulk_str(c, cmd->since);
    add_bulk_str(c, "group");
    add_bulk_str(c, cmd->group);
}

static void subcmd_arity(struct conn *c, const char *full)
{
    add_err(c, "ERR wrong number of arguments for '%s' command", full);
}


/* Bytes of p[0..n) before a NUL (Redis formats arguments with %s), at most max. */
static int cstr_len(const char *p, size_t n, size_t max)
{
    const char *z = memchr(p, '\0', n);
    size_t k = z != NULL ? (size_t)(z - p) : n;
    return (int)(k < max ? k : max);
}

static void unknown_subcmd(struct conn *c, struct req *r, const char *container)
{
    add_err(c, "ERR unknown subcommand '%.*s'. Try %s HELP.", cstr_len(A(r, 1), L(r, 1), 128),
            A(r, 1), container);
}

static const char *const config_params[][2] = {
    { "appendonly", "no" },
    { "databases", "1" },
    { "maxclients", "10000" },
    { "maxmemory", "0" },
    { "maxmemory-policy", "noeviction" },
    { "proto-max-bulk-len", "67108864" },
    { "save", "" },
    { "timeout", "0" },
};

static void cmd_config(struct conn *c, struct req *r)
{
    static const char *const help[] = {
        "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GET <pattern>",
        "    Return parameters matching the glob-like <pattern> and their values.",
        "SET <directive> <value>",
        "    Not supported by kv: its configuration is fixed.",
        "RESETSTAT",
        "    Reset statistics reported by the INFO command.",
        "HELP",
        "    Print this help.",
        NULL,
    };
    if (is(r, 1, "get")) {
        if (r->argc < 3) {
            subcmd_arity(c, "config|get");
            return;
        }
        size_t start = arr_begin(c);
        long long n = 0;
        for (size_t k = 0; k < sizeof config_params / sizeof config_params[0]; k++) {
            const char *name = config_params[k][0];
            for (size_t i = 2; i < r->argc; i++) {
                /* parameter names are lower case; patterns match them ignoring case */
                char pat[128];
                size_t pl = L(r, i) < sizeof pat ? L(r, i) : sizeof pat;
                for (size_t j = 0; j < pl; j++)
                    pat[j] = (char)tolower((unsigned char)A(r, i)[j]);
                if (glob_match(pat, pl, name, strlen(name))) {
                    add_bulk_str(c, name);
                    add_bulk_str(c, config_params[k][1]);
                    n += 2;
                    break;
                }
            }
        }
        arr_end(c, start, n);
    } else if (is(r, 1, "set")) {
        if (r->argc < 4 || r->argc % 2 != 0)
            subcmd_arity(c, "config|set");
        else
            add_err(c, "ERR Unknown option or number of arguments for CONFIG SET - '%.*s'",
                    cstr_len(A(r, 2), L(r, 2), 128), A(r, 2));
    } else if (is(r, 1, "resetstat") && r->argc == 2) {
        atomic_store(&st_commands, 0);
        atomic_store(&st_expired, 0);
        atomic_store(&st_conns_total, 0);
        add_ok(c);
    } else if (is(r, 1, "help") && r->argc == 2) {
        add_help(c, help);
    } else if (is(r, 1, "resetstat") || is(r, 1, "help")) {
        subcmd_arity(c, is(r, 1, "help") ? "config|help" : "config|resetstat");
    } else {
        unknown_subcmd(c, r, "CONFIG");
    }
}

static void cmd_command(struct conn *c, struct req *r)
{
    static const char *const help[] = {
        "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "(no subcommand)",
        "    Return details about all commands.",
        "COUNT",
        "    Return the total number of commands in this server.",
        "LIST",
        "    Return a list of all commands in this server.",
        "INFO [<command-name> ...]",
        "    Return details about multiple commands.",
        "DOCS [<command-name> ...]",
        "    Return documentation details about multiple commands.",
        "HELP",
        "    Print this help.",
        NULL,
    };
    if (r->argc == 1) {
        add_array(c, (long long)NCOMMANDS);
        for (size_t i = 0; i < NCOMMANDS; i++)
            command_info(c, &commands[i]);
    } else if (is(r, 1, "count") && r->argc == 2) {
        add_int(c, (long long)NCOMMANDS);
    } else if (is(r, 1, "list")) {
        add_array(c, (long long)NCOMMANDS);
        for (size_t i = 0; i < NCOMMANDS; i++)
            add_bulk_str(c, commands[i].name);
    } else if (is(r, 1, "info")) {
        if (r->argc == 2) {
            add_array(c, (long long)NCOMMANDS);
            for (size_t i = 0; i < NCOMMANDS; i++)
                command_info(c, &commands[i]);
            return;
        }
        add_array(c, (long long)r->argc - 2);
        for (size_t i = 2; i < r->argc; i++) {
            const struct command *cmd = cmd_find(A(r, i), L(r, i));
            if (cmd == NULL)
                add_null(c);
            else
                command_info(c, cmd);
        }
    } else if (is(r, 1, "docs")) {
        size_t start = arr_begin(c);
        long long n = 0;
        for (size_t i = 0; i < NCOMMANDS; i++) {
            bool want = r->argc == 2;
            for (size_t k = 2; !want && k < r->argc; k++)
                want = L(r, k) == strlen(commands[i].name) &&
                       strncasecmp(A(r, k), commands[i].name, L(r, k)) == 0;
            if (want) {
                command_docs(c, &commands[i]);
                n += 2;
            }
        }
        arr_end(c, start, n);
    } else if (is(r, 1, "help") && r->argc == 2) {
        add_help(c, help);
    } else if (is(r, 1, "count") || is(r, 1, "help")) {
        subcmd_arity(c, is(r, 1, "count") ? "command|count" : "command|help");
    } else {
        unknown_subcmd(c, r, "COMMAND");
    }
}

static long rss_kib(void)
{
    char buf[256];
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f == NULL)
        return 0;
    if (fgets(buf, sizeof buf, f) != NULL && sscanf(buf, "%ld %ld", &pages, &rss) != 2)
        rss = 0;
    fclose(f);
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static bool want_section(struct req *r, const char *name, bool dflt)
{
    if (r->argc == 1)
        return dflt;
    for (size_t i = 1; i < r->argc; i++)
        if (is(r, i, name) || is(r, i, "all") || is(r, i, "everything") ||
            (dflt && is(r, i, "default")))
            return true;
    return false;
}

static void cmd_info(struct conn *c, struct req *r)
{
    char buf[2048];
    size_t n = 0;
#define PUT(...) \
    n += (size_t)snprintf(buf + n, n < sizeof buf ? sizeof buf - n : 0, __VA_ARGS__)
    int64_t up = (weft_now() - started_at) / WEFT_SECOND;
    if (want_section(r, "server", true))
        PUT("# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\n"
            "kv_server:weft demos/kv\r\nio_backend:%s\r\nprocs:%d\r\nprocess_id:%d\r\n"
            "uptime_in_seconds:%lld\r\nuptime_in_days:%lld\r\n\r\n",
            weft_io_backend(), weft_nprocs(), (int)getpid(), (long long)up,
            (long long)up / 86400);
    if (want_section(r, "clients", true))
        PUT("# Clients\r\nconnected_clients:%d\r\n\r\n", atomic_load(&st_conns));
    if (want_section(r, "memory", true)) {
        weft_mem_stats ms;
        weft_mem_stats_read(&ms);
        PUT("# Memory\r\nused_memory:%llu\r\nused_memory_rss:%lld\r\n\r\n",
            (unsigned long long)ms.heap_alloc, (long long)rss_kib() * 1024);
    }
    if (want_section(r, "stats", true))
        PUT("# Stats\r\ntotal_connections_received:%llu\r\ntotal_commands_processed:%llu\r\n"
            "expired_keys:%llu\r\n\r\n",
            (unsigned long long)atomic_load(&st_conns_total),
            (unsigned long long)atomic_load(&st_commands),
            (unsigned long long)atomic_load(&st_expired));
    if (want_section(r, "keyspace", true)) {
        size_t keys = 0, exps = 0;
        for (int i = 0; i < NSHARDS; i++) {
            lock(&shards[i]);
            keys += shards[i].count;
            exps += shards[i].nexp;
            unlock(&shards[i]);
        }
        PUT("# Keyspace\r\n");
        if (keys > 0)
            PUT("db0:keys=%zu,expires=%zu,avg_ttl=0\r\n", keys, exps);
    }
#undef PUT
    if (n >= sizeof buf)
        n = sizeof buf - 1;
    /* Redis ends the text without the blank line after the last section */
    while (n >= 2 && buf[n - 2] == '\r' && buf[n - 1] == '\n' && n >= 4 &&
           buf[n - 4] == '\r' && buf[n - 3] == '\n')
        n -= 2;
    add_bulk(c, buf, n);
}

static void cmd_client(struct conn *c, struct req *r)
{
    static const char *const help[] = {
        "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GETNAME",
        "    Return the name of the current connection.",
        "ID",
        "    Return the ID of the current connection.",
        "SETNAME <name>",
        "    Assign the name <name> to the current connection.",
        "SETINFO <LIB-NAME|LIB-VER> <value>",
        "    Accepted and ignored.",
        "HELP",
        "    Print this help.",
        NULL,
    };
    if (is(r, 1, "setname")) {
        if (r->argc != 3) {
            subcmd_arity(c, "client|setname");
            return;
        }
        for (size_t i = 0; i < L(r, 2); i++) {
            char ch = A(r, 2)[i];
            if (ch < '!' || ch > '~') {
                add_err_lit(c, "ERR Client names cannot contain spaces, newlines or special "
                               "characters.");
                return;
            }
        }
        mem_free(c->name);
        c->name = NULL;
        c->name_len = L(r, 2);
        if (c->name_len > 0) {
            c->name = xmalloc(c->name_len);
            memcpy(c->name, A(r, 2), c->name_len);
        }
        add_ok(c);
    } else if (is(r, 1, "getname")) {
        if (r->argc != 2)
            subcmd_arity(c, "client|getname");
        else if (c->name == NULL)
            add_null(c);
        else
            add_bulk(c, c->name, c->name_len);
    } else if (is(r, 1, "id")) {
        if (r->argc != 2)
            subcmd_arity(c, "client|id");
        else
            add_int(c, (long long)c->id);
    } else if (is(r, 1, "setinfo")) {
        if (r->argc != 4)
            subcmd_arity(c, "client|setinfo");
        else if (!is(r, 2, "lib-name") && !is(r, 2, "lib-ver"))
            add_err(c, "ERR Unrecognized option '%.*s'", cstr_len(A(r, 2), L(r, 2), 128),
                    A(r, 2));
        else
            add_ok(c);
    } else if (is(r, 1, "help") && r->argc == 2) {
        add_help(c, help);
    } else {
        unknown_subcmd(c, r, "CLIENT");
    }
}

/* ---- dispatch ------------------------------------------------------------------------ */
static void unknown_command(struct conn *c, struct req *r)
{
    char args[512];
    size_t n = 0;
    for (size_t i = 1; i < r->argc && n < 128; i++)
        n += (size_t)snprintf(args + n, sizeof args - n, "'%.*s' ",
                              cstr_len(A(r, i), L(r, i), 128 - n), A(r, i));
    add_err(c, "ERR unknown command '%.*s', with args beginning with: %s",
            cstr_len(A(r, 0), L(r, 0), 128), A(r, 0), args);
}

static void exec(struct conn *c, char *base, size_t argc)
{
    struct req r = { .base = base, .a = c->argv, .argc = argc };
    const struct command *cmd = cmd_find(A(&r, 0), L(&r, 0));
    if (cmd == NULL) {
        unknown_command(c, &r);
        return;
    }
    if ((cmd->arity > 0 && argc != (size_t)cmd->arity) ||
        (cmd->arity < 0 && argc < (size_t)-cmd->arity)) {
        add_err(c, "ERR wrong number of arguments for '%s' command", cmd->name);
        return;
    }
    cmd->fn(c, &r);
}

/* ---- connections ---------------------------------------------------------------------- */
/* Parse and run every whole request in the input buffer, replies into the output
 * buffer; keep the unfinished rest at the front. False: close the connection (QUIT,
 * a protocol error, or a failed write of a large batch's first part). */
static bool process(struct conn *c)
{
    size_t pos = 0;
    bool open = true;
    uint64_t ran = 0;
    c->need = 0;
    while (pos < c->in_len) {
        size_t argc = 0, used = 0;
        int res = resp_parse(&c->p, c->in + pos, c->in_len - pos, c->argv, c->argv_cap, &argc,
                             &used);
        if (res == RESP_DONE) {
            if (argc > 0) {
                exec(c, c->in + pos, argc);
                ran++;
            }
            pos += used;
            if (c->quit) {
                open = false;
                break;
            }
            if (c->out_len >= OUT_FLUSH) {
                if (weft_write(c->fd, c->out, c->out_len) < 0) {
                    open = false;
                    break;
                }
                c->out_len = 0;
            }
        } else if (res == RESP_ARGV) {
            c->argv = xrealloc(c->argv, argc * sizeof *c->argv);
            c->argv_cap = argc;
        } else if (res == RESP_MORE) {
            c->need = c->p.need;
            break;
        } else {
            add_err(c, "ERR %s", c->p.err);
            open = false;
            break;
        }
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
    if (ran > 0)
        atomic_fetch_add_explicit(&st_commands, ran, memory_order_relaxed);
    return open;
}

/* Buffers back to their small sizes between requests (idle connections stay small). */
static void trim(struct conn *c)
{
    if (c->in_cap > IN_MIN && c->in_len <= IN_MIN / 2 && c->need <= IN_MIN) {
        char *in = xmalloc(IN_MIN);
        memcpy(in, c->in, c->in_len);
        mem_free(c->in);
        c->in = in;
        c->in_cap = IN_MIN;
    }
    if (c->out_cap > 4 * OUT_MIN) {
        mem_free(c->out);
        c->out = xmalloc(OUT_MIN);
        c->out_cap = OUT_MIN;
    }
    if (c->argv_cap > 4096 && c->p.pos == 0) {
        mem_free(c->argv);
        c->argv = xmalloc(ARGV_MIN * sizeof *c->argv);
        c->argv_cap = ARGV_MIN;
    }
}

static void kv_conn(int fd, void *ctx)
{
    (void)ctx;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn c;
    memset(&c, 0, sizeof c);
    c.fd = fd;
    c.id = atomic_fetch_add(&st_client_id, 1) + 1;
    c.in = xmalloc(IN_MIN);
    c.in_cap = IN_MIN;
    c.out = xmalloc(OUT_MIN);
    c.out_cap = OUT_MIN;
    c.argv = xmalloc(ARGV_MIN * sizeof *c.argv);
    c.argv_cap = ARGV_MIN;
    atomic_fetch_add(&st_conns, 1);
    atomic_fetch_add(&st_conns_total, 1);
    for (;;) {
        if (c.in_len == c.in_cap || c.need > c.in_cap) {
            size_t cap = c.in_cap * 2 > c.need ? c.in_cap * 2 : c.need;
            if (cap > RESP_MAX_REQUEST)
                cap = RESP_MAX_REQUEST;
            if (cap <= c.in_len)        /* cannot happen: the parser bounds a request */
                break;
            c.in = xrealloc(c.in, cap);
            c.in_cap = cap;
        }
        ssize_t n = weft_read(fd, c.in + c.in_len, c.in_cap - c.in_len);
        if (n <= 0)
            break;
        c.in_len += (size_t)n;
        if (c.in_len < c.need)
            continue;                   /* a large request still arriving */
        bool open = process(&c);
        if (c.out_len > 0 && weft_write(fd, c.out, c.out_len) < 0)
            break;
        c.out_len = 0;
        if (!open)
            break;
        trim(&c);
    }
    atomic_fetch_sub(&st_conns, 1);
    mem_free(c.in);
    mem_free(c.out);
    mem_free(c.argv);
    mem_free(c.name);
}

/* ---- active expiry -------------------------------------------------------------------- */
static weft_wg sweeper_wg;

/* Walk on from s->sweep, SWEEP_SLOTS slots a round, deleting expired keys; another
 * round while more than a quarter of the keys with expiries met had expired. */
static void sweep(struct shard *s, int64_t now)
{
    size_t gone_total = 0;
    for (int round = 0; round < SWEEP_ROUNDS && s->nexp > 0 && s->slots != NULL; round++) {
        size_t met = 0, gone = 0;
        size_t i = s->sweep & s->mask;
        for (int k = 0; k < SWEEP_SLOTS; k++) {
            uint64_t v = s->slots[i];
            if (v != 0 && e_hasexp(slot_ent(v))) {
                met++;
                if (now > e_exp(slot_ent(v))) {
                    delete_at(s, i);    /* a later key may have shifted into i: look again */
                    gone++;
                    continue;
                }
            }
            i = (i + 1) & s->mask;
        }
        s->sweep = i;
        gone_total += gone;
        if (met == 0 || gone * 4 <= met)
            break;
    }
    if (gone_total > 0) {
        atomic_fetch_add_explicit(&st_expired, gone_total, memory_order_relaxed);
        maybe_shrink(s);
    }
}

static void sweeper(void *arg)
{
    (void)arg;
    while (!serve_stopping()) {
        weft_sleep(100 * WEFT_MILLISECOND);
        int64_t now = weft_now();
        for (int k = 0; k < NSHARDS && !serve_stopping(); k++) {
            struct shard *s = &shards[k];
            lock(s);
            sweep(s, now);
            unlock(s);
        }
    }
    weft_wg_done(&sweeper_wg);
}

static int kv_start(void *ctx)
{
    (void)ctx;
    weft_wg_add(&sweeper_wg, 1);
    weft_spawn_opts so = { .stack_size = 64 * 1024, .name = "kv expiry" };
    int err = weft_spawn_ex(sweeper, NULL, &so, NULL);
    if (err != 0)
        weft_wg_done(&sweeper_wg);
    return err;
}

/* After the last connection's handler and the sweeper: free the store (so that a leak
 * checker sees only real leaks). */
static void kv_stop(void *ctx)
{
    (void)ctx;
    weft_wg_wait(&sweeper_wg);
    drop_all();
}

/* ---- main ----------------------------------------------------------------------------- */
static void usage(FILE *f)
{
    fprintf(f, "usage: kv [--port P] [--host H] [--procs N]\n"
               "  a key-value server in the Redis protocol (RESP2) for redis-cli,\n"
               "  redis-benchmark and client libraries (port 6379 by default; 0 lets the\n"
               "  kernel pick; the first line on stdout says where it listens).\n"
               "  Strings and lists, expiry, SCAN/KEYS; one database; no persistence.\n"
               "  Requests up to 64 MiB, 1M arguments. SIGINT/SIGTERM: stop, exit 0.\n");
}

int main(int argc, char **argv)
{
    struct serve_opts o = { .name = "kv", .host = "127.0.0.1", .port = 6379,
                            .stack_size = 64 * 1024, .conn = kv_conn,
                            .start = kv_start, .stop = kv_stop };
    for (int i = 1, r; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if ((r = serve_parse_arg(&o, argc, argv, &i)) != 0) {
            if (r < 0)
                return 2;
        } else {
            fprintf(stderr, "kv: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (getrandom(&hash_seed, sizeof hash_seed, 0) != (ssize_t)sizeof hash_seed)
        hash_seed = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
    cmd_table_init();
    started_at = weft_now();
    return serve_main(&o);
}
