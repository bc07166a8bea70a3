"""The multi-round Coase scenario (``env.kind: coase_rounds``): emitters and their victims' coalitions negotiate over
many rounds, sign contracts that last, breach them, and build reputations, while preferences drift.

Agents sit on a ring. Agent i is the emitter of bargain i and a member of the victims' side of bargain i − 1, so every
agent's advocate acts in two *seats* each round: seat 0 (the emitter of its own bargain) and seat 1 (the victims of
its neighbour's bargain). The victims of an emitter bargain as one coalition whose total marginal harm C is drawn from
``population.harm`` (the coalition's internal problems are issue-6 material). Per bargain: benefit ``B(x) = a x −
x²/2``, harm ``C x``, status quo ``x_sq = clip(a, 0, x_max)`` (emitter's right) or 0 (victims' right), first best
``x* = clip(a − C, 0, x_max)``, per-round surplus ``S = [B(x*) − C x*] − [B(x_sq) − C x_sq]``.

An *episode* of a bargain:
1. **Negotiation.** At its first offer both seats say whether they take part (``participate`` > 1/2); if either does
   not, the bargain sits out ``env.contract_rounds`` rounds at the status quo at no cost. Otherwise, with
   ``mechanism.kind: alternating``, the sides alternate offers (``mechanism.first_mover`` opens, or a side drawn
   per episode with ``random``, which gives both sides practice in both roles): the proposer
   demands a share ``demand`` of S, the responder accepts iff what is left, ``1 − demand``, reaches its
   ``threshold``; after ``mechanism.horizon`` rejected offers the bargain sits out as above. With
   ``mechanism.kind: lindahl`` the agreement is immediate: the victims name a per-unit price ``p = report · C``, the
   emitter reports ``â = report · a`` and sets ``x = clip(â − p, 0, upper)``, and the victims pay ``p (x_sq − x)``
   for abatement (emitter's right) or are paid ``p x`` for permission (victims' right) — each round of the contract.
   Each side pays the per-round negotiation cost κ in every round it negotiates.
2. **Contract.** An agreement fixes an activity (``x*`` of the types at signing, for alternating offers) and a
   per-round transfer, and lasts ``env.contract_rounds`` rounds starting with the round of agreement. Types drift
   meanwhile (``population.drift``), so a contract goes stale. In every contract round the emitter breaches with its
   own probability ``2 (1 − state.enforcement) u_i`` (``u_i ~ U(0, 1)`` drawn once per agent): activity reverts to the
   status quo, no transfer is made and the contract ends. Each emitter's reputation, the moving average of its
   honoured contract rounds (weight 0.1 on the latest), is observed by both seats of its bargains.
3. When the contract (or the sit-out) ends, the bargain's episode ends and it starts afresh with new types, a new
   per-round cost from ``env.cost_grid`` and a new rights regime from ``env.regimes`` (so one run spans a cost curve
   and both regimes).

A seat's reward each round is its client's gain over the status quo in that bargain: the emitter's
``B(x) − B(x_sq) + T − κ``, the victims' ``−C (x − x_sq) − T − κ``; the emitter's seat discounts by
``mechanism.discount_emitter``, the victims' by ``mechanism.discount_victims`` — the δ of Rubinstein's game.
Welfare counts true benefits and harms and the negotiation costs: ``W = Σ [B(x) − C x] − 2κ·[negotiating]``.

Theory. With no costs and no breach the subgame-perfect split of alternating offers is Rubinstein's (a horizon of H
offers: :func:`rubinstein_split`), agreement is immediate, and every episode runs at the first best: efficiency 1
under either regime. With cost κ a bargain is worth negotiating iff its contract can pay both sides' κ, i.e.
``S ≥ κ (1/A_e + 1/A_v)`` with ``A = (1 − δ^L)/(1 − δ)`` the discounted length of an L-round contract
(:func:`deal_threshold`, the *efficient* no-deal threshold); the analytic efficiency is
``E[(L S − 2κ)·1{deal}] / E[L S]``. Strategic sides bargain to the subgame-perfect split with costs and each takes
part only if its own share pays its κ (:func:`strategic_split`, the *strategic* no-deal threshold), which rules out
more bargains.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from coasejax.config import Distribution
from coasejax.mechanisms.alternating import proposer_value
from coasejax.mechanisms.base import Terms
from coasejax.model import benefit, benefit_change, first_best, status_quo, value_change
from coasejax.population import drift_factor, round_words, unit_uniform
from coasejax.population import inverse_cdf as draw
from coasejax.rules.provider import ProviderParams, choose_providers, segment_totals

#: action fields, in order (each in (0, 1) except ``report``, in (0, 2))
ACTIONS = ("demand", "threshold", "report", "participate")
#: the bounds of each action field (a learned policy squashes into ``(LOW, HIGH)``)
LOW = (0.0, 0.0, 0.0, 0.0)
HIGH = (1.0, 1.0, 2.0, 1.0)
#: observation features, in order
OBSERVATION = ("is_emitter", "is_proposer", "own_discount", "other_discount", "benefit", "harm", "surplus",
               "emitter_right", "per_round_cost", "offers_left", "emitter_reputation", "negotiating",
               "contract_gain", "rounds_left")
#: the scripted truthful advocate: a Nash (equal) split, truthful reports, always takes part
TRUTHFUL_ACTION = (0.5, 0.5, 1.0, 1.0)
REPUTATION_WEIGHT = 0.1
NEGOTIATE, CONTRACT, IDLE = 0, 1, 2


def grids(cfg) -> tuple[list[float], list[str]]:
    """The per-round costs and rights regimes episodes draw from: ``env.cost_grid`` and ``env.regimes``, or the
    state layer's single ``transaction_costs.per_round`` and ``rights`` where they are null."""
    env = cfg.env
    costs = env.cost_grid if env.cost_grid is not None else [cfg.state.transaction_costs.per_round]
    regimes = env.regimes if env.regimes is not None else [cfg.state.rights]
    return list(costs), list(regimes)


@struct.dataclass
class Params:
    x_max: jax.Array
    discount: jax.Array  # f32[2] the emitter's and the victims' discount factors
    costs: jax.Array  # f32[Gc] per-round negotiation costs drawn per episode
    regimes: jax.Array  # bool[Gr] rights regimes drawn per episode (True: the emitter's right)
    enforcement: jax.Array
    drift: jax.Array
    providers: ProviderParams
    benefit: Distribution = struct.field(pytree_node=False, default=None)
    harm: Distribution = struct.field(pytree_node=False, default=None)
    protocol: str = struct.field(pytree_node=False, default="alternating")
    horizon: int = struct.field(pytree_node=False, default=32)
    contract_rounds: int = struct.field(pytree_node=False, default=8)
    emitter_first: bool = struct.field(pytree_node=False, default=True)
    random_opener: bool = struct.field(pytree_node=False, default=False)  # first_mover: random, per episode
    n: int = struct.field(pytree_node=False, default=0)  # bargains (``population.n_agents``), for :func:`reset`

    @classmethod
    def from_config(cls, cfg) -> "Params":
        f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
        m, env = cfg.mechanism, cfg.env
        costs, regimes = grids(cfg)
        return cls(x_max=f(cfg.population.x_max), discount=f([m.discount_emitter, m.discount_victims]),
                   costs=f(costs), regimes=jnp.asarray([r == "emitter" for r in regimes]),
                   enforcement=f(cfg.state.enforcement), drift=f(cfg.population.drift),
                   providers=ProviderParams.from_config(cfg), benefit=cfg.population.benefit,
                   harm=cfg.population.harm, protocol=m.kind, horizon=m.horizon,
                   contract_rounds=env.contract_rounds, emitter_first=m.first_mover == "emitter",
                   random_opener=m.first_mover == "random", n=cfg.population.n_agents)

    @property
    def groups(self) -> int:
        """Episode groups for the metrics: rights regime × cost (``regime_index · Gc + cost_index``)."""
        return self.regimes.shape[0] * self.costs.shape[0]

    @property
    def burn_in(self) -> int:
        """Rounds an evaluation plays before it measures: every bargain through its first contract (episodes of
        a fresh population start together), plus two."""
        return self.contract_rounds + 2


@struct.dataclass
class State:
    a: jax.Array  # f32[N] emitter i's benefit slope
    c: jax.Array  # f32[N] marginal harm C of bargain i's victims (together)
    regime: jax.Array  # i32[N] index into Params.regimes
    cost: jax.Array  # i32[N] index into Params.costs
    opener: jax.Array  # bool[N] the emitter makes the first offer of this episode
    phase: jax.Array  # i32[N] NEGOTIATE, CONTRACT or IDLE
    offers: jax.Array  # i32[N] offers made so far in the current negotiation
    left: jax.Array  # i32[N] rounds left in the contract or sit-out
    x_c: jax.Array  # f32[N] contracted activity
    pay: jax.Array  # f32[N] contracted transfer to the emitter per round
    breach: jax.Array  # f32[N] agent i's breach probability per contract round (as an emitter)
    reputation: jax.Array  # f32[N] agent i's share of honoured contract rounds (moving average)
    provider: jax.Array  # i32[N] agent i's advocate provider
    util: jax.Array  # f32[N] agent i's recent net utility per round (moving average, for switching)
    t: jax.Array  # i32[] round counter


class Round(NamedTuple):
    """Per-bargain results of one round (``f32[N]`` or ``bool[N]``), aggregated by :func:`round_totals`."""

    reward: jax.Array  # f32[2, N] each seat's gain this round
    done: jax.Array  # bool[N] the bargain's episode ended this round
    group: jax.Array  # i32[N] the episode's group (before any reset)
    gain: jax.Array  # W − W_sq of the bargain this round (negotiation costs included)
    gain_star: jax.Array  # W* − W_sq
    status_quo: jax.Array  # W_sq, the welfare of the bargain's status quo this round
    activity: jax.Array
    activity_star: jax.Array
    costs: jax.Array  # negotiation costs paid (both sides)
    transfer: jax.Array  # money to the emitter
    started: jax.Array  # bool: a negotiation opened this round
    agreed: jax.Array  # bool: an agreement was signed this round
    first_offer: jax.Array  # bool: ... at the first offer
    opened_e: jax.Array  # bool: a negotiation opened this round with the emitter making the first offer
    opened_v: jax.Array  # bool: ... with the victims making it
    first_offer_e: jax.Array  # bool: ... at the first offer, the emitter opening
    share_e: jax.Array  # the opening emitter's share of S in such an agreement (0 otherwise)
    first_offer_v: jax.Array  # bool: ... at the first offer, the victims opening
    share_v: jax.Array  # the opening victims' share of S in such an agreement (0 otherwise)
    contract: jax.Array  # bool: a contract round
    breached: jax.Array  # bool: the emitter breached this round
    sat_out: jax.Array  # bool: the negotiation ended without agreement this round
    analytic_deal: jax.Array  # bool: at a start, whether the deal is worth its costs (deal_threshold)
    analytic_gain: jax.Array  # at a start, the analytic (L S − 2κ)·deal
    strategic_deal: jax.Array  # bool: at a start, whether both sides take part in the subgame-perfect play
    strategic_gain: jax.Array  # at a start, (L S − 2κ)·strategic_deal
    episode_value: jax.Array  # at a start, L S


def rubinstein_split(params: Params, cost: float = 0.0, emitter_first: bool | None = None) -> jax.Array:
    """The first proposer's subgame-perfect share of a unit surplus with ``params.horizon`` offers, the two sides'
    discount factors and a per-round cost (each side's, as a share of the surplus) — by backward induction. The
    opener is ``emitter_first`` (default: ``params.emitter_first``)."""
    emitter_first = params.emitter_first if emitter_first is None else emitter_first
    one, zero = jnp.float32(1.0), jnp.float32(0.0)
    terms = Terms(w=one, x_max=one, emitter_right=jnp.asarray(True), bargaining_power=one,
                  discount_emitter=params.discount[0], discount_victims=params.discount[1],
                  per_round=jnp.float32(cost), tc_emitter=zero, tc_victims=zero, horizon=params.horizon,
                  emitter_first=emitter_first)
    return proposer_value(one, terms, 1)


def contract_length(params: Params) -> jax.Array:
    """``f32[2]``: each side's discounted length ``A = (1 − δ^L)/(1 − δ)`` of an L-round contract."""
    d, n = params.discount, params.contract_rounds
    return (1.0 - d**n) / (1.0 - d)


def deal_threshold(params: Params, surplus: jax.Array) -> jax.Array:
    """The largest per-round cost κ at which negotiating the contract pays both sides: ``S / (1/A_e + 1/A_v)``."""
    a = contract_length(params)
    return surplus / (1.0 / a[0] + 1.0 / a[1])


def strategic_split(params: Params, surplus: jax.Array, cost: jax.Array, opener: jax.Array | None = None):
    """The opener's subgame-perfect share of the contract with per-round cost κ (infinite horizon, stationary), and
    whether both sides take part.

    In share units of the contract's value to each side (``k_s = κ / (S A_s)``), the responder r accepts exactly its
    value of rejecting, ``δ_r (f_r − k_r)`` (next round it proposes and pays κ again), so the opener o keeps
    ``f_o = (1 − δ_r + δ_r k_r − δ_r δ_o k_o) / (1 − δ_o δ_r)`` where both continuations pay (else a corner: a
    responder whose next turn would not pay its cost accepts anything); with ``κ = 0`` this is Rubinstein's
    ``(1 − δ_r)/(1 − δ_o δ_r)``. Each side takes part iff its share pays its first round's κ: ``f_o ≥ k_o`` and
    ``1 − f_o ≥ k_r`` — a stricter test than the efficient one (:func:`deal_threshold`), because the split does not
    bend to cover the responder's cost."""
    if opener is not None:  # per bargain: the emitter opens where ``opener``
        (f_e, j_e), (f_v, j_v) = (_strategic(params, surplus, cost, e) for e in (True, False))
        return jnp.where(opener, f_e, f_v), jnp.where(opener, j_e, j_v)
    return _strategic(params, surplus, cost, params.emitter_first)


def _strategic(params: Params, surplus, cost, emitter_first: bool):
    a_len = contract_length(params)
    o, r = (0, 1) if emitter_first else (1, 0)
    value = jnp.maximum(surplus, 1e-12)
    k_o, k_r = cost / (value * a_len[o]), cost / (value * a_len[r])
    d_o, d_r = params.discount[o], params.discount[r]
    # the fixed point of f_o = 1 − max(0, δ_r (f_r − k_r)), f_r = 1 − max(0, δ_o (f_o − k_o)) (a contraction):
    # a corner where the responder's next turn would not pay (it accepts anything), a corner where the opener's
    # would not (it is offered nothing better than its own next turn), or the interior solution
    r_takes_nothing = 1.0 - jnp.maximum(0.0, d_o * (1.0 - k_o)) <= k_r
    f_corner = 1.0 - jnp.maximum(0.0, d_r * (1.0 - k_r))
    o_takes_nothing = f_corner <= k_o
    interior = (1.0 - d_r + d_r * k_r - d_r * d_o * k_o) / (1.0 - d_o * d_r)
    f_o = jnp.where(r_takes_nothing, 1.0, jnp.where(o_takes_nothing, f_corner, interior))
    return f_o, (f_o >= k_o) & (1.0 - f_o >= k_r)


def bargain_terms(params: Params, a, c, regime):
    """Status quo, first best and per-round surplus of each bargain under its rights regime."""
    right = params.regimes[regime]
    x_sq = status_quo(a, right, params.x_max)
    x_star = first_best(a, c, params.x_max)
    surplus = value_change(a, c, x_sq, x_star)  # without cancellation: a tiny surplus keeps its sign in float32
    return right, x_sq, x_star, surplus


def _fresh(params: Params, words: jax.Array):
    """Types, cost, regime and opener of new episodes from five ``u32[N]`` words."""
    a = draw(params.benefit, unit_uniform(words[0], 24))
    c = draw(params.harm, unit_uniform(words[1], 24))
    cost = (unit_uniform(words[2], 24) * params.costs.shape[0]).astype(jnp.int32)
    regime = (unit_uniform(words[3], 24) * params.regimes.shape[0]).astype(jnp.int32)
    if params.random_opener:
        opener = unit_uniform(words[4], 24) < 0.5
    else:
        opener = jnp.full(a.shape, params.emitter_first)
    return (a, c, jnp.minimum(cost, params.costs.shape[0] - 1), jnp.minimum(regime, params.regimes.shape[0] - 1),
            opener)


def reset(key: jax.Array, params: Params, n: int | None = None) -> State:
    """``n`` bargains (default ``params.n``) at the start of their first episode; providers assigned uniformly at
    random."""
    n = params.n if n is None else n
    words = round_words(key, 7, n)
    a, c, cost, regime, opener = _fresh(params, words[:5])
    m = params.providers.count
    provider = jnp.minimum((unit_uniform(words[5], 24) * m).astype(jnp.int32), m - 1)
    zi, zf = jnp.zeros((n,), jnp.int32), jnp.zeros((n,), jnp.float32)
    breach = jnp.clip(2.0 * (1.0 - params.enforcement) * unit_uniform(words[6], 24), 0.0, 1.0)
    return State(a=a, c=c, regime=regime, cost=cost, opener=opener, phase=zi, offers=zi, left=zi, x_c=zf, pay=zf,
                 breach=breach,
                 reputation=jnp.ones((n,), jnp.float32), provider=provider, util=zf, t=jnp.zeros((), jnp.int32))


def seat_providers(state: State) -> jax.Array:
    """``i32[2, N]``: the provider acting in each seat (seat 1 of bargain i is agent i + 1's)."""
    return jnp.stack([state.provider, jnp.roll(state.provider, -1)])


def proposer_is_emitter(params: Params, state: State) -> jax.Array:
    return (state.offers % 2 == 0) == state.opener


def observe(params: Params, state: State) -> jax.Array:
    """``f32[2, N, len(OBSERVATION)]``: each seat's view of its bargain (complete information between the sides).

    Besides the bargain's terms, a seat sees where the episode is: ``negotiating`` (1 while offers are made), its
    own ``contract_gain`` (its gain per honoured round of the signed contract, 0 outside a contract) and
    ``rounds_left`` (the share of the contract or sit-out still to run), so that a critic can tell a signed contract
    from an open negotiation and value what is left of it. Nothing tells the first offer from later ones but
    ``offers_left``: the decisions at every offer are those of one stationary policy unless it learns otherwise."""
    right, x_sq, _, surplus = bargain_terms(params, state.a, state.c, state.regime)
    prop_e = proposer_is_emitter(params, state)
    n = state.a.shape[0]
    one = jnp.ones((n,), jnp.float32)
    in_contract = state.phase == CONTRACT
    gain_e = jnp.where(in_contract, benefit_change(state.a, x_sq, state.x_c) + state.pay, 0.0)
    gain_v = jnp.where(in_contract, -state.c * (state.x_c - x_sq) - state.pay, 0.0)
    left = jnp.where(state.phase == NEGOTIATE, 0.0, (state.left + 1) / params.contract_rounds)
    common = [state.a, state.c, surplus, right.astype(jnp.float32), params.costs[state.cost],
              1.0 - state.offers / params.horizon, state.reputation, (state.phase == NEGOTIATE).astype(jnp.float32)]
    d_e, d_v = params.discount[0] * one, params.discount[1] * one
    emitter = [one, prop_e.astype(jnp.float32), d_e, d_v]
    victims = [0.0 * one, (~prop_e).astype(jnp.float32), d_v, d_e]
    return jnp.stack([jnp.stack(emitter + common + [gain_e, left], -1),
                      jnp.stack(victims + common + [gain_v, left], -1)])


def decisions(params: Params, state: State) -> jax.Array:
    """``bool[2, N, len(ACTIONS)]``: the action fields each seat's choice decides this round (the others are
    ignored by :func:`step`, so they carry no learning signal)."""
    neg = state.phase == NEGOTIATE
    first = neg & (state.offers == 0)
    if params.protocol == "lindahl":
        use = jnp.stack([neg, neg])
        return jnp.stack([jnp.zeros_like(use), jnp.zeros_like(use), use, jnp.stack([first, first])], -1)
    prop_e = proposer_is_emitter(params, state)
    proposes = jnp.stack([neg & prop_e, neg & ~prop_e])
    responds = jnp.stack([neg & ~prop_e, neg & prop_e])
    return jnp.stack([proposes, responds, jnp.zeros_like(proposes), jnp.stack([first, first])], -1)


def step(key: jax.Array, state: State, params: Params, actions: jax.Array) -> tuple[State, Round]:
    """One round of every bargain; ``actions: f32[2, N, len(ACTIONS)]`` in natural units (see :data:`ACTIONS`)."""
    n = state.a.shape[0]
    big_l = params.contract_rounds
    words = round_words(key, 9, n)
    a, c = state.a, state.c
    right, x_sq, x_star, surplus = bargain_terms(params, a, c, state.regime)
    kappa = params.costs[state.cost]
    group = state.regime * params.costs.shape[0] + state.cost
    neg = state.phase == NEGOTIATE
    first = neg & (state.offers == 0)
    act_e, act_v = actions[0], actions[1]

    joins = (act_e[:, 3] > 0.5) & (act_v[:, 3] > 0.5)
    opt_out = first & ~joins
    negotiating = neg & ~opt_out  # pays κ each side
    if params.protocol == "lindahl":
        price = act_v[:, 2] * c
        upper = jnp.where(right, x_sq, params.x_max)
        x_new = jnp.clip(act_e[:, 2] * a - price, 0.0, upper)
        pay_new = jnp.where(right, price * (x_sq - x_new), -price * x_new)
        accept = jnp.ones((n,), bool)
        share_first = jnp.zeros((n,), jnp.float32)
    else:
        prop_e = proposer_is_emitter(params, state)
        demand = jnp.where(prop_e, act_e[:, 0], act_v[:, 0])
        threshold = jnp.where(prop_e, act_v[:, 1], act_e[:, 1])
        accept = (1.0 - demand) >= threshold
        share_e = jnp.where(prop_e, demand, 1.0 - demand)
        x_new = x_star
        pay_new = -benefit_change(a, x_sq, x_star) + share_e * surplus
        share_first = demand
    agreed = negotiating & accept
    failed = negotiating & ~accept & (state.offers >= params.horizon - 1)
    sat_out = opt_out | failed

    in_contract = (state.phase == CONTRACT) | agreed
    x_c = jnp.where(agreed, x_new, state.x_c)
    pay = jnp.where(agreed, pay_new, state.pay)
    breached = in_contract & (unit_uniform(words[8], 24) < state.breach)
    honoured = in_contract & ~breached
    x = jnp.where(honoured, x_c, x_sq)
    transfer = jnp.where(honoured, pay, 0.0)
    paid = jnp.where(negotiating, kappa, 0.0)
    r_e = benefit_change(a, x_sq, x) + transfer - paid
    r_v = -c * (x - x_sq) - transfer - paid
    w_sq = benefit(a, x_sq) - c * x_sq
    gain = value_change(a, c, x_sq, x) - 2.0 * paid
    gain_star = surplus  # W* − W_sq at this round's types (before they drift below)

    # analytic decision at the start of each episode: deal iff κ ≤ the threshold (immediate agreement)
    worth = first & (kappa <= deal_threshold(params, surplus))
    strategic = first & strategic_split(params, surplus, kappa, state.opener)[1]
    episode_value = jnp.where(first, big_l * surplus, 0.0)

    # phases
    left = jnp.where(agreed, big_l - 1, jnp.where(sat_out, big_l - 1, state.left - (state.phase != NEGOTIATE)))
    phase = jnp.where(agreed, CONTRACT, jnp.where(sat_out, IDLE, state.phase))
    done = (phase != NEGOTIATE) & ((left <= 0) | breached)
    offers = jnp.where(negotiating & ~accept, state.offers + 1, state.offers)
    rep = jnp.where(in_contract, (1 - REPUTATION_WEIGHT) * state.reputation
                    + REPUTATION_WEIGHT * honoured.astype(jnp.float32), state.reputation)

    # drift, then fresh episodes where they ended
    a = a * drift_factor(params.drift, unit_uniform(words[5], 24))
    c = c * drift_factor(params.drift, unit_uniform(words[6], 24))
    a_f, c_f, cost_f, regime_f, opener_f = _fresh(params, words[:5])
    zi = jnp.zeros_like(offers)

    # clients' recent net utility and provider switching
    util_round = r_e + jnp.roll(r_v, 1)  # agent i: emitter of bargain i, victim of bargain i − 1
    pp = params.providers
    provider, util = state.provider, state.util
    if pp.use_switching:
        util = pp.memory * util + (1.0 - pp.memory) * util_round
        totals = segment_totals(jnp.stack([jnp.ones_like(util), util]), provider, pp.count)
        score = jnp.where(totals[0] > 0, totals[1] / jnp.maximum(totals[0], 1.0), jnp.sum(totals[1]) / n)
        provider = choose_providers(pp, provider, score, words[7])

    new = State(a=jnp.where(done, a_f, a), c=jnp.where(done, c_f, c), regime=jnp.where(done, regime_f, state.regime),
                cost=jnp.where(done, cost_f, state.cost), opener=jnp.where(done, opener_f, state.opener),
                phase=jnp.where(done, NEGOTIATE, phase),
                offers=jnp.where(done, zi, offers), left=jnp.where(done, zi, left), x_c=x_c, pay=pay,
                breach=state.breach, reputation=rep, provider=provider, util=util, t=state.t + 1)
    out = Round(reward=jnp.stack([r_e, r_v]), done=done, group=group, gain=gain,
                gain_star=gain_star, status_quo=w_sq, activity=x, activity_star=x_star,
                costs=2.0 * paid, transfer=transfer, started=first, agreed=agreed, opened_e=first & state.opener,
                opened_v=first & ~state.opener,
                first_offer=agreed & first, first_offer_e=agreed & first & state.opener,
                share_e=jnp.where(agreed & first & state.opener, share_first, 0.0),
                first_offer_v=agreed & first & ~state.opener,
                share_v=jnp.where(agreed & first & ~state.opener, share_first, 0.0), contract=in_contract,
                breached=breached, sat_out=sat_out, analytic_deal=worth,
                analytic_gain=jnp.where(worth, big_l * surplus - 2.0 * kappa, 0.0), strategic_deal=strategic,
                strategic_gain=jnp.where(strategic, big_l * surplus - 2.0 * kappa, 0.0), episode_value=episode_value)
    return new, out


#: the per-group sums of :func:`round_totals`, in order
TOTALS = ("gain", "gain_star", "status_quo", "activity", "activity_star", "costs", "transfer", "started", "agreed",
          "opened_e", "opened_v", "first_offer", "first_offer_e", "share_e", "first_offer_v", "share_v", "contract", "breached", "sat_out",
          "analytic_deal", "analytic_gain", "strategic_deal", "strategic_gain", "episode_value", "rounds")


def round_totals(params: Params, r: Round) -> jax.Array:
    """``f32[len(TOTALS), G]``: the round's sums over the bargains of each episode group."""
    rows = [getattr(r, name) if name != "rounds" else jnp.ones_like(r.gain) for name in TOTALS]
    rows = jnp.stack([v.astype(jnp.float32) for v in rows])
    return segment_totals(rows, r.group, params.groups)
