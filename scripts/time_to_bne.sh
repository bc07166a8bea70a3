#!/usr/bin/env bash
# Time to bne_rmse ≤ 0.01 for the generic first-price policy at n = 2, 5 and 10 (uniform values, no reserve): the
# preset evaluated every 250 iterations; prints the first evaluation at or below the target, its iteration, the
# training seconds up to it (the chunks' compute, not the evaluations or compilation) and the wall-clock seconds
# since the start (both), beside bnelearn's NPGA as measured on this kind of machine (L2 0.0155 after 600 s at n = 2,
# 0.042 at n = 5, at its defaults; issue 16). Recorded in BENCHMARKS.md, "Auctions with the generic policy".
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/time_to_bne}
rm -rf "$OUT"; mkdir -p "$OUT"
for n in 2 5 10; do
  coasejax train auction_first_price -q --out "$OUT/n$n" --set env.n_bidders="$n" --set checkpoint.every=250 >/dev/null
  python - "$OUT/n$n" "$n" <<'PY'
import json, sys
rows = [json.loads(x) for x in open(sys.argv[1] + "/metrics.jsonl")]
s = json.load(open(sys.argv[1] + "/summary.json"))
per_iter = s["train_seconds"] / s["iterations"]
hit = next((r for r in rows if r.get("bne_rmse") is not None and r["bne_rmse"] <= 0.01), None)
final = rows[-1]
if hit is None:
    print(f"n={sys.argv[2]:<3} never reached bne_rmse 0.01 (final {final['bne_rmse']:.4f})")
else:
    print(f"n={sys.argv[2]:<3} bne_rmse {hit['bne_rmse']:.4f} at iteration {hit['step']}: "
          f"{hit['step'] * per_iter:.1f}s of training, {hit['seconds']:.1f}s wall incl. compile and evaluations; "
          f"final bne_rmse {final['bne_rmse']:.4f} after {s['train_seconds']:.1f}s")
PY
done
