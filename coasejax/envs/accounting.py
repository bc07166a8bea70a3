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

The stored wealth is a float32 pair (:func:`add_money`), which holds money to about 2⁻⁴⁷ of the wealth rather than
float32's 2⁻²⁴: at a wealth of 10⁸ (float32 spacing 8) a cost of 0.01 is still held to ~10⁻⁶ of itself. What even the
pair cannot hold is refused: money settings below its resolution at the configured wealth, or so large that their
totals overflow float32, before the run (:func:`check_magnitudes`); a residual above :data:`MONEY_TOLERANCE` of the
gross flows after it (:func:`check_conserved`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import math

import jax
import jax.numpy as jnp
import numpy as np

from coasejax.config import ConfigError
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


#: float32's unit roundoff: a float32 m is exact up to ``UNIT_ROUNDOFF · |m|``
UNIT_ROUNDOFF = 2.0**-24
#: the stored wealth pair's: each :func:`add_money` holds m + d exactly up to ``PAIR_ROUNDOFF · |m + d|``
PAIR_ROUNDOFF = 2.0**-47
#: the largest float32
F32_MAX = float(np.finfo(np.float32).max)
#: a run whose money residual exceeds this fraction of its gross flows stops with an error (:func:`check_conserved`)
MONEY_TOLERANCE = 1e-5


def add_money(hi: jax.Array, lo: jax.Array, d: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The wealth pair ``(hi, lo)`` (money ``hi + lo``) plus the change ``d``, in float32 pair arithmetic.

    Two error-free transformations (Knuth's TwoSum, 6 flops each): ``s = fl(hi + d)`` with its exact rounding error
    added to ``lo``, then ``(s, lo)`` renormalised, so that ``hi`` is the money rounded to float32 (what the rules
    read) and ``|lo| ≤`` half its spacing. The only rounding left is that of ``lo``, below ``PAIR_ROUNDOFF · |m|``;
    plain float32 storage rounds by up to ``UNIT_ROUNDOFF · |m|`` every round (a cost under 4 vanishes from a wealth of
    10⁸). Needs IEEE arithmetic without reassociation (XLA's default on CPU and GPU)."""
    s, err = _two_sum(hi, d)
    return _two_sum(s, lo + err)


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(s, e)`` with ``s = fl(a + b)`` and ``s + e = a + b`` exactly (Knuth 1969)."""
    s = a + b
    bp = s - a
    return s, (a - (s - bp)) + (b - bp)


def conservation(stored_change: float, flows: dict) -> float:
    """The relative money residual ``|Σ_i (m_i' − m_i) − accounted| / gross`` of a whole episode, from the wealth
    actually stored (``stored_change``, summed in float64 from the initial and final wealth pairs,
    :func:`coasejax.population.money`) and the per-round totals of :class:`MoneyFlows` (``flows``: field → total
    over rounds, in float64). The scale has a floor of 1e-30: with no flows at all, any stored change is a huge
    residual, and no change none."""
    accounted = accounted_change(flows["to_emitters"], flows["from_victims"], flows["transaction_costs"],
                                 flows["tax_paid"], flows["tax_recycled"], flows["fees"])
    return abs(stored_change - accounted) / max(flows["gross"], 1e-30)


def resolution(rounds: int, wealth_scale: float) -> float:
    """What the wealth pair may lose in an episode without any flow being wrong: ``PAIR_ROUNDOFF · T · Σ_i |m_i|``
    (``wealth_scale``: the larger of Σ|m| at the start and at the end), a bound, reached only when every agent rounds
    the same way every round."""
    return PAIR_ROUNDOFF * rounds * wealth_scale


def check_conserved(residual: float, stored_change: float, accounted: float, wealth_max: float) -> None:
    """Raise :class:`MoneyError` when the residual is above :data:`MONEY_TOLERANCE` of the gross flows: the stored
    wealth cannot hold these flows (or a flow went astray), so no summary is written."""
    if not residual <= MONEY_TOLERANCE:
        raise MoneyError(
            f"money is not conserved: the stored wealth changed by {stored_change:.6g} but the flows account for "
            f"{accounted:.6g}, a residual of {residual:.3g} of the gross flows (allowed {MONEY_TOLERANCE:g}); at "
            f"wealth up to {wealth_max:.3g} float32 holds money to about {PAIR_ROUNDOFF * wealth_max:.2g} per agent "
            "and round: lower population.wealth or raise the flows")


class MoneyError(ConfigError):
    """The configured magnitudes are beyond what the float32 ledger can hold (a config error: one line, exit 2)."""


def wealth_bound(dist) -> float:
    """The largest |initial wealth| a :class:`coasejax.config.Distribution` draws (lognormal: its 1 − 10⁻⁶
    quantile)."""
    if dist.kind == "constant":
        return abs(dist.value)
    if dist.kind == "uniform":
        return max(abs(dist.low), abs(dist.high))
    return math.exp(min(dist.mu + 4.753 * dist.sigma, 700.0))


def money_settings(cfg) -> list[tuple[str, float]]:
    """``(key, value)`` of every configured amount of money paid per party, deal, round or unit of activity."""
    tc, st = cfg.state.transaction_costs, cfg.state
    out = [("state.transaction_costs.per_party", tc.per_party), ("state.transaction_costs.per_round", tc.per_round),
           ("state.transaction_costs.per_deal", tc.per_deal), ("state.tc_floor", st.tc_floor),
           ("state.pigou_tax", st.pigou_tax), ("mechanism.pool_cost", cfg.mechanism.pool_cost)]
    out += [("providers.fee_flat", v) for v in cfg.providers.per_provider("fee_flat")]
    return out


def check_magnitudes(cfg) -> None:
    """Refuse, before any run, magnitudes the float32 ledger cannot hold (:class:`MoneyError` naming the key):

    * an initial wealth beyond float32's range, or so large that a round's changes overflow it;
    * an amount of money (a transaction cost, a tax, a flat fee) whose per-round total over every party overflows
      float32 (``value · N · (k + 1) > F32_MAX / 4``);
    * a nonzero amount below the wealth pair's resolution at the largest initial wealth (``value < PAIR_ROUNDOFF ·
      m_max``): it may vanish from the stored wealth. (A float32 wealth alone would refuse anything below
      ``UNIT_ROUNDOFF · m_max``, e.g. costs under 6 at wealth 10⁸.) Amounts above it that the pair still cannot hold
      faithfully against the other flows are caught after the run (:func:`check_conserved`)."""
    p = cfg.population
    m_max = wealth_bound(p.wealth)
    limit = F32_MAX / 4
    if not m_max <= limit:
        raise MoneyError(f"population.wealth={p.wealth}: wealth up to {m_max:.3g} is beyond what float32 can hold "
                         f"with room for a round's changes (at most {limit:.3g})")
    parties = p.n_agents * (p.degree + 1)
    floor = PAIR_ROUNDOFF * m_max
    for key, v in money_settings(cfg):
        if v == 0:
            continue
        if not abs(v) * parties <= limit:
            raise MoneyError(f"{key}={v:g}: its total over the {parties} parties of a round ({abs(v) * parties:.3g}) "
                             f"overflows float32 (at most {limit:.3g}); use at most {limit / parties:.3g}")
        if abs(v) < floor:
            raise MoneyError(f"{key}={v:g} is below what the ledger holds at wealth up to {m_max:.3g} "
                             f"(population.wealth): its float32 pair keeps money to about {floor:.2g} there, so an "
                             f"amount must be 0 or at least that; lower the wealth or raise {key}")
