"""The provider layer (middle, competitive): M advocate providers and the market in which clients choose them.

Provider m has its advocates' parameters (``shade``: how hard they push a client's report, used by
``advocates.strategy: shade``; ``skill``: bargaining skill, which moves the Nash bargaining power toward the client by
``(σ_emitter − mean σ_victims)/2``), a fee (a share of the client's realised surplus, ``fee``, and a flat ``fee_flat``
per round, collected only out of what the client has left), a code of conduct ``conduct`` = d (a report may deviate
from the client's true value v by at most ``d·v`` either way) and a ``protocol``: the mechanism its advocates run in
the bargains its clients lead as emitters (``none``: its emitters do not bargain and act alone).

**Switching** (a logit market, McFadden 1974). Every client keeps an average of its recent net utility (gain from
deals minus fees), ``ū ← memory·ū + (1 − memory)·u``. Provider m's score ``U_m`` is the mean ``ū`` of its clients
(a provider without clients scores the market mean). Each round a client reviews its provider with probability
``switching_rate`` and then picks m with probability ``∝ exp((U_m + inertia·[m = current]) / temperature)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from coasejax.population import unit_uniform
from coasejax.rules.base import Constraint, Layer


@struct.dataclass
class ProviderParams:
    fee: jax.Array  # f32[M] share of realised surplus
    fee_flat: jax.Array  # f32[M] per client per round
    conduct: jax.Array  # f32[M] max relative report deviation (inf: unbounded)
    shade: jax.Array  # f32[M] shading of advocates.strategy=shade
    skill: jax.Array  # f32[M] bargaining skill
    switching_rate: jax.Array
    inertia: jax.Array
    temperature: jax.Array
    memory: jax.Array
    count: int = struct.field(pytree_node=False, default=1)
    protocols: tuple = struct.field(pytree_node=False, default=("nash",))  # each provider's bargaining protocol
    use_conduct: bool = struct.field(pytree_node=False, default=False)
    use_fees: bool = struct.field(pytree_node=False, default=False)
    use_skill: bool = struct.field(pytree_node=False, default=False)
    use_switching: bool = struct.field(pytree_node=False, default=False)

    @classmethod
    def from_config(cls, cfg) -> "ProviderParams":
        p = cfg.providers
        f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
        conduct = p.per_provider("conduct", float("inf"))
        skill = p.per_provider("skill")
        return cls(
            fee=f(p.per_provider("fee")),
            fee_flat=f(p.per_provider("fee_flat")),
            conduct=f(conduct),
            shade=f(p.per_provider("shade", cfg.advocates.shade)),
            skill=f(skill),
            switching_rate=f(p.switching_rate),
            inertia=f(p.inertia),
            temperature=f(p.temperature),
            memory=f(p.memory),
            count=p.count,
            protocols=p.protocols(cfg.mechanism.kind),
            use_conduct=p.conduct is not None,
            use_fees=any(v > 0 for v in p.per_provider("fee") + p.per_provider("fee_flat")),
            use_skill=p.count > 1 and len(set(skill)) > 1,
            use_switching=p.count > 1 and p.switching_rate > 0,
        )


def of_agents(table: jax.Array, provider: jax.Array, count: int) -> jax.Array:
    """``f32[M] -> f32[N]``: each agent's provider's value (a scalar when there is one provider)."""
    return table[0] if count == 1 else table[provider]


def _conduct_a(p: ProviderParams, ctx: dict):
    d = of_agents(p.conduct, ctx["provider"], p.count)
    a = ctx["a"]
    return a * (1.0 - jnp.minimum(d, 1.0)), a * (1.0 + d)


def _conduct_c(p: ProviderParams, ctx: dict):
    d = of_agents(p.conduct, ctx["provider"], p.count)
    d_nb = ctx["graph"].out(d) if p.count > 1 else d
    c_nb = ctx["c_nb"]
    return c_nb * (1.0 - jnp.minimum(d_nb, 1.0)), c_nb * (1.0 + d_nb)


PROVIDER = Layer("provider", (
    Constraint("conduct", "report_a", _conduct_a, lambda p: p.use_conduct),
    Constraint("conduct", "report_c", _conduct_c, lambda p: p.use_conduct),
))


def segment_totals(values: jax.Array, provider: jax.Array, count: int) -> jax.Array:
    """``f32[R, N] -> f32[R, M]``: sums of each row over the clients of each provider. Provider 0's sums are the
    totals less the others' (M − 1 masked passes instead of M)."""
    totals = jnp.sum(values, axis=-1)
    if count == 1:
        return totals[:, None]
    others = [jnp.sum(jnp.where(provider == m, values, 0.0), axis=-1) for m in range(1, count)]
    first = totals - sum(others[1:], others[0])
    return jnp.stack([first, *others], axis=-1)


def choose_providers(params: ProviderParams, provider: jax.Array, score: jax.Array, bits: jax.Array) -> jax.Array:
    """``i32[N]``: each client's provider after this round's reviews (logit choice with an inertia bonus).

    ``score`` is ``f32[M]``; ``bits`` one ``u32[N]`` word per client: its low 12 bits decide whether the client reviews,
    its high 20 bits which provider it picks, by inverting the CDF of the logit weights with the current provider's
    weight raised by ``exp(inertia / temperature)``.
    """
    m = params.count
    weight = jnp.exp((score - jnp.max(score)) / params.temperature)  # f32[M]
    cum = jnp.cumsum(weight)
    stay_w = weight[provider] * jnp.exp(params.inertia / params.temperature)  # f32[N]
    total = cum[-1] - weight[provider] + stay_w
    target = unit_uniform(bits >> 12, 20) * total
    stays = target < stay_w
    t_other = target - stay_w
    chosen = jnp.zeros_like(provider)
    for j in range(m):  # #{j : cumulative weight of the others up to j ≤ t}; skips the current provider
        cum_others = cum[j] - jnp.where(j >= provider, weight[provider], 0.0)
        chosen = chosen + (cum_others <= t_other).astype(provider.dtype)
    chosen = jnp.minimum(chosen, m - 1)
    reviews = unit_uniform(bits, 12) < params.switching_rate
    return jnp.where(reviews & ~stays, chosen, provider)
