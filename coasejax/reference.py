"""A deliberately slow, plain-Python reference implementation of the Coase scenario.

This module re-implements one environment of :mod:`coasejax.envs.coase` with ordinary Python loops over emitters and
their k victims and ``float`` arithmetic (double precision), written from the economics in the docstrings of
:mod:`coasejax.model`, :mod:`coasejax.mechanisms`, :mod:`coasejax.advocates`, :mod:`coasejax.rules` and
:mod:`coasejax.envs.coase` rather than by calling the engine's step, mechanism or rule functions. It has two uses:

* ``tests/test_reference.py`` runs the engine and this reference on the same graph, population and random draws and
  checks that welfare, transfers, costs, taxes, fees, deal rates and the final wealth of every agent agree (a
  cross-check of the vectorised, slot-major engine against an obviously-correct agent-by-agent loop);
* ``coasejax bench`` times it as the *same-work reference*: ``agent_steps_per_second`` of the engine divided by that
  of this loop is the reported speed-up (on :func:`reference_compatible`, the config with draws switched off).

**What is shared with the engine: set-up and random draws only.** The graph comes from
:func:`coasejax.graphs.make_graph`, the population and the individual traits of environment ``env`` from
:func:`coasejax.envs.coase.reset` with the same keys as :func:`coasejax.simulate.build`, the capped agents from
:func:`coasejax.rules.state.capped` (a fixed hash of the agent index: set-up, like the graph). Random draws are not
economics, so the reference takes the engine's: round t of environment e uses ``key_t = fold_in(run_key_e, t)``,
``k_mech, k_draws = split(key_t)``, one ``u32[N]`` word per agent and use from
:func:`coasejax.population.round_words` ``(k_draws, uses, N)`` with uses ``enforce``, ``drift``, ``switch`` (in that
order, each only when on), turned into uniforms by the documented rule of :func:`coasejax.population.unit_uniform`
(cell midpoints of the low bits, computed here in numpy float32 so the comparison with a threshold is bit-identical),
and under ``assurance`` with ``best_response`` below unanimity the pledge uniforms
``jax.random.uniform(fold_in(k_mech, 1), (k, N))``. Everything those draws decide is written out here.

Per round, per emitter i with victims ``j_1..j_k`` (all recomputed from the current types and wealth):

1. **acting alone**: ``x_alone = clip(a − τ, 0, x_max)`` (τ the Pigouvian tax), at most the activity cap (capped
   agents), and, with the budget rule and a tax, at most ``allowance/τ`` (``allowance = max(m, 0)(1 − 1e-5)/(k + 1)``,
   times the budget share ``b_i`` when the client sets one); the status quo ``x_sq`` is ``x_alone`` under the
   emitter's right and 0 under the victim's right; the first best is ``x* = clip(a − C, 0, x_max)``,
   ``C = w Σ_s c_{j_s}``;
2. **reports** by the emitter's provider's protocol (``none``: no bargain): ``truthful``; ``shade`` by the advocate's
   provider's shade times ``1 − altruism`` (paying side down, paid side up; under lindahl and assurance only victims
   shade); ``best_response``: truth under clarke and assurance, the equilibrium prices under lindahl; then the code of
   conduct clips each report into ``[v(1 − min(d, 1)), v(1 + d)]`` around the true value v (d of the reporter's
   provider);
3. **the bargain** sees values net of the tax (``â − τ``; with the tax paid to victims ``max(ĉ − τ/(k w), 0)``) and
   clears inside ``upper = min(x_sq or x_max, cap, min_s r_{j_s}/(w c_{j_s}))`` (activity cap, red lines); Nash with
   bargaining power ``clip(β + (σ_e − mean σ_v)/2, 0, 1)`` (advocates' skill), alternating offers, Lindahl, Clarke or
   the assurance contract (threshold ``m = ⌈θ k⌉``, refund bonus, both rights regimes);
4. **attempt**: ``Ŝ > 0`` and ``e Ŝ ≥ TC`` (enforcement e; ``per_deal`` raised to the floor), unless a party vetoes:
   an outlay above its allowance (budget rule, budget share; with e < 1 the larger of the honoured outcome's outlay
   and the breached one's, which moves no transfer but pays the costs) or a gain below its reservation payment; an attempted
   deal pays its costs and is honoured iff the enforcement uniform is below e; a failed assurance contract pays each
   pledger its refund bonus out of the emitter's wealth;
5. **money**: transfers, costs, the tax (paid by the emitter, recycled lump-sum to everybody or ``τx/k`` to each
   victim), then provider fees ``min(fee·max(gain, 0) + flat, wealth left)`` on each client's realised gain of the
   round (as emitter and as victim, refunds included);
6. **after the round**: clients' net-utility averages, logit provider switching, type drift
   ``a' = a exp(σ√3(2u − 1))/κ`` (high 16 bits: a, low 16 bits: c).

Welfare ``Σ [B(x) − C x] − TC`` counts true benefits and harms.

A decision within float32 rounding of its threshold (the attempt ``e Ŝ ≈ TC``, a budget or reservation veto, an
assurance pledge) is a *near tie*, which a single-precision engine may decide either way; the reference counts them
(``near_ties``) so a comparison can tell rounding from a disagreement.

Not modelled: victims pooling across emitters (``mechanism.pooling``), and ``best_response`` under nash or
alternating (undefined in the engine too); they raise ``ValueError``.
"""

from __future__ import annotations

import functools
import math
import time

import jax
import numpy as np
from numpy.polynomial import polynomial as P

from coasejax.config import Config
from coasejax.envs import coase
from coasejax.graphs import make_graph
from coasejax.population import round_words
from coasejax.rules.state import StateParams, capped

MECHANISM_KINDS = ("nash", "lindahl", "alternating", "clarke", "assurance")
PROTOCOLS = ("none",) + MECHANISM_KINDS
STRATEGIES = ("truthful", "shade", "best_response")
#: the strategies the bench's same-work comparison uses (no per-round draws beyond the engine's own)
BENCH_STRATEGIES = ("truthful", "shade")

#: a decision counts as a near tie when the quantity compared is within this fraction of the size of its terms of the
#: threshold it is compared with: about 16 float32 roundings (unit roundoff 2^-24 ≈ 6e-8)
TIE_RTOL = 1e-6
#: the budget allowance's safety margin (the state layer's documented ``m (1 − 1e-5)/(k + 1)``)
ALLOWANCE_MARGIN = 1e-5

INF = math.inf


def reference_compatible(cfg: Config) -> Config:
    """A copy of ``cfg`` for the bench's same-work comparison: enforcement 1, no drift, and ``truthful`` in place of
    ``best_response`` (so neither side spends time on random draws). Use the same copy for the engine when comparing
    speeds, so both do the same work. (The reference itself also runs configs with draws.)"""
    out = cfg.model_copy(deep=True)
    out.state.enforcement = 1.0
    out.population.drift = 0.0
    if out.advocates.strategy not in BENCH_STRATEGIES:
        out.advocates.strategy = "truthful"
    return out


def _check(cfg: Config, env: int) -> None:
    strategy = cfg.advocates.strategy
    if strategy not in STRATEGIES:
        raise ValueError(f"reference: advocates.strategy={strategy!r} is not supported "
                         f"(supported: {', '.join(STRATEGIES)})")
    if cfg.mechanism.kind not in MECHANISM_KINDS:
        raise ValueError(f"reference: mechanism.kind={cfg.mechanism.kind!r} is not supported")
    for kind in cfg.providers.protocols(cfg.mechanism.kind):
        if kind not in PROTOCOLS:
            raise ValueError(f"reference: protocol {kind!r} is not supported")
        if strategy == "best_response" and kind in ("nash", "alternating"):
            raise ValueError(f"reference: advocates.strategy=best_response is not defined for protocol {kind!r}")
    if cfg.mechanism.pooling:
        raise ValueError("reference: mechanism.pooling is not modelled")
    if not 0 <= env < cfg.sim.envs:
        raise ValueError(f"reference: env={env} is outside 0..{cfg.sim.envs - 1}")


def _to_list(v) -> list:
    return np.asarray(jax.device_get(v), np.float64).tolist()


def _setup(cfg: Config, env: int) -> dict:
    """The engine's graph, environment ``env``'s population and individual traits (same keys as
    ``simulate.build``), the capped agents and ``env``'s run key, as Python lists."""
    p = cfg.population
    graph = make_graph(p.graph, p.n_agents, p.degree, cfg.sim.seed, p.rewire)
    root = jax.random.PRNGKey(cfg.sim.seed)
    k_pop, k_run = jax.random.split(root)
    env_pop_keys = jax.random.split(k_pop, cfg.sim.envs)
    run_keys = jax.random.split(k_run, cfg.sim.envs)
    state = coase.reset(env_pop_keys[env], coase.EnvParams.from_config(cfg, graph))
    pop, indiv = state.pop, state.indiv
    traits = {t: (None if getattr(indiv, t) is None else _to_list(getattr(indiv, t)))
              for t in ("red_line", "reservation", "altruism", "budget_share")}
    sp = StateParams.from_config(cfg)
    cap_mask = (np.asarray(capped(sp, p.n_agents)).tolist() if cfg.state.activity_cap is not None
                else [False] * p.n_agents)
    return {
        "nbrs": np.asarray(graph.neighbours()).astype(int).tolist(),
        "a": _to_list(pop.a),
        "c": _to_list(pop.c),
        "wealth": _to_list(pop.wealth),
        "provider": np.asarray(pop.provider).astype(int).tolist(),
        "traits": traits,
        "capped": cap_mask,
        "run_key": run_keys[env],
    }


def _f32(v: float) -> float:
    """A config number as the engine holds it (``float32``), for comparisons against float32 draws."""
    return float(np.float32(v))


def _uniform(bits: np.ndarray, nbits: int) -> np.ndarray:
    """The documented ``unit_uniform`` rule: the cell midpoint of the low ``nbits`` bits, in float32."""
    mask = np.uint32((1 << nbits) - 1)
    return ((bits & mask).astype(np.float32) + np.float32(0.5)) * np.float32(1.0 / (1 << nbits))


# ----------------------------------------------------------------------------------------------------------------------
# The model and the mechanisms, one bargain at a time
# ----------------------------------------------------------------------------------------------------------------------


def _clip(v: float, lo: float, hi: float) -> float:
    return lo if v < lo else (hi if v > hi else v)


def _benefit(a: float, x: float) -> float:
    """``B(x) = a x − x²/2``."""
    return a * x - 0.5 * x * x


def _shares(c_hat: list[float]) -> list[float]:
    """Each victim's share of the reported harm; equal shares when nobody reports harm."""
    total = sum(c_hat)
    if total > 0:
        return [c / total for c in c_hat]
    return [1.0 / len(c_hat)] * len(c_hat)


def _reported_surplus(a_hat, cost_hat, x_sq, x):
    """``Ŝ = [B̂(x) − Ĉx] − [B̂(x_sq) − Ĉx_sq]``."""
    return (_benefit(a_hat, x) - cost_hat * x) - (_benefit(a_hat, x_sq) - cost_hat * x_sq)


def _split_surplus(b, x, emitter_gain):
    """Emitter receives ``T = L̂ + tc_e + g`` with ``L̂ = B̂(x_sq) − B̂(x)``; victims pay T in proportion to
    reported harm. Returns ``(x, to_emitter, from_victims, surplus, refunds)``."""
    a_hat, x_sq = b["a_hat"], b["x_sq"]
    loss = _benefit(a_hat, x_sq) - _benefit(a_hat, x)
    surplus = _reported_surplus(a_hat, b["cost_hat"], x_sq, x)
    t = loss + b["tc_emitter"] + emitter_gain
    return x, t, [t * sh for sh in _shares(b["c_hat"])], surplus, None


def _decision(b):
    """``x̂ = clip(â − Ĉ, 0, upper)``: the first best under the reports, inside the room the rules leave."""
    return _clip(b["a_hat"] - b["cost_hat"], 0.0, b["upper"])


def _nash(b, p):
    x = _decision(b)
    net = _reported_surplus(b["a_hat"], b["cost_hat"], b["x_sq"], x) - p["tc_total"]
    return _split_surplus(b, x, b["beta"] * net)


def _proposer_value(surplus, p):
    """First proposer's payoff by backward induction: the proposer of the last offer takes everything; at offer h
    the responder (who proposes at h + 1) accepts ``max(0, δ_r P_{h+1} − κ_r)`` and the proposer keeps the rest."""
    horizon = p["horizon"]
    value = surplus  # P_{H-1}
    for h in range(horizon - 2, -1, -1):
        proposer_is_emitter = (h % 2 == 0) == p["emitter_first"]
        if proposer_is_emitter:  # victims respond
            delta, kappa = p["d_v"], p["kappa_v"]
        else:
            delta, kappa = p["d_e"], p["kappa_e"]
        cont = delta * value - kappa
        value = surplus - (cont if cont > 0.0 else 0.0)
    return value


def _alternating(b, p):
    x = _decision(b)
    net = _reported_surplus(b["a_hat"], b["cost_hat"], b["x_sq"], x) - p["tc_total"]
    if net < 0.0:
        net = 0.0
    p1 = _proposer_value(net, p)
    gain = p1 if p["emitter_first"] else net - p1
    return _split_surplus(b, x, gain)


def _lindahl(b, p):
    """Victim s names the per-unit price ``w ĉ_s``; the emitter best-replies to the total price; each victim settles
    its price on the units that change."""
    w = p["w"]
    x = _decision(b)
    change = b["x_sq"] - x
    surplus = _reported_surplus(b["a_hat"], b["cost_hat"], b["x_sq"], x)
    return x, b["cost_hat"] * change, [w * c * change for c in b["c_hat"]], surplus, None


def _clarke(b, p):
    """Clarke pivot: the emitter is paid the victims' reported gain against the status quo; victim s pays the others'
    loss from moving to x̂, measured against what they would choose without s (emitter's right) or against the status
    quo (victim's right)."""
    w, a_hat, x_sq, cost_hat = p["w"], b["a_hat"], b["x_sq"], b["cost_hat"]
    x = _decision(b)
    to_emitter = cost_hat * (x_sq - x)
    from_victims = []
    for c in b["c_hat"]:
        cost_others = cost_hat - w * c
        ref = _clip(a_hat - cost_others, 0.0, b["upper"]) if p["emitter_right"] else x_sq
        v_ref = _benefit(a_hat, ref) - cost_others * ref
        v_x = _benefit(a_hat, x) - cost_others * x
        from_victims.append(v_ref - v_x)
    surplus = _reported_surplus(a_hat, cost_hat, x_sq, x)
    return x, to_emitter, from_victims, surplus, None


def _needed(k: int, threshold: float) -> int:
    """``m = ⌈θ k⌉`` pledges, at least 1 and at most k."""
    return min(max(math.ceil(threshold * k - 1e-4), 1), k)


def _contract(b, p):
    """The assurance contract's activity, each victim's reported value of the change, what it pays (negative: what it
    is paid) and the pledges needed.

    Emitter's right: the price ``p_s = L̂ (ĉ_s/Σĉ)(k/m)`` with ``L̂ = B̂(x_sq) − B̂(x̂)`` the emitter's reported loss;
    victim's right: the emitter offers each victim its reported harm ``w ĉ_s x̂`` plus its harm share of half the
    reported surplus ``B̂(x̂) − Ĉ x̂``."""
    k, w = len(b["c_hat"]), p["w"]
    m = _needed(k, p["threshold"])
    x = _decision(b)
    shares = _shares(b["c_hat"])
    emitter_gain = _benefit(b["a_hat"], x) - _benefit(b["a_hat"], b["x_sq"])
    value = [w * c * (b["x_sq"] - x) for c in b["c_hat"]]
    if p["emitter_right"]:
        pays = [max(-emitter_gain, 0.0) * sh * k / m for sh in shares]
    else:
        surplus = emitter_gain + sum(value)
        pays = [-(-v + sh * max(surplus, 0.0) / 2) for v, sh in zip(value, shares)]
    b["pledge_scale"] = abs(emitter_gain) + sum(abs(v) for v in value)  # the terms of the prices and offers
    return x, value, pays, m


def _assurance(b, p):
    """Each victim pledges (consents) iff its value of the change covers what it pays, or as its equilibrium pledge
    says (``b["pledge"]``); with at least m pledges the emitter moves to x̂ and the pledgers pay (under the victim's
    right every victim is paid); otherwise each pledger is owed ``refund_bonus · |p_s|``."""
    x_hat, value, pays, m = _contract(b, p)
    pledge = b.get("pledge") or [v >= q for v, q in zip(value, pays)]
    success = sum(pledge) >= m
    x = x_hat if success else b["x_sq"]
    paid = [(q if (pl or not p["emitter_right"]) else 0.0) if success else 0.0 for q, pl in zip(pays, pledge)]
    refund = [p["refund_bonus"] * abs(q) if (pl and not success) else 0.0 for q, pl in zip(pays, pledge)]
    surplus = _reported_surplus(b["a_hat"], b["cost_hat"], b["x_sq"], x_hat) if success else 0.0
    # x̂ = x_sq makes value and payment exactly 0 in any precision: no tie
    # (as is a victim that reports no harm, ĉ = 0 exactly: it values the change at 0 and pays 0)
    b["pledge_ties"] = 0 if x_hat == b["x_sq"] else sum(
        1 for v, q in zip(value, pays) if (v != 0.0 or q != 0.0)
        and abs(v - q) <= TIE_RTOL * (abs(v) + abs(q) + b["pledge_scale"]))
    return x, sum(paid), paid, surplus, refund


_MECHANISMS = {"nash": _nash, "lindahl": _lindahl, "alternating": _alternating, "clarke": _clarke,
               "assurance": _assurance}


def _lindahl_reports(a, c_true, p):
    """Equilibrium harm reports of best-responding victims under Lindahl (interior). Emitter's right: with the harms
    ``v = w c`` sorted down, the m top victims contribute ``A_m = Σ_top-m v/(m + 1)`` for the largest m with
    ``v_(m) > A_m``, and each pledges ``max(v − A, 0)``; victim's right: every victim asks ``v + x`` with
    ``x = clip((a − Σ v)/(k + 1), 0, x_max)``. Reports are prices over w."""
    w, k = p["w"], len(c_true)
    v = [w * c for c in c_true]
    if p["emitter_right"]:
        v_sorted = sorted(v, reverse=True)
        abate = 0.0
        for m in range(1, k + 1):
            a_m = sum(v_sorted[:m]) / (m + 1)
            if v_sorted[m - 1] > a_m:
                abate = a_m
        return [max(vs - abate, 0.0) / w for vs in v]
    x = _clip((a - sum(v)) / (k + 1), 0.0, p["x_max"])
    return [(vs + x) / w for vs in v]


@functools.lru_cache(maxsize=None)
def _tails(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The polynomials in q (coefficients, lowest order first) of ``P(X ≥ m − 1)`` and ``P(X ≥ m)`` for
    ``X ~ Binomial(n, q)``: ``Σ_{j ≥ t} C(n, j) q^j (1 − q)^(n − j)``."""

    def tail(t):
        out = np.zeros(n + 1)
        for j in range(max(t, 0), n + 1):
            term = P.polymul(P.polypow([0.0, 1.0], j), P.polypow([1.0, -1.0], n - j)) * math.comb(n, j)
            out[: len(term)] += term
        return out

    return tail(m - 1), tail(m)


def _mixed_pledge_probability(k: int, m: int, v: float, price: float, f: float) -> float:
    """The largest root in (0, 1) of what pledging earns over not pledging when each of the k − 1 others pledges with
    probability q, ``(v − p) P(X ≥ m − 1) + f P(X ≤ m − 2) − v P(X ≥ m)`` (THEORY.md, "Public goods"), at which the
    advantage falls through 0 (1 when it stays positive up to q = 1; 0 when it is never positive). The advantage is a
    polynomial of degree k − 1 in q, so its roots are found exactly."""
    t1, t2 = _tails(k - 1, m)
    coef = (v - price - f) * t1 - v * t2
    coef[0] += f
    roots = sorted(r.real for r in P.polyroots(coef) if abs(r.imag) < 1e-9 and 0.0 < r.real < 1.0) \
        if np.any(coef != 0) else []
    edges = [0.0] + roots + [1.0]
    for lo, hi in reversed(list(zip(edges[:-1], edges[1:]))):
        if P.polyval(0.5 * (lo + hi), coef) > 0:
            return hi
    return 0.0


# ----------------------------------------------------------------------------------------------------------------------
# The episode
# ----------------------------------------------------------------------------------------------------------------------


def simulate_reference(cfg: Config, env: int = 0) -> dict:
    """Run environment ``env`` of ``cfg`` for ``cfg.sim.rounds`` rounds with plain Python loops.

    Returns totals over agents and rounds, as in the engine's summary: ``welfare``, ``first_best_welfare``,
    ``status_quo_welfare``, ``mean_activity``, ``transfers`` (money received by emitters, net of refunds they pay),
    ``transaction_costs_paid``, ``mechanism_net`` (money taken in by the mechanism), ``tax_revenue``, ``fees``,
    ``refunds_paid``, ``deal_rate``, ``attempt_rate``; ``wealth`` and ``provider``, the final wealth and provider of
    every agent; ``scale``, per total the sum of the absolute values of its terms (the size of the float32 rounding
    it can carry); ``wealth_scale``, per agent its initial wealth plus the absolute flows it saw; ``near_ties``, the
    number of decisions within float32 rounding of their threshold (see the module docstring), which a
    single-precision engine may decide either way (``near_tie_kinds``: by decision); ``exercised``, how many times
    each rule changed something (``cap``, ``budget_alone``, ``red_line``, ``conduct``, ``veto_budget``,
    ``veto_reservation``, ``breach``, ``failed_contract``, ``refund``, ``fee_capped``, ``switch``,
    ``mixed_pledges``), so a test can tell that its settings reach the rules; ``seconds``, the time of the round loop
    alone (set-up excluded);
    and ``agent_steps_per_second = n_agents · rounds / seconds``.
    """
    _check(cfg, env)
    setup = _setup(cfg, env)
    nbrs, a, c, wealth = setup["nbrs"], setup["a"], setup["c"], setup["wealth"]
    provider, traits, cap_mask = setup["provider"], setup["traits"], setup["capped"]
    red_line, reservation = traits["red_line"], traits["reservation"]
    altruism, budget_share = traits["altruism"], traits["budget_share"]

    pop, tc, m, st, pv = cfg.population, cfg.state.transaction_costs, cfg.mechanism, cfg.state, cfg.providers
    n, k, rounds = pop.n_agents, pop.degree, cfg.sim.rounds
    emitter_right = st.rights == "emitter"
    w, x_max = float(pop.w), float(pop.x_max)
    per_party, per_round = float(tc.per_party), float(tc.per_round)
    per_deal = max(float(tc.per_deal), float(st.tc_floor))  # the state's floor on a deal's fixed cost
    party = per_party + per_round
    tc_emitter = party + (0.0 if emitter_right else per_deal)
    tc_victims = k * party + (per_deal if emitter_right else 0.0)
    tc_total = tc_emitter + tc_victims
    victim_deal_cost = per_deal if emitter_right else 0.0
    strategy = cfg.advocates.strategy
    params = {
        "w": w,
        "x_max": x_max,
        "emitter_right": emitter_right,
        "d_e": float(m.discount_emitter),
        "d_v": float(m.discount_victims),
        "kappa_e": per_round,
        "kappa_v": k * per_round,
        "horizon": int(m.horizon),
        "emitter_first": m.first_mover == "emitter",
        "tc_total": tc_total,
        "threshold": _f32(m.threshold),
        "refund_bonus": float(m.refund_bonus),
    }
    beta = float(m.bargaining_power)
    enforcement = _f32(st.enforcement)
    draw_enforcement = st.enforcement < 1.0
    drift = _f32(pop.drift)
    draw_drift = pop.drift > 0.0

    # the state layer
    use_cap = st.activity_cap is not None
    cap = float(st.activity_cap) if use_cap else INF
    tax = float(st.pigou_tax)
    use_tax = tax > 0.0
    tax_to_victims = use_tax and st.tax_recycling == "victims"
    budget_rule = st.budget_rule

    # the provider layer
    n_prov = pv.count
    protocols = pv.protocols(m.kind)
    fee_share = pv.per_provider("fee")
    fee_flat = pv.per_provider("fee_flat")
    use_fees = any(v > 0 for v in fee_share + fee_flat)
    conduct = pv.per_provider("conduct", INF) if pv.conduct is not None else None
    prov_shade = pv.per_provider("shade", cfg.advocates.shade)
    skill = pv.per_provider("skill")
    use_skill = n_prov > 1 and len(set(skill)) > 1
    use_switching = n_prov > 1 and pv.switching_rate > 0
    switching_rate, inertia = _f32(pv.switching_rate), float(pv.inertia)
    temperature, memory = float(pv.temperature), float(pv.memory)
    util = [0.0] * n

    uses = [u for u, on in (("enforce", draw_enforcement), ("drift", draw_drift), ("switch", use_switching)) if on]
    pledge_draws = strategy == "best_response" and "assurance" in protocols and emitter_right and \
        _needed(k, params["threshold"]) < k

    def allowance(j):
        return max(wealth[j], 0.0) * ((1.0 - ALLOWANCE_MARGIN) / (k + 1))

    def shade_of(j):
        s = prov_shade[provider[j]]
        return s * (1.0 - altruism[j]) if altruism is not None else s

    def conduct_clip(v_hat, v_true, j):
        if conduct is None:
            return v_hat
        d = conduct[provider[j]]
        lo, hi = v_true * (1.0 - min(d, 1.0)), v_true * (1.0 + d)
        return _clip(v_hat, min(lo, hi), hi)

    def near(value, threshold, scale):
        return abs(value - threshold) <= TIE_RTOL * (abs(value) + abs(threshold) + scale)

    totals = dict.fromkeys(("welfare", "first_best_welfare", "status_quo_welfare", "activity", "transfers",
                            "transaction_costs_paid", "mechanism_net", "tax_revenue", "fees", "refunds_paid"), 0.0)
    scale = dict.fromkeys(totals, 0.0)
    wealth_scale = [abs(v) for v in wealth]
    deals = attempts = 0
    ties = dict.fromkeys(("attempt", "veto", "pledge"), 0)  # near ties by the decision they are in
    # how often each rule changed something (so a comparison can tell that its settings exercised the rules)
    seen = dict.fromkeys(("cap", "budget_alone", "red_line", "conduct", "veto_budget", "veto_reservation", "breach",
                          "failed_contract", "refund", "fee_capped", "switch", "mixed_pledges"), 0)

    t0 = time.perf_counter()
    for t in range(rounds):
        key_t = jax.random.fold_in(setup["run_key"], t)
        k_mech, k_draws = jax.random.split(key_t)
        word = {}
        if uses:
            words = np.asarray(round_words(k_draws, len(uses), n))
            word = {u: words[i] for i, u in enumerate(uses)}
        u_enforce = _uniform(word["enforce"], 24).tolist() if draw_enforcement else None
        u_pledge = (np.asarray(jax.random.uniform(jax.random.fold_in(k_mech, 1), (k, n))).T.tolist()
                    if pledge_draws else None)

        d_wealth = [0.0] * n
        gain = [0.0] * n  # each agent's realised gain of the round, as emitter and as victim
        flows = [0.0] * n
        tax_total = 0.0
        for i in range(n):
            ai, victims = a[i], nbrs[i]
            kind = protocols[provider[i]]
            c_true = [c[j] for j in victims]
            cost = w * sum(c_true)

            # 1. acting alone, inside the state's and the client's limits
            x_alone = _clip(ai - tax, 0.0, x_max)
            if use_cap and cap_mask[i]:
                seen["cap"] += x_alone > cap
                x_alone = min(x_alone, cap)
            x_free = x_alone
            if use_tax and budget_rule:
                x_alone = min(x_alone, allowance(i) / tax)
            if use_tax and budget_share is not None:
                x_alone = min(x_alone, budget_share[i] * allowance(i) / tax)
            seen["budget_alone"] += x_alone < x_free
            x_sq = x_alone if emitter_right else 0.0
            x_star = _clip(ai - cost, 0.0, x_max)
            x_base = _clip(ai, 0.0, x_max) if emitter_right else 0.0

            # 2. reports
            if kind == "none" or strategy == "truthful" or (strategy == "best_response"
                                                             and kind in ("clarke", "assurance")):
                a_rep, c_rep = ai, list(c_true)
            elif strategy == "shade":
                s_e = shade_of(i)
                a_rep = ai if kind in ("lindahl", "assurance") else ai * ((1.0 + s_e) if emitter_right else (1.0 - s_e))
                c_rep = [cj * ((1.0 - shade_of(j)) if emitter_right else (1.0 + shade_of(j)))
                         for cj, j in zip(c_true, victims)]
            else:  # best_response under lindahl
                a_rep, c_rep = ai, _lindahl_reports(ai, c_true, params)
            reports = [a_rep] + c_rep
            a_rep = conduct_clip(a_rep, ai, i)
            c_rep = [conduct_clip(ch, cj, j) for ch, cj, j in zip(c_rep, c_true, victims)]
            seen["conduct"] += kind != "none" and reports != [a_rep] + c_rep
            shares = _shares(c_rep)

            # 3. the bargain, net of the tax, inside the room of the activity cap and the red lines
            a_eff, c_eff = a_rep, c_rep
            if use_tax:
                a_eff = a_rep - tax
                if tax_to_victims:
                    c_eff = [max(ch - tax / (k * w), 0.0) for ch in c_rep]
            upper = x_sq if emitter_right else x_max
            if use_cap and cap_mask[i]:
                upper = min(upper, cap)
            if red_line is not None:
                before = upper
                for j in victims:
                    if c[j] > 0:
                        upper = min(upper, red_line[j] / (w * c[j]))
                seen["red_line"] += kind != "none" and upper < min(before, _clip(a_eff - w * sum(c_eff), 0.0, before))
            if use_skill:
                edge = skill[provider[i]] - sum(skill[provider[j]] for j in victims) / k
                beta_i = _clip(beta + 0.5 * edge, 0.0, 1.0)
            else:
                beta_i = beta
            cost_eff = w * sum(c_eff)
            b = {"a_hat": a_eff, "c_hat": c_eff, "cost_hat": cost_eff, "x_sq": x_sq, "upper": upper,
                 "beta": beta_i, "tc_emitter": tc_emitter}
            x_prop = _clip(a_eff - cost_eff, 0.0, upper)
            b["scale"] = (abs(_benefit(a_eff, x_sq)) + abs(_benefit(a_eff, x_prop)) + abs(cost_eff) * (x_sq + x_prop)
                          + tc_total)
            if kind == "assurance" and strategy == "best_response":
                x_hat, _, pays, m_need = _contract(b, params)
                value_true = [w * cj * (x_sq - x_hat) for cj in c_true]
                covers = [v >= q for v, q in zip(value_true, pays)]
                if x_hat != x_sq:
                    ties["pledge"] += sum(1 for v, q in zip(value_true, pays) if near(v, q, b["pledge_scale"]))
                if emitter_right and m_need < k:
                    q_mix = _mixed_pledge_probability(k, m_need, sum(value_true) / k, sum(pays) / k,
                                                      params["refund_bonus"] * sum(pays) / k)
                    seen["mixed_pledges"] += 0.0 < q_mix < 1.0
                    b["pledge"] = [cv and u < q_mix for cv, u in zip(covers, u_pledge[i])]
                else:
                    b["pledge"] = covers
            if kind == "none":  # its emitters do not bargain
                out_x, to_e, from_v, surplus, refund = x_sq, 0.0, [0.0] * k, 0.0, None
            else:
                out_x, to_e, from_v, surplus, refund = _MECHANISMS[kind](b, params)
                if kind == "assurance" and strategy != "best_response":  # pledges decided by the reports
                    ties["pledge"] += b["pledge_ties"]

            # 4. each party's true gain and outlay, the vetoes, the attempt and enforcement
            dx = out_x - x_sq
            tc_v = [party + victim_deal_cost * sh for sh in shares]
            tax_share = tax / k if tax_to_victims else 0.0
            g_e = _benefit(ai, out_x) - _benefit(ai, x_sq) - tax * dx + to_e - tc_emitter
            g_v = [(tax_share - w * cj) * dx - fv - tcv for cj, fv, tcv in zip(c_true, from_v, tc_v)]
            would = surplus > 0.0 and enforcement * surplus >= tc_total
            if kind != "none" and out_x != x_sq and near(enforcement * surplus, tc_total, b["scale"]):
                ties["attempt"] += 1
            veto = False
            checks = []  # (value, bound, is_upper_bound) of every veto rule
            if budget_rule or budget_share is not None:
                outlay_e = tax * out_x - to_e + tc_emitter
                if draw_enforcement:  # breached: no transfer, the costs (and the status quo's tax) still paid
                    outlay_e = max(outlay_e, tax * x_sq + tc_emitter)
                bound = allowance(i) * (budget_share[i] if budget_share is not None else 1.0)
                checks.append((outlay_e, bound, True))
                for s, j in enumerate(victims):
                    bound = allowance(j) * (budget_share[j] if budget_share is not None else 1.0)
                    outlay_v = max(from_v[s] + tc_v[s], tc_v[s]) if draw_enforcement else from_v[s] + tc_v[s]
                    checks.append((outlay_v, bound, True))
            if reservation is not None:
                checks.append((g_e, reservation[i], False))
                for s, j in enumerate(victims):
                    checks.append((g_v[s], reservation[j], False))
            for value, bound, upper_bound in checks:
                if (value > bound) if upper_bound else (value < bound):
                    if would and not veto:
                        seen["veto_budget" if upper_bound else "veto_reservation"] += 1
                    veto = True
                if would and kind != "none" and near(value, bound, b["scale"] + abs(to_e)):
                    ties["veto"] += 1
            attempt = would and not veto
            honoured = attempt and (u_enforce[i] < enforcement if draw_enforcement else True)

            seen["breach"] += attempt and not honoured
            seen["failed_contract"] += kind == "assurance" and out_x == x_sq and b["x_sq"] != _decision(b)
            x = out_x if honoured else x_sq
            if not honoured:
                to_e, from_v = 0.0, [0.0] * k
            tc_e_paid = tc_emitter if attempt else 0.0
            tc_v_paid = tc_v if attempt else [0.0] * k
            refunds = [0.0] * k
            if refund is not None and not attempt:  # a failed contract: the emitter pays the pledgers' bonuses
                refunds = refund
                seen["refund"] += sum(refunds) > 0
                from_v = [fv - r for fv, r in zip(from_v, refunds)]
                to_e -= sum(refunds)
            # the emitter's realised gain: its benefit change, the tax saved, what it received, its costs
            gain[i] += _benefit(ai, x) - _benefit(ai, x_sq) - tax * (x - x_sq) + to_e - tc_e_paid

            # 5. money
            tax_paid = tax * x
            tax_total += tax_paid
            d_wealth[i] += to_e - tc_e_paid - tax_paid
            flows[i] += abs(to_e) + tc_e_paid + tax_paid + b["scale"]
            for s, j in enumerate(victims):
                pays = from_v[s] + tc_v_paid[s] - (tax_paid / k if tax_to_victims else 0.0)
                d_wealth[j] -= pays
                flows[j] += abs(pays) + b["scale"]
                # as a victim: the harm change, what it paid, and (tax to victims) the τ x_sq/k it had anyway
                gain[j] += -w * c[j] * (x - x_sq) - pays - (tax * x_sq / k if tax_to_victims else 0.0)

            if attempt:
                attempts += 1
            if honoured:
                deals += 1
            tc_all = tc_e_paid + sum(tc_v_paid)
            welfare = _benefit(ai, x) - cost * x - tc_all
            for key_, val, size in (
                ("welfare", welfare, abs(_benefit(ai, x)) + abs(cost * x) + tc_all),
                ("first_best_welfare", _benefit(ai, x_star) - cost * x_star,
                 abs(_benefit(ai, x_star)) + abs(cost * x_star)),
                ("status_quo_welfare", _benefit(ai, x_base) - cost * x_base,
                 abs(_benefit(ai, x_base)) + abs(cost * x_base)),
                ("activity", x, abs(x)),
                ("transfers", to_e, abs(to_e) + b["scale"]),
                ("transaction_costs_paid", tc_all, tc_all),
                ("mechanism_net", sum(from_v) - to_e, sum(abs(v) for v in from_v) + abs(to_e) + b["scale"]),
                ("refunds_paid", sum(refunds), sum(abs(r) for r in refunds) + b["scale"] * (refund is not None)),
            ):
                totals[key_] += val
                scale[key_] += size

        totals["tax_revenue"] += tax_total
        scale["tax_revenue"] += tax_total
        if use_tax and not tax_to_victims:  # lump-sum recycling: equally to every agent
            for j in range(n):
                d_wealth[j] += tax_total / n
                # the engine's float32 sum of the revenue carries up to N u·revenue, u·revenue per agent's share
                flows[j] += tax_total

        # provider fees: a share of the realised gain and a flat fee, never beyond what the client has left
        fee = [0.0] * n
        if use_fees:
            for j in range(n):
                due = fee_share[provider[j]] * max(gain[j], 0.0) + fee_flat[provider[j]]
                fee[j] = min(due, max(wealth[j] + d_wealth[j], 0.0))
                seen["fee_capped"] += fee[j] < due
                d_wealth[j] -= fee[j]
                flows[j] += fee[j] + fee_share[provider[j]] * (flows[j])
                totals["fees"] += fee[j]
                scale["fees"] += fee[j] + fee_share[provider[j]] * flows[j]
        for j in range(n):
            wealth[j] += d_wealth[j]
            wealth_scale[j] += flows[j]

        # clients review their providers (a logit market on the providers' mean net utility of their clients)
        if use_switching:
            for j in range(n):
                util[j] = memory * util[j] + (1.0 - memory) * (gain[j] - fee[j])
            clients, util_sum = [0] * n_prov, [0.0] * n_prov
            for j in range(n):
                clients[provider[j]] += 1
                util_sum[provider[j]] += util[j]
            mean_all = sum(util_sum) / n
            score = [util_sum[q] / clients[q] if clients[q] > 0 else mean_all for q in range(n_prov)]
            top = max(score)
            weight = [math.exp((s - top) / temperature) for s in score]
            u_review = _uniform(word["switch"], 12).tolist()
            u_pick = _uniform(word["switch"] >> np.uint32(12), 20).tolist()
            for j in range(n):
                if not u_review[j] < switching_rate:
                    continue
                cur = provider[j]
                stay = weight[cur] * math.exp(inertia / temperature)
                target = u_pick[j] * (sum(weight) - weight[cur] + stay)
                if target < stay:
                    continue
                acc = stay  # the current provider first, then the others in index order
                choice = cur
                for q in range(n_prov):
                    if q == cur:
                        continue
                    choice = q
                    acc += weight[q]
                    if target < acc:
                        break
                seen["switch"] += choice != cur
                provider[j] = choice

        # live preference streams: mean-preserving log-uniform steps of log-sd σ
        if draw_drift:
            half = drift * math.sqrt(3.0)
            kappa = math.sinh(half) / half
            u_a = _uniform(word["drift"] >> np.uint32(16), 16).tolist()
            u_c = _uniform(word["drift"], 16).tolist()
            for j in range(n):
                a[j] *= math.exp(half * (2.0 * u_a[j] - 1.0)) / kappa
                c[j] *= math.exp(half * (2.0 * u_c[j] - 1.0)) / kappa
    seconds = time.perf_counter() - t0

    steps = n * rounds
    return {
        "n_agents": n,
        "rounds": rounds,
        "welfare": totals["welfare"],
        "first_best_welfare": totals["first_best_welfare"],
        "status_quo_welfare": totals["status_quo_welfare"],
        "mean_activity": totals["activity"] / steps,
        "transfers": totals["transfers"],
        "transaction_costs_paid": totals["transaction_costs_paid"],
        "mechanism_net": totals["mechanism_net"],
        "tax_revenue": totals["tax_revenue"],
        "fees": totals["fees"],
        "refunds_paid": totals["refunds_paid"],
        "deal_rate": deals / steps,
        "attempt_rate": attempts / steps,
        "near_ties": sum(ties.values()),
        "near_tie_kinds": ties,
        "exercised": seen,
        "wealth": wealth,
        "provider": provider,
        "scale": {("mean_activity" if key_ == "activity" else key_): v / (steps if key_ == "activity" else 1.0)
                  for key_, v in scale.items()},
        "wealth_scale": wealth_scale,
        "seconds": seconds,
        "agent_steps_per_second": steps / seconds if seconds > 0 else float("inf"),
    }
