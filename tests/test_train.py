"""The trainer: ES pseudo-gradients, determinism, the train/eval CLI (auction games; learned advocates inside the
Coase engine: tests/test_learned_engine.py)."""

import json

import jax
import numpy as np
import pytest

from coasejax.config import load_config
from coasejax.train import es
from coasejax.train.auction_game import auction_game as make_game
from tests.conftest import cli, run_cli

TINY = ["train.population=32", "train.batch=128", "train.opponents=1024", "train.eval_values=256",
        "train.eval_opponents=4096", "train.eval_grid=64", "train.log_every=10"]




def test_es_pseudo_gradient_points_up_the_utility():
    """From truthful bidding in a first-price auction (n = 2), lowering bids raises utility: the pseudo-gradient's
    step on the bid-space skip's weight on v is negative, and one Adam step raises the ex-ante utility."""
    cfg = load_config("auction_first_price_features", [*TINY, "train.population=256", "train.batch=2048",
                                                       "policy.init_scale=1"])
    game = make_game(cfg)
    state = es.init(game, cfg.train, jax.random.PRNGKey(0))
    new, m = es.es_step(game, cfg.train, state)
    from coasejax.train.auction_game import skip_features

    i_v = skip_features("first_price").index("v")
    w_v = lambda s: float(s.params["params"]["Dense_0"]["kernel"][0, i_v, 0])  # noqa: E731
    assert w_v(new) < w_v(state) == 1.0

    def utility(params):
        return float(game.fitness(jax.random.PRNGKey(5), params, 0, params)[0])

    assert utility(new.params) > utility(state.params)


def test_smoothed_gradient_points_up_the_utility():
    """The generic policy from (almost) truthful bids in a first-price auction (n = 2): one step of smoothed gradient
    ascent lowers the output logit (bids are shaded), and raises the ex-ante utility (exact interim utility, the
    same draws), by Adam's first step of the learning rate on every parameter."""
    from coasejax.train.gradient import gradient_step

    cfg = load_config("auction_first_price", [*TINY, "train.batch=2048", "train.learning_rate=0.05"])
    game = make_game(cfg)
    state = es.init(game, cfg.train, jax.random.PRNGKey(0))
    new, m = gradient_step(game, cfg.train, state)
    bias = lambda s: float(s.params["params"]["Dense_2"]["bias"][0, 0])  # noqa: E731
    assert bias(new) == pytest.approx(bias(state) - 0.05, abs=1e-4)

    def utility(params):
        return float(game.fitness(jax.random.PRNGKey(5), params, 0, params)[0])

    assert utility(new.params) > utility(state.params) + 1e-3
    assert np.isfinite(float(m.grad_norm[()])) and float(m.grad_norm) > 0


def test_gradient_chunking_and_seeds():
    """Gradient training cut into chunks gives the same parameters bit for bit; two vmapped seeds differ."""
    from coasejax.train.gradient import Gradient

    cfg = load_config("auction_double", [*TINY, "train.seeds=2"])
    algo = Gradient(make_game(cfg), cfg.train)
    one, _ = algo.make_chunk(20)(algo.init_states())
    two, five = algo.init_states(), algo.make_chunk(5)  # one compiled chunk of 5, run 4 times
    for _ in range(4):
        two, _ = five(two)
    for x, y in zip(jax.tree.leaves(one.params), jax.tree.leaves(two.params)):
        np.testing.assert_array_equal(x, y)
    leaf = jax.tree.leaves(one.params)[0]
    assert not np.array_equal(leaf[0], leaf[1])


def test_same_config_and_seed_give_the_same_numbers_and_seeds_differ():
    cfg = load_config("auction_first_price", [*TINY, "train.seeds=2"])
    game = make_game(cfg)
    run = es.make_chunk(game, cfg.train, 10)
    a, _ = run(es.init_states(game, cfg.train))
    b, _ = run(es.init_states(game, cfg.train))
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)
    leaf = jax.tree.leaves(a.params)[0]
    assert not np.array_equal(leaf[0], leaf[1])  # the two vmapped seeds are independent runs


def test_chunking_does_not_change_the_result():
    cfg = load_config("auction_double", TINY)
    game = make_game(cfg)
    one, _ = es.make_chunk(game, cfg.train, 20)(es.init_states(game, cfg.train))
    two, five = es.init_states(game, cfg.train), es.make_chunk(game, cfg.train, 5)
    for _ in range(4):
        two, _ = five(two)
    for x, y in zip(jax.tree.leaves(one.params), jax.tree.leaves(two.params)):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)


def restored_play(run_dir, step, k=1 << 14):
    """Reference numbers of checkpoint ``step`` of a first-price run (n = 2, uniform), computed here from its restored
    parameters: the exact mean and standard deviation of ``d² = (π(v) − v/2)²`` over values (midpoint quadrature,
    ``k`` points; v/2 is the equilibrium, :func:`coasejax.eval.equilibrium.first_price_bid`), and the mean and
    standard deviation of the revenue of 2²⁰ simulated auctions."""
    import jax.numpy as jnp

    from coasejax import checkpoint as ckpt
    from coasejax.envs import auction
    from coasejax.policies import take
    from coasejax.train.auction_game import make_bidders

    cfg = load_config("auction_first_price", [*TINY, "train.iterations=40", "checkpoint.every=20"])
    game = make_game(cfg)
    mngr = ckpt.manager(run_dir / "checkpoints", read_only=True)
    params = take(ckpt.restore(mngr, step, es.init_states(game, cfg.train)).params, 0)
    mngr.close()
    p = auction.AuctionParams.from_config(cfg.env)
    bid_one, bid_all = make_bidders(game.module, p, jnp.zeros((2,), jnp.int32))
    v = (jnp.arange(k, dtype=jnp.float32) + 0.5) / k
    d2 = np.asarray((bid_one(take(params, 0), v, 0) - v / 2) ** 2, np.float64)
    values = auction.sample_values(jax.random.PRNGKey(11), p, (1 << 20, 2))
    revenue = np.asarray(auction.play(jax.random.PRNGKey(12), values, bid_all(params, values), p).revenue, np.float64)
    return d2.mean(), d2.std(), revenue.mean(), revenue.std()


def test_train_and_eval_cli_write_their_outputs(tmp_path):
    """``train`` writes its summary, log and config; ``eval --step 20`` recomputes the metrics of checkpoint 20 on
    fresh draws, checked against the restored parameters: bne_rmse² is the mean of d² = (π(v) − β(v))² over
    ``train.eval_values`` = 256 fresh values, within 4 standard errors (SE = sd(d²)/16, both exact by quadrature) of
    its exact value at step 20, which is over 8 of them away from step 40's; the revenue of ``train.eval_opponents`` =
    4096 auctions is within 4 SE (SE = sd(revenue)/64) of the mean of 2²⁰. The training-time evaluation of step 20
    meets the same bounds on other draws; a second ``eval`` gives the same numbers."""
    out = tmp_path / "run"
    sets = [a for s in [*TINY, "train.iterations=40", "checkpoint.every=20", "train.learning_rate=0.02"]
            for a in ("--set", s)]
    r = run_cli("train", "auction_first_price", *sets, "--out", str(out))  # in this process: no new JAX import
    assert r.code == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    for key in ("bne_rmse", "utility_loss_rel", "revenue", "efficiency", "agent_steps_per_second", "per_seed"):
        assert key in summary
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [10, 20, 30, 40] and "bne_rmse" in lines[1] and "bne_rmse" not in lines[0]
    assert (out / "config.yaml").exists()
    r = run_cli("eval", str(out), "--step", "20")
    assert r.code == 0, r.stderr
    ev = json.loads((out / "eval.json").read_text())
    assert ev["step"] == 20
    d2, d2_sd, rev, rev_sd = restored_play(out, 20)
    d2_last = restored_play(out, 40)[0]
    se_d2, se_rev = d2_sd / np.sqrt(256), rev_sd * np.sqrt(1 / 4096 + 1 / 2**20)
    assert abs(d2_last - d2) > 8 * se_d2, (d2, d2_last, se_d2)
    for row in (ev, lines[1]):
        assert abs(row["bne_rmse"] ** 2 - d2) < 4 * se_d2, (row["bne_rmse"] ** 2, d2, se_d2)
        assert abs(row["revenue"] - rev) < 4 * se_rev, (row["revenue"], rev, se_rev)
    assert ev["revenue"] != lines[1]["revenue"]  # fresh draws, not the training-time evaluation's
    r = run_cli("eval", str(out), "--step", "20")
    assert r.code == 0, r.stderr
    assert json.loads((out / "eval.json").read_text()) == ev  # deterministic


@pytest.mark.parametrize("args,names", [
    (["train", "auction_first_price", "--set", "env.n_bidders=1"], "env.n_bidders"),
    (["train", "auction_first_price", "--set", "env.value_dist=power:9"], "env.value_dist"),
    (["train", "auction_first_price", "--set", "train.algo=ppo"], "train.algo"),
    (["train", "quickstart"], "mechanism.kind"),
    (["train", "auction_double", "--set", "policy.win_prob=true"], "policy.win_prob"),
    (["train", "no_such_preset"], "no_such_preset"),
])
def test_bad_train_input_exits_2_with_one_line(args, names, tmp_path):
    r = cli(*args, "--out", str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr
    assert names in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_eval_of_a_missing_run_exits_2(tmp_path):
    for args in (["eval", str(tmp_path / "nope")], ["eval", str(tmp_path)]):
        r = cli(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_tensorboard_event_files_hold_the_logged_metrics(tmp_path):
    """With the ``tensorboard`` package installed (in the ``[test]`` extras; ``pip install 'coasejax[tensorboard]'``),
    ``OUT/tb/`` holds an event file whose scalars are the numbers of ``metrics.jsonl``: every tag, every step, to
    float32 precision. Not skipped without the package: a missing extra fails here."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from coasejax.train.run import train

    s = train(load_config("auction_first_price", [*TINY, "train.iterations=30", "checkpoint.every=20"]), tmp_path)
    assert s["tensorboard"] == "tensorboard"
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    logged = {(k, r["step"]): v for r in rows for k, v in r.items() if k != "step" and v is not None}
    assert {"bne_rmse", "utility_loss_rel", "utility", "learning_rate"} <= {k for k, _ in logged}
    read = {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
    assert read.keys() == logged.keys()
    for key, value in logged.items():
        assert read[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
