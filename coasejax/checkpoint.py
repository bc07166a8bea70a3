"""Orbax checkpoints of training runs: periodic, atomic, the latest k and the best kept.

A checkpoint ``OUT/checkpoints/<step>/`` holds three items: ``state`` (parameters, optimiser state, the run's RNG key
and the step, and for PPO the environment and the opponent pool, all with a leading seed axis), ``config`` (the
resolved config as JSON) and ``meta`` (:func:`metadata`: what ``coasejax compare`` needs to seat the policy —
scenario, observation and action layouts, config hash, package version). Orbax writes each checkpoint to a
temporary folder and renames it when complete, so a run killed mid-write leaves the previous checkpoints intact.
Retention: the latest ``checkpoint.keep`` checkpoints plus the one with the best ``checkpoint.best_metric``.

Resuming needs the saved config to match the current one on every key that shapes the computation
(:func:`incompatible_keys`): a mismatch is a one-line :class:`CheckpointError` naming the differing keys, raised
before JAX ever sees the saved arrays.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

#: keys that may change between a run and its resumption without changing any trained number
RESUMABLE_KEYS = ("train.eval_values", "train.eval_opponents", "train.eval_grid",
                  "train.bne_min_value", "checkpoint.every", "checkpoint.keep", "checkpoint.best_metric")


class CheckpointError(ValueError):
    """A missing, unreadable or incompatible checkpoint. The message is one line."""


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
    absl_logger = logging.getLogger("absl")  # read-only managers warn on every open; keep the CLI's stderr clean
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        return ocp.CheckpointManager(Path(directory).absolute(), options=options,
                                     item_names=("state", "config", "meta"))
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


def save(mngr, step: int, state, config: dict, metrics: dict | None = None, meta: dict | None = None) -> None:
    """Save ``state``, the resolved ``config`` and ``meta`` as checkpoint ``step`` (blocking until it is on disk)."""
    clean = {k: float(v) for k, v in (metrics or {}).items() if v is not None and np.isfinite(v)} or None
    items = {"state": ocp.args.StandardSave(state_tree(state)), "config": ocp.args.JsonSave(config)}
    if meta is not None:
        items["meta"] = ocp.args.JsonSave(meta)
    mngr.save(step, args=ocp.args.Composite(**items), metrics=clean, force=True)
    mngr.wait_until_finished()


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


def restore(mngr, step: int, template) -> Any:
    """Restore checkpoint ``step`` into the structure, shapes and dtypes of ``template`` (a training state)."""
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_tree(template))
    try:
        tree = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {step} in {mngr.directory}: cannot restore its state "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    return from_tree(template, tree)


def restore_raw(mngr, step: int) -> dict:
    """The ``state`` item of checkpoint ``step`` as saved (plain dicts of numpy arrays, no template needed)."""
    try:
        return mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
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
