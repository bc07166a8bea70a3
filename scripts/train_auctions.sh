#!/usr/bin/env bash
# Train every auction preset (and the must-show variants) at its full default budget and print the metrics.
# The output of one run is recorded in BENCHMARKS.md ("Training").
set -euo pipefail
OUT=${OUT:-runs/train_auctions}
rm -rf "$OUT"; mkdir -p "$OUT"
run() {  # name preset [--set ...]
  local name=$1 preset=$2; shift 2
  /usr/bin/time -f "%e" -o "$OUT/$name.wall" coasejax train "$preset" -q --out "$OUT/$name" "$@"
  python - "$OUT/$name" "$name" <<'PY'
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
wall = open(sys.argv[1] + ".wall").read().strip().splitlines()[-1]
bne = s.get("bne_rmse")
print(f"{sys.argv[2]:<30} bne_rmse={'n/a   ' if bne is None else f'{bne:.4f}'} utility_loss_rel={s['utility_loss_rel']:.5f} "
      f"revenue={s['revenue']:.4f} efficiency={s['efficiency']:.4f} train={s['train_seconds']:.1f}s "
      f"compile={s['compile_seconds']:.1f}s wall={wall}s")
PY
}
run first_price_n2 auction_first_price_features
run first_price_n5 auction_first_price_features --set env.n_bidders=5
run second_price_n3 auction_second_price
run all_pay_n2 auction_all_pay_features
run double_k0.5 auction_double
run first_price_n10_power0.5_r0.1 auction_first_price_features --set env.n_bidders=10 --set env.value_dist=power:0.5 --set env.reserve_price=0.1
run all_pay_n3_power2_r0.1 auction_all_pay_features --set env.n_bidders=3 --set env.value_dist=power:2 --set env.reserve_price=0.1
run second_price_n5_power2.5_r0.2 auction_second_price --set env.n_bidders=5 --set env.value_dist=power:2.5 --set env.reserve_price=0.2
# all-pay across the ranges: the far corner (m = a(n − 1) = 36), and n = 2 learned from a start that is not its equilibrium
run all_pay_n10_power4_r0.2 auction_all_pay_features --set env.n_bidders=10 --set env.value_dist=power:4 --set env.reserve_price=0.2
run all_pay_n2_from_0.25 auction_all_pay_features --set policy.init_scale=0.25
# first price across the ranges: the steepest distribution at n = 10 (the equilibrium bids 36/37 of the value), and
# large reserves (the bid jumps to the reserve at the participation threshold)
run first_price_n10_power4_r0.2 auction_first_price_features --set env.n_bidders=10 --set env.value_dist=power:4 --set env.reserve_price=0.2
run first_price_n2_power0.5_r0.45 auction_first_price_features --set env.value_dist=power:0.5 --set env.reserve_price=0.45
