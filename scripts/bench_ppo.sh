#!/usr/bin/env bash
# PPO training throughput (agent-steps/s including updates; an agent-step is one seat's decision in one round, two
# seats per bargain) at N = 1e5 and 1e6 bargains per batch, on whatever backend JAX picks.
#   bash scripts/bench_ppo.sh [N ...]      (default: 100000 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@"); [ ${#sizes[@]} -eq 0 ] && sizes=(100000 1000000)
for n in "${sizes[@]}"; do
  out=$(mktemp -d)
  coasejax train coase_ppo -q --out "$out" --set population.n_agents="$n" --set train.iterations=2 \
    --set train.log_every=1 --set checkpoint.every=0 --set train.minibatches=8 --set env.eval_rounds=1 >/dev/null
  python - "$out/summary.json" "$n" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"N={int(sys.argv[2]):>9,}  backend={s['backend']}  s/iteration={s['seconds_per_iteration']:.3f}  "
      f"agent-steps/iteration={s['agents_per_iteration']:,}  agent-steps/s={s['agent_steps_per_second']:,.0f}  "
      f"compile={s['compile_seconds']:.1f}s")
PY
  rm -rf "$out"
done
