"""Control over what XLA computes once.

XLA:CPU fuses cheap element-wise producers into every consumer, duplicating them. In the layered Coase round many
consumers share the same per-emitter results (one fused loop per graph slot for each roll, one per reduction), so
chains such as the veto logic were recomputed about ten times. ``jax.lax.optimization_barrier`` does not prevent
this (it is expanded away before fusion); routing values through a ``lax.cond`` on a traced predicate does, because a
conditional is never fused into: its operands and results are real buffers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def materialise(tree, one: jax.Array, per_slot: bool = False):
    """``tree`` with its per-agent vectors (``ndim ≤ 1``) computed once, into their own buffers, by passing them
    through a conditional on ``one > 0`` (``one`` a traced 1.0, so XLA cannot fold it). Larger per-slot arrays only
    get an optimisation barrier unless ``per_slot``: copying them costs more than recomputing a short chain, less than
    recomputing one that reduces over slots or feeds a roll (each slot of a roll recomputes its producer)."""
    leaves, treedef = jax.tree.flatten(tree)
    small = [i for i, x in enumerate(leaves) if per_slot or x.ndim <= 1]
    kept = jax.lax.cond(one > 0, lambda t: t, lambda t: [jnp.zeros_like(x) for x in t], [leaves[i] for i in small])
    rest = jax.lax.optimization_barrier([x for i, x in enumerate(leaves) if i not in small])
    kept, rest = iter(kept), iter(rest)
    return jax.tree.unflatten(treedef, [next(kept) if i in small else next(rest) for i in range(len(leaves))])
