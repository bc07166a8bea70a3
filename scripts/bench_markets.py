"""Agent-steps/s and bytes per agent of ``simulate`` at N = 10^6 for the markets lecture's scenarios (issue 19): El
Farol with Arthur's predictors and with the mixed equilibrium, Granovetter's thresholds, Schelling's segregation, the
chair market (truthful advocates, no TTC core), the lemons market and market power.

    python scripts/bench_markets.py [--n 1000000] [--rounds 20] [--repeats 3] [--only lemons,market_power]

Each figure is the best of --repeats timed episodes after compilation (``simulate``'s own agent_steps_per_second:
N × rounds / seconds, compile excluded), measured by :func:`coasejax.bench.measure`, as ``coasejax bench`` does:
*state* bytes per agent are the population's arrays, *peak* bytes per agent the XLA memory analysis of the compiled
chunk (arguments + outputs − aliased + temporaries). Schelling's N is the number of cells (1000 × 1000 at 10^6).
"""

from __future__ import annotations

import argparse
import json

import jax

from coasejax import scenarios
from coasejax.bench import machine, measure
from coasejax.config import load_config

ROWS = [("el_farol", "arthur", ["advocates.strategy=arthur", "env.burn_in=0"]),
        ("el_farol", "equilibrium", ["advocates.strategy=equilibrium", "env.burn_in=0"]),
        ("granovetter", "threshold", []),
        ("schelling", "schelling", []),
        ("chairs", "truthful", ["env.core=false", "env.rank_sample=2048"]),
        ("lemons", "truthful", []),
        ("market_power", "truthful", ["env.burn_in=0"])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated scenarios (default: every row)")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    print(json.dumps({"machine": machine()}), flush=True)
    for preset, advocates, extra in ROWS:
        if (only and preset not in only) or preset not in scenarios.REGISTRY:
            continue
        cfg = load_config(preset, [f"population.n_agents={args.n}", f"sim.rounds={args.rounds}",
                                   f"advocates.strategy={advocates}", *extra])
        m = measure(cfg, args.repeats)
        print(json.dumps({"scenario": preset, "advocates": advocates, "n_agents": args.n, "rounds": args.rounds,
                          "agent_steps_per_second": round(m["agent_steps_per_second"]),
                          "seconds": round(m["seconds"], 4), "compile_seconds": round(m["compile_seconds"], 3),
                          "state_bytes_per_agent": round(m["state_bytes_per_agent"], 1),
                          "peak_bytes_per_agent": round(m["peak_bytes_per_agent"], 1),
                          "backend": jax.default_backend()}), flush=True)


if __name__ == "__main__":
    main()
