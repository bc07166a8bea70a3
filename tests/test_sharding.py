"""The agent axis sharded over 4 forced host devices gives the same summary as 1 device."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import xla_flags

SCRIPT = """
import json, sys, jax
from coasejax.config import load_config
from coasejax.simulate import simulate
cfg = load_config(None, sys.argv[1:])
s = simulate(cfg)
print(json.dumps({"devices": s["devices"], "n_dev": len(jax.devices()), **{k: s[k] for k in KEYS}}))
"""
KEYS = ["welfare", "first_best_welfare", "status_quo_welfare", "transfers", "transaction_costs_paid",
        "deal_rate", "mean_activity", "mechanism_net", "wealth_change"]


def run_with_devices(n_devices: int, overrides: list[str]) -> dict:
    env = dict(os.environ, XLA_FLAGS=xla_flags(f"--xla_force_host_platform_device_count={n_devices}"), JAX_PLATFORMS="cpu")
    code = f"KEYS = {KEYS!r}\n" + SCRIPT
    out = subprocess.run([sys.executable, "-c", code, *overrides], env=env, capture_output=True, text=True,
                         timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("graph,mech", [("ring", "nash"), ("torus", "clarke"), ("small_world", "alternating")])
def test_four_devices_match_one_device(graph, mech):
    overrides = ["population.n_agents=4096", "sim.rounds=4", "sim.envs=2", f"population.graph={graph}",
                 f"mechanism.kind={mech}", "state.enforcement=0.9", "population.drift=0.05",
                 "state.transaction_costs.per_deal=0.05"]
    one = run_with_devices(1, overrides)
    four = run_with_devices(4, overrides)
    assert one["devices"] == 1 and four["devices"] == 4 and four["n_dev"] == 4
    for key in KEYS:
        assert four[key] == pytest.approx(one[key], rel=1e-5, abs=1e-3), key


@pytest.mark.parametrize("overrides,names", [
    (["population.n_agents=4098"], "population.n_agents=4098 does not divide over the 4 devices"),
    (["population.n_agents=4100", "population.graph=torus"], "the torus has 50 rows"),
])
def test_agents_that_do_not_divide_over_the_devices_are_refused_in_one_line(overrides, names):
    """With 4 devices, an N (or a torus's row count) that does not divide by 4 is refused with exit code 2 and one
    line naming population.n_agents, never run silently on one device; sim.shard=false runs it on one."""
    env = dict(os.environ, XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=4"), JAX_PLATFORMS="cpu")
    args = [sys.executable, "-m", "coasejax.cli", "simulate", "quickstart", "--set", "sim.rounds=2",
            "--set", "sim.envs=1", *[a for o in overrides for a in ("--set", o)]]
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and names in errors[0] and out.stderr.strip().endswith(errors[0]), out.stderr
    assert "Traceback" not in out.stderr
    if "population.graph=torus" not in overrides:  # (one case suffices for the way out)
        one = run_with_devices(4, [*overrides, "sim.shard=false", "sim.rounds=2", "sim.envs=1"])
        assert one["devices"] == 1 and one["n_dev"] == 4
