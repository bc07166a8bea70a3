"""``coasejax bench``: engine throughput, scaling in N and memory per agent, against a plain-Python reference.

For each N the episode is compiled once and timed ``repeats`` times (best kept). Memory per agent comes from XLA's
own accounting of the compiled episode chunk: *state* is the persistent per-agent arrays (types, wealth, provider id
and any explicit graph indices); *peak* adds every buffer live while a chunk runs (inputs, outputs and temporaries).
The scaling exponent is the least-squares slope of log(time per round) against log(N). The coalition analytics
(``sim.coalitions``: ``totals``, and with ``full`` k extra clearings per round and the breakdowns) are diagnostics,
off by default and forced off here, so the figures stay those of the engine itself (BENCHMARKS.md records what they
cost).
"""

from __future__ import annotations

import os
import platform
import time
from typing import Callable

import jax
import numpy as np

from coasejax.config import Config


def machine() -> str:
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    return f"{platform.machine()} {os.cpu_count()} cores, {jax.default_backend()} ({kind}), jax {jax.__version__}"


def _nbytes(tree) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(tree) if hasattr(x, "nbytes"))


def measure(cfg: Config, repeats: int) -> dict:
    from coasejax.simulate import build, run

    sim = build(cfg)
    best = None
    for _ in range(repeats):
        s = run(sim)
        if best is None or s["seconds"] < best["seconds"]:
            best = s
    n, t, e = cfg.population.n_agents, cfg.sim.rounds, cfg.sim.envs
    mem = sim.runner.memory_analysis()
    state_bytes = _nbytes(sim.state) + _nbytes(sim.graph)
    peak = None
    if mem is not None:
        peak = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
    return {
        "n_agents": n,
        "rounds": t,
        "envs": e,
        "seconds": best["seconds"],
        "ms_per_round": best["seconds"] / t * 1e3,
        "agent_steps_per_second": best["agent_steps_per_second"],
        "compile_seconds": sim.compile_seconds,
        "state_bytes_per_agent": state_bytes / (n * e),
        "peak_bytes_per_agent": (peak / (n * e)) if peak is not None else float("nan"),
        "efficiency": best.get("efficiency"),  # the Coase engine's (other scenarios: None)
        "welfare": best.get("welfare"),
    }


def run_bench(base: Config, sizes: list[int], rounds: int, repeats: int, reference_n: int,
              log: Callable[[str], None] = print) -> dict:
    rows = []
    for n in sizes:
        cfg = base.model_copy(deep=True)
        cfg.population.n_agents = n
        cfg.sim.rounds = rounds
        cfg.sim.coalitions = "off"
        log(f"N={n:,}: compiling and timing {repeats}× {rounds} rounds …")
        rows.append(measure(cfg, repeats))
        log(f"  {rows[-1]['agent_steps_per_second']:,.0f} agent-steps/s, {rows[-1]['ms_per_round']:.2f} ms/round")
    result: dict = {
        "machine": machine(),
        "mechanism": base.mechanism.kind,
        "graph": base.population.graph,
        "degree": base.population.degree,
        "sizes": rows,
    }
    if len(rows) >= 2:
        x = np.log([r["n_agents"] for r in rows])
        y = np.log([r["ms_per_round"] for r in rows])
        result["scaling_exponent"] = float(np.polyfit(x, y, 1)[0])
    if reference_n:
        from coasejax.reference import reference_compatible, simulate_reference

        cfg = reference_compatible(base)
        cfg.population.n_agents = reference_n
        cfg.sim.rounds = 2
        cfg.sim.envs = 1
        cfg.sim.coalitions = "off"
        log(f"plain-Python reference at N={reference_n:,} …")
        t0 = time.perf_counter()
        ref = simulate_reference(cfg)
        engine_same_n = measure(cfg, repeats)
        best = max(rows, key=lambda r: r["agent_steps_per_second"])
        result["reference"] = {
            "n_agents": reference_n,
            "rounds": 2,
            "agent_steps_per_second": ref["agent_steps_per_second"],
            "wall_seconds": time.perf_counter() - t0,
            "welfare_rel_diff": abs(ref["welfare"] - engine_same_n["welfare"]) / max(abs(ref["welfare"]), 1e-12),
        }
        result["engine_at_reference_n"] = engine_same_n["agent_steps_per_second"]
        result["speedup_same_n"] = engine_same_n["agent_steps_per_second"] / ref["agent_steps_per_second"]
        result["speedup_vs_reference"] = best["agent_steps_per_second"] / ref["agent_steps_per_second"]
    return result
