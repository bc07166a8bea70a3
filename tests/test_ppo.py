"""The multi-round Coase scenario (coasejax.envs.negotiation), PPO (coasejax.train.ppo) and `coasejax compare`.

Environment tests drive `negotiation.step` with scripted actions and check the accounting against closed forms;
training tests run small populations for a few dozen iterations and check the must-show claims at that scale (the
full-scale numbers are in BENCHMARKS.md, "PPO")."""

from __future__ import annotations

import json
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coasejax.config import load_config
from coasejax.envs import negotiation as env
from coasejax.mechanisms.alternating import finite_horizon_share, rubinstein_share
from coasejax.mechanisms.lindahl import free_riding_efficiency
from coasejax.train import ppo
from tests.conftest import run_cli


def _params(*overrides):
    cfg = load_config("coase_ppo", list(overrides))
    return cfg, env.Params.from_config(cfg)


@partial(jax.jit, static_argnums=0)
def _round(policy, p, state, t, seed, args):
    """One round under `policy(p, obs, state, *args)` (a module-level function: compiled once per policy and static
    scenario layout, whatever `p`'s arrays and `args`)."""
    acts = policy(p, env.observe(p, state), state, *args)
    before = {k: getattr(state, k) for k in ("a", "c", "regime", "cost", "opener", "breach")}
    state, r = env.step(jax.random.fold_in(jax.random.PRNGKey(seed + 1), t), state, p, acts)
    return state, (env.round_totals(p, r), {**before, "reward": r.reward, "gain_star": r.gain_star})


def _play(p, n, rounds, policy, *args, seed=0):
    """Run `rounds` rounds of `n` bargains with `policy(p, obs, state, *args) -> actions`. Returns the final state,
    the per-group totals summed over the rounds, and a per-round trace (numpy, leading axis the round): each
    bargain's types and episode draws before the step (`a`, `c`, `regime` and `cost` indices, `opener`, the
    emitter's breach probability `breach`) and what the step paid each seat (`reward` f32[T, 2, N]) and recorded
    (`gain_star`)."""
    state = env.reset(jax.random.PRNGKey(seed), p, n)
    args = tuple(jnp.float32(a) for a in args)
    totals, trace = [], []
    for t in range(rounds):
        state, (tot, tr) = _round(policy, p, state, jnp.int32(t), jnp.int32(seed), args)
        totals.append(tot)
        trace.append(tr)
    trace = {k: np.stack([np.asarray(tr[k]) for tr in trace]) for k in trace[0]}
    return state, dict(zip(env.TOTALS, np.sum([np.asarray(x) for x in totals], 0))), trace


def _surplus(a, c, emitter_right):
    """The per-round surplus of the deal from THEORY.md ("Externalities"), in float64, written from the closed
    forms rather than from the environment: under the emitter's right C²/2 where C ≤ a (x* = a − C), else the
    corner x* = 0, C a − a²/2; under the victims' right (a − C)²/2 where a > C, else 0. (x_max = 10 never binds:
    a ≤ 3 in every scenario here.)"""
    a, c = np.asarray(a, np.float64), np.asarray(c, np.float64)
    emitter = np.where(c <= a, c**2 / 2, c * a - a**2 / 2)
    victims = np.where(a > c, (a - c) ** 2 / 2, 0.0)
    return np.where(emitter_right, emitter, victims)


def _discounted_length(delta, rounds):
    """Σ_{k<L} δ^k: the discounted length of an L-round contract (summed, not the environment's closed form)."""
    return sum(delta**k for k in range(rounds))


#: float32 round-off of one round's reward: the step forms B(x) − B(x_sq) + T with T = B(x_sq) − B(x*) + share·S,
#: about ten operations on magnitudes ≤ B(3) = 4.5 at ε = 6·10⁻⁸ (≤ 3·10⁻⁶); 2·10⁻⁵ leaves margin. A share paid 10%
#: off (0.07·S) exceeds it wherever S > 3·10⁻⁴, i.e. in all but a few bargains.
PAY_TOL = 2e-5


def _spe(p, obs, state, dem_e, dem_v, participate=None):
    """Stationary subgame-perfect play: each side demands its opening share when it proposes (the emitter `dem_e`,
    the victims `dem_v`) and, responding, accepts exactly what it would get by rejecting (δ times its own proposing
    share, less a hair); both take part (or where `participate(p, state)`)."""
    n = obs.shape[1]
    d = p.discount
    part = jnp.ones((n,)) if participate is None else participate(p, state).astype(jnp.float32)
    e = jnp.stack([jnp.full((n,), dem_e), jnp.full((n,), d[0] * dem_e - 1e-4), jnp.ones((n,)), part], -1)
    v = jnp.stack([jnp.full((n,), dem_v), jnp.full((n,), d[1] * dem_v - 1e-4), jnp.ones((n,)), part], -1)
    return jnp.stack([e, v])


def _worth(p, state):
    """Take part iff the contract can pay both sides' costs (`deal_threshold`)."""
    _, _, _, s = env.bargain_terms(p, state.a, state.c, state.regime)
    return p.costs[state.cost] <= env.deal_threshold(p, s)


def _spe_if_worth(p, obs, state, dem_e, dem_v):
    return _spe(p, obs, state, dem_e, dem_v, participate=_worth)


def _lindahl(p, obs, state, report_v):
    """Lindahl: the emitter reports its benefit truthfully, the victims `report_v` times their harm."""
    n = obs.shape[1]
    e = jnp.stack([jnp.full((n,), 0.5), jnp.full((n,), 0.5), jnp.ones((n,)), jnp.ones((n,))], -1)
    return jnp.stack([e, e.at[:, 2].set(report_v)])


def test_rubinstein_split_matches_the_closed_forms():
    _, p = _params("mechanism.horizon=400", "mechanism.discount_emitter=0.9", "mechanism.discount_victims=0.8")
    assert float(env.rubinstein_split(p)) == pytest.approx(rubinstein_share(0.9, 0.8), abs=1e-5)
    _, p = _params("mechanism.horizon=7", "mechanism.discount_emitter=0.85", "mechanism.discount_victims=0.85")
    assert float(env.rubinstein_split(p)) == pytest.approx(finite_horizon_share(0.85, 7), abs=1e-5)


@pytest.mark.parametrize("regime", ["emitter", "victim"])
def test_subgame_perfect_play_agrees_at_once_and_is_efficient(regime):
    """Rubinstein play with no costs: every negotiation ends at the first offer and every round runs at the first
    best, so each round pays the emitter its Rubinstein share x₁ = (1 − δ_v)/(1 − δ_e δ_v) of the surplus and the
    victims 1 − x₁, bargain by bargain, the surplus from THEORY.md's closed forms (C²/2 or (a − C)²/2)."""
    _, p = _params(f"env.regimes=[{regime}]", "env.cost_grid=[0.0]", "mechanism.horizon=400")
    x1 = rubinstein_share(0.9, 0.8)  # emitter opens: (1 − δ_v)/(1 − δ_e δ_v)
    x2 = rubinstein_share(0.8, 0.9)  # the victims' share when they propose
    _, _, tr = _play(p, 4096, 40, _spe, x1, x2)
    s = _surplus(tr["a"], tr["c"], regime == "emitter")
    # what each seat was paid, every round of every bargain (a rejected first offer would pay 0 that round)
    np.testing.assert_allclose(tr["reward"][:, 0], x1 * s, atol=PAY_TOL)
    np.testing.assert_allclose(tr["reward"][:, 1], (1 - x1) * s, atol=PAY_TOL)
    # in total (a systematic error in the split shows here even where single surpluses are tiny): relative
    # round-off of a float32 sum of 1.6·10⁵ terms ≤ 10⁻⁵
    assert tr["reward"][:, 0].sum() / s.sum() == pytest.approx(x1, abs=1e-5)
    assert tr["reward"].sum() / s.sum() == pytest.approx(1.0, abs=1e-5)  # efficiency 1: all of the surplus paid out
    np.testing.assert_allclose(tr["gain_star"], s, atol=PAY_TOL)  # the recorded first best is the closed form's


def test_a_random_opener_gives_each_side_its_own_rubinstein_share():
    """`mechanism.first_mover: random`: about half the episodes open with each side, and subgame-perfect play pays
    each opener its own share (the emitter (1 − δ_v)/(1 − δ_e δ_v), the victims (1 − δ_e)/(1 − δ_e δ_v)) every
    round of the contract, bargain by bargain."""
    _, p = _params("mechanism.first_mover=random", "env.cost_grid=[0.0]", "mechanism.horizon=400")
    x_e, x_v = rubinstein_share(0.9, 0.8), rubinstein_share(0.8, 0.9)

    n, rounds, length = 8192, 24, 8
    _, _, tr = _play(p, n, rounds, _spe, x_e, x_v)  # each side demands its opening share (stationary SPE)
    right = np.asarray([r == "emitter" for r in env.grids(load_config("coase_ppo"))[1]])[tr["regime"]]
    s = _surplus(tr["a"], tr["c"], right)
    opener_e = tr["opener"]
    share_e = np.where(opener_e, x_e, 1 - x_v)  # the emitter's share: its own when it opens, else what is left
    np.testing.assert_allclose(tr["reward"][:, 0], share_e * s, atol=PAY_TOL)
    np.testing.assert_allclose(tr["reward"][:, 1], (1 - share_e) * s, atol=PAY_TOL)
    for side, opens, x in ((0, opener_e, x_e), (1, ~opener_e, x_v)):  # each opener's share of what its bargains made
        assert tr["reward"][:, side][opens].sum() / s[opens].sum() == pytest.approx(x, abs=1e-5)
    # the opener is a fair coin per episode: episodes start every `length` rounds (immediate agreement, no breach:
    # the types change exactly there), so there are n·rounds/length independent draws; 4 standard errors,
    # SE = sqrt(1/4 / draws)
    changed = tr["a"][1:] != tr["a"][:-1]  # f32[T − 1, N]: a fresh draw (equal by chance with probability 2⁻²⁴)
    starts = np.arange(1, rounds) % length == 0
    assert not changed[~starts].any() and changed[starts].mean() > 1 - 1e-4
    draws = opener_e[::length]
    assert draws.mean() == pytest.approx(0.5, abs=4 * np.sqrt(0.25 / draws.size))
    assert float(env.rubinstein_split(p, emitter_first=False)) == pytest.approx(x_v, abs=1e-5)


def test_the_share_error_counts_an_opener_that_never_agrees_at_once():
    """`proposer_share_error` is each opener's distance from its Rubinstein share in first-offer agreements: about 0
    under subgame-perfect play, and the full theory share (not 0) for an opener whose negotiations opened but never
    agreed at the first offer (both sides demand 0.9 and accept only δ·0.9)."""
    from coasejax.scenarios.coase_rounds import summarise_totals

    _, p = _params("mechanism.first_mover=random", "env.cost_grid=[0.0]", "mechanism.horizon=400")
    x_e, x_v = rubinstein_share(0.9, 0.8), rubinstein_share(0.8, 0.9)
    for dem_e, dem_v, error in ((x_e, x_v, 0.0), (0.9, 0.9, max(x_e, x_v))):
        _, totals, _ = _play(p, 2048, 12, _spe, dem_e, dem_v)
        m = summarise_totals(p, jnp.asarray(np.stack([totals[k] for k in env.TOTALS])), jnp.ones((2, 1)))
        assert float(m["proposer_share_error"]) == pytest.approx(error, abs=2e-4), (dem_e, m["proposer_share"])


def test_deals_worth_their_costs_reach_the_analytic_curve():
    """Sides that take part iff the contract pays both their costs (`deal_threshold`) and agree at once get, bargain
    by bargain, what the closed form says: a deal iff the contract's discounted surplus covers both sides' cost κ,
    κ/(S A_e) + κ/(S A_v) ≤ 1 (A = Σ_{k<L} δ^k, S = C²/2 or (a − C)²/2 as in THEORY.md), paying each side its share
    of S every contract round less κ in the first; no deal pays nothing. The efficiency and deal-rate curves the
    environment records for BENCHMARKS (analytic_deal, analytic_gain) are the closed form's, group by group."""
    cfg, p = _params("mechanism.horizon=400")
    x1, x2 = rubinstein_share(0.9, 0.8), rubinstein_share(0.8, 0.9)

    n, rounds = 8192, 48
    length = cfg.env.contract_rounds
    _, t, tr = _play(p, n, rounds, _spe_if_worth, x1, x2)
    costs, regimes = env.grids(cfg)
    kappa = np.asarray(costs, np.float64)[tr["cost"]]
    right = np.asarray([r == "emitter" for r in regimes])[tr["regime"]]
    s = _surplus(tr["a"], tr["c"], right)
    a_e, a_v = _discounted_length(0.9, length), _discounted_length(0.8, length)
    deal = kappa * (1 / a_e + 1 / a_v) <= s  # the closed form's decision, per round of each episode
    first = (np.arange(rounds) % length == 0)[:, None]  # episodes last L rounds, deal or not, and start together
    np.testing.assert_allclose(tr["reward"][:, 0], np.where(deal, x1 * s - first * kappa, 0.0), atol=PAY_TOL)
    np.testing.assert_allclose(tr["reward"][:, 1], np.where(deal, (1 - x1) * s - first * kappa, 0.0), atol=PAY_TOL)
    # the curves, per group (regime · Gc + cost): deal rate over episodes and efficiency (L S − 2κ)·deal / (L S)
    group = (tr["regime"] * len(costs) + tr["cost"])[::length].ravel()
    d0, s0, k0 = deal[::length].ravel(), s[::length].ravel(), kappa[::length].ravel()
    g = len(costs) * len(regimes)
    episodes = np.bincount(group, minlength=g)
    deal_rate = np.bincount(group, d0, minlength=g) / episodes
    efficiency = np.bincount(group, d0 * (length * s0 - 2 * k0), minlength=g) / np.bincount(group, length * s0, g)
    np.testing.assert_array_equal(t["started"], episodes)
    np.testing.assert_allclose(t["analytic_deal"] / t["started"], deal_rate, atol=1e-6)
    np.testing.assert_allclose(t["agreed"] / t["started"], deal_rate, atol=1e-6)
    np.testing.assert_allclose(t["analytic_gain"] / t["episode_value"], efficiency, atol=1e-5)
    # what was paid, summed over both seats per group, against the same curve (float32 sums: 10⁻⁵ relative)
    paid = np.bincount((tr["regime"] * len(costs) + tr["cost"]).ravel(), tr["reward"].sum(1).ravel(), minlength=g)
    np.testing.assert_allclose(paid / np.bincount(group, length * s0, g), efficiency, atol=1e-5)
    assert np.all(np.diff(efficiency.reshape(2, -1), axis=1) < 0)  # falls with the cost, under either regime
    assert np.all(np.diff(deal_rate.reshape(2, -1), axis=1) < 0)


@pytest.mark.parametrize("first", ["emitter", "victims"])
def test_strategic_split_is_the_limit_of_backward_induction(first):
    """With per-round costs, the opener's stationary share (`strategic_split`) equals backward induction over a
    long horizon (each responder accepts exactly δ_r (its next share − k_r)), and the participation test matches."""
    _, p = _params(f"mechanism.first_mover={first}")
    d = {"emitter": 0.9, "victims": 0.8}
    a_len = np.asarray(env.contract_length(p))
    for surplus, cost in [(1.0, 0.0), (1.0, 0.3), (0.5, 0.2), (0.2, 0.3), (2.0, 0.05), (0.1, 0.2), (0.3, 0.25),
                          (0.05, 1.0)]:
        k = {"emitter": cost / (surplus * a_len[0]), "victims": cost / (surplus * a_len[1])}
        sides = ["emitter", "victims"] if first == "emitter" else ["victims", "emitter"]
        share = 1.0  # the last proposer takes everything
        for h in reversed(range(399)):  # offer h's proposer; the responder proposes at h + 1 with share `share`
            responder = sides[(h + 1) % 2]
            share = 1.0 - max(0.0, d[responder] * (share - k[responder]))
        f, joins = env.strategic_split(p, jnp.float32(surplus), jnp.float32(cost))
        o, r = sides
        assert float(f) == pytest.approx(share, abs=1e-4), (surplus, cost)
        assert bool(joins) == (share >= k[o] and 1 - share >= k[r])


def test_drift_makes_long_contracts_stale():
    """Drifting types: a contract keeps the activity x_c = x*(a₀, C₀) and the transfer of its signing while a and C
    drift, so each round pays the emitter B_t(x_c) − B_t(x_sq,t) + T₀ and the victims −C_t (x_c − x_sq,t) − T₀
    (T₀ = B₀(x_sq,0) − B₀(x_c) + x₁ S₀), recomputed here from the types of each round; the first best moves, so
    efficiency falls below 1, and more so the longer contracts last."""
    x1, x2 = rubinstein_share(0.9, 0.8), rubinstein_share(0.8, 0.9)
    right_of = np.asarray([r == "emitter" for r in env.grids(load_config("coase_ppo"))[1]])
    eff = {}
    for length in (2, 16):
        _, p = _params("population.drift=0.1", f"env.contract_rounds={length}", "env.cost_grid=[0.0]",
                       "mechanism.horizon=400")
        rounds = 48
        _, _, tr = _play(p, 4096, rounds, _spe, x1, x2)
        a, c, right = tr["a"].astype(np.float64), tr["c"].astype(np.float64), right_of[tr["regime"]]
        x_sq = np.where(right, a, 0.0)
        start = (np.arange(rounds) // length) * length  # immediate agreement: episodes start every L rounds
        a0, c0, sq0 = a[start], c[start], x_sq[start]
        x_c = np.clip(a0 - c0, 0.0, None)
        b = lambda a_, x: a_ * x - x * x / 2  # noqa: E731
        t0 = b(a0, sq0) - b(a0, x_c) + x1 * _surplus(a0, c0, right)
        np.testing.assert_allclose(tr["reward"][:, 0], b(a, x_c) - b(a, x_sq) + t0, atol=PAY_TOL)
        np.testing.assert_allclose(tr["reward"][:, 1], -c * (x_c - x_sq) - t0, atol=PAY_TOL)
        s = _surplus(a, c, right)  # this round's first best
        np.testing.assert_allclose(tr["gain_star"], s, atol=PAY_TOL)
        eff[length] = tr["reward"].sum() / s.sum()
    assert eff[16] < eff[2] < 1.0 - 1e-3, eff


def test_breaches_follow_the_enforcement_probability_and_feed_reputation():
    """Enforcement e = 0.8: emitter i breaches each contract round with q_i = 2(1 − e)u_i, u_i ~ U(0, 1), so
    q ~ U(0, 0.4) with mean 1 − e. A breached round pays neither seat (status quo, no transfer); agreements are
    immediate, so every round is a contract round, and its expected welfare is (1 − q_i) S. Reputation, the moving
    average of honoured rounds (weight w = 0.1, from 1), after T rounds has E[rep | q] = 1 − (1 − (1 − w)^T) q."""
    _, p = _params("state.enforcement=0.8", "env.cost_grid=[0.0]", "mechanism.horizon=400")
    x1, x2 = rubinstein_share(0.9, 0.8), rubinstein_share(0.8, 0.9)
    n, rounds = 8192, 40
    state, _, tr = _play(p, n, rounds, _spe, x1, x2)
    right = np.asarray([r == "emitter" for r in env.grids(load_config("coase_ppo"))[1]])[tr["regime"]]
    s = _surplus(tr["a"], tr["c"], right)
    q = tr["breach"].astype(np.float64)  # the emitter's breach probability, constant over the rounds
    paid = tr["reward"].sum(1)
    honoured = np.abs(paid - s) <= PAY_TOL  # what the round paid: all of the surplus, or (breached) nothing
    np.testing.assert_allclose(tr["reward"][:, 0], np.where(honoured, x1 * s, 0.0), atol=PAY_TOL)
    np.testing.assert_allclose(tr["reward"][:, 1], np.where(honoured, (1 - x1) * s, 0.0), atol=PAY_TOL)
    live = s > 1e-3  # rounds whose payment tells a breach from a kept contract
    # the breach probabilities: mean 1 − e = 0.2 over the n emitters, SE = sd(q)/√n = 0.4/√(12 n)
    assert q[0].mean() == pytest.approx(0.2, abs=4 * 0.4 / np.sqrt(12 * n))
    # breaches paid against those probabilities, round by round: Bernoulli(q), SE = sqrt(Σ q(1 − q))/count
    breached = ~honoured[live]
    assert breached.mean() == pytest.approx(q[live].mean(), abs=4 * np.sqrt(np.sum(q[live] * (1 - q[live])))
                                            / live.sum())
    # efficiency: E = Σ (1 − q) S / Σ S; SE = sqrt(Σ S² q(1 − q)) / Σ S
    expected = np.sum((1 - q) * s) / s.sum()
    assert paid.sum() / s.sum() == pytest.approx(expected, abs=4 * np.sqrt(np.sum(s**2 * q * (1 - q))) / s.sum())
    # ... which is e = 0.8 in expectation (S is drawn independently of q): the S-weighted mean of the n emitters'
    # q_i, weights W_i = Σ_t S_it, has SE = sd(q) sqrt(Σ W²)/Σ W
    w = s.sum(0)
    assert expected == pytest.approx(0.8, abs=4 * 0.4 / np.sqrt(12) * np.sqrt(np.sum(w**2)) / w.sum())
    # reputation reveals who breaches: regressed on q, slope −(1 − (1 − w)^T), 4 standard errors of the OLS slope
    # (SE = residual sd / (sd(q) √n))
    rep, q0 = np.asarray(state.reputation, np.float64), q[0]
    slope, intercept = np.polyfit(q0, rep, 1)
    resid = rep - (slope * q0 + intercept)
    assert slope == pytest.approx(-(1 - 0.9**rounds), abs=4 * resid.std() / (q0.std() * np.sqrt(n)))


def test_truthful_lindahl_gives_the_victims_nothing_and_shading_pays():
    """Lindahl with one victims' coalition (emitter's right, a ≥ 2 > C/2 so nothing clips): truthful prices give
    the victims zero gain (they pay C per unit for the C units of abatement) and the emitter the whole C²/2;
    reporting half the harm, the complete-information free-riding report, sets price C/2 and abatement C/2, so the
    victims gain C·C/2 − (C/2)² = C²/4 per round, the emitter −(C/2)²/2 + C²/4 = C²/8, and efficiency is
    (3C²/8)/(C²/2) = 3/4 = free_riding_efficiency(1) — checked on what each seat is paid, bargain by bargain."""
    _, p = _params("mechanism.kind=lindahl", "env.regimes=[emitter]", "env.cost_grid=[0.0]",
                   "population.benefit=uniform:2:3", "population.harm=uniform:0:2")

    n, rounds, length = 4096, 24, 8
    _, _, tr = _play(p, n, rounds, _lindahl, 1.0)
    c2 = tr["c"].astype(np.float64) ** 2
    np.testing.assert_allclose(tr["reward"][:, 1], 0.0, atol=PAY_TOL)
    np.testing.assert_allclose(tr["reward"][:, 0], c2 / 2, atol=PAY_TOL)
    _, _, tr = _play(p, n, rounds, _lindahl, 0.5)
    c2 = tr["c"].astype(np.float64) ** 2
    np.testing.assert_allclose(tr["reward"][:, 1], c2 / 4, atol=PAY_TOL)
    np.testing.assert_allclose(tr["reward"][:, 0], c2 / 8, atol=PAY_TOL)
    assert tr["reward"].sum() / (c2 / 2).sum() == pytest.approx(free_riding_efficiency(1), abs=1e-5)
    # and the population mean against the expectation over C ~ U(0, 2): E[C²]/4 = 1/3 per round, within 4 standard
    # errors of the n·rounds/L independent episodes (C is fixed for an episode's L rounds, drawn afresh after):
    # SE = sd(C²/4)/sqrt(episodes), Var(C²) = E[C⁴] − E[C²]² = 16/5 − 16/9
    episodes = n * rounds // length
    se = np.sqrt(16 / 5 - 16 / 9) / 4 / np.sqrt(episodes)
    assert tr["reward"][:, 1].mean() == pytest.approx(1 / 3, abs=4 * se)


def test_gae_matches_a_reference_loop():
    cfg = load_config("coase_ppo", ["population.n_agents=8", "train.minibatches=1", "train.gae_lambda=0.9"])
    algo = ppo.PPO(cfg)
    rng = np.random.default_rng(0)
    T, n = 6, 8
    value = rng.normal(size=(T, 2, n)).astype(np.float32)
    reward = rng.normal(size=(T, 2, n)).astype(np.float32)
    done = rng.random((T, n)) < 0.3
    last = rng.normal(size=(2, n)).astype(np.float32)
    adv, ret = algo.gae(jnp.asarray(value), jnp.asarray(reward), jnp.asarray(done), jnp.asarray(last))
    gamma = np.array([0.9, 0.8])[:, None]
    ref = np.zeros((T, 2, n))
    nxt_adv, nxt_v = np.zeros((2, n)), last
    for t in reversed(range(T)):
        keep = 1.0 - done[t][None, :]
        delta = reward[t] + gamma * nxt_v * keep - value[t]
        ref[t] = delta + gamma * 0.9 * keep * nxt_adv
        nxt_adv, nxt_v = ref[t], value[t]
    np.testing.assert_allclose(np.asarray(adv), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), ref + value, rtol=1e-5, atol=1e-5)


SMALL = ["population.n_agents=256", "train.minibatches=2", "train.rollout=8", "train.iterations=20",
         "train.log_every=10", "checkpoint.every=10", "env.eval_rounds=8"]


def _leaves(run):
    from coasejax import checkpoint as ckpt
    import orbax.checkpoint as ocp

    mngr = ckpt.manager(run / "checkpoints", read_only=True)
    step = mngr.latest_step()
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    return step, [np.asarray(x) for x in jax.tree.leaves(state)]


def test_ppo_resumed_from_a_checkpoint_ends_bit_identical(tmp_path):
    """A run resumed from its step-10 checkpoint (environment, pool and RNG included) ends where the uninterrupted
    run does; the checkpoint records what `compare` needs."""
    import shutil

    from coasejax import checkpoint as ckpt
    from coasejax.train.run import Trainer, make_algo, train

    cfg = load_config("coase_ppo_providers", SMALL + ["train.pool_size=2", "train.pool_every=5",
                                                      "train.pool_prob=0.3"])
    full, part = tmp_path / "full", tmp_path / "part"
    trainer = Trainer(cfg, make_algo(cfg))  # one set of compiled chunks for both runs (as a new process's would be)
    summary = train(cfg, full, trainer=trainer)
    assert summary["algo"] == "ppo" and summary["checkpoint_steps"] == [10, 20]
    shutil.copytree(full / "checkpoints" / "10", part / "checkpoints" / "10")
    train(cfg, part, resume=True, trainer=trainer)
    (sa, la), (sb, lb) = _leaves(full), _leaves(part)
    assert sa == sb == 20 and len(la) == len(lb)
    for a, b in zip(la, lb):
        np.testing.assert_array_equal(a, b)
    # the opponent pool took a snapshot every 5 iterations: the latest (slot 1 of 2 after 4 snapshots) is the final
    # parameters
    import orbax.checkpoint as ocp

    with ckpt.manager(full / "checkpoints", read_only=True) as mngr:
        state = mngr.restore(20, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
        meta = ckpt.saved_meta(mngr, 20)
    assert int(np.asarray(state["pool_count"]).reshape(-1)[0]) == 4
    for pool_leaf, leaf in zip(jax.tree.leaves(state["pool"]), jax.tree.leaves(state["params"])):
        np.testing.assert_array_equal(np.asarray(pool_leaf)[:, 1], np.asarray(leaf))
    assert meta["scenario"] == "coase_rounds" and meta["observation"] == list(env.OBSERVATION)
    assert meta["actions"] == list(env.ACTIONS) and meta["advocates"] == ["learned", "truthful"]
    assert len(meta["config_hash"]) == 16 and meta["version"]


def test_ppo_in_the_engine_is_efficient_under_both_regimes_and_deploys_at_a_million(tmp_path):
    """Issue 15's PPO must-show, at a reduced training budget: PPO trains the multi-round Coase scenario (alternating
    offers, 8-round contracts, zero negotiation cost, the rights regime drawn per episode from [emitter, victim]) on
    N = 2048 bargains; its evaluation reaches efficiency ≥ 0.95 under each regime, and the opener's share has moved
    from the initial equal split (error 0.714 − 0.5 = 0.214 against Rubinstein's) toward Rubinstein's, so the
    policies were trained and still agree. `simulate` then deploys the checkpoint (`advocates.policy: RUN_DIR`) at
    N = 10⁶ with the scenario's own summary: efficiency ≥ 0.95 under each regime, and within 0.01 of the training
    evaluation's (the same as the ES must-show's tolerance; both are means over ≥ 6·10⁴ bargain rounds of
    near-certain first-offer agreements)."""
    from coasejax.simulate import simulate
    from coasejax.train.run import train

    run = tmp_path / "ppo"
    cfg = load_config("coase_ppo", ["population.n_agents=2048", "env.cost_grid=[0.0]", "env.regimes=[emitter,victim]",
                                    "train.iterations=40", "train.rollout=8", "train.epochs=5", "train.minibatches=2",
                                    "train.learning_rate=0.001", "train.log_every=20", "checkpoint.every=40"])
    summary = train(cfg, run)
    eff = np.asarray(summary["efficiency_by_group"])  # one group per regime (one cost)
    assert eff.shape == (2,) and np.all(eff >= 0.95), eff
    assert summary["rubinstein_share"] == pytest.approx(rubinstein_share(0.9, 0.8), abs=1e-4)
    assert summary["proposer_share_error"] < 0.18, (summary["proposer_share"], summary["rubinstein_share"])
    curve = summary["cost_curve"]["curve"]  # the scenario's train_summary hook: its deal rate against its costs
    assert [r["regime"] for r in curve] == ["emitter", "victim"] and all(r["efficiency"] >= 0.95 for r in curve)

    sim_cfg = load_config("coase_ppo", ["population.n_agents=1000000", "env.cost_grid=[0.0]",
                                        "env.regimes=[emitter,victim]", f"advocates.policy={run}", "sim.rounds=16"])
    out = simulate(sim_cfg)
    assert out["scenario"] == "coase_rounds" and out["advocates"] == [f"{run}:40"]
    assert out["n_agents"] == 1_000_000 and out["burn_in"] == 10 and out["rounds"] == 16
    sim_eff = np.asarray(out["efficiency_by_group"])
    assert np.all(sim_eff >= 0.95), sim_eff
    assert out["efficiency"] >= 0.95
    assert out["efficiency"] == pytest.approx(summary["efficiency"], abs=0.01)
    np.testing.assert_allclose(sim_eff, eff, atol=0.01)


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "coasejax.cli", *args], capture_output=True, text=True, timeout=600)


def test_trained_provider_beats_scripted_truthful_and_compare_reports_it(tmp_path):
    """Lindahl contributions, two providers, clients switching: the provider whose advocates PPO trains wins market
    share and client utility over the scripted truthful one; `compare` finds that significant, and reports a policy
    against itself (how often such a pair comes out significant is tested on its own:
    test_compare_reports_significance_at_its_nominal_level). "Wins market share": more than half the clients, by
    more than 4 standard errors of an even split of the n = 1000 clients, SE = sqrt(1/4 / n) (averaging over rounds
    only lowers it)."""
    run = tmp_path / "run"
    r = run_cli("train", "coase_ppo_providers", "--out", str(run), "-q", "--set", "population.n_agents=1000",
             "--set", "train.iterations=10", "--set", "checkpoint.every=10", "--set", "train.minibatches=4")
    assert r.code == 0, r.stderr
    summary = json.loads((run / "summary.json").read_text())
    shares, utility = summary["provider_shares"], summary["provider_utility"]
    even_split = 0.5 + 4 * np.sqrt(0.25 / 1000)
    assert shares[0] > even_split and utility[0] > utility[1], (shares, utility)
    for key in ("efficiency", "deal_rate", "mean_activity", "first_best_mean_activity", "breach_rate"):
        assert key in summary
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(len(row["train_provider_shares"]) == 2 for row in log)  # market shares over training
    assert (run / "provider_shares.png").stat().st_size > 10_000

    out = tmp_path / "cmp"
    r = run_cli("compare", str(run), "scripted:truthful", str(run), "--out", str(out), "--seeds", "6",
             "--rounds", "16")
    assert r.code == 0, r.stderr
    result = json.loads((out / "compare.json").read_text())
    assert (out / "compare.png").stat().st_size > 10_000
    vs_truthful, vs_self = result["pairs"][0], result["pairs"][1]
    assert vs_truthful["b"] == "scripted:truthful"
    assert vs_truthful["significant"] and vs_truthful["winner"] == vs_truthful["a"]
    assert vs_truthful["share_a"] > even_split and vs_truthful["utility_diff_ci"][0] > 0
    # a policy against itself: each pair is played with the seats swapped on the same populations and draws, so a
    # policy's two seats average to the same numbers as its twin's: the difference is exactly zero
    assert vs_self["a"] == vs_self["b"] and vs_self["utility_diff"] == 0.0 and not vs_self["significant"]
    assert result["ranking"][-1]["entry"] == "scripted:truthful"


def test_compare_names_what_differs_and_rejects_bad_entries(tmp_path):
    from coasejax.eval import compare as cmp

    meta = {"observation": list(env.OBSERVATION), "actions": list(env.ACTIONS), "policy_hidden": [32, 32]}
    a = cmp.Entry(name="A", kind="learned", meta=meta)
    b = cmp.Entry(name="B", kind="learned", meta={**meta, "observation": list(env.OBSERVATION)[:-1]})
    with pytest.raises(cmp.CompareError, match="B: incompatible with A: observation differs"):
        cmp.check_compatible([a, b])
    c = cmp.Entry(name="C", kind="learned", meta={**meta, "scenario": "coase"})
    with pytest.raises(cmp.CompareError, match="C: incompatible with A: scenario differs"):
        cmp.check_compatible([a, c])
    a_rounds = cmp.Entry(name="A", kind="learned", meta={**meta, "scenario": "coase_rounds"})
    with pytest.raises(cmp.CompareError, match="no scripted advocate 'shade'"):
        cmp.check_compatible([a_rounds, cmp.load_entry("scripted:shade")])
    r = _cli("compare", str(tmp_path / "nope"), "scripted:truthful", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "not a run directory" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _cli("compare", "scripted:truthful", "scripted:truthful", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "at least one checkpoint" in r.stderr


def test_holm_adjustment():
    from coasejax.eval.compare import holm

    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


class _SimulatedArena:
    """Stands in for compare's `_Arena`: each seed's client utility of the two seats drawn afresh, i.i.d.
    normal with sd 1 (a policy against itself on different draws), the first seat's mean shifted by `shift`."""

    shift = 0.0

    def __init__(self, scenario, n, rounds, switching_rate, seeds, seed):
        self.rng, self.seeds = np.random.default_rng(seed), seeds

    def play(self, a, b):
        u = self.rng.normal(size=(self.seeds, 2))
        u[:, 0] += self.shift
        return {"utility": u}


@pytest.mark.parametrize("effect", [0.0, 1.0])
def test_compare_reports_significance_at_its_nominal_level(effect, monkeypatch):
    """`compare`'s verdict over many independent replications of one pair with 10 seeds, the per-seed utilities
    simulated. The same policy on different draws (no effect): "significant" in a share α = 0.05 of the
    replications, within 4 binomial standard errors, SE = sqrt(α(1 − α)/R). A true difference of one sd per seed
    (differences of the two seats ~ N(1, 2), effect size 1/√2 per paired difference): the paired t-test's power,
    P(|T| > t₀.₉₇₅,₉) with T noncentral t (9 d.f., noncentrality √10/√2), within 4 SE = sqrt(π(1 − π)/R)."""
    from scipy import stats

    from coasejax.eval import compare as cmp

    monkeypatch.setattr(cmp, "_Arena", _SimulatedArena)
    monkeypatch.setattr(_SimulatedArena, "shift", effect)
    cfg = load_config("coase_ppo")
    entry = cmp.Entry(name="P", kind="learned", cfg=cfg, meta={"scenario": "coase_rounds"})
    seeds, alpha = 10, 0.05
    reps = 1000 if effect == 0.0 else 300
    verdicts = [cmp.compare([entry, entry], seeds=seeds, seed=r, alpha=alpha)["pairs"][0]["significant"]
                for r in range(reps)]
    df, nc = seeds - 1, effect * np.sqrt(seeds) / np.sqrt(2)
    t0 = stats.t.ppf(1 - alpha / 2, df)
    expected = alpha if effect == 0.0 else stats.nct.sf(t0, df, nc) + stats.nct.cdf(-t0, df, nc)
    assert np.mean(verdicts) == pytest.approx(expected, abs=4 * np.sqrt(expected * (1 - expected) / reps))


def test_compare_auction_policies_head_to_head(tmp_path):
    """Auctions: a learned first-price policy against truthful bidding (which earns nothing when it wins) wins
    significantly; a policy against itself on the same auctions differs by exactly zero."""
    run = tmp_path / "fp"
    r = run_cli("train", "auction_first_price", "--out", str(run), "-q", "--set", "train.iterations=100",
             "--set", "train.log_every=50", "--set", "checkpoint.every=100", "--set", "train.population=64",
             "--set", "train.eval_opponents=4096", "--set", "train.eval_values=256")
    assert r.code == 0, r.stderr
    out = tmp_path / "cmp"
    r = run_cli("compare", str(run), "scripted:truthful", str(run), "--out", str(out), "--seeds", "5",
                "--agents", "20000")
    assert r.code == 0, r.stderr
    result = json.loads((out / "compare.json").read_text())
    assert result["scenario"] == "auction/first_price"
    vs_truthful, vs_self = result["pairs"][0], result["pairs"][1]
    # truthful bidders pay their value when they win: utility 0 exactly; the learned policy shades and earns
    # (its 95% interval over the seeds lies above 0), at most the best response's to a truthful rival,
    # max_b (v − b)·b = v²/4, E = 1/12 per seat, plus 4 standard errors of the 5·20000 auctions
    # (utility per auction in [0, 1]: SE ≤ 1/2 / sqrt(10⁵))
    assert vs_truthful["utility_b"] == 0.0 and vs_truthful["utility_a_ci"][0] > 0
    assert vs_truthful["utility_a"] <= 1 / 12 + 4 * 0.5 / np.sqrt(5 * 20000)
    assert vs_truthful["significant"] and vs_truthful["winner"] == vs_truthful["a"]
    assert vs_self["utility_diff"] == 0.0 and not vs_self["significant"]
    # the same policy in every seat bids monotonically in the value: the highest value wins every auction
    assert vs_self["efficiency"] == pytest.approx(1.0, abs=1e-6) and vs_truthful["efficiency"] < 1.0


@pytest.mark.parametrize("args,names", [
    (["train", "coase_ppo", "--set", "mechanism.kind=nash"], "mechanism.kind"),
    (["train", "coase_ppo", "--set", "train.minibatches=7"], "train.minibatches"),
    (["train", "coase_ppo", "--set", "env.cost_grid=[0.1,0.1]"], "env.cost_grid"),
    (["train", "coase_ppo", "--set", "train.algo=es"], "train.algo"),
    (["train", "coase_ppo_providers", "--set", "providers.advocate=[learned]"], "providers.advocate"),
    (["simulate", "quickstart", "--set", "mechanism.first_mover=random"], "mechanism.first_mover"),
])
def test_bad_ppo_input_exits_2_with_one_line(args, names, tmp_path):
    r = _cli(*args, "--out", str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr
    assert names in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
