"""Learned bidding against auction theory: the generic policy across the ranges, the double auction across k, the
equilibrium-feature head as an option, and the checks that can fail (a separate file from tests/test_auction.py so
that the test workers share the training runs)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coasejax.config import load_config
from coasejax.envs import auction
from coasejax.eval.equilibrium import equilibrium_bid
from coasejax.policies import SIGMOID_START_MAX

KEY = jax.random.PRNGKey(0)


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
    ("auction_all_pay", ["env.value_dist=power:4", "train.iterations=2000"], 0.01),
]


@pytest.mark.parametrize("preset,sets,rmse", GENERIC, ids=["fp_n2", "fp_n2_power4_r0.45", "fp_n10_power0.5_r0.45",
                                                           "sp_n2_power0.5_r0.45_from_half", "ap_n2",
                                                           "ap_n2_power0.5", "ap_n2_power4"])
def test_generic_policy_reaches_the_equilibrium(preset, sets, rmse, tmp_path: Path):
    """bne_rmse within the tolerance and under half the start's distance from the equilibrium (:func:`rmse_bound`:
    the learned bids are closer to the equilibrium than to where they started), utility_loss_rel ≤ 0.005. The
    second-price preset starts from b = v/2, so truthful bidding is learned, not assumed."""
    summary, cfg = train_summary(preset, sets, tmp_path)
    assert summary["bne_rmse"] <= rmse_bound(cfg, rmse), (summary["bne_rmse"], rmse_bound(cfg, rmse))
    assert summary["utility_loss_rel"] <= 0.005, summary["utility_loss_rel"]


def test_optimistic_adam_is_for_gradient_training_only():
    """``train.optimizer: optimistic_adam`` (the all-pay preset's) is the gradient learner's own: asking ES for it is
    a config error naming the key, not a failure inside the optimiser's construction."""
    from coasejax.config import ConfigError

    with pytest.raises(ConfigError, match="train.optimizer"):
        load_config("auction_all_pay", ["train.optimizer=optimistic_adam", "train.algo=es"])


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
    reduced budget (300 iterations of batch 512 against 4096 opponents; measured losses 0.0, 0.0024, 0.0014), judged
    by utility loss as the game has many equilibria; the learned play's efficiency lies within 0.03 of the linear
    equilibrium's (0.75 at k = 0 and 1, 0.84 at ½)."""
    summary, _ = train_summary("auction_double", [f"env.k={k}", "train.iterations=300", "train.batch=512",
                                                  "train.opponents=4096", "train.log_every=300"], tmp_path)
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
                                 "train.optimizer=adam", "policy.win_prob=false", "policy.init_scale=1",
                                 "train.eval_values=256",
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
