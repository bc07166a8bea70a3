"""Clarke pivot (VCG) mechanism for one emitter and its victims (Vickrey 1961; Clarke 1971; Groves 1973).

The decision is the reported first best ``x̂ = clip(â − Ĉ, 0, upper)`` (``upper`` = ``x_sq`` under the emitter's
right, else ``x_max``, and at most what the rule layers allow). Each party is paid what the others' reported
values gain at ``x̂`` relative to a reference activity that does not depend on its own report, so truthful reporting
is a dominant strategy:

* a party that holds the right (the emitter under the emitter's right, each victim under the victim's right) is
  measured against the status quo — this keeps it individually rational;
* a party without the right pays the Clarke pivot tax: the reference is what the others would choose without it.

Payments run between the parties and the mechanism, which does not balance its budget (Green & Laffont 1977); the
state covers the deficit, reported as ``mechanism_net``. Closed forms (truthful, interior):

* emitter's right: the emitter receives ``Ĉ(x_sq − x̂) = C²``; victim s pays its pivot tax ``(w c_s)²/2``;
* victim's right: the emitter pays ``C x̂ = C(a − C)``; victim s receives ``B(x̂) − (C − w c_s) x̂``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from coasejax.mechanisms.base import (
    Bargain,
    Outcome,
    Terms,
    activity_upper,
    efficient_activity,
    reported_cost,
    reported_surplus,
)
from coasejax.model import benefit


def clarke_net_intake_closed_form(a, harms, emitter_right):
    """The mechanism's net intake ``Σ_s p_s − T`` of one bargain with truthful reports and an interior first best
    ``x* = a − C`` (``harms``: each victim's marginal harm ``w c_s``, ``C = Σ harms``; ``x_max`` not binding).

    Emitter's right: the victims' pivot taxes ``Σ (w c_s)²/2`` against the emitter's ``C²``; victim's right: the
    emitter's ``C x*`` against the victims' ``Σ [B(x*) − (C − w c_s) x*]``. Both are deficits (negative)."""
    harms = [float(h) for h in harms]
    cost = sum(harms)
    if emitter_right:
        return sum(h * h / 2 for h in harms) - cost**2
    x = a - cost
    return cost * x - sum(a * x - x * x / 2 - (cost - h) * x for h in harms)


def clarke(bargain: Bargain, terms: Terms, key: jax.Array | None = None) -> Outcome:
    a_hat, x_sq = bargain.a_hat, bargain.x_sq
    cost = reported_cost(bargain, terms)
    x = efficient_activity(bargain, terms)
    # the emitter: the victims' reported value changes by C_hat (x_sq - x); its reference is the status quo whether
    # or not it holds the right (without it, the victims alone would choose x = 0 = x_sq under the victim's right)
    to_emitter = cost * (x_sq - x)
    # victim s: the others' value is V_{-s}(x) = B(x) - C_{-s} x
    cost_others = cost - terms.w * bargain.c_hat  # f32[k, N]
    x_without = jnp.clip(a_hat - cost_others, 0.0, activity_upper(bargain, terms))
    reference = jnp.where(terms.emitter_right, x_without, x_sq)

    def others_value(xx):
        return benefit(a_hat, xx) - cost_others * xx

    from_victims = others_value(reference) - others_value(x)
    surplus = reported_surplus(bargain, terms, x)
    return Outcome(x=x, to_emitter=to_emitter, from_victims=from_victims, surplus=surplus)
