"""The individual layer (innermost): each client's own customisation, heterogeneous across agents.

Drawn once per population from the configured distributions (``f32[N]`` each; a key left null is not drawn and its
constraint is off):

* **red line** ``r_j``: a harm level victim j never accepts at any price. A deal between emitter i and its victims
  may not set ``x_i`` above ``min_j r_j / (w c_j)`` (harm ``w c_j x_i ≤ r_j``). Under the emitter's right the
  status quo is not the victims' to veto, so a red line limits only what they sign.
* **reservation payment** ``ρ_i``: the least gain from a deal at which the client signs it (0 is plain individual
  rationality).
* **altruism** ``α_i ∈ [0, 1]``: the weight on the other side's gain; it scales the advocate's strategic shading by
  ``1 − α_i`` (a fully altruistic client reports truthfully).
* **budget share** ``b_i ∈ (0, 1]``: the share of its wealth the client lets its advocate commit, narrowing the state's
  budget rule (each bargain may commit at most ``b_i m_i/(k + 1)``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from coasejax.population import sample
from coasejax.rules.base import Constraint, Layer
from coasejax.rules.state import allowance, taxed_activity

TRAITS = ("red_line", "reservation", "altruism", "budget_share")


@struct.dataclass
class IndividualParams:
    """Per-agent preferences, ``f32[N]`` each, or None when not configured."""

    red_line: jax.Array | None = None
    reservation: jax.Array | None = None
    altruism: jax.Array | None = None
    budget_share: jax.Array | None = None


def draw(key: jax.Array, cfg, n: int) -> IndividualParams:
    """Draw the configured traits (``cfg`` is :class:`coasejax.config.IndividualConfig`), independent across agents."""
    keys = jax.random.split(key, len(TRAITS))
    return IndividualParams(**{
        t: sample(k, getattr(cfg, t), n) for t, k in zip(TRAITS, keys) if getattr(cfg, t) is not None
    })


def red_line_activity(red_line: jax.Array, c: jax.Array, w: jax.Array, graph) -> jax.Array:
    """``f32[N]``: the most activity emitter i's victims accept, ``min_j r_j / (w c_j)`` (∞ for a harmless victim).
    Each agent's own limit ``r_j / (w c_j)`` is computed once and then read through the graph."""
    return _min_slots(graph.out(own_limit(red_line, c, w)))


def own_limit(red_line: jax.Array, c: jax.Array, w: jax.Array) -> jax.Array:
    """``f32[N]``: the most activity of any one emitter that agent j accepts as a victim, ``r_j / (w c_j)``."""
    return jnp.where(c > 0, red_line / (w * jnp.where(c > 0, c, 1.0)), jnp.inf)


def _min_slots(limit: jax.Array) -> jax.Array:
    out = limit[0]
    for s in range(1, limit.shape[0]):
        out = jnp.minimum(out, limit[s])
    return out


def _red_line(p: IndividualParams, ctx: dict):
    return None, red_line_activity(p.red_line, ctx["c"], ctx["w"], ctx["graph"])


def _share_tax(p: IndividualParams, ctx: dict):
    return None, taxed_activity(p.budget_share * allowance(ctx["wealth"], ctx["k"]), ctx["tax"])


def _share_emitter(p: IndividualParams, ctx: dict):
    return None, p.budget_share * allowance(ctx["wealth"], ctx["k"])


def _share_victims(p: IndividualParams, ctx: dict):
    return None, ctx["graph"].out(p.budget_share * allowance(ctx["wealth"], ctx["k"]))


def _reservation_emitter(p: IndividualParams, ctx: dict):
    return p.reservation, None


def _reservation_victims(p: IndividualParams, ctx: dict):
    return ctx["graph"].out(p.reservation), None


INDIVIDUAL = Layer("individual", (
    Constraint("red_line", "deal_activity", _red_line, lambda p: p.red_line is not None),
    Constraint("budget_share", "own_activity", _share_tax, lambda p: p.budget_share is not None),
    Constraint("budget_share", "outlay_emitter", _share_emitter, lambda p: p.budget_share is not None),
    Constraint("budget_share", "outlay_victims", _share_victims, lambda p: p.budget_share is not None),
    Constraint("reservation", "gain_emitter", _reservation_emitter, lambda p: p.reservation is not None),
    Constraint("reservation", "gain_victims", _reservation_victims, lambda p: p.reservation is not None),
))
