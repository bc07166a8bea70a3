"""Metrics of learned auction play on fresh draws (Bichler et al. 2021, "Learning equilibria in symmetric auction
games using artificial neural networks", Nature Machine Intelligence, for ``bne_rmse`` and ``utility_loss_rel``).

For each provider's focal role, with ``G = train.eval_values`` fresh values and opponents drawn from the learned
policies:

* ``bne_rmse`` — ``sqrt(mean_v (π(v) − β(v))²)`` between learned bids π and the analytic equilibrium β
  (:mod:`coasejax.eval.equilibrium`), over values ``v ≥ max(v*, train.bne_min_value)`` with v* the lowest type that bids; the worst provider.
  Reported only where an equilibrium is known and unique among symmetric ones: not for the double auction, which has
  many; there ``linear_bne_rmse`` gives the distance to the linear equilibrium for information.
* ``utility_loss_rel`` — ``(Ū_br − Ū)/Ū_br``: the share of its ex-ante utility a bidder gives away by playing π rather
  than a numerical best response to the learned opponents (grid search over ``train.eval_grid`` bids in [0, 1],
  chosen on one sample of ``train.eval_opponents`` opponent draws and scored on another, see
  :func:`coasejax.eval.equilibrium.best_response`); ``Ū`` averages over the fresh values. The worst provider.
  Defined for every format; 0 exactly at an equilibrium (up to the grid and sampling noise). Guard: the
  denominator is ``max(Ū_br, UTILITY_FLOOR)`` (10⁻³, in value units), so where the best response itself earns
  almost nothing (e.g. a policy stuck at overbidding in an all-pay auction, ``Ū_br ≈ 0``) the metric is the absolute
  loss in thousandths of the value scale instead of exploding.
* ``utility`` — mean ex-ante utility of the focal roles; ``revenue``, ``efficiency`` (realised gains over the largest
  possible gains) and ``trade_rate`` from :func:`coasejax.envs.auction.play` on ``train.eval_opponents`` whole auctions;
  for the double auction with uniform values also ``linear_efficiency``, that of the linear equilibrium on the same
  draws (Chatterjee & Samuelson: 0.844 at k = ½), to set the learned play's efficiency beside.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from coasejax.envs import auction
from coasejax.eval.equilibrium import best_response, equilibrium_bid, participation_threshold
from coasejax.policies import take

UTILITY_FLOOR = 1e-3  # utility_loss_rel divides by max(Ū_br, UTILITY_FLOOR): values lie in [0, 1]


def auction_metrics(key: jax.Array, stack, bid_one, bid_all, params: auction.AuctionParams, role_provider: jax.Array,
                    focal_role: jax.Array, train_cfg) -> dict:
    """Scalar metrics (``f32[]`` each) of the parameter stack ``stack`` (leading provider axis); ``bid_one`` and
    ``bid_all`` turn parameters and values into bids (:func:`coasejax.train.auction_game.make_bidders`)."""
    g, m, k_grid = train_cfg.eval_values, train_cfg.eval_opponents, train_cfg.eval_grid
    k_val, k_sel, k_score, k_play, k_tie = jax.random.split(key, 5)
    grid = jnp.linspace(0.0, 1.0, k_grid, dtype=jnp.float32)
    threshold = participation_threshold(params.format, params.n_roles, float(params.power), float(params.reserve))
    v_min = max(threshold, train_cfg.bne_min_value)

    def draw_opponents(k, role):
        values = auction.sample_values(k, params, (m, params.n_roles))
        return auction.opponents(auction.opposing_bid(bid_all(stack, values), role, params))

    def per_provider(p):
        role = focal_role[p]
        v = auction.sample_values(jax.random.fold_in(k_val, p), params, (g,))
        bids = bid_one(take(stack, role_provider[role]), v, role)
        select = draw_opponents(jax.random.fold_in(k_sel, p), role)
        score = draw_opponents(jax.random.fold_in(k_score, p), role)
        u, u_br = best_response(role, v, bids, select, score, params, grid)
        out = {"utility": jnp.mean(u), "utility_br": jnp.mean(u_br)}
        beta = equilibrium_bid(params, v, role)
        if beta is not None:
            mask = v >= v_min
            out["bne_sq"] = jnp.sum(jnp.where(mask, (bids - beta) ** 2, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
        return out

    per = jax.vmap(per_provider)(jnp.arange(focal_role.shape[0]))
    loss = (per["utility_br"] - per["utility"]) / jnp.maximum(per["utility_br"], UTILITY_FLOOR)
    result = {"utility_loss_rel": jnp.max(loss), "utility": jnp.mean(per["utility"])}
    if "bne_sq" in per:
        key_name = "linear_bne_rmse" if params.format == "double" else "bne_rmse"
        result[key_name] = jnp.sqrt(jnp.max(per["bne_sq"]))

    values = auction.sample_values(k_play, params, (m, params.n_roles))
    outcome = auction.play(k_tie, values, bid_all(stack, values), params)
    result["revenue"] = jnp.mean(outcome.revenue)
    result["efficiency"] = jnp.sum(outcome.welfare) / jnp.sum(outcome.first_best)
    result["trade_rate"] = jnp.mean(outcome.trade.astype(jnp.float32))
    if params.format == "double" and float(params.power) == 1.0:  # the linear equilibrium's, on the same draws
        linear = equilibrium_bid(params, values, jnp.arange(2)[None, :])
        result["linear_efficiency"] = jnp.sum(auction.play(k_tie, values, linear, params).welfare) / jnp.sum(
            outcome.first_best)
    return result
