"""Who acts in a run: for each provider, scripted advocates by name or learned ones from a training checkpoint.

``providers.policy`` names each provider's advocates (a scripted strategy of the scenario, or ``RUN_DIR[:STEP]``);
where it is null every provider uses ``advocates.policy`` (learned) or else the scripted ``advocates.strategy``.
:func:`make_act` turns these sources into one traceable ``act(key, params, state, obs) -> actions``: one call where all
providers use the same source, otherwise each source's actions selected seat by seat by the seat's provider.

A learned source is the policy of one provider (``RUN_DIR[:STEP][@P]``, default 0) of seed 0 of the checkpoint
(:func:`load_policy`); a provider that played scripted advocates in training is refused. Its scenario,
observation and action layout must equal the run's, or loading fails with one line naming what differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from coasejax.config import ConfigError


class Source(NamedTuple):
    """What acts for one provider: a scripted strategy (``policy`` None) or a learned policy."""

    label: str  # the strategy name, or RUN_DIR:STEP
    scripted: str | None = None
    policy: Any = None  # LearnedPolicy


class LearnedPolicy(NamedTuple):
    apply: Callable  # (obs f32[S, N, d]) -> actions f32[S, N, A]
    run_dir: str
    step: int
    algo: str


def split_spec(spec: str) -> tuple[Path, int | None, int]:
    """``RUN_DIR``, ``RUN_DIR:STEP``, and either with ``@P`` (the run's provider P; default 0)."""
    provider = 0
    head, sep, tail = spec.rpartition("@")
    if sep and tail.isdigit() and head:
        spec, provider = head, int(tail)
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit() and head:
        return Path(head), int(tail), provider
    return Path(spec), None, provider


def _layout_diff(meta: dict, scenario, spec) -> str | None:
    if meta.get("scenario") != scenario.name:
        return f"it was trained on scenario {meta.get('scenario')!r}, this run is {scenario.name!r}"
    for key, now in (("observation", list(spec.observation)), ("actions", list(spec.actions))):
        if meta.get(key) is not None and list(meta[key]) != now:
            return f"its {key} layout is {meta[key]}, this run's is {now}"
    if meta.get("algo") == "es" and scenario.name != "auction":  # one network per seat role
        roles = list(spec.role_names())
        if meta.get("roles") is None:
            return f"its metadata names no seat roles (written before networks per role {roles}): retrain it"
        if list(meta["roles"]) != roles:
            return f"its seat roles are {meta['roles']}, this run's are {roles}"
    return None


def load_policy(spec: str, scenario, params, key_name: str) -> LearnedPolicy:
    """Load the learned policy of training run ``spec`` (``RUN_DIR[:STEP]``) for ``scenario``; raises
    :class:`ConfigError` (one line, naming ``key_name``) when it is missing or its layout differs."""
    from coasejax import checkpoint as ckpt
    from coasejax.config import validate

    run_dir, step, provider = split_spec(spec)
    directory = run_dir / "checkpoints"
    if not directory.is_dir():
        raise ConfigError(f"{key_name}: {run_dir} holds no checkpoints/ folder (is it the --out of coasejax train?)")
    try:
        with ckpt.manager(directory, read_only=True) as mngr:
            step = ckpt.resolve_step(mngr, step, f"{key_name} step")
            meta = ckpt.saved_meta(mngr, step) or {}
            saved = validate(ckpt.saved_config(mngr, step), f"{directory}/{step} config")
            diff = _layout_diff(meta, scenario, scenario.spec(params))
            if diff:
                raise ConfigError(f"{key_name}: checkpoint {run_dir}:{step} does not fit this run: {diff}")
            kinds = list(meta.get("advocates") or saved.providers.advocates())
            if not 0 <= provider < saved.providers.count:
                raise ConfigError(f"{key_name}: {spec!r} names provider {provider}, but the run trained "
                                  f"{saved.providers.count} (use @0 … @{saved.providers.count - 1})")
            if provider < len(kinds) and kinds[provider] != "learned":
                raise ConfigError(f"{key_name}: provider {provider} of {run_dir} played scripted {kinds[provider]} "
                                  f"advocates and was not trained; name a learned one with @P")
            tree = ckpt.restore_raw(mngr, step)
    except ckpt.CheckpointError as e:
        raise ConfigError(f"{key_name}: {e}") from None
    from coasejax.policies import policy_apply

    stack = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)[0, provider]), tree["params"])  # seed 0
    apply = policy_apply(saved, scenario.spec(params), stack, meta.get("algo", saved.train.algo))
    return LearnedPolicy(apply=apply, run_dir=str(run_dir), step=int(step), algo=saved.train.algo)


def sources(cfg, scenario, params) -> list[Source]:
    """Each provider's advocates (a list of ``providers.count`` sources)."""
    m = cfg.providers.count
    if cfg.providers.policy is not None:
        entries = cfg.providers.policy if isinstance(cfg.providers.policy, list) else [cfg.providers.policy] * m
        where = "providers.policy"
    elif cfg.advocates.policy is not None:
        entries, where = [cfg.advocates.policy] * m, "advocates.policy"
    else:
        entries, where = [cfg.advocates.strategy] * m, "advocates.strategy"
    loaded: dict[str, Source] = {}
    out = []
    for entry in entries:
        if entry not in loaded:
            if entry in scenario.scripted:
                loaded[entry] = Source(label=entry, scripted=entry)
            elif where == "advocates.strategy" or ("/" not in entry and not split_spec(entry)[0].exists()):
                raise ConfigError(f"{where}: {entry!r} is neither a scripted advocate of scenario {scenario.name} "
                                  f"({', '.join(scenario.scripted)}) nor a training run directory")
            else:
                pol = load_policy(entry, scenario, params, where)
                label = f"{pol.run_dir}:{pol.step}" + (f"@{split_spec(entry)[2]}" if split_spec(entry)[2] else "")
                loaded[entry] = Source(label=label, policy=pol)
        out.append(loaded[entry])
    return out


def _source_act(scenario, source: Source):
    if source.policy is not None:
        apply = source.policy.apply
        if scenario.observe_agents is not None and hasattr(apply, "roles"):  # once per agent and role, not per seat
            return lambda key, params, state, obs: scenario.to_seats(
                params, state, apply.roles(scenario.observe_agents(params, state)))
        return lambda key, params, state, obs: apply(obs)
    fn = scenario.scripted[source.scripted]
    return lambda key, params, state, obs: fn(key, params, state)


def make_act(scenario, params, srcs: list[Source]) -> Callable:
    """``act(key, params, state, obs) -> actions``: every seat acts by its provider's source."""
    distinct = list(dict.fromkeys(s.label for s in srcs))
    by_label = {s.label: _source_act(scenario, s) for s in srcs}
    if len(distinct) == 1:
        return by_label[distinct[0]]
    table = jnp.asarray([distinct.index(s.label) for s in srcs], jnp.int32)

    def act(key, params, state, obs):
        which = table[scenario.seat_providers(params, state)]  # i32[S, N]
        out = None
        for j, label in enumerate(distinct):
            a = by_label[label](key, params, state, obs)
            if hasattr(a, "stacked"):  # a scenario's compact scripted actions, as the array layout
                a = a.stacked(params, state)
            out = a if out is None else jnp.where((which == j)[..., None], a, out)
        return out

    return act
