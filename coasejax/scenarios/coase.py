"""The population-scale Coase engine (:mod:`coasejax.envs.coase`) as a scenario.

Seats: each agent is the emitter of its own bargain and a victim in the bargains of the k emitters that harm it, so
a round has ``S = 1 + k`` seats per bargain: seat 0 is bargain i's emitter (agent i), seat s its slot-s victim (agent
``nbr(i, s)``). Every seat's advocate reports its client's type: the emitter its benefit slope a, a victim its harm
sensitivity c. The reports are the actions (``f32[1 + k, N, 1]``); they pass through the rule layers before the
mechanism sees them.

Observation of a seat (its own only): ``value`` (its own a or c, of which the report is a multiple), ``is_emitter``,
``inv_k`` (1/k, the number of victims sharing a bargain) and ``emitter_right``. Scripted advocates:
``truthful``, ``shade``, ``best_response`` (:mod:`coasejax.advocates`). Rewards: each seat's client's realised gain in
that bargain (the emitter's net of its provider's fee).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from coasejax.envs import accounting, coalitions
from coasejax.envs import coase as engine
from coasejax.mechanisms import budget_balanced
from coasejax.population import money, money_change
from coasejax.scenarios.base import Scenario, Spec, Transition, register

OBSERVATION = ("value", "is_emitter", "inv_k", "emitter_right")
#: the per-round totals behind each field of :class:`coasejax.envs.accounting.MoneyFlows`
FLOW_METRICS = {"to_emitters": "transfers", "from_victims": "paid_by_victims", "transaction_costs": "transaction_costs",
                "tax_paid": "tax_revenue", "tax_recycled": "tax_recycled", "fees": "fees", "gross": "gross_flows"}
#: per-round series are written to summary.json when the episode has at most this many rounds
MAX_ROUNDS_IN_SUMMARY = 10_000


def observe(params: engine.EnvParams, state: engine.EnvState) -> jax.Array:
    """``f32[1 + k, N, 4]``: each seat's own value, its role, 1/k and the rights regime."""
    graph, pop = params.graph, state.pop
    k = graph.k
    values = jnp.concatenate([pop.a[None], graph.out(pop.c)])  # f32[1 + k, N]
    role = jnp.zeros_like(values).at[0].set(1.0)
    inv_k = jnp.full_like(values, 1.0 / k)
    right = jnp.broadcast_to(params.emitter_right.astype(jnp.float32), values.shape)
    return jnp.stack([values, role, inv_k, right], axis=-1)


def observe_agents(params: engine.EnvParams, state: engine.EnvState) -> jax.Array:
    """``f32[2, N, 4]``: each agent's observation as an emitter (role 0) and as a victim (role 1); a victim seat's
    observation is its owner's (:func:`observe` reads it through the graph)."""
    pop = state.pop
    one = jnp.ones_like(pop.a)
    inv_k, right = one / params.graph.k, one * params.emitter_right.astype(jnp.float32)
    return jnp.stack([jnp.stack([pop.a, one, inv_k, right], -1), jnp.stack([pop.c, 0.0 * one, inv_k, right], -1)])


def to_seats(params: engine.EnvParams, state: engine.EnvState, acts: jax.Array) -> jax.Array:
    """Per-role actions ``f32[2, N, A]`` to the seats ``f32[1 + k, N, A]``: each victim's report, read by every
    emitter that harms it."""
    victims = jax.vmap(params.graph.out, in_axes=-1, out_axes=-1)(acts[1])  # f32[k, N, A]
    return jnp.concatenate([acts[0][None], victims])


def spec(params: engine.EnvParams) -> Spec:
    return Spec(observation=OBSERVATION, actions=("report",), low=(0.0,), high=(2.0,), truthful=(1.0,),
                relative=True, seats=1 + params.graph.k, roles=("emitter",) + ("victim",) * params.graph.k)


def step(key, state, actions, params):
    new, metrics, reward = engine.step(key, state, actions, params)
    return new, Transition(reward=reward, done=jnp.zeros(reward.shape[1:], bool), metrics=metrics)


def seat_providers(params, state) -> jax.Array:
    p = state.pop.provider
    return jnp.concatenate([p[None], params.graph.out(p)])


def seat_owners(params, state) -> jax.Array:
    i = jnp.arange(params.graph.n, dtype=jnp.int32)
    return jnp.concatenate([i[None], params.graph.out(i)])


def _scripted(name: str):
    return lambda key, params, state: engine.scripted_reports(name, params, state)


def metrics(params, tot) -> dict:
    """Traceable: efficiency and report ratio from the per-round metrics summed over the measured rounds."""
    safe = lambda a, b: a / jnp.where(jnp.abs(b) > 1e-12, b, 1.0)  # noqa: E731
    ratio = safe(tot.reported_harm, tot.true_harm)
    return {"efficiency": safe(tot.welfare - tot.status_quo, tot.first_best - tot.status_quo),
            "report_ratio": ratio,
            f"report_ratio_k{params.graph.k}": ratio,  # keyed by the victims per emitter (the report's figure)
            "deals": tot.deals,
            "welfare": tot.welfare, "first_best_welfare": tot.first_best, "status_quo_welfare": tot.status_quo}


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if abs(den) > 1e-12 else None


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


def layer_binding(per_round: dict, names: list[tuple[str, str]], bargains: int) -> dict:
    """Per layer: the fraction of bargains (one per emitter per round) in which the layer changed an action
    (``any``), and the same for each of its enabled constraints; averaged over environments."""
    out: dict = {}
    layer_tot = per_round["layer_binding"].sum(axis=1).mean(axis=0)  # [3]
    cons_tot = per_round["binding"].sum(axis=1).mean(axis=0)  # [C]
    for i, layer in enumerate(engine.LAYERS):
        out[layer] = {"any": float(layer_tot[i] / bargains)}
    for (layer, name), count in zip(names, cons_tot):
        out[layer][name] = float(count / bargains)
    return out


def summarise(cfg, params, per_round: dict, first, last) -> dict:
    """Totals are summed over agents and rounds and averaged over environments; money is checked against the wealth
    actually stored (``first`` and ``last``: the states with a leading env axis), and a residual above
    :data:`coasejax.envs.accounting.MONEY_TOLERANCE` of the gross flows raises
    :class:`coasejax.envs.accounting.MoneyError` instead of a summary."""
    n, t, e = cfg.population.n_agents, cfg.sim.rounds, cfg.sim.envs
    k = params.graph.k
    w0, w1 = money(first.pop), money(last.pop)  # the wealth pairs actually stored, in float64
    # per-round totals (float32 sums over agents) are added up over rounds in float64, so the episode's totals are as
    # exact as its worst round's, however many rounds it has
    tot = {key: float(np.asarray(v, np.float64).sum(axis=1).mean()) for key, v in per_round.items() if v.ndim == 2}
    w, w_star, w_sq = tot["welfare"], tot["first_best"], tot["status_quo"]
    wealth_change = float(money_change(first.pop, last.pop).sum(axis=-1).mean())
    flows = {f: float(np.asarray(per_round[m], np.float64).sum(axis=1).mean()) for f, m in FLOW_METRICS.items()}
    # what the stored wealth pair may lose in the episode without any flow being wrong
    resolution = accounting.resolution(t, float(np.maximum(np.abs(w0).sum(axis=-1), np.abs(w1).sum(axis=-1)).mean()))
    accounted = accounting.accounted_change(**{f: flows[f] for f in FLOW_METRICS if f != "gross"})
    residual = accounting.conservation(wealth_change, flows)
    accounting.check_conserved(residual, wealth_change, accounted, float(max(np.abs(w0).max(), np.abs(w1).max())))
    names = engine.constraint_names(params, jax.tree.map(lambda x: x[0], first))
    summary = {
        "scenario": "coase",
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
        "report_ratio": _ratio(tot["reported_harm"], tot["true_harm"]),
        "money_accounted": accounted,
        "money_gross": flows["gross"],
        "money_residual_rel": residual,
        "money_resolution_rel": resolution / max(flows["gross"], 1e-30),
        "tax_revenue": tot["tax_revenue"],
        "tax_recycled": tot["tax_recycled"],
        "fees": tot["fees"],
        "state_violations": int(per_round["state_violations"].sum()),
        "layer_binding": layer_binding(per_round, names, n * t),
        "provider_shares": (per_round["provider_clients"][:, -1].mean(axis=0) / n).tolist(),
        "provider_revenue": per_round["provider_revenue"].sum(axis=1).mean(axis=0).tolist(),
        "provider_deal_rate": (per_round["provider_deals"].sum(axis=1).mean(axis=0)
                               / np.maximum(per_round["provider_clients"].sum(axis=1).mean(axis=0), 1.0)).tolist(),
        "provider_welfare": per_round["provider_welfare"].sum(axis=1).mean(axis=0).tolist(),
        "provider_client_utility": ((per_round["provider_utility"].sum(axis=1).mean(axis=0)
                                     / np.maximum(per_round["provider_clients"].sum(axis=1).mean(axis=0), 1.0)).tolist()
                                    if cfg.providers.count > 1 else None),
        "provider_protocols": list(cfg.providers.protocols(cfg.mechanism.kind)),
        **coalitions.summary(tot, n * t * k, cfg.sim.coalitions == "full", cfg.mechanism.pooling,
                             cfg.sim.coalition_totals),
        **(coalitions.breakdown_summary(per_round, k) if cfg.sim.coalitions == "full" else {}),
        "red_line_excess": (None if not np.isfinite(per_round["red_line_excess"]).any()
                            else float(per_round["red_line_excess"].max())),
        "wealth_change": wealth_change,
        "gini_wealth": float(np.mean([gini(x) for x in w1.reshape(-1, w1.shape[-1])])),
        "mechanism": cfg.mechanism.kind,
        "rights": cfg.state.rights,
        "strategy": cfg.advocates.strategy,
    }
    if w1.ndim == 2:
        summary["wealth_lorenz"] = np.mean([lorenz(x) for x in w1], axis=0).tolist()
    if t <= MAX_ROUNDS_IN_SUMMARY:
        mean = {key: v.mean(axis=0) for key, v in per_round.items()}
        summary["per_round"] = {
            "welfare": mean["welfare"].tolist(),
            "efficiency": [_ratio(a - c, b - c) for a, b, c in
                           zip(mean["welfare"], mean["first_best"], mean["status_quo"])],
            "mean_activity": (mean["activity"] / n).tolist(),
            "deal_rate": (mean["deals"] / n).tolist(),
            "participation_rate": ((mean["coalition_members"] / (n * k)).tolist() if cfg.sim.coalition_totals
                                   else None),
            "free_rider_share": ([_ratio(a, b) for a, b in zip(mean["free_riders"], mean["beneficiaries"])]
                                 if cfg.sim.coalition_totals else None),
            "transfers": mean["transfers"].tolist(),
            "tax_revenue": mean["tax_revenue"].tolist(),
            "provider_shares": (mean["provider_clients"] / n).tolist(),
            "layer_binding": {ly: (mean["layer_binding"][:, i] / n).tolist() for i, ly in enumerate(engine.LAYERS)},
        }
    return summary


SCENARIO = register(Scenario(
    name="coase",
    params=engine.EnvParams.from_config,
    reset=engine.reset,
    observe=observe,
    step=step,
    spec=spec,
    seat_providers=seat_providers,
    seat_owners=seat_owners,
    scripted={name: _scripted(name) for name in ("truthful", "shade", "best_response")},
    summarise=summarise,
    metrics=metrics,
    observe_agents=observe_agents,
    to_seats=to_seats,
    description="emitters and their k victims bargain over an externality on a graph, under the rule layers",
    sentinels=("red_line_excess",),
))
