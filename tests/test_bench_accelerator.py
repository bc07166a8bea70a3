"""``scripts/bench_accelerator.sh`` in its reduced mode (automatic on the CPU backend), end to end, so the accelerator
benchmark cannot rot before a GPU is lent: every item measured (the multi-device one skipped, with its reason, on one
device), the layers' ratio a positive finite number, both files written, one table row per item; bad input is one
line and exit code 2."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_accelerator.sh"
ITEMS = {"engine", "layers", "es", "learned", "ppo", "multi_device"}


def bench(*args, **env):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def test_reduced_mode_runs_end_to_end_and_writes_json_and_table(tmp_path):
    r = bench("--reduced", "--out", str(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads((tmp_path / "bench_accelerator.json").read_text())
    assert result["mode"] == "reduced"
    items = result["items"]
    assert {i["item"] for i in items} == ITEMS
    for item in items:
        assert {"backend", "device_kind", "device_count", "n_agents", "seconds"} <= item.keys(), item
        if item["item"] == "multi_device" and item["device_count"] < 2:
            assert item["skipped"], item  # one device: a recorded reason instead of a figure
            continue
        assert not item.get("skipped") and not item.get("error"), item
        rate = item["agent_steps_per_second"]
        assert math.isfinite(rate) and rate > 0, item
        assert item["n_agents"] > 0 and item["seconds"] > 0
    (layers,) = [i for i in items if i["item"] == "layers"]
    (engine,) = [i for i in items if i["item"] == "engine"]
    assert layers["n_agents"] == engine["n_agents"]
    assert math.isfinite(layers["ratio_to_engine"]) and layers["ratio_to_engine"] > 0
    assert layers["ratio_to_engine"] == pytest.approx(layers["ms_per_round"] / engine["ms_per_round"])
    assert result["layers_ratio"] == {str(engine["n_agents"]): layers["ratio_to_engine"]}
    # the markdown: a header line naming machine, commit and date, then a table with one row per item
    md = (tmp_path / "bench_accelerator.md").read_text().splitlines()
    assert "commit" in md[0] and result["date"] in md[0] and result["machine"]["device_kind"] in md[0]
    table = [ln for ln in md if ln.startswith("|")]
    assert len(table) == 2 + len(items)  # header, rule, one row per item
    assert all(ln.count("|") == table[0].count("|") for ln in table)


@pytest.mark.parametrize("args, names", [(["--no-such-flag"], "--no-such-flag"),
                                         (["--out", "/proc/no/such/dir"], "--out /proc/no/such/dir")])
def test_bad_input_is_one_line_and_exit_2(args, names):
    r = bench(*args)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and names in lines[0], r.stderr
