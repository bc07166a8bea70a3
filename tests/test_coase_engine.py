"""The population engine: Coase invariance, transaction-cost thresholds, free-riding, money, determinism."""

import numpy as np
import pytest

from coasejax.mechanisms.lindahl import free_riding_efficiency
from coasejax.simulate import build, run

MECHS = ["nash", "lindahl", "alternating", "clarke"]


@pytest.mark.parametrize("mech", MECHS)
def test_coase_invariance_zero_costs_truthful(run, mech):
    """Zero transaction costs + truthful advocates: efficient under both rights, same activity, transfers flip."""
    s = {r: run(mechanism__kind=mech, state__rights=r, population__graph="random") for r in ("emitter", "victim")}
    for r in s:
        assert s[r]["efficiency"] >= 0.999
        assert s[r]["welfare_ratio"] >= 0.999
    assert s["emitter"]["mean_activity"] == pytest.approx(s["victim"]["mean_activity"], rel=1e-6)
    assert s["emitter"]["mean_activity"] == pytest.approx(s["emitter"]["first_best_mean_activity"], rel=1e-6)
    assert s["emitter"]["transfers"] > 0 > s["victim"]["transfers"]


@pytest.mark.parametrize("rights", ["emitter", "victim"])
def test_deal_forms_exactly_when_surplus_covers_the_per_deal_cost(run, rights):
    """Constant types a = 3, c = 1 (C = 1): surplus C²/2 = 0.5 (emitter's right) or (a − C)²/2 = 2 (victim's)."""
    surplus = 0.5 if rights == "emitter" else 2.0
    for cost, expect_deal in [(0.0, True), (surplus * 0.98, True), (surplus * 1.02, False), (surplus * 3, False)]:
        s = run(population__benefit="constant:3", population__harm="constant:1", state__rights=rights,
                state__transaction_costs__per_deal=cost)
        assert s["deal_rate"] == (1.0 if expect_deal else 0.0), (cost, s["deal_rate"])
        if expect_deal:
            # each deal burns exactly its cost
            assert s["transaction_costs_paid"] == pytest.approx(cost * 2000 * 3, rel=1e-5, abs=1e-6)
            assert s["mean_activity"] == pytest.approx(2.0, rel=1e-6)
        else:
            assert s["mean_activity"] == pytest.approx(3.0 if rights == "emitter" else 0.0)
            assert s["efficiency"] == pytest.approx(0.0, abs=1e-9)


def test_same_cost_different_rights_different_outcome(run):
    """With per_deal = 1 (between C²/2 = 0.5 and (a − C)²/2 = 2) who holds the right decides the activity."""
    common = dict(population__benefit="constant:3", population__harm="constant:1", state__transaction_costs__per_deal=1)
    er, vr = run(state__rights="emitter", **common), run(state__rights="victim", **common)
    assert er["mean_activity"] == pytest.approx(3.0) and vr["mean_activity"] == pytest.approx(2.0)


@pytest.mark.parametrize("rights", ["emitter", "victim"])
def test_lindahl_free_riding_worsens_with_victims_per_emitter(run, rights):
    """Best-responding victims (free-riding pledges, hold-out asks): efficiency = (2k + 1)/(k + 1)², falling in k."""
    effs = []
    for k in (1, 2, 4, 8):
        s = run(mechanism__kind="lindahl", advocates__strategy="best_response", population__degree=k,
                population__benefit="constant:5", population__harm="constant:2", state__rights=rights)
        assert s["efficiency"] == pytest.approx(free_riding_efficiency(k), rel=1e-4)
        effs.append(s["efficiency"])
    assert all(a > b for a, b in zip(effs, effs[1:]))


def test_uniform_shading_costs_one_minus_shade_squared_whatever_the_group_size(run):
    """Uniform shading s of Lindahl pledges leaves x = a − (1 − s)C: efficiency 1 − s² for every k (emitter's
    right). Free-riding that grows with the group needs best-responding advocates (test above)."""
    for k in (1, 4, 8):
        s = run(mechanism__kind="lindahl", advocates__strategy="shade", advocates__shade=0.3, population__degree=k,
                population__benefit="constant:5", population__harm="constant:2")
        assert s["efficiency"] == pytest.approx(1 - 0.3**2, rel=1e-4)


@pytest.mark.parametrize("mech", [*MECHS, "assurance"])
def test_money_is_conserved_and_budget_balanced_mechanisms_take_nothing(run, mech):
    """The wealth actually stored changes by exactly the flows, each summed from its own source; a budget-balanced
    mechanism's net intake is 0.

    Tolerances (float32): each agent's stored wealth (a float32 pair) changes exactly up to 2⁻⁴⁷ of its wealth
    (~1e-12 at wealth ~100) and each bargain's payments differ from the emitter's receipt by at most ~k roundings
    of its size (k·2⁻²⁴ relative): both far below 1e-5 of the gross flows, while one unit paid per deal out of nowhere
    is ~1e-2 of them."""
    s = run(mechanism__kind=mech, state__transaction_costs__per_party=0.01, state__transaction_costs__per_round=0.01,
            state__transaction_costs__per_deal=0.05, state__enforcement=0.8, population__drift=0.1,
            advocates__strategy="shade", population__graph="small_world", sim__rounds=5,
            population__wealth="lognormal:3:1", state__pigou_tax=0.2, providers__count=2, providers__fee="[0.1, 0.2]")
    assert s["money_residual_rel"] < 1e-5
    accounted = (s["transfers"] - s["paid_by_victims"] - s["transaction_costs_paid"] - s["tax_revenue"]
                 + s["tax_recycled"] - s["fees"])
    assert s["wealth_change"] == pytest.approx(accounted, abs=1e-5 * s["money_gross"])
    assert s["tax_recycled"] == pytest.approx(s["tax_revenue"], rel=1e-5) and s["tax_revenue"] > 0
    assert s["fees"] > 0 and s["transaction_costs_paid"] > 0
    assert 0 < s["breach_rate"] < 0.4
    assert s["mechanism_budget_balanced"] == (mech != "clarke")
    if mech != "clarke":
        assert abs(s["mechanism_net"]) <= 1e-5 * s["money_gross"], s["mechanism_net"]
    else:
        assert s["mechanism_net"] < -0.01 * s["money_gross"]  # the pivot mechanism runs a deficit


@pytest.mark.parametrize("rights", ["emitter", "victim"])
def test_clarke_deficit_matches_its_closed_form(run, rights):
    """Truthful Clarke with interior first bests (a ∈ [3, 4], C = w Σ c ≤ 2, x_max = 10): the net intake of every
    bargain is :func:`clarke_net_intake_closed_form` of its victims' true harms, summed over emitters and rounds.
    Tolerance 1e-4 relative: float32 sums of O(1) terms over 2000 agents."""
    import jax

    from coasejax.envs import coase
    from coasejax.graphs import make_graph
    from coasejax.mechanisms.clarke import clarke_net_intake_closed_form
    from tests.conftest import make_cfg

    kw = dict(mechanism__kind="clarke", state__rights=rights, population__benefit="uniform:3:4",
              population__harm="uniform:0:2", population__graph="random")
    s = run(**kw)
    cfg = make_cfg(**kw)
    p = cfg.population
    graph = make_graph(p.graph, p.n_agents, p.degree, cfg.sim.seed, p.rewire)
    k_pop, _ = jax.random.split(jax.random.PRNGKey(cfg.sim.seed))
    pop = coase.reset(jax.random.split(k_pop, cfg.sim.envs)[0], coase.EnvParams.from_config(cfg, graph)).pop
    a, c = np.asarray(pop.a, np.float64), np.asarray(pop.c, np.float64)
    nbrs = np.asarray(graph.neighbours())
    expected = sum(clarke_net_intake_closed_form(a[i], p.w * c[nbrs[i]], rights == "emitter")
                   for i in range(p.n_agents)) * cfg.sim.rounds
    assert expected < 0
    assert s["mechanism_net"] == pytest.approx(expected, rel=1e-4)
    assert s["money_residual_rel"] < 1e-5


@pytest.mark.parametrize("tax_to_victims", [False, True])
def test_settlement_routes_every_payment_to_its_payer_agent_by_agent(tax_to_victims):
    """:func:`coasejax.envs.accounting.settle` against a plain loop over emitters and their victims (float64):
    emitter i receives T_i and pays its costs and tax; the victim in slot s of emitter i pays p_{i,s} and its costs,
    and receives τ x_i / k (or everyone gets the lump sum). Tolerance: float32 sums of ≤ k + 3 terms of size ≤ 3."""
    import jax
    import jax.numpy as jnp

    from coasejax.envs.accounting import accounted_change, settle
    from coasejax.graphs import make_graph

    n, k = 500, 4
    graph = make_graph("random", n, k, 0)
    rng = np.random.default_rng(0)
    t, tc_e, tax = rng.normal(size=n), rng.uniform(0, 0.1, n), rng.uniform(0, 2, n)
    p, tc_v = rng.normal(size=(k, n)), rng.uniform(0, 0.1, (k, n))
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    d, outflow, flows = jax.jit(settle, static_argnums=(6,))(graph, f32(t), f32(p), f32(tc_e), f32(tc_v), f32(tax),
                                                             tax_to_victims)
    expected = t - tc_e - tax + (0.0 if tax_to_victims else tax.sum() / n)
    nbrs = np.asarray(graph.neighbours())
    for i in range(n):
        for s in range(k):
            expected[nbrs[i, s]] -= p[s, i] + tc_v[s, i] - (tax[i] / k if tax_to_victims else 0.0)
    np.testing.assert_allclose(np.asarray(d), expected, atol=1e-5)
    totals = {f: float(getattr(flows, f)) for f in ("to_emitters", "from_victims", "transaction_costs", "tax_paid",
                                                    "tax_recycled", "fees")}
    assert totals["to_emitters"] == pytest.approx(t.sum(), abs=1e-3)
    assert totals["from_victims"] == pytest.approx(p.sum(), abs=1e-3)
    assert totals["transaction_costs"] == pytest.approx(tc_e.sum() + tc_v.sum(), abs=1e-3)
    assert totals["tax_paid"] == pytest.approx(tax.sum(), abs=1e-3)
    assert totals["tax_recycled"] == pytest.approx(tax.sum(), abs=1e-3)
    assert float(np.asarray(d, np.float64).sum()) == pytest.approx(accounted_change(**totals), abs=1e-2)


def test_enforcement_breaches_revert_to_status_quo(run):
    s = run(state__enforcement=0.7, sim__rounds=4)
    assert s["breach_rate"] == pytest.approx(0.3, abs=4 * np.sqrt(0.3 * 0.7 / (2000 * 4)))
    assert s["efficiency"] == pytest.approx(0.7, abs=0.03)


def test_same_seed_same_numbers_other_seed_other_numbers(run):
    kw = dict(state__enforcement=0.9, population__drift=0.1, sim__envs=2, population__graph="small_world")
    a, b, c = run(**kw), run(**kw), run(sim__seed=1, **kw)
    for key in ("welfare", "transfers", "deal_rate", "mean_activity", "transaction_costs_paid"):
        assert a[key] == b[key]
    assert a["welfare"] != c["welfare"]


def test_chunking_does_not_change_results():
    from tests.conftest import make_cfg

    cfg = make_cfg(sim__rounds=6, state__enforcement=0.9, population__drift=0.05)
    whole = run(build(cfg, chunk=6))
    chunked = run(build(cfg, chunk=2))
    for key in ("welfare", "transfers", "deal_rate", "mean_activity"):
        assert whole[key] == pytest.approx(chunked[key], rel=1e-6)


def test_types_drift_only_when_configured(run):
    fixed = run(sim__rounds=6)
    drifting = run(sim__rounds=6, population__drift=0.2)
    assert np.ptp(fixed["per_round"]["welfare"]) < 1e-6 * abs(fixed["welfare"])
    assert np.ptp(drifting["per_round"]["welfare"]) > 1e-3 * abs(drifting["welfare"]) / 6


def test_environments_are_independent_draws(run):
    s1 = run(sim__envs=1)
    s4 = run(sim__envs=4)
    assert s4["envs"] == 4
    assert s4["welfare"] == pytest.approx(s1["welfare"], rel=0.05)  # same distribution, different draws
    assert s4["welfare"] != s1["welfare"]


def test_round_words_are_uniform_and_uncorrelated_across_uses_agents_and_rounds():
    import jax

    from coasejax.population import round_words, unit_uniform

    n = 1 << 20
    w = round_words(jax.random.PRNGKey(3), 2, n)
    w_next = round_words(jax.random.PRNGKey(4), 2, n)
    assert w.shape == (2, n) and w.dtype == np.uint32
    u = np.asarray(unit_uniform(w, 24), np.float64)
    u_next = np.asarray(unit_uniform(w_next, 24), np.float64)
    se = 1 / np.sqrt(12 * n)  # standard error of a mean of n uniforms; 6 standard errors below
    assert abs(u[0].mean() - 0.5) < 6 * se and abs(u[1].mean() - 0.5) < 6 * se
    assert abs(u[0].var() - 1 / 12) < 6 / (12 * np.sqrt(n) / 0.9)
    # each of 16 equal bins holds 1/16 of the agents (chi-square with 15 d.o.f.: 99.99% quantile 44)
    counts = np.bincount((u[0] * 16).astype(int), minlength=16)
    assert ((counts - n / 16) ** 2 / (n / 16)).sum() < 44
    corr = lambda x, y: np.corrcoef(x, y)[0, 1]  # noqa: E731  (standard error 1/sqrt(n) ≈ 0.001)
    assert abs(corr(u[0], u[1])) < 0.006  # two uses in one round
    assert abs(corr(u[0][1:], u[0][:-1])) < 0.006  # neighbouring agents
    assert abs(corr(u[0], u_next[0])) < 0.006  # the same agent in the next round
    # the low bits (which decide a client's review) are as uniform as the high bits
    low = np.asarray(w[0] & 0xFFF, np.float64) / 4096
    assert abs(low.mean() - 0.5 + 0.5 / 4096) < 6 * se
    assert np.array_equal(np.asarray(w), np.asarray(round_words(jax.random.PRNGKey(3), 2, n)))  # deterministic
