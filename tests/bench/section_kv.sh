# tests/bench/section_kv.sh -- sourced by tests/bench/run.sh (its helpers: install_missing,
# median, $B, $TOP, BENCH_REPEAT): demos/kv against Debian's redis-server.
#
#   sh tests/bench/run.sh kv
#
# Throughput: redis-benchmark -t set,get,incr,lpush -n N -c 50 at -P 1 and -P 16, each
# server started fresh on a free loopback port for its run (redis-server --save ''
# --appendonly no: no persistence, as kv has none), the servers taking turns within each
# repetition. "srv us" is the server's CPU (user + system, /proc/PID/stat) per request
# over that server's whole run of the four tests: the load generator shares the CPUs,
# so req/s is what the pair gets, srv us what the server alone costs.
# Memory: a fresh server, its RSS, then redis-benchmark -t set -n N -r N -P 16 (keys
# "key:000000123456", values "xxx": about 0.63 N distinct keys), DBSIZE and RSS again:
# bytes per key = RSS delta / keys.
#
# Environment: BENCH_KV_N (default 1000000: requests per test, and the memory run's),
# BENCH_KV_REPEAT (throughput runs per cell, default 1; the table has medians),
# BENCH_KV_PROCS (kv's --procs; default: the CPUs less one, at least 1, leaving one for
# redis-benchmark, which runs on one thread, as redis-server does).
SECTIONS="$SECTIONS kv"

KV_LIVE=""

# kv_start NAME: start kv or redis on a free port; sets KV_PID and KV_PORT, or returns 1
# saying why. A port something answers on is skipped; a server that does not answer
# PING within 5 s (or exits: its port was taken meanwhile) is killed and the next tried.
kv_start() {
    kv_tries=0
    while [ $kv_tries -lt 8 ]; do
        KV_PORT=$KV_NEXT_PORT
        KV_NEXT_PORT=$((KV_NEXT_PORT + 1)); [ $KV_NEXT_PORT -gt 60000 ] && KV_NEXT_PORT=20000
        kv_tries=$((kv_tries + 1))
        nc -z 127.0.0.1 $KV_PORT 2>/dev/null && continue
        case $1 in
            kv) "$B/demos/kv" --port $KV_PORT --procs $kv_procs >/dev/null 2>"$kv_tmp/kv.err" & ;;
            redis) redis-server --port $KV_PORT --bind 127.0.0.1 --save '' --appendonly no \
                       --daemonize no >"$kv_tmp/redis.err" 2>&1 & ;;
        esac
        KV_PID=$!
        KV_LIVE="$KV_LIVE $KV_PID"
        kv_i=0
        while [ $kv_i -lt 50 ] && kill -0 $KV_PID 2>/dev/null; do
            [ "$(redis-cli -p $KV_PORT PING 2>/dev/null)" = PONG ] && return 0
            sleep 0.1
            kv_i=$((kv_i + 1))
        done
        kv_stop
    done
    echo "  $1: could not be started ($(tail -n 1 "$kv_tmp/$1.err" 2>/dev/null))"
    return 1
}

kv_stop() {
    kill $KV_PID 2>/dev/null
    wait $KV_PID 2>/dev/null
    KV_LIVE=$(echo "$KV_LIVE" | tr ' ' '\n' | grep -vx "$KV_PID" | tr '\n' ' ')
}

kv_cpu() { awk '{ print $14 + $15 }' /proc/$1/stat 2>/dev/null || echo 0; }     # clock ticks
kv_rss() { awk '/^VmRSS:/ { print $2 }' /proc/$1/status 2>/dev/null || echo 0; }    # KiB

bench_kv() {
    install_missing redis-server redis-tools
    kv_n=${BENCH_KV_N:-1000000}
    kv_rep=${BENCH_KV_REPEAT:-1}
    kv_ncpu=$(nproc)
    kv_procs=${BENCH_KV_PROCS:-$([ "$kv_ncpu" -gt 1 ] && echo $((kv_ncpu - 1)) || echo 1)}
    echo
    echo "== kv: demos/kv against redis-server, redis-benchmark -c 50 -n $kv_n, median of $kv_rep;"
    echo "   $kv_ncpu CPUs shared by server and load, load average $(cut -d' ' -f1-3 /proc/loadavg);" \
         "kv --procs $kv_procs ($([ -n "${WEFT_IO:-}" ] && echo "WEFT_IO=$WEFT_IO" || echo "default backend"))"
    if [ ! -x "$B/demos/kv" ]; then
        echo "kv: $B/demos/kv not built (make demos builds it), skipped"
        return
    fi
    for c in redis-benchmark redis-cli nc; do
        command -v $c >/dev/null 2>&1 || { echo "kv: $c missing, skipped"; return; }
    done
    kv_servers="kv"
    if command -v redis-server >/dev/null 2>&1; then
        kv_servers="kv redis"
        echo "   $(redis-server --version | cut -d' ' -f1-3)"
    else
        echo "   redis-server missing: kv alone"
    fi
    kv_tmp=$(mktemp -d)
    KV_NEXT_PORT=$((21000 + $$ % 10000))
    trap '[ -n "$KV_LIVE" ] && kill $KV_LIVE 2>/dev/null; rm -rf "$kv_tmp"' EXIT
    trap 'exit 130' INT TERM
    kv_tests="SET GET INCR LPUSH"
    r=0
    while [ $r -lt "$kv_rep" ]; do
        for P in 1 16; do
            for sv in $kv_servers; do
                kv_start $sv || continue
                c0=$(kv_cpu $KV_PID)
                redis-benchmark -p $KV_PORT -t set,get,incr,lpush -n $kv_n -c 50 -P $P --csv \
                    >"$kv_tmp/out" 2>"$kv_tmp/err"
                c1=$(kv_cpu $KV_PID)
                kill -0 $KV_PID 2>/dev/null || echo "  $sv died during -P $P"
                kv_stop
                for t in $kv_tests; do
                    v=$(sed -n "s/^\"$t\",\"\([0-9.]*\)\".*/\1/p" "$kv_tmp/out")
                    [ -n "$v" ] && echo "$v" >> "$kv_tmp/$sv.$P.$t"
                done
                ntests=$(grep -c '^"[A-Z]' "$kv_tmp/out")
                if [ "$ntests" -gt 0 ]; then
                    echo "$c0 $c1 $kv_n $ntests" | awk -v hz="$(getconf CLK_TCK)" \
                        '{ printf "%.2f\n", ($2 - $1) / hz * 1e6 / ($3 * $4) }' >> "$kv_tmp/$sv.$P.cpu"
                else
                    echo "  $sv -P $P: no results ($(tail -n 1 "$kv_tmp/err"))"
                fi
            done
        done
        r=$((r + 1))
    done
    printf '%-6s %3s %12s %12s %9s %8s %8s\n' test -P "kv req/s" "redis req/s" "kv/redis" \
        "kv us" "redis us"
    for P in 1 16; do
        for t in $kv_tests; do
            k=$([ -s "$kv_tmp/kv.$P.$t" ] && median < "$kv_tmp/kv.$P.$t" || echo nan)
            rd=$([ -s "$kv_tmp/redis.$P.$t" ] && median < "$kv_tmp/redis.$P.$t" || echo nan)
            kc=$([ -s "$kv_tmp/kv.$P.cpu" ] && median < "$kv_tmp/kv.$P.cpu" || echo nan)
            rc=$([ -s "$kv_tmp/redis.$P.cpu" ] && median < "$kv_tmp/redis.$P.cpu" || echo nan)
            echo "$t $P $k $rd $kc $rc" | awk '{
                ratio = ($3 != "nan" && $4 != "nan" && $4 > 0) ? sprintf("[%.2f]", $3 / $4) : "-"
                printf "%-6s %3s %12s %12s %9s %8s %8s\n", $1, $2, $3, $4, ratio, $5, $6 }'
        done
    done
    echo "   kv us, redis us: the server's CPU time per request (the four tests together)"

    # memory per key: a fresh server each
    echo
    echo "== kv: memory per key after redis-benchmark -t set -n $kv_n -r $kv_n -P 16 (\"key:<12 digits>\" = \"xxx\")"
    printf '%-6s %10s %12s %12s %9s\n' server keys "RSS MiB" "bytes/key" "kv/redis"
    for sv in $kv_servers; do
        kv_start $sv || continue
        m0=$(kv_rss $KV_PID)
        redis-benchmark -p $KV_PORT -t set -n $kv_n -r $kv_n -P 16 -q >/dev/null 2>&1
        keys=$(redis-cli -p $KV_PORT DBSIZE 2>/dev/null)
        m1=$(kv_rss $KV_PID)
        kv_stop
        echo "$keys $m0 $m1" > "$kv_tmp/$sv.mem"
    done
    rb=$([ -s "$kv_tmp/redis.mem" ] && awk '{ if ($1 > 0) printf "%.1f", ($3 - $2) * 1024 / $1 }' "$kv_tmp/redis.mem")
    for sv in $kv_servers; do
        [ -s "$kv_tmp/$sv.mem" ] || { printf '%-6s %10s\n' $sv failed; continue; }
        awk -v sv=$sv -v rb="${rb:-0}" '{
            b = $1 > 0 ? ($3 - $2) * 1024 / $1 : 0
            ratio = (sv == "kv" && rb > 0) ? sprintf("[%.2f]", b / rb) : ""
            printf "%-6s %10d %12.1f %12.1f %9s\n", sv, $1, ($3 - $2) / 1024, b, ratio }' "$kv_tmp/$sv.mem"
    done
    [ -n "$KV_LIVE" ] && kill $KV_LIVE 2>/dev/null
    KV_LIVE=""
    rm -rf "$kv_tmp"
    trap - EXIT INT TERM
}
