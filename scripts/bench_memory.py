"""Peak memory per agent at scale, measured in fresh processes (issue 18, item 5).

Each measurement runs in its own Python process and records its peak resident set (``ru_maxrss`` from ``os.wait4``).
Three figures per size: *raw*, the peak over N (every fixed cost included); *over baseline*, the peak less that of the
same command at N = 1000 (the JAX runtime, the imports and the compiler's own peak), over N; and *marginal*, the
growth of the peak from the previous size over the growth of N: what each further agent costs, the figure that
decides whether 10^8 agents fit. (The baseline is the compiler's peak, which need not overlap the run's, so *over
baseline* understates at sizes where the run's arrays are not much larger than it.)

    python scripts/bench_memory.py engine [--sizes 1e5,1e6,1e7] [--presets coase,layers] [--rounds 10]
    python scripts/bench_memory.py ppo [--sizes 1e5] [--iterations 2] [--minibatches 8]

``engine``: ``coasejax simulate PRESET`` (scripted advocates; graph construction, the rounds, the summary and its
writing all count), beside the package's own figures of the same size: the XLA memory analysis of the compiled
chunk (``coasejax bench``'s peak bytes per agent, from a separate process) and the lower bound ``coasejax simulate``
checks before running (:func:`coasejax.cliutil.bytes_per_agent`).

``ppo``: ``train.iterations`` PPO iterations of the ``coase_ppo`` preset at N bargains (``train.minibatches=8``,
``env.eval_rounds=1``, no checkpoints, as ``scripts/bench_ppo.sh``), through ``coasejax train``; bytes are per
bargain (two seats), beside the XLA memory analysis of one compiled iteration. ``PYTHONPATH`` selects the code (e.g.
a ``git worktree`` of an older commit, for a before/after table).

Results print as a table and, with ``--out FILE``, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

BASE_N = 1000  # the baseline's size: the runtime, imports and compiled code, no agent arrays to speak of


def _run(cmd: list[str], env=None) -> tuple[int, float, str]:
    """``(peak RSS bytes, seconds, stdout)`` of ``cmd`` in a fresh process."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        out.seek(0)
        text = out.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {code}:\n{text[-3000:]}")
    return usage.ru_maxrss * 1024, seconds, text


def _n(s: str) -> int:
    return int(float(s))


def _child(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


# -- the scripted engine ---------------------------------------------------------------------------------------------
XLA_ENGINE = """
import json, sys
from coasejax.bench import measure
from coasejax.config import load_config
cfg = load_config(sys.argv[1], [f"population.n_agents={sys.argv[2]}", f"sim.rounds={sys.argv[3]}", "sim.coalitions=off",
                               *sys.argv[4:]])
r = measure(cfg, 1)
print(json.dumps({k: r[k] for k in ("state_bytes_per_agent", "peak_bytes_per_agent", "agent_steps_per_second")}))
"""


EXTRA: list[str] = []  # --set overrides, appended to every run's


def _sets() -> list[str]:
    return [a for kv in EXTRA for a in ("--set", kv)]


def simulate_cmd(preset: str, n: int, rounds: int, out: str) -> list[str]:
    return [sys.executable, "-m", "coasejax.cli", "simulate", preset, "-q", "--out", out,
            "--set", f"population.n_agents={n}", "--set", f"sim.rounds={rounds}", *_sets()]


def engine(args) -> list[dict]:
    from coasejax.cliutil import bytes_per_agent
    from coasejax.config import load_config

    rows = []
    for preset in args.presets.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            base, _, _ = _run(simulate_cmd(preset, BASE_N, args.rounds, os.path.join(tmp, "base")))
            for n in map(_n, args.sizes.split(",")):
                peak, seconds, _ = _run(simulate_cmd(preset, n, args.rounds, os.path.join(tmp, str(n))))
                row = {"kind": "engine", "preset": preset, "n": n, "rounds": args.rounds, "seconds": seconds,
                       "peak_rss": peak, "baseline_rss": base, "rss_bytes_per_agent": (peak - base) / n,
                       "lower_bound_bytes_per_agent": bytes_per_agent(load_config(preset, [f"population.n_agents={n}"]))}
                if not args.no_xla:
                    _, _, text = _run(_child(XLA_ENGINE, preset, str(n), str(args.rounds), *EXTRA))
                    xla = json.loads(text.strip().splitlines()[-1])
                    row.update(xla_state_bytes_per_agent=xla["state_bytes_per_agent"],
                               xla_peak_bytes_per_agent=xla["peak_bytes_per_agent"])
                _marginal(rows, row, "rss_marginal_bytes_per_agent", ("preset", preset))
                rows.append(row)
                print(_engine_line(row), flush=True)
    return rows


def _marginal(rows: list[dict], row: dict, name: str, same=None) -> None:
    prev = [r for r in rows if same is None or r.get(same[0]) == same[1]]
    row["raw_bytes_per_" + name.rsplit("_", 1)[1]] = row["peak_rss"] / row["n"]
    if prev and row["n"] > prev[-1]["n"]:
        row[name] = (row["peak_rss"] - prev[-1]["peak_rss"]) / (row["n"] - prev[-1]["n"])


def _engine_line(r: dict) -> str:
    xla = (f"  XLA state {r['xla_state_bytes_per_agent']:.0f} B, peak {r['xla_peak_bytes_per_agent']:.0f} B/agent"
           if "xla_peak_bytes_per_agent" in r else "")
    return (f"{r['preset']:>8} N={r['n']:>12,}  peak RSS {r['peak_rss'] / 2**30:6.2f} GiB (baseline "
            f"{r['baseline_rss'] / 2**20:.0f} MiB)  raw {r['raw_bytes_per_agent']:6.1f}, over baseline "
            f"{r['rss_bytes_per_agent']:6.1f}, marginal {r.get('rss_marginal_bytes_per_agent', float('nan')):6.1f}"
            f" B/agent{xla}  "
            f"(lower bound {r['lower_bound_bytes_per_agent']} B)  {r['seconds']:.0f} s")


# -- PPO -------------------------------------------------------------------------------------------------------------
XLA_PPO = """
import json, sys, jax
from coasejax.config import load_config
from coasejax.train.ppo import PPO
n = int(sys.argv[1])
algo = PPO(load_config("coase_ppo", [f"population.n_agents={n}", f"train.minibatches={sys.argv[2]}", *sys.argv[3:]]))
m = algo.make_chunk(1).lower(jax.eval_shape(algo.init_states)).compile().memory_analysis()
peak = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
print(json.dumps({"xla_peak_bytes_per_bargain": peak / n, "xla_temp_bytes_per_bargain": m.temp_size_in_bytes / n}))
"""


def train_cmd(n: int, iterations: int, minibatches: int, out: str) -> list[str]:
    return [sys.executable, "-m", "coasejax.cli", "train", "coase_ppo", "-q", "--out", out,
            "--set", f"population.n_agents={n}", "--set", f"train.iterations={iterations}",
            "--set", "train.log_every=1", "--set", "checkpoint.every=0", "--set", f"train.minibatches={minibatches}",
            "--set", "env.eval_rounds=1", *_sets()]


def ppo(args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base, _, _ = _run(train_cmd(BASE_N, 1, args.minibatches, os.path.join(tmp, "base")))
        for n in map(_n, args.sizes.split(",")):
            out = os.path.join(tmp, str(n))
            peak, seconds, _ = _run(train_cmd(n, args.iterations, args.minibatches, out))
            s = json.load(open(os.path.join(out, "summary.json")))
            row = {"kind": "ppo", "n": n, "iterations": args.iterations, "seconds": seconds, "peak_rss": peak,
                   "baseline_rss": base, "rss_bytes_per_bargain": (peak - base) / n,
                   "seconds_per_iteration": s["seconds_per_iteration"],
                   "agent_steps_per_second": s["agent_steps_per_second"], "compile_seconds": s["compile_seconds"],
                   "final_train_utility": _last_utility(out)}
            if not args.no_xla:
                _, _, text = _run(_child(XLA_PPO, str(n), str(args.minibatches), *EXTRA))
                row.update(json.loads(text.strip().splitlines()[-1]))
            _marginal(rows, row, "rss_marginal_bytes_per_bargain")
            rows.append(row)
            print(_ppo_line(row), flush=True)
    return rows


def _last_utility(out: str):
    try:
        lines = open(os.path.join(out, "metrics.jsonl")).read().strip().splitlines()
        return json.loads(lines[-1]).get("train_utility")
    except (OSError, ValueError, IndexError):
        return None


def _ppo_line(r: dict) -> str:
    xla = f"  XLA peak {r['xla_peak_bytes_per_bargain']:.0f} B/bargain" if "xla_peak_bytes_per_bargain" in r else ""
    return (f"ppo N={r['n']:>10,}  peak RSS {r['peak_rss'] / 2**30:6.2f} GiB (baseline {r['baseline_rss'] / 2**20:.0f}"
            f" MiB)  raw {r['raw_bytes_per_bargain']:7.0f}, over baseline {r['rss_bytes_per_bargain']:7.0f}, marginal "
            f"{r.get('rss_marginal_bytes_per_bargain', float('nan')):7.0f} B/bargain{xla}  "
            f"s/iteration={r['seconds_per_iteration']:.2f}"
            f"  agent-steps/s={r['agent_steps_per_second']:,.0f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("engine", "ppo"))
    ap.add_argument("--sizes", default=None, help="comma-separated N (default: 1e5,1e6,1e7 engine; 1e5 ppo)")
    ap.add_argument("--presets", default="coase,layers", help="engine presets")
    ap.add_argument("--rounds", type=int, default=10, help="engine rounds per run")
    ap.add_argument("--iterations", type=int, default=2, help="PPO iterations per run")
    ap.add_argument("--minibatches", type=int, default=8)
    ap.add_argument("--no-xla", action="store_true", help="skip the XLA memory analysis (one process fewer per size)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every run (repeatable), e.g. train.epochs=1 for a quicker PPO run of "
                         "the same peak (the update's peak is one minibatch's, whatever the number of epochs)")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    EXTRA[:] = args.set
    if args.sizes is None:
        args.sizes = "1e5,1e6,1e7" if args.what == "engine" else "1e5"
    import platform

    print(f"{platform.machine()} {os.cpu_count()} cores; PYTHONPATH={os.environ.get('PYTHONPATH', '')!r}", flush=True)
    rows = engine(args) if args.what == "engine" else ppo(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
