"""Proximal policy optimisation (Schulman et al. 2017) for any scenario of the interface
(:mod:`coasejax.scenarios.base`), with provider self-play.

This module holds no scenario-specific code: it drives the scenario's ``reset``, ``observe``, ``step``,
``seat_providers``, ``decisions``, ``discount`` and ``metrics`` and reads the layout and bounds of its :class:`Spec`.

Read top to bottom:
1. **Actions.** Each seat's advocate (:class:`coasejax.policies.ActorCritic`, parameters shared within a provider and
   stacked across providers) outputs the mean of a Gaussian ``z``; :func:`squash` maps ``z`` into each action's
   range, ``low + (high − low)·sigmoid(z)`` with ``(low, high)`` the spec's bounds (a logistic-normal distribution),
   times the seat's own value ``observation[0]`` where the spec is ``relative``. **The deployed policy** (``simulate``,
   ``compare``, evaluation) plays the mean: given one provider's parameter dict ``p`` of the checkpoint (a flax
   ``ActorCritic`` of ``policy.hidden`` and ``policy.activation``, ``len(spec.actions)`` outputs),
   ``mean, _, _ = ActorCritic(...).apply(p, obs)`` and the action is ``low + (high − low)·sigmoid(mean)`` (times
   ``obs[..., 0]`` where relative). The mean starts at the truthful action, in logits clipped to ±``INIT_LOGIT``
   (so that every field is explored: a truthful "always take part" of 1 starts at sigmoid(0.5) = 0.62).
   Log-probabilities are those of ``z`` and count only the action fields the seat's choice decides this round
   (``scenario.decisions``; None: all of them).
2. **Rollout.** ``train.rollout`` rounds of every seat under ``lax.scan``; the environment is continuing (bargains
   restart when their episode ends), so rollouts pick up where the last one stopped.
3. **GAE** (Schulman et al. 2016) per seat, with the seat's own discount factor (``scenario.discount``, default 0.99;
   in ``coase_rounds`` ``mechanism.discount_emitter`` or ``discount_victims``) and ``train.gae_lambda``,
   bootstrapped from the critic at the rollout's end.
4. **Update.** ``train.epochs`` passes of ``train.minibatches`` minibatches (contiguous blocks of the agent axis,
   taken in a random order each epoch: agents are exchangeable, so no permutation of the agent axis is needed) on the
   clipped objective plus ``train.value_coef`` × the value loss minus ``train.entropy_coef`` × the entropy. Every
   provider's loss covers its own seats only, so its gradient is its clients' interest. The action sd is learned, or,
   with ``train.final_log_std``, annealed linearly from ``train.init_log_std``: the mean of a noisy policy hedges
   against the other side's noise (a proposer demands less than the subgame-perfect share while responders'
   thresholds scatter), so the means reach the equilibrium only as the noise goes; scripted providers
   (``providers.advocate: truthful``) play the spec's truthful action and are not trained.
5. **Self-play with a pool.** Every ``train.pool_every`` iterations the current parameters enter a ring of
   ``train.pool_size`` snapshots; in a share ``train.pool_prob`` of the agent axis one seat (chosen at random) plays
   a snapshot drawn once per iteration, and is not trained on.
6. **Chunks** of iterations are scanned and ``vmap``ped over ``train.seeds``; iteration t draws from
   ``fold_in(key, t)``, so a run resumed from a checkpoint ends bit-identical to an uninterrupted one.
7. **Evaluation** (:meth:`PPO.metrics`) plays the mean actions in a fresh population for the scenario's
   ``params.burn_in`` rounds (default 0) and then ``env.eval_rounds`` measured rounds (default 64), and reports
   ``scenario.metrics`` of the metrics summed over the measured rounds (in ``coase_rounds``: the welfare keys of
   ``coasejax simulate``, the cost curve against its analytic counterpart, the first proposer's share against
   Rubinstein's, and each provider's market share and client utility).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from coasejax.policies import ActorCritic, take
from coasejax.scenarios.base import Scenario
from coasejax.train.es import optimizer, seed_keys

#: the initial pre-squash mean is the truthful action's logit, clipped to ±INIT_LOGIT
INIT_LOGIT = 0.5
#: the discount factor of a scenario without ``discount``
DEFAULT_DISCOUNT = 0.99
LOG_2PI = math.log(2 * math.pi)
#: the most seat-rounds whose activations one gradient pass keeps (:meth:`PPO.grads`: larger minibatches are split)
GRAD_ROWS = 2**15


def squash(z: jax.Array, low, high) -> jax.Array:
    """``f32[..., A]``: pre-squash Gaussian draws to actions in ``(low, high)``: ``low + (high − low)·sigmoid(z)``."""
    lo, hi = jnp.asarray(low, z.dtype), jnp.asarray(high, z.dtype)
    return lo + (hi - lo) * jax.nn.sigmoid(z)


def init_bias(spec) -> tuple[float, ...]:
    """The pre-squash mean each action starts at: the truthful action's logit within its bounds, clipped to
    ±:data:`INIT_LOGIT`."""
    out = []
    for lo, hi, t in zip(spec.low, spec.high, spec.truthful):
        f = min(max((t - lo) / (hi - lo), 1e-6), 1 - 1e-6)
        out.append(float(np.clip(math.log(f / (1 - f)), -INIT_LOGIT, INIT_LOGIT)))
    return tuple(out)


def log_prob(z, mean, log_std, use):
    """Log-density of ``z`` under the Gaussian, summed over the action fields in ``use``."""
    lp = -0.5 * ((z - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * LOG_2PI
    return jnp.sum(jnp.where(use, lp, 0.0), axis=-1)


class PPOState(NamedTuple):
    params: Any  # stacked parameters, leading provider axis M
    opt_state: Any
    key: jax.Array  # the run's key; iteration t uses fold_in(key, t)
    step: jax.Array  # i32[] iterations done
    env: Any  # the scenario's continuing state
    pool: Any  # stacked snapshots, leading axis max(pool_size, 1), then M
    pool_count: jax.Array  # i32[] snapshots taken


class StepMetrics(NamedTuple):
    utility: jax.Array  # f32[M] mean reward per seat and round of each provider's seats
    grad_norm: jax.Array  # f32[] global norm of the last minibatch's gradient
    provider_shares: jax.Array  # f32[M] share of the seats each provider holds at the rollout's end
    efficiency: jax.Array  # f32[] scenario.metrics' efficiency of the rollout (exploring play; nan if none)
    deal_rate: jax.Array  # f32[] scenario.metrics' deal rate of the rollout (nan if none)
    value_loss: jax.Array
    std: jax.Array  # f32[] mean action sd (pre-squash) over learned providers


class Rollout(NamedTuple):
    """What the update keeps of a rollout: only what cannot be recomputed. Observations, decision masks, seat
    providers and the trained mask are functions of the environment's state and the pool's choice of seats
    (:meth:`PPO.views`), so the state (smaller than its two seats' views) is kept and they are recomputed block by
    block in the update."""

    env: Any  # the scenario's state at the start of each round, leading axis T
    pooled: Any  # bool[S, N] the seats playing the pool's snapshot this iteration (None without a pool)
    z: jax.Array  # f32[T, S, N, A]
    logp: jax.Array  # f32[T, S, N]
    adv: jax.Array  # f32[T, S, N] (normalised)
    ret: jax.Array  # f32[T, S, N]


class Batch(NamedTuple):
    obs: jax.Array  # f32[T, S, N, D]
    z: jax.Array  # f32[T, S, N, A]
    use: jax.Array  # bool[T, S, N, A]
    logp: jax.Array  # f32[T, S, N]
    provider: jax.Array  # i32[T, S, N]
    trained: jax.Array  # bool[T, S, N]
    adv: jax.Array  # f32[T, S, N]
    ret: jax.Array  # f32[T, S, N]


def _norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(tree)))


def _sum_rounds(tree):
    return jax.tree.map(lambda x: jnp.sum(x, axis=0), tree)


class PPO:
    """The PPO algorithm for ``cfg`` (``train.algo: ppo``) on ``scenario`` (default: the registered scenario of
    ``env.kind``), with the interface :mod:`coasejax.train.run` drives: ``init_states``, ``make_chunk``,
    ``metrics``, ``log_row``, ``name``, ``n_providers``, ``agents_per_iteration`` and ``layout`` (the spec's, for
    the checkpoint's metadata)."""

    def __init__(self, cfg, scenario: Scenario | None = None):
        if scenario is None:
            from coasejax import scenarios

            scenario = scenarios.get(cfg.env.kind)
        self.cfg, self.tc, self.scenario = cfg, cfg.train, scenario
        self.params = scenario.params(cfg)
        self.spec = spec = scenario.spec(self.params)
        self.layout = spec.layout()
        obs = jax.eval_shape(lambda k: scenario.observe(self.params, scenario.reset(k, self.params)),
                             jax.random.PRNGKey(0))
        self.seats, self.n, self.obs_dim = obs.shape  # S, N, D
        self.n_actions = len(spec.actions)
        self.m = cfg.providers.count
        self.learned = jnp.asarray([a == "learned" for a in cfg.providers.advocates()])
        self.all_learned = all(a == "learned" for a in cfg.providers.advocates())
        self.module = ActorCritic(hidden=tuple(cfg.policy.hidden), n_actions=self.n_actions,
                                  activation=cfg.policy.activation, init_bias=init_bias(spec),
                                  init_log_std=self.tc.init_log_std)
        self.discount = (jnp.full((self.seats,), DEFAULT_DISCOUNT, jnp.float32) if scenario.discount is None
                         else jnp.asarray(scenario.discount(self.params), jnp.float32))
        self.burn_in = int(getattr(self.params, "burn_in", 0))
        self.eval_rounds = int(getattr(cfg.env, "eval_rounds", 64))
        self.name = f"{scenario.name}/{cfg.mechanism.kind}"
        self.n_providers = self.m
        self.agents_per_iteration = self.seats * self.n * self.tc.rollout  # seat decisions per iteration

    # -- the policy ---------------------------------------------------------------------------------------------------
    def log_std_at(self, step):
        """The scheduled log-sd at iteration ``step`` (``train.final_log_std`` set: linear from
        ``train.init_log_std``), or None when the log-sd is learned."""
        tc = self.tc
        if tc.final_log_std is None:
            return None
        frac = jnp.minimum(step.astype(jnp.float32) / max(tc.iterations - 1, 1), 1.0)
        return tc.init_log_std + frac * (tc.final_log_std - tc.init_log_std)

    def forward(self, stack, obs, provider, log_std=None):
        """Mean, log-sd (broadcast to ``mean``; the scheduled ``log_std`` if given) and value of every seat under its
        provider's parameters."""
        if self.m == 1:
            mean, ls, value = self.module.apply(take(stack, 0), obs)
            ls = jnp.broadcast_to(ls, mean.shape)
        else:
            means, log_stds, values = jax.vmap(lambda p: self.module.apply(p, obs))(stack)
            hot = provider[None] == jnp.arange(self.m).reshape((-1,) + (1,) * provider.ndim)
            mean = jnp.sum(jnp.where(hot[..., None], means, 0.0), axis=0)
            value = jnp.sum(jnp.where(hot, values, 0.0), axis=0)
            ls = log_stds[provider]
        if log_std is not None:
            ls = jnp.full_like(mean, log_std)
        return mean, ls, value

    def actions(self, z, obs):
        """The actions of pre-squash ``z``: ``low + (high − low)·sigmoid(z)``, times the seat's own value
        ``obs[..., 0]`` where the spec is relative."""
        acts = squash(z, self.spec.low, self.spec.high)
        return acts * obs[..., :1] if self.spec.relative else acts

    def truthful(self, obs):
        t = jnp.asarray(self.spec.truthful, jnp.float32)
        return t * obs[..., :1] if self.spec.relative else jnp.broadcast_to(t, obs.shape[:-1] + t.shape)

    def act(self, stack, obs, provider, eps, log_std=None, learned=None):
        """Pre-squash draws ``z`` (``eps`` None: the means), their actions, the distribution and the values;
        providers not ``learned`` (default: per ``providers.advocate``) play the spec's truthful action."""
        mean, log_std, value = self.forward(stack, obs, provider, log_std)
        z = mean if eps is None else mean + jnp.exp(log_std) * eps
        acts = self.actions(z, obs)
        if learned is not None or not self.all_learned:
            scripted = ~(self.learned if learned is None else learned)[provider]
            acts = jnp.where(scripted[..., None], self.truthful(obs).astype(acts.dtype), acts)
        return z, acts, mean, log_std, value

    def decisions(self, es):
        if self.scenario.decisions is None:
            return jnp.ones((self.seats, self.n, self.n_actions), bool)
        return self.scenario.decisions(self.params, es)

    def views(self, es, pooled=None):
        """Each seat's observation ``f32[S, N, D]``, decided fields ``bool[S, N, A]``, provider ``i32[S, N]`` and
        whether it is trained ``bool[S, N]`` (a learned provider's, not a pooled seat) in state ``es``."""
        p, sc = self.params, self.scenario
        prov = sc.seat_providers(p, es)
        trained = self.learned[prov]
        if pooled is not None:
            trained = trained & ~pooled
        return sc.observe(p, es), self.decisions(es), prov, trained

    def summary(self, summed) -> dict:
        """``scenario.metrics`` of metrics summed over rounds (without it: the summed fields themselves)."""
        if self.scenario.metrics is None:
            return dict(summed._asdict()) if hasattr(summed, "_asdict") else {"metrics": summed}
        return self.scenario.metrics(self.params, summed)

    # -- initial state ------------------------------------------------------------------------------------------------
    def init(self, key):
        k_init, k_env, k_run = jax.random.split(key, 3)
        dummy = jnp.zeros((1, self.obs_dim), jnp.float32)
        stack = jax.vmap(lambda k: self.module.init(k, dummy))(jax.random.split(k_init, self.m))
        pool = jax.tree.map(lambda x: jnp.broadcast_to(x, (max(self.tc.pool_size, 1),) + x.shape), stack)
        return PPOState(stack, optimizer(self.tc).init(stack), k_run, jnp.zeros((), jnp.int32),
                        self.scenario.reset(k_env, self.params), pool, jnp.zeros((), jnp.int32))

    def init_states(self):
        return jax.vmap(self.init)(seed_keys(self.tc))

    # -- rollout ------------------------------------------------------------------------------------------------------
    def rollout(self, state: PPOState, key):
        tc, p, sc = self.tc, self.params, self.scenario
        k_pool, k_steps = jax.random.split(key)
        ls = self.log_std_at(state.step)
        use_pool = tc.pool_size > 0 and tc.pool_prob > 0
        pooled = None
        if use_pool:  # one snapshot per iteration; one seat of a share pool_prob of the agent axis plays it
            kp = jax.random.split(k_pool, 3)
            which = jax.random.randint(kp[0], (), 0, jnp.maximum(jnp.minimum(state.pool_count, tc.pool_size), 1))
            snapshot = take(state.pool, which)
            side = jax.random.randint(kp[1], (self.n,), 0, self.seats)
            pooled = jax.random.bernoulli(kp[2], tc.pool_prob, (self.n,)) & (state.pool_count > 0)
            pooled = jnp.stack([pooled & (side == s) for s in range(self.seats)])

        def body(es, t):
            k_act, k_env = jax.random.split(jax.random.fold_in(k_steps, t))
            obs, use, prov, trained = self.views(es, pooled)
            eps = jax.random.normal(k_act, use.shape, jnp.float32)
            z, acts, mean, log_std, value = self.act(state.params, obs, prov, eps, ls)
            if use_pool:
                _, acts_p, *_ = self.act(snapshot, obs, prov, eps, ls)
                acts = jnp.where(pooled[..., None], acts_p, acts)
            logp = log_prob(z, mean, log_std, use)
            acted = trained & jnp.any(use, axis=-1)
            es2, tr = sc.step(k_env, es, acts, p)
            seat_r = jnp.stack([jnp.sum(jnp.where(prov == j, tr.reward, 0.0)) for j in range(self.m)])
            seats = jnp.stack([jnp.sum((prov == j).astype(jnp.float32)) for j in range(self.m)])
            return es2, (es, z, logp, acted, value, tr.reward, tr.done, seat_r, seats, tr.metrics)

        es, out = jax.lax.scan(body, state.env, jnp.arange(tc.rollout))
        states, z, logp, acted, value, reward, done, seat_r, seats, metrics = out
        _, _, last_value = self.forward(state.params, sc.observe(p, es), sc.seat_providers(p, es))
        return es, (states, pooled, z, logp, acted, value, reward, done, last_value), (seat_r, seats, metrics)

    # -- advantages ---------------------------------------------------------------------------------------------------
    def gae(self, value, reward, done, last_value):
        """Advantages and returns, ``f32[T, S, N]``, each seat discounted by its own factor; ``done`` is
        ``bool[T, N]`` (every seat of an agent-axis entry at once) or ``bool[T, S, N]``."""
        gamma = self.discount[:, None]  # f32[S, 1]
        lam = self.tc.gae_lambda
        if done.ndim == reward.ndim - 1:
            done = done[:, None, :]
        live = 1.0 - done.astype(jnp.float32)  # the episode goes on after round t

        def body(carry, x):
            adv_next, v_next = carry
            v, r, keep = x
            delta = r + gamma * v_next * keep - v
            adv = delta + gamma * lam * keep * adv_next
            return (adv, v), adv

        _, adv = jax.lax.scan(body, (jnp.zeros_like(last_value), last_value), (value, reward, live), reverse=True)
        return adv, adv + value

    # -- update -------------------------------------------------------------------------------------------------------
    def loss(self, params, b: Batch, log_std_now=None, counts=None, valid=None):
        """The minibatch's loss and value loss. With ``counts`` (the minibatch's acted and trained seat-rounds) and
        ``valid`` (``bool[B]``, the bargains of ``b`` that are this part's), the part of a minibatch split into
        sub-blocks: the policy and value terms summed over ``b``'s valid bargains and divided by the whole
        minibatch's counts, without the entropy term (:meth:`grads`)."""
        tc = self.tc
        mean, log_std, value = self.forward(params, b.obs, b.provider, log_std_now)
        ratio = jnp.exp(log_prob(b.z, mean, log_std, b.use) - b.logp)
        acted = (b.trained & jnp.any(b.use, axis=-1)).astype(jnp.float32)
        weight = b.trained.astype(jnp.float32)
        if valid is not None:
            acted, weight = acted * valid, weight * valid
        n_acted, n_weight = (jnp.sum(acted), jnp.sum(weight)) if counts is None else counts
        surrogate = jnp.minimum(ratio * b.adv, jnp.clip(ratio, 1 - tc.clip_eps, 1 + tc.clip_eps) * b.adv)
        policy_loss = -jnp.sum(surrogate * acted) / jnp.maximum(n_acted, 1.0)
        value_loss = 0.5 * jnp.sum((value - b.ret) ** 2 * weight) / jnp.maximum(n_weight, 1.0)
        if counts is not None:
            return policy_loss + tc.value_coef * value_loss, value_loss
        return policy_loss + tc.value_coef * value_loss - tc.entropy_coef * self.entropy(params), value_loss

    def entropy(self, params):
        stds = params["params"]["log_std"]  # f32[M, A]
        return jnp.mean(jnp.sum(stds + 0.5 * (LOG_2PI + 1.0), axis=-1))

    def grads(self, params, mb: Batch, log_std=None):
        """``(grads, value loss)`` of the minibatch ``mb`` (``[T, S, B, ...]``). A minibatch of more than
        :data:`GRAD_ROWS` seat-rounds is split into sub-blocks of the agent axis whose gradients are summed (the last
        one overlaps the one before it, its repeated bargains masked out), so the activations kept for the backward
        pass are those of one sub-block: the same gradient up to the order of the float sums."""
        t, s, b = mb.adv.shape
        size = max(GRAD_ROWS // (t * s), 1)
        if size >= b:
            (_, vloss), g = jax.value_and_grad(self.loss, has_aux=True)(params, mb, log_std)
            return g, vloss
        parts = -(-b // size)
        counts = (jnp.sum(mb.trained & jnp.any(mb.use, axis=-1)).astype(jnp.float32),
                  jnp.sum(mb.trained).astype(jnp.float32))
        part_grad = jax.value_and_grad(self.loss, has_aux=True)

        def body(carry, j):
            g_sum, v_sum = carry
            start = jnp.minimum(j * size, b - size)
            sub = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, size, axis=2), mb)
            valid = (start + jnp.arange(size)) >= j * size
            (_, vloss), g = part_grad(params, sub, log_std, counts, valid.astype(jnp.float32))
            return (jax.tree.map(jnp.add, g_sum, g), v_sum + vloss), None

        zero = (jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.float32))
        (g, vloss), _ = jax.lax.scan(body, zero, jnp.arange(parts))
        g_ent = jax.grad(lambda q: -self.tc.entropy_coef * self.entropy(q))(params)
        return jax.tree.map(jnp.add, g, g_ent), vloss

    def minibatch(self, data: Rollout, i) -> Batch:
        """Minibatch ``i`` of ``train.minibatches``: the contiguous block ``i`` of the agent axis, every round and seat,
        its observations, masks and providers recomputed round by round from the kept states (a scan: no more than
        one round's full views are live at a time)."""
        size = self.n // self.tc.minibatches
        start = i * size
        cut = lambda x: jax.lax.dynamic_slice_in_dim(x, start, size, axis=1)  # noqa: E731  [S, N, ...] -> [S, B, ...]

        def views(_, es):
            return None, tuple(cut(x) for x in self.views(es, data.pooled))

        _, (obs, use, prov, trained) = jax.lax.scan(views, None, data.env)
        cut_t = lambda x: jax.lax.dynamic_slice_in_dim(x, start, size, axis=2)  # noqa: E731
        return Batch(obs, cut_t(data.z), use, cut_t(data.logp), prov, trained, cut_t(data.adv), cut_t(data.ret))

    def update(self, params, opt_state, data: Rollout, key, log_std=None):
        tc = self.tc
        nb = tc.minibatches
        opt = optimizer(tc)

        def minibatch(carry, i):
            params, opt_state = carry
            grads, vloss = self.grads(params, self.minibatch(data, i), log_std)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), (_norm(grads), vloss)

        def epoch(carry, k):
            return jax.lax.scan(minibatch, carry, jax.random.permutation(k, nb))

        (params, opt_state), (gnorm, vloss) = jax.lax.scan(epoch, (params, opt_state),
                                                            jax.random.split(key, tc.epochs))
        return params, opt_state, gnorm[-1, -1], jnp.mean(vloss)

    # -- one iteration ------------------------------------------------------------------------------------------------
    def iteration(self, state: PPOState):
        tc = self.tc
        key = jax.random.fold_in(state.key, state.step)
        k_roll, k_upd = jax.random.split(key)
        es, (states, pooled, z, logp, acted, value, reward, done, last_value), (seat_r, seats, rounds) = \
            self.rollout(state, k_roll)
        adv, ret = self.gae(value, reward, done, last_value)
        count = jnp.maximum(jnp.sum(acted), 1)
        mu = jnp.sum(jnp.where(acted, adv, 0.0)) / count
        sd = jnp.sqrt(jnp.sum(jnp.where(acted, (adv - mu) ** 2, 0.0)) / count)
        adv = (adv - mu) / (sd + 1e-8)
        data = Rollout(states, pooled, z, logp, adv, ret)
        params, opt_state, gnorm, vloss = self.update(state.params, state.opt_state, data, k_upd,
                                                      self.log_std_at(state.step))
        step = state.step + 1
        pool, pool_count = state.pool, state.pool_count
        if tc.pool_size > 0:
            snap = (step % tc.pool_every) == 0
            slot = pool_count % tc.pool_size
            pool = jax.tree.map(lambda pl, x: jnp.where(snap, pl.at[slot].set(x), pl), pool, params)
            pool_count = pool_count + snap.astype(jnp.int32)
        new = PPOState(params, opt_state, state.key, step, es, pool, pool_count)
        seat_r, seats = jnp.sum(seat_r, 0), jnp.sum(seats, 0)
        ev = self.summary(_sum_rounds(rounds))
        nan = jnp.float32(jnp.nan)
        prov_end = self.scenario.seat_providers(self.params, es)
        shares = jnp.stack([jnp.mean((prov_end == j).astype(jnp.float32)) for j in range(self.m)])
        log_std = params["params"]["log_std"]
        if tc.final_log_std is not None:
            log_std = jnp.full_like(log_std, self.log_std_at(state.step))
        std = jnp.sum(jnp.where(self.learned[:, None], jnp.exp(log_std), 0.0)) / jnp.maximum(
            jnp.sum(self.learned) * log_std.shape[-1], 1)
        metrics = StepMetrics(utility=seat_r / jnp.maximum(seats, 1.0), grad_norm=gnorm, provider_shares=shares,
                              efficiency=jnp.asarray(ev.get("efficiency", nan), jnp.float32),
                              deal_rate=jnp.asarray(ev.get("deal_rate", nan), jnp.float32), value_loss=vloss,
                              std=std)
        return new, metrics

    def make_chunk(self, length: int):
        """A jitted ``states → (states, StepMetrics[S, length, ...])`` of ``length`` iterations for every seed."""

        def one_seed(state):
            return jax.lax.scan(lambda s, _: self.iteration(s), state, None, length=length)

        return jax.jit(jax.vmap(one_seed), donate_argnums=0)

    def log_row(self, m: StepMetrics) -> dict:
        """The metrics.jsonl fields of a chunk's last iteration (mean over seeds)."""
        last = lambda x: np.asarray(x)[:, -1]  # noqa: E731
        optional = {"train_efficiency": float(np.mean(last(m.efficiency))),  # nan where the scenario has none:
                    "train_deal_rate": float(np.mean(last(m.deal_rate)))}  # left out (metrics.jsonl is strict JSON)
        return {"train_utility": float(np.mean(last(m.utility))), "grad_norm": float(np.mean(last(m.grad_norm))),
                **{k: v for k, v in optional.items() if np.isfinite(v)},
                "value_loss": float(np.mean(last(m.value_loss))), "action_sd": float(np.mean(last(m.std))),
                "train_provider_utility": np.mean(last(m.utility), axis=0).tolist(),
                "train_provider_shares": np.mean(last(m.provider_shares), axis=0).tolist()}

    # -- evaluation ---------------------------------------------------------------------------------------------------
    def play(self, key, stacks, n: int | None = None, rounds: int | None = None, burn_in: int | None = None,
             provider=None, learned=None):
        """Mean actions of ``stacks`` (providers' parameters; ``learned``: which of them are not scripted) for
        ``burn_in`` (default the scenario's) + ``rounds`` (default ``env.eval_rounds``) rounds of a fresh population
        of the scenario (``n``, if given, must be its size; ``provider``: the initial assignment, for states with a
        ``provider`` field, default the scenario's). Returns the scenario's metrics summed over the measured rounds
        (in ``coase_rounds`` a ``(totals, providers)`` NamedTuple)."""
        p, sc = self.params, self.scenario
        if n is not None and n != self.n:
            raise ValueError(f"play: the scenario has {self.n} agents, not {n} (set population.n_agents)")
        rounds = self.eval_rounds if rounds is None else rounds
        burn_in = self.burn_in if burn_in is None else burn_in
        k_reset, k_run = jax.random.split(key)
        state = sc.reset(k_reset, p)
        if provider is not None:
            state = state.replace(provider=provider)

        def body(es, t):
            obs = sc.observe(p, es)
            prov = sc.seat_providers(p, es)
            _, acts, *_ = self.act(stacks, obs, prov, None, learned=learned)
            es2, tr = sc.step(jax.random.fold_in(k_run, t), es, acts, p)
            on = t >= burn_in
            return es2, jax.tree.map(lambda x: jnp.where(on, x, jnp.zeros_like(x)), tr.metrics)

        _, per_round = jax.lax.scan(body, state, jnp.arange(burn_in + rounds))
        return _sum_rounds(per_round)

    def metrics(self, key, stack) -> dict:
        """Evaluation of the mean actions of ``stack`` in a fresh population: ``scenario.metrics`` of the measured
        rounds, and ``utility_loss_rel`` (with ``utility_loss_rel_by_seat``) against the grid best response
        (:meth:`exploitability`)."""
        k_play, k_dev = jax.random.split(key)
        out = dict(self.summary(self.play(k_play, stack)))
        out["utility_loss_rel"], out["utility_loss_rel_by_seat"] = self.exploitability(k_dev, stack)
        return out

    def strategy(self, params) -> list[dict]:
        """Figure panels of the learned strategies of ``params`` (``states.params``: a leading seed axis, then the
        providers): the scenario module's ``strategy_panels(scenario params, policies)`` with ``policies`` a list of
        ``(seed, label, act)``, ``act`` mapping an observation ``f32[S, N, D]`` to the mean actions of one learned
        provider in every seat (in ``coase_rounds``: demands and acceptance thresholds by offer beside Rubinstein's);
        ``[]`` for a scenario without panels. Each panel is ``{"title", "xlabel", "ylabel", "series": [{"label", "x",
        "y", "kind": "learned" | "theory", "seed"}], "yscale"}``."""
        import importlib

        panels = getattr(importlib.import_module(self.scenario.reset.__module__), "strategy_panels", None)
        if panels is None:
            return []
        act = jax.jit(lambda stack, obs, j: self.act(stack, obs, jnp.full(obs.shape[:-1], j, jnp.int32), None)[1])
        seeds = jax.tree.leaves(params)[0].shape[0]
        providers = [j for j in range(self.m) if bool(self.learned[j])]
        policies = [(s, f" (provider {j})" if self.m > 1 else "", lambda obs, s=s, j=j: act(take(params, s), obs, j))
                    for s in range(seeds) for j in providers]
        return panels(self.params, policies)

    def deviation_returns(self, key, stack, state0, value=None, seat=None, field=None):
        """``f32[S, N]``: each seat's discounted return (its own discount factor) over ``train.rollout`` rounds of mean
        play from ``state0``; with ``seat`` and ``field``, the deviators' seats ``seat`` (one agent-axis entry in every
        ``2S + 1``) play ``value`` (``f32[N]``, in the field's units; a ratio of ``obs[..., 0]`` where the spec is
        relative) in action field ``field`` every round, all else their means (``seat`` may be traced; ``S``: nobody
        deviates)."""
        p, sc = self.params, self.scenario
        stride = 2 * self.seats + 1
        deviator = (jnp.arange(self.n) % stride) == 0

        def body(carry, t):
            es, weight = carry
            obs = sc.observe(p, es)
            _, acts, *_ = self.act(stack, obs, sc.seat_providers(p, es), None)
            if seat is not None:
                v = value[None, :] * (obs[..., 0] if self.spec.relative else 1.0)
                mine = ((jnp.arange(self.seats) == seat)[:, None] & deviator[None, :])[..., None]
                acts = jnp.where(mine & (jnp.arange(self.n_actions) == field), v[..., None], acts)
            es2, tr = sc.step(jax.random.fold_in(key, t), es, acts, p)
            return (es2, weight * self.discount[:, None]), weight * tr.reward

        _, rewards = jax.lax.scan(body, (state0, jnp.ones((self.seats, 1), jnp.float32)),
                                  jnp.arange(self.tc.rollout))
        return jnp.sum(rewards, axis=0)

    def exploitability(self, key, stack):
        """``(utility_loss_rel, utility_loss_rel_by_seat f32[S])``: what a seat would gain by the best constant
        deviation, all else the learned mean play.

        For every seat s and action field f, one agent-axis entry in every ``2S + 1`` (so no two deviators share a
        bargain of the ring scenarios) plays a constant in field f — ``G = min(train.eval_grid, 41)`` values evenly
        spaced over the field's range, deviator j taking value ``j mod G`` — and its other fields and every other
        seat their means, for ``train.rollout`` rounds from a fresh population, on the same draws as the learned play
        (common random numbers). A value's gain is the deviators' mean discounted return minus what the same seats
        earn in the learned play; seat s's best gain ``b_s`` is the largest over fields and values (0 if none
        gains). ``utility_loss_rel = Σ_s b_s / Σ_s |U_s + b_s|`` (``U_s``: the deviators' mean learned return), and
        per seat ``b_s / |U_s + b_s|``: 0 when no constant deviation pays, the share of its best-reply utility a seat
        gives away otherwise."""
        sc, p = self.scenario, self.params
        k_reset, k_run = jax.random.split(key)
        state0 = sc.reset(k_reset, p)
        g = min(self.tc.eval_grid, 41)
        stride = 2 * self.seats + 1
        deviator = (jnp.arange(self.n) % stride) == 0
        slot = (jnp.arange(self.n) // stride) % g  # i32[N]: the grid value each deviator plays
        hot = (slot[None, :] == jnp.arange(g)[:, None]) & deviator[None, :]  # bool[G, N]
        count = jnp.maximum(jnp.sum(hot, axis=1), 1)
        low, high = (jnp.asarray(b, jnp.float32) for b in (self.spec.low, self.spec.high))
        pairs = jnp.stack(jnp.meshgrid(jnp.arange(self.seats), jnp.arange(self.n_actions), indexing="ij"), -1)
        pairs = jnp.concatenate([jnp.asarray([[self.seats, 0]]), pairs.reshape(-1, 2)])  # first: no deviator

        def returns(pair):  # one compiled rollout for the learned play (seat S: nobody deviates) and every deviation
            seat, field = pair[0], pair[1]
            value = low[field] + (high[field] - low[field]) * slot / max(g - 1, 1)
            return self.deviation_returns(k_run, stack, state0, value, seat, field)

        runs = jax.lax.map(returns, pairs)  # f32[1 + S·A, S, N]
        base = runs[0]
        dev = runs[1:].reshape((self.seats, self.n_actions) + base.shape)
        diff = dev[jnp.arange(self.seats), :, jnp.arange(self.seats)] - base[:, None, :]  # f32[S, A, N]
        gains = jnp.max(jnp.einsum("gn,san->sag", hot.astype(jnp.float32), diff) / count, axis=-1)  # f32[S, A]
        best = jnp.maximum(jnp.max(gains, axis=1), 0.0)  # f32[S]
        learned = jnp.sum(jnp.where(deviator[None, :], base, 0.0), axis=1) / jnp.maximum(jnp.sum(deviator), 1)
        denom = jnp.abs(learned + best)
        return (jnp.sum(best) / jnp.maximum(jnp.sum(denom), 1e-12), best / jnp.maximum(denom, 1e-12))
