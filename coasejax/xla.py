"""Control over what XLA computes once.

XLA:CPU fuses cheap element-wise producers into every consumer, duplicating them; a chain of cheap operations with
several consumers (the rolls of each graph slot, several reductions) is then recomputed once per consumer. ``jax.lax.
optimization_barrier`` does not stop this: it is expanded away before fusion. A division is classed as expensive and
is never duplicated, so dividing by a *traced* 1.0 (which XLA cannot fold) makes the value be computed once, into
its own buffer, at the cost of one division per element.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def materialise(tree, one: jax.Array):
    """Each array of ``tree`` computed once, into its own buffer (``one`` must be a traced ``f32`` 1.0)."""
    return jax.lax.cond(one > 0, lambda t: t, lambda t: jax.tree.map(jnp.zeros_like, t), tree)
