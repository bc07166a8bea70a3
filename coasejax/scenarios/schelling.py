"""Schelling's segregation model (Schelling 1971, 1978) on a torus: mild preferences, a strongly segregated city.

Grid. ``N = population.n_agents`` cells on an ``R × L`` torus (:func:`coasejax.graphs.torus_shape`: R the largest
divisor of N not above sqrt(N), at least 3). At reset each cell is empty with probability ``env.empty``, else holds an
agent of type A (probability ``env.share_a``) or B, independently. The agent axis is the cell axis: seat i is cell
i, whose occupant (if any) acts there; an empty cell's action is ignored.

Neighbourhood and happiness. An agent's neighbours are the 8 cells around it (Moore neighbourhood, wrapping); its
*like share* is the fraction of its occupied neighbours of its own type (1 when it has none). It is unhappy when that
share is below its tolerance ``env.tolerance`` τ. The scripted rule (``schelling``, also ``truthful``) moves
exactly the unhappy; the action is the probability of moving, ``f32[1, N, 1]``.

Moves (fixed shapes, O(N), no permutation). The empty cells are listed by a prefix sum (rank of each empty cell) and a
scatter into an ``N``-long buffer; every mover draws one of them uniformly; collisions are resolved by a scatter-min
of a random 31-bit priority and, among equal priorities, of the cell index, so exactly one claimant wins each
claimed cell and the rest stay put this round. Winners move; the move may leave them unhappy again (random, not
best, relocation, as in Schelling's random variant). A seat's reward is whether its agent is happy after the move.

Measures. *Segregation* is the mean like share over agents with at least one occupied neighbour. Under random mixing
(the iid reset) an agent of type A's occupied neighbours are each of type A with probability s = ``share_a``,
independently, so the like share's expectation is ``s² + (1 − s)²`` (1/2 for equal groups): ``random_baseline``.
Schelling's finding: a mild preference (τ = 1/3, content as a minority of one in three) ends far above it.
:func:`tolerance_curve` runs the same population at several tolerances in one compiled ``vmap`` (segregation
against tolerance).

The like share and the occupied-neighbour count are kept in the state (computed once per round, at the end of
``step``), so the advocates and ``observe`` read them without recounting.
"""

from __future__ import annotations

from typing import ClassVar, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from pydantic import Field

from coasejax.config import EnvSection, register_env
from coasejax.graphs import TORUS_MIN_SIDE, torus_shape
from coasejax.scenarios.base import Scenario, Spec, Transition, register

EMPTY, TYPE_A, TYPE_B = 0, 1, 2
OFFSETS = tuple((dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0))


@register_env
class SchellingEnv(EnvSection):
    kind: Literal["schelling"] = "schelling"
    sweepable: ClassVar[tuple[str, ...]] = ("tolerance", "empty", "share_a")
    tolerance: float = Field(1 / 3, ge=0.0, le=1.0, description="least like share of occupied neighbours an "
                             "agent is content with")
    empty: float = Field(0.1, gt=0.0, lt=1.0, description="probability that a cell starts empty")
    share_a: float = Field(0.5, gt=0.0, lt=1.0, description="probability that an agent is of type A")


@struct.dataclass
class Params:
    tolerance: jax.Array  # f32[]
    empty: jax.Array  # f32[]
    share_a: jax.Array  # f32[]
    n: int = struct.field(pytree_node=False, default=9)
    rows: int = struct.field(pytree_node=False, default=3)
    cols: int = struct.field(pytree_node=False, default=3)


@struct.dataclass
class State:
    t: jax.Array  # i32[]
    grid: jax.Array  # i8[N] EMPTY / TYPE_A / TYPE_B, row-major over the R × L torus
    share: jax.Array  # f32[N] the occupant's like share (1 for an empty cell or no occupied neighbour)
    occupied: jax.Array  # i8[N] occupied neighbours (0..8)


class Totals(NamedTuple):
    rounds: jax.Array
    agents: jax.Array  # f32[] occupied cells
    counted: jax.Array  # f32[] agents with an occupied neighbour
    like: jax.Array  # f32[] their like shares, summed (after the round's moves)
    unhappy: jax.Array  # f32[] agents unhappy before the moves
    moved: jax.Array  # f32[] agents who moved


def params(cfg) -> Params:
    from coasejax.config import ConfigError

    n = cfg.population.n_agents
    rows, cols = torus_shape(n)
    if rows < TORUS_MIN_SIDE:
        raise ConfigError(f"population.n_agents: {n} cells make a {rows} × {cols} torus; Schelling's grid needs at "
                          f"least {TORUS_MIN_SIDE} rows (pick N with a divisor in {TORUS_MIN_SIDE}..sqrt(N), e.g. a "
                          "square)")
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return Params(tolerance=f(cfg.env.tolerance), empty=f(cfg.env.empty), share_a=f(cfg.env.share_a), n=n,
                  rows=rows, cols=cols)


def neighbourhood(p: Params, grid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(like share f32[N], occupied neighbours i8[N])`` of every cell's occupant (8 rolls per type)."""
    g = grid.reshape(p.rows, p.cols)
    a = (g == TYPE_A).astype(jnp.int8)
    b = (g == TYPE_B).astype(jnp.int8)
    na = sum(jnp.roll(a, o, axis=(0, 1)) for o in OFFSETS)
    nb = sum(jnp.roll(b, o, axis=(0, 1)) for o in OFFSETS)
    occ = (na + nb).reshape(-1)
    like = jnp.where(grid == TYPE_A, na.reshape(-1), nb.reshape(-1))
    share = jnp.where((grid != EMPTY) & (occ > 0), like.astype(jnp.float32) / jnp.maximum(occ, 1), 1.0)
    return share, occ


def reset(key: jax.Array, p: Params) -> State:
    k_e, k_t = jax.random.split(key)
    empty = jax.random.uniform(k_e, (p.n,)) < p.empty
    type_a = jax.random.uniform(k_t, (p.n,)) < p.share_a
    grid = jnp.where(empty, EMPTY, jnp.where(type_a, TYPE_A, TYPE_B)).astype(jnp.int8)
    share, occ = neighbourhood(p, grid)
    return State(t=jnp.zeros((), jnp.int32), grid=grid, share=share, occupied=occ)


def observe(p: Params, s: State) -> jax.Array:
    """``f32[1, N, 3]``: the like share, the occupied neighbours / 8 and the tolerance (zeros for empty cells)."""
    occupied = s.grid != EMPTY
    obs = jnp.stack([s.share, s.occupied.astype(jnp.float32) / 8.0, jnp.broadcast_to(p.tolerance, (p.n,))], -1)
    return jnp.where(occupied[:, None], obs, 0.0)[None]


def unhappy(p: Params, s: State) -> jax.Array:
    return (s.grid != EMPTY) & (s.share < p.tolerance)


def relocate(key: jax.Array, p: Params, grid: jax.Array, want: jax.Array):
    """Movers to random empty cells (module doc): ``(new grid, winners bool[N], their targets i32[N])``."""
    k_pick, k_prio = jax.random.split(key)
    n = p.n
    idx = jnp.arange(n, dtype=jnp.int32)
    is_empty = grid == EMPTY
    rank = jnp.cumsum(is_empty, dtype=jnp.int32) - 1
    n_empty = rank[-1] + 1
    slots = jnp.zeros((n,), jnp.int32).at[jnp.where(is_empty, rank, n)].set(idx, mode="drop")
    pick = jnp.minimum((jax.random.uniform(k_pick, (n,)) * n_empty).astype(jnp.int32), jnp.maximum(n_empty - 1, 0))
    target = slots[pick]
    want = want & (grid != EMPTY) & (n_empty > 0)
    prio = (jax.random.bits(k_prio, (n,), jnp.uint32) >> 1).astype(jnp.int32)
    big = jnp.iinfo(jnp.int32).max
    drop = jnp.where(want, target, n)
    best = jnp.full((n,), big, jnp.int32).at[drop].min(prio, mode="drop")
    first = want & (prio == best[target])
    tie = jnp.full((n,), big, jnp.int32).at[jnp.where(first, target, n)].min(idx, mode="drop")
    win = first & (idx == tie[target])
    moved = grid.at[jnp.where(win, target, n)].set(grid, mode="drop")
    return jnp.where(win, jnp.int8(EMPTY), moved), win, target


def step(key: jax.Array, s: State, actions: jax.Array, p: Params):
    k_move, k_rel = jax.random.split(key)
    prob = jnp.clip(actions[0, :, 0], 0.0, 1.0)
    want = jax.random.uniform(k_move, (p.n,)) < prob
    grid, win, target = relocate(k_rel, p, s.grid, want)
    share, occ = neighbourhood(p, grid)
    happy = (grid != EMPTY) & (share >= p.tolerance)
    reward = jnp.where(s.grid != EMPTY, happy[jnp.where(win, target, jnp.arange(p.n))], False).astype(jnp.float32)
    agents = grid != EMPTY
    counted = agents & (occ > 0)
    f = lambda x: jnp.sum(x, dtype=jnp.float32)  # noqa: E731
    totals = Totals(rounds=jnp.float32(1.0), agents=f(agents), counted=f(counted), like=f(jnp.where(counted, share,
                                                                                                      0.0)),
                    unhappy=f(unhappy(p, s)), moved=f(win))
    new = State(t=s.t + 1, grid=grid, share=share, occupied=occ)
    return new, Transition(reward=reward[None], done=jnp.zeros((p.n,), bool), metrics=totals)


def schelling(key, p: Params, s: State) -> jax.Array:
    """Move iff unhappy."""
    return unhappy(p, s).astype(jnp.float32)[None, :, None]


def random_baseline(share_a: float) -> float:
    """The expected like share under random mixing: ``s² + (1 − s)²``."""
    return share_a**2 + (1 - share_a) ** 2


def segregation(p: Params, s: State) -> jax.Array:
    """``f32[]``: the mean like share over agents with an occupied neighbour (one state)."""
    counted = (s.grid != EMPTY) & (s.occupied > 0)
    return jnp.sum(jnp.where(counted, s.share, 0.0)) / jnp.maximum(jnp.sum(counted), 1)


def summarise(cfg, p: Params, per_round: dict, first, last) -> dict:
    pr = {k: np.asarray(v, np.float64) for k, v in per_round.items()}  # [E, T]
    seg = pr["like"] / np.maximum(pr["counted"], 1.0)
    # the reset's segregation, from the first state (host arrays, leading env axis)
    grid0, share0, occ0 = (np.asarray(x) for x in (first.grid, first.share, first.occupied))
    counted0 = (grid0 != EMPTY) & (occ0 > 0)
    seg0 = (np.where(counted0, share0, 0.0).sum(-1) / np.maximum(counted0.sum(-1), 1)).mean()
    agents = pr["agents"][:, -1].mean()
    return {"n_cells": cfg.population.n_agents, "grid": [p.rows, p.cols], "rounds": int(seg.shape[1]),
            "envs": int(seg.shape[0]), "tolerance": cfg.env.tolerance, "empty": cfg.env.empty,
            "agents": float(agents), "segregation": float(seg[:, -1].mean()), "segregation_initial": float(seg0),
            "random_baseline": random_baseline(cfg.env.share_a),
            "unhappy_final": float(pr["unhappy"][:, -1].mean() / agents),
            "moved_final": float(pr["moved"][:, -1].mean() / agents),
            "segregation_per_round": seg.mean(0).tolist(),
            "figure": figure(seg.mean(0), float(seg0), random_baseline(cfg.env.share_a), cfg.env.tolerance)}


def figure(seg: np.ndarray, seg0: float, baseline: float, tolerance: float) -> dict:
    """The report's figure: segregation by round (mean over environments) from the reset's, beside random mixing's
    ``s² + (1 − s)²`` and the tolerance (segregation against tolerance: ``--sweep env.tolerance=...``)."""
    t = list(range(0, seg.size + 1))
    flat = lambda v: [float(v)] * len(t)  # noqa: E731
    return {"caption": f"Schelling: the mean like share of neighbours by round at tolerance {tolerance:.3g}, against "
                       "random mixing (s² + (1 − s)²) and the tolerance itself.",
            "panels": [{"title": "segregation", "xlabel": "round", "ylabel": "mean like share",
                        "series": [{"label": "segregation", "x": t, "y": [seg0, *seg.tolist()], "kind": "measured"},
                                   {"label": "random mixing", "x": t, "y": flat(baseline), "kind": "theory"},
                                   {"label": "tolerance", "x": t, "y": flat(tolerance), "kind": "theory"}]}]}


def metrics(p: Params, tot: Totals) -> dict:
    return {"segregation": tot.like / jnp.maximum(tot.counted, 1.0),
            "unhappy_rate": tot.unhappy / jnp.maximum(tot.agents, 1.0),
            "move_rate": tot.moved / jnp.maximum(tot.agents, 1.0)}


def tolerance_curve(cfg, tolerances, rounds: int | None = None, envs: int = 1,
                    key: jax.Array | None = None) -> np.ndarray:
    """``f64[len(tolerances)]``: the final segregation under the scripted rule at each tolerance, averaged over
    ``envs`` populations; one compiled ``vmap`` over tolerances (the same populations and draws at each: common
    random numbers)."""
    from coasejax.scenarios.base import rollout

    p = params(cfg)
    rounds = rounds or cfg.sim.rounds
    key = jax.random.PRNGKey(cfg.sim.seed) if key is None else key
    act = lambda k, pp, s, obs: schelling(k, pp, s)  # noqa: E731

    def one(tol, k):
        q = p.replace(tolerance=tol)
        last, _ = rollout(SCENARIO, act, k, reset(jax.random.fold_in(k, 1), q), q, rounds)
        return segregation(q, last)

    keys = jax.random.split(key, envs)
    out = jax.jit(jax.vmap(lambda tol: jnp.mean(jax.vmap(lambda k: one(tol, k))(keys))))(
        jnp.asarray(tolerances, jnp.float32))
    return np.asarray(out, np.float64)


SCENARIO = register(Scenario(
    name="schelling", bytes_per_agent=64,  # measured peak at N = 10^6 (BENCHMARKS.md), rounded down
    params=params, reset=reset, observe=observe, step=step,
    spec=lambda p: Spec(observation=("like_share", "occupied_neighbours", "tolerance"), actions=("move",),
                        low=(0.0,), high=(1.0,), truthful=(0.5,), relative=False, seats=1),
    seat_providers=lambda p, s: jnp.zeros((1, p.n), jnp.int32),
    seat_owners=lambda p, s: jnp.arange(p.n, dtype=jnp.int32)[None],
    scripted={"schelling": schelling, "truthful": schelling},
    summarise=summarise, metrics=metrics,
    description="Schelling segregation on a torus of N cells: unhappy agents (like share of occupied neighbours "
                "below env.tolerance) move to random empty cells"))
