"""Evolution strategies inside a scenario's own ``step``: the population is the training batch.

Every iteration draws a fresh population of ``population.n_agents`` agents (:meth:`Scenario.reset`) and plays
``train.rollout`` rounds of the very ``observe → act → step`` that ``coasejax simulate`` runs, twice: once with every
agent i acting by ``θ_p + σ ε_i`` and once by ``θ_p − σ ε_i`` (p its provider, ``ε_i ~ N(0, I)`` its own noise; the two
plays share the population and every draw: common random numbers). Agent i's fitness ``F_i`` is its clients' reward
summed over the seats it owns and the rounds, and provider p ascends

    ĝ_p = 1/n_p Σ_{i ∈ p} z_i ε_i,   z_i = (F_i⁺ − F_i⁻) / rms_{j ∈ p}(F_j⁺ − F_j⁻),

the direction of the pseudo-gradient of its own clients' utility with respect to their own policy, every other agent held at its own
(perturbed) play: a unilateral deviation, so the learners seek an equilibrium, not a joint optimum. Providers are
parameter groups; providers scripted in ``providers.advocate`` play the scenario's scripted truthful advocates and
are not trained. Policies are generic (:func:`coasejax.policies.es_module`): the seat's own observation only.

Each seat's action comes from its owner's parameters. The scenario's ``seat_owners`` rows are permutations of the
agents, so the observations are moved to their owners (a gather of ``d`` features per seat, not of the parameters),
acted on with each agent's own parameters, and moved back.

Evaluation (:meth:`EngineES.metrics`): the providers' policies without noise in a fresh population, the scenario's
``metrics`` over ``train.rollout`` rounds, each provider's client utility, and ``utility_loss_rel``: what agents would
gain by the best constant action ratio in each seat (``train.eval_grid`` ratios in the action's range, capped at 41),
all else equal, relative to that best reply's utility; one agent in every ``2S + 1`` deviates, so no two deviators
share a bargain.

Strategies (:meth:`EngineES.strategy`): each role's learned action against its first observation feature (the own
value in the Coase engine), per seed and learned provider, beside the mechanism's equilibrium where a closed form is
known (:func:`coase_theory`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from coasejax import scenarios
from coasejax.policies import act_with, es_module, take
from coasejax.train.es import TrainState, optimizer, seed_keys


NOISE_TABLE = 1 << 22
NOISE_SEED = 0x6E6F6973
STRATEGY_POINTS = 33  # points of each learned curve in :meth:`EngineES.strategy`
STRATEGY_SEED = 0x73747261  # the population whose observations the strategy panels sweep


class StepMetrics(NamedTuple):
    utility: jax.Array  # f32[P] each provider's clients' mean reward per agent and round
    grad_norm: jax.Array


class EngineES:
    """ES on a registered scenario, with the interface :mod:`coasejax.train.run` drives."""

    def __init__(self, cfg, scenario=None):
        self.cfg, self.tc = cfg, cfg.train
        self.scenario = scenario or scenarios.get(cfg.env.kind)
        self.params = self.scenario.params(cfg)
        self.spec = self.scenario.spec(self.params)
        self.module = es_module(cfg, self.spec)
        self.n = cfg.population.n_agents
        self.m = cfg.providers.count
        self.learned = jnp.asarray([a == "learned" for a in cfg.providers.advocates()])
        self.all_learned = all(a == "learned" for a in cfg.providers.advocates())
        self.rounds = self.tc.rollout
        self.name = f"{self.scenario.name}/{cfg.mechanism.kind}" if cfg.env.kind == "coase" else self.scenario.name
        self.n_providers = self.m
        self.agents_per_iteration = 2 * self.n * self.rounds  # agent-steps of the two plays
        self.layout = self.spec.layout()
        self.roles = self.spec.role_index()  # each seat's role (one network per role)
        self.n_roles = len(self.spec.role_names())
        template = self.module.init(jax.random.PRNGKey(0), jnp.zeros((1, len(self.spec.observation)), jnp.float32))
        _, self.unravel = ravel_pytree(template)

    # -- acting -------------------------------------------------------------------------------------------------------
    def _scripted(self, key, params, state):
        a = self.scenario.scripted["truthful"](key, params, state)
        return a.stacked(params, state) if hasattr(a, "stacked") else a

    def act_by_agent(self, theta, positions, owners):
        """``act(key, params, state, obs)`` with agent j acting by its own flat parameters ``theta[j, role]`` in
        every seat it owns (``positions[s, j]``: the seat of row s that agent j owns)."""
        sc, module, unravel = self.scenario, self.module, self.unravel
        rows = [np.flatnonzero(np.asarray(self.roles) == r) for r in range(self.n_roles)]

        def by_agent(params, state, obs):
            if sc.observe_agents is not None:  # each agent once per role, then to its seats
                by_role = sc.observe_agents(params, state)  # f32[R, N, d]
                acts = jnp.stack([jax.vmap(lambda th, o: act_with(module, unravel(th), o))(theta[:, r], by_role[r])
                                  for r in range(self.n_roles)])
                return sc.to_seats(params, state, acts)
            by_owner = jnp.take_along_axis(obs, positions[..., None], axis=1)  # f32[S, N, d], column j: agent j
            parts = [jax.vmap(lambda th, o: act_with(module, unravel(th), o), in_axes=(0, 1), out_axes=1)(
                theta[:, r], by_owner[idx]) for r, idx in enumerate(rows)]  # f32[S_r, N, A] each
            acts = jnp.concatenate(parts)[np.argsort(np.concatenate(rows))] if len(rows) > 1 else parts[0]
            return jnp.take_along_axis(acts, owners[..., None], axis=1)  # back to the seats

        def act(key, params, state, obs):
            acts = by_agent(params, state, obs)
            if not self.all_learned:  # scripted providers play the scenario's truthful advocates
                scripted = ~self.learned[sc.seat_providers(params, state)]
                acts = jnp.where(scripted[..., None], self._scripted(key, params, state), acts)
            return acts

        return act

    def episode(self, act, key, state0):
        """``train.rollout`` rounds of the scenario from ``state0`` with ``act``, keyed as :func:`scenarios.rollout`
        keys them: the per-round metrics and the seats' rewards ``f32[T, S, N]``."""
        sc, params = self.scenario, self.params

        def body(s, t):
            k = jax.random.fold_in(key, t)
            actions = act(jax.random.fold_in(k, scenarios.base.ACT_STREAM), params, s, sc.observe(params, s))
            s, tr = sc.step(k, s, actions, params)
            return s, (tr.metrics, tr.reward)

        _, (per_round, rewards) = jax.lax.scan(body, state0, jnp.arange(self.rounds))
        return per_round, rewards

    def play(self, key, theta, state0, positions, owners):
        """The seats' rewards ``f32[S, N]`` summed over ``train.rollout`` rounds, everyone acting by ``theta``."""
        _, rewards = self.episode(self.act_by_agent(theta, positions, owners), key, state0)
        return jnp.sum(rewards, axis=0)

    def layout_of(self, state):
        """Each seat's owner ``i32[S, N]``, the inverse (``positions``), and each agent's provider ``i32[N]``."""
        sc, params, n = self.scenario, self.params, self.n
        owners = sc.seat_owners(params, state)
        iota = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), owners.shape)
        positions = None if sc.observe_agents is not None else jax.vmap(
            lambda o, i: jnp.zeros((n,), jnp.int32).at[o].set(i))(owners, iota)  # not needed: agents observe once
        if self.m == 1:  # one provider: no scatter
            provider = jnp.zeros((n,), jnp.int32)
        else:
            provider = jnp.zeros((n,), jnp.int32).at[owners.reshape(-1)].set(
                sc.seat_providers(params, state).reshape(-1))
        return owners, positions, provider

    def fitness(self, rewards, owners):
        """``f32[N]``: each agent's reward summed over the seats it owns."""
        return jax.ops.segment_sum(rewards.reshape(-1), owners.reshape(-1), self.n)

    @staticmethod
    def flatten(stack):
        """``f32[P, R, D]``: each provider's and role's parameters as flat vectors."""
        return jax.vmap(jax.vmap(lambda p: ravel_pytree(p)[0]))(stack)

    # -- training -----------------------------------------------------------------------------------------------------
    def init(self, key):
        k_init, k_run = jax.random.split(key)
        dummy = jnp.zeros((1, len(self.spec.observation)), jnp.float32)
        keys = jax.random.split(k_init, self.m * self.n_roles).reshape(self.m, self.n_roles, -1)
        stack = jax.vmap(jax.vmap(lambda k: self.module.init(k, dummy)))(keys)  # [P, R, ...]
        return TrainState(stack, optimizer(self.tc).init(stack), k_run, jnp.zeros((), jnp.int32))

    def init_states(self):
        return jax.vmap(self.init)(seed_keys(self.tc))

    def iteration(self, state: TrainState, table: jax.Array):
        tc, sigma = self.tc, self.tc.sigma
        key = jax.random.fold_in(state.key, state.step)
        k_env, k_eps, k_run = jax.random.split(key, 3)
        state0 = self.scenario.reset(k_env, self.params)
        owners, positions, provider = self.layout_of(state0)
        flat = self.flatten(state.params)  # f32[P, R, D]
        eps = self.noise(table, k_eps, flat.shape[1:])
        base = flat[provider]
        # materialised once: fused into its consumers the table gather would be recomputed in each of them
        plus, minus, eps = jax.lax.optimization_barrier((base + sigma * eps, base - sigma * eps, eps))

        def fit(theta):
            return self.fitness(self.play(k_run, theta, state0, positions, owners), owners)

        f = jnp.stack([fit(plus), fit(minus)])  # f32[2, N] (two plays, not a vmap: the engine's rolls batch poorly)
        trained = self.learned[provider].astype(jnp.float32)
        counts = jnp.maximum(jax.ops.segment_sum(jnp.ones((self.n,)), provider, self.m), 1.0)
        diff = (f[0] - f[1]) * trained
        # standardised per provider: the step's size no longer scales with the stakes (a victim's harm weight w = 1/k
        # spans an order of magnitude over k = 1 … 8), only its direction comes from the fitness
        scale = jnp.sqrt(jax.ops.segment_sum(diff**2, provider, self.m) / counts)
        diff = diff / jnp.maximum(scale[provider], 1e-12)
        grads = jax.ops.segment_sum(diff[:, None, None] * eps, provider, self.m) / counts[:, None, None]
        utility = jax.ops.segment_sum(0.5 * (f[0] + f[1]), provider, self.m) / (counts * self.rounds)
        ascent = jax.vmap(jax.vmap(self.unravel))(-grads)  # Optax minimises: descend on −U
        updates, opt_state = optimizer(tc).update(ascent, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return (TrainState(params, opt_state, state.key, state.step + 1),
                StepMetrics(utility, jnp.sqrt(jnp.sum(grads**2))))

    def noise(self, table: jax.Array, key: jax.Array, shape) -> jax.Array:
        """``f32[N, *shape]``: each agent's noise, a window of the shared noise table at a random offset (Salimans
        et al. 2017): drawing ``N·R·D`` fresh normals would cost more than the whole round."""
        size = int(np.prod(shape))
        offsets = jax.random.randint(key, (self.n, 1), 0, table.shape[0], jnp.int32)
        return table[(offsets + jnp.arange(size, dtype=jnp.int32)) % table.shape[0]].reshape(self.n, *shape)

    @staticmethod
    def noise_table() -> jax.Array:
        """The shared noise table: 2²² standard normals from a fixed key, drawn once per compiled chunk."""
        return jax.random.normal(jax.random.PRNGKey(NOISE_SEED), (NOISE_TABLE,), jnp.float32)

    def make_chunk(self, length: int):
        def one_seed(state):
            table = self.noise_table()
            return jax.lax.scan(lambda s, _: self.iteration(s, table), state, None, length=length)

        return jax.jit(jax.vmap(one_seed), donate_argnums=0)

    @staticmethod
    def log_row(m: StepMetrics) -> dict:
        return {"utility": float(jnp.mean(m.utility[:, -1])), "grad_norm": float(jnp.mean(m.grad_norm[:, -1]))}

    # -- evaluation ---------------------------------------------------------------------------------------------------
    def metrics(self, key, stack) -> dict:
        """The scenario's metrics of the providers' noiseless policies on a fresh population, each provider's client
        utility, and ``utility_loss_rel`` against the best constant-ratio reply per seat (see the module doc)."""
        sc, params, n = self.scenario, self.params, self.n
        k_env, k_run = jax.random.split(key)
        state0 = sc.reset(k_env, params)
        owners, positions, provider = self.layout_of(state0)
        theta = self.flatten(stack)[provider]
        per_round, rewards = self.episode(self.act_by_agent(theta, positions, owners), k_run, state0)
        totals = jax.tree.map(lambda x: jnp.sum(x, axis=0), per_round)
        out = dict(sc.metrics(params, totals)) if sc.metrics is not None else {}
        f = self.fitness(jnp.sum(rewards, axis=0), owners)
        counts = jnp.maximum(jax.ops.segment_sum(jnp.ones((n,)), provider, self.m), 1.0)
        out["provider_utility"] = jax.ops.segment_sum(f, provider, self.m) / (counts * self.rounds)
        out["utility"] = jnp.mean(f) / self.rounds
        out["utility_loss_rel"] = self.exploitability(k_run, stack, state0, theta, positions, owners,
                                                      jnp.sum(rewards, axis=0))
        return out

    def exploitability(self, key, stack, state0, theta, positions, owners, rewards):
        spec = self.spec
        if not (spec.relative and len(spec.actions) == 1):
            return jnp.float32(jnp.nan)
        sc, params = self.scenario, self.params
        seats = owners.shape[0]
        stride = 2 * seats + 1
        deviator = (jnp.arange(self.n) % stride) == 0  # agents; no two share a bargain
        grid = jnp.linspace(spec.low[0], spec.high[0], min(self.tc.eval_grid, 41), dtype=jnp.float32)
        base_act = self.act_by_agent(theta, positions, owners)
        dev_seat = deviator[owners]  # bool[S, N]: seats a deviator owns

        def reward_of(seat, ratio):
            def act(k, p, s, obs):
                a = base_act(k, p, s, obs)
                mine = dev_seat & (jnp.arange(seats)[:, None] == seat)
                return jnp.where(mine[..., None], ratio * obs[..., :1], a)

            _, r = self.episode(act, key, state0)
            return jnp.sum(jnp.where(dev_seat[seat], jnp.sum(r, axis=0)[seat], 0.0))

        learned = jnp.sum(jnp.where(dev_seat, rewards, 0.0), axis=1)  # f32[S]
        by_seat = jax.vmap(lambda s: jax.lax.map(lambda g: reward_of(s, g), grid))(jnp.arange(seats))  # f32[S, G]
        best = jnp.maximum(jnp.max(by_seat, axis=1), learned)
        return jnp.sum(best - learned) / jnp.maximum(jnp.sum(jnp.abs(best)), 1e-12)

    # -- strategies ---------------------------------------------------------------------------------------------------
    def strategy(self, params, points: int = STRATEGY_POINTS) -> list[dict]:
        """Figure panels of the learned strategies (``params``: ``states.params``, leading seed axis): one panel per
        seat role and action, the action of every seed's learned providers against the role's first observation
        feature swept over its range in a fresh population (:func:`sweep`), the other features at their median
        there, beside the theory lines of :data:`THEORY` for the scenario (none where it has no entry)."""
        state = self.scenario.reset(jax.random.PRNGKey(STRATEGY_SEED), self.params)
        rows = self.role_observations(state)
        theory = THEORY.get(self.scenario.name, lambda algo, state, role: [])
        panels = []
        for r, role in enumerate(self.spec.role_names()):
            x = sweep(rows[r][:, 0], points)
            obs = np.repeat(np.median(rows[r], axis=0)[None], points, axis=0)
            obs[:, 0] = x
            lines = theory(self, state, role) if len(self.spec.actions) == 1 else []
            for a, action in enumerate(self.spec.actions):
                title = f"{self.name}: {action}" if role == "any" else f"{self.name}: {role}'s {action}"
                panels.append({"title": title, "xlabel": self.spec.observation[0], "ylabel": action,
                               "series": self.learned_series(params, r, a, obs) + theory_series(x, lines),
                               "yscale": "linear"})
        return panels

    def learned_series(self, params, role: int, action: int, obs: np.ndarray) -> list[dict]:
        """One ``learned`` series per seed and learned provider: action ``action`` in role ``role`` at each row of
        ``obs`` against its first feature."""
        n_seeds = jax.tree.leaves(params)[0].shape[0]
        out = []
        for s in range(n_seeds):
            for p in (p for p in range(self.m) if bool(self.learned[p])):
                y = self.act_role(params, s, p, role, obs)[:, action]
                out.append({"label": f"seed {s}" + (f", provider {p}" if self.m > 1 else ""),
                            "x": obs[:, 0].tolist(), "y": y.tolist(), "kind": "learned", "seed": s})
        return out

    def role_observations(self, state) -> list[np.ndarray]:
        """Per role, ``f32[M, d]``: the observations of the seats of that role in the population ``state``."""
        obs = np.asarray(self.scenario.observe(self.params, state))  # [S, N, d]
        roles = np.asarray(self.roles)
        return [obs[roles == r].reshape(-1, obs.shape[-1]) for r in range(self.n_roles)]

    def act_role(self, params, seed: int, provider: int, role: int, obs: np.ndarray) -> np.ndarray:
        """``f32[G, A]``: the actions of seed ``seed``'s provider ``provider`` in role ``role`` at ``obs f32[G, d]``."""
        theta = jax.tree.map(lambda x: x[seed, provider, role], params)
        return np.asarray(act_with(self.module, theta, jnp.asarray(obs, jnp.float32)[None])[0], np.float64)


def theory_series(x: np.ndarray, lines: list[tuple[str, float]]) -> list[dict]:
    """The ``theory`` series ``y = slope · x`` of ``(label, slope)`` lines."""
    return [{"label": label, "x": x.tolist(), "y": (slope * x).tolist(), "kind": "theory", "seed": None}
            for label, slope in lines]


def sweep(values: np.ndarray, points: int) -> np.ndarray:
    """``points`` evenly spaced values over ``[min, max]`` of ``values``; where they are all equal (v: identical
    victims' harm), over ``[v/2, 3v/2]`` (``[0, 1]`` for v = 0) — the policy was trained at v alone there."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi - lo <= 1e-6 * max(abs(hi), 1e-12):
        lo, hi = (0.5 * hi, 1.5 * hi) if hi != 0 else (0.0, 1.0)
    return np.linspace(lo, hi, points)


def coase_theory(algo: EngineES, state, role: str) -> list[tuple[str, float]]:
    """The Coase engine's equilibrium reports in the population ``state`` as (label, report per unit of true value),
    one per distinct protocol of the learned providers. Clarke: truthful (dominant). Lindahl under the emitter's
    right with identical victims (THEORY.md "Public goods", :func:`coasejax.mechanisms.lindahl.equilibrium_reports`):
    the emitter, a price taker, truthful; each victim ``1/(k + 1)`` of its harm (free riding; interior bargains).
    Otherwise no closed form: the truthful line, labelled "truthful"."""
    params, k = algo.params, algo.params.graph.k
    protocols = algo.cfg.providers.protocols(algo.cfg.mechanism.kind)
    kinds = list(dict.fromkeys(protocols[p] for p in range(algo.m) if bool(algo.learned[p])))
    pop = state.pop
    identical = float(jnp.max(pop.c) - jnp.min(pop.c)) <= 1e-6 * float(jnp.max(jnp.abs(pop.c)))
    lines = []
    for kind in kinds:
        tag = f" ({kind})" if len(kinds) > 1 else ""
        if kind == "clarke":
            lines.append((f"equilibrium: truthful (dominant){tag}", 1.0))
        elif kind == "lindahl" and bool(params.emitter_right) and identical:
            lines.append((f"equilibrium: truthful (price taker){tag}", 1.0) if role == "emitter" else
                         (f"equilibrium: 1/(k + 1) = {1 / (k + 1):.4g} of the harm (free riding){tag}", 1 / (k + 1)))
        else:
            lines.append((f"truthful{tag}", 1.0))
    return list(dict.fromkeys(lines))


#: per scenario name: ``(algo, population state, role name) → [(label, slope)]``: its panels' theory lines
#: ``y = slope · x``
THEORY = {"coase": coase_theory}
