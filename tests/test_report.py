"""``coasejax report``: the page and its figures, rendered in headless Chromium."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def figures_in_browser(page: Path) -> tuple[int, int]:
    """(figures the page holds, figures headless Chromium loaded), read back from the rendered DOM."""
    dom = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    total = int(re.search(r'data-figures-total="(\d+)"', body.group(0)).group(1))
    loaded = int(re.search(r'data-figures-loaded="(\d+)"', body.group(0)).group(1))
    return total, loaded


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "lindahl"
    r = run_cli("simulate", "coase", "-q", "--out", str(out), "--set", "population.n_agents=4000", "--set", "sim.rounds=6",
            "--set", "state.rights=emitter", "--set", "mechanism.kind=lindahl", "--set",
            "advocates.strategy=best_response", "--set", "sim.coalitions=true")
    assert r.code == 0, r.stderr
    r = run_cli("report", str(out), "-q")
    assert r.code == 0, r.stderr
    return out


def test_report_of_a_simulation_has_every_figure_its_data_allow(sim_run):
    page = (sim_run / "report.html").read_text()
    figs = sorted(p.name for p in (sim_run / "report_figures").glob("*.png"))
    assert figs == ["coalitions.png", "free_riding.png", "layers.png", "lorenz.png", "rounds.png"]
    assert all(f'src="report_figures/{f}"' in page for f in figs)
    assert 'data-figures-total="5"' in page
    summary = json.loads((sim_run / "summary.json").read_text())
    lorenz = summary["wealth_lorenz"]
    assert lorenz[0] == 0.0 and lorenz[-1] == pytest.approx(1.0) and all(b >= a for a, b in zip(lorenz, lorenz[1:]))
    assert f"{summary['free_rider_share']:.4g}" in page


@pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine (.ci/run installs Debian's chromium)")
def test_report_opens_in_headless_chromium_with_every_figure_loaded(sim_run, tmp_path):
    assert figures_in_browser(sim_run / "report.html") == (5, 5)
    # the check can fail: a page whose figure is missing loads one fewer
    broken = tmp_path / "broken"
    shutil.copytree(sim_run, broken)
    (broken / "report_figures" / "lorenz.png").unlink()
    assert figures_in_browser(broken / "report.html") == (5, 4)


def test_report_of_a_cost_sweep_draws_efficiency_against_cost(tmp_path):
    out = tmp_path / "sweep"
    r = run_cli("simulate", "coase", "-q", "--out", str(out), "--set", "population.n_agents=2000", "--set", "sim.rounds=3",
            "--set", "mechanism.kind=clarke", "--sweep", "state.transaction_costs.per_party=0,0.001,0.01,0.1",
            "--sweep", "state.rights=emitter,victim")
    assert r.code == 0, r.stderr
    assert run_cli("report", str(out), "-q").code == 0
    assert (out / "report_figures" / "tc_curve.png").exists()
    if BROWSER is not None:
        total, loaded = figures_in_browser(out / "report.html")
        assert total == loaded >= 1


def test_report_of_a_training_run(tmp_path):
    out = tmp_path / "es"
    r = run_cli("train", "coase_es", "-q", "--out", str(out), "--set", "train.iterations=20", "--set", "train.log_every=10")
    assert r.code == 0, r.stderr
    assert run_cli("report", str(out), "-q").code == 0
    figs = {p.name for p in (out / "report_figures").glob("*.png")}
    assert {"training.png", "free_riding.png", "strategy.png"} <= figs


def test_report_of_an_auction_run_shows_the_strategy_and_the_distance_over_training(tmp_path):
    """A first-price run with two seeds: strategy.json holds one learned bid curve per seed and the BNE v/2; the
    evaluations in metrics.jsonl hold each seed's bne_rmse (the band of the distance figure); the report draws the
    strategy and the distance from equilibrium, and no longer draws bne_rmse on the utility axis."""
    out = tmp_path / "fp"
    sets = ["train.iterations=100", "train.log_every=50", "checkpoint.every=50", "train.seeds=2",
            "train.eval_opponents=4096", "train.eval_values=256"]
    r = run_cli("train", "auction_first_price", "-q", "--out", str(out), *[a for x in sets for a in ("--set", x)])
    assert r.code == 0, r.stderr
    (panel,) = json.loads((out / "strategy.json").read_text())["panels"]
    kinds = [(x["kind"], x["seed"]) for x in panel["series"]]
    assert kinds == [("learned", 0), ("learned", 1), ("theory", None)]
    theory = panel["series"][-1]
    assert max(abs(y - x / 2) for x, y in zip(theory["x"], theory["y"])) < 1e-6
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [len(row["per_seed"]["bne_rmse"]) for row in rows] == [2, 2]
    assert run_cli("report", str(out), "-q").code == 0
    figs = {p.name for p in (out / "report_figures").glob("*.png")}
    assert {"strategy.png", "equilibrium.png", "training.png"} <= figs


def test_the_progress_line_fits_80_columns_without_cutting_names():
    """The live metrics take at most LIVE_WIDTH characters and are dropped whole, never cut; with the label, a
    12-cell bar, the count (up to 10⁶/10⁶) and the time the line is at most 80 characters."""
    from coasejax.train.commands import LIVE, LIVE_WIDTH, _fmt

    row = {"bne_rmse": 0.000123456, "utility_loss_rel": -3.1e-05, "utility": 0.1648, "efficiency": 0.99999,
           "train_efficiency": 0.5, "proposer_share": 0.357}
    text = _fmt(row)
    assert len(text) <= LIVE_WIDTH and text.startswith("bne=0.000123 loss=-3.1e-05")
    assert all(item.split("=")[0] in LIVE.values() for item in text.split())
    assert len("train") + 1 + 12 + 1 + len("1000000/1000000") + 1 + len("0:00:00") + 1 + LIVE_WIDTH <= 80


def test_report_refuses_what_is_not_a_run(tmp_path):
    r = run_cli("report", str(tmp_path / "missing"))
    assert r.code == 2 and "not a directory" in r.stderr + r.stdout and "Traceback" not in r.stderr
    r = run_cli("report", str(tmp_path))
    assert r.code == 2 and "not a coasejax run directory" in r.stderr + r.stdout
