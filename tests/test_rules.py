"""Rule layers state ⊃ provider ⊃ individual: composition, the state invariants and the economics they encode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coasejax.mechanisms.nash import nash_transfer_closed_form
from coasejax.rules import Constraint, Layer, constrain, nest, room
from coasejax.rules.state import ALLOWANCE_MARGIN
from coasejax.simulate import build, run_sweep, simulate
from tests.conftest import make_cfg


def sweep(sweep_over: dict, **overrides) -> list[dict]:
    """One compiled run of the small config over ``sweep_over`` ({dotted key: values}): one summary per setting, in
    the sweep's order (the cartesian product, first key slowest)."""
    cfg = make_cfg(**overrides)
    cfg.sweep = sweep_over
    return run_sweep(build(cfg))


#: identical agents (k = 4, w = 1/4): C = w·4·0.5 = 0.5, x* = a − C = 1.5; the emitter's right puts x_sq = a = 2, and
#: a truthful Nash deal moves to 1.5 with surplus S = C²/2 = 0.125, the emitter's gain β·S and each victim's (1 − β)S/4
SAME = dict(population__benefit="constant:2", population__harm="constant:0.5")
A, C_SAME, K = 2.0, 0.5, 4
W = lambda x: A * x - x**2 / 2 - C_SAME * x  # noqa: E731  an emitter's social value B(x) − C x

# ---------------------------------------------------------------------------------------------------------------------
# composition (pure functions over random intervals)
# ---------------------------------------------------------------------------------------------------------------------

finite = st.floats(-10, 10, allow_nan=False, allow_subnormal=False, width=32)  # XLA flushes subnormals
bound = st.one_of(st.none(), finite)


@st.composite
def layer_stack(draw):
    layers = []
    for name in ("state", "provider", "individual"):
        cons = []
        for i in range(draw(st.integers(0, 2))):
            lo, hi = draw(bound), draw(bound)
            cons.append(Constraint(f"c{i}", "deal_activity",
                                   lambda p, ctx, lo=lo, hi=hi: (None if lo is None else jnp.float32(lo),
                                                                 None if hi is None else jnp.float32(hi))))
        layers.append(Layer(name, tuple(cons)))
    return nest(*layers)


def _interval(r):
    lo, hi = r
    return (-np.inf if lo is None else float(lo), np.inf if hi is None else float(hi))


@settings(max_examples=200, deadline=None)
@given(stack=layer_stack(), value=finite)
def test_inner_layers_only_narrow_the_outer_room(stack, value):
    params = {"state": None, "provider": None, "individual": None}
    rooms = [_interval(room(stack, "deal_activity", params, {}, depth=d)) for d in range(4)]
    for outer, inner in zip(rooms, rooms[1:]):
        assert outer[0] <= inner[0] <= inner[1] <= outer[1]  # nested, never wider
    x, r, changed = constrain(stack, "deal_activity", jnp.float32(value), params, {})
    lo, hi = _interval(r)
    assert lo <= float(x) <= hi
    # the outer layer wins: the result always respects the state layer's own room
    s_lo, s_hi = rooms[1]
    assert s_lo <= float(x) <= s_hi
    assert bool(float(x) != value) == any(bool(m) for m in changed.values())


# ---------------------------------------------------------------------------------------------------------------------
# the engine under random layer settings: zero state violations, money conserved
# ---------------------------------------------------------------------------------------------------------------------

def money(hi: float):
    """An amount of money: 0 or at least 1e-6 (a subnormal such as 2e-311 is below what the ledger holds at any
    wealth and refused up front, see tests/test_accounting_scale.py)."""
    return st.one_of(st.just(0.0), st.floats(1e-6, hi))


layer_settings = st.fixed_dictionaries({
    "state__rights": st.sampled_from(["emitter", "victim"]),
    "mechanism__kind": st.sampled_from(["none", "nash", "lindahl", "clarke", "alternating"]),
    "state__activity_cap": st.one_of(st.none(), st.floats(0, 3)),
    "state__cap_share": st.floats(0, 1),
    "state__pigou_tax": money(1.5),
    "state__tax_recycling": st.sampled_from(["lump_sum", "victims"]),
    "state__budget_rule": st.booleans(),
    "state__enforcement": st.floats(0.5, 1),
    "state__tc_floor": money(0.05),
    "providers__count": st.integers(1, 3),
    "providers__fee": st.floats(0, 0.5),
    "providers__fee_flat": money(0.02),
    "providers__conduct": st.one_of(st.none(), st.floats(0, 0.5)),
    "providers__switching_rate": st.floats(0, 0.5),
    "providers__protocol": st.one_of(st.none(), st.lists(st.sampled_from(["none", "nash", "lindahl", "clarke",
                                                                          "alternating"]), min_size=3, max_size=3)),
    "individual__red_line": st.one_of(st.none(), st.just("uniform:0:1")),
    "individual__reservation": st.one_of(st.none(), st.just("uniform:0:0.05")),
    "individual__budget_share": st.one_of(st.none(), st.just("uniform:0.1:1")),
    "individual__altruism": st.one_of(st.none(), st.just("uniform:0:1")),
    "advocates__strategy": st.sampled_from(["truthful", "shade"]),
    "population__wealth": st.sampled_from(["constant:100", "uniform:0:2", "constant:0"]),
})


# 6 examples, each a new compiled engine (~5 s); scripts/soak.py draws every layer at random over 10^8 agent-steps
@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(overrides=layer_settings)
def test_random_layer_settings_never_violate_the_state_and_conserve_money(overrides):
    protocols = overrides["providers__protocol"]
    if protocols is not None:  # one protocol per provider
        overrides["providers__protocol"] = "[" + ",".join(protocols[:overrides["providers__count"]]) + "]"
    overrides = {k: ("null" if v is None else v) for k, v in overrides.items()}
    s = simulate(make_cfg(population__n_agents=512, sim__rounds=4, population__drift=0.05, **overrides))
    assert s["state_violations"] == 0
    # conserved up to rounding: the flows' float32 sums plus what the float32 wealth pair may lose, which is
    # systematic when agents are identical (a flat fee of 6e-4 on wealth 100 rounds the same way for every agent):
    # money_resolution_rel is that loss's bound, 2^-47·T·Σm, over the gross flows
    assert s["money_residual_rel"] <= 1e-5, (s["money_residual_rel"], s["money_resolution_rel"])
    if s["red_line_excess"] is not None:  # no victim accepted harm above its red line
        assert s["red_line_excess"] <= 1e-5


def _one_round(cfg):
    """The engine's populations before and after one round: ``(state0, state1, graph)`` (one environment)."""
    sim = build(cfg, chunk=1)
    state0 = jax.tree.map(jnp.copy, sim.state)  # the runner donates its input
    state1, _ = sim.runner(sim.keys, jax.tree.map(jnp.copy, sim.state), sim.params)
    return state0, state1, sim.graph


def test_outlays_stay_within_the_budget_agent_by_agent():
    """Victim's right, truthful Nash, no costs: each emitter would pay its victims the closed form
    P = C(a − C) + (1 − β)(a − C)²/2 for permission to act at a − C (victims are paid, never pay). A bargain may
    commit at most m/(k + 1) of a party's wealth m under the state's budget rule, narrowed to b·m/(k + 1) by
    ``individual.budget_share`` b, so the deal is vetoed iff P > b·m/(k + 1). The engine's wealth after one round must
    equal, agent by agent, an independent float64 reference: m − P·[deal] + Σ over the emitters that harm it of its
    harm share of their P, minus a flat fee of 0.05 taken only out of what is left. Tolerance 1e-4 absolute: float32
    rounding of wealth ≤ 20 (~2e-6) and of P. Emitters within 1e-4 relative of their veto edge are left out with their
    victims (float32 may decide them either way). Every outlay is then within the budget, nobody loses more than one
    bargain's allowance plus the fee, and everyone stays solvent."""
    s0, s1, graph = _one_round(make_cfg(mechanism__kind="nash", state__rights="victim", sim__rounds=1,
                                        population__wealth="uniform:0:20", individual__budget_share="uniform:0.1:1",
                                        state__budget_rule="true", providers__fee_flat=0.05))
    a, c, m = (np.asarray(v[0], np.float64) for v in (s0.pop.a, s0.pop.c, s0.pop.wealth))
    b = np.asarray(s0.indiv.budget_share[0], np.float64)
    nbr = graph.neighbours()  # [N, k]
    k, n = nbr.shape[1], nbr.shape[0]
    cost = 0.25 * c[nbr].sum(axis=1)  # C_i = w Σ c_j, w = 1/k
    gap = np.clip(a - cost, 0.0, None)  # the deal's activity x* (x_max = 10 is never reached)
    pay = -nash_transfer_closed_form(a, cost, 0.5, False)  # P, valid where a > C
    room = b * m * (1 - ALLOWANCE_MARGIN) / (k + 1)
    deal = (gap > 0) & (pay <= room)
    share = c[nbr] / c[nbr].sum(axis=1, keepdims=True)  # each victim's harm share of its emitter's payment
    received = np.zeros(n)
    np.add.at(received, nbr.ravel(), (np.where(deal, pay, 0.0)[:, None] * share).ravel())
    expected = m - np.where(deal, pay, 0.0) + received
    expected = expected - np.minimum(0.05, np.maximum(expected, 0.0))  # the flat fee, out of what is left
    edge = (gap > 0) & (np.abs(pay - room) <= 1e-4 * np.maximum(room, 1e-6))
    unsure = np.zeros(n, bool)
    unsure[np.flatnonzero(edge)] = True
    unsure[nbr[edge].ravel()] = True
    assert unsure.mean() < 0.01
    assert 0.2 < np.mean(~deal[gap > 0]) < 0.8  # the budget vetoes a good share of the deals, not all of them
    m1 = np.asarray(s1.pop.wealth[0], np.float64)
    np.testing.assert_allclose(m1[~unsure], expected[~unsure], rtol=0, atol=1e-4)
    assert np.all(np.where(deal, pay, 0.0) <= room + 1e-12)
    assert np.all(m1[~unsure] >= m[~unsure] - room[~unsure] - 0.05 - 1e-4)  # only emitters pay, then the fee
    assert np.all(m1 >= -1e-4)  # fees come out of what is left: everyone stays solvent


# ---------------------------------------------------------------------------------------------------------------------
# the state layer's economics
# ---------------------------------------------------------------------------------------------------------------------

PIGOU = dict(population__harm="constant:1", population__benefit="uniform:1:3", state__rights="emitter",
             state__pigou_tax=1.0, sim__rounds=4)  # C_i = w·k·1 = 1 for every emitter: the tax equals marginal harm


def test_pigouvian_tax_at_marginal_harm_reaches_first_best_without_bargaining(run):
    s = run(mechanism__kind="none", **PIGOU)
    # x = a − τ = a − C = x* for every emitter (interior: a ≥ 1 = C), so efficiency is 1 up to float32 sums of 8000
    # terms (relative error ≲ 1e-6)
    assert s["efficiency"] == pytest.approx(1.0, abs=1e-5)
    assert s["mean_activity"] == pytest.approx(s["first_best_mean_activity"], rel=1e-5)
    assert s["tax_revenue"] == pytest.approx(s["first_best_mean_activity"] * 2000 * 4, rel=1e-5)  # τ·Σx, τ = 1


def test_pigouvian_tax_plus_bargaining_over_corrects():
    """Identical emitters, a = 2.5, C = τ = 1 (no sampling error: every bargain is the same). Taxed alone the emitter
    picks a − τ = 1.5 = x*. With Nash bargaining on top, victims still buy abatement from the taxed emitter, down to
    (a − τ) − C = 0.5 (Buchanan–Stubblebine): exactly as far below x* as laissez-faire (x = a = 2.5) is above it, so
    with W(x) = a x − x²/2 − C x symmetric about x* the over-correction wastes the whole gain: efficiency 0 (vs the
    untaxed status quo), where the tax alone has 1. Tolerances: float32 (activity rel 1e-5; efficiency abs 1e-4, its
    numerator being a difference of float32 sums of size ~5000 over a denominator of 4000)."""
    const = {**PIGOU, "population__benefit": "constant:2.5"}
    taxed = simulate(make_cfg(mechanism__kind="none", **const))
    both = simulate(make_cfg(mechanism__kind="nash", **const))
    w = lambda x: 2.5 * x - x**2 / 2 - x  # noqa: E731
    assert taxed["mean_activity"] == pytest.approx(1.5, rel=1e-5)
    assert taxed["efficiency"] == pytest.approx((w(1.5) - w(2.5)) / (w(1.5) - w(2.5)), abs=1e-4)
    assert both["mean_activity"] == pytest.approx(0.5, rel=1e-5)
    assert both["efficiency"] == pytest.approx((w(0.5) - w(2.5)) / (w(1.5) - w(2.5)), abs=1e-4)  # = 0
    assert both["tax_revenue"] == pytest.approx(1.0 * 0.5 * 2000 * 4, rel=1e-5)  # τ·Σx
    assert both["money_residual_rel"] <= 1e-5


def test_tax_paid_to_victims_removes_the_over_correction(run):
    s = run(mechanism__kind="nash", state__tax_recycling="victims", **PIGOU)
    # each victim's net harm per unit falls by τ/k = w·c (it gets τx/k back), so the bargain sees no external cost
    # and leaves the taxed emitter at a − τ = a − C = x*: efficiency 1 up to float32 (see above)
    assert s["efficiency"] == pytest.approx(1.0, abs=1e-5)
    assert s["mean_activity"] == pytest.approx(s["first_best_mean_activity"], rel=1e-5)


def test_cap_binds_even_when_a_deal_would_pay_for_more_activity(run):
    # victim's right: emitters buy permission for x* = a − C ≥ 1 − 0.5·... ; the cap 0.3 is below every x*
    s = run(mechanism__kind="nash", state__rights="victim", population__harm="constant:0.5",
            state__activity_cap=0.3, sim__rounds=3)
    assert s["state_violations"] == 0
    assert s["mean_activity"] == pytest.approx(0.3, rel=1e-5)  # every deal closes at the cap, none above it
    assert s["first_best_mean_activity"] > 1.0
    assert s["deal_rate"] == pytest.approx(1.0)
    assert s["layer_binding"]["state"]["activity_cap"] == pytest.approx(1.0)


def test_cap_share_caps_only_that_share_of_agents(run):
    s = run(mechanism__kind="none", population__benefit="constant:2", state__activity_cap=1.0, state__cap_share=0.25,
            sim__rounds=2)
    # capped agents act at 1, the others at a = 2: mean = 2 − (capped share). The capped subset is a hash of the agent
    # index, uniform-like: its share of N = 2000 has SE sqrt(p(1 − p)/N) = 0.0097 about p = 0.25; allow 4 SE
    assert s["mean_activity"] == pytest.approx(2 - 0.25, abs=4 * np.sqrt(0.25 * 0.75 / 2000))


# ---------------------------------------------------------------------------------------------------------------------
# providers
# ---------------------------------------------------------------------------------------------------------------------

#: identical agents, no drift, no inertia: every client of a provider has the same net utility u_m each round
MARKET = dict(providers__count=2, providers__switching_rate=0.3, providers__inertia=0.0, providers__memory=0.8,
              sim__rounds=10, population__n_agents=4000, mechanism__kind="nash", **SAME)
#: a client reviews iff unit_uniform(bits, 12) = (j + 0.5)/4096 < 0.3, i.e. for j ≤ 1228
REVIEW = 1229 / 4096


def _leaves_geometrically(s: dict, loser: int, n: int = 4000) -> None:
    """The logit market at a temperature far below the score gap: every reviewing client of the worse provider moves
    to the better one, and nobody moves back (the wrong choice has probability ≤ exp(−gap/T) < 1e-20). So, given the
    first round's split, the loser keeps each of its n₀ clients through t reviews with probability q_t = (1 − r)^t
    independently: its share at round t is Binomial(n₀, q_t)/n, mean s₀q_t, SE sqrt(s₀q_t(1 − q_t)/n). Each round
    within 4 SE (10 rounds: a false alarm about 6e-4 of the time)."""
    series = np.asarray(s["per_round"]["provider_shares"])
    s0 = series[0][loser]
    assert s0 == pytest.approx(0.5, abs=4 * np.sqrt(0.25 / n))  # the initial providers: a fair coin per client
    for t in range(1, len(series)):
        q = (1 - REVIEW) ** t
        assert series[t][loser] == pytest.approx(s0 * q, abs=4 * np.sqrt(s0 * q * (1 - q) / n) + 1e-9), t
    assert s["provider_shares"] == pytest.approx(series[-1].tolist(), abs=1e-9)
    assert np.allclose(series.sum(axis=1), 1.0)
    assert s["money_residual_rel"] <= 1e-5


def test_market_share_flows_to_the_cheaper_provider():
    """Fees of 30% and 5% of the gain g = S = 0.125 (β·S as emitter plus 4 × (1 − β)S/4 as victim): u₀ = 0.0875,
    u₁ = 0.11875. Scores are the mean of the clients' averages ū ← 0.8ū + 0.2u. Provider 0's clients have always been
    with it; every client of provider 1 got u₁ this round: so U₁ − U₀ ≥ 0.2(u₁ − u₀) = 0.00625 every round.

    At T = 1e-4 (gap/T ≥ 62) the choice is a best response: provider 0 loses clients geometrically. At T = 0.00625 the
    first review is a genuine logit choice, gap/T = 1 exactly (in round 0 every ū is 0.2u_m): a reviewer picks
    provider 1 with probability π = 1/(1 + e⁻¹), so E[s₀(1)] = s₀(0)(1 − rπ) + s₁(0)·r(1 − π), with SE from the two
    binomials; within 4 SE."""
    hard, soft = sweep({"providers.temperature": [1e-4, 0.00625]}, providers__fee="[0.3,0.05]", **MARKET)
    _leaves_geometrically(hard, loser=0)
    assert hard["fees"] == pytest.approx(0.125 * sum(0.3 * (1 - sh[1]) + 0.05 * sh[1] for sh in
                                                     hard["per_round"]["provider_shares"]) * 4000, rel=1e-4)
    series = np.asarray(soft["per_round"]["provider_shares"])
    s0, s1, pi = series[0][0], series[0][1], 1 / (1 + np.exp(-1.0))
    leave, join = REVIEW * pi, REVIEW * (1 - pi)
    se = np.sqrt(s0 * leave * (1 - leave) / 4000 + s1 * join * (1 - join) / 4000)
    assert series[1][0] == pytest.approx(s0 * (1 - leave) + s1 * join, abs=4 * se)


def test_with_equal_fees_market_share_flows_to_the_better_advocates(run):
    """Skills ∓0.4 move the Nash power to β_e = 0.5 + (σ_e − mean σ_victims)/2. A client's gain is linear in the
    skills: its own skill adds S·σ/2 as emitter and S·σ/(2k) over its k bargains as victim, so a provider-1 client
    gains S(0.4 + 0.1) = 0.0625 more than it would with provider 0, whatever its neighbours' providers; the
    neighbours' part averages over ~2000 clients per provider (SD ≈ 0.2S/√2000 ≈ 6e-4), ≪ that. As above, the score gap
    is at least 0.2 × (1 − fee) × 0.0625 = 0.01125 ≫ T = 1e-4: provider 0 loses clients geometrically."""
    s = run(providers__fee=0.1, providers__skill="[-0.4,0.4]", providers__temperature=1e-4, **MARKET)
    _leaves_geometrically(s, loser=0)


def test_market_share_flows_to_the_provider_whose_protocol_closes_deals(run):
    """Provider 1's emitters do not bargain (protocol none): its clients lose the emitter's share β·S = 0.0625 of
    their gain, while the victims' part depends only on their emitters' providers ((1 − β)S/4 per emitter at provider
    0: SD of its mean over a provider's ~2000 clients ≈ 0.0156/√2000 ≈ 3.5e-4). The score gap is ≥ 0.2 × 0.0625 minus that, ≫ T = 1e-4: provider 1 loses clients
    geometrically. Every provider-0 bargain closes (identical agents), none of provider 1's."""
    s = run(providers__protocol="[nash,none]", providers__fee=0.0, providers__temperature=1e-4, **MARKET)
    assert s["provider_deal_rate"] == [1.0, 0.0]
    _leaves_geometrically(s, loser=1)


def test_code_of_conduct_bounds_reports():
    """Identical agents (SAME), emitter's right, advocates shading by 0.5: unbounded, the emitter reports â = 1.5a = 3
    and victims ĉ = 0.5c, so the reported first best 3 − 0.25 lies above x_sq = 2: no deal, activity 2. A code of
    conduct d < 0.5 binds every report to â = a(1 + d), ĉ = c(1 − d): x̂ = 1.5 + 2.5d, capped at x_sq = 2. So
    d = 0, 0.1, 0.2, 0.3 give activity 1.5, 1.75, 2, 2 and efficiency 1, 0.75, 0, 0 (W(x) = 2x − x²/2 − 0.5x).
    Exact up to float32 (rel 1e-5, abs 1e-5). (Without a code, activity 2: the selfish run of the altruism test.)"""
    rows = sweep({"providers.conduct": [0.0, 0.1, 0.2, 0.3]}, advocates__strategy="shade", advocates__shade=0.5,
                 mechanism__kind="nash", sim__rounds=2, **SAME)
    for row, d in zip(rows, (0.0, 0.1, 0.2, 0.3)):
        x = min(1.5 + 2.5 * d, 2.0)
        assert row["mean_activity"] == pytest.approx(x, rel=1e-5), d
        assert row["efficiency"] == pytest.approx((W(x) - W(2.0)) / (W(1.5) - W(2.0)), abs=1e-5), d
        assert row["layer_binding"]["provider"]["conduct"] == pytest.approx(1.0), d  # every report was moved
        assert row["deal_rate"] == (1.0 if x < 2.0 else 0.0), d


def test_each_provider_runs_its_own_protocol_in_the_bargains_its_clients_lead(run):
    # no switching: the same clients stay with the same providers, so a mixed market is, bargain by bargain, the
    # union of the two single-protocol markets (shading advocates report differently under nash and lindahl)
    base = dict(providers__count=2, advocates__strategy="shade", advocates__shade=0.3, sim__rounds=3,
                state__enforcement=0.9)
    mixed = run(providers__protocol="[nash,lindahl]", **base)
    nash = run(mechanism__kind="nash", **base)
    lindahl = run(mechanism__kind="lindahl", **base)
    assert mixed["provider_protocols"] == ["nash", "lindahl"]
    assert nash["provider_welfare"][0] != pytest.approx(lindahl["provider_welfare"][0], rel=1e-3)  # they differ
    for key in ("provider_welfare", "provider_deal_rate"):
        assert mixed[key][0] == pytest.approx(nash[key][0], rel=1e-5)
        assert mixed[key][1] == pytest.approx(lindahl[key][1], rel=1e-5)
    assert mixed["welfare"] == pytest.approx(sum(mixed["provider_welfare"]), rel=1e-5)
    assert mixed["money_residual_rel"] <= 1e-5 and mixed["state_violations"] == 0


# ---------------------------------------------------------------------------------------------------------------------
# individuals
# ---------------------------------------------------------------------------------------------------------------------

def test_no_victim_accepts_harm_above_its_red_line(run):
    s = run(mechanism__kind="nash", state__rights="victim", individual__red_line="uniform:0:0.5", sim__rounds=3)
    assert s["red_line_excess"] is not None and s["red_line_excess"] <= 1e-5
    # the red line binds in bargain i iff x̂ = clip(a − C, 0, 10) exceeds min_j r_j/(w c_j) (victim's right): its
    # probability p from an independent draw of 2·10⁵ bargains (SE ≤ 0.0012). The engine's 2000 bargains are
    # dependent only within ring distance 4 (shared victims), so the SE of their share is at most
    # √9·sqrt(p(1 − p)/2000); allow 4 of each
    rng, draws = np.random.default_rng(0), 200_000
    a, c, r = rng.uniform(1, 3, draws), rng.uniform(0, 2, (draws, 4)), rng.uniform(0, 0.5, (draws, 4))
    limit = np.min(np.where(c > 0, r / (0.25 * np.where(c > 0, c, 1.0)), np.inf), axis=1)
    p = np.mean(np.clip(a - 0.25 * c.sum(axis=1), 0, 10) > limit)
    se = 3 * np.sqrt(p * (1 - p) / 2000) + np.sqrt(p * (1 - p) / draws)
    assert s["layer_binding"]["individual"]["red_line"] == pytest.approx(p, abs=4 * se)
    plain = run(mechanism__kind="nash", state__rights="victim", sim__rounds=3)
    assert s["mean_activity"] < plain["mean_activity"]


def test_the_state_cap_wins_and_an_inner_red_line_only_narrows_it():
    """Victim's right, identical agents (SAME): a deal would buy x* = 1.5. Every victim's red line r = 0.025 allows
    at most r/(w c) = 0.025/(0.25·0.5) = 0.2 from each emitter. Under a state cap of 0.1 the red line is looser than
    the cap and the cap wins (x = 0.1, the red line never binds: an inner layer cannot widen the outer room); under
    caps of 0.3 and 1 it is tighter and narrows the deal to 0.2 (both bind). Exact up to float32."""
    rows = sweep({"state.activity_cap": [0.1, 0.3, 1.0]}, mechanism__kind="nash", state__rights="victim",
                 individual__red_line="constant:0.025", sim__rounds=2, **SAME)
    for row, x, red in zip(rows, (0.1, 0.2, 0.2), (0.0, 1.0, 1.0)):
        cap = row["setting"]["state.activity_cap"]
        assert row["mean_activity"] == pytest.approx(x, rel=1e-5), cap
        assert row["deal_rate"] == 1.0 and row["state_violations"] == 0, cap
        assert row["layer_binding"]["state"]["activity_cap"] == pytest.approx(1.0), cap
        assert row["layer_binding"]["individual"]["red_line"] == pytest.approx(red), cap
        assert row["red_line_excess"] <= 1e-6, cap
        assert row["money_residual_rel"] <= 1e-5, cap


def test_reservation_payment_vetoes_deals_that_gain_too_little():
    """Identical agents (SAME), truthful Nash, reservation payment ρ = 0.02 for everyone. The surplus S = 0.125 is
    split β·S to the emitter and (1 − β)S/4 to each victim: β = 0.05 gives the emitter 0.00625 < ρ (it vetoes),
    β = 0.2 gives 0.025 and 0.025 (both sign), β = 0.5 gives the victims 0.015625 < ρ (they veto). Deal rates exactly
    0, 1, 0; activity 2, 1.5, 2; the reservation binds in every vetoed bargain and in none of the others."""
    rows = sweep({"mechanism.bargaining_power": [0.05, 0.2, 0.5]}, mechanism__kind="nash",
                 individual__reservation="constant:0.02", sim__rounds=2, **SAME)
    for row, deal in zip(rows, (0.0, 1.0, 0.0)):
        beta = row["setting"]["mechanism.bargaining_power"]
        assert row["deal_rate"] == deal, beta
        assert row["mean_activity"] == pytest.approx(1.5 if deal else 2.0, rel=1e-5), beta
        assert row["layer_binding"]["individual"]["reservation"] == pytest.approx(1.0 - deal), beta


def test_altruism_scales_shading_down(run):
    """Identical agents (SAME), shading 0.5 scaled by 1 − α: selfish (α = 0) reports put x̂ above x_sq (no deal,
    efficiency 0, activity 2, see the conduct test); α = 0.8 leaves a shade of 0.1, so x̂ = 1.5 + 2.5·0.1 = 1.75 and
    efficiency 0.75 (where an unscaled shade would give 0). Exact up to float32."""
    base = dict(advocates__strategy="shade", advocates__shade=0.5, mechanism__kind="nash", sim__rounds=2, **SAME)
    for alpha, x in ((None, 2.0), (0.8, 1.75)):
        s = run(**base) if alpha is None else run(individual__altruism=f"constant:{alpha}", **base)
        assert s["mean_activity"] == pytest.approx(x, rel=1e-5), alpha
        assert s["efficiency"] == pytest.approx((W(x) - W(2.0)) / (W(1.5) - W(2.0)), abs=1e-5), alpha


# ---------------------------------------------------------------------------------------------------------------------
# sweeps
# ---------------------------------------------------------------------------------------------------------------------

def test_a_sweep_matches_separate_runs():
    from coasejax.simulate import build, run_sweep

    cfg = make_cfg(mechanism__kind="nash", state__transaction_costs__per_deal=0.05, sim__rounds=4)
    cfg.sweep = {"state.pigou_tax": [0.0, 0.7], "state.rights": ["emitter", "victim"]}
    rows = run_sweep(build(cfg))
    assert len(rows) == 4
    for row in rows:
        sets = {k.replace(".", "__"): v for k, v in row["setting"].items()}
        single = simulate(make_cfg(mechanism__kind="nash", state__transaction_costs__per_deal=0.05, sim__rounds=4,
                                   **sets))
        for key in ("efficiency", "welfare", "deal_rate", "tax_revenue"):
            assert row[key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), (row["setting"], key)


@pytest.mark.parametrize("rights", ["emitter", "victim"])
def test_the_budget_rule_holds_when_a_deal_is_breached(rights):
    """A party whose deal would pay it (the emitter under its right, victims under theirs) may join a bargain whose
    costs exceed its wealth, counting on the transfer; when enforcement fails it pays the costs and nothing comes in.
    The budget rule must hold in both outcomes (before the fix: 5 and 753 agents below zero in these runs; found by
    scripts/conservation_scale.sh at 10^4 rounds, where wealth drifts to near zero)."""
    s = simulate(make_cfg(population__n_agents=20000, sim__rounds=10, sim__envs=1, state__rights=rights,
                          state__budget_rule="true", state__enforcement=0.5, population__wealth="lognormal:-3:3",
                          state__transaction_costs__per_party=0.001, state__transaction_costs__per_round=0.001))
    assert s["deal_rate"] > 0 and s["breach_rate"] > 0.3  # deals were struck and about half of them breached
    assert s["state_violations"] == 0
