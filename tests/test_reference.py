"""Cross-check of the vectorised JAX engine against the plain-Python reference (:mod:`coasejax.reference`).

Both run the same graph, population and random draws; every mechanism × rights regime × strategy × transaction-cost
case, and a few hundred generated settings of the rule layers, providers and fees, enforcement, drift and assurance
contracts, must give the same totals, the same deal and attempt counts and the same final wealth (and provider) of
every agent, within float32 tolerances derived below (above ``GENERATED_TOTALS``).

Compiling the engine costs a few seconds per config, so the engine is compiled once per combination of its static
choices (mechanism and protocols, strategy, graph, horizon, first mover, which layers are on) and re-run with the
traced parameters, populations and keys of each case: exactly what a parameter sweep does.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coasejax.config import load_config
from coasejax.envs import coase
from coasejax.graphs import make_graph
from coasejax.reference import reference_compatible, simulate_reference
from coasejax.scenarios.coase import summarise
from coasejax.simulate import build, simulate

N_AGENTS = 300
ROUNDS = 3

BASE = [
    f"population.n_agents={N_AGENTS}",
    "population.degree=4",
    "population.benefit=uniform:1:3",
    "population.harm=uniform:0:2",
    "population.wealth=uniform:50:150",
    "population.x_max=2.5",  # binds for some status-quo and shaded activities
    f"sim.rounds={ROUNDS}",
    "sim.seed=3",
    "mechanism.bargaining_power=0.3",
    "mechanism.discount_emitter=0.9",
    "mechanism.discount_victims=0.8",
]

# per_party, per_round, per_deal: the non-zero ones are large enough that part of the deals do not cover them
COSTS = {
    "free": (0.0, 0.0, 0.0),
    "per_party": (0.03, 0.0, 0.0),
    "per_round": (0.0, 0.03, 0.0),
    "per_deal": (0.0, 0.0, 0.3),
}


def make_cfg(mechanism="nash", rights="emitter", strategy="truthful", graph="ring", costs="free", extra=()):
    per_party, per_round, per_deal = COSTS[costs]
    strat = ["advocates.strategy=shade", "advocates.shade=0.3"] if strategy == "shade" else [
        f"advocates.strategy={strategy}"]
    return load_config(None, BASE + strat + [
        f"mechanism.kind={mechanism}",
        f"state.rights={rights}",
        f"population.graph={graph}",
        f"state.transaction_costs.per_party={per_party}",
        f"state.transaction_costs.per_round={per_round}",
        f"state.transaction_costs.per_deal={per_deal}",
        *extra,
    ])


@functools.lru_cache(maxsize=None)
def compiled(mechanism, strategy, graph, extra=()):
    """The engine compiled for one combination of static choices (traced parameters are swapped in per case)."""
    return build(make_cfg(mechanism, "emitter", strategy, graph, "free", extra))


def run_engine(cfg, extra=()):
    """The engine's summary and final wealth ``f64[E, N]``, running the chunks as :func:`coasejax.simulate.run` does."""
    base = compiled(cfg.mechanism.kind, cfg.advocates.strategy, cfg.population.graph, tuple(extra))
    sim = dataclasses.replace(base, cfg=cfg, params=coase.EnvParams.from_config(cfg))
    state = jax.tree.map(jnp.copy, sim.state)  # the runner donates its state argument
    first = jax.device_get(state)
    chunks = []
    for _ in range(cfg.sim.rounds // sim.chunk):
        state, m = sim.runner(sim.keys, state, sim.params)
        chunks.append(m)
    last = jax.device_get(state)
    final_wealth = np.asarray(last.pop.wealth, np.float64)
    per_round = {f: np.concatenate([np.asarray(getattr(c, f), np.float64) for c in chunks], axis=1)
                 for f in coase.RoundMetrics._fields}
    summary = summarise(cfg, sim.params, per_round, first, last)
    return summary, final_wealth


def assert_matches(engine: dict, ref: dict, engine_wealth: np.ndarray, case: str = "") -> None:
    """Totals, deal counts and every agent's wealth agree within the float32 tolerances derived above
    :data:`GENERATED_TOTALS` (see :func:`compare_generated`)."""
    compare_generated(engine, ref, engine_wealth, None, case)


# small-world graphs (explicit gathers instead of rolls) are cross-checked under every layer by the generated groups
# below and by test_public_simulate_entry_point_matches_reference; here every mechanism runs on the ring
@pytest.mark.parametrize("costs", list(COSTS))
@pytest.mark.parametrize("graph", ["ring"])
@pytest.mark.parametrize("strategy", ["truthful", "shade"])
@pytest.mark.parametrize("rights", ["emitter", "victim"])
@pytest.mark.parametrize("mechanism", ["nash", "lindahl", "alternating", "clarke"])
def test_engine_matches_plain_python_reference(mechanism, rights, strategy, graph, costs):
    cfg = make_cfg(mechanism, rights, strategy, graph, costs)
    engine, wealth = run_engine(cfg)
    ref = simulate_reference(cfg)
    assert_matches(engine, ref, wealth[0], f"{mechanism}/{rights}/{strategy}/{graph}/{costs}")


@pytest.mark.parametrize("rights", ["emitter", "victim"])
def test_alternating_offers_with_victims_first_and_short_horizon_match_reference(rights):
    extra = ("mechanism.first_mover=victims", "mechanism.horizon=5")
    for costs in ("free", "per_round"):
        cfg = make_cfg("alternating", rights, "truthful", "ring", costs, extra)
        engine, wealth = run_engine(cfg, extra)
        ref = simulate_reference(cfg)
        assert_matches(engine, ref, wealth[0], f"alternating victims-first/{rights}/{costs}")


def test_public_simulate_entry_point_matches_reference():
    cfg = make_cfg("nash", "victim", "shade", "small_world", "per_deal")
    engine = simulate(cfg)
    ref = simulate_reference(cfg)
    assert ref["near_ties"] == 0
    tol = {k: (N_AGENTS + 16) * U * ref["scale"][k] for k in GENERATED_TOTALS}  # derived above GENERATED_TOTALS
    bad = [k for k in GENERATED_TOTALS if not abs(engine[k] - ref[k]) <= tol[k]]
    assert not bad, {k: (engine[k], ref[k], tol[k]) for k in bad}
    assert round(engine["deal_rate"] * N_AGENTS * ROUNDS) == round(ref["deal_rate"] * N_AGENTS * ROUNDS)


def test_reference_reproduces_each_environment_of_a_batch():
    cfg = make_cfg("clarke", "emitter", "truthful", "ring", "per_party", ("sim.envs=2",))
    sim = build(cfg)
    state = jax.tree.map(jnp.copy, sim.state)
    for _ in range(cfg.sim.rounds // sim.chunk):
        state, _ = sim.runner(sim.keys, state, sim.params)
    wealth = np.asarray(state.pop.wealth, np.float64)
    for env in (0, 1):
        ref = simulate_reference(cfg, env=env)
        tol = 64 * U * np.asarray(ref["wealth_scale"])  # derived above GENERATED_TOTALS
        assert np.all(np.abs(wealth[env] - np.asarray(ref["wealth"])) <= tol), f"env {env}"
    assert not np.allclose(wealth[0], wealth[1])  # the environments really differ


@pytest.mark.parametrize("costs", ["per_party", "per_round", "per_deal"])
@pytest.mark.parametrize("rights", ["emitter", "victim"])
def test_transaction_costs_in_the_cross_check_make_part_of_the_deals_fail(rights, costs):
    ref = simulate_reference(make_cfg("nash", rights, "truthful", "ring", costs))
    assert 0.0 < ref["deal_rate"] < 1.0
    free = simulate_reference(make_cfg("nash", rights, "truthful", "ring", "free"))
    assert ref["deal_rate"] < free["deal_rate"]


def test_reference_reports_timing_and_final_wealth():
    ref = simulate_reference(make_cfg())
    assert len(ref["wealth"]) == N_AGENTS
    assert ref["seconds"] > 0
    assert ref["agent_steps_per_second"] == pytest.approx(N_AGENTS * ROUNDS / ref["seconds"])


def test_reference_compatible_switches_off_the_draws_for_the_bench():
    """The bench's same-work copy: no enforcement draws, no drift, no equilibrium pledges; the original untouched."""
    cfg = make_cfg("assurance", strategy="best_response", extra=("state.enforcement=0.9", "population.drift=0.05"))
    out = reference_compatible(cfg)
    assert (out.state.enforcement, out.population.drift, out.advocates.strategy) == (1.0, 0.0, "truthful")
    assert (cfg.state.enforcement, cfg.population.drift, cfg.advocates.strategy) == (0.9, 0.05, "best_response")
    shade = reference_compatible(make_cfg(strategy="shade"))
    assert shade.advocates.strategy == "shade"


@pytest.mark.parametrize("mechanism, extra, match", [
    ("nash", ("mechanism.pooling=true",), "pooling"),
    ("nash", ("advocates.strategy=best_response",), "best_response"),
    ("alternating", ("advocates.strategy=best_response",), "best_response"),
])
def test_reference_rejects_what_it_does_not_model(mechanism, extra, match):
    with pytest.raises(ValueError, match=match):
        simulate_reference(make_cfg(mechanism, extra=extra))


# ----------------------------------------------------------------------------------------------------------------------
# Generated settings: rule layers, providers and fees, enforcement, drift, assurance contracts
# ----------------------------------------------------------------------------------------------------------------------
#
# Each group fixes the engine's static switches (mechanism and protocols, strategy, graph, which layers are on) and is
# compiled once; its settings draw every traced parameter (rights, costs, the floor, caps, tax, enforcement, drift,
# shade, fees, conduct, skill, switching, threshold, refund bonus), the distributions of types, wealth and individual
# traits, and the seed (so the population, the graph of small-world groups and every random draw differ) from a
# seeded generator.
#
# Tolerances (float32 engine against a float64 reference; unit roundoff u = 2^-24 ≈ 6.0e-8):
# * a per-agent term (a benefit, a payment, a cost) comes out of a chain of at most ~16 float32 operations on terms
#   no larger than the bargain's scale, so it carries a rounding error ≤ 16 u · scale; a round total is a float32 sum
#   of N such terms (error ≤ N u · Σ|terms| for any summation order). So a total may differ by (N + 16) u · S, with S
#   the sum of the absolute values of its terms over agents and rounds, which the reference reports (``scale``).
# * an agent's wealth is its initial wealth plus, each round, a float32 sum of at most k + 5 flows (as emitter, as
#   each victim, the tax and its recycling, the fee), each within 16 u of its bargain's scale: it may differ by
#   64 u · (|m_0| + Σ (|flow| + scale)), the reference's ``wealth_scale`` (a factor 4 over 16 u for the k + 5 adds;
#   a lump-sum share counts the whole revenue, whose float32 sum carries N u · revenue, u · revenue per share; a fee
#   counts its share of the flows its gain is made of).
# * random draws are the engine's (enforcement, drift, switching words; assurance pledge uniforms), taken by the
#   documented rules with the keys of ``simulate.build`` and ``scenarios.rollout``: the reference shares the draws and
#   nothing they decide.
# * discrete decisions (attempts, vetoes, pledges, deal counts, providers chosen) must agree exactly; a setting in
#   which some decision lies within float32 rounding of its threshold (``near_ties``, relative window 1e-6, about 16
#   roundings) may go either way in the engine, and a flipped decision moves whole payments, so such a setting is
#   checked on its deal count only (it may differ by at most the near ties), and each group must check at least 90%
#   of its settings agent by agent (a design floor, so that the cross-check cannot pass by skipping).

U = 2.0 ** -24
GENERATED_TOTALS = ("welfare", "first_best_welfare", "status_quo_welfare", "mean_activity", "transfers",
                    "transaction_costs_paid", "mechanism_net", "tax_revenue", "fees", "refunds_paid")
SETTINGS_PER_GROUP = 36


def _u(rng, lo, hi, digits=3):
    return round(float(rng.uniform(lo, hi)), digits)


def _dist(lo, hi):
    return f"uniform:{lo}:{hi}"


def _per_provider(rng, count, lo, hi):
    return "[" + ", ".join(str(_u(rng, lo, hi)) for _ in range(count)) + "]"


def _common(rng):
    """Traced parameters every group draws: rights, costs, the floor, bargaining, types and wealth, the seed."""
    a_lo = _u(rng, 0.5, 2.0)
    w_lo = _u(rng, 0.0, 30.0)
    w_hi = round(w_lo + _u(rng, 2.0, 60.0), 3) if rng.random() < 0.75 else _u(rng, 0.2, 1.0)  # or a poor population
    w_lo = w_lo if w_hi > w_lo else 0.0
    return [
        f"state.rights={rng.choice(['emitter', 'victim'])}",
        f"state.transaction_costs.per_party={_u(rng, 0.0, 0.02)}",
        f"state.transaction_costs.per_round={_u(rng, 0.0, 0.015)}",
        f"state.transaction_costs.per_deal={_u(rng, 0.0, 0.15)}",
        f"state.tc_floor={_u(rng, 0.0, 0.15)}",
        f"mechanism.bargaining_power={_u(rng, 0.0, 1.0)}",
        f"mechanism.discount_emitter={_u(rng, 0.5, 0.99)}",
        f"mechanism.discount_victims={_u(rng, 0.5, 0.99)}",
        f"population.benefit={_dist(a_lo, round(a_lo + _u(rng, 0.5, 2.5), 3))}",
        f"population.harm={_dist(0.0, _u(rng, 0.5, 2.0))}",
        f"population.wealth={_dist(w_lo, w_hi)}",
        f"population.x_max={_u(rng, 1.5, 3.5)}",
        f"sim.seed={int(rng.integers(0, 2**31 - 1))}",
    ]


def _draws(rng):
    return [f"state.enforcement={_u(rng, 0.5, 0.99)}", f"population.drift={_u(rng, 0.01, 0.25)}"]


def _state_layer(rng):
    return [f"state.activity_cap={_u(rng, 0.3, 2.5)}", f"state.cap_share={_u(rng, 0.1, 0.9)}",
            f"state.pigou_tax={_u(rng, 0.05, 0.8)}"]


def _individual(rng):
    return [f"individual.red_line={_dist(_u(rng, 0.2, 1.5), _u(rng, 2.0, 6.0))}",
            f"individual.reservation={_dist(_u(rng, -0.3, 0.0), _u(rng, 0.0, 0.3))}",
            f"individual.altruism={_dist(0.0, _u(rng, 0.1, 1.0))}",
            f"individual.budget_share={_dist(_u(rng, 0.05, 0.5), 1.0)}"]


def _providers(rng, count, fees=True):
    out = [f"providers.conduct={_per_provider(rng, count, 0.0, 0.6)}",
           f"providers.shade={_per_provider(rng, count, 0.0, 0.6)}",
           f"providers.skill={_per_provider(rng, count, -1.0, 1.0)}",
           f"providers.switching_rate={_u(rng, 0.1, 0.9)}",
           f"providers.inertia={_u(rng, 0.0, 0.5)}",
           f"providers.temperature={_u(rng, 0.05, 1.0)}",
           f"providers.memory={_u(rng, 0.0, 0.95)}"]
    if fees:
        out += [f"providers.fee={_per_provider(rng, count, 0.01, 0.4)}",
                f"providers.fee_flat={_per_provider(rng, count, 0.01, 0.3)}"]
    return out


def _assurance(rng):
    """Threshold and refund bonus. The threshold avoids m = ⌈θk⌉ = k/2: there an interior victim's value of the
    abatement, ``w ĉ Δ``, equals its price ``L̂ (ĉ/Σĉ)(k/m) = w ĉ Δ k/(2m)`` exactly (``L̂ = Ĉ Δ/2``), a tie that a
    float32 engine decides by rounding (every interior bargain is a near tie)."""
    theta = _u(rng, 0.1, 0.25) if rng.random() < 0.3 else _u(rng, 0.51, 1.0)
    return [f"mechanism.threshold={theta}", f"mechanism.refund_bonus={_u(rng, 0.0, 0.6)}"]


#: name -> (static overrides, traced overrides drawn per setting, the rules its settings must exercise somewhere)
GROUPS = {
    # every layer at once: 3 providers running three protocols, fees, conduct, skill and switching; caps, a lump-sum
    # tax, the budget rule and the floor; red lines, reservations, altruism, budget shares; enforcement and drift
    "all_layers_shade": (
        ["mechanism.kind=nash", "advocates.strategy=shade", "population.graph=ring", "providers.count=3",
         "providers.protocol=[nash, alternating, clarke]", "state.budget_rule=true", "state.tax_recycling=lump_sum"],
        lambda rng: _common(rng) + _draws(rng) + _state_layer(rng) + _individual(rng) + _providers(rng, 3),
        ("cap", "budget_alone", "red_line", "conduct", "veto_budget", "veto_reservation", "breach", "switch",
         "fee_capped")),
    # the tax paid to the victims; lindahl, a provider whose emitters do not bargain and assurance contracts; a
    # small-world graph
    "all_layers_truthful_tax_to_victims": (
        ["mechanism.kind=lindahl", "advocates.strategy=truthful", "population.graph=small_world",
         "providers.count=3", "providers.protocol=[lindahl, none, assurance]", "state.budget_rule=true",
         "state.tax_recycling=victims"],
        lambda rng: _common(rng) + _draws(rng) + _state_layer(rng) + _individual(rng) + _providers(rng, 3)
        + _assurance(rng),
        ("cap", "budget_alone", "red_line", "veto_budget", "veto_reservation", "breach", "switch",
         "failed_contract", "fee_capped")),
    # assurance with shading victims under the state and individual layers and two providers (no fees)
    "assurance_shade_layers": (
        ["mechanism.kind=assurance", "advocates.strategy=shade", "population.graph=small_world",
         "providers.count=2", "state.budget_rule=true"],
        lambda rng: _common(rng) + _draws(rng) + _assurance(rng) + _state_layer(rng) + _individual(rng)
        + _providers(rng, 2, fees=False),
        ("cap", "conduct", "veto_budget", "veto_reservation", "breach", "switch", "failed_contract")),
    # equilibrium play: assurance pledges, unanimous (deterministic) and below unanimity (mixed, on the engine's
    # pledge uniforms), lindahl's equilibrium prices and clarke's truth, under caps and a tax
    "best_response": (
        ["mechanism.kind=assurance", "advocates.strategy=best_response", "population.graph=ring",
         "providers.count=3", "providers.protocol=[assurance, lindahl, clarke]", "state.budget_rule=true"],
        lambda rng: _common(rng) + _draws(rng) + _assurance(rng) + _state_layer(rng),
        ("cap", "veto_budget", "breach", "failed_contract", "refund", "mixed_pledges")),
    # refund bonuses of failed contracts with provider fees on the realised gain
    "assurance_fees": (
        ["mechanism.kind=assurance", "advocates.strategy=best_response", "population.graph=ring", "providers.count=2"],
        lambda rng: _common(rng) + _assurance(rng) + [
            f"providers.fee={_per_provider(rng, 2, 0.05, 0.5)}", f"providers.fee_flat={_u(rng, 0.0, 0.05)}"],
        ("refund", "fee_capped")),
}
#: groups on which the engine is known to be wrong (xfail, strict), with the reason; none at present
ENGINE_BUGS: dict[str, str] = {}


def generated_cfg(static, traced):
    return load_config(None, BASE + list(static) + list(traced))


@functools.lru_cache(maxsize=None)
def compiled_group(name):
    static, traced, _ = GROUPS[name]
    return build(generated_cfg(static, traced(np.random.default_rng(0))))


def run_generated(sim, cfg):
    """The engine on ``cfg`` with the runner compiled for its group: a fresh graph, populations, individual traits and
    run keys for ``cfg``'s seed (the same keys as :func:`coasejax.simulate.build`), and ``cfg``'s traced parameters.
    Returns its summary, final wealth ``f64[N]`` and final providers ``i32[N]``."""
    p = cfg.population
    graph = make_graph(p.graph, p.n_agents, p.degree, cfg.sim.seed, p.rewire)
    params = coase.EnvParams.from_config(cfg, graph)
    k_pop, k_run = jax.random.split(jax.random.PRNGKey(cfg.sim.seed))
    keys = jax.random.split(k_run, cfg.sim.envs)
    state = jax.vmap(lambda key: coase.reset(key, params))(jax.random.split(k_pop, cfg.sim.envs))
    # what reset draws (static, differing per setting) is read by reset alone, not by the compiled runner
    params = params.replace(draws=sim.params.draws)
    sim = dataclasses.replace(sim, cfg=cfg, params=params, state=state, keys=keys)
    first = jax.device_get(state)
    chunks = []
    for _ in range(cfg.sim.rounds // sim.chunk):
        state, m = sim.runner(keys, state, params)
        chunks.append(m)
    last = jax.device_get(state)
    final = np.asarray(last.pop.wealth, np.float64)
    per_round = {f: np.concatenate([np.asarray(getattr(c, f), np.float64) for c in chunks], axis=1)
                 for f in coase.RoundMetrics._fields}
    summary = summarise(cfg, params, per_round, first, last)
    return summary, final[0], np.asarray(last.pop.provider)[0]


def compare_generated(engine, ref, wealth, provider, case):
    """``None`` when engine and reference agree within the tolerances above, else what differs."""
    steps = ref["n_agents"] * ref["rounds"]
    counts = {f: (round(engine[f] * steps), round(ref[f] * steps)) for f in ("deal_rate", "attempt_rate")}
    if ref["near_ties"]:
        diff = abs(counts["deal_rate"][0] - counts["deal_rate"][1])
        assert diff <= ref["near_ties"], f"{case}: {diff} deals apart with {ref['near_ties']} near ties"
        return "near ties"
    bad = [f"{f}: engine {e} vs reference {r}" for f, (e, r) in counts.items() if e != r]
    n = ref["n_agents"]
    for f in GENERATED_TOTALS:
        tol = (n + 16) * U * ref["scale"][f]
        if not abs(engine[f] - ref[f]) <= tol:
            bad.append(f"{f}: engine {engine[f]!r} vs reference {ref[f]!r} (tolerance {tol:.3g})")
    tol = 64 * U * np.asarray(ref["wealth_scale"])
    off = np.flatnonzero(~(np.abs(wealth - np.asarray(ref["wealth"])) <= tol))
    if off.size:
        i = off[0]
        bad.append(f"wealth of {off.size} agents, e.g. agent {i}: engine {wealth[i]!r} vs reference "
                   f"{ref['wealth'][i]!r} (tolerance {tol[i]:.3g})")
    moved = np.flatnonzero(provider != np.asarray(ref["provider"])) if provider is not None else []
    if len(moved):
        bad.append(f"provider of {moved.size} agents, e.g. agent {moved[0]}: engine {provider[moved[0]]} vs "
                   f"reference {ref['provider'][moved[0]]}")
    assert not bad, f"{case}: " + "; ".join(bad)
    return None


@pytest.mark.parametrize("group", [pytest.param(g, marks=pytest.mark.xfail(strict=True, reason=ENGINE_BUGS[g]))
                                   if g in ENGINE_BUGS else g for g in GROUPS])
def test_engine_matches_reference_on_generated_settings(group):
    """Every agent's final wealth and provider, every total and the deal and attempt counts, on
    ``SETTINGS_PER_GROUP`` settings drawn per group (one compilation each); the settings must exercise the group's
    rules (each binds in some setting) and reach deals."""
    static, traced, rules = GROUPS[group]
    sim = compiled_group(group)
    rng = np.random.default_rng(list(GROUPS).index(group) + 1)
    skipped, deals = 0, 0
    seen = dict.fromkeys(rules, 0)
    for s in range(SETTINGS_PER_GROUP):
        overrides = traced(rng)
        cfg = generated_cfg(static, overrides)
        engine, wealth, provider = run_generated(sim, cfg)
        ref = simulate_reference(cfg)
        skipped += compare_generated(engine, ref, wealth, provider, f"{group} #{s} {overrides}") is not None
        deals += ref["deal_rate"] > 0
        for r in rules:
            seen[r] += ref["exercised"][r]
    assert skipped <= 0.1 * SETTINGS_PER_GROUP, f"{group}: {skipped} settings with near ties"
    assert deals >= SETTINGS_PER_GROUP // 4, f"{group}: deals in only {deals} settings"
    assert all(seen.values()), f"{group}: rules never exercised: {[r for r, v in seen.items() if not v]}"


@pytest.mark.parametrize("v, p, f", [(1.0, 0.5, 0.0), (2.0, 0.7, 0.0), (1.0, 0.9, 0.0), (1.0, 0.5, 0.2)])
def test_reference_mixed_pledge_probability_is_the_closed_form_root(v, p, f):
    """k = 3 victims, m = 2 pledges: with X ~ Binomial(2, q) the advantage of pledging is
    ``(v − p)(1 − (1 − q)²) + f (1 − q)² − v q²``. Without a bonus it is ``q [2(v − p) − q(2v − p)]``, whose root in
    (0, 1) is ``q* = 2(v − p)/(2v − p)``; with a bonus the quadratic ``(f − 2v + p) q² + 2(v − p − f) q + f`` has the
    root ``(−B − √(B² − 4Af))/(2A)``. Double precision: agreement to 1e-9 (a root of a well-conditioned quadratic)."""
    from coasejax.reference import _mixed_pledge_probability

    a_, b_ = f - 2 * v + p, 2 * (v - p - f)
    expected = 2 * (v - p) / (2 * v - p) if f == 0 else (-b_ - math.sqrt(b_ * b_ - 4 * a_ * f)) / (2 * a_)
    assert 0 < expected < 1
    assert _mixed_pledge_probability(3, 2, v, p, f) == pytest.approx(expected, abs=1e-9)
