#!/usr/bin/env bash
# The k-double auction across k in [0, 1] with the generic preset: utility_loss_rel (target ≤ 0.01; judged by
# utility loss, as the game has many equilibria) and the learned play's efficiency beside the linear equilibrium's.
# usage: bash scripts/train_double.sh   (recorded in BENCHMARKS.md, "The k-double auction")
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/train_double}
rm -rf "$OUT"; mkdir -p "$OUT"
for k in 0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 1; do
  coasejax train auction_double -q --out "$OUT/k$k" --set env.k="$k" >/dev/null
  python - "$OUT/k$k" "$k" <<'PY'
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
ok = s["utility_loss_rel"] <= 0.01
print(f"k={sys.argv[2]:<4} utility_loss_rel={s['utility_loss_rel']:+.5f} efficiency={s['efficiency']:.4f} "
      f"linear_efficiency={s.get('linear_efficiency', float('nan')):.4f} train={s['train_seconds']:.1f}s"
      f"{'' if ok else '   <- misses'}", flush=True)
PY
done
