"""The multi-round Coase negotiation (:mod:`coasejax.envs.negotiation`) as a scenario of the interface
(``env.kind: coase_rounds``), and its analytics: the evaluation's welfare keys, the first proposer's share against
Rubinstein's and the efficiency-vs-cost curve against its analytic counterparts.

Seats: seat 0 of bargain i is its emitter (agent i), seat 1 the victims' coalition of bargain i (agent i + 1's
advocate: agent i is the emitter of bargain i and a member of the victims' side of bargain i − 1). Each round's
metrics are a :class:`Metrics` of small arrays: the per-group totals of :func:`negotiation.round_totals` and each
provider's clients and client utility. Summed over the measured rounds they give :func:`summarise_totals`, the
traceable summary PPO evaluates with, and :func:`summarise` the host-side summary of a ``simulate`` run."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from coasejax.envs import negotiation as env
from coasejax.rules.provider import segment_totals
from coasejax.scenarios.base import Scenario, Spec, Transition, register


class Metrics(NamedTuple):
    """One round's totals (stacked to ``[T, ...]`` by a scan; summed over rounds by an evaluation)."""

    totals: jax.Array  # f32[len(TOTALS), G] per-group sums of negotiation.round_totals
    providers: jax.Array  # f32[2, M] each provider's clients (at the round's start) and their utility this round


def params(cfg) -> env.Params:
    return env.Params.from_config(cfg)


def reset(key: jax.Array, params: env.Params) -> env.State:
    return env.reset(key, params)


def observe(params: env.Params, state: env.State) -> jax.Array:
    return env.observe(params, state)


def step(key: jax.Array, state: env.State, actions: jax.Array, params: env.Params) -> tuple[env.State, Transition]:
    new, r = env.step(key, state, params, actions)
    util = r.reward[0] + jnp.roll(r.reward[1], 1)  # agent i: emitter of bargain i, victim of bargain i − 1
    prov = segment_totals(jnp.stack([jnp.ones_like(util), util]), state.provider, params.providers.count)
    return new, Transition(reward=r.reward, done=r.done, metrics=Metrics(env.round_totals(params, r), prov))


def spec(params: env.Params | None = None) -> Spec:
    return Spec(observation=env.OBSERVATION, actions=env.ACTIONS, low=env.LOW, high=env.HIGH,
                truthful=env.TRUTHFUL_ACTION, relative=False, seats=2)


def seat_providers(params: env.Params, state: env.State) -> jax.Array:
    return env.seat_providers(state)


def seat_owners(params: env.Params, state: env.State) -> jax.Array:
    """``i32[2, N]``: seat 0 of bargain i is agent i, seat 1 agent i + 1 (on the ring)."""
    n = state.a.shape[0]
    i = jnp.arange(n, dtype=jnp.int32)
    return jnp.stack([i, (i + 1) % n])


def decisions(params: env.Params, state: env.State) -> jax.Array:
    return env.decisions(params, state)


def discount(params: env.Params) -> jax.Array:
    return params.discount


def truthful(key: jax.Array, params: env.Params, state: env.State) -> jax.Array:
    """The scripted truthful advocate: :data:`negotiation.TRUTHFUL_ACTION` in every seat."""
    return jnp.broadcast_to(jnp.asarray(env.TRUTHFUL_ACTION, jnp.float32), (2, state.a.shape[0], len(env.ACTIONS)))


def metrics(params: env.Params, m: Metrics) -> dict:
    """The evaluation's summary from the metrics summed over the measured rounds (traceable)."""
    return summarise_totals(params, m.totals, m.providers)


def summarise_totals(p: env.Params, totals: jax.Array, per_prov: jax.Array) -> dict:
    """The evaluation's metrics from the summed per-group ``totals`` ``f32[len(TOTALS), G]`` and per-provider
    ``(clients·rounds, utility sum)`` ``f32[2, M]`` (traceable; arrays per group and per provider)."""
    t = dict(zip(env.TOTALS, totals))
    all_ = {k: jnp.sum(v) for k, v in t.items()}
    safe = lambda a, b: a / jnp.maximum(b, 1e-12)  # noqa: E731
    zero_cost = (p.costs == 0.0)[None, :].repeat(p.regimes.shape[0], 0).reshape(-1)

    def opener_share(side):  # the opener's mean share in first-offer agreements at zero cost (0: none), and whether
        # any zero-cost negotiation opened with that side (then a side that never agrees at once has error = theory)
        n_ = jnp.sum(jnp.where(zero_cost, t[f"first_offer_{side}"], 0.0))
        opened = jnp.sum(jnp.where(zero_cost, t[f"opened_{side}"], 0.0))
        return safe(jnp.sum(jnp.where(zero_cost, t[f"share_{side}"], 0.0)), n_), opened > 0

    (share, any_e), (share_v, any_v) = opener_share("e"), opener_share("v")
    theory, theory_v = env.rubinstein_split(p, emitter_first=True), env.rubinstein_split(p, emitter_first=False)
    error = jnp.maximum(jnp.where(any_e, jnp.abs(share - theory), 0.0), jnp.where(any_v, jnp.abs(share_v - theory_v),
                                                                                    0.0))
    rounds = all_["rounds"]
    efficiency = safe(all_["gain"], all_["gain_star"])
    welfare, first_best = all_["gain"] + all_["status_quo"], all_["gain_star"] + all_["status_quo"]
    return {  # the welfare keys of `coasejax simulate` (sums over bargains and measured rounds), then per round
        "welfare": welfare,
        "first_best_welfare": first_best,
        "status_quo_welfare": all_["status_quo"],
        "efficiency": efficiency,
        "welfare_ratio": safe(welfare, first_best),
        "deadweight_loss": first_best - welfare,
        "transfers": all_["transfer"],
        "transaction_costs_paid": all_["costs"],
        "efficiency_gap": 1.0 - efficiency,
        "gain_per_bargain_round": safe(all_["gain"], rounds),
        "first_best_gain_per_bargain_round": safe(all_["gain_star"], rounds),
        "transaction_costs_per_bargain_round": safe(all_["costs"], rounds),
        "transfers_per_bargain_round": safe(all_["transfer"], rounds),
        "mean_activity": safe(all_["activity"], rounds),
        "first_best_mean_activity": safe(all_["activity_star"], rounds),
        "deal_rate": safe(all_["agreed"], all_["started"]),
        "first_offer_rate": safe(all_["first_offer"], all_["started"]),
        "sit_out_rate": safe(all_["sat_out"], all_["started"]),
        "contract_share": safe(all_["contract"], rounds),
        "breach_rate": safe(all_["breached"], all_["contract"]),
        "analytic_efficiency": safe(all_["analytic_gain"], all_["episode_value"]),
        "analytic_deal_rate": safe(all_["analytic_deal"], all_["started"]),
        "strategic_efficiency": safe(all_["strategic_gain"], all_["episode_value"]),
        "strategic_deal_rate": safe(all_["strategic_deal"], all_["started"]),
        "proposer_share": share,
        "rubinstein_share": theory,
        "proposer_share_victims": share_v,
        "rubinstein_share_victims": theory_v,
        "proposer_share_error": error,
        "utility": safe(jnp.sum(per_prov[1]), jnp.sum(per_prov[0])),
        "efficiency_by_group": safe(t["gain"], t["gain_star"]),
        "analytic_efficiency_by_group": safe(t["analytic_gain"], t["episode_value"]),
        "deal_rate_by_group": safe(t["agreed"], t["started"]),
        "analytic_deal_rate_by_group": safe(t["analytic_deal"], t["started"]),
        "strategic_efficiency_by_group": safe(t["strategic_gain"], t["episode_value"]),
        "strategic_deal_rate_by_group": safe(t["strategic_deal"], t["started"]),
        "provider_shares": safe(per_prov[0], jnp.sum(per_prov[0])),
        "provider_utility": safe(per_prov[1], per_prov[0]),
    }


def cost_curve(cfg, means: dict) -> dict:
    """The efficiency and deal rate per rights regime and per-round cost — learned, analytic-efficient (both sides
    take part iff the contract can pay both costs) and analytic-strategic (subgame-perfect split, each side takes
    part iff its own share pays its cost) — and where each deal-rate curve crosses 1/2 (linear interpolation; None if
    it does not within the grid): the no-deal threshold of the median bargain, learned and analytic."""
    costs, regimes = env.grids(cfg)
    g = len(costs)
    rows, crossing = [], {}
    for i, regime in enumerate(regimes):
        sl = slice(i * g, (i + 1) * g)
        curve = {k: [float(x) for x in means[f"{k}_by_group"][sl]] for k in (
            "efficiency", "analytic_efficiency", "strategic_efficiency", "deal_rate", "analytic_deal_rate",
            "strategic_deal_rate")}
        for j, cost in enumerate(costs):
            rows.append({"regime": regime, "per_round_cost": cost, **{k: v[j] for k, v in curve.items()}})
        crossing[regime] = {"learned_half_deal_cost": _half_crossing(costs, curve["deal_rate"]),
                            "analytic_half_deal_cost": _half_crossing(costs, curve["analytic_deal_rate"]),
                            "strategic_half_deal_cost": _half_crossing(costs, curve["strategic_deal_rate"])}
    return {"curve": rows, "no_deal_threshold": crossing}


def _half_crossing(xs: list[float], ys: list[float]) -> float | None:
    order = np.argsort(xs)
    x, y = np.asarray(xs, float)[order], np.asarray(ys, float)[order]
    for j in range(len(x) - 1):
        if y[j] >= 0.5 > y[j + 1]:
            return float(x[j] + (y[j] - 0.5) / (y[j] - y[j + 1]) * (x[j + 1] - x[j]))
    return None


def summarise(cfg, params: env.Params, per_round: dict, first, last) -> dict:
    """The summary of a run of E envs and T rounds: ``per_round`` holds the :class:`Metrics` fields as arrays
    ``[E, T, ...]``; ``first`` and ``last`` are the initial and final states (leading axis E). The first
    ``params.burn_in`` rounds are not measured (when the run is longer than that: episodes of a fresh population
    start together); every metric is that of :func:`summarise_totals` on each env's measured rounds, averaged over
    the envs, plus the cost curve, the providers' market shares round by round and at the end."""
    totals = np.asarray(per_round["totals"], np.float64)
    prov = np.asarray(per_round["providers"], np.float64)
    e, t = totals.shape[:2]
    burn_in = params.burn_in if t > params.burn_in else 0
    per_env = jax.vmap(lambda a, b: summarise_totals(params, a, b))(
        jnp.asarray(totals[:, burn_in:].sum(1), jnp.float32), jnp.asarray(prov[:, burn_in:].sum(1), jnp.float32))
    means = {k: np.mean(np.asarray(v, np.float64), axis=0) for k, v in per_env.items()}
    out = {k: (float(v) if np.ndim(v) == 0 else v.tolist()) for k, v in means.items()}
    out["cost_curve"] = cost_curve(cfg, means)
    clients = prov[:, :, 0]  # [E, T, M]
    out["provider_shares_by_round"] = np.mean(clients / np.maximum(clients.sum(-1, keepdims=True), 1e-12),
                                              axis=0).tolist()
    m = params.providers.count
    final = np.asarray(last.provider)
    out["final_provider_shares"] = [float(np.mean(final == j)) for j in range(m)]
    out["initial_provider_shares"] = [float(np.mean(np.asarray(first.provider) == j)) for j in range(m)]
    out.update(n_agents=int(np.shape(first.a)[-1]), rounds=int(t), envs=int(e), burn_in=int(burn_in))
    return out


SCENARIO = register(Scenario(
    name="coase_rounds", params=params, reset=reset, observe=observe, step=step, spec=spec,
    seat_providers=seat_providers, seat_owners=seat_owners, scripted={"truthful": truthful}, summarise=summarise,
    decisions=decisions, discount=discount, metrics=metrics,
    train_summary=lambda cfg, means: {"cost_curve": cost_curve(cfg, means)} if cfg.train.algo == "ppo" else {},
    description="multi-round Coase negotiation: alternating offers or Lindahl prices, contracts, breach, reputation"))



def play_by_offer(params: env.Params, act, key: jax.Array, offers: int) -> dict:
    """The mean play of ``act`` (``f32[2, N, D] → f32[2, N, A]``, observation to actions) at offers ``0 … offers − 1``
    of a fresh population's first negotiation at the grid's lowest per-round cost, each side proposing and each
    responding at every offer (the opener set accordingly): the mean over the bargains of each side's demand where it
    proposes and of its acceptance threshold where it responds (lists of ``offers`` floats under ``demand_emitter``,
    ``demand_victims``, ``threshold_emitter``, ``threshold_victims``), beside the subgame-perfect ones without costs
    (``spe_…``: the proposer demands its backward-induction share with the offers left, the responder accepts
    exactly the rest)."""
    state = env.reset(key, params)
    state = state.replace(cost=jnp.full_like(state.cost, jnp.argmin(params.costs)))
    out = {f"{k}_{s}": [] for k in ("demand", "threshold", "spe_demand", "spe_threshold") for s in SIDES}
    for k in range(offers):
        for seat, side in enumerate(SIDES):  # ``side`` proposes at offer k
            other = SIDES[1 - seat]
            s = state.replace(offers=jnp.full_like(state.offers, k),
                              opener=jnp.full_like(state.opener, (k % 2 == 0) == (seat == 0)))
            acts = act(env.observe(params, s))
            spe = float(env.rubinstein_split(params.replace(horizon=max(params.horizon - k, 1)),
                                             emitter_first=seat == 0))
            out[f"demand_{side}"].append(float(jnp.mean(acts[seat, :, 0])))
            out[f"threshold_{other}"].append(float(jnp.mean(acts[1 - seat, :, 1])))
            out[f"spe_demand_{side}"].append(spe)
            out[f"spe_threshold_{other}"].append(1.0 - spe)
    return out


SIDES = ("emitter", "victims")
#: offers the strategy panels show
STRATEGY_OFFERS = 8


def strategy_panels(params: env.Params, policies, offers: int = STRATEGY_OFFERS) -> list[dict]:
    """The report's figure panels of learned alternating-offers play (:func:`play_by_offer`): the proposer's demand and
    the responder's acceptance threshold by offer index, for each side and each ``(seed, label, act)`` of
    ``policies``, beside the subgame-perfect (Rubinstein) ones of the configured horizon where the lowest per-round
    cost of the grid is 0. Under Lindahl prices there are no offers: no panels."""
    if params.protocol != "alternating":
        return []
    key = jax.random.PRNGKey(0)
    x = [float(k) for k in range(offers)]
    tables = [(seed, label, play_by_offer(params, act, key, offers)) for seed, label, act in policies]
    zero_cost = float(jnp.min(params.costs)) == 0.0
    panels = []
    for field, title, ylabel in (("demand", "Proposer's demand by offer", "demand (share of the surplus)"),
                                 ("threshold", "Responder's acceptance threshold by offer",
                                  "threshold (share of the surplus)")):
        series = [{"label": f"{side}{label}", "x": x, "y": t[f"{field}_{side}"], "kind": "learned", "seed": seed}
                  for seed, label, t in tables for side in SIDES]
        if zero_cost and tables:
            series += [{"label": f"{side}, subgame-perfect", "x": x, "y": tables[0][2][f"spe_{field}_{side}"],
                        "kind": "theory", "seed": None} for side in SIDES]
        panels.append({"title": title, "xlabel": "offer (0: the first)", "ylabel": ylabel, "series": series,
                       "yscale": "linear"})
    return panels
