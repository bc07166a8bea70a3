"""The agent population in struct-of-arrays form: one array per attribute, leading agent axis, never a per-agent object.

Agent i has benefit slope ``a_i``, harm sensitivity ``c_i``, wealth ``m_i`` and provider id ``p_i``; its neighbours live in
:class:`coasejax.graphs.Graph`. Memory is O(N) here plus the graph's O(N·k) or less.

Wealth is held as an unevaluated float32 pair ``m = wealth + wealth_lo`` (:func:`coasejax.envs.accounting.add_money`):
``wealth`` is m rounded to float32, what every rule reads, and ``wealth_lo`` the part float32 could not hold, so money
is kept to about 2⁻⁴⁸ of the wealth instead of 2⁻²⁴ (a cost of 0.01 is not lost on a wealth of 10⁸, whose float32
spacing is 8). :func:`money` reads the pair back in float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.scipy.special import ndtri

from coasejax.config import Distribution, PopulationConfig


@struct.dataclass
class Population:
    a: jax.Array  # f32[N] benefit slope: B_i(x) = a_i x - x^2/2
    c: jax.Array  # f32[N] harm sensitivity: harm to j from emitter i is c_j * w * x_i
    wealth: jax.Array  # f32[N] money, rounded to float32 (what the rule layers read)
    provider: jax.Array  # i32[N] advocate provider id
    wealth_lo: jax.Array | None = None  # f32[N] the money float32 rounded off ``wealth``: m = wealth + wealth_lo


def money(pop: Population) -> np.ndarray:
    """Each agent's money ``wealth + wealth_lo`` in float64 (numpy, on the host; any leading axes kept)."""
    hi = np.asarray(jax.device_get(pop.wealth), np.float64)
    return hi if pop.wealth_lo is None else hi + np.asarray(jax.device_get(pop.wealth_lo), np.float64)


def money_change(first: Population, last: Population) -> np.ndarray:
    """Each agent's change in money from ``first`` to ``last`` in float64, difference of each half of the pair first
    (two float32 values differ exactly in float64), so a wealth of 10¹³ does not drown a change of 0.01."""
    def half(name):
        a, b = getattr(first, name), getattr(last, name)
        if a is None or b is None:
            return 0.0
        return np.asarray(jax.device_get(b), np.float64) - np.asarray(jax.device_get(a), np.float64)

    return half("wealth") + half("wealth_lo")


def sample(key: jax.Array, dist: Distribution, n: int) -> jax.Array:
    """``f32[n]`` draws from a :class:`Distribution`."""
    if dist.kind == "constant":
        return jnp.full((n,), dist.value, jnp.float32)
    if dist.kind == "uniform":
        return jax.random.uniform(key, (n,), jnp.float32, dist.low, dist.high)
    return jnp.exp(dist.mu + dist.sigma * jax.random.normal(key, (n,), jnp.float32))


def inverse_cdf(dist: Distribution, u: jax.Array) -> jax.Array:
    """The quantiles of a :class:`Distribution` at ``u`` in (0, 1) (draws, given uniforms)."""
    u = jnp.asarray(u, jnp.float32)
    if dist.kind == "constant":
        return jnp.full_like(u, dist.value)
    if dist.kind == "uniform":
        return dist.low + (dist.high - dist.low) * u
    return jnp.exp(dist.mu + dist.sigma * ndtri(u))


def make_population(key: jax.Array, cfg: PopulationConfig, n_providers: int = 1) -> Population:
    """Draw a population of ``cfg.n_agents`` agents; types are independent across agents."""
    n = cfg.n_agents
    ka, kc, km, kp = jax.random.split(key, 4)
    return Population(
        a=sample(ka, cfg.benefit, n),
        c=sample(kc, cfg.harm, n),
        wealth=sample(km, cfg.wealth, n),
        provider=jax.random.randint(kp, (n,), 0, n_providers, jnp.int32),
        wealth_lo=jnp.zeros((n,), jnp.float32),
    )


def _mix32(x: jax.Array) -> jax.Array:
    """The ``lowbias32`` integer hash (C. Wellons, "Hash function prospector", 2018): a bijection of ``uint32``."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def round_words(key: jax.Array, uses: int, n: int) -> jax.Array:
    """``u32[uses, N]``: one word of random bits per agent and use, for one round.

    A keyed counter hash: two words per use come from ``key`` (threefry), and agent i gets
    ``mix(mix(i ⊕ s₀) ⊕ s₁)``. It costs a few integer operations per agent where ``jax.random.bits`` runs threefry's
    twenty rounds, and it is deterministic in ``key`` like any JAX draw; tests check the words' uniformity and that
    uses, neighbours and rounds are uncorrelated."""
    seeds = jax.random.bits(key, (uses, 2), jnp.uint32)
    i = jnp.arange(n, dtype=jnp.uint32)[None, :]
    return _mix32(_mix32(i ^ seeds[:, :1]) ^ seeds[:, 1:])


def unit_uniform(bits: jax.Array, nbits: int) -> jax.Array:
    """``f32`` in (0, 1) from the lowest ``nbits`` (≤ 24) of ``uint32`` random bits, at cell midpoints."""
    mask = jnp.uint32((1 << nbits) - 1)
    return ((bits & mask).astype(jnp.float32) + 0.5) * (1.0 / (1 << nbits))


def drift_types(pop: Population, drift: jax.Array, bits: jax.Array) -> Population:
    """Live preference streams: ``a`` and ``c`` follow independent mean-preserving log-uniform random walks,
    ``a' = a · exp(σ√3 (2u − 1)) / κ`` with u ~ U(0, 1) (so the log-step has standard deviation σ = ``drift``) and
    ``κ = sinh(σ√3)/(σ√3)`` its mean. One ``u32[N]`` word of random bits drives both: its high 16 bits move ``a``,
    its low 16 bits ``c`` (a uniform costs a quarter of a normal draw on CPU)."""
    return pop.replace(a=pop.a * drift_factor(drift, unit_uniform(bits >> 16, 16)),
                       c=pop.c * drift_factor(drift, unit_uniform(bits, 16)))


def drift_factor(drift: jax.Array, u: jax.Array) -> jax.Array:
    """One mean-preserving log-uniform step ``exp(σ√3 (2u − 1)) / κ`` of log-sd σ = ``drift``, at uniforms ``u``
    (:func:`drift_types`)."""
    half_width = drift * jnp.sqrt(3.0)
    kappa = jnp.where(half_width > 0, jnp.sinh(half_width) / jnp.where(half_width > 0, half_width, 1.0), 1.0)
    return jnp.exp(half_width * (2.0 * u - 1.0)) / kappa
