"""The auction market: a population of N bidders in N/n sealed-bid (or double) auctions per round.

The rules are those of :mod:`coasejax.envs.auction` (Krishna, *Auction Theory*, 2010): every round each agent draws a
fresh private value from ``F(v) = v^a`` (:func:`~coasejax.envs.auction.sample_values`), bids in its auction, and the
auctions clear with :func:`~coasejax.envs.auction.play` (winner, price, payments per ``env.auction``, the reserve
price, ties at random). The ES game of :mod:`coasejax.train.auction_game` plays the same rules, and this scenario
shows its bidders the same observation, so the parameters of an auction checkpoint act here directly.

Agents and roles. ``N = population.n_agents`` must be a multiple of ``n = env.n_bidders`` (2 for the double auction),
and agent ``i`` always plays role ``j = i mod n`` (column j) in its auction, row ``q = i div n``: in the double
auction the even agents are buyers (values v) and the odd ones sellers (costs c). With ``policy.shared: false`` (and
always in the double auction) role j is served by provider j, as in the game (:func:`~coasejax.envs.auction.roles`);
otherwise every seat has provider 0.

Matching (``O(N)``, fixed shapes, no permutation). With ``G = N/n`` auctions, auction ``g`` in round ``t`` holds, in
role j, the agent of row ``(g + j·t) mod G``: column j is rotated by ``j·t`` rows. Each round is a bijection (every
column is rotated), the rows of columns j and j' meet at offset ``(j' − j)·t``, so partners change every round (the
matching repeats after G rounds; with G = 1 it is fixed).

Seats, observations and actions. One seat (S = 1): ``observe`` gives ``f32[1, N, d]``, the own value ``[v]``, or
``[v, G(v)]`` with ``policy.win_prob`` (:func:`~coasejax.envs.auction.observe`, the game's observation), and the
action ``f32[1, N, 1]`` is the absolute bid; ``Spec.relative``: the truthful action is ``1 × v``. The seller of the
double auction acts in mirrored units exactly as in the game (:func:`~coasejax.envs.auction.mirrored`): it observes
``1 − c`` and its action ``a`` asks ``1 − a``, so the truthful action ``a = 1 − c`` asks its cost; the observation
carries no role feature, since the trained policy sees none.

Parameters. :class:`MarketParams` has no traced leaves: the analytic equilibrium
(:func:`coasejax.eval.equilibrium.equilibrium_bid`) and ``G(v)`` need the auction's numbers as Python floats, so a
sweep over them compiles once per point.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from coasejax.envs import auction
from coasejax.eval.equilibrium import equilibrium_bid, participation_threshold
from coasejax.scenarios.base import Scenario, Spec, Transition, register


@struct.dataclass
class MarketParams:
    """Static (hashable) parameters of the market; ``auction`` holds Python floats, not arrays."""

    auction: auction.AuctionParams = struct.field(pytree_node=False)
    n_agents: int = struct.field(pytree_node=False, default=2)
    win_prob: bool = struct.field(pytree_node=False, default=False)
    role_provider: tuple[int, ...] = struct.field(pytree_node=False, default=(0, 0))
    v_min: float = struct.field(pytree_node=False, default=0.0)  # bne error at values ≥ v_min

    @property
    def n_roles(self) -> int:
        return self.auction.n_roles

    @property
    def n_auctions(self) -> int:
        return self.n_agents // self.auction.n_roles

    @property
    def double(self) -> bool:
        return self.auction.format == "double"


@struct.dataclass
class MarketState:
    t: jax.Array  # i32[] round counter
    values: jax.Array  # f32[N] this round's private values (the double auction's sellers: their costs)
    utility: jax.Array  # f32[N] realised utility summed over the rounds so far


class AuctionMetrics(NamedTuple):
    """Round totals over all auctions (sums; ``rounds`` is 1 per round, so summed metrics count their rounds)."""

    rounds: jax.Array  # f32[] 1
    auctions: jax.Array  # f32[] G
    revenue: jax.Array  # f32[] payments received by the sellers (0 in the double auction)
    revenue_sq: jax.Array  # f32[] sum over auctions of revenue² (standard errors)
    welfare: jax.Array  # f32[] realised gains: winners' values (sealed bid), v − c of trades (double)
    first_best: jax.Array  # f32[] highest value if it reaches the reserve (sealed bid), max(v − c, 0) (double)
    top_value: jax.Array  # f32[] highest value per auction whatever the reserve (double: as first_best)
    trades: jax.Array  # f32[] auctions in which the good changed hands
    utility: jax.Array  # f32[] bidders' realised utility
    utility_by_role: jax.Array  # f32[R] the same by role
    bids: jax.Array  # f32[] bids (the double auction's sellers: asks)
    values: jax.Array  # f32[] values
    bne_sq: jax.Array  # f32[] squared gap between bid and analytic equilibrium bid, at values ≥ v_min
    bne_count: jax.Array  # f32[] bidders counted in bne_sq (0 where no equilibrium is known)


def params(cfg) -> MarketParams:
    from coasejax.config import ConfigError

    env = cfg.env
    n_roles = 2 if env.auction == "double" else env.n_bidders
    n = cfg.population.n_agents
    if n % n_roles:
        what = "2 (the double auction pairs a buyer with a seller)" if env.auction == "double" else \
            f"env.n_bidders = {n_roles}"
        raise ConfigError(f"population.n_agents: {n} is not a multiple of {what}")
    ap = auction.AuctionParams(reserve=float(env.reserve_price), k=float(env.k), power=float(env.power),
                               format=env.auction, n_roles=n_roles)
    role_provider, _ = auction.roles(ap, cfg.policy.shared)
    v_min = max(participation_threshold(ap.format, n_roles, ap.power, ap.reserve), float(cfg.train.bne_min_value))
    return MarketParams(auction=ap, n_agents=n, win_prob=bool(cfg.policy.win_prob),
                        role_provider=tuple(int(x) for x in np.asarray(role_provider)), v_min=v_min)


def agent_roles(p: MarketParams) -> jax.Array:
    """``i32[N]``: each agent's role, ``i mod n``."""
    return jnp.tile(jnp.arange(p.n_roles, dtype=jnp.int32), p.n_auctions)


def shifts(p: MarketParams, t: jax.Array) -> jax.Array:
    """``i32[n]``: the rotation ``j·t mod G`` of column j in round t (accumulated mod G: no int32 overflow)."""
    g = p.n_auctions
    s = jnp.asarray(t, jnp.int32) % g
    out = [jnp.zeros((), jnp.int32)]
    for _ in range(1, p.n_roles):
        out.append((out[-1] + s) % g)
    return jnp.stack(out)


def group(p: MarketParams, x: jax.Array, shift: jax.Array) -> jax.Array:
    """``f32[N] -> f32[G, n]``: entry ``[g, j]`` is agent ``((g + shift_j) mod G)·n + j``'s."""
    idx = (jnp.arange(p.n_auctions, dtype=jnp.int32)[:, None] + shift[None, :]) % p.n_auctions
    return jnp.take_along_axis(x.reshape(p.n_auctions, p.n_roles), idx, axis=0)


def ungroup(p: MarketParams, y: jax.Array, shift: jax.Array) -> jax.Array:
    """The inverse of :func:`group`: ``f32[G, n] -> f32[N]``."""
    idx = (jnp.arange(p.n_auctions, dtype=jnp.int32)[:, None] - shift[None, :]) % p.n_auctions
    return jnp.take_along_axis(y, idx, axis=0).reshape(p.n_agents)


def reset(key: jax.Array, p: MarketParams) -> MarketState:
    return MarketState(t=jnp.zeros((), jnp.int32), values=auction.sample_values(key, p.auction, (p.n_agents,)),
                       utility=jnp.zeros((p.n_agents,), jnp.float32))


def _seller(p: MarketParams) -> jax.Array | bool:
    return agent_roles(p) == 1 if p.double else False


def observe(p: MarketParams, state: MarketState) -> jax.Array:
    """``f32[1, N, d]``: ``[v]`` or ``[v, G(v)]``; the double auction's sellers see ``1 − c``."""
    v = jnp.where(_seller(p), 1.0 - state.values, state.values)
    return auction.observe(v, p.auction, p.win_prob)[None]


def spec(p: MarketParams) -> Spec:
    obs = ("v", "G(v)") if p.win_prob else ("v",)
    return Spec(observation=obs, actions=("bid",), low=(0.0,), high=(1.0,), truthful=(1.0,), relative=True, seats=1)


def bids_of(p: MarketParams, actions: jax.Array) -> jax.Array:
    """``f32[N]``: the bids (asks for the double auction's sellers, ``1 − action``) from ``f32[1, N, 1]``."""
    a = actions[0, :, 0]
    return jnp.where(_seller(p), 1.0 - a, a)


def equilibrium(p: MarketParams, values: jax.Array) -> jax.Array | None:
    """``f32[N]``: every agent's analytic equilibrium bid (ask) at its value (cost), or None where none is known."""
    return equilibrium_bid(p.auction, values, agent_roles(p) if p.double else 0)


def has_equilibrium(p: MarketParams) -> bool:
    """Whether :func:`equilibrium` knows one (every format but the double auction with non-uniform values)."""
    return not p.double or p.auction.power == 1.0


def step(key: jax.Array, state: MarketState, actions: jax.Array, p: MarketParams):
    k_tie, k_val = jax.random.split(key)
    bids = bids_of(p, actions)
    shift = shifts(p, state.t)
    values_g, bids_g = group(p, state.values, shift), group(p, bids, shift)
    out = auction.play(k_tie, values_g, bids_g, p.auction)
    utility = ungroup(p, out.utility, shift)
    if p.double:
        first_best = top = out.first_best
    else:
        top = jnp.max(values_g, axis=1)
        first_best = jnp.where(top >= p.auction.reserve, top, 0.0)
    beta = equilibrium(p, state.values)
    if beta is None:
        bne_sq = bne_count = jnp.zeros((), jnp.float32)
    else:
        mask = state.values >= p.v_min
        bne_sq = jnp.sum(jnp.where(mask, (bids - beta) ** 2, 0.0))
        bne_count = jnp.sum(mask).astype(jnp.float32)
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    metrics = AuctionMetrics(
        rounds=f(1.0), auctions=f(p.n_auctions), revenue=jnp.sum(out.revenue), revenue_sq=jnp.sum(out.revenue ** 2),
        welfare=jnp.sum(out.welfare), first_best=jnp.sum(first_best), top_value=jnp.sum(top),
        trades=jnp.sum(out.trade.astype(jnp.float32)), utility=jnp.sum(out.utility),
        utility_by_role=jnp.sum(out.utility, axis=0), bids=jnp.sum(bids), values=jnp.sum(state.values),
        bne_sq=bne_sq, bne_count=bne_count)
    new = MarketState(t=state.t + 1, values=auction.sample_values(k_val, p.auction, (p.n_agents,)),
                      utility=state.utility + utility)
    return new, Transition(reward=utility[None], done=jnp.ones((p.n_agents,), bool), metrics=metrics)


def seat_providers(p: MarketParams, state: MarketState) -> jax.Array:
    return jnp.asarray(p.role_provider, jnp.int32)[agent_roles(p)][None]


def seat_owners(p: MarketParams, state: MarketState) -> jax.Array:
    return jnp.arange(p.n_agents, dtype=jnp.int32)[None]


def truthful(key: jax.Array, p: MarketParams, state: MarketState) -> jax.Array:
    """Bid the value (the seller of the double auction asks its cost)."""
    return observe(p, state)[..., :1]


def equilibrium_policy(key: jax.Array, p: MarketParams, state: MarketState) -> jax.Array:
    """The analytic Bayes–Nash equilibrium bid (:func:`coasejax.eval.equilibrium.equilibrium_bid`; the double
    auction: the linear equilibrium of uniform values)."""
    beta = equilibrium(p, state.values)
    if beta is None:
        from coasejax.config import ConfigError

        raise ConfigError(f"advocates.strategy: no analytic equilibrium is known for the {p.auction.format} auction "
                          f"with value_dist power:{p.auction.power:g}")
    return jnp.where(_seller(p), 1.0 - beta, beta)[None, :, None]


def _bne_key(p: MarketParams) -> str:
    return "linear_bne_rmse" if p.double else "bne_rmse"


def summarise(cfg, p: MarketParams, per_round: dict, first, last) -> dict:
    """Per-auction and per-agent means over every environment and round (host side, plain numbers)."""
    tot = {k: np.sum(np.asarray(v, np.float64), axis=(0, 1)) for k, v in per_round.items()}
    e, t = np.asarray(per_round["rounds"]).shape[:2]
    auctions = float(tot["auctions"])
    agent_rounds = auctions * p.n_roles
    revenue = float(tot["revenue"]) / auctions
    var = max(float(tot["revenue_sq"]) / auctions - revenue ** 2, 0.0)
    ratio = lambda a, b: float(a) / float(b) if float(b) > 0 else 0.0  # noqa: E731
    out = {
        "scenario": "auction", "format": p.auction.format, "n_agents": int(p.n_agents), "n_bidders": int(p.n_roles),
        "auctions_per_round": int(p.n_auctions), "rounds": int(t), "envs": int(e),
        "revenue": revenue, "revenue_se": float(np.sqrt(var / auctions)),
        "welfare": float(tot["welfare"]) / auctions, "first_best": float(tot["first_best"]) / auctions,
        "efficiency": ratio(tot["welfare"], tot["first_best"]),
        "efficiency_unreserved": ratio(tot["welfare"], tot["top_value"]),
        "trade_rate": float(tot["trades"]) / auctions,
        "utility": float(tot["utility"]) / agent_rounds,
        "utility_by_role": [float(u) / auctions for u in np.atleast_1d(tot["utility_by_role"])],
        "bid": float(tot["bids"]) / agent_rounds, "value": float(tot["values"]) / agent_rounds,
    }
    if float(tot["bne_count"]) > 0:
        out[_bne_key(p)] = float(np.sqrt(float(tot["bne_sq"]) / float(tot["bne_count"])))
    return out


def metrics(p: MarketParams, totals: AuctionMetrics) -> dict:
    """The main numbers of :func:`summarise`, traceable (``totals``: the per-round metrics summed)."""
    safe = lambda a, b: a / jnp.maximum(b, 1e-12)  # noqa: E731
    out = {"revenue": safe(totals.revenue, totals.auctions), "efficiency": safe(totals.welfare, totals.first_best),
           "trade_rate": safe(totals.trades, totals.auctions),
           "utility": safe(totals.utility, totals.auctions * p.n_roles)}
    if has_equilibrium(p):
        out[_bne_key(p)] = jnp.sqrt(safe(totals.bne_sq, totals.bne_count))
    return out


SCENARIO = register(Scenario(
    name="auction", params=params, reset=reset, observe=observe, step=step, spec=spec,
    seat_providers=seat_providers, seat_owners=seat_owners,
    scripted={"truthful": truthful, "equilibrium": equilibrium_policy},
    summarise=summarise, metrics=metrics,
    description="a market of N bidders in N/n sealed-bid or double auctions per round (env.auction), fresh private "
                "values each round, partners rotated every round"))
