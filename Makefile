# weft -- goroutines for C.   make | make test | make test-allocfree | make demo | make demos | make fuzz | make bench [SECTIONS="io http"] | make install PREFIX=...
# Variables: SAN=address|undefined|thread  DEBUG=1  CC=clang  PREFIX=/usr/local
.SUFFIXES:
.DELETE_ON_ERROR:

CC      ?= cc
PREFIX  ?= /usr/local
SAN     ?=
DEBUG   ?=
SOVER   := 0
VERSION := 0.1.0

# Each build flavour gets its own object tree so that `make test SAN=address`
# never mixes objects with a plain build.
FLAVOUR := $(if $(SAN),san-$(SAN),$(if $(DEBUG),debug,release))
B       := build/$(FLAVOUR)

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CPPFLAGS += -Iinclude -I. -D_GNU_SOURCE
CFLAGS   ?= $(if $(DEBUG),-O0 -g3 -DWEFT_DEBUG_LEVEL=3,-O2 -g)
CFLAGS   += -std=gnu11 -fPIC -fvisibility=hidden -pthread $(WARN) -MMD -MP
ifneq ($(SAN),)
CFLAGS   += -fsanitize=$(SAN) -fno-omit-frame-pointer -O1 -DWEFT_SAN=1
LDFLAGS  += -fsanitize=$(SAN)
endif
LDLIBS   += -pthread
# io/: liburing and libuv, from Debian's packages (make deps)
IO_CFLAGS := $(shell pkg-config --cflags liburing libuv 2>/dev/null)
IO_LIBS   := $(shell pkg-config --libs liburing libuv 2>/dev/null || echo -luring -luv)
CPPFLAGS  += $(IO_CFLAGS)
LDLIBS    += $(IO_LIBS)

MEM_SRC  := $(filter-out mem/mksizeclass.c mem/preload.c,$(wildcard mem/*.c))
MEM_OBJ  := $(MEM_SRC:%.c=$(B)/%.o)
CORE_SRC := $(MEM_SRC) $(wildcard sched/*.c io/*.c)
CORE_OBJ := $(CORE_SRC:%.c=$(B)/%.o) $(patsubst %.S,$(B)/%.o,$(wildcard sched/*.S))

.PHONY: all lib test bench demo install deps clean check-aarch64
all: lib
lib: $(B)/lib/libweft.a $(B)/lib/libweft.so lib/libweft.a lib/libweft.so lib/libweft-malloc.so lib/weft.pc

# ---- the size-class table is generated (Go's mksizeclasses.go idea) --------
mem/sizeclass_table.h: mem/mksizeclass.c
	$(CC) -O1 -std=gnu11 -Wall -Wextra -o build/mksizeclass $< && build/mksizeclass > $@.tmp && mv $@.tmp $@
$(CORE_OBJ): | mem/sizeclass_table.h
build/mksizeclass: | build
build:
	@mkdir -p build

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<
$(B)/%.o: %.S
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(B)/lib/libweft.a: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^
$(B)/lib/libweft.so: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared -Wl,-soname,libweft.so.$(SOVER) $(LDFLAGS) -o $@.$(VERSION) $^ $(LDLIBS)
	ln -sf libweft.so.$(VERSION) $@.$(SOVER) && ln -sf libweft.so.$(VERSION) $@

PRELOAD_ALIASES := $(foreach f,malloc free calloc realloc malloc_usable_size,-Wl,--defsym=$(f)=weft_$(subst malloc_usable_size,usable_size,$(f)))
# lib/ holds the release flavour: what install and pkg-config see.
ifeq ($(FLAVOUR),release)
lib/libweft.a lib/libweft.so: lib/%: $(B)/lib/%
	@mkdir -p lib
	cp -P $(B)/lib/$*$(if $(filter %.so,$*),*,) lib/
lib/libweft-malloc.so: $(MEM_OBJ) $(B)/mem/preload.o
	@mkdir -p lib
	$(CC) -shared -Wl,-soname,libweft-malloc.so $(PRELOAD_ALIASES) $(LDFLAGS) -o $@ $^ -pthread
else
lib/libweft.a lib/libweft.so lib/libweft-malloc.so:
	$(MAKE) --no-print-directory SAN= DEBUG= $@
endif
$(B)/mem/preload.o: | mem/sizeclass_table.h
PC_TEXT = 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: weft\nDescription: goroutines for C\nVersion: %s\nLibs: -L$${libdir} -lweft\nLibs.private: -pthread -luring -luv\nCflags: -I$${includedir}\n'
lib/weft.pc: Makefile
	@mkdir -p lib
	printf $(PC_TEXT) '$(PREFIX)' '$(VERSION)' > $@

# ---- deps: install what pkg-config cannot find, with apt-get ----------------
DEP_PKGS := liburing:liburing-dev libuv:libuv1-dev criterion:libcriterion-dev
# the clients the demo tests and benchmarks drive the servers with (command:package)
DEP_CMDS := curl:curl redis-cli:redis-tools redis-benchmark:redis-tools nc:netcat-openbsd wrk:wrk
deps:
	@missing=""; \
	command -v pkg-config >/dev/null 2>&1 || missing="pkg-config"; \
	for d in $(DEP_PKGS); do \
	    pc=$${d%%:*}; deb=$${d#*:}; \
	    pkg-config --exists $$pc 2>/dev/null || missing="$$missing $$deb"; \
	done; \
	for d in $(DEP_CMDS); do \
	    c=$${d%%:*}; deb=$${d#*:}; \
	    command -v $$c >/dev/null 2>&1 || case " $$missing " in *" $$deb "*) ;; *) missing="$$missing $$deb";; esac; \
	done; \
	if [ -n "$$missing" ]; then \
	    sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	    echo "make deps: installing$$missing with apt-get"; \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null || \
	    { $$sudo apt-get update -q >/dev/null && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; } || \
	    { echo "make deps: apt-get install$$missing failed" >&2; exit 1; }; \
	fi

# ---- tests ----------------------------------------------------------------
TEST_SRC := $(wildcard tests/test_*.c tests/stress_*.c)
# A whole test binary that runs past this many seconds is killed and counted failed
# (Criterion's per-test timeouts cannot catch a hang in its own runner).
TEST_LIMIT ?= $(if $(filter thread,$(SAN)),900,300)   # TSan: 5-15x slower
TEST_BIN := $(TEST_SRC:tests/%.c=$(B)/tests/%)
TEST_HELPERS := $(wildcard tests/helpers/*.c)
TEST_HELPER_BIN := $(TEST_HELPERS:tests/helpers/%.c=$(B)/tests/helpers/%)

ifeq ($(SAN),thread)
# Criterion cannot start under ThreadSanitizer (Snaipe/Criterion#274): the same test
# files build against tests/tsan's stand-in for its API and runner (a forked child per
# test; a reported race fails it). Not test_context (raw context switches that TSan
# cannot follow: the runtime's own switches tell it, sched/san.h) nor test_preload
# (replacing malloc under TSan's own).
TEST_SRC := $(filter-out tests/test_context.c tests/test_preload.c,$(TEST_SRC))
TEST_BIN := $(TEST_SRC:tests/%.c=$(B)/tests/%)
$(B)/tests/%: tests/%.c tests/tsan/runner.c tests/tsan/criterion/criterion.h $(B)/lib/libweft.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Itests/tsan -I. $(CFLAGS) -fvisibility=default -rdynamic -o $@ $< \
	    tests/tsan/runner.c $(B)/lib/libweft.a $(LDFLAGS) $(LDLIBS)
else
$(B)/tests/%: tests/%.c $(B)/lib/libweft.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -I. $(CFLAGS) $(shell pkg-config --cflags criterion 2>/dev/null) -fvisibility=default -rdynamic -o $@ $< \
	    $(B)/lib/libweft.a $(LDFLAGS) $(shell pkg-config --libs criterion 2>/dev/null) $(LDLIBS)
endif
$(B)/tests/helpers/%: tests/helpers/%.c $(B)/lib/libweft.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -I. $(CFLAGS) -o $@ $< $(B)/lib/libweft.a $(LDFLAGS) $(LDLIBS)

test: deps
	@$(MAKE) --no-print-directory test-run
# The allocator suites and the green-thread workloads once more with every allocation
# on the checked paths (WEFT_DEBUG=allocfree=1: poison, double and interior frees).
ALLOCFREE_TESTS := test_api_mem stress_mem test_preload test_chan test_sched
.PHONY: test-allocfree
test-allocfree: deps
	@$(MAKE) --no-print-directory test-run TEST_ENV=WEFT_DEBUG=allocfree=1 \
	    TEST_BIN="$(ALLOCFREE_TESTS:%=$(B)/tests/%)"
.PHONY: test-run
# (the demos, which tests/test_demo_*.c drive, are added below, where DEMO_BIN is set)
test-run: lib $(TEST_BIN) $(TEST_HELPER_BIN)
	@fail=0; for t in $(TEST_BIN); do \
	    echo "== $$t$(if $(TEST_ENV), ($(TEST_ENV)))"; \
	    $(TEST_ENV) WEFT_TEST_BUILD=$(B) WEFT_TEST_SAN=$(SAN) LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 timeout -k 10 $(TEST_LIMIT) $$t --jobs 2 || { echo "== $$t failed (status $$?; 124 = over $(TEST_LIMIT) s)"; fail=1; }; \
	done; exit $$fail

# ---- benchmarks and demos -------------------------------------------------
BENCH_SRC := $(wildcard tests/bench/*.c)
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(B)/bench/%)
$(B)/bench/%: tests/bench/%.c $(B)/lib/libweft.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -I. $(CFLAGS) -o $@ $< $(B)/lib/libweft.a $(LDFLAGS) $(LDLIBS)
# the charts (build/bench/*.svg, *.png) are copied to tests/bench/charts/, which the
# README shows: commit them with the figures they go with
bench: deps lib $(BENCH_BIN) $(DEMO_BIN)
	@B=$(B) sh tests/bench/run.sh $(SECTIONS)
	@mkdir -p tests/bench/charts && cp build/bench/*.svg tests/bench/charts/ 2>/dev/null || true

# demos/*.c: a program each; demos/lib/*.c: what they share (the parsers, which the
# fuzz targets test too), linked into every demo.
DEMO_SRC := $(wildcard demos/*.c)
DEMO_BIN := $(DEMO_SRC:demos/%.c=$(B)/demos/%)
DEMO_LIB_SRC := $(wildcard demos/lib/*.c)
DEMO_LIB_OBJ := $(DEMO_LIB_SRC:%.c=$(B)/%.o)
$(DEMO_LIB_OBJ): CPPFLAGS += -Idemos
$(B)/demos/%: demos/%.c $(DEMO_LIB_OBJ) $(B)/lib/libweft.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Idemos $(CFLAGS) -o $@ $< $(DEMO_LIB_OBJ) $(B)/lib/libweft.a $(LDFLAGS) $(LDLIBS)
test-run: $(DEMO_BIN)
.PHONY: demos
demos: deps
	@$(MAKE) --no-print-directory lib $(DEMO_BIN)
demo: deps
	@$(MAKE) --no-print-directory lib $(DEMO_BIN) && $(B)/demos/tour

# ---- fuzzing: libFuzzer targets for the demos' parsers (clang) ----------------
# tests/fuzz/fuzz_NAME.c, seeds in tests/fuzz/corpus/NAME/, crashes found and fixed
# kept in tests/fuzz/regress/NAME/ (replayed by every `make fuzz`). FUZZ_SECS each.
FUZZ_CC   ?= clang
FUZZ_SECS ?= 60
FUZZ_SRC  := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN  := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
# fuzz_NAME.c tests demos/lib/NAME.c, a parser that needs neither the runtime nor malloc
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c demos/lib/%.c demos/lib/%.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -g -O1 -std=gnu11 $(WARN) -Iinclude -I. -Idemos -D_GNU_SOURCE -DWEFT_FUZZ=1 \
	    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -o $@ $< demos/lib/$*.c
.PHONY: fuzz fuzz-deps
fuzz-deps:
	@if ! command -v $(FUZZ_CC) >/dev/null 2>&1; then \
	    sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	    echo "make fuzz: installing clang with apt-get"; \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang >/dev/null || \
	    { $$sudo apt-get update -q >/dev/null && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang >/dev/null; } || \
	    { echo "make fuzz: apt-get install clang failed" >&2; exit 1; }; \
	fi
$(FUZZ_BIN): | fuzz-deps
fuzz: $(FUZZ_BIN)
	@set -e; for f in $(FUZZ_BIN); do \
	    n=$${f##*/fuzz_}; mkdir -p build/fuzz/corpus-$$n; \
	    if [ -d tests/fuzz/regress/$$n ] && [ -n "$$(ls tests/fuzz/regress/$$n)" ]; then \
	        echo "== $$f: regressions"; $$f tests/fuzz/regress/$$n/* >/dev/null 2>&1 || { $$f tests/fuzz/regress/$$n/*; exit 1; }; fi; \
	    echo "== $$f: $(FUZZ_SECS) s"; \
	    if $$f -max_total_time=$(FUZZ_SECS) -print_final_stats=1 -artifact_prefix=build/fuzz/$$n- \
	        build/fuzz/corpus-$$n tests/fuzz/corpus/$$n > build/fuzz/$$n.log 2>&1; then \
	        grep -E "^stat::(number_of_executed_units|peak_rss_mb|new_units_added)" build/fuzz/$$n.log; \
	    else tail -60 build/fuzz/$$n.log; echo "== $$f: crashed; the input is in build/fuzz/$$n-*"; exit 1; fi; \
	done

# ---- aarch64: cross-build the runtime and run a smoke program under qemu-user ----
A64_CC ?= aarch64-linux-gnu-gcc
check-aarch64: mem/sizeclass_table.h
	@if ! command -v $(A64_CC) >/dev/null 2>&1 || ! command -v qemu-aarch64 >/dev/null 2>&1; then \
	    sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	    echo "make check-aarch64: installing gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user with apt-get"; \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null || \
	    { $$sudo apt-get update -q >/dev/null && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null; } || \
	    { echo "make check-aarch64: apt-get install failed" >&2; exit 1; }; \
	fi
	@mkdir -p build/aarch64
	$(A64_CC) -static -O2 -std=gnu11 $(WARN) -Iinclude -I. -D_GNU_SOURCE -DWEFT_SMOKE_CONTEXT_ONLY \
	    -o build/aarch64/smoke-ctx tests/aarch64_smoke.c sched/context.c $(wildcard sched/*.S)
	qemu-aarch64 build/aarch64/smoke-ctx
	$(A64_CC) -static -O2 -std=gnu11 $(WARN) -Iinclude -I. -D_GNU_SOURCE -pthread -Wl,--no-warnings \
	    -o build/aarch64/smoke tests/aarch64_smoke.c $(filter-out io/%,$(CORE_SRC)) $(wildcard sched/*.S)
	qemu-aarch64 build/aarch64/smoke

install: lib
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/weft.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 lib/libweft.a lib/libweft-malloc.so $(DESTDIR)$(PREFIX)/lib/
	install -m 755 lib/libweft.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libweft.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libweft.so.$(SOVER)
	ln -sf libweft.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libweft.so
	printf $(PC_TEXT) '$(PREFIX)' '$(VERSION)' > $(DESTDIR)$(PREFIX)/lib/pkgconfig/weft.pc

clean:
	rm -rf build lib

-include $(shell find build -name '*.d' 2>/dev/null)
