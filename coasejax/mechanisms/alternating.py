"""Alternating offers (Rubinstein 1982; Ståhl 1972) between an emitter and its victims' coalition.

The two sides alternate proposals for splitting the surplus net of first-round transaction costs,
``S = Ŝ − TC``; each rejection costs the responder one more round (discount factor δ and a per-round cost κ per
party: ``κ_e = per_round`` for the emitter, ``κ_v = k · per_round`` for the victims). In the last of ``horizon``
offers the proposer takes everything. By backward induction the responder at offer h accepts exactly its
continuation value ``max(0, δ_r P_{h+1} − κ_r)``, so the proposer keeps ``P_h = S − max(0, δ_r P_{h+1} − κ_r)``,
and agreement is immediate. Transfers then follow :func:`coasejax.mechanisms.base.split_surplus`.

Closed forms (no costs): infinite horizon, the first proposer's share is ``(1 − δ₂)/(1 − δ₁δ₂)``; a horizon of T
offers with a common δ gives ``(1 − (−δ)^T)/(1 + δ)`` (Osborne & Rubinstein 1990, ch. 3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from coasejax.mechanisms.base import Bargain, Outcome, Terms, efficient_activity, reported_surplus, split_surplus


def rubinstein_share(delta_first: float, delta_second: float) -> float:
    """First proposer's equilibrium share of a unit surplus with an infinite horizon."""
    return (1 - delta_second) / (1 - delta_first * delta_second)


def finite_horizon_share(delta: float, horizon: int) -> float:
    """First proposer's equilibrium share with ``horizon`` offers and a common discount factor."""
    return (1 - (-delta) ** horizon) / (1 + delta)


def proposer_value(surplus: jax.Array, terms: Terms, k: int) -> jax.Array:
    """``f32[N]``: the first proposer's subgame-perfect payoff ``P_1`` by backward induction over the horizon."""
    first_is_emitter = terms.emitter_first
    d_e, d_v = terms.discount_emitter, terms.discount_victims
    c_e, c_v = terms.per_round, k * terms.per_round

    def body(i, p_next):
        h = terms.horizon - 1 - i  # offer index, 0-based; the responder at offer h proposes at offer h + 1
        responder_is_emitter = (h % 2 == 0) != first_is_emitter
        delta = jnp.where(responder_is_emitter, d_e, d_v)
        cost = jnp.where(responder_is_emitter, c_e, c_v)
        return surplus - jnp.maximum(0.0, delta * p_next - cost)

    # the proposer of the last offer takes everything
    return jax.lax.fori_loop(1, terms.horizon, body, surplus)


def alternating(bargain: Bargain, terms: Terms, key: jax.Array | None = None) -> Outcome:
    x = efficient_activity(bargain, terms)
    net = jnp.maximum(reported_surplus(bargain, terms, x) - terms.tc_total, 0.0)
    p1 = proposer_value(net, terms, bargain.c_hat.shape[0])
    emitter_gain = p1 if terms.emitter_first else net - p1
    return split_surplus(bargain, terms, x, emitter_gain)
