"""Learned advocates inside the Coase engine (issue 15): ES trains on the engine's own step, the checkpoint deploys in
``simulate`` at 10^6 agents, per provider, deterministically on 1 or 4 devices.

Closed forms (mechanisms/lindahl.py, THEORY.md "Public goods"): under Lindahl contributions with k identical victims
(harm constant), each victim's best reply to the others' prices is ``p = (w c − P_−s)/2``, so the symmetric equilibrium
reports ``1/(k + 1)`` of the true harm. With every victim reporting the ratio r, the emitter abates ``r C`` of the
first best's ``C`` (interior bargains: a ≥ 1 > C = 1 here), which realises ``1 − (1 − r)²`` of the first-best gain:
``(2k + 1)/(k + 1)²`` at the equilibrium."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from coasejax.config import load_config
from tests.conftest import run_cli, xla_flags

FAST = ["train.iterations=300", "checkpoint.every=300", "train.log_every=50"]
#: issue 16 item 4: the learned Lindahl ratio within this of 1/(k + 1)
TOL = 0.02
#: the k of the preset-sized runs (issue 16 named 4 and 8; ~13 s each)
PRESET_K = (4, 8)
#: cheaper runs at k the preset-sized runs do not try: 2048 agents, 100 iterations, a coarse best-reply grid
SMALL = ["population.n_agents=2048", "train.iterations=100", "checkpoint.every=100", "train.log_every=100",
         "train.eval_grid=11", "train.seeds=2"]
SMALL_K = (2, 6)


@pytest.fixture(scope="module")
def lindahl_runs(tmp_path_factory):
    """One trained run per k (10^4 agents on a ring of degree k), keyed by k: (run dir, summary)."""
    from coasejax.train.run import train

    runs = {}
    for k in PRESET_K:
        out = tmp_path_factory.mktemp(f"lindahl_k{k}")
        runs[k] = out, train(load_config("coase_es", [*FAST, f"population.degree={k}"]), out)
    return runs


def assert_free_riding(k, ratio, efficiency, utility_loss_rel, tol=TOL):
    """The learned report ratio lies within ``tol`` of 1/(k + 1). With truthful emitters, every victim reporting the
    ratio r realises 1 − (1 − r)² of the first-best gain, so efficiency lies within 2·tol + tol² of
    (2k + 1)/(k + 1)² (the emitters' reports are learned too, and truthful to a few 1e-3 of a: inside that margin).
    No victim gains more than 1% by the best constant ratio."""
    assert abs(ratio - 1 / (k + 1)) <= tol, (k, ratio)
    assert abs(efficiency - (2 * k + 1) / (k + 1) ** 2) <= 2 * tol + tol**2, (k, efficiency)
    assert utility_loss_rel <= 0.01, (k, utility_loss_rel)


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    """One :data:`SMALL` run per k in :data:`SMALL_K`, keyed by k: (run dir, summary)."""
    from coasejax.train.run import train

    runs = {}
    for k in SMALL_K:
        out = tmp_path_factory.mktemp(f"lindahl_small_k{k}")
        runs[k] = out, train(load_config("coase_es", [*SMALL, f"population.degree={k}"]), out)
    return runs


def restored(out, overrides, step):
    """``(algo, states)``: the training algorithm of ``coase_es`` with ``overrides`` and the run's ``step``."""
    from coasejax import checkpoint as ckpt
    from coasejax.train.run import make_algo

    algo = make_algo(load_config("coase_es", overrides))
    return algo, ckpt.restore(ckpt.manager(out / "checkpoints", read_only=True), step, algo.init_states())


@pytest.mark.parametrize("k", PRESET_K)
def test_lindahl_victims_learn_to_free_ride_at_the_equilibrium(lindahl_runs, k):
    """Issue 16 item 4 at the preset's N = 10^4 (300 iterations): within 0.02 of 1/(k + 1) (measured: 1e-3)."""
    _, s = lindahl_runs[k]
    assert_free_riding(k, s["report_ratio"], s["efficiency"], s["utility_loss_rel"])


@pytest.mark.parametrize("k", SMALL_K)
def test_free_riding_at_an_untried_k_with_fewer_agents_and_two_seeds(small_runs, k):
    """k = 2 and 6 (not in the preset-sized runs above), 2048 agents, 100 iterations, two seeds: each seed's learned ratio
    within 0.02 of 1/(k + 1) (measured: 0.003 off), with the efficiency that implies."""
    _, s = small_runs[k]
    per = s["per_seed"]
    for seed in range(2):
        assert_free_riding(k, per["report_ratio"][seed], per["efficiency"][seed], per["utility_loss_rel"][seed])


def test_the_strategy_panels_show_the_learned_reports_beside_the_equilibrium(small_runs):
    """``EngineES.strategy`` of the k = 6 run (two seeds): a panel per role, each with a learned curve per seed and
    the equilibrium line. At the victims' true harm 1 each seed's curve is the engine's report ratio (the same
    network at the same observation: within 1e-4) and the theory line 1/7; the emitters' curves, over the benefit's
    support [1, 3], lie within 0.02 a of the truthful line."""
    out, s = small_runs[6]
    algo, states = restored(out, [*SMALL, "population.degree=6"], 100)
    panels = {p["title"]: p for p in algo.strategy(states.params)}
    assert sorted(panels) == ["coase/lindahl: emitter's report", "coase/lindahl: victim's report"]
    for p in panels.values():
        kinds = [(x["kind"], x["seed"]) for x in p["series"]]
        assert kinds == [("learned", 0), ("learned", 1), ("theory", None)], kinds
        assert p["xlabel"] == "value" and p["yscale"] == "linear"
    victim = panels["coase/lindahl: victim's report"]["series"]
    x = np.asarray(victim[2]["x"])
    assert x[0] == 0.5 and x[-1] == 1.5  # identical victims (harm 1): around the one harm trained on
    np.testing.assert_allclose(victim[2]["y"], x / 7, rtol=1e-6)
    for seed in range(2):
        at_one = np.interp(1.0, victim[seed]["x"], victim[seed]["y"])
        assert abs(at_one - s["per_seed"]["report_ratio"][seed]) <= 1e-4, (at_one, s["per_seed"]["report_ratio"])
    emitter = panels["coase/lindahl: emitter's report"]["series"]
    a = np.asarray(emitter[0]["x"])
    assert abs(a[0] - 1) < 0.01 and abs(a[-1] - 3) < 0.01, a  # benefit uniform on [1, 3]: its sample's range
    assert emitter[2]["label"].startswith("equilibrium: truthful") and np.allclose(emitter[2]["y"], a)
    for seed in range(2):
        assert np.all(np.abs(np.asarray(emitter[seed]["y"]) - a) <= 0.02 * a), emitter[seed]["y"]


def test_the_strategy_theory_lines_follow_the_mechanism_and_the_rights():
    """The panels' theory (report per unit of true value, by role): the preset's Lindahl with identical victims at
    k = 4 — victims 1/5, emitters truthful; Clarke truthful for both (dominant); no closed form, so a line labelled
    "truthful", under the victim's right (hold-out asks depend on a) or with heterogeneous harm (free riders)."""
    import jax

    from coasejax.train.engine_es import STRATEGY_SEED, EngineES, coase_theory

    cases = {(): (1.0, 0.2), ("mechanism.kind=clarke",): (1.0, 1.0), ("state.rights=victim",): (1.0, 1.0),
             ("population.harm=uniform:0.5:1.5",): (1.0, 1.0)}
    for sets, slopes in cases.items():
        algo = EngineES(load_config("coase_es", ["population.n_agents=256", *sets]))
        state = algo.scenario.reset(jax.random.PRNGKey(STRATEGY_SEED), algo.params)
        lines = [coase_theory(algo, state, role) for role in ("emitter", "victim")]
        assert [len(x) for x in lines] == [1, 1] and tuple(x[0][1] for x in lines) == slopes, (sets, lines)
        assert all(x[0][0].startswith("equilibrium") for x in lines) == (sets in [(), ("mechanism.kind=clarke",)])


def test_the_strategy_of_a_scenario_without_a_theory_is_its_learned_curves(tmp_path):
    """The public-goods scenario of tests/test_extension.py, untrained: one panel, contribution against endowment,
    one learned curve (the initial policy contributes its whole endowment: y = x within 1e-5) and no theory line."""
    from tests import test_extension
    from coasejax.train.engine_es import EngineES

    (tmp_path / "pg.yaml").write_text(test_extension.CONFIG)
    algo = EngineES(load_config(str(tmp_path / "pg.yaml"), ["population.n_agents=256"]))
    [panel] = algo.strategy(algo.init_states().params)
    assert panel["title"] == "public_goods: contribution" and panel["xlabel"] == "endowment"
    [series] = panel["series"]
    assert series["kind"] == "learned" and series["seed"] == 0
    assert series["x"][0] >= 1.0 and series["x"][-1] <= 2.0 and series["x"][-1] - series["x"][0] > 0.9
    np.testing.assert_allclose(series["y"], series["x"], atol=1e-5)


def test_free_riding_grows_with_the_number_of_victims(lindahl_runs, small_runs):
    runs = {**lindahl_runs, **small_runs}
    ratios = [runs[k][1]["report_ratio"] for k in sorted(runs)]  # k = 2, 4, 6, 8
    assert all(a > b for a, b in zip(ratios, ratios[1:])), ratios


def test_clarke_advocates_learn_to_report_truthfully(tmp_path):
    """Clarke pivot: truth is dominant. From reports at 60% of the harm the learned ratio returns to 1 ± 0.05, and the
    efficiency to at least 1 − 0.05² (asserted: > 0.99)."""
    from coasejax.train.run import train

    s = train(load_config("coase_es", [*FAST, "mechanism.kind=clarke", "policy.init_scale=0.6"]), tmp_path)
    assert abs(s["report_ratio"] - 1.0) < 0.05, s["report_ratio"]
    assert s["efficiency"] > 0.99 and s["utility_loss_rel"] < 0.01, s


def test_a_perturbed_policy_shows_a_larger_utility_loss(lindahl_runs):
    """The exploitability check can fail: the k = 4 victims' network with each of its two output biases raised by 0.3
    (reports far above the equilibrium's 0.2 of the harm) leaves a best-reply gain above 1%, against ≤ 1% for the
    learned one."""
    import jax

    from coasejax import checkpoint as ckpt
    from coasejax.train.run import Trainer, eval_key, make_algo

    out, s = lindahl_runs[4]
    cfg = load_config("coase_es", [*FAST, "population.degree=4"])
    trainer = Trainer(cfg, make_algo(cfg))
    mngr = ckpt.manager(out / "checkpoints", read_only=True)
    states = ckpt.restore(mngr, 300, trainer.algo.init_states())
    victim = trainer.algo.spec.role_names().index("victim")
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x.at[:, :, victim].add(0.3) if "bias" in str(path[-1]) and x.shape[-1] == 1 else x,
        states.params)
    learned = trainer.evaluate(states.params, eval_key(0, 1))["utility_loss_rel"][0]
    perturbed = trainer.evaluate(params, eval_key(0, 1))["utility_loss_rel"][0]
    assert learned <= 0.01 < perturbed, (learned, perturbed)


def test_the_checkpoint_reproduces_its_efficiency_among_a_million_agents(lindahl_runs, tmp_path):
    """``coasejax simulate`` with the k = 4 checkpoint at N = 10^6 reproduces the training population's efficiency
    within 0.01 (the policy depends on each seat's own observation only, so the population size changes nothing but
    the sample of emitters' benefits)."""
    out, s = lindahl_runs[4]
    r = run_cli("simulate", "coase_es", "--set", f"advocates.policy={out}", "--set", "population.n_agents=1000000",
            "--set", "population.degree=4", "--set", "sim.rounds=2", "--out", str(tmp_path / "sim"), "-q")
    assert r.code == 0, r.stderr
    sim = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert sim["advocates"] == [f"{out}:300"]
    assert abs(sim["efficiency"] - s["efficiency"]) <= 0.01, (sim["efficiency"], s["efficiency"])
    assert abs(sim["report_ratio"] - s["report_ratio"]) <= 1e-3
    assert sim["money_residual_rel"] <= 1e-5 + sim["money_resolution_rel"]


def test_a_checkpoint_of_another_layout_is_refused_in_one_line(lindahl_runs, tmp_path):
    """A Coase checkpoint deployed in the auction scenario: exit 2, one line naming the key and what differs."""
    out, _ = lindahl_runs[4]
    r = run_cli("simulate", "auction_first_price", "--set", f"advocates.policy={out}", "--set",
            "population.n_agents=1000", "--out", str(tmp_path / "x"), "-q")
    assert r.code == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "advocates.policy" in lines[0] and "'coase'" in lines[0], lines
    r = run_cli("simulate", "coase_es", "--set", f"advocates.policy={tmp_path / 'nowhere'}", "--out",
            str(tmp_path / "y"), "-q")
    assert r.code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


LEARNED_DEVICES = """
import json, sys
from coasejax import scenarios
from coasejax.config import load_config
from coasejax.simulate import simulate
s = simulate(load_config("coase_es", sys.argv[1:]))
print(json.dumps({k: s[k] for k in ("welfare", "efficiency", "report_ratio", "transfers", "devices",
                                    "provider_shares")}))
"""


def _run_on(n_devices, overrides):
    env = dict(os.environ, XLA_FLAGS=xla_flags(f"--xla_force_host_platform_device_count={n_devices}"), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", LEARNED_DEVICES, *overrides], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_learned_advocates_give_the_same_numbers_on_one_and_four_devices(small_runs):
    """Two providers (the k = 2 checkpoint and scripted truthful), switching on, drift on: 4 forced host devices agree
    with 1 device (relative 1e-5: sums over differently sharded agents round differently), and a rerun on 1 device
    is bit-identical."""
    out, _ = small_runs[2]
    overrides = [f"providers.policy=[{out}, truthful]", "providers.count=2", "providers.switching_rate=0.2",
                 "population.degree=2", "population.drift=0.05", "population.n_agents=4096", "sim.rounds=8"]
    one, again, four = _run_on(1, overrides), _run_on(1, overrides), _run_on(4, overrides)
    assert one == again
    assert one["devices"] == 1 and four["devices"] == 4
    for key in ("welfare", "efficiency", "report_ratio", "transfers"):
        assert np.isclose(one[key], four[key], rtol=1e-5, atol=0), (key, one[key], four[key])
    np.testing.assert_allclose(one["provider_shares"], four["provider_shares"], rtol=1e-5)


def test_a_learned_provider_wins_clients_from_a_truthful_one(lindahl_runs, tmp_path):
    """Lindahl contributions, 10^6 agents, provider A runs the k = 4 checkpoint (its victims free-ride: they pay less
    for the abatement they get), provider B is scripted truthful; clients review their provider with probability 0.2
    a round and choose by logit on the providers' mean client utility. A's clients end with the higher utility and
    A's market share grows from its initial half over the 12 rounds."""
    out, _ = lindahl_runs[4]
    r = run_cli("simulate", "coase_es", "--set", f"providers.policy=[{out}, truthful]", "--set", "providers.count=2",
            "--set", "providers.switching_rate=0.2", "--set", "population.n_agents=1000000", "--set",
            "population.degree=4", "--set", "sim.rounds=12", "--out", str(tmp_path / "sim"), "-q")
    assert r.code == 0, r.stderr
    s = json.loads((tmp_path / "sim" / "summary.json").read_text())
    shares = np.asarray(s["per_round"]["provider_shares"])[:, 0]
    assert abs(shares[0] - 0.5) < 0.01 and shares[-1] > shares[0] + 0.05, shares
    assert np.all(np.diff(shares) > 0), shares
    util = s["provider_client_utility"]
    assert util[0] > util[1], util


def test_a_providers_policy_is_chosen_by_at_p_and_a_scripted_one_is_refused(tmp_path):
    """Two providers in training: provider 0 scripted truthful (not trained), provider 1 learned. ``RUN@1`` deploys
    the learned one (its victims free-ride: report ratio below 0.6 after 150 iterations, from 1; the equilibrium is
    0.2); ``RUN`` (provider 0) is refused in one line, exit 2, as is a provider the run does not have."""
    from coasejax.train.run import train

    out = tmp_path / "run"
    train(load_config("coase_es", ["train.iterations=150", "checkpoint.every=150", "providers.count=2",
                                   "providers.advocate=[truthful, learned]", "population.n_agents=8192"]), out)
    r = run_cli("simulate", "coase_es", "--set", f"advocates.policy={out}@1", "--set", "population.n_agents=8192",
            "--out", str(tmp_path / "sim"), "-q")
    assert r.code == 0, r.stderr
    s = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert s["advocates"] == [f"{out}:150@1"] and s["report_ratio"] < 0.6, s["report_ratio"]
    for spec, word in ((str(out), "scripted"), (f"{out}@2", "provider 2")):
        r = run_cli("simulate", "coase_es", "--set", f"advocates.policy={spec}", "--out", str(tmp_path / "x"), "-q")
        lines = r.stderr.strip().splitlines()
        assert r.code == 2 and len(lines) == 1 and word in lines[0], r.stderr
