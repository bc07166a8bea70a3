"""Run the Coase scenario from a config: build, compile once, roll out all environments, summarise.

Independent environments are a ``vmap`` (leading axis E); rounds are a ``lax.scan``. The episode runs in equal
chunks of rounds so a progress bar can advance between them; round keys depend only on the round index, so the
chunking does not change any number. When several devices are visible, the agent axis is sharded over a 1-D device
mesh (N must divide evenly over the devices, or ``sim.shard`` be off).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from coasejax import sweep as sweeps
from coasejax.config import Config, ConfigError
from coasejax.envs import accounting, coase
from coasejax.graphs import Graph, make_graph, torus_shape
from coasejax.mechanisms import budget_balanced

#: the per-round totals behind each field of :class:`coasejax.envs.accounting.MoneyFlows`
FLOW_METRICS = {"to_emitters": "transfers", "from_victims": "paid_by_victims", "transaction_costs": "transaction_costs",
                "tax_paid": "tax_revenue", "tax_recycled": "tax_recycled", "fees": "fees", "gross": "gross_flows"}

#: per-round series are written to summary.json when the episode has at most this many rounds
MAX_ROUNDS_IN_SUMMARY = 10_000


@dataclass
class Simulation:
    """Everything needed to run one config: the graph, parameters, initial state and the compiled chunk runner."""

    cfg: Config
    graph: Graph
    params: coase.EnvParams
    state: coase.EnvState  # leading env axis
    keys: jax.Array  # one key per env
    chunk: int
    runner: Callable
    compile_seconds: float
    sharded_over: int
    constraint_names: list  # (layer, constraint) behind RoundMetrics.binding
    settings: list = field(default_factory=list)  # sweep settings ({key: value} each); empty: no sweep
    setting_configs: list = field(default_factory=list)


def chunk_length(rounds: int, target_chunks: int = 20, min_chunk: int = 8) -> int:
    """Rounds per compiled chunk: the largest divisor of ``rounds`` not above ``max(ceil(rounds / target_chunks),
    min_chunk)``, or all rounds at once when that divisor would be under 4. Short scans are slow: XLA compiles a
    one-round scan as straight-line code that runs about half as fast as the same round inside a loop."""
    limit = max(math.ceil(rounds / target_chunks), min_chunk)
    best = max(d for d in range(1, min(limit, rounds) + 1) if rounds % d == 0)
    return best if best >= min(4, rounds) else rounds


def agent_sharding(cfg: Config) -> NamedSharding | None:
    """The sharding of the agent axis over all local devices (None: one device, or ``sim.shard`` off).

    Raises :class:`ConfigError` when the agents do not divide evenly over the devices (for a torus: its rows), rather
    than silently running on one device."""
    devices = jax.devices()
    if not cfg.sim.shard or len(devices) < 2:
        return None
    n, d = cfg.population.n_agents, len(devices)
    if n % d:
        raise ConfigError(f"population.n_agents={n} does not divide over the {d} devices: use a multiple of {d}, "
                          "or sim.shard=false to run on one device")
    if cfg.population.graph == "torus" and torus_shape(n)[0] % d:
        raise ConfigError(f"population.n_agents={n}: the torus has {torus_shape(n)[0]} rows, which do not divide "
                          f"over the {d} devices: pick N whose torus rows are a multiple of {d}, or sim.shard=false")
    mesh = Mesh(np.asarray(devices), ("agents",))
    return NamedSharding(mesh, PartitionSpec(None, "agents"))


def build(cfg: Config, chunk: int | None = None) -> Simulation:
    """Draw the graph and populations, place them on devices and compile the chunk runner (timed separately).

    With a sweep (``cfg.sweep``) the parameters of all settings are stacked on a leading axis S and the runner is
    ``vmap``-ped over it; every setting starts from the same populations (state ``[S, E, N]``)."""
    p = cfg.population
    graph = make_graph(p.graph, p.n_agents, p.degree, cfg.sim.seed, p.rewire)
    setting_list = sweeps.settings(cfg) if cfg.sweep else []
    setting_cfgs = [sweeps.setting_config(cfg, s) for s in setting_list]
    if setting_cfgs:
        params = sweeps.merge_static([coase.EnvParams.from_config(c) for c in setting_cfgs], list(cfg.sweep))
    else:
        params = coase.EnvParams.from_config(cfg)
    root = jax.random.PRNGKey(cfg.sim.seed)
    k_pop, k_run = jax.random.split(root)
    env_pop_keys = jax.random.split(k_pop, cfg.sim.envs)
    keys = jax.random.split(k_run, cfg.sim.envs)

    with_util = params.provider.use_switching
    sharding = agent_sharding(cfg)
    reset = jax.vmap(lambda k: coase.reset(k, cfg, with_util))
    if setting_list:
        n_set = len(setting_list)
        reset_one = reset
        reset = lambda ks: jax.tree.map(lambda x: jnp.broadcast_to(x, (n_set, *x.shape)), reset_one(ks))  # noqa: E731
    if sharding is not None:
        shape = jax.eval_shape(reset, env_pop_keys)

        def spec(leaf):  # the agent axis is the last axis of every per-agent array
            return NamedSharding(sharding.mesh, PartitionSpec(*([None] * (leaf.ndim - 1)), "agents"))

        state_sharding = jax.tree.map(spec, shape).replace(t=NamedSharding(sharding.mesh, PartitionSpec()))
        state = jax.jit(reset, out_shardings=state_sharding)(env_pop_keys)
    else:
        state = jax.jit(reset)(env_pop_keys)

    chunk = chunk or chunk_length(cfg.sim.rounds)

    def run_envs(keys, state, params, graph):
        return jax.vmap(lambda k, s: coase.rollout(k, s, params, graph, chunk))(keys, state)

    if setting_list:
        def run_chunk(keys, state, params, graph):
            return jax.vmap(run_envs, in_axes=(None, 0, 0, None))(keys, state, params, graph)
    else:
        run_chunk = run_envs

    t0 = time.perf_counter()
    runner = jax.jit(run_chunk, donate_argnums=(1,)).lower(keys, state, params, graph).compile()
    compile_seconds = time.perf_counter() - t0
    names_params = jax.tree.map(lambda x: x[0], params) if setting_list else params
    names_state = jax.tree.map(lambda x: x[0], state) if setting_list else state
    return Simulation(
        cfg=cfg,
        graph=graph,
        params=params,
        state=state,
        keys=keys,
        chunk=chunk,
        runner=runner,
        compile_seconds=compile_seconds,
        sharded_over=len(sharding.mesh.devices.flat) if sharding is not None else 1,
        constraint_names=coase.constraint_names(names_params, names_state),
        settings=setting_list,
        setting_configs=setting_cfgs,
    )


def _roll_out(sim: Simulation, on_chunk: Callable[[int], None] | None):
    """Run all chunks; returns (per-round metrics ``{field: [..., E, T, ...]}``, seconds, initial and final wealth)."""
    cfg = sim.cfg
    state = jax.tree.map(jnp.copy, sim.state)  # the runner donates its state; keep sim.state for another run
    initial_wealth = np.asarray(jax.device_get(state.pop.wealth), np.float64)
    chunks = []
    t0 = time.perf_counter()
    for _ in range(cfg.sim.rounds // sim.chunk):
        state, m = sim.runner(sim.keys, state, sim.params, sim.graph)
        chunks.append(m)
        if on_chunk is not None:
            jax.block_until_ready(m.welfare)
            on_chunk(sim.chunk)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - t0
    t_axis = 2 if sim.settings else 1
    per_round = {f: np.concatenate([np.asarray(getattr(c, f), np.float64) for c in chunks], axis=t_axis)
                 for f in coase.RoundMetrics._fields}
    final_wealth = np.asarray(jax.device_get(state.pop.wealth), np.float64)
    return per_round, seconds, initial_wealth, final_wealth


def run(sim: Simulation, on_chunk: Callable[[int], None] | None = None) -> dict:
    """Roll out every environment for ``sim.cfg.sim.rounds`` rounds; returns the summary (see :func:`summarise`).
    For a sweep, see :func:`run_sweep`."""
    if sim.settings:
        raise ValueError("this simulation is a sweep: use run_sweep")
    per_round, seconds, w0, w1 = _roll_out(sim, on_chunk)
    summary = summarise(sim.cfg, per_round, seconds, sim, w0.sum(axis=1), w1.sum(axis=1))
    summary["gini_wealth"] = float(np.mean([gini(w) for w in w1]))
    summary["wealth_lorenz"] = np.mean([lorenz(w) for w in w1], axis=0).tolist()
    return summary


def run_sweep(sim: Simulation, on_chunk: Callable[[int], None] | None = None) -> list[dict]:
    """Roll out every setting of a sweep in one compiled call per chunk; one summary per setting, each with its
    ``setting`` ({key: value})."""
    per_round, seconds, w0, w1 = _roll_out(sim, on_chunk)
    rows = []
    for i, (setting, cfg_i) in enumerate(zip(sim.settings, sim.setting_configs)):
        s = summarise(cfg_i, {k: v[i] for k, v in per_round.items()}, seconds, sim, w0[i].sum(axis=1),
                      w1[i].sum(axis=1))
        s["gini_wealth"] = float(np.mean([gini(w) for w in w1[i]]))
        s["agent_steps_per_second"] *= len(sim.settings)  # the whole sweep ran in `seconds`
        rows.append({"setting": setting, **s})
    return rows


def lorenz(values: np.ndarray, points: int = 21) -> np.ndarray:
    """The Lorenz curve at ``points`` evenly spaced population shares (0 … 1): the share of the total held by the
    poorest fraction."""
    v = np.sort(np.asarray(values, np.float64))
    cum = np.concatenate([[0.0], np.cumsum(v)])
    idx = np.round(np.linspace(0, v.size, points)).astype(int)
    return cum[idx] / (cum[-1] if cum[-1] != 0 else 1.0)


def gini(values: np.ndarray) -> float:
    """Gini coefficient ``Σ_i (2i − n − 1) v_(i) / (n Σ v)`` of sorted values (0: equal; values may not all be 0)."""
    v = np.sort(np.asarray(values, np.float64))
    n = v.size
    total = v.sum()
    if n == 0 or total == 0:
        return 0.0
    return float(np.sum((2 * np.arange(1, n + 1) - n - 1) * v) / (n * total))


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if abs(den) > 1e-12 else None


def summarise(cfg: Config, per_round: dict, seconds: float, sim: Simulation,
              initial_wealth: np.ndarray, final_wealth: np.ndarray) -> dict:
    """Totals are summed over agents and rounds and averaged over environments (``initial_wealth`` and
    ``final_wealth``: each environment's total wealth, f64[E])."""
    n, t, e = cfg.population.n_agents, cfg.sim.rounds, cfg.sim.envs
    tot = {k: float(v.sum(axis=1).mean()) for k, v in per_round.items() if v.ndim == 2}
    w, w_star, w_sq = tot["welfare"], tot["first_best"], tot["status_quo"]
    wealth_change = float((final_wealth - initial_wealth).mean())
    flows = {f: float(per_round[m].sum(axis=1).mean()) for f, m in FLOW_METRICS.items()}
    # what float32 storage of the wealth may lose in the episode without any flow being wrong
    resolution = accounting.UNIT_ROUNDOFF * t * float(np.maximum(np.abs(initial_wealth), np.abs(final_wealth)).mean())
    summary = {
        "n_agents": n,
        "rounds": t,
        "envs": e,
        "welfare": w,
        "first_best_welfare": w_star,
        "status_quo_welfare": w_sq,
        "efficiency": _ratio(w - w_sq, w_star - w_sq),
        "welfare_ratio": _ratio(w, w_star),
        "deadweight_loss": w_star - w,
        "mean_activity": tot["activity"] / (n * t),
        "first_best_mean_activity": tot["first_best_activity"] / (n * t),
        "transfers": tot["transfers"],
        "transaction_costs_paid": tot["transaction_costs"],
        "paid_by_victims": tot["paid_by_victims"],
        "mechanism_net": tot["mechanism_net"],
        "mechanism_budget_balanced": budget_balanced(cfg.providers.protocols(cfg.mechanism.kind)),
        "deal_rate": tot["deals"] / (n * t),
        "attempt_rate": tot["attempts"] / (n * t),
        "breach_rate": _ratio(tot["attempts"] - tot["deals"], tot["attempts"]) or 0.0,
        "money_accounted": accounting.accounted_change(**{f: flows[f] for f in FLOW_METRICS if f != "gross"}),
        "money_gross": flows["gross"],
        "money_residual_rel": accounting.conservation(wealth_change, flows, resolution),
        "money_resolution_rel": resolution / max(flows["gross"], 1e-30),
        "tax_revenue": tot["tax_revenue"],
        "tax_recycled": tot["tax_recycled"],
        "fees": tot["fees"],
        "state_violations": int(per_round["state_violations"].sum()),
        "layer_binding": layer_binding(per_round, sim.constraint_names, n * t),
        "provider_shares": (per_round["provider_clients"][:, -1].mean(axis=0) / n).tolist(),
        "provider_revenue": per_round["provider_revenue"].sum(axis=1).mean(axis=0).tolist(),
        "provider_deal_rate": (per_round["provider_deals"].sum(axis=1).mean(axis=0)
                               / np.maximum(per_round["provider_clients"].sum(axis=1).mean(axis=0), 1.0)).tolist(),
        "provider_welfare": per_round["provider_welfare"].sum(axis=1).mean(axis=0).tolist(),
        "provider_protocols": list(cfg.providers.protocols(cfg.mechanism.kind)),
        **coalition_summary(tot, n * t * sim.graph.k, cfg.sim.coalitions, cfg.mechanism.pooling),
        **(coalition_breakdowns(per_round, sim.graph.k) if cfg.sim.coalitions else {}),
        "red_line_excess": (None if not np.isfinite(per_round["red_line_excess"]).any()
                            else float(per_round["red_line_excess"].max())),
        "wealth_change": wealth_change,
        "agent_steps_per_second": n * t * e / seconds,
        "seconds": seconds,
        "compile_seconds": sim.compile_seconds,
        "devices": sim.sharded_over,
        "backend": jax.default_backend(),
        "mechanism": cfg.mechanism.kind,
        "rights": cfg.state.rights,
        "strategy": cfg.advocates.strategy,
    }
    if t <= MAX_ROUNDS_IN_SUMMARY:
        mean = {k: v.mean(axis=0) for k, v in per_round.items()}
        summary["per_round"] = {
            "welfare": mean["welfare"].tolist(),
            "efficiency": [_ratio(a - c, b - c) for a, b, c in
                           zip(mean["welfare"], mean["first_best"], mean["status_quo"])],
            "mean_activity": (mean["activity"] / n).tolist(),
            "deal_rate": (mean["deals"] / n).tolist(),
            "participation_rate": (mean["coalition_members"] / (n * sim.graph.k)).tolist(),
            "free_rider_share": [_ratio(a, b) for a, b in zip(mean["free_riders"], mean["beneficiaries"])],
            "transfers": mean["transfers"].tolist(),
            "tax_revenue": mean["tax_revenue"].tolist(),
            "provider_shares": (mean["provider_clients"] / n).tolist(),
            "layer_binding": {ly: (mean["layer_binding"][:, i] / n).tolist() for i, ly in enumerate(coase.LAYERS)},
        }
    return summary


def coalition_summary(tot: dict, victim_slots: int, diagnostics: bool = True, pooling: bool = False) -> dict:
    """Coalition analytics from the round totals (None where undefined: no deals, nobody benefited)."""
    return {
        "participation_rate": tot["coalition_members"] / victim_slots,
        "free_rider_share": _ratio(tot["free_riders"], tot["beneficiaries"]),
        "coalition_size_mean": _ratio(tot["coalition_members"], tot["coalitions"]),
        "assurance_success_rate": _ratio(tot["provided"], tot["efficient_changes"]),
        "coalition_stability": (None if not diagnostics or tot["coalition_members"] <= 0
                                else 1.0 - tot["leavers"] / tot["coalition_members"]),
        "refunds_paid": tot["refunds"],
        "pooled_share": _ratio(tot["pooled_members"], tot["coalition_members"]) if pooling else None,
        "coalition_span_mean": _ratio(tot["span"], tot["pooled_members"]) if pooling else None,
        "harm_internalised": (None if tot["harm_gap_status_quo"] <= 0
                              else 1.0 - tot["harm_gap"] / tot["harm_gap_status_quo"]),
    }


def coalition_breakdowns(per_round: dict, k: int) -> dict:
    """Participation and free riding by wealth decile and by harm quartile (agent type), and the pledge-ratio and
    coalition-size histograms, summed over rounds and averaged over environments."""
    out = {}
    for key, name in (("by_wealth", "coalitions_by_wealth_decile"), ("by_harm", "coalitions_by_harm_quartile")):
        agents, members, benefited, free = per_round[key].sum(axis=1).mean(axis=0)
        out[name] = {"agent_share": (agents / max(agents.sum(), 1e-30)).tolist(),
                     "participation_rate": [_ratio(m, a * k) for m, a in zip(members, agents)],
                     "free_rider_share": [_ratio(f, b) for f, b in zip(free, benefited)]}
    pledges = per_round["pledge_hist"].sum(axis=1).mean(axis=0)
    out["pledge_ratio_histogram"] = {"upper_edges": [*coase.PLEDGE_BINS, None], "members": pledges.tolist()}
    out["coalition_size_histogram"] = per_round["size_hist"].sum(axis=1).mean(axis=0).tolist()
    return out


def layer_binding(per_round: dict, names: list[tuple[str, str]], bargains: int) -> dict:
    """Per layer: the fraction of bargains (one per emitter per round) in which the layer changed an action
    (``any``), and the same for each of its enabled constraints; averaged over environments."""
    out: dict = {}
    layer_tot = per_round["layer_binding"].sum(axis=1).mean(axis=0)  # [3]
    cons_tot = per_round["binding"].sum(axis=1).mean(axis=0)  # [C]
    for i, layer in enumerate(coase.LAYERS):
        out[layer] = {"any": float(layer_tot[i] / bargains)}
    for (layer, name), count in zip(names, cons_tot):
        out[layer][name] = float(count / bargains)
    return out


def simulate(cfg: Config, on_chunk: Callable[[int], None] | None = None) -> dict:
    """Build and run; the one-call entry point for scripts and tests."""
    return run(build(cfg), on_chunk)
