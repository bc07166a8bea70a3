"""The one-shot Coase bargain as a trainable game: victims' advocates learn how much harm to report.

One emitter with benefit slope ``a`` (``population.benefit``) harms k victims, victim s by ``w c_s x`` with
``c_s ~ population.harm`` and ``w = population.weight`` (default ``1/k``). The emitter reports truthfully (a price
taker under ``lindahl``; truth is dominant under ``clarke``); each victim's advocate reports ``ĉ = c · s(c, 1/k)`` with
a learned ratio ``s ∈ [0, 2]`` (:class:`coasejax.policies.Advocate`, starting at the truthful ``s = 1``). The bargain
clears with :func:`coasejax.mechanisms.lindahl.lindahl` or :func:`coasejax.mechanisms.clarke.clarke` under
``state.rights``, without transaction costs. A victim's utility is ``−w c_s x − payment_s``; its *gain* is that minus
its utility at the status quo. All victims are served by one provider; the focal victim (slot 0) deviates while the
other k − 1 play the current policy. Every k in ``env.victims`` is played each iteration and the fitness averages them.

Theory: under Lindahl contributions victims free-ride, reporting less the more victims share the emitter (with k
identical victims, ``1/(k + 1)`` of the true harm in the complete-information equilibrium,
:func:`coasejax.mechanisms.lindahl.equilibrium_reports`; Bergstrom, Blume & Varian 1986); under the Clarke pivot
truthful reporting is dominant (Clarke 1971), so the learned ratio should stay at 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from coasejax.mechanisms import MECHANISMS, Bargain, Terms
from coasejax.mechanisms.base import coalition_roles
from coasejax.model import status_quo
from coasejax.policies import Advocate, take
from coasejax.population import sample
from coasejax.train.game import Game

RATIO_MAX = 2.0


def make_terms(cfg, k: int) -> Terms:
    f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    w = cfg.population.weight if cfg.population.weight is not None else 1.0 / k
    zero = f(0.0)
    return Terms(w=f(w), x_max=f(cfg.population.x_max), emitter_right=jnp.asarray(cfg.state.rights == "emitter"),
                 bargaining_power=f(cfg.mechanism.bargaining_power), discount_emitter=f(0.95),
                 discount_victims=f(0.95), per_round=zero, tc_emitter=zero, tc_victims=zero,
                 threshold=f(cfg.mechanism.threshold), refund_bonus=f(cfg.mechanism.refund_bonus),
                 horizon=cfg.mechanism.horizon)


def observe(c: jax.Array, k: int) -> jax.Array:
    """``f32[..., 2]``: own true harm ``c`` and ``1/k``."""
    return jnp.stack([c, jnp.full_like(c, 1.0 / k)], axis=-1)


def victim_gain(cfg, k: int, a: jax.Array, c: jax.Array, c_hat: jax.Array) -> jax.Array:
    """``f32[k, B]``: each victim's utility gain over the status quo, for ``a: f32[B]``, ``c, c_hat: f32[k, B]``."""
    terms = make_terms(cfg, k)
    x_sq = status_quo(a, terms.emitter_right, cfg.population.x_max)
    outcome = MECHANISMS[cfg.mechanism.kind](Bargain(a_hat=a, c_hat=c_hat, x_sq=x_sq), terms, None)
    return -terms.w * c * (outcome.x - x_sq)[None, :] - outcome.from_victims


def coase_game(cfg) -> Game:
    module = Advocate(hidden=tuple(cfg.policy.hidden), activation=cfg.policy.activation,
                      init_scale=cfg.policy.init_scale, output=cfg.policy.output, init_power=cfg.policy.init_power,
                      low=0.0, high=RATIO_MAX)
    ks = tuple(cfg.env.victims)
    batch, pop = cfg.train.batch, cfg.train.population

    def draw(key, k, n):
        ka, kc = jax.random.split(key)
        return sample(ka, cfg.population.benefit, n), sample(kc, cfg.population.harm, k * n).reshape(k, n)

    def focal_gain(key, stack, k, report_focal):
        """``f32[..., B]`` gain of victim 0 given its reports as a function of its true harms ``c[0]``."""
        a, c = draw(key, k, batch)
        others = module.apply(take(stack, 0), observe(c[1:], k))  # f32[k−1, B]
        focal = report_focal(c[0])  # f32[..., B]

        def one(f):
            return victim_gain(cfg, k, a, c, jnp.concatenate([f[None, :], others]))[0]

        return jax.vmap(one)(focal) if focal.ndim == 2 else one(focal)

    def fitness(key, stack, p, candidates):
        total = jnp.zeros((pop,), jnp.float32)
        for i, k in enumerate(ks):
            report = lambda c0, k=k: jax.vmap(lambda q: module.apply(q, observe(c0, k)))(candidates)  # noqa: E731
            total = total + jnp.mean(focal_gain(jax.random.fold_in(key, i), stack, k, report), axis=-1)
        return total / len(ks)

    def metrics(key, stack):
        return coase_metrics(key, stack, module, cfg, ks)

    return Game(name=f"coase/{cfg.mechanism.kind}", n_providers=1, obs_dim=2, module=module, fitness=fitness,
                metrics=metrics, agents_per_iteration=len(ks) * batch * (pop + sum(ks)))


def interim_gain(cfg, k: int, a: jax.Array, c_others: jax.Array, c0: jax.Array, r0: jax.Array,
                 others_report: jax.Array) -> jax.Array:
    """``f32[G]`` expected gain of a focal victim of each type ``c0: f32[G]`` reporting ``r0: f32[G]``, over the same
    M draws of the emitter ``a: f32[M]`` and the other victims (``c_others, others_report: f32[k−1, M]``)."""
    n_g, n_m = c0.shape[0], a.shape[0]
    def tile(x):  # f32[j, M] -> f32[j, G·M]
        return jnp.broadcast_to(x[:, None, :], (x.shape[0], n_g, n_m)).reshape(x.shape[0], n_g * n_m)

    col = lambda x: jnp.broadcast_to(x[:, None], (n_g, n_m)).reshape(1, -1)  # noqa: E731
    c = jnp.concatenate([col(c0), tile(c_others)])
    c_hat = jnp.concatenate([col(r0), tile(others_report)])
    return jnp.mean(victim_gain(cfg, k, tile(a[None])[0], c, c_hat)[0].reshape(n_g, n_m), axis=1)


def coase_metrics(key, stack, module, cfg, ks) -> dict:
    """``report_ratio_k{k}`` (Σ reported / Σ true harm) for each k and their mean ``report_ratio_mean``;
    ``participation_rate`` (victims who pay into the deal) and ``free_rider_share`` (victims whose harm fell and who
    paid nothing, among those whose harm fell), per k and their means;
    ``efficiency`` — ``(W − W_sq)/(W* − W_sq)``, the share of the first-best gain the bargains realise (mean over k);
    ``utility`` — the focal victim's mean gain over the status quo; ``utility_loss_rel`` — ``(Ḡ_br − Ḡ)/Ḡ_br`` for
    that gain, where the best response picks, for each of ``min(train.eval_values, 256)`` victim types, the best of
    ``min(train.eval_grid, 81)`` report ratios in [0, 2] against 512 draws of the emitter and of the other victims'
    learned reports; the worst k."""
    tc = cfg.train
    out, losses = {}, []
    params = take(stack, 0)
    grid = jnp.linspace(0.0, RATIO_MAX, min(tc.eval_grid, 81), dtype=jnp.float32)
    n, g, m = tc.eval_values, min(tc.eval_values, 256), 512
    for i, k in enumerate(ks):
        kk = jax.random.split(jax.random.fold_in(key, i), 5)
        a = sample(kk[0], cfg.population.benefit, n)
        c = sample(kk[1], cfg.population.harm, k * n).reshape(k, n)
        c_hat = module.apply(params, observe(c, k))
        out[f"report_ratio_k{k}"] = jnp.sum(c_hat) / jnp.sum(c)
        terms = make_terms(cfg, k)
        x_sq = status_quo(a, terms.emitter_right, cfg.population.x_max)
        outcome = MECHANISMS[cfg.mechanism.kind](Bargain(a_hat=a, c_hat=c_hat, x_sq=x_sq), terms, None)
        x = outcome.x
        cost = terms.w * jnp.sum(c, axis=0)
        # coalitions: members pay into (or are paid by) the deal; free riders see their harm fall and pay nothing
        member, benefited, free = coalition_roles(x != x_sq, x, x_sq, outcome.from_victims, c)
        out[f"participation_rate_k{k}"] = jnp.mean(member.astype(jnp.float32))
        out[f"free_rider_share_k{k}"] = (jnp.sum(free, dtype=jnp.float32)
                                         / jnp.maximum(jnp.sum(benefited, dtype=jnp.float32), 1.0))
        x_star = jnp.clip(a - cost, 0.0, jnp.where(terms.emitter_right, x_sq, terms.x_max))
        welfare = lambda x_: a * x_ - 0.5 * x_ * x_ - cost * x_  # noqa: E731
        out[f"efficiency_k{k}"] = jnp.sum(welfare(x) - welfare(x_sq)) / jnp.sum(welfare(x_star) - welfare(x_sq))
        # numerical best response of one victim against the others' learned reports
        c0 = sample(kk[2], cfg.population.harm, g)
        a_m = sample(kk[3], cfg.population.benefit, m)
        c_others = sample(kk[4], cfg.population.harm, (k - 1) * m).reshape(k - 1, m)
        r_others = module.apply(params, observe(c_others, k))
        learned = interim_gain(cfg, k, a_m, c_others, c0, module.apply(params, observe(c0, k)), r_others)
        by_ratio = jax.lax.map(lambda s: interim_gain(cfg, k, a_m, c_others, c0, s * c0, r_others), grid)
        gain, gain_br = jnp.mean(learned), jnp.mean(jnp.maximum(jnp.max(by_ratio, axis=0), learned))
        out[f"utility_k{k}"] = gain
        losses.append((gain_br - gain) / jnp.maximum(gain_br, 1e-12))
    for name in ("report_ratio", "efficiency", "utility", "participation_rate", "free_rider_share"):
        out[name + ("_mean" if name == "report_ratio" else "")] = jnp.mean(jnp.stack([out[f"{name}_k{k}"] for k in ks]))
    out["utility_loss_rel"] = jnp.max(jnp.stack(losses))
    return out
