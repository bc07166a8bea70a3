"""Analytic Bayes–Nash equilibrium bids of the auctions in :mod:`coasejax.envs.auction`, and a numerical best response.

Values are i.i.d. with ``F(v) = v^a`` on [0, 1]; with n bidders the highest of the n − 1 other values has the
distribution ``G(v) = F(v)^(n−1) = v^m`` with ``m = a(n − 1)``. Bidders with values below the reserve r do not bid
(any bid below r is equivalent); the functions below return 0 there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from coasejax.envs.auction import AuctionParams, Opponents, interim_utility


def first_price_bid(v: jax.Array, n: int, a: float = 1.0, r: float = 0.0) -> jax.Array:
    """``b(v) = v − ∫_r^v G(s) ds / G(v) = m v/(m + 1) + r^(m+1)/((m + 1) v^m)`` for ``v ≥ r``, ``m = a(n − 1)``.

    Uniform without reserve: ``(n − 1) v / n``. Sources: Krishna (2010), *Auction Theory*, Prop. 2.2 and §2.5
    (reserve prices); Riley & Samuelson (1981), "Optimal auctions", AER 71(3).
    """
    m = a * (n - 1)
    b = m * v / (m + 1)
    if r > 0:  # r (r/v)^m, not r^(m+1)/v^m: both powers underflow in float32 for large m (0/0 below v ≈ 0.09, m = 36)
        b = b + r * (r / jnp.maximum(v, r)) ** m / (m + 1)
    return jnp.where(v >= r, b, 0.0)


def second_price_bid(v: jax.Array, n: int, a: float = 1.0, r: float = 0.0) -> jax.Array:
    """``b(v) = v`` for ``v ≥ r``: truthful bidding is weakly dominant for any F and any reserve (Vickrey 1961;
    Krishna 2010, Prop. 2.1)."""
    return jnp.where(v >= r, v, 0.0)


def all_pay_bid(v: jax.Array, n: int, a: float = 1.0, r: float = 0.0) -> jax.Array:
    """``b(v) = r + m (v^(m+1) − r)/(m + 1)`` for ``v ≥ v* = r^(1/(m+1))``, ``m = a(n − 1)``; no bid below v*.

    The reserve is a minimum bid: the marginal type v* is indifferent between paying r and staying out,
    ``v* G(v*) = r``, and above it ``b(v) = r + ∫_{v*}^v s dG(s)``. Uniform without reserve: ``(n − 1) vⁿ / n``.
    Sources: Krishna (2010), *Auction Theory*, §2.5 and §3.2.2 (all-pay); Riley & Samuelson (1981), "Optimal
    auctions", AER 71(3) (reserve prices in all-pay auctions).
    """
    m = a * (n - 1)
    b = r + m * (v ** (m + 1) - r) / (m + 1)
    return jnp.where(v >= participation_threshold("all_pay", n, a, r), b, 0.0)


def participation_threshold(fmt: str, n: int, a: float = 1.0, r: float = 0.0) -> float:
    """The lowest type that bids in equilibrium: r in first- and second-price auctions, ``r^(1/(m+1))`` in the
    all-pay auction (whose bid is sunk), 0 in the double auction."""
    if fmt == "all_pay":
        return r ** (1.0 / (a * (n - 1) + 1)) if r > 0 else 0.0
    return r if fmt in ("first_price", "second_price") else 0.0


def double_linear_bid(v: jax.Array, role: jax.Array, k: float) -> jax.Array:
    """The linear equilibrium of the k-double auction with uniform values and costs (Chatterjee & Samuelson 1983):
    buyer (role 0) ``b(v) = v/(1 + k) + k(1 − k)/(2(1 + k))``, seller (role 1) ``s(c) = c/(2 − k) + (1 − k)/2``.
    For ``k = ½``: ``b = 2v/3 + 1/12``, ``s = 2c/3 + 1/4``. One of many equilibria (Leininger, Linhart & Radner
    1989)."""
    buyer = v / (1 + k) + k * (1 - k) / (2 * (1 + k))
    seller = v / (2 - k) + (1 - k) / 2
    return jnp.where(role == 0, buyer, seller)


def equilibrium_bid(params: AuctionParams, v: jax.Array, role: jax.Array = 0) -> jax.Array | None:
    """The analytic equilibrium bid at values ``v`` for the format of ``params``, or None where none is known
    (the double auction with non-uniform values; for uniform ones the linear equilibrium, one of many)."""
    n, a, r = params.n_roles, float(params.power), float(params.reserve)
    if params.format == "first_price":
        return first_price_bid(v, n, a, r)
    if params.format == "second_price":
        return second_price_bid(v, n, a, r)
    if params.format == "all_pay":
        return all_pay_bid(v, n, a, r)
    if params.format == "double" and a == 1.0:
        return double_linear_bid(v, role, float(params.k))
    return None


def best_bid(role: jax.Array, values: jax.Array, bids: jax.Array, select: Opponents, params: AuctionParams,
             grid: jax.Array) -> jax.Array:
    """``f32[G]``: for each value, the bid among ``grid ∪ {bids}`` with the highest utility against ``select``."""
    cand = jnp.concatenate([jnp.broadcast_to(grid[:, None], (grid.shape[0], values.shape[0])), bids[None, :]])
    u_sel = jax.lax.map(lambda b: interim_utility(role, values, b, select, params), cand)  # f32[K + 1, G]
    return jnp.take_along_axis(cand, jnp.argmax(u_sel, axis=0)[None, :], axis=0)[0]


def best_response(role: jax.Array, values: jax.Array, bids: jax.Array, select: Opponents, score: Opponents,
                  params: AuctionParams, grid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(u_learned f32[G], u_best f32[G])``: utility of ``bids`` at ``values`` and of a numerical best response.

    For each value the best bid among ``grid ∪ {the learned bid}`` is chosen against the opponent sample ``select``
    (:func:`best_bid`) and both bids are scored against an independent sample ``score``, so the search's own noise
    cannot inflate the best response's utility (choosing and scoring on one sample would).
    """
    best = best_bid(role, values, bids, select, params, grid)
    return interim_utility(role, values, bids, score, params), interim_utility(role, values, best, score, params)
