#!/bin/sh
# tests/bench/run.sh -- `make bench`: tables of medians and of ratios against baselines
# measured in the same invocation, on the same machine.
#
#   sh tests/bench/run.sh [SECTION]...      sections: malloc callgrind sched io (default: all)
#
# Environment: B (build flavour directory, default build/release: the binaries are
# $B/bench/*), BENCH_REPEAT (runs per cell, default 5), BENCH_ALLOCATORS (default
# "glibc jemalloc tcmalloc mimalloc weft"), BENCH_WORKLOADS (default "pairs ring
# prodcons larson xthread large bigbuf regrow64k regrow1m regrowmix"), BENCH_SCALE (multiplies the
# workloads' op counts, default 1), BENCH_FASTPATH_K (malloc/free pairs under callgrind,
# default 100000), BENCH_WEFT_LIB (the "weft" allocator, default lib/libweft-malloc.so:
# another build to compare), BENCH_IO_SECS (io: each echo run's measurement window,
# default 3 s, after BENCH_IO_WARMUP s, default 1), BENCH_IO_REPEAT (io: runs per cell,
# default 3: the section takes REPEAT x 15 x (SECS + WARMUP + ~0.5) s), BENCH_IO_CONNS
# (default "10 100 1000"), BENCH_PREAD_K (io: preads per green thread, default 1000).
# Baselines are installed here with apt-get when missing (not in `make test`):
# libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0 valgrind golang-go libuv1-dev (make
# deps). A baseline that
# cannot be had is reported and skipped. POSIX sh: make runs it with `sh`.
set -u
B=${B:-build/release}
REPEAT=${BENCH_REPEAT:-5}
TOP=$(pwd)
WEFT_LIB=${BENCH_WEFT_LIB:-"$TOP/lib/libweft-malloc.so"}
ARCH=$(gcc -print-multiarch 2>/dev/null || true)
[ -n "$ARCH" ] || ARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
BASELINES="glibc jemalloc tcmalloc mimalloc"
ALLOCATORS=${BENCH_ALLOCATORS:-"$BASELINES weft"}

install_missing() {
    missing=""
    for pkg in "$@"; do
        dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed' || missing="$missing $pkg"
    done
    [ -z "$missing" ] && return 0
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "make bench: installing$missing with apt-get"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null 2>&1 ||
        { $sudo apt-get update -q >/dev/null 2>&1 &&
          $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null 2>&1; } ||
        echo "make bench: could not install$missing (what needs them is skipped)"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# stats FILE: "median min max" of the numbers in FILE, one a line
stats() { sort -g "$1" | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan nan nan"; else print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[1], v[NR] }'; }

# so_path PACKAGE FILE...: where the package's shared library is (multiarch directory, or
# whatever dpkg -L says), empty if nowhere
# record AREA "GROUP" "SERIES" VALUE: one bar of AREA's chart (charts.sh draws
# $BENCH_OUT/AREA.svg and .png after the run); record_title AREA "TITLE" "Y LABEL"
# starts AREA's data afresh. BENCH_OUT: default build/bench (make bench copies the
# charts into tests/bench/charts/ for the README).
BENCH_OUT=${BENCH_OUT:-$TOP/build/bench}
mkdir -p "$BENCH_OUT"
record_title() { printf '#%s|%s\n' "$2" "$3" > "$BENCH_OUT/$1.dat"; }
record() { printf '%s|%s|%s\n' "$2" "$3" "$4" >> "$BENCH_OUT/$1.dat"; }

so_path() {
    so_pkg=$1; shift
    for so_f in "$@"; do
        for so_d in /usr/lib/$ARCH /usr/lib /usr/lib64 /usr/local/lib; do
            [ -e "$so_d/$so_f" ] && { echo "$so_d/$so_f"; return; }
        done
    done
    for so_f in "$@"; do
        so_p=$(dpkg -L "$so_pkg" 2>/dev/null | grep "/$so_f\$" | head -n 1)
        [ -n "$so_p" ] && [ -e "$so_p" ] && { echo "$so_p"; return; }
    done
    echo ""
}

# preload_of ALLOCATOR: sets PRE (the LD_PRELOAD value; empty for glibc) and returns 1,
# saying why, when that allocator is not available
preload_of() {
    PRE=""
    case $1 in
        glibc) return 0 ;;
        jemalloc) PRE=$(so_path libjemalloc2 libjemalloc.so.2); pkg=libjemalloc2 ;;
        tcmalloc) PRE=$(so_path libtcmalloc-minimal4 libtcmalloc_minimal.so.4); pkg=libtcmalloc-minimal4 ;;
        mimalloc) PRE=$(so_path libmimalloc2.0 libmimalloc.so.2 libmimalloc.so.2.0); pkg=libmimalloc2.0 ;;
        weft) PRE=$WEFT_LIB
              [ -e "$PRE" ] || { echo "  weft: $WEFT_LIB not built (make lib), skipped"; PRE=""; return 1; }
              echo "  weft: $WEFT_LIB, built $(date -r "$WEFT_LIB" '+%F %T' 2>/dev/null)"
              return 0 ;;
        *) echo "  $1: unknown allocator, skipped"; return 1 ;;
    esac
    [ -n "$PRE" ] || { echo "  $1: not found (package $pkg), skipped"; return 1; }
}

# available ALLOCATOR...: sets AVAIL to those of the arguments that can be run, and says
# why the others cannot
available() {
    AVAIL=""
    for a in "$@"; do preload_of "$a" && AVAIL="$AVAIL $a"; done
}

# ---- allocator workloads ------------------------------------------------------------
# Every (workload, allocator) cell runs REPEAT times, the allocators taking turns within
# each repetition, so that the machine's noise falls on all of them alike; the table
# has the medians. ns/op: one op is one malloc or one free (see malloc_bench.c);
# spread: (max - min) / median of the REPEAT times; RSS: the process's peak.
bench_malloc() {
    install_missing libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0
    bin="$B/bench/malloc_bench"
    [ -x "$bin" ] || { echo "malloc: $bin not built (make bench builds it), skipped"; return; }
    tmp=$(mktemp -d)
    echo
    echo "== allocator workloads: median of $REPEAT runs; $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    available $ALLOCATORS
    allocs=$AVAIL
    echo "   ns/op: wall time per malloc or free (with 2 threads: x 2 / ops of both); RSS: peak"
    echo "   x best: time / the best of the baselines present ($BASELINES);"
    echo "   x least: peak RSS / the smallest of theirs"
    printf '%-9s %-9s %9s %7s %9s %8s %8s\n' workload allocator ns/op spread "RSS MiB" "x best" "x least"
    record_title malloc "allocator workloads: time / the best baseline's (lower is better)" "time / best"
    record_title malloc_rss "allocator workloads: peak RSS / the smallest baseline's (lower is better)" "peak RSS / least"
    for w in ${BENCH_WORKLOADS:-pairs ring prodcons larson xthread large bigbuf regrow64k regrow1m regrowmix}; do
        r=0
        while [ $r -lt "$REPEAT" ]; do
            for a in $allocs; do
                preload_of $a >/dev/null
                # the inner sh waits for the program, so that a crash is reported in $tmp/err
                out=$(sh -c '"$@"; exit $?' sh env ${PRE:+LD_PRELOAD=$PRE} "$bin" $w ${BENCH_SCALE:-} 2>"$tmp/err")
                rc=$?
                ns=$(echo "$out" | sed -n 's/.*ns_per_op=\([0-9.]*\).*/\1/p')
                rss=$(echo "$out" | sed -n 's/.*rss_kb=\([0-9]*\).*/\1/p')
                if [ $rc -ne 0 ] || [ -z "$ns" ] || [ -z "$rss" ] || grep -q 'cannot be preloaded' "$tmp/err"; then
                    [ -e "$tmp/$w.$a.fail" ] || { echo "  $w on $a failed (exit status $rc$([ $rc -gt 128 ] && echo ", signal $((rc - 128))")):"
                                                   tail -n 3 "$tmp/err" | sed 's/^/    /'; }
                    echo $rc >> "$tmp/$w.$a.fail"
                    continue
                fi
                echo "$ns" >> "$tmp/$w.$a.ns"
                echo "$rss" >> "$tmp/$w.$a.rss"
            done
            r=$((r + 1))
        done
        best=""; least=""; bestname=""; leastname=""
        for a in $allocs; do
            case " $BASELINES " in *" $a "*) ;; *) continue ;; esac
            [ -s "$tmp/$w.$a.ns" ] || continue
            m=$(median < "$tmp/$w.$a.ns"); s=$(median < "$tmp/$w.$a.rss")
            if [ -z "$best" ] || [ "$(echo "$m $best" | awk '{ print ($1 < $2) }')" = 1 ]; then best=$m; bestname=$a; fi
            if [ -z "$least" ] || [ "$(echo "$s $least" | awk '{ print ($1 < $2) }')" = 1 ]; then least=$s; leastname=$a; fi
        done
        for a in $allocs; do
            if [ ! -s "$tmp/$w.$a.ns" ]; then
                printf '%-9s %-9s %9s\n' $w $a "failed"
                continue
            fi
            read -r m lo hi <<STATS
$(stats "$tmp/$w.$a.ns")
STATS
            s=$(median < "$tmp/$w.$a.rss")
            record malloc "$w" "$a" "$(echo "$m ${best:-0}" | awk '{ print ($2 > 0 ? $1 / $2 : "nan") }')"
            record malloc_rss "$w" "$a" "$(echo "$s ${least:-0}" | awk '{ print ($2 > 0 ? $1 / $2 : "nan") }')"
            nfail=$( [ -e "$tmp/$w.$a.fail" ] && wc -l < "$tmp/$w.$a.fail" || echo 0)
            echo "$w $a $m $lo $hi $s ${best:-0} ${least:-0} $nfail $bestname $leastname" | awk '{
                spread = $3 > 0 ? sprintf("%.0f%%", 100 * ($5 - $4) / $3) : "-"
                tb = $7 > 0 ? sprintf("%.2f", $3 / $7) : "-"
                rb = $8 > 0 ? sprintf("%.2f", $6 / $8) : "-"
                if ($2 == "weft") { tb = "[" tb "]"; rb = "[" rb "]" }
                printf "%-9s %-9s %9.2f %7s %9.1f %8s %8s", $1, $2, $3, spread, $6 / 1024, tb, rb
                if ($2 == "weft") printf "   <== weft (best time: %s, least RSS: %s)", $10, $11
                if ($9 > 0) printf "   (%d runs failed)", $9
                printf "\n"
            }'
        done
    done
    rm -rf "$tmp"
}

# ---- instructions per malloc / free (callgrind) ---------------------------------------
# fastpath K: K malloc(32)/free pairs after a warm-up, through its wrappers fp_malloc and
# fp_free. Collection is on only inside the wrappers; the inclusive cost of the calls
# they make (the allocator's malloc or free and all its callees, whatever name callgrind
# gives the entry point) divided by K is the count per malloc and per free.
bench_callgrind() {
    install_missing valgrind libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0
    command -v valgrind >/dev/null 2>&1 || { echo; echo "callgrind: valgrind missing, skipped"; return; }
    bin="$B/bench/fastpath"
    [ -x "$bin" ] || { echo; echo "callgrind: $bin not built (make bench builds it), skipped"; return; }
    K=${BENCH_FASTPATH_K:-100000}
    tmp=$(mktemp -d)
    echo
    echo "== fast paths: instructions per malloc(32) and per free (callgrind Ir, $K warm pairs)"
    available $ALLOCATORS
    allocs=$AVAIL
    printf '%-9s %9s %9s\n' allocator malloc free
    for a in $allocs; do
        preload_of $a >/dev/null
        out="$tmp/cg.$a"
        if ! env ${PRE:+LD_PRELOAD=$PRE} valgrind --tool=callgrind --callgrind-out-file="$out" \
                --collect-atstart=no --toggle-collect=fp_malloc --toggle-collect=fp_free \
                "$bin" "$K" >"$tmp/err" 2>&1 || [ ! -s "$out" ] || grep -q 'cannot be preloaded' "$tmp/err"; then
            printf '%-9s %9s\n' $a failed
            { grep -m 1 'cannot be preloaded' "$tmp/err" || tail -n 3 "$tmp/err"; } | sed 's/^/    /'
            continue
        fi
        # sum the costs of the call arcs out of fp_malloc and fp_free (fn/cfn names are
        # compressed as "(id) name" the first time, "(id)" after)
        awk -v k="$K" -v a="$a" '
            /^c?fn=/ {
                s = $0; callee = (substr(s, 1, 1) == "c"); sub(/^c?fn=/, "", s)
                if (match(s, /^\([0-9]+\)/)) {
                    id = substr(s, 1, RLENGTH); rest = substr(s, RLENGTH + 1); sub(/^ /, "", rest)
                    if (rest != "") name[id] = rest; else rest = name[id]
                } else rest = s
                if (!callee) cur = rest
                next
            }
            /^calls=/ { grab = (cur == "fp_malloc" || cur == "fp_free"); next }
            grab { cost[cur] += $NF; grab = 0 }
            END { printf "%-9s %9.1f %9.1f\n", a, cost["fp_malloc"] / k, cost["fp_free"] / k }' "$out"
    done
    rm -rf "$tmp"
}

# ---- scheduler, channels, sync: weft against Go ---------------------------------------
bench_sched() {
    install_missing golang-go valgrind
    go_bin=""
    if command -v go >/dev/null 2>&1; then
        go_bin=$(mktemp -d)/gobench
        (cd tests/bench/go && GOFLAGS=-mod=mod GO111MODULE=off go build -o "$go_bin" sched_bench.go) 2>/dev/null || go_bin=""
    fi
    tmp=$(mktemp -d)
    echo
    echo "== scheduler: median of $REPEAT runs, weft against Go ($( [ -n "$go_bin" ] && go version | awk '{print $3}' || echo 'not installed'))"
    printf '%-22s %14s %14s %8s\n' benchmark weft Go "weft/Go"
    record_title sched "scheduler: time / Go's (lower is better)" "time / Go 1.x"
    for spec in "spawn:" "skynet:" "yield:" "parked:" "pingpong:1" "pingpong:2" "chanbuf:" "mutex:2" "sleep:"; do
        b=${spec%%:*}; p=${spec#*:}
        r=0
        while [ $r -lt "$REPEAT" ]; do
            env ${p:+WEFT_MAXPROCS=$p} "$B/bench/sched_bench" $b 2>/dev/null | awk '{print $2}' >> "$tmp/$b$p.weft"
            [ -n "$go_bin" ] && env ${p:+WEFT_MAXPROCS=$p} "$go_bin" $b 2>/dev/null | awk '{print $2}' >> "$tmp/$b$p.go"
            [ "$b" = sleep ] && env ${p:+WEFT_MAXPROCS=$p} "$B/bench/sched_bench" $b 2>/dev/null | awk '{print $5}' >> "$tmp/$b$p.weftcpu"
            [ "$b" = sleep ] && [ -n "$go_bin" ] && "$go_bin" $b 2>/dev/null | awk '{print $5}' >> "$tmp/$b$p.gocpu"
            r=$((r + 1))
        done
        case $b in spawn) n=100000;; skynet) n=1000;; parked) n=1000;; sleep) n=100;; *) n=1000;; esac
        unit=$("$B/bench/sched_bench" $b $n 2>/dev/null | awk '{print $3}')
        w=$(median < "$tmp/$b$p.weft")
        g=$([ -s "$tmp/$b$p.go" ] && median < "$tmp/$b$p.go" || echo nan)
        label="$b${p:+ (nprocs $p)}"
        printf '%-22s %11s %-2s %11s %-2s %8s\n' "$label" $w "$unit" $g "$unit" $(echo "$w $g" | awk '{ if ($2 == "nan" || $2 == 0) print "-"; else printf "%.2f", $1 / $2 }')
        record sched "$label" weft "$(echo "$w $g" | awk '{ print ($2 == "nan" || $2 == 0) ? "nan" : $1 / $2 }')"
        record sched "$label" Go "$(echo "$g" | awk '{ print ($1 == "nan" || $1 == 0) ? "nan" : 1 }')"
        if [ "$b" = sleep ]; then
            w=$(median < "$tmp/$b$p.weftcpu")
            g=$([ -s "$tmp/$b$p.gocpu" ] && median < "$tmp/$b$p.gocpu" || echo nan)
            printf '%-22s %11s %-2s %11s %-2s %8s\n' "sleep CPU per sleep" $w ns $g ns $(echo "$w $g" | awk '{ if ($2 == "nan" || $2 == 0) print "-"; else printf "%.2f", $1 / $2 }')
        fi
    done
    if command -v valgrind >/dev/null 2>&1; then
        y1=$(valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$tmp/y1" "$B/bench/sched_bench" yield 50000 >/dev/null 2>&1; cat "$tmp"/y1-* | awk '/^summary:/ { if ($2 > m) m = $2 } END { print m }')
        y2=$(valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$tmp/y2" "$B/bench/sched_bench" yield 100000 >/dev/null 2>&1; cat "$tmp"/y2-* | awk '/^summary:/ { if ($2 > m) m = $2 } END { print m }')
        echo "instructions per yield (callgrind, the worker thread): $(echo "$y1 $y2" | awk '{ printf "%.0f", ($2 - $1) / 200000 }')"
    fi
    rm -rf "$tmp"
}

# ---- I/O: echo servers and file reads, weft against libuv and Go ----------------------
# Echo: each server in turn (started for the run, killed after it), on 127.0.0.1, under
# echo_load: CONNS connections in a closed loop of 64-byte round trips, BENCH_IO_WARMUP s
# of warm-up, then BENCH_IO_SECS s measured. Servers take turns within each repetition
# so that the machine's noise falls on all of them alike. The load generator shares
# the CPUs with the server: rt/s is what the pair gets; "srv us" (the server's CPU per
# round trip, /proc/PID/stat in clock ticks) is the server's cost alone.
IO_SERVERS="weft-uring weft-uv uv go1 go2"
IO_BASELINES="uv go1 go2"
IO_LIVE=""                          # pids of the servers running now (the trap kills them)

io_label() {
    case $1 in
        weft-uring) echo "weft uring P2" ;;  weft-uv) echo "weft uv P2" ;;
        uv) echo "libuv 1 loop" ;;           go1) echo "Go MAXPROCS 1" ;;  go2) echo "Go MAXPROCS 2" ;;
    esac
}

# io_start NAME: starts server NAME on a free port: sets SPID and SPORT, or returns 1
# (saying why). A port something already answers on is skipped; a server that does not
# answer within 5 s (or exits: its port was taken meanwhile) is killed and the next
# port tried.
io_start() {
    tries=0
    while [ $tries -lt 8 ]; do
        SPORT=$IO_PORT
        IO_PORT=$((IO_PORT + 1)); [ $IO_PORT -gt 60000 ] && IO_PORT=20000
        tries=$((tries + 1))
        "$B/bench/echo_load" -p $SPORT -z -d 0 2>/dev/null && continue
        case $1 in
            weft-uring) WEFT_IO=uring "$B/bench/echo_weft" $SPORT 2 2>"$tmp/$1.err" & ;;
            weft-uv) WEFT_IO=uv "$B/bench/echo_weft" $SPORT 2 2>"$tmp/$1.err" & ;;
            uv) "$B/bench/echo_uv" $SPORT 2>"$tmp/$1.err" & ;;
            go1) GOMAXPROCS=1 "$go_echo" $SPORT 2>"$tmp/$1.err" & ;;
            go2) GOMAXPROCS=2 "$go_echo" $SPORT 2>"$tmp/$1.err" & ;;
        esac
        SPID=$!
        IO_LIVE="$IO_LIVE $SPID"
        if "$B/bench/echo_load" -p $SPORT -z -d 5 2>/dev/null && kill -0 $SPID 2>/dev/null; then
            return 0
        fi
        io_stop
        [ -s "$tmp/$1.err" ] && { echo "  $1: $(tail -n 1 "$tmp/$1.err")"; return 1; }
    done
    echo "  $1: no free port found"
    return 1
}

io_stop() {
    kill $SPID 2>/dev/null
    wait $SPID 2>/dev/null
    IO_LIVE=$(echo "$IO_LIVE" | tr ' ' '\n' | grep -vx "$SPID" | tr '\n' ' ')
}

bench_io() {
    install_missing golang-go libuv1-dev
    tmp=$(mktemp -d)
    IO_PORT=$((20000 + $$ % 10000))
    trap '[ -n "$IO_LIVE" ] && kill $IO_LIVE 2>/dev/null; rm -rf "$tmp"' EXIT
    trap 'exit 130' INT TERM
    secs=${BENCH_IO_SECS:-3}; warm=${BENCH_IO_WARMUP:-1}; rep=${BENCH_IO_REPEAT:-3}
    go_echo=""
    if command -v go >/dev/null 2>&1; then
        go_echo="$tmp/goecho"
        (cd tests/bench/go && GOFLAGS=-mod=mod GO111MODULE=off go build -o "$go_echo" echo.go) 2>/dev/null || go_echo=""
    fi
    servers=""
    for sv in $IO_SERVERS; do
        case $sv in
            weft-*) [ -x "$B/bench/echo_weft" ] || { [ $sv = weft-uv ] || echo "io: $B/bench/echo_weft not built, weft skipped"; continue; } ;;
            uv) [ -x "$B/bench/echo_uv" ] || { echo "io: $B/bench/echo_uv not built, skipped"; continue; } ;;
            go*) [ -n "$go_echo" ] || { echo "io: Go not installed, $sv skipped"; continue; } ;;
        esac
        servers="$servers $sv"
    done
    echo
    echo "== echo: 64-byte round trips on 127.0.0.1, median of $rep runs of ${secs} s (after ${warm} s warm-up);"
    echo "   $(nproc) CPUs shared by server and load, load average $(cut -d' ' -f1-3 /proc/loadavg);" \
         "Go $( [ -n "$go_echo" ] && go version | awk '{print $3}' || echo 'not installed'), libuv $(pkg-config --modversion libuv 2>/dev/null)"
    echo "   rt/s: round trips per second, all connections; p50/p99: latency; srv/load us: CPU per round trip"
    echo "   of the server / of echo_load; stalled: connections (median) with no round trip in the window;"
    echo "   x best: rt/s / the best baseline's ($IO_BASELINES, same connections)"
    if [ ! -x "$B/bench/echo_load" ]; then
        echo "io: $B/bench/echo_load not built (make bench builds it), echo skipped"
    else
        for c in ${BENCH_IO_CONNS:-10 100 1000}; do
            r=0
            while [ $r -lt "$rep" ]; do
                for sv in $servers; do
                    [ -e "$tmp/$sv.dead" ] && continue
                    io_start $sv || { touch "$tmp/$sv.dead"; continue; }
                    case $sv in weft-*) sed -n 's/^echo_weft: backend \([^,]*\),.*/\1/p' "$tmp/$sv.err" | head -n 1 > "$tmp/$sv.backend" ;; esac
                    out=$("$B/bench/echo_load" -p $SPORT -c $c -d $secs -w $warm -s $SPID 2>"$tmp/load.err")
                    rc=$?
                    if [ $rc -ne 0 ] || ! kill -0 $SPID 2>/dev/null; then
                        echo "  $sv, $c connections: failed (echo_load status $rc$(kill -0 $SPID 2>/dev/null || echo ', the server died'))"
                        tail -n 2 "$tmp/load.err" "$tmp/$sv.err" 2>/dev/null | grep -v '^==>\|^$\|backend' | sed 's/^/    /'
                        io_stop
                        continue
                    fi
                    io_stop
                    for key in rt_per_s p50_us p99_us server_cpu_us load_cpu_us stalled; do
                        echo "$out" | sed -n "s/.* $key=\([^ ]*\).*/\1/p" >> "$tmp/$c.$sv.$key"
                    done
                done
                r=$((r + 1))
            done
        done
        printf '%-6s %-15s %-9s %9s %6s %9s %9s %7s %8s %7s %7s\n' conns server backend rt/s spread "p50 us" "p99 us" "srv us" "load us" stalled "x best"
        record_title echo "TCP echo, 64-byte round trips on 127.0.0.1 (higher is better)" "round trips / s"
        record_title echo_cpu "TCP echo: server CPU per round trip (lower is better)" "us"
        for c in ${BENCH_IO_CONNS:-10 100 1000}; do
            best=""; bestname=""
            for sv in $IO_BASELINES; do
                [ -s "$tmp/$c.$sv.rt_per_s" ] || continue
                m=$(median < "$tmp/$c.$sv.rt_per_s")
                if [ -z "$best" ] || [ "$(echo "$m $best" | awk '{ print ($1 > $2) }')" = 1 ]; then best=$m; bestname=$sv; fi
            done
            for sv in $servers; do
                case $sv in weft-*) be=$(cat "$tmp/$sv.backend" 2>/dev/null) ;; uv) be=libuv ;; go*) be=netpoll ;; esac
                if [ ! -s "$tmp/$c.$sv.rt_per_s" ]; then
                    printf '%-6s %-15s %-9s %9s\n' $c "$(io_label $sv)" "${be:--}" failed
                    continue
                fi
                read -r m lo hi <<STATS
$(stats "$tmp/$c.$sv.rt_per_s")
STATS
                record echo "$c connections" "$(io_label $sv)" "$m"
                record echo_cpu "$c connections" "$(io_label $sv)" "$(median < "$tmp/$c.$sv.server_cpu_us")"
                echo "$c|$(io_label $sv)|${be:--}|$m|$lo|$hi|$(median < "$tmp/$c.$sv.p50_us")|$(median < "$tmp/$c.$sv.p99_us")|$(median < "$tmp/$c.$sv.server_cpu_us")|$(median < "$tmp/$c.$sv.load_cpu_us")|${best:-0}|$sv|$(io_label "$bestname")|$(median < "$tmp/$c.$sv.stalled")" | awk -F'|' '{
                    spread = $4 > 0 ? sprintf("%.0f%%", 100 * ($6 - $5) / $4) : "-"
                    xb = $11 > 0 ? sprintf("%.2f", $4 / $11) : "-"
                    weft = ($12 ~ /^weft/)
                    if (weft) xb = "[" xb "]"
                    printf "%-6s %-15s %-9s %9.0f %6s %9.1f %9.1f %7.2f %8.2f %7s %7s", $1, $2, $3, $4, spread, $7, $8, $9, $10, $14, xb
                    if (weft) printf "   <== weft (best baseline: %s)", $13
                    printf "\n"
                }'
            done
        done
        cat "$tmp"/weft-*.backend 2>/dev/null | grep -qx none &&
            echo "   backend none: weft runs without a poller (that backend could not be set up): its I/O calls block their workers"
    fi

    # File reads: file_pread runs both halves (weft_pread from 1000 green threads on 2 Ps,
    # and pread(2) on 2 pthreads) in one process; once per backend each repetition.
    echo
    K=${BENCH_PREAD_K:-1000}
    echo "== file: random 4 KiB preads of a cached 64 MiB file, 1000 x $K of them, median of $rep runs"
    echo "   weft: 1000 green threads on 2 Ps, weft_pread; pthreads: pread(2) on 2 threads (run in both processes)"
    if [ ! -x "$B/bench/file_pread" ]; then
        echo "io: $B/bench/file_pread not built (make bench builds it), skipped"
    else
        r=0
        while [ $r -lt "$rep" ]; do
            for be in uring uv; do
                out=$(WEFT_IO=$be "$B/bench/file_pread" 1000 $K 2 2>"$tmp/pread.err")
                rc=$?
                if [ $rc -ne 0 ]; then
                    [ -e "$tmp/pread.$be.fail" ] || { echo "  file_pread WEFT_IO=$be failed (exit status $rc):"; tail -n 3 "$tmp/pread.err" | sed 's/^/    /'; }
                    touch "$tmp/pread.$be.fail"
                    continue
                fi
                echo "$out" | sed -n 's/.*weft_per_s=\([^ ]*\).*/\1/p' >> "$tmp/pread.$be"
                echo "$out" | sed -n 's/.*pthread_per_s=\([^ ]*\).*/\1/p' >> "$tmp/pread.pthread"
                echo "$out" | sed -n 's/^backend=\([^ ]*\).*/\1/p' > "$tmp/pread.$be.backend"
            done
            r=$((r + 1))
        done
        pt=$([ -s "$tmp/pread.pthread" ] && median < "$tmp/pread.pthread" || echo nan)
        printf '%-22s %12s %6s %10s\n' reader preads/s spread "x pthreads"
        record_title file "4 KiB preads of a cached file, 1000 green threads vs 2 pthreads (higher is better)" "preads / s"
        for be in uring uv; do
            if [ ! -s "$tmp/pread.$be" ]; then printf '%-22s %12s\n' "weft WEFT_IO=$be" failed; continue; fi
            read -r m lo hi <<STATS
$(stats "$tmp/pread.$be")
STATS
            record file "preads" "weft ($(cat "$tmp/pread.$be.backend"))" "$m"
            echo "weft ($(cat "$tmp/pread.$be.backend")) $m $lo $hi $pt" | awk '{
                spread = $3 > 0 ? sprintf("%.0f%%", 100 * ($5 - $4) / $3) : "-"
                x = $6 > 0 ? sprintf("[%.2f]", $3 / $6) : "-"
                printf "%-22s %12.0f %6s %10s\n", $1 " " $2, $3, spread, x }'
        done
        if [ -s "$tmp/pread.pthread" ]; then
            read -r m lo hi <<STATS
$(stats "$tmp/pread.pthread")
STATS
            record file "preads" "pthreads (pread)" "$m"
            echo "$m $lo $hi" | awk '{ spread = $1 > 0 ? sprintf("%.0f%%", 100 * ($3 - $2) / $1) : "-"
                                       printf "%-22s %12.0f %6s %10s\n", "pthreads (pread)", $1, spread, "1.00" }'
        fi
        cat "$tmp"/pread.*.backend 2>/dev/null | grep -qx none &&
            echo "   weft (none): weft runs without a poller (that backend could not be set up): weft_pread blocks its worker"
    fi
    [ -n "$IO_LIVE" ] && kill $IO_LIVE 2>/dev/null
    IO_LIVE=""
    rm -rf "$tmp"
    trap - EXIT INT TERM
}

# A section is a function bench_NAME, listed here; with no arguments all of them run.
# tests/bench/section_NAME.sh files (sourced here, with the helpers above) define more,
# each appending its NAME to SECTIONS.
SECTIONS="malloc callgrind sched io"
for f in "$TOP"/tests/bench/section_*.sh; do
    [ -e "$f" ] && . "$f"
done
[ $# -eq 0 ] && set -- $SECTIONS
for section in "$@"; do
    case " $SECTIONS " in
        *" $section "*) ;;
        *) echo "run.sh: unknown section $section ($SECTIONS)" >&2; exit 2 ;;
    esac
done
for section in "$@"; do
    t0=$(date +%s)
    bench_$section
    echo "   ($section: $(($(date +%s) - t0)) s)"
done
# the charts of what this run measured (and of earlier runs' areas still in BENCH_OUT)
install_missing gnuplot-nox
echo
sh "$TOP/tests/bench/charts.sh" "$BENCH_OUT"
