"""Orbax checkpoints: contents, retention, exact resumption after SIGKILL, and one-line errors on mismatch."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from coasejax import checkpoint as ckpt
from coasejax.config import load_config
from tests.conftest import cli

SMALL = ["train.iterations=300", "train.log_every=25", "checkpoint.every=50", "checkpoint.keep=2",
         "train.population=64", "train.batch=256", "train.opponents=4096", "train.eval_values=256",
         "train.eval_opponents=4096", "train.eval_grid=64"]




def final_state(run: Path):
    """The latest checkpoint's state as numpy leaves (restored without a template)."""
    import orbax.checkpoint as ocp

    mngr = ckpt.manager(run / "checkpoints", read_only=True)
    step = mngr.latest_step()
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    import jax

    return step, [np.asarray(x) for x in jax.tree.leaves(state)]


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    sets = [a for s in SMALL for a in ("--set", s)]
    full, killed = tmp_path / "full", tmp_path / "killed"
    r = cli("train", "auction_first_price", *sets, "--out", str(full), "-q")
    assert r.returncode == 0, r.stderr

    proc = subprocess.Popen([sys.executable, "-m", "coasejax.cli", "train", "auction_first_price", *sets,
                             "--out", str(killed), "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (killed / "checkpoints" / "100").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps = sorted(int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and max(steps) < 300, steps  # killed mid-run
    assert not (killed / "summary.json").exists()

    r = cli("train", "auction_first_price", *sets, "--out", str(killed), "--resume", "-q")
    assert r.returncode == 0, r.stderr
    step_a, leaves_a = final_state(full)
    step_b, leaves_b = final_state(killed)
    assert step_a == step_b == 300
    assert len(leaves_a) == len(leaves_b)
    for a, b in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(a, b)  # bit-exact on CPU
    s_full = json.loads((full / "summary.json").read_text())
    s_res = json.loads((killed / "summary.json").read_text())
    assert s_res["resumed_from"] >= 100 and s_full["bne_rmse"] == s_res["bne_rmse"]
    # metrics.jsonl has one line per chunk, none duplicated by the resumption
    steps_logged = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps_logged == list(range(25, 301, 25))
    # retention: the latest 2 plus the best
    kept = sorted(int(p.name) for p in (full / "checkpoints").iterdir() if p.name.isdigit())
    assert kept[-2:] == [250, 300] and len(kept) <= 3


def test_resume_with_a_different_config_names_the_keys(tmp_path):
    from coasejax.train.run import train

    cfg = load_config("auction_first_price", [*SMALL, "train.iterations=50"])
    train(cfg, tmp_path)
    sets = [a for s in SMALL for a in ("--set", s)]
    r = cli("train", "auction_first_price", *sets, "--set", "train.iterations=50", "--set", "policy.hidden=[8]",
            "--set", "train.sigma=0.01", "--out", str(tmp_path), "--resume")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "policy.hidden" in r.stderr and "train.sigma" in r.stderr
    # without --resume an existing run is not overwritten
    r = cli("train", "auction_first_price", *sets, "--set", "train.iterations=50", "--out", str(tmp_path))
    assert r.returncode == 2 and "--resume" in r.stderr


def test_checkpoint_holds_params_optimiser_rng_step_and_config(tmp_path):
    from coasejax.train.run import train

    cfg = load_config("auction_double", [*SMALL, "train.iterations=50"])
    train(cfg, tmp_path)
    mngr = ckpt.manager(tmp_path / "checkpoints", read_only=True)
    assert mngr.latest_step() == 50
    import orbax.checkpoint as ocp

    state = mngr.restore(50, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    assert set(state) == {"params", "opt_state", "key", "step"}
    assert int(np.asarray(state["step"]).reshape(-1)[0]) == 50
    saved = ckpt.saved_config(mngr, 50)
    assert saved["env"]["auction"] == "double" and saved["train"]["iterations"] == 50
