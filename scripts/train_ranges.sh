#!/usr/bin/env bash
# Train the generic sealed-bid presets across the ranges of issue 16 (n in 2..10, F(v) = v^a with a in [0.5, 4],
# reserve in [0, 0.45]) at their full default budgets and print bne_rmse, utility_loss_rel and the training time per
# setting against the targets (bne_rmse ≤ 0.01, utility_loss_rel ≤ 0.005, within 60 s of training on 2 cores).
# usage: bash scripts/train_ranges.sh [PRESET ...]   (default: first price, second price and all-pay; recorded in
# BENCHMARKS.md, "Auctions with the generic policy"). Extra overrides: SET="policy.hidden=[64,64]" bash ...
set -euo pipefail
cd "$(dirname "$0")/.."
PRESETS=("$@")
[ ${#PRESETS[@]} -gt 0 ] || PRESETS=(auction_first_price auction_second_price auction_all_pay)
SETTINGS=(
  "2 uniform 0" "5 uniform 0" "10 uniform 0" "3 power:2 0.1" "5 uniform 0.2"
  "2 power:0.5 0" "2 power:0.5 0.45" "2 power:4 0" "2 power:4 0.45"
  "10 power:0.5 0" "10 power:0.5 0.45" "10 power:4 0" "10 power:4 0.45"
)
EXTRA=()
for s in ${SET:-}; do EXTRA+=(--set "$s"); done
for preset in "${PRESETS[@]}"; do
  OUT=${OUT:-runs/train_ranges}/$preset
  rm -rf "$OUT"; mkdir -p "$OUT"
  for s in "${SETTINGS[@]}"; do
    read -r n dist r <<<"$s"
    name="n${n}_${dist/:/}_r${r}"
    coasejax train "$preset" -q --out "$OUT/$name" --set env.n_bidders="$n" --set env.value_dist="$dist" \
      --set env.reserve_price="$r" "${EXTRA[@]}" >/dev/null
    python - "$OUT/$name" "$preset" "$s" <<'PY'
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
n, dist, r = sys.argv[3].split()
ok = s["bne_rmse"] <= 0.01 and s["utility_loss_rel"] <= 0.005 and s["train_seconds"] <= 60
print(f"{sys.argv[2]:<22} n={n:<3} {dist:<10} reserve {r:<5} bne_rmse={s['bne_rmse']:.4f} "
      f"utility_loss_rel={s['utility_loss_rel']:+.5f} train={s['train_seconds']:.1f}s{'' if ok else '   <- misses'}",
      flush=True)
PY
  done
done
