"""Orbax checkpoints: contents restored value for value, retention, exact resumption after a SIGKILL that lands
while a checkpoint is being written, restoring across device counts, and one-line errors on mismatch."""

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

#: ``python -c HOLD train ...``: the CLI, with the checkpoint of step $HOLD_STEP held after it is written into its
#: temporary folder and before orbax renames it into place (a marker file says so), so a SIGKILL lands mid-write
HOLD = """
import os, sys, time
import orbax.checkpoint._src.path.atomicity as at
_finalize = at.AtomicRenameTemporaryPath.finalize
async def finalize(self):
    if self.get_final().name == os.environ["HOLD_STEP"]:
        open(os.environ["HOLD_MARKER"], "w").close()
        time.sleep(600)
    return await _finalize(self)
at.AtomicRenameTemporaryPath.finalize = finalize
from coasejax.cli import main
sys.argv = ["coasejax", *sys.argv[1:]]
main()
"""

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


def test_sigkill_while_a_checkpoint_is_written_then_resume_equals_uninterrupted_run(tmp_path):
    """Kill -9 the run while checkpoint 150 sits written but not yet renamed: 50 and 100 stay intact, the partial
    150 is never taken for a checkpoint, and resuming from 100 ends bit-equal to a run never interrupted."""
    sets = [a for s in SMALL for a in ("--set", s)]
    full, killed, marker = tmp_path / "full", tmp_path / "killed", tmp_path / "writing"
    r = cli("train", "auction_first_price", *sets, "--out", str(full), "-q")
    assert r.returncode == 0, r.stderr

    env = {**os.environ, "HOLD_STEP": "150", "HOLD_MARKER": str(marker)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, "train", "auction_first_price", *sets, "--out", str(killed),
                             "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), proc.stderr.read() if proc.poll() is not None else "timed out"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    entries = sorted(p.name for p in (killed / "checkpoints").iterdir())
    assert [e for e in entries if e.isdigit()] == ["100", "50"], entries  # complete ones only
    assert any(e.startswith("150.") and "tmp" in e for e in entries), entries  # killed mid-write of 150
    assert not (killed / "summary.json").exists()

    r = cli("train", "auction_first_price", *sets, "--out", str(killed), "--resume", "-q")
    assert r.returncode == 0, r.stderr
    assert not [p.name for p in (killed / "checkpoints").iterdir() if "tmp" in p.name]  # the partial one is gone
    step_a, leaves_a = final_state(full)
    step_b, leaves_b = final_state(killed)
    assert step_a == step_b == 300
    assert len(leaves_a) == len(leaves_b)
    for a, b in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(a, b)  # bit-exact on CPU
    s_full = json.loads((full / "summary.json").read_text())
    s_res = json.loads((killed / "summary.json").read_text())
    assert s_res["resumed_from"] == 100 and s_full["bne_rmse"] == s_res["bne_rmse"]
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
