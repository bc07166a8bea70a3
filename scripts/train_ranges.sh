#!/usr/bin/env bash
# Train one sealed-bid preset across the ranges of issue 4 (n in 2..10, F(v) = v^a with a in [0.5, 4], reserve in
# [0, 0.5)) at its full default budget and print bne_rmse and utility_loss_rel per setting.
# usage: bash scripts/train_ranges.sh auction_first_price|auction_all_pay   (about 45 s per setting on 2 cores)
# The output is recorded in BENCHMARKS.md ("Training").
set -euo pipefail
PRESET=${1:?usage: train_ranges.sh PRESET}
OUT=${OUT:-runs/train_ranges}/$PRESET
rm -rf "$OUT"; mkdir -p "$OUT"
SETTINGS=(
  "2 uniform 0" "5 uniform 0" "10 uniform 0" "2 power:0.5 0" "10 power:0.5 0"
  "10 power:4 0" "10 power:4 0.2" "10 power:4 0.45" "3 power:2 0.1" "3 power:2 0.2" "5 power:2.5 0.3"
  "2 uniform 0.4" "2 uniform 0.45" "2 uniform 0.49" "2 power:0.5 0.3" "2 power:0.5 0.45" "2 power:4 0.4"
  "10 power:0.5 0.1" "10 power:0.5 0.45"
)
for s in "${SETTINGS[@]}"; do
  read -r n dist r <<<"$s"
  name="n${n}_${dist/:/}_r${r}"
  coasejax train "$PRESET" -q --out "$OUT/$name" --set env.n_bidders="$n" --set env.value_dist="$dist" \
    --set env.reserve_price="$r" >/dev/null
  python - "$OUT/$name" "$s" <<'PY'
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
ok = s["bne_rmse"] <= 0.02 and s["utility_loss_rel"] <= 0.01
print(f"n={sys.argv[2].split()[0]:<3} {sys.argv[2].split()[1]:<10} reserve {sys.argv[2].split()[2]:<5} "
      f"bne_rmse={s['bne_rmse']:.4f} utility_loss_rel={s['utility_loss_rel']:+.5f} train={s['train_seconds']:.1f}s"
      f"{'' if ok else '   <- FAILS'}")
PY
done
