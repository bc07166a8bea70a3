"""Lindahl-style voluntary per-unit contributions (Lindahl 1919; Bergstrom, Blume & Varian 1986 for free-riding).

Each victim s names a per-unit price ``p_s = w ĉ_s``. The emitter, a price taker, chooses its activity against the
total price ``P = Σ_s p_s``: ``x = clip(â − P, 0, upper)`` (``upper`` = ``x_sq`` under the emitter's right, else
``x_max``). Every victim settles its own price on the units that
change: emitter's right — victim s pays ``p_s (x_sq − x)`` for abatement; victim's right — the emitter pays each
victim ``p_s x`` for permission. Truthful prices reach the first best and give the whole surplus to the emitter:
victims pay ``C²`` (the top of the ``[C²/2, C²]`` range) under the emitter's right; the emitter pays ``C(a − C)``
(the bottom of its range) under the victim's right.

Strategic victims (:func:`equilibrium_reports`) free-ride under the emitter's right and hold out under the victim's
right. With k identical victims both give ``x`` at a fraction ``1/(k + 1)`` of the efficient change and efficiency
``(2k + 1)/(k + 1)²``, which falls as the number of victims per emitter grows (:func:`free_riding_efficiency`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from coasejax.graphs import slot_sum
from coasejax.mechanisms.base import Bargain, Outcome, Terms, efficient_activity, reported_cost, reported_surplus


def lindahl(bargain: Bargain, terms: Terms, key: jax.Array | None = None) -> Outcome:
    x = efficient_activity(bargain, terms)  # the emitter's best reply to the total price
    change = bargain.x_sq - x  # abatement (emitter's right) or minus the permitted activity (victim's right)
    prices = terms.w * bargain.c_hat
    cost = reported_cost(bargain, terms)
    surplus = reported_surplus(bargain, terms, x)
    return Outcome(x=x, to_emitter=cost * change, from_victims=prices * change, surplus=surplus)


def equilibrium_reports(a: jax.Array, c_nb: jax.Array, terms: Terms) -> jax.Array:
    """``f32[k, N]`` Nash-equilibrium harm reports of victims who best-respond to each other (interior case).

    Emitter's right: victim s pays ``p_s · A`` for total abatement ``A = Σ p``; its best reply is
    ``p_s = max(0, w c_s − A)``. The contributors are the victims with the largest harm; with the top m of them
    contributing ``A = Σ_top-m w c / (m + 1)`` (the largest m consistent with ``w c_(m) > A``).
    Victim's right: victim s earns ``(q_s − w c_s) x`` with ``x = a − Σ q``; its best reply ``q_s = w c_s + x``
    gives ``x = (a − C)/(k + 1)``: every victim holds out for the same mark-up.
    """
    k = c_nb.shape[0]
    v = terms.w * c_nb
    # emitter's right: free-riding pledges
    v_sorted = -jnp.sort(-v, axis=0)
    m = jnp.arange(1, k + 1, dtype=v.dtype)[:, None]
    abate_m = jnp.cumsum(v_sorted, axis=0) / (m + 1)
    contributes = v_sorted > abate_m
    m_star = jnp.sum(contributes, axis=0, keepdims=True)  # contributors form a prefix of the sorted order
    abate = jnp.take_along_axis(abate_m, jnp.maximum(m_star - 1, 0), axis=0)
    abate = jnp.where(m_star > 0, abate, 0.0)
    pledge = jnp.maximum(v - abate, 0.0)
    # victim's right: hold-out asks
    x = jnp.clip((a - slot_sum(v)) / (k + 1), 0.0, terms.x_max)
    ask = v + x
    return jnp.where(terms.emitter_right, pledge, ask) / terms.w


def free_riding_efficiency(k: int) -> float:
    """Efficiency of the Lindahl equilibrium with k identical victims (either rights regime, interior)."""
    return (2 * k + 1) / (k + 1) ** 2
