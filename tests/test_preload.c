/*
 * tests/test_preload.c -- unmodified programs on weft's allocator: the same output with
 * LD_PRELOAD=lib/libweft-malloc.so as without (sort, python3 with threads and fork,
 * gcc). The preload library is the release build (make test builds it for every
 * flavour); tests skip a program that is not installed.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TestSuite(preload, .timeout = 120);

static char lib[PATH_MAX + 32];
static char dir[] = "/tmp/weft-preload-XXXXXX";

static void setup(void)
{
    char cwd[PATH_MAX];
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    snprintf(lib, sizeof lib, "%s/lib/libweft-malloc.so", cwd);
    if (access(lib, R_OK) != 0)
        cr_skip_test("%s not built", lib);
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (strncmp(dir, "/tmp/weft-preload-", 18) == 0 && strchr(dir, 'X') == NULL)
        (void)!system(cmd);
}

static bool have(const char *prog)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", prog);
    return system(cmd) == 0;
}

/* Run `cmd` (a shell line writing to $OUT) twice, with and without the preload, and
 * compare the outputs byte for byte. */
static void same_output(const char *cmd)
{
    char line[8192];
    snprintf(line, sizeof line,
             "cd %s && OUT=plain.out sh -c '%s' && LD_PRELOAD=%s OUT=weft.out sh -c '%s' && "
             "cmp -s plain.out weft.out",
             dir, cmd, lib, cmd);
    int r = system(line);
    cr_assert_eq(r, 0, "outputs differ or a run failed: %s", cmd);
}

Test(preload, sort_a_large_file, .init = setup, .fini = teardown)
{
    if (!have("sort") || !have("seq") || !have("awk"))
        cr_skip_test("coreutils missing");
    char gen[512];
    snprintf(gen, sizeof gen,
             "cd %s && seq 1 400000 | awk '{ printf \"%%08x line %%d %%s\\n\", ($1 * 2654435761) %% 4294967296, $1, $1 %% 97 }' > in.txt",
             dir);
    cr_assert_eq(system(gen), 0);
    same_output("sort in.txt > $OUT && sort -n -k3 -k1 in.txt >> $OUT");
}

Test(preload, python3_threads_and_fork, .init = setup, .fini = teardown)
{
    if (!have("python3"))
        cr_skip_test("python3 missing");
    char py[1024];
    snprintf(py, sizeof py, "%s/prog.py", dir);
    FILE *f = fopen(py, "w");
    cr_assert_not_null(f);
    fputs("import json, os, sys, threading, hashlib\n"
          "d = {str(i): [i] * (i % 13) for i in range(200000)}\n"
          "s = json.dumps(d, sort_keys=True)\n"
          "out = [hashlib.sha256(s.encode()).hexdigest()]\n"
          "res = [None] * 4\n"
          "def work(k):\n"
          "    res[k] = sum(len(str(x) * 3) for x in range(k, 300000, 4))\n"
          "ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]\n"
          "[t.start() for t in ts]; [t.join() for t in ts]\n"
          "out.append(str(res))\n"
          "r, w = os.pipe()\n"
          "pid = os.fork()\n"
          "if pid == 0:\n"
          "    os.close(r); os.write(w, str(sum(len(str(i)) for i in range(100000))).encode()); os._exit(0)\n"
          "os.close(w); out.append(os.read(r, 100).decode()); os.waitpid(pid, 0)\n"
          "print('\\n'.join(out))\n",
          f);
    fclose(f);
    same_output("python3 prog.py > $OUT");
}

Test(preload, gcc_compiles_a_file, .init = setup, .fini = teardown)
{
    if (!have("gcc"))
        cr_skip_test("gcc missing");
    char c[1024];
    snprintf(c, sizeof c, "%s/prog.c", dir);
    FILE *f = fopen(c, "w");
    cr_assert_not_null(f);
    fputs("#include <stdio.h>\n#include <stdlib.h>\n"
          "static int cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }\n"
          "int main(void) { int v[1000]; for (int i = 0; i < 1000; i++) v[i] = (i * 7919) % 1000;\n"
          "  qsort(v, 1000, sizeof v[0], cmp); long s = 0; for (int i = 0; i < 1000; i++) s += (long)v[i] * i;\n"
          "  printf(\"%ld\\n\", s); return 0; }\n",
          f);
    fclose(f);
    same_output("gcc -O2 -S -o - prog.c > $OUT && gcc -O2 -o prog prog.c && ./prog >> $OUT");
}
