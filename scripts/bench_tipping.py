"""Agent-steps/s of ``simulate`` at N = 10^6 for the tipping and attendance scenarios (issue 19, item 2): El Farol
with Arthur's predictors and with the mixed equilibrium, Granovetter's thresholds, Schelling's segregation.

    python scripts/bench_tipping.py [--n 1000000] [--rounds 20] [--repeats 3]

Each figure is the best of --repeats timed episodes after compilation (``simulate``'s own agent_steps_per_second:
N × rounds / seconds, compile excluded). Schelling's N is the number of cells (1000 × 1000 at 10^6).
"""

from __future__ import annotations

import argparse
import json

import jax

from coasejax.config import load_config
from coasejax.simulate import build, run

ROWS = [("el_farol", "arthur", ["advocates.strategy=arthur", "env.burn_in=0"]),
        ("el_farol", "equilibrium", ["advocates.strategy=equilibrium", "env.burn_in=0"]),
        ("granovetter", "threshold", []),
        ("schelling", "schelling", [])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    for preset, advocates, extra in ROWS:
        cfg = load_config(preset, [f"population.n_agents={args.n}", f"sim.rounds={args.rounds}", *extra])
        sim = build(cfg)
        best = max((run(sim) for _ in range(args.repeats)), key=lambda s: s["agent_steps_per_second"])
        print(json.dumps({"scenario": preset, "advocates": advocates, "n_agents": args.n, "rounds": args.rounds,
                          "agent_steps_per_second": round(best["agent_steps_per_second"]),
                          "seconds": round(best["seconds"], 4), "compile_seconds": round(sim.compile_seconds, 3),
                          "backend": jax.default_backend()}), flush=True)


if __name__ == "__main__":
    main()
