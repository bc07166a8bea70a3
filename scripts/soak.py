#!/usr/bin/env python
"""Soak benchmark of the Coase engine (issue 17): many agent-steps under every rule layer at random settings, counting
state violations and checking that money is conserved. A benchmark, not a CI test.

    python scripts/soak.py                          # 10^8 agent-steps (~12 configs of 10^5 agents x ~80 rounds)
    python scripts/soak.py --agent-steps 1e7 --agents 20000 --seed 3 --out soak.json

Each config draws, from one seeded generator: the rights regime; the mechanism (every registered one and ``none``,
per provider); the graph (ring, random, small world, torus) and degree; transaction costs and enforcement; drifting
types; the state layer (activity cap and the capped share, Pigouvian tax and its recycling, the budget rule, a cost
floor); 1 to 3 providers with fees, flat fees, codes of conduct, skill and switching; the individual layer (red lines,
reservation payments, budget shares, altruism); scripted advocates (truthful, shade, best response where the
mechanism defines it); and the initial wealth (including 10^8 per agent, where plain float32 drops the costs).

Reported, per config (one JSON line) and in total: agent-steps, state violations (must be 0), the red-line excess
(harm above a victim's red line in an honoured deal: at most float32 rounding, 1e-5), and the money residual
|stored change - flows| / gross flows (each run's own, its maximum, and the pooled one Σ|gap| / Σ gross). A run that stops (money not conserved, a non-finite number) is a failure; a config refused before
it runs is counted apart. Exit status 1 on any failure, violation, red-line excess or residual above 1e-5.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from coasejax.config import ConfigError, load_config  # noqa: E402
from coasejax.mechanisms import REGISTRY  # noqa: E402
from coasejax.simulate import build, run  # noqa: E402

MECHANISMS = sorted(REGISTRY)


def torus_n(n: int) -> int:
    """A torus size near ``n`` with a square-ish shape (R x L, R <= L)."""
    r = int(math.isqrt(n))
    return r * r


def draw(rng: np.random.Generator, n: int, rounds: int, seed: int) -> dict:
    """One random config as ``--set`` overrides (every rule layer on; values random)."""
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    graph = str(rng.choice(["ring", "random", "small_world", "torus"]))
    degree = 4 if graph == "torus" else int(rng.integers(2, 9))
    mech = str(rng.choice(MECHANISMS))
    providers = int(rng.integers(1, 4))
    protocols = [str(rng.choice(["none", *MECHANISMS])) if rng.random() < 0.3 else mech for _ in range(providers)]
    strategies = set.intersection(*(set(REGISTRY[p].strategies) for p in protocols if p != "none")) \
        if any(p != "none" for p in protocols) else {"truthful", "shade"}
    strategy = str(rng.choice(sorted(strategies)))
    wealth = str(rng.choice(["constant:100", "uniform:1:20", "lognormal:3:1", "constant:1e8", "uniform:0:2"]))
    per_provider = lambda lo, hi: "[" + ",".join(f"{u(lo, hi):.4g}" for _ in range(providers)) + "]"  # noqa: E731
    out = {
        "population.n_agents": torus_n(n) if graph == "torus" else n,
        "population.graph": graph,
        "population.degree": degree,
        "population.benefit": f"uniform:{u(0.5, 2):.3g}:{u(2.5, 5):.3g}",
        "population.harm": f"uniform:0:{u(0.5, 3):.3g}",
        "population.wealth": wealth,
        "population.drift": f"{u(0.0, 0.1):.3g}",
        "state.rights": str(rng.choice(["emitter", "victim"])),
        "state.transaction_costs.per_party": f"{u(0, 0.02):.3g}",
        "state.transaction_costs.per_round": f"{u(0, 0.02):.3g}",
        "state.transaction_costs.per_deal": f"{u(0, 0.2):.3g}",
        "state.enforcement": f"{u(0.6, 1.0):.3g}",
        "state.activity_cap": f"{u(0.5, 3):.3g}",
        "state.cap_share": f"{u(0.1, 1):.3g}",
        "state.pigou_tax": f"{u(0, 1):.3g}",
        "state.tax_recycling": str(rng.choice(["lump_sum", "victims"])),
        "state.budget_rule": "true",
        "state.tc_floor": f"{u(0, 0.05):.3g}",
        "providers.count": providers,
        "providers.fee": per_provider(0, 0.3),
        "providers.fee_flat": per_provider(0.001, 0.02),
        "providers.conduct": per_provider(0.02, 0.5),
        "providers.skill": per_provider(0, 0.3),
        "providers.switching_rate": f"{u(0, 0.3):.3g}",
        "providers.protocol": "[" + ",".join(protocols) + "]",
        "individual.red_line": f"uniform:{u(0.1, 0.5):.3g}:{u(1, 3):.3g}",
        "individual.reservation": f"uniform:0:{u(0.01, 0.1):.3g}",
        "individual.budget_share": f"uniform:{u(0.1, 0.5):.3g}:1",
        "individual.altruism": f"uniform:0:{u(0.1, 1):.3g}",
        "mechanism.kind": mech,
        "advocates.strategy": strategy,
        "advocates.shade": f"{u(0.05, 0.4):.3g}",
        "sim.rounds": rounds,
        "sim.envs": 1,
        "sim.seed": seed,
    }
    return {k: str(v) for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agent-steps", type=float, default=1e8, help="total agent-steps (default 1e8)")
    ap.add_argument("--agents", type=int, default=100_000, help="agents per config (default 1e5)")
    ap.add_argument("--rounds", type=int, default=80, help="rounds per config (default 80)")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--out", help="write the totals and every config's row as JSON here")
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    target = int(args.agent_steps)
    rows, steps, refused, failed = [], 0, [], []
    t0 = time.perf_counter()
    while steps < target:
        overrides = draw(rng, args.agents, args.rounds, int(rng.integers(0, 2**31 - 1)))
        try:
            cfg = load_config(None, [f"{k}={v}" for k, v in overrides.items()])
            sim = build(cfg)
        except ConfigError as e:  # a random combination refused up front (reported, not a failure)
            refused.append({"error": str(e), "settings": overrides})
            print(json.dumps({"refused": str(e)}), flush=True)
            continue
        try:
            s = run(sim)
        except ConfigError as e:  # money not conserved, or a non-finite number: a failure
            failed.append({"error": str(e), "settings": overrides})
            print(json.dumps({"failed": str(e)}), flush=True)
            steps += cfg.population.n_agents * cfg.sim.rounds
            continue
        n, t = cfg.population.n_agents, cfg.sim.rounds
        row = {"agent_steps": n * t, "state_violations": s["state_violations"],
               "money_residual_rel": s["money_residual_rel"], "money_gross": s["money_gross"],
               "money_gap": s["money_residual_rel"] * s["money_gross"], "red_line_excess": s["red_line_excess"],
               "efficiency": s["efficiency"], "deal_rate": s["deal_rate"], "layer_binding_any":
               {ly: v["any"] for ly, v in s["layer_binding"].items()},
               "agent_steps_per_second": s["agent_steps_per_second"], "compile_seconds": s["compile_seconds"],
               "settings": overrides}
        rows.append(row)
        steps += n * t
        print(json.dumps({k: v for k, v in row.items() if k != "settings"}), flush=True)
    gross = sum(r["money_gross"] for r in rows)
    totals = {
        "agent_steps": steps,
        "configs": len(rows),
        "refused_configs": len(refused),
        "failed_configs": len(failed),
        "state_violations": int(sum(r["state_violations"] for r in rows)),
        "red_line_excess_max": max((r["red_line_excess"] for r in rows if r["red_line_excess"] is not None),
                                   default=None),
        "money_residual_rel_max": max((r["money_residual_rel"] for r in rows), default=None),
        "money_residual_rel_pooled": sum(r["money_gap"] for r in rows) / gross if gross > 0 else 0.0,
        "wall_seconds": time.perf_counter() - t0,
        "seed": args.seed,
    }
    print(json.dumps({"totals": totals}), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"totals": totals, "rows": rows, "refused": refused, "failed": failed}, f, indent=2)
    ok = (not failed and rows and totals["state_violations"] == 0 and totals["money_residual_rel_max"] <= 1e-5
          and (totals["red_line_excess_max"] is None or totals["red_line_excess_max"] <= 1e-5))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
