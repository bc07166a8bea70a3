"""``coasejax bench`` at tiny sizes: it runs, its engine beats the plain-Python reference and agrees with it, and it
reports plausible memory per agent, both on stdout (one JSON line) and in its ``--out`` file."""

import json

from tests.conftest import cli


def test_bench_smoke_reports_speedup_and_bytes_per_agent(tmp_path):
    out = tmp_path / "bench.json"
    r = cli("bench", "--sizes", "4096", "--rounds", "2", "--repeats", "1", "--reference-n", "256", "--out", str(out))
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout.strip().splitlines()[-1])  # the last line of stdout is the result as JSON
    saved = json.loads(out.read_text())
    assert printed == saved
    (row,) = saved["sizes"]
    assert row["n_agents"] == 4096 and row["rounds"] == 2 and row["agent_steps_per_second"] > 0
    ref = saved["reference"]
    assert ref["n_agents"] == 256 and ref["agent_steps_per_second"] > 0
    # the same model: welfare of the engine (float32) and the reference (float64) at N = 256 over 2 rounds agree to
    # float32 rounding of a sum of 512 terms (relative ~1e-6)
    assert ref["welfare_rel_diff"] < 1e-5
    # vectorised engine at N = 4096 against a per-agent Python loop: any working engine is many times faster (the
    # figure is a ratio of two measured rates on the same machine, so a loaded CI machine slows both)
    assert saved["speedup_vs_reference"] > 1
    assert saved["speedup_vs_reference"] == row["agent_steps_per_second"] / ref["agent_steps_per_second"]
    # persistent state: at least a, c and wealth (f32) and the provider id (i32), 16 bytes per agent, plus a few
    # scalars; the ring graph stores nothing. Peak adds the buffers of a running chunk: more than the state, and far
    # below 10 kB per agent for a k = 4 round
    assert 16 <= row["state_bytes_per_agent"] <= 64
    assert row["state_bytes_per_agent"] <= row["peak_bytes_per_agent"] < 10_000
