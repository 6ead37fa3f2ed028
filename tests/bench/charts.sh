#!/bin/sh
# tests/bench/charts.sh -- draw what `make bench` measured: one chart per area (SVG and
# PNG, gnuplot), each group of bars one row of a section's table, weft beside each
# baseline.
#
#   sh tests/bench/charts.sh DIR
#
# DIR holds AREA.dat files written by run.sh's record(): a first line
# "#title|y label", then "group|series|value" lines (a value may be "nan": no bar).
# The charts go to DIR/AREA.svg and DIR/AREA.png. POSIX sh.
set -u
DIR=${1:?usage: charts.sh DIR}
command -v gnuplot >/dev/null 2>&1 || { echo "charts: gnuplot missing, no charts"; exit 0; }
for dat in "$DIR"/*.dat; do
    [ -e "$dat" ] || continue
    area=$(basename "$dat" .dat)
    # a section that recorded no number (all "nan" or empty) has no chart to draw
    grep -q '|[0-9.eE+-]*[0-9]$' "$dat" || { echo "charts: $area: no figures, skipped"; continue; }
    table="$DIR/$area.table"
    # rows: groups in order of first appearance; columns: series in order of first appearance
    awk -F'|' '
        NR == 1 && /^#/ { next }
        {
            if (!($1 in gi)) { gi[$1] = ++ng; gname[ng] = $1 }
            if (!($2 in si)) { si[$2] = ++ns; sname[ns] = $2 }
            v[gi[$1], si[$2]] = $3
        }
        END {
            printf "group"
            for (s = 1; s <= ns; s++) printf "\t\"%s\"", sname[s]
            printf "\n"
            for (g = 1; g <= ng; g++) {
                printf "\"%s\"", gname[g]
                for (s = 1; s <= ns; s++) printf "\t%s", ((g, s) in v) && v[g, s] != "" ? v[g, s] : "NaN"
                printf "\n"
            }
        }' "$dat" > "$table"
    nseries=$(head -1 "$table" | awk -F'\t' '{ print NF - 1 }')
    [ "$nseries" -ge 1 ] || continue
    title=$(head -1 "$dat" | sed -n 's/^#\([^|]*\)|.*/\1/p')
    ylabel=$(head -1 "$dat" | sed -n 's/^#[^|]*|\(.*\)/\1/p')
    for fmt in svg png; do
        case $fmt in
            svg) term="set terminal svg size 960,480 dynamic font 'sans,11' background '#ffffff'" ;;
            png) term="set terminal pngcairo size 960,480 font 'sans,10'" ;;
        esac
        gnuplot 2>"$DIR/$area.gnuplot.err" <<EOF || { echo "charts: $area.$fmt failed:"; sed 's/^/    /' "$DIR/$area.gnuplot.err"; }
$term
set output '$DIR/$area.$fmt'
set title "$title"
set ylabel "$ylabel"
set datafile separator "\t"
set datafile missing "NaN"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key outside right top vertical
set grid ytics
set yrange [0:*]
set xtics rotate by -25 left nomirror
plot for [i=2:$((nseries + 1))] '$table' using i:xtic(1) title columnheader(i)
EOF
    done
    rm -f "$DIR/$area.gnuplot.err"
    echo "charts: $DIR/$area.svg, $DIR/$area.png"
done
