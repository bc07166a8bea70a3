"""Nash bargaining between an emitter and its victims (Nash 1950).

The parties agree on the reported first best ``x̂`` (:func:`~coasejax.mechanisms.base.efficient_activity`) and split the reported surplus net of
transaction costs, ``Ŝ − TC``, giving the emitter the share β (``terms.bargaining_power``):
``x_e = d_e + β(S − d_e − d_v)`` with disagreement payoffs at the status quo.

Closed form (truthful reports, no transaction costs, interior): emitter's right — victims pay the emitter
``T = C²/2 + β C²/2 ∈ [C²/2, C²]``; victim's right — the emitter pays ``C(a − C) + (1 − β)(a − C)²/2 ∈ [C(a − C),
(a² − C²)/2]``.
"""

from __future__ import annotations

import jax

from coasejax.mechanisms.base import Bargain, Outcome, Terms, efficient_activity, reported_surplus, split_surplus


def nash_transfer_closed_form(a, cost, beta, emitter_right):
    """Money the emitter receives in the interior case with truthful reports and zero transaction costs."""
    if emitter_right:
        return cost**2 / 2 + beta * cost**2 / 2
    return -(cost * (a - cost) + (1 - beta) * (a - cost) ** 2 / 2)


def nash(bargain: Bargain, terms: Terms, key: jax.Array | None = None) -> Outcome:
    x = efficient_activity(bargain, terms)
    net = reported_surplus(bargain, terms, x) - terms.tc_total
    return split_surplus(bargain, terms, x, terms.bargaining_power * net)
