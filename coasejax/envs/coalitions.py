"""Coalition diagnostics of the Coase engine: who joins a deal, who free-rides, whether members would leave, and the
breakdowns by wealth and type. A deal's coalition is the victims who pay into it or are paid by it.

The cheap per-round totals (:func:`round_stats`) are sums over masks the round has already built. The costly
diagnostics run only with ``sim.coalitions: true``: every member's unilateral exit (:func:`leavers`, k extra
clearings) and the breakdowns by wealth decile, harm quartile, pledge ratio and coalition size
(:func:`breakdowns`); without it their fields of :class:`coasejax.envs.coase.RoundMetrics` are zeros of fixed shape,
which cost nothing. :func:`summary` and :func:`breakdown_summary` turn the totals into the summary's keys.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from coasejax.graphs import Graph, slot_sum
from coasejax.mechanisms.base import coalition_roles

#: upper edges of the bins of a member's payment over its value of the deal's change (the last bin is open)
PLEDGE_BINS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
BREAKDOWN_FIELDS = ("by_wealth", "by_harm", "pledge_hist", "size_hist")


def _bin_index(x: jax.Array, edges) -> jax.Array:
    """``i32``: the number of ``edges`` below each x (``searchsorted``'s left side, as fused compares: XLA:CPU runs
    ``jnp.searchsorted`` on large arrays several times slower)."""
    idx = jnp.zeros(x.shape, jnp.int32)
    for j in range(len(edges)):
        idx = idx + (x > edges[j]).astype(jnp.int32)
    return idx


def pooled_stats(pooled: jax.Array | None, graph: Graph, member: jax.Array) -> dict:
    """Members of pooled coalitions, and how many of their k emitters' deals each one's coalition is in (``pooled``:
    whether victims pool this round, None: pooling is off)."""
    if pooled is None:
        return dict(pooled_members=jnp.float32(0.0), span=jnp.float32(0.0))
    per_agent = slot_sum(graph.into(member.astype(jnp.float32)))  # deals each agent is a member of, as a victim
    return dict(pooled_members=jnp.where(pooled, jnp.sum(member, dtype=jnp.float32), 0.0),
                span=jnp.where(pooled, jnp.sum(per_agent * per_agent), 0.0))


def leavers(clear, bargain, honoured, from_victims, g_v, go_on_terms, k: int) -> jax.Array:
    """Members who would gain by leaving alone: each member's unilateral exit (it reports no harm and pledges
    nothing, all else equal) re-clears its bargain; ``go_on_terms(dev, s) -> (go_on bool[N], g_out f32[N])`` says
    whether the deal still goes ahead without victim s and what s then gains."""
    members = honoured[None, :] & (from_victims != 0.0)
    gone = []
    for s in range(k):
        alone = bargain._replace(c_hat=bargain.c_hat.at[s].set(0.0), pledge=None if bargain.pledge is None
                                 else bargain.pledge.at[s].set(False))
        _, g_out = go_on_terms(clear(alone), s)
        gone.append(members[s] & (g_out > g_v[s] + 1e-6 * (jnp.abs(g_v[s]) + 1e-6)))
    return jnp.sum(jnp.stack(gone), dtype=jnp.float32)


def round_stats(honoured, x, x_sq, x_star, cost, from_victims, c_nb, pooled, graph: Graph) -> tuple[dict, tuple]:
    """The per-round coalition totals: members, coalitions, beneficiaries, free riders, provision of efficient
    changes, pooled members, external harm not internalised. Also returns the masks ``(member, benefited, free)``."""
    member, benefited, free = coalition_roles(honoured, x, x_sq, from_victims, c_nb)
    changes = jnp.abs(x_star - x_sq) > 1e-6
    stats = dict(
        coalition_members=jnp.sum(member, dtype=jnp.float32),
        coalitions=jnp.sum(honoured & jnp.any(member, axis=0), dtype=jnp.float32),
        beneficiaries=jnp.sum(benefited, dtype=jnp.float32),
        free_riders=jnp.sum(free, dtype=jnp.float32),
        efficient_changes=jnp.sum(changes, dtype=jnp.float32),
        provided=jnp.sum(changes & honoured & (jnp.abs(x - x_sq) > 1e-6), dtype=jnp.float32),
        **pooled_stats(pooled, graph, member),
        harm_gap=jnp.sum(cost * jnp.abs(x - x_star)),
        harm_gap_status_quo=jnp.sum(cost * jnp.abs(x_sq - x_star)),
    )
    return stats, (member, benefited, free)


TOTAL_FIELDS = ("coalition_members", "coalitions", "beneficiaries", "free_riders", "efficient_changes", "provided",
                "pooled_members", "span", "harm_gap", "harm_gap_status_quo")


def empty_totals() -> dict:
    """The per-round totals when ``sim.coalitions`` is off: zeros, which cost nothing."""
    return {f: jnp.float32(0.0) for f in TOTAL_FIELDS}


def empty_breakdowns(k: int) -> dict:
    """The breakdown fields when ``sim.coalitions`` is off: zeros of their fixed shapes."""
    return dict(by_wealth=jnp.zeros((4, 10)), by_harm=jnp.zeros((4, 4)), pledge_hist=jnp.zeros((len(PLEDGE_BINS) + 1,)),
                size_hist=jnp.zeros((k + 1,)))


def breakdowns(wealth_deciles, harm_quartiles, graph: Graph, wealth, c, honoured, member, benefited, free, pays,
               value) -> dict:
    """``by_wealth`` f32[4, 10] and ``by_harm`` f32[4, 4] (rows: agents, memberships, benefited, free rides, each
    agent as a victim over its k emitters, by wealth decile and by harm quartile), ``pledge_hist`` (members by the
    ratio of their payment to their value of the change, :data:`PLEDGE_BINS`) and ``size_hist`` (honoured deals by
    coalition size, f32[k + 1]), from the honoured deals ``bool[N]``, per-slot masks ``bool[k, N]`` and each victim's
    payment and value of the change ``f32[k, N]`` (magnitudes: under the victim's right both are what it is paid and
    its harm). Each victim's (wealth decile, harm quartile) cell reaches its slots in one gather; bins are filled by
    scatter-adds (``segment_sum``)."""
    k = member.shape[0]
    cell = _bin_index(wealth, wealth_deciles) * 4 + _bin_index(c, harm_quartiles)
    slot_cell = graph.out(cell).reshape(-1)  # i32[k·N]: the cell of each emitter's slot-s victim
    masks = jnp.stack([member, benefited, free]).reshape(3, -1).astype(jnp.float32).T  # f32[k·N, 3]
    per_cell = jnp.concatenate([jax.ops.segment_sum(jnp.ones_like(wealth), cell, 40)[:, None],
                                jax.ops.segment_sum(masks, slot_cell, 40)], axis=1).reshape(10, 4, 4)
    pays, value = jnp.abs(pays), jnp.abs(value)
    ratio = jnp.where(value > 0, pays / jnp.where(value > 0, value, 1.0), jnp.inf)
    pledge_bin = _bin_index(ratio, PLEDGE_BINS)
    size = slot_sum(member.astype(jnp.int32))
    return dict(by_wealth=jnp.sum(per_cell, axis=1).T, by_harm=jnp.sum(per_cell, axis=0).T,
                pledge_hist=jax.ops.segment_sum(member.reshape(-1).astype(jnp.float32), pledge_bin.reshape(-1),
                                                len(PLEDGE_BINS) + 1),
                size_hist=jax.ops.segment_sum(honoured.astype(jnp.float32), size, k + 1))


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if abs(den) > 1e-12 else None


SUMMARY_KEYS = ("participation_rate", "free_rider_share", "coalition_size_mean", "assurance_success_rate",
                "coalition_stability", "refunds_paid", "pooled_share", "coalition_span_mean", "harm_internalised")


def summary(tot: dict, victim_slots: int, diagnostics: bool = True, pooling: bool = False, totals: bool = True) -> dict:
    """Coalition analytics from the round totals (None where undefined: no deals, nobody benefited; and every key
    but ``refunds_paid`` when the totals were not asked for, ``sim.coalitions: off``)."""
    if not totals:
        return {key: (tot["refunds"] if key == "refunds_paid" else None) for key in SUMMARY_KEYS}
    return {
        "participation_rate": tot["coalition_members"] / victim_slots,
        "free_rider_share": _ratio(tot["free_riders"], tot["beneficiaries"]),
        "coalition_size_mean": _ratio(tot["coalition_members"], tot["coalitions"]),
        "assurance_success_rate": _ratio(tot["provided"], tot["efficient_changes"]),
        "coalition_stability": (None if not diagnostics or tot["coalition_members"] <= 0
                                else 1.0 - tot["leavers"] / tot["coalition_members"]),
        "refunds_paid": tot["refunds"],
        "pooled_share": _ratio(tot["pooled_members"], tot["coalition_members"]) if pooling else None,
        "coalition_span_mean": _ratio(tot["span"], tot["pooled_members"]) if pooling else None,
        "harm_internalised": (None if tot["harm_gap_status_quo"] <= 0
                              else 1.0 - tot["harm_gap"] / tot["harm_gap_status_quo"]),
    }


def breakdown_summary(per_round: dict, k: int) -> dict:
    """Participation and free riding by wealth decile and by harm quartile (agent type), and the pledge-ratio and
    coalition-size histograms, summed over rounds and averaged over environments."""
    out = {}
    for key, name in (("by_wealth", "coalitions_by_wealth_decile"), ("by_harm", "coalitions_by_harm_quartile")):
        agents, members, benefited, free = per_round[key].sum(axis=1).mean(axis=0)
        out[name] = {"agent_share": (agents / max(agents.sum(), 1e-30)).tolist(),
                     "participation_rate": [_ratio(m, a * k) for m, a in zip(members, agents)],
                     "free_rider_share": [_ratio(f, b) for f, b in zip(free, benefited)]}
    pledges = per_round["pledge_hist"].sum(axis=1).mean(axis=0)
    out["pledge_ratio_histogram"] = {"upper_edges": [*PLEDGE_BINS, None], "members": np.asarray(pledges).tolist()}
    out["coalition_size_histogram"] = per_round["size_hist"].sum(axis=1).mean(axis=0).tolist()
    return out
