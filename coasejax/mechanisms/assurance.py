"""Assurance contracts among an emitter's victims (Bagnoli & Lipman 1989; Tabarrok 1998 for the dominant version).

Under the emitter's right the victims of emitter i face a public-goods problem: abatement from ``x_sq`` to the
reported first best ``x̂ = clip(â − Ĉ, 0, upper)`` costs the emitter ``L̂ = B̂(x_sq) − B̂(x̂)`` and benefits every victim.
The assurance contract asks each of the k victims to pledge its price ``p_s = L̂ (ĉ_s / Σ ĉ) (k / m)``: its harm
share of the cost, scaled so that any m victims of average harm cover it, where ``m = ⌈θ k⌉`` is the pledges needed
(``mechanism.threshold`` θ, 1.0 = all of them; with identical victims ``p = L̂ / m``). If at least m victims pledge the emitter abates to x̂
and every pledger pays p (the emitter keeps what exceeds its loss); otherwise pledges are refunded, plus a bonus
``f = mechanism.refund_bonus · p`` to each pledger, paid by the emitter. Victims who do not pledge and still see the
abatement are free riders.

Closed forms for k identical victims of value v each (THEORY.md, "Public goods"):

* **Dominant assurance contract** (f > 0, m = k): a pledge earns ``v − p`` if the others all pledge and f otherwise,
  against 0 for not pledging, so pledging is strictly dominant whenever ``p < v``: everybody pledges and the
  abatement is provided (:func:`best_response`).
* **Threshold below the group** (m < k): a victim's pledge matters only when exactly m − 1 others pledge. With the
  others pledging independently with probability q (``X ~ Binomial(k − 1, q)``) the symmetric mixed equilibrium solves
  ``(v − p) P(X ≥ m − 1) + f P(X ≤ m − 2) = v P(X ≥ m)`` (:func:`mixed_pledge_probability`, the largest root, which
  best-response dynamics from "everybody pledges" reach), and the contract succeeds with probability
  ``P(Binomial(k, q) ≥ m)`` (:func:`success_probability`).

Under the victim's right (status quo 0) there is no public good among the victims; the contract is the emitter's
offer to buy permission for x̂. Each victim is offered its reported harm ``w ĉ_s x̂`` plus its harm share of half the
reported surplus, and the offer binds (every victim is paid, and the emitter may emit x̂) iff at least m victims
consent. The price is posted, not asked, so there is no hold-out: consenting weakly dominates whenever the offer
covers the harm (if the others carry the contract, a victim is paid either way; if it is pivotal, consenting pays),
and with truthful reports every victim consents.

The decisions come from the advocates (:mod:`coasejax.advocates`): ``Bargain.pledge``, or, where it is None, a
victim pledges (consents) iff its reported gain from the change, ``w ĉ_s (x_sq − x̂)``, covers what it pays (a
negative payment is what it is paid).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

from coasejax.graphs import slot_sum
from coasejax.mechanisms.base import Bargain, Outcome, Terms, efficient_activity, harm_shares, reported_surplus
from coasejax.model import benefit_change


def needed(k: int, threshold) -> jax.Array:
    """``m = ⌈θ k⌉`` pledges (at least 1, at most k; traced)."""
    return jnp.clip(jnp.ceil(jnp.asarray(threshold, jnp.float32) * k - 1e-4), 1, k)


def contract_terms(bargain: Bargain, terms: Terms):
    """The contract's activity ``x̂ f32[N]``, each victim's reported gain from the change before payments
    ``f32[k, N]`` (the value of the abatement; minus the harm under the victim's right), what it pays ``f32[k, N]``
    (negative: what it is paid) and the pledges needed m."""
    k = bargain.c_hat.shape[0]
    m = needed(k, terms.threshold)
    x = efficient_activity(bargain, terms)
    shares = harm_shares(bargain.c_hat)
    emitter_gain = benefit_change(bargain.a_hat, bargain.x_sq, x)  # −(the emitter's loss) under the emitter's right
    value = terms.w * bargain.c_hat * (bargain.x_sq - x)
    price = jnp.maximum(-emitter_gain, 0.0) * shares * (k / m)  # pledges for abatement
    surplus = emitter_gain + slot_sum(value)  # B̂(x̂) − Ĉ x̂ under the victim's right
    offer = -value + shares * jnp.maximum(surplus, 0.0) / 2  # harm plus a share of half the surplus
    return x, value, jnp.where(terms.emitter_right, price, -offer), m


def assurance(bargain: Bargain, terms: Terms, key: jax.Array | None = None) -> Outcome:
    """Clears one assurance contract per emitter (threshold ``terms.threshold``). A failed contract collects no
    pledges and owes each pledger its bonus (``Outcome.refund``), which the engine pays out of the emitter's wealth."""
    x_hat, value, pays, m = contract_terms(bargain, terms)
    pledge = bargain.pledge if bargain.pledge is not None else value >= pays
    success = slot_sum(pledge.astype(jnp.float32)) >= m
    x = jnp.where(success, x_hat, bargain.x_sq)
    bound = jnp.where(terms.emitter_right, pledge, True)  # permission binds every victim, and pays every victim
    paid = jnp.where(bound & success, pays, 0.0)
    refund = jnp.where(pledge & ~success, terms.refund_bonus * jnp.abs(pays), 0.0)
    return Outcome(x=x, to_emitter=slot_sum(paid), from_victims=paid,
                   surplus=jnp.where(success, reported_surplus(bargain, terms, x_hat), 0.0), refund=refund)


def equilibrium_pledges(key: jax.Array, bargain: Bargain, terms: Terms, harm: jax.Array) -> jax.Array:
    """``bool[k, N]``: best-responding victims' pledges, given their true harm sensitivities ``harm f32[k, N]`` (their
    true value of the contract's change is ``w c_s (x_sq − x̂)``). A unanimous contract (m = k): pledge iff the value covers the price (strictly dominant with a bonus,
    an equilibrium without). Below unanimity: each victim pledges with the symmetric mixed-equilibrium probability of
    its bargain (:func:`mixed_pledge_probability` at the bargain's mean value and price: with truthful reports every
    victim's value-to-price ratio is the same, and the equilibrium depends on that ratio only), never above its
    value. Under the victim's right ``value`` is minus the harm and the price minus the offer: consent iff the offer
    covers the harm (weakly dominant)."""
    k = bargain.c_hat.shape[0]
    x_hat, _, price, m = contract_terms(bargain, terms)
    value = terms.w * harm * (bargain.x_sq - x_hat)
    covers = value >= price
    m = jnp.where(terms.emitter_right, m, k)  # under the victim's right consenting weakly dominates: no mixing
    mean_value, mean_price = jnp.mean(value, axis=0), jnp.mean(price, axis=0)

    def mixed(_):
        q = mixed_pledge_probability(k, m, mean_value, mean_price, terms.refund_bonus * mean_price, grid=64, steps=20)
        return jax.random.uniform(key, value.shape) < q

    draw = jax.lax.cond(m >= k, lambda _: jnp.ones(value.shape, bool), mixed, None)
    return covers & draw


# -- closed forms for k identical victims -----------------------------------------------------------------------------
def _binom_pmf(n: int, q: jax.Array) -> jax.Array:
    """``f32[..., n + 1]``: P(Binomial(n, q) = j), j = 0..n."""
    j = jnp.arange(n + 1, dtype=jnp.float32)
    q = jnp.asarray(q, jnp.float32)[..., None]
    logc = gammaln(n + 1.0) - gammaln(j + 1.0) - gammaln(n - j + 1.0)
    lq, l1q = jnp.log(jnp.maximum(q, 1e-30)), jnp.log(jnp.maximum(1.0 - q, 1e-30))
    pmf = jnp.exp(logc + j * lq + (n - j) * l1q)
    pmf = jnp.where(q <= 0.0, (j == 0).astype(jnp.float32), pmf)
    return jnp.where(q >= 1.0, (j == n).astype(jnp.float32), pmf)


def pledge_advantage(q, k: int, m: int, v, p, f) -> jax.Array:
    """What pledging earns over not pledging when each of the k − 1 others pledges with probability q:
    ``(v − p) P(X ≥ m − 1) + f P(X ≤ m − 2) − v P(X ≥ m)``."""
    pmf = _binom_pmf(k - 1, q)
    j = jnp.arange(k)
    at_least = lambda t: jnp.sum(jnp.where(j >= t, pmf, 0.0), -1)  # noqa: E731
    return (v - p) * at_least(m - 1) + f * (1.0 - at_least(m - 1)) - v * at_least(m)


def mixed_pledge_probability(k: int, m, v, p, f, grid: int = 256, steps: int = 30) -> jax.Array:
    """The largest q in (0, 1) with ``pledge_advantage(q) = 0`` (elementwise over v, p, f; traced): the symmetric
    mixed equilibrium that best-response dynamics from "everybody pledges" reach. 1 for a unanimous contract whose
    price is below the value, 0 where no interior equilibrium exists. Found on a grid of ``grid`` cells, then by
    bisection in the last cell where the sign changes."""
    v, p, f = jnp.broadcast_arrays(*(jnp.asarray(z, jnp.float32) for z in (v, p, f)))

    def cell(last, i):  # one grid point at a time: memory stays O(N)
        return jnp.where(pledge_advantage(i / grid, k, m, v, p, f) > 0, i, last), None

    last, _ = jax.lax.scan(cell, jnp.full(v.shape, -1, jnp.int32), jnp.arange(grid))
    lo = jnp.maximum(last, 0) / grid
    hi = lo + 1.0 / grid

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        up = pledge_advantage(mid, k, m, v, p, f) > 0
        return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

    lo, hi = jax.lax.fori_loop(0, steps, bisect, (lo, hi))
    q = jnp.where(last >= 0, 0.5 * (lo + hi), 0.0)
    return jnp.where(m >= k, jnp.where(v > p, 1.0, 0.0), q)


def success_probability(q, k: int, m: int) -> jax.Array:
    """``P(Binomial(k, q) ≥ m)``: the contract succeeds."""
    pmf = _binom_pmf(k, q)
    return jnp.sum(jnp.where(jnp.arange(k + 1) >= m, pmf, 0.0), -1)


def best_response(pledge: jax.Array, v, p, f, m: int) -> jax.Array:
    """``bool[k, ...]``: each victim's best reply to the others' pledges ``bool[k, ...]`` (ties: no pledge)."""
    others = jnp.sum(pledge, axis=0, keepdims=True) - pledge
    gain_pledge = jnp.where(others + 1 >= m, v - p, f)
    gain_not = jnp.where(others >= m, v, 0.0)
    return gain_pledge > gain_not
