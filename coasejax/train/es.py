"""Evolution strategies for one-shot games, in self-play, jitted end to end and ``vmap``ped over seeds.

The pseudo-gradient of provider p's ex-ante utility ``U_p(θ_p; θ_−p)`` with respect to its own parameters, holding the
others at their current values, is estimated with antithetic (mirrored) Gaussian perturbations (Salimans et al. 2017,
"Evolution strategies as a scalable alternative to reinforcement learning"; Bichler et al. 2021, neural
pseudo-gradient ascent for auctions):

    ĝ_p = 1/(2σ H) Σ_{h=1..H} [U_p(θ_p + σ ε_h) − U_p(θ_p − σ ε_h)] ε_h,    ε_h ~ N(0, I),  H = population / 2,

with all 2H candidates facing the same random draws (common random numbers). Every provider ascends its own
pseudo-gradient simultaneously with an Optax optimiser. Iteration t draws its randomness from
``fold_in(key, t)``, so a run cut into chunks, or stopped and resumed from a checkpoint, gives the same numbers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from coasejax.policies import init_stack, take
from coasejax.train.game import Game


class TrainState(NamedTuple):
    params: Any  # stacked parameters, leading provider axis P
    opt_state: Any
    key: jax.Array  # u32[2] the run's key; iteration t uses fold_in(key, t)
    step: jax.Array  # i32[]  iterations done


class StepMetrics(NamedTuple):
    utility: jax.Array  # f32[P] mean fitness of the candidates (≈ each provider's current ex-ante utility)
    grad_norm: jax.Array  # f32[]  global norm of the pseudo-gradient


def schedule(tc) -> optax.Schedule:
    """``train.schedule`` over ``train.iterations``: constant, or decaying to ``final_lr_fraction`` of the start."""
    lr, n, end = tc.learning_rate, tc.iterations, tc.final_lr_fraction
    if tc.schedule == "constant":
        return optax.constant_schedule(lr)
    if tc.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, n, alpha=end)
    if tc.schedule == "linear":
        return optax.linear_schedule(lr, lr * end, n)
    return optax.exponential_decay(lr, n, max(end, 1e-8))


def optimizer(tc) -> optax.GradientTransformation:
    """``train.optimizer`` with ``train.schedule``, after optional global-norm clipping (``train.grad_clip``)."""
    make = {"adam": optax.adam, "adamw": optax.adamw, "sgd": optax.sgd, "rmsprop": optax.rmsprop}[tc.optimizer]
    opt = make(schedule(tc))
    return optax.chain(optax.clip_by_global_norm(tc.grad_clip), opt) if tc.grad_clip else opt


def init(game: Game, tc, key: jax.Array) -> TrainState:
    """Fresh parameters, optimiser state, the run's key and step 0, all from ``key``."""
    k_init, k_run = jax.random.split(key)
    params = init_stack(game.module, k_init, game.n_providers, game.obs_dim)
    return TrainState(params, optimizer(tc).init(params), k_run, jnp.zeros((), jnp.int32))


def seed_keys(tc) -> jax.Array:
    """One key per vmapped seed, from ``train.seed``."""
    return jax.random.split(jax.random.PRNGKey(tc.seed), tc.seeds)


def es_step(game: Game, tc, state: TrainState) -> tuple[TrainState, StepMetrics]:
    """One ES iteration for every provider at once."""
    opt = optimizer(tc)
    half, sigma = tc.population // 2, tc.sigma
    _, unravel = ravel_pytree(take(state.params, 0))
    flat = jax.vmap(lambda p: ravel_pytree(p)[0])(state.params)  # f32[P, D]
    key = jax.random.fold_in(state.key, state.step)

    def provider_grad(p, theta, k):
        k_eps, k_game = jax.random.split(k)
        eps = jax.random.normal(k_eps, (half, theta.shape[0]), theta.dtype)
        cand = jnp.concatenate([theta + sigma * eps, theta - sigma * eps])
        fit = game.fitness(k_game, state.params, p, jax.vmap(unravel)(cand))  # f32[2H]
        grad = (fit[:half] - fit[half:]) @ eps / (2.0 * sigma * half)
        return grad, jnp.mean(fit)

    n_prov = flat.shape[0]
    grads, utility = jax.vmap(provider_grad)(jnp.arange(n_prov), flat, jax.random.split(key, n_prov))
    ascent = jax.vmap(unravel)(-grads)  # Optax minimises: descend on −U
    updates, opt_state = opt.update(ascent, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = TrainState(params, opt_state, state.key, state.step + 1)
    return new, StepMetrics(utility, jnp.sqrt(jnp.sum(grads**2)))


def make_chunk(game: Game, tc, length: int, step=None):
    """A jitted ``states → (states, StepMetrics[S, length, ...])`` running ``length`` iterations of every seed
    (leading seed axis S on the states) with ``lax.scan``; each iteration is ``step(game, tc, state)``
    (:func:`es_step` by default, :func:`coasejax.train.gradient.gradient_step` for gradient training)."""
    step = step or es_step

    def one_seed(state):
        return jax.lax.scan(lambda s, _: step(game, tc, s), state, None, length=length)

    return jax.jit(jax.vmap(one_seed), donate_argnums=0)


def init_states(game: Game, tc) -> TrainState:
    """Initial states of all seeds (leading seed axis S)."""
    return jax.vmap(lambda k: init(game, tc, k))(seed_keys(tc))


class ES:
    """Evolution strategies on ``game`` with the interface :mod:`coasejax.train.run` drives (as
    :class:`coasejax.train.ppo.PPO`)."""

    def __init__(self, game: Game, tc):
        self.game, self.tc = game, tc
        self.name, self.n_providers = game.name, game.n_providers
        self.agents_per_iteration = game.n_providers * game.agents_per_iteration
        self.metrics = game.metrics

    def strategy(self, params) -> list[dict]:
        """The report's strategy panels of the seed-stacked ``params`` (none where the game draws none)."""
        return self.game.strategy(params) if self.game.strategy is not None else []

    def init_states(self) -> TrainState:
        return init_states(self.game, self.tc)

    def make_chunk(self, length: int):
        return make_chunk(self.game, self.tc, length)

    @staticmethod
    def log_row(m: StepMetrics) -> dict:
        return {"utility": float(jnp.mean(m.utility[:, -1])), "grad_norm": float(jnp.mean(m.grad_norm[:, -1]))}
