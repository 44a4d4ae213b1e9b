#!/bin/sh
# sae-sweep on small synthetic data: the trends the sweep exists to show
# (larger lambda: smaller L1, larger L2, fewer active features), the CSV
# files, the graphs when gnuplot is there, and the CSV kept when it is not;
# --save-dir: a checkpoint per lambda that loads again and evaluates to the
# table's figures.
# Usage: sweep.sh BINDIR
. "$(dirname "$0")/lib.sh"
sweep=$1/sae-sweep
args="--d-in 24 --synth-features 48 --synth-active 3 --synth-tokens 8192 --d-sae 96 --batch 128
      --steps 400 --lr 3e-3 --lambdas 0.01,0.1,1"
# shellcheck disable=SC2086
run "$sweep" $args --out "$tmp/sweep" --save-dir "$tmp/ck"
[ "$rc" -eq 0 ] || fail "sae-sweep exit $rc: $(cat "$tmp/err")"
cat "$tmp/out"
[ "$(head -n 1 "$tmp/sweep/sweep.csv")" = "lambda,step,tokens,seconds,loss,l2,l1,l0,l0_frac,dead_frac,checkpoint,lr_t,lambda_t,fvu,resampled,arch,k" ] ||
    fail "sweep.csv header: $(head -n 1 "$tmp/sweep/sweep.csv")"
[ "$(head -n 1 "$tmp/sweep/final.csv")" = "lambda,l2,l1,l0,l0_frac,fvu,dead_frac,mmcs,arch,k" ] ||
    fail "final.csv header: $(head -n 1 "$tmp/sweep/final.csv")"
for lambda in 0.01 0.1 1; do
    rows=$(grep -c "^$lambda," "$tmp/sweep/sweep.csv")
    # steps 1 2 5 10 then every 20 up to 400
    [ "$rows" -eq 24 ] || fail "lambda $lambda: $rows rows in sweep.csv, want 24"
    grep -q "^$lambda,400,51200,.*,relu,0$" "$tmp/sweep/sweep.csv" || fail "lambda $lambda: no row for step 400"
done
# Monotone trends over lambda, in final.csv (evaluation) and in the table.
awk -F, 'NR > 2 {
        if (!($2 > l2)) { print "l2 does not grow: " l2 " then " $2; bad = 1 }
        if (!($3 < l1)) { print "l1 does not fall: " l1 " then " $3; bad = 1 }
        if (!($4 < l0)) { print "l0 does not fall: " l0 " then " $4; bad = 1 }
    }
    NR > 1 { l2 = $2; l1 = $3; l0 = $4 }
    END { if (NR != 4) { print NR - 1 " lambdas"; bad = 1 }; exit bad }' "$tmp/sweep/final.csv" ||
    fail "trends in final.csv"
[ "$(awk '$1 == "relu" && $3 == 0 && NF == 10' "$tmp/out" | wc -l)" -eq 3 ] || fail "the table should have 3 rows"
cp "$tmp/out" "$tmp/table"

# --save-dir: each lambda's checkpoint (the last row of its block marks it)
# loads in sae-train, which finds nothing left to train and evaluates the
# model to the sweep's own figures.
grep -qx "checkpoints: 3 of 3 in $tmp/ck/" "$tmp/err" || fail "--save-dir: $(tail -n 1 "$tmp/err")"
[ "$(awk -F, '$11 == 1 { printf "%s:%s ", $1, $2 }' "$tmp/sweep/sweep.csv")" = "0.01:400 0.1:400 1:400 " ] ||
    fail "sweep.csv does not mark one checkpoint per lambda at step 400"
for lambda in 0.01 0.1 1; do
    dir=$tmp/ck/lambda_$lambda
    for f in sae_weights.safetensors cfg.json optimizer.safetensors train_state.txt; do
        [ -s "$dir/$f" ] || fail "lambda $lambda: no $f"
    done
    run "$1/sae-train" --resume "$dir"
    [ "$rc" -eq 0 ] || fail "lambda $lambda: resume: exit $rc: $(cat "$tmp/err")"
    grep -qx "nothing to train: already at step 400 of 400" "$tmp/out" || fail "lambda $lambda: $(head -n 1 "$tmp/out")"
    grep -q "relu, lambda $lambda, lr 0.003, batch 128" "$tmp/err" || fail "lambda $lambda: $(cat "$tmp/err")"
    want=$(awk -v l="$lambda" '$1 == "relu" && $2 == l { print $4 }' "$tmp/table")
    got=$(sed -n 's/^eval on .*: l2 \([^ ]*\) .*/\1/p' "$tmp/out")
    [ -n "$want" ] && [ "$got" = "$want" ] || fail "lambda $lambda: the checkpoint evaluates to l2 '$got', the table says '$want'"
done
expect_usage_error "--save-dir '$tmp/no/ck': the parent directory does not exist" \
    "$sweep" --steps 5 --out "$tmp/x" --save-dir "$tmp/no/ck"

if command -v gnuplot >/dev/null 2>&1; then
    for png in l1 l2 l0_frac tradeoff; do
        sig=$(head -c 4 "$tmp/sweep/$png.png" 2>/dev/null | od -An -c | tr -d ' ')
        [ "$sig" = '211PNG' ] || fail "$png.png is not a PNG ($sig)"
    done
else
    echo "gnuplot not installed: not checking the graphs"
fi

# Without gnuplot it says so, keeps the CSV files and still succeeds.
# shellcheck disable=SC2086
run env PATH=/nonexistent "$sweep" $args --steps 20 --out "$tmp/nognuplot"
[ "$rc" -eq 0 ] || fail "without gnuplot: exit $rc"
grep -q "gnuplot not found" "$tmp/err" || fail "without gnuplot: no message: $(cat "$tmp/err")"
[ -s "$tmp/nognuplot/sweep.csv" ] && [ -s "$tmp/nognuplot/final.csv" ] || fail "without gnuplot: no CSV"
[ ! -e "$tmp/nognuplot/l1.png" ] || fail "without gnuplot: a PNG appeared"
finish
