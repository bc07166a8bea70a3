"""Multi-controller runs (jax.distributed, gloo CPU collectives): 2 local processes × 2 forced host devices give the
summary of 1 process × 1 device, for ``simulate`` (agents sharded over the 4-device global mesh) and for ES training
(coase_es), whose checkpoint, written by the 2 processes, restores in 1 process (and the other way round); only
process 0 writes into ``--out``.

The 1-process references run in this process (:func:`tests.conftest.run_cli`); the 2-process side is one launch of
``scripts/launch_local.sh 2`` running the three commands one after the other in each process, so the processes start
and join once. If this jaxlib cannot compute across processes (no gloo), the launch fails and so does the test: it
never skips."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from coasejax import checkpoint as ckpt
from coasejax import distributed
from coasejax.config import ConfigError
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
SIM = ["population.n_agents=4096", "sim.rounds=4", "sim.envs=2", "state.enforcement=0.9", "population.drift=0.05",
       "state.transaction_costs.per_deal=0.05"]
TRAIN = ["population.n_agents=4096", "train.iterations=4", "train.log_every=2", "checkpoint.every=2",
         "train.eval_grid=8"]
#: what depends on the machine or the launch, not on the computation
UNCOMPARED = {"seconds", "compile_seconds", "agent_steps_per_second", "train_seconds", "seconds_per_iteration",
              "devices", "processes", "config", "run_dir"}

#: each launched process runs these commands in turn through the real entry point; before ``eval`` of a run it
#: waits for that run's summary.json (the 1-process reference trains in the test's own process meanwhile)
DRIVER = """
import json, pathlib, sys, time
from coasejax.cli import main
for argv in json.loads(sys.argv[1]):
    if argv[0] == "eval":
        marker, t0 = pathlib.Path(argv[1], "summary.json"), time.time()
        while not marker.exists() and time.time() - t0 < 300:
            time.sleep(0.2)
    sys.argv = ["coasejax", *argv]
    try:
        main()
    except SystemExit as e:
        if e.code:
            raise
"""

def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def close(a, b, path=""):
    """The paths where two JSON trees differ: numbers beyond relative 1e-5 (absolute 1e-3 near 0), or structure."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) if k not in UNCOMPARED
                for d in (close(a.get(k), b.get(k), f"{path}.{k}") if k in a and k in b else [f"{path}.{k} missing"])]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in close(x, y, f"{path}[{i}]")]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return [] if math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-3) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def files(folder: Path) -> list[str]:
    """Every file under ``folder`` (relative), except inside the checkpoints (Orbax's multi-host format adds a part
    per process there), TensorBoard event files counted, not named (their names hold the host, the process id and
    the time)."""
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    events = [n for n in names if n.startswith("tb/")]
    return [n for n in names if not n.startswith(("tb/", "checkpoints/"))] + [f"tb/<{len(events)} event file(s)>"]


def test_two_processes_match_one_process_and_only_process_0_writes(tmp_path):
    one_sim, one_train = tmp_path / "one_sim", tmp_path / "one_train"
    two_sim, two_train = tmp_path / "two_sim", tmp_path / "two_train"
    # 2 processes × 2 devices: simulate, train, and eval of the 1-process checkpoint (restored by 2 processes)
    commands = [["simulate", "quickstart", *sets(SIM), "--out", str(two_sim), "-q"],
                ["train", "coase_es", *sets(TRAIN), "--out", str(two_train), "-q"],
                ["eval", str(one_train)]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COASEJAX_")}
    env.update(DEVICES="2", LOG_DIR=str(tmp_path / "logs"), JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    launch = subprocess.Popen([str(ROOT / "scripts" / "launch_local.sh"), "2", sys.executable, "-c", DRIVER,
                               json.dumps(commands)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        # meanwhile 1 process, 1 device (sim.shard=false: one device even where this pytest forces several)
        r = run_cli("train", "coase_es", *sets(TRAIN), "--out", one_train, "-q")
        assert r.code == 0, r.stderr
        r = run_cli("simulate", "quickstart", *sets([*SIM, "sim.shard=false"]), "--out", one_sim, "-q")
        assert r.code == 0, r.stderr
        _, err = launch.communicate(timeout=600)
    finally:
        if launch.poll() is None:
            launch.kill()
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((tmp_path / "logs").glob("*")))
    assert launch.returncode == 0, err + logs  # no gloo, no coordinator: fails here, loudly

    # simulate: the same summary, the agents sharded over 4 devices of 2 processes
    a, b = (json.loads((d / "summary.json").read_text()) for d in (one_sim, two_sim))
    assert a["devices"] == 1 and b["devices"] == 4 and b["processes"] == 2, (a["devices"], b.get("processes"))
    assert close(a, b) == []

    # ES training: the same summary, log and checkpoints
    a, b = (json.loads((d / "summary.json").read_text()) for d in (one_train, two_train))
    assert b["processes"] == 2 and a["checkpoint_steps"] == b["checkpoint_steps"] == [2, 4]
    assert close(a, b) == []
    rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (one_train,
                                                                                                     two_train)]
    assert [r["step"] for r in rows[1]] == [2, 4] and close(rows[0], rows[1]) == []  # one line per step, not two
    for step in (2, 4):
        states = []
        for d in (one_train, two_train):
            with ckpt.manager(d / "checkpoints", read_only=True) as mngr:
                assert ckpt.verify(mngr, step) is None  # the manifest process 0 wrote matches every file
                states.append([np.asarray(x) for x in jax.tree.leaves(ckpt.restore_raw(mngr, step))])
        assert len(states[0]) == len(states[1]) and all(
            x.shape == y.shape and np.allclose(x, y, rtol=1e-5, atol=1e-7) for x, y in zip(*states)), step

    # the 2-process checkpoint restored by 1 process, beside the 1-process checkpoint restored by 2 processes
    r = run_cli("eval", two_train)
    assert r.code == 0, r.stderr
    a, b = (json.loads((d / "eval.json").read_text()) for d in (two_train, one_train))
    assert a["step"] == b["step"] == 4 and close(a, b) == []

    # only process 0 wrote: the same files as the 1-process runs, none twice or left half-written
    assert files(two_sim) == files(one_sim)
    assert files(two_train) == files(one_train)
    for step in (2, 4):  # the checkpoint's items (its arrays, restored equal above, are in Orbax's per-process parts)
        single, multi = ([n for n in files(d / "checkpoints" / str(step)) if not n.startswith("state/")]
                         for d in (one_train, two_train))
        assert single == multi, (single, multi)
    assert not [p for p in tmp_path.rglob(".*.tmp") if p.is_file()]
    other = (tmp_path / "logs" / "process_1.err").read_text()
    assert "error" not in other.lower() and "Traceback" not in other, other


@pytest.mark.parametrize("env,names", [
    ({"COASEJAX_COORDINATOR": "localhost", "COASEJAX_NUM_PROCESSES": "2", "COASEJAX_PROCESS_ID": "0"},
     "COASEJAX_COORDINATOR='localhost': expected HOST:PORT"),
    ({"COASEJAX_COORDINATOR": "127.0.0.1:1234", "COASEJAX_NUM_PROCESSES": "2"}, "COASEJAX_PROCESS_ID: not set"),
    ({"COASEJAX_COORDINATOR": "127.0.0.1:1234", "COASEJAX_NUM_PROCESSES": "two", "COASEJAX_PROCESS_ID": "0"},
     "COASEJAX_NUM_PROCESSES='two': expected a whole number"),
    ({"COASEJAX_COORDINATOR": "127.0.0.1:1234", "COASEJAX_NUM_PROCESSES": "2", "COASEJAX_PROCESS_ID": "2"},
     "COASEJAX_PROCESS_ID='2': expected a whole number from 0 to 1"),
    ({"COASEJAX_DISTRIBUTED": "yes"}, "COASEJAX_DISTRIBUTED='yes': expected auto"),
    ({"COASEJAX_DISTRIBUTED": "auto", "COASEJAX_COORDINATOR": "127.0.0.1:1234"}, "not both"),
    ({"COASEJAX_INIT_TIMEOUT": "0", "COASEJAX_DISTRIBUTED": "auto"}, "COASEJAX_INIT_TIMEOUT='0'"),
])
def test_a_wrong_coordinator_setting_names_the_variable(env, names):
    with pytest.raises(ConfigError, match=names.replace("(", r"\(")):
        distributed.settings(env)


def test_settings_of_one_process_and_of_a_launch():
    assert distributed.settings({}) is None and distributed.settings({"COASEJAX_DISTRIBUTED": "off"}) is None
    assert distributed.settings({"COASEJAX_COORDINATOR": "h:1", "COASEJAX_NUM_PROCESSES": "1",
                                 "COASEJAX_PROCESS_ID": "0"}) is None  # one process: nothing to join
    assert distributed.settings({"COASEJAX_COORDINATOR": "10.0.0.1:29500", "COASEJAX_NUM_PROCESSES": "4",
                                 "COASEJAX_PROCESS_ID": "3"}) == {
        "coordinator_address": "10.0.0.1:29500", "num_processes": 4, "process_id": 3, "initialization_timeout": 300}
    assert distributed.settings({"COASEJAX_DISTRIBUTED": "auto"}) == {"auto": True, "initialization_timeout": 300}


def test_the_command_line_refuses_a_wrong_coordinator_setting_in_one_line_with_exit_2():
    env = {**os.environ, "COASEJAX_COORDINATOR": "127.0.0.1:99999", "COASEJAX_NUM_PROCESSES": "2",
           "COASEJAX_PROCESS_ID": "1"}
    run = subprocess.run([sys.executable, "-m", "coasejax.cli", "simulate", "quickstart", "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: COASEJAX_COORDINATOR='127.0.0.1:99999'"), run.stderr


def test_a_coordinator_that_does_not_answer_is_one_line_and_exit_3():
    """Process 1 of 2 with no process 0 serving the coordinator: one line after COASEJAX_INIT_TIMEOUT, exit 3 (an
    environment fault), not JAX's abort with a stack trace."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "COASEJAX_COORDINATOR": f"127.0.0.1:{port}", "COASEJAX_NUM_PROCESSES": "2",
           "COASEJAX_PROCESS_ID": "1", "COASEJAX_INIT_TIMEOUT": "1", "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, "-m", "coasejax.cli", "simulate", "quickstart", "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 3, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no coordinator answered" in lines[0] and f"127.0.0.1:{port}" in lines[0], run.stderr
