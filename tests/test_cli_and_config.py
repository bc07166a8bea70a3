"""Configs and the command line: presets, overrides, outputs, and one-line errors with exit code 2."""

import json
from pathlib import Path

import pytest
import yaml

from coasejax.config import ConfigError, Distribution, load_config
from tests.conftest import cli, run_cli

REQUIRED_KEYS = ["n_agents", "rounds", "welfare", "first_best_welfare", "status_quo_welfare", "efficiency",
                 "mean_activity", "transfers", "transaction_costs_paid", "deal_rate", "agent_steps_per_second"]




def test_presets_load_by_name_and_by_path():
    root = Path(__file__).resolve().parents[1]
    for name in ("quickstart", "coase"):
        by_name = load_config(name)
        by_path = load_config(str(root / "configs" / f"{name}.yaml"))
        assert by_name == by_path


def test_overrides_are_typed_and_nested():
    cfg = load_config("quickstart", ["population.n_agents=1234", "state.transaction_costs.per_deal=0.5",
                                     "population.benefit=constant:10", "sim.shard=false"])
    assert cfg.population.n_agents == 1234 and cfg.state.transaction_costs.per_deal == 0.5
    assert cfg.population.benefit == Distribution(kind="constant", value=10.0)
    assert cfg.sim.shard is False


@pytest.mark.parametrize("text,expected", [
    ("constant:2.5", Distribution(kind="constant", value=2.5)),
    ("uniform:1:3", Distribution(kind="uniform", low=1, high=3)),
    ("lognormal:0:0.5", Distribution(kind="lognormal", mu=0, sigma=0.5)),
])
def test_distribution_syntax_round_trips(text, expected):
    d = Distribution.model_validate(text)
    assert d == expected and Distribution.model_validate(str(d)) == d


@pytest.mark.parametrize("override,names", [
    ("population.nagents=5", "population.nagents"),
    ("mechanism.kind=vcg", "mechanism.kind"),
    ("population.n_agents=many", "population.n_agents"),
    ("state.enforcement=2", "state.enforcement"),
    ("population.harm=uniform:-1:1", "population.harm"),
    ("population.benefit=beta:1:2", "population.benefit"),
    ("advocates.strategy=best_response", "advocates.strategy"),
    ("providers.protocol=vcg", "providers.protocol"),
    ("providers.protocol=[nash,clarke]", "providers.protocol"),  # quickstart has one provider
    ("sim", "--set"),
])
def test_bad_values_name_the_key(override, names):
    with pytest.raises(ConfigError) as e:
        load_config("quickstart", [override])
    assert names in str(e.value) and "\n" not in str(e.value)


def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("population: [1, 2\n")
    (tmp_path / "[red]x[").mkdir()
    binary = tmp_path / "[red]x[" / "]binary.yaml"  # a binary file whose path holds rich markup (issue 17)
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    cases = [["simulate", "nonexistent_preset"], ["simulate", str(tmp_path / "missing.yaml")],
             ["simulate", str(bad_yaml)], ["simulate", "quickstart", "--set", "population.degree=0"],
             ["simulate", "quickstart", "--set", "mechanism.kind=vcg"]]
    for args in cases:  # in this process (tests/test_validation.py has many more)
        r = run_cli(*args, "--out", str(tmp_path / "o"))
        assert r.code == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = cli("simulate", str(binary), "--out", str(tmp_path / "o"))  # and once in a real process
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert str(binary) in r.stderr and "not UTF-8" in r.stderr  # printed literally, in a real process
    assert not (tmp_path / "o" / "summary.json").exists()


def test_simulate_writes_summary_and_resolved_config(tmp_path):
    out = tmp_path / "run"
    r = cli("simulate", "quickstart", "--set", "population.n_agents=3000", "--set", "sim.rounds=4",
            "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    for key in REQUIRED_KEYS:
        assert key in summary
    assert summary["n_agents"] == 3000 and summary["rounds"] == 4
    # efficiency is the share of the first best's gain over the status quo that the run realises: the first best is
    # each emitter's optimum and costs only lower welfare, so ≤ 1 (float32 sums: + 1e-6); truthful Nash attempts a
    # deal only when enforcement × surplus covers its costs, so each attempt gains in expectation, and over 24,000
    # bargains the realised gain is positive
    w, w_star, w_sq = summary["welfare"], summary["first_best_welfare"], summary["status_quo_welfare"]
    assert summary["efficiency"] == pytest.approx((w - w_sq) / (w_star - w_sq), rel=1e-9)
    assert 0.0 < summary["efficiency"] <= 1.0 + 1e-6
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["population"]["n_agents"] == 3000
    # the resolved config reproduces the run
    again = tmp_path / "again"
    r2 = cli("simulate", str(out / "config.yaml"), "--out", str(again), "-q")
    assert r2.returncode == 0, r2.stderr
    assert json.loads((again / "summary.json").read_text())["welfare"] == summary["welfare"]
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_every_config_key_is_documented():
    from coasejax.config import Config
    from coasejax.config.training import ENV_SECTIONS

    def keys(model, prefix=""):
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            if hasattr(type(value), "model_fields") and name not in ("benefit", "harm", "wealth"):
                yield from keys(value, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}"

    doc = "\n".join(p.read_text() for p in (Path(__file__).resolve().parents[1] / "docs").glob("*.md"))
    # the default env section (coase), and the own keys of every scenario the package registers (not those a test
    # file registers for itself, e.g. tests/test_extension.py, which may share this process)
    own = [section for section in ENV_SECTIONS.values() if section.__module__.startswith("coasejax.")]
    every = list(keys(Config()))
    every += [k for section in own for k in keys(section(), "env.") if k not in every]
    assert len(own) >= 3 and "env.auction" in every and "env.contract_rounds" in every
    missing = [k for k in every if f"`{k}`" not in doc]
    assert not missing, missing


def test_simulate_sweep_writes_table_json_and_plot(tmp_path):
    out = tmp_path / "sw"
    r = cli("simulate", "quickstart", "-q", "--set", "population.n_agents=2000", "--set", "sim.rounds=8",
            "--sweep", "state.pigou_tax=0,0.5", "--sweep", "state.rights=emitter,victim", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [(row["setting"]["state.pigou_tax"], row["setting"]["state.rights"]) for row in rows] == [
        (0, "emitter"), (0, "victim"), (0.5, "emitter"), (0.5, "victim")]
    assert all(row["state_violations"] == 0 for row in rows)
    csv_lines = (out / "sweep.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("state.pigou_tax,state.rights,efficiency")
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("sweep, names", [("population.n_agents=10,20", "sweep.population.n_agents"),
                                          ("state.pigou_tax=0,-1", "state.pigou_tax"),
                                          ("state.pigou_tax=", "--sweep state.pigou_tax")])
def test_bad_sweeps_exit_2_naming_the_key(tmp_path, sweep, names):
    r = cli("simulate", "quickstart", "--sweep", sweep, "--out", str(tmp_path / "x"))
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and names in lines[0] and "Traceback" not in r.stderr
