"""One-shot auctions with independent private values (Krishna, *Auction Theory*, 2nd ed., 2010, ch. 2–4).

Sealed-bid auctions of one good among n risk-neutral bidders with values drawn i.i.d. from ``F(v) = v^a`` on [0, 1]
(``a = 1`` is uniform); bids below the reserve price r are not admitted:

* ``first_price``  — the highest admitted bid wins and pays its bid;
* ``second_price`` — the highest admitted bid wins and pays ``max(r, second-highest bid)`` (Vickrey 1961);
* ``all_pay``      — the highest admitted bid wins; every admitted bidder pays its bid;
* ``double``       — the bilateral k-double auction (Chatterjee & Samuelson 1983): a buyer with value v bids b, a
  seller with cost c (same F) asks s; they trade iff ``b ≥ s`` at the price ``k·b + (1 − k)·s``.

Roles: sealed-bid auctions have n symmetric bidder roles; the double auction has role 0 (buyer) and role 1 (seller).

Two ways to evaluate play, which agree in expectation (tested):

* :func:`play` runs whole auctions (``f32[B, R]`` values and bids → utilities, revenue, welfare), ties broken at random;
* :func:`interim_utility` is the expected utility of one bidder with value v bidding b against an empirical sample of
  its opponents' bids (:func:`opponents`), exactly, by binary search in the sorted sample — every focal value is
  played against all M opponent draws at ``O(log M)`` cost. ES training and the best-response search use it.

Gradient training (:mod:`coasejax.train.gradient`) needs a utility that is differentiable in the bid:
:func:`stratified_utility` plays against :func:`opposing_cdf`, the product of the opponents' bid CDFs (their values
are independent), each one's CDF interpolated between its bids at M stratified quantiles of F (:func:`bid_cdf`), so
that even a chance of winning of 10⁻³⁰ (a low value among ten bidders) is resolved, with admission at the reserve
smoothed by a logistic of bandwidth h.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

FORMATS = ("first_price", "second_price", "all_pay", "double")


@struct.dataclass
class AuctionParams:
    """Traced parameters (a ``vmap`` over them is a sweep) and the static format and number of roles."""

    reserve: jax.Array  # f32[] reserve price r (sealed-bid formats)
    k: jax.Array  # f32[] double auction price weight on the buyer's bid
    power: jax.Array  # f32[] a in F(v) = v^a
    format: str = struct.field(pytree_node=False, default="first_price")
    n_roles: int = struct.field(pytree_node=False, default=2)

    @classmethod
    def from_config(cls, env) -> "AuctionParams":
        """From an :class:`coasejax.train.schema.EnvConfig` with ``kind: auction``."""
        f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
        n_roles = 2 if env.auction == "double" else env.n_bidders
        return cls(reserve=f(env.reserve_price), k=f(env.k), power=f(env.power), format=env.auction, n_roles=n_roles)


def sample_values(key: jax.Array, params: AuctionParams, shape: tuple[int, ...]) -> jax.Array:
    """``f32[shape]`` values from ``F(v) = v^a`` by inversion: ``v = U^(1/a)``."""
    u = jax.random.uniform(key, shape, jnp.float32)
    return u ** (1.0 / params.power)


class Play(NamedTuple):
    utility: jax.Array  # f32[B, R] each role's realised utility
    revenue: jax.Array  # f32[B]    payments received by the seller (0 in the double auction: it is budget balanced)
    welfare: jax.Array  # f32[B]    realised gains from trade (value of the good to whoever ends up with it)
    first_best: jax.Array  # f32[B] the largest possible gains: highest value (sealed bid), max(v − c, 0) (double)
    trade: jax.Array  # bool[B]   whether the good changed hands


def play(key: jax.Array, values: jax.Array, bids: jax.Array, params: AuctionParams) -> Play:
    """Run B independent auctions: ``values`` and ``bids`` are ``f32[B, R]``; ties are broken uniformly at random."""
    if params.format == "double":
        v, c = values[:, 0], values[:, 1]
        b, s = bids[:, 0], bids[:, 1]
        trade = b >= s
        price = params.k * b + (1.0 - params.k) * s
        utility = jnp.where(trade[:, None], jnp.stack([v - price, price - c], axis=1), 0.0)
        return Play(utility, jnp.zeros_like(v), jnp.where(trade, v - c, 0.0), jnp.maximum(v - c, 0.0), trade)
    n = values.shape[1]
    admitted = bids >= params.reserve
    eff_bids = jnp.where(admitted, bids, -1.0)
    top = jnp.max(eff_bids, axis=1, keepdims=True)
    tie_break = jax.random.uniform(key, bids.shape)
    winner = jnp.argmax(jnp.where(eff_bids == top, tie_break, -1.0), axis=1)
    trade = top[:, 0] >= params.reserve
    wins = (jnp.arange(n)[None, :] == winner[:, None]) & trade[:, None]
    if params.format == "first_price":
        pay = jnp.where(wins, bids, 0.0)
    elif params.format == "second_price":
        others = jnp.where(wins, -1.0, eff_bids)
        price = jnp.maximum(params.reserve, jnp.max(others, axis=1, keepdims=True))
        pay = jnp.where(wins, price, 0.0)
    elif params.format == "all_pay":
        pay = jnp.where(admitted, bids, 0.0)
    else:
        raise ValueError(f"unknown auction format {params.format!r}")
    utility = jnp.where(wins, values, 0.0) - pay
    welfare = jnp.sum(jnp.where(wins, values, 0.0), axis=1)
    return Play(utility, jnp.sum(pay, axis=1), welfare, jnp.max(values, axis=1), trade)


class Opponents(NamedTuple):
    """An empirical sample of the bid a focal bidder must beat, sorted, with prefix sums for expected prices."""

    sorted: jax.Array  # f32[M]
    prefix: jax.Array  # f32[M + 1], prefix[j] = sum of the j smallest


def opponents(bids: jax.Array) -> Opponents:
    """From ``f32[M]`` draws of the relevant opposing bid: the highest bid of the other bidders (sealed bid), the
    seller's ask (for the buyer) or the buyer's bid (for the seller)."""
    s = jnp.sort(bids)
    return Opponents(s, jnp.concatenate([jnp.zeros((1,), s.dtype), jnp.cumsum(s)]))


def opposing_bid(bids: jax.Array, role: jax.Array, params: AuctionParams) -> jax.Array:
    """``f32[M]``: the bid that role ``role`` (may be traced) faces in each of M auctions with bids ``f32[M, R]``."""
    if params.format == "double":
        return jnp.where(role == 0, bids[:, 1], bids[:, 0])
    others = jnp.where(jnp.arange(bids.shape[1])[None, :] == role, -jnp.inf, bids)
    return jnp.max(others, axis=1)


def interim_utility(role: jax.Array, value: jax.Array, bid: jax.Array, opp: Opponents,
                    params: AuctionParams) -> jax.Array:
    """Expected utility of role ``role`` with ``value`` bidding ``bid`` (same shape) against the empirical ``opp``.

    With ``M`` opposing bids ``B_j``, ``lo = #{B_j < b}``, ``hi = #{B_j ≤ b}``, a tie counting as half a win
    (exact for two bidders, an approximation for ties among more, which have probability zero with continuous bids):

    * first price   ``1{b ≥ r} (v − b) P(win)``
    * second price  ``1{b ≥ r} [v P(win) − E(max(r, B); B < b) − ½ b P(B = b)]``
    * all pay       ``1{b ≥ r} (v P(win) − b)``
    * double, buyer ``P(S ≤ b)(v − k b) − (1 − k) E(S; S ≤ b)``; seller ``k E(B; B ≥ s) + P(B ≥ s)((1 − k) s − c)``.
    """
    m = opp.sorted.shape[0]
    lo = jnp.searchsorted(opp.sorted, bid, side="left", method="scan")
    hi = jnp.searchsorted(opp.sorted, bid, side="right", method="scan")
    if params.format == "double":
        k = params.k
        buyer = (hi * (value - k * bid) - (1.0 - k) * opp.prefix[hi]) / m
        seller = (k * (opp.prefix[m] - opp.prefix[lo]) + (m - lo) * ((1.0 - k) * bid - value)) / m
        return jnp.where(role == 0, buyer, seller)
    r = params.reserve
    admitted = bid >= r
    p_win = (lo + 0.5 * (hi - lo)) / m
    if params.format == "first_price":
        u = (value - bid) * p_win
    elif params.format == "second_price":
        below_r = jnp.minimum(jnp.searchsorted(opp.sorted, r, side="left", method="scan"), lo)
        paid = r * below_r + (opp.prefix[lo] - opp.prefix[below_r]) + 0.5 * (hi - lo) * bid
        u = value * p_win - paid / m
    elif params.format == "all_pay":
        u = value * p_win - bid
    else:
        raise ValueError(f"unknown auction format {params.format!r}")
    return jnp.where(admitted, u, 0.0)


def roles(params: AuctionParams, shared: bool) -> tuple[jax.Array, jax.Array]:
    """``(role_provider i32[R], focal_role i32[P])``: who serves each role, and each provider's deviating role.

    With ``policy.shared`` (sealed-bid formats) one provider serves every bidder; otherwise role j has provider j.
    The double auction always has two providers, the buyer's (0) and the seller's (1)."""
    r = params.n_roles
    if shared and params.format != "double":
        return jnp.zeros((r,), jnp.int32), jnp.zeros((1,), jnp.int32)
    return jnp.arange(r, dtype=jnp.int32), jnp.arange(r, dtype=jnp.int32)


def win_exponent(params: AuctionParams) -> float:
    """``m = a(n − 1)``: ``G(v) = v^m`` (a static number: the game's parameters are fixed per config)."""
    return float(params.power) * (params.n_roles - 1)


def win_prob(v: jax.Array, params: AuctionParams) -> jax.Array:
    """``G(v) = F(v)^(n−1) = v^(a(n−1))``: the chance that value v is the highest of the n (the distribution of the
    highest opposing value). A feature computed from the game's public parameters (``policy.win_prob``)."""
    return v ** win_exponent(params)


def mirrored(params: AuctionParams, role: jax.Array) -> jax.Array:
    """``bool``: whether role ``role`` acts in mirrored units, the seller of the double auction: its policy sees
    ``1 − c`` for cost c and its action ``a`` is the ask ``1 − a`` (so a truthful policy, ``a = 1 − c``, asks c)."""
    return (params.format == "double") & (role == 1)


def observe(v: jax.Array, params: AuctionParams, with_win_prob: bool) -> jax.Array:
    """``f32[..., d]``: a bidder's observation of its own value, ``[v]``, or ``[v, G(v)]`` with ``policy.win_prob``
    (the seller of the double auction is given ``v = 1 − c``: :func:`mirrored`)."""
    return jnp.stack([v, win_prob(v, params)], axis=-1) if with_win_prob else v[..., None]


def bid_range(params: AuctionParams) -> tuple[float, float]:
    """Bids a policy may make, ``[0, 1]`` (values lie in [0, 1]; higher bids are dominated)."""
    return 0.0, 1.0


class BidCDF(NamedTuple):
    """Each opponent's bid CDF, from its bids at M stratified types: knots ``x f32[O, M+1]`` (0, then the sorted
    bids) and levels ``level f32[O, M+1]`` (0, then ``(j + shift)/M``), interpolated linearly between them."""

    x: jax.Array
    level: jax.Array


def bid_cdf(bids: jax.Array, shift: jax.Array) -> BidCDF:
    """:class:`BidCDF` of ``f32[O, M]`` bids made at the types of quantiles ``(j + shift)/M``, j = 0 … M − 1."""
    o, m = bids.shape
    s = jnp.sort(bids, axis=-1)
    lv = (jnp.arange(m, dtype=jnp.float32) + shift) / m
    x = jnp.concatenate([jnp.zeros((o, 1), s.dtype), s], axis=-1)
    level = jnp.concatenate([jnp.zeros((o, 1), s.dtype), jnp.broadcast_to(lv, (o, m))], axis=-1)
    return BidCDF(x, level)


def _lin(b: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Piecewise-linear ``y`` at ``b`` between the knots ``x`` (``y[-1]`` above the last)."""
    i = jnp.clip(jnp.searchsorted(x, b, side="right", method="scan"), 1, x.shape[0] - 1)
    t = jnp.clip((b - x[i - 1]) / jnp.maximum(x[i] - x[i - 1], 1e-12), 0.0, 1.0)
    return jnp.where(b >= x[-1], y[-1], y[i - 1] + t * (y[i] - y[i - 1]))


def opposing_cdf(b: jax.Array, cdf: BidCDF, power: jax.Array) -> jax.Array:
    """``P(every opponent bids below b)``: the product of the opponents' CDFs at ``b``, opponent o's raised to
    ``power[o]`` (``n − 1`` for one shared CDF; 0 for the focal role itself)."""
    h = jax.vmap(lambda x, y: _lin(b, x, y))(cdf.x, cdf.level)
    pw = jnp.reshape(power, (-1,) + (1,) * b.ndim)
    return jnp.prod(jnp.where(pw == 0, 1.0, h) ** pw, axis=0)


#: nodes and weights as Python floats (weakly typed: float32 in the traced sums), so importing starts no JAX backend
_GL_T, _GL_W = (tuple(float(x) for x in a) for a in np.polynomial.legendre.leggauss(8))


def _integral(lo, hi, f):
    """``∫_lo^hi f`` by 8-point Gauss–Legendre quadrature (the utility's value; its gradient never needs it)."""
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    return half * sum(w * f(mid + half * t) for t, w in zip(_GL_T, _GL_W))


def stratified_utility(role: jax.Array, value: jax.Array, bid: jax.Array, cdf: BidCDF, power: jax.Array,
                       params: AuctionParams, bandwidth: float | jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(utility, P(win))`` of ``bid`` at ``value`` against :func:`opposing_cdf` ``G``, differentiable in ``bid``.

    The gradient is exact for the interpolated CDFs without integrating them: first price ``(v − b) G(b)``, all pay
    ``v G(b) − b``, second price ``(v − max(b̄, r)) G(b)`` (``b̄`` the bid held constant: its derivative is
    ``(v − b) g(b)``), plus the expected price's integral part ``∫ G`` as a constant; the double auction likewise.
    Admission at the reserve r is ``sigmoid((b − r)/bandwidth)`` (a bidder below r still feels whether taking part
    would pay), exact as ``bandwidth → 0``."""
    sg = jax.lax.stop_gradient
    G = lambda x: opposing_cdf(x, cdf, power)  # noqa: E731
    r = params.reserve
    if params.format == "double":
        k = params.k
        hb = G(bid)
        buyer_sur = (value - k * bid - (1.0 - k) * sg(bid)) * hb
        buyer = buyer_sur + sg((1.0 - k) * _integral(0.0, bid, G))
        seller_sur = (1.0 - hb) * ((1.0 - k) * bid - value + k * sg(bid))
        seller = seller_sur + sg(k * (_integral(bid, 1.0, lambda x: 1.0 - G(x))))
        return jnp.where(role == 0, buyer, seller), jnp.where(role == 0, hb, 1.0 - hb)
    g = G(bid)
    if params.format == "first_price":
        u = (value - bid) * g
    elif params.format == "second_price":
        pay_at = jnp.maximum(sg(bid), r)
        u = (value - pay_at) * g + sg(_integral(jnp.minimum(bid, r), bid, G))
    elif params.format == "all_pay":
        u = value * g - bid
    else:
        raise ValueError(f"unknown auction format {params.format!r}")
    return jnp.where(r > 0, u * jax.nn.sigmoid((bid - r) / bandwidth), u), g
