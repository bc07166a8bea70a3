"""Accounting that holds at scale (issue 17): money kept at wealth 10⁸, magnitudes float32 cannot hold refused in one
line, non-finite numbers stopped with the quantity and the round, compensated wealth beating plain float32."""

import math

import jax
import numpy as np
import pytest

from coasejax.config import ConfigError
from coasejax.envs import accounting
from coasejax.envs import coase as engine
from coasejax.scenarios import coase as scenario
from coasejax.simulate import NonFiniteError, first_nonfinite, simulate
from tests.conftest import make_cfg


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400, msg
    return msg


def test_conservation_holds_at_wealth_1e8(run):
    """At wealth 10⁸ float32's spacing is 8, so a plain float32 wealth drops every cost of 0.01 (wealth_change 0
    while the costs were paid). The wealth pair keeps them: the stored change equals the flows to 2⁻⁴⁷·10⁸ ≈ 7·10⁻⁷
    per agent and round (≤ 1.3·10⁻² here over 2000 agents and 3 rounds, against gross flows of ~10⁴)."""
    s = run(population__wealth="constant:1e8", state__transaction_costs__per_party=0.01)
    assert s["transaction_costs_paid"] > 100
    assert s["wealth_change"] == pytest.approx(s["money_accounted"], abs=2e-2)
    assert s["wealth_change"] == pytest.approx(-s["transaction_costs_paid"], rel=1e-5)  # Nash: budget-balanced
    assert s["money_residual_rel"] < 1e-6
    assert s["money_resolution_rel"] < 1e-5


@pytest.mark.parametrize("overrides, key", [
    ({"population__wealth": "constant:1e14", "state__transaction_costs__per_party": 0.001},
     "state.transaction_costs.per_party"),
    ({"providers__fee_flat": 1e-16}, "providers.fee_flat"),  # wealth 100: the pair holds ~7e-13
    ({"population__wealth": "constant:1e39"}, "population.wealth"),  # beyond float32
    ({"population__wealth": "lognormal:90:1"}, "population.wealth"),
    ({"state__transaction_costs__per_deal": 1e36}, "state.transaction_costs.per_deal"),  # its total overflows
])
def test_magnitudes_float32_cannot_hold_are_refused_up_front(overrides, key):
    """Refused while building the parameters, before anything is compiled or run, in one line naming the key."""
    cfg = make_cfg(**overrides)
    with pytest.raises(accounting.MoneyError) as e:
        engine.EnvParams.from_config(cfg)
    assert isinstance(e.value, ConfigError)
    assert _one_line(e).startswith(key)


def test_an_infinite_tax_is_refused_in_one_line():
    """``state.pigou_tax=inf`` wrote NaN into summary.json; now it is refused (by the config, and, for a config built
    around the validation, by the ledger's magnitude check)."""
    with pytest.raises(ConfigError) as e:
        make_cfg(state__pigou_tax="inf")
    assert "state.pigou_tax" in _one_line(e)
    cfg = make_cfg()
    cfg = cfg.model_copy(update={"state": cfg.state.model_copy(update={"pigou_tax": math.inf})})
    with pytest.raises(ConfigError) as e:
        simulate(cfg)
    assert _one_line(e).startswith("state.pigou_tax=inf")


def test_welfare_overflowing_float32_stops_naming_quantity_and_round(run):
    """Harm sensitivities of 10³⁷ make the status quo's welfare −inf in float32 (C·x ≈ 10³⁸ per agent, summed over
    2000): the run stops at round 1 naming the per-round total, instead of writing -Infinity into summary.json."""
    with pytest.raises(NonFiniteError) as e:
        run(population__harm="constant:1e37")
    assert isinstance(e.value, ConfigError)
    assert _one_line(e).startswith("status_quo went non-finite (-inf) in round 1 of 3")


def test_wealth_overflowing_later_names_the_first_round(run):
    """Wealth 8·10³⁷ (allowed: a quarter of float32's range) and transfers of ~10³⁶ a round (16 agents, harm up to
    2·10³⁶): the agents who receive more than they pay overflow float32 after some rounds, while every per-round
    total stays finite. Only then is the episode rerun watching the state, which names that round; a run one round
    shorter is finite throughout."""
    kw = dict(population__n_agents=16, population__benefit="constant:10", population__harm="uniform:0:2e36",
              population__wealth="constant:8e37", sim__rounds=64)
    with pytest.raises(NonFiniteError) as e:
        run(**kw)
    msg = _one_line(e)
    assert msg.startswith("the state's pop.wealth went non-finite in round "), msg
    r = int(msg.split(" in round ")[1].split(" ")[0])
    assert 1 < r <= 64, msg
    kw["sim__rounds"] = r - 1
    s = run(**kw)
    assert math.isfinite(s["wealth_change"]) and s["state_violations"] == 0


def test_first_nonfinite_finds_the_earliest_round_and_allows_sentinels():
    t = np.zeros((2, 10))
    a, b, sentinel = t.copy(), t.copy(), np.full((2, 10), -np.inf)
    a[1, 7] = np.nan
    b[0, 4] = np.inf
    assert first_nonfinite({"a": a, "b": b, "red": sentinel}, ("red",)) == ("b", 4, math.inf)
    assert first_nonfinite({"a": t, "red": sentinel}, ("red",)) is None
    sentinel[0, 2] = np.nan  # a sentinel may be −inf, never NaN or +inf
    assert first_nonfinite({"red": sentinel}, ("red",))[:2] == ("red", 2)


def _long_run(compensated: bool, rounds: int):
    """Identical agents (a = 3, c = 1, wealth 10⁶: float32 spacing 1/16) paying ~0.02 a round in costs, so plain
    float32 rounds every agent's change away the same way, every round."""
    cfg = make_cfg(population__n_agents=512, population__benefit="constant:3", population__harm="constant:1",
                   population__wealth="constant:1e6", state__transaction_costs__per_party=0.001,
                   state__transaction_costs__per_round=0.001, state__transaction_costs__per_deal=0.01,
                   sim__rounds=rounds)
    params = engine.EnvParams.from_config(cfg)
    state = engine.reset(jax.random.PRNGKey(0), params)
    if not compensated:
        state = state.replace(pop=state.pop.replace(wealth_lo=None))
    last, m = jax.jit(lambda s: engine.rollout(jax.random.PRNGKey(1), s, params, rounds))(state)
    add_env = lambda tree: jax.tree.map(lambda x: np.asarray(x)[None], tree)  # noqa: E731
    per_round = {f: np.asarray(getattr(m, f), np.float64)[None] for f in m._fields}
    return cfg, params, per_round, add_env(state), add_env(last)


def test_compensated_wealth_beats_plain_float32_on_a_long_run():
    """2000 rounds: plain float32 storage loses all the costs (residual ≈ costs / gross ≈ 1.3 %, and the summary
    refuses the run in one line); the wealth pair's residual is below 10⁻⁷ (the float32 rounding of each
    agent's change in a round, not of its wealth)."""
    rounds = 2000
    cfg, params, per_round, first, last = _long_run(True, rounds)
    s = scenario.summarise(cfg, params, per_round, first, last)
    assert s["transaction_costs_paid"] > 0.01 * s["money_gross"]
    assert s["money_residual_rel"] < 1e-7
    assert s["wealth_change"] == pytest.approx(-s["transaction_costs_paid"], rel=1e-5)  # Nash: budget-balanced

    _, _, per_round, first, last = _long_run(False, rounds)
    naive = float(np.asarray(last.pop.wealth, np.float64).sum() - np.asarray(first.pop.wealth, np.float64).sum())
    assert naive == 0.0  # every cost rounded away
    with pytest.raises(accounting.MoneyError) as e:
        scenario.summarise(cfg, params, per_round, first, last)
    assert _one_line(e).startswith("money is not conserved")
    gross = per_round["gross_flows"].sum()
    assert per_round["transaction_costs"].sum() / gross > 0.01


def test_add_money_is_exact_to_the_pair_s_resolution():
    """10⁴ random changes of ±[0, 1] on wealth 10⁸ (float32 spacing 8): the pair ends within 2⁻⁴⁷·10⁸·10⁴ of the
    exact float64 sum (in fact far closer); plain float32 is off by ~10³."""
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    d = rng.uniform(-1, 1, (10_000, 64)).astype(np.float32)
    hi0 = np.full(64, 1e8, np.float32)

    def body(c, di):
        return accounting.add_money(c[0], c[1], di), None

    (hi, lo), _ = jax.jit(lambda d: jax.lax.scan(body, (jnp.asarray(hi0), jnp.zeros(64, jnp.float32)), d))(d)
    exact = hi0.astype(np.float64) + d.astype(np.float64).sum(axis=0)
    err = np.abs(np.asarray(hi, np.float64) + np.asarray(lo, np.float64) - exact)
    assert err.max() < accounting.PAIR_ROUNDOFF * 1e8 * 10_000 and err.max() < 1e-3
    plain = jax.jit(lambda d: jax.lax.scan(lambda c, di: (c + di, None), jnp.asarray(hi0), d)[0])(d)
    assert np.abs(np.asarray(plain, np.float64) - exact).max() > 100
