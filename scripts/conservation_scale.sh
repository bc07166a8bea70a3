#!/usr/bin/env bash
# Money conservation at scale (issue 17): the residual |stored change − flows| / gross flows of long runs at large N,
# from the wealth actually stored. Per-round totals are float32 sums over agents; they are added up over rounds in
# float64, so the residual of T rounds is bounded by its worst round's, and it is measured here at the largest N for
# many rounds and at many rounds for all rule layers.
# usage: bash scripts/conservation_scale.sh   (recorded in BENCHMARKS.md, "Reliability"; ~15 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/conservation_scale}
RUNS=(
  "quickstart 10000000 1000"   # 10^7 agents, 10^3 rounds, 1 env: 10^10 agent-steps
  "layers 10000000 100"        # every rule layer at 10^7 agents
  "layers 100000 10000"        # every rule layer over 10^4 rounds
)
for r in "${RUNS[@]}"; do
  read -r preset n t <<<"$r"
  out="$OUT/${preset}_n${n}_t${t}"
  coasejax simulate "$preset" -q --out "$out" --set population.n_agents="$n" --set sim.rounds="$t" \
    --set sim.envs=1 >/dev/null
  python - "$out" "$preset" "$n" "$t" <<'PY'
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
print(f"{sys.argv[2]:<11} N={int(sys.argv[3]):>10,} rounds={int(sys.argv[4]):>6,} agent-steps={int(sys.argv[3]) * int(sys.argv[4]):.2e} "
      f"money_residual_rel={s['money_residual_rel']:.3g} gross={s['money_gross']:.4g} "
      f"state_violations={s['state_violations']} {s['agent_steps_per_second'] / 1e6:.1f} M agent-steps/s", flush=True)
PY
done
