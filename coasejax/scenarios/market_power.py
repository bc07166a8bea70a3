"""Market power: one provider against several competing ones, under the provider layer (Tirole 1988, ch. 1 and 7).

Clients. Each of N clients has a value ``v_i = U_i^(1/a)`` for one unit of the providers' service per round
(``env.value_power`` = a; a = 1: uniform on [0, 1]), drawn at reset, so the demand at fee f is ``D(f) = 1 − f^a``.
Each round a client buys from its own provider iff that provider's posted fee is below the client's reservation
price, the seat's action (``Spec.relative``: a multiple of ``observation[0] = v``; truthful: reservation = v, buy iff
``f < v``, the dominant strategy of a price-taking client). A sale gives the client ``v − f`` and the provider
``f − c`` (``env.cost`` = c, the marginal cost).

Providers (the provider layer, ``providers.count`` = M). With M > 1 and ``providers.switching_rate`` > 0 each client
reviews its provider at the start of a round with that probability and picks provider m with logit probability ``∝
exp((−f_m + inertia·[m = current]) / temperature)`` (``providers.inertia``, ``providers.temperature``;
:func:`coasejax.rules.provider.choose_providers` with score −fee), then buys or not at the posted fees. Providers
set their fees by a model-free rule with no closed form built in: over blocks of ``L = 2^ceil(log2(M + 1))`` rounds
provider m posts ``f_m + δ H_{t, m+1}`` (H the Sylvester-Hadamard matrix of order L; its columns 1..M are orthogonal
and sum to zero, so each provider's probe is uncorrelated with the others' and with a constant; the block's rows
come in a fresh random order each block, the same for every provider, so a probe's lasting effect on the stock of
clients is not systematically aligned with the next round's signs), accumulates its profit per client of the market
``π_{m,t} = profit_{m,t}/N``, and at the end of the block estimates its own-fee gradient per unit of its mean share
``s̄_m`` over the block, ``g_m = Σ_t H_{t,m+1} π_{m,t} / (L δ s̄_m)`` (a positive rescaling: the same sign and rest
points as the profit gradient, but a provider with few clients moves as fast as one with many) and moves ``f_m ←
clip(f_m + clip(η g_m, ±max_move), c, 1)`` (``env.fee_delta`` δ, ``env.fee_step`` η, ``env.max_move``); a provider
that sold nothing in the block (its fee above every reservation it faces, or no clients) has no gradient and cuts
its fee by ``max_move``. Each provider ascends its own profit holding the others' fees: its rest points are the Nash
equilibria of the fee game the market defines.

Closed forms (:func:`theory`). Monopoly (M = 1): the fee solves ``1 − f^a − a (f − c) f^(a−1) = 0`` (numerically);
for a = 1 ``f_M = (1 + c)/2``, quantity ``(1 − c)/2``, profit ``(1 − c)²/4``, consumer surplus ``(1 − c)²/8`` and
deadweight loss ``(1 − c)²/8`` (Tirole 1988, ch. 1). Competitive benchmark: fee c, quantity ``1 − c^a``, consumer
surplus the whole first-best surplus ``W* = ∫_c^1 (1 − x^a) dx`` and no deadweight loss. M > 1 providers under logit
switching with ``switching_rate = 1`` and ``inertia = 0`` (shares are then the logit shares of the current fees):
provider m's profit is ``s_m(f)·(f_m − c)·(1 − f_m^a)`` with ``∂ log s_m/∂f_m = −(1 − s_m)/T``, so the symmetric
logit-Nash fee solves ``1/(f − c) − a f^(a−1)/(1 − f^a) = (1 − 1/M)/T`` (Anderson, de Palma and Thisse 1992;
M = 1 is the monopoly's condition). It is reported beside the measured fee (``logit_nash_fee``); with switching
below 1 or inertia the probes see only part of the share response and fees settle above it.

Advocates (``scripted``): ``truthful`` (reservation = v) and ``withhold`` (reservation = ``env.withhold``·v: a
buyers' strike below the value). Learned advocates (``coasejax train market_power``, the generic ES path) see their
own value and their provider's posted fee, ``[v, f]``, and learn the reservation ratio (an
:class:`~coasejax.policies.Advocate` head starting at ``policy.init_scale``).

Shapes: per-client arrays ``[N]``; fees and accumulators ``[M]``; one round is O(N·M). No loop over agents or
rounds.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from pydantic import Field

from coasejax.config import EnvSection, register_env
from coasejax.rules.provider import ProviderParams, choose_providers, segment_totals
from coasejax.scenarios.base import Scenario, Spec, Transition, check_burn_in, register


#: folds the draw of the next block's row order away from the clients' switching draws
ORDER_STREAM = 0x6F726472


@register_env
class MarketPowerEnv(EnvSection):
    kind: Literal["market_power"] = "market_power"
    sweepable: ClassVar[tuple[str, ...]] = ("cost", "value_power", "fee_init", "fee_spread", "fee_delta", "fee_step",
                                            "max_move", "withhold")
    value_power: float = Field(1.0, ge=0.05, le=100.0, description="a: values v = U^(1/a), demand D(f) = 1 − f^a "
                                                                   "(1: uniform on [0, 1])")
    cost: float = Field(0.0, ge=0.0, lt=1.0, description="c: the providers' marginal cost per sale")
    fee_init: float = Field(0.9, ge=0.0, le=1.0, description="every provider's fee at reset (clipped to [c, 1])")
    fee_spread: float = Field(0.0, ge=0.0, le=1.0, description="each provider's fee at reset is fee_init + "
                                                                "fee_spread·(2U − 1), U uniform (then clipped)")
    fee_delta: float = Field(0.01, gt=0.0, le=0.2, description="δ: the providers' ± fee probe")
    fee_step: float = Field(0.1, gt=0.0, le=10.0, description="η: the fee rule's step on its profit-gradient "
                                                               "estimate")
    max_move: float = Field(0.05, gt=0.0, le=1.0, description="largest fee change per probing block")
    withhold: float = Field(0.8, ge=0.0, le=1.0, description="advocates.strategy=withhold: reservation as a "
                                                              "share of the value")
    burn_in: int = Field(0, ge=0, le=1_000_000, description="rounds left out of the measured means")


@struct.dataclass
class Params:
    value_power: jax.Array  # f32[] a
    cost: jax.Array  # f32[] c
    fee_init: jax.Array  # f32[]
    fee_spread: jax.Array  # f32[]
    fee_delta: jax.Array  # f32[] δ
    fee_step: jax.Array  # f32[] η
    max_move: jax.Array  # f32[]
    withhold: jax.Array  # f32[]
    signs: jax.Array  # f32[L, M] columns 1..M of the Sylvester-Hadamard matrix of order L
    market: ProviderParams  # the provider layer's switching parameters (count M, switching_rate, inertia, temperature)
    n: int = struct.field(pytree_node=False, default=2)
    m: int = struct.field(pytree_node=False, default=1)
    block: int = struct.field(pytree_node=False, default=2)
    switching: bool = struct.field(pytree_node=False, default=False)


@struct.dataclass
class State:
    t: jax.Array  # i32[]
    value: jax.Array  # f32[N]
    provider: jax.Array  # i32[N]
    fee: jax.Array  # f32[M] each provider's fee (the centre of its probes)
    acc: jax.Array  # f32[M] Σ_t H_{t,m+1} π_{m,t} over the current block
    sold: jax.Array  # f32[M] each provider's sales over the current block
    clients: jax.Array  # f32[M] each provider's clients summed over the rounds of the current block
    order: jax.Array  # i32[L] the order of the Hadamard rows in the current block


class Totals(NamedTuple):
    rounds: jax.Array
    fee: jax.Array  # f32[M] each provider's fee (centre) this round
    posted_mean: jax.Array  # f32[] mean posted fee over providers
    fee_paid: jax.Array  # f32[] Σ fees paid (sales-weighted)
    sales: jax.Array  # f32[] clients who bought
    consumer_surplus: jax.Array  # f32[] Σ buy·(v − f)
    profit: jax.Array  # f32[] Σ buy·(f − c)
    first_best: jax.Array  # f32[] Σ max(v − c, 0)
    reservation: jax.Array  # f32[] Σ reservation prices (the actions)
    value: jax.Array  # f32[] Σ v
    errors: jax.Array  # f32[] clients whose decision differs from the truthful one (buy iff f < v)
    share_max: jax.Array  # f32[] the largest provider's share of clients


# -- closed forms (host side, float64) -------------------------------------------------------------------------------

def hadamard(order: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < order:
        h = np.block([[h, h], [h, -h]])
    return h


def block_length(m: int) -> int:
    return 1 << math.ceil(math.log2(m + 1))


def _bisect(fn, lo: float, hi: float) -> float:
    """The root of a function that is positive at lo and negative at hi."""
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if fn(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def monopoly_fee(c: float, a: float = 1.0) -> float:
    """The fee maximising ``(f − c)(1 − f^a)``: the root in (c, 1) of ``1 − f^a − a (f − c) f^(a−1)``, which falls
    from ``1 − c^a > 0`` at c to ``−a(1 − c) < 0`` at 1 (bisection)."""
    return _bisect(lambda f: 1.0 - f**a - a * (f - c) * f ** (a - 1.0), c, 1.0)


def logit_nash_fee(c: float, a: float, m: int, temperature: float) -> float:
    """The symmetric logit-Nash fee: the root in (c, 1) of ``1/(f − c) − a f^(a−1)/(1 − f^a) − (1 − 1/m)/T`` (module
    doc; it falls from +∞ at c to −∞ at 1). m = 1: the monopoly fee."""
    k = (1.0 - 1.0 / m) / temperature
    eps = 1e-12
    return _bisect(lambda f: 1.0 / (f - c) - a * f ** (a - 1.0) / (1.0 - f**a) - k, c + eps, 1.0 - eps)


def welfare(f: float, c: float, a: float = 1.0) -> dict:
    """Per client and round at a common fee f: quantity ``1 − f^a``, consumer surplus ``∫_f^1 (1 − x^a) dx``, profit
    ``(f − c)(1 − f^a)``, first best ``W* = ∫_c^1 (1 − x^a) dx`` and the deadweight loss W* − CS − profit."""
    integral = lambda lo: (1.0 - lo) - (1.0 - lo ** (a + 1.0)) / (a + 1.0)  # noqa: E731  ∫_lo^1 (1 − x^a) dx
    q, cs, prof, best = 1.0 - f**a, integral(f), (f - c) * (1.0 - f**a), integral(c)
    return {"fee": f, "quantity": q, "consumer_surplus": cs, "profit": prof, "first_best": best,
            "deadweight_loss": best - cs - prof}


def theory(cfg) -> dict:
    env, pr = cfg.env, cfg.providers
    c, a = env.cost, env.value_power
    mono = welfare(monopoly_fee(c, a), c, a)
    comp = welfare(c, c, a)
    nash = welfare(logit_nash_fee(c, a, pr.count, pr.temperature), c, a)
    out = {f"monopoly_{k}": v for k, v in mono.items() if k != "first_best"}
    out.update({f"competitive_{k}": v for k, v in comp.items() if k != "first_best"})
    out.update({f"logit_nash_{k}": v for k, v in nash.items() if k != "first_best"})
    out["first_best"] = mono["first_best"]
    out["logit_nash_applies"] = bool(pr.count == 1 or (pr.switching_rate == 1.0 and pr.inertia == 0.0))
    return out


# -- the scenario ------------------------------------------------------------------------------------------------------

def params(cfg) -> Params:
    env, pr = cfg.env, cfg.providers
    m = int(pr.count)
    block = block_length(m)
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    ones = f(np.ones(m))
    market = ProviderParams(fee=ones * 0, fee_flat=ones * 0, conduct=ones * 0, shade=ones * 0, skill=ones * 0,
                            switching_rate=f(pr.switching_rate), inertia=f(pr.inertia), temperature=f(pr.temperature),
                            memory=f(pr.memory), count=m)
    return Params(value_power=f(env.value_power), cost=f(env.cost), fee_init=f(env.fee_init), fee_spread=f(env.fee_spread),
                  fee_delta=f(env.fee_delta), fee_step=f(env.fee_step), max_move=f(env.max_move),
                  withhold=f(env.withhold), signs=f(hadamard(block)[:, 1:m + 1]), market=market,
                  n=cfg.population.n_agents, m=m, block=block, switching=bool(m > 1 and pr.switching_rate > 0))


def reset(key: jax.Array, p: Params) -> State:
    k_v, k_p, k_f = jax.random.split(key, 3)
    u = jax.random.uniform(k_v, (p.n,), jnp.float32, 1e-7, 1.0)
    provider = jax.random.randint(k_p, (p.n,), 0, p.m, jnp.int32) if p.m > 1 else jnp.zeros((p.n,), jnp.int32)
    start = p.fee_init + p.fee_spread * (2.0 * jax.random.uniform(k_f, (p.m,), jnp.float32) - 1.0)
    fee = jnp.clip(start, p.cost, 1.0)
    return State(t=jnp.zeros((), jnp.int32), value=u ** (1.0 / p.value_power), provider=provider, fee=fee,
                 acc=jnp.zeros((p.m,), jnp.float32), sold=jnp.zeros((p.m,), jnp.float32),
                 clients=jnp.zeros((p.m,), jnp.float32), order=jnp.arange(p.block, dtype=jnp.int32))


def posted(p: Params, s: State) -> jax.Array:
    """``f32[M]``: this round's posted fees, each provider's fee plus its probe ``δ H_{t mod L, m+1}``."""
    return s.fee + p.fee_delta * p.signs[s.order[s.t % p.block]]


def own_fee(p: Params, s: State, fees: jax.Array) -> jax.Array:
    return jnp.broadcast_to(fees[0], (p.n,)) if p.m == 1 else fees[s.provider]


def observe(p: Params, s: State) -> jax.Array:
    """``f32[1, N, 2]``: the own value and the own provider's posted fee."""
    return jnp.stack([s.value, own_fee(p, s, posted(p, s))], -1)[None]


def step(key: jax.Array, s: State, actions: jax.Array, p: Params):
    fees = posted(p, s)
    provider = s.provider
    if p.switching:
        bits = jax.random.bits(key, (p.n,), jnp.uint32)
        provider = choose_providers(p.market, provider, -fees, bits)
    s = s.replace(provider=provider)
    reservation = actions[0, :, 0]
    f_i = own_fee(p, s, fees)
    buy = f_i < reservation
    cs = jnp.where(buy, s.value - f_i, 0.0)
    margin = jnp.where(buy, f_i - p.cost, 0.0)
    per_provider = segment_totals(jnp.stack([margin, jnp.ones_like(margin), buy.astype(jnp.float32)]), provider,
                                  p.m)  # f32[3, M]: profit, clients, sales
    pi = per_provider[0] / p.n  # profit per client of the market
    row = p.signs[s.order[s.t % p.block]]
    acc = s.acc + row * pi
    end = (s.t % p.block) == p.block - 1
    clients = s.clients + per_provider[1]
    share = jnp.maximum(clients / (p.block * p.n), 1.0 / p.n)  # the block's mean share
    g = acc / (p.block * p.fee_delta * share)
    sold = s.sold + per_provider[2]
    # a block without a sale carries no gradient (every probe earned 0): the provider cuts its fee by max_move
    move = jnp.where(sold > 0, jnp.clip(p.fee_step * g, -p.max_move, p.max_move), -p.max_move)
    moved = jnp.clip(s.fee + move, p.cost, 1.0)
    new = State(t=s.t + 1, value=s.value, provider=provider, fee=jnp.where(end, moved, s.fee),
                acc=jnp.where(end, 0.0, acc), sold=jnp.where(end, 0.0, sold),
                clients=jnp.where(end, 0.0, clients),
                order=jnp.where(end, jax.random.permutation(jax.random.fold_in(key, ORDER_STREAM), p.block)
                                .astype(jnp.int32), s.order))
    sales = jnp.sum(buy, dtype=jnp.float32)
    totals = Totals(rounds=jnp.float32(1.0), fee=s.fee, posted_mean=jnp.mean(fees),
                    fee_paid=jnp.sum(jnp.where(buy, f_i, 0.0)), sales=sales, consumer_surplus=jnp.sum(cs),
                    profit=jnp.sum(margin), first_best=jnp.sum(jnp.maximum(s.value - p.cost, 0.0)),
                    reservation=jnp.sum(reservation), value=jnp.sum(s.value),
                    errors=jnp.sum(buy != (f_i < s.value), dtype=jnp.float32),
                    share_max=jnp.max(per_provider[1]) / p.n)
    return new, Transition(reward=cs[None], done=jnp.zeros((p.n,), bool), metrics=totals)


def truthful(key, p: Params, s: State) -> jax.Array:
    return s.value[None, :, None]


def withhold(key, p: Params, s: State) -> jax.Array:
    return (p.withhold * s.value)[None, :, None]


def summarise(cfg, p: Params, per_round: dict, first, last) -> dict:
    """Per client and round, over every environment and the measured rounds (after ``env.burn_in``): the mean fee
    (over providers, and paid per sale), quantity, consumer surplus, profit and deadweight loss (first best − both),
    beside the monopoly, competitive and logit-Nash closed forms; the same over the last round; the final fees."""
    rounds = int(np.asarray(per_round["rounds"]).shape[1])
    burn = min(cfg.env.burn_in, rounds - 1)
    n = cfg.population.n_agents
    pr = {k: np.asarray(v, np.float64) for k, v in per_round.items()}

    def block(sl) -> dict:
        g = {k: v[:, sl] for k, v in pr.items()}
        k = g["rounds"].sum()
        cs, prof, best = g["consumer_surplus"].sum() / (n * k), g["profit"].sum() / (n * k), \
            g["first_best"].sum() / (n * k)
        return {"fee": float(g["fee"].mean()), "quantity": float(g["sales"].sum() / (n * k)),
                "fee_paid": float(g["fee_paid"].sum() / max(g["sales"].sum(), 1.0)),
                "consumer_surplus": float(cs), "profit": float(prof), "deadweight_loss": float(best - cs - prof),
                "first_best": float(best)}

    meas, end = block(slice(burn, None)), block(slice(rounds - 1, None))
    th = theory(cfg)
    out = {"n_agents": n, "providers": int(cfg.providers.count), "rounds": rounds, "measured_rounds": rounds - burn,
           "envs": int(pr["rounds"].shape[0]), "cost": cfg.env.cost, "value_power": cfg.env.value_power,
           **{f"mean_{k}": v for k, v in meas.items()}, **{f"last_{k}": v for k, v in end.items()},
           "fee_sd_across_envs": float(pr["fee"][:, burn:].mean(axis=(1, 2)).std()),
           "largest_share": float(pr["share_max"][:, burn:].mean()),
           "reservation_ratio": float(pr["reservation"][:, burn:].sum() / pr["value"][:, burn:].sum()),
           "decision_errors": float(pr["errors"][:, burn:].sum() / (n * pr["rounds"][:, burn:].sum())),
           "final_fees": np.asarray(last.fee, np.float64).mean(axis=0).tolist() if last is not None else [], **th}
    span = th["monopoly_fee"] - th["competitive_fee"]
    out["market_power_index"] = (meas["fee"] - th["competitive_fee"]) / span if span > 0 else 0.0
    out["figure"] = figure(pr, n, th, int(cfg.providers.count))
    return out


def figure(pr: dict, n: int, th: dict, providers: int = 1) -> dict:
    """The report's figure: the first environment's mean fee by round beside the monopoly, competitive and logit-Nash
    fees (the last with M > 1 providers); and the per-round split of the first-best surplus into consumer surplus,
    profit and deadweight loss, beside the monopoly's deadweight loss (at most the last 400 rounds)."""
    fee = pr["fee"][0].mean(axis=-1)[-400:]
    t = np.arange(1, pr["fee"].shape[1] + 1)[-400:].tolist()
    flat = lambda v: [float(v)] * len(t)  # noqa: E731
    per = lambda k: (pr[k][0][-400:] / n).tolist()  # noqa: E731
    dwl = (pr["first_best"][0] - pr["consumer_surplus"][0] - pr["profit"][0])[-400:] / n
    return {"caption": "Market power: the providers' mean fee by round (first environment) against the monopoly fee, "
                       "the competitive fee (marginal cost) and the logit-Nash fee; the surplus split per client.",
            "panels": [{"title": "fee", "xlabel": "round", "ylabel": "fee",
                        "series": [{"label": "mean fee", "x": t, "y": fee.tolist(), "kind": "measured"},
                                   {"label": "monopoly fee", "x": t, "y": flat(th["monopoly_fee"]), "kind": "theory"},
                                   {"label": "competitive fee (c)", "x": t, "y": flat(th["competitive_fee"]),
                                    "kind": "theory"},
                                   *([{"label": "logit-Nash fee", "x": t, "y": flat(th["logit_nash_fee"]),
                                       "kind": "theory"}] if providers > 1 else [])]},
                       {"title": "welfare per client", "xlabel": "round", "ylabel": "per client and round",
                        "series": [{"label": "consumer surplus", "x": t, "y": per("consumer_surplus"),
                                    "kind": "measured"},
                                   {"label": "profit", "x": t, "y": per("profit"), "kind": "measured"},
                                   {"label": "deadweight loss", "x": t, "y": dwl.tolist(), "kind": "measured"},
                                   {"label": "monopoly deadweight loss", "x": t,
                                    "y": flat(th["monopoly_deadweight_loss"]), "kind": "theory"}]}]}


def metrics(p: Params, tot: Totals) -> dict:
    k = jnp.maximum(tot.rounds, 1.0) * p.n
    cs, prof, best = tot.consumer_surplus / k, tot.profit / k, tot.first_best / k
    return {"fee": jnp.mean(tot.fee) / jnp.maximum(tot.rounds, 1.0), "quantity": tot.sales / k,
            "consumer_surplus": cs, "profit": prof, "deadweight_loss": best - cs - prof,
            "reservation_ratio": tot.reservation / jnp.maximum(tot.value, 1e-9), "decision_errors": tot.errors / k}


SCENARIO = register(Scenario(
    name="market_power", check=check_burn_in, bytes_per_agent=36,  # measured peak at N = 10^6 (BENCHMARKS.md), rounded down
    params=params, reset=reset, observe=observe, step=step,
    spec=lambda p: Spec(observation=("value", "fee"), actions=("reservation",), low=(0.0,), high=(1.5,),
                        truthful=(1.0,), relative=True, seats=1),
    seat_providers=lambda p, s: s.provider[None],
    seat_owners=lambda p, s: jnp.arange(p.n, dtype=jnp.int32)[None],
    scripted={"truthful": truthful, "withhold": withhold},
    summarise=summarise, metrics=metrics,
    headline=("mean_fee", "mean_quantity", "mean_consumer_surplus", "mean_profit", "mean_deadweight_loss",
              "monopoly_fee", "logit_nash_fee"),
    description="Market power: M providers set per-sale fees by profit probing, clients buy iff the fee is below "
                "their reservation and switch providers by logit; against the monopoly, competitive and logit-Nash "
                "benchmarks"))
