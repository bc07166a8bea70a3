"""Orbax checkpoints of training runs: periodic, atomic, the latest k and the best kept.

A checkpoint ``OUT/checkpoints/<step>/`` holds three items: ``state`` (parameters, optimiser state, the run's RNG key
and the step, and for PPO the environment and the opponent pool, all with a leading seed axis), ``config`` (the
resolved config as JSON) and ``meta`` (:func:`metadata`: what ``coasejax compare`` needs to seat the policy —
scenario, observation and action layouts, config hash, package version). Orbax writes each checkpoint to a
temporary folder and renames it when complete, so a run killed mid-write leaves the previous checkpoints intact.
Once it is in place, :func:`save` adds ``OUT/checkpoints/<step>/coasejax_manifest.json`` (written atomically): the
size and SHA-256 of every file of the checkpoint. :func:`verify` checks a checkpoint against it before Orbax reads a
byte, so a corrupt or truncated checkpoint is refused with one line naming the file (a checkpoint without a manifest,
written before manifests existed or killed between the rename and the manifest, is read unverified).
Retention: the latest ``checkpoint.keep`` checkpoints plus the one with the best ``checkpoint.best_metric``.

Several processes (:mod:`coasejax.distributed`): every process calls :func:`save` with its own copy of the same
training state; the copies become global arrays replicated once per process, and Orbax's multi-host save writes
each array once (from process 0's copy; a sharded array would be written shard by shard by the processes holding
them) while process 0 writes the config, the metadata and the manifest. :func:`restore` reads into the same
replicated layout and hands each process its own copy. The arrays are stored by shape, not by device, so a
checkpoint restores in any number of processes: one written by 2 processes restores in 1 and the other way round.

Resuming (:func:`resume_point`) takes the newest intact checkpoint: corrupt or unreadable newer ones are skipped (the
caller warns, saying which step it resumes from). It needs the saved scenario, algorithm, layouts and package
version (:func:`meta_differences`) and the saved config on every key that shapes the computation
(:func:`incompatible_keys`) to match the current ones: a mismatch is a one-line :class:`CheckpointError` naming what
differs, raised before JAX ever sees the saved arrays.

When Orbax fails to read a checkpoint, reads it had in flight finish on TensorStore's threads after its event loop is
closed, and each prints a traceback through ``sys.unraisablehook`` (``Event loop is closed``, ``Encountered error
while reading array index``) or asyncio's logger (``Task exception was never retrieved`` of a TensorStore read
error). :func:`manager` installs filters that drop exactly those (every other unraisable exception and log record
still gets through), so a refused checkpoint prints its one line and nothing else.

When a save meets a disk fault (a full or read-only disk: ENOSPC from TensorStore's writes of the arrays, the
sharding file or the OCDBT manifest, or from Orbax's JSON writes), each of Orbax's background threads that fails logs
``_SignalingThread.run() raised an exception`` with its traceback to the ``absl`` logger at ERROR, some of them after
the save has already raised, and the same exception is handed to the waiting save, which turns it into one
:class:`StorageError`. :func:`manager` also installs a filter on the ``absl`` logger that drops exactly those records
whose exception is a disk fault (:func:`_os_error`; any other exception, and every other record, still gets
through). On its error path :func:`save` waits for Orbax's threads to end (so none still writes, or logs, when the
command prints its line and exits) and removes the checkpoint's temporary folder ``<step>.orbax-checkpoint-tmp``
(Orbax ignores such folders when listing checkpoints, so one left behind, e.g. when the removal itself fails, is
harmless: a resumed run never reads it and its manager deletes it on opening).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

from coasejax import distributed

#: keys that may change between a run and its resumption without changing any trained number
RESUMABLE_KEYS = ("train.eval_values", "train.eval_opponents", "train.eval_grid",
                  "train.bne_min_value", "checkpoint.every", "checkpoint.keep", "checkpoint.best_metric")


#: the file :func:`save` adds to every checkpoint folder: ``{"files": {relative path: [size, sha256]}}``
MANIFEST = "coasejax_manifest.json"
#: the metadata fields that must match for a run to resume from a checkpoint, with the words that name them
RESUME_META = (("scenario", "scenario"), ("algo", "training algorithm"), ("observation", "observation layout"),
               ("actions", "action layout"), ("auction", "auction"), ("version", "package version"))


class CheckpointError(ValueError):
    """A missing, unreadable or incompatible checkpoint. The message is one line."""


class StorageError(OSError):
    """A checkpoint that cannot be written (a full or read-only disk, no permission): an environment fault, not bad
    input. ``str()`` is one line."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _orbax_noise(unraisable) -> bool:
    """Whether an unraisable exception is the echo of a failed Orbax read (see the module docstring)."""
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return True
    text = str(exc)
    return type(exc) is Exception and text.startswith("Encountered error while reading array index")


class _AsyncioNoise(logging.Filter):
    """Drops asyncio's ``Task``/``Future exception was never retrieved`` record when its exception is a TensorStore
    read error (a read Orbax had in flight when it gave up on a checkpoint, collected later at a random time), and
    its ``Task``/``Future``/``_GatheringFuture exception was never retrieved`` record when the exception is a disk fault (a write of a
    failed save that Orbax left unawaited, collected after :func:`save` has raised its :class:`StorageError`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        text = str(record.msg)
        if _NEVER_RETRIEVED.match(text) and isinstance(exc, ValueError) and "tensorstore_spec=" in str(exc):
            return False  # a Task's or a bare Future's (both seen)
        return not (_NEVER_RETRIEVED.match(text) and exc is not None and _os_error(exc) is not None)


#: asyncio's words for an exception nobody awaited: ``Task``, ``Future``, ``_GatheringFuture exception was never
#: retrieved``
_NEVER_RETRIEVED = re.compile(r"\w+ exception was never retrieved")


class _SaveNoise(logging.Filter):
    """Drops the ``absl`` ERROR record an Orbax background thread logs when it fails with a disk fault
    (``_SignalingThread.run() raised an exception``, with its traceback): the same exception reaches the waiting
    :func:`save`, which reports it as one :class:`StorageError` line. Every other record gets through."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and "_SignalingThread.run() raised an exception" in str(record.msg)
                    and _os_error(exc) is not None)


def _install_noise_filter() -> None:
    asyncio_logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _AsyncioNoise) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(_AsyncioNoise())
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _SaveNoise) for f in absl_logger.filters):
        absl_logger.addFilter(_SaveNoise())
    previous = sys.unraisablehook
    if getattr(previous, "_coasejax_filter", False):
        return

    def hook(unraisable):
        if not _orbax_noise(unraisable):
            previous(unraisable)

    hook._coasejax_filter = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def manager(directory: Path, keep: int = 3, best_metric: str | None = None, read_only: bool = False):
    """A synchronous :class:`orbax.checkpoint.CheckpointManager` on ``directory`` keeping the latest ``keep`` and the
    checkpoint with the smallest ``best_metric`` (when given). ``read_only``: neither create the folder nor clean up
    temporaries (the caller only reads)."""
    policies = [cm.LatestN(n=keep)]
    if best_metric:
        policies.append(cm.BestN(get_metric_fn=lambda m: -float(m[best_metric]), n=1,
                                 keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=cm.AnyPreservationPolicy(policies), enable_async_checkpointing=False,
        create=not read_only, cleanup_tmp_directories=not read_only,
    )
    _install_noise_filter()
    absl_logger = logging.getLogger("absl")  # read-only managers warn on every open; keep the CLI's stderr clean
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        return ocp.CheckpointManager(Path(directory).absolute(), options=options,
                                     item_names=("state", "config", "meta"))
    except OSError as e:
        raise storage_error(e, f"cannot open the checkpoint folder {directory}") from None
    finally:
        absl_logger.setLevel(level)


def state_tree(state) -> dict:
    """A training state (:class:`coasejax.train.es.TrainState` or :class:`coasejax.train.ppo.PPOState`) as a plain
    dict pytree; a field that is a ``flax.struct`` dataclass (PPO's environment) becomes a dict of its fields."""
    def plain(v):
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: getattr(v, f.name) for f in dataclasses.fields(v) if f.metadata.get("pytree_node", True)}
        return v

    return {k: plain(v) for k, v in state._asdict().items()}


def from_tree(template, tree: dict):
    """The inverse of :func:`state_tree`, shaped like ``template``."""
    fields = {}
    for k, v in template._asdict().items():
        fields[k] = v.replace(**tree[k]) if dataclasses.is_dataclass(v) and not isinstance(v, type) else tree[k]
    return type(template)(**fields)


def config_hash(config: dict) -> str:
    """A short hash of the resolved config (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def metadata(cfg, config: dict, layout: dict | None = None) -> dict:
    """What a checkpoint records for ``coasejax compare`` and ``simulate``: scenario, algorithm, observation and action
    layouts (``layout``: :meth:`coasejax.scenarios.base.Spec.layout` of the scenario trained on), number of providers
    and their kinds, network, config hash and package version."""
    from coasejax import __version__

    meta = {"scenario": cfg.env.kind, "algo": cfg.train.algo, "mechanism": cfg.mechanism.kind,
            "providers": cfg.providers.count, "config_hash": config_hash(config), "version": __version__,
            "policy_hidden": list(cfg.policy.hidden), "advocates": list(cfg.providers.advocates())}
    if layout is not None:
        meta.update(layout)
    elif cfg.env.kind == "auction":
        e = cfg.env
        meta.update(observation=["v", "G(v)"] if cfg.policy.win_prob else ["v"], actions=["bid"],
                    auction={"format": e.auction, "n_bidders": e.n_bidders, "value_dist": e.value_dist,
                             "reserve_price": e.reserve_price, "k": e.k})
    return meta


def _os_error(e: BaseException) -> OSError | None:
    """The :class:`OSError` behind ``e`` (itself, or one in its chain of causes), or one rebuilt from a TensorStore
    error whose message names a disk fault; None for anything else."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError):
            return e
        text = str(e)
        for code in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
            if os.strerror(code) in text:
                return OSError(code, os.strerror(code))
        e = e.__cause__ or e.__context__
    return None


def storage_error(e: OSError, what: str) -> StorageError:
    """A one-line :class:`StorageError` ``what (reason)`` from ``e``."""
    reason = e.strerror or str(e).splitlines()[0][:120] or type(e).__name__
    return StorageError(e.errno or errno.EIO, f"{what} ({reason})")


def _file_digests(folder: Path) -> dict:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            out[path.relative_to(folder).as_posix()] = [path.stat().st_size, _sha256(path)]
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path) -> None:
    """``folder/coasejax_manifest.json``: size and SHA-256 of every file under ``folder`` (temporary file + rename)."""
    text = json.dumps({"files": _file_digests(folder)}, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{MANIFEST}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def verify(mngr, step: int) -> str | None:
    """Why checkpoint ``step`` of ``mngr`` is corrupt (a file missing, truncated or changed since it was written, an
    unreadable manifest), or None when every file matches its manifest or there is no manifest to check against."""
    folder = Path(mngr.directory) / str(step)
    path = folder / MANIFEST
    if not folder.is_dir():
        return "its folder is missing"
    if not path.exists():
        return None
    try:
        files = json.loads(path.read_text())["files"]
        assert isinstance(files, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return f"{MANIFEST} is unreadable"
    for name, (size, digest) in sorted(files.items()):
        f = folder / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != size:
            return f"{name} has {f.stat().st_size} bytes, {size} were written"
        if _sha256(f) != digest:
            return f"{name} does not match its checksum"
    return None


def save(mngr, step: int, state, config: dict, metrics: dict | None = None, meta: dict | None = None) -> None:
    """Save ``state``, the resolved ``config`` and ``meta`` as checkpoint ``step`` (blocking until it is on disk),
    then its manifest. A disk fault (full, read-only, no permission) raises a one-line :class:`StorageError` once
    Orbax's threads have ended; what was on disk before stays as it was, and the temporary folder of this step is
    removed (see the module docstring)."""
    clean = {k: float(v) for k, v in (metrics or {}).items() if v is not None and np.isfinite(v)} or None
    items = {"state": ocp.args.StandardSave(distributed.replicate(state_tree(state))),
             "config": ocp.args.JsonSave(config)}
    if meta is not None:
        items["meta"] = ocp.args.JsonSave(meta)
    try:
        mngr.save(step, args=ocp.args.Composite(**items), metrics=clean, force=True)
        mngr.wait_until_finished()
        if distributed.is_primary():  # once every process's shards are in place (Orbax's commit waits for all)
            write_manifest(Path(mngr.directory) / str(step))
        distributed.barrier(f"checkpoint-{step}-manifest")
    except Exception as e:  # noqa: BLE001 - a disk fault becomes one line; anything else propagates as it is
        _after_failed_save(mngr, step)
        os_error = _os_error(e)
        if os_error is None:
            raise
        raise storage_error(os_error, f"cannot write checkpoint {step} to {mngr.directory}") from None


#: how long a failed save waits for Orbax's background threads to end (they end as soon as their write fails)
THREAD_JOIN_SECONDS = 60.0


def _orbax_threads() -> list[threading.Thread]:
    """Orbax's live background threads (``_SignalingThread``: array and metadata writes, commits) other than this
    one."""
    try:
        from orbax.checkpoint._src.futures import future as orbax_future

        cls = orbax_future._SignalingThread  # noqa: SLF001
    except (ImportError, AttributeError):  # another Orbax layout: nothing to wait for by name
        return []
    me = threading.current_thread()
    return [t for t in threading.enumerate() if isinstance(t, cls) and t is not me and t.is_alive()]


def _after_failed_save(mngr, step: int) -> None:
    """The error path of :func:`save`: wait for the manager and Orbax's threads to finish (their own errors are the
    one being reported, so they are swallowed here), then remove checkpoint ``step``'s temporary folder."""
    try:
        mngr.wait_until_finished()
    except Exception:  # noqa: BLE001
        pass
    deadline = time.monotonic() + THREAD_JOIN_SECONDS
    for t in _orbax_threads():
        try:
            t.join(max(0.0, deadline - time.monotonic()))  # Orbax's join re-raises the thread's exception
        except Exception:  # noqa: BLE001
            pass
    if not distributed.is_primary():
        return
    directory = Path(mngr.directory)
    for tmp in directory.glob(f"{step}.orbax-checkpoint-tmp*"):
        shutil.rmtree(tmp, ignore_errors=True)


def latest_step(mngr) -> int | None:
    return mngr.latest_step()


def saved_config(mngr, step: int) -> dict:
    """The resolved config stored with checkpoint ``step``."""
    try:
        return mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint becomes one line
        raise CheckpointError(f"checkpoint {step} in {mngr.directory}: cannot read its config "
                              f"({type(e).__name__})") from None


def resolve_step(mngr, step: int | None, what: str = "checkpoint") -> int:
    """``step`` (default: the latest) checked against the checkpoints of ``mngr``; ``what`` names it in the error."""
    steps = [int(s) for s in mngr.all_steps()]
    if not steps:
        raise CheckpointError(f"{mngr.directory}: holds no checkpoint")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise CheckpointError(f"{what} {step}: no such checkpoint in {mngr.directory} (have {steps})")
    return step


def saved_meta(mngr, step: int) -> dict | None:
    """The ``meta`` item of checkpoint ``step`` (None for checkpoints written before it existed)."""
    if not (Path(mngr.directory) / str(step) / "meta").exists():
        return None
    try:
        return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {step} in {mngr.directory}: cannot read its metadata "
                              f"({type(e).__name__})") from None


def _check_intact(mngr, step: int) -> None:
    why = verify(mngr, step)
    if why is not None:
        raise CheckpointError(f"checkpoint {step} in {mngr.directory} is corrupt: {why}")


def restore(mngr, step: int, template) -> Any:
    """Restore checkpoint ``step`` into the structure, shapes and dtypes of ``template`` (a training state), after
    checking its files against its manifest (:func:`verify`)."""
    _check_intact(mngr, step)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, distributed.replicate(state_tree(template)))
    try:
        tree = distributed.local_copy(
            mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"])
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {step} in {mngr.directory}: cannot restore its state "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    return from_tree(template, tree)


def _saved_target(mngr, step: int):
    """The shapes and dtypes the ``state`` of checkpoint ``step`` was saved with, placed on this run's devices (one
    device; in a multi-process run, replicated once per process) rather than on the devices it was saved from, which
    another run may not have (a checkpoint of 2 processes read by 1). None when its metadata is unreadable."""
    try:
        tree = ocp.StandardCheckpointHandler().metadata(Path(mngr.directory) / str(step) / "state").tree
    except Exception:  # noqa: BLE001  (restore as saved; its error, if any, is the one reported)
        return None
    if distributed.multi_process():
        from jax.sharding import NamedSharding, PartitionSpec

        sharding = NamedSharding(distributed.replicated_mesh(), PartitionSpec())
    else:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    is_array = lambda x: hasattr(x, "shape") and hasattr(x, "dtype")  # noqa: E731
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding) if is_array(m) else m,
                        tree, is_leaf=is_array)


def restore_raw(mngr, step: int) -> dict:
    """The ``state`` item of checkpoint ``step`` as saved (plain dicts of arrays, no template needed, on this run's
    devices: :func:`_saved_target`), after checking its files against its manifest."""
    _check_intact(mngr, step)
    try:
        target = _saved_target(mngr, step)
        return distributed.local_copy(
            mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"])
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {step} in {mngr.directory}: cannot restore its state "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def incompatible_keys(saved: dict, current: dict) -> list[str]:
    """Dotted keys whose values differ between two resolved configs, except :data:`RESUMABLE_KEYS`, each written
    ``key (checkpoint: A, now: B)``."""
    a, b = _flatten(saved), _flatten(current)
    keys = sorted(k for k in set(a) | set(b) if k not in RESUMABLE_KEYS and a.get(k) != b.get(k))
    return [f"{k} (checkpoint: {a.get(k)!r}, now: {b.get(k)!r})" for k in keys]


def meta_differences(saved: dict | None, current: dict) -> list[str]:
    """What differs between a checkpoint's ``meta`` and the current run's (:data:`RESUME_META`), each written
    ``what (checkpoint: A, now: B)``; only fields both hold are compared (a checkpoint without ``meta``: none)."""
    if saved is None:
        return []
    out = []
    for k, words in RESUME_META:
        a, b = saved.get(k), current.get(k)
        if k not in saved or k not in current or a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):  # name the fields that differ, e.g. auction.format
            out += [f"{words} {f} (checkpoint: {a.get(f)!r}, now: {b.get(f)!r})"
                    for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f)]
        else:
            out.append(f"{words} (checkpoint: {a!r}, now: {b!r})")
    return out


def resume_point(mngr, config: dict, meta: dict, template=None) -> tuple[int, Any, list[tuple[int, str]]]:
    """The checkpoint a run resumes from: the newest one of ``mngr`` that is intact, with ``(step, state, skipped)``
    (``state`` restored into ``template``; None without one) and ``skipped`` the newer checkpoints passed over as
    ``(step, why)``. Raises :class:`CheckpointError` when the newest readable checkpoint was written by another
    scenario, layout, package version or config (naming what differs), or when none is intact."""
    steps = sorted(int(s) for s in mngr.all_steps())
    if not steps:
        raise CheckpointError(f"--resume: no checkpoint in {mngr.directory}")
    skipped: list[tuple[int, str]] = []
    for step in reversed(steps):
        why = verify(mngr, step)
        if why is None:
            try:
                saved, saved_m = saved_config(mngr, step), saved_meta(mngr, step)
            except CheckpointError:
                why = "its config or metadata is unreadable"
        if why is not None:
            skipped.append((step, why))
            continue
        diff = meta_differences(saved_m, meta)
        if diff:
            raise CheckpointError(f"--resume: checkpoint {step} in {mngr.directory} is from another run: "
                                  f"{'; '.join(diff)}")
        diff = incompatible_keys(saved, config)
        if diff:
            raise CheckpointError(f"--resume: checkpoint {step} in {mngr.directory} was written with a "
                                  f"different config: {'; '.join(diff)}")
        if template is None:
            return step, None, skipped
        try:
            return step, restore(mngr, step, template), skipped
        except CheckpointError:
            skipped.append((step, "its state cannot be restored"))
    raise CheckpointError(f"--resume: no intact checkpoint in {mngr.directory} ("
                          + "; ".join(f"{s}: {why}" for s, why in skipped) + ")")
