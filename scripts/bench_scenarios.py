"""Agent-steps/s at N = 10^6 for every scenario, with scripted and with learned advocates, and the training
throughput of ES in the engine and of PPO (issue 15's table in BENCHMARKS.md).

    python scripts/bench_scenarios.py --out bench_scenarios.json [--n 1000000] [--rounds 20]

Learned advocates come from short training runs made here (their throughput does not depend on how well they were
trained). Each simulate figure is the best of --repeats timed episodes after compilation. The Coase rows use drifting
types (population.drift = 0.05), as `coasejax bench` does, so XLA cannot hoist an unchanging round out of the scan.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import jax

from coasejax import scenarios  # noqa: F401
from coasejax.config import load_config
from coasejax.simulate import build, run
from coasejax.train.run import train


def best_of(cfg, repeats: int) -> dict:
    sim = build(cfg)
    best = None
    for _ in range(repeats):
        s = run(sim)
        best = s if best is None or s["seconds"] < best["seconds"] else best
    mem = sim.runner.memory_analysis()
    peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
            if mem is not None else float("nan"))
    return {"agent_steps_per_second": best["agent_steps_per_second"], "seconds": best["seconds"],
            "compile_seconds": sim.compile_seconds, "peak_bytes_per_agent": peak / cfg.population.n_agents,
            "efficiency": best.get("efficiency")}


def trained(preset: str, overrides: list[str], root: Path) -> tuple[str, dict]:
    out = root / preset
    s = train(load_config(preset, overrides), out)
    return str(out), s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    n, t = args.n, args.rounds
    size = [f"population.n_agents={n}", f"sim.rounds={t}"]
    rows = []

    def row(name, advocates, preset, overrides):
        r = best_of(load_config(preset, [*size, *overrides]), args.repeats)
        rows.append({"scenario": name, "advocates": advocates, **r})
        print(json.dumps(rows[-1]), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        es_run, es_summary = trained("coase_es", ["train.iterations=200", "checkpoint.every=100"], root)
        ppo_run, ppo_summary = trained("coase_ppo", ["train.iterations=4", "train.log_every=2", "checkpoint.every=4",
                                                     "population.n_agents=4096", "train.minibatches=4"], root)
        auc_run, auc_summary = trained("auction_first_price_features", ["train.iterations=20", "train.log_every=10",
                                                               "checkpoint.every=20"], root)
        drift = ["population.drift=0.05"]
        row("coase (bench workload: nash, ring k=4)", "scripted truthful", None, drift)
        row("coase preset (random graph, alternating, enforcement, drift)", "scripted truthful", "coase", [])
        row("coase (lindahl, ring k=4)", "scripted truthful", "coase_es", drift)
        row("coase (lindahl, ring k=4)", "learned (generic MLP, ES)", "coase_es", [*drift, f"advocates.policy={es_run}"])
        row("coase (lindahl, ring k=4), 2 providers", "learned A vs truthful B, switching", "coase_es",
            [*drift, f"providers.policy=[{es_run}, truthful]", "providers.count=2", "providers.switching_rate=0.2"])
        row("auction (first price, n=2)", "scripted equilibrium", "auction_first_price_features", ["advocates.strategy=equilibrium"])
        row("auction (first price, n=2)", "learned (ES, feature head)", "auction_first_price_features", [f"advocates.policy={auc_run}"])
        row("coase_rounds (alternating offers)", "scripted truthful", "coase_ppo", ["train.minibatches=8"])
        row("coase_rounds (alternating offers)", "learned (PPO)", "coase_ppo",
            ["train.minibatches=8", f"advocates.policy={ppo_run}"])
    result = {"machine": f"{platform.machine()} {jax.device_count()} device(s), {jax.default_backend()}, "
                         f"jax {jax.__version__}",
              "n_agents": n, "rounds": t, "simulate": rows,
              "training": {"es_engine": {"agent_steps_per_second": es_summary["agent_steps_per_second"],
                                         "n_agents": 10_000, "report_ratio": es_summary.get("report_ratio")},
                           "ppo": {"agent_steps_per_second": ppo_summary["agent_steps_per_second"],
                                   "n_agents": 4096}}}
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
