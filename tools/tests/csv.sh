#!/bin/sh
# sae-train's CSV log: the documented header, one row per logged step (every
# --log-every steps, steps 1, 2, 5, ... before that, and the last step), 14
# numeric columns with consistent step, tokens and l0_frac, no checkpoints,
# the constant lr and lambda without schedules, an FVU below 1 that falls,
# no resampling.
# Usage: csv.sh BINDIR
. "$(dirname "$0")/lib.sh"
run "$1/sae-train" --d-in 16 --synth-features 24 --synth-tokens 2048 --d-sae 32 --batch 32 \
    --steps 75 --log-every 20 --log "$tmp/log.csv" --tiles "$tmp/tiles.png" --tiles-count 9
[ "$rc" -eq 0 ] || fail "sae-train exit $rc: $(cat "$tmp/err")"
header=$(head -n 1 "$tmp/log.csv")
[ "$header" = "step,tokens,seconds,loss,l2,l1,l0,l0_frac,dead_frac,checkpoint,lr_t,lambda_t,fvu,resampled" ] ||
    fail "header '$header'"
steps=$(tail -n +2 "$tmp/log.csv" | cut -d, -f1 | tr '\n' ' ')
[ "$steps" = "1 2 5 10 20 40 60 75 " ] || fail "logged steps '$steps', want '1 2 5 10 20 40 60 75 '"
awk -F, -v d_sae=32 -v batch=32 '
    NR == 1 { next }
    NF != 14 { print "row " NR ": " NF " fields"; bad = 1; next }
    {
        for (i = 1; i <= 14; i++)
            if ($i !~ /^-?[0-9.]+(e[-+]?[0-9]+)?$/) { print "row " NR ": field " i " = " $i; bad = 1 }
        if ($2 != $1 * batch) { print "row " NR ": tokens " $2 " != step x batch"; bad = 1 }
        if ($3 < prev_seconds) { print "row " NR ": seconds went back"; bad = 1 }
        prev_seconds = $3
        if ($5 < 0 || $6 < 0 || $7 < 0 || $7 > d_sae) { print "row " NR ": bad losses"; bad = 1 }
        d = $8 - $7 / d_sae; if (d < 0) d = -d
        if (d > 1e-4) { print "row " NR ": l0_frac " $8 " != l0 / d_sae"; bad = 1 }
        if ($9 < 0 || $9 > 1) { print "row " NR ": dead_frac " $9; bad = 1 }
        if ($10 != 0) { print "row " NR ": a checkpoint without --save"; bad = 1 }
        if ($11 != 0.001 || $12 != 0.3) { print "row " NR ": lr_t " $11 ", lambda_t " $12; bad = 1 }
        if (!($13 > 0 && $13 < 1.2)) { print "row " NR ": fvu " $13; bad = 1 }
        if (NR == 2) first_fvu = $13
        last_fvu = $13
        if ($14 != 0) { print "row " NR ": resampled without --resample-every"; bad = 1 }
    }
    END {
        if (!(last_fvu < first_fvu)) { print "fvu did not fall: " first_fvu " then " last_fvu; bad = 1 }
        exit bad
    }' "$tmp/log.csv" || fail "bad rows in the log"
grep -q "^trained 75 steps (2400 tokens)" "$tmp/out" || fail "report: $(cat "$tmp/out")"
# --tiles (d_in 16 = 4 x 4): the gnuplot script next to the PNG, and the PNG.
if command -v gnuplot >/dev/null 2>&1; then
    grep -qF "tiles: $tmp/tiles.png" "$tmp/out" || fail "no tiles line: $(cat "$tmp/out" "$tmp/err")"
    [ "$(head -c 4 "$tmp/tiles.png" | od -An -c | tr -d ' ')" = '211PNG' ] || fail "tiles.png is not a PNG"
    grep -q "of 9 tiles\|9 tiles of 4x4" "$tmp/tiles.gp" || fail "tiles.gp: $(head -n 1 "$tmp/tiles.gp")"
fi
finish
