"""Sweeps over a scenario's own keys (``EnvSection.sweepable``) and the scenario figure of ``coasejax report``, on the
markets lecture's scenarios (the lemons and market-power files test their own)."""

import json

import numpy as np
import pytest
from tests.conftest import run_cli
from typer.testing import CliRunner

from coasejax.cli import app
from coasejax.config import ConfigError, load_config
from coasejax.eval.report import write_report
from coasejax.scenarios import granovetter as gr
from coasejax.sweep import check_sweep, sweepable


def _cli(*args):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_a_sweep_over_sigma_redraws_each_settings_thresholds_and_finds_the_jump(tmp_path):
    """Granovetter's thresholds are drawn at reset from (μ, σ), so each setting of a sweep over env.sigma must reset
    with its own σ: the final crowds at σ = 0.05, 0.1 (below σ_c ≈ 0.122) and 0.2 (above) match the first fixed
    point of Φ((x − μ)/σ) within 0.01 (N = 2·10^4: the crowd's sampling sd is below 0.004), low below σ_c and near
    1 above it. The sweep's table, CSV and figure carry the scenario's headline numbers."""
    sigmas = [0.05, 0.1, 0.2]
    r = _cli("simulate", "granovetter", "--set", "population.n_agents=20000", "--set", "sim.rounds=200",
             "--sweep", f"env.sigma={','.join(map(str, sigmas))}", "--out", str(tmp_path / "sw"), "-q")
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "sw" / "sweep.json").read_text())["rows"]
    crowd = [row["final_crowd"] for row in rows]
    for s, c in zip(sigmas, crowd):
        assert abs(c - gr.first_fixed_point(0.25, s)) < 0.01, (s, c)
    assert crowd[0] < 0.05 and crowd[1] < 0.2 and crowd[2] > 0.95, crowd
    header = (tmp_path / "sw" / "sweep.csv").read_text().splitlines()[0].split(",")
    assert header == ["env.sigma", "final_crowd", "theory_crowd", "rounds_to_settle", "payoff_per_agent_round"]
    assert (tmp_path / "sw" / "sweep.png").stat().st_size > 10_000


def test_schelling_tolerance_sweep_draws_the_segregation_curve(tmp_path):
    """A sweep over env.tolerance (one compiled call, the same initial cities): segregation rises with tolerance,
    from the random-mixing 1/2 at τ = 0 (nobody moves: within 0.01) to above 0.7 at τ = 1/3 (measured ≈ 0.75 at
    N = 40^2 after 30 rounds)."""
    r = _cli("simulate", "schelling", "--set", "population.n_agents=1600", "--set", "sim.rounds=30",
             "--sweep", "env.tolerance=0,0.2,0.3333", "--out", str(tmp_path / "sw"), "-q")
    assert r.exit_code == 0, r.output
    seg = [row["segregation"] for row in json.loads((tmp_path / "sw" / "sweep.json").read_text())["rows"]]
    assert abs(seg[0] - 0.5) < 0.02 and np.all(np.diff(seg) > 0.02) and seg[2] > 0.7, seg


def test_chairs_enforcement_sweep_shows_order_degrading(tmp_path):
    """A sweep over the state layer's enforcement (one compiled call, the same market): with e = 0 nothing trades
    (welfare stays at the endowment's, to float32 rounding), and the welfare gain rises with e (at e = 0.5 measured
    0.76 of the enforced gain in 16 rounds: deals breached now are mostly struck later). Headline columns."""
    r = _cli("simulate", "chairs", "--set", "population.n_agents=2048", "--set", "sim.rounds=16",
             "--sweep", "env.enforcement=0,0.5,1", "--out", str(tmp_path / "sw"), "-q")
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "sw" / "sweep.json").read_text())["rows"]
    gain = [row["welfare"] - row["welfare_initial"] for row in rows]
    assert abs(gain[0]) < 1e-5 and 0.3 * gain[2] < gain[1] < 0.95 * gain[2], gain
    header = (tmp_path / "sw" / "sweep.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["env.enforcement", "welfare", "core_welfare"]


def test_only_the_scenarios_traced_keys_are_sweepable():
    """env.capacity of El Farol is traced (sweepable); env.memory sets shapes (refused, naming the key and listing the
    allowed env keys); another scenario's key is not offered."""
    cfg = load_config("el_farol", [])
    check_sweep({"env.capacity": [0.5, 0.6]}, cfg.env)
    with pytest.raises(ConfigError, match=r"sweep\.env\.memory: cannot be swept.*env\.capacity"):
        check_sweep({"env.memory": [4, 8]}, cfg.env)
    assert "env.tolerance" not in sweepable(cfg.env) and "env.tolerance" in sweepable(load_config("schelling", []).env)
    r = CliRunner().invoke(app, ["simulate", "el_farol", "--sweep", "env.memory=4,8", "--out", "/tmp/never"])
    assert r.exit_code == 2 and "env.memory" in r.output and len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.parametrize("preset", ["el_farol", "granovetter", "schelling", "chairs"])
def test_report_draws_the_scenarios_figure_with_its_theory(tmp_path, preset):
    """simulate writes the scenario's figure into summary.json (a measured series and at least one theory series of
    the same length, finite) and the report draws it as report_figures/scenario.png."""
    r = _cli("simulate", preset, "--set", "population.n_agents=2500", "--set", "sim.rounds=12", "--out",
             str(tmp_path / preset), "-q", *(["--set", "env.burn_in=2"] if preset == "el_farol" else []))
    assert r.exit_code == 0, r.output
    fig = json.loads((tmp_path / preset / "summary.json").read_text())["figure"]
    series = fig["panels"][0]["series"]
    kinds = [s["kind"] for s in series]
    assert kinds[0] == "measured" and "theory" in kinds
    assert all(len(s["x"]) == len(s["y"]) == len(series[0]["x"]) >= 12 for s in series)
    assert all(np.all(np.isfinite(s["y"])) for s in series)
    page = write_report(tmp_path / preset)
    assert (tmp_path / preset / "report_figures" / "scenario.png").stat().st_size > 5_000
    assert "report_figures/scenario.png" in page.read_text()


def test_a_cross_field_env_error_names_its_key_once(tmp_path):
    """A scenario's cross-field check (lemons: θ_b must exceed θ_s) reads as one line naming the key once, from
    --set and from a sweep setting alike (it read "env: env: env.buyer_value: ..." before)."""
    for args in (["--set", "env.buyer_value=0.5"], ["--sweep", "env.buyer_value=0.5,1.5"]):
        r = CliRunner().invoke(app, ["simulate", "lemons", *args, "--out", str(tmp_path / "x")])
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
        assert "env.buyer_value: must exceed env.seller_value" in r.output and "env: env" not in r.output, r.output


def test_a_scenario_population_that_cannot_fit_is_refused_with_its_own_estimate(tmp_path, monkeypatch):
    """Each scenario states a lower bound of its peak bytes per agent (chairs: 112 B, measured 116 B at N = 10⁶); on
    a machine with 10 GB, 2·10⁸ chair agents (at least 22 GB) are refused before anything compiles, naming the
    scenario and not a graph it does not use, while the 16 B of the old estimate (3.2 GB) let them through."""
    from coasejax import cliutil

    monkeypatch.setattr(cliutil, "memory_available", lambda shard=True: (10 * 10**9, "host memory"))
    r = CliRunner().invoke(app, ["simulate", "chairs", "--set", "population.n_agents=200000000", "--set",
                                 "env.core=false", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "112 B per agent for env.kind chairs)" in r.output and "graph" not in r.output, r.output


@pytest.mark.parametrize("args, key", [(["env.burn_in=20", "sim.rounds=20"], "env.burn_in"),
                                       (["env.good=1e-39"], "env.good")])
def test_scenario_inputs_it_cannot_measure_are_refused(tmp_path, args, key):
    """A burn-in that leaves no measured round (it was cut down silently) and a number float32 cannot hold (it ran
    as 0) are one-line errors naming the key."""
    sets = [x for a in args for x in ("--set", a)]
    r = run_cli("simulate", "el_farol", *sets, "--out", tmp_path / "x", "-q")  # the real entry point
    assert r.code == 2 and key in r.stderr and len(r.lines) == 1, (r.code, r.stderr)
