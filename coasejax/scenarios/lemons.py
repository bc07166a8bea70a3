"""The market for lemons (Akerlof 1970): sellers know their good's quality, buyers see only the market's average.

Goods. Each of N sellers holds one good of quality ``q_i ~ U[0, 1]``, drawn once at reset. It is worth ``θ_s q`` to
its seller (``env.seller_value``) and ``θ_b q`` to a buyer (``env.buyer_value``), ``θ_b > θ_s``: every trade would
gain ``(θ_b − θ_s) q``. The market meets every round with the same sellers and goods (a seller who sells one round
brings a good of the same quality the next: a stationary market, so the rounds trace the buyers' learning).

Trade. Buyers are one competitive side: a single public price ``p_t`` for uncertified goods (``env.price_init`` at
reset; default ``θ_b/2 = θ_b E[q]``, what an average good is worth to a buyer). Each seller's advocate names an ask
(the seat's action, ``Spec.relative``: a multiple of ``observation[0] = θ_s q``; truthful: ask = θ_s q, i.e. sell iff
the price covers the own value, the dominant strategy of a price taker). An uncertified seller offers iff
``ask ≤ p_t`` and every offered good trades at ``p_t``: the seller gains ``p_t − θ_s q``, the buyer ``θ_b q − p_t``.
Buyers then price next round's pool by the one they just saw, ``p_{t+1} = θ_b · mean(q | offered, uncertified)``
(0 if nobody offered; adaptive expectations).

Closed form (truthful sellers; :func:`theory`). The offered pool is ``q ≤ min(p_t/θ_s, 1)``, uniform, so

    p_{t+1} = θ_b/2 · min(p_t/θ_s, 1),   i.e.  p_t = p_0 r^t,  r = θ_b/(2θ_s)  while p_t ≤ θ_s,

geometric unravelling for ``θ_b < 2θ_s`` (Akerlof's case; ``θ_b ≥ 2θ_s`` settles at ``θ_b/2``): the traded share is
``x_t = min(p_t/θ_s, 1)``, the mean traded quality ``x_t/2`` and the market's efficiency (realised gains over the
gains of trading every good, ``Σ (θ_b − θ_s) q``) ``x_t²``, which goes to 0.

The rule (provider layer): disclosure. Each seller's good is certified with probability ``env.disclosure`` = d,
drawn once at reset (a fixed set of certified sellers, independent of quality). A certified good's quality is
public and it trades at its full-information price ``θ_b q`` (the seller takes the whole gain): a truthful seller
always sells it. Certification is independent of quality, so the uncertified pool unravels exactly as before and
the efficiency is ``d + (1 − d) x_t² → d``: a disclosure rate d recovers the share d of the gains. With
``env.provider_disclosure`` each provider offers its own rate to its clients (sellers are assigned to providers
uniformly at reset), and d is the providers' mean rate.

Advocates (``scripted``): ``truthful`` (ask = θ_s q) and ``markup`` (ask = ``env.markup`` · θ_s q: holds out above
the own value). Learned advocates (``coasejax train lemons``, the generic ES path) see ``[θ_s q, p_t, certified]``
and learn the ask ratio (an :class:`~coasejax.policies.Advocate` head starting at ``policy.init_scale``); nothing
computed from the closed form goes in. Only the decision at the margin matters (any ask below the price sells), so
the measure of learning is ``truthful_decisions``: the share of sellers whose sell-or-keep decision is the truthful
one's. With ``env.markup`` = m the pool is ``q ≤ p_t/(m θ_s)`` and the price falls at ``θ_b/(2 m θ_s)``. The ES
evaluation's generic ``utility_loss_rel`` lets one seller in three deviate at once: such a coalition moves the
buyers' next price (selling a few goods above the price lifts the pool's average), so it is positive even for
truthful sellers (0.117 at the preset's N = 10^5, 4 rounds) and is not a unilateral regret here.

Shapes: per-seller arrays ``[N]``; the price is per environment. One round is O(N). No loop over agents or rounds.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from pydantic import Field, model_validator

from coasejax.config import EnvSection, register_env
from coasejax.scenarios.base import Scenario, Spec, Transition, register

#: the log-scale price panel of the figure floors the price here (a price of exactly 0 once nobody offers)
PRICE_FLOOR = 1e-12


@register_env
class LemonsEnv(EnvSection):
    kind: Literal["lemons"] = "lemons"
    sweepable: ClassVar[tuple[str, ...]] = ("seller_value", "buyer_value", "price_init", "disclosure", "markup")
    seller_value: float = Field(1.0, gt=0.0, le=1e6, description="θ_s: a good of quality q is worth θ_s·q to its "
                                                                  "seller")
    buyer_value: float = Field(1.5, gt=0.0, le=1e6, description="θ_b: it is worth θ_b·q to a buyer (must exceed "
                                                                 "θ_s; θ_b < 2θ_s unravels)")
    price_init: float | None = Field(None, ge=0.0, le=1e6, description="the buyers' price at reset; null: θ_b/2, "
                                                                        "an average good's worth to a buyer")
    disclosure: float = Field(0.0, ge=0.0, le=1.0, description="d: share of goods certified at reset (they trade at "
                                                                "θ_b·q; 0: no rule)")
    markup: float = Field(1.5, ge=0.0, le=3.0, description="advocates.strategy=markup: ask as a multiple of the own "
                                                            "value")
    provider_disclosure: list[Annotated[float, Field(ge=0.0, le=1.0)]] | None = Field(None, description="the provider layer's rule: each provider's "
                                                    "certification rate for its clients' goods (one per provider, "
                                                    "each in [0, 1]; clients are assigned to providers uniformly at "
                                                    "reset); null: env.disclosure for every seller")

    @model_validator(mode="after")
    def _gains_from_trade(self) -> "LemonsEnv":
        if self.buyer_value <= self.seller_value:
            raise ValueError(f"env.buyer_value: must exceed env.seller_value ({self.seller_value}) so that trade "
                             f"gains, got {self.buyer_value}")
        return self

    def rate(self) -> float:
        """The expected share of certified goods: env.disclosure, or the providers' mean rate."""
        rates = self.provider_disclosure
        return float(np.mean(rates)) if rates else self.disclosure

    def initial_price(self) -> float:
        return self.buyer_value / 2.0 if self.price_init is None else self.price_init


@struct.dataclass
class Params:
    seller_value: jax.Array  # f32[] θ_s
    buyer_value: jax.Array  # f32[] θ_b
    price_init: jax.Array  # f32[] p_0
    disclosure: jax.Array  # f32[] d
    markup: jax.Array  # f32[]
    provider_disclosure: jax.Array | None  # f32[M] each provider's certification rate (None: d for everyone)
    n: int = struct.field(pytree_node=False, default=2)
    m: int = struct.field(pytree_node=False, default=1)


@struct.dataclass
class State:
    t: jax.Array  # i32[]
    quality: jax.Array  # f32[N] q
    certified: jax.Array  # bool[N]
    provider: jax.Array  # i32[N]
    price: jax.Array  # f32[] the buyers' price for an uncertified good this round


class Totals(NamedTuple):
    rounds: jax.Array
    price: jax.Array  # f32[] p_t
    next_price: jax.Array  # f32[] p_{t+1}
    uncertified: jax.Array  # f32[] sellers without a certificate
    offered: jax.Array  # f32[] uncertified goods offered (= traded)
    offered_quality: jax.Array  # f32[] Σ q over them
    certified_traded: jax.Array  # f32[] certified goods traded
    surplus: jax.Array  # f32[] Σ (θ_b − θ_s) q over every traded good
    full_surplus: jax.Array  # f32[] Σ (θ_b − θ_s) q over every good
    seller_gain: jax.Array  # f32[]
    buyer_gain: jax.Array  # f32[]
    ask_ratio: jax.Array  # f32[] Σ ask / own value (the actions)
    truthful_decisions: jax.Array  # f32[] sellers whose sell-or-keep decision is the truthful one's


# -- closed forms (host side, float64) -------------------------------------------------------------------------------

def price_path(p0: float, seller_value: float, buyer_value: float, rounds: int) -> np.ndarray:
    """``f64[T]``: ``p_{t+1} = θ_b/2 · min(p_t/θ_s, 1)`` from ``p_0`` (truthful sellers, the module doc)."""
    p = np.empty(rounds)
    p[0] = p0
    for t in range(1, rounds):
        p[t] = buyer_value / 2.0 * min(p[t - 1] / seller_value, 1.0)
    return p


def theory(cfg, rounds: int) -> dict:
    """The closed-form paths of a config: price, traded share ``x_t = min(p_t/θ_s, 1)`` of the uncertified goods,
    mean traded quality ``x_t/2`` and efficiency ``d + (1 − d) x_t²``; the unravelling rate r and the limits."""
    env = cfg.env
    ts, tb, d = env.seller_value, env.buyer_value, env.rate()
    p = price_path(env.initial_price(), ts, tb, rounds)
    x = np.minimum(p / ts, 1.0)
    r = tb / (2.0 * ts)
    limit_x = 0.0 if r < 1.0 else 1.0
    return {"price": p, "traded_share": x, "traded_quality": x / 2.0, "efficiency": d + (1.0 - d) * x**2,
            "efficiency_no_rule": x**2, "rate": r, "limit_price": 0.0 if r < 1.0 else tb / 2.0,
            "limit_efficiency": d + (1.0 - d) * limit_x**2}


# -- the scenario ------------------------------------------------------------------------------------------------------

def params(cfg) -> Params:
    from coasejax.config import ConfigError

    env, m = cfg.env, int(cfg.providers.count)
    if env.provider_disclosure is not None and len(env.provider_disclosure) != m:
        raise ConfigError(f"env.provider_disclosure: one rate per provider (providers.count = {m}), got "
                          f"{len(env.provider_disclosure)}")
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    rates = f(env.provider_disclosure) if env.provider_disclosure is not None else None
    return Params(seller_value=f(env.seller_value), buyer_value=f(env.buyer_value), price_init=f(env.initial_price()),
                  disclosure=f(env.disclosure), markup=f(env.markup), provider_disclosure=rates,
                  n=cfg.population.n_agents, m=m)


def reset(key: jax.Array, p: Params) -> State:
    k_q, k_c, k_p = jax.random.split(key, 3)
    q = jax.random.uniform(k_q, (p.n,), jnp.float32, 1e-7, 1.0)
    provider = jax.random.randint(k_p, (p.n,), 0, p.m, jnp.int32) if p.m > 1 else jnp.zeros((p.n,), jnp.int32)
    rate = p.disclosure if p.provider_disclosure is None else p.provider_disclosure[provider]
    certified = jax.random.uniform(k_c, (p.n,), jnp.float32) < rate
    return State(t=jnp.zeros((), jnp.int32), quality=q, certified=certified, provider=provider,
                 price=jnp.asarray(p.price_init, jnp.float32))


def observe(p: Params, s: State) -> jax.Array:
    """``f32[1, N, 3]``: the own value θ_s q, the buyers' price for an uncertified good, and the own certificate."""
    price = jnp.broadcast_to(s.price, (p.n,))
    return jnp.stack([p.seller_value * s.quality, price, s.certified.astype(jnp.float32)], -1)[None]


def step(key: jax.Array, s: State, actions: jax.Array, p: Params):
    ask = actions[0, :, 0]
    q = s.quality
    own = p.seller_value * q
    worth = p.buyer_value * q
    unc = ~s.certified
    sell_unc = unc & (ask <= s.price)
    sell_cert = s.certified & (ask <= worth)
    traded = sell_unc | sell_cert
    seller_gain = jnp.where(sell_unc, s.price - own, 0.0) + jnp.where(sell_cert, worth - own, 0.0)
    buyer_gain = jnp.where(sell_unc, worth - s.price, 0.0)
    count = jnp.sum(sell_unc, dtype=jnp.float32)
    q_sum = jnp.sum(jnp.where(sell_unc, q, 0.0))
    next_price = jnp.where(count > 0, p.buyer_value * q_sum / jnp.maximum(count, 1.0), 0.0)
    gain = (p.buyer_value - p.seller_value) * q
    agree = jnp.where(s.certified, sell_cert == (own <= worth), sell_unc == (own <= s.price))
    totals = Totals(rounds=jnp.float32(1.0), price=s.price, next_price=next_price,
                    uncertified=jnp.sum(unc, dtype=jnp.float32), offered=count, offered_quality=q_sum,
                    certified_traded=jnp.sum(sell_cert, dtype=jnp.float32),
                    surplus=jnp.sum(jnp.where(traded, gain, 0.0)), full_surplus=jnp.sum(gain),
                    seller_gain=jnp.sum(seller_gain), buyer_gain=jnp.sum(buyer_gain),
                    ask_ratio=jnp.sum(ask / jnp.maximum(own, 1e-12)),
                    truthful_decisions=jnp.sum(agree, dtype=jnp.float32))
    new = s.replace(t=s.t + 1, price=next_price.astype(jnp.float32))
    return new, Transition(reward=seller_gain[None], done=jnp.zeros((p.n,), bool), metrics=totals)


def truthful(key, p: Params, s: State) -> jax.Array:
    return (p.seller_value * s.quality)[None, :, None]


def markup(key, p: Params, s: State) -> jax.Array:
    return (p.markup * p.seller_value * s.quality)[None, :, None]


def per_round_series(pr: dict) -> dict:
    """``f64[T]`` each, over every environment (sums over environments, then ratios): the price, the traded share of
    the uncertified goods, their mean traded quality and the efficiency per round."""
    tot = {k: v.sum(axis=0) for k, v in pr.items()}
    envs = pr["rounds"].shape[0]
    return {"price": pr["price"].mean(axis=0), "next_price": pr["next_price"].mean(axis=0),
            "traded_share": tot["offered"] / np.maximum(tot["uncertified"], 1.0),
            "traded_quality": tot["offered_quality"] / np.maximum(tot["offered"], 1.0),
            "offered_per_env": tot["offered"] / envs,
            "efficiency": tot["surplus"] / np.maximum(tot["full_surplus"], 1e-300)}


def summarise(cfg, p: Params, per_round: dict, first, last) -> dict:
    """Per round (over every environment): the price, the traded share and mean quality of the uncertified goods and
    the efficiency, beside their closed forms (:func:`theory`, truthful sellers); the headline is the last round's."""
    pr = {k: np.asarray(v, np.float64) for k, v in per_round.items()}
    rounds = int(pr["rounds"].shape[1])
    n = cfg.population.n_agents
    m = per_round_series(pr)
    th = theory(cfg, rounds)
    last_t = rounds - 1
    cert = pr["uncertified"][:, 0].sum() / pr["uncertified"].shape[0]
    out = {"n_agents": n, "rounds": rounds, "envs": int(pr["rounds"].shape[0]),
           "seller_value": cfg.env.seller_value, "buyer_value": cfg.env.buyer_value,
           "price_init": cfg.env.initial_price(), "disclosure": cfg.env.rate(),
           "certified_share": float(1.0 - cert / n),
           **({"certified_share_by_provider": certified_by_provider(first, p.m)}
              if p.m > 1 and first is not None else {}),
           "final_price": float(m["price"][last_t]), "final_traded_share": float(m["traded_share"][last_t]),
           "final_traded_quality": float(m["traded_quality"][last_t]),
           "final_efficiency": float(m["efficiency"][last_t]),
           "theory_final_price": float(th["price"][last_t]),
           "theory_final_traded_quality": float(th["traded_quality"][last_t]),
           "theory_final_efficiency": float(th["efficiency"][last_t]),
           "first_efficiency": float(m["efficiency"][0]), "theory_first_efficiency": float(th["efficiency"][0]),
           "unravelling_rate": th["rate"], "limit_price": th["limit_price"],
           "limit_efficiency": th["limit_efficiency"],
           "mean_efficiency": float(pr["surplus"].sum() / max(pr["full_surplus"].sum(), 1e-300)),
           "seller_gain_per_agent_round": float(pr["seller_gain"].sum() / (n * pr["rounds"].sum())),
           "buyer_gain_per_agent_round": float(pr["buyer_gain"].sum() / (n * pr["rounds"].sum())),
           "ask_ratio": float(pr["ask_ratio"].sum() / (n * pr["rounds"].sum())),
           "truthful_decision_share": float(pr["truthful_decisions"].sum() / (n * pr["rounds"].sum())),
           "price_path": m["price"].tolist(), "theory_price_path": th["price"].tolist(),
           "traded_share_path": m["traded_share"].tolist(), "theory_traded_share_path": th["traded_share"].tolist(),
           "traded_quality_path": m["traded_quality"].tolist(),
           "theory_traded_quality_path": th["traded_quality"].tolist(),
           "efficiency_path": m["efficiency"].tolist(), "theory_efficiency_path": th["efficiency"].tolist(),
           "offered_path": m["offered_per_env"].tolist()}
    out["figure"] = figure(m, th, cfg.env.rate())
    return out


def certified_by_provider(first, m: int) -> list[float]:
    """Each provider's share of certified goods among its clients' (over every environment)."""
    cert, prov = np.asarray(first.certified).reshape(-1), np.asarray(first.provider).reshape(-1)
    clients = np.bincount(prov, minlength=m)
    return (np.bincount(prov, weights=cert, minlength=m) / np.maximum(clients, 1)).tolist()


def figure(m: dict, th: dict, d: float) -> dict:
    """The report's figure: price by round (log scale) beside ``p_0 r^t``; the mean traded quality of the uncertified
    goods beside ``min(p_t/θ_s, 1)/2``; the efficiency beside ``d + (1 − d) x_t²`` with the rule and ``x_t²``
    without it (with d = 0 in this run: the curve under d = 1/2 instead, to show the recovery), and the limit d."""
    t = np.arange(m["price"].size)[-400:]
    x = t.tolist()
    cut = lambda v: np.asarray(v)[-400:].tolist()  # noqa: E731
    floor = lambda v: np.maximum(np.asarray(v), PRICE_FLOOR)[-400:].tolist()  # noqa: E731
    flat = lambda v: [float(v)] * len(x)  # noqa: E731
    if d > 0:
        other = {"label": "no rule: x_t² (theory)", "x": x, "y": cut(th["efficiency_no_rule"]), "kind": "theory"}
        limit = d
    else:
        other = {"label": "disclosure d = 0.5: 0.5 + 0.5 x_t² (theory)", "x": x,
                 "y": cut(0.5 + 0.5 * th["efficiency_no_rule"]), "kind": "theory"}
        limit = 0.5
    return {"caption": "Lemons (Akerlof 1970): the buyers' price unravels geometrically, p_t = p_0 (θ_b/2θ_s)^t, the "
                       "traded quality with it, and the market's efficiency to 0; disclosure of a share d of the "
                       "goods recovers efficiency d. Measured (every environment) against the closed forms.",
            "panels": [{"title": "price of an uncertified good", "xlabel": "round", "ylabel": "price", "yscale": "log",
                        "series": [{"label": "price", "x": x, "y": floor(m["price"]), "kind": "measured"},
                                   {"label": "p_0 r^t", "x": x, "y": floor(th["price"]), "kind": "theory"}]},
                       {"title": "mean traded quality (uncertified)", "xlabel": "round", "ylabel": "quality",
                        "yscale": "log",
                        "series": [{"label": "traded quality", "x": x, "y": floor(m["traded_quality"]),
                                    "kind": "measured"},
                                   {"label": "min(p_t/θ_s, 1)/2", "x": x, "y": floor(th["traded_quality"]),
                                    "kind": "theory"}]},
                       {"title": "efficiency", "xlabel": "round", "ylabel": "realised / full-trade gains",
                        "series": [{"label": "efficiency", "x": x, "y": cut(m["efficiency"]), "kind": "measured"},
                                   {"label": f"d + (1 − d) x_t², d = {d:g} (theory)", "x": x,
                                    "y": cut(th["efficiency"]), "kind": "theory"},
                                   other,
                                   {"label": f"limit under disclosure d = {limit:g}", "x": x, "y": flat(limit),
                                    "kind": "theory"}]}]}


def metrics(p: Params, tot: Totals) -> dict:
    r = jnp.maximum(tot.rounds, 1.0)
    return {"efficiency": tot.surplus / jnp.maximum(tot.full_surplus, 1e-30), "price": tot.price / r,
            "traded_share": tot.offered / jnp.maximum(tot.uncertified, 1.0),
            "traded_quality": tot.offered_quality / jnp.maximum(tot.offered, 1.0),
            "ask_ratio": tot.ask_ratio / (r * p.n), "seller_gain": tot.seller_gain / (r * p.n),
            "truthful_decisions": tot.truthful_decisions / (r * p.n)}


SCENARIO = register(Scenario(
    name="lemons", bytes_per_agent=48,  # measured peak at N = 10^6 (BENCHMARKS.md), rounded down
    params=params, reset=reset, observe=observe, step=step,
    spec=lambda p: Spec(observation=("own_value", "price", "certified"), actions=("ask",), low=(0.0,), high=(3.0,),
                        truthful=(1.0,), relative=True, seats=1),
    seat_providers=lambda p, s: s.provider[None],
    seat_owners=lambda p, s: jnp.arange(p.n, dtype=jnp.int32)[None],
    scripted={"truthful": truthful, "markup": markup},
    summarise=summarise, metrics=metrics,
    headline=("final_price", "final_traded_quality", "final_efficiency", "theory_final_efficiency",
              "limit_efficiency", "mean_efficiency"),
    description="The market for lemons (Akerlof 1970): sellers know their good's quality, buyers price the average "
                "of the pool they saw; the price and traded quality unravel geometrically, disclosure of a share d "
                "of the goods recovers efficiency d"))
