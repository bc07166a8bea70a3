#!/usr/bin/env bash
# The Rubinstein must-reach: PPO advocates (preset coase_rubinstein: no costs, the opener drawn per episode, horizon
# 128) for every pair of discount factors in {0.8, 0.9, 0.95}²; prints each opener's learned share against the
# subgame-perfect one, the larger error, the efficiency, training seconds, and — from `coasejax eval` of the final
# checkpoint — utility_loss_rel against the grid best response.
#   bash scripts/train_rubinstein.sh [OUT_ROOT] [EXTRA --set ARGS...]   (default runs/rubinstein)
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-runs/rubinstein}
shift || true
for de in 0.8 0.9 0.95; do
  for dv in 0.8 0.9 0.95; do
    out="$root/de${de}_dv${dv}"
    rm -rf "$out"
    coasejax train coase_rubinstein -q --out "$out" --set mechanism.discount_emitter="$de" \
      --set mechanism.discount_victims="$dv" "$@" >/dev/null
    coasejax eval "$out" >/dev/null
    python - "$out" "$de" "$dv" <<'PY'
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
e = json.load(open(sys.argv[1] + "/eval.json"))
loss = e.get("utility_loss_rel")
print(f"delta_e={sys.argv[2]} delta_v={sys.argv[3]}  emitter opens {s['proposer_share']:.4f} "
      f"(SPE {s['rubinstein_share']:.4f})  victims open {s['proposer_share_victims']:.4f} "
      f"(SPE {s['rubinstein_share_victims']:.4f})  error {s['proposer_share_error']:.4f}  "
      f"efficiency {s['efficiency']:.4f}  utility_loss_rel {'n/a' if loss is None else f'{loss:.4f}'}  "
      f"train {s['train_seconds']:.0f}s")
PY
  done
done
