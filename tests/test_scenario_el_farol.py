"""El Farol (:mod:`coasejax.scenarios.el_farol`) and Granovetter's thresholds (:mod:`coasejax.scenarios.granovetter`)
against their closed forms (THEORY.md "Exchange and coordination"; Arthur 1994; Granovetter 1978)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, stats

from coasejax import scenarios
from coasejax.config import ConfigError, load_config
from coasejax.scenarios import el_farol as ef
from coasejax.scenarios import granovetter as gr
from coasejax.simulate import simulate

EF = scenarios.get("el_farol")
GR = scenarios.get("granovetter")


def ef_config(n=10_000, *extra):
    return load_config(None, ["env.kind=el_farol", f"population.n_agents={n}", *extra])


def rollout(sc, cfg, policy, rounds, envs, seed=0):
    """Per-round metrics ``{field: f64[E, T]}`` and the first states of ``envs`` environments (a scripted policy)."""
    p = sc.params(cfg)
    act = lambda k, pp, s, obs: sc.scripted[policy](k, pp, s)  # noqa: E731

    def one(key):
        s0 = sc.reset(jax.random.fold_in(key, 1), p)
        return s0, scenarios.rollout(sc, act, key, s0, p, rounds)[1]

    first, per = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(seed), envs))
    return {k: np.asarray(v, np.float64) for k, v in per._asdict().items()}, first, p


@pytest.fixture(scope="module")
def mixed():
    """8 environments × 64 rounds of the mixed equilibrium at N = 10^4, L = 0.6: 512 independent attendances."""
    cfg = ef_config(10_000)
    per, first, p = rollout(EF, cfg, "equilibrium", 64, 8)
    return cfg, per, EF.summarise(cfg, p, per, first, first)


def test_mixed_equilibrium_solves_the_indifference_condition():
    """p* solves P(Binomial(N − 1, p*) ≤ C − 1) = q, checked with scipy's binomial CDF and root finder (independent
    of the scenario's log-space sum): +1/−1 (q = 1/2) and +1/−3 (q = 3/4), at N = 100 and 10^6; the scenario's p*
    agrees to 1e-9, and the large-N approximation to 0.5/sqrt(N) (its error is O(1/N))."""
    for n, cap, good, bad in [(100, 0.6, 1.0, -1.0), (1_000_000, 0.6, 1.0, -1.0), (1_000_000, 0.3, 1.0, -3.0),
                              (100, 0.3, 1.0, -3.0)]:
        c = ef.seats_of(n, cap)
        q = -bad / (good - bad)
        ref = optimize.brentq(lambda x: stats.binom.cdf(c - 1, n - 1, x) - q, 1e-9, 1 - 1e-9, xtol=1e-14)
        got = ef.mixed_equilibrium(n, c, good, bad)
        assert abs(got - ref) < 1e-9, (n, cap, got, ref)
        assert abs(ef.large_n_equilibrium(n, c, good, bad) - ref) < 0.5 / math.sqrt(n), (n, cap)
        # going and staying are worth the same: good·P(X ≤ C − 1) + bad·P(X ≥ C) = 0
        win = stats.binom.cdf(c - 1, n - 1, got)
        assert abs(good * win + bad * (1 - win)) < 1e-6
    assert ef.mixed_equilibrium(10, 0, 1.0, -1.0) == 0.0 and ef.mixed_equilibrium(10, 10, 1.0, -1.0) == 1.0


def test_mixed_equilibrium_attendance_mean_and_sd(mixed):
    """Attendance is Binomial(N, p*): its mean over the 512 rounds within 4 standard errors (sd/sqrt(512)) of N p*,
    and its sample sd within 4 standard errors (sd/sqrt(2·511), the normal approximation) of sqrt(N p*(1 − p*)); the
    bar is crowded (A > C) in about half the rounds (P(Bin(N, p*) > C) ≈ 0.496 at q = 1/2; 4 binomial SE)."""
    cfg, per, s = mixed
    n, k = 10_000, 512
    p = s["p_star"]
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    assert s["measured_rounds"] == k
    assert abs(s["attendance_mean"] - mean) < 4 * sd / math.sqrt(k), s
    assert abs(s["attendance_sd"] - sd) < 4 * sd / math.sqrt(2 * (k - 1)), s
    assert s["theory_attendance_mean"] == pytest.approx(mean) and s["theory_attendance_sd"] == pytest.approx(sd)
    crowd = 1 - stats.binom.cdf(s["capacity_seats"], n, p)
    assert abs(s["crowded_rate"] - crowd) < 4 * math.sqrt(crowd * (1 - crowd) / k), s
    assert abs(s["go_probability"] - p) < 1e-6


def test_arthur_predictors_attend_near_capacity():
    """Arthur's adaptive predictors (4 per agent from a family of 19, memory 8) at N = 10^4, L = 0.6 and 0.3: mean
    attendance over rounds 50..249 of 2 environments within 0.05 of L. The band: the predictors are scored by their
    error, so a run of crowded (or empty) rounds promotes the predictors that forecast a crowd (an empty bar), which
    keep (send) their holders home (out), a negative feedback centred on L (Arthur: 'mean attendance converges to
    60'); here the means are 0.588 and 0.325, the band is 2-5× their distance. Attendance swings widely (sd ≈ 0.2 of
    N, far above the mixed equilibrium's 0.005): agents holding the same predictors act alike (herding)."""
    caps = (0.6, 0.3)
    cfgs = [ef_config(10_000, f"env.capacity={cap}", "env.burn_in=50") for cap in caps]
    ps = [EF.params(c) for c in cfgs]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *ps)  # traced leaves only differ: one compiled vmap

    def one(p, key):
        s0 = EF.reset(jax.random.fold_in(key, 1), p)
        return s0, scenarios.rollout(EF, lambda k, pp, s, o: ef.arthur(k, pp, s), key, s0, p, 250)[1]

    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    first, per = jax.jit(jax.vmap(lambda p: jax.vmap(lambda k: one(p, k))(keys)))(stacked)
    for i, cap in enumerate(caps):
        pick = {k: np.asarray(v[i], np.float64) for k, v in per._asdict().items()}
        s = EF.summarise(cfgs[i], ps[i], pick, None, None)
        assert abs(s["attendance_mean_fraction"] - cap) < 0.05, s
        assert 0.05 < s["attendance_sd"] / 10_000 < 0.4, s


def test_train_el_farol_moves_the_coin_flip_toward_p_star(tmp_path):
    """The generic ES path (train/engine_es.py) on the scenario's own step: a BoundedMLP on the attendance history
    starts at a coin flip (p = 0.5 < p* ≈ 0.6: the bar is never crowded, going always pays) and after 15 iterations
    goes with probability above 0.55 and within 0.1 of p* (the preset at 200 iterations reaches 0.5999);
    utility_loss_rel is undefined (nan) for an action that is not relative to a value."""
    from coasejax.train.run import train

    cfg = load_config("el_farol", ["population.n_agents=1024", "train.iterations=15", "train.log_every=15",
                                   "checkpoint.every=15", "train.rollout=2"])
    s = train(cfg, tmp_path / "run")
    assert s["game"] == "el_farol" and s["iterations"] == 15 and math.isnan(s["utility_loss_rel"])
    assert 0.55 < s["go_probability"] and abs(s["go_probability"] - s["p_star"]) < 0.1, s


def test_bad_env_keys_give_one_line_errors():
    with pytest.raises(ConfigError, match=r"env\.capacity") as e:
        load_config("el_farol", ["env.capacity=1.5"])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"env\.bad"):
        load_config("el_farol", ["env.bad=0.5"])
    with pytest.raises(ConfigError, match=r"env\.tolerance: unknown key for env.kind el_farol"):
        load_config("el_farol", ["env.tolerance=0.5"])
    with pytest.raises(ConfigError, match=r"env\.sigma") as e:
        load_config("granovetter", ["env.sigma=-1"])
    assert "\n" not in str(e.value)


# -- Granovetter ------------------------------------------------------------------------------------------------------

def gr_config(n, sigma, rounds=60, *extra):
    return load_config(None, ["env.kind=granovetter", f"population.n_agents={n}", "env.mu=0.25",
                              f"env.sigma={sigma}", f"sim.rounds={rounds}", *extra])


def scipy_first_fixed_point(mu, sigma):
    """The least root of F(x) − x on [0, 1], F the normal CDF (scipy, independent of the scenario): the sign change
    of F(x) − x nearest 0 on a fine grid, refined by brentq."""
    x = np.linspace(0.0, 1.0, 100_001)
    g = stats.norm.cdf(x, mu, sigma) - x
    i = int(np.flatnonzero(np.diff(np.sign(g)) != 0)[0]) if (g <= 0).any() else len(x) - 2
    return optimize.brentq(lambda y: stats.norm.cdf(y, mu, sigma) - y, x[i], x[i + 1], xtol=1e-14)


def test_cascade_stops_at_the_first_fixed_point():
    """N = 10^5, μ = 0.25, σ = 0.1: the simulated final crowd equals the first fixed point of the *sampled*
    thresholds' empirical CDF from 0, iterated in numpy (the same count of agents; XLA may round the crowd's division
    by N differently, which could only matter for a threshold within one float32 ulp of the crowd), and settles in as
    many rounds; it is
    within 5 sd of the first fixed point of F = Φ((x − μ)/σ) (scipy), sd = sqrt(F(1 − F)/N)/(1 − F'(x*)), the
    empirical CDF's error at x* amplified by the cascade's feedback (the delta method)."""
    n, mu, sigma = 100_000, 0.25, 0.1
    cfg = gr_config(n, sigma)
    per, first, p = rollout(GR, cfg, "threshold", 60, 3)
    s = GR.summarise(cfg, p, per, first, first)
    xstar = scipy_first_fixed_point(mu, sigma)
    assert s["theory_crowd"] == pytest.approx(xstar, abs=1e-9)
    assert s["settled"]
    slope = stats.norm.pdf(xstar, mu, sigma)
    sd = math.sqrt(xstar * (1 - xstar) / n) / (1 - slope)
    for e in range(3):
        exact, rounds = gr.empirical_fixed_point(np.asarray(first.theta[e]))
        assert round(per["crowd"][e, -1] * n) == round(exact * n), (e, per["crowd"][e, -1], exact)
        assert int((per["changed"][e] > 0).sum()) == rounds
        assert abs(exact - xstar) < 5 * sd, (exact, xstar, sd)


def test_final_crowd_jumps_across_the_critical_sigma():
    """σ_c solves the tangency F(x) = x, F'(x) = 1 (≈ 0.1222 at μ = 0.25, Granovetter's 12.2 of 100), checked with
    scipy; at N = 10^5 the final crowd is at most 0.06 for σ ≤ σ_c − 0.01 (theory 0.021) and at least 0.99 for
    σ ≥ σ_c + 0.01 (theory 1.000): a jump of 0.93 in the crowd for 0.02 of spread. Each point within 0.01 of the
    scipy first fixed point."""
    sc = gr.critical_sigma(0.25)
    # tangency, independently: the low fixed point and F'(x) = 1 there
    x_c = optimize.brentq(lambda x: stats.norm.pdf(x, 0.25, sc) - 1.0, -1.0, 0.25)
    assert abs(stats.norm.cdf(x_c, 0.25, sc) - x_c) < 1e-9 and sc == pytest.approx(0.1222, abs=1e-3)
    sigmas = [0.08, sc - 0.01, sc + 0.01, 0.2]
    crowd = gr.crowd_curve(gr_config(100_000, 0.1, 120), sigmas)
    assert crowd[1] < 0.06 and crowd[2] > 0.99, crowd
    assert np.all(np.diff(crowd) > -1e-3), crowd  # rising (σ = 0.2's upper fixed point is 0.99991, not 1)
    for s, c in zip(sigmas, crowd):
        assert abs(c - scipy_first_fixed_point(0.25, s)) < 0.01, (s, c)


# -- population scale ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["el_farol", "granovetter"])
def test_runs_at_a_million_agents(preset):
    """N = 10^6 on the CPU, 2 rounds of each preset (El Farol: Arthur's predictors, the heaviest advocate; the
    predictors' scores update in every mode): the summary's numbers are finite (simulate checks) and the throughput
    is reported; El Farol's p* at 10^6 is within 0.5/sqrt(N) of L = 0.6 (its large-N limit), and Granovetter's crowd
    after 2 rounds lies between the instigators' share F(0) = Φ(−2.5) and F(F(0)), ±0.001 (sampling: sd 8e-5)."""
    cfg = load_config(preset, ["population.n_agents=1000000", "sim.rounds=2", "env.burn_in=0"][:3 if preset ==
                                                                                                 "el_farol" else 2])
    s = simulate(cfg)
    assert s["agent_steps_per_second"] > 0 and s["n_agents"] == 1_000_000
    if preset == "el_farol":
        assert s["measured_rounds"] == 2 and abs(s["p_star"] - 0.6) < 0.5e-3, s
    if preset == "granovetter":
        f0 = stats.norm.cdf(-2.5)
        assert f0 - 0.001 < s["final_crowd"] < stats.norm.cdf((f0 - 0.25) / 0.1) + 0.001, s
