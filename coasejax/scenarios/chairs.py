"""The chair market (the markets lecture, ``../shared/seeds/001``): emergent order from bilateral trades against the
core allocation of top trading cycles (``env.kind: chairs``).

Model. N agents and N chairs. A chair has K = ``env.attributes`` attributes (colour, style, cushioniness, controls)
each in ``1..L`` (L = ``env.levels``), so there are ``T = L^K`` chair types (625 by default); chair types are drawn
uniformly and agent i starts with chair i. Agent i has an ideal level ``p_ik`` per attribute (uniform) and preference
weights ``w_i`` on the simplex (Dirichlet(1)); its utility for a chair x is

    u_i(x) = Σ_k w_ik · (L − 1 − |x_k − p_ik|)   ∈ [0, L − 1]   (its ideal chair gives L − 1).

Preferences are separable, so ``u_i(type) = feat_i · onehot(type)`` with ``feat_i ∈ R^{K·L}``: every agent × type
utility table is one small matmul (:func:`utility_table`).

Rounds. Agents mingle by random matching (:func:`matching`, O(N), fixed shapes, no sort): the agent axis is laid out as
an R × C grid (C the even divisor of N nearest √N) and relabelled by four independent random cyclic shifts — every
column by its own offset, then every row, then every column and every row again — and position ``q`` meets position
``q XOR 1`` (its neighbour in its row). Any two agents can meet in a round and partners change every round (for N
with no even divisor near √N, e.g. 2·prime, the grid is thin and meetings are less uniform). Each met
pair swaps chairs when both accept: agent i accepts when its *perceived* gain ``u_i(partner's chair) − u_i(own)`` plus
the partner's puffery exceeds its advocate's ``accept_threshold`` (truthful: 0, so identical chairs never swap).

State-layer background rules (traced, so a sweep over them is a ``vmap``):
* *Honesty* ``env.honesty`` h: each report is checked with probability h; a checked report is truthful, an unchecked
  one carries the advocate's ``misreport`` (talking its chair up by that many utility units in the partner's eyes).
  With h = 1 no misreport gets through; with h < 1 puffing advocates fool partners into trades that lower their
  utility (``fooled``).
* *Hold up your deals* ``env.enforcement`` e: an agreed swap is honoured with probability e, otherwise it is breached
  and falls through (both keep their chairs); with e = 0 nothing ever trades.

Comparison: top trading cycles (Shapley & Scarf 1974), vectorised (:func:`ttc`) — the core allocation from the
initial endowment (``env.core``), and the Pareto test of the final allocation: TTC run from it returns it unchanged.

Seats: one per agent (S = 1, owner i, provider ``i mod providers.count``); observation ``[own utility / (L − 1),
honesty, enforcement, episode time]``; actions ``[accept_threshold ∈ [−1, 2], misreport ∈ [0, 2]]`` in utility
units, truthful ``[0, 0]``; reward: the true change of the own utility this round. With ``env.episode_rounds`` E > 0
the market restarts from its endowment at the start of every later episode (round ``t`` with ``t mod E = 0``,
``t > 0``; ``done`` marks each episode's last round), so PPO keeps seeing trades, the TTC core stays that of the
state (no TTC inside ``step``), and a ``simulate`` of at most E rounds plays one episode. A fresh market is a reset.
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
class ChairsEnv(EnvSection):
    """The chair market (:mod:`coasejax.scenarios.chairs`)."""

    kind: Literal["chairs"] = "chairs"
    sweepable: ClassVar[tuple[str, ...]] = ("honesty", "enforcement")
    attributes: int = Field(4, ge=1, le=6, description="attributes per chair (colour, style, cushioniness, controls)")
    levels: int = Field(5, ge=2, le=8, description="levels of each attribute (1..levels); levels^attributes ≤ 4096")
    honesty: float = Field(1.0, ge=0.0, le=1.0, description="state layer: probability that a report is checked "
                           "(a checked report is truthful)")
    enforcement: float = Field(1.0, ge=0.0, le=1.0, description="state layer: probability that an agreed swap is "
                               "honoured (else it is breached and falls through)")
    core: bool = Field(True, description="compute the TTC core allocation of every fresh market (one TTC per reset)")
    check_max_n: int = Field(1 << 16, ge=0, le=1 << 24, description="summarise: the Pareto test (TTC from the final "
                             "allocation) and the pairwise-stability test run when N is at most this")
    rank_sample: int = Field(1 << 14, ge=1, le=1 << 20, description="summarise: the mean rank is measured on the "
                             "first this many agents (exchangeable)")
    episode_rounds: int = Field(0, ge=0, le=1_000_000, description="redraw the market after this many rounds "
                                "(0: never; PPO needs fresh markets)")
    eval_rounds: int = Field(32, ge=1, le=100_000, description="ppo: measured rounds of the evaluation")
    candidates: int = Field(1, ge=1, le=16, description="whom to meet: candidate partners per round (1: one random "
                            "meeting; D > 1: D random encounters, a pair meets when both see a gain above their "
                            "meet_threshold action and both are still free)")


# -- parameters, state ------------------------------------------------------------------------------------------------
@struct.dataclass
class Params:
    honesty: jax.Array  # f32[]
    enforcement: jax.Array  # f32[]
    n: int = struct.field(pytree_node=False, default=2)
    attributes: int = struct.field(pytree_node=False, default=4)
    levels: int = struct.field(pytree_node=False, default=5)
    grid: tuple[int, int] = struct.field(pytree_node=False, default=(1, 2))  # (R, C) of the matching
    core: bool = struct.field(pytree_node=False, default=True)
    episode_rounds: int = struct.field(pytree_node=False, default=0)
    providers: int = struct.field(pytree_node=False, default=1)
    candidates: int = struct.field(pytree_node=False, default=1)

    @property
    def types(self) -> int:
        return self.levels ** self.attributes


@struct.dataclass
class State:
    t: jax.Array  # i32[] round counter
    chair: jax.Array  # i32[N] the chair agent i holds (a permutation of 0..N−1)
    held: jax.Array  # i32[N] its type
    held0: jax.Array  # i16[N] the type of chair i (agent i's endowment; its own dtype, so never the buffer of held)
    ideal: jax.Array  # i32[N, K] ideal levels, 0-based
    weight: jax.Array  # f32[N, K] preference weights (sum 1)
    welfare0: jax.Array  # f32[] this market's initial welfare
    core_held: jax.Array  # i32[N] each agent's type under TTC from the initial endowment (zeros without env.core)
    core_welfare: jax.Array  # f32[] its welfare (the first best N·(L − 1) without env.core)


class Totals(NamedTuple):
    """One round's totals (sums over agents; summed over rounds by an evaluation)."""

    rounds: jax.Array  # 1
    agents: jax.Array  # N
    welfare: jax.Array  # Σ_i u_i(own chair) after the round
    welfare0: jax.Array  # the market's initial welfare
    core_welfare: jax.Array  # the market's TTC welfare (first best without env.core)
    met: jax.Array  # pairs that met
    improving: jax.Array  # pairs where both truly gain by the swap
    agreed: jax.Array  # pairs where both accepted
    trades: jax.Array  # pairs that swapped (agreed and honoured)
    breached: jax.Array  # agreed pairs whose deal fell through
    fooled: jax.Array  # agents who swapped into a chair they like less
    misreports: jax.Array  # reports that carried puffery (misreport > 0 and unchecked)
    gain: jax.Array  # Σ true utility change this round


def _grid(n: int) -> tuple[int, int]:
    """(R, C): C the even divisor of n nearest √n (n even)."""
    best = 2
    for c in range(2, n + 1, 2):
        if n % c == 0 and abs(math.log(c) - 0.5 * math.log(n)) < abs(math.log(best) - 0.5 * math.log(n)):
            best = c
        if c * c > 4 * n:
            break
    return n // best, best


def params(cfg) -> Params:
    from coasejax.config import ConfigError

    env, n = cfg.env, cfg.population.n_agents
    if n % 2:
        raise ConfigError(f"population.n_agents: the chair market meets in pairs, so it must be even, got {n}")
    if env.levels ** env.attributes > 4096:
        raise ConfigError(f"env.levels: levels^attributes = {env.levels ** env.attributes} chair types, at most 4096")
    return Params(honesty=jnp.float32(env.honesty), enforcement=jnp.float32(env.enforcement), n=n,
                  attributes=env.attributes, levels=env.levels, grid=_grid(n), core=bool(env.core),
                  episode_rounds=int(env.episode_rounds), providers=int(cfg.providers.count),
                  candidates=int(env.candidates))


# -- utilities --------------------------------------------------------------------------------------------------------
def digits(t: jax.Array, levels: int, attributes: int) -> jax.Array:
    """``i32[..., K]``: the 0-based attribute levels of chair types ``t``."""
    return (t[..., None] // (levels ** jnp.arange(attributes, dtype=jnp.int32))) % levels


def utility(ideal: jax.Array, weight: jax.Array, t: jax.Array, levels: int) -> jax.Array:
    """``f32[N]``: ``u_i(type t_i)``. The sum over the attributes is a dot with ones: as a reduction over the short
    last axis of ``[N, K]`` it ran 3× slower under ``simulate``'s ``vmap`` over environments on a CPU, and one
    attribute at a time (strided columns) 2.5× slower without it (``scripts/bench_chairs.py``)."""
    d = digits(t, levels, ideal.shape[-1])
    score = weight * (levels - 1 - jnp.abs(d - ideal)).astype(jnp.float32)
    return score @ jnp.ones((ideal.shape[-1],), jnp.float32)


def features(ideal: jax.Array, weight: jax.Array, levels: int) -> jax.Array:
    """``f32[N, K·L]``: ``feat[i, k·L + v] = w_ik (L − 1 − |v − p_ik|)``, so ``u_i(t) = feat_i · onehot(t)``."""
    v = jnp.arange(levels, dtype=jnp.int32)
    f = weight[..., None] * (levels - 1 - jnp.abs(v - ideal[..., None])).astype(jnp.float32)
    return f.reshape(ideal.shape[0], -1)


def onehot_types(levels: int, attributes: int) -> jax.Array:
    """``f32[T, K·L]``: each type's attribute levels, one-hot per attribute."""
    d = digits(jnp.arange(levels ** attributes, dtype=jnp.int32), levels, attributes)
    return jax.nn.one_hot(d, levels, dtype=jnp.float32).reshape(levels ** attributes, -1)


def utility_table(ideal, weight, levels: int) -> jax.Array:
    """``f32[N, T]``: every agent's utility for every type (one matmul; N·T floats, so for small N or a block)."""
    return features(ideal, weight, levels) @ onehot_types(levels, ideal.shape[-1]).T


# -- top trading cycles -----------------------------------------------------------------------------------------------
class TTCResult(NamedTuple):
    chair: jax.Array  # i32[N] the chair each agent ends with
    held: jax.Array  # i32[N] its type
    iterations: jax.Array  # i32[] rounds of cycle removal


def ttc(ideal: jax.Array, weight: jax.Array, held: jax.Array, chair: jax.Array, levels: int) -> TTCResult:
    """Top trading cycles from the endowment ``chair``/``held`` (agent i owns chair ``chair[i]`` of type
    ``held[i]``); each agent ranks chairs by its utility, ties broken by the lowest chair index (a strict order).

    Vectorised on chair types. Every agent's favourite remaining chair is the lowest-index remaining chair (the
    *head*) of its best remaining type, so every pointer goes to a head's owner and every cycle runs through heads:
    the cycles of the agent graph are those of the graph on the T types, where type a points to the best remaining
    type of the owner of a's head. Each iteration (``lax.while_loop``, until every chair is assigned) computes those
    T pointers (one ``[T, K·L] × [K·L, T]`` matmul), finds every cycle by pointer doubling (``⌈log2 T⌉`` squarings: the
    image of ``s^(2^j)``, ``2^j ≥ T``, is the set of nodes on cycles), gives each cycle member the head it points to
    and advances the heads of the cycle's types. Agents are queued per type by chair index (one lexsort, O(N log N)).
    Cost: O(N log N + I·T²) for I iterations (at least ⌈N / T⌉, about N / √T for uniform tastes: random mapping
    cycles hold ~√(πT/2) nodes)."""
    n, k = ideal.shape
    t_count = levels ** k
    feat = features(ideal, weight, levels)
    onehot = onehot_types(levels, k)
    order = jnp.lexsort((chair, held)).astype(jnp.int32)  # agents by (type, chair index)
    count = jnp.zeros((t_count,), jnp.int32).at[held].add(1)
    start = jnp.cumsum(count) - count
    steps = max(1, math.ceil(math.log2(max(t_count, 2))))
    types = jnp.arange(t_count, dtype=jnp.int32)
    big = jnp.iinfo(jnp.int32).max

    def cond(c):
        head, *_ = c
        return jnp.any(head < count)

    def body(c):
        head, out_chair, out_held, it = c
        avail = head < count
        owner = order[jnp.minimum(start + head, n - 1)]  # i32[T] (garbage where not avail)
        head_chair = jnp.where(avail, chair[owner], big)
        u = feat[owner] @ onehot.T  # f32[T, T]: owner of a's head, utility of type t
        u = jnp.where(avail[None, :], u, -jnp.inf)
        best = jnp.max(u, axis=1, keepdims=True)
        s = jnp.argmin(jnp.where(u == best, head_chair[None, :], big), axis=1).astype(jnp.int32)
        s = jnp.where(avail, s, types)
        p = s
        for _ in range(steps):
            p = p[p]
        cyc = jnp.zeros((t_count,), bool).at[p].set(True) & avail
        dest = jnp.where(cyc, owner, n)
        out_chair = out_chair.at[dest].set(head_chair[s], mode="drop")
        out_held = out_held.at[dest].set(s, mode="drop")
        return head + cyc.astype(jnp.int32), out_chair, out_held, it + 1

    init = (jnp.zeros((t_count,), jnp.int32), chair, held, jnp.zeros((), jnp.int32))
    _, out_chair, out_held, it = jax.lax.while_loop(cond, body, init)
    return TTCResult(out_chair, out_held, it)


def ttc_agents(ideal: jax.Array, weight: jax.Array, held: jax.Array, chair: jax.Array, levels: int) -> TTCResult:
    """:func:`ttc` on the agent graph itself (one node per agent: O(N²) per iteration), for markets with fewer
    agents than chair types; the same allocation (the same strict preferences, the same cycles)."""
    n = ideal.shape[0]
    u = utility_table(ideal, weight, levels)[:, held]  # f32[N, N]: agent i's utility for agent j's chair
    steps = max(1, math.ceil(math.log2(max(n, 2))))
    agents = jnp.arange(n, dtype=jnp.int32)
    big = jnp.iinfo(jnp.int32).max

    def body(c):
        left, out_chair, out_held, it = c
        v = jnp.where(left[None, :], u, -jnp.inf)
        best = jnp.max(v, axis=1, keepdims=True)
        s = jnp.argmin(jnp.where((v == best) & left[None, :], chair[None, :], big), axis=1).astype(jnp.int32)
        s = jnp.where(left, s, agents)
        p = s
        for _ in range(steps):
            p = p[p]
        cyc = jnp.zeros((n,), bool).at[p].set(True) & left
        out_chair = jnp.where(cyc, chair[s], out_chair)
        out_held = jnp.where(cyc, held[s], out_held)
        return left & ~cyc, out_chair, out_held, it + 1

    init = (jnp.ones((n,), bool), chair, held, jnp.zeros((), jnp.int32))
    _, out_chair, out_held, it = jax.lax.while_loop(lambda c: jnp.any(c[0]), body, init)
    return TTCResult(out_chair, out_held, it)


def core_of(p: Params, state: State) -> TTCResult:
    """TTC from ``state``'s allocation: on the agent graph when N < T, else on the type graph."""
    if p.n < p.types:
        return ttc_agents(state.ideal, state.weight, state.held, state.chair, p.levels)
    return ttc(state.ideal, state.weight, state.held, state.chair, p.levels)


# -- the market -------------------------------------------------------------------------------------------------------
def draw_market(key: jax.Array, p: Params) -> State:
    k_ideal, k_w, k_type = jax.random.split(key, 3)
    n, k = p.n, p.attributes
    ideal = jax.random.randint(k_ideal, (n, k), 0, p.levels, jnp.int32)
    e = jax.random.exponential(k_w, (n, k), jnp.float32)
    weight = e / jnp.sum(e, axis=1, keepdims=True)
    held = jax.random.randint(k_type, (n,), 0, p.types, jnp.int32)
    chair = jnp.arange(n, dtype=jnp.int32)
    w0 = jnp.sum(utility(ideal, weight, held, p.levels))
    if p.core:
        core_held = core_of(p, State(t=jnp.zeros((), jnp.int32), chair=chair, held=held, held0=held, ideal=ideal,
                                     weight=weight, welfare0=w0, core_held=held, core_welfare=w0)).held
        core_w = jnp.sum(utility(ideal, weight, core_held, p.levels))
    else:
        core_held, core_w = jnp.zeros((n,), jnp.int32), jnp.float32(n * (p.levels - 1))
    return State(t=jnp.zeros((), jnp.int32), chair=chair, held=held, held0=held.astype(jnp.int16), ideal=ideal, weight=weight, welfare0=w0,
                 core_held=core_held, core_welfare=core_w)


def reset(key: jax.Array, p: Params) -> State:
    return draw_market(key, p)


def _shift_rows(x: jax.Array, off: jax.Array) -> jax.Array:
    """``y[r, c] = x[r, (c + off_r) mod C]``."""
    c = x.shape[1]
    return jnp.take_along_axis(x, (jnp.arange(c, dtype=jnp.int32)[None, :] + off[:, None]) % c, axis=1)


def _shift_cols(x: jax.Array, off: jax.Array) -> jax.Array:
    """``y[r, c] = x[(r + off_c) mod R, c]``."""
    r = x.shape[0]
    return jnp.take_along_axis(x, (jnp.arange(r, dtype=jnp.int32)[:, None] + off[None, :]) % r, axis=0)


def matching(key: jax.Array, p: Params) -> tuple[jax.Array, jax.Array]:
    """``(partner i32[N], pair i32[N])``: this round's random matching (an involution without fixed points) and each
    agent's pair index (position // 2). Four random cyclic shifts of the R × C grid — columns, rows, columns, rows,
    each column (row) by its own offset — relabel the agents (O(N) gathers, no sort); position q meets q XOR 1, its
    neighbour in its row. (Three shifts are not enough: two agents of one row would keep their column distance.)"""
    r, c = p.grid
    ka, kb, kd, ke = jax.random.split(key, 4)
    a = jax.random.randint(ka, (c,), 0, r, jnp.int32)
    b = jax.random.randint(kb, (r,), 0, c, jnp.int32)
    d = jax.random.randint(kd, (c,), 0, r, jnp.int32)
    e = jax.random.randint(ke, (r,), 0, c, jnp.int32)
    ids = jnp.arange(p.n, dtype=jnp.int32).reshape(r, c)
    who = _shift_rows(_shift_cols(_shift_rows(_shift_cols(ids, a), b), d), e).reshape(-1)  # position -> agent
    pos = _shift_cols(_shift_rows(_shift_cols(_shift_rows(ids, -e), -d), -b), -a).reshape(-1)  # agent -> position
    return who[pos ^ 1], pos // 2


def observe(p: Params, s: State) -> jax.Array:
    u = utility(s.ideal, s.weight, s.held, p.levels) / (p.levels - 1)
    tau = (s.t % p.episode_rounds).astype(jnp.float32) / p.episode_rounds if p.episode_rounds else jnp.float32(0.0)
    ones = jnp.ones_like(u)
    return jnp.stack([u, ones * p.honesty, ones * p.enforcement, ones * tau], -1)[None]


def meet(key: jax.Array, p: Params, s: State, u_own: jax.Array, puff: jax.Array, threshold: jax.Array) -> jax.Array:
    """``i32[N]``: each agent's partner this round when it chooses whom to meet (``env.candidates`` D > 1; an agent
    left without a partner is its own). D random matchings (:func:`matching` with ``fold_in(key, d)``) propose pairs in
    turn; a proposed pair meets when both are still free and each sees a gain above its ``meet_threshold``: the
    partner's chair as reported (with the partner's puffery) against its own. O(D·N), no sort."""
    me = jnp.arange(p.n, dtype=jnp.int32)
    partner = me
    for d in range(p.candidates):
        cand, _ = matching(jax.random.fold_in(key, d), p)
        visible = utility(s.ideal, s.weight, s.held[cand], p.levels) - u_own + puff[cand]
        want = (visible > threshold) & (partner == me)
        partner = jnp.where(want & want[cand], cand, partner)
    return partner


def step(key: jax.Array, s: State, actions: jax.Array, p: Params):
    k_match, k_check, k_honour = jax.random.split(key, 3)
    n = p.n
    if p.episode_rounds:  # the market restarts from its endowment at the start of every episode but the first
        fresh = (s.t > 0) & (s.t % p.episode_rounds == 0)  # (a select, not a cond: under vmap a cond is one anyway)
        s = s.replace(held=jnp.where(fresh, s.held0.astype(jnp.int32), s.held),
                      chair=jnp.where(fresh, jnp.arange(n, dtype=jnp.int32), s.chair))
    u_own = utility(s.ideal, s.weight, s.held, p.levels)
    threshold, misreport = actions[0, :, 0], jnp.maximum(actions[0, :, 1], 0.0)
    checked = jax.random.uniform(k_check, (n,)) < p.honesty
    puff = jnp.where(checked, 0.0, misreport)  # what agent i's report adds to its partner's perceived gain
    if p.candidates == 1:
        partner, pair = matching(k_match, p)
        matched = jnp.ones((n,), bool)
        honour_draws = n // 2
    else:
        partner = meet(k_match, p, s, u_own, puff, actions[0, :, 2])
        matched = partner != jnp.arange(n, dtype=jnp.int32)
        pair, honour_draws = jnp.minimum(jnp.arange(n, dtype=jnp.int32), partner), n
    other = s.held[partner]
    gain = utility(s.ideal, s.weight, other, p.levels) - u_own  # true gain of the swap
    accept = (gain + puff[partner] > threshold) & matched
    agreed = accept & accept[partner]
    honoured = (jax.random.uniform(k_honour, (honour_draws,)) < p.enforcement)[pair]
    trade = agreed & honoured
    held = jnp.where(trade, other, s.held)
    chair = jnp.where(trade, s.chair[partner], s.chair)
    reward = jnp.where(trade, gain, 0.0)
    u_new = u_own + reward
    f = lambda x: jnp.sum(x.astype(jnp.float32))  # noqa: E731
    improving = matched & (gain > 0) & (gain[partner] > 0)
    totals = Totals(rounds=jnp.float32(1.0), agents=jnp.float32(n), welfare=jnp.sum(u_new), welfare0=s.welfare0,
                    core_welfare=s.core_welfare, met=f(matched) / 2, improving=f(improving) / 2,
                    agreed=f(agreed) / 2, trades=f(trade) / 2, breached=f(agreed & ~honoured) / 2,
                    fooled=f(trade & (gain < 0)), misreports=f(puff > 0), gain=jnp.sum(reward))
    new = s.replace(t=s.t + 1, held=held, chair=chair)
    if p.episode_rounds:
        done = jnp.broadcast_to((s.t + 1) % p.episode_rounds == 0, (n,))
    else:
        done = jnp.zeros((n,), bool)
    return new, Transition(reward=reward[None], done=done, metrics=totals)


def spec(p: Params | None = None) -> Spec:
    """With ``env.candidates`` > 1 a third action, ``meet_threshold``: the least visible gain for which the advocate
    meets a candidate (its default −4, "meet whoever comes", is the one-meeting market's behaviour)."""
    choose = p is not None and p.candidates > 1
    return Spec(observation=("own_utility", "honesty", "enforcement", "episode_time"),
                actions=("accept_threshold", "misreport") + (("meet_threshold",) if choose else ()),
                low=(-1.0, 0.0) + ((-8.0,) if choose else ()), high=(2.0, 2.0) + ((4.0,) if choose else ()),
                truthful=(0.0, 0.0) + ((-4.0,) if choose else ()), relative=False, seats=1)


def seat_providers(p: Params, s: State) -> jax.Array:
    return (jnp.arange(p.n, dtype=jnp.int32) % p.providers)[None]


def seat_owners(p: Params, s: State) -> jax.Array:
    return jnp.arange(p.n, dtype=jnp.int32)[None]


def _fixed(p: Params, accept: float, misreport: float, meet_at: float) -> jax.Array:
    row = [accept, misreport] + ([meet_at] if p.candidates > 1 else [])
    return jnp.broadcast_to(jnp.asarray(row, jnp.float32), (1, p.n, len(row)))


def truthful(key, p: Params, s: State) -> jax.Array:
    """Accept any strict gain, report truthfully (and, with candidates, meet whoever comes)."""
    return _fixed(p, 0.0, 0.0, -4.0)


def picky(key, p: Params, s: State) -> jax.Array:
    """Truthful, and with ``env.candidates`` > 1 meet only a candidate whose chair is a visible gain (meet_threshold
    0)."""
    return _fixed(p, 0.0, 0.0, 0.0)


def puff(key, p: Params, s: State) -> jax.Array:
    """Accept any strict perceived gain and talk every chair up by 2 utility units (the most the spec allows): an
    unchecked report makes a partner accept any swap that costs it less than 2."""
    return _fixed(p, 0.0, 2.0, -4.0)


# -- analytics --------------------------------------------------------------------------------------------------------
def ranks(p: Params, s: State, held: jax.Array, sample: int) -> jax.Array:
    """``f32[m]``: the rank of ``held[i]`` among all N chairs of the market for the first ``m = min(sample, N)``
    agents (1: no chair is strictly better; chairs of the market counted by type)."""
    m = min(sample, p.n)
    count = jnp.zeros((p.types,), jnp.float32).at[s.held].add(1.0)
    u = utility_table(s.ideal[:m], s.weight[:m], p.levels)  # f32[m, T]
    own = jnp.take_along_axis(u, held[:m, None], axis=1)
    return 1.0 + jnp.sum(jnp.where(u > own, count[None, :], 0.0), axis=1)


def improving_pairs(p: Params, s: State, block: int = 4096) -> jax.Array:
    """``bool``: some pair of agents would both strictly gain by swapping (bilateral trade is not finished).
    ``M[a, t]``: some holder of type a strictly prefers type t; a pair exists iff ``M[a, t] ∧ M[t, a]``. N·T work, in
    blocks of agents."""
    n, t_count = p.n, p.types
    if n < t_count:  # on the agent graph: N² utilities
        u = utility_table(s.ideal, s.weight, p.levels)[:, s.held]
        gain = u - jnp.diagonal(u)[:, None]  # gain[i, j]: i's gain from j's chair
        return jnp.any((gain > 0) & (gain.T > 0))
    pad = (-n) % block
    ideal = jnp.pad(s.ideal, ((0, pad), (0, 0)))
    weight = jnp.pad(s.weight, ((0, pad), (0, 0)))
    held = jnp.pad(s.held, (0, pad), constant_values=t_count)  # padding rows drop out of the scatter

    def blk(args):
        i, w, h = args
        u = utility_table(i, w, p.levels)
        own = jnp.take_along_axis(u, jnp.minimum(h, t_count - 1)[:, None], axis=1)
        return jnp.zeros((t_count, t_count), bool).at[h].max(u > own, mode="drop")

    m = jax.lax.map(blk, (ideal.reshape(-1, block, p.attributes), weight.reshape(-1, block, p.attributes),
                          held.reshape(-1, block)))
    m = jnp.any(m, axis=0)
    return jnp.any(m & m.T)


def _env_summary(p: Params, first: State, last: State, check: bool, sample: int) -> dict:
    u0 = utility(first.ideal, first.weight, first.held, p.levels)
    u1 = utility(last.ideal, last.weight, last.held, p.levels)
    out = {"welfare0": jnp.mean(u0), "welfare": jnp.mean(u1), "ir": jnp.mean((u1 >= u0).astype(jnp.float32)),
           "rank0": jnp.mean(ranks(p, first, first.held, sample)),
           "rank": jnp.mean(ranks(p, first, last.held, sample))}
    if p.core:
        out["core_welfare"] = jnp.mean(utility(first.ideal, first.weight, first.core_held, p.levels))
        out["core_rank"] = jnp.mean(ranks(p, first, first.core_held, sample))
    if check:
        again = core_of(p, last)
        out["pareto"] = jnp.all(again.chair == last.chair)
        out["stable"] = ~improving_pairs(p, last)
    return out


def summarise(cfg, p: Params, per_round: dict, first, last) -> dict:
    """Per-agent means over every environment: welfare (initial, final, TTC core), each agent's mean rank of its chair
    among the market's N chairs (1: the best; on the first ``env.rank_sample`` agents), the share of agents at least
    as well off as at the start (individual rationality), the rounds until the last trade, and — for N ≤
    ``env.check_max_n`` — whether the final allocation is Pareto-optimal (TTC from it returns it) and pairwise stable
    (no pair would both gain by a swap). With ``env.episode_rounds`` < ``sim.rounds`` the final state belongs to a
    later episode than the first: the comparisons of first and last are then left out (``redrawn``)."""
    env = cfg.env
    e, t = np.asarray(per_round["rounds"]).shape[:2]
    tot = {k: np.sum(np.asarray(v, np.float64), axis=(0, 1)) for k, v in per_round.items()}
    trades = np.asarray(per_round["trades"], np.float64)  # [E, T]
    ratio = lambda a, b: float(a) / float(b) if float(b) > 0 else 0.0  # noqa: E731
    out = {"scenario": "chairs", "n_agents": int(p.n), "rounds": int(t), "envs": int(e), "chair_types": int(p.types),
           "honesty": float(env.honesty), "enforcement": float(env.enforcement),
           "trades_per_agent": 2 * float(tot["trades"]) / (e * p.n), "trade_rate": ratio(tot["trades"], tot["met"]),
           "improving_meeting_rate": ratio(tot["improving"], tot["met"]),
           "agreement_rate": ratio(tot["agreed"], tot["met"]), "breach_rate": ratio(tot["breached"], tot["agreed"]),
           "fooled_share": ratio(tot["fooled"], 2 * tot["trades"]),
           "misreport_rate": ratio(tot["misreports"], tot["agents"]),
           "welfare_by_round": (np.mean(np.asarray(per_round["welfare"]), axis=0) / p.n).tolist()}
    traded = trades > 0
    last_trade = np.where(traded.any(1), t - np.argmax(traded[:, ::-1], axis=1), 0)  # rounds up to the last trade
    out["rounds_to_last_trade"] = float(np.mean(last_trade))
    redrawn = bool(p.episode_rounds) and t > p.episode_rounds
    out["redrawn"] = redrawn
    out["figure"] = figure(out["welfare_by_round"], float(np.mean(np.asarray(per_round["welfare0"])[:, 0])) / p.n,
                           float(np.mean(np.asarray(per_round["core_welfare"])[:, 0])) / p.n, p.core,
                           float(p.levels - 1))
    if redrawn:
        return out
    check = p.n <= env.check_max_n
    fn = jax.jit(lambda a, b: _env_summary(p, a, b, check, env.rank_sample))
    rows = [jax.device_get(fn(jax.tree.map(lambda x: x[i], first), jax.tree.map(lambda x: x[i], last)))
            for i in range(e)]
    mean = lambda k: float(np.mean([float(r[k]) for r in rows]))  # noqa: E731
    out.update(welfare_initial=mean("welfare0"), welfare=mean("welfare"), individually_rational=mean("ir"),
               mean_rank_initial=mean("rank0"), mean_rank=mean("rank"), max_utility=float(p.levels - 1))
    if p.core:
        out.update(core_welfare=mean("core_welfare"), core_mean_rank=mean("core_rank"))
        out["gain_vs_core"] = ratio(out["welfare"] - out["welfare_initial"], out["core_welfare"] - out["welfare_initial"])
    if check:
        stable = [bool(r["stable"]) for r in rows]
        out.update(pareto_optimal_share=mean("pareto"), pairwise_stable_share=mean("stable"))
        done = [lt for lt, st in zip(last_trade, stable) if st]
        out["rounds_until_no_trade"] = float(np.mean(done)) if len(done) == len(stable) else None
    return out


def figure(by_round: list[float], initial: float, core: float, has_core: bool, first_best: float) -> dict:
    """The report's figure: welfare per agent by round (mean over environments) beside the endowment's and the TTC
    core's (the first best's without ``env.core``)."""
    t = list(range(1, len(by_round) + 1))
    flat = lambda v: [float(v)] * len(t)  # noqa: E731
    series = [{"label": "bilateral trading", "x": t, "y": list(by_round), "kind": "measured"},
              {"label": "endowment", "x": t, "y": flat(initial), "kind": "theory"},
              {"label": "TTC core" if has_core else "first best (L − 1)", "x": t,
               "y": flat(core if has_core else first_best), "kind": "theory"}]
    return {"caption": "Chair market: welfare per agent by round under bilateral trading, against the endowment and "
                       + ("the top-trading-cycles core allocation." if has_core else "the first best."),
            "panels": [{"title": "welfare", "xlabel": "round", "ylabel": "utility per agent", "series": series}]}


def metrics(p: Params, tot: Totals) -> dict:
    """Traceable: welfare gain over the measured rounds relative to the TTC core's gain (the first best's without
    ``env.core``), per-agent welfare, trade, breach and fooled rates."""
    safe = lambda a, b: a / jnp.maximum(b, 1e-12)  # noqa: E731
    eff = safe(tot.welfare - tot.welfare0, tot.core_welfare - tot.welfare0)
    return {"efficiency": eff, "efficiency_gap": 1.0 - eff, "welfare": safe(tot.welfare, tot.agents),
            "deal_rate": safe(tot.trades, tot.met), "breach_rate": safe(tot.breached, tot.agreed),
            "fooled_share": safe(tot.fooled, 2 * tot.trades), "utility": safe(tot.gain, tot.agents)}


SCENARIO = register(Scenario(
    name="chairs", bytes_per_agent=112,  # measured peak at N = 10^6 (BENCHMARKS.md), rounded down
    params=params, reset=reset, observe=observe, step=step, spec=spec,
    seat_providers=seat_providers, seat_owners=seat_owners, scripted={"truthful": truthful, "picky": picky, "puff": puff},
    summarise=summarise, metrics=metrics,
    headline=("welfare", "core_welfare", "gain_vs_core", "mean_rank", "trade_rate", "fooled_share",
              "rounds_to_last_trade"),
    description="the chair market: random meetings, swaps when both gain, honesty and enforcement as state rules, "
                "against the top-trading-cycles core"))
