"""Granovetter's threshold model of collective behaviour (Granovetter 1978): a cascade and its tipping point.

Each of N agents has a threshold ``θ_i ~ Normal(μ, σ)`` (``env.mu``, ``env.sigma``; fractions of the population,
unclipped: ``θ_i ≤ 0`` is an instigator who joins an empty crowd, ``θ_i > 1`` never joins), drawn at reset. Round t
starts from the crowd ``x_t``, the fraction of agents in (``x_0 = 0``); each agent's action is the probability of being
in this round, and the scripted rule (``threshold``, also ``truthful``) is in iff ``x_t ≥ θ_i``, the myopic best
reply to the payoff ``in·(x − θ)`` (joining is worth the crowd's size minus the own threshold), which is the seat's
reward, at the crowd ``x_{t+1}`` the round ends with. Under the rule ``x_{t+1} = F_N(x_t)``, ``F_N`` the empirical
CDF of the thresholds, so the crowd rises monotonically to the *first fixed point* of ``F_N`` above 0, and as
N → ∞ to the first fixed point of ``F(x) = Φ((x − μ)/σ)`` reached from 0 (:func:`first_fixed_point`; THEORY.md).

The jump (:func:`critical_sigma`). For 0 < μ < 1/2 and small σ the first fixed point is low (few instigators, a
small crowd); it disappears where ``F`` touches the diagonal, ``F(x) = x`` and ``F'(x) = 1``. With
``z = (x − μ)/σ`` these read ``Φ(z) − z φ(z) = μ`` (one root z < 0, as ``d/dz[Φ − zφ] = z²φ > 0``) and
``σ_c = φ(z)``. Just above σ_c the cascade runs through to the upper fixed point near 1: the final crowd jumps.
(μ = 0.25: σ_c ≈ 0.122, Granovetter's "riot" of 100 with mean threshold 25 and sd ≈ 12.2.)

The crowd is counted in ``int32`` and divided by N in float32, and agents compare it with their float32 thresholds, so
the same iteration in numpy (:func:`empirical_fixed_point`) reproduces the simulated count of agents in (XLA may round
the division differently by an ulp, which matters only for a threshold within one ulp of the crowd).
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
from coasejax.scenarios.base import Scenario, Spec, Transition, register


@register_env
class GranovetterEnv(EnvSection):
    kind: Literal["granovetter"] = "granovetter"
    sweepable: ClassVar[tuple[str, ...]] = ("mu", "sigma")  # the thresholds are drawn from them at reset
    mu: float = Field(0.25, ge=-1.0, le=2.0, description="mean threshold (a fraction of the population)")
    sigma: float = Field(0.1, ge=0.0, le=10.0, description="sd of the thresholds")


@struct.dataclass
class Params:
    mu: jax.Array  # f32[]
    sigma: jax.Array  # f32[]
    n: int = struct.field(pytree_node=False, default=2)


@struct.dataclass
class State:
    t: jax.Array  # i32[]
    theta: jax.Array  # f32[N] thresholds
    inside: jax.Array  # bool[N]
    crowd: jax.Array  # f32[] fraction in


class Totals(NamedTuple):
    rounds: jax.Array
    crowd: jax.Array  # f32[] the fraction in at the end of the round
    changed: jax.Array  # f32[] agents who joined or left this round
    payoff: jax.Array  # f32[] summed in·(x − θ)


def params(cfg) -> Params:
    return Params(mu=jnp.float32(cfg.env.mu), sigma=jnp.float32(cfg.env.sigma), n=cfg.population.n_agents)


def reset(key: jax.Array, p: Params) -> State:
    theta = p.mu + p.sigma * jax.random.normal(key, (p.n,), jnp.float32)
    return State(t=jnp.zeros((), jnp.int32), theta=theta, inside=jnp.zeros((p.n,), bool), crowd=jnp.float32(0.0))


def observe(p: Params, s: State) -> jax.Array:
    """``f32[1, N, 2]``: the crowd and the own threshold."""
    return jnp.stack([jnp.broadcast_to(s.crowd, (p.n,)), s.theta], -1)[None]


def crowd_of(inside: jax.Array, n: int) -> jax.Array:
    return jnp.sum(inside, dtype=jnp.int32).astype(jnp.float32) / jnp.float32(n)


def step(key: jax.Array, s: State, actions: jax.Array, p: Params):
    prob = jnp.clip(actions[0, :, 0], 0.0, 1.0)
    inside = jax.random.uniform(key, (p.n,), jnp.float32) < prob
    x = crowd_of(inside, p.n)
    payoff = jnp.where(inside, x - s.theta, 0.0)
    totals = Totals(rounds=jnp.float32(1.0), crowd=x, changed=jnp.sum(inside != s.inside, dtype=jnp.int32)
                    .astype(jnp.float32), payoff=jnp.sum(payoff))
    new = State(t=s.t + 1, theta=s.theta, inside=inside, crowd=x)
    return new, Transition(reward=payoff[None], done=jnp.zeros((p.n,), bool), metrics=totals)


def threshold(key, p: Params, s: State) -> jax.Array:
    """In iff the crowd has reached the own threshold."""
    return (s.crowd >= s.theta).astype(jnp.float32)[None, :, None]


# -- theory (host side) ------------------------------------------------------------------------------------------------

def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def first_fixed_point(mu: float, sigma: float, tol: float = 1e-12, max_iter: int = 1_000_000) -> float:
    """The first fixed point of ``x = Φ((x − μ)/σ)`` reached from x = 0 (iterating F: monotone, as F rises)."""
    if sigma == 0.0:
        return 1.0 if mu <= 0.0 else 0.0
    x = 0.0
    for _ in range(max_iter):
        nxt = normal_cdf((x - mu) / sigma)
        if abs(nxt - x) < tol:
            return nxt
        x = nxt
    return x


def critical_sigma(mu: float) -> float:
    """σ_c for 0 < μ < 1/2: ``φ(z)`` at the root z < 0 of ``Φ(z) − z φ(z) = μ`` (module doc), by bisection."""
    if not 0.0 < mu < 0.5:
        return float("nan")
    phi = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # noqa: E731
    lo, hi = -40.0, 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if normal_cdf(mid) - mid * phi(mid) < mu:
            lo = mid
        else:
            hi = mid
    return phi(0.5 * (lo + hi))


def empirical_fixed_point(theta: np.ndarray) -> tuple[float, int]:
    """The first fixed point of the thresholds' empirical CDF from 0, in the simulation's float32 arithmetic, and the
    rounds the cascade takes to reach it (numpy; ``theta`` one population's thresholds)."""
    theta = np.sort(np.asarray(theta, np.float32))
    n = theta.size
    x, rounds = np.float32(0.0), 0
    while True:
        count = int(np.searchsorted(theta, x, side="right"))  # θ ≤ x
        nxt = np.float32(count) / np.float32(n)
        if nxt == x:
            return float(x), rounds
        x, rounds = nxt, rounds + 1


def summarise(cfg, p: Params, per_round: dict, first, last) -> dict:
    crowd = np.asarray(per_round["crowd"], np.float64)  # [E, T]
    changed = np.asarray(per_round["changed"], np.float64)
    moving = changed > 0
    settled = [int(np.flatnonzero(m)[-1]) + 1 if m.any() else 0 for m in moving]  # rounds with a change
    mu, sigma = cfg.env.mu, cfg.env.sigma
    n = cfg.population.n_agents
    out = {"n_agents": n, "rounds": int(crowd.shape[1]), "envs": int(crowd.shape[0]), "mu": mu, "sigma": sigma,
           "final_crowd": float(crowd[:, -1].mean()), "final_crowd_per_env": crowd[:, -1].tolist(),
           "theory_crowd": first_fixed_point(mu, sigma), "critical_sigma": critical_sigma(mu),
           "rounds_to_settle": float(np.mean(settled)), "settled": bool(not moving[:, -1].any()),
           "payoff_per_agent_round": float(np.asarray(per_round["payoff"]).sum()) / (n * crowd.size)}
    if math.isnan(out["critical_sigma"]):
        out.pop("critical_sigma")
    out["figure"] = figure(crowd.mean(0), mu, sigma)
    return out


def theory_path(mu: float, sigma: float, rounds: int) -> list[float]:
    """The crowd after each of ``rounds`` rounds as N → ∞: ``x_{t+1} = F(x_t)`` from ``x_0 = 0``."""
    xs, x = [], 0.0
    for _ in range(rounds):
        x = normal_cdf((x - mu) / sigma) if sigma > 0 else float(x >= mu)
        xs.append(x)
    return xs


def figure(crowd: np.ndarray, mu: float, sigma: float) -> dict:
    """The report's figure: the crowd by round (mean over environments) beside the cascade ``x_{t+1} = F(x_t)``."""
    t = list(range(1, crowd.size + 1))
    return {"caption": "Granovetter: the crowd after each round against the cascade x_{t+1} = F(x_t) of the "
                       "threshold distribution (N → ∞), which stops at its first fixed point.",
            "panels": [{"title": "the cascade", "xlabel": "round", "ylabel": "crowd (fraction in)",
                        "series": [{"label": "crowd", "x": t, "y": crowd.tolist(), "kind": "measured"},
                                   {"label": "x_{t+1} = F(x_t)", "x": t, "y": theory_path(mu, sigma, len(t)),
                                    "kind": "theory"}]}]}


def metrics(p: Params, tot: Totals) -> dict:
    r = jnp.maximum(tot.rounds, 1.0)
    return {"mean_crowd": tot.crowd / r, "payoff": tot.payoff / (r * p.n)}


def crowd_curve(cfg, sigmas, rounds: int | None = None, key: jax.Array | None = None) -> np.ndarray:
    """``f64[len(sigmas)]``: the final crowd under the threshold rule at each σ, one compiled ``vmap`` over σ (the
    same population's standard normals scaled by each σ: common random numbers)."""
    from coasejax.scenarios.base import rollout

    p = params(cfg)
    rounds = rounds or cfg.sim.rounds
    key = jax.random.PRNGKey(cfg.sim.seed) if key is None else key
    act = lambda k, pp, s, obs: threshold(k, pp, s)  # noqa: E731

    def one(sigma):
        q = p.replace(sigma=sigma)
        s0 = reset(jax.random.fold_in(key, 1), q)
        last, _ = rollout(SCENARIO, act, key, s0, q, rounds)
        return last.crowd

    return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(sigmas, jnp.float32)), np.float64)


SCENARIO = register(Scenario(
    name="granovetter", bytes_per_agent=28,  # measured peak at N = 10^6 (BENCHMARKS.md), rounded down
    params=params, reset=reset, observe=observe, step=step,
    spec=lambda p: Spec(observation=("crowd", "threshold"), actions=("in",), low=(0.0,), high=(1.0,),
                        truthful=(0.5,), relative=False, seats=1),
    seat_providers=lambda p, s: jnp.zeros((1, p.n), jnp.int32),
    seat_owners=lambda p, s: jnp.arange(p.n, dtype=jnp.int32)[None],
    scripted={"threshold": threshold, "truthful": threshold},
    summarise=summarise, metrics=metrics,
    headline=("final_crowd", "theory_crowd", "rounds_to_settle", "payoff_per_agent_round"),
    description="Granovetter thresholds: agents join once the crowd reaches their threshold; the cascade stops at "
                "the first fixed point of the thresholds' CDF, and jumps as their spread crosses its critical value"))
