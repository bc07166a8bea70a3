"""Drive a training run: build the game and the jitted chunk, loop over chunks, log, checkpoint, evaluate, summarise.

The iterations run in compiled chunks of ``train.log_every`` (``lax.scan`` inside, ``vmap`` over ``train.seeds``),
aligned to multiples of ``train.log_every`` from step 0, so an interrupted run resumed from any checkpoint executes
exactly the same compiled chunks on the same states as an uninterrupted one: on CPU its final parameters are
bit-identical. After each chunk a line goes to ``metrics.jsonl`` (and to TensorBoard when installed); every
``checkpoint.every`` iterations and at the end the play is evaluated on fresh draws and a checkpoint is saved.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from coasejax import checkpoint as ckpt
from coasejax.cliutil import write_atomic
from coasejax.config import Config
from coasejax.train import es
from coasejax.train.auction_game import auction_game

EVAL_STREAM = 0x6576616C  # folds the evaluation's randomness away from the training's
SPREAD_KEYS = ("bne_rmse", "utility_loss_rel", "utility", "efficiency", "proposer_share", "report_ratio_mean")


def make_algo(cfg: Config):
    """The training algorithm of ``cfg``: :class:`coasejax.train.gradient.Gradient` or
    :class:`coasejax.train.es.ES` on an auction, :class:`coasejax.train.engine_es.EngineES` on an engine scenario,
    :class:`coasejax.train.ppo.PPO` on the multi-round Coase scenario."""
    if cfg.train.algo == "ppo":
        from coasejax.train.ppo import PPO

        return PPO(cfg)
    if cfg.env.kind == "auction":
        if cfg.train.algo == "gradient":
            from coasejax.train.gradient import Gradient

            return Gradient(auction_game(cfg), cfg.train)
        return es.ES(auction_game(cfg), cfg.train)
    from coasejax.train.engine_es import EngineES

    return EngineES(cfg)


@dataclass
class Trainer:
    cfg: Config
    algo: object
    chunks: dict = field(default_factory=dict)  # chunk length -> compiled runner
    metrics_fn: Callable | None = None
    compile_seconds: float = 0.0

    def chunk(self, length: int, states):
        """The compiled runner of ``length`` iterations (compiled on first use, timed in ``compile_seconds``)."""
        if length not in self.chunks:
            t0 = time.perf_counter()
            self.chunks[length] = self.algo.make_chunk(length).lower(states).compile()
            self.compile_seconds += time.perf_counter() - t0
        return self.chunks[length]

    def evaluate(self, params, key: jax.Array) -> dict:
        """Metrics of every seed's parameters (leading seed axis): ``{name: np.ndarray[S]}``."""
        if self.metrics_fn is None:
            self.metrics_fn = jax.jit(jax.vmap(self.algo.metrics, in_axes=(None, 0)))
        return {k: np.asarray(v, np.float64) for k, v in self.metrics_fn(key, params).items()}


def eval_key(seed: int, step: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), EVAL_STREAM), step)


def resolved(cfg: Config) -> dict:
    """The config as JSON-normal plain data (what a checkpoint stores)."""
    return json.loads(json.dumps(cfg.to_dict()))


def mean_metrics(per_seed: dict) -> dict:
    """Means over seeds: a float per scalar metric, a list for per-group or per-provider metrics."""
    return {k: float(np.mean(v)) if np.ndim(v) <= 1 else np.mean(v, axis=0).tolist() for k, v in per_seed.items()}


def per_seed_lists(per_seed: dict) -> dict:
    return {k: np.asarray(v).tolist() for k, v in per_seed.items()}


class TensorBoard:
    """Scalars to TensorBoard event files under ``logdir``; a no-op when no writer is importable.

    Writers, first found wins: the ``tensorboard`` package's own TensorFlow-free event writer
    (``tensorboard.summary.writer.event_file_writer.EventFileWriter`` with the ``event_pb2``/``summary_pb2`` protos
    it ships; ``pip install 'coasejax[tensorboard]'``), then ``tensorboardX``. ``backend`` names the one in use
    (None: disabled). Each call of :meth:`scalars` writes one event at ``step`` holding every finite number of the row
    (``simple_value``, float32) except ``step`` itself.
    """

    def __init__(self, logdir: Path):
        self.writer = None
        self.backend: str | None = None
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError:
            pass
        else:
            self._event, self._summary = event_pb2.Event, summary_pb2.Summary
            self.writer, self.backend = EventFileWriter(str(logdir)), "tensorboard"
            return
        try:
            from tensorboardX import SummaryWriter  # type: ignore[import-not-found]
        except ImportError:
            return
        self.writer, self.backend = SummaryWriter(str(logdir)), "tensorboardX"

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def scalars(self, step: int, values: dict) -> None:
        if self.writer is None:
            return
        finite = {k: float(v) for k, v in values.items()
                  if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}
        if self.backend == "tensorboard":
            summary = self._summary(value=[self._summary.Value(tag=k, simple_value=v) for k, v in finite.items()])
            self.writer.add_event(self._event(wall_time=time.time(), step=int(step), summary=summary))
        else:
            for k, v in finite.items():
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _rewrite_metrics_log(path: Path, upto: int) -> None:
    """Keep the lines of ``metrics.jsonl`` up to step ``upto`` (those after it are redone by a resumed run)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= upto]
    path.write_text("".join(line + "\n" for line in keep))


def preflight(cfg: Config, out: Path, resume: bool) -> None:
    """Check ``--resume`` against ``out/checkpoints`` before any work; raises :class:`CheckpointError`."""
    directory = out / "checkpoints"
    latest = ckpt.manager(directory, read_only=True).latest_step() if directory.is_dir() else None
    if resume:
        if latest is None:
            raise ckpt.CheckpointError(f"--resume: no checkpoint in {directory}")
        diff = ckpt.incompatible_keys(ckpt.saved_config(ckpt.manager(directory, read_only=True), latest),
                                      resolved(cfg))
        if diff:
            raise ckpt.CheckpointError(f"--resume: checkpoint {latest} in {directory} was written with a "
                                       f"different config: {'; '.join(diff)}")
    elif latest is not None:
        raise ckpt.CheckpointError(f"--out {out}: already holds checkpoints (latest step {latest}); pass --resume to "
                                   f"continue that run or choose another --out")


def train(cfg: Config, out: Path, resume: bool = False, on_start: Callable[[int, int], None] | None = None,
          on_chunk: Callable[[int, dict], None] | None = None) -> dict:
    """Train per ``cfg`` into ``out`` (``checkpoints/``, ``metrics.jsonl``, ``tb/``); returns the summary.

    ``on_start(step0, total)`` is called once the start step is known, ``on_chunk(step, row)`` after every chunk.
    Raises :class:`coasejax.checkpoint.CheckpointError` for a missing or incompatible checkpoint.
    """
    tc, cc = cfg.train, cfg.checkpoint
    preflight(cfg, out, resume)
    trainer = Trainer(cfg, make_algo(cfg))
    mngr = ckpt.manager(out / "checkpoints", keep=cc.keep, best_metric=cc.best_metric)
    current = resolved(cfg)
    meta = ckpt.metadata(cfg, current, getattr(trainer.algo, "layout", None))
    states = trainer.algo.init_states()
    step0 = 0
    latest = mngr.latest_step()
    if resume:
        states = ckpt.restore(mngr, latest, states)
        step0 = int(np.asarray(states.step).reshape(-1)[0])
    if step0 > tc.iterations:
        raise ckpt.CheckpointError(f"--resume: checkpoint step {step0} is beyond train.iterations={tc.iterations}")
    log_path = out / "metrics.jsonl"
    if resume:
        _rewrite_metrics_log(log_path, step0)
    else:
        log_path.unlink(missing_ok=True)
    tb = TensorBoard(out / "tb")
    if on_start is not None:
        on_start(step0, tc.iterations)

    n_prov, seeds, length = trainer.algo.n_providers, tc.seeds, tc.log_every
    lr = es.schedule(tc)
    step, train_seconds, last_eval = step0, 0.0, {}
    t_start = time.perf_counter()
    with log_path.open("a") as log:
        while step < tc.iterations:
            n = min(length - step % length, tc.iterations - step)
            fn = trainer.chunk(n, states)
            t0 = time.perf_counter()
            states, m = fn(states)
            jax.block_until_ready(states)
            train_seconds += time.perf_counter() - t0
            step += n
            row = {"step": step, **trainer.algo.log_row(m), "learning_rate": float(lr(step - 1)),
                   "seconds": round(time.perf_counter() - t_start, 3)}
            final = step == tc.iterations
            if final or (cc.every and step % cc.every == 0):
                last_eval = trainer.evaluate(states.params, eval_key(tc.seed, step))
                means = mean_metrics(last_eval)
                row.update(means)
                if seeds > 1:  # the report draws the spread over seeds
                    row["per_seed"] = {k: v for k, v in per_seed_lists(last_eval).items() if k in SPREAD_KEYS}
                ckpt.save(mngr, step, states, current, {cc.best_metric: means.get(cc.best_metric)}, meta)
            log.write(json.dumps(row) + "\n")
            log.flush()
            tb.scalars(step, row)
            if on_chunk is not None:
                on_chunk(step, row)
    tb.close()
    if not last_eval:  # nothing left to train: evaluate the restored state
        last_eval = trainer.evaluate(states.params, eval_key(tc.seed, step))
    ran = step - step0
    agent_steps = ran * seeds * trainer.algo.agents_per_iteration
    summary = {
        "game": trainer.algo.name,
        "algo": tc.algo,
        "iterations": tc.iterations,
        "resumed_from": step0 if resume else None,
        "seeds": seeds,
        "providers": n_prov,
        **mean_metrics(last_eval),
        "per_seed": per_seed_lists(last_eval),
        "train_seconds": train_seconds,
        "compile_seconds": trainer.compile_seconds,
        "seconds_per_iteration": train_seconds / ran if ran else None,
        "agents_per_iteration": seeds * trainer.algo.agents_per_iteration,
        "agent_steps_per_second": agent_steps / train_seconds if train_seconds > 0 else None,
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "checkpoint_steps": [int(s) for s in mngr.all_steps()],
        "best_step": _best_step(mngr, cc.best_metric),
        "tensorboard": tb.backend,
    }
    write_strategy(trainer.algo, states.params, out)
    if tc.algo == "ppo":
        from coasejax.scenarios.coase_rounds import cost_curve

        summary["cost_curve"] = cost_curve(cfg, mean_metrics(last_eval))
    mngr.close()
    return summary


def write_strategy(algo, params, out: Path) -> None:
    """``out/strategy.json``: the learned strategy beside the theory, as panels for the report (an algorithm without
    a ``strategy`` method writes none)."""
    draw = getattr(algo, "strategy", None)
    panels = draw(params) if draw is not None else []
    if panels:
        write_atomic(out / "strategy.json", json.dumps({"panels": panels}) + "\n")


def _best_step(mngr, metric: str) -> int | None:
    best = None
    for s in mngr.all_steps():
        m = mngr.metrics(s) if hasattr(mngr, "metrics") else None
        if m and metric in m and (best is None or m[metric] < best[1]):
            best = (int(s), m[metric])
    return best[0] if best else None


def evaluate_checkpoint(run_dir: Path, step: int | None, seed: int) -> dict:
    """Recompute the metrics of checkpoint ``step`` (default: the latest) of ``run_dir``, on fresh draws."""
    from coasejax.config import validate

    directory = run_dir / "checkpoints"
    if not directory.is_dir():
        raise ckpt.CheckpointError(f"{run_dir}: no checkpoints/ folder (is it the --out of a coasejax train run?)")
    mngr = ckpt.manager(directory, read_only=True)
    step = ckpt.resolve_step(mngr, step, "--step")
    cfg = validate(ckpt.saved_config(mngr, step), f"{directory}/{step} config")
    trainer = Trainer(cfg, make_algo(cfg))
    states = ckpt.restore(mngr, step, trainer.algo.init_states())
    per_seed = trainer.evaluate(states.params, jax.random.fold_in(jax.random.PRNGKey(seed), EVAL_STREAM + 1))
    return {"run_dir": str(run_dir), "step": step, "eval_seed": seed, "game": trainer.algo.name,
            **mean_metrics(per_seed), "per_seed": per_seed_lists(per_seed)}

