"""Proximal policy optimisation (Schulman et al. 2017) for the multi-round Coase scenario, with provider self-play.

Read top to bottom:
1. **Actions.** Each seat's advocate (:class:`coasejax.policies.ActorCritic`, parameters shared within a provider and
   stacked across providers) outputs the mean of a Gaussian ``z``; :func:`squash` maps ``z`` into each action's
   bounded range (a logistic-normal distribution). Log-probabilities are those of ``z`` and count only the action
   fields the seat's choice decides this round (:func:`coasejax.envs.negotiation.decisions`).
2. **Rollout.** ``train.rollout`` rounds of every bargain under ``lax.scan``; the environment is continuing (bargains
   restart when their episode ends), so rollouts pick up where the last one stopped.
3. **GAE** (Schulman et al. 2016) per seat, with the seat's own discount factor (``mechanism.discount_emitter`` or
   ``discount_victims``) and ``train.gae_lambda``, bootstrapped from the critic at the rollout's end.
4. **Update.** ``train.epochs`` passes of ``train.minibatches`` minibatches (contiguous blocks of bargains, taken in a
   random order each epoch: bargains are exchangeable, so no permutation of the agent axis is needed) on the clipped
   objective plus ``train.value_coef`` × the value loss minus ``train.entropy_coef`` × the entropy. Every provider's
   loss covers its own seats only, so its gradient is its clients' interest. The action sd is learned, or, with
   ``train.final_log_std``, annealed linearly from ``train.init_log_std``: the mean of a noisy policy hedges against
   the other side's noise (a proposer demands less than the subgame-perfect share while responders' thresholds
   scatter), so the means reach the equilibrium only as the noise goes; scripted providers
   (``providers.advocate: truthful``) play :data:`coasejax.envs.negotiation.TRUTHFUL_ACTION` and are not trained.
5. **Self-play with a pool.** Every ``train.pool_every`` iterations the current parameters enter a ring of
   ``train.pool_size`` snapshots; in a share ``train.pool_prob`` of bargains one side (chosen at random) plays a
   snapshot drawn once per iteration, and is not trained on.
6. **Chunks** of iterations are scanned and ``vmap``ped over ``train.seeds``; iteration t draws from
   ``fold_in(key, t)``, so a run resumed from a checkpoint ends bit-identical to an uninterrupted one.
7. **Evaluation** (:meth:`PPO.metrics`) plays the mean actions in a fresh population and reports the welfare keys of
   ``coasejax simulate``, the cost curve against its analytic counterpart, the first proposer's share against
   Rubinstein's, and each provider's market share and client utility.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from coasejax.envs import negotiation as env
from coasejax.policies import ActorCritic, take
from coasejax.train.es import optimizer, seed_keys

#: upper end of each action's range (lower ends are 0): demand, threshold, report ratio, participation
HIGH = (1.0, 1.0, 2.0, 1.0)
#: the pre-squash mean each action starts at: an equal split, truthful reports, taking part (sigmoid(0.5) = 0.62,
#: so that sitting out is explored: with the initial sd 0.61 a seat draws z < 0 a fifth of the time)
INIT_BIAS = (0.0, 0.0, 0.0, 0.5)
LOG_2PI = math.log(2 * math.pi)


def squash(z: jax.Array) -> jax.Array:
    """``f32[..., A]``: pre-squash Gaussian draws to actions in ``(0, HIGH)``."""
    return jnp.asarray(HIGH, z.dtype) * jax.nn.sigmoid(z)


def log_prob(z, mean, log_std, use):
    """Log-density of ``z`` under the Gaussian, summed over the action fields in ``use``."""
    lp = -0.5 * ((z - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * LOG_2PI
    return jnp.sum(jnp.where(use, lp, 0.0), axis=-1)


class PPOState(NamedTuple):
    params: Any  # stacked parameters, leading provider axis M
    opt_state: Any
    key: jax.Array  # the run's key; iteration t uses fold_in(key, t)
    step: jax.Array  # i32[] iterations done
    env: env.State  # the continuing environment
    pool: Any  # stacked snapshots, leading axis max(pool_size, 1), then M
    pool_count: jax.Array  # i32[] snapshots taken


class StepMetrics(NamedTuple):
    utility: jax.Array  # f32[M] mean reward per seat and round of each provider's seats
    grad_norm: jax.Array  # f32[] global norm of the last minibatch's gradient
    provider_shares: jax.Array  # f32[M] share of clients at the rollout's end
    efficiency: jax.Array  # f32[] (W − W_sq)/(W* − W_sq) of the rollout (exploring play)
    deal_rate: jax.Array  # f32[] agreements per negotiation opened in the rollout
    value_loss: jax.Array
    std: jax.Array  # f32[] mean action sd (pre-squash) over learned providers


class Batch(NamedTuple):
    obs: jax.Array  # f32[T, 2, N, D]
    z: jax.Array  # f32[T, 2, N, A]
    use: jax.Array  # bool[T, 2, N, A]
    logp: jax.Array  # f32[T, 2, N]
    provider: jax.Array  # i32[T, 2, N]
    trained: jax.Array  # bool[T, 2, N]
    adv: jax.Array  # f32[T, 2, N]
    ret: jax.Array  # f32[T, 2, N]


def _norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(tree)))


class PPO:
    """The PPO algorithm for ``cfg`` (``train.algo: ppo``, ``env.kind: coase_rounds``), with the interface
    :mod:`coasejax.train.run` drives: ``init_states``, ``make_chunk``, ``metrics``, ``log_row``."""

    def __init__(self, cfg):
        self.cfg, self.tc = cfg, cfg.train
        self.params = env.Params.from_config(cfg)
        self.n = cfg.population.n_agents
        self.m = cfg.providers.count
        self.learned = jnp.asarray([a == "learned" for a in cfg.providers.advocates()])
        self.all_learned = all(a == "learned" for a in cfg.providers.advocates())
        self.module = ActorCritic(hidden=tuple(cfg.policy.hidden), n_actions=len(env.ACTIONS),
                                  activation=cfg.policy.activation, init_bias=INIT_BIAS,
                                  init_log_std=self.tc.init_log_std)
        self.name = f"coase_rounds/{cfg.mechanism.kind}"
        self.n_providers = self.m
        self.agents_per_iteration = 2 * self.n * self.tc.rollout  # seat decisions per iteration
        self.obs_dim = len(env.OBSERVATION)

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

    def act(self, stack, obs, provider, eps, log_std=None, learned=None):
        """Pre-squash draws ``z`` (``eps`` None: the means), their actions, the distribution and the values;
        providers not ``learned`` (default: per ``providers.advocate``) play the scripted truthful action."""
        mean, log_std, value = self.forward(stack, obs, provider, log_std)
        z = mean if eps is None else mean + jnp.exp(log_std) * eps
        acts = squash(z)
        if learned is not None or not self.all_learned:
            scripted = ~(self.learned if learned is None else learned)[provider]
            acts = jnp.where(scripted[..., None], jnp.asarray(env.TRUTHFUL_ACTION, acts.dtype), acts)
        return z, acts, mean, log_std, value

    # -- initial state ------------------------------------------------------------------------------------------------
    def init(self, key):
        k_init, k_env, k_run = jax.random.split(key, 3)
        dummy = jnp.zeros((1, self.obs_dim), jnp.float32)
        stack = jax.vmap(lambda k: self.module.init(k, dummy))(jax.random.split(k_init, self.m))
        pool = jax.tree.map(lambda x: jnp.broadcast_to(x, (max(self.tc.pool_size, 1),) + x.shape), stack)
        return PPOState(stack, optimizer(self.tc).init(stack), k_run, jnp.zeros((), jnp.int32),
                        env.reset(k_env, self.params, self.n), pool, jnp.zeros((), jnp.int32))

    def init_states(self):
        return jax.vmap(self.init)(seed_keys(self.tc))

    # -- rollout ------------------------------------------------------------------------------------------------------
    def rollout(self, state: PPOState, key):
        tc, p = self.tc, self.params
        k_pool, k_steps = jax.random.split(key)
        ls = self.log_std_at(state.step)
        use_pool = tc.pool_size > 0 and tc.pool_prob > 0
        if use_pool:  # one snapshot per iteration; one side of a share pool_prob of the bargains plays it
            kp = jax.random.split(k_pool, 3)
            which = jax.random.randint(kp[0], (), 0, jnp.maximum(jnp.minimum(state.pool_count, tc.pool_size), 1))
            snapshot = take(state.pool, which)
            side = jax.random.bernoulli(kp[1], 0.5, (self.n,))
            pooled = jax.random.bernoulli(kp[2], tc.pool_prob, (self.n,)) & (state.pool_count > 0)
            pooled = jnp.stack([pooled & ~side, pooled & side])

        def body(es, t):
            k_act, k_env = jax.random.split(jax.random.fold_in(k_steps, t))
            obs = env.observe(p, es)
            use = env.decisions(p, es)
            prov = env.seat_providers(es)
            eps = jax.random.normal(k_act, use.shape, jnp.float32)
            z, acts, mean, log_std, value = self.act(state.params, obs, prov, eps, ls)
            trained = self.learned[prov]
            if use_pool:
                _, acts_p, *_ = self.act(snapshot, obs, prov, eps, ls)
                acts = jnp.where(pooled[..., None], acts_p, acts)
                trained = trained & ~pooled
            logp = log_prob(z, mean, log_std, use)
            es2, r = env.step(k_env, es, p, acts)
            seat_r = jnp.stack([jnp.sum(jnp.where(prov == j, r.reward, 0.0)) for j in range(self.m)])
            tot = jnp.stack([jnp.sum(r.gain), jnp.sum(r.gain_star), jnp.sum(r.started.astype(jnp.float32)),
                             jnp.sum(r.agreed.astype(jnp.float32))])
            seats = jnp.stack([jnp.sum((prov == j).astype(jnp.float32)) for j in range(self.m)])
            return es2, (obs, z, use, logp, prov, trained, value, r.reward, r.done, seat_r, seats, tot)

        es, out = jax.lax.scan(body, state.env, jnp.arange(tc.rollout))
        obs, z, use, logp, prov, trained, value, reward, done, seat_r, seats, tot = out
        _, _, last_value = self.forward(state.params, env.observe(p, es), env.seat_providers(es))
        return es, (obs, z, use, logp, prov, trained, value, reward, done, last_value), (seat_r, seats, tot)

    # -- advantages ---------------------------------------------------------------------------------------------------
    def gae(self, value, reward, done, last_value):
        """Advantages and returns, ``f32[T, 2, N]``, each seat discounted by its side's factor."""
        gamma = self.params.discount[:, None]  # f32[2, 1]
        lam = self.tc.gae_lambda
        live = 1.0 - done[:, None, :].astype(jnp.float32)  # the episode goes on after round t

        def body(carry, x):
            adv_next, v_next = carry
            v, r, keep = x
            delta = r + gamma * v_next * keep - v
            adv = delta + gamma * lam * keep * adv_next
            return (adv, v), adv

        _, adv = jax.lax.scan(body, (jnp.zeros_like(last_value), last_value), (value, reward, live), reverse=True)
        return adv, adv + value

    # -- update -------------------------------------------------------------------------------------------------------
    def loss(self, params, b: Batch, log_std_now=None):
        tc = self.tc
        mean, log_std, value = self.forward(params, b.obs, b.provider, log_std_now)
        ratio = jnp.exp(log_prob(b.z, mean, log_std, b.use) - b.logp)
        acted = (b.trained & jnp.any(b.use, axis=-1)).astype(jnp.float32)
        surrogate = jnp.minimum(ratio * b.adv, jnp.clip(ratio, 1 - tc.clip_eps, 1 + tc.clip_eps) * b.adv)
        policy_loss = -jnp.sum(surrogate * acted) / jnp.maximum(jnp.sum(acted), 1.0)
        weight = b.trained.astype(jnp.float32)
        value_loss = 0.5 * jnp.sum((value - b.ret) ** 2 * weight) / jnp.maximum(jnp.sum(weight), 1.0)
        stds = params["params"]["log_std"]  # f32[M, A]
        entropy = jnp.mean(jnp.sum(stds + 0.5 * (LOG_2PI + 1.0), axis=-1))
        return policy_loss + tc.value_coef * value_loss - tc.entropy_coef * entropy, value_loss

    def update(self, params, opt_state, batch: Batch, key, log_std=None):
        tc = self.tc
        nb = tc.minibatches
        opt = optimizer(tc)

        def blocks(x):  # [T, 2, N, ...] -> [nb, T, 2, N/nb, ...]
            t, s, n = x.shape[:3]
            return jnp.moveaxis(x.reshape((t, s, nb, n // nb) + x.shape[3:]), 2, 0)

        data = jax.tree.map(blocks, batch)

        def minibatch(carry, i):
            params, opt_state = carry
            mb = jax.tree.map(lambda x: x[i], data)
            (_, vloss), grads = jax.value_and_grad(self.loss, has_aux=True)(params, mb, log_std)
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
        es, (obs, z, use, logp, prov, trained, value, reward, done, last_value), (seat_r, seats, tot) = \
            self.rollout(state, k_roll)
        adv, ret = self.gae(value, reward, done, last_value)
        acted = trained & jnp.any(use, axis=-1)
        count = jnp.maximum(jnp.sum(acted), 1)
        mu = jnp.sum(jnp.where(acted, adv, 0.0)) / count
        sd = jnp.sqrt(jnp.sum(jnp.where(acted, (adv - mu) ** 2, 0.0)) / count)
        adv = (adv - mu) / (sd + 1e-8)
        batch = Batch(obs, z, use, logp, prov, trained, adv, ret)
        params, opt_state, gnorm, vloss = self.update(state.params, state.opt_state, batch, k_upd,
                                                      self.log_std_at(state.step))
        step = state.step + 1
        pool, pool_count = state.pool, state.pool_count
        if tc.pool_size > 0:
            snap = (step % tc.pool_every) == 0
            slot = pool_count % tc.pool_size
            pool = jax.tree.map(lambda pl, x: jnp.where(snap, pl.at[slot].set(x), pl), pool, params)
            pool_count = pool_count + snap.astype(jnp.int32)
        new = PPOState(params, opt_state, state.key, step, es, pool, pool_count)
        seat_r, seats, tot = jnp.sum(seat_r, 0), jnp.sum(seats, 0), jnp.sum(tot, 0)
        shares = jnp.stack([jnp.mean((es.provider == j).astype(jnp.float32)) for j in range(self.m)])
        log_std = params["params"]["log_std"]
        if tc.final_log_std is not None:
            log_std = jnp.full_like(log_std, self.log_std_at(state.step))
        std = jnp.sum(jnp.where(self.learned[:, None], jnp.exp(log_std), 0.0)) / jnp.maximum(
            jnp.sum(self.learned) * log_std.shape[-1], 1)
        metrics = StepMetrics(utility=seat_r / jnp.maximum(seats, 1.0), grad_norm=gnorm, provider_shares=shares,
                              efficiency=tot[0] / jnp.maximum(tot[1], 1e-12),
                              deal_rate=tot[3] / jnp.maximum(tot[2], 1.0), value_loss=vloss, std=std)
        return new, metrics

    def make_chunk(self, length: int):
        """A jitted ``states → (states, StepMetrics[S, length, ...])`` of ``length`` iterations for every seed."""

        def one_seed(state):
            return jax.lax.scan(lambda s, _: self.iteration(s), state, None, length=length)

        return jax.jit(jax.vmap(one_seed), donate_argnums=0)

    def log_row(self, m: StepMetrics) -> dict:
        """The metrics.jsonl fields of a chunk's last iteration (mean over seeds)."""
        last = lambda x: np.asarray(x)[:, -1]  # noqa: E731
        return {"train_utility": float(np.mean(last(m.utility))), "grad_norm": float(np.mean(last(m.grad_norm))),
                "train_efficiency": float(np.mean(last(m.efficiency))),
                "train_deal_rate": float(np.mean(last(m.deal_rate))),
                "value_loss": float(np.mean(last(m.value_loss))), "action_sd": float(np.mean(last(m.std))),
                "train_provider_utility": np.mean(last(m.utility), axis=0).tolist(),
                "train_provider_shares": np.mean(last(m.provider_shares), axis=0).tolist()}

    # -- evaluation ---------------------------------------------------------------------------------------------------
    def play(self, key, stacks, n: int, rounds: int, burn_in: int, provider=None, learned=None):
        """Mean actions of ``stacks`` (providers' parameters; ``learned``: which of them are not scripted) for
        ``burn_in`` + ``rounds`` rounds of ``n`` fresh bargains (``provider``: the initial assignment, default
        uniform at random). Returns the per-group totals
        ``f32[len(TOTALS), G]`` and per-provider ``(clients·rounds, utility sum)`` ``f32[2, M]`` of the measured
        rounds."""
        p = self.params
        k_reset, k_run = jax.random.split(key)
        state = env.reset(k_reset, p, n)
        if provider is not None:
            state = state.replace(provider=provider)

        def body(es, t):
            obs = env.observe(p, es)
            prov = env.seat_providers(es)
            _, acts, *_ = self.act(stacks, obs, prov, None, learned=learned)
            es2, r = env.step(jax.random.fold_in(k_run, t), es, p, acts)
            util = r.reward[0] + jnp.roll(r.reward[1], 1)
            per_prov = jnp.stack([jnp.stack([jnp.sum((es.provider == j).astype(jnp.float32)),
                                             jnp.sum(jnp.where(es.provider == j, util, 0.0))])
                                  for j in range(self.m)], axis=-1)
            on = (t >= burn_in).astype(jnp.float32)
            return es2, (env.round_totals(p, r) * on, per_prov * on)

        _, (totals, per_prov) = jax.lax.scan(body, state, jnp.arange(burn_in + rounds))
        return jnp.sum(totals, 0), jnp.sum(per_prov, 0)

    def metrics(self, key, stack) -> dict:
        """Evaluation of the mean actions of ``stack`` in ``population.n_agents`` fresh bargains."""
        p = self.params
        totals, per_prov = self.play(key, stack, self.n, self.cfg.env.eval_rounds, p.contract_rounds + 2)
        return summarise_totals(p, totals, per_prov)


def summarise_totals(p: env.Params, totals: jax.Array, per_prov: jax.Array) -> dict:
    """The evaluation's metrics from :func:`PPO.play`'s totals (traceable; arrays per group and per provider)."""
    t = dict(zip(env.TOTALS, totals))
    all_ = {k: jnp.sum(v) for k, v in t.items()}
    safe = lambda a, b: a / jnp.maximum(b, 1e-12)  # noqa: E731
    zero_cost = (p.costs == 0.0)[None, :].repeat(p.regimes.shape[0], 0).reshape(-1)

    def opener_share(side):  # the opener's mean share in first-offer agreements at zero cost (None: none)
        n_ = jnp.sum(jnp.where(zero_cost, t[f"first_offer_{side}"], 0.0))
        return safe(jnp.sum(jnp.where(zero_cost, t[f"share_{side}"], 0.0)), n_), n_ > 0

    (share, any_e), (share_v, any_v) = opener_share("e"), opener_share("v")
    theory, theory_v = env.rubinstein_split(p, emitter_first=True), env.rubinstein_split(p, emitter_first=False)
    error = jnp.maximum(jnp.where(any_e, jnp.abs(share - theory), 0.0), jnp.where(any_v, jnp.abs(share_v - theory_v),
                                                                                    0.0))
    rounds = all_["rounds"]
    efficiency = safe(all_["gain"], all_["gain_star"])
    welfare, first_best = all_["gain"] + all_["status_quo"], all_["gain_star"] + all_["status_quo"]
    out = {  # the welfare keys of `coasejax simulate` (sums over bargains and measured rounds), then per round
        "welfare": welfare,
        "first_best_welfare": first_best,
        "status_quo_welfare": all_["status_quo"],
        "efficiency": efficiency,
        "welfare_ratio": safe(welfare, first_best),
        "deadweight_loss": first_best - welfare,
        "transfers": all_["transfer"],
        "transaction_costs_paid": all_["costs"],
        "efficiency_gap": 1.0 - efficiency,
        "gain_per_bargain_round": safe(all_["gain"], rounds),
        "first_best_gain_per_bargain_round": safe(all_["gain_star"], rounds),
        "transaction_costs_per_bargain_round": safe(all_["costs"], rounds),
        "transfers_per_bargain_round": safe(all_["transfer"], rounds),
        "mean_activity": safe(all_["activity"], rounds),
        "first_best_mean_activity": safe(all_["activity_star"], rounds),
        "deal_rate": safe(all_["agreed"], all_["started"]),
        "first_offer_rate": safe(all_["first_offer"], all_["started"]),
        "sit_out_rate": safe(all_["sat_out"], all_["started"]),
        "contract_share": safe(all_["contract"], rounds),
        "breach_rate": safe(all_["breached"], all_["contract"]),
        "analytic_efficiency": safe(all_["analytic_gain"], all_["episode_value"]),
        "analytic_deal_rate": safe(all_["analytic_deal"], all_["started"]),
        "strategic_efficiency": safe(all_["strategic_gain"], all_["episode_value"]),
        "strategic_deal_rate": safe(all_["strategic_deal"], all_["started"]),
        "proposer_share": share,
        "rubinstein_share": theory,
        "proposer_share_victims": share_v,
        "rubinstein_share_victims": theory_v,
        "proposer_share_error": error,
        "utility": safe(jnp.sum(per_prov[1]), jnp.sum(per_prov[0])),
        "efficiency_by_group": safe(t["gain"], t["gain_star"]),
        "analytic_efficiency_by_group": safe(t["analytic_gain"], t["episode_value"]),
        "deal_rate_by_group": safe(t["agreed"], t["started"]),
        "analytic_deal_rate_by_group": safe(t["analytic_deal"], t["started"]),
        "strategic_efficiency_by_group": safe(t["strategic_gain"], t["episode_value"]),
        "strategic_deal_rate_by_group": safe(t["strategic_deal"], t["started"]),
        "provider_shares": safe(per_prov[0], jnp.sum(per_prov[0])),
        "provider_utility": safe(per_prov[1], per_prov[0]),
    }
    return out



def cost_curve(cfg, means: dict) -> dict:
    """The efficiency and deal rate per rights regime and per-round cost — learned, analytic-efficient (both sides
    take part iff the contract can pay both costs) and analytic-strategic (subgame-perfect split, each side takes
    part iff its own share pays its cost) — and where each deal-rate curve crosses 1/2 (linear interpolation; None if
    it does not within the grid): the no-deal threshold of the median bargain, learned and analytic."""
    costs, regimes = env.grids(cfg)
    g = len(costs)
    rows, crossing = [], {}
    for i, regime in enumerate(regimes):
        sl = slice(i * g, (i + 1) * g)
        curve = {k: list(means[f"{k}_by_group"][sl]) for k in (
            "efficiency", "analytic_efficiency", "strategic_efficiency", "deal_rate", "analytic_deal_rate",
            "strategic_deal_rate")}
        for j, cost in enumerate(costs):
            rows.append({"regime": regime, "per_round_cost": cost, **{k: v[j] for k, v in curve.items()}})
        crossing[regime] = {"learned_half_deal_cost": _half_crossing(costs, curve["deal_rate"]),
                            "analytic_half_deal_cost": _half_crossing(costs, curve["analytic_deal_rate"]),
                            "strategic_half_deal_cost": _half_crossing(costs, curve["strategic_deal_rate"])}
    return {"curve": rows, "no_deal_threshold": crossing}


def _half_crossing(xs: list[float], ys: list[float]) -> float | None:
    order = np.argsort(xs)
    x, y = np.asarray(xs, float)[order], np.asarray(ys, float)[order]
    for j in range(len(x) - 1):
        if y[j] >= 0.5 > y[j + 1]:
            return float(x[j] + (y[j] - 0.5) / (y[j] - y[j + 1]) * (x[j + 1] - x[j]))
    return None
