"""The multi-round Coase negotiation as a scenario of the interface (coasejax.scenarios.coase_rounds): its spec
against what observe and step return, scripted truthful play through `coasejax.scenarios.rollout` against closed
forms, the host-side summary of a run, and PPO (coasejax.train.ppo) training on it through the generic interface
only."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coasejax import scenarios
from coasejax.config import load_config
from coasejax.scenarios import coase_rounds

SC = scenarios.get("coase_rounds")


def _setup(*overrides, n=512):
    cfg = load_config("coase_ppo", [f"population.n_agents={n}", "env.cost_grid=[0.0]", *overrides])
    return cfg, SC.params(cfg)


def _truthful(key, params, state, obs):
    return SC.scripted["truthful"](key, params, state)


def _surplus(a, c, emitter_right):
    """The per-round surplus from THEORY.md's closed forms, float64 (x_max = 10 never binds here: a ≤ 3):
    emitter's right C²/2 where C ≤ a, else C a − a²/2; victims' right (a − C)²/2 where a > C, else 0."""
    a, c = np.asarray(a, np.float64), np.asarray(c, np.float64)
    return np.where(emitter_right, np.where(c <= a, c**2 / 2, c * a - a**2 / 2), np.where(a > c, (a - c) ** 2 / 2, 0))


def test_the_scenario_is_registered_and_its_spec_matches_observe_and_step():
    assert scenarios.REGISTRY["coase_rounds"] is SC is coase_rounds.SCENARIO
    cfg, p = _setup(n=64)
    spec = SC.spec(p)
    assert spec.seats == 2 and not spec.relative
    assert len(spec.low) == len(spec.high) == len(spec.truthful) == len(spec.actions) == 4
    assert all(lo <= t <= hi for lo, t, hi in zip(spec.low, spec.truthful, spec.high))
    assert spec.layout()["observation"] == list(spec.observation)
    state = SC.reset(jax.random.PRNGKey(0), p)
    obs = SC.observe(p, state)
    assert obs.shape == (spec.seats, 64, len(spec.observation)) and obs.dtype == jnp.float32
    acts = SC.scripted["truthful"](jax.random.PRNGKey(1), p, state)
    assert acts.shape == (spec.seats, 64, len(spec.actions))
    np.testing.assert_array_equal(np.asarray(acts), np.broadcast_to(spec.truthful, acts.shape))
    use = SC.decisions(p, state)
    assert use.shape == acts.shape and use.dtype == jnp.bool_
    assert SC.discount(p).shape == (spec.seats,)
    owners, provs = SC.seat_owners(p, state), SC.seat_providers(p, state)
    assert owners.shape == provs.shape == (spec.seats, 64)
    np.testing.assert_array_equal(np.asarray(owners[0]), np.arange(64))
    np.testing.assert_array_equal(np.asarray(owners[1]), (np.arange(64) + 1) % 64)
    np.testing.assert_array_equal(np.asarray(provs), np.asarray(state.provider)[np.asarray(owners)])
    new, tr = SC.step(jax.random.PRNGKey(2), state, acts, p)
    assert tr.reward.shape == (spec.seats, 64) and tr.done.shape == (64,)
    assert isinstance(tr.metrics, coase_rounds.Metrics)
    assert tr.metrics.totals.shape == (len(coase_rounds.env.TOTALS), p.groups)
    assert tr.metrics.providers.shape == (2, cfg.providers.count)
    assert int(new.t) == 1


def test_truthful_play_pays_each_seat_half_the_closed_form_surplus():
    """Truthful advocates (an equal split, always taking part) at zero cost and full enforcement agree at the first
    offer: each seat is paid S/2 each round, bargain by bargain, S from the closed forms."""
    cfg, p = _setup(n=1024)
    state = SC.reset(jax.random.PRNGKey(0), p)
    acts = SC.scripted["truthful"](None, p, state)
    right = np.asarray(p.regimes)[np.asarray(state.regime)]
    s = _surplus(state.a, state.c, right)
    _, tr = SC.step(jax.random.PRNGKey(1), state, acts, p)
    np.testing.assert_allclose(np.asarray(tr.reward[0]), s / 2, atol=2e-5)
    np.testing.assert_allclose(np.asarray(tr.reward[1]), s / 2, atol=2e-5)


def _mixture_moments(grid=2000):
    """E[S] and Var[S] of a bargain of population.benefit U(1, 3), harm U(0, 2), under a rights regime drawn
    uniformly from {emitter, victim}: midpoint rule on the closed forms (error ≪ 10⁻⁵)."""
    a = 1 + 2 * (np.arange(grid) + 0.5) / grid
    c = 2 * (np.arange(grid) + 0.5) / grid
    aa, cc = np.meshgrid(a, c)
    both = np.stack([_surplus(aa, cc, True), _surplus(aa, cc, False)])
    m1, m2 = both.mean(), (both**2).mean()
    return m1, m2 - m1**2


def test_truthful_rollout_is_efficient_and_its_summary_matches_the_closed_forms():
    """Through `scenarios.rollout` and `summarise` (2 envs, 1024 bargains, the preset's 8-round contracts): after
    the burn-in, efficiency 1 and every negotiation agrees at its first offer (deal rate 1, no sit-outs or breaches),
    the emitter opener keeps its demand 1/2, the activity is the first best, and the gain per bargain and round is
    E[S] of the type distribution within 4 standard errors: an episode's types are fixed for its L rounds, so a
    bargain's measured rounds weight its episodes by w_e rounds each, SE = sd(S) sqrt(Σ w²)/(Σ w sqrt(N E))."""
    n, envs = 1024, 2
    cfg, p = _setup(n=n)
    burn_in, length = p.burn_in, p.contract_rounds
    t = burn_in + 48
    keys = jax.random.split(jax.random.PRNGKey(3), envs)

    def run(key):
        first = SC.reset(jax.random.fold_in(key, 0), p)
        last, per_round = scenarios.rollout(SC, _truthful, jax.random.fold_in(key, 1), first, p, t)
        return first, last, per_round

    first, last, per_round = jax.jit(jax.vmap(run))(keys)
    per_round = {k: np.asarray(v, np.float64) for k, v in per_round._asdict().items()}
    assert per_round["totals"].shape[:2] == (envs, t)
    out = SC.summarise(cfg, p, per_round, first, last)
    assert out["n_agents"] == n and out["rounds"] == t and out["envs"] == envs and out["burn_in"] == burn_in
    assert out["efficiency"] == pytest.approx(1.0, abs=1e-5)
    assert out["analytic_efficiency"] == pytest.approx(1.0, abs=1e-5)
    assert out["deal_rate"] == 1.0 and out["first_offer_rate"] == 1.0 and out["sit_out_rate"] == 0.0
    assert out["breach_rate"] == 0.0 and out["contract_share"] == 1.0
    assert out["proposer_share"] == pytest.approx(0.5, abs=1e-6)
    assert out["mean_activity"] == pytest.approx(out["first_best_mean_activity"], rel=1e-5)
    assert out["transaction_costs_paid"] == 0.0
    assert out["provider_shares"] == [pytest.approx(1.0)] and out["final_provider_shares"] == [1.0]
    assert len(out["provider_shares_by_round"]) == t
    rows = out["cost_curve"]["curve"]
    assert [r["regime"] for r in rows] == ["emitter", "victim"] and all(r["efficiency"] > 1 - 1e-5 for r in rows)
    mean, var = _mixture_moments()
    rounds = np.arange(burn_in, t)
    w = np.bincount(rounds // length)  # measured rounds of each episode of a bargain
    se = np.sqrt(var) * np.sqrt(np.sum(w**2)) / (w.sum() * np.sqrt(n * envs))
    assert out["gain_per_bargain_round"] == pytest.approx(mean, abs=4 * se)
    assert out["first_best_gain_per_bargain_round"] == pytest.approx(mean, abs=4 * se)


def test_a_rollout_cut_into_chunks_gives_the_same_numbers():
    _, p = _setup("population.drift=0.1", "state.enforcement=0.7", n=256)
    key, state = jax.random.PRNGKey(5), SC.reset(jax.random.PRNGKey(4), p)
    whole, m_whole = scenarios.rollout(SC, _truthful, key, state, p, 12)
    half, m_a = scenarios.rollout(SC, _truthful, key, state, p, 5)
    half, m_b = scenarios.rollout(SC, _truthful, key, half, p, 7)
    for x, y in zip(jax.tree.leaves(whole), jax.tree.leaves(half)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_array_equal(np.asarray(m_whole.totals), np.concatenate([m_a.totals, m_b.totals]))


SMALL = ["population.n_agents=256", "train.minibatches=2", "train.rollout=8", "env.eval_rounds=8"]


def test_ppo_trains_through_the_generic_interface_and_its_mean_action_is_the_squashed_mean():
    """PPO given the scenario record (with and without its optional functions) trains and evaluates; the deployed
    mean action of one provider's parameters is low + (high − low)·sigmoid(mean), the checkpoint's contract with
    `simulate`."""
    from coasejax.policies import take
    from coasejax.train.ppo import DEFAULT_DISCOUNT, PPO

    cfg = load_config("coase_ppo", SMALL)
    algo = PPO(cfg, SC)
    assert algo.layout == SC.spec(algo.params).layout() and algo.agents_per_iteration == 2 * 256 * 8
    states = algo.init_states()
    states, m = algo.make_chunk(4)(states)
    row = algo.log_row(m)
    assert np.isfinite(row["train_efficiency"]) and 0 <= row["train_deal_rate"] <= 1
    ev = jax.jit(jax.vmap(algo.metrics, in_axes=(None, 0)))(jax.random.PRNGKey(7), states.params)
    assert np.all(np.isfinite(np.asarray(ev["efficiency"])))
    assert float(ev["rubinstein_share"][0]) == pytest.approx(algo.scenario.metrics(
        algo.params, algo.play(jax.random.PRNGKey(7), take(states.params, 0)))["rubinstein_share"])

    # the deployed policy: one provider's parameter dict, the spec's bounds
    one = take(take(states.params, 0), 0)
    spec = SC.spec(algo.params)
    state = SC.reset(jax.random.PRNGKey(8), algo.params)
    obs = SC.observe(algo.params, state)
    mean, _, _ = algo.module.apply(one, obs)
    lo, hi = np.asarray(spec.low), np.asarray(spec.high)
    expected = lo + (hi - lo) * np.asarray(jax.nn.sigmoid(mean))
    _, acts, *_ = algo.act(take(states.params, 0), obs, SC.seat_providers(algo.params, state), None)
    np.testing.assert_allclose(np.asarray(acts), expected, rtol=1e-6, atol=1e-6)

    # without the optional functions: every field decided every round, discount 0.99, the summed metrics returned
    bare = SC._replace(name="coase_rounds_bare", decisions=None, discount=None, metrics=None)
    algo = PPO(load_config("coase_ppo", SMALL[:1] + ["train.minibatches=1", "train.rollout=2", "env.eval_rounds=2"]),
               bare)
    np.testing.assert_allclose(np.asarray(algo.discount), [DEFAULT_DISCOUNT] * 2)
    assert algo.name.startswith("coase_rounds_bare/")
    states, m = algo.make_chunk(1)(algo.init_states())
    assert np.all(np.isnan(np.asarray(m.efficiency))) and np.all(np.isfinite(np.asarray(m.value_loss)))
    out = algo.metrics(jax.random.PRNGKey(9), take(states.params, 0))
    assert set(out) == {"totals", "providers", "utility_loss_rel", "utility_loss_rel_by_seat"}
    assert np.asarray(out["utility_loss_rel_by_seat"]).shape == (2,) and 0 <= float(out["utility_loss_rel"]) <= 1
