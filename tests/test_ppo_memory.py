"""PPO's rollout memory (issue 18, item 5): the update recomputes the observations, masks and providers from the kept
environment states, and splits a large minibatch's gradient into sub-blocks; both must give the minibatch and the
gradient of the whole-rollout formulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coasejax.config import load_config
from coasejax.train import ppo

SMALL = ["population.n_agents=512", "train.minibatches=4", "train.rollout=8", "env.eval_rounds=8",
         "train.pool_size=2", "train.pool_every=1", "train.pool_prob=0.3"]


@pytest.fixture(scope="module")
def rollout():
    algo = ppo.PPO(load_config("coase_ppo_providers", SMALL))
    state = jax.tree.map(lambda x: x[0], algo.init_states())
    state = state._replace(pool_count=jnp.ones((), jnp.int32))  # a snapshot in the pool: some seats are pooled

    @jax.jit
    def prep(state):
        _, (states, pooled, z, logp, acted, value, reward, done, last), _ = algo.rollout(state, jax.random.PRNGKey(3))
        adv, ret = algo.gae(value, reward, done, last)
        data = ppo.Rollout(states, pooled, z, logp, adv, ret)
        obs, use, prov, trained = jax.lax.map(lambda e: algo.views(e, pooled), states)
        return data, ppo.Batch(obs, z, use, logp, prov, trained, adv, ret), acted

    return algo, state, *prep(state)


def test_minibatches_recomputed_from_states_are_the_stored_views(rollout):
    algo, _, data, full, acted = rollout
    assert bool(jnp.any(data.pooled)) and bool(jnp.any(~full.trained))
    np.testing.assert_array_equal(np.asarray(acted), np.asarray(full.trained & jnp.any(full.use, axis=-1)))
    nb, n = algo.tc.minibatches, algo.n
    for i in range(nb):
        mb = jax.jit(algo.minibatch)(data, i)
        for got, want in zip(mb, full):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want)[:, :, i * n // nb:(i + 1) * n // nb])


@pytest.mark.parametrize("rows", [8 * 2 * 32, 8 * 2 * 40])  # sub-blocks of 32 bargains (4 of 128), of 40 (overlap)
def test_split_gradient_is_the_whole_minibatchs(rollout, rows, monkeypatch):
    algo, state, data, _, _ = rollout
    mb = algo.minibatch(data, 1)
    whole, v_whole = jax.jit(algo.grads)(state.params, mb)
    monkeypatch.setattr(ppo, "GRAD_ROWS", rows)
    split, v_split = jax.jit(algo.grads)(state.params, mb)
    assert float(v_split) == pytest.approx(float(v_whole), rel=1e-5)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(split)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-4, atol=1e-6)
