"""The state layer (outermost, non-negotiable): activity caps, the Pigouvian tax, the budget rule.

The other state rules live where they act: the rights regime sets the status quo, enforcement draws whether a deal is
honoured and the transaction-cost floor raises the fixed cost of a deal (:mod:`coasejax.envs.coase`); money
conservation is an accounting identity checked every round.

* **Activity cap** (catastrophic-risk ban): ``x_i ≤ cap`` for capped agents, whether they act alone or in a deal —
  no payment can buy more. ``cap_share`` picks a fixed random subset of agents (the same in every run) to cap.
* **Pigouvian tax** ``τ`` per unit of activity, paid by the emitter (Pigou 1920). Revenue is recycled each round,
  ``lump_sum`` (equally to every agent) or to ``victims`` (equally to the emitter's k victims, ``τx/k`` each).
  With ``τ = C_i`` (the marginal external cost) and no bargaining the emitter picks the first best ``a − C``; with
  bargaining on top under lump-sum recycling victims still pay for abatement, so activity falls to ``a − 2C``: the
  classic over-correction (Buchanan & Stubblebine 1962; Baumol & Oates 1988, ch. 4). Paying the tax to the victims
  removes it: their net harm per unit falls by ``τ/k`` each.
* **Budget rule**: nobody pays more than their wealth. Each agent takes part in k + 1 bargains a round (one as
  emitter, k as victim), so each bargain may commit at most ``m/(k + 1)`` of its wealth m; a deal that would need more
  from any party is vetoed, and an emitter acting alone keeps its tax bill ``τx`` within the same allowance.
  Fees are collected afterwards, never beyond what is left.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from coasejax.rules.base import Constraint, Layer

#: a bargain's allowance is shaved by this relative margin so k + 1 allowances never sum above the wealth in float32
ALLOWANCE_MARGIN = 1e-5


@struct.dataclass
class StateParams:
    cap: jax.Array  # f32 activity cap (ignored unless use_cap)
    cap_share: jax.Array  # f32 fraction of agents under the cap
    pigou_tax: jax.Array  # f32 tax per unit of activity
    tc_floor: jax.Array  # f32 least fixed cost of a deal
    use_cap: bool = struct.field(pytree_node=False, default=False)
    use_tax: bool = struct.field(pytree_node=False, default=False)
    tax_to_victims: bool = struct.field(pytree_node=False, default=False)
    budget_rule: bool = struct.field(pytree_node=False, default=False)

    @classmethod
    def from_config(cls, cfg) -> "StateParams":
        s = cfg.state
        f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
        return cls(
            cap=f(s.activity_cap if s.activity_cap is not None else cfg.population.x_max),
            cap_share=f(s.cap_share),
            pigou_tax=f(s.pigou_tax),
            tc_floor=f(s.tc_floor),
            use_cap=s.activity_cap is not None,
            use_tax=s.pigou_tax > 0,
            tax_to_victims=s.tax_recycling == "victims",
            budget_rule=s.budget_rule,
        )


def capped(params: StateParams, n: int) -> jax.Array:
    """``bool[N]``: the agents under the cap, a fixed pseudo-random subset of share ``cap_share`` (an integer hash of
    the agent index, so no state and no random draw)."""
    h = jnp.arange(n, dtype=jnp.uint32) * jnp.uint32(0x9E3779B9)
    h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    u = ((h >> 8).astype(jnp.float32) + 0.5) * (1.0 / (1 << 24))
    return u < params.cap_share


def allowance(wealth: jax.Array, k: int) -> jax.Array:
    """What one bargain may take from a party with wealth m: ``max(m, 0)/(k + 1)``, shaved by a float margin."""
    return jnp.maximum(wealth, 0.0) * ((1.0 - ALLOWANCE_MARGIN) / (k + 1))


def _cap(params: StateParams, ctx: dict):
    return None, jnp.where(ctx["capped"], params.cap, jnp.inf)


def taxed_activity(budget: jax.Array, tax: jax.Array) -> jax.Array:
    """The most activity whose tax bill ``τx`` fits in ``budget`` (∞ without a tax)."""
    return jnp.where(tax > 0, budget / jnp.where(tax > 0, tax, 1.0), jnp.inf)


def _tax_budget(params: StateParams, ctx: dict):
    return None, taxed_activity(allowance(ctx["wealth"], ctx["k"]), params.pigou_tax)


def _budget_emitter(params: StateParams, ctx: dict):
    return None, allowance(ctx["wealth"], ctx["k"])


def _budget_victims(params: StateParams, ctx: dict):
    return None, ctx["graph"].out(allowance(ctx["wealth"], ctx["k"]))


STATE = Layer("state", (
    Constraint("activity_cap", "own_activity", _cap, lambda p: p.use_cap),
    Constraint("activity_cap", "deal_activity", _cap, lambda p: p.use_cap),
    Constraint("budget", "own_activity", _tax_budget, lambda p: p.budget_rule and p.use_tax),
    Constraint("budget", "outlay_emitter", _budget_emitter, lambda p: p.budget_rule),
    Constraint("budget", "outlay_victims", _budget_victims, lambda p: p.budget_rule),
))
