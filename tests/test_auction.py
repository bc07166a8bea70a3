"""The auction scenario, its equilibrium library and learned bidding against auction theory (Krishna 2010)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coasejax.config import ConfigError, load_config
from coasejax.envs import auction
from coasejax.eval.equilibrium import best_bid, equilibrium_bid, first_price_bid
from coasejax.policies import SIGMOID_START_MAX

KEY = jax.random.PRNGKey(0)


def params_for(fmt="first_price", n=2, dist="uniform", r=0.0, k=0.5):
    cfg = load_config(None, ["env.kind=auction", f"env.auction={fmt}", f"env.n_bidders={n}",
                             f"env.value_dist={dist}", f"env.reserve_price={r}", f"env.k={k}"])
    return auction.AuctionParams.from_config(cfg.env)


def equilibrium_play(p, key, m):
    """``(values, bids)`` f32[m, R] with every role at the analytic equilibrium."""
    values = auction.sample_values(key, p, (m, p.n_roles))
    bids = jnp.stack([equilibrium_bid(p, values[:, j], j) for j in range(p.n_roles)], axis=1)
    return values, bids


def br_check(p, role=0, bid=None, g=1024, m=1 << 19, grid=257, chunks=16):
    """``(loss, se, v)``: relative utility loss of role ``role``'s bid function ``bid`` (default: the analytic
    equilibrium) at g values ``v`` against a numerical best response to opponents at the analytic equilibrium, and
    its Monte Carlo standard error.

    Of 2m equilibrium auctions, the first m give the opposing bids against which the best bid among a ``grid``-point
    grid on [0, 1] and the tested bid is chosen (:func:`best_bid`); both bids are scored on the other m, split into
    ``chunks`` equal parts. The interim utility is linear in the empirical distribution of the opposing bid, so the
    gain on the whole scoring sample is the mean of the chunks' gains, and its standard error is their standard
    deviation over sqrt(chunks). Given the values and the selection sample, the expected gain is ``u(best) − u(bid)``
    under the true opponent distribution: at most 0 for the equilibrium bid, which maximises that utility at every
    value, whatever bid the search picked. So ``loss ≤ 4 se`` is a one-sided test at 4 standard errors that no grid
    term widens (the grid, spacing 1/256, only limits how much of a deviation's loss the search recovers).
    """
    k1, k2 = jax.random.split(jax.random.PRNGKey(7))
    v = auction.sample_values(k1, p, (g,))
    bids = equilibrium_bid(p, v, role) if bid is None else bid(v)
    opposing = auction.opposing_bid(equilibrium_play(p, k2, 2 * m)[1], role, p)
    best = best_bid(role, v, bids, auction.opponents(opposing[:m]), p, jnp.linspace(0, 1, grid))

    def chunk(bids_c):
        opp = auction.opponents(bids_c)
        u, u_br = (auction.interim_utility(role, v, b, opp, p) for b in (bids, best))
        return jnp.mean(u_br - u), jnp.mean(u_br)

    gain, u_br = (np.asarray(x, np.float64) for x in jax.vmap(chunk)(opposing[m:].reshape(chunks, m // chunks)))
    return gain.mean() / u_br.mean(), gain.std(ddof=1) / np.sqrt(chunks) / u_br.mean(), np.asarray(v, np.float64)


SETTINGS = [("first_price", 2, "uniform", 0.0), ("first_price", 5, "uniform", 0.0),
            ("first_price", 3, "power:2.5", 0.0), ("first_price", 2, "uniform", 0.3),
            ("first_price", 4, "power:0.5", 0.2), ("second_price", 3, "uniform", 0.0),
            ("second_price", 10, "power:3", 0.25), ("all_pay", 2, "uniform", 0.0), ("all_pay", 3, "power:2", 0.0),
            ("all_pay", 2, "uniform", 0.2)]


@pytest.mark.parametrize("fmt,n,dist,r", SETTINGS)
def test_analytic_equilibria_are_best_responses(fmt, n, dist, r):
    """No bid on a 257-point grid beats the analytic equilibrium by more than 4 Monte Carlo standard errors of the
    scoring sample (one-sided: the expected loss of the equilibrium is at most 0, see :func:`br_check`). The control
    below shows that a bid function 5% off the equilibrium fails this check."""
    loss, se, _ = br_check(params_for(fmt, n, dist, r))
    assert loss <= 4 * se, (loss, se)


def test_double_auction_linear_equilibrium_is_a_best_response_for_both_roles():
    p = params_for("double", 2, "uniform", 0.0, k=0.5)
    for role in (0, 1):
        loss, se, _ = br_check(p, role)
        assert loss <= 4 * se, (role, loss, se)
    v = jnp.array([0.0, 0.5, 1.0])
    np.testing.assert_allclose(equilibrium_bid(p, v, 0), 2 * v / 3 + 1 / 12, atol=1e-6)
    np.testing.assert_allclose(equilibrium_bid(p, v, 1), 2 * v / 3 + 1 / 4, atol=1e-6)


def test_first_price_reserve_terms_stay_finite_where_powers_underflow():
    """n = 10, F(v) = v⁴ (m = 36), reserve 0.05: r^(m+1) and v^m underflow in float32 below v ≈ 0.09, so the reserve
    term must be computed as r (r/v)^m. The equilibrium bid is finite, equals the reserve at v = r and 36v/37 plus a
    vanishing term above; the policy's reserve-share feature is finite too (it had been 0/0 there)."""
    from coasejax.config import load_config as lc
    from coasejax.train import es
    from coasejax.train.auction_game import auction_game, make_bidders

    v = jnp.linspace(0.0, 1.0, 201)
    b = first_price_bid(v, 10, 4.0, 0.05)
    assert bool(jnp.all(jnp.isfinite(b)))
    np.testing.assert_allclose(first_price_bid(jnp.array([0.05]), 10, 4.0, 0.05), [0.05], rtol=1e-6)
    above = v >= 0.1
    np.testing.assert_allclose(b[above], 36 * v[above] / 37, atol=1e-6)
    cfg = lc("auction_first_price_features", ["env.n_bidders=10", "env.value_dist=power:4",
                                              "env.reserve_price=0.05", "policy.init_scale=0.5"])
    game = auction_game(cfg)
    state = es.init(game, cfg.train, KEY)
    bid_one, _ = make_bidders(game.module, auction.AuctionParams.from_config(cfg.env), jnp.zeros((10,), jnp.int32))
    bids = bid_one(jax.tree.map(lambda x: x[0], state.params), v, 0)
    np.testing.assert_allclose(bids, 0.5 * v, atol=1e-7)  # the start: b = 0.5 v, finite everywhere


def first_price_scaled_loss(f, v):
    """First price, uniform, n = 2, opponents at b = w/2: the relative utility loss at values ``v`` of bidding f·v/2
    instead of v/2. ``u(v, b) = (v − b) min(1, 2b)``: ``(1 − f/2) v min(1, f v)`` against ``u* = v²/2``, in
    expectation ``(1 − f)²`` for ``f ≤ 1`` (0.25% at f = 0.95; above 1 the types ``v > 1/f`` also overbid the highest
    rival bid: 0.58% at f = 1.05)."""
    return 1.0 - np.sum((1.0 - f / 2) * v * np.minimum(1.0, f * v)) / np.sum(v**2 / 2)


@pytest.mark.parametrize("fmt,n,dist,r,role,factor", [
    ("first_price", 2, "uniform", 0.0, 0, 0.95), ("first_price", 2, "uniform", 0.0, 0, 1.05),
    ("all_pay", 2, "uniform", 0.0, 0, 1.05), ("second_price", 3, "uniform", 0.0, 0, 1.05),
    ("double", 2, "uniform", 0.0, 1, 0.95)])
def test_best_response_check_detects_a_bid_5_percent_off(fmt, n, dist, r, role, factor):
    """Control: the check above fails for one bidder's bid function 5% off the equilibrium (its loss exceeds 4
    standard errors), the opponents at the equilibrium. In the first price with n = 2 the loss has a closed form at
    the sampled values (:func:`first_price_scaled_loss`: 0.25% below, 0.58% above), which the search cannot exceed in
    expectation (4 standard errors). Not a control here: one all-pay bidder 5% *below* the equilibrium, whose loss is
    within reach of the noise: with ``u(v, b) = v sqrt(2b) − b`` (n = 2, uniform) the curvature at ``b* = v²/2`` is
    ``−1/v²``, so the loss is ``½ (0.05 b*)²/v² = v²/3200``, a relative ``ε²/4 = 0.06%``, about 5 standard errors at
    m = 2¹⁹. (An all-pay bid function 5% off for *every* bidder moves the best response by about 10%, ``b = v²/2.1``
    against opponents at 1.05 v²/2, and fails clearly.)"""
    p = params_for(fmt, n, dist, r)
    loss, se, v = br_check(p, role, bid=lambda v: factor * equilibrium_bid(p, v, role))
    assert loss > 4 * se, (loss, se)
    if fmt == "first_price":
        assert loss <= first_price_scaled_loss(factor, v) + 4 * se, (loss, se, first_price_scaled_loss(factor, v))


@pytest.mark.parametrize("fmt,n,r", [("first_price", 3, 0.0), ("second_price", 3, 0.2), ("all_pay", 2, 0.1),
                                     ("double", 2, 0.0)])
def test_interim_utility_matches_simulated_auctions(fmt, n, r):
    """The empirical-opponent utility used in training equals the mean utility of whole simulated auctions, for an
    arbitrary deviation of bidder 0 against equilibrium opponents, over all m = 200,000 auctions: bidder 0's interim
    utility at each auction's value and bid, against the opposing bids of all m auctions, averages to its realised
    mean utility within 4 standard errors, SE = sd(realised utility)/sqrt(m). (Writing the realised utility
    h(x_i, y_i) of bidder 0's type x and the opposing bid y in Hoeffding's decomposition θ + g₁(x) + g₂(y) + ρ(x, y),
    the interim mean is the V-statistic over all pairs, and the two means differ only by the mean of the degenerate
    part ρ over the m pairs, of variance Var ρ/m ≤ Var h/m.) The realised mean is itself over 10 of those standard
    errors away from 0 (the deviation's expected utility is 0.015 in the all-pay case, SE 0.0008), so an interim
    utility of 0 fails."""
    p = params_for(fmt, n, "uniform", r)
    m = 200_000
    k1, k2 = jax.random.split(KEY)
    values, bids = equilibrium_play(p, k1, m)
    dev = 0.8 * values[:, 0] + 0.05
    bids = bids.at[:, 0].set(dev)
    played = np.asarray(auction.play(k2, values, bids, p).utility[:, 0], np.float64)
    opp = auction.opponents(auction.opposing_bid(bids, 0, p))
    interim = np.asarray(auction.interim_utility(0, values[:, 0], dev, opp, p), np.float64)
    se = played.std() / np.sqrt(m)
    assert abs(played.mean()) > 10 * se, (played.mean(), se)
    assert abs(interim.mean() - played.mean()) < 4 * se, (interim.mean(), played.mean(), se)


def test_revenue_equivalence_in_simulated_auctions():
    """Uniform values, n = 3, no reserve: expected revenue (n − 1)/(n + 1) = 0.5 in first-price, second-price and
    all-pay equilibria (Myerson 1981; Riley & Samuelson 1981), within 4 standard errors of 10⁶ auctions."""
    for fmt in ("first_price", "second_price", "all_pay"):
        p = params_for(fmt, 3)
        values, bids = equilibrium_play(p, KEY, 1_000_000)
        rev = auction.play(jax.random.PRNGKey(1), values, bids, p).revenue
        se = float(jnp.std(rev)) / 1000
        assert abs(float(jnp.mean(rev)) - 0.5) < 4 * se, (fmt, float(jnp.mean(rev)))


def test_reserve_price_revenue_closed_form():
    """First price, uniform, n = 2, reserve r = 0.45: expected revenue (n−1)/(n+1) + rⁿ − 2n r^(n+1)/(n+1) (Krishna
    2010, §2.5; 5/12 at Myerson's optimal r = 0.5), within 4 standard errors of 10⁶ auctions."""
    p = params_for("first_price", 2, "uniform", 0.45)
    r, n = 0.45, 2
    values, bids = equilibrium_play(p, KEY, 1_000_000)
    rev = auction.play(jax.random.PRNGKey(1), values, bids, p).revenue
    expected = (n - 1) / (n + 1) + r**n - 2 * n * r ** (n + 1) / (n + 1)
    assert abs(float(jnp.mean(rev)) - expected) < 4 * float(jnp.std(rev)) / 1000


@pytest.mark.parametrize("override,key", [
    ("env.n_bidders=11", "env.n_bidders"), ("env.value_dist=power:5", "env.value_dist"),
    ("env.value_dist=beta", "env.value_dist"), ("env.reserve_price=0.5", "env.reserve_price"),
    ("env.auction=dutch", "env.auction"), ("train.population=7", "train.population"),
    ("checkpoint.every=75", "checkpoint.every"), ("policy.init_scale=1.5", "policy.init_scale"),
])
def test_bad_auction_settings_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config("auction_first_price", [override])
    assert key in str(e.value) and "\n" not in str(e.value)


def test_value_dist_syntax():
    assert load_config(None, ["env.kind=auction", "env.value_dist=power:2.5"]).env.power == 2.5
    assert load_config(None, ["env.kind=auction", "env.value_dist=power:1"]).env.value_dist == "uniform"
    assert load_config(None, ["env.kind=auction", "env.value_dist=uniform"]).env.power == 1.0


# ----------------------------------------------------------------------------------------------------------------------
# Learned bidding (the must-show cases; full-budget runs of every preset: scripts/train_auctions.sh)
# ----------------------------------------------------------------------------------------------------------------------

def start_distance(cfg, k=1 << 16):
    """The bne_rmse of the policy's start (``policy.init_scale`` · v, or · v G(v) in the all-pay auction; truthful
    bids in the first-price preset), exactly: the root mean square of ``b₀(v) − β(v)`` over values
    ``v ≥ max(v*, train.bne_min_value)`` from F (midpoint quadrature in F, ``k`` points; β the closed form)."""
    from coasejax.eval.equilibrium import participation_threshold

    p = auction.AuctionParams.from_config(cfg.env)
    a, n, r = float(p.power), p.n_roles, float(p.reserve)
    v_min = max(participation_threshold(p.format, n, a, r), cfg.train.bne_min_value)
    v = (v_min**a + (1 - v_min**a) * (np.arange(k) + 0.5) / k) ** (1 / a)
    beta = np.asarray(equilibrium_bid(p, jnp.asarray(v, jnp.float32)), np.float64)
    scale = min(cfg.policy.init_scale, SIGMOID_START_MAX) if cfg.policy.output == "sigmoid" else cfg.policy.init_scale
    start = scale * v * (v ** (a * (n - 1)) if p.format == "all_pay" and cfg.policy.win_prob else 1.0)
    return float(np.sqrt(np.mean((start - beta) ** 2)))


def rmse_bound(cfg, target=0.02):
    """The bne_rmse a learned policy must reach: the target 0.02, and less than half its start's distance from the
    equilibrium, so that (triangle inequality) the learned bids are closer to the equilibrium than to where they
    started, and the start itself fails. That matters at n = 10, F(v) = v⁴, reserve 0.2: truthful bids, the
    first-price preset's start, are only 0.022 from the equilibrium's 36/37 of the value, so 0.02 alone let them
    pass (the utility loss does not: truthful bidding earns 0, a relative loss of 1). A start at the equilibrium
    (the all-pay preset, n = 2, uniform) keeps the target: there the test checks that ES stays."""
    d = start_distance(cfg)
    return target if d < 1e-6 else min(target, d / 2)


def train_summary(preset, sets, out):
    """Train ``preset`` with ``sets`` (evaluated only at the end) into ``out``; ``(summary, cfg)``."""
    from coasejax.train.run import train

    cfg = load_config(preset, ["train.eval_opponents=65536", *sets, "checkpoint.every=0"])
    return train(cfg, out), cfg


#: the generic policy (an MLP on the own value, smoothed gradient ascent) on a spread of settings: the presets and
#: corners of the ranges (n = 2 and 10, F(v) = v^0.5 and v^4, reserves 0 and 0.45), at reduced budgets; the issue's
#: tolerances bne_rmse ≤ 0.01 and utility_loss_rel ≤ 0.005 (first price n = 2 uniform: bne_rmse ≤ 0.003). The full
#: table at the presets' budgets: scripts/train_ranges.sh, BENCHMARKS.md "Auctions with the generic policy".
GENERIC = [
    ("auction_first_price", ["train.iterations=600"], 0.003),
    ("auction_first_price", ["env.value_dist=power:4", "env.reserve_price=0.45", "train.iterations=1000"], 0.01),
    ("auction_first_price", ["env.n_bidders=10", "env.value_dist=power:0.5", "env.reserve_price=0.45",
                             "train.iterations=1000"], 0.01),
    ("auction_second_price", ["env.n_bidders=2", "env.value_dist=power:0.5", "env.reserve_price=0.45",
                              "train.iterations=1500"], 0.01),
    ("auction_all_pay", ["train.iterations=1000"], 0.01),
    ("auction_all_pay", ["env.value_dist=power:0.5", "train.iterations=1000"], 0.01),
]


@pytest.mark.parametrize("preset,sets,rmse", GENERIC, ids=["fp_n2", "fp_n2_power4_r0.45", "fp_n10_power0.5_r0.45",
                                                           "sp_n2_power0.5_r0.45_from_half", "ap_n2",
                                                           "ap_n2_power0.5"])
def test_generic_policy_reaches_the_equilibrium(preset, sets, rmse, tmp_path: Path):
    """bne_rmse within the tolerance and under half the start's distance from the equilibrium (:func:`rmse_bound`:
    the learned bids are closer to the equilibrium than to where they started), utility_loss_rel ≤ 0.005. The
    second-price preset starts from b = v/2, so truthful bidding is learned, not assumed."""
    summary, cfg = train_summary(preset, sets, tmp_path)
    assert summary["bne_rmse"] <= rmse_bound(cfg, rmse), (summary["bne_rmse"], rmse_bound(cfg, rmse))
    assert summary["utility_loss_rel"] <= 0.005, summary["utility_loss_rel"]


@pytest.fixture(scope="module")
def trained_first_price(tmp_path_factory):
    from coasejax.train.auction_game import auction_game
    from coasejax.train.gradient import Gradient

    cfg = load_config("auction_first_price", ["train.iterations=600", "checkpoint.every=0"])
    algo = Gradient(auction_game(cfg), cfg.train)
    states, _ = algo.make_chunk(cfg.train.iterations)(algo.init_states())
    return cfg, algo, states.params


def test_a_perturbed_policy_shows_a_larger_utility_loss(trained_first_price):
    """The check can fail: the trained policy's utility loss is ≤ 0.005, and shifting its output logit by −1 (bids
    shaded by a further ~25% at n = 2) makes bne_rmse and utility_loss_rel both larger by a wide margin (> 0.03 and
    > 0.02: the loss of bidding 3v/8 instead of v/2 against v/2 is 1 − (1 − 3/8)(3/4)/(1/2) = 6% at every value)."""
    cfg, algo, params = trained_first_price
    metrics = jax.jit(jax.vmap(algo.metrics, in_axes=(None, 0)))
    base = {k: float(v[0]) for k, v in metrics(KEY, params).items()}
    leaves = jax.tree_util.tree_leaves_with_path(params)
    bias_path = [p for p, _ in leaves if "Dense_2" in jax.tree_util.keystr(p) and "bias" in jax.tree_util.keystr(p)]
    assert len(bias_path) == 1, [jax.tree_util.keystr(p) for p, _ in leaves]
    shifted = jax.tree_util.tree_map_with_path(lambda p, x: x - 1.0 if p == bias_path[0] else x, params)
    worse = {k: float(v[0]) for k, v in metrics(KEY, shifted).items()}
    assert base["utility_loss_rel"] <= 0.005 and base["bne_rmse"] <= 0.003, base
    assert worse["bne_rmse"] > base["bne_rmse"] + 0.03, (base, worse)
    assert worse["utility_loss_rel"] > base["utility_loss_rel"] + 0.02, (base, worse)


def test_strategy_panels_show_the_learned_bids_beside_the_equilibrium(trained_first_price):
    """The report's strategy panel of a first-price run: the learned bid at the grid values lies within 0.01 of the
    theory curve v/2 that the panel carries (the learned policy's bne_rmse is ≤ 0.003)."""
    _, algo, params = trained_first_price
    (panel,) = algo.strategy(params)
    learned = [s for s in panel["series"] if s["kind"] == "learned"]
    (theory,) = [s for s in panel["series"] if s["kind"] == "theory"]
    assert len(learned) == 1 and panel["xlabel"] == "value v"
    np.testing.assert_allclose(theory["y"], np.asarray(theory["x"]) / 2, atol=1e-6)
    x = np.asarray(learned[0]["x"])
    inner = (x >= 0.05) & (x <= 0.95)
    assert np.max(np.abs(np.asarray(learned[0]["y"]) - np.asarray(theory["y"]))[inner]) < 0.01


@pytest.mark.parametrize("k", [0.0, 0.3, 0.9])
def test_double_auction_across_k(k, tmp_path: Path):
    """The k-double auction at three values of k (the preset is k = ½): utility_loss_rel ≤ 0.01 for both roles at a
    reduced budget (600 iterations), judged by utility loss as the game has many equilibria; the learned play's
    efficiency lies within 0.03 of the linear equilibrium's (0.75 at k = 0 and 1, 0.84 at ½)."""
    summary, _ = train_summary("auction_double", [f"env.k={k}", "train.iterations=600"], tmp_path)
    assert summary["utility_loss_rel"] <= 0.01, summary["utility_loss_rel"]
    assert abs(summary["efficiency"] - summary["linear_efficiency"]) < 0.03, summary


def test_the_equilibrium_feature_head_is_an_option(tmp_path: Path):
    """The specialised head (policy.win_prob: features of the equilibrium family, ES), kept as an option and reported
    separately: n = 10, F(v) = v⁴, reserve 0.2, where its bid-space skip holds the equilibrium; bne_rmse ≤ 0.01 and
    under half the start's distance, utility_loss_rel ≤ 0.01, at 1200 iterations of population 128."""
    sets = ["env.n_bidders=10", "env.value_dist=power:4", "env.reserve_price=0.2", "train.iterations=1200",
            "train.population=128"]
    summary, cfg = train_summary("auction_first_price_features", sets, tmp_path)
    assert summary["bne_rmse"] <= rmse_bound(cfg, 0.01) and summary["utility_loss_rel"] <= 0.01, summary


FIRST_PRICE_BUDGET = ["checkpoint.every=0"]


def test_utility_loss_rel_is_guarded_when_best_response_earns_nothing():
    """Truthful bids in an all-pay auction with n = 3, F(v) = v²: against truthful rivals (highest rival value
    ``G(b) = b⁴``) any bid b > 0 earns ``v b⁴ − b < 0``, so the best response bids 0 and earns exactly 0, and the
    relative loss is the absolute loss over the 10⁻³ floor: ``−u/10⁻³`` (hundreds, not ~10¹¹). The truthful utility is
    ``E[v⁵ − v] = 2(1/7 − 1/3) = −8/21`` under the density 2v; 4 standard errors: sd(v⁵ − v) = sqrt(1/6 − (8/21)²)
    = 0.147 over sqrt(256) values, and at most 0.5/sqrt(4096) from the opponent sample (v ≤ 1, P(1 − P) ≤ ¼)."""
    from coasejax.config import load_config as lc
    from coasejax.train import es
    from coasejax.train.auction_game import auction_game

    cfg = lc("auction_all_pay", ["env.n_bidders=3", "env.value_dist=power:2", "policy.output=linear",
                                 "policy.win_prob=false", "policy.init_scale=1", "train.eval_values=256",
                                 "train.eval_opponents=4096", "train.eval_grid=64"])
    game = auction_game(cfg)
    state = es.init(game, cfg.train, KEY)
    m = {k: float(x) for k, x in jax.jit(game.metrics)(KEY, state.params).items()}
    se = np.hypot(np.sqrt(1 / 6 - (8 / 21) ** 2) / np.sqrt(256), 0.5 / np.sqrt(4096))
    assert abs(m["utility"] + 8 / 21) < 4 * se, (m, se)
    assert m["utility_loss_rel"] == pytest.approx(-m["utility"] / 1e-3, rel=1e-5), m


def test_the_start_fails_the_learned_bounds_at_n10_power4():
    """Control for :func:`rmse_bound`: truthful bidding, the first-price preset's start, measured at n = 10,
    F(v) = v⁴, reserve 0.2, fails both bounds of the learned tests: its bne_rmse, measured at 1024 values, is its
    quadrature value 0.022 within 4 standard errors (the bid error v − β(v) lies in [0, 1/37], so sd(d²) ≤ 0.03²/2
    and SE(rmse) ≤ 0.00045/sqrt(1024)/(2 · 0.022) = 3.2·10⁻⁴), 0.011 above the bound (half of it), and its utility
    loss is 1 (it earns nothing; the equilibrium 0.003)."""
    from coasejax.train import es
    from coasejax.train.auction_game import auction_game

    cfg = load_config("auction_first_price", ["env.n_bidders=10", "env.value_dist=power:4", "env.reserve_price=0.2",
                                              *FIRST_PRICE_BUDGET, "train.eval_values=1024",
                                              "train.eval_opponents=16384", "train.eval_grid=32"])
    game = auction_game(cfg)
    m = {k: float(x) for k, x in jax.jit(game.metrics)(KEY, es.init(game, cfg.train, KEY).params).items()}
    assert m["bne_rmse"] == pytest.approx(start_distance(cfg), abs=4 * 3.2e-4), m
    assert m["bne_rmse"] > rmse_bound(cfg) and m["utility_loss_rel"] > 0.01, (m, rmse_bound(cfg))
