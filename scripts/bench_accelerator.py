"""The accelerator benchmark (issue 18, item 4): every headline figure in one process, one call, under 8 minutes.

    bash scripts/bench_accelerator.sh [--reduced] [--out DIR] [--budget SECONDS]

Items, in the order they run (each one a row of the table):
  engine        the scripted engine (the ``coasejax bench`` workload: defaults, drifting types, k = 4) at 10^7 and
                10^8 agents, or the largest N that fits in the device's memory (halving from 10^8);
  layers        the same with all three rule layers on (``scripts/bench_layers.sh``'s overrides), as a ratio of
                time per round to the plain engine at the same N (target ≤ 1.3×);
  es            engine-ES training throughput (``coase_es`` at 10^6 agents), agent-steps/s including the update;
                its parameters are saved as a checkpoint for the next item;
  learned       ``simulate`` with those learned advocates seated (``coase_es`` with ``advocates.policy=RUN``) at
                10^7 agents;
  ppo           PPO training throughput (``coase_ppo`` at 10^6 bargains per batch, the preset's rollout, epochs and
                minibatches), agent-steps/s including the update;
  multi_device  the engine sharded over every device, when the machine has several (skipped, with the reason,
                on one device).

Every item records backend, device kind, device count, N, agent-steps/s, bytes per agent and seconds. Bytes per agent
are given twice: XLA's own accounting of the compiled program (arguments + outputs − aliases + temporaries, as
``coasejax bench``'s peak), and the process's measured high-water mark (``device.memory_stats()['peak_bytes_in_use']``
on an accelerator, the resident set's high-water mark above the start-up baseline on CPU), divided by N where this
item raised it (a high-water mark cannot be reset, so an item that stayed below an earlier item's peak gets none).

A time guard keeps the whole run inside ``--budget`` seconds (default 420 in full mode: 8 minutes less start-up and
margin): an item whose estimated cost would pass it is skipped with the reason recorded, never overrun.
Reduced mode (forced by ``--reduced``, automatic when JAX's default backend is the CPU) runs the same items at tiny
sizes, few rounds and one-iteration chunks, so that the whole script finishes in well under a minute on a 2-core CPU
and a test can run it (``tests/test_bench_accelerator.py``); its figures only show that the script works.

Outputs: ``DIR/bench_accelerator.json`` and ``DIR/bench_accelerator.md`` (a markdown table for BENCHMARKS.md with the
machine, commit and date in its header line). Bad input (an unknown option, an unwritable ``--out``): one line naming
it, exit 2. Exit 1 when an item failed (its error is recorded in both files, which are still written).

On the lent GPU machine, in one call of the device tool (docs/scaling.md, "An accelerator benchmark in one call"):
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site || exit; set -o pipefail; PYTHONUNBUFFERED=1 \
        COASEJAX_COMMIT=<sha> bash scripts/bench_accelerator.sh --out $OUT 2>&1 | tee $OUT/bench_accelerator.log
with ``carry: [".whl"]`` (``bash scripts/device_wheels.sh`` fetches the wheels of the packages that machine lacks)
and ``<sha>`` replaced by the commit (the copy there has no git history).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T_START = time.perf_counter()
ROOT = Path(__file__).resolve().parent.parent
EXIT_BAD_INPUT = 2

#: scripts/bench_layers.sh's "all three layers" overrides, on top of the engine's workload
LAYERS = ["state.activity_cap=1.5", "state.pigou_tax=0.3", "state.budget_rule=true",
          "providers.count=2", "providers.fee=[0.05,0.1]", "providers.conduct=0.5", "providers.switching_rate=0.1",
          "individual.red_line=uniform:0.5:2", "individual.reservation=constant:0",
          "individual.budget_share=uniform:0.5:1"]
#: the engine's workload (``coasejax bench``): drifting types, so every round recomputes all the bargaining
ENGINE = ["population.drift=0.05", "sim.coalitions=off"]

PLANS = {
    "full": {"sizes": [10_000_000, 100_000_000], "rounds": 40, "repeats": 3, "learned_n": 10_000_000,
             "es_n": 1_000_000, "es_chunk": 10, "ppo_n": 1_000_000, "ppo_sets": [], "multi_n": 100_000_000,
             "budget": 420.0},
    "reduced": {"sizes": [32_768], "rounds": 8, "repeats": 2, "learned_n": 32_768, "es_n": 4_096, "es_chunk": 1,
                "ppo_n": 2_048, "ppo_sets": ["train.rollout=2", "train.epochs=1", "train.minibatches=1",
                                            "policy.hidden=[8]", "env.eval_rounds=1"],
                "multi_n": 32_768, "budget": 300.0},
}
#: first guesses of an item's seconds (compile included) for the time guard, before anything is measured
GUESS = {"full": {"engine": 40, "layers": 60, "es": 60, "learned": 45, "ppo": 90, "multi_device": 45},
         "reduced": {"engine": 5, "layers": 10, "es": 10, "learned": 5, "ppo": 15, "multi_device": 10}}


class BadInput(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the usage too)
        raise BadInput(message)


def parse(argv: list[str]) -> argparse.Namespace:
    p = Parser(prog="scripts/bench_accelerator.sh", add_help=True,
               description="The accelerator benchmark in one call (issue 18, item 4).")
    p.add_argument("--reduced", action="store_true", help="tiny sizes (automatic on a CPU backend)")
    p.add_argument("--out", type=Path, default=Path("runs/bench_accelerator"), help="output directory")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds the whole run may take (default: 420 in full mode, 300 in reduced mode)")
    args = p.parse_args(argv)
    if args.budget is not None and not (math.isfinite(args.budget) and args.budget > 0):
        raise BadInput(f"--budget {args.budget}: expected a positive number of seconds")
    return args


def check_out(out: Path) -> Path:
    """``--out`` must be a directory we can write in (created if missing); checked before JAX starts."""
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out, prefix=".write-test."):
            pass
    except OSError as e:
        raise BadInput(f"--out {out}: cannot write there ({e.strerror or e})") from None
    return out


# ----------------------------------------------------------------------------------------------------------------------
# What the machine is, and how much memory a run used
# ----------------------------------------------------------------------------------------------------------------------


def commit() -> str:
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        if sha:
            dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return sha + ("+local changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("COASEJAX_COMMIT") or "unknown (not a git checkout; set COASEJAX_COMMIT)"


def rss_now() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def add_note(rec: dict, text: str) -> None:
    """Append ``text`` to ``rec``'s note (``; ``-separated)."""
    rec["note"] = f"{rec['note']}; {text}" if rec.get("note") else text


class Memory:
    """The process's memory high-water mark: the first device's ``peak_bytes_in_use`` where the backend reports it,
    else the resident set's (``ru_maxrss``) above the baseline taken at start."""

    def __init__(self, jax):
        self.device = jax.local_devices()[0]
        stats = self._stats()
        self.source = "memory_stats" if stats and "peak_bytes_in_use" in stats else "rss"
        self.baseline = rss_now() if self.source == "rss" else 0

    def _stats(self):
        try:
            return self.device.memory_stats()
        except Exception:  # noqa: BLE001  (a backend without memory statistics)
            return None

    def peak(self) -> int:
        if self.source == "memory_stats":
            return int((self._stats() or {}).get("peak_bytes_in_use", 0))
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.baseline

    def limit(self) -> int | None:
        stats = self._stats() or {}
        return int(stats["bytes_limit"]) if stats.get("bytes_limit") else None


# ----------------------------------------------------------------------------------------------------------------------
# The items
# ----------------------------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, mode: str, out: Path, budget: float):
        import jax

        self.jax, self.mode, self.out, self.plan = jax, mode, out, PLANS[mode]
        self.budget = budget
        self.devices = jax.devices()
        self.backend = jax.default_backend()
        self.device_kind = getattr(self.devices[0], "device_kind", self.devices[0].platform)
        self.memory = Memory(jax)
        self.records: list[dict] = []
        self.engine_ms: dict[int, float] = {}  # N -> the plain engine's ms per round, for the layers' ratio
        self.seconds_of: dict[str, float] = {}  # the last measured seconds of each kind, for the time guard
        self.work = Path(tempfile.mkdtemp(prefix="bench_accelerator."))
        self.es_run: Path | None = None
        self.runs_at: dict[str, list] = {}  # kind -> [(N, seconds, compile seconds)] of its measured runs
        self.per_agent: dict[str, float | None] = {"engine": None, "layers": None}  # measured bytes per agent

    # -- bookkeeping ---------------------------------------------------------------------------------------------------
    def left(self) -> float:
        return self.budget - (time.perf_counter() - T_START)

    def base(self, item: str, n: int | None, devices: int = 1) -> dict:
        return {"item": item, "backend": self.backend, "device_kind": self.device_kind, "device_count": devices,
                "n_agents": n}

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - T_START:6.1f} s] {msg}", flush=True)

    def record(self, rec: dict) -> dict:
        rec.setdefault("seconds", 0.0)  # a skipped item took none
        self.records.append(rec)
        if rec.get("skipped"):
            self.log(f"{rec['item']}: skipped ({rec['skipped']})")
        elif rec.get("error"):
            self.log(f"{rec['item']}: FAILED ({rec['error']})")
        else:
            self.log(f"{rec['item']} N={rec['n_agents']:,}: {rec['agent_steps_per_second']:,.0f} agent-steps/s"
                     + (f", {rec['ratio_to_engine']:.2f}× the engine" if rec.get("ratio_to_engine") else "")
                     + f", {rec['seconds']:.1f} s")
        return rec

    def guard(self, rec: dict, kind: str, estimate: float | None = None) -> bool:
        """True (and ``rec`` skipped) when the item's estimated seconds would pass the budget."""
        est = estimate if estimate is not None else self.seconds_of.get(kind, GUESS[self.mode][kind])
        if est > self.left():
            rec["skipped"] = f"time guard: {self.left():.0f} s of the {self.budget:.0f} s budget left, the item " \
                             f"needs about {est:.0f} s"
            self.record(rec)
            return True
        return False

    def timed(self, rec: dict, kind: str, fn) -> dict:
        """Run ``fn(rec)`` (it fills the figures), with its wall seconds and memory high-water mark; an exception
        becomes the record's error."""
        gc.collect()
        before = self.memory.peak()
        t0 = time.perf_counter()
        try:
            fn(rec)
        except Exception as e:  # noqa: BLE001  (one item failing must not lose the others)
            rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            if os.environ.get("COASEJAX_TRACEBACK"):
                raise
        rec["seconds"] = time.perf_counter() - t0
        self.seconds_of[kind] = rec["seconds"]
        after = self.memory.peak()
        rec["memory_source"] = self.memory.source
        n = rec.get("n_agents") or 0
        if after > before and n:
            rec["device_peak_bytes"] = after
            rec["device_peak_bytes_per_agent"] = after / n
        else:
            rec["device_peak_bytes_per_agent"] = None
            rec["memory_note"] = "stayed below an earlier item's high-water mark"
        gc.collect()
        return self.record(rec)

    # -- sizes ---------------------------------------------------------------------------------------------------------
    def fits(self, cfg, per_agent: float | None) -> tuple[bool, str]:
        """Whether N agents fit: the measured bytes per agent of a smaller run of the same kind (×1.25, plus the
        state's copy) or else twice the CLI's lower bound, against 90 % of the device's (or the host's) memory."""
        from coasejax.cliutil import bytes_per_agent, memory_available

        have, where = memory_available(cfg.sim.shard)
        have = int(have * 0.9)
        per = per_agent * 1.25 if per_agent else 2.0 * bytes_per_agent(cfg)
        need = cfg.population.n_agents * cfg.sim.envs * per
        return need <= have, f"{need / 1e9:.1f} GB needed ({per:.0f} B/agent), {have / 1e9:.1f} GB usable on {where}"

    def fitted(self, make_cfg, n: int, floor: int, per_agent: float | None):
        """The config at the largest of n, n/2, n/4, … (not below ``floor``) that fits, and a note when it shrank."""
        tried = n
        while True:
            cfg = make_cfg(n)
            ok, why = self.fits(cfg, per_agent)
            if ok:
                return cfg, (None if n == tried else f"{tried:,} agents do not fit ({self.fits(make_cfg(tried), per_agent)[1]}); ran {n:,}")
            if n // 2 < floor:
                return None, f"does not fit: {why}"
            n //= 2

    # -- the engine, with and without the layers -------------------------------------------------------------------------
    def engine_cfg(self, n: int, layers: bool, shard: bool = False, preset: str | None = None, extra=()):
        from coasejax.config import load_config

        p = self.plan
        sets = [*ENGINE, *(LAYERS if layers else []), f"population.n_agents={n}", f"sim.rounds={p['rounds']}",
                "sim.envs=1", f"sim.shard={'true' if shard else 'false'}", *extra]
        return load_config(preset, sets)

    def measure_sim(self, rec: dict, cfg) -> None:
        from coasejax.bench import measure

        r = self.retry_oom(rec, cfg, lambda c: measure(c, self.plan["repeats"]))
        rec.update({"rounds": r["rounds"], "repeats": self.plan["repeats"],
                    "agent_steps_per_second": r["agent_steps_per_second"], "ms_per_round": r["ms_per_round"],
                    "compile_seconds": r["compile_seconds"], "state_bytes_per_agent": r["state_bytes_per_agent"],
                    "xla_peak_bytes_per_agent": r["peak_bytes_per_agent"] * rec["device_count"]
                    if math.isfinite(r["peak_bytes_per_agent"]) else None,
                    "efficiency": r["efficiency"]})

    def retry_oom(self, rec: dict, cfg, fn):
        """``fn(cfg)``; on a device out-of-memory error, again at half the agents (recorded), down to 1/8."""
        for _ in range(4):
            try:
                return fn(cfg)
            except Exception as e:  # noqa: BLE001
                if "RESOURCE_EXHAUSTED" not in str(e) and type(e).__name__ != "MemoryError":
                    raise
                n = cfg.population.n_agents
                add_note(rec, f"out of memory at {n:,}, retried at {n // 2:,}")
                gc.collect()
                cfg = cfg.model_copy(deep=True)
                cfg.population.n_agents = n // 2
                rec["n_agents"] = n // 2
        raise MemoryError(f"out of memory down to {cfg.population.n_agents:,} agents")

    def place(self, rec: dict, make, n: int, floor: int, per_agent) -> object | None:
        """The config of the largest N (from ``n`` down, not below ``floor``) that fits (:meth:`fitted`), with
        ``rec``'s N and note set; None, with the skip recorded, when none fits."""
        cfg, note = self.fitted(make, n, floor, per_agent)
        if cfg is None:
            rec["skipped"] = note
            self.record(rec)
            return None
        rec["n_agents"] = cfg.population.n_agents
        if note:
            add_note(rec, note)
        return cfg

    def engine_items(self, n: int, floor: int) -> None:
        """The plain engine at the largest of n, n/2, … (not below ``floor``) that fits, then the layers at the N the
        engine ran (or below, if they need more memory), with their ratio of time per round."""
        for layers in (False, True):
            kind = "layers" if layers else "engine"
            rec = self.base(kind, n)
            cfg = self.place(rec, lambda m: self.engine_cfg(m, layers), n, floor, self.per_agent[kind])
            if cfg is None:
                continue
            if self.guard(rec, kind, self.estimate(kind, rec["n_agents"])):
                continue
            self.timed(rec, kind, lambda r: self.measure_sim(r, cfg))
            if not rec.get("agent_steps_per_second"):
                continue
            self.runs_at.setdefault(kind, []).append((rec["n_agents"], rec["seconds"], rec["compile_seconds"]))
            if rec.get("xla_peak_bytes_per_agent"):
                self.per_agent[kind] = rec["xla_peak_bytes_per_agent"] + 2 * rec["state_bytes_per_agent"]
            if layers:
                eng = self.engine_ms.get(rec["n_agents"])
                rec["ratio_to_engine"] = rec["ms_per_round"] / eng if eng else None
                if not eng:
                    add_note(rec, "no plain-engine run at this N for the ratio")
            else:
                self.engine_ms[rec["n_agents"]] = rec["ms_per_round"]
                n = rec["n_agents"]

    def estimate(self, kind: str, n: int) -> float:
        """Seconds of an item at N: the last run of its kind scaled (its compile kept, the rest linear in N)."""
        runs = self.runs_at.get(kind)
        if not runs:
            return GUESS[self.mode][kind]
        n0, s0, c0 = runs[-1]
        return c0 + (s0 - c0) * n / n0

    # -- training ---------------------------------------------------------------------------------------------------------
    def train_item(self, rec: dict, preset: str, sets: list[str], chunk: int, save_to: Path | None = None) -> None:
        """Compile a chunk of ``chunk`` iterations ahead, run it ``repeats`` times (the state carried on), keep the
        best: agent-steps/s including the update, as ``coasejax train`` reports them (its evaluations, logs and
        checkpoints left out)."""
        from coasejax.config import load_config
        from coasejax.train.run import Trainer, make_algo, resolved

        jax = self.jax
        cfg = load_config(preset, [*sets, f"train.log_every={chunk}", "checkpoint.every=0"])
        algo = make_algo(cfg)
        trainer = Trainer(cfg, algo)
        states = jax.jit(algo.init_states)()  # one compiled call instead of many eager ops
        fn = trainer.chunk(chunk, states)
        best = math.inf
        for _ in range(self.plan["repeats"]):
            t0 = time.perf_counter()
            states, _ = fn(states)
            jax.block_until_ready(states)
            best = min(best, time.perf_counter() - t0)
        steps = chunk * cfg.train.seeds * algo.agents_per_iteration
        rec.update({"iterations": chunk, "repeats": self.plan["repeats"], "agent_steps_per_iteration":
                    cfg.train.seeds * algo.agents_per_iteration, "seconds_per_iteration": best / chunk,
                    "agent_steps_per_second": steps / best, "compile_seconds": trainer.compile_seconds,
                    "device_count": 1})
        if save_to is not None:  # the trained parameters as a checkpoint that simulate can seat
            from coasejax import checkpoint as ckpt

            step = int(jax.device_get(states.step).reshape(-1)[0])
            current = resolved(cfg)
            with ckpt.manager(save_to / "checkpoints", keep=1) as mngr:
                ckpt.save(mngr, step, states, current, None, ckpt.metadata(cfg, current, getattr(algo, "layout", None)))
            self.es_run = save_to

    def es(self) -> None:
        n = self.plan["es_n"]
        rec = self.base("es", n)
        rec["config"] = "coase_es"
        if self.guard(rec, "es"):
            return
        self.timed(rec, "es", lambda r: self.train_item(r, "coase_es", [f"population.n_agents={n}"],
                                                        self.plan["es_chunk"], save_to=self.work / "es"))

    def learned(self) -> None:
        n = self.plan["learned_n"]
        rec = self.base("learned", n)
        rec["config"] = "coase_es, advocates.policy = the es item's checkpoint"
        if self.es_run is None:
            rec["skipped"] = "no checkpoint: the es item did not run"
            self.record(rec)
            return
        cfg = self.place(rec, lambda m: self.engine_cfg(m, False, preset="coase_es",
                                                     extra=[f"advocates.policy={self.es_run}"]), n, 16, None)
        if cfg is None:
            return
        if self.guard(rec, "learned"):
            return
        self.timed(rec, "learned", lambda r: self.measure_sim(r, cfg))

    def ppo(self) -> None:
        n = self.plan["ppo_n"]
        rec = self.base("ppo", n)
        rec["config"] = "coase_ppo" + (f" ({', '.join(self.plan['ppo_sets'])})" if self.plan["ppo_sets"] else "")
        if self.guard(rec, "ppo"):
            return
        self.timed(rec, "ppo", lambda r: self.train_item(
            r, "coase_ppo", [f"population.n_agents={n}", *self.plan["ppo_sets"]], 1))

    def multi_device(self) -> None:
        d = len(self.devices)
        n = self.plan["multi_n"]
        rec = self.base("multi_device", n, d)
        if d < 2:
            rec["skipped"] = f"one {self.backend} device: the multi-device run needs at least 2"
            self.record(rec)
            return
        n -= n % d
        eng = self.engine_ms
        cfg = self.place(rec, lambda m: self.engine_cfg(m - m % d, False, shard=True), n, 16, None)
        if cfg is None:
            return
        if self.guard(rec, "multi_device", self.estimate("engine", cfg.population.n_agents) / d + 10):
            return
        self.timed(rec, "multi_device", lambda r: self.measure_sim(r, cfg))
        one = eng.get(rec["n_agents"])
        if one and rec.get("ms_per_round"):  # time per round against the one-device engine at the same N
            rec["ratio_to_engine"] = rec["ms_per_round"] / one

    def run(self) -> None:
        sizes = self.plan["sizes"]
        self.engine_items(sizes[0], 16)
        self.es()
        self.learned()
        self.ppo()
        for n in sizes[1:]:  # 10^8 or the largest that fits, not below the first size
            self.engine_items(n, sizes[0])
        self.multi_device()
        shutil.rmtree(self.work, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------------


def fmt_n(n) -> str:
    if not n:
        return "—"
    e = math.log10(n)
    return f"10{str(int(e)).translate(str.maketrans('0123456789', '⁰¹²³⁴⁵⁶⁷⁸⁹'))}" if abs(e - round(e)) < 1e-9 else f"{n:,}"


def fmt_rate(x) -> str:
    if x is None:
        return "—"
    return f"{x / 1e9:.2f} G" if x >= 1e9 else f"{x / 1e6:.1f} M" if x >= 1e6 else f"{x / 1e3:.1f} k"


def fmt(x, spec: str) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


LABELS = {"engine": "scripted engine", "layers": "+ all three rule layers", "es": "ES training (coase_es)",
          "learned": "simulate, learned advocates", "ppo": "PPO training (coase_ppo)",
          "multi_device": "engine, sharded over all devices"}


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"Accelerator benchmark ({result['mode']} mode): {m['description']}; {m['device_count']} × "
             f"{m['device_kind']}; commit {result['commit']}; {result['date']}; {result['seconds']:.0f} s in all.",
             "",
             "| item | N | devices | agent-steps/s | ms / round | vs engine | state B / agent | XLA peak B / agent "
             "| measured peak B / agent | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["items"]:
        label = LABELS[r["item"]]
        if r.get("skipped") or r.get("error"):
            why = f"skipped: {r['skipped']}" if r.get("skipped") else f"failed: {r['error']}"
            lines.append(f"| {label} | {fmt_n(r.get('n_agents'))} | {r['device_count']} | {why.replace('|', '/')} "
                         f"| | | | | | |")
            continue
        ratio = r.get("ratio_to_engine")
        lines.append(
            f"| {label} | {fmt_n(r['n_agents'])} | {r['device_count']} | {fmt_rate(r['agent_steps_per_second'])} | "
            f"{fmt(r.get('ms_per_round'), '.2f')} | {fmt(ratio, '.2f') + '×' if ratio else '—'} | "
            f"{fmt(r.get('state_bytes_per_agent'), '.0f')} | {fmt(r.get('xla_peak_bytes_per_agent'), '.0f')} | "
            f"{fmt(r.get('device_peak_bytes_per_agent'), '.0f')} | {r['seconds']:.1f} |")
    lines += ["", "vs engine: time per round over the one-device plain engine's at the same N. "
              "Engine and layers: defaults with drifting types (k = 4, ring, Nash), "
              f"{result['plan']['rounds']} rounds, best of {result['plan']['repeats']}, compile excluded; layers: "
              "scripts/bench_layers.sh's state + provider + individual overrides (target ≤ 1.3× the engine). "
              "Training: agent-steps/s of one compiled chunk including the update, best of "
              f"{result['plan']['repeats']}. Measured peak: {result['machine']['memory_source']} high-water mark "
              "divided by N, where the item raised it."]
    for n, ratio in result.get("layers_ratio", {}).items():
        lines += ["", f"All three layers at N = {fmt_n(int(n))}: {ratio:.2f}× the plain engine's time per round "
                      f"(target ≤ 1.3×: {'met' if ratio <= 1.3 else 'not met'})."]
    notes = [f"{LABELS[r['item']]} (N={r.get('n_agents'):,}): {r['note']}" for r in result["items"] if r.get("note")]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    try:
        args = parse(argv)
        out = check_out(args.out)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sys.path.insert(0, str(ROOT))
    import jax

    mode = "reduced" if args.reduced or jax.default_backend() == "cpu" else "full"
    budget = args.budget if args.budget is not None else PLANS[mode]["budget"]
    from coasejax import scenarios  # noqa: F401  (registers the scenarios' config sections)
    from coasejax.bench import machine

    bench = Bench(mode, out, budget)
    bench.log(f"{mode} mode on {machine()}, {len(bench.devices)} device(s), budget {budget:.0f} s")
    bench.run()
    result = {
        "mode": mode,
        "commit": commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"description": machine(), "platform": platform.platform(), "backend": bench.backend,
                    "device_kind": bench.device_kind, "device_count": len(bench.devices),
                    "jax": jax.__version__, "memory_source": bench.memory.source,
                    "device_memory_bytes": bench.memory.limit()},
        "budget_seconds": budget,
        "plan": {k: v for k, v in PLANS[mode].items() if k != "budget"},
        "items": bench.records,
    }
    layers = [r for r in bench.records if r["item"] == "layers" and r.get("ratio_to_engine")]
    result["layers_ratio"] = {str(r["n_agents"]): r["ratio_to_engine"] for r in layers}
    result["seconds"] = time.perf_counter() - T_START
    from coasejax.cliutil import undefined_as_null

    result = undefined_as_null(result)
    (out / "bench_accelerator.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    (out / "bench_accelerator.md").write_text(markdown(result))
    bench.log(f"wrote {out / 'bench_accelerator.json'} and {out / 'bench_accelerator.md'}")
    print(markdown(result))
    return 1 if any(r.get("error") for r in bench.records) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
