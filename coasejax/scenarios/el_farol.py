"""El Farol (Arthur 1994): N agents decide each round whether to go to a bar of capacity ``C = floor(L·N)``.

Payoffs. An agent who goes gets ``env.good`` (> 0) when the bar is not crowded (attendance ``A ≤ C``) and
``env.bad`` (< 0, worse than staying) when it is (``A > C``); one who stays home gets 0. The action of every seat is
the probability of going, ``f32[1, N, 1]`` in ``[0, 1]``; the step draws each agent's visit ``u_i < p_i`` from its
own uniform (a scripted 0/1 action is followed exactly).

The symmetric mixed equilibrium (:func:`mixed_equilibrium`). If everyone else goes with probability p, the others'
attendance is ``X ~ Binomial(N − 1, p)`` and going is worth ``good·P(X ≤ C − 1) + bad·P(X ≥ C)``; staying is worth 0.
Indifference gives

    P(Binomial(N − 1, p*) ≤ C − 1) = q,    q = −bad / (good − bad)   (q = 1/2 for +1/−1: THEORY.md, Arthur 1994),

solved here exactly (the binomial CDF summed in log space, bisection in p; the CDF falls in p). For large N (normal
approximation with continuity correction) ``(N − 1)p* ≈ C − 1/2 − z_q·sqrt((N − 1)p*(1 − p*))``, ``z_q = Φ⁻¹(q)``,
so p* → L as N → ∞. In the equilibrium the attendance is ``Binomial(N, p*)``: mean ``N p*``, sd
``sqrt(N p*(1 − p*))``, independent across rounds.

Advocates (``scripted``):

* ``equilibrium``: every agent goes with probability p*;
* ``arthur``: Arthur's adaptive predictors. The state holds the last ``env.memory`` attendance fractions ``h``
  (most recent first, the same public history for everyone) and a fixed family of predictors of next round's
  attendance from it (:func:`family`): the same as k rounds ago (k = 1..M, cycle detectors), the mean of the last k
  (k = 2..M), the mirror image of last round around 1/2 and around L, and the linear trend over the last 2 and the
  last M rounds, clipped to ``[0, 1]``. Each agent holds ``env.predictors`` of them, drawn at reset, scores each by
  its discounted absolute error ``s ← decay·s + |prediction − attendance|`` (updated in ``step`` whoever acts) and
  goes iff its best-scoring one predicts attendance below L. Agents differ only in which predictors they hold, so
  the whole population is a fixed mixture of predictor sets;
* ``truthful``: a coin flip (go with probability 1/2), the learned policy's starting point (``Spec.truthful``);
  there is no private value to report here.

Learned advocates see the attendance history and L, ``[h_1, …, h_M, L]`` (``observe``): nothing computed from the
equilibrium. The generic ES path (:mod:`coasejax.train.engine_es`) trains a :class:`~coasejax.policies.BoundedMLP`
on it from the coin flip.

Shapes: per-agent arrays ``[N]`` / ``[N, K]``; the history ``[M]`` is per environment. No loop over agents or rounds.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from pydantic import Field

from coasejax.config import EnvSection, register_env
from coasejax.scenarios.base import Scenario, Spec, Transition, check_burn_in, register


@register_env
class ElFarolEnv(EnvSection):
    kind: Literal["el_farol"] = "el_farol"
    sweepable: ClassVar[tuple[str, ...]] = ("capacity", "good", "bad", "decay")
    capacity: float = Field(0.6, gt=0.0, lt=1.0, description="L: the bar holds floor(L·N) before it is crowded")
    good: float = Field(1.0, gt=0.0, le=1e6, description="payoff of going when the bar is not crowded")
    bad: float = Field(-1.0, lt=0.0, ge=-1e6, description="payoff of going when it is crowded (staying home: 0)")
    memory: int = Field(8, ge=2, le=32, description="rounds of attendance history (predictors, observation)")
    predictors: int = Field(4, ge=1, le=16, description="arthur: predictors each agent holds")
    decay: float = Field(0.9, ge=0.0, le=1.0, description="arthur: discount of a predictor's past errors")
    burn_in: int = Field(0, ge=0, le=1_000_000, description="rounds left out of the attendance statistics")


@struct.dataclass
class Params:
    capacity: jax.Array  # f32[] L
    good: jax.Array  # f32[]
    bad: jax.Array  # f32[]
    decay: jax.Array  # f32[]
    p_star: jax.Array  # f32[] the symmetric mixed equilibrium (computed on the host from the config)
    seats_capacity: jax.Array  # i32[] C = floor(L·N)
    n: int = struct.field(pytree_node=False, default=2)
    memory: int = struct.field(pytree_node=False, default=8)
    predictors: int = struct.field(pytree_node=False, default=4)


@struct.dataclass
class State:
    t: jax.Array  # i32[]
    history: jax.Array  # f32[M] attendance fractions, most recent first
    chosen: jax.Array  # i32[N, K] each agent's predictors (indices into the family)
    scores: jax.Array  # f32[N, K] their discounted absolute errors


class Totals(NamedTuple):
    rounds: jax.Array
    attendance: jax.Array  # f32[] agents who went
    attendance_sq: jax.Array
    crowded: jax.Array  # 1 when attendance > C
    payoff: jax.Array  # summed payoffs
    go_prob: jax.Array  # summed probabilities of going (the actions)


# -- the mixed equilibrium (host side, float64) -----------------------------------------------------------------------

def binom_cdf(n: int, k: int, p: float) -> float:
    """``P(Binomial(n, p) ≤ k)``, summed in log space over ``j ∈ [max(0, k − W), k]`` with W wide enough that the
    terms left out are below ``e^{-700}`` of the largest (numpy only)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    sd = math.sqrt(n * p * (1 - p))
    lo = max(0, int(min(k, n * p) - 60 * sd - 60))
    j = np.arange(lo, k + 1, dtype=np.float64)
    log_lo = math.lgamma(n + 1) - math.lgamma(lo + 1) - math.lgamma(n - lo + 1) + lo * math.log(p) + \
        (n - lo) * math.log1p(-p)
    steps = np.log((n - j[:-1]) / (j[:-1] + 1)) + math.log(p) - math.log1p(-p)  # log pmf(j+1) − log pmf(j)
    logs = log_lo + np.concatenate([[0.0], np.cumsum(steps)])
    top = logs.max()
    return float(min(1.0, math.exp(top) * np.exp(logs - top).sum()))


def indifference(good: float, bad: float) -> float:
    """``q = −bad/(good − bad)``: the chance of an uncrowded bar that makes going worth exactly staying (0)."""
    return -bad / (good - bad)


def mixed_equilibrium(n: int, capacity_seats: int, good: float, bad: float) -> float:
    """The symmetric mixed equilibrium p*: ``P(Binomial(n − 1, p*) ≤ C − 1) = q`` (module doc), by bisection (the
    CDF falls in p). C ≤ 0: nobody goes (p* = 0); C ≥ n: the bar never fills (p* = 1)."""
    q = indifference(good, bad)
    if capacity_seats <= 0:
        return 0.0
    if capacity_seats >= n:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if binom_cdf(n - 1, capacity_seats - 1, mid) > q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def large_n_equilibrium(n: int, capacity_seats: int, good: float, bad: float) -> float:
    """The normal approximation of p*: ``(n − 1)p = C − 1/2 − z_q sqrt((n − 1)p(1 − p))`` (fixed-point iteration)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(indifference(good, bad))
    m = n - 1
    p = min(max((capacity_seats - 0.5) / m, 1e-9), 1 - 1e-9)
    for _ in range(100):
        p = min(max((capacity_seats - 0.5 - z * math.sqrt(m * p * (1 - p))) / m, 1e-9), 1 - 1e-9)
    return p


def seats_of(n: int, capacity: float) -> int:
    """``C = floor(L·N)`` (float64 on the host; a hair of slack so L·N that is a whole number is not rounded down)."""
    return int(math.floor(capacity * n + 1e-9))


# -- the scenario ------------------------------------------------------------------------------------------------------

def params(cfg) -> Params:
    env, n = cfg.env, cfg.population.n_agents
    c = seats_of(n, env.capacity)
    p_star = mixed_equilibrium(n, c, env.good, env.bad)
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return Params(capacity=f(env.capacity), good=f(env.good), bad=f(env.bad), decay=f(env.decay), p_star=f(p_star),
                  seats_capacity=jnp.asarray(c, jnp.int32), n=n, memory=env.memory, predictors=env.predictors)


def family_size(memory: int) -> int:
    return memory + (memory - 1) + 2 + 2


def family(p: Params, history: jax.Array) -> jax.Array:
    """``f32[F]``: every predictor of the family's forecast of next round's attendance fraction (module doc)."""
    m = p.memory
    lags = history  # the same as k rounds ago, k = 1..M
    means = (jnp.cumsum(history) / jnp.arange(1, m + 1, dtype=jnp.float32))[1:]  # mean of the last k, k = 2..M
    mirrors = jnp.stack([1.0 - history[0], 2.0 * p.capacity - history[0]])
    trends = jnp.stack([2.0 * history[0] - history[1], history[0] + (history[0] - history[m - 1]) / (m - 1)])
    return jnp.clip(jnp.concatenate([lags, means, mirrors, trends]), 0.0, 1.0)


def reset(key: jax.Array, p: Params) -> State:
    k_h, k_c, k_s = jax.random.split(key, 3)
    return State(t=jnp.zeros((), jnp.int32),
                 history=jax.random.uniform(k_h, (p.memory,), jnp.float32),
                 chosen=jax.random.randint(k_c, (p.n, p.predictors), 0, family_size(p.memory), jnp.int32),
                 # a tiny random start: ties between an agent's predictors break at random, not by position
                 scores=jax.random.uniform(k_s, (p.n, p.predictors), jnp.float32, 0.0, 1e-3))


def observe(p: Params, s: State) -> jax.Array:
    """``f32[1, N, M + 1]``: the public attendance history and L (the same for every agent)."""
    row = jnp.concatenate([s.history, p.capacity[None]])
    return jnp.broadcast_to(row, (1, p.n, p.memory + 1))


def predictions(p: Params, s: State) -> jax.Array:
    """``f32[N, K]``: each agent's predictors' forecasts."""
    return family(p, s.history)[s.chosen]


def step(key: jax.Array, s: State, actions: jax.Array, p: Params):
    prob = jnp.clip(actions[0, :, 0], 0.0, 1.0)
    go = jax.random.uniform(key, (p.n,), jnp.float32) < prob
    count = jnp.sum(go, dtype=jnp.int32)
    crowded = count > p.seats_capacity
    frac = count.astype(jnp.float32) / p.n
    payoff = jnp.where(go, jnp.where(crowded, p.bad, p.good), 0.0)
    err = jnp.abs(predictions(p, s) - frac)
    new = State(t=s.t + 1, history=jnp.concatenate([frac[None], s.history[:-1]]), chosen=s.chosen,
                scores=p.decay * s.scores + err)
    a = count.astype(jnp.float32)
    totals = Totals(rounds=jnp.float32(1.0), attendance=a, attendance_sq=a * a, crowded=crowded.astype(jnp.float32),
                    payoff=jnp.sum(payoff), go_prob=jnp.sum(prob))
    return new, Transition(reward=payoff[None], done=jnp.zeros((p.n,), bool), metrics=totals)


def arthur(key, p: Params, s: State) -> jax.Array:
    """Go iff the best-scoring of the own predictors forecasts attendance below L."""
    best = jnp.argmin(s.scores, axis=1)
    forecast = jnp.take_along_axis(predictions(p, s), best[:, None], axis=1)[:, 0]
    return (forecast < p.capacity).astype(jnp.float32)[None, :, None]


def equilibrium(key, p: Params, s: State) -> jax.Array:
    return jnp.broadcast_to(p.p_star, (1, p.n, 1))


def coin(key, p: Params, s: State) -> jax.Array:
    return jnp.full((1, p.n, 1), 0.5, jnp.float32)


def theory(cfg) -> dict:
    """The equilibrium numbers of a config (host side): p*, its large-N approximation, and the attendance mean and sd
    in the mixed equilibrium."""
    env, n = cfg.env, cfg.population.n_agents
    c = seats_of(n, env.capacity)
    p = mixed_equilibrium(n, c, env.good, env.bad)
    return {"capacity_seats": c, "p_star": p, "p_star_large_n": large_n_equilibrium(n, c, env.good, env.bad),
            "theory_attendance_mean": n * p, "theory_attendance_sd": math.sqrt(n * p * (1 - p))}


def summarise(cfg, p: Params, per_round: dict, first, last) -> dict:
    """Attendance statistics over every environment and measured round (after ``env.burn_in``), beside the mixed
    equilibrium's. ``attendance_se`` is the standard error of the mean for independent rounds (the mixed
    equilibrium's); adaptive predictors' rounds are correlated, so there it is a lower bound."""
    burn = min(cfg.env.burn_in, np.asarray(per_round["rounds"]).shape[1] - 1)
    att = np.asarray(per_round["attendance"], np.float64)[:, burn:].ravel()
    n = cfg.population.n_agents
    k = att.size
    mean = float(att.mean())
    sd = float(att.std(ddof=1)) if k > 1 else 0.0
    th = theory(cfg)
    pr = {f: np.asarray(v, np.float64)[:, burn:] for f, v in per_round.items()}
    agent_rounds = n * k
    out = {"n_agents": n, "rounds": int(np.asarray(per_round["rounds"]).shape[1]), "measured_rounds": k,
           "envs": int(np.asarray(per_round["rounds"]).shape[0]), "capacity": cfg.env.capacity,
           "attendance_mean": mean, "attendance_sd": sd, "attendance_se": sd / math.sqrt(k) if k > 1 else 0.0,
           "attendance_mean_fraction": mean / n, "crowded_rate": float(pr["crowded"].mean()),
           "payoff_per_agent_round": float(pr["payoff"].sum()) / agent_rounds,
           "go_probability": float(pr["go_prob"].sum()) / agent_rounds, **th}
    out["z_mean"] = (mean - th["theory_attendance_mean"]) / (th["theory_attendance_sd"] / math.sqrt(k)) \
        if th["theory_attendance_sd"] > 0 else 0.0
    out["figure"] = figure(np.asarray(per_round["attendance"], np.float64)[0] / n, cfg.env.capacity, th["p_star"])
    return out


def figure(attendance: np.ndarray, capacity: float, p_star: float) -> dict:
    """The report's figure: the first environment's attendance fraction by round beside L and the mixed
    equilibrium's mean p* (at most the last 400 rounds)."""
    t = np.arange(1, attendance.size + 1)[-400:].tolist()
    flat = lambda v: [float(v)] * len(t)  # noqa: E731
    return {"caption": "El Farol: attendance by round (first environment) against the capacity L and the symmetric "
                       "mixed equilibrium's mean attendance p*.",
            "panels": [{"title": "attendance", "xlabel": "round", "ylabel": "attendance / N",
                        "series": [{"label": "attendance", "x": t, "y": attendance[-400:].tolist(),
                                    "kind": "measured"},
                                   {"label": "capacity L", "x": t, "y": flat(capacity), "kind": "theory"},
                                   {"label": "mixed equilibrium p*", "x": t, "y": flat(p_star), "kind": "theory"}]}]}


def metrics(p: Params, tot: Totals) -> dict:
    r = jnp.maximum(tot.rounds, 1.0)
    mean = tot.attendance / r
    return {"attendance_fraction": mean / p.n, "attendance_sd": jnp.sqrt(jnp.maximum(tot.attendance_sq / r - mean**2,
                                                                                        0.0)),
            "go_probability": tot.go_prob / (r * p.n), "crowded_rate": tot.crowded / r,
            "p_star": p.p_star, "payoff": tot.payoff / (r * p.n)}


SCENARIO = register(Scenario(
    name="el_farol", check=check_burn_in, bytes_per_agent=80,  # measured peak at N = 10^6 (BENCHMARKS.md), rounded down
    params=params, reset=reset, observe=observe, step=step,
    spec=lambda p: Spec(observation=tuple(f"attendance_lag{k}" for k in range(1, p.memory + 1)) + ("capacity",),
                        actions=("go_probability",), low=(0.0,), high=(1.0,), truthful=(0.5,), relative=False,
                        seats=1),
    seat_providers=lambda p, s: jnp.zeros((1, p.n), jnp.int32),
    seat_owners=lambda p, s: jnp.arange(p.n, dtype=jnp.int32)[None],
    scripted={"arthur": arthur, "equilibrium": equilibrium, "truthful": coin},
    summarise=summarise, metrics=metrics,
    headline=("attendance_mean_fraction", "attendance_sd", "crowded_rate", "payoff_per_agent_round", "p_star"),
    description="El Farol bar (Arthur 1994): N agents, capacity floor(L·N); adaptive predictors, the symmetric mixed "
                "equilibrium, or a learned probability of going"))
