"""Matryoshkan rule layers as data plus pure functions, composed the way ``optax.chain`` composes transformations.

A *constraint* bounds one kind of action to an interval ``[lo, hi]`` computed from its layer's parameters and what
the round knows (:class:`Constraint`). A *layer* is a named tuple of constraints (:class:`Layer`); the state, provider
and individual layers live in :mod:`~coasejax.rules.state`, :mod:`~coasejax.rules.provider` and
:mod:`~coasejax.rules.individual`. ``nest(state, provider, individual)`` stacks them outermost first.

**Composition.** For each action field the allowed *room* starts as ``(−∞, ∞)`` and every constraint, outer layer
first, narrows it: the constraint's interval is first clipped into the room the outer constraints left, then
intersected with it. So an inner layer can only narrow what the outer ones allow, never widen it, and the outer layer
always wins (when an inner interval lies wholly outside the outer room it collapses onto the outer room's nearest
edge). An action is then clipped into the final room.

**Audit.** Applying the constraints one at a time from the outside in, a constraint *changed* an action when clipping
into the room narrowed down to it moved the action. Per layer and per constraint, the run reports the fraction of
bargains (one per emitter per round) in which the constraint changed some action: the layer that bound.

Action fields (``f32[N]`` per emitter, ``f32[k, N]`` per bargain slot):

* ``own_activity``   the activity an emitter chooses alone (under the emitter's right, or with no bargain);
* ``deal_activity``  the activity a bargain may agree on (the mechanism clears inside this room);
* ``report_a``, ``report_c``  the emitter's and the victims' reports;
* ``outlay_emitter``, ``outlay_victims``  money a party pays in a deal (clipped: the deal is vetoed);
* ``gain_emitter``, ``gain_victims``  a party's gain from a deal (clipped: the deal is vetoed).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

FIELDS = ("own_activity", "deal_activity", "report_a", "report_c", "outlay_emitter", "outlay_victims",
          "gain_emitter", "gain_victims")

Interval = tuple[jax.Array | None, jax.Array | None]


class Constraint(NamedTuple):
    """One rule on one action field. ``bound(params, ctx) -> (lo, hi)`` (``None``: unbounded on that side) reads the
    layer's parameter pytree and the round context; ``enabled(params)`` is a static switch (plain Python bool)."""

    name: str
    field: str
    bound: Callable[[Any, dict], Interval]
    enabled: Callable[[Any], bool] = lambda params: True


class Layer(NamedTuple):
    name: str
    constraints: tuple[Constraint, ...]


class RuleStack(NamedTuple):
    layers: tuple[Layer, ...]  # outermost first


def nest(*layers: Layer) -> RuleStack:
    """Stack layers, outermost first: ``nest(state, provider, individual)``."""
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise ValueError(f"layer names must be unique, got {names}")
    return RuleStack(tuple(layers))


def active(stack: RuleStack, params: dict) -> list[tuple[str, str]]:
    """``(layer, constraint)`` names of the enabled constraints, outermost first, each name once."""
    out: list[tuple[str, str]] = []
    for layer in stack.layers:
        for c in layer.constraints:
            if c.enabled(params[layer.name]) and (layer.name, c.name) not in out:
                out.append((layer.name, c.name))
    return out


def _narrow(room: Interval, lo, hi) -> Interval:
    r_lo, r_hi = room
    if lo is not None:
        lo = lo if r_lo is None else jnp.maximum(lo, r_lo)
        lo = lo if r_hi is None else jnp.minimum(lo, r_hi)
    if hi is not None:
        hi = hi if r_hi is None else jnp.minimum(hi, r_hi)
        hi = hi if r_lo is None else jnp.maximum(hi, r_lo)
    new_lo = r_lo if lo is None else lo
    new_hi = r_hi if hi is None else hi
    if new_lo is not None and new_hi is not None:
        new_lo = jnp.minimum(new_lo, new_hi)  # a malformed inner interval collapses onto its upper edge
    return new_lo, new_hi


def _clip(value, room: Interval):
    lo, hi = room
    if lo is not None:
        value = jnp.maximum(value, lo)
    if hi is not None:
        value = jnp.minimum(value, hi)
    return value


def constrain(stack: RuleStack, field: str, value: jax.Array, params: dict, ctx: dict, depth: int | None = None):
    """Clip ``value`` (one action per entry) into the room the first ``depth`` layers (all by default) leave.

    Returns ``(value, room, changed)``: the constrained action, the room ``(lo, hi)`` and, per enabled constraint of
    ``field``, a bool mask (shape of ``value``) of the actions it changed.
    """
    if field not in FIELDS:
        raise ValueError(f"unknown action field {field!r}; fields: {', '.join(FIELDS)}")
    room: Interval = (None, None)
    changed: dict[tuple[str, str], jax.Array] = {}
    for layer in stack.layers[:depth]:
        for c in layer.constraints:
            if c.field != field or not c.enabled(params[layer.name]):
                continue
            room = _narrow(room, *c.bound(params[layer.name], ctx))
            new = _clip(value, room)
            key = (layer.name, c.name)
            moved = new != value
            changed[key] = moved if key not in changed else changed[key] | moved
            value = new
    return value, room, changed


def room(stack: RuleStack, field: str, params: dict, ctx: dict, depth: int | None = None) -> Interval:
    """The room ``(lo, hi)`` for ``field`` left by the first ``depth`` layers."""
    lo_hi: Interval = (None, None)
    for layer in stack.layers[:depth]:
        for c in layer.constraints:
            if c.field == field and c.enabled(params[layer.name]):
                lo_hi = _narrow(lo_hi, *c.bound(params[layer.name], ctx))
    return lo_hi


class Audit(NamedTuple):
    """Per-bargain masks of what each enabled constraint changed, merged over fields (``bool[N]`` each)."""

    masks: dict

    @staticmethod
    def empty() -> "Audit":
        return Audit({})

    def add(self, changed: dict, per_slot: bool = False) -> "Audit":
        masks = dict(self.masks)
        for key, m in changed.items():
            if per_slot:  # bool[k, N] -> bool[N]: any slot of the bargain
                m = _any_slot(m)
            masks[key] = m if key not in masks else masks[key] | m
        return Audit(masks)


def _any_slot(m: jax.Array) -> jax.Array:
    out = m[0]
    for s in range(1, m.shape[0]):
        out = out | m[s]
    return out
