"""Run any registered scenario from a config: build, compile once, roll out all environments, summarise.

The scenario is ``env.kind`` (:mod:`coasejax.scenarios`); its advocates are scripted or learned, per provider
(:mod:`coasejax.agents`). Independent environments are a ``vmap`` (leading axis E); rounds are a ``lax.scan`` of the
scenario's ``observe → act → step``. The episode runs in equal chunks of rounds so a progress bar can advance between
them; round keys depend only on the round index, so the chunking does not change any number. When several devices
are visible, the agent axis is sharded over a 1-D device mesh (N must divide evenly over the devices, or
``sim.shard`` be off). In a multi-process run (:mod:`coasejax.distributed`) the mesh is global: it spans every
process's devices, each process holds its slice of the agents, and the keys and parameters are global arrays
replicated over the mesh; what the summary needs on the host is gathered from every process.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from coasejax import agents, distributed, scenarios
from coasejax import sweep as sweeps
from coasejax.config import Config, ConfigError
from coasejax.graphs import torus_shape


@dataclass
class Simulation:
    """Everything needed to run one config: the scenario, parameters, initial state and the compiled chunk runner
    ``runner(keys, state, params) -> (state, metrics)``."""

    cfg: Config
    scenario: scenarios.Scenario
    params: Any
    state: Any  # leading env axis (and setting axis for a sweep)
    keys: jax.Array  # one key per env
    chunk: int
    runner: Callable
    compile_seconds: float
    sharded_over: int
    advocates: list  # what acts for each provider (agents.Source)
    settings: list = field(default_factory=list)  # sweep settings ({key: value} each); empty: no sweep
    setting_configs: list = field(default_factory=list)
    watch_chunk: Callable | None = None  # the chunk with the state's finiteness per round (run only on a failure)
    watched: Any = None  # its result, bool[..., E, T], once run (:func:`state_finite_per_round`)

    @property
    def graph(self):
        return getattr(self.params, "graph", None)


def chunk_length(rounds: int, target_chunks: int = 20, min_chunk: int = 8) -> int:
    """Rounds per compiled chunk: the largest divisor of ``rounds`` not above ``max(ceil(rounds / target_chunks),
    min_chunk)``, or all rounds at once when that divisor would be under 4. Short scans are slow: XLA compiles a
    one-round scan as straight-line code that runs about half as fast as the same round inside a loop."""
    limit = max(math.ceil(rounds / target_chunks), min_chunk)
    best = max(d for d in range(1, min(limit, rounds) + 1) if rounds % d == 0)
    return best if best >= min(4, rounds) else rounds


def agent_sharding(cfg: Config) -> Mesh | None:
    """The mesh the agent axis is sharded over: every device of the run, those of all its processes (None: one
    device, or ``sim.shard`` off).

    Raises :class:`ConfigError` when the agents do not divide evenly over the devices (for a torus: its rows), rather
    than silently running on one device."""
    devices = jax.devices()
    if not cfg.sim.shard or len(devices) < 2:
        return None
    n, d = cfg.population.n_agents, len(devices)
    if n % d:
        raise ConfigError(f"population.n_agents={n} does not divide over the {d} devices: use a multiple of {d}, "
                          "or sim.shard=false to run on one device")
    if cfg.env.kind == "coase" and cfg.population.graph == "torus" and torus_shape(n)[0] % d:
        raise ConfigError(f"population.n_agents={n}: the torus has {torus_shape(n)[0]} rows, which do not divide "
                          f"over the {d} devices: pick N whose torus rows are a multiple of {d}, or sim.shard=false")
    return Mesh(np.asarray(devices), ("agents",))


def _shard_state(mesh: Mesh, shape, n: int):
    """Shardings of a state: the agent axis (the last axis of every per-agent array) over the mesh, the rest
    replicated."""
    def spec(leaf):
        if leaf.ndim and leaf.shape[-1] == n:
            return NamedSharding(mesh, PartitionSpec(*([None] * (leaf.ndim - 1)), "agents"))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(spec, shape)


def build(cfg: Config, chunk: int | None = None) -> Simulation:
    """Draw the populations, place them on devices and compile the chunk runner (timed separately).

    With a sweep (``cfg.sweep``) the parameters of all settings are stacked on a leading axis S and the runner is
    ``vmap``-ped over it; every setting resets from the same keys with its own parameters (state ``[S, E, N]``)."""
    scenario = scenarios.get(cfg.env.kind)
    if scenario.check is not None:
        scenario.check(cfg)
    setting_list = sweeps.settings(cfg) if cfg.sweep else []
    setting_cfgs = [sweeps.setting_config(cfg, s) for s in setting_list]
    if setting_cfgs:
        params = sweeps.merge_static([scenario.params(c) for c in setting_cfgs], list(cfg.sweep))
        first_params = jax.tree.map(lambda x: x[0], params)
    else:
        params = first_params = scenario.params(cfg)
    sources = agents.sources(cfg, scenario, first_params)
    act = agents.make_act(scenario, first_params, sources)
    root = jax.random.PRNGKey(cfg.sim.seed)
    k_pop, k_run = jax.random.split(root)
    env_pop_keys = jax.random.split(k_pop, cfg.sim.envs)
    keys = jax.random.split(k_run, cfg.sim.envs)

    reset = jax.vmap(lambda k: scenario.reset(k, first_params))
    if setting_list:
        # each setting resets with its own parameters from the same keys (common random numbers), so a swept key the
        # reset reads (a scenario's population parameter) shapes that setting's population
        reset = lambda ks: jax.vmap(lambda pp: jax.vmap(lambda k: scenario.reset(k, pp))(ks))(params)  # noqa: E731
    mesh = agent_sharding(cfg)
    if mesh is not None:
        # several processes: the keys and parameters become global arrays on the mesh (each process drew the same)
        params, keys, env_pop_keys = distributed.replicate((params, keys, env_pop_keys), mesh)
        state = jax.jit(reset, out_shardings=_shard_state(mesh, jax.eval_shape(reset, env_pop_keys),
                                                          cfg.population.n_agents))(env_pop_keys)
    else:
        state = jax.jit(reset)(env_pop_keys)

    chunk = chunk or chunk_length(cfg.sim.rounds)

    def chunk_of(watch: bool):
        def run_envs(keys, state, params):
            return jax.vmap(lambda k, s: scenarios.rollout(scenario, act, k, s, params, chunk, watch))(keys, state)

        if not setting_list:
            return run_envs
        return lambda keys, state, params: jax.vmap(run_envs, in_axes=(None, 0, 0))(keys, state, params)

    run_chunk = chunk_of(False)
    t0 = time.perf_counter()
    runner = jax.jit(run_chunk, donate_argnums=(1,)).lower(keys, state, params).compile()
    compile_seconds = time.perf_counter() - t0
    return Simulation(cfg=cfg, scenario=scenario, params=params, state=state, keys=keys, chunk=chunk, runner=runner,
                      compile_seconds=compile_seconds,
                      sharded_over=len(mesh.devices.flat) if mesh is not None else 1, advocates=sources,
                      settings=setting_list, setting_configs=setting_cfgs, watch_chunk=chunk_of(True))


def roll_out(sim: Simulation, on_chunk: Callable[[int], None] | None = None):
    """Run all chunks; returns (per-round metrics ``{field: f64[..., E, T, ...]}``, seconds, first and last state)."""
    cfg = sim.cfg
    state = jax.tree.map(jnp.copy, sim.state)  # the runner donates its state; keep sim.state for another run
    first = distributed.to_host(state)
    chunks = []
    t0 = time.perf_counter()
    for _ in range(cfg.sim.rounds // sim.chunk):
        state, m = sim.runner(sim.keys, state, sim.params)
        chunks.append(m)
        if on_chunk is not None:
            jax.block_until_ready(m)
            on_chunk(sim.chunk)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - t0
    t_axis = 2 if sim.settings else 1
    chunks = distributed.to_host(chunks)
    per_round = {f: np.concatenate([np.asarray(getattr(c, f), np.float64) for c in chunks], axis=t_axis)
                 for f in chunks[0]._fields}
    return per_round, seconds, first, distributed.to_host(state)


class NonFiniteError(ConfigError):
    """A number a run would report is not finite: an infinite or NaN input, or a float32 overflow (a config error:
    one line, exit 2; nothing is written)."""


def first_nonfinite(per_round: dict, sentinels=(), t_axis: int = 1) -> tuple[str, int, float] | None:
    """``(metric, round, value)`` of the earliest round (0-based, along ``t_axis``) in which a per-round metric is not
    finite (the ``sentinels`` may be −inf), or None. Runs on the metrics the rollout returns anyway: no extra pass
    over the agents, no host round trip per round."""
    found = None
    for name, v in per_round.items():
        v = np.asarray(v)
        bad = ~np.isfinite(v)
        if name in sentinels:
            bad &= ~np.isneginf(v)
        if not bad.any():
            continue
        per_t = np.moveaxis(bad, t_axis, 0).reshape(bad.shape[t_axis], -1)
        r = int(np.argmax(per_t.any(axis=1)))
        if found is None or r < found[1]:
            found = (name, r, float(np.moveaxis(v, t_axis, 0).reshape(v.shape[t_axis], -1)[r][per_t[r]][0]))
    return found


def _nonfinite_leaf(tree) -> str | None:
    """The path of the first float leaf of ``tree`` (a host pytree) holding a non-finite value, or None."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.asarray(leaf)
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            return jax.tree_util.keystr(path).lstrip(".")
    return None


def _nonfinite_entry(obj, prefix: str = "") -> tuple[str, float] | None:
    """``(key path, value)`` of the first float in a summary (nested dicts and lists) that is not finite, or None."""
    if isinstance(obj, dict):
        items = ((f"{prefix}.{k}" if prefix else str(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        items = ((f"{prefix}[{i}]", v) for i, v in enumerate(obj))
    else:
        return (prefix, obj) if isinstance(obj, float) and not math.isfinite(obj) else None
    for key, v in items:
        hit = _nonfinite_entry(v, key)
        if hit is not None:
            return hit
    return None


def state_finite_per_round(sim: Simulation) -> np.ndarray:
    """``bool[..., E, T]``: whether each environment's state was finite after each round, from a second rollout of
    the episode with the watching chunk (compiled and run only when a run's final state is not finite, so a run
    that stays finite pays nothing for it). Rounds are keyed by their index, so the rerun repeats the run exactly."""
    if sim.watched is None:
        runner = jax.jit(sim.watch_chunk, donate_argnums=(1,))
        state, flags = jax.tree.map(jnp.copy, sim.state), []
        for _ in range(sim.cfg.sim.rounds // sim.chunk):
            state, (_, finite) = runner(sim.keys, state, sim.params)
            flags.append(np.asarray(distributed.to_host(finite)))
        sim.watched = np.concatenate(flags, axis=-1)
    return sim.watched


def check_finite(sim: Simulation, rounds: int, per_round: dict, last, where: str = "", index: int | None = None):
    """Raise :class:`NonFiniteError` naming the per-round metric and the round (1-based) where the run went
    non-finite, or else the float of the final state that is not finite and the round where it went so (``index``:
    the sweep setting)."""
    hit = first_nonfinite(per_round, sim.scenario.sentinels)
    if hit is not None:
        name, r, value = hit
        raise NonFiniteError(f"{name} went non-finite ({value}) in round {r + 1} of {rounds}{where}: an infinite or "
                             "NaN setting, or a float32 overflow (magnitudes above 3.4e38); no summary is written")
    leaf = _nonfinite_leaf(last)
    if leaf is not None:
        finite = state_finite_per_round(sim) if sim.watch_chunk is not None else None
        if finite is not None and index is not None:
            finite = finite[index]
        when = f"after round {rounds}"
        if finite is not None and not finite.all():
            per_t = np.moveaxis(finite, -1, 0).reshape(finite.shape[-1], -1).all(axis=1)
            when = f"in round {int(np.argmin(per_t)) + 1} of {rounds}"
        raise NonFiniteError(f"the state's {leaf} went non-finite {when}{where}: a float32 overflow (magnitudes "
                             "above 3.4e38); no summary is written")


def summary_of(sim: Simulation, cfg: Config, params, per_round: dict, seconds: float, first, last,
               where: str = "", index: int | None = None) -> dict:
    """The scenario's summary plus what every run reports: throughput, timing, devices, the advocates. Every number
    in it is finite, or :class:`NonFiniteError` names the quantity and the round where it went non-finite."""
    n, t, e = cfg.population.n_agents, cfg.sim.rounds, cfg.sim.envs
    check_finite(sim, t, per_round, last, where, index)
    summary = sim.scenario.summarise(cfg, params, per_round, first, last)
    hit = _nonfinite_entry(summary)
    if hit is not None:
        raise NonFiniteError(f"{hit[0]} is not finite ({hit[1]}){where}, computed from finite per-round metrics "
                             f"over {t} rounds: a float32 overflow; no summary is written")
    summary.update({
        "scenario": sim.scenario.name,
        "advocates": [s.label for s in sim.advocates],
        "agent_steps_per_second": n * t * e / seconds,
        "seconds": seconds,
        "compile_seconds": sim.compile_seconds,
        "devices": sim.sharded_over,
        "backend": jax.default_backend(),
    })
    if distributed.multi_process():
        summary["processes"] = distributed.process_count()
    return summary


def run(sim: Simulation, on_chunk: Callable[[int], None] | None = None) -> dict:
    """Roll out every environment for ``sim.cfg.sim.rounds`` rounds; returns the summary. For a sweep, see
    :func:`run_sweep`."""
    if sim.settings:
        raise ValueError("this simulation is a sweep: use run_sweep")
    per_round, seconds, first, last = roll_out(sim, on_chunk)
    return summary_of(sim, sim.cfg, sim.params, per_round, seconds, first, last)


def run_sweep(sim: Simulation, on_chunk: Callable[[int], None] | None = None) -> list[dict]:
    """Roll out every setting of a sweep in one compiled call per chunk; one summary per setting, each with its
    ``setting`` ({key: value})."""
    per_round, seconds, first, last = roll_out(sim, on_chunk)
    rows = []
    for i, (setting, cfg_i) in enumerate(zip(sim.settings, sim.setting_configs)):
        pick = lambda tree: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
        s = summary_of(sim, cfg_i, pick(sim.params), {k: v[i] for k, v in per_round.items()}, seconds, pick(first),
                       pick(last), f" (sweep setting {setting})", i)
        s["agent_steps_per_second"] *= len(sim.settings)  # the whole sweep ran in `seconds`
        rows.append({"setting": setting, **s})
    return rows


def simulate(cfg: Config, on_chunk: Callable[[int], None] | None = None) -> dict:
    """Build and run; the one-call entry point for scripts and tests."""
    return run(build(cfg), on_chunk)
