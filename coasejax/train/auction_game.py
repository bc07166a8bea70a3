"""Auctions as a trainable game: each provider's focal bidder against the current policies of the others.

Roles and providers: a sealed-bid auction has n bidder roles. With ``policy.shared`` (the default) all bidders are
served by one provider (symmetric self-play: the focal bidder, role 0, deviates while the other n − 1 bidders play
the current shared policy); otherwise bidder j has its own provider j. The double auction always has two providers,
the buyer's and the seller's. A bidder's policy sees its own value (``obs = [v]``, or ``[v, G(v)]`` with
``policy.win_prob``, ``G(v) = F(v)^(n−1)``) and bids ``v · s(obs) ≤ v``, starting from ``b = policy.init_scale · v``
(times ``v^policy.init_power`` with ``policy.output: log``; with ``policy.win_prob`` instead an uncapped bid-space
skip on the features of the format's equilibrium (:func:`skip_features`) from ``init_scale · v``, or
``init_scale · v G(v)`` in the all-pay auction;
:class:`coasejax.policies.Advocate`). The seller of the double auction sees the mirror image: its policy gets
``1 − c`` and its ask is ``1 − π(1 − c) ≥ c``, so asks start truthful and never go below cost.

Fitness of a candidate (ES): its ex-ante utility ``E_v[U(v, π(v))]`` over ``train.batch`` stratified values ``v``,
each against the empirical distribution of ``train.opponents`` opposing bids drawn once per iteration from the
current policies (:func:`coasejax.envs.auction.interim_utility`).

Objective of a provider (``train.algo: gradient``, :mod:`coasejax.train.gradient`): the same ex-ante utility
against the product of the opponents' bid CDFs, each from its bids at ``train.opponents`` stratified quantiles of F
(:func:`coasejax.envs.auction.stratified_utility`), differentiable in the provider's own parameters (the opponents'
bids are constants). Each value's utility is weighted by
``1/max(P(win), train.win_weight_floor)`` (a constant in the gradient, normalised to mean 1): a type that seldom wins
gets as much say as one that often does. The weights change how fast each type learns, not where it stops — a
policy at which every type's own utility is stationary is stationary for any positive weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from coasejax.envs import auction
from coasejax.eval.equilibrium import equilibrium_bid
from coasejax.eval.metrics import auction_metrics
from coasejax.policies import Advocate, make_advocate, skip_features, skip_start, take  # noqa: F401
from coasejax.train.game import Game

# the observation and the roles are the auction scenario's too (:mod:`coasejax.scenarios.auction`): one definition
roles, win_prob, win_exponent, observe = auction.roles, auction.win_prob, auction.win_exponent, auction.observe


def stratified_values(key: jax.Array, params: auction.AuctionParams, n: int) -> jax.Array:
    """``f32[n]`` values ``F⁻¹((i + U_i)/n)``: one draw in each of n equal-probability strata (lower variance)."""
    u = (jnp.arange(n, dtype=jnp.float32) + jax.random.uniform(key, (n,))) / n
    return u ** (1.0 / params.power)


def make_bidders(module: Advocate, params: auction.AuctionParams, role_provider: jax.Array):
    """``(bid_one, bid_all)``: ``bid_one(provider_params, v f32[G], role) -> f32[G]`` and
    ``bid_all(stack, values f32[M, R]) -> f32[M, R]`` (role j played by provider ``role_provider[j]``)."""

    def bid_one(p, v, role):
        mirrored = auction.mirrored(params, role)
        act = module.apply(p, observe(jnp.where(mirrored, 1.0 - v, v), params, module.win_prob))
        return jnp.where(mirrored, 1.0 - act, act)

    def bid_all(stack, values):
        roles_ = jnp.arange(values.shape[1])
        return jax.vmap(bid_one, in_axes=(0, 1, 0), out_axes=1)(take(stack, role_provider), values, roles_)

    return bid_one, bid_all


def auction_game(cfg) -> Game:
    params = auction.AuctionParams.from_config(cfg.env)
    role_provider, focal_role = roles(params, cfg.policy.shared)
    module = make_advocate(cfg, params)
    batch, n_opp = cfg.train.batch, cfg.train.opponents
    bid_one, bid_all = make_bidders(module, params, role_provider)

    def opposing(key, stack, role):
        values = auction.sample_values(key, params, (n_opp, params.n_roles))
        return auction.opponents(auction.opposing_bid(bid_all(stack, values), role, params))

    def fitness(key, stack, p, candidates):
        k_opp, k_val = jax.random.split(key)
        role = focal_role[p]
        opp = opposing(k_opp, stack, role)
        v = stratified_values(k_val, params, batch)
        bids = jax.vmap(lambda c: bid_one(c, v, role))(candidates)  # f32[pop, B]
        return jnp.mean(auction.interim_utility(role, v[None, :], bids, opp, params), axis=1)

    floor, n_r = cfg.train.win_weight_floor, params.n_roles
    one_cdf = cfg.policy.shared and params.format != "double"  # every opponent plays the one shared policy

    def objective(key, stack, p, theta, bandwidth):
        k_opp, k_val = jax.random.split(key)
        role = focal_role[p]
        shift = jax.random.uniform(k_opp, ())
        types = ((jnp.arange(n_opp, dtype=jnp.float32) + shift) / n_opp) ** (1.0 / params.power)  # F⁻¹, stratified
        if one_cdf:
            opp_bids = bid_one(take(stack, role_provider[0]), types, jnp.int32(0))[None, :]
            power = jnp.array([n_r - 1], jnp.float32)
        else:
            opp_bids = jax.vmap(lambda j: bid_one(take(stack, role_provider[j]), types, j))(jnp.arange(n_r))
            power = (jnp.arange(n_r) != role).astype(jnp.float32)
        cdf = auction.bid_cdf(jax.lax.stop_gradient(opp_bids), shift)
        v = stratified_values(k_val, params, batch)
        u, win = auction.stratified_utility(role, v, bid_one(theta, v, role), cdf, power, params, bandwidth)
        if floor > 0:
            w = jax.lax.stop_gradient(1.0 / jnp.maximum(win, floor))
            return jnp.mean(u * w) / jnp.mean(w), jnp.mean(u)
        return jnp.mean(u), jnp.mean(u)

    def metrics(key, stack):
        return auction_metrics(key, stack, bid_one, bid_all, params, role_provider, focal_role, cfg.train)

    def strategy(seed_stacks):
        return strategy_panels(seed_stacks, bid_one, params, role_provider, focal_role)

    return Game(name=f"auction/{params.format}", n_providers=int(focal_role.shape[0]),
                obs_dim=2 if cfg.policy.win_prob else 1, module=module,
                fitness=fitness, metrics=metrics, objective=objective,
                agents_per_iteration=cfg.train.population * batch + n_opp * params.n_roles,
                opponent_draws=n_opp * (1 if one_cdf else n_r), strategy=strategy)


STRATEGY_GRID = 101  # values at which the report draws the learned bid functions


def strategy_panels(seed_stacks, bid_one, params: auction.AuctionParams, role_provider, focal_role) -> list[dict]:
    """The report's panels (:mod:`coasejax.eval.report`): per provider's focal role, the learned bid (ask) against
    the value (cost) on a grid, one curve per seed, beside the analytic equilibrium where one is known (the linear
    one for the double auction, one of many)."""
    import numpy as np

    v = jnp.linspace(0.0, 1.0, STRATEGY_GRID, dtype=jnp.float32)
    n_seeds = int(jax.tree.leaves(seed_stacks)[0].shape[0])
    names = ("buyer", "seller") if params.format == "double" else None
    panels = []
    for p, role in enumerate(np.asarray(focal_role).tolist()):
        name = names[role] if names else ("every bidder (shared policy)" if len(focal_role) == 1 else f"bidder {p}")
        series = []
        for s in range(n_seeds):
            stack = jax.tree.map(lambda x: x[s], seed_stacks)
            bids = bid_one(take(stack, role_provider[role]), v, jnp.int32(role))
            series.append({"label": f"learned, seed {s}", "x": v.tolist(), "y": np.asarray(bids).tolist(),
                           "kind": "learned", "seed": s})
        beta = equilibrium_bid(params, v, jnp.int32(role))
        if beta is not None:
            label = "linear equilibrium" if params.format == "double" else "Bayes–Nash equilibrium"
            series.append({"label": label, "x": v.tolist(), "y": np.asarray(beta).tolist(), "kind": "theory",
                           "seed": None})
        ask = names and role == 1
        panels.append({"title": f"{params.format}: {name}", "xlabel": "cost c" if ask else "value v",
                       "ylabel": "ask" if ask else "bid", "series": series, "yscale": "linear"})
    return panels
