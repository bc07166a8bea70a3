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
from tests.conftest import cli, run_cli, xla_flags

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
    r = run_cli("train", "auction_first_price", *sets, "--out", str(full), "-q")  # in this process
    assert r.code == 0, r.stderr

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

    r = run_cli("train", "auction_first_price", *sets, "--out", str(killed), "--resume", "-q")
    assert r.code == 0, r.stderr
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


def _perturbed(states, seed: int):
    """``states`` with every float leaf moved by fresh normal noise and the step set to 123 (so a restore that quietly
    returns its template, or the initial values, cannot pass)."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)

    def move(x):
        x = np.asarray(x)
        return jnp.asarray(x + rng.normal(size=x.shape).astype(x.dtype)) if x.dtype.kind == "f" else jnp.asarray(x)

    return states._replace(**{k: jax.tree.map(move, v) for k, v in states._asdict().items() if k != "step"},
                           step=jnp.full_like(states.step, 123))


def test_checkpoint_holds_params_optimiser_rng_step_and_config(tmp_path):
    import jax
    from coasejax.train.run import Trainer, make_algo, resolved, train

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
    assert saved == resolved(cfg)

    # save and restore: every leaf comes back equal, in structure, dtype and value; config and metadata too
    template = Trainer(cfg, make_algo(cfg)).algo.init_states()
    states = _perturbed(template, seed=0)
    config, meta = resolved(cfg), ckpt.metadata(cfg, resolved(cfg))
    rt = ckpt.manager(tmp_path / "roundtrip")
    ckpt.save(rt, 7, states, config, {"bne_rmse": 0.5}, meta)
    back = ckpt.restore(ckpt.manager(tmp_path / "roundtrip", read_only=True), 7, template)
    assert type(back) is type(states)
    want, got = jax.tree.leaves(states), jax.tree.leaves(back)
    assert jax.tree.structure(back) == jax.tree.structure(states) and len(want) == len(got) > 3
    for a, b in zip(want, got):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not all(np.array_equal(np.asarray(a), np.asarray(t)) for a, t in zip(want, jax.tree.leaves(template)))
    assert ckpt.saved_config(rt, 7) == config and ckpt.saved_meta(rt, 7) == meta


#: ``python -c DEVICES RESTORE_DIR SAVE_DIR`` (either may be "-"): under however many (forced host) devices the process
#: has, restore another process's checkpoint onto a template replicated over this process's devices and check it
#: against the saved values; then put a perturbed training state replicated over all of them and save it
DEVICES = """
import sys
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from pathlib import Path
from coasejax import checkpoint as ckpt
from coasejax.config import load_config
from coasejax.train.run import Trainer, make_algo, resolved
from tests.test_checkpoint import SMALL, _perturbed
restore_dir, save_dir = sys.argv[1], sys.argv[2]
cfg = load_config("auction_double", SMALL)
everywhere = NamedSharding(Mesh(np.asarray(jax.devices()), ("d",)), PartitionSpec())
template = jax.device_put(Trainer(cfg, make_algo(cfg)).algo.init_states(), everywhere)
if restore_dir != "-":
    out = Path(restore_dir)
    back = ckpt.restore(ckpt.manager(out / "checkpoints", read_only=True), 7, template)
    saved = np.load(out / "leaves.npz")
    leaves = jax.tree.leaves(back)
    assert len(leaves) == len(saved.files)
    for i, x in enumerate(leaves):
        assert len(x.sharding.device_set) == len(jax.devices()), x.sharding
        np.testing.assert_array_equal(np.asarray(x), saved[f"arr_{i}"])
if save_dir != "-":
    out = Path(save_dir)
    states = jax.device_put(_perturbed(template, seed=len(jax.devices())), everywhere)
    ckpt.save(ckpt.manager(out / "checkpoints"), 7, states, resolved(cfg))
    np.savez(out / "leaves.npz", *[np.asarray(x) for x in jax.tree.leaves(states)])
print("devices", len(jax.devices()))
"""


def test_a_checkpoint_restores_onto_another_number_of_devices(tmp_path):
    """Saved under 1 device and restored under 4 forced host devices, and the other way round: every leaf equal to
    what was saved, placed on the restoring process's devices."""
    root = Path(__file__).resolve().parents[1]

    def under(devices: int, *args):
        env = {**os.environ, "XLA_FLAGS": xla_flags(f"--xla_force_host_platform_device_count={devices}"),
               "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(root)}
        r = subprocess.run([sys.executable, "-c", DEVICES, *args], capture_output=True, text=True, env=env,
                           cwd=root, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.split()[-1] == str(devices), r.stdout

    one_to_four, four_to_one = tmp_path / "1to4", tmp_path / "4to1"
    one_to_four.mkdir()
    four_to_one.mkdir()
    under(1, "-", str(one_to_four))  # save under 1 device
    under(4, str(one_to_four), str(four_to_one))  # restore under 4, save under 4
    under(1, str(four_to_one), "-")  # restore under 1
