#!/bin/sh
# sae-features on a small case (tests/browser/make_case.c: a model, data,
# labels and the features' firing counts computed from sae_encode): the files
# it writes and their numbers, and each bad command line or input (exit 2,
# one line).
# Usage: test_cli.sh BINDIR MAKE_CASE PYTHON3
. "$(dirname "$0")/../tests/lib.sh"
feat=$1/sae-features
py=$3
"$2" "$tmp/case" 12 40 300 5 || exit 1
c=$tmp/case

run "$feat" "$c/ckpt" "$c/data.npy" --out "$tmp/dash" --labels "$c/labels.txt" --top 5 --neighbors 3
[ "$rc" -eq 0 ] || fail "a run: exit $rc: $(cat "$tmp/err")"
grep -qF "wrote $tmp/dash/dashboard.html" "$tmp/err" || fail "no progress line: $(cat "$tmp/err")"
for f in dashboard.html features.csv features.json feature_stats.safetensors; do
    [ -s "$tmp/dash/$f" ] || fail "$f missing"
done
ls "$tmp/dash" | grep -q '\.tmp$' && fail "a temporary file is left in the output directory"
# the CSV's and JSON's counts are the firing counts sae_encode gives, the
# JSON's L0 their mean over the rows, and each top list has the card's rows
"$py" - "$tmp/dash" "$c/expected.json" <<'PYEOF' || fail "the numbers differ (above)"
import csv, json, sys
dash, expected = sys.argv[1], json.load(open(sys.argv[2]))
rows = list(csv.DictReader(open(dash + "/features.csv")))
data = json.load(open(dash + "/features.json"))
counts = expected["counts"]
assert [int(r["count"]) for r in rows] == counts, "CSV counts"
assert data["features"]["count"] == counts, "JSON counts"
assert abs(data["meta"]["l0"] - sum(counts) / 300) < 1e-7 * data["meta"]["l0"], data["meta"]["l0"]
card = expected["card"]
assert data["features"]["top_rows"][card] == expected["top_rows"], data["features"]["top_rows"][card]
assert [int(v) for v in rows[card]["top_rows"].split()] == expected["top_rows"]
assert all(len(n) == 3 and i not in n for i, n in enumerate(data["features"]["nn"]))
assert data["meta"]["image"] is None and data["meta"]["d_sae"] == 40
labels = {r["id"]: r["label"] for r in data["rows"]}
assert labels[expected["top_rows"][0]] == "row %d <context>\tw%d\t& after" % ((expected["top_rows"][0],) * 2)
print("ok: counts, L0, top rows, neighbours and labels as sae_encode gives them")
PYEOF
# the page holds the same JSON, with no '</' that could end its script early
grep -c '</script>' "$tmp/dash/dashboard.html" | grep -qx 2 || fail "dashboard.html: not exactly two </script>"

expect_usage_error "needs --out DIR" "$feat" "$c/ckpt" "$c/data.npy"
expect_usage_error "needs CHECKPOINT and DATA" "$feat" --out "$tmp/x" "$c/ckpt"
expect_usage_error "$c/nope" "$feat" "$c/nope" "$c/data.npy" --out "$tmp/x"
expect_usage_error "--image 5x5: 25 pixels, but d_in is 12" "$feat" "$c/ckpt" "$c/data.npy" --out "$tmp/x" --image 5x5
expect_usage_error "--image: 'x3' is not HxW" "$feat" "$c/ckpt" "$c/data.npy" --out "$tmp/x" --image x3
expect_usage_error "--hist-range: '2,1' is not LO,HI" "$feat" "$c/ckpt" "$c/data.npy" --out "$tmp/x" --hist-range 2,1
expect_usage_error "--dense" "$feat" "$c/ckpt" "$c/data.npy" --out "$tmp/x" --dense 2
head -n 299 "$c/labels.txt" >"$tmp/short.txt"
expect_usage_error "has 299 lines, the data 300 rows" "$feat" "$c/ckpt" "$c/data.npy" --out "$tmp/x" --labels "$tmp/short.txt"
printf 'not numpy' >"$tmp/bad.npy"
expect_usage_error "$tmp/bad.npy" "$feat" "$c/ckpt" "$tmp/bad.npy" --out "$tmp/x"
run "$feat" --help
[ "$rc" -eq 0 ] && grep -qF "Usage: sae-features" "$tmp/out" || fail "--help: exit $rc"
exit $((failures > 0))
