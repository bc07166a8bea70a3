"""The multi-round Coase scenario (coasejax.envs.negotiation), PPO (coasejax.train.ppo) and `coasejax compare`.

Environment tests drive `negotiation.step` with scripted actions and check the accounting against closed forms;
training tests run small populations for a few dozen iterations and check the must-show claims at that scale (the
full-scale numbers are in BENCHMARKS.md, "PPO")."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coasejax.config import load_config
from coasejax.envs import negotiation as env
from coasejax.mechanisms.alternating import finite_horizon_share, rubinstein_share
from coasejax.train import ppo


def _params(*overrides):
    cfg = load_config("coase_ppo", list(overrides))
    return cfg, env.Params.from_config(cfg)


def _play(p, n, rounds, policy, seed=0):
    """Run `rounds` rounds of `n` bargains with `policy(obs) -> actions`; sum the per-group totals."""
    state = env.reset(jax.random.PRNGKey(seed), p, n)

    @jax.jit
    def body(state, t):
        acts = policy(env.observe(p, state), state)
        state, r = env.step(jax.random.fold_in(jax.random.PRNGKey(seed + 1), t), state, p, acts)
        return state, (env.round_totals(p, r), r.reward)

    totals, rewards = [], []
    for t in range(rounds):
        state, (tot, rew) = body(state, t)
        totals.append(np.asarray(tot))
        rewards.append(np.asarray(rew))
    return state, dict(zip(env.TOTALS, np.sum(totals, 0))), np.asarray(rewards)


def _spe_policy(p, share_first, share_second, participate=None):
    """Stationary subgame-perfect play: the opener demands `share_first`, the other side `share_second` when it
    proposes; a responder accepts exactly what it would get by rejecting (δ times its own proposing share)."""
    d = np.asarray(p.discount)
    opener_e = p.emitter_first

    def policy(obs, state):
        n = obs.shape[1]
        prop_e = env.proposer_is_emitter(p, state)
        # demand when proposing; threshold when responding (a hair below the continuation value)
        dem_e = share_first if opener_e else share_second
        dem_v = share_second if opener_e else share_first
        thr_e = d[0] * dem_e - 1e-4
        thr_v = d[1] * dem_v - 1e-4
        part = jnp.ones((n,)) if participate is None else participate(obs, state).astype(jnp.float32)
        e = jnp.stack([jnp.full((n,), dem_e), jnp.full((n,), thr_e), jnp.ones((n,)), part], -1)
        v = jnp.stack([jnp.full((n,), dem_v), jnp.full((n,), thr_v), jnp.ones((n,)), part], -1)
        del prop_e
        return jnp.stack([e, v])

    return policy


def test_rubinstein_split_matches_the_closed_forms():
    _, p = _params("mechanism.horizon=400", "mechanism.discount_emitter=0.9", "mechanism.discount_victims=0.8")
    assert float(env.rubinstein_split(p)) == pytest.approx(rubinstein_share(0.9, 0.8), abs=1e-5)
    _, p = _params("mechanism.horizon=7", "mechanism.discount_emitter=0.85", "mechanism.discount_victims=0.85")
    assert float(env.rubinstein_split(p)) == pytest.approx(finite_horizon_share(0.85, 7), abs=1e-5)


@pytest.mark.parametrize("regime", ["emitter", "victim"])
def test_subgame_perfect_play_agrees_at_once_and_is_efficient(regime):
    """Rubinstein play with no costs: every negotiation ends at the first offer, the opener gets its share of the
    surplus every contract round, and every round runs at the first best (efficiency 1 to float precision)."""
    _, p = _params(f"env.regimes=[{regime}]", "env.cost_grid=[0.0]", "mechanism.horizon=400")
    x1 = rubinstein_share(0.9, 0.8)  # emitter opens: (1 − δ_v)/(1 − δ_e δ_v)
    x2 = rubinstein_share(0.8, 0.9)  # the victims' share when they propose
    _, t, rewards = _play(p, 4096, 40, _spe_policy(p, x1, x2))
    assert t["first_offer"] == t["agreed"] == t["started"] > 4096
    assert t["share_e"] / t["first_offer_e"] == pytest.approx(x1, abs=1e-6)
    assert t["gain"] / t["gain_star"] == pytest.approx(1.0, abs=1e-5)
    # each side's reward sums to its share of the surplus
    total_gain = t["gain"]
    assert rewards[:, 0].sum() / total_gain == pytest.approx(x1, abs=1e-4)
    assert rewards[:, 1].sum() / total_gain == pytest.approx(1 - x1, abs=1e-4)


def test_a_random_opener_gives_each_side_its_own_rubinstein_share():
    """`mechanism.first_mover: random`: about half the episodes open with each side, and subgame-perfect play gives
    each opener its own share (the emitter (1 − δ_v)/(1 − δ_e δ_v), the victims (1 − δ_e)/(1 − δ_e δ_v))."""
    _, p = _params("mechanism.first_mover=random", "env.cost_grid=[0.0]", "mechanism.horizon=400")
    x_e, x_v = rubinstein_share(0.9, 0.8), rubinstein_share(0.8, 0.9)

    def policy(obs, state):  # each side demands its opening share when it proposes (stationary SPE)
        n = obs.shape[1]
        e = jnp.stack([jnp.full((n,), x_e), jnp.full((n,), 0.9 * x_e - 1e-4), jnp.ones((n,)), jnp.ones((n,))], -1)
        v = jnp.stack([jnp.full((n,), x_v), jnp.full((n,), 0.8 * x_v - 1e-4), jnp.ones((n,)), jnp.ones((n,))], -1)
        return jnp.stack([e, v])

    _, t, _ = _play(p, 8192, 24, policy)
    assert t["first_offer"].sum() == t["started"].sum()
    assert t["first_offer_e"].sum() / t["started"].sum() == pytest.approx(0.5, abs=0.01)
    assert t["share_e"].sum() / t["first_offer_e"].sum() == pytest.approx(x_e, abs=1e-5)
    assert t["share_v"].sum() / t["first_offer_v"].sum() == pytest.approx(x_v, abs=1e-5)
    assert float(env.rubinstein_split(p, emitter_first=False)) == pytest.approx(x_v, abs=1e-5)


def test_deals_worth_their_costs_reach_the_analytic_curve():
    """Sides that take part iff the contract pays both their costs (`deal_threshold`) and agree at once reach the
    analytic deal rate and efficiency of every cost, group by group."""
    _, p = _params("mechanism.horizon=400")
    x1, x2 = rubinstein_share(0.9, 0.8), rubinstein_share(0.8, 0.9)

    def worth(obs, state):
        _, _, _, s = env.bargain_terms(p, state.a, state.c, state.regime)
        return p.costs[state.cost] <= env.deal_threshold(p, s)

    _, t, _ = _play(p, 8192, 48, _spe_policy(p, x1, x2, participate=worth))
    np.testing.assert_allclose(t["agreed"] / t["started"], t["analytic_deal"] / t["started"], atol=1e-6)
    # per-round efficiency against the analytic one per episode: equal up to episodes cut by the window's ends
    eff, analytic = t["gain"] / t["gain_star"], t["analytic_gain"] / t["episode_value"]
    np.testing.assert_allclose(eff, analytic, atol=0.03)
    assert np.all(np.diff(analytic.reshape(2, -1), axis=1) < 0)  # falls with the cost, under either regime


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
    """Drifting types: the first best moves while a contract's activity stays, so efficiency falls below 1, and
    more so the longer contracts last."""
    x1, x2 = rubinstein_share(0.9, 0.8), rubinstein_share(0.8, 0.9)
    eff = {}
    for length in (2, 16):
        _, p = _params("population.drift=0.1", f"env.contract_rounds={length}", "env.cost_grid=[0.0]",
                       "mechanism.horizon=400")
        _, t, _ = _play(p, 8192, 48, _spe_policy(p, x1, x2))
        eff[length] = t["gain"].sum() / t["gain_star"].sum()
    assert eff[16] < eff[2] < 1.0 - 1e-3, eff


def test_breaches_follow_the_enforcement_probability_and_feed_reputation():
    _, p = _params("state.enforcement=0.8", "env.cost_grid=[0.0]", "mechanism.horizon=400")
    x1, x2 = rubinstein_share(0.9, 0.8), rubinstein_share(0.8, 0.9)
    state, t, _ = _play(p, 20000, 40, _spe_policy(p, x1, x2))
    t = {k: v.sum() for k, v in t.items()}
    # agent i breaches each contract round with q_i = 2(1 − e)u_i; agreements are immediate, so every round is a
    # contract round and i's breaches per contract round are q_i: the mean is 1 − e (sd of q 0.115 over 20000 agents
    # and 800000 Bernoulli rounds: standard error 0.001)
    assert t["breached"] / t["contract"] == pytest.approx(0.2, abs=0.005)
    rep = np.asarray(state.reputation)
    breach = np.asarray(state.breach)
    assert np.corrcoef(rep, breach)[0, 1] < -0.5  # reputation reveals who breaches
    assert t["gain"] / t["gain_star"] < 0.9


def test_truthful_lindahl_gives_the_victims_nothing_and_shading_pays():
    """Lindahl with one victims' coalition: truthful prices give the victims zero gain (emitter's right: they pay C
    per unit for C units of abatement); reporting half the harm, the complete-information free-riding report, gives
    them C²/4 per round and cuts efficiency to 3/4 (free_riding_efficiency(1))."""
    _, p = _params("mechanism.kind=lindahl", "env.regimes=[emitter]", "env.cost_grid=[0.0]",
                   "population.benefit=uniform:2:3", "population.harm=uniform:0:2")

    def const(report_v):
        def policy(obs, state):
            n = obs.shape[1]
            e = jnp.stack([jnp.full((n,), 0.5), jnp.full((n,), 0.5), jnp.ones((n,)), jnp.ones((n,))], -1)
            v = e.at[:, 2].set(report_v)
            return jnp.stack([e, v])
        return policy

    _, t, rew = _play(p, 4096, 24, const(1.0))
    assert abs(rew[:, 1].sum()) < 1e-3 * rew[:, 0].sum()
    assert t["gain"] / t["gain_star"] == pytest.approx(1.0, abs=1e-5)
    _, t, rew = _play(p, 4096, 24, const(0.5))
    assert rew[:, 1].sum() > 0
    assert t["gain"] / t["gain_star"] == pytest.approx(0.75, abs=0.01)


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
    from coasejax.train.run import train

    cfg = load_config("coase_ppo_providers", SMALL + ["train.pool_size=2", "train.pool_every=5",
                                                      "train.pool_prob=0.3"])
    full, part = tmp_path / "full", tmp_path / "part"
    summary = train(cfg, full)
    assert summary["algo"] == "ppo" and summary["checkpoint_steps"] == [10, 20]
    shutil.copytree(full / "checkpoints" / "10", part / "checkpoints" / "10")
    train(cfg, part, resume=True)
    (sa, la), (sb, lb) = _leaves(full), _leaves(part)
    assert sa == sb == 20 and len(la) == len(lb)
    for a, b in zip(la, lb):
        np.testing.assert_array_equal(a, b)
    # the opponent pool took a snapshot every 5 iterations: the latest (slot 1 of 2 after 4 snapshots) is the final
    # parameters
    mngr = ckpt.manager(full / "checkpoints", read_only=True)
    import orbax.checkpoint as ocp

    state = mngr.restore(20, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    assert int(np.asarray(state["pool_count"]).reshape(-1)[0]) == 4
    for pool_leaf, leaf in zip(jax.tree.leaves(state["pool"]), jax.tree.leaves(state["params"])):
        np.testing.assert_array_equal(np.asarray(pool_leaf)[:, 1], np.asarray(leaf))
    meta = ckpt.saved_meta(mngr, 20)
    assert meta["scenario"] == "coase_rounds" and meta["observation"] == list(env.OBSERVATION)
    assert meta["actions"] == list(env.ACTIONS) and meta["advocates"] == ["learned", "truthful"]
    assert len(meta["config_hash"]) == 16 and meta["version"]


def test_ppo_advocates_stay_efficient_and_split_like_rubinstein():
    """Zero costs, both rights regimes, 2000 bargains, 120 iterations of the preset's PPO: learned advocates agree at
    the first offer (efficiency ≥ 0.95 under each regime) and the opener's share lies within 0.05 of Rubinstein's
    (1 − δ_v)/(1 − δ_e δ_v) = 0.714 (horizon 64: the finite-horizon value is the same to 10⁻⁴)."""
    from coasejax.train.run import Trainer, eval_key, make_algo

    cfg = load_config("coase_ppo", ["population.n_agents=2000", "env.cost_grid=[0.0]", "train.iterations=120",
                                    "train.log_every=60", "checkpoint.every=0"])
    trainer = Trainer(cfg, make_algo(cfg))
    states = trainer.algo.init_states()
    for _ in range(2):
        states, _ = trainer.chunk(60, states)(states)
    m = trainer.evaluate(states.params, eval_key(0, 120))
    eff = m["efficiency_by_group"][0]
    assert np.all(eff >= 0.95), eff
    assert m["rubinstein_share"][0] == pytest.approx(rubinstein_share(0.9, 0.8), abs=1e-4)
    assert m["proposer_share_error"][0] <= 0.05, (m["proposer_share"], m["rubinstein_share"])


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "coasejax.cli", *args], capture_output=True, text=True, timeout=600)


def test_trained_provider_beats_scripted_truthful_and_compare_reports_it(tmp_path):
    """Lindahl contributions, two providers, clients switching: the provider whose advocates PPO trains wins market
    share and client utility over the scripted truthful one; `compare` finds that significant, and finds no
    significant difference between a policy and itself."""
    run = tmp_path / "run"
    r = _cli("train", "coase_ppo_providers", "--out", str(run), "-q", "--set", "population.n_agents=1000",
             "--set", "train.iterations=20", "--set", "checkpoint.every=20", "--set", "train.minibatches=4")
    assert r.returncode == 0, r.stderr
    summary = json.loads((run / "summary.json").read_text())
    shares, utility = summary["provider_shares"], summary["provider_utility"]
    assert shares[0] > 0.6 and utility[0] > utility[1], (shares, utility)
    for key in ("efficiency", "deal_rate", "mean_activity", "first_best_mean_activity", "breach_rate"):
        assert key in summary
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(len(row["train_provider_shares"]) == 2 for row in log)  # market shares over training
    assert (run / "provider_shares.png").stat().st_size > 10_000

    out = tmp_path / "cmp"
    r = _cli("compare", f"{run}:0", "scripted:truthful", f"{run}:0", "--out", str(out), "--seeds", "6",
             "--rounds", "32")
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "compare.json").read_text())
    assert (out / "compare.png").stat().st_size > 10_000
    vs_truthful, vs_self = result["pairs"][0], result["pairs"][1]
    assert vs_truthful["b"] == "scripted:truthful"
    assert vs_truthful["significant"] and vs_truthful["winner"] == vs_truthful["a"]
    assert vs_truthful["share_a"] > 0.6 and vs_truthful["utility_diff_ci"][0] > 0
    assert vs_self["a"] == vs_self["b"] and not vs_self["significant"]
    assert vs_self["utility_p_holm"] > 0.05
    assert result["ranking"][-1]["entry"] == "scripted:truthful"


def test_compare_names_what_differs_and_rejects_bad_entries(tmp_path):
    from coasejax.eval import compare as cmp

    meta = {"observation": list(env.OBSERVATION), "actions": list(env.ACTIONS), "policy_hidden": [32, 32]}
    a = cmp.Entry(name="A", kind="learned", meta=meta)
    b = cmp.Entry(name="B", kind="learned", meta={**meta, "observation": list(env.OBSERVATION)[:-1]})
    with pytest.raises(cmp.CompareError, match="B: incompatible with A: observation differs"):
        cmp.check_compatible([a, b])
    c = cmp.Entry(name="C", kind="learned", meta={**meta, "policy_hidden": [64]})
    with pytest.raises(cmp.CompareError, match="policy_hidden differs"):
        cmp.check_compatible([a, c])
    r = _cli("compare", str(tmp_path / "nope"), "scripted:truthful", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "not a run directory" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _cli("compare", "scripted:truthful", "scripted:truthful", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "at least one checkpoint" in r.stderr


def test_holm_adjustment():
    from coasejax.eval.compare import holm

    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


def test_compare_auction_policies_head_to_head(tmp_path):
    """Auctions: a learned first-price policy against truthful bidding (which earns nothing when it wins) wins
    significantly; a policy against itself on the same auctions differs by exactly zero."""
    run = tmp_path / "fp"
    r = _cli("train", "auction_first_price", "--out", str(run), "-q", "--set", "train.iterations=100",
             "--set", "train.log_every=50", "--set", "checkpoint.every=100", "--set", "train.population=64",
             "--set", "train.eval_opponents=4096", "--set", "train.eval_values=256")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "cmp"
    r = _cli("compare", str(run), "scripted:truthful", str(run), "--out", str(out), "--seeds", "5",
             "--agents", "20000")
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "compare.json").read_text())
    assert result["scenario"] == "auction/first_price"
    vs_truthful, vs_self = result["pairs"][0], result["pairs"][1]
    # truthful bidders pay their value when they win: utility 0 exactly; the learned policy shades and earns
    assert vs_truthful["utility_b"] == 0.0 and vs_truthful["utility_a"] > 0.05
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
