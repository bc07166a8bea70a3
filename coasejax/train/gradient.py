"""Smoothed gradient ascent for one-shot games with a differentiable payoff (the auctions), in self-play, jitted end to
end and ``vmap``ped over seeds (``train.algo: gradient``).

Every provider ascends the gradient of its own smoothed ex-ante utility with respect to its own parameters, holding the
others' bids fixed (simultaneous gradient play; Kohring, Pieroth & Bichler 2023, "Enabling first-order gradient-based
learning for equilibrium computation in markets", ICML, for smoothing the allocation so that the gradient exists):
:attr:`coasejax.train.game.Game.objective`. The opponents' bids are a fresh sample each iteration; the smoothing
bandwidth of admission at the reserve decays geometrically from ``train.smoothing`` to ``train.smoothing_final``
over the run, so the game played at the end is the exact one. The parameters, the optimiser (``train.optimizer``,
``train.schedule``) and the checkpointed state are those of :mod:`coasejax.train.es`, so a run cut into chunks, or
stopped and resumed, gives the same numbers; ``train.optimizer: optimistic_adam`` (:func:`optimizer`) is this
learner's own.

Nothing about the equilibrium enters: the policy is the generic MLP on the bidder's own value
(:class:`coasejax.policies.Advocate` with ``output: sigmoid``), and the learner knows only the auction's payoff rule
(as ES does, through the same interim utility).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from coasejax.policies import init_stack, take
from coasejax.train import es
from coasejax.train.game import Game


def bandwidth(tc, step: jax.Array) -> jax.Array:
    """The admission smoothing at iteration ``step``: ``smoothing · (smoothing_final/smoothing)^(step/iterations)``."""
    frac = step.astype(jnp.float32) / max(tc.iterations - 1, 1)
    return tc.smoothing * (tc.smoothing_final / tc.smoothing) ** jnp.minimum(frac, 1.0)


def optimizer(tc) -> optax.GradientTransformation:
    """:func:`coasejax.train.es.optimizer`, or with ``train.optimizer: optimistic_adam`` Adam on the optimistic
    gradient ``2 g_t − g_{t−1}`` (``optax.optimistic_adam_v2``, alpha = beta = 1; Daskalakis et al. 2018, "Training
    GANs with optimism", ICLR) under ``train.schedule``: simultaneous gradient play in the all-pay auction cycles
    (the bids of every type swing by 0.5 with period ~1000 iterations at n = 2, F(v) = v⁴ under Adam), and the
    optimistic correction damps the rotation (the all-pay preset, ``configs/auction_all_pay.yaml``)."""
    if tc.optimizer != "optimistic_adam":
        return es.optimizer(tc)
    opt = optax.optimistic_adam_v2(es.schedule(tc))
    return optax.chain(optax.clip_by_global_norm(tc.grad_clip), opt) if tc.grad_clip else opt


def gradient_step(game: Game, tc, state: es.TrainState) -> tuple[es.TrainState, es.StepMetrics]:
    """One iteration for every provider at once: each one's gradient against the current stack."""
    opt = optimizer(tc)
    key = jax.random.fold_in(state.key, state.step)
    h = bandwidth(tc, state.step)

    def provider_grad(p, k):
        theta = take(state.params, p)

        def loss(th):
            weighted, plain = game.objective(k, state.params, p, th, h)
            return -weighted, plain

        (_, utility), grad = jax.value_and_grad(loss, has_aux=True)(theta)
        return grad, utility

    n_prov = game.n_providers
    grads, utility = jax.vmap(provider_grad)(jnp.arange(n_prov), jax.random.split(key, n_prov))
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return es.TrainState(params, opt_state, state.key, state.step + 1), es.StepMetrics(utility,
                                                                                       optax.global_norm(grads))


class Gradient(es.ES):
    """Smoothed gradient ascent on ``game`` with the interface :mod:`coasejax.train.run` drives (that of
    :class:`coasejax.train.es.ES`, whose state, initialisation and log it shares)."""

    def __init__(self, game: Game, tc):
        if game.objective is None:
            raise ValueError(f"train.algo: gradient needs a differentiable game; {game.name} has none (use es)")
        super().__init__(game, tc)
        self.agents_per_iteration = game.n_providers * (tc.batch + game.opponent_draws)

    def init_states(self) -> es.TrainState:
        """:func:`coasejax.train.es.init_states` (the same keys, so the same parameters) with this learner's
        :func:`optimizer`."""
        game, tc = self.game, self.tc

        def init(key):
            k_init, k_run = jax.random.split(key)
            params = init_stack(game.module, k_init, game.n_providers, game.obs_dim)
            return es.TrainState(params, optimizer(tc).init(params), k_run, jnp.zeros((), jnp.int32))

        return jax.vmap(init)(es.seed_keys(tc))

    def make_chunk(self, length: int):
        return es.make_chunk(self.game, self.tc, length, step=gradient_step)
