"""Sweeps over rule-layer and mechanism settings in one compiled call.

Every setting of a sweep differs only in *traced* parameters (:class:`coasejax.envs.coase.EnvParams`), so the
settings are stacked on a leading axis and the episode is ``vmap``-ped over it: one compilation, one call per chunk of
rounds. All settings share the same populations and random draws (common random numbers), so differences between
rows come from the settings alone.

``--sweep KEY=V1,V2,...`` (repeatable) or a ``sweep:`` block in YAML; several keys give their Cartesian product.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import jax
import jax.numpy as jnp
import yaml

from coasejax.config import Config, ConfigError, validate

#: keys that only change traced parameters and so can be swept in one compiled call
SWEEPABLE = (
    "state.rights", "state.enforcement", "state.activity_cap", "state.cap_share", "state.pigou_tax", "state.tc_floor",
    "state.transaction_costs.per_party", "state.transaction_costs.per_round", "state.transaction_costs.per_deal",
    "providers.fee", "providers.fee_flat", "providers.conduct", "providers.shade", "providers.skill",
    "providers.switching_rate", "providers.inertia", "providers.temperature", "providers.memory",
    "mechanism.bargaining_power", "mechanism.discount_emitter", "mechanism.discount_victims",
    "advocates.shade", "population.drift", "population.x_max", "population.weight",
)
MAX_SETTINGS = 4096


def parse_sweep_option(assignment: str) -> tuple[str, list]:
    """``KEY=V1,V2,...`` -> ``(KEY, [V1, V2, ...])``; each value parsed as YAML."""
    if "=" not in assignment:
        raise ConfigError(f"--sweep {assignment!r}: expected KEY=V1,V2,..., e.g. state.pigou_tax=0,0.5,1")
    key, raw = assignment.split("=", 1)
    parts = _split_top(raw)
    if any(not p for p in parts):
        raise ConfigError(f"--sweep {key.strip()}: expected a comma-separated list of values, got {raw!r}")
    values = []
    for part in parts:
        try:
            values.append(yaml.safe_load(part))
        except yaml.YAMLError:
            values.append(part)
    return key.strip(), values


def _split_top(raw: str) -> list[str]:
    """Split on commas outside brackets, so list values like ``[0.1,0.2]`` stay whole."""
    parts, depth, cur = [], 0, ""
    for ch in raw:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


def sweepable(env=None) -> tuple[str, ...]:
    """The keys a sweep may vary: the engine's (:data:`SWEEPABLE`) and the scenario's own ``env.*`` keys
    (``EnvSection.sweepable`` of the run's ``env`` section)."""
    return SWEEPABLE + tuple(f"env.{k}" for k in getattr(type(env), "sweepable", ()))


def check_sweep(sweep: dict[str, list], env=None) -> None:
    allowed = sweepable(env)
    for key, values in sweep.items():
        if key not in allowed:
            raise ConfigError(f"sweep.{key}: cannot be swept in one compiled call (it changes shapes or the "
                              f"program); sweepable keys: {', '.join(allowed)}")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.{key}: expected a non-empty list of values")
    n = 1
    for values in sweep.values():
        n *= len(values)
    if n > MAX_SETTINGS:
        raise ConfigError(f"sweep: {n} settings, at most {MAX_SETTINGS} allowed")


def settings(cfg: Config) -> list[dict[str, Any]]:
    """The Cartesian product of ``cfg.sweep`` as a list of ``{key: value}`` (one empty setting when no sweep)."""
    check_sweep(cfg.sweep, cfg.env)
    keys = list(cfg.sweep)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(cfg.sweep[k] for k in keys))]


def setting_config(cfg: Config, setting: dict[str, Any]) -> Config:
    """The full config of one setting, validated (an out-of-range value names its key and the setting)."""
    data = cfg.to_dict()
    data["sweep"] = {}
    for key, value in setting.items():
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    label = ", ".join(f"{k}={v}" for k, v in setting.items())
    return validate(data, f"sweep setting {label}")


def merge_static(params_list: list, keys: list[str]):
    """Stack the traced leaves of several parameter pytrees on a new leading axis.

    Static switches named ``use_*`` / ``draw_*`` only enable work that is harmless when its parameter is neutral (a tax
    of 0, an enforcement of 1), so they are or-ed; any other static difference cannot share one compiled program."""
    merged = [_merge_flags([p, *params_list]) for p in params_list]
    first = jax.tree.structure(merged[0])
    for p in merged[1:]:
        if jax.tree.structure(p) != first:
            raise ConfigError(f"sweep over {', '.join(keys)}: the settings need different compiled programs "
                              "(e.g. a switch between null and a number); split the sweep")
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *merged)


def _merge_flags(objs: list):
    """``objs[0]`` with every ``use_*`` / ``draw_*`` switch (in nested parameter dataclasses too) or-ed over ``objs``."""
    obj = objs[0]
    changes = {}
    for f in dataclasses.fields(obj):
        values = [getattr(o, f.name) for o in objs]
        if not f.metadata.get("pytree_node", True):
            if f.name.startswith(("use_", "draw_")):
                changes[f.name] = any(values)
        elif dataclasses.is_dataclass(values[0]):
            changes[f.name] = _merge_flags(values)
    return obj.replace(**changes) if changes else obj
