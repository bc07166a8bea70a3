"""Flax advocate networks: an agent's private observation → its bid, ask or report.

An :class:`Advocate` maps an observation whose first feature is the agent's own value ``v`` (its value for the good,
or its true harm) to the action ``v · s(obs)``, where the *shading factor* ``s = clip(w·obs + b + MLP(obs), low, high)``
is a small MLP with a linear skip connection. Acting as a multiple of the own value ties the actions of low types,
which matter little for utility and so get little training signal, to those of high types, and with ``high = 1``
rules out overbidding, which is weakly dominated in every auction here. The skip starts at ``s = init_scale`` (1:
truthful bidding, or a truthful report) and the MLP's output layer at zero. ``output="log"`` computes the factor in
log space with a ``log v`` feature instead (power-law bids). With ``win_prob`` the observation's last feature is
``G(v) = F(v)^(n−1)`` (:func:`coasejax.train.auction_game.observe`): the linear head's skip then acts in bid space on
features chosen from ``[r, v, v G(v), r G(r)/G(v)]``, which hold the first-price and the all-pay equilibria for every
n, F and reserve r, without a cap at the value, and the log head's log feature is ``log G(v)`` (the first-price and
all-pay presets: linear, ``win_prob``, no MLP).
Without hidden layers there is no MLP residual at all (a linear layer on the features would only duplicate the skip).

Parameters are a plain pytree (``{"params": {...}}``). Agents served by the same provider share one parameter set;
providers' parameter sets are stacked on a leading axis ``P`` (:func:`init_stack`), so a population of policies is
one pytree that can be perturbed, stacked and ``vmap``ped.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from coasejax.envs import auction as auction_env

ACTIVATIONS: dict[str, Callable] = {"tanh": jnp.tanh, "relu": nn.relu, "selu": nn.selu}
OUTPUTS = ("linear", "log", "sigmoid")
LOG_FLOOR = 1e-3  # the log feature of the "log" head is log max(v, LOG_FLOOR) (bounded input for the MLP)
SIGMOID_START_MAX = 0.993  # the sigmoid head starts at most this share of its range (logit 5: not saturated)
LOG_TEMP = 0.1  # the "log" head's log s = −τ·softplus(−z/τ): a smoothed min(z, 0)
SKIP_FEATURES = ("r", "v", "vG", "rho")  # the win_prob head's bid-space skip features, in order (Advocate's doc)


class Advocate(nn.Module):
    """``f32[..., d] → f32[...]``: ``obs[..., 0] · s(obs)`` with the shading factor ``s`` from one of two heads:

    * ``output="linear"``: ``s = clip(w·obs + b + MLP(obs), low, high)``; the skip starts at ``w = 0`` and
      ``b = init_scale`` (1: the truthful action), the MLP's last layer at zero. With ``win_prob`` (``obs[..., -1]``
      is ``G(v)``) the head works in bid space instead: ``b = max(w·φ + v·MLP(obs), low·v)`` on the features ``φ``
      named by ``features`` from ``r = reserve``, ``v``, ``v G(v)`` and the reserve's share
      ``ρ = r G(r)/G(max(v, r))`` (given a win, the chance that no rival bid, so the reserve sets the price). The
      first-price equilibrium ``v − ∫_r^v G/G(v) = m v/(m+1) + ρ/(m+1)`` needs ``[v, ρ]``, the all-pay one
      ``r/(m+1) + m v G(v)/(m+1)`` (``G = v^m``) ``[r, v G(v)]``
      (:func:`skip_features`). The skip starts at ``init_scale`` on the feature
      ``start`` (``v`` for first price: ``b = init_scale · v``; ``vG`` for all-pay: ``b = init_scale · v G(v)``),
      0 elsewhere. There is no free constant: a bid offset common to all types is (to first order) neutral for every
      type, so self-play would drift along it; the reserve's ``w_r · r`` is pinned by the participation margin and
      vanishes without a reserve. There is no cap at the value either: overbidding is dominated and costs utility,
      so ES learns not to; a clip at ``b = v`` left a flat fitness wherever Adam's first steps overshot it (the
      first-price equilibrium bids 97% of the value at n = 10, F = v⁴), and a fold at the cap biased the
      pseudo-gradient at the equilibrium's own edge ``b(r) = r`` (BENCHMARKS.md, "Training").
    * ``output="sigmoid"``: ``s = low + (high − low)·sigmoid(b₀ + MLP(2·obs − 1))``, the generic head of the auction
      presets (gradient training): nothing but the centred observation goes in, the factor is smooth everywhere (no
      flat clipped region for a gradient to stall in), ``b₀`` starts at the logit of ``init_scale`` (at most
      ``SIGMOID_START_MAX`` of the range), the output layer at zero, and the first hidden layer's kernel and biases
      at N(0, 1), so its units' kinks are spread over the observation's range rather than all at its centre.
    * ``output="log"``: ``s = high · exp(−τ·softplus(−z/τ))`` (``τ = LOG_TEMP``: ``log s`` is a smoothed
      ``min(z, 0)`` plus ``log high``; ``low`` is taken to be 0), ``z = w·x + b + MLP(x)`` on the features
      ``x = [obs, log max(obs[..., 0], LOG_FLOOR)]`` (``obs[..., -1]``, i.e. ``G(v)``, with ``win_prob``). The skip
      alone represents power laws ``s ∝ v^w`` (convex bids such as the all-pay equilibrium ``b ∝ v^(m+1)``, tiny for
      most types), ES noise acts on *relative* bids, and
      the cap is approached smoothly, so there is no flat clipped region where the pseudo-gradient vanishes. The
      skip starts at ``w = init_power`` on the log feature (0 on the others) and ``s ≈ init_scale · v^init_power``
      (``init_scale`` strictly below ``high``), the MLP's last layer at zero.
    """

    hidden: Sequence[int] = (16,)
    activation: str = "tanh"
    low: float = 0.0
    high: float = 1.0
    init_scale: float = 1.0
    output: str = "linear"
    init_power: float = 0.0
    win_prob: bool = False  # obs[..., -1] is G(v), the chance that the own value is the highest (see the class doc)
    reserve: float = 0.0  # with win_prob: the reserve price r, a feature of the bid-space skip
    win_exponent: float = 0.0  # with win_prob: m = a(n − 1), G(v) = v^m, for the reserve's share ρ = r G(r)/G(v)
    features: tuple[str, ...] = SKIP_FEATURES  # with win_prob: the bid-space skip's features (a subset, in order)
    start: str = "vG"  # with win_prob: the skip feature that starts at init_scale (one of ``features``)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        if self.output == "log":
            return obs[..., 0] * self._log_head(obs, act)
        if self.output == "sigmoid":
            return obs[..., 0] * self._sigmoid_head(obs, act)
        residual = self._mlp(obs, act)
        if self.win_prob:  # in bid space: w·[r, v, v G(v), ρ] + v·MLP, at least low·v, no cap
            scale, v, g = self.init_scale, obs[..., 0], obs[..., -1]
            start = self.features.index(self.start)

            def kernel_init(key, shape, dtype=jnp.float32):
                return jnp.zeros(shape, dtype).at[start].set(scale)

            r, m = self.reserve, self.win_exponent  # ρ = r G(r)/G(max(v, r)) = r (r/max(v, r))^m: no 0/0 where
            share = r * (r / jnp.maximum(v, r)) ** m if r > 0 else jnp.zeros_like(v)  # r^m underflows (m = 36)
            every = {"r": jnp.full_like(v, r), "v": v, "vG": v * g, "rho": share}
            feats = jnp.stack([every[name] for name in self.features], axis=-1)
            skip = nn.Dense(1, use_bias=False, kernel_init=kernel_init)(feats)[..., 0]
            return jnp.maximum(skip + v * residual, self.low * v)  # no cap at the value: see the class doc
        skip_init = nn.initializers.constant(self.init_scale)
        skip = nn.Dense(1, kernel_init=nn.initializers.zeros, bias_init=skip_init)(obs)[..., 0]
        return obs[..., 0] * jnp.clip(skip + residual, self.low, self.high)

    def _mlp(self, x: jax.Array, act: Callable) -> jax.Array | float:
        """The MLP residual, its output layer started at zero; none (0) without hidden layers, where a linear layer
        on the features would only duplicate the skip (redundant directions that ES noise wanders along)."""
        if not self.hidden:
            return 0.0
        h = x
        for width in self.hidden:
            h = act(nn.Dense(width, kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "normal"))(h))
        return nn.Dense(1, kernel_init=nn.initializers.zeros)(h)[..., 0]

    def _sigmoid_head(self, obs: jax.Array, act: Callable) -> jax.Array:
        h = 2.0 * obs - 1.0
        for i, width in enumerate(self.hidden):
            init = nn.initializers.normal(1.0) if i == 0 else nn.initializers.variance_scaling(1.0, "fan_in", "normal")
            h = act(nn.Dense(width, kernel_init=init, bias_init=nn.initializers.normal(1.0) if i == 0 else
                             nn.initializers.zeros)(h))
        frac = min(max((self.init_scale - self.low) / (self.high - self.low), 1e-3), SIGMOID_START_MAX)
        z = nn.Dense(1, kernel_init=nn.initializers.zeros,
                     bias_init=nn.initializers.constant(math.log(frac / (1.0 - frac))))(h)[..., 0]
        return self.low + (self.high - self.low) * jax.nn.sigmoid(z)

    def _log_head(self, obs: jax.Array, act: Callable) -> jax.Array:
        base = obs[..., -1:] if self.win_prob else obs[..., :1]  # log G(v) or log v
        x = jnp.concatenate([obs, jnp.log(jnp.maximum(base, LOG_FLOOR))], axis=-1)
        residual = self._mlp(x, act)
        frac = min(max(self.init_scale / self.high, 1e-3), 1.0 - 1e-3)
        skip_init = nn.initializers.constant(-LOG_TEMP * math.log(math.expm1(-math.log(frac) / LOG_TEMP)))
        power = self.init_power

        def kernel_init(key, shape, dtype=jnp.float32):  # zero, except init_power on the log feature (last row)
            return jnp.zeros(shape, dtype).at[-1].set(power)

        skip = nn.Dense(1, kernel_init=kernel_init, bias_init=skip_init)(x)[..., 0]
        return self.high * jnp.exp(-LOG_TEMP * jax.nn.softplus(-(skip + residual) / LOG_TEMP))


def init_stack(module: Advocate, key: jax.Array, n_providers: int, obs_dim: int):
    """Parameters of ``n_providers`` providers, stacked on a leading axis (each initialised from its own key)."""
    keys = jax.random.split(key, n_providers)
    return jax.vmap(lambda k: module.init(k, jnp.zeros((1, obs_dim), jnp.float32)))(keys)


def take(stack, index: jax.Array):
    """The parameters of provider(s) ``index`` from a stack (``index`` scalar or ``i32[R]``)."""
    return jax.tree.map(lambda x: x[index], stack)


class ActorCritic(nn.Module):
    """``f32[..., d] → (mean f32[..., A], log_std f32[A], value f32[...])``: the PPO advocate of multi-round games.

    The actor is an MLP whose output layer starts near zero with biases ``init_bias`` (so every seat starts at the
    same, chosen actions), and the action distribution is a Gaussian in an unbounded space with a learned,
    state-independent log-sd, squashed into each action's bounded range by the environment's caller
    (:func:`coasejax.train.ppo.squash`). The critic is a separate MLP of the same widths.
    """

    hidden: Sequence[int] = (64, 64)
    n_actions: int = 4
    activation: str = "tanh"
    init_bias: tuple[float, ...] = ()
    init_log_std: float = -0.5

    @nn.compact
    def __call__(self, obs: jax.Array):
        act = ACTIVATIONS[self.activation]
        ortho = nn.initializers.orthogonal

        def torso(x, name):
            for i, width in enumerate(self.hidden):
                x = act(nn.Dense(width, kernel_init=ortho(math.sqrt(2.0)), name=f"{name}_{i}")(x))
            return x

        bias = jnp.asarray(self.init_bias or (0.0,) * self.n_actions, jnp.float32)
        mean = nn.Dense(self.n_actions, kernel_init=ortho(0.01), bias_init=lambda *_: bias,
                        name="actor_out")(torso(obs, "actor"))
        value = nn.Dense(1, kernel_init=ortho(1.0), name="critic_out")(torso(obs, "critic"))[..., 0]
        log_std = self.param("log_std", nn.initializers.constant(self.init_log_std), (self.n_actions,))
        return mean, log_std, value


class BoundedMLP(nn.Module):
    """``f32[..., d] → f32[..., A]``: ``low + (high − low)·sigmoid(MLP(obs) + b₀)``, the generic policy of a scenario
    whose actions are not multiples of a value. The output layer starts at zero and ``b₀`` at the logit of ``start``
    (the scenario's truthful action, clipped inside the range), so every seat starts at that action."""

    hidden: Sequence[int] = (16,)
    activation: str = "tanh"
    low: tuple[float, ...] = (0.0,)
    high: tuple[float, ...] = (1.0,)
    start: tuple[float, ...] = (0.5,)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        lo, hi = jnp.asarray(self.low, jnp.float32), jnp.asarray(self.high, jnp.float32)
        frac = jnp.clip((jnp.asarray(self.start, jnp.float32) - lo) / (hi - lo), 1e-3, 1 - 1e-3)
        h = obs
        for width in self.hidden:
            h = act(nn.Dense(width, kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "normal"))(h))
        z = nn.Dense(len(self.low), kernel_init=nn.initializers.zeros,
                     bias_init=lambda *_: jnp.log(frac) - jnp.log1p(-frac))(h)
        return lo + (hi - lo) * jax.nn.sigmoid(z)


def skip_start(fmt: str) -> str:
    """The skip feature that starts at ``policy.init_scale``: ``vG`` (from ``init_scale · v G(v)``) in the all-pay
    auction, ``v`` (from ``init_scale · v``) otherwise."""
    return "vG" if fmt == "all_pay" else "v"


def skip_features(fmt: str) -> tuple[str, ...]:
    """The ``policy.win_prob`` head's bid-space skip features for an auction format (:class:`Advocate`): the
    all-pay equilibrium ``r/(m+1) + m v G(v)/(m+1)`` needs ``r`` and ``v G(v)``, the first-price one
    ``m v/(m+1) + ρ/(m+1)`` needs ``v`` and ``ρ`` (second price: ``v``). Features outside the format's family are
    left out: in self-play ES drifts along them (the first price with ``r`` and ``v G(v)`` as well, started from
    truthful bids, drifted to bne_rmse 0.08 at n = 2, uniform, reserve 0.4; BENCHMARKS.md)."""
    return ("r", "v", "vG", "rho") if fmt == "all_pay" else ("v", "rho")


def make_advocate(cfg, params) -> Advocate:
    """The bidders' network of ``cfg`` (the one a checkpoint of this game holds parameters of); it acts on the
    observation :func:`observe` (and the auction scenario's ``observe``) gives."""
    return Advocate(hidden=tuple(cfg.policy.hidden), activation=cfg.policy.activation,
                    init_scale=cfg.policy.init_scale, output=cfg.policy.output, init_power=cfg.policy.init_power,
                    win_prob=cfg.policy.win_prob, reserve=cfg.env.reserve_price,
                    win_exponent=auction_env.win_exponent(params), features=skip_features(params.format),
                    start=skip_start(params.format), low=0.0, high=1.0)


def es_module(cfg, spec) -> nn.Module:
    """The generic advocate ES trains for a scenario with this :class:`coasejax.scenarios.base.Spec`: an
    :class:`Advocate` (the own value times a learned factor in ``[low, high]``, starting at ``init_scale``) for one
    action relative to the own value, else a :class:`BoundedMLP` starting at the truthful action. Its input is the
    seat's own observation only."""
    p = cfg.policy
    if spec.relative and len(spec.actions) == 1:
        return Advocate(hidden=tuple(p.hidden), activation=p.activation, init_scale=p.init_scale, output=p.output,
                        init_power=p.init_power, low=spec.low[0], high=spec.high[0])
    return BoundedMLP(hidden=tuple(p.hidden), activation=p.activation, low=tuple(spec.low), high=tuple(spec.high),
                      start=tuple(spec.truthful))


def act_with(module: nn.Module, params, obs: jax.Array) -> jax.Array:
    """``f32[S, N, A]``: the actions of an ES-trained ``module`` (an :class:`Advocate` returns ``[S, N]``)."""
    out = module.apply(params, obs)
    return out[..., None] if out.ndim == obs.ndim - 1 else out


def policy_apply(cfg, spec, params, algo: str):
    """``obs f32[S, N, d] → actions f32[S, N, A]`` of a trained policy (``params`` of one provider): ES policies act
    by their network; PPO policies by the mean of their Gaussian squashed into the action range,
    ``low + (high − low)·sigmoid(mean)``."""
    if algo == "ppo":
        module = ActorCritic(hidden=tuple(cfg.policy.hidden), n_actions=len(spec.actions),
                             activation=cfg.policy.activation)
        lo, hi = jnp.asarray(spec.low, jnp.float32), jnp.asarray(spec.high, jnp.float32)

        def apply(obs):
            mean, _, _ = module.apply(params, obs)
            act = lo + (hi - lo) * jax.nn.sigmoid(mean)
            return act * obs[..., :1] if spec.relative else act

        apply.roles = apply  # one network for every role
        return apply
    if cfg.env.kind == "auction":  # the auction game's own head (its features), one network for every seat
        module = make_advocate(cfg, auction_env.AuctionParams.from_config(cfg.env))
        return lambda obs: act_with(module, params, obs)
    module = es_module(cfg, spec)
    roles = spec.role_index()  # one network per seat role: params carry a leading role axis
    groups = [[s for s, r in enumerate(roles) if r == role] for role in sorted(set(roles))]
    order = [s for g in groups for s in g]
    inverse = [order.index(s) for s in range(len(roles))]

    def role_params(r):
        return jax.tree.map(lambda x: x[r], params)

    def apply(obs):
        parts = [act_with(module, role_params(role), obs[jnp.asarray(g)]) for role, g in enumerate(groups)]
        out = jnp.concatenate(parts) if len(parts) > 1 else parts[0]
        return out if order == list(range(len(roles))) else out[jnp.asarray(inverse)]

    def apply_roles(obs_agents):  # f32[R, N, d] -> f32[R, N, A]
        return jnp.stack([act_with(module, role_params(r), obs_agents[r]) for r in range(obs_agents.shape[0])])

    apply.roles = apply_roles
    return apply
