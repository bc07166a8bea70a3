#!/usr/bin/env bash
# Issue 16 item 4, Lindahl free riding learned in the engine: train the coase_es preset (10^4 agents on a ring, ES,
# 400 iterations) once per k = 1 … 8 victims per emitter, overriding only population.degree, and print each learned
# report ratio against the equilibrium's 1/(k + 1). Runs go to runs/lindahl/k{K}/ (OUT=... to move them); extra
# arguments are passed to every `coasejax train` (e.g. --set train.seed=1).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/lindahl}"
mkdir -p "$out"
for k in 1 2 3 4 5 6 7 8; do
  rm -rf "$out/k$k"
  python -m coasejax.cli train coase_es --set "population.degree=$k" --out "$out/k$k" -q "$@"
done
python - "$out" <<'PY'
import json, sys
from pathlib import Path

import jax

out = Path(sys.argv[1])
print(f"jax {jax.__version__}, backend {jax.default_backend()}")
print("| k | learned ratio | 1/(k + 1) | error | efficiency | (2k + 1)/(k + 1)² | utility_loss_rel | train s |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
worst = 0.0
for k in range(1, 9):
    s = json.loads((out / f"k{k}" / "summary.json").read_text())
    r, eq = s[f"report_ratio_k{k}"], 1 / (k + 1)
    worst = max(worst, abs(r - eq))
    print(f"| {k} | {r:.4f} | {eq:.4f} | {r - eq:+.4f} | {s['efficiency']:.4f} | {(2 * k + 1) / (k + 1) ** 2:.4f} "
          f"| {s['utility_loss_rel']:.1e} | {s['train_seconds']:.2f} |")
print(f"largest |error| {worst:.4f} (target 0.02: {'met' if worst <= 0.02 else 'NOT met'})")
PY
