"""Tests that kill surviving mutants of the mechanisms and rule layers (scripts/mutation.sh, docs/mutation.md).

Each test checks an economic result against a closed form stated in its docstring (THEORY.md; the closed-form
helpers beside each mechanism), with float32 tolerances (rtol 1e-5 unless said otherwise); none reads its expected
value from the function under test. The mutant each test kills is named in a comment (file:line of the base commit
94e7df0, operator).
"""

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coasejax.graphs import make_graph
from coasejax.mechanisms import MECHANISMS, Bargain, Terms
from coasejax.mechanisms.alternating import rubinstein_share
from coasejax.model import benefit
from coasejax.rules import INDIVIDUAL, STATE, IndividualParams, StateParams, constrain, nest, room

AS = importlib.import_module("coasejax.mechanisms.assurance")  # the package exports the function of the same name

K = 4
W = 1.0 / K
F = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731


def terms(emitter_right=True, beta=0.5, d_e=0.9, d_v=0.8, horizon=600, emitter_first=True, tc_e=0.0, tc_v=0.0,
          threshold=1.0, refund_bonus=0.0, w=W):
    return Terms(w=F(w), x_max=F(100.0), emitter_right=jnp.asarray(emitter_right), bargaining_power=F(beta),
                 discount_emitter=F(d_e), discount_victims=F(d_v), per_round=F(0.0), tc_emitter=F(tc_e),
                 tc_victims=F(tc_v), threshold=F(threshold), refund_bonus=F(refund_bonus), horizon=horizon,
                 emitter_first=emitter_first)


def bargain(a, c_victims, emitter_right, pledge=None):
    a = F(a)
    return Bargain(a_hat=a, c_hat=F(c_victims), x_sq=jnp.where(emitter_right, a, 0.0), pledge=pledge)


# two emitters with four identical victims each: C = w Σ c = 1 and 2, interior first best x* = a − C = 2 and 3
A = np.array([3.0, 5.0])
C_VICTIMS = np.array([[1.0, 2.0]] * K)
C = W * C_VICTIMS.sum(0)
LOSS = C**2 / 2  # the emitter's loss from abating a → a − C: B(a) − B(a − C) = C²/2


# -- alternating offers ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("emitter_first", [True, False])
def test_alternating_offers_split_the_surplus_net_of_transaction_costs(emitter_first):
    """Emitter's right, truthful, costs tc_e = 0.05, tc_v = 0.2: the first proposer gets the Rubinstein share of
    S − TC = C²/2 − 0.25 (horizon 600: truncation error (δ_e δ_v)^300 ≈ 0), and the emitter receives its loss C²/2,
    its own costs and its gain. Kills alternating.py:51 (``− tc_total`` → ``+``)."""
    tc_e, tc_v, d_e, d_v = 0.05, 0.2, 0.9, 0.8
    out = MECHANISMS["alternating"](bargain(A, C_VICTIMS, True),
                                    terms(True, d_e=d_e, d_v=d_v, tc_e=tc_e, tc_v=tc_v, emitter_first=emitter_first))
    net = LOSS - tc_e - tc_v
    gain = rubinstein_share(d_e, d_v) * net if emitter_first else (1 - rubinstein_share(d_v, d_e)) * net
    np.testing.assert_allclose(out.to_emitter, LOSS + tc_e + gain, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out.from_victims).sum(0), LOSS + tc_e + gain, rtol=1e-5)  # budget balance


# -- shares when nobody reports harm -----------------------------------------------------------------------------------
def test_victims_reporting_no_harm_share_the_emitters_payment_equally():
    """Victim's right, every victim reports ĉ = 0: Ĉ = 0, so x̂ = a and Ŝ = a²/2; Nash with β = 0.3 has the emitter
    pay (1 − β) a²/2 for permission, split equally among its k victims and budget balanced. Kills base.py:78
    (equal shares ``1/k`` → ``k``)."""
    beta = 0.3
    out = MECHANISMS["nash"](bargain(A, np.zeros((K, 2)), False), terms(False, beta=beta))
    pay = (1 - beta) * A**2 / 2
    np.testing.assert_allclose(out.to_emitter, -pay, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out.from_victims), np.broadcast_to(-pay / K, (K, 2)), rtol=1e-5)


@pytest.mark.parametrize("mech", ["nash", "lindahl", "alternating", "clarke"])
def test_mechanisms_without_contracts_owe_no_refunds(mech):
    """Only a failed assurance contract owes refund bonuses; the engine pays ``Outcome.refund`` out of the emitter's
    wealth whenever it is not None, so every other mechanism must leave it None. Kills base.py:57 (default
    ``None`` → ``""``)."""
    out = MECHANISMS[mech](bargain(A, C_VICTIMS, True), terms(True))
    assert out.refund is None


# -- the Clarke pivot's deficit -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("emitter_right,expected", [(True, -1.859375), (False, -12.5)])
def test_clarke_deficit_by_hand(emitter_right, expected):
    """a = 4, harms w c_s = 1/8, 1/4, 3/8, 3/4 (C = 3/2, x* = 5/2), truthful. Emitter's right: the victims' pivot
    taxes Σ (w c_s)²/2 = 25/64 against the emitter's C² = 9/4, net −119/64 = −1.859375. Victim's right: the emitter
    pays C x* = 15/4; victim s receives B(x*) − (C − w c_s) x* = 25/8 + 5 w c_s / 2, 65/4 in all; net −25/2. Both the
    closed-form helper and the mechanism's own payments (Σ p − T) must give these (float32: rtol 1e-5). Kills the
    operand mutants of ``clarke_net_intake_closed_form``."""
    from coasejax.mechanisms.clarke import clarke_net_intake_closed_form

    harms = [0.125, 0.25, 0.375, 0.75]
    assert clarke_net_intake_closed_form(4.0, harms, emitter_right) == pytest.approx(expected, rel=1e-12)
    c = np.array(harms)[:, None] / W
    out = MECHANISMS["clarke"](bargain([4.0], c, emitter_right), terms(emitter_right))
    net = float(np.asarray(out.from_victims).sum() - np.asarray(out.to_emitter).sum())
    assert net == pytest.approx(expected, rel=1e-5)


# -- assurance contracts -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k,theta,m", [(10, 0.6, 6), (4, 1.0, 4), (5, 0.5, 3), (4, 0.75, 3), (4, 0.0, 1)])
def test_pledges_needed_are_the_ceiling_of_the_threshold_share(k, theta, m):
    """``m = ⌈θ k⌉``, at least 1. Kills assurance.py:48 (``θ k`` → ``θ / k``)."""
    assert int(AS.needed(k, theta)) == m


def test_assurance_pledgers_pay_the_cost_scaled_by_k_over_m():
    """Emitter's right, k = 4 identical truthful victims, θ = 0.75 so m = 3: each pledge is p = L̂ /m (harm shares
    1/k, scaled by k/m), and a victim's value w c (x_sq − x̂) = C/k · C = 2 L̂/k covers p iff k/(2m) ≤ 1, here 2/3:
    all four pledge, the emitter abates to a − C and receives k L̂/m = (4/3) C²/2. Kills assurance.py:55
    (k read from the emitter axis, N = 2) and :48."""
    out = AS.assurance(bargain(A, C_VICTIMS, True), terms(True, threshold=0.75))
    np.testing.assert_allclose(out.x, A - C, rtol=1e-6)
    np.testing.assert_allclose(out.to_emitter, K / 3 * LOSS, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out.from_victims), np.broadcast_to(LOSS / 3, (K, 2)), rtol=1e-5)
    np.testing.assert_allclose(out.surplus, LOSS, rtol=1e-5)


def test_assurance_contract_with_pledges_dearer_than_their_value_fails_and_nobody_pays():
    """θ = 0.25, so m = 1 and each price L̂ k/m /k = L̂ = C²/2 is twice a victim's value C²/k = C²/4 (k = 4): no
    victim pledges, the emitter stays at x_sq = a, no money moves and no bonus is owed (nobody pledged). Kills
    assurance.py:60 (value ``x_sq − x̂`` → ``x_sq + x̂``) and :75 (an unpaid victim pays 0 → 1)."""
    out = AS.assurance(bargain(A, C_VICTIMS, True), terms(True, threshold=0.25, refund_bonus=0.1))
    np.testing.assert_allclose(out.x, A, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(out.to_emitter), 0.0)
    np.testing.assert_array_equal(np.asarray(out.from_victims), 0.0)
    np.testing.assert_array_equal(np.asarray(out.refund), 0.0)
    np.testing.assert_array_equal(np.asarray(out.surplus), 0.0)


def _eight_emitters(c):
    a = np.linspace(3.0, 6.0, 8)
    return a, np.full((K, 8), c)


def test_unanimous_contract_every_victim_pledges_in_equilibrium():
    """θ = 1 (m = k = 4), victims of harm c = 2 (w = 1/4), truthful: value w c C = C²/k = 2 L̂/k against price L̂/m = L̂/k,
    so pledging is an equilibrium for every victim, with no mixing (8 emitters, so N ≠ k). Kills assurance.py:89
    (k read from the emitter axis) and :91 (``w · harm`` → ``w / harm``)."""
    a, c = _eight_emitters(2.0)
    pledge = AS.equilibrium_pledges(jax.random.PRNGKey(0), bargain(a, c, True), terms(True), F(c))
    assert bool(jnp.all(pledge))


def test_victims_never_pledge_more_than_their_value():
    """θ = 0.25 (m = 1): price L̂ = C²/2 is twice the value C²/4, so pledging, even when pivotal, loses v − p < 0
    and the mixed equilibrium is q = 0 (pledge_advantage < 0 on all of (0, 1)): no victim pledges. Kills
    assurance.py:91 (value ``x_sq − x̂`` → ``x_sq + x̂``)."""
    a, c = _eight_emitters(1.0)
    pledge = AS.equilibrium_pledges(jax.random.PRNGKey(0), bargain(a, c, True), terms(True, threshold=0.25), F(c))
    assert not bool(jnp.any(pledge))


def test_a_harmless_victim_consents_under_the_victims_right():
    """Victim's right, unanimity, one truthful victim per bargain with no harm: its offer is its harm 0 plus its
    harm share 0 of the surplus, which covers its harm exactly, and consenting weakly dominates (ties consent), so
    every victim consents and the harmless one cannot block the deal. Kills assurance.py:92 (``>=`` → ``>``)."""
    a, c = _eight_emitters(2.0)
    c[0] = 0.0
    pledge = AS.equilibrium_pledges(jax.random.PRNGKey(0), bargain(a, c, False), terms(False), F(c))
    assert bool(jnp.all(pledge))
    out = AS.assurance(bargain(a, c, False, pledge=pledge), terms(False))
    np.testing.assert_allclose(out.x, a - W * c.sum(0), rtol=1e-6)


def test_no_victim_pledges_a_price_above_its_value_against_full_pledging():
    """Best reply when the k − 1 others all pledge and m = k: pledging earns v − p = 0.5 − 1 < 0, not pledging 0.
    Kills assurance.py:159 (``v − p`` → ``v + p``)."""
    ones = jnp.ones((6, 3), bool)
    assert not bool(jnp.any(AS.best_response(ones, 0.5, 1.0, 0.0, 6)))
    assert bool(jnp.all(AS.best_response(ones, 1.0, 0.5, 0.0, 6)))


@pytest.mark.parametrize("q,k,m,expected", [(0.0, 5, 1, 0.0), (0.0, 5, 0, 1.0), (1.0, 5, 5, 1.0), (0.5, 4, 2, 11 / 16),
                                            (0.25, 3, 3, 1 / 64)])
def test_success_probability_is_the_binomial_tail(q, k, m, expected):
    """``P(Binomial(k, q) ≥ m)``, exact: nobody pledges at q = 0, everybody at q = 1; 11/16 and 1/64 by hand.
    Kills assurance.py:112 (the q = 0 point mass at ``j == 0`` → ``j == 1``)."""
    assert float(AS.success_probability(q, k, m)) == pytest.approx(expected, abs=1e-6)


# -- rule layers -------------------------------------------------------------------------------------------------------
def _state(**kw):
    base = dict(cap=F(10.0), cap_share=F(0.0), pigou_tax=F(0.5), tc_floor=F(0.0), use_tax=True, budget_rule=True)
    base.update(kw)
    return StateParams(**base)


def test_budget_rule_caps_an_emitters_activity_at_its_tax_allowance():
    """Budget rule with a Pigouvian tax τ = 0.5: an emitter acting alone keeps its tax bill τx within one bargain's
    allowance m (1 − 10⁻⁵)/(k + 1), so x ≤ m (1 − 10⁻⁵)/((k + 1) τ); wealth 1, 10, 0 and −3 (no allowance). Kills
    state.py:99 (the constraint on a misspelt field)."""
    wealth = F([1.0, 10.0, 0.0, -3.0])
    ctx = {"wealth": wealth, "k": K}
    x, (lo, hi), changed = constrain(nest(STATE), "own_activity", F([3.0, 3.0, 3.0, 3.0]), {"state": _state()}, ctx)
    limit = np.maximum(np.asarray(wealth), 0) * (1 - 1e-5) / (K + 1) / 0.5
    np.testing.assert_allclose(hi, limit, rtol=1e-6)
    np.testing.assert_allclose(x, np.minimum(3.0, limit), rtol=1e-6)
    assert lo is None
    np.testing.assert_array_equal(np.asarray(changed[("state", "budget")]), [True, False, True, True])


def test_victims_reservation_payments_bound_their_gains_from_below():
    """Each victim signs only a deal that gains it at least its reservation ρ_j: the room of ``gain_victims`` is
    [ρ of each slot's victim, ∞), read through the graph (ring, k = 4, N = 6).
    Kills individual.py:96 (the victims' reservation constraint switched off)."""
    n = 6
    graph = make_graph("ring", n, K, 0)
    rho = F(np.arange(n) * 0.1)
    lo, hi = room(nest(INDIVIDUAL), "gain_victims", {"individual": IndividualParams(reservation=rho)},
                  {"graph": graph})
    nbrs = np.asarray(graph.neighbours())  # i32[N, k]: slot s's victim of emitter i
    expected = np.asarray(rho)[nbrs.T]
    assert hi is None
    np.testing.assert_allclose(np.asarray(lo), expected, rtol=1e-6)
    gains = F(np.zeros((K, n)))
    _, _, changed = constrain(nest(INDIVIDUAL), "gain_victims", gains, {"individual": IndividualParams(reservation=rho)},
                              {"graph": graph})
    moved = np.asarray(changed[("individual", "reservation")])
    np.testing.assert_array_equal(moved, np.asarray(lo) > 0)  # a zero gain is vetoed iff the victim asks for more


def test_an_unknown_action_field_is_refused_with_the_list_of_fields():
    """Kills base.py:108 (the error message's separator)."""
    with pytest.raises(ValueError, match="fields: own_activity, deal_activity, report_a, report_c"):
        constrain(nest(STATE), "activity", F([1.0]), {"state": _state()}, {"wealth": F([1.0]), "k": K})


# -- accounting (coasejax/envs/accounting.py) ---------------------------------------------------------------------------
def _settle(tax_to_victims, with_tax=True):
    from coasejax.envs.accounting import settle

    n, k = 5, 2
    graph = make_graph("ring", n, k, 0)
    t = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    p = np.array([[0.5, -1.0, 0.25, 0.0, 1.5], [0.5, -1.0, 0.25, 0.0, 1.5]])  # each emitter's T split in two
    tc_e = np.array([0.1, 0.0, 0.2, 0.0, 0.05])
    tc_v = np.array([[0.01, 0.0, 0.02, 0.0, 0.0], [0.0, 0.03, 0.0, 0.0, 0.04]])
    tax = np.array([0.5, 1.0, 0.0, 2.0, 0.25]) if with_tax else None
    d, outflow, flows = settle(graph, F(t), F(p), F(tc_e), F(tc_v), None if tax is None else F(tax), tax_to_victims)
    return graph, (t, p, tc_e, tc_v, tax), (d, outflow, flows)


@pytest.mark.parametrize("tax_to_victims", [False, True])
def test_money_flows_total_each_source_and_their_scale(tax_to_victims):
    """The round's totals, each the sum of its own source (ring, N = 5, k = 2): ΣT = 2.5, Σp = 2.5 (budget balance:
    net intake 0), costs Σ tc = 0.45, tax Σ τx = 3.75, all of it recycled under either rule, no fees yet; the scale
    ``gross = Σ|T| + Σ|p| + costs + tax + recycled`` = 6.5 + 6.5 + 0.45 + 7.5 = 20.95; fees of 0.3 add to both.
    Tolerance 1e-5 (float32 sums of five terms of size ≤ 3). Kills sign and operand mutants of the totals."""
    _, (t, p, tc_e, tc_v, tax), (_, _, flows) = _settle(tax_to_victims)
    assert float(flows.to_emitters) == pytest.approx(2.5, abs=1e-5)
    assert float(flows.from_victims) == pytest.approx(2.5, abs=1e-5)
    assert float(flows.mechanism_net) == pytest.approx(0.0, abs=1e-5)
    assert float(flows.transaction_costs) == pytest.approx(0.45, abs=1e-5)
    assert float(flows.tax_paid) == pytest.approx(3.75, abs=1e-5)
    assert float(flows.tax_recycled) == pytest.approx(3.75, abs=1e-5)
    assert float(flows.fees) == 0.0
    assert float(flows.gross) == pytest.approx(20.95, abs=1e-5)
    fees = flows.with_fees(F([0.1, 0.0, 0.2, 0.0, 0.0]))
    assert float(fees.fees) == pytest.approx(0.3, abs=1e-6)
    assert float(fees.gross) == pytest.approx(21.25, abs=1e-5)
    assert float(fees.to_emitters) == pytest.approx(2.5, abs=1e-5)


def test_settlement_without_a_tax_moves_only_payments_and_costs():
    """No tax (None): agent j gets T_j − tc_e,j − Σ over the bargains that harm it of (p + tc_v), by a plain loop
    over the ring's neighbours; the totals hold no tax. Kills mutants of the no-tax branches."""
    graph, (t, p, tc_e, tc_v, _), (d, outflow, flows) = _settle(False, with_tax=False)
    nbrs = np.asarray(graph.neighbours())
    paid = np.zeros(5)
    for i in range(5):
        for s in range(2):
            paid[nbrs[i, s]] += p[s, i] + tc_v[s, i]
    np.testing.assert_allclose(np.asarray(outflow), paid, atol=1e-6)
    np.testing.assert_allclose(np.asarray(d), t - tc_e - paid, atol=1e-6)
    assert float(flows.tax_paid) == 0.0 and float(flows.tax_recycled) == 0.0
    assert float(flows.gross) == pytest.approx(6.5 + 6.5 + 0.45, abs=1e-5)


@pytest.mark.parametrize("tax_to_victims", [False, True])
def test_victims_outflow_is_net_of_their_tax_credits(tax_to_victims):
    """``victim_outflow`` is what each agent paid as a victim, less the τ x_i / k credits it got as i's victim
    (none under lump-sum recycling, which credits Σ τx / N = 0.75 to every agent in its wealth instead)."""
    graph, (t, p, tc_e, tc_v, tax), (d, outflow, _) = _settle(tax_to_victims)
    nbrs = np.asarray(graph.neighbours())
    paid = np.zeros(5)
    for i in range(5):
        for s in range(2):
            paid[nbrs[i, s]] += p[s, i] + tc_v[s, i] - (tax[i] / 2 if tax_to_victims else 0.0)
    np.testing.assert_allclose(np.asarray(outflow), paid, atol=1e-6)
    lump = 0.0 if tax_to_victims else 0.75
    np.testing.assert_allclose(np.asarray(d), t - tc_e - tax - paid + lump, atol=1e-6)


def test_accounted_change_and_the_conservation_residual():
    """``accounted = ΣT − Σp − costs − tax + recycled − fees``: with totals 1, 2, 4, 8, 16, 32 it is −29 (each
    flow's sign shows); the relative residual of a stored change s is |s − accounted| / gross, and the scale has a
    floor of 1e-30 (no division by zero when nothing moved)."""
    from coasejax.envs.accounting import accounted_change, conservation

    assert accounted_change(1.0, 2.0, 4.0, 8.0, 16.0, 32.0) == -29.0
    flows = {"to_emitters": 1.0, "from_victims": 2.0, "transaction_costs": 4.0, "tax_paid": 8.0, "tax_recycled": 16.0,
             "fees": 32.0, "gross": 63.0}
    assert conservation(-29.0, flows) == 0.0
    assert conservation(-26.0, flows) == pytest.approx(3.0 / 63.0, rel=1e-12)
    assert conservation(-32.0, flows) == pytest.approx(3.0 / 63.0, rel=1e-12)
    still = dict.fromkeys(flows, 0.0)
    assert conservation(0.0, still) == 0.0
    assert math.isclose(conservation(1e-31, still), 0.1, rel_tol=1e-9)


def test_a_victims_red_line_limits_activity_by_its_own_harm_sensitivity():
    """Agent j accepts at most ``r_j / (w c_j)`` of an emitter's activity (harm w c_j x ≤ r_j), ∞ if harmless:
    r = 1, w = 1/4 and c = 0.5, 1, 2, 0 give 8, 4, 2, ∞. Kills individual.py:56 (the guard ``c > 0`` → ``c > 1``,
    which drops c from the limit of victims with c ≤ 1)."""
    from coasejax.rules.individual import own_limit

    limit = np.asarray(own_limit(F([1.0, 1.0, 1.0, 1.0]), F([0.5, 1.0, 2.0, 0.0]), F(W)))
    np.testing.assert_allclose(limit[:3], [8.0, 4.0, 2.0], rtol=1e-6)
    assert np.isinf(limit[3])


def test_budget_share_narrows_each_bargains_allowance():
    """A client with budget share b lets its advocate commit at most b m (1 − 10⁻⁵)/(k + 1) per bargain: as emitter
    (``outlay_emitter``), as each slot's victim (``outlay_victims``, read through the graph) and, with a tax τ, as an
    emitter acting alone (``own_activity`` ≤ that over τ). Wealth 2, 4, ..., b = 0.5, τ = 0.25, k = 4, ring N = 6.
    Kills individual.py:71, :75 and :79 (wealth misread; ``b · allowance`` → ``b / allowance``)."""
    n = 6
    graph = make_graph("ring", n, K, 0)
    wealth = 2.0 * (1 + np.arange(n))
    share = np.full(n, 0.5)
    allow = share * wealth * (1 - 1e-5) / (K + 1)
    ctx = {"wealth": F(wealth), "k": K, "graph": graph, "tax": F(0.25)}
    params = {"individual": IndividualParams(budget_share=F(share))}
    stack = nest(INDIVIDUAL)
    _, hi = room(stack, "outlay_emitter", params, ctx)
    np.testing.assert_allclose(np.asarray(hi), allow, rtol=1e-6)
    _, hi = room(stack, "outlay_victims", params, ctx)
    np.testing.assert_allclose(np.asarray(hi), allow[np.asarray(graph.neighbours()).T], rtol=1e-6)
    _, hi = room(stack, "own_activity", params, ctx)
    np.testing.assert_allclose(np.asarray(hi), allow / 0.25, rtol=1e-6)


def test_the_audit_names_the_conduct_rule_for_victims_reports_and_sees_every_slot():
    """The audit reports, per (layer, constraint), the bargains whose actions a rule changed. The code of conduct
    (d = 0.5) bounds a victim's report to [c (1 − d), c (1 + d)]: a report of 3 c is cut to 1.5 c and filed under
    ("provider", "conduct"); merged over slots, a bargain counts if any slot moved, here only slot 1 of bargain 2.
    Kills provider.py:89 (the constraint's name) and base.py:154 (the slot merge skipping slot 1)."""
    from coasejax.rules import PROVIDER, Audit, ProviderParams

    one = F([1.0])
    pp = ProviderParams(fee=one * 0, fee_flat=one * 0, conduct=F([0.5]), shade=one * 0, skill=one * 0,
                        switching_rate=F(0.0), inertia=F(0.0), temperature=F(1.0), memory=F(0.0), use_conduct=True)
    c_nb = F(np.ones((K, 3)))
    report = np.ones((K, 3))
    report[1, 2] = 3.0
    value, _, changed = constrain(nest(PROVIDER), "report_c", F(report), {"provider": pp},
                                  {"c_nb": c_nb, "provider": jnp.zeros(3, jnp.int32)})
    assert set(changed) == {("provider", "conduct")}
    np.testing.assert_allclose(np.asarray(value)[1, 2], 1.5, rtol=1e-6)
    audit = Audit.empty().add(changed, per_slot=True)
    np.testing.assert_array_equal(np.asarray(audit.masks[("provider", "conduct")]), [False, False, True])
