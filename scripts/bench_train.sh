#!/usr/bin/env bash
# Training benchmarks (CPU unless JAX sees an accelerator); results go to runs/bench_train/ and stdout.
#  1. throughput: agent-steps/s including the ES update, at 2^20 ≈ 10^6 sampled bidders per iteration
#     (first price, n = 2: population 256 × batch 4096 focal bidders + 16384 × 2 opponent draws);
#  2. wall time (including compilation and evaluations) until bne_rmse ≤ 0.01, first price n = 2, preset defaults
#     (from truthful bids; evaluations with 2^16 opponents instead of the preset's 2^20: bne_rmse does not use them),
#     evaluating every 50 iterations.
set -euo pipefail
OUT=${OUT:-runs/bench_train}
rm -rf "$OUT"; mkdir -p "$OUT"
coasejax train auction_first_price_features -q --out "$OUT/throughput" --set train.iterations=60 --set train.batch=4096 \
  --set train.log_every=20 --set checkpoint.every=0 --set train.eval_values=256 --set train.eval_opponents=4096
python - "$OUT/throughput/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"throughput: {s['agents_per_iteration']:,} agent-steps per iteration, {s['seconds_per_iteration']*1e3:.1f} ms per "
      f"iteration, {s['agent_steps_per_second']:,.0f} agent-steps/s ({s['backend']}, {s['devices']} device(s))")
PY
start=$(date +%s.%N)
coasejax train auction_first_price_features -q --out "$OUT/to_rmse" --set checkpoint.every=50 --set train.eval_opponents=65536
end=$(date +%s.%N)
python - "$OUT/to_rmse" "$start" "$end" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
s = json.load(open(sys.argv[1] + "/summary.json"))
hit = next((r for r in rows if r.get("bne_rmse", 1) <= 0.01), None)
print(f"first price n=2: bne_rmse <= 0.01 first at iteration {hit['step']}, {hit['seconds']:.1f} s after the start of "
      f"training (compile {s['compile_seconds']:.1f} s included; whole command {float(sys.argv[3]) - float(sys.argv[2]):.1f} s)"
      if hit else "bne_rmse never reached 0.01")
print(f"final: bne_rmse={s['bne_rmse']:.4f} utility_loss_rel={s['utility_loss_rel']:.5f} train_seconds={s['train_seconds']:.1f}")
PY
