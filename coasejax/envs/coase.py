"""The population-scale Coase scenario: every agent is an emitter bargaining with its k victims, every round, and
every action passes through the rule layers state ⊃ provider ⊃ individual (:mod:`coasejax.rules`).

Each round (``step``):
1. each emitter's victims' harm sensitivities are read through the graph (``f32[k, N]``);
2. an emitter acting alone picks ``clip(a − τ, 0, x_max)`` (τ the Pigouvian tax) inside the room the state and
   individual layers leave (``own_activity``: caps, budgets); that is the status quo under the emitter's right, while
   under the victim's right the status quo is 0;
3. advocates report (:mod:`coasejax.advocates`) within their provider's code of conduct (``report_a``, ``report_c``);
4. the mechanism (:mod:`coasejax.mechanisms`) clears on the reports net of the tax, inside the room the layers leave
   for a deal's activity (``deal_activity``: caps, red lines); each bargain runs the protocol of the emitter's
   provider (``providers.protocol``; reports follow it too);
5. a deal is attempted iff its reported surplus, weighted by the enforcement probability, covers the deal's
   transaction costs ``TC = per_deal + (k + 1)(per_party + per_round)`` (with pooled victims,
   :func:`victim_party_cost`) and no party vetoes it (``outlay_*``: budgets;
   ``gain_*``: reservation payments); an attempted deal pays its costs and is honoured with probability
   ``enforcement``, otherwise activity reverts to the status quo and no transfer is made;
6. money moves: transfers, costs, the tax and its recycling, provider fees; types may drift; clients may switch
   providers (:func:`coasejax.rules.provider.choose_providers`).

Welfare counts true benefits and harms: ``W = Σ_i [B_i(x_i) − C_i x_i] − TC`` (transfers, taxes and fees move money
between agents, the state and providers, and cancel).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from coasejax import advocates, model
from coasejax.config import Config
from coasejax.envs import accounting, coalitions
from coasejax.graphs import Graph, make_graph, slot_sum
from coasejax.mechanisms import MECHANISMS, Bargain, Outcome, Terms
from coasejax.mechanisms.assurance import equilibrium_pledges
from coasejax.mechanisms.base import harm_shares
from coasejax.population import Population, drift_types, inverse_cdf, make_population, round_words, unit_uniform
from coasejax.rules import RULES, Audit, IndividualParams, ProviderParams, StateParams, active, constrain
from coasejax.rules import individual as individual_layer
from coasejax.rules.provider import choose_providers, of_agents, segment_totals
from coasejax.rules.state import capped
from coasejax.xla import materialise


@struct.dataclass
class EnvParams:
    """Every traced parameter of the scenario (a ``vmap`` over these is a sweep) and the static choices."""

    w: jax.Array
    x_max: jax.Array
    emitter_right: jax.Array
    bargaining_power: jax.Array
    discount_emitter: jax.Array
    discount_victims: jax.Array
    per_party: jax.Array
    per_round: jax.Array
    per_deal: jax.Array
    enforcement: jax.Array
    shade: jax.Array
    threshold: jax.Array  # assurance: the fraction of the victims who must pledge
    pool_cost: jax.Array  # a pooled coalition's cost per member and round (mechanism.pool_cost)
    wealth_deciles: jax.Array  # f32[9] the deciles of population.wealth (coalition breakdowns)
    harm_quartiles: jax.Array  # f32[3] the quartiles of population.harm (agent types in the breakdowns)
    refund_bonus: jax.Array  # assurance: the bonus of a failed contract per unit of pledge
    drift: jax.Array
    one: jax.Array  # a traced 1.0 for :func:`coasejax.xla.materialise`
    state: StateParams
    provider: ProviderParams
    graph: Graph | None = None  # the neighbour graph (its static fields select the fast path)
    draws: "Draws | None" = struct.field(pytree_node=False, default=None)  # what reset draws
    strategy: str = struct.field(pytree_node=False, default="truthful")
    horizon: int = struct.field(pytree_node=False, default=32)
    emitter_first: bool = struct.field(pytree_node=False, default=True)
    draw_enforcement: bool = struct.field(pytree_node=False, default=False)  # False when enforcement == 1
    draw_drift: bool = struct.field(pytree_node=False, default=False)  # False when drift == 0
    coalitions: bool = struct.field(pytree_node=False, default=False)  # full coalition diagnostics (sim.coalitions)
    coalition_totals: bool = struct.field(pytree_node=False, default=False)  # the coalition totals (sim.coalitions)
    pooling: bool = struct.field(pytree_node=False, default=False)  # victims may pool across emitters

    @classmethod
    def from_config(cls, cfg: Config, graph: Graph | None = None) -> "EnvParams":
        """The parameters of ``cfg``, with its graph (default: drawn from ``population`` and ``sim.seed``).

        Raises :class:`coasejax.envs.accounting.MoneyError` (a :class:`ConfigError`) for money magnitudes the float32
        ledger cannot hold (:func:`coasejax.envs.accounting.check_magnitudes`)."""
        accounting.check_magnitudes(cfg)
        f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
        p = cfg.population
        tc = cfg.state.transaction_costs
        m = cfg.mechanism
        return cls(
            w=f(cfg.population.w),
            x_max=f(cfg.population.x_max),
            emitter_right=jnp.asarray(cfg.state.rights == "emitter"),
            bargaining_power=f(m.bargaining_power),
            discount_emitter=f(m.discount_emitter),
            discount_victims=f(m.discount_victims),
            per_party=f(tc.per_party),
            per_round=f(tc.per_round),
            per_deal=f(tc.per_deal),
            enforcement=f(cfg.state.enforcement),
            shade=f(cfg.advocates.shade),
            threshold=f(m.threshold),
            pool_cost=f(m.pool_cost),
            wealth_deciles=inverse_cdf(cfg.population.wealth, jnp.arange(1, 10) / 10.0),
            harm_quartiles=inverse_cdf(cfg.population.harm, jnp.arange(1, 4) / 4.0),
            refund_bonus=f(m.refund_bonus),
            drift=f(cfg.population.drift),
            one=f(1.0),
            state=StateParams.from_config(cfg),
            provider=ProviderParams.from_config(cfg),
            graph=graph if graph is not None else make_graph(p.graph, p.n_agents, p.degree, cfg.sim.seed, p.rewire),
            draws=Draws.from_config(cfg),
            strategy=cfg.advocates.strategy if cfg.advocates.policy is None else "learned",
            horizon=m.horizon,
            emitter_first=m.first_mover == "emitter",
            draw_enforcement=cfg.state.enforcement < 1.0,
            draw_drift=cfg.population.drift > 0.0,
            coalitions=cfg.sim.coalitions == "full",
            coalition_totals=cfg.sim.coalition_totals,
            pooling=m.pooling,
        )

    def rule_params(self, indiv: IndividualParams) -> dict:
        return {"state": self.state, "provider": self.provider, "individual": indiv}


@struct.dataclass
class EnvState:
    pop: Population
    indiv: IndividualParams  # per-agent preferences of the individual layer
    util: jax.Array | None  # f32[N] each client's average recent net utility (provider switching only)
    t: jax.Array  # i32 round counter


class RoundMetrics(NamedTuple):
    """Sums over all agents of one round (scalars, or short vectors; stacked to ``[T, ...]`` by the episode scan)."""

    welfare: jax.Array
    first_best: jax.Array
    status_quo: jax.Array  # welfare at the rights-based status quo with no rules (the efficiency baseline)
    activity: jax.Array
    first_best_activity: jax.Array
    # money (coasejax.envs.accounting.MoneyFlows; conservation is checked against the stored wealth by simulate)
    transfers: jax.Array  # money the mechanism hands emitters (positive: victims pay emitters)
    paid_by_victims: jax.Array  # money victims hand the mechanism
    transaction_costs: jax.Array
    attempts: jax.Array
    deals: jax.Array  # attempted and honoured
    mechanism_net: jax.Array  # the mechanism's net intake, paid_by_victims − transfers (negative: it pays out)
    tax_revenue: jax.Array  # Pigouvian tax collected
    tax_recycled: jax.Array  # ... and handed back in the same round
    fees: jax.Array  # fees collected by providers
    gross_flows: jax.Array  # MoneyFlows.gross: the scale of the conservation residual
    state_violations: jax.Array  # agents whose activity or wealth breaks a state rule (must be 0)
    red_line_excess: jax.Array  # max over honoured deals of (harm − red line) of any victim (−inf: none/no red lines)
    binding: jax.Array  # f32[C] bargains in which each enabled constraint changed an action (see constraint_names)
    layer_binding: jax.Array  # f32[3] bargains in which the state / provider / individual layer changed an action
    provider_clients: jax.Array  # f32[M] clients per provider this round
    provider_revenue: jax.Array  # f32[M] fees per provider this round
    provider_deals: jax.Array  # f32[M] honoured deals led by each provider's clients (as emitters)
    provider_welfare: jax.Array  # f32[M] welfare of the bargains led by each provider's clients
    provider_utility: jax.Array  # f32[M] its clients' realised gains net of fees, as emitters and victims (M > 1)
    # coalitions: a deal's coalition is the victims who pay into it or are paid by it
    coalition_members: jax.Array  # victims in the coalition of an honoured deal
    coalitions: jax.Array  # honoured deals with at least one member
    beneficiaries: jax.Array  # victims whose harm fell (the emitter abated)
    free_riders: jax.Array  # ... without paying anything
    efficient_changes: jax.Array  # bargains whose first best differs from the status quo
    provided: jax.Array  # ... in which an honoured deal moved the activity
    leavers: jax.Array  # members who would gain by leaving alone (sim.coalitions; else 0)
    refunds: jax.Array  # refund bonuses paid to the pledgers of failed assurance contracts
    pooled_members: jax.Array  # members of coalitions pooled across emitters
    span: jax.Array  # Σ over pooled members of the honoured deals their pooled coalition is in (of its k emitters)
    # sim.coalitions (else zeros): rows agents, memberships, benefited, free rides (each agent as a victim, over its
    # k emitters) by wealth decile f32[4, 10] and by harm quartile f32[4, 4]; members by the ratio of their payment to
    # their value of the change (PLEDGE_BINS) f32[len(PLEDGE_BINS) + 1]; honoured deals by coalition size f32[k + 1]
    by_wealth: jax.Array
    by_harm: jax.Array
    pledge_hist: jax.Array
    size_hist: jax.Array
    harm_gap: jax.Array  # Σ C |x − x*|: external harm not internalised
    harm_gap_status_quo: jax.Array  # Σ C |x_sq − x*|: the same at the status quo
    reported_harm: jax.Array  # Σ over victim slots of the reports ĉ the mechanism saw (after the rule layers)
    true_harm: jax.Array  # Σ over victim slots of the true c


LAYERS = tuple(layer.name for layer in RULES.layers)
PLEDGE_BINS = coalitions.PLEDGE_BINS


def constraint_names(params: EnvParams, state: EnvState) -> list[tuple[str, str]]:
    """``(layer, constraint)`` of the entries of :attr:`RoundMetrics.binding`, outermost first."""
    return active(RULES, params.rule_params(state.indiv))


class Draws(NamedTuple):
    """What :func:`reset` draws (hashable: a static field of :class:`EnvParams`)."""

    n_agents: int
    benefit: object
    harm: object
    wealth: object
    providers: int
    red_line: object = None
    reservation: object = None
    altruism: object = None
    budget_share: object = None

    @classmethod
    def from_config(cls, cfg: Config) -> "Draws":
        p, ind = cfg.population, cfg.individual
        return cls(n_agents=p.n_agents, benefit=p.benefit, harm=p.harm, wealth=p.wealth, providers=cfg.providers.count,
                   red_line=ind.red_line, reservation=ind.reservation, altruism=ind.altruism,
                   budget_share=ind.budget_share)


def reset(key: jax.Array, params: EnvParams) -> EnvState:
    """A fresh population and its individual preferences (and, when providers compete for clients, their
    net-utility averages)."""
    d = params.draws
    n = d.n_agents
    return EnvState(
        pop=make_population(key, d, d.providers),
        indiv=individual_layer.draw(jax.random.fold_in(key, 1), d, n),
        util=jnp.zeros((n,), jnp.float32) if params.provider.use_switching else None,
        t=jnp.zeros((), jnp.int32),
    )


def pools(params: EnvParams, k: int) -> jax.Array:
    """Whether victims pool (``mechanism.pooling``): one coalition of each victim with the victims of the other
    emitters that harm it, which discovers all k of them at one ``per_party`` cost a round plus ``mechanism.pool_cost``
    instead of ``per_party`` for each. Victims pool iff it saves them cost: ``(k − 1) per_party > pool_cost``."""
    return jnp.asarray(params.pooling) & ((k - 1) * params.per_party > params.pool_cost)


def victim_party_cost(params: EnvParams, k: int) -> jax.Array:
    """A victim's own transaction cost per bargain it joins: discovery (shared over its k emitters when it pools,
    plus its share of the pool's cost) and negotiation."""
    discovery = jnp.where(pools(params, k), (params.per_party + params.pool_cost) / k, params.per_party)
    return discovery + params.per_round


def terms_of(params: EnvParams, k: int) -> Terms:
    party = params.per_party + params.per_round
    per_deal = jnp.maximum(params.per_deal, params.state.tc_floor)
    er = params.emitter_right
    return Terms(
        w=params.w,
        x_max=params.x_max,
        emitter_right=er,
        bargaining_power=params.bargaining_power,
        discount_emitter=params.discount_emitter,
        discount_victims=params.discount_victims,
        per_round=params.per_round,
        tc_emitter=party + jnp.where(er, 0.0, per_deal),
        tc_victims=k * victim_party_cost(params, k) + jnp.where(er, per_deal, 0.0),
        horizon=params.horizon,
        emitter_first=params.emitter_first,
        threshold=params.threshold,
        refund_bonus=params.refund_bonus,
    )


def _shading(strategy: str, params: EnvParams, pop: Population, indiv: IndividualParams, graph: Graph):
    """The emitter's and the victims' advocates' shading: the provider's ``shade`` times ``1 − altruism``."""
    pp = params.provider
    per_agent = pp.count > 1 or indiv.altruism is not None
    if strategy != "shade" or not per_agent:  # only the shade strategy reads it
        return pp.shade[0], pp.shade[0]
    s = of_agents(pp.shade, pop.provider, pp.count)
    if indiv.altruism is not None:
        s = s * (1.0 - indiv.altruism)
    return s, graph.out(s)


def _bargaining_power(params: EnvParams, pop: Population, graph: Graph) -> jax.Array:
    """Nash bargaining power moved toward the side with the more skilled advocates: ``β + (σ_e − mean σ_v)/2``."""
    if not params.provider.use_skill:
        return params.bargaining_power
    skill = of_agents(params.provider.skill, pop.provider, params.provider.count)
    edge = skill - slot_sum(graph.out(skill)) / graph.k
    return jnp.clip(params.bargaining_power + 0.5 * edge, 0.0, 1.0)


def _by_protocol(pp: ProviderParams, provider: jax.Array, kinds: tuple[str, ...]):
    """A function that takes one pytree per protocol in ``kinds`` and keeps, for each emitter, the leaves of its
    provider's protocol (per-emitter arrays have the agent axis last)."""
    if len(kinds) == 1:
        return lambda trees: trees[0]
    table = jnp.asarray([kinds.index(p) for p in pp.protocols], jnp.int32)
    which = table[provider]  # i32[N]

    def pick(*leaves):
        out = leaves[0]
        for j, leaf in enumerate(leaves[1:], start=1):
            out = jnp.where(which == j, leaf, out)
        return out

    return lambda trees: jax.tree.map(pick, *trees)


def _victim_gains(params: EnvParams, graph: Graph, c: jax.Array, moved: jax.Array, x_sq: jax.Array,
                  outflow: jax.Array) -> jax.Array:
    """``f32[N]``: each agent's realised gain as a victim this round, summed over the k bargains that harm it.

    Victim j of emitter e gains ``−w c_j Δx_e`` in harm (``Δx = x − x_sq``, zero unless a deal was honoured), pays
    ``p_e,j`` (payments and costs, net of the tax it receives) and, with the tax paid to victims, would have received
    ``τ x_sq,e / k`` anyway. Summed over its emitters: ``−w c_j Σ_e Δx_e − Σ_e p_e,j − τ/k Σ_e x_sq,e``, where the
    middle term is the ``outflow`` already sent back through the graph; so only two per-emitter vectors are rolled."""
    k = graph.k
    sp = params.state

    def from_emitters(v):  # Σ over the k emitters that harm each agent
        return slot_sum(graph.into(jnp.broadcast_to(v, (k, v.shape[-1]))))

    gain = -params.w * c * from_emitters(moved) - outflow
    if sp.use_tax and sp.tax_to_victims:
        gain = gain - (sp.pigou_tax / k) * from_emitters(x_sq)
    return gain


def _no_deal(bargain: Bargain) -> Outcome:
    """The outcome of protocol ``none``: the status quo, no transfers, no surplus (so no deal is attempted)."""
    zeros = jnp.zeros_like(bargain.a_hat)
    return Outcome(x=bargain.x_sq + zeros, to_emitter=zeros, from_victims=jnp.zeros_like(bargain.c_hat), surplus=zeros)


def scripted_reports(strategy: str, params: EnvParams, state: EnvState) -> jax.Array:
    """The reports of scripted advocates (:mod:`coasejax.advocates`): each emitter's report â and each slot-s
    victim's report ĉ, by the protocol of the emitter's provider (:class:`Reports`; ``.stacked()`` is the scenario's
    action layout ``f32[1 + k, N, 1]``)."""
    pop, graph, pp = state.pop, params.graph, params.provider
    kinds = tuple(dict.fromkeys(pp.protocols))
    if strategy == "truthful" or kinds == ("none",):
        return Reports(None, None)
    c_nb = graph.out(pop.c)
    terms = terms_of(params, graph.k)
    s_e, s_v = _shading(strategy, params, pop, state.indiv, graph)
    a_hat, c_hat = _by_protocol(pp, pop.provider, kinds)([
        (pop.a, c_nb) if kind == "none" else advocates.reports(strategy, kind, pop.a, c_nb, terms, s_e, s_v)
        for kind in kinds])
    return Reports(a_hat, c_hat)


class Reports(NamedTuple):
    """The reports of scripted advocates without stacking them into ``f32[1 + k, N, 1]`` (a copy of every report that
    the plain engine does not need): the emitters' ``f32[N]`` and the victims' per slot ``f32[k, N]``."""

    emitters: jax.Array | None  # None: the true benefit slopes
    victims: jax.Array | None  # None: the true harm sensitivities

    def stacked(self, params: "EnvParams", state: "EnvState") -> jax.Array:
        a = state.pop.a if self.emitters is None else self.emitters
        c = params.graph.out(state.pop.c) if self.victims is None else self.victims
        return jnp.concatenate([a[None], c])[..., None]


class _Context(NamedTuple):
    """What every phase of a round reads: the graph's view of the types, the status quo and the first best."""

    c_nb: jax.Array  # f32[k, N] true harm sensitivities of each emitter's victims
    cost: jax.Array  # f32[N] C_i = w Σ_s c_nb
    x_sq: jax.Array  # status quo under the rights regime and the rules
    x_star: jax.Array  # first best
    x_base: jax.Array  # rights-based status quo without rules: the efficiency baseline
    ctx: dict  # what the rule layers read
    rp: dict  # the rule layers' parameters
    terms: Terms
    audit: Audit
    fence: object  # materialise (layered rounds) or XLA's barrier


class _Deal(NamedTuple):
    """The agreed and honoured deals of a round and what each party gains and pays."""

    attempt: jax.Array  # bool[N]
    honoured: jax.Array  # bool[N]
    x: jax.Array  # f32[N] activity
    to_emitter: jax.Array  # f32[N]
    from_victims: jax.Array  # f32[k, N] (net of refunds)
    tc_emitter: jax.Array  # f32[N]
    tc_victims: jax.Array  # f32[k, N]
    g_e: jax.Array  # f32[N] each emitter's realised gain
    red_excess: jax.Array
    refunds: jax.Array
    leavers: jax.Array
    audit: Audit
    reported_harm: jax.Array  # Σ ĉ the mechanism saw


def _context(params: EnvParams, state: EnvState) -> _Context:
    """Phase 0: the types seen through the graph, the emitter acting alone inside the state's and its own limits,
    the status quo and the first best."""
    pop, indiv, graph = state.pop, state.indiv, params.graph
    sp, pp = params.state, params.provider
    k, n = graph.k, graph.n
    rp = params.rule_params(indiv)
    tax = sp.pigou_tax
    # keep intermediate results from being recomputed in every consumer (see coasejax.xla); the plain engine only
    # needs XLA's barrier, the longer layered round needs real materialisation
    layered = bool(active(RULES, rp)) or sp.use_tax or pp.use_fees or pp.use_switching or pp.use_skill

    def fence(tree, per_slot=False):
        return materialise(tree, params.one, per_slot) if layered else jax.lax.optimization_barrier(tree)

    c_nb = graph.out(pop.c)
    cost = params.w * slot_sum(c_nb)
    c_nb, cost = jax.lax.optimization_barrier((c_nb, cost))
    ctx = {"graph": graph, "k": k, "w": params.w, "a": pop.a, "c": pop.c, "c_nb": c_nb, "wealth": pop.wealth,
           "provider": pop.provider, "tax": tax, "capped": capped(sp, n) if sp.use_cap else None}
    er = params.emitter_right
    x_alone = model.status_quo(pop.a - tax if sp.use_tax else pop.a, True, params.x_max)
    x_alone, _, changed = constrain(RULES, "own_activity", x_alone, rp, ctx)
    audit = Audit.empty().add({key_: m & er for key_, m in changed.items()})  # under the victim's right nobody acts alone
    return _Context(c_nb=c_nb, cost=cost, x_sq=jnp.where(er, x_alone, 0.0),
                    x_star=model.first_best(pop.a, cost, params.x_max),
                    x_base=model.status_quo(pop.a, er, params.x_max), ctx=ctx, rp=rp, terms=terms_of(params, k),
                    audit=audit, fence=fence)


def _bargain(params: EnvParams, state: EnvState, cx: _Context, reports: jax.Array, k_mech: jax.Array):
    """Phase 1, report: the advocates' reports within their provider's code of conduct and the other layers, the
    values net of the tax, and the room the layers leave for a deal's activity. Returns the bargain, its terms and
    the audit."""
    pop, graph = state.pop, params.graph
    sp, k = params.state, graph.k
    er, tax, fence = params.emitter_right, sp.pigou_tax, cx.fence
    kinds = tuple(dict.fromkeys(params.provider.protocols))
    if isinstance(reports, Reports):  # scripted: None is the truth (no copy of the types)
        a_hat = pop.a if reports.emitters is None else reports.emitters
        c_hat = cx.c_nb if reports.victims is None else reports.victims
    else:
        a_hat, c_hat = reports[0, :, 0], reports[1:, :, 0]
    a_hat, _, changed = constrain(RULES, "report_a", a_hat, cx.rp, cx.ctx)
    audit = cx.audit.add(changed)
    c_hat, _, changed = constrain(RULES, "report_c", c_hat, cx.rp, cx.ctx)
    audit = audit.add(changed, per_slot=True)
    if changed or params.strategy != "truthful":
        # computed once: every slot of every roll below would otherwise recompute the reports and their sums
        c_hat = fence(c_hat, per_slot=True)
    # the bargain sees values net of the tax: the emitter saves τ per unit abated; victims paid the tax
    # (tax_recycling: victims) lose τ/k per unit abated
    a_eff, c_eff = a_hat, c_hat
    if sp.use_tax:
        a_eff = a_hat - tax
        if sp.tax_to_victims:
            c_eff = jnp.maximum(c_hat - tax / (k * params.w), 0.0)
    x_proposed = jnp.clip(a_eff - params.w * slot_sum(c_eff), 0.0, jnp.where(er, cx.x_sq, params.x_max))
    _, (_, x_hi), changed = constrain(RULES, "deal_activity", x_proposed, cx.rp, cx.ctx)
    audit = audit.add(changed)
    terms = cx.terms.replace(bargaining_power=_bargaining_power(params, pop, graph))
    bargain = Bargain(a_hat=a_eff, c_hat=c_eff, x_sq=cx.x_sq, x_hi=x_hi)
    if "assurance" in kinds and params.strategy == "best_response":  # pledges by the victims' true harms
        bargain = bargain._replace(pledge=equilibrium_pledges(jax.random.fold_in(k_mech, 1), bargain, terms,
                                                              cx.c_nb))
    return bargain, terms, audit, harm_shares(c_hat), jnp.sum(c_hat)


def _clear(params: EnvParams, state: EnvState, cx: _Context, bargain: Bargain, terms: Terms, audit: Audit,
           shares: jax.Array, k_mech: jax.Array, enforce_word) -> _Deal:
    """Phase 2, clear: each emitter's provider's protocol clears the bargain; each party's true gain and outlay; the
    vetoes of the rule layers; the attempt, its enforcement and a failed assurance contract's refunds."""
    pop, graph, indiv = state.pop, params.graph, state.indiv
    sp, k = params.state, graph.k
    er, tax, fence = params.emitter_right, sp.pigou_tax, cx.fence
    pp = params.provider
    kinds = tuple(dict.fromkeys(pp.protocols))
    by_protocol = _by_protocol(pp, pop.provider, kinds)
    per_deal = jnp.maximum(params.per_deal, sp.tc_floor)
    x_sq, c_nb = cx.x_sq, cx.c_nb

    def clear(b):
        outs = [_no_deal(b) if kind == "none" else MECHANISMS[kind](b, terms, k_mech) for kind in kinds]
        if "assurance" in kinds:  # the same structure for every protocol: no refunds outside assurance
            outs = [o if o.refund is not None else o._replace(refund=jnp.zeros_like(b.c_hat)) for o in outs]
        return by_protocol(outs)

    out = fence(clear(bargain))
    # each party's true gain from the agreement and what it pays, then the vetoes
    dx = out.x - x_sq
    tc_v = victim_party_cost(params, k) + jnp.where(er, per_deal, 0.0) * shares  # f32[k, N]
    g_e = model.benefit_change(pop.a, x_sq, out.x) - tax * dx + out.to_emitter - terms.tc_emitter
    tax_share = tax / k if (sp.use_tax and sp.tax_to_victims) else 0.0
    g_v = (tax_share - params.w * c_nb) * dx - out.from_victims - tc_v
    would_attempt = (out.surplus > 0) & (params.enforcement * out.surplus >= terms.tc_total)
    outlay_e, outlay_v = tax * out.x - out.to_emitter + terms.tc_emitter, out.from_victims + tc_v
    if params.draw_enforcement:  # a breached deal moves no transfer but still costs its transaction costs (and the
        # emitter the status quo's tax): what a party may have to pay is the larger of the two outcomes' outlays
        outlay_e = jnp.maximum(outlay_e, tax * x_sq + terms.tc_emitter)
        outlay_v = jnp.maximum(outlay_v, tc_v)
    g_e, g_v, tc_v, outlay_e, outlay_v = fence((g_e, g_v, tc_v, outlay_e, outlay_v))
    vetoes = Audit.empty()  # a constraint on a payment or a gain acts by vetoing the deal
    for field, value, per_slot in (("outlay_emitter", outlay_e, False), ("outlay_victims", outlay_v, True),
                                   ("gain_emitter", g_e, False), ("gain_victims", g_v, True)):
        vetoes = vetoes.add(constrain(RULES, field, value, cx.rp, cx.ctx)[2], per_slot=per_slot)
    veto = jnp.zeros_like(would_attempt)
    for m in vetoes.masks.values():
        veto = veto | m
    # a veto binds only where the deal would otherwise have been attempted
    audit = audit.add({key_: m & would_attempt for key_, m in vetoes.masks.items()})
    attempt = would_attempt & ~veto
    honoured = attempt
    if params.draw_enforcement:
        honoured = attempt & (unit_uniform(enforce_word, 24) < params.enforcement)

    out, attempt, honoured = fence((out, attempt, honoured))
    leavers = jnp.float32(0.0)
    if params.coalitions:  # each member's unilateral exit (coasejax.envs.coalitions)
        def go_on_terms(dev, s):
            go_on = honoured & (dev.surplus > 0) & (params.enforcement * dev.surplus >= terms.tc_total - tc_v[s])
            dx_s = jnp.where(go_on, dev.x - x_sq, 0.0)
            return go_on, ((tax_share - params.w * c_nb[s]) * dx_s
                           - jnp.where(go_on, dev.from_victims[s] + tc_v[s], 0.0))  # still a party: still pays its TC

        leavers = coalitions.leavers(clear, bargain, honoured, out.from_victims, g_v, go_on_terms, k)
    x = jnp.where(honoured, out.x, x_sq)
    to_emitter = jnp.where(honoured, out.to_emitter, 0.0)
    from_victims = jnp.where(honoured, out.from_victims, 0.0)
    tc_emitter = jnp.where(attempt, terms.tc_emitter, 0.0)
    tc_victims = jnp.where(attempt, tc_v, 0.0)  # f32[k, N]
    refunds = jnp.float32(0.0)
    if "assurance" in kinds:  # a failed assurance contract: the emitter pays each pledger its refund bonus
        refund = jnp.where(attempt[None, :], 0.0, out.refund)
        refund_paid = slot_sum(refund)  # f32[N] what each emitter paid back
        from_victims = from_victims - refund
        to_emitter = to_emitter - refund_paid
        refunds = jnp.sum(refund)
    g_e = jnp.where(honoured, g_e, -tc_emitter)  # realised gain: a breached deal only costs (victims: see below)
    if "assurance" in kinds:  # ... and a failed contract's bonuses, which the emitter paid
        g_e = g_e - refund_paid
    red_excess = jnp.float32(-jnp.inf)
    if indiv.red_line is not None:
        harm_over = params.w * c_nb * x - graph.out(indiv.red_line)
        red_excess = jnp.max(jnp.where(honoured, harm_over, -jnp.inf))
    return _Deal(attempt=attempt, honoured=honoured, x=x, to_emitter=to_emitter, from_victims=from_victims,
                 tc_emitter=tc_emitter, tc_victims=tc_victims, g_e=g_e, red_excess=red_excess, refunds=refunds,
                 leavers=leavers, audit=audit, reported_harm=jnp.float32(0.0))


def _no_bargaining(params: EnvParams, cx: _Context) -> _Deal:
    """Phase 2 under protocol ``none`` everywhere: emitters act alone under the state layer."""
    zeros_n = jnp.zeros_like(cx.x_sq)
    none = jnp.zeros_like(cx.x_sq, dtype=bool)
    return _Deal(attempt=none, honoured=none, x=cx.x_sq, to_emitter=zeros_n, from_victims=jnp.zeros_like(cx.c_nb),
                 tc_emitter=zeros_n, tc_victims=jnp.zeros_like(cx.c_nb), g_e=zeros_n,
                 red_excess=jnp.float32(-jnp.inf), refunds=jnp.float32(0.0), leavers=jnp.float32(0.0),
                 audit=cx.audit, reported_harm=jnp.sum(cx.c_nb))


def _settle(params: EnvParams, state: EnvState, cx: _Context, deal: _Deal):
    """Phase 3, settle: transfers, costs, the tax and its recycling (each total from its own source,
    :mod:`coasejax.envs.accounting`), then provider fees (a share of the client's realised gain and a flat fee, never
    beyond what the client has left). Returns the wealth change, the fees, each client's gain before fees (None when
    nothing needs it), the victims' outflow and the money flows."""
    pop, graph = state.pop, params.graph
    sp, pp = params.state, params.provider
    tax_paid = sp.pigou_tax * deal.x if sp.use_tax else None
    d_wealth, victim_outflow, flows = accounting.settle(graph, deal.to_emitter, deal.from_victims, deal.tc_emitter,
                                                        deal.tc_victims, tax_paid, sp.use_tax and sp.tax_to_victims,
                                                        cx.fence)
    fee = jnp.zeros_like(pop.a)
    gain = None
    if pp.use_fees or pp.use_switching or pp.count > 1:  # competing providers: their clients' utility
        gain = deal.g_e + _victim_gains(params, graph, pop.c, deal.x - cx.x_sq, cx.x_sq, victim_outflow)
    if pp.use_fees:
        due = (of_agents(pp.fee, pop.provider, pp.count) * jnp.maximum(gain, 0.0)
               + of_agents(pp.fee_flat, pop.provider, pp.count))
        fee = jnp.minimum(due, jnp.maximum(pop.wealth + d_wealth, 0.0))
        d_wealth = d_wealth - fee
        flows = flows.with_fees(fee)
    return d_wealth, fee, gain, flows


def _binding(rp: dict, audit: Audit) -> tuple[jax.Array, jax.Array]:
    """Bargains in which each enabled constraint, and each layer, changed an action."""
    names = active(RULES, rp)
    binding = jnp.stack([jnp.sum(audit.masks[nm], dtype=jnp.float32) if nm in audit.masks else jnp.float32(0)
                         for nm in names]) if names else jnp.zeros((0,), jnp.float32)
    layer_any = []
    for layer in LAYERS:
        masks = [m for (ly, _), m in audit.masks.items() if ly == layer]
        any_m = masks[0] if masks else None
        for m in masks[1:]:
            any_m = any_m | m
        layer_any.append(jnp.float32(0) if any_m is None else jnp.sum(any_m, dtype=jnp.float32))
    return binding, jnp.stack(layer_any)


def _rewards(params: EnvParams, cx: _Context, deal: _Deal, fee: jax.Array) -> jax.Array:
    """``f32[1 + k, N]``: each seat's client's realised gain this round: the emitter's net of its provider's fee,
    each victim's in that bargain (dropped by XLA wherever nobody reads it)."""
    sp, k = params.state, params.graph.k
    tax_share = sp.pigou_tax / k if (sp.use_tax and sp.tax_to_victims) else 0.0
    g_v = (tax_share - params.w * cx.c_nb) * (deal.x - cx.x_sq) - deal.from_victims - deal.tc_victims
    return jnp.concatenate([(deal.g_e - fee)[None], g_v])


def step(key: jax.Array, state: EnvState, actions: jax.Array, params: EnvParams) -> tuple[EnvState, RoundMetrics,
                                                                                          jax.Array]:
    """One round for all N emitters at once, in four phases: report (:func:`_bargain`), clear (:func:`_clear`),
    settle (:func:`_settle`) and account (:func:`_account`). ``actions: f32[1 + k, N, 1]`` are the advocates' reports
    (seat 0: each emitter's â; seat s: its slot-s victim's ĉ), which pass through the rule layers before the mechanism
    sees them. Returns the new state, the round's metrics and each seat's reward ``f32[1 + k, N]``."""
    pp = params.provider
    k_mech, k_draws = jax.random.split(key)
    # all per-agent randomness of a round from one u32 word per use (cheaper than separate draws)
    uses = [u for u, on in (("enforce", params.draw_enforcement), ("drift", params.draw_drift),
                             ("switch", pp.use_switching)) if on]
    words = round_words(k_draws, len(uses), params.graph.n) if uses else None
    word = {u: words[i] for i, u in enumerate(uses)}
    cx = _context(params, state)
    if tuple(dict.fromkeys(pp.protocols)) == ("none",):
        deal = _no_bargaining(params, cx)
    else:
        bargain, terms, audit, shares, reported = _bargain(params, state, cx, actions, k_mech)
        deal = _clear(params, state, cx, bargain, terms, audit, shares, k_mech, word.get("enforce"))
        deal = deal._replace(reported_harm=reported)
    d_wealth, fee, gain, flows = _settle(params, state, cx, deal)
    new, metrics = _account(params, state, cx, deal, d_wealth, fee, gain, flows, word)
    return new, metrics, _rewards(params, cx, deal, fee)


def _account(params: EnvParams, state: EnvState, cx: _Context, deal: _Deal, d_wealth, fee, gain, flows, word):
    """Phase 4, account: state violations, binding constraints, per-provider totals, coalitions, the round's metrics;
    then the new wealth, provider switching and drift."""
    pop, graph = state.pop, params.graph
    sp, pp = params.state, params.provider
    k, n = graph.k, graph.n
    tc_agent = deal.tc_emitter + slot_sum(deal.tc_victims)  # costs of the bargain led by each emitter
    # materialise every per-agent result once: reductions would otherwise each recompute their whole producer chain
    x, x_star, x_sq, to_emitter, tc_agent, d_wealth, fee, masks = cx.fence(
        (deal.x, cx.x_star, cx.x_sq, deal.to_emitter, tc_agent, d_wealth, fee, deal.audit.masks))
    honoured = deal.honoured
    if pop.wealth_lo is None:
        new_wealth, new_lo = pop.wealth + d_wealth, None
    else:  # the float32 pair: a change far below the wealth's own spacing is kept (coasejax.envs.accounting)
        new_wealth, new_lo = accounting.add_money(pop.wealth, pop.wealth_lo, d_wealth)
    violation = (x < 0) | (x > params.x_max * (1 + 1e-6))
    if sp.use_cap:
        violation = violation | (cx.ctx["capped"] & (x > sp.cap * (1 + 1e-6) + 1e-6))
    if sp.budget_rule:
        violation = violation | (new_wealth < -1e-5 * jnp.maximum(jnp.abs(pop.wealth), 1.0))
    binding, layer_binding = _binding(cx.rp, Audit(masks))

    # per provider: clients, fees, and the deals and welfare of the bargains its clients lead as emitters (and, for
    # switching, its clients' updated net-utility averages), in one pass over the agents
    value = model.social_value(pop.a, cx.cost, x) - tc_agent
    util = state.util
    if pp.use_switching:
        util = pp.memory * state.util + (1.0 - pp.memory) * (gain - fee)
    if pp.count == 1:  # one provider: the totals; no extra pass over the agents
        per_provider = jnp.stack([jnp.full((1,), n, jnp.float32), jnp.sum(fee, keepdims=True),
                                  jnp.sum(honoured, keepdims=True, dtype=jnp.float32), jnp.sum(value, keepdims=True)])
    else:
        rows = [jnp.ones_like(fee), fee, honoured.astype(jnp.float32), value, gain - fee] + (
            [util] if pp.use_switching else [])
        per_provider = segment_totals(jnp.stack(rows), pop.provider, pp.count)  # f32[5 or 6, M]
    if params.coalition_totals:
        stats, (member, benefited, free) = coalitions.round_stats(
            honoured, x, x_sq, x_star, cx.cost, deal.from_victims, cx.c_nb,
            pools(params, k) if params.pooling else None, graph)
    else:  # nobody asked (sim.coalitions: off): no pass over the agents
        stats = coalitions.empty_totals()
    if params.coalitions:
        stats.update(coalitions.breakdowns(params.wealth_deciles, params.harm_quartiles, graph, pop.wealth, pop.c,
                                           honoured, member, benefited, free, deal.from_victims,
                                           params.w * cx.c_nb * (x - x_sq)))
    else:
        stats.update(coalitions.empty_breakdowns(k))
    metrics = RoundMetrics(
        welfare=jnp.sum(value),
        first_best=jnp.sum(model.social_value(pop.a, cx.cost, x_star)),
        status_quo=jnp.sum(model.social_value(pop.a, cx.cost, cx.x_base)),
        activity=jnp.sum(x),
        first_best_activity=jnp.sum(x_star),
        transfers=flows.to_emitters,
        paid_by_victims=flows.from_victims,
        transaction_costs=flows.transaction_costs,
        attempts=jnp.sum(deal.attempt, dtype=jnp.float32),
        deals=jnp.sum(honoured, dtype=jnp.float32),
        mechanism_net=flows.mechanism_net,
        tax_revenue=flows.tax_paid,
        tax_recycled=flows.tax_recycled,
        fees=flows.fees,
        gross_flows=flows.gross,
        state_violations=jnp.sum(violation, dtype=jnp.float32),
        red_line_excess=deal.red_excess,
        binding=binding,
        layer_binding=layer_binding,
        provider_clients=per_provider[0],
        provider_revenue=per_provider[1],
        provider_deals=per_provider[2],
        provider_welfare=per_provider[3],
        provider_utility=per_provider[4] if pp.count > 1 else jnp.zeros((1,), jnp.float32),
        leavers=deal.leavers,
        refunds=deal.refunds,
        reported_harm=deal.reported_harm,
        true_harm=jnp.sum(cx.c_nb),
        **stats,
    )

    pop = pop.replace(wealth=new_wealth, wealth_lo=new_lo)
    if pp.use_switching:  # provider m's score: its clients' mean average net utility (no clients: the market mean)
        clients, util_sum = per_provider[0], per_provider[5]
        score = jnp.where(clients > 0, util_sum / jnp.maximum(clients, 1.0), jnp.sum(util_sum) / n)
        pop = pop.replace(provider=choose_providers(pp, pop.provider, score, word["switch"]))
    if params.draw_drift:
        pop = drift_types(pop, params.drift, word["drift"])
    return EnvState(pop=pop, indiv=state.indiv, util=util, t=state.t + 1), metrics


def rollout(key: jax.Array, state: EnvState, params: EnvParams, length: int, strategy: str | None = None):
    """``length`` rounds of scripted advocates (``strategy``, default ``params.strategy``) under ``lax.scan``. Round
    t uses ``fold_in(key, t)``, so splitting an episode into chunks gives the same numbers as one long scan."""
    strategy = strategy or params.strategy

    def body(s, _):
        new, metrics, _ = step(jax.random.fold_in(key, s.t), s, scripted_reports(strategy, params, s), params)
        return new, metrics

    return jax.lax.scan(body, state, None, length=length)
