/*
 * tests/test_preload.c -- unmodified programs on weft's allocator: the same output with
 * LD_PRELOAD=lib/libweft-malloc.so as without (sort, python3 with threads and fork, gcc
 * with its cc1/as/ld children). The programs are spawned with posix_spawn and an
 * explicit environment. The preload library is the release build (make test builds it
 * for every flavour) found relative to the cwd (the repo root); tests skip when it or
 * the program is missing.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

TestSuite(preload, .timeout = 120);

static char lib[PATH_MAX + 32];
static char dir[] = "/tmp/weft-preload-XXXXXX";
static bool made;           /* dir exists: the teardown removes it */

static void setup(void)
{
    char cwd[PATH_MAX];
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    snprintf(lib, sizeof lib, "%s/lib/libweft-malloc.so", cwd);
    if (access(lib, R_OK) != 0)
        cr_skip_test("%s is not built (make lib)", lib);
    cr_assert_not_null(mkdtemp(dir));
    made = true;
}

static void teardown(void)
{
    if (!made || strncmp(dir, "/tmp/weft-preload-", 18) != 0 || strchr(dir, '\'') != NULL)
        return;
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    (void)!system(cmd);
}

/* The full path of prog on $PATH, or NULL. */
static const char *find(const char *prog, char *buf, size_t cap)
{
    const char *path = getenv("PATH");
    if (path == NULL)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t n = strcspn(path, ":");
        snprintf(buf, cap, "%.*s/%s", (int)n, path, prog);
        if (n > 0 && access(buf, X_OK) == 0)
            return buf;
        path += n + (path[n] == ':');
    }
    return NULL;
}

static void need(const char *prog)
{
    char buf[PATH_MAX];
    if (find(prog, buf, sizeof buf) == NULL)
        cr_skip_test("%s is not installed", prog);
}

/* Run argv (argv[0] looked up on $PATH unless it has a slash) in dir with stdout
 * appended to out, stderr appended to err, with or without the preload; the wait status. */
static int run(char *const argv[], const char *out, const char *err, bool preload)
{
    char prog[PATH_MAX];
    if (strchr(argv[0], '/') != NULL)          /* relative to dir: spawn resolves it after the chdir */
        snprintf(prog, sizeof prog, "%s", argv[0]);
    else
        cr_assert_not_null(find(argv[0], prog, sizeof prog), "%s not found", argv[0]);
    /* the environment: ours without any LD_PRELOAD, plus ours when asked */
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **env = calloc(n + 2, sizeof *env);
    cr_assert_not_null(env);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0)
            env[k++] = environ[i];
    char pre[sizeof lib + 16];
    snprintf(pre, sizeof pre, "LD_PRELOAD=%s", lib);
    if (preload)
        env[k++] = pre;
    env[k] = NULL;

    char opath[PATH_MAX + 64], epath[PATH_MAX + 64];
    snprintf(opath, sizeof opath, "%s/%s", dir, out);
    snprintf(epath, sizeof epath, "%s/%s", dir, err);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, opath, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, epath, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_addchdir_np(&fa, dir);
    pid_t pid;
    int rc = posix_spawn(&pid, prog, &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    free(env);
    cr_assert_eq(rc, 0, "posix_spawn %s: %s", prog, strerror(rc));
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return status;
}

static char *slurp(const char *name, size_t *len)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap)
            buf = realloc(buf, (cap *= 2) + 1);
    }
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

static void assert_exit0(int status, const char *what, const char *err)
{
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return;
    size_t n;
    char *e = slurp(err, &n);
    cr_assert_fail("%s: %s %d; stderr: %.2000s", what, WIFSIGNALED(status) ? "killed by signal" : "exit status",
                   WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), e);
}

/* Run each command line of cmds (NULL-terminated argv lists, a NULL list ends them)
 * twice, without and with the preload, appending the stdout of all to one file per
 * run; the two files must be equal byte for byte and the preload runs quiet on
 * stderr (ld.so reports a library it could not preload there, then goes on). */
static void same_output(char *const *const cmds[])
{
    for (int pre = 0; pre < 2; pre++)
        for (int i = 0; cmds[i] != NULL; i++) {
            int st = run(cmds[i], pre ? "weft.out" : "plain.out", pre ? "weft.err" : "plain.err", pre);
            char what[256];
            snprintf(what, sizeof what, "%s (command %d)%s", cmds[i][0], i, pre ? " with LD_PRELOAD" : "");
            assert_exit0(st, what, pre ? "weft.err" : "plain.err");
        }
    size_t na, nb, ne;
    char *a = slurp("plain.out", &na), *b = slurp("weft.out", &nb), *e = slurp("weft.err", &ne);
    cr_assert_gt(na, 0, "no output");
    cr_assert_eq(na, nb, "outputs differ in length: %zu without the preload, %zu with", na, nb);
    size_t k = 0;
    while (k < na && a[k] == b[k])
        k++;
    cr_assert_eq(k, na, "outputs differ at byte %zu: \"%.80s\" vs \"%.80s\"", k, a + k, b + k);
    cr_assert_null(strstr(e, "preload"), "stderr with LD_PRELOAD: %.2000s", e);
    cr_assert_null(strstr(e, "weft"), "stderr with LD_PRELOAD: %.2000s", e);
    free(a);
    free(b);
    free(e);
}

static void write_file(const char *name, const char *text)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

Test(preload, the_library_is_loaded_and_malloc_is_weft, .init = setup, .fini = teardown)
{
    need("cat");
    char *maps[] = { "cat", "/proc/self/maps", NULL };
    assert_exit0(run(maps, "maps.out", "maps.err", true), "cat /proc/self/maps", "maps.err");
    size_t n;
    char *m = slurp("maps.out", &n);
    cr_assert_not_null(strstr(m, "libweft-malloc.so"), "not mapped: %.3000s", m);
    free(m);
    need("python3");
    /* malloc as the program sees it is weft's, and it works through ctypes */
    char *py[] = { "python3", "-c",
                   "import ctypes\n"
                   "c = ctypes.CDLL(None)\n"
                   "addr = lambda f: ctypes.cast(f, ctypes.c_void_p).value\n"
                   "assert addr(c.malloc) == addr(c.weft_malloc), 'malloc is not weft_malloc'\n"
                   "assert addr(c.free) == addr(c.weft_free), 'free is not weft_free'\n"
                   "c.malloc.restype = ctypes.c_void_p\n"
                   "c.malloc_usable_size.argtypes = [ctypes.c_void_p]\n"
                   "c.free.argtypes = [ctypes.c_void_p]\n"
                   "p = c.malloc(100)\n"
                   "assert p % 16 == 0 and c.malloc_usable_size(p) >= 100\n"
                   "c.free(p)\n"
                   "print('ok')\n",
                   NULL };
    assert_exit0(run(py, "py.out", "py.err", true), "python3 ctypes check", "py.err");
    m = slurp("py.out", &n);
    cr_assert_str_eq(m, "ok\n");
    free(m);
}

Test(preload, sort_a_large_file, .init = setup, .fini = teardown)
{
    need("sort");
    /* 300k pseudo-random lines, about 9 MB */
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/in.txt", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    uint64_t s = 0x2545f4914f6cdd1dull;
    for (int i = 0; i < 300000; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        fprintf(f, "%016llx line %d %llu %.*s\n", (unsigned long long)s, i,
                (unsigned long long)(s % 9973), (int)(s % 23), "abcdefghijklmnopqrstuvwxyz");
    }
    cr_assert_eq(fclose(f), 0);
    char *const a[] = { "sort", "in.txt", NULL };
    char *const b[] = { "sort", "-n", "-k4", "-k3,3r", "in.txt", NULL };
    char *const c[] = { "sort", "--parallel=2", "-S", "1M", "-T", ".", "-k2,2", "-k1,1", "in.txt", NULL };
    char *const *const cmds[] = { a, b, c, NULL };
    same_output(cmds);
}

Test(preload, python3_dicts_threads_and_fork, .init = setup, .fini = teardown)
{
    need("python3");
    write_file("prog.py",
               "import json, os, sys, threading, hashlib, random\n"
               "random.seed(42)\n"
               "d = {str(i): [i] * (i % 13) for i in range(200000)}\n"
               "s = json.dumps(d, sort_keys=True)\n"
               "out = [hashlib.sha256(s.encode()).hexdigest(), str(len(s))]\n"
               "back = json.loads(s)\n"
               "out.append(str(sum(len(v) for v in back.values())))\n"
               "parts = []\n"
               "for i in range(100000):\n"
               "    parts.append('%d:%s' % (i, 'x' * (i % 50)))\n"
               "    if i % 1000 == 999:\n"
               "        parts = [''.join(parts)]\n"
               "out.append(hashlib.md5(''.join(parts).encode()).hexdigest())\n"
               "l = [random.random() for _ in range(300000)]\n"
               "l.sort()\n"
               "out.append('%.12f' % sum(l[::1000]))\n"
               "res = [None] * 4\n"
               "def work(k):\n"
               "    acc = {}\n"
               "    for x in range(k, 300000, 4):\n"
               "        acc[x % 1000] = acc.get(x % 1000, '') [-40:] + str(x)\n"
               "    res[k] = sum(len(v) for v in acc.values())\n"
               "ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]\n"
               "[t.start() for t in ts]; [t.join() for t in ts]\n"
               "out.append(str(res))\n"
               "kids = []\n"
               "for k in range(3):\n"
               "    r, w = os.pipe()\n"
               "    pid = os.fork()\n"
               "    if pid == 0:\n"
               "        os.close(r)\n"
               "        x = {i: str(i) * 3 for i in range(50000 * (k + 1))}\n"
               "        os.write(w, str(sum(len(v) for v in x.values())).encode()); os._exit(0)\n"
               "    os.close(w); kids.append((pid, r))\n"
               "for pid, r in kids:\n"
               "    out.append(os.read(r, 100).decode()); os.close(r)\n"
               "    _, st = os.waitpid(pid, 0); out.append(str(st))\n"
               "print('\\n'.join(out))\n");
    char *const a[] = { "python3", "prog.py", NULL };
    char *const *const cmds[] = { a, NULL };
    same_output(cmds);
}

Test(preload, python3_multiprocessing, .init = setup, .fini = teardown)
{
    need("python3");
    write_file("mp.py",
               "import multiprocessing as mp\n"
               "def f(n):\n"
               "    return sum(len(str(i) * 2) for i in range(n))\n"
               "if __name__ == '__main__':\n"
               "    ctx = mp.get_context('fork')\n"
               "    try:\n"
               "        pool = ctx.Pool(2)\n"
               "    except OSError as e:\n"
               "        print('no pool'); raise SystemExit(0)\n"
               "    with pool:\n"
               "        print(pool.map(f, [10000 * k for k in range(1, 9)]))\n");
    char *const a[] = { "python3", "mp.py", NULL };
    char *const *const cmds[] = { a, NULL };
    same_output(cmds);
}

Test(preload, gcc_compiles_a_file, .init = setup, .fini = teardown)
{
    need("gcc");
    write_file("prog.c",
               "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n"
               "struct node { struct node *next; char name[24]; int v; };\n"
               "static int cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }\n"
               "int main(void) {\n"
               "  int v[1000]; for (int i = 0; i < 1000; i++) v[i] = (i * 7919) % 1000;\n"
               "  qsort(v, 1000, sizeof v[0], cmp); long s = 0;\n"
               "  for (int i = 0; i < 1000; i++) s += (long)v[i] * i;\n"
               "  struct node *h = NULL;\n"
               "  for (int i = 0; i < 10000; i++) { struct node *n = malloc(sizeof *n);\n"
               "    snprintf(n->name, sizeof n->name, \"n%d\", i); n->v = i; n->next = h; h = n; }\n"
               "  while (h) { struct node *n = h->next; s += h->v + (long)strlen(h->name); free(h); h = n; }\n"
               "  char *buf = NULL; size_t len = 0;\n"
               "  for (int i = 0; i < 2000; i++) { buf = realloc(buf, len + 8); len += (size_t)sprintf(buf + len, \"%d,\", i % 97); }\n"
               "  s += (long)len; free(buf);\n"
               "  printf(\"%ld\\n\", s); return 0; }\n");
    char *const a[] = { "gcc", "-O2", "-S", "-o", "-", "prog.c", NULL };
    char *const b[] = { "gcc", "-O2", "-Wall", "-o", "prog", "prog.c", NULL };
    char *const c[] = { "./prog", NULL };
    char *const d[] = { "gcc", "-O2", "-fsyntax-only", "-x", "c", "-include", "stdio.h", "-include", "stdlib.h",
                        "-include", "string.h", "-include", "pthread.h", "prog.c", NULL };
    char *const *const cmds[] = { a, b, c, d, NULL };
    same_output(cmds);
}
