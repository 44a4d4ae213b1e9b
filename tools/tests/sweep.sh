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

# --- architectures: lambda for relu, k for topk, one trade-off graph ----------
# (16 of 48 features active per token: no all-zero token, whose L0 would be
# below k at the start; see recipe.sh)
# shellcheck disable=SC2086
run "$sweep" $args --synth-active 16 --steps 200 --arch relu,topk --lambdas 0.1,1 --ks 2,4,8 --out "$tmp/archs"
[ "$rc" -eq 0 ] || fail "--arch relu,topk: exit $rc: $(cat "$tmp/err")"
cat "$tmp/out"
runs=$(awk -F, 'NR > 1 { printf "%s:%s:%s ", $9, $1, $10 }' "$tmp/archs/final.csv")
[ "$runs" = "relu:0.1:0 relu:1:0 topk:0:2 topk:0:4 topk:0:8 " ] || fail "--arch relu,topk: runs (arch:lambda:k) '$runs'"
# TopK: L0 is k in every training row and at evaluation; L2 falls as k grows
awk -F, 'NR > 1 && $16 == "topk" && $8 != $17 { print "step " $2 " of k " $17 ": l0 " $8; bad = 1 } END { exit bad }' \
    "$tmp/archs/sweep.csv" || fail "topk: training l0 is not k"
awk -F, 'NR > 1 && $9 == "topk" {
        if ($4 != $10) { print "k " $10 ": l0 " $4; bad = 1 }
        if (n++ && !($2 < l2)) { print "l2 does not fall with k: " l2 " then " $2; bad = 1 }
        l2 = $2
    } END { exit bad }' "$tmp/archs/final.csv" || fail "topk: trends in final.csv"
[ "$(awk '($1 == "relu" || $1 == "topk") && NF == 10' "$tmp/out" | wc -l)" -eq 5 ] || fail "the table should have 5 rows"
grep -q "^arch_list = 'relu topk'$" "$tmp/archs/sweep.gp" || fail "sweep.gp: no curve per architecture"
expect_usage_error "--ks: applies to --arch topk, batchtopk or matryoshka" "$sweep" --ks 2,4 --out "$tmp/x"
expect_usage_error "--lambdas: applies to --arch relu or jumprelu" "$sweep" --arch topk --lambdas 1 --out "$tmp/x"
expect_usage_error "--ks: 2.5 is not a whole number in [1, d_sae = 96]" "$sweep" --arch topk --ks 2.5 --d-sae 96 --out "$tmp/x"
expect_usage_error "--ks: 0 is not a whole number in [1, d_sae = 512]" "$sweep" --arch batchtopk --ks 0,4 --out "$tmp/x"

if command -v gnuplot >/dev/null 2>&1; then
    sig=$(head -c 4 "$tmp/archs/tradeoff.png" 2>/dev/null | od -An -c | tr -d ' ')
    [ "$sig" = '211PNG' ] || fail "archs/tradeoff.png is not a PNG ($sig)"
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
