"""The externality model and its closed forms (Coase 1960; Pigou 1920; Mas-Colell, Whinston & Green 1995, ch. 11).

Emitter i chooses activity ``x ∈ [0, x_max]`` with private benefit ``B_i(x) = a_i x − x²/2``; each of its k victims j
suffers ``c_j · w · x``. Its marginal external cost is ``C_i = w · Σ_{j ∈ nbr(i)} c_j``, so

* first best              ``x* = clip(a − C, 0, x_max)``
* status quo, emitter's right  ``x = clip(a, 0, x_max)``; victim's right ``x = 0``
* surplus of the efficient deal (interior)  ``C²/2`` (emitter's right) and ``(a − C)²/2`` (victim's right).

Welfare ``W = Σ_i [B_i(x_i) − C_i x_i] − transaction costs``; transfers cancel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def benefit(a: jax.Array, x: jax.Array) -> jax.Array:
    """``B(x) = a x − x²/2``."""
    return a * x - 0.5 * x * x


def social_value(a: jax.Array, cost: jax.Array, x: jax.Array) -> jax.Array:
    """An emitter's contribution to welfare: ``B(x) − C x``."""
    return benefit(a, x) - cost * x


def benefit_change(a: jax.Array, x_from: jax.Array, x_to: jax.Array) -> jax.Array:
    """``B(x_to) − B(x_from) = (x_to − x_from)(a − (x_from + x_to)/2)``, written without cancellation so that
    small changes keep their sign in float32."""
    return (x_to - x_from) * (a - 0.5 * (x_from + x_to))


def value_change(a: jax.Array, cost: jax.Array, x_from: jax.Array, x_to: jax.Array) -> jax.Array:
    """``[B(x_to) − C x_to] − [B(x_from) − C x_from]``, without cancellation."""
    return (x_to - x_from) * (a - cost - 0.5 * (x_from + x_to))


def first_best(a: jax.Array, cost: jax.Array, x_max: float) -> jax.Array:
    """``x* = clip(a − C, 0, x_max)``."""
    return jnp.clip(a - cost, 0.0, x_max)


def status_quo(a: jax.Array, emitter_right: jax.Array, x_max: float) -> jax.Array:
    """Activity without a deal: ``clip(a, 0, x_max)`` when the emitter holds the right, else 0."""
    return jnp.where(emitter_right, jnp.clip(a, 0.0, x_max), 0.0)

