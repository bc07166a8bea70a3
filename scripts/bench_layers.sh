#!/usr/bin/env bash
# Cost of the rule layers and of sweeps (BENCHMARKS.md, "Rule layers").
#   1. time per round at N = 10^6 for the plain engine and with state / provider / individual layers switched on;
#   2. a 32-setting sweep at N = 10^5 (pigou_tax x rights x enforcement), one compiled call.
set -euo pipefail
N=${N:-1000000}
common=(--sizes "$N" --rounds 40 --repeats 3 --reference-n 0)
STATE=(--set state.activity_cap=1.5 --set state.pigou_tax=0.3 --set state.budget_rule=true)
PROVIDER=(--set providers.count=2 "--set=providers.fee=[0.05,0.1]" --set providers.conduct=0.5 --set providers.switching_rate=0.1)
INDIVIDUAL=(--set individual.red_line=uniform:0.5:2 --set individual.reservation=constant:0 --set individual.budget_share=uniform:0.5:1)
run() { echo "== $1"; shift; coasejax bench "${common[@]}" "$@" | tail -1 | python -c "import json,sys; r=json.load(sys.stdin)['sizes'][0]; print(f\"{r['ms_per_round']:.1f} ms/round, {r['agent_steps_per_second']/1e6:.1f}M agent-steps/s, state {r['state_bytes_per_agent']:.0f} B/agent, peak {r['peak_bytes_per_agent']:.0f} B/agent\")"; }
run "engine"
run "state layer" "${STATE[@]}"
run "state + provider" "${STATE[@]}" "${PROVIDER[@]}"
run "all three layers" "${STATE[@]}" "${PROVIDER[@]}" "${INDIVIDUAL[@]}"
run "engine (again)"
echo "== sweep: 32 settings at N=100000"
out=$(mktemp -d)
coasejax simulate quickstart -q --set population.n_agents=100000 --set sim.envs=1 --set sim.rounds=40 \
  --sweep state.pigou_tax=0,0.25,0.5,1 --sweep state.rights=emitter,victim --sweep state.enforcement=0.8,0.9,0.95,1 \
  --out "$out"
python -c "import json; r=json.load(open('$out/sweep.json')); print(f\"{r['settings']} settings: compile {r['compile_seconds']:.1f} s, run {r['seconds']:.2f} s for 40 rounds ({r['settings']*1e5*40/r['seconds']/1e6:.1f}M agent-steps/s)\")"
