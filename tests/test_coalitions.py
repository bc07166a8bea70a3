"""Coalitions of victims: assurance contracts against their closed forms (THEORY.md, "Public goods"), and the
coalition analytics of ``coasejax simulate`` (free riding, provision, harm internalised)."""

import importlib
import math

import jax.numpy as jnp
import numpy as np
import pytest

from coasejax.config import ConfigError, load_config
from coasejax.simulate import build, run, run_sweep

A = importlib.import_module("coasejax.mechanisms.assurance")  # the package exports the function of the same name


@pytest.mark.parametrize("k,m,v,p", [(10, 6, 1.0, 0.4), (5, 3, 1.0, 0.5), (20, 10, 1.0, 0.3)])
def test_mixed_equilibrium_without_bonus_matches_monte_carlo(k, m, v, p):
    """No bonus, threshold below the group: the code's symmetric mixed equilibrium q makes a victim indifferent
    between pledging and not, and its success probability P(Bin(k, q) ≥ m) matches a Monte Carlo estimate; both
    within 3 standard errors of 200,000 simulated groups."""
    q = float(A.mixed_pledge_probability(k, m, v, p, 0.0, grid=1024))
    assert 0.05 < q < 0.99
    assert abs(float(A.pledge_advantage(q, k, m, v, p, 0.0))) < 1e-5
    rng = np.random.default_rng(1)
    pledges = rng.random((200_000, k)) < q
    success = (pledges.sum(axis=1) >= m).astype(float)
    se = success.std() / np.sqrt(success.size)
    assert abs(success.mean() - float(A.success_probability(q, k, m))) < 3 * se
    others = pledges[:, 1:].sum(axis=1)  # victim 0's payoff from pledging minus from not, against the same others
    diff = np.where(others + 1 >= m, v - p, 0.0) - np.where(others >= m, v, 0.0)
    assert abs(diff.mean()) < 3 * diff.std() / np.sqrt(diff.size)


def test_mixed_equilibrium_is_vectorised_and_a_bonus_raises_pledging():
    v = jnp.array([1.0, 1.0, 1.0])
    p = jnp.array([0.4, 0.4, 0.9])
    f = jnp.array([0.0, 0.1, 0.0])
    q = A.mixed_pledge_probability(10, 6, v, p, f)
    for i in range(3):
        assert float(q[i]) == pytest.approx(float(A.mixed_pledge_probability(10, 6, float(v[i]), float(p[i]),
                                                                             float(f[i]))), abs=1e-6)
    assert float(q[1]) > float(q[0]) + 0.01  # the refund bonus makes pledging more attractive
    assert float(q[2]) < float(q[0])  # a dearer pledge, less pledging


def test_dominant_assurance_contract_every_victim_pledges():
    """With a bonus f > 0 and the threshold at the whole group, pledging is strictly dominant: from nobody pledging,
    one round of best responses has everybody pledge, and everybody pledging is a fixed point; without the bonus,
    nobody pledging is also an equilibrium (the coordination failure the bonus removes)."""
    k, v, p, f = 6, 1.0, 0.5, 0.1
    none = jnp.zeros((k, 1000), bool)
    assert bool(jnp.all(A.best_response(none, v, p, f, k)))
    assert bool(jnp.all(A.best_response(jnp.ones((k, 1000), bool), v, p, f, k)))
    assert not bool(jnp.any(A.best_response(none, v, p, 0.0, k)))
    assert float(A.mixed_pledge_probability(k, k, v, p, f)) == 1.0


def summary(**overrides):
    sets = {"population.n_agents": 20_000, "sim.rounds": 4, "state.rights": "emitter",
            "advocates.strategy": "best_response", "sim.coalitions": True, **overrides}
    return run(build(load_config("coase", [f"{k}={v}" for k, v in sets.items()])))


FREE = {"state.transaction_costs.per_party": 0.0, "state.transaction_costs.per_round": 0.0,
        "state.transaction_costs.per_deal": 0.0, "state.enforcement": 1.0, "population.drift": 0.0}


def test_dominant_assurance_contract_provides_the_good_in_the_engine():
    """At population scale with no transaction costs: every victim pledges, every efficient abatement is provided,
    nobody free-rides, efficiency 1."""
    s = summary(**{"mechanism.kind": "assurance", "mechanism.refund_bonus": 0.1, **FREE})
    assert s["participation_rate"] == pytest.approx(1.0, abs=1e-6)
    assert s["assurance_success_rate"] == pytest.approx(1.0, abs=1e-6)
    assert s["free_rider_share"] == pytest.approx(0.0, abs=1e-6)
    assert s["coalition_size_mean"] == pytest.approx(4.0, abs=1e-6)
    assert s["efficiency"] == pytest.approx(1.0, abs=1e-4)
    assert s["harm_internalised"] == pytest.approx(1.0, abs=1e-4)


def _lindahl_free_share(k: int, draws: int = 400_000) -> tuple[float, float]:
    """Free-rider share of the equilibrium voluntary contributions (:func:`equilibrium_reports` under the emitter's
    right) among k victims with iid lognormal(0, 0.5) harms, from an independent draw: the top m victims contribute,
    m the largest with v_(m) > Σ_top-m v/(m + 1); every deal abates, so every victim benefits and the k − m others
    free-ride. Returns the share E[k − m]/k and the SD of (k − m)/k per bargain."""
    v = -np.sort(-np.random.default_rng(k).lognormal(0.0, 0.5, (draws, k)), axis=1)
    m = np.arange(1, k + 1)
    contributors = (v > np.cumsum(v, axis=1) / (m + 1)).sum(axis=1)
    free = (k - contributors) / k
    return float(free.mean()), float(free.std())


def test_free_rider_share_rises_with_victims_per_emitter():
    """Voluntary contributions (lindahl, equilibrium pledges), no costs: more victims per emitter, more free riders,
    each share against the independent draw above. The engine's 20,000 bargains are the same in its 4 rounds (no
    drift), and two are dependent only if their victim sets meet: on a circulant graph with k offsets, at most
    k(k − 1) others. So SE ≤ sqrt((1 + k(k − 1))/20,000)·SD (plus the draw's own SE); allow 4 of those."""
    expected = []
    for k in (2, 4, 8):
        share, sd = _lindahl_free_share(k)
        expected.append(share)
        se = sd * np.sqrt((1 + k * (k - 1)) / 20_000) + sd / np.sqrt(400_000)
        got = summary(**{"mechanism.kind": "lindahl", "population.degree": k, **FREE})["free_rider_share"]
        assert got == pytest.approx(share, abs=4 * se), (k, got, share)
    assert expected[0] < expected[1] < expected[2], expected  # theory: free riding rises with k


def test_assurance_beats_voluntary_contributions_at_the_same_costs():
    """The coase preset's transaction costs under the emitter's right: a dominant assurance contract is more
    efficient than voluntary contributions, and has fewer free riders."""
    lindahl = summary(**{"mechanism.kind": "lindahl"})
    dac = summary(**{"mechanism.kind": "assurance", "mechanism.refund_bonus": 0.1})
    assert dac["efficiency"] > lindahl["efficiency"] + 0.3, (dac["efficiency"], lindahl["efficiency"])
    assert dac["free_rider_share"] < lindahl["free_rider_share"] - 0.3


@pytest.mark.parametrize("kind", ["clarke", "assurance"])
def test_efficiency_rises_to_one_as_transaction_costs_fall(kind):
    """The discovery cost per party falling from 0.05 to 0 (no other costs, enforcement 1, no drift), under both
    rights regimes: efficiency rises monotonically and reaches 1 within 1e-4."""
    sets = {"population.n_agents": 20_000, "sim.rounds": 4, "state.rights": "emitter", "advocates.strategy":
            "best_response", "mechanism.kind": kind, "mechanism.refund_bonus": 0.1, **FREE}
    cfg = load_config("coase", [f"{k}={v}" for k, v in sets.items()])
    costs = [0.05, 0.005, 0.0005, 0.0]  # one compiled sweep over the costs and both rights regimes
    cfg.sweep = {"state.transaction_costs.per_party": costs, "state.rights": ["emitter", "victim"]}
    rows = run_sweep(build(cfg))
    for rights in ("emitter", "victim"):
        effs = [next(r["efficiency"] for r in rows if r["setting"] == {"state.transaction_costs.per_party": c,
                                                                        "state.rights": rights}) for c in costs]
        assert all(b > a for a, b in zip(effs, effs[1:])), (rights, effs)
        assert effs[-1] == pytest.approx(1.0, abs=1e-4), rights


@pytest.mark.parametrize("key,value", [("mechanism.threshold", 0.0), ("mechanism.threshold", 1.5),
                                       ("mechanism.refund_bonus", -0.1)])
def test_bad_assurance_settings_are_refused(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("coase", [f"{key}={value}", "mechanism.kind=assurance"])


@pytest.mark.parametrize("overrides,stability", [
    ({"mechanism.kind": "lindahl", "advocates.strategy": "truthful"}, 0.0),  # truthful prices: all would free-ride
    ({"mechanism.kind": "lindahl"}, 1.0),  # equilibrium pledges: nobody gains by leaving
    ({"mechanism.kind": "clarke", "advocates.strategy": "truthful"}, 1.0),  # truth is dominant
    ({"mechanism.kind": "assurance", "mechanism.refund_bonus": 0.1}, 1.0),  # a unanimous contract fails without you
])
def test_coalition_stability_by_unilateral_exit(overrides, stability):
    """The share of coalition members who would not gain by leaving alone (reporting no harm, pledging nothing),
    under the preset's transaction costs, against what theory says of each mechanism."""
    assert summary(**overrides)["coalition_stability"] == pytest.approx(stability, abs=1e-3)


def _ratio_se(x: np.ndarray, y: np.ndarray, pmf: np.ndarray, n: int) -> tuple[float, float]:
    """E[X]/E[Y] and its standard error over n independent bargains, X and Y functions of J (values per J, pmf of J):
    the delta method, SE = sqrt(Var(X − R·Y)/n)/E[Y]."""
    ex, ey = pmf @ x, pmf @ y
    r = ex / ey
    return r, float(np.sqrt(pmf @ (x - r * y) ** 2 / n) / ey)


def test_engine_pledging_matches_the_symmetric_mixed_equilibrium():
    """Identical victims (harm constant), no costs, threshold 3 of 4, no bonus: with harm-share prices every victim's
    value is 1.5 times its price, so the equilibrium pledge probability solves 0.5·3q²(1 − q) = q³, q = 0.6, and
    each bargain's pledgers J ~ Bin(4, 0.6), independently over its 80,000 bargains (20,000 emitters × 4 rounds).
    Then, each within 4 standard errors (delta method for the ratios):

    * success rate P(J ≥ 3) = 0.4752;
    * participation (pledgers of successful contracts per victim) E[J·1{J ≥ 3}]/4;
    * free riders: a successful contract abates for all 4 victims and 4 − J of them paid nothing, so the share is
      E[(4 − J)·1{J ≥ 3}] / E[4·1{J ≥ 3}] = P(J = 3)/(4 P(J ≥ 3)) = 0.1818;
    * stability by unilateral exit: with J = 4 a member who leaves still leaves 3 pledgers, the good is still
      provided and it saves its pledge, so all 4 would leave; with J = 3 leaving sinks the contract, and nobody
      leaves. Stability 1 − E[4·1{J = 4}]/E[J·1{J ≥ 3}] = 1 − q/(3(1 − q) + q) = 2/3."""
    q = float(A.mixed_pledge_probability(4, 3, 1.5, 1.0, 0.0, grid=1024))
    assert q == pytest.approx(0.6, abs=1e-5)
    s = summary(**{"mechanism.kind": "assurance", "mechanism.threshold": 0.75, "population.harm": "constant:0.5",
                   **FREE})
    n = 80_000
    j = np.arange(5)
    pmf = np.array([math.comb(4, i) * 0.6**i * 0.4 ** (4 - i) for i in j])
    ok = (j >= 3).astype(float)
    success = pmf @ ok
    assert success == pytest.approx(0.4752)
    assert s["assurance_success_rate"] == pytest.approx(success, abs=4 * np.sqrt(success * (1 - success) / n))
    part = pmf @ (j * ok) / 4
    assert s["participation_rate"] == pytest.approx(part, abs=4 * np.sqrt(pmf @ (j * ok / 4 - part) ** 2 / n))
    free, se = _ratio_se((4 - j) * ok, 4 * ok, pmf, n)
    assert free == pytest.approx(0.3456 / (4 * 0.4752))
    assert s["free_rider_share"] == pytest.approx(free, abs=4 * se)
    leave, se = _ratio_se(4.0 * (j == 4), j * ok, pmf, n)
    assert 1 - leave == pytest.approx(2 / 3)
    assert s["coalition_stability"] == pytest.approx(1 - leave, abs=4 * se)


def test_breakdowns_add_up_and_low_harm_victims_free_ride():
    """Equilibrium voluntary contributions: the per-decile and per-quartile breakdowns add up to the totals, the
    coalition-size histogram counts every honoured deal and reproduces the mean size, and free riding falls with
    the victim's harm (the low-harm quartile contributes nothing)."""
    s = summary(**{"mechanism.kind": "lindahl"})
    n_slots = 20_000 * 4 * 4  # agents × rounds × victims per emitter
    for name in ("coalitions_by_wealth_decile", "coalitions_by_harm_quartile"):
        b = s[name]
        total = sum(share * rate for share, rate in zip(b["agent_share"], b["participation_rate"]))
        assert total == pytest.approx(s["participation_rate"], rel=1e-5)
    sizes = np.asarray(s["coalition_size_histogram"])
    assert sizes.sum() == pytest.approx(s["deal_rate"] * 20_000 * 4, rel=1e-6)
    members = np.arange(len(sizes)) @ sizes
    assert members / sizes[1:].sum() == pytest.approx(s["coalition_size_mean"], rel=1e-6)
    assert members == pytest.approx(s["participation_rate"] * n_slots, rel=1e-6)
    assert sum(s["pledge_ratio_histogram"]["members"]) == pytest.approx(members, rel=1e-6)
    by_harm = s["coalitions_by_harm_quartile"]["free_rider_share"]
    assert by_harm[0] == pytest.approx(1.0) and by_harm[3] < 0.2
    assert all(a >= b for a, b in zip(by_harm, by_harm[1:]))


def test_pooling_across_emitters_shares_discovery_costs():
    """Clarke, truthful, emitter's right, a discovery cost of 0.05 per party and bargain. Pooling (one coalition per
    victim across its k = 4 emitters) cuts a victim's discovery cost per bargain from 0.05 to 0.0125, so more deals
    cover their costs and efficiency rises; every member is pooled, and a pooled member's coalition is in at most k
    deals. A pool cost above the saving, (k − 1)·0.05 = 0.15, stops the pooling and gives back the unpooled run."""
    base = {"mechanism.kind": "clarke", "advocates.strategy": "truthful", **FREE,
            "state.transaction_costs.per_party": 0.05}
    alone = summary(**base)
    pooled = summary(**base, **{"mechanism.pooling": True})
    assert pooled["efficiency"] > alone["efficiency"] + 0.05, (pooled["efficiency"], alone["efficiency"])
    assert pooled["transaction_costs_paid"] / pooled["deal_rate"] < alone["transaction_costs_paid"] / alone["deal_rate"]
    assert pooled["pooled_share"] == pytest.approx(1.0)
    assert 1.0 <= pooled["coalition_span_mean"] <= 4.0
    assert alone["pooled_share"] is None
    too_dear = summary(**base, **{"mechanism.pooling": True, "mechanism.pool_cost": 0.16})
    assert too_dear["efficiency"] == pytest.approx(alone["efficiency"], abs=1e-12)
    assert too_dear["pooled_share"] in (None, 0.0)


def test_failed_contracts_pay_their_refund_bonus():
    """Identical victims, a 3-of-4 contract with a refund bonus of half the pledge: the emitters pay each pledger of a
    failed contract its bonus, money is conserved, and refunds over pledges collected equal
    f·E[J·1{J < 3}] / E[J·1{J ≥ 3}] with J ~ Bin(4, q) at the equilibrium q (the price cancels), within 4 standard
    errors of the ratio over the 80,000 bargains (delta method)."""
    f = 0.5
    s = summary(**{"mechanism.kind": "assurance", "mechanism.threshold": 0.75, "mechanism.refund_bonus": f,
                   "population.harm": "constant:0.5", **FREE})
    q = float(A.mixed_pledge_probability(4, 3, 1.5, 1.0, f, grid=1024))
    j = np.arange(5)
    pmf = np.array([math.comb(4, i) * q**i * (1 - q) ** (4 - i) for i in j])
    expected, se = _ratio_se(f * j * (j < 3), j * (j >= 3), pmf, 80_000)
    collected = s["transfers"] + s["refunds_paid"]  # transfers net the refunds out of the pledges paid
    assert s["refunds_paid"] > 0
    assert s["refunds_paid"] / collected == pytest.approx(expected, abs=4 * se)
    assert s["money_residual_rel"] < 1e-5
