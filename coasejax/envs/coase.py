"""The population-scale Coase scenario: every agent is an emitter bargaining with its k victims, every round.

Each round (``step``):
1. each emitter's victims' harm sensitivities are read through the graph (``f32[N, k]``);
2. advocates report (:mod:`coasejax.advocates`);
3. the mechanism proposes an agreement (:mod:`coasejax.mechanisms`);
4. a deal is attempted iff its reported surplus, weighted by the enforcement probability, covers the deal's
   transaction costs ``TC = per_deal + (k + 1)(per_party + per_round)``; an attempted deal pays its costs and is
   honoured with probability ``enforcement``, otherwise activity reverts to the status quo and no transfer is made;
5. wealth moves with transfers and costs; types may drift.

Welfare counts true benefits and harms: ``W = Σ_i [B_i(x_i) − C_i x_i] − TC``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from coasejax import advocates, model
from coasejax.config import Config
from coasejax.graphs import Graph, slot_sum
from coasejax.mechanisms import MECHANISMS, Bargain, Terms
from coasejax.mechanisms.base import harm_shares
from coasejax.population import Population, drift_types, make_population, unit_uniform


@struct.dataclass
class EnvParams:
    """Every traced parameter of the scenario (a ``vmap`` over these is a sweep) and the static choices."""

    w: jax.Array
    x_max: jax.Array
    emitter_right: jax.Array
    bargaining_power: jax.Array
    discount_emitter: jax.Array
    discount_victims: jax.Array
    per_party: jax.Array
    per_round: jax.Array
    per_deal: jax.Array
    enforcement: jax.Array
    shade: jax.Array
    drift: jax.Array
    mechanism: str = struct.field(pytree_node=False, default="nash")
    strategy: str = struct.field(pytree_node=False, default="truthful")
    horizon: int = struct.field(pytree_node=False, default=32)
    emitter_first: bool = struct.field(pytree_node=False, default=True)
    draw_enforcement: bool = struct.field(pytree_node=False, default=False)  # False when enforcement == 1
    draw_drift: bool = struct.field(pytree_node=False, default=False)  # False when drift == 0

    @classmethod
    def from_config(cls, cfg: Config) -> "EnvParams":
        f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
        tc = cfg.state.transaction_costs
        m = cfg.mechanism
        return cls(
            w=f(cfg.population.w),
            x_max=f(cfg.population.x_max),
            emitter_right=jnp.asarray(cfg.state.rights == "emitter"),
            bargaining_power=f(m.bargaining_power),
            discount_emitter=f(m.discount_emitter),
            discount_victims=f(m.discount_victims),
            per_party=f(tc.per_party),
            per_round=f(tc.per_round),
            per_deal=f(tc.per_deal),
            enforcement=f(cfg.state.enforcement),
            shade=f(cfg.advocates.shade),
            drift=f(cfg.population.drift),
            mechanism=m.kind,
            strategy=cfg.advocates.strategy,
            horizon=m.horizon,
            emitter_first=m.first_mover == "emitter",
            draw_enforcement=cfg.state.enforcement < 1.0,
            draw_drift=cfg.population.drift > 0.0,
        )


@struct.dataclass
class EnvState:
    pop: Population
    t: jax.Array  # i32 round counter


class RoundMetrics(NamedTuple):
    """Sums over all agents of one round (scalars; stacked to ``[T]`` by the episode scan)."""

    welfare: jax.Array
    first_best: jax.Array
    status_quo: jax.Array
    activity: jax.Array
    first_best_activity: jax.Array
    transfers: jax.Array  # money received by emitters (positive: victims pay emitters)
    transaction_costs: jax.Array
    attempts: jax.Array
    deals: jax.Array  # attempted and honoured
    mechanism_net: jax.Array  # money taken in by the mechanism (negative: it pays out)
    money_residual: jax.Array  # Σ Δwealth + costs + mechanism_net: zero when money is conserved
    gross_flows: jax.Array  # Σ |transfers| + |mechanism_net| + costs, the scale for money_residual


def reset(key: jax.Array, cfg: Config) -> EnvState:
    return EnvState(pop=make_population(key, cfg.population, cfg.providers.count), t=jnp.zeros((), jnp.int32))


def terms_of(params: EnvParams, k: int) -> Terms:
    party = params.per_party + params.per_round
    er = params.emitter_right
    return Terms(
        w=params.w,
        x_max=params.x_max,
        emitter_right=er,
        bargaining_power=params.bargaining_power,
        discount_emitter=params.discount_emitter,
        discount_victims=params.discount_victims,
        per_round=params.per_round,
        tc_emitter=party + jnp.where(er, 0.0, params.per_deal),
        tc_victims=k * party + jnp.where(er, params.per_deal, 0.0),
        horizon=params.horizon,
        emitter_first=params.emitter_first,
    )


def step(key: jax.Array, state: EnvState, params: EnvParams, graph: Graph) -> tuple[EnvState, RoundMetrics]:
    """One round for all N emitters at once. Shapes: ``f32[N]`` per agent, ``f32[k, N]`` per bargain slot."""
    pop = state.pop
    k_mech, k_draws = jax.random.split(key)
    # all per-agent randomness of a round from one or two u32 words per agent (cheaper than separate draws)
    n_words = int(params.draw_enforcement) + int(params.draw_drift)
    words = jax.random.bits(k_draws, (n_words, graph.n), jnp.uint32) if n_words else None
    terms = terms_of(params, graph.k)
    er = params.emitter_right

    c_nb = graph.out(pop.c)  # f32[k, N] true harm sensitivities of each emitter's victims
    cost = params.w * slot_sum(c_nb)  # C_i
    c_nb, cost = jax.lax.optimization_barrier((c_nb, cost))
    x_sq = model.status_quo(pop.a, er, params.x_max)
    x_star = model.first_best(pop.a, cost, params.x_max)

    a_hat, c_hat = advocates.reports(params.strategy, params.mechanism, pop.a, c_nb, terms, params.shade)
    out = MECHANISMS[params.mechanism](Bargain(a_hat=a_hat, c_hat=c_hat, x_sq=x_sq), terms, k_mech)

    attempt = (out.surplus > 0) & (params.enforcement * out.surplus >= terms.tc_total)
    honoured = attempt
    if params.draw_enforcement:
        honoured = attempt & (unit_uniform(words[0], 24) < params.enforcement)

    out, attempt, honoured = jax.lax.optimization_barrier((out, attempt, honoured))
    x = jnp.where(honoured, out.x, x_sq)
    to_emitter = jnp.where(honoured, out.to_emitter, 0.0)
    from_victims = jnp.where(honoured, out.from_victims, 0.0)
    party = params.per_party + params.per_round
    tc_emitter = jnp.where(attempt, terms.tc_emitter, 0.0)
    tc_victims = jnp.where(
        attempt, party + jnp.where(er, params.per_deal, 0.0) * harm_shares(c_hat), 0.0
    )  # f32[k, N]

    victim_pays = jax.lax.optimization_barrier(from_victims + tc_victims)  # f32[k, N], materialised once
    victim_outflow = slot_sum(graph.into(victim_pays))  # what each agent pays as a victim
    d_wealth = to_emitter - tc_emitter - victim_outflow
    tc_agent = tc_emitter + slot_sum(tc_victims)  # costs of the bargain led by each emitter
    mech_agent = slot_sum(victim_pays) - tc_agent + tc_emitter - to_emitter
    x, x_star, x_sq, to_emitter, tc_agent, mech_agent, d_wealth = jax.lax.optimization_barrier(
        (x, x_star, x_sq, to_emitter, tc_agent, mech_agent, d_wealth))
    metrics = RoundMetrics(
        welfare=jnp.sum(model.social_value(pop.a, cost, x) - tc_agent),
        first_best=jnp.sum(model.social_value(pop.a, cost, x_star)),
        status_quo=jnp.sum(model.social_value(pop.a, cost, x_sq)),
        activity=jnp.sum(x),
        first_best_activity=jnp.sum(x_star),
        transfers=jnp.sum(to_emitter),
        transaction_costs=jnp.sum(tc_agent),
        attempts=jnp.sum(attempt, dtype=jnp.float32),
        deals=jnp.sum(honoured, dtype=jnp.float32),
        mechanism_net=jnp.sum(mech_agent),
        money_residual=jnp.sum(d_wealth + tc_agent + mech_agent),
        gross_flows=jnp.sum(jnp.abs(to_emitter) + jnp.abs(mech_agent) + tc_agent),
    )
    pop = pop.replace(wealth=pop.wealth + d_wealth)
    if params.draw_drift:
        pop = drift_types(pop, params.drift, words[-1])
    return EnvState(pop=pop, t=state.t + 1), metrics


def rollout(key: jax.Array, state: EnvState, params: EnvParams, graph: Graph, length: int):
    """``length`` rounds under ``lax.scan``. Round t uses ``fold_in(key, t)``, so splitting an episode into chunks
    gives the same numbers as one long scan."""

    def body(s, _):
        return step(jax.random.fold_in(key, s.t), s, params, graph)

    return jax.lax.scan(body, state, None, length=length)
