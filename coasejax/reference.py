"""A deliberately slow, plain-Python reference implementation of the Coase scenario.

This module re-implements one environment of :mod:`coasejax.envs.coase` with ordinary Python loops over emitters and
their k victims and ``float`` arithmetic (double precision), written from the formulas in the docstrings of
:mod:`coasejax.model`, :mod:`coasejax.mechanisms` and :mod:`coasejax.advocates` rather than by calling the engine's
mechanism or step functions. It has two uses:

* ``tests/test_reference.py`` runs the engine and this reference on the same graph and population and checks that
  welfare, transfers, costs, deal rates and the final wealth of every agent agree (a cross-check of the vectorised,
  slot-major engine against an obviously-correct agent-by-agent loop);
* ``coasejax bench`` times it as the *same-work reference*: ``agent_steps_per_second`` of the engine divided by that
  of this loop is the reported speed-up.

Only the set-up is shared with the engine: the graph comes from :func:`coasejax.graphs.make_graph` and the population
of environment ``env`` from :func:`coasejax.envs.coase.reset` with the same keys as :func:`coasejax.simulate.build`;
both are converted to Python lists before the timed loop starts.

Per round and emitter i with victims ``j_1..j_k`` (all recomputed every round, as the engine does):

* true cost ``C = w Σ_s c_{j_s}``, status quo ``x_sq`` (``clip(a, 0, x_max)`` under the emitter's right, else 0),
  first best ``x* = clip(a − C, 0, x_max)``;
* reports (``truthful`` or ``shade``; under ``lindahl`` only victims shade), the mechanism's agreed activity
  ``x̂ = clip(â − Ĉ, 0, upper)`` with ``upper = x_sq`` under the emitter's right (a deal only buys abatement) and
  ``x_max`` under the victim's right, its transfers and its reported surplus ``Ŝ``;
* a deal is attempted iff ``Ŝ > 0`` and ``Ŝ ≥ TC = per_deal + (k + 1)(per_party + per_round)`` (enforcement is 1);
  an attempted deal is honoured, its costs are paid (the emitter ``per_party + per_round`` plus ``per_deal`` under the
  victim's right; each victim ``per_party + per_round`` plus its reported-harm share of ``per_deal`` under the
  emitter's right);
* welfare ``B(x) − C x − TC``; wealth moves with transfers and costs.

Random draws are out of scope, so imperfect enforcement (``state.enforcement < 1``), type drift
(``population.drift > 0``) and ``advocates.strategy=best_response`` raise ``ValueError``;
:func:`reference_compatible` returns a copy of a config with those switched off.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from coasejax.config import Config
from coasejax.envs import coase
from coasejax.graphs import make_graph

MECHANISM_KINDS = ("nash", "lindahl", "alternating", "clarke")
STRATEGIES = ("truthful", "shade")

#: a decision counts as a near tie when the reported surplus is within this fraction of the size of its terms of the
#: threshold it is compared with (the transaction costs, possibly 0): about 8 float32 roundings
TIE_RTOL = 1e-6


def reference_compatible(cfg: Config) -> Config:
    """A copy of ``cfg`` the reference can run: enforcement 1, no drift, and ``truthful`` in place of
    ``best_response``. Use the same copy for the engine when comparing speeds, so both do the same work."""
    out = cfg.model_copy(deep=True)
    out.state.enforcement = 1.0
    out.population.drift = 0.0
    if out.advocates.strategy not in STRATEGIES:
        out.advocates.strategy = "truthful"
    return out


def _check(cfg: Config, env: int) -> None:
    if cfg.state.enforcement < 1.0:
        raise ValueError(f"reference: state.enforcement={cfg.state.enforcement} < 1 needs random draws; "
                         "set it to 1 (see reference_compatible)")
    if cfg.population.drift > 0.0:
        raise ValueError(f"reference: population.drift={cfg.population.drift} > 0 needs random draws; set it to 0")
    if cfg.advocates.strategy not in STRATEGIES:
        raise ValueError(f"reference: advocates.strategy={cfg.advocates.strategy!r} is not supported "
                         f"(supported: {', '.join(STRATEGIES)})")
    if cfg.mechanism.kind not in MECHANISM_KINDS:
        raise ValueError(f"reference: mechanism.kind={cfg.mechanism.kind!r} is not supported")
    if not 0 <= env < cfg.sim.envs:
        raise ValueError(f"reference: env={env} is outside 0..{cfg.sim.envs - 1}")


def _setup(cfg: Config, env: int) -> tuple[list[list[int]], list[float], list[float], list[float]]:
    """The engine's graph and environment ``env``'s population, as Python lists (same keys as ``simulate.build``)."""
    p = cfg.population
    graph = make_graph(p.graph, p.n_agents, p.degree, cfg.sim.seed, p.rewire)
    root = jax.random.PRNGKey(cfg.sim.seed)
    k_pop, _ = jax.random.split(root)
    env_pop_keys = jax.random.split(k_pop, cfg.sim.envs)
    pop = coase.reset(env_pop_keys[env], cfg).pop
    nbrs = np.asarray(graph.neighbours()).astype(int).tolist()
    to_list = lambda v: np.asarray(jax.device_get(v), np.float64).tolist()  # noqa: E731
    return nbrs, to_list(pop.a), to_list(pop.c), to_list(pop.wealth)


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


def _split_surplus(a_hat, c_hat, cost_hat, x_sq, x, emitter_gain, tc_emitter):
    """Emitter receives ``T = L̂ + tc_e + g`` with ``L̂ = B̂(x_sq) − B̂(x)``; victims pay T in proportion to
    reported harm. Returns ``(x, to_emitter, from_victims, surplus)``."""
    loss = _benefit(a_hat, x_sq) - _benefit(a_hat, x)
    surplus = cost_hat * (x_sq - x) - loss
    t = loss + tc_emitter + emitter_gain
    return x, t, [t * sh for sh in _shares(c_hat)], surplus


def _upper(x_sq, p):
    """Highest activity a deal may set: ``x_sq`` under the emitter's right (victims buy abatement; no deal raises
    activity above the status quo), ``x_max`` under the victim's right."""
    return x_sq if p["emitter_right"] else p["x_max"]


def _decision(a_hat, cost_hat, x_sq, p):
    """``x̂ = clip(â − Ĉ, 0, upper)``: the first best under the reports, capped as in :func:`_upper`."""
    return _clip(a_hat - cost_hat, 0.0, _upper(x_sq, p))


def _reported_surplus(a_hat, cost_hat, x_sq, x):
    """``Ŝ = [B̂(x) − Ĉx] − [B̂(x_sq) − Ĉx_sq]``."""
    return (_benefit(a_hat, x) - cost_hat * x) - (_benefit(a_hat, x_sq) - cost_hat * x_sq)


def _nash(a_hat, c_hat, cost_hat, x_sq, p):
    x = _decision(a_hat, cost_hat, x_sq, p)
    net = _reported_surplus(a_hat, cost_hat, x_sq, x) - p["tc_total"]
    return _split_surplus(a_hat, c_hat, cost_hat, x_sq, x, p["beta"] * net, p["tc_emitter"])


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


def _alternating(a_hat, c_hat, cost_hat, x_sq, p):
    x = _decision(a_hat, cost_hat, x_sq, p)
    net = _reported_surplus(a_hat, cost_hat, x_sq, x) - p["tc_total"]
    if net < 0.0:
        net = 0.0
    p1 = _proposer_value(net, p)
    gain = p1 if p["emitter_first"] else net - p1
    return _split_surplus(a_hat, c_hat, cost_hat, x_sq, x, gain, p["tc_emitter"])


def _lindahl(a_hat, c_hat, cost_hat, x_sq, p):
    """Victim s names the per-unit price ``w ĉ_s``; the emitter best-replies to the total price; each victim settles
    its price on the units that change."""
    w = p["w"]
    x = _decision(a_hat, cost_hat, x_sq, p)
    change = x_sq - x
    surplus = cost_hat * change - (_benefit(a_hat, x_sq) - _benefit(a_hat, x))
    return x, cost_hat * change, [w * c * change for c in c_hat], surplus


def _clarke(a_hat, c_hat, cost_hat, x_sq, p):
    """Clarke pivot: the emitter is paid the victims' reported gain against the status quo; victim s pays the others'
    loss from moving to x̂, measured against what they would choose without s (emitter's right) or against the status
    quo (victim's right)."""
    w = p["w"]
    x = _decision(a_hat, cost_hat, x_sq, p)
    to_emitter = cost_hat * (x_sq - x)
    from_victims = []
    for c in c_hat:
        cost_others = cost_hat - w * c
        if p["emitter_right"]:
            ref = _clip(a_hat - cost_others, 0.0, _upper(x_sq, p))
        else:
            ref = x_sq
        v_ref = _benefit(a_hat, ref) - cost_others * ref
        v_x = _benefit(a_hat, x) - cost_others * x
        from_victims.append(v_ref - v_x)
    surplus = (_benefit(a_hat, x) - cost_hat * x) - (_benefit(a_hat, x_sq) - cost_hat * x_sq)
    return x, to_emitter, from_victims, surplus


_MECHANISMS = {"nash": _nash, "lindahl": _lindahl, "alternating": _alternating, "clarke": _clarke}


# ----------------------------------------------------------------------------------------------------------------------
# The episode
# ----------------------------------------------------------------------------------------------------------------------


def simulate_reference(cfg: Config, env: int = 0) -> dict:
    """Run environment ``env`` of ``cfg`` for ``cfg.sim.rounds`` rounds with plain Python loops.

    Returns totals over agents and rounds, as in the engine's summary: ``welfare``, ``first_best_welfare``,
    ``status_quo_welfare``, ``mean_activity``, ``transfers`` (money received by emitters), ``transaction_costs_paid``,
    ``mechanism_net`` (money taken in by the mechanism), ``deal_rate``, ``attempt_rate``; ``wealth``, the final wealth
    of every agent; ``near_ties``, the number of agent-rounds whose attempt decision is within float32 rounding of
    its threshold (``Ŝ ≈ TC``, including a tiny ``Ŝ`` when ``TC = 0``), which a single-precision engine may decide
    either way;
    ``seconds``, the time of the round loop alone (set-up excluded); and
    ``agent_steps_per_second = n_agents · rounds / seconds``.
    """
    _check(cfg, env)
    nbrs, a, c, wealth = _setup(cfg, env)

    pop, tc, m = cfg.population, cfg.state.transaction_costs, cfg.mechanism
    n, k, rounds = pop.n_agents, pop.degree, cfg.sim.rounds
    emitter_right = cfg.state.rights == "emitter"
    w, x_max = float(pop.w), float(pop.x_max)
    per_party, per_round, per_deal = float(tc.per_party), float(tc.per_round), float(tc.per_deal)
    party = per_party + per_round
    tc_emitter = party + (0.0 if emitter_right else per_deal)
    tc_victims = k * party + (per_deal if emitter_right else 0.0)
    params = {
        "w": w,
        "x_max": x_max,
        "emitter_right": emitter_right,
        "beta": float(m.bargaining_power),
        "d_e": float(m.discount_emitter),
        "d_v": float(m.discount_victims),
        "kappa_e": per_round,
        "kappa_v": k * per_round,
        "horizon": int(m.horizon),
        "emitter_first": m.first_mover == "emitter",
        "tc_emitter": tc_emitter,
        "tc_total": tc_emitter + tc_victims,
    }
    mechanism = _MECHANISMS[m.kind]
    shade = float(cfg.advocates.shade) if cfg.advocates.strategy == "shade" else 0.0
    # shade: the paying side understates, the paid side overstates; under lindahl the emitter takes the victims'
    # prices and names none, so only victims shade
    a_factor = 1.0 + shade if emitter_right else 1.0 - shade
    if m.kind == "lindahl":
        a_factor = 1.0
    c_factor = 1.0 - shade if emitter_right else 1.0 + shade
    victim_deal_cost = per_deal if emitter_right else 0.0
    enforcement = 1.0

    welfare = first_best = status_quo = activity = 0.0
    transfers = costs_paid = mechanism_net = 0.0
    deals = attempts = near_ties = 0
    tc_total = params["tc_total"]

    t0 = time.perf_counter()
    for _ in range(rounds):
        d_wealth = [0.0] * n
        for i in range(n):
            ai = a[i]
            victims = nbrs[i]
            c_true = [c[j] for j in victims]
            cost = w * sum(c_true)
            x_sq = _clip(ai, 0.0, x_max) if emitter_right else 0.0
            x_star = _clip(ai - cost, 0.0, x_max)

            a_hat = ai * a_factor
            c_hat = [cj * c_factor for cj in c_true]
            cost_hat = w * sum(c_hat)
            x_deal, to_e, from_v, surplus = mechanism(a_hat, c_hat, cost_hat, x_sq, params)

            attempt = surplus > 0.0 and enforcement * surplus >= tc_total
            # Ŝ is a difference of terms of size `scale`; within a few float32 roundings of a threshold a
            # single-precision engine may decide the other way (Ŝ = 0 exactly when x̂ = x_sq is no tie)
            scale = abs(_benefit(a_hat, x_sq)) + abs(_benefit(a_hat, x_deal)) + abs(cost_hat) * (x_sq + x_deal)
            tie = TIE_RTOL * (scale + tc_total)
            if x_deal != x_sq and abs(enforcement * surplus - tc_total) <= tie:
                near_ties += 1
            if attempt:
                attempts += 1
                deals += 1  # enforcement is 1: every attempted deal is honoured
                x = x_deal
                shares = _shares(c_hat)
                tc_v = [party + victim_deal_cost * sh for sh in shares]
                tc_all = tc_emitter + sum(tc_v)
                d_wealth[i] += to_e - tc_emitter
                for s, j in enumerate(victims):
                    d_wealth[j] -= from_v[s] + tc_v[s]
                transfers += to_e
                mechanism_net += sum(from_v) - to_e
            else:
                x = x_sq
                tc_all = 0.0

            welfare += _benefit(ai, x) - cost * x - tc_all
            first_best += _benefit(ai, x_star) - cost * x_star
            status_quo += _benefit(ai, x_sq) - cost * x_sq
            activity += x
            costs_paid += tc_all
        for i in range(n):
            wealth[i] += d_wealth[i]
    seconds = time.perf_counter() - t0

    steps = n * rounds
    return {
        "n_agents": n,
        "rounds": rounds,
        "welfare": welfare,
        "first_best_welfare": first_best,
        "status_quo_welfare": status_quo,
        "mean_activity": activity / steps,
        "transfers": transfers,
        "transaction_costs_paid": costs_paid,
        "mechanism_net": mechanism_net,
        "deal_rate": deals / steps,
        "attempt_rate": attempts / steps,
        "near_ties": near_ties,
        "wealth": wealth,
        "seconds": seconds,
        "agent_steps_per_second": steps / seconds if seconds > 0 else float("inf"),
    }
