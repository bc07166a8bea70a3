#!/usr/bin/env bash
# The Rubinstein must-show: PPO advocates in the multi-round Coase scenario with no costs, for several pairs of
# discount factors; prints the opener's learned share against (1 − δ_responder)/(1 − δ_e δ_v).
#   bash scripts/train_rubinstein.sh [OUT_ROOT]      (default runs/rubinstein; about 4 min per pair on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-runs/rubinstein}
for pair in "0.9 0.8" "0.95 0.95" "0.8 0.9"; do
  set -- $pair
  out="$root/de$1_dv$2"
  rm -rf "$out"
  coasejax train coase_ppo -q --out "$out" --set env.cost_grid=[0.0] --set train.iterations=200 --set mechanism.discount_emitter="$1" \
    --set mechanism.discount_victims="$2" >/dev/null
  python - "$out/summary.json" "$1" "$2" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"delta_e={sys.argv[2]} delta_v={sys.argv[3]}  opener share {s['proposer_share']:.4f}  Rubinstein "
      f"{s['rubinstein_share']:.4f}  error {s['proposer_share_error']:.4f}  efficiency {s['efficiency']:.4f}  "
      f"train {s['train_seconds']:.0f}s")
PY
done
