"""Flax advocate networks: an agent's private observation → its bid, ask or report.

An :class:`Advocate` maps an observation whose first feature is the agent's own value ``v`` (its value for the good,
or its true harm) to the action ``v · s(obs)``, where the *shading factor* ``s = clip(w·obs + b + MLP(obs), low, high)``
is a small MLP with a linear skip connection. Acting as a multiple of the own value ties the actions of low types,
which matter little for utility and so get little training signal, to those of high types, and with ``high = 1``
rules out overbidding, which is weakly dominated in every auction here. The skip starts at ``s = 1`` (truthful
bidding, or a truthful report) and the MLP's output layer at zero, so training starts from honest play.

Parameters are a plain pytree (``{"params": {...}}``). Agents served by the same provider share one parameter set;
providers' parameter sets are stacked on a leading axis ``P`` (:func:`init_stack`), so a population of policies is
one pytree that can be perturbed, stacked and ``vmap``ped.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable] = {"tanh": jnp.tanh, "relu": nn.relu, "selu": nn.selu}


class Advocate(nn.Module):
    """``f32[..., d] → f32[...]``: ``obs[..., 0] · clip(w·obs + b + MLP(obs), low, high)``; the skip starts at
    ``w = 0`` and ``b = init_scale`` (1: the truthful action), the MLP's last layer at zero."""

    hidden: Sequence[int] = (16,)
    activation: str = "tanh"
    low: float = 0.0
    high: float = 1.0
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        h = obs
        for width in self.hidden:
            h = act(nn.Dense(width, kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "normal"))(h))
        residual = nn.Dense(1, kernel_init=nn.initializers.zeros)(h)[..., 0]

        skip_init = nn.initializers.constant(self.init_scale)
        skip = nn.Dense(1, kernel_init=nn.initializers.zeros, bias_init=skip_init)(obs)[..., 0]
        return obs[..., 0] * jnp.clip(skip + residual, self.low, self.high)


def init_stack(module: Advocate, key: jax.Array, n_providers: int, obs_dim: int):
    """Parameters of ``n_providers`` providers, stacked on a leading axis (each initialised from its own key)."""
    keys = jax.random.split(key, n_providers)
    return jax.vmap(lambda k: module.init(k, jnp.zeros((1, obs_dim), jnp.float32)))(keys)


def take(stack, index: jax.Array):
    """The parameters of provider(s) ``index`` from a stack (``index`` scalar or ``i32[R]``)."""
    return jax.tree.map(lambda x: x[index], stack)
