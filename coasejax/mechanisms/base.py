"""The common signature of bargaining mechanisms between one emitter and its k victims, vectorised over emitters.

A mechanism is a pure function ``(Bargain, Terms, key) -> Outcome``. It sees only reports and public terms; the
environment evaluates outcomes with true types, decides whether a deal is attempted (its reported surplus must cover
the transaction costs), charges those costs and draws enforcement.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from coasejax.graphs import slot_sum
from coasejax.model import benefit_change, value_change


class Bargain(NamedTuple):
    a_hat: jax.Array  # f32[N]    emitter's report of its benefit slope
    c_hat: jax.Array  # f32[k, N] each victim's report of its harm sensitivity, per bargain slot
    x_sq: jax.Array  # f32[N]    status-quo activity (public: current activity under the rights regime)
    x_hi: jax.Array | None = None  # f32[N] most activity the rule layers allow in a deal (None: x_max)
    pledge: jax.Array | None = None  # bool[k, N] assurance: each victim's pledge (None: iff its report covers the price)


@struct.dataclass
class Terms:
    """Public terms of every bargain: weights, bounds, rights, costs and mechanism parameters (all traced scalars,
    so a sweep over them is a ``vmap``; only ``horizon`` and ``emitter_first`` are static)."""

    w: jax.Array  # harm weight per victim
    x_max: jax.Array
    emitter_right: jax.Array  # bool
    bargaining_power: jax.Array  # emitter's beta (nash)
    discount_emitter: jax.Array
    discount_victims: jax.Array
    per_round: jax.Array  # negotiation cost per round per party
    tc_emitter: jax.Array  # emitter's own transaction costs of an attempted deal
    tc_victims: jax.Array  # all victims' transaction costs of an attempted deal, together
    threshold: jax.Array = 1.0  # assurance: the fraction of the victims who must pledge
    refund_bonus: jax.Array = 0.0  # assurance: a failed contract's bonus to each pledger, per unit of its pledge
    horizon: int = struct.field(pytree_node=False, default=32)
    emitter_first: bool = struct.field(pytree_node=False, default=True)

    @property
    def tc_total(self) -> jax.Array:
        return self.tc_emitter + self.tc_victims


class Outcome(NamedTuple):
    x: jax.Array  # f32[N]    agreed activity
    to_emitter: jax.Array  # f32[N]    money the emitter receives (negative: it pays)
    from_victims: jax.Array  # f32[k, N] money each victim pays (negative: it receives)
    surplus: jax.Array  # f32[N]    reported gain of the agreement over the status quo, before transaction costs
    refund: jax.Array | None = None  # f32[k, N] assurance: the bonus the emitter owes each victim if the contract fails


def coalition_roles(deal: jax.Array, x: jax.Array, x_sq: jax.Array, from_victims: jax.Array, harm: jax.Array):
    """``bool[k, N]`` masks of each bargain's victims: *members* (they pay into, or are paid by, a deal that went
    through: ``deal bool[N]``), *beneficiaries* (harmed victims whose harm fell: the emitter abated) and *free riders*
    (beneficiaries who paid nothing)."""
    member = deal[None, :] & (from_victims != 0.0)
    benefited = (x < x_sq - 1e-6)[None, :] & (harm > 0.0)
    return member, benefited, benefited & (from_victims <= 0.0)


def reported_cost(bargain: Bargain, terms: Terms) -> jax.Array:
    """``Ĉ_i = w Σ_s ĉ_{i,s}``: the emitter's marginal external cost as reported by its victims."""
    return terms.w * slot_sum(bargain.c_hat)


def harm_shares(c_hat: jax.Array) -> jax.Array:
    """``f32[k, N]`` each victim's share of the reported harm (equal shares when nobody reports harm)."""
    total = slot_sum(c_hat)
    k = c_hat.shape[0]
    return jnp.where(total > 0, c_hat / jnp.where(total > 0, total, 1.0), 1.0 / k)


def split_surplus(bargain: Bargain, terms: Terms, x: jax.Array, emitter_gain: jax.Array) -> Outcome:
    """Transfers that give the emitter ``emitter_gain`` (net of its own transaction costs) and the victims the rest.

    The emitter receives ``T = L̂ + tc_e + g`` with ``L̂ = B̂(x_sq) − B̂(x)`` its reported loss from moving to x. Under the
    emitter's right that loss is positive (victims buy abatement); under the victim's right ``x_sq = 0`` and ``L̂ < 0``,
    so ``T < 0``: the emitter pays ``B̂(x) − tc_e − g`` for permission. Victims share T in proportion to reported harm.
    """
    loss = -benefit_change(bargain.a_hat, bargain.x_sq, x)
    surplus = reported_surplus(bargain, terms, x)
    to_emitter = loss + terms.tc_emitter + emitter_gain
    from_victims = to_emitter * harm_shares(bargain.c_hat)
    return Outcome(x=x, to_emitter=to_emitter, from_victims=from_victims, surplus=surplus)


def reported_surplus(bargain: Bargain, terms: Terms, x: jax.Array) -> jax.Array:
    """``Ŝ = [B̂(x) − Ĉx] − [B̂(x_sq) − Ĉx_sq]``: the reported gain of moving from the status quo to x."""
    return value_change(bargain.a_hat, reported_cost(bargain, terms), bargain.x_sq, x)


def activity_upper(bargain: Bargain, terms: Terms) -> jax.Array:
    """The most activity a deal may set: ``x_sq`` under the emitter's right (victims buy abatement; no deal raises
    activity above the status quo), ``x_max`` otherwise, and never above what the rule layers allow (``x_hi``)."""
    upper = jnp.where(terms.emitter_right, bargain.x_sq, terms.x_max)
    return upper if bargain.x_hi is None else jnp.minimum(upper, bargain.x_hi)


def efficient_activity(bargain: Bargain, terms: Terms) -> jax.Array:
    """``x̂ = clip(â − Ĉ, 0, upper)``: the first best under the reports, inside the room the rules leave
    (:func:`activity_upper`)."""
    return jnp.clip(bargain.a_hat - reported_cost(bargain, terms), 0.0, activity_upper(bargain, terms))
