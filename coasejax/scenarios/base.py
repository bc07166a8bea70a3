"""The scenario interface: one record of pure functions per scenario, which every command drives.

In the spirit of ``optax.GradientTransformation`` and gymnax's ``Environment`` a :class:`Scenario` is a NamedTuple of
functions, not a class hierarchy: ``simulate``, ``train`` (ES and PPO), ``eval``, ``compare`` and ``report`` take any
registered scenario through these functions and its :class:`Spec`, and nothing else.

Shapes. A scenario has N agents and, per round, S *seats*: the decisions made that round (in the Coase engine seat 0
of bargain i is its emitter and seat s its slot-s victim; in the multi-round negotiation the emitter and the victims'
coalition). Per-seat arrays are ``[S, N, ...]``: seat axis first, then the agent axis, then features, the layout of
the engine's per-slot arrays ``[k, N]`` (the agent axis is the one sharded over devices).

* ``params(cfg) -> params``: every traced parameter of the run (a pytree; a ``vmap`` over it is a sweep) and the
  static choices, from the validated config;
* ``reset(key, params) -> state``: a fresh population;
* ``observe(params, state) -> f32[S, N, d]``: what each seat's advocate sees (its own observation only);
* ``step(key, state, actions, params) -> (state, Transition)``: one round, ``actions: f32[S, N, A]``;
* ``spec(params) -> Spec``: names and bounds of the observation and actions, and the truthful action;
* ``seat_providers(params, state) -> i32[S, N]``: the provider whose advocate acts in each seat;
* ``seat_owners(params, state) -> i32[S, N]``: the agent whose advocate acts in each seat;
* ``scripted``: scripted advocates by name, each ``(key, params, state) -> actions``;
* ``summarise(cfg, params, per_round, first, last) -> dict``: the summary of a run from its per-round metrics
  (``{field: f64[E, T, ...]}``) and its first and last states (leading env axis E);
* ``decisions(params, state) -> bool[S, N, A]`` (optional): the action fields each seat decides this round (PPO
  trains only on those); None: every field, every round;
* ``discount(params) -> f32[S]`` (optional): each seat's discount factor (PPO); None: 0.99;
* ``observe_agents(params, state) -> f32[R, N, d]`` and ``to_seats(params, state, acts f32[R, N, A]) -> f32[S, N,
  A]`` (optional, together): where a seat's observation depends only on its owner and its role (``Spec.roles``), each
  agent's observation once per role and the map of its per-role actions to its seats. Learned policies then act once
  per agent and role instead of once per seat (k + 1 seats per bargain in the Coase engine, 2 roles);
* ``metrics(params, totals) -> dict`` (optional): a *traceable* summary from the per-round metrics summed over the
  measured rounds (a metrics NamedTuple of sums), for the evaluation inside training (``vmap``-ped over seeds);
* ``headline``: the summary's main numbers, the columns of a sweep's table, CSV and figure (empty: the Coase
  engine's);
* a summary may hold ``figure``, ``{caption, panels: [{title, xlabel, ylabel, yscale, series: [{label, x, y,
  kind}]}]}``: the scenario's own figure, measured (``kind: measured``) beside its closed form (``kind: theory``),
  which ``coasejax report`` draws;
* ``train_summary(cfg, means) -> dict`` (optional): entries a finished ``train`` run adds to its summary, from the
  mean metrics of its last evaluation (the negotiation's deal rate against its per-round costs);
* ``check(cfg)`` (optional): refuse a run's config (:class:`coasejax.config.ConfigError`) that the scenario cannot
  measure, before anything compiles (``simulate``: e.g. a burn-in of every round);
* ``bytes_per_agent``: a lower bound of the peak bytes per agent and environment of one compiled chunk (measured
  with ``scripts/bench_markets.py``), from which ``simulate`` and ``train`` refuse a population that cannot fit;
* ``sentinels``: the per-round metrics that are −inf by design (a maximum over nothing); every other per-round
  metric, and every float of the final state, must be finite, or ``simulate`` stops naming it and its round.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


class Spec(NamedTuple):
    """The observation and action layout of a scenario, which a learned policy and its checkpoint must match.

    With ``relative`` the actions are multiples of the seat's own value, ``observation[0]`` (a report of a type, a bid
    on a value): ``low``, ``high`` and ``truthful`` are then ratios, so the truthful action of every seat is
    ``truthful × its own value``. Otherwise they are in the action's own units."""

    observation: tuple[str, ...]
    actions: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    truthful: tuple[float, ...]
    relative: bool = False
    seats: int = 1
    roles: tuple[str, ...] = ()  # the role of each seat (e.g. emitter, victim); learned policies keep one network
    #                              per role. Empty: one role for every seat

    def role_index(self) -> tuple[int, ...]:
        """Each seat's role as an index into :meth:`role_names`."""
        names = self.role_names()
        return tuple(names.index(r) for r in self.roles) if self.roles else (0,) * self.seats

    def role_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.roles)) if self.roles else ("any",)

    def layout(self) -> dict:
        """What a checkpoint records of the layout (JSON-ready)."""
        return {"observation": list(self.observation), "actions": list(self.actions), "low": list(self.low),
                "high": list(self.high), "relative": self.relative, "roles": list(self.role_names())}


class Transition(NamedTuple):
    """What one round returns besides the new state."""

    reward: jax.Array  # f32[S, N] each seat's client's gain this round
    done: jax.Array  # bool[N] (or bool[S, N]) the seat's episode ended this round
    metrics: Any  # a NamedTuple of round totals (scalars or short vectors), stacked to [T, ...] by the scan


class Scenario(NamedTuple):
    name: str
    params: Callable[..., Any]
    reset: Callable[..., Any]
    observe: Callable[..., jax.Array]
    step: Callable[..., tuple[Any, Transition]]
    spec: Callable[..., Spec]
    seat_providers: Callable[..., jax.Array]
    seat_owners: Callable[..., jax.Array]
    scripted: dict[str, Callable[..., jax.Array]]
    summarise: Callable[..., dict]
    decisions: Callable[..., jax.Array] | None = None
    discount: Callable[..., jax.Array] | None = None
    metrics: Callable[..., dict] | None = None
    observe_agents: Callable[..., jax.Array] | None = None
    to_seats: Callable[..., jax.Array] | None = None
    description: str = ""
    sentinels: tuple[str, ...] = ()
    headline: tuple[str, ...] = ()
    train_summary: Callable[..., dict] | None = None
    check: Callable[..., None] | None = None
    bytes_per_agent: int = 16  # a lower bound of the peak bytes per agent and environment of a compiled chunk


#: scenario name (``env.kind``) -> its record, filled by :func:`register`
REGISTRY: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    """Register ``scenario`` under its name (its ``env`` section is registered with
    :func:`coasejax.config.register_env`)."""
    REGISTRY[scenario.name] = scenario
    return scenario


def get(name: str) -> Scenario:
    from coasejax.config import ConfigError

    if name not in REGISTRY:
        raise ConfigError(f"env.kind: no scenario {name!r} is registered (registered: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


#: folds the advocates' randomness of a round away from the scenario's own draws
ACT_STREAM = 0x61637473


def check_burn_in(cfg) -> None:
    """``env.burn_in`` (rounds left out of a scenario's measured statistics) must leave a measured round of
    ``sim.rounds``."""
    from coasejax.config import ConfigError

    if cfg.env.burn_in >= cfg.sim.rounds:
        raise ConfigError(f"env.burn_in: must be below sim.rounds ({cfg.sim.rounds}) so that a round is measured, "
                          f"got {cfg.env.burn_in}")


def finite_state(state) -> jax.Array:
    """``bool``: every float of ``state`` is finite (one pass over every per-agent array)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def rollout(scenario: Scenario, act: Callable, key: jax.Array, state, params, length: int, watch: bool = False):
    """``length`` rounds under ``lax.scan``: each round the advocates ``act(key, params, state, obs)`` and the
    scenario steps. Round t's step draws from ``fold_in(key, t)`` (``t`` the state's round counter when it has one,
    else the index in this scan), so an episode cut into chunks gives the same numbers as one scan; the advocates draw
    from ``fold_in`` of that with :data:`ACT_STREAM`. Returns the final state and the stacked metrics; with ``watch``
    the metrics are ``(metrics, bool[length])``, whether the state was finite after each round (a pass over the
    state per round, so only to find the round where a run went non-finite)."""

    def body(s, i):
        k = jax.random.fold_in(key, getattr(s, "t", i))
        actions = act(jax.random.fold_in(k, ACT_STREAM), params, s, scenario.observe(params, s))
        s, tr = scenario.step(k, s, actions, params)
        return s, ((tr.metrics, finite_state(s)) if watch else tr.metrics)

    return jax.lax.scan(body, state, jnp.arange(length))
