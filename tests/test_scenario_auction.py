"""The auction market scenario (:mod:`coasejax.scenarios.auction`) against auction theory (Krishna 2010)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coasejax import scenarios
from coasejax.config import ConfigError, load_config
from coasejax.scenarios import auction as market

SC = scenarios.get("auction")
KEY = jax.random.PRNGKey(3)


def config(fmt="first_price", n=3, agents=60_000, *extra):
    bidders = 2 if fmt == "double" else n
    return load_config(None, ["env.kind=auction", f"env.auction={fmt}", f"env.n_bidders={bidders}",
                              f"population.n_agents={agents}", *extra])


def run(cfg, policy, rounds=8, envs=1):
    """``(summary, totals, first, last)`` of ``rounds`` rounds with a scripted policy, through ``rollout``."""
    p = SC.params(cfg)
    act = lambda key, params, state, obs: SC.scripted[policy](key, params, state)  # noqa: E731

    def one(key):
        first = SC.reset(jax.random.fold_in(key, 1), p)
        last, per = scenarios.rollout(SC, act, key, first, p, rounds)
        return first, last, per

    first, last, per = jax.jit(jax.vmap(one))(jax.random.split(KEY, envs))
    per_round = {k: np.asarray(v, np.float64) for k, v in per._asdict().items()}
    totals = jax.tree.map(lambda x: jnp.sum(x, axis=(0, 1)), per)
    return SC.summarise(cfg, p, per_round, first, last), SC.metrics(p, totals), first, last


@pytest.mark.parametrize("fmt,policy", [("second_price", "truthful"), ("first_price", "equilibrium")])
def test_revenue_is_the_expected_second_highest_value(fmt, policy):
    """Uniform values, n = 3, no reserve: truthful second-price bidders and equilibrium first-price bidders both
    raise the expected second-highest value (n − 1)/(n + 1) = 1/2 (revenue equivalence), within 4 standard errors of
    the 160,000 auctions; the equilibrium bids are the analytic ones (bne_rmse 0), and the good goes to the highest
    value (efficiency 1)."""
    n = 3
    s, m, _, _ = run(config(fmt, n), policy)
    assert s["auctions_per_round"] * s["rounds"] == 160_000
    assert abs(s["revenue"] - (n - 1) / (n + 1)) < 4 * s["revenue_se"], s
    assert 0 < s["revenue_se"] < 2e-3
    assert s["bne_rmse"] < 1e-6
    assert s["efficiency"] == pytest.approx(1.0, abs=1e-6)
    assert s["trade_rate"] == 1.0
    # the bidders' surplus: E[max] − E[second] = n/(n+1) − (n−1)/(n+1), shared by n bidders
    assert s["utility"] == pytest.approx(1 / (n * (n + 1)), abs=2e-3)
    assert float(m["revenue"]) == pytest.approx(s["revenue"], rel=1e-5)
    assert float(m["efficiency"]) == pytest.approx(s["efficiency"], abs=1e-5)
    json.dumps(s)  # plain numbers


def test_truthful_first_price_gives_away_nothing_and_misses_the_equilibrium():
    """Truthful bidders at first price pay their values: zero utility, revenue E[max] = n/(n+1), and bids
    ``v`` against the equilibrium ``(n − 1) v / n``: the bne error is ``sqrt(E[(v/n)²]) = 1/(n √3)``."""
    n = 3
    s, _, _, _ = run(config("first_price", n), "truthful")
    assert s["utility"] == pytest.approx(0.0, abs=1e-7)
    assert abs(s["revenue"] - n / (n + 1)) < 4 * s["revenue_se"]
    assert s["bne_rmse"] == pytest.approx(1 / (n * np.sqrt(3)), rel=0.01)


def test_reserve_price_excludes_low_values_from_first_best():
    """Second price with reserve r = 0.3, truthful: the good is sold iff the top value reaches r, so efficiency
    against the reserve's first best is 1 and the trade rate is 1 − r^n."""
    s, _, _, _ = run(config("second_price", 2, 60_000, "env.reserve_price=0.3"), "truthful")
    assert s["efficiency"] == pytest.approx(1.0, abs=1e-6)
    assert s["efficiency_unreserved"] < 1.0
    assert s["trade_rate"] == pytest.approx(1 - 0.3 ** 2, abs=4 * np.sqrt(0.09 * 0.91 / 240_000))


def test_double_auction_truthful_is_efficient_and_linear_equilibrium_trades_9_of_32():
    """The k = ½ double auction, uniform values and costs: truthful buyers and sellers trade iff v ≥ c (efficiency
    1, trade rate ½); in the linear equilibrium they trade iff v − c ≥ ¼: probability 9/32, efficiency 27/32
    (Chatterjee & Samuelson 1983), and the scripted bids are the analytic ones."""
    s, _, _, _ = run(config("double", agents=60_000), "truthful")
    assert s["efficiency"] == pytest.approx(1.0, abs=1e-6)
    assert s["trade_rate"] == pytest.approx(0.5, abs=0.01)
    assert s["revenue"] == 0.0
    s, _, _, _ = run(config("double", agents=60_000), "equilibrium")
    assert s["linear_bne_rmse"] < 1e-6
    assert s["trade_rate"] == pytest.approx(9 / 32, abs=0.01)
    assert s["efficiency"] == pytest.approx(27 / 32, abs=0.01)


@pytest.mark.parametrize("fmt,extra", [("first_price", ["policy.win_prob=true"]), ("all_pay", []), ("double", [])])
def test_spec_matches_observe_and_step(fmt, extra):
    cfg = config(fmt, 4, 400, *extra)
    p = SC.params(cfg)
    spec = SC.spec(p)
    state = SC.reset(KEY, p)
    obs = SC.observe(p, state)
    assert spec.seats == 1 and spec.relative
    assert obs.shape == (spec.seats, 400, len(spec.observation)) and obs.dtype == jnp.float32
    assert spec.observation == (("v", "G(v)") if "policy.win_prob=true" in extra else ("v",))
    for name, policy in SC.scripted.items():
        actions = policy(KEY, p, state)
        assert actions.shape == (spec.seats, 400, len(spec.actions)), name
    truthful = SC.scripted["truthful"](KEY, p, state)
    np.testing.assert_allclose(truthful[..., 0], spec.truthful[0] * obs[..., 0])  # relative: truthful × own value
    new, tr = jax.jit(SC.step, static_argnums=3)(KEY, state, truthful, p)
    assert tr.reward.shape == (spec.seats, 400) and tr.done.shape == (400,)
    assert int(new.t) == 1 and new.values.shape == (400,)
    assert SC.seat_owners(p, state).shape == SC.seat_providers(p, state).shape == (spec.seats, 400)
    np.testing.assert_array_equal(SC.seat_owners(p, state)[0], np.arange(400))
    expected = np.arange(400) % 2 if fmt == "double" else np.zeros(400)
    np.testing.assert_array_equal(SC.seat_providers(p, state)[0], expected)


def test_n_agents_must_be_a_multiple_of_the_auction_size():
    with pytest.raises(ConfigError, match="population.n_agents"):
        SC.params(config("first_price", 3, 1000))
    with pytest.raises(ConfigError, match="population.n_agents"):
        SC.params(config("double", agents=1001))


def test_matching_is_a_bijection_that_changes_partners():
    """Every round each agent sits in exactly one auction, and its partners change from round to round."""
    p = SC.params(config("first_price", 3, 30))
    ids = jnp.arange(30, dtype=jnp.float32)
    partners = []
    for t in range(4):
        shift = market.shifts(p, jnp.int32(t))
        g = market.group(p, ids, shift)
        assert sorted(np.asarray(g).ravel().tolist()) == list(range(30))
        np.testing.assert_array_equal(market.ungroup(p, g, shift), ids)
        row = int(np.nonzero(np.asarray(g) == 0)[0][0])
        partners.append(tuple(np.asarray(g[row]).tolist()))
    assert len(set(partners)) == 4, partners


@pytest.mark.parametrize("fmt,extra", [("first_price", ["policy.win_prob=true", "policy.hidden=[]"]),
                                       ("double", ["policy.hidden=[8]", "policy.shared=false"])])
def test_game_policies_act_on_the_scenario_observation(fmt, extra):
    """The parameters of the ES game's bidders (:mod:`coasejax.train.auction_game`) applied to the scenario's
    observation give the bids the game's own ``bid_one`` gives (the seller of the double auction mirrored)."""
    from coasejax.envs import auction
    from coasejax.policies import init_stack, take
    from coasejax.train.auction_game import make_advocate, make_bidders

    cfg = config(fmt, 2, 200, *extra)
    ap = auction.AuctionParams.from_config(cfg.env)
    module = make_advocate(cfg, ap)
    role_provider, _ = auction.roles(ap, cfg.policy.shared)
    n_prov = int(role_provider.max()) + 1
    stack = init_stack(module, KEY, n_prov, 2 if cfg.policy.win_prob else 1)
    stack = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(5), x.shape), stack)
    bid_one, _ = make_bidders(module, ap, role_provider)

    p = SC.params(cfg)
    state = SC.reset(KEY, p)
    obs = SC.observe(p, state)
    providers = SC.seat_providers(p, state)[0]
    roles = market.agent_roles(p)
    acts = jnp.stack([module.apply(take(stack, q), obs)[0] for q in range(n_prov)])  # f32[P, N]
    actions = jnp.take_along_axis(acts, providers[None], axis=0)[..., None]  # f32[1, N, 1]
    got = market.bids_of(p, actions)
    want = jnp.stack([bid_one(take(stack, int(role_provider[j])), state.values, j) for j in range(p.n_roles)])
    np.testing.assert_allclose(got, jnp.take_along_axis(want, roles[None], axis=0)[0], rtol=1e-6, atol=1e-7)


def test_same_seed_same_numbers_and_chunked_rollout_agrees():
    cfg = config("first_price", 2, 2000)
    p = SC.params(cfg)
    act = lambda key, params, state, obs: obs[..., :1] * 0.7  # noqa: E731
    s0 = SC.reset(KEY, p)
    roll = jax.jit(lambda s, length: scenarios.rollout(SC, act, KEY, s, p, length), static_argnums=1)
    whole, m = roll(s0, 6)
    half, m1 = roll(s0, 3)
    rest, m2 = roll(half, 3)
    np.testing.assert_array_equal(whole.utility, rest.utility)
    np.testing.assert_array_equal(m.revenue, jnp.concatenate([m1.revenue, m2.revenue]))
