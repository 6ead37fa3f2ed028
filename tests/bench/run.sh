#!/bin/sh
# tests/bench/run.sh -- `make bench`: tables of medians and ratios against baselines
# measured in the same invocation. Sections: malloc, callgrind, sched (default: all).
#   sh tests/bench/run.sh [malloc|callgrind|sched]...     BENCH_REPEAT=5 (runs per cell)
# $B is the build flavour directory (build/release). Baselines are installed here, not
# in `make test`: libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0 valgrind golang-go.
set -u
B=${B:-build/release}
REPEAT=${BENCH_REPEAT:-5}
TOP=$(pwd)
WEFT_LIB="$TOP/lib/libweft-malloc.so"
ARCH=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)

install_missing() {
    missing=""
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
    done
    [ -z "$missing" ] && return 0
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "make bench: installing$missing with apt-get"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null 2>&1 ||
        { $sudo apt-get update -q >/dev/null 2>&1 &&
          $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null 2>&1; } ||
        echo "make bench: could not install$missing (those baselines are skipped)"
}

find_lib() {   # first existing path among the arguments
    for f in "$@"; do [ -e "$f" ] && { echo "$f"; return; }; done
    echo ""
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---- allocator workloads ------------------------------------------------------------
bench_malloc() {
    install_missing libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0
    L=/usr/lib/$ARCH
    JE=$(find_lib $L/libjemalloc.so.2)
    TC=$(find_lib $L/libtcmalloc_minimal.so.4)
    MI=$(find_lib $L/libmimalloc.so.2 $L/libmimalloc.so.2.0)
    names="glibc jemalloc tcmalloc mimalloc weft"
    tmp=$(mktemp -d)
    echo
    echo "== allocator: median of $REPEAT runs; ns per op (one malloc or one free), peak RSS;"
    echo "   ratios against the best (time) and smallest (RSS) of glibc, jemalloc, tcmalloc, mimalloc"
    printf '%-9s %-9s %10s %10s %9s %9s\n' workload allocator ns/op "RSS MiB" "x best" "x RSS"
    for w in pairs ring prodcons larson large; do
        r=0
        while [ $r -lt "$REPEAT" ]; do
            for a in $names; do
                case $a in
                    glibc) pre="" ;;
                    jemalloc) pre=$JE ;;
                    tcmalloc) pre=$TC ;;
                    mimalloc) pre=$MI ;;
                    weft) pre=$WEFT_LIB ;;
                esac
                if [ "$a" != glibc ] && [ -z "$pre" ]; then continue; fi
                out=$(env ${pre:+LD_PRELOAD=$pre} "$B/bench/malloc_bench" $w 2>/dev/null)
                echo "$out" | sed -n 's/.*ns_per_op=\([0-9.]*\).*/\1/p' >> "$tmp/$w.$a.ns"
                echo "$out" | sed -n 's/.*rss_kb=\([0-9]*\).*/\1/p' >> "$tmp/$w.$a.rss"
            done
            r=$((r + 1))
        done
        best=""; small=""
        for a in glibc jemalloc tcmalloc mimalloc; do
            [ -s "$tmp/$w.$a.ns" ] || continue
            m=$(median < "$tmp/$w.$a.ns"); s=$(median < "$tmp/$w.$a.rss")
            best=$(echo "$best $m" | awk '{ b = $1; for (i = 2; i <= NF; i++) if ($i < b) b = $i; print b }')
            small=$(echo "$small $s" | awk '{ b = $1; for (i = 2; i <= NF; i++) if ($i < b) b = $i; print b }')
        done
        for a in $names; do
            [ -s "$tmp/$w.$a.ns" ] || { printf '%-9s %-9s %10s\n' $w $a "(missing)"; continue; }
            m=$(median < "$tmp/$w.$a.ns"); s=$(median < "$tmp/$w.$a.rss")
            printf '%-9s %-9s %10.2f %10.1f %9.2f %9.2f%s\n' $w $a $m $(echo "$s" | awk '{print $1/1024}') \
                $(echo "$m $best" | awk '{print $1/$2}') $(echo "$s $small" | awk '{print $1/$2}') \
                "$([ $a = weft ] && echo '   <- weft')"
        done
    done
    rm -rf "$tmp"
}

# ---- instructions per malloc / free (callgrind) ---------------------------------------
bench_callgrind() {
    install_missing valgrind libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0
    command -v valgrind >/dev/null 2>&1 || { echo "callgrind: valgrind missing, skipped"; return; }
    L=/usr/lib/$ARCH
    K=100000
    echo
    echo "== fast paths: instructions per malloc(32) and per free, callgrind, $K pairs"
    printf '%-9s %10s %10s\n' allocator malloc free
    for a in glibc jemalloc tcmalloc mimalloc weft; do
        case $a in
            glibc) pre="" ;;
            jemalloc) pre=$(find_lib $L/libjemalloc.so.2) ;;
            tcmalloc) pre=$(find_lib $L/libtcmalloc_minimal.so.4) ;;
            mimalloc) pre=$(find_lib $L/libmimalloc.so.2 $L/libmimalloc.so.2.0) ;;
            weft) pre=$WEFT_LIB ;;
        esac
        if [ "$a" != glibc ] && [ -z "$pre" ]; then continue; fi
        res=""
        for fn in malloc free; do
            # inclusive cost of one function over the loop, less a run with K=0
            c1=$(env ${pre:+LD_PRELOAD=$pre} valgrind --tool=callgrind --callgrind-out-file=/dev/stdout \
                --collect-atstart=no --toggle-collect=$fn --toggle-collect=weft_$fn "$B/bench/fastpath" $K 2>/dev/null |
                awk '/^summary:/ { print $2 }')
            c0=$(env ${pre:+LD_PRELOAD=$pre} valgrind --tool=callgrind --callgrind-out-file=/dev/stdout \
                --collect-atstart=no --toggle-collect=$fn --toggle-collect=weft_$fn "$B/bench/fastpath" 0 2>/dev/null |
                awk '/^summary:/ { print $2 }')
            res="$res $(echo "${c1:-0} ${c0:-0} $K" | awk '{ printf "%.1f", ($1 - $2) / $3 }')"
        done
        printf '%-9s %10s %10s\n' $a $res
    done
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
        unit=$("$B/bench/sched_bench" $b 10 2>/dev/null | awk '{print $3}')
        case $b in spawn) n=100000;; skynet) n=1000;; parked) n=1000;; sleep) n=100;; *) n=1000;; esac
        unit=$("$B/bench/sched_bench" $b $n 2>/dev/null | awk '{print $3}')
        w=$(median < "$tmp/$b$p.weft")
        g=$([ -s "$tmp/$b$p.go" ] && median < "$tmp/$b$p.go" || echo nan)
        label="$b${p:+ (nprocs $p)}"
        printf '%-22s %11s %-2s %11s %-2s %8s\n' "$label" $w "$unit" $g "$unit" $(echo "$w $g" | awk '{ if ($2 == "nan" || $2 == 0) print "-"; else printf "%.2f", $1 / $2 }')
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

[ $# -eq 0 ] && set -- malloc callgrind sched
for section in "$@"; do
    case $section in
        malloc) bench_malloc ;;
        callgrind) bench_callgrind ;;
        sched) bench_sched ;;
        *) echo "run.sh: unknown section $section" >&2; exit 2 ;;
    esac
done
