"""Scripted advocates: how each agent's advocate reports its client's type into a bargain.

* ``truthful``      — report the true benefit slope and harm sensitivity.
* ``shade``         — favour the client by the factor s: the paying side understates (``(1 − s)·value``), the paid side
                      overstates (``(1 + s)·value``). Emitter's right: victims pay, the emitter is paid;
                      victim's right: the emitter pays, victims are paid. Under ``lindahl`` the emitter takes the
                      victims' prices and names none, so only victims shade (likewise under ``assurance``, where
                      a shaded value pledges less often).
* ``best_response`` — equilibrium reports: free-riding pledges / hold-out asks under ``lindahl``
                      (:func:`coasejax.mechanisms.lindahl.equilibrium_reports`), truth under ``clarke`` (dominant);
                      under ``assurance`` truthful reports and equilibrium pledges (consents, under the victim's right)
                      (:func:`coasejax.mechanisms.assurance.equilibrium_pledges`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from coasejax.mechanisms.base import Terms
from coasejax.mechanisms.lindahl import equilibrium_reports

STRATEGIES = ("truthful", "shade", "best_response")


def reports(
    strategy: str, mechanism: str, a: jax.Array, c_nb: jax.Array, terms: Terms, shade: jax.Array,
    shade_victims: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``(f32[N], f32[k, N])``: the emitter's report â and its victims' reports ĉ, per bargain slot.

    ``shade`` is the emitter's advocate's shading (a scalar or ``f32[N]``), ``shade_victims`` each victim's (scalar or
    ``f32[k, N]``; defaults to ``shade``)."""
    if strategy == "truthful" or (strategy == "best_response" and mechanism == "clarke"):
        return a, c_nb
    if strategy == "shade":
        er = terms.emitter_right
        a_hat = a if mechanism in ("lindahl", "assurance") else a * jnp.where(er, 1.0 + shade, 1.0 - shade)
        s_v = shade if shade_victims is None else shade_victims
        c_hat = c_nb * jnp.where(er, 1.0 - s_v, 1.0 + s_v)
        return a_hat, c_hat
    if strategy == "best_response" and mechanism == "assurance":  # truthful reports: the pledges carry the strategy
        return a, c_nb
    if strategy == "best_response" and mechanism == "lindahl":
        return a, equilibrium_reports(a, c_nb, terms)
    raise ValueError(f"advocates.strategy={strategy!r} is not defined for mechanism.kind={mechanism!r}")
