"""Drive a training run: build the game and the jitted chunk, loop over chunks, log, checkpoint, evaluate, summarise.

The iterations run in compiled chunks of ``train.log_every`` (``lax.scan`` inside, ``vmap`` over ``train.seeds``),
aligned to multiples of ``train.log_every`` from step 0, so an interrupted run resumed from any checkpoint executes
exactly the same compiled chunks on the same states as an uninterrupted one: on CPU its final parameters are
bit-identical. After each chunk a line goes to ``metrics.jsonl`` (and to TensorBoard when installed); every
``checkpoint.every`` iterations and at the end the play is evaluated on fresh draws and a checkpoint is saved.

In a multi-process run (:mod:`coasejax.distributed`) every process runs the same loop on its own copy of the training
state (the same numbers everywhere: same config, same seed); only process 0 writes the log, the events and
``strategy.json``, and every process takes part in the checkpoint saves, where the copies become one global
replicated array that Orbax writes once (:func:`coasejax.checkpoint.save`).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from coasejax import checkpoint as ckpt
from coasejax import distributed
from coasejax import scenarios
from coasejax.cliutil import os_fault, write_atomic
from coasejax.config import Config, ConfigError
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


class TrainingDiverged(ConfigError):
    """The policy parameters went non-finite (a config error: one line, exit 2; the earlier checkpoints stay)."""


def check_finite(params, step: int) -> None:
    """Raise :class:`TrainingDiverged` when a parameter of some seed is NaN or infinite at ``step``."""
    bad = sorted({int(i) for leaf in jax.tree.leaves(params)
                  for i in np.flatnonzero(~np.isfinite(np.asarray(leaf)).reshape(np.shape(leaf)[0], -1).all(axis=1))})
    if bad:
        raise TrainingDiverged(f"train.learning_rate: the policy parameters of seed{'s' if len(bad) > 1 else ''} "
                               f"{', '.join(map(str, bad))} went non-finite by step {step} (training diverged); "
                               "nothing from this step on was written: lower train.learning_rate (or train.sigma)")


def mean_metrics(per_seed: dict) -> dict:
    """Means over seeds: a float per scalar metric, a list for per-group or per-provider metrics."""
    return {k: float(np.mean(v)) if np.ndim(v) <= 1 else np.mean(v, axis=0).tolist() for k, v in per_seed.items()}


def per_seed_lists(per_seed: dict) -> dict:
    return {k: np.asarray(v).tolist() for k, v in per_seed.items()}


class TensorBoard:
    """Scalars to TensorBoard event files under ``logdir``; a no-op when no writer is importable.

    Writers, first found wins: the ``tensorboard`` package's event format (``event_pb2``/``summary_pb2`` protos and
    its TFRecord framing, ``tensorboard.summary.writer.record_writer``; TensorFlow-free, ``pip install
    'coasejax[tensorboard]'``), then ``tensorboardX``. ``backend`` names the one in use (None: disabled). Each call of
    :meth:`scalars` writes one event at ``step`` holding every finite number of the row (``simple_value``, float32)
    except ``step`` itself.

    With ``tensorboard`` the events are written here, synchronously, not by its ``EventFileWriter``, whose writer
    thread dies on a full disk with a traceback through ``threading.excepthook`` and re-raises a pathless error later:
    each event is one ``os.write`` of its whole record to the ``O_APPEND`` file, and a failed write (a full disk) cuts
    the file back to where it was, so no torn record is left. A file that cannot be created or written raises
    :class:`coasejax.cliutil.EnvironmentFault` naming it (exit 3, like ``metrics.jsonl``). The ``tensorboardX``
    fallback keeps its own writer thread; its OS errors are turned into the same one-line fault.
    """

    def __init__(self, logdir: Path):
        self.writer = None
        self.backend: str | None = None
        self.path: Path | None = None
        self._fd: int | None = None
        logdir = Path(logdir)
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.record_writer import RecordWriter
        except ImportError:
            pass
        else:
            self._event, self._summary, self._record_writer = event_pb2.Event, summary_pb2.Summary, RecordWriter
            name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}."
                    f"{next(_TB_FILES)}")
            self.path = logdir / name
            try:
                logdir.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as e:
                raise os_fault(e, str(self.path)) from None
            self.writer, self.backend = self, "tensorboard"
            try:
                self._add(self._event(wall_time=time.time(), file_version="brain.Event:2",
                                      source_metadata=event_pb2.SourceMetadata(writer="coasejax")))
            except BaseException:
                self.close()
                self.path.unlink(missing_ok=True)  # created here, empty: no file left that holds no event
                raise
            return
        try:
            from tensorboardX import SummaryWriter  # type: ignore[import-not-found]
        except ImportError:
            return
        try:
            self.writer, self.backend = SummaryWriter(str(logdir)), "tensorboardX"
        except OSError as e:
            raise os_fault(e, str(logdir)) from None

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def _add(self, event) -> None:
        """Append ``event`` as one TFRecord: a single write of the whole record; on a failed write the file is cut
        back to where it was and the error names the file."""
        buf = io.BytesIO()
        self._record_writer(buf).write(event.SerializeToString())
        data = buf.getvalue()
        try:
            size = os.fstat(self._fd).st_size
            done = 0
            try:
                while done < len(data):
                    done += os.write(self._fd, data[done:])
            except BaseException:
                try:
                    os.ftruncate(self._fd, size)
                except OSError:
                    pass
                raise
        except OSError as e:
            raise os_fault(e, str(self.path)) from None

    def scalars(self, step: int, values: dict) -> None:
        if self.writer is None:
            return
        finite = {k: float(v) for k, v in values.items()
                  if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}
        if self.backend == "tensorboard":
            summary = self._summary(value=[self._summary.Value(tag=k, simple_value=v) for k, v in finite.items()])
            self._add(self._event(wall_time=time.time(), step=int(step), summary=summary))
            return
        try:
            for k, v in finite.items():
                self.writer.add_scalar(k, v, step)
            self.writer.flush()
        except OSError as e:
            raise os_fault(e, str(getattr(self.writer, "logdir", "") or "tensorboard events")) from None

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        elif self.writer is not None and self.backend != "tensorboard":
            try:
                self.writer.close()
            except OSError:
                pass  # closing after a fault: the fault itself is what is reported


#: numbers the event files of one process (TensorBoard's own writer names its files the same way)
_TB_FILES = itertools.count()


#: what a run writes when it ends: removed when a run starts in the folder, so a kill never leaves a previous run's
#: summary beside this run's checkpoints and log (a resumed run writes them again, equal, when it ends)
END_OF_RUN = ("summary.json", "strategy.json", "config.yaml", "cost_curve.png", "provider_shares.png")


def read_metrics_log(path: Path) -> tuple[list[dict], int]:
    """The rows of ``metrics.jsonl`` and how many lines could not be read as a row (a torn last line of a run killed
    mid-write; they are dropped)."""
    rows, bad = [], 0
    if not path.exists():
        return rows, bad
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def _rewrite_metrics_log(path: Path, upto: int) -> int:
    """Keep the rows of ``metrics.jsonl`` up to step ``upto`` (those after it are redone by a resumed run) and drop
    torn lines, rewriting the file atomically; returns the number of torn lines dropped."""
    if not path.exists():
        return 0
    rows, bad = read_metrics_log(path)
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows if r["step"] <= upto))
    return bad


def append_line(fd: int, line: str, path: Path | None = None) -> None:
    """Append ``line`` to the ``O_APPEND`` file ``fd`` (``path``, named in errors) whole: one write of the complete
    line, and on a failed write (a full disk) the file is cut back to where it was, so no torn line is left behind."""
    data = line.encode()
    size = os.fstat(fd).st_size
    try:
        done = 0
        while done < len(data):
            done += os.write(fd, data[done:])
    except BaseException as e:
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass
        if isinstance(e, OSError) and path is not None and e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def preflight(cfg: Config, out: Path, resume: bool) -> None:
    """Check ``out`` before any work: with ``--resume``, that it holds an intact checkpoint of this run
    (:func:`coasejax.checkpoint.resume_point`); without, that it holds no checkpoint and no other run's summary.
    Raises :class:`CheckpointError`."""
    directory = out / "checkpoints"
    if not directory.is_dir():
        if resume:
            raise ckpt.CheckpointError(f"--resume: no checkpoint in {directory}")
        if (out / "summary.json").exists():
            raise ckpt.CheckpointError(f"--out {out}: holds the summary.json of another run and no checkpoints; "
                                       f"choose another --out")
        return
    with ckpt.manager(directory, read_only=True) as mngr:
        if resume:
            ckpt.resume_point(mngr, resolved(cfg), ckpt.metadata(cfg, resolved(cfg)))
            return
        latest = mngr.latest_step()
    if latest is not None:
        raise ckpt.CheckpointError(f"--out {out}: already holds checkpoints (latest step {latest}); pass --resume to "
                                   f"continue that run or choose another --out")
    if (out / "summary.json").exists():
        raise ckpt.CheckpointError(f"--out {out}: holds the summary.json of another run and no checkpoints; "
                                   f"choose another --out")


def _set_aside(out: Path, mngr, skipped: list[tuple[int, str]]) -> Path | None:
    """Move the checkpoints a resumption skipped to ``out/checkpoints.corrupt/`` (kept, never deleted; the resumed
    run writes those steps again)."""
    if not skipped:
        return None
    aside = out / "checkpoints.corrupt"
    distributed.barrier("set-aside")  # every process has read the checkpoints before process 0 moves any
    if distributed.is_primary():
        aside.mkdir(exist_ok=True)
        for step, _ in skipped:
            target, n = aside / str(step), 1
            while target.exists():
                target, n = aside / f"{step}.{n}", n + 1
            (Path(mngr.directory) / str(step)).rename(target)
    distributed.barrier("set-aside-done")
    mngr.reload()
    return aside


def _clear_end_of_run(out: Path, resume: bool) -> None:
    if not distributed.is_primary():
        return
    for name in END_OF_RUN:
        (out / name).unlink(missing_ok=True)
    if not resume:  # a fresh start (no checkpoints): the log and events of an attempt killed before its first one
        (out / "metrics.jsonl").unlink(missing_ok=True)
        tb = out / "tb"
        if tb.is_dir():
            for f in tb.iterdir():
                if f.is_file():
                    f.unlink()


def train(cfg: Config, out: Path, resume: bool = False, on_start: Callable[[int, int], None] | None = None,
          on_chunk: Callable[[int, dict], None] | None = None, on_warning: Callable[[str], None] | None = None,
          trainer: Trainer | None = None) -> dict:
    """Train per ``cfg`` into ``out`` (``checkpoints/``, ``metrics.jsonl``, ``tb/``, ``strategy.json``); returns the
    summary.

    ``on_start(step0, total)`` is called once the start step is known, ``on_chunk(step, row)`` after every chunk,
    ``on_warning(line)`` when a resumption skips corrupt checkpoints (default: :func:`warnings.warn`). ``trainer``: a
    :class:`Trainer` of this ``cfg`` whose compiled chunks are reused (default: a new one).
    Raises :class:`coasejax.checkpoint.CheckpointError` for a missing or incompatible checkpoint and
    :class:`OSError` (:class:`coasejax.checkpoint.StorageError` for checkpoints) for a disk fault; the checkpoint
    manager is closed on every path.
    """
    tc, cc = cfg.train, cfg.checkpoint
    preflight(cfg, out, resume)
    trainer = trainer or Trainer(cfg, make_algo(cfg))
    current = resolved(cfg)
    meta = ckpt.metadata(cfg, current, getattr(trainer.algo, "layout", None))
    mngr = ckpt.manager(out / "checkpoints", keep=cc.keep, best_metric=cc.best_metric)
    tb = None
    try:
        states = trainer.algo.init_states()
        step0, skipped = 0, []
        if resume:
            step0, states, skipped = ckpt.resume_point(mngr, current, meta, states)
            if int(np.asarray(states.step).reshape(-1)[0]) != step0:
                raise ckpt.CheckpointError(f"--resume: checkpoint {step0} in {mngr.directory} holds the state of "
                                           f"step {int(np.asarray(states.step).reshape(-1)[0])}")
        if step0 > tc.iterations:
            raise ckpt.CheckpointError(f"--resume: checkpoint step {step0} is beyond "
                                       f"train.iterations={tc.iterations}")
        aside = _set_aside(out, mngr, skipped)
        log_path = out / "metrics.jsonl"
        if step0 < tc.iterations:
            _clear_end_of_run(out, resume)
        primary = distributed.is_primary()  # only process 0 writes the log, the events and strategy.json
        torn = _rewrite_metrics_log(log_path, step0) if resume and primary else 0
        if skipped or torn:
            parts = []
            if skipped:
                parts.append(", ".join(f"checkpoint {s} is unusable ({why})" for s, why in skipped)
                             + f", moved to {aside}")
            if torn:
                parts.append(f"dropped {torn} torn line{'s' if torn > 1 else ''} of {log_path}")
            line = "; ".join(parts) + f"; resuming from checkpoint {step0}"
            if on_warning is not None:
                on_warning(line)
            else:
                import warnings

                warnings.warn(line, stacklevel=2)
        tb = TensorBoard(out / "tb") if primary else None
        if on_start is not None:
            on_start(step0, tc.iterations)

        n_prov, seeds, length = trainer.algo.n_providers, tc.seeds, tc.log_every
        lr = es.schedule(tc)
        step, train_seconds, last_eval = step0, 0.0, {}
        t_start = time.perf_counter()
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if primary else None
        try:
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
                    check_finite(states.params, step)  # before its line and checkpoint: nothing diverged is written
                    last_eval = trainer.evaluate(states.params, eval_key(tc.seed, step))
                    means = mean_metrics(last_eval)
                    row.update(means)
                    if seeds > 1:  # the report draws the spread over seeds
                        row["per_seed"] = {k: v for k, v in per_seed_lists(last_eval).items() if k in SPREAD_KEYS}
                # the log line of a checkpointed step goes before its checkpoint: a kill in between leaves a line
                # that the resumption from the previous checkpoint cuts away, never a checkpoint without its line
                if fd is not None:
                    append_line(fd, json.dumps(row) + "\n", log_path)
                if final or (cc.every and step % cc.every == 0):
                    ckpt.save(mngr, step, states, current, {cc.best_metric: means.get(cc.best_metric)}, meta)
                if tb is not None:
                    tb.scalars(step, row)
                if on_chunk is not None:
                    on_chunk(step, row)
        finally:
            if fd is not None:
                os.close(fd)
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
            **({"processes": distributed.process_count()} if distributed.multi_process() else {}),
            "checkpoint_steps": [int(s) for s in mngr.all_steps()],
            "best_step": _best_step(mngr, cc.best_metric),
            "tensorboard": tb.backend if tb is not None else None,
        }
        if skipped:
            summary["skipped_checkpoints"] = [{"step": s, "reason": why} for s, why in skipped]
        if primary:
            write_strategy(trainer.algo, states.params, out)
        extra = scenarios.get(cfg.env.kind).train_summary if cfg.env.kind in scenarios.REGISTRY else None
        if extra is not None:  # a scenario's own end-of-training entries
            summary.update(extra(cfg, mean_metrics(last_eval)))
        return summary
    finally:
        if tb is not None:
            tb.close()
        mngr.close()


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
    with ckpt.manager(directory, read_only=True) as mngr:
        step = ckpt.resolve_step(mngr, step, "--step")
        cfg = validate(ckpt.saved_config(mngr, step), f"{directory}/{step} config")
        trainer = Trainer(cfg, make_algo(cfg))
        states = ckpt.restore(mngr, step, trainer.algo.init_states())
    per_seed = trainer.evaluate(states.params, jax.random.fold_in(jax.random.PRNGKey(seed), EVAL_STREAM + 1))
    return {"run_dir": str(run_dir), "step": step, "eval_seed": seed, "game": trainer.algo.name,
            **mean_metrics(per_seed), "per_seed": per_seed_lists(per_seed)}

