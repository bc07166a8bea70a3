"""Money in the Coase scenario: who pays whom each round, each flow from its own source, and the conservation check.

A round moves money four ways (:func:`settle`, then fees in :mod:`coasejax.envs.coase`):

* **the mechanism**: emitter i receives ``T_i`` (``to_emitter``, negative when it pays) and its victim in slot s pays
  ``p_{i,s}`` (``from_victims``, negative when it is paid), as the clearing function set them for honoured deals
  (plus the refund bonuses of failed assurance contracts); the mechanism's *net intake* is ``Σ p − Σ T``: zero for a
  budget-balanced mechanism (Nash, Lindahl, alternating offers, assurance), a deficit for the Clarke pivot, which the
  state covers (Green & Laffont 1977);
* **transaction costs**: each party of an attempted deal pays its own (``tc_emitter f32[N]``, ``tc_victims f32[k, N]``);
  the money leaves the economy;
* **the Pigouvian tax** ``τ x_i``, paid by the emitter and recycled in the same round, equally to every agent
  (``lump_sum``) or ``τ x_i / k`` to each of i's victims (``victims``);
* **provider fees**, collected after settlement out of what each client has left.

Every total in :class:`MoneyFlows` is summed from the array its flow is defined by (the mechanism's outcome, the
costs charged, the tax bill, the credits, the fees), *before* the flows are routed to agents through the graph.
:func:`conservation` then compares the wealth actually stored, ``Σ_i (m_i' − m_i)``, against
``Σ T − Σ p − costs − τ Σ x + recycled − fees``: a payment that is routed to the wrong agent twice or not at all, a
mechanism that pays money nobody paid in, or wealth too large for float32 to hold a change, all show up as a residual.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from coasejax.graphs import Graph, slot_sum


class MoneyFlows(NamedTuple):
    """One round's money flows, summed over agents (``f32`` scalars), each from its own source."""

    to_emitters: jax.Array  # Σ_i T_i: money the mechanism hands emitters (negative: emitters pay in)
    from_victims: jax.Array  # Σ_{i,s} p_{i,s}: money victims hand the mechanism (negative: victims are paid)
    transaction_costs: jax.Array  # Σ of every party's transaction costs of attempted deals
    tax_paid: jax.Array  # Σ_i τ x_i
    tax_recycled: jax.Array  # Σ of the tax credits handed back to agents
    fees: jax.Array  # Σ of provider fees collected
    gross: jax.Array  # Σ_i |T_i| + Σ_i |Σ_s p_i,s| + costs + tax paid + tax recycled + fees: the residual's scale

    @property
    def mechanism_net(self) -> jax.Array:
        """The mechanism's net intake ``Σ p − Σ T`` (negative: it pays out more than it takes in)."""
        return self.from_victims - self.to_emitters

    def with_fees(self, fee: jax.Array) -> "MoneyFlows":
        """The same flows with the provider fees ``fee f32[N]`` collected."""
        fees = jnp.sum(fee)
        return self._replace(fees=fees, gross=self.gross + fees)


def settle(graph: Graph, to_emitter: jax.Array, from_victims: jax.Array, tc_emitter: jax.Array,
           tc_victims: jax.Array, tax_paid: jax.Array | None, tax_to_victims: bool,
           barrier: Callable[[jax.Array], jax.Array] = lambda v: v):
    """Each agent's wealth change from the mechanism, the costs and the tax (fees come later), and the round's flows.

    ``to_emitter, tc_emitter f32[N]`` per emitter, ``from_victims, tc_victims f32[k, N]`` per bargain slot,
    ``tax_paid f32[N]`` (None: no tax). Returns ``(d_wealth f32[N], victim_outflow f32[N], flows)``, where
    ``victim_outflow`` is what each agent paid as a victim over the k bargains that harm it, net of the tax credits
    it received as a victim. ``barrier`` is applied to the per-slot payments before they are routed through the
    graph (the engine passes its materialisation fence, so the k rolls do not each recompute them).
    """
    n, k = graph.n, graph.k
    victim_pays = from_victims + tc_victims  # f32[k, N] what each slot's victim pays, before tax credits
    credit = None
    if tax_paid is not None:
        if tax_to_victims:
            credit = jnp.broadcast_to(tax_paid / k, from_victims.shape)  # τ x_i / k to each victim of i
            victim_pays = victim_pays - credit
        else:
            credit = jnp.full((n,), jnp.sum(tax_paid) / n)  # lump sum: an equal share to every agent
    victim_outflow = slot_sum(graph.into(barrier(victim_pays)))
    d_wealth = to_emitter - tc_emitter
    if tax_paid is not None:
        d_wealth = d_wealth - tax_paid
    d_wealth = d_wealth - victim_outflow
    if tax_paid is not None and not tax_to_victims:
        d_wealth = d_wealth + credit
    # every [k, N] total goes through per-emitter sums: reducing the slot arrays directly keeps them live longer
    # (40 bytes per agent more at the peak)
    zero = jnp.float32(0.0)
    tax_total = zero if tax_paid is None else jnp.sum(tax_paid)
    recycled = zero if credit is None else jnp.sum(credit)
    paid = slot_sum(from_victims)  # f32[N] what each emitter's victims pay together
    costs = jnp.sum(tc_emitter) + jnp.sum(slot_sum(tc_victims))
    flows = MoneyFlows(
        to_emitters=jnp.sum(to_emitter),
        from_victims=jnp.sum(paid),
        transaction_costs=costs,
        tax_paid=tax_total,
        tax_recycled=recycled,
        fees=zero,
        gross=jnp.sum(jnp.abs(to_emitter)) + jnp.sum(jnp.abs(paid)) + costs + tax_total + recycled,
    )
    return d_wealth, victim_outflow, flows


def accounted_change(to_emitters, from_victims, transaction_costs, tax_paid, tax_recycled, fees):
    """The change in the agents' total wealth the flows account for: ``Σ T − Σ p − costs − τ Σ x + recycled − fees``
    (works on arrays of per-round totals and on host floats alike)."""
    return to_emitters - from_victims - transaction_costs - tax_paid + tax_recycled - fees


#: float32's unit roundoff: a stored wealth m is exact up to ``UNIT_ROUNDOFF · |m|``
UNIT_ROUNDOFF = 2.0**-24


def conservation(stored_change: float, flows: dict, resolution: float = 0.0) -> float:
    """The relative money residual ``|Σ_i (m_i' − m_i) − accounted| / (gross + resolution)`` of a whole episode, from
    the wealth actually stored (``stored_change``, summed in float64 from the initial and final wealth arrays) and the
    per-round totals of :class:`MoneyFlows` (``flows``: field → total over rounds, in float64).

    ``resolution`` is what float32 storage may lose without any flow being wrong, ``UNIT_ROUNDOFF · T · Σ_i |m_i|``
    (each round rounds every stored wealth once, by at most half a unit in its last place). Agents with the same
    wealth and the same flows round the same way, so the loss can be systematic: a residual up to ``resolution`` is
    rounding, not a flow gone astray (``money_resolution_rel`` in the summary reports it against the flows; where it
    is not small, the stored wealth cannot hold the flows faithfully, as with costs of 0.01 on a wealth of 10⁸).
    """
    accounted = accounted_change(flows["to_emitters"], flows["from_victims"], flows["transaction_costs"],
                                 flows["tax_paid"], flows["tax_recycled"], flows["fees"])
    return abs(stored_change - accounted) / max(flows["gross"] + resolution, 1e-30)
