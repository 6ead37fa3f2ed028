/*
 * tests/test_demo_kv.c -- demos/kv end to end: redis-cli (every command, the replies
 * compared with those redis-server 7.0 gives), redis-benchmark (plain and pipelined),
 * inline commands and a 10,000-command pipeline over raw sockets, malformed and
 * abusive input (the server keeps serving, its RSS flat), expiry (lazy and active),
 * a large value, SCAN over many keys, the graceful stop. The client tests run on both
 * I/O backends (WEFT_IO=uring and WEFT_IO=uv).
 */
#include "tests/common.h"
#include "tests/demo_common.h"

/* The TSan build's stand-in for Criterion (tests/tsan) has the cr_assert family only:
 * there an expectation that fails ends the test, as an assertion does. */
#ifndef cr_expect
#define cr_expect(...)        cr_assert(__VA_ARGS__)
#define cr_expect_eq(...)     cr_assert_eq(__VA_ARGS__)
#define cr_expect_lt(...)     cr_assert_lt(__VA_ARGS__)
#define cr_expect_str_eq(...) cr_assert_str_eq(__VA_ARGS__)
#endif

TestSuite(demo_kv, .timeout = 120);

/* ---- redis-cli against the replies Redis gives --------------------------------------
 * Each case: redis-cli's arguments (after -p PORT) and its output, without the last
 * newline. Run in order on a fresh server: later cases see the keys earlier ones made.
 * The expected texts were produced by running the same list against redis-server
 * 7.0.15 (Debian 12), and are identical except where marked. */
struct cli_case {
    const char *args, *want;
};

static const struct cli_case cli_cases[] = {
    { "--no-raw PING",
      "PONG" },
    { "--no-raw PING hello",
      "\"hello\"" },
    { "--no-raw PING a b",
      "(error) ERR wrong number of arguments for 'ping' command" },
    { "--no-raw ECHO 'hello world'",
      "\"hello world\"" },
    { "--no-raw ECHO",
      "(error) ERR wrong number of arguments for 'echo' command" },
    { "--no-raw SET k v",
      "OK" },
    { "--no-raw GET k",
      "\"v\"" },
    { "--no-raw GET nokey",
      "(nil)" },
    { "--no-raw SET k v2 GET",
      "\"v\"" },
    { "--no-raw SET k v3 NX",
      "(nil)" },
    { "--no-raw SET k v3 NX GET",
      "\"v2\"" },
    { "--no-raw SET nokey v XX",
      "(nil)" },
    { "--no-raw SET nokey v XX GET",
      "(nil)" },
    { "--no-raw SET k v EX 0",
      "(error) ERR invalid expire time in 'set' command" },
    { "--no-raw SET k v EX abc",
      "(error) ERR value is not an integer or out of range" },
    { "--no-raw SET k v NX XX",
      "(error) ERR syntax error" },
    { "--no-raw SET k v EX 10 PX 10",
      "(error) ERR syntax error" },
    { "--no-raw SET k v KEEPTTL EX 1",
      "(error) ERR syntax error" },
    { "--no-raw SET k v EX",
      "(error) ERR syntax error" },
    { "--no-raw SET k v BOGUS",
      "(error) ERR syntax error" },
    { "--no-raw SET ex1 v EX 1000",
      "OK" },
    { "--no-raw TTL nokey",
      "(integer) -2" },
    { "--no-raw TTL k",
      "(integer) -1" },
    { "--no-raw PTTL nokey",
      "(integer) -2" },
    { "--no-raw PERSIST ex1",
      "(integer) 1" },
    { "--no-raw TTL ex1",
      "(integer) -1" },
    { "--no-raw PERSIST ex1",
      "(integer) 0" },
    { "--no-raw GETSET k newv",
      "\"v2\"" },
    { "--no-raw GETSET nokey2 first",
      "(nil)" },
    { "--no-raw GET nokey2",
      "\"first\"" },
    { "--no-raw DEL nokey2 nokey3",
      "(integer) 1" },
    { "--no-raw EXISTS k k nokey",
      "(integer) 2" },
    { "--no-raw APPEND k '!!'",
      "(integer) 6" },
    { "--no-raw APPEND app hello",
      "(integer) 5" },
    { "--no-raw STRLEN k",
      "(integer) 6" },
    { "--no-raw STRLEN nokey",
      "(integer) 0" },
    { "--no-raw INCR counter",
      "(integer) 1" },
    { "--no-raw INCRBY counter 41",
      "(integer) 42" },
    { "--no-raw DECR counter",
      "(integer) 41" },
    { "--no-raw DECRBY counter 10",
      "(integer) 31" },
    { "--no-raw INCR k",
      "(error) ERR value is not an integer or out of range" },
    { "--no-raw INCRBY counter x",
      "(error) ERR value is not an integer or out of range" },
    { "--no-raw SET big 9223372036854775807",
      "OK" },
    { "--no-raw INCR big",
      "(error) ERR increment or decrement would overflow" },
    { "--no-raw SET small -9223372036854775808",
      "OK" },
    { "--no-raw DECR small",
      "(error) ERR increment or decrement would overflow" },
    { "--no-raw DECRBY counter -9223372036854775808",
      "(error) ERR decrement would overflow" },
    { "--no-raw SET lead 01",
      "OK" },
    { "--no-raw INCR lead",
      "(error) ERR value is not an integer or out of range" },
    { "--no-raw MSET a 1 b 2 c 3",
      "OK" },
    { "--no-raw MSET a 1 b",
      "(error) ERR wrong number of arguments for 'mset' command" },
    { "--no-raw MGET a b nokey c",
      "1) \"1\"\n2) \"2\"\n3) (nil)\n4) \"3\"" },
    { "--no-raw MGET a",
      "1) \"1\"" },
    { "--no-raw LPUSH list x y z",
      "(integer) 3" },
    { "--no-raw RPUSH list 1 2",
      "(integer) 5" },
    { "--no-raw LLEN list",
      "(integer) 5" },
    { "--no-raw LRANGE list 0 -1",
      "1) \"z\"\n2) \"y\"\n3) \"x\"\n4) \"1\"\n5) \"2\"" },
    { "--no-raw LRANGE list 1 2",
      "1) \"y\"\n2) \"x\"" },
    { "--no-raw LRANGE list -2 -1",
      "1) \"1\"\n2) \"2\"" },
    { "--no-raw LRANGE list 5 1",
      "(empty array)" },
    { "--no-raw LRANGE nolist 0 -1",
      "(empty array)" },
    { "--no-raw LRANGE list 0 x",
      "(error) ERR value is not an integer or out of range" },
    { "--no-raw LPOP list",
      "\"z\"" },
    { "--no-raw RPOP list",
      "\"2\"" },
    { "--no-raw LPOP list 2",
      "1) \"y\"\n2) \"x\"" },
    { "--no-raw RPOP list 0",
      "(empty array)" },
    { "--no-raw LPOP nolist",
      "(nil)" },
    { "--no-raw LPOP nolist 2",
      "(nil)" },
    { "--no-raw LPOP list -1",
      "(error) ERR value is out of range, must be positive" },
    { "--no-raw LPOP list 1 2",
      "(error) ERR wrong number of arguments for 'lpop' command" },
    { "--no-raw GET list",
      "(error) WRONGTYPE Operation against a key holding the wrong kind of value" },
    { "--no-raw INCR list",
      "(error) WRONGTYPE Operation against a key holding the wrong kind of value" },
    { "--no-raw APPEND list x",
      "(error) WRONGTYPE Operation against a key holding the wrong kind of value" },
    { "--no-raw STRLEN list",
      "(error) WRONGTYPE Operation against a key holding the wrong kind of value" },
    { "--no-raw SET list v GET",
      "(error) WRONGTYPE Operation against a key holding the wrong kind of value" },
    { "--no-raw LPUSH k x",
      "(error) WRONGTYPE Operation against a key holding the wrong kind of value" },
    { "--no-raw LLEN k",
      "(error) WRONGTYPE Operation against a key holding the wrong kind of value" },
    { "--no-raw RPOP list 10",
      "1) \"1\"" },
    { "--no-raw EXISTS list",
      "(integer) 0" },
    { "--no-raw TYPE a",
      "string" },
    { "--no-raw TYPE nokey",
      "none" },
    { "--no-raw EXPIRE a 100",
      "(integer) 1" },
    { "--no-raw EXPIRE a 100 NX",
      "(integer) 0" },
    { "--no-raw EXPIRE a 200 XX",
      "(integer) 1" },
    { "--no-raw EXPIRE a 50 GT",
      "(integer) 0" },
    { "--no-raw EXPIRE a 50 LT",
      "(integer) 1" },
    { "--no-raw EXPIRE a 10 NX XX",
      "(error) ERR NX and XX, GT or LT options at the same time are not compatible" },
    { "--no-raw EXPIRE a 10 GT LT",
      "(error) ERR GT and LT options at the same time are not compatible" },
    { "--no-raw EXPIRE a 10 FOO",
      "(error) ERR Unsupported option FOO" },
    { "--no-raw EXPIRE a abc",
      "(error) ERR value is not an integer or out of range" },
    { "--no-raw EXPIRE a 9223372036854775807",
      "(error) ERR invalid expire time in 'expire' command" },
    { "--no-raw EXPIRE nokey 10",
      "(integer) 0" },
    { "--no-raw PEXPIRE a -1",
      "(integer) 1" },
    { "--no-raw EXISTS a",
      "(integer) 0" },
    { "--no-raw SELECT 0",
      "OK" },
    { "--no-raw SELECT 1",            /* Redis: OK (16 databases); kv has one */
      "(error) ERR DB index is out of range" },
    { "--no-raw SELECT x",
      "(error) ERR value is not an integer or out of range" },
    { "--no-raw FOO a b",
      "(error) ERR unknown command 'FOO', with args beginning with: 'a' 'b' " },
    { "--no-raw foo",
      "(error) ERR unknown command 'foo', with args beginning with: " },
    { "--no-raw GET",
      "(error) ERR wrong number of arguments for 'get' command" },
    { "--no-raw LPUSH k",
      "(error) ERR wrong number of arguments for 'lpush' command" },
    { "--no-raw DBSIZE x",
      "(error) ERR wrong number of arguments for 'dbsize' command" },
    { "--no-raw CONFIG GET save",
      "1) \"save\"\n2) \"\"" },
    { "--no-raw CONFIG GET appendonly",
      "1) \"appendonly\"\n2) \"no\"" },
    { "--no-raw CONFIG GET nonexist",
      "(empty array)" },
    { "--no-raw CONFIG GET",
      "(error) ERR wrong number of arguments for 'config|get' command" },
    { "--no-raw CONFIG FOO",
      "(error) ERR unknown subcommand 'FOO'. Try CONFIG HELP." },
    { "--no-raw CLIENT SETNAME 'a b'",
      "(error) ERR Client names cannot contain spaces, newlines or special characters." },
    { "--no-raw CLIENT SETNAME conn1",
      "OK" },
    { "--no-raw CLIENT GETNAME",
      "(nil)" },
    { "--no-raw CLIENT FOO",
      "(error) ERR unknown subcommand 'FOO'. Try CLIENT HELP." },
    { "--no-raw COMMAND FOO",
      "(error) ERR unknown subcommand 'FOO'. Try COMMAND HELP." },
    { "--no-raw SCAN x",
      "(error) ERR invalid cursor" },
    { "--no-raw SCAN 0 COUNT 0",
      "(error) ERR syntax error" },
    { "--no-raw SCAN 0 MATCH",
      "(error) ERR syntax error" },
    { "--no-raw FLUSHALL FOO",
      "(error) ERR syntax error" },
    { "--no-raw FLUSHALL",
      "OK" },
    { "--no-raw DBSIZE",
      "(integer) 0" },
    { "--no-raw MSET hello 1 hallo 2 hxllo 3 hllo 4 heello 5 'h[a]llo' 6 'h*' 7",
      "OK" },
    { "--raw KEYS h?llo | sort",
      "hallo\nhello\nhxllo" },
    { "--raw KEYS 'h*llo' | sort",
      "h[a]llo\nhallo\nheello\nhello\nhllo\nhxllo" },
    { "--raw KEYS 'h[ae]llo' | sort",
      "hallo\nhello" },
    { "--raw KEYS 'h[^e]llo' | sort",
      "hallo\nhxllo" },
    { "--no-raw KEYS 'h[a-b]llo'",
      "1) \"hallo\"" },
    { "--no-raw KEYS 'h[b-a]llo'",
      "1) \"hallo\"" },
    { "--no-raw KEYS 'h\\[a\\]llo'",
      "1) \"h[a]llo\"" },
    { "--no-raw KEYS 'h\\*'",
      "1) \"h*\"" },
    { "--no-raw KEYS 'h[a'",
      "(empty array)" },
    { "--no-raw KEYS 'zz*'",
      "(empty array)" },
    { "--raw SCAN 0 MATCH 'h?llo' COUNT 1000 | sort",
      "0\nhallo\nhello\nhxllo" },
    { "--no-raw DBSIZE",
      "(integer) 7" },
    { "--no-raw FLUSHDB",
      "OK" },
    { "--no-raw DBSIZE",
      "(integer) 0" },
};

static void cli_all(const char *env)
{
    demo_need("redis-cli");
    struct demo d;
    demo_start(&d, "kv", env, NULL);
    char out[8192];
    for (size_t i = 0; i < sizeof cli_cases / sizeof cli_cases[0]; i++) {
        const struct cli_case *c = &cli_cases[i];
        int st = demo_sh(out, sizeof out, "redis-cli -p %d %s", d.port, c->args);
        size_t n = strlen(out);
        if (n > 0 && out[n - 1] == '\n')
            out[n - 1] = '\0';
        cr_expect_eq(st, 0, "redis-cli %s: status %d", c->args, st);
        cr_expect_str_eq(out, c->want, "redis-cli %s", c->args);
    }
    /* the commands clients send on their own: COMMAND, COMMAND DOCS, INFO */
    demo_sh(out, sizeof out, "redis-cli -p %d --no-raw COMMAND COUNT", d.port);
    cr_expect(strncmp(out, "(integer) ", 10) == 0 && atoi(out + 10) >= 30, "%s", out);
    demo_sh(out, sizeof out, "redis-cli -p %d --raw COMMAND DOCS get", d.port);
    cr_expect(strstr(out, "summary") != NULL && strstr(out, "string") != NULL, "%s", out);
    demo_sh(out, sizeof out, "redis-cli -p %d --raw COMMAND INFO get | head -3", d.port);
    cr_expect_str_eq(out, "get\n2\nreadonly\n");
    demo_sh(out, sizeof out, "redis-cli -p %d --raw COMMAND | grep -c '^lpush$'", d.port);
    cr_expect_str_eq(out, "1\n");
    demo_sh(out, sizeof out, "redis-cli -p %d INFO", d.port);
    cr_expect(strstr(out, "redis_version:") != NULL && strstr(out, "connected_clients:1") != NULL,
              "%s", out);
    /* redis-cli reading commands from its standard input (not a terminal) */
    demo_sh(out, sizeof out, "printf 'SET s 1\\nINCR s\\nGET s\\n' | redis-cli -p %d", d.port);
    cr_expect_str_eq(out, "OK\n2\n2\n");
    demo_stop(&d);
}

Test(demo_kv, redis_cli_replies_uring) { cli_all("WEFT_IO=uring"); }
Test(demo_kv, redis_cli_replies_uv) { cli_all("WEFT_IO=uv"); }

/* ---- redis-benchmark ------------------------------------------------------------------ */
static void benchmark(const char *env)
{
    demo_need("redis-benchmark");
    struct demo d;
    demo_start(&d, "kv", env, NULL);
    int n = sanitized() ? 2000 : 20000;
    static const char *const tests[] = { "SET", "GET", "INCR", "LPUSH", "RPUSH", "LPOP", "RPOP",
                                         "MSET (10 keys)" };
    char out[16384];
    for (int pipe = 1; pipe <= 16; pipe += 15) {
        int st = demo_sh(out, sizeof out,
                         "redis-benchmark -p %d -q -n %d -P %d -t set,get,incr,lpush,rpush,lpop,"
                         "rpop,mset 2>&1 | tr '\\r' '\\n' | grep -v '^ *$' | grep -v 'rps='",
                         d.port, n, pipe);
        cr_expect_eq(st, 0);
        cr_expect(strstr(out, "rror") == NULL && strstr(out, "ERR") == NULL, "-P %d: %s", pipe, out);
        for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
            char want[64];
            snprintf(want, sizeof want, "%s: ", tests[i]);
            cr_expect(strstr(out, want) != NULL, "-P %d: no %s line in: %s", pipe, tests[i], out);
        }
    }
    /* 50 connections' INCRs of one key, on every P: none lost */
    demo_sh(out, sizeof out, "redis-cli -p %d GET counter:__rand_int__", d.port);
    cr_expect_eq(atoi(out), 2 * n, "%s", out);
    demo_sh(out, sizeof out, "redis-cli -p %d STRLEN key:__rand_int__", d.port);
    cr_expect_str_eq(out, "3\n");      /* SET's "xxx" or MSET's 3 bytes, whichever ran last */
    cr_expect(demo_alive(&d));
    demo_stop(&d);
}

Test(demo_kv, redis_benchmark_uring) { benchmark("WEFT_IO=uring"); }
Test(demo_kv, redis_benchmark_uv) { benchmark("WEFT_IO=uv"); }

/* ---- raw sockets ------------------------------------------------------------------------ */
/* Send req (all of it, unless the server closes first), then read until end of file,
 * cap bytes, or secs without data; the bytes read. */
static size_t exchange(int port, const void *req, size_t n, char *out, size_t cap, double secs)
{
    int fd = demo_connect(port);
    cr_assert_geq(fd, 0, "connect: %s", strerror(errno));
    for (size_t off = 0; off < n;) {
        ssize_t w = send(fd, (const char *)req + off, n - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    size_t got = 0;
    while (got < cap) {
        ssize_t r = demo_read_within(fd, out + got, cap - got, secs);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got < cap)
        out[got] = '\0';
    return got;
}

static void inline_and_pipeline(const char *env)
{
    demo_need("nc");
    struct demo d;
    demo_start(&d, "kv", env, NULL);
    char out[4096];
    /* inline commands as typed into nc: quotes, escapes, one connection's name */
    int st = demo_sh(out, sizeof out,
                     "printf 'PING\\r\\nSET a \"b c\\\\x21\"\\r\\nGET a\\r\\n\\r\\nCLIENT SETNAME me\\r\\n"
                     "CLIENT GETNAME\\nECHO '\"'\"'it\\\\'\"'\"'s'\"'\"'\\nQUIT\\r\\nPING\\r\\n' | "
                     "nc -q 5 -w 10 127.0.0.1 %d",
                     d.port);
    cr_expect_eq(st, 0);
    cr_expect_str_eq(out, "+PONG\r\n+OK\r\n$4\r\nb c!\r\n+OK\r\n$2\r\nme\r\n$4\r\nit's\r\n+OK\r\n");
    /* 10,000 commands in one write: the replies all come, in order */
    enum { N = 10000 };
    static const char cmd[] = "*2\r\n$4\r\nINCR\r\n$1\r\np\r\n";
    size_t len = N * (sizeof cmd - 1);
    char *req = malloc(len);
    for (int i = 0; i < N; i++)
        memcpy(req + (size_t)i * (sizeof cmd - 1), cmd, sizeof cmd - 1);
    size_t wlen = 0;
    char *want = malloc((size_t)N * 16);
    for (int i = 1; i <= N; i++)
        wlen += (size_t)sprintf(want + wlen, ":%d\r\n", i);
    int fd = demo_connect(d.port);
    cr_assert_geq(fd, 0);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    char *got = malloc(wlen + 1);
    size_t off = 0, have = 0;
    double until = demo_now() + 60;
    while (have < wlen && demo_now() < until) {
        struct pollfd p = { .fd = fd, .events = POLLIN | (off < len ? POLLOUT : 0) };
        if (poll(&p, 1, 1000) <= 0)
            continue;
        if (off < len && (p.revents & POLLOUT)) {
            ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
            if (w > 0)
                off += (size_t)w;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = read(fd, got + have, wlen - have);
            if (r <= 0 && !(r < 0 && errno == EAGAIN))
                break;
            if (r > 0)
                have += (size_t)r;
        }
    }
    close(fd);
    cr_expect_eq(have, wlen, "pipeline: %zu of %zu reply bytes", have, wlen);
    cr_expect(have == wlen && memcmp(got, want, wlen) == 0, "pipeline: replies out of order");
    free(got);
    free(want);
    free(req);
    demo_stop(&d);
}

Test(demo_kv, inline_and_pipelined_10000_uring) { inline_and_pipeline("WEFT_IO=uring"); }
Test(demo_kv, inline_and_pipelined_10000_uv) { inline_and_pipeline("WEFT_IO=uv"); }

/* One round of abuse: each kind of bad input, on its own connection. */
static void abuse(int port, char *buf, size_t cap)
{
    static const char truncated[] = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhel";
    exchange(port, truncated, sizeof truncated - 1, buf, cap, 0.05);
    static const char huge_bulk[] = "*2\r\n$4\r\nECHO\r\n$999999999\r\n";
    exchange(port, huge_bulk, sizeof huge_bulk - 1, buf, cap, 20);
    cr_expect_str_eq(buf, "-ERR Protocol error: invalid bulk length\r\n");
    static const char many[] = "*2000000\r\n";
    exchange(port, many, sizeof many - 1, buf, cap, 20);
    cr_expect_str_eq(buf, "-ERR Protocol error: invalid multibulk length\r\n");
    static const char dollar[] = "*1\r\n#3\r\n";
    exchange(port, dollar, sizeof dollar - 1, buf, cap, 20);
    cr_expect_str_eq(buf, "-ERR Protocol error: expected '$', got '#'\r\n");
    static const char quotes[] = "PING\r\nSET \"a b\r\nPING\r\n";
    exchange(port, quotes, sizeof quotes - 1, buf, cap, 20);
    cr_expect_str_eq(buf, "+PONG\r\n-ERR Protocol error: unbalanced quotes in request\r\n");
    /* an inline line, then a header number, past 64 KiB without a line end */
    size_t big = 70000;
    char *p = malloc(big + 8);
    memset(p, 'a', big);
    exchange(port, p, big, buf, cap, 20);
    cr_expect_str_eq(buf, "-ERR Protocol error: too big inline request\r\n");
    memcpy(p, "*1\r\n$", 5);
    memset(p + 5, '1', big - 5);
    exchange(port, p, big, buf, cap, 20);
    cr_expect_str_eq(buf, "-ERR Protocol error: too big bulk count string\r\n");
    free(p);
    /* binary garbage (the server answers or closes; it must not fall over) */
    size_t gn = 65536;
    unsigned char *g = malloc(gn);
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < gn; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        g[i] = (unsigned char)x;
    }
    exchange(port, g, gn, buf, cap, 0.2);
    free(g);
    /* half of a 1 MB request, then the client goes away */
    static const char hdr[] = "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$1000000\r\n";
    size_t hn = sizeof hdr - 1, half = hn + 500000;
    char *h = malloc(half);
    memcpy(h, hdr, hn);
    memset(h + hn, 'v', half - hn);
    int fd = demo_connect(port);
    cr_assert_geq(fd, 0);
    for (size_t off = 0; off < half;) {
        ssize_t w = send(fd, h + off, half - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    close(fd);
    free(h);
}

static void malformed(const char *env)
{
    struct demo d;
    demo_start(&d, "kv", env, NULL);
    char *buf = malloc(1 << 20);
    abuse(d.port, buf, 1 << 20);        /* the warm-up: buffers and pages first used */
    usleep(200000);
    long before = demo_rss_kib(&d);
    int rounds = sanitized() ? 3 : 30;
    for (int i = 0; i < rounds; i++)
        abuse(d.port, buf, 1 << 20);
    usleep(200000);
    long after = demo_rss_kib(&d);
    if (!sanitized())
        cr_expect_lt(after - before, 32 * 1024, "RSS grew from %ld to %ld KiB over %d rounds",
                     before, after, rounds);
    cr_expect(demo_alive(&d));
    static const char ping[] = "*1\r\n$4\r\nPING\r\n";
    exchange(d.port, ping, sizeof ping - 1, buf, 1 << 20, 0.5);
    cr_expect_str_eq(buf, "+PONG\r\n");
    char out[256];
    demo_sh(out, sizeof out, "redis-cli -p %d EXISTS big", d.port);
    cr_expect_str_eq(out, "0\n", "a request cut short must not have run");
    free(buf);
    demo_stop(&d);
}

Test(demo_kv, malformed_input_keeps_serving_uring) { malformed("WEFT_IO=uring"); }
Test(demo_kv, malformed_input_keeps_serving_uv) { malformed("WEFT_IO=uv"); }

/* ---- expiry ------------------------------------------------------------------------------ */
Test(demo_kv, expiry_lazy_and_active)
{
    demo_need("redis-cli");
    struct demo d;
    demo_start(&d, "kv", NULL, NULL);
    char out[4096];
    demo_sh(out, sizeof out, "redis-cli -p %d SET k v PX 100", d.port);
    cr_expect_str_eq(out, "OK\n");
    demo_sh(out, sizeof out, "redis-cli -p %d SET t v EX 1000", d.port);
    demo_sh(out, sizeof out, "redis-cli -p %d TTL t", d.port);
    cr_expect(atoi(out) > 0 && atoi(out) <= 1000, "TTL %s", out);
    demo_sh(out, sizeof out, "redis-cli -p %d PTTL t", d.port);
    cr_expect(atoi(out) > 0 && atoi(out) <= 1000000, "PTTL %s", out);
    /* 200 keys that expire in 100 ms and that nothing reads: the sweeper's */
    char *req = malloc(200 * 64);
    size_t n = 0;
    for (int i = 0; i < 200; i++)
        n += (size_t)sprintf(req + n, "SET e:%d v PX 100\r\n", i);
    char *rep = malloc(4096);
    exchange(d.port, req, n, rep, 200 * 5, 20);
    free(req);
    free(rep);
    usleep(1000000);
    demo_sh(out, sizeof out, "redis-cli -p %d --no-raw GET k", d.port);
    cr_expect_str_eq(out, "(nil)\n");
    int keys = -1;
    for (double until = demo_now() + 20; demo_now() < until;) {
        demo_sh(out, sizeof out, "redis-cli -p %d DBSIZE", d.port);
        keys = atoi(out);
        if (keys == 1)                  /* t */
            break;
        usleep(100000);
    }
    cr_expect_eq(keys, 1, "the expired keys were not swept: DBSIZE %d", keys);
    demo_sh(out, sizeof out, "redis-cli -p %d INFO stats | grep expired_keys", d.port);
    cr_expect(strstr(out, "expired_keys:201") != NULL, "%s", out);
    demo_stop(&d);
}

/* ---- large values, many keys ----------------------------------------------------------- */
Test(demo_kv, large_value_and_scan_of_many_keys)
{
    demo_need("redis-cli");
    struct demo d;
    demo_start(&d, "kv", NULL, NULL);
    char out[4096];
    int st = demo_sh(out, sizeof out,
                     "f=/tmp/weft-kv-$$; head -c 3000000 /dev/urandom | base64 -w0 > $f; "
                     "redis-cli -p %d -x SET big < $f >/dev/null; (cat $f; echo) > $f.2; "
                     "redis-cli -p %d --raw GET big | cmp - $f.2 && echo same; rm -f $f $f.2",
                     d.port, d.port);
    cr_expect_eq(st, 0);
    cr_expect_str_eq(out, "same\n");
    demo_sh(out, sizeof out, "redis-cli -p %d STRLEN big", d.port);
    cr_expect_str_eq(out, "4000000\n");
    /* 3000 keys in one MSET; SCAN (redis-cli --scan: COUNT 10 at a time) sees each once */
    st = demo_sh(out, sizeof out, "redis-cli -p %d MSET $(seq -f 'k%%g v' 1 3000)", d.port);
    cr_expect_str_eq(out, "OK\n");
    demo_sh(out, sizeof out, "redis-cli -p %d --scan --pattern 'k*' | sort | uniq | wc -l", d.port);
    cr_expect_eq(atoi(out), 3000, "%s", out);
    demo_sh(out, sizeof out, "redis-cli -p %d --scan --pattern 'k1*' | sort -u | wc -l", d.port);
    cr_expect_eq(atoi(out), 1 + 10 + 100 + 1000, "%s", out);
    demo_sh(out, sizeof out, "redis-cli -p %d KEYS 'k2?\?' | wc -l", d.port);
    cr_expect_eq(atoi(out), 100, "%s", out);
    demo_sh(out, sizeof out, "redis-cli -p %d DEL $(seq -f 'k%%g' 1 2990)", d.port);
    cr_expect_str_eq(out, "2990\n");
    demo_sh(out, sizeof out, "redis-cli -p %d --scan | sort | tr '\\n' ' '", d.port);
    cr_expect_str_eq(out, "big k2991 k2992 k2993 k2994 k2995 k2996 k2997 k2998 k2999 k3000 ");
    demo_stop(&d);
}

/* ---- the graceful stop ------------------------------------------------------------------ */
Test(demo_kv, sigterm_with_idle_clients_exits_0)
{
    struct demo d;
    demo_start(&d, "kv", NULL, NULL);
    int fds[10];
    for (int i = 0; i < 10; i++) {
        fds[i] = demo_connect(d.port);
        cr_assert_geq(fds[i], 0, "connect: %s", strerror(errno));
        char buf[16];
        cr_assert_eq(write(fds[i], "PING\r\n", 6), 6);
        cr_assert_eq(demo_read_within(fds[i], buf, sizeof buf, 20), 7);
    }
    demo_stop(&d);
    for (int i = 0; i < 10; i++) {
        char c;
        cr_expect_eq(demo_read_within(fds[i], &c, 1, 20), 0, "client %d: no end of file", i);
        close(fds[i]);
    }
}

Test(demo_kv, help_and_bad_arguments)
{
    char out[1024];
    char path[512];
    snprintf(path, sizeof path, "%s/demos/kv", demo_build());
    cr_expect_eq(demo_sh(out, sizeof out, "%s --help", path), 0);
    cr_expect(strstr(out, "usage: kv") != NULL, "%s", out);
    cr_expect_eq(demo_sh(out, sizeof out, "%s --port 99999 2>/dev/null", path), 2);
    cr_expect_eq(demo_sh(out, sizeof out, "%s --procs 0 2>/dev/null", path), 2);
    cr_expect_eq(demo_sh(out, sizeof out, "%s --bogus 2>/dev/null", path), 2);
}
