#!/usr/bin/env bash
# Reproduce the engine figures in BENCHMARKS.md: scaling 1e4..1e7 against the plain-Python reference, then 1e6 for
# each graph, mechanism and with enforcement draws. Results as JSON in runs/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/bench
coasejax bench --sizes 1e4,1e5,1e6,1e7 --repeats 3 --reference-n 2000 --out runs/bench/scaling.json
for s in population.graph=random population.graph=torus population.graph=small_world state.enforcement=0.95 \
         mechanism.kind=lindahl mechanism.kind=clarke mechanism.kind=alternating; do
  coasejax bench --sizes 1e6 --repeats 2 --reference-n 0 --set "$s" --out "runs/bench/${s//[.=]/_}.json"
done
