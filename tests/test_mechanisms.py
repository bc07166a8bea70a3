"""Each mechanism against its closed form (THEORY.md), on hand-built bargains with k identical or distinct victims."""

import jax.numpy as jnp
import numpy as np
import pytest

from coasejax.mechanisms import MECHANISMS, Bargain, Terms
from coasejax.mechanisms.alternating import finite_horizon_share, proposer_value, rubinstein_share
from coasejax.mechanisms.lindahl import equilibrium_reports, free_riding_efficiency
from coasejax.mechanisms.nash import nash_transfer_closed_form
from coasejax.model import benefit

K = 4
W = 1.0 / K


def terms(emitter_right=True, beta=0.5, d_e=0.9, d_v=0.8, horizon=400, emitter_first=True, per_round=0.0,
          tc_e=0.0, tc_v=0.0):
    f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return Terms(w=f(W), x_max=f(100.0), emitter_right=jnp.asarray(emitter_right), bargaining_power=f(beta),
                 discount_emitter=f(d_e), discount_victims=f(d_v), per_round=f(per_round), tc_emitter=f(tc_e),
                 tc_victims=f(tc_v), horizon=horizon, emitter_first=emitter_first)


def bargain(a, c_victims, emitter_right):
    a = jnp.asarray(a, jnp.float32)
    c = jnp.asarray(c_victims, jnp.float32)  # f32[k, N]
    x_sq = jnp.where(emitter_right, a, 0.0)
    return Bargain(a_hat=a, c_hat=c, x_sq=x_sq)


# a = 3 with four victims whose harms sum to 4: C = w * 4 = 1, interior first best x* = 2
A = np.array([3.0, 5.0])
C_VICTIMS = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])  # emitter 0: C = 1; emitter 1: C = 2
C = W * C_VICTIMS.sum(0)


@pytest.mark.parametrize("mech", list(MECHANISMS))
@pytest.mark.parametrize("emitter_right", [True, False])
def test_every_mechanism_agrees_on_the_first_best_with_truthful_reports(mech, emitter_right):
    out = MECHANISMS[mech](bargain(A, C_VICTIMS, emitter_right), terms(emitter_right), None)
    np.testing.assert_allclose(out.x, A - C, rtol=1e-6)
    surplus = C**2 / 2 if emitter_right else (A - C) ** 2 / 2
    np.testing.assert_allclose(out.surplus, surplus, rtol=1e-5)
    # transfers flip direction with the rights regime: every emitter is paid (emitter's right) or pays (victim's)
    to_emitter = np.asarray(out.to_emitter)
    assert np.all(to_emitter > 0) if emitter_right else np.all(to_emitter < 0), to_emitter


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("emitter_right", [True, False])
def test_nash_transfer_matches_closed_form(beta, emitter_right):
    out = MECHANISMS["nash"](bargain(A, C_VICTIMS, emitter_right), terms(emitter_right, beta=beta), None)
    expected = nash_transfer_closed_form(A, C, beta, emitter_right)
    np.testing.assert_allclose(out.to_emitter, expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out.from_victims).sum(0), expected, rtol=1e-5)  # budget balanced
    lo, hi = (C**2 / 2, C**2) if emitter_right else (-(A**2 - C**2) / 2, -C * (A - C))
    assert np.all(lo - 1e-5 <= np.asarray(out.to_emitter)) and np.all(np.asarray(out.to_emitter) <= hi + 1e-5)


def test_nash_splits_surplus_net_of_transaction_costs():
    tc_e, tc_v, beta = 0.05, 0.2, 0.3
    out = MECHANISMS["nash"](bargain(A, C_VICTIMS, True), terms(True, beta=beta, tc_e=tc_e, tc_v=tc_v), None)
    emitter_net = np.asarray(out.to_emitter) - (benefit(A, A) - benefit(A, A - C)) - tc_e
    np.testing.assert_allclose(emitter_net, beta * (C**2 / 2 - tc_e - tc_v), rtol=1e-5)


@pytest.mark.parametrize("emitter_right", [True, False])
def test_lindahl_gives_the_surplus_to_the_emitter_at_the_edge_of_the_range(emitter_right):
    out = MECHANISMS["lindahl"](bargain(A, C_VICTIMS, emitter_right), terms(emitter_right), None)
    expected = C**2 if emitter_right else -C * (A - C)
    np.testing.assert_allclose(out.to_emitter, expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out.from_victims), W * C_VICTIMS * (A - C - np.where(emitter_right, A, 0)) * -1,
                               rtol=1e-5)


def test_clarke_payments_match_closed_form_under_both_rights():
    c_v = np.array([[0.5], [1.0], [1.5], [3.0]])  # distinct victims, C = 1.5
    a = np.array([4.0])
    cost = W * c_v.sum(0)
    x = a - cost
    er = MECHANISMS["clarke"](bargain(a, c_v, True), terms(True), None)
    np.testing.assert_allclose(er.to_emitter, cost**2, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(er.from_victims)[:, 0], (W * c_v[:, 0]) ** 2 / 2, rtol=1e-5)
    vr = MECHANISMS["clarke"](bargain(a, c_v, False), terms(False), None)
    np.testing.assert_allclose(vr.to_emitter, -cost * x, rtol=1e-5)
    expected_receipt = benefit(a, x) - (cost - W * c_v[:, 0]) * x
    np.testing.assert_allclose(-np.asarray(vr.from_victims)[:, 0], expected_receipt, rtol=1e-5)


def test_clarke_truthful_report_is_a_best_response():
    """A victim's utility over a grid of misreports is maximal at the truth (dominant-strategy IC)."""
    rng = np.random.default_rng(0)
    for emitter_right in (True, False):
        a = np.array([4.0])
        c_v = rng.uniform(0.5, 3.0, size=(K, 1))
        true_c = c_v[0, 0]
        grid = np.linspace(0.0, 6.0, 601)
        utils = []
        for r in grid:
            rep = c_v.copy()
            rep[0, 0] = r
            out = MECHANISMS["clarke"](bargain(a, rep, emitter_right), terms(emitter_right), None)
            x = float(out.x[0])
            utils.append(-W * true_c * x - float(out.from_victims[0, 0]))
        best = grid[int(np.argmax(utils))]
        assert abs(best - true_c) <= 0.011, (emitter_right, best, true_c)


@pytest.mark.parametrize("d1,d2", [(0.9, 0.8), (0.95, 0.95), (0.6, 0.99)])
def test_alternating_offers_reproduce_rubinstein_split(d1, d2):
    s = jnp.ones(3, jnp.float32) * jnp.asarray([1.0, 2.0, 10.0])
    p1 = proposer_value(s, terms(d_e=d1, d_v=d2, horizon=600, emitter_first=True), K)
    np.testing.assert_allclose(np.asarray(p1) / np.asarray(s), rubinstein_share(d1, d2), atol=1e-4)
    p1v = proposer_value(s, terms(d_e=d1, d_v=d2, horizon=600, emitter_first=False), K)
    np.testing.assert_allclose(np.asarray(p1v) / np.asarray(s), rubinstein_share(d2, d1), atol=1e-4)


@pytest.mark.parametrize("horizon", [1, 2, 3, 7, 20])
def test_alternating_offers_finite_horizon_closed_form(horizon):
    s = jnp.ones(1, jnp.float32)
    p1 = proposer_value(s, terms(d_e=0.7, d_v=0.7, horizon=horizon), K)
    np.testing.assert_allclose(float(p1[0]), finite_horizon_share(0.7, horizon), atol=1e-6)


def test_alternating_offers_transfer_gives_proposer_its_share():
    d1, d2 = 0.9, 0.8
    out = MECHANISMS["alternating"](bargain(A, C_VICTIMS, True), terms(True, d_e=d1, d_v=d2, horizon=600), None)
    emitter_gain = np.asarray(out.to_emitter) - C**2 / 2  # minus its loss from abating to x*
    np.testing.assert_allclose(emitter_gain / (C**2 / 2), rubinstein_share(d1, d2), atol=1e-4)


def test_per_round_costs_shift_the_split_toward_the_cheaper_side():
    s = jnp.asarray([1.0], jnp.float32)
    no_cost = float(proposer_value(s, terms(d_e=0.9, d_v=0.9, horizon=200), K)[0])
    costly = float(proposer_value(s, terms(d_e=0.9, d_v=0.9, horizon=200, per_round=0.01), K)[0])
    assert costly > no_cost + 1e-3  # the victims' coalition pays k times the per-round cost


@pytest.mark.parametrize("emitter_right", [True, False])
@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_lindahl_equilibrium_efficiency_falls_with_victims_per_emitter(emitter_right, k):
    w = 1.0 / k
    a = np.array([5.0])
    c = np.full((k, 1), 2.0)
    t = terms(emitter_right)
    t = t.replace(w=jnp.asarray(w, jnp.float32))
    rep = equilibrium_reports(jnp.asarray(a, jnp.float32), jnp.asarray(c, jnp.float32), t)
    out = MECHANISMS["lindahl"](bargain(a, rep, emitter_right), t, None)
    cost = 2.0
    x = float(out.x[0])
    x_sq = a[0] if emitter_right else 0.0
    x_star = a[0] - cost
    gain = (benefit(a[0], x) - cost * x) - (benefit(a[0], x_sq) - cost * x_sq)
    best = (benefit(a[0], x_star) - cost * x_star) - (benefit(a[0], x_sq) - cost * x_sq)
    np.testing.assert_allclose(gain / best, free_riding_efficiency(k), rtol=1e-5)


def test_lindahl_equilibrium_reports_are_mutual_best_responses():
    """No victim gains by changing its pledge alone (grid search), with heterogeneous victims."""
    a = np.array([6.0])
    c = np.array([[3.0], [2.0], [0.4], [1.0]])
    t = terms(True)
    rep = np.asarray(equilibrium_reports(jnp.asarray(a, jnp.float32), jnp.asarray(c, jnp.float32), t))
    for s in range(K):
        def utility(r):
            rr = rep.copy()
            rr[s, 0] = r
            out = MECHANISMS["lindahl"](bargain(a, rr, True), t, None)
            return -W * c[s, 0] * float(out.x[0]) - float(out.from_victims[s, 0])

        grid = np.linspace(0, 4, 801)
        best = max(utility(r) for r in grid)
        assert utility(rep[s, 0]) >= best - 1e-4

