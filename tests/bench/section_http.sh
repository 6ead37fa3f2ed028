# tests/bench/section_http.sh -- run.sh's http section (sourced by tests/bench/run.sh,
# which provides install_missing, median, $B, $TOP; POSIX sh).
#
#   sh tests/bench/run.sh http
#
# demos/httpd (weft, io_uring and libuv backends, 2 procs) against Go's net/http
# (tests/bench/go/httpd.go, GOMAXPROCS 1 and 2) and a plain single-loop libuv server
# (tests/bench/http_uv.c), under wrk -t1 on 127.0.0.1: 100 and 1000 connections, for
# GET / ("hello, world\n") and for a 64 KiB file. Each server runs alone, started for
# its cells and killed after them; wrk shares the machine's CPUs with it.
# Environment: BENCH_HTTP_SECS (each wrk run, default 10), BENCH_HTTP_REPEAT (runs per
# cell, default 1; the table has medians), BENCH_HTTP_CONNS (default "100 1000").
# Columns: req/s; p50 and p99 latency (wrk --latency, ms); errs: wrk's socket errors and
# non-2xx replies; x best: req/s / the best baseline's in that row's (conns, path).

SECTIONS="$SECTIONS http"

HTTP_SERVERS="weft-uring weft-uv uv go1 go2"
HTTP_BASELINES="uv go1 go2"
HTTP_LIVE=""

http_label() {
    case $1 in
        weft-uring) echo "httpd uring P2" ;;  weft-uv) echo "httpd uv P2" ;;
        uv) echo "libuv 1 loop" ;;  go1) echo "Go MAXPROCS 1" ;;  go2) echo "Go MAXPROCS 2" ;;
    esac
}

# http_up PORT: does something answer HTTP there?
http_up() {
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/" 2>/dev/null
}

# http_start NAME ROOT: starts server NAME on a free port: sets HPID and HPORT, or
# returns 1 (saying why).
http_start() {
    tries=0
    while [ $tries -lt 8 ]; do
        HPORT=$HTTP_PORT
        HTTP_PORT=$((HTTP_PORT + 1)); [ $HTTP_PORT -gt 60000 ] && HTTP_PORT=20000
        tries=$((tries + 1))
        http_up $HPORT && continue
        case $1 in
            weft-uring) WEFT_IO=uring "$B/demos/httpd" --port $HPORT --procs 2 --root "$2" >/dev/null 2>"$htmp/$1.err" & ;;
            weft-uv) WEFT_IO=uv "$B/demos/httpd" --port $HPORT --procs 2 --root "$2" >/dev/null 2>"$htmp/$1.err" & ;;
            uv) "$B/bench/http_uv" $HPORT "$2" 2>"$htmp/$1.err" & ;;
            go1) GOMAXPROCS=1 "$go_httpd" $HPORT "$2" 2>"$htmp/$1.err" & ;;
            go2) GOMAXPROCS=2 "$go_httpd" $HPORT "$2" 2>"$htmp/$1.err" & ;;
        esac
        HPID=$!
        HTTP_LIVE="$HTTP_LIVE $HPID"
        w=0
        while [ $w -lt 50 ] && kill -0 $HPID 2>/dev/null; do
            http_up $HPORT && return 0
            sleep 0.1
            w=$((w + 1))
        done
        http_stop
        [ -s "$htmp/$1.err" ] && { echo "  $1: $(tail -n 1 "$htmp/$1.err")"; return 1; }
    done
    echo "  $1: no free port found"
    return 1
}

http_stop() {
    kill $HPID 2>/dev/null
    wait $HPID 2>/dev/null
    HTTP_LIVE=$(echo "$HTTP_LIVE" | tr ' ' '\n' | grep -vx "$HPID" | tr '\n' ' ')
}

# wrk's latency as milliseconds ("512.00us", "1.46ms", "1.02s")
http_ms() {
    echo "$1" | awk '{ v = $1; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 }
                       else if (v ~ /ms$/) { sub(/ms$/, "", v) }
                       else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
                       else if (v ~ /m$/) { sub(/m$/, "", v); v *= 60000 }
                       printf "%.3f", v }'
}

bench_http() {
    install_missing golang-go libuv1-dev wrk curl
    htmp=$(mktemp -d)
    HTTP_PORT=$((20000 + ($$ + 5000) % 10000))
    trap '[ -n "$HTTP_LIVE" ] && kill $HTTP_LIVE 2>/dev/null; rm -rf "$htmp"' EXIT
    trap 'exit 130' INT TERM
    secs=${BENCH_HTTP_SECS:-10}; rep=${BENCH_HTTP_REPEAT:-1}; conns_list=${BENCH_HTTP_CONNS:-"100 1000"}
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -H -n)" 2>/dev/null
    mkdir -p "$htmp/root"
    head -c 65536 /dev/urandom > "$htmp/root/file64k.bin"
    go_httpd=""
    if command -v go >/dev/null 2>&1; then
        go_httpd="$htmp/gohttpd"
        (cd "$TOP/tests/bench/go" && GOFLAGS=-mod=mod GO111MODULE=off GOCACHE="${GOCACHE:-$htmp/gocache}" \
            go build -o "$go_httpd" httpd.go) >"$htmp/gobuild.err" 2>&1 ||
            { echo "http: go build failed: $(tail -n 1 "$htmp/gobuild.err")"; go_httpd=""; }
    fi
    servers=""
    for sv in $HTTP_SERVERS; do
        case $sv in
            weft-*) [ -x "$B/demos/httpd" ] || { [ $sv = weft-uv ] || echo "http: $B/demos/httpd not built (make demos), skipped"; continue; } ;;
            uv) [ -x "$B/bench/http_uv" ] || { echo "http: $B/bench/http_uv not built (make bench builds it), skipped"; continue; } ;;
            go*) [ -n "$go_httpd" ] || { [ $sv = go2 ] || echo "http: Go not installed, skipped"; continue; } ;;
        esac
        servers="$servers $sv"
    done
    echo
    echo "== http: wrk -t1 -d${secs}s --latency on 127.0.0.1, median of $rep run(s) per cell;"
    echo "   $(nproc) CPUs shared by server and wrk, load average $(cut -d' ' -f1-3 /proc/loadavg);" \
         "Go $( [ -n "$go_httpd" ] && go version | awk '{print $3}' || echo 'not installed'), libuv $(pkg-config --modversion libuv 2>/dev/null)"
    echo "   paths: / (hello, world: 13 bytes), /file64k.bin (a 64 KiB file, page-cached)"
    echo "   x best: req/s / the best baseline's ($(for b in $HTTP_BASELINES; do printf '%s, ' "$(http_label $b)"; done | sed 's/, $//'))"
    command -v wrk >/dev/null 2>&1 || { echo "http: wrk not installed, skipped"; rm -rf "$htmp"; trap - EXIT INT TERM; return; }
    r=0
    while [ $r -lt "$rep" ]; do
        for sv in $servers; do
            [ -e "$htmp/$sv.dead" ] && continue
            http_start $sv "$htmp/root" || { touch "$htmp/$sv.dead"; continue; }
            for c in $conns_list; do
                for path in / /file64k.bin; do
                    key="$c.$(echo $path | tr -d '/.' | sed 's/^$/root/').$sv"
                    out=$(wrk -t1 -c$c -d${secs}s --latency "http://127.0.0.1:$HPORT$path" 2>&1)
                    rps=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
                    if [ -z "$rps" ] || ! kill -0 $HPID 2>/dev/null; then
                        echo "  $sv, $c connections, $path: failed$(kill -0 $HPID 2>/dev/null || echo ' (the server died)')"
                        echo "$out" | tail -n 2 | sed 's/^/    /'
                        continue
                    fi
                    echo "$rps" >> "$htmp/$key.rps"
                    http_ms "$(echo "$out" | awk '$1 == "50%" { print $2 }')" >> "$htmp/$key.p50"
                    echo >> "$htmp/$key.p50"
                    http_ms "$(echo "$out" | awk '$1 == "99%" { print $2 }')" >> "$htmp/$key.p99"
                    echo >> "$htmp/$key.p99"
                    echo "$out" | awk '/Socket errors/ { gsub(/,/, ""); s += $4 + $6 + $8 + $10 }
                                       /Non-2xx/ { s += $NF } END { print s + 0 }' >> "$htmp/$key.errs"
                done
            done
            http_stop
        done
        r=$((r + 1))
    done
    printf '%-15s %6s %-13s %10s %9s %9s %6s %7s\n' server conns path req/s "p50 ms" "p99 ms" errs "x best"
    for c in $conns_list; do
        for path in / /file64k.bin; do
            pk=$(echo $path | tr -d '/.' | sed 's/^$/root/')
            best=""; bestname=""
            for sv in $HTTP_BASELINES; do
                [ -s "$htmp/$c.$pk.$sv.rps" ] || continue
                m=$(median < "$htmp/$c.$pk.$sv.rps")
                if [ -z "$best" ] || [ "$(echo "$m $best" | awk '{ print ($1 > $2) }')" = 1 ]; then best=$m; bestname=$sv; fi
            done
            for sv in $servers; do
                key="$c.$pk.$sv"
                if [ ! -s "$htmp/$key.rps" ]; then
                    printf '%-15s %6s %-13s %10s\n' "$(http_label $sv)" $c $path failed
                    continue
                fi
                echo "$(http_label $sv)|$c|$path|$(median < "$htmp/$key.rps")|$(grep . "$htmp/$key.p50" | median)|$(grep . "$htmp/$key.p99" | median)|$(median < "$htmp/$key.errs")|${best:-0}|$sv|$(http_label "$bestname")" |
                    awk -F'|' '{
                        xb = $8 > 0 ? sprintf("%.2f", $4 / $8) : "-"
                        weft = ($9 ~ /^weft/)
                        if (weft) xb = "[" xb "]"
                        printf "%-15s %6s %-13s %10.0f %9.2f %9.2f %6d %7s", $1, $2, $3, $4, $5, $6, $7, xb
                        if (weft) printf "   <== weft (best baseline: %s)", $10
                        printf "\n"
                    }'
            done
        done
    done
    [ -n "$HTTP_LIVE" ] && kill $HTTP_LIVE 2>/dev/null
    HTTP_LIVE=""
    rm -rf "$htmp"
    trap - EXIT INT TERM
}
