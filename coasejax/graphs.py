"""Neighbour graphs with k out-neighbours per agent, stored in O(N·k) memory or less.

Every graph here is a union of k *slot permutations*: slot s maps each emitter i to one victim ``nbr(i, s)``, and every
agent is the slot-s victim of exactly one emitter. So each agent has k out-neighbours and k in-neighbours, and two
vectorised operations cover all the bargaining arithmetic:

* ``out(v)``  -> ``f32[k, N]``, ``out(v)[s, i] = v[nbr(i, s)]``: what each emitter sees of its victims;
* ``into(p)`` -> ``f32[k, N]``, ``into(p)[s, j] = p[s, rev(j, s)]``: what each victim receives from the emitter that
  harms it through slot s.

Ring, torus and random graphs are circulant (a slot is a fixed shift of the agent index, or of the row/column index on
the torus), so both operations are ``jnp.roll``: no index arrays, no gathers, no scatters, and under sharding a roll is
a collective permute. Small-world graphs store explicit ``nbr``/``rev`` index arrays (``i32[k, N]`` each).

Per-slot arrays are slot-major, ``[k, N]``: each slot is a contiguous row, and sums over slots are k-way adds.

Graphs:
    ring         offsets +1, -1, +2, -2, ... (a ring lattice; Watts & Strogatz 1998 before rewiring)
    torus        2-D torus of R x L cells, von Neumann (k = 4) or Moore (k = 8) neighbourhood; N must factor as R x L
                 with 3 <= R <= L (else an agent would be its own or a repeated neighbour)
    random       random k-regular circulant: k distinct random offsets drawn from the seed
    small_world  ring lattice with each edge rewired with probability p, keeping every slot a permutation (so in- and
                 out-degree stay exactly k): the targets vacated by rewired edges are cycled among them at random.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


def torus_shape(n: int) -> tuple[int, int]:
    """R x L with R the largest divisor of N not above sqrt(N)."""
    r = int(math.isqrt(n))
    while n % r:
        r -= 1
    return r, n // r


#: the least side of a torus grid: with 3 rows and columns an agent's ±1 neighbours are distinct agents, not itself
TORUS_MIN_SIDE = 3


def graph_problem(kind: str, n: int, k: int) -> str | None:
    """Why a graph of this kind cannot hold N agents with k distinct out-neighbours each (None: it can)."""
    if k >= n:
        return (f"population.degree: must be smaller than population.n_agents (each agent harms k distinct other "
                f"agents), got degree {k} with {n} agents")
    if kind == "torus":
        if k not in (4, 8):
            return "population.degree: torus graphs allow degree 4 (von Neumann) or 8 (Moore)"
        r, l = torus_shape(n)
        if r < TORUS_MIN_SIDE:
            near = [m for m in _torus_sizes_near(n)]
            return (f"population.n_agents: a torus needs N = R × L with {TORUS_MIN_SIDE} ≤ R ≤ L (else an agent "
                    f"is its own or a repeated neighbour); N = {n} factors at best as {r} × {l} (nearest sizes "
                    f"that do: {', '.join(str(m) for m in near)}; or use another population.graph)")
    return None


def _torus_sizes_near(n: int) -> list[int]:
    """The nearest agent counts below and above N that a torus can hold."""
    ok = lambda m: m >= TORUS_MIN_SIDE ** 2 and torus_shape(m)[0] >= TORUS_MIN_SIDE  # noqa: E731
    below = next((m for m in range(n - 1, TORUS_MIN_SIDE ** 2 - 1, -1) if ok(m)), None)
    above = next(m for m in range(max(n + 1, TORUS_MIN_SIDE ** 2), n + 10_000) if ok(m))
    return [m for m in (below, above) if m is not None and m <= 2**31 - 1]



@struct.dataclass
class Graph:
    """k slot permutations over N agents. Static fields select the fast circulant path."""

    kind: str = struct.field(pytree_node=False)
    n: int = struct.field(pytree_node=False)
    k: int = struct.field(pytree_node=False)
    # circulant graphs: per slot, a shift of the flat index (ring/random) or (row, col) shift on an R x L torus
    shifts: tuple = struct.field(pytree_node=False, default=())
    grid: tuple = struct.field(pytree_node=False, default=())
    # explicit graphs (small_world): i32[k, N] out-neighbours and the emitter behind each in-slot
    nbr: jax.Array | None = None
    rev: jax.Array | None = None

    @property
    def explicit(self) -> bool:
        return self.nbr is not None

    def out(self, v: jax.Array) -> jax.Array:
        """``f32[N] -> f32[k, N]``: the value of each emitter's slot-s victim."""
        if self.explicit:
            return v[self.nbr]
        return jnp.stack([self._shift(v, s, -1) for s in range(self.k)])

    def into(self, p: jax.Array) -> jax.Array:
        """``f32[k, N] -> f32[k, N]``: entry (s, j) is p at the emitter whose slot-s victim is j."""
        if self.explicit:
            return jnp.take_along_axis(p, self.rev, axis=1)
        return jnp.stack([self._shift(p[s], s, +1) for s in range(self.k)])

    def _shift(self, v: jax.Array, s: int, sign: int) -> jax.Array:
        # out: value at index i + shift  -> roll by -shift;   into: value at index j - shift -> roll by +shift
        if self.kind == "torus":
            r, l = self.grid
            dr, dc = self.shifts[s]
            g = v.reshape(r, l)
            g = jnp.roll(g, (sign * dr, sign * dc), axis=(0, 1))
            return g.reshape(self.n)
        return jnp.roll(v, sign * self.shifts[s])

    def neighbours(self) -> np.ndarray:
        """``i32[N, k]`` out-neighbour indices, materialised (for tests and small N only)."""
        if self.explicit:
            return np.asarray(self.nbr).T
        idx = np.arange(self.n)
        if self.kind == "torus":
            r, l = self.grid
            row, col = idx // l, idx % l
            return np.stack([((row + dr) % r) * l + (col + dc) % l for dr, dc in self.shifts], axis=1)
        return np.stack([(idx + o) % self.n for o in self.shifts], axis=1)


def slot_sum(p: jax.Array) -> jax.Array:
    """``f32[k, N] -> f32[N]``: sum over slots as k − 1 element-wise adds (XLA:CPU reduces a leading axis slowly)."""
    total = p[0]
    for s in range(1, p.shape[0]):
        total = total + p[s]
    return total


def _ring_offsets(k: int) -> list[int]:
    out = []
    d = 1
    while len(out) < k:
        out.append(d)
        if len(out) < k:
            out.append(-d)
        d += 1
    return out


def make_graph(kind: str, n: int, k: int, seed: int, rewire: float = 0.1) -> Graph:
    """Build a graph. Randomness (offsets, rewiring) comes from ``seed`` only, so the graph is reproducible.

    Raises ``ValueError`` (the message of :func:`graph_problem`) when N agents cannot each have k
    distinct out-neighbours in this kind of graph: the config refuses those sizes, and so does this."""
    problem = graph_problem(kind, n, k) if kind in ("ring", "torus", "random", "small_world") else None
    if problem is not None:
        raise ValueError(problem)
    if kind == "ring":
        return Graph(kind, n, k, shifts=tuple(_ring_offsets(k)))
    if kind == "torus":
        vn = [(0, 1), (0, -1), (1, 0), (-1, 0)]
        moore = vn + [(1, 1), (1, -1), (-1, 1), (-1, -1)]
        return Graph(kind, n, k, shifts=tuple(vn if k == 4 else moore), grid=torus_shape(n))
    if kind == "random":
        rng = np.random.default_rng(seed)
        offsets = rng.choice(np.arange(1, n), size=k, replace=False)
        return Graph("random", n, k, shifts=tuple(int(o) for o in offsets))
    if kind == "small_world":
        nbr, rev = _rewired_ring(n, k, seed, rewire)
        return Graph(kind, n, k, nbr=nbr, rev=rev)
    raise ValueError(f"unknown graph kind {kind!r}")


def _rewired_ring(n: int, k: int, seed: int, p: float) -> tuple[jax.Array, jax.Array]:
    """Ring lattice whose edges are rewired with probability p, each slot staying a permutation.

    For slot s the rewired emitters (a Bernoulli(p) subset) are put in random order and each takes the ring target of
    the next one in that order (a random cycle). Targets are only exchanged, so every agent keeps in-degree k.

    The cycle can hand an emitter its own index (emitter i takes the target of j = i − offset): about one such self-loop
    per slot. Each is removed by swapping targets with another rewired emitter B chosen from the seed: i takes B's
    target (≠ i, since targets are a permutation and i held i) and B takes i (≠ B), so a swap never makes a new
    self-loop, and the slot stays a permutation.
    """
    key = jax.random.PRNGKey(seed)
    idx = jnp.arange(n, dtype=jnp.int32)
    nbr_cols, rev_cols = [], []
    for s, off in enumerate(_ring_offsets(k)):
        ks = jax.random.fold_in(key, s)
        k_mask, k_order = jax.random.split(ks)
        target = (idx + off) % n
        mask = jax.random.uniform(k_mask, (n,)) < p
        m = jnp.sum(mask)
        sort_key = jnp.where(mask, jax.random.uniform(k_order, (n,)), 2.0 + idx / n)
        order = jnp.argsort(sort_key)  # rewired emitters first, in random order
        rank = jnp.arange(n)
        nxt = jnp.where(rank + 1 < m, rank + 1, 0)
        new_target_sorted = jnp.where(rank < m, target[order][nxt], target[order])
        col = jnp.zeros(n, jnp.int32).at[order].set(new_target_sorted)
        col = _remove_self_loops(col, mask, seed, s)
        nbr_cols.append(col)
        rev_cols.append(jnp.zeros(n, jnp.int32).at[col].set(idx))
    return jnp.stack(nbr_cols), jnp.stack(rev_cols)


def _remove_self_loops(col: jax.Array, mask: jax.Array, seed: int, slot: int) -> jax.Array:
    """``col`` (one slot's targets, a permutation) with every self-loop swapped away against another rewired emitter
    (see :func:`_rewired_ring`). Only rewired emitters hold self-loops (a ring target is never the emitter itself)."""
    idx = np.arange(col.shape[0])
    loops = np.flatnonzero(np.asarray(col) == idx)
    if loops.size == 0:
        return col
    target = np.array(col)
    rewired = np.flatnonzero(np.asarray(mask))  # ≥ 2 whenever there is a self-loop: a 1-cycle keeps its ring target
    rng = np.random.default_rng([seed, slot])
    for i in loops:
        if target[i] != i:  # already swapped away as another loop's partner
            continue
        b = rewired[rng.integers(rewired.size - 1)]
        b = b if b != i else rewired[-1]  # uniform over the rewired emitters other than i
        target[i], target[b] = target[b], target[i]
    return jnp.asarray(target, jnp.int32)
