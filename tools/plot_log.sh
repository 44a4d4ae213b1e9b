#!/bin/sh
# Plot a sae-train CSV log (--log FILE): loss, L2, L1 and L0 against the
# training step on a logarithmic step axis, four panels in one PNG.
#   tools/plot_log.sh run.csv run.png ["title"]
# Needs gnuplot (Debian: gnuplot-nox).
set -eu
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: $0 LOG.csv OUT.png [TITLE]" >&2
    exit 2
fi
log=$1 png=$2 title=${3:-$1}
if ! command -v gnuplot >/dev/null 2>&1; then
    echo "$0: gnuplot not found (Debian: apt-get install gnuplot-nox)" >&2
    exit 1
fi
case "$(head -n 1 "$log")" in
step,tokens,seconds,loss,l2,l1,l0,l0_frac,dead_frac,checkpoint,lr_t,lambda_t,fvu,resampled) ;;
step,tokens,seconds,loss,l2,l1,l0,l0_frac,dead_frac,checkpoint) ;; # before the recipe columns
step,tokens,seconds,loss,l2,l1,l0,l0_frac,dead_frac) ;; # before the checkpoint column
*)
    echo "$0: $log: not a sae-train log (unexpected header)" >&2
    exit 2
    ;;
esac
# gnuplot strings are single-quoted; double any quote in the arguments.
q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/''/g")"; }
gnuplot <<GNUPLOT
set terminal pngcairo size 1000,700 font 'sans,10' linewidth 1.5
set output $(q "$png")
set datafile separator ','
set multiplot layout 2,2 title $(q "$title") font 'sans,12' noenhanced
set grid
set logscale x
set format x '10^{%T}'
set xlabel 'training step (log scale)'
unset key
file = $(q "$log")
set logscale y
set title 'loss = L2 + lambda L1'
plot file using 'step':'loss' with lines linecolor rgb '#1b9e77'
set title 'L2 (squared reconstruction error)'
plot file using 'step':'l2' with lines linecolor rgb '#d95f02'
set title 'L1 (sum_i f_i ||W_{dec,i}||, before lambda)'
plot file using 'step':'l1' with lines linecolor rgb '#7570b3'
set title 'L0 (active features per token) and dead features'
set ylabel 'L0 (log scale)'
set y2label 'dead features (% of d_{sae})'
set y2range [0:100]
set y2tics
set ytics nomirror
set key top right
plot file using 'step':'l0' with lines linecolor rgb '#e7298a' title 'L0', \
     file using 'step':(100 * column('dead_frac')) axes x1y2 with lines dashtype 2 linecolor rgb '#666666' title 'dead %'
unset multiplot
GNUPLOT
echo "$png"
