"""Neighbour graphs: k out-neighbours, every slot a permutation, `out`/`into` consistent, O(N·k) memory or less."""

import jax.numpy as jnp
import numpy as np
import pytest

from coasejax.graphs import make_graph, torus_shape

KINDS = [("ring", 4), ("ring", 3), ("torus", 4), ("torus", 8), ("random", 4), ("small_world", 6)]


@pytest.mark.parametrize("kind,k", KINDS)
def test_every_slot_is_a_permutation(kind, k):
    n = 600
    g = make_graph(kind, n, k, seed=3, rewire=0.3)
    nbr = g.neighbours()
    assert nbr.shape == (n, k)
    for s in range(k):
        assert np.array_equal(np.sort(nbr[:, s]), np.arange(n))  # in-degree exactly one per slot
    assert np.all(nbr != np.arange(n)[:, None])  # no emitter harms itself, small-world graphs included


@pytest.mark.parametrize("n,k,p", [(50, 4, 1.0), (7, 6, 1.0)])
def test_rewiring_never_makes_a_self_loop(n, k, p):
    """A random cycle over the rewired emitters hands about one emitter per slot its own index (emitter i takes the
    ring target of i − offset; each of the m members with probability 1/(m − 1)): ~1 self-loop per slot before they
    are swapped away, so over 5 seeds × k slots an unfixed rewiring passes here with probability ≈ e^(−5k) < 1e-8.
    After the swaps: no self-loops, every slot a permutation, and ``rev`` inverts ``nbr`` slot by slot."""
    for seed in range(5):
        g = make_graph("small_world", n, k, seed=seed, rewire=p)
        nbr, rev = g.neighbours(), np.asarray(g.rev)
        assert not np.any(nbr == np.arange(n)[:, None]), seed
        for s in range(k):
            assert np.array_equal(np.sort(nbr[:, s]), np.arange(n)), (seed, s)
            assert np.array_equal(nbr[rev[s], s], np.arange(n)), (seed, s)


@pytest.mark.parametrize("kind,k", KINDS)
def test_out_and_into_are_the_two_directions_of_the_same_edges(kind, k):
    n = 600
    g = make_graph(kind, n, k, seed=5, rewire=0.3)
    nbr = g.neighbours()
    v = jnp.asarray(np.random.default_rng(0).normal(size=n), jnp.float32)
    np.testing.assert_array_equal(np.asarray(g.out(v)), np.asarray(v)[nbr].T)
    p = np.random.default_rng(1).normal(size=(k, n)).astype(np.float32)
    received = np.asarray(g.into(jnp.asarray(p)))
    expected = np.zeros((k, n), np.float32)
    for s in range(k):
        expected[s, nbr[:, s]] = p[s]
    np.testing.assert_array_equal(received, expected)


def test_ring_and_torus_neighbours_are_local():
    ring = make_graph("ring", 100, 4, 0).neighbours()
    assert sorted((ring[10] - 10).tolist()) == [-2, -1, 1, 2]
    r, l = torus_shape(100)
    assert (r, l) == (10, 10)
    tor = make_graph("torus", 100, 4, 0).neighbours()
    assert sorted(tor[0].tolist()) == [1, 9, 10, 90]  # wraps around both axes


def test_random_graph_depends_on_seed_only():
    a, b, c = (make_graph("random", 10_000, 4, s).shifts for s in (1, 1, 2))
    assert a == b and a != c and len(set(a)) == 4


def test_small_world_rewires_the_configured_fraction():
    n, k, p = 20_000, 4, 0.2
    g = make_graph("small_world", n, k, seed=0, rewire=p)
    ring = make_graph("ring", n, k, seed=0).neighbours()
    frac = np.mean(g.neighbours() != ring)
    # each slot rewires a Binomial(n, p) set of edges, and a rewired edge never keeps its ring target (a cycle of two
    # or more hands every member another's target): frac is Binomial(nk, p)/(nk), SE = sqrt(p(1 − p)/(nk)); allow
    # 4 SE. Removing a self-loop swaps two targets and can restore at most 2 ring edges; self-loops are ≈ Poisson(1)
    # per slot, at most 8 per slot but with probability ~1e-5, so the swaps move frac by at most 2·8·k/(nk) = 16/n.
    assert frac == pytest.approx(p, abs=4 * np.sqrt(p * (1 - p) / (n * k)) + 16 / n)


def test_graph_memory_is_at_most_linear_in_n_times_k():
    n, k = 50_000, 4
    assert make_graph("ring", n, k, 0).nbr is None  # circulant: no index arrays at all
    g = make_graph("small_world", n, k, 0)
    assert g.nbr.nbytes + g.rev.nbytes == 2 * 4 * n * k
