"""PPO advocates in alternating offers against Rubinstein's subgame-perfect split (issue 16, item 5): the must-show at
a reduced budget, and the strategy panels and the grid best response of the trained (0.8, 0.9) policy. Its own file
so that the suite's two workers share the PPO tests evenly (tests/test_ppo.py holds the rest)."""

from __future__ import annotations

import functools
import json

import jax
import numpy as np
import pytest

from coasejax.config import load_config
from coasejax.mechanisms.alternating import rubinstein_share

@functools.lru_cache(maxsize=2)
def _train_rubinstein(delta_e, delta_v, iterations=120):
    """The coase_rubinstein preset at a reduced budget (10³ bargains, `iterations` iterations): the trainer, the final states
    and their evaluation (cached: the must-show and the strategy test share the (0.8, 0.9) run)."""
    from coasejax.train.run import Trainer, eval_key, make_algo

    cfg = load_config("coase_rubinstein", ["population.n_agents=1000", f"train.iterations={iterations}",
                                           f"mechanism.discount_emitter={delta_e}",
                                           f"mechanism.discount_victims={delta_v}", "train.log_every=60",
                                           "checkpoint.every=0"])
    trainer = Trainer(cfg, make_algo(cfg))
    states = trainer.algo.init_states()
    for _ in range(iterations // 60):
        states, _ = trainer.chunk(60, states)(states)
    return trainer, states, trainer.evaluate(states.params, eval_key(0, iterations))


@pytest.mark.parametrize("delta_e,delta_v,iterations", [(0.8, 0.9, 120), (0.95, 0.95, 180)])
def test_ppo_advocates_split_like_rubinstein_within_0_02(delta_e, delta_v, iterations):
    """Issue 16's must-show at a reduced budget (the nine pairs at 10⁴ bargains are in BENCHMARKS.md): zero costs,
    the opener drawn per episode, both rights regimes; learned advocates agree at the first offer (efficiency ≥ 0.95
    under each regime) and each opener's share lies within 0.02 of its subgame-perfect share for the horizon of 128
    offers, (1 − δ_r)/(1 − δ_o δ_r) to 0.0015. The old preset's error at (0.8, 0.9) was 0.060 at 10⁴ bargains and 200
    iterations (0.05–0.08 in this test's setting), so the tolerance can fail. Measured here: 0.0014 at (0.8, 0.9) after
    120 iterations; (0.95, 0.95), where the two shares are closest and the learner's noise matters most, was 0.020
    after 120 iterations (one seed; a second seed 0.017) and is 0.008 after the 180 it is given."""
    _, _, m = _train_rubinstein(delta_e, delta_v, iterations)
    assert np.all(m["efficiency_by_group"][0] >= 0.95), m["efficiency_by_group"]
    assert m["first_offer_rate"][0] >= 0.95, m["first_offer_rate"]
    theory_e, theory_v = rubinstein_share(delta_e, delta_v), rubinstein_share(delta_v, delta_e)
    assert m["rubinstein_share"][0] == pytest.approx(theory_e, abs=0.0015)
    assert m["rubinstein_share_victims"][0] == pytest.approx(theory_v, abs=0.0015)
    shares = (m["proposer_share"][0], m["proposer_share_victims"][0])
    assert abs(shares[0] - m["rubinstein_share"][0]) <= 0.02, shares
    assert abs(shares[1] - m["rubinstein_share_victims"][0]) <= 0.02, shares
    assert m["proposer_share_error"][0] <= 0.02


def test_rubinstein_strategy_panels_and_the_grid_best_response():
    """Items 6 and 7 of issue 16 on a trained (0.8, 0.9) policy: `strategy` gives the demand and threshold panels by
    offer beside the subgame-perfect ones (the learned first demand of each side is the share it gets in the
    evaluation's first-offer agreements); `utility_loss_rel` against the grid of 41 constant deviations per field is
    below 0.2 for the trained play (0.118 measured: proposers demand less than the learned thresholds would accept, see
    BENCHMARKS.md) and grows by more than 0.05 when the demands are moved 1 logit down (a proposer then leaves more on
    the table) or the thresholds 1 logit down (a proposer could then demand far more)."""
    trainer, states, m = _train_rubinstein(0.8, 0.9, 120)  # the must-show's run (the same cache key)
    algo = trainer.algo
    panels = algo.strategy(states.params)
    json.dumps(panels)
    assert [p["title"] for p in panels] == ["Proposer's demand by offer", "Responder's acceptance threshold by offer"]
    demand = {(s["label"], s["kind"]): s for s in panels[0]["series"]}
    assert demand[("emitter", "learned")]["seed"] == 0 and demand[("emitter", "learned")]["x"][:2] == [0.0, 1.0]
    assert demand[("emitter", "learned")]["y"][0] == pytest.approx(m["proposer_share"][0], abs=0.01)
    assert demand[("victims", "learned")]["y"][0] == pytest.approx(m["proposer_share_victims"][0], abs=0.01)
    spe = demand[("emitter, subgame-perfect", "theory")]
    assert spe["seed"] is None and spe["y"][0] == pytest.approx(rubinstein_share(0.8, 0.9), abs=0.0015)
    threshold = {(s["label"], s["kind"]): s for s in panels[1]["series"]}
    assert threshold[("victims, subgame-perfect", "theory")]["y"][0] == pytest.approx(1 - spe["y"][0], abs=1e-6)

    loss = float(m["utility_loss_rel"][0])
    assert 0.0 <= loss < 0.2, m["utility_loss_rel_by_seat"]
    for field in (0, 1):  # demand, threshold
        moved = jax.tree.map(lambda x: x, states.params)
        moved["params"]["actor_out"]["bias"] = moved["params"]["actor_out"]["bias"].at[..., field].add(-1.0)
        worse = trainer.evaluate(moved, jax.random.PRNGKey(3))
        assert float(worse["utility_loss_rel"][0]) > loss + 0.05, (field, worse["utility_loss_rel_by_seat"])
