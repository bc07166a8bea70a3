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


@pytest.mark.parametrize("mech", MECHS)
def test_money_is_conserved(run, mech):
    s = run(mechanism__kind=mech, state__transaction_costs__per_party=0.01, state__transaction_costs__per_round=0.01,
            state__transaction_costs__per_deal=0.05, state__enforcement=0.8, population__drift=0.1,
            advocates__strategy="shade", population__graph="small_world", sim__rounds=5,
            population__wealth="lognormal:3:1")
    assert s["money_residual_rel"] < 1e-5
    accounted = -(s["transaction_costs_paid"] + s["mechanism_net"])
    assert s["wealth_change"] == pytest.approx(accounted, rel=1e-4, abs=1e-2)
    assert 0 < s["breach_rate"] < 0.4


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
