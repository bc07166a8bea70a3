"""The market for lemons (:mod:`coasejax.scenarios.lemons`, Akerlof 1970) against its closed forms: the price and the
traded quality unravel as ``p_t = p_0 r^t``, ``r = θ_b/(2θ_s)``, efficiency ``x_t² → 0``; disclosure of a share d of
the goods recovers efficiency ``d + (1 − d) x_t² → d``."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from coasejax import scenarios
from coasejax.cli import app
from coasejax.config import ConfigError, load_config
from coasejax.eval.report import write_report
from coasejax.scenarios import lemons as lm

LM = scenarios.get("lemons")
N, ENVS, ROUNDS = 200_000, 4, 12


def _cli(*args):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def lemons_config(n=N, *extra):
    return load_config("lemons", [f"population.n_agents={n}", f"sim.rounds={ROUNDS}", *extra])


@pytest.fixture(scope="module")
def runs():
    """Truthful sellers, d = 0 and d = 1/2 in one compiled vmap (only traced leaves differ), 4 environments each, 12
    rounds at N = 2·10^5: per-round metrics ``{field: f64[E, T]}`` and the summaries."""
    cfgs = [lemons_config(N, f"env.disclosure={d}") for d in (0.0, 0.5)]
    ps = [LM.params(c) for c in cfgs]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *ps)
    act = lambda k, pp, s, obs: lm.truthful(k, pp, s)  # noqa: E731

    def one(p, key):
        s0 = LM.reset(jax.random.fold_in(key, 1), p)
        return s0, scenarios.rollout(LM, act, key, s0, p, ROUNDS)[1]

    keys = jax.random.split(jax.random.PRNGKey(0), ENVS)
    run = jax.jit(jax.vmap(lambda p: jax.vmap(lambda k: one(p, k))(keys)))
    first, per = run(stacked)
    again = run(stacked)[1]
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(per), jax.tree.leaves(again)))  # determinism
    out = []
    for i, cfg in enumerate(cfgs):
        pick = {k: np.asarray(v[i], np.float64) for k, v in per._asdict().items()}
        out.append((cfg, pick, LM.summarise(cfg, ps[i], pick, None, None)))
    return out


def test_price_and_traded_quality_unravel_as_the_closed_form(runs):
    """θ_s = 1, θ_b = 1.5, p_0 = 0.75 (r = 3/4), truthful sellers.

    One step (exact given the price): the uncertified goods offered at p_t are the n_t of quality ≤ x_t = p_t/θ_s,
    i.i.d. U[0, x_t] given n_t, so ``p_{t+1} = θ_b·mean`` has mean ``θ_b x_t/2`` and relative sd ``1/sqrt(3 n_t)``;
    the offered count is Binomial(N_unc, x_t). Every env, round and d: both z-scores below 5 (80 of each: a
    false alarm below 1e-4).

    The path: measured p_t (mean over 4 envs) against ``p_0 r^t`` and the mean traded quality against
    ``x_t/2``, relative error below 4 sd, the sd bounded by Minkowski over the steps (the pools are nested subsets of
    one sample, so their errors may correlate): ``Σ_{s<t} 1/sqrt(3 n_s)``, divided by sqrt(4) for the envs. Rounds
    0..11: the pool holds N_unc x_t ≥ 3000 goods, so no small-pool effect; and the price has fallen 24-fold."""
    for cfg, pr, s in runs:
        price, nxt, offered, unc = pr["price"], pr["next_price"], pr["offered"], pr["uncertified"]
        x = np.minimum(price, 1.0)
        z_step = (nxt - 1.5 * x / 2.0) / (1.5 * x / 2.0 / np.sqrt(3.0 * offered))
        assert np.max(np.abs(z_step)) < 5.0, z_step
        z_count = (offered - unc * x) / np.sqrt(unc * x * (1.0 - x))
        assert np.max(np.abs(z_count)) < 5.0, z_count
        th = lm.theory(cfg, ROUNDS)
        assert th["price"] == pytest.approx(0.75 * 0.75 ** np.arange(ROUNDS), rel=1e-12)
        n_s = unc.mean(axis=0) * th["traded_share"]
        assert n_s.min() > 3000
        sd = np.concatenate([[0.0], np.cumsum(1.0 / np.sqrt(3.0 * n_s))[:-1]]) / math.sqrt(ENVS)
        rel_p = np.asarray(s["price_path"]) / th["price"] - 1.0
        assert np.all(np.abs(rel_p) <= 4 * sd + 1e-6), (rel_p, sd)  # 1e-6: float32 at round 0 (exactly p_0)
        sd_q = np.cumsum(1.0 / np.sqrt(3.0 * n_s)) / math.sqrt(ENVS)  # quality at t is p_{t+1}/θ_b
        rel_q = np.asarray(s["traded_quality_path"]) / th["traded_quality"] - 1.0
        assert np.all(np.abs(rel_q) <= 4 * sd_q), (rel_q, sd_q)
        assert s["theory_final_price"] == pytest.approx(0.75**12) and s["unravelling_rate"] == 0.75
        assert s["final_price"] < 0.04 and s["limit_price"] == 0.0


def test_disclosure_recovers_efficiency_d_while_the_unregulated_market_collapses(runs):
    """Efficiency (realised gains over the gains of trading every good) in round t is ``d + (1 − d) x_t²``. d = 0:
    round 0 at 0.5625 and round 11 at x_11² = 0.001, below 0.01. d = 1/2: round 11 at 0.5 + 0.5·x_11² ≈ 0.5005.
    The sampling error is the certified goods' share of Σ q (certificates Bernoulli(d), independent of q):
    sd ≈ sqrt(d(1 − d) E[q²]/N)/E[q] = sqrt(4 d(1 − d)/(3N)) per env, /2 over the 4 envs; each within 5 sd (plus
    the pool's x_t² term, at most 2·10^-3 sd). The certified share itself is within 5 binomial sd of d."""
    (c0, pr0, s0), (c5, pr5, s5) = runs
    sd0 = math.sqrt(4 * 0.5 * 0.5 / (3 * N)) / math.sqrt(ENVS)
    assert abs(s0["first_efficiency"] - 0.5625) < 5 * sd0 and s0["theory_first_efficiency"] == 0.5625
    assert s0["final_efficiency"] < 0.01 and s0["limit_efficiency"] == 0.0
    assert abs(s0["final_efficiency"] - s0["theory_final_efficiency"]) < 2e-4, s0  # x² = 1e-3, its rel. error < 10%
    assert s5["theory_final_efficiency"] == pytest.approx(0.5 + 0.5 * 0.75**24)
    assert abs(s5["final_efficiency"] - s5["theory_final_efficiency"]) < 5 * sd0, s5
    assert abs(s5["first_efficiency"] - (0.5 + 0.5 * 0.5625)) < 5 * sd0, s5
    assert abs(s5["certified_share"] - 0.5) < 5 * math.sqrt(0.25 / (N * ENVS)), s5
    assert s5["limit_efficiency"] == 0.5  # (its uncertified pool unravels as without the rule: the first test)


def test_a_sweep_over_disclosure_draws_the_recovery(tmp_path):
    """One compiled sweep over env.disclosure = 0, 0.25, 0.5, 0.75 (N = 2·10^4, 20 rounds: x_19² = 1.0e-5): the final
    efficiency rises with d and lies within 0.025 of d (5 sd at d = 1/2: 5·sqrt(4·0.25/(3N)) = 0.020); the table
    carries the headline."""
    r = _cli("simulate", "lemons", "--set", "population.n_agents=20000", "--set", "sim.rounds=20",
             "--sweep", "env.disclosure=0,0.25,0.5,0.75", "--out", str(tmp_path / "sw"), "-q")
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "sw" / "sweep.json").read_text())["rows"]
    eff = [row["final_efficiency"] for row in rows]
    assert np.all(np.diff(eff) > 0.1), eff
    for d, e in zip([0, 0.25, 0.5, 0.75], eff):
        assert abs(e - d) < 0.025, (d, e)
    header = (tmp_path / "sw" / "sweep.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["env.disclosure", "final_price", "final_traded_quality"]


def test_runs_at_a_million_sellers_and_the_report_draws_its_figure(tmp_path):
    """N = 10^6 on the CPU, 3 rounds of the preset with d = 1/2: the price after two updates within 1% of
    0.75³ (relative sd of the two steps ≤ 2/sqrt(3·4·10^5) ≈ 0.002); the summary's figure has three panels, each a
    measured series and theory series of the same length, finite; the report draws it."""
    out = tmp_path / "big"
    r = _cli("simulate", "lemons", "--set", "population.n_agents=1000000", "--set", "sim.rounds=3",
             "--set", "env.disclosure=0.5", "--out", str(out), "-q")
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["n_agents"] == 1_000_000 and abs(s["final_price"] / 0.75**3 - 1) < 0.01, s
    fig = s["figure"]
    assert len(fig["panels"]) == 3
    for panel in fig["panels"]:
        kinds = [x["kind"] for x in panel["series"]]
        assert kinds[0] == "measured" and "theory" in kinds
        assert all(len(x["x"]) == len(x["y"]) == 3 and np.all(np.isfinite(x["y"])) for x in panel["series"])
    write_report(out)
    assert (out / "report_figures" / "scenario.png").stat().st_size > 5_000


def test_train_lemons_moves_a_markup_toward_truthful_asks(tmp_path):
    """The generic ES path on the scenario's own step: the Advocate head starts at ask = 2 × own value (the preset's
    policy.init_scale; sellers hold out for twice their value and forgo most trades) and after 15 iterations at
    N = 1024, 2 rounds, more than 92% of the sellers' sell-or-keep decisions are the truthful ones (the markup's:
    (1 − 0.375 + 1 − 0.141)/2 = 0.742, the goods with p_t/2 < θ_s q ≤ p_t withheld; measured 0.948 after 15
    iterations, 0.965 after 40: the pull toward the margin weakens as it closes, the loss being quadratic in the
    ask's error), and the
    sellers' gain per round is within 10% of the truthful closed form ``(p_0² + p_1²)/(4θ_s) = 0.2197`` (the
    markup's: 0.120). Only the margin constrains the ask (any ask below the price sells), so the mean ask ratio,
    which started at 2, is only checked to have come within 0.15 of 1."""
    from coasejax.train.run import train

    cfg = load_config("lemons", ["population.n_agents=1024", "train.iterations=15", "train.log_every=15",
                                 "checkpoint.every=15", "train.rollout=2"])
    assert cfg.policy.init_scale == 2.0
    s = train(cfg, tmp_path / "run")
    truthful_gain = (0.75**2 + 0.5625**2) / 4
    assert s["game"] == "lemons" and s["iterations"] == 15
    assert s["truthful_decisions"] > 0.92, s
    assert abs(s["seller_gain"] / truthful_gain - 1.0) < 0.10, s
    assert abs(s["ask_ratio"] - 1.0) < 0.15, s


def test_bad_env_keys_give_one_line_errors():
    with pytest.raises(ConfigError, match=r"env\.disclosure") as e:
        load_config("lemons", ["env.disclosure=1.5"])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"env\.buyer_value") as e:
        load_config("lemons", ["env.buyer_value=0.8"])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"env\.seller_value"):
        load_config("lemons", ["env.seller_value=-1"])
    with pytest.raises(ConfigError, match=r"env\.capacity: unknown key for env.kind lemons"):
        load_config("lemons", ["env.capacity=0.5"])


def test_certification_offered_by_providers_recovers_their_clients_share(tmp_path):
    """The provider layer's rule: two providers, one certifying every client's good and one none
    (env.provider_disclosure = [1, 0]): each provider's certified share is exactly its rate, and the market's
    efficiency tends to the providers' mean rate 1/2 (within 0.02 after 16 rounds at N = 2·10⁴: the certified goods'
    share of the total quality has sd below 0.005 there) while the uncertified pool unravels. A list of the wrong
    length or a rate outside [0, 1] is one line naming the key."""
    from tests.conftest import run_cli

    r = run_cli("simulate", "lemons", "--set", "population.n_agents=20000", "--set", "sim.rounds=16", "--set",
                "providers.count=2", "--set", "env.provider_disclosure=[1.0, 0.0]", "--out", tmp_path / "p", "-q")
    assert r.code == 0, r.stderr
    s = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert s["certified_share_by_provider"] == [1.0, 0.0] and s["disclosure"] == 0.5
    assert abs(s["final_efficiency"] - 0.5) < 0.02 and s["limit_efficiency"] == 0.5, s["final_efficiency"]
    for rates, count in (("[1.0]", "2"), ("[1.5, 0.0]", "2")):
        r = run_cli("simulate", "lemons", "--set", f"providers.count={count}", "--set",
                    f"env.provider_disclosure={rates}", "--out", tmp_path / "x", "-q")
        assert r.code == 2 and len(r.lines) == 1 and "env.provider_disclosure" in r.stderr, r.stderr
