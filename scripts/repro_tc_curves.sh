#!/usr/bin/env bash
# The efficiency-vs-transaction-cost figure at population scale, for every mechanism × rights regime, in one command:
#   bash scripts/repro_tc_curves.sh [OUT] [N]        (default runs/tc_curves, N = 1,000,000)
# Each mechanism is one compiled sweep over the discovery cost per party (state.transaction_costs.per_party, paid by
# the emitter and each of its k = 4 victims) × both rights regimes, on the coase preset's graph and populations with no
# other costs, full enforcement and no drift, so that at cost 0 the first best is reachable. Advocates play
# best_response where it is defined (lindahl: free-riding pledges and hold-out asks; clarke: truth; assurance:
# equilibrium pledges of a dominant assurance contract, threshold 1, refund bonus 0.1) and truthful elsewhere.
# Writes OUT/<mechanism>/sweep.json, OUT/tc_curves.json (all curves) and OUT/report.html (coasejax report).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/tc_curves}
n=${2:-1000000}
costs="0,0.0001,0.0003,0.001,0.003,0.01,0.03,0.1,0.3,1"
mkdir -p "$out"
for mech in nash alternating lindahl clarke assurance; do
  strategy=truthful
  case $mech in lindahl|clarke|assurance) strategy=best_response ;; esac
  start=$(date +%s)
  coasejax simulate coase -q --out "$out/$mech" --set population.n_agents="$n" --set sim.rounds=10 \
    --set mechanism.kind="$mech" --set advocates.strategy="$strategy" --set mechanism.refund_bonus=0.1 \
    --set state.transaction_costs.per_round=0 --set state.transaction_costs.per_deal=0 --set state.enforcement=1 \
    --set population.drift=0 --set sim.coalitions=true --sweep state.transaction_costs.per_party="$costs" --sweep state.rights=emitter,victim
  echo "$mech ($strategy): $(( $(date +%s) - start )) s"
done
python - "$out" "$n" <<'PY'
import json, sys
from pathlib import Path
out, n = Path(sys.argv[1]), int(sys.argv[2])
curves = []
for mech in ("nash", "alternating", "lindahl", "clarke", "assurance"):
    sweep = json.loads((out / mech / "sweep.json").read_text())
    for rights in ("emitter", "victim"):
        rows = [r for r in sweep["rows"] if r["setting"]["state.rights"] == rights]
        points = [{"cost": r["setting"]["state.transaction_costs.per_party"], "efficiency": r["efficiency"],
                   "deal_rate": r["deal_rate"], "free_rider_share": r.get("free_rider_share"),
                   "participation_rate": r.get("participation_rate")} for r in rows]
        curves.append({"mechanism": mech, "rights": rights, "strategy": rows[0]["strategy"],
                       "points": sorted(points, key=lambda p: p["cost"])})
result = {"n_agents": n, "rounds": 10, "victims_per_emitter": 4, "cost_key": "state.transaction_costs.per_party",
          "curves": curves}
(out / "tc_curves.json").write_text(json.dumps(result, indent=2) + "\n")
costs = [p["cost"] for p in curves[0]["points"]]
print(f"efficiency by per-party cost (N = {n:,}):")
print(f"{'mechanism':<12}{'rights':<9}" + "".join(f"{c:>8g}" for c in costs))
for c in curves:
    print(f"{c['mechanism']:<12}{c['rights']:<9}" + "".join(f"{p['efficiency']:>8.3f}" for p in c["points"]))
PY
coasejax report "$out"
