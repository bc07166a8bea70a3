"""Validation that cannot be fooled, one error path, atomic outputs (issue 17).

Every case runs the real entry point (``coasejax.cli.main``) in this process, so none pays for a new Python and a
JAX import; runs that would compile use stand-ins for ``build``/``run`` where the numbers do not matter.
"""

from __future__ import annotations

import errno
import json
import math
import sys
import time
from pathlib import Path

import pytest

from coasejax import cliutil
from coasejax.config import ConfigError, load_config
from tests.conftest import run_cli

ENV_FAULT = cliutil.EXIT_ENVIRONMENT




def assert_one_line(r: Result, code: int, *names: str) -> str:
    """Exit ``code``, no traceback, exactly one ``error:`` line on stderr, naming each of ``names``."""
    assert r.code == code, (r.code, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert len(r.lines) == 1 and r.lines[0].startswith("error: "), r.stderr
    for name in names:
        assert name in r.lines[0], (name, r.lines[0])
    return r.lines[0]


def simulate(*args) -> Result:
    return run_cli("simulate", *args)


# ---------------------------------------------------------------------------------------------------------------------
# repeated keys and sections
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,key", [
    ("population:\n  n_agents: 500\nsim:\n  rounds: 3\npopulation:\n  degree: 2\n", "key population (lines 1 and 5)"),
    ("population:\n  n_agents: 500\n  n_agents: 600\n", "key population.n_agents (lines 2 and 3)"),
    ("state:\n  transaction_costs: {per_deal: 1, per_deal: 2}\n", "state.transaction_costs.per_deal"),
    ("sweep:\n  state.pigou_tax: [0, 1]\n  state.pigou_tax: [2]\n", "sweep.state.pigou_tax"),
])
def test_a_repeated_key_or_section_is_refused_naming_the_key_and_the_file(tmp_path, text, key):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    assert_one_line(simulate(path, "--dry-run", "--out", tmp_path / "o"), 2, key, str(path), "given twice")
    assert not (tmp_path / "o").exists()


def test_a_repeated_key_in_a_set_value_is_refused_and_merge_keys_may_be_overridden(tmp_path):
    assert_one_line(simulate("quickstart", "--dry-run", "--set", "population={n_agents: 300, n_agents: 400}"), 2,
                    "--set population", "n_agents", "given twice")
    # a merge (<<: *anchor) brings keys the mapping may override: that is YAML, not a repetition
    path = tmp_path / "merge.yaml"
    path.write_text("population: {<<: {n_agents: 300, degree: 2}, degree: 3}\n")
    cfg = load_config(str(path))
    assert cfg.population.n_agents == 300 and cfg.population.degree == 3


# ---------------------------------------------------------------------------------------------------------------------
# booleans, nan and inf
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override,key", [
    ("sim.rounds=true", "sim.rounds"), ("sim.seed=false", "sim.seed"),
    ("population.n_agents=true", "population.n_agents"),
    ("state.pigou_tax=true", "state.pigou_tax"), ("providers.fee=[true]", "providers.fee"),
    ("population.benefit={kind: constant, value: true}", "population.benefit.value"),
    ("train.iterations=true", "train.iterations"), ("sim.shard=1", "sim.shard"),
    ("policy.win_prob=0", "policy.win_prob"),
])
def test_booleans_are_not_numbers(override, key):
    """``sim.rounds=true`` ran 1 round: a boolean is refused where a number is expected, and a number where a
    boolean is."""
    with pytest.raises(ConfigError) as e:
        load_config("quickstart", [override])
    assert key in str(e.value) and "\n" not in str(e.value)


def test_sim_rounds_true_exits_2_through_the_cli():
    assert_one_line(simulate("quickstart", "--set", "sim.rounds=true"), 2, "sim.rounds", "boolean")


@pytest.mark.parametrize("override,key", [
    ("state.pigou_tax=.inf", "state.pigou_tax"), ("state.pigou_tax=nan", "state.pigou_tax"),
    ("state.enforcement=.nan", "state.enforcement"), ("population.x_max=.inf", "population.x_max"),
    ("providers.fee_flat=[.inf]", "providers.fee_flat"), ("population.wealth=constant:inf", "population.wealth"),
    ("population.benefit=uniform:0:inf", "population.benefit"), ("env.cost_grid=[0, .nan]", "env.cost_grid"),
    ("mechanism.pool_cost=-.inf", "mechanism.pool_cost"), ("train.sigma=.inf", "train.sigma"),
])
def test_nan_and_inf_are_refused_where_a_finite_number_is_needed(override, key):
    extra = ["env.kind=coase_rounds", "train.algo=ppo", "mechanism.kind=alternating",
             "checkpoint.best_metric=efficiency_gap"] if key.startswith("env.") else []
    with pytest.raises(ConfigError) as e:
        load_config("quickstart", [*extra, override])
    assert key in str(e.value) and "\n" not in str(e.value), str(e.value)


# ---------------------------------------------------------------------------------------------------------------------
# graph shapes
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,grid,near", [(7919, "1 × 7919", "7918, 7920"), (8, "2 × 4", "9"),
                                         (1_000_003, "1 × ", "")])
def test_a_torus_whose_n_has_no_grid_is_refused_naming_n_and_what_is_allowed(n, grid, near):
    """A prime N made a 1 × N torus in which every agent was its own victim."""
    r = simulate("quickstart", "--set", "population.graph=torus", "--set", f"population.n_agents={n}")
    line = assert_one_line(r, 2, "population.n_agents", f"N = {n}", grid, "3 ≤ R ≤ L")
    assert near in line


def test_torus_sizes_that_factor_are_accepted_and_built_with_distinct_neighbours():
    from coasejax.graphs import make_graph

    for n, k in ((9, 8), (7917, 4), (7920, 8)):
        cfg = load_config(None, ["population.graph=torus", f"population.n_agents={n}", f"population.degree={k}"])
        nbr = make_graph("torus", cfg.population.n_agents, k, 0).neighbours()
        assert all(len(set(row)) == k and i not in row for i, row in enumerate(nbr.tolist()))
    with pytest.raises(ValueError, match="population.n_agents"):
        make_graph("torus", 7919, 4, 0)  # the graph refuses it too, not only the config


@pytest.mark.parametrize("graph", ["ring", "torus", "random", "small_world"])
def test_degree_at_least_n_is_refused_for_every_graph(graph):
    r = simulate("quickstart", "--set", f"population.graph={graph}", "--set", "population.n_agents=4",
                 "--set", "population.degree=4")
    assert_one_line(r, 2, "population.degree", "smaller than population.n_agents")


# ---------------------------------------------------------------------------------------------------------------------
# sizes too large for memory
# ---------------------------------------------------------------------------------------------------------------------


def test_n_2_31_minus_1_fails_fast_with_an_estimate_of_the_bytes(tmp_path):
    """N = 2³¹ − 1 aborted inside XLA; now it is one line with the estimate, before anything is built."""
    t0 = time.perf_counter()
    line = assert_one_line(simulate("quickstart", "--set", f"population.n_agents={2**31 - 1}", "--set", "sim.envs=1",
                                    "--out", tmp_path / "o"), 2, "population.n_agents", "2,147,483,647", " GB")
    assert time.perf_counter() - t0 < 5 and "need at least 189.0 GB" in line
    assert not (tmp_path / "o").exists()
    line = assert_one_line(run_cli("train", "coase_es", "--set", f"population.n_agents={2**31 - 1}",
                                   "--out", tmp_path / "t"), 2, "population.n_agents", " GB")
    assert "need at least 189.0 GB" in line and not (tmp_path / "t").exists()


def test_the_memory_estimate_scales_with_envs_and_sweeps(monkeypatch):
    monkeypatch.setattr(cliutil, "memory_available", lambda shard=True: (10**9, "host memory"))
    small = load_config(None, ["population.n_agents=1000000", "sim.envs=1"])
    cliutil.check_memory(small)  # 88 MB fits in 1 GB
    for overrides in (["sim.envs=12"], ["population.graph=small_world", "sim.envs=7"]):
        cfg = load_config(None, ["population.n_agents=1000000", *overrides])
        with pytest.raises(ConfigError, match="more than the 1.0 GB of host memory"):
            cliutil.check_memory(cfg)
    r = simulate("quickstart", "--dry-run", "--set", "population.n_agents=1000000", "--set", "sim.envs=1",
                 "--sweep", "state.pigou_tax=" + ",".join(str(i) for i in range(12)))
    assert_one_line(r, 2, "the sweep settings", "need at least 1.1 GB")


def test_the_memory_available_is_the_accelerators_when_there_are_some(monkeypatch):
    import jax

    class Device:
        platform = "gpu"

        def memory_stats(self):
            return {"bytes_limit": 80 * 10**9}

    monkeypatch.setattr(jax, "local_devices", lambda: [Device(), Device()])
    assert cliutil.memory_available(shard=True) == (160 * 10**9, "2 gpu device(s)")
    assert cliutil.memory_available(shard=False) == (80 * 10**9, "1 gpu device(s)")
    cfg = load_config(None, ["population.n_agents=1000000000", "sim.shard=false"])  # 88 GB on one 80 GB device
    with pytest.raises(ConfigError, match="88.0 GB .* more than the 80.0 GB of 1 gpu device"):
        cliutil.check_memory(cfg)
    cliutil.check_memory(cfg.model_copy(update={"sim": cfg.sim.model_copy(update={"shard": True})}))


def test_the_exit_codes_are_documented():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()
    assert "`2` bad input" in doc and f"`{ENV_FAULT}` an environment fault" in doc and "`1` an internal error" in doc


def test_bench_refuses_sizes_that_cannot_run():
    assert_one_line(run_cli("bench", "--sizes", "inf"), 2, "--sizes")
    assert_one_line(run_cli("bench", "--sizes", "1e4,3e9"), 2, "--sizes", "population.n_agents")
    assert_one_line(run_cli("bench", "--sizes", "1e4,2147483647"), 2, "--sizes", "GB")


# ---------------------------------------------------------------------------------------------------------------------
# one error printer: markup escaped, binary files, environment faults, internal errors
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["[/]", "[red]", "[bold red]x[/bold red]", "[/red]", "[blink]y[/blink]",
                                  "[link https://x]y[/link]"])
def test_markup_in_a_key_or_value_prints_literally(text):
    line = assert_one_line(simulate("quickstart", "--set", f"population.n{text}=1"), 2, "unknown key")
    assert f"population.n{text}" in line
    line = assert_one_line(simulate("quickstart", "--set", f"population.graph=a{text}"), 2, "population.graph")
    assert f"a{text}" in line


@pytest.mark.parametrize("value", ["!!timestamp", "!!timestamp x", "!!int x", "!!float []", "!!binary 1"])
def test_a_typed_yaml_tag_that_cannot_construct_its_value_is_one_line(tmp_path, value):
    """PyYAML's constructors fail on a tag whose scalar they cannot read; `!!timestamp` with no date raised an
    AttributeError that reached the internal-error path (exit 1; found by the fuzz suite)."""
    path = tmp_path / "tagged.yaml"
    path.write_text(f"population:\n  n_agents: 100\nadvocates: {value}\n")
    assert_one_line(simulate(path), 2, str(path))


def test_markup_in_a_path_prints_literally(tmp_path):
    (tmp_path / "[").mkdir()
    path = tmp_path / "[" / "]bad [red]x.yaml"  # the path's text holds both `[/]` and `[red]`
    assert "[/]" in str(path)
    assert_one_line(simulate(path), 2, str(path), "not found")
    path.write_text("population: [1, 2\n")
    assert_one_line(simulate(path), 2, str(path), "malformed YAML")


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", bytes(range(256)), b"population:\x00\n",
                                     "population: {n_agents: 100}\n".encode("utf-16"), b"\xff\xfe\x00",
                                     "population: {n_agents: 'caf\u00e9'}".encode("latin-1")])
def test_a_binary_config_file_is_one_line_exit_2(tmp_path, content):
    path = tmp_path / "binary.yaml"
    path.write_bytes(content)
    assert_one_line(simulate(path, "--out", tmp_path / "o"), 2, str(path))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", ["\udcff", "\x00", "\x1b[31m", "a\x07b"])
def test_unprintable_characters_in_a_set_value_are_one_line(value):
    """The YAML reader refuses them (found by the fuzz tests): the text is taken as a string, refused by the key."""
    assert_one_line(simulate("quickstart", "--dry-run", "--set", f"population.graph={value}"), 2, "population.graph")


def _raise(exc):
    def f(*a, **k):
        raise exc
    return f


def test_a_read_only_out_is_one_line_with_the_environment_code_before_anything_runs(tmp_path, monkeypatch):
    """``--out`` on a read-only disk: exit 3 (documented in docs/config.md), one line, checked before the run."""
    built = []
    monkeypatch.setattr("coasejax.simulate.build", lambda cfg: built.append(cfg))
    monkeypatch.setattr(cliutil.tempfile, "TemporaryFile", _raise(OSError(errno.EROFS, "Read-only file system")))
    assert_one_line(simulate("quickstart", "-q", "--out", tmp_path / "ro"), ENV_FAULT, str(tmp_path / "ro"),
                    "Read-only file system")
    assert not built
    # an --out under a regular file cannot be created
    (tmp_path / "file").write_text("x")
    monkeypatch.undo()
    assert_one_line(simulate("quickstart", "-q", "--dry-run", "--out", tmp_path / "file"), 2, "not a directory")
    assert_one_line(simulate("quickstart", "-q", "--out", tmp_path / "file" / "sub"), ENV_FAULT, "cannot write")


def fake_summary(**extra) -> dict:
    return {"n_agents": 64, "rounds": 2, "welfare": 1.0, "efficiency": 0.5, "devices": 1, "backend": "cpu", **extra}


@pytest.fixture
def fake_run(monkeypatch):
    """``build``/``run`` stand-ins: the CLI's output handling without compiling; ``fake_run(summary)`` sets what the
    next run returns (an exception is raised)."""
    box = {"summary": fake_summary()}

    def run(sim, on_chunk=None):
        s = box["summary"]
        if isinstance(s, BaseException):
            raise s
        return dict(s)

    monkeypatch.setattr("coasejax.simulate.build", lambda cfg: object())
    monkeypatch.setattr("coasejax.simulate.run", run)
    return lambda s: box.update(summary=s)


def test_a_full_disk_is_one_line_exit_3_and_leaves_the_previous_run_whole(tmp_path, monkeypatch, fake_run):
    out = tmp_path / "run"
    assert simulate("quickstart", "-q", "--set", "sim.rounds=2", "--out", out).code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fake_run(fake_summary(welfare=2.0))

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cliutil.os, "fsync", full)
    line = assert_one_line(simulate("quickstart", "-q", "--set", "sim.rounds=3", "--out", out), ENV_FAULT,
                           "No space left on device")
    assert str(out) in line
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    # the new run wrote nothing whole: the old marker went first, so what is left is the old config alone, never the
    # old summary beside a new config; no temporary files
    assert set(after) <= set(before) and "summary.json" not in after, sorted(after)
    assert all(after[name] == before[name] for name in after)


def test_an_internal_error_is_one_line_exit_1(monkeypatch, tmp_path):
    monkeypatch.setattr("coasejax.simulate.build", _raise(TypeError("a bug [/] here")))
    assert_one_line(simulate("quickstart", "-q", "--out", tmp_path / "o"), 1, "internal error", "TypeError",
                    "a bug [/] here", "COASEJAX_TRACEBACK=1")


def test_a_checkpoint_error_that_reaches_main_is_bad_input(monkeypatch, tmp_path):
    from coasejax.checkpoint import CheckpointError

    monkeypatch.setattr("coasejax.simulate.build", _raise(CheckpointError("checkpoint 5 [/] is from another scenario")))
    assert_one_line(simulate("quickstart", "-q", "--out", tmp_path / "o"), 2, "checkpoint 5 [/] is from another")


def test_a_device_out_of_memory_is_exit_3(monkeypatch, tmp_path):
    """The class JAX 0.10 and later really raise (a genuine allocation failure: tests/test_error_paths.py)."""
    import jax

    oom = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 4000000000 bytes.\nmore")
    monkeypatch.setattr("coasejax.simulate.build", _raise(oom))
    assert_one_line(simulate("quickstart", "-q", "--out", tmp_path / "o"), ENV_FAULT, "out of device memory",
                    "could not allocate 4.0 GB")


# ---------------------------------------------------------------------------------------------------------------------
# atomic outputs: never files of two runs
# ---------------------------------------------------------------------------------------------------------------------


def test_a_failing_run_leaves_the_previous_run_untouched(tmp_path, fake_run):
    """simulate wrote config.yaml before it ran: a failing run left the new config beside the old summary."""
    out = tmp_path / "run"
    assert simulate("quickstart", "-q", "--set", "sim.rounds=2", "--out", out).code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"config.yaml", "summary.json"}
    fake_run(ConfigError("welfare went non-finite in round 3"))
    assert_one_line(simulate("quickstart", "-q", "--set", "sim.rounds=5", "--out", out), 2, "round 3")
    fake_run(KeyboardInterrupt())  # a kill (Ctrl-C) mid-run
    assert simulate("quickstart", "-q", "--set", "sim.rounds=6", "--out", out).code != 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_non_finite_summary_is_never_written(tmp_path, fake_run):
    out = tmp_path / "run"
    for bad in (math.nan, math.inf, -math.inf):
        fake_run(fake_summary(per_round={"welfare": [1.0, bad]}))
        assert_one_line(simulate("quickstart", "-q", "--out", out), 2, "summary.json", "per_round.welfare[1]",
                        "not a finite number")
        assert not (out / "summary.json").exists() and not (out / "config.yaml").exists()


def test_a_kill_at_any_write_leaves_one_run_whole_or_the_new_run_without_its_marker(tmp_path, monkeypatch, fake_run):
    """Kill the commit of a new run at each of its writes in turn: the directory holds the old run whole, or files of
    the new run without its marker (summary.json), never the old summary beside the new config."""
    out = tmp_path / "run"
    assert simulate("quickstart", "-q", "--set", "sim.rounds=2", "--out", out).code == 0
    (out / "report.html").write_text("old report")  # a report of the old run is stale once a new run commits
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    write = cliutil.write_atomic
    for kill_at in range(3):
        calls = []

        def dying(path, text):
            if len(calls) == kill_at:
                raise KeyboardInterrupt
            calls.append(path)
            write(path, text)

        monkeypatch.setattr("coasejax.cli.write_atomic", dying)
        fake_run(fake_summary(rounds=3 + kill_at))
        r = simulate("quickstart", "-q", "--set", f"sim.rounds={3 + kill_at}", "--out", out)
        now = {p.name: p.read_bytes() for p in out.iterdir()}
        assert not any(n.endswith(".tmp") for n in now)
        if "summary.json" in now:  # complete: every file is this run's
            assert kill_at == 2 and r.code == 0
            assert json.loads(now["summary.json"])["rounds"] == 5 and "rounds: 5" in now["config.yaml"].decode()
            assert "report.html" not in now
        else:
            assert r.code != 0
            assert "report.html" not in now  # the old run's report went with its summary
            if "config.yaml" in now and now["config.yaml"] != old["config.yaml"]:
                assert f"rounds: {3 + kill_at}" in now["config.yaml"].decode()


def test_a_plain_run_after_a_sweep_removes_the_sweep_files_and_back(tmp_path, monkeypatch, fake_run):
    out = tmp_path / "run"
    monkeypatch.setattr("coasejax.simulate.run_sweep", lambda sim, on_chunk=None: [
        {"setting": {"state.pigou_tax": t}, "efficiency": 0.5, "deal_rate": 0.1, "mean_activity": 1.0,
         "tax_revenue": t, "state_violations": 0, "seconds": 0.1} for t in (0, 1)])
    monkeypatch.setattr("coasejax.simulate.build", lambda cfg: type("S", (), {"compile_seconds": 0.0})())
    assert simulate("quickstart", "-q", "--sweep", "state.pigou_tax=0,1", "--out", out).code == 0
    assert {p.name for p in out.iterdir()} == {"config.yaml", "sweep.csv", "sweep.json", "sweep.png"}
    assert (out / "sweep.png").stat().st_mode & 0o044  # the usual permissions, not mkstemp's 0600
    assert simulate("quickstart", "-q", "--out", out).code == 0
    assert {p.name for p in out.iterdir()} == {"config.yaml", "summary.json"}
    assert simulate("quickstart", "-q", "--sweep", "state.pigou_tax=0,1", "--out", out).code == 0
    assert {p.name for p in out.iterdir()} == {"config.yaml", "sweep.csv", "sweep.json", "sweep.png"}


def test_markup_in_the_out_path_prints_literally_on_success(tmp_path, fake_run):
    (tmp_path / "[").mkdir()
    out = tmp_path / "[" / "]x[red]"
    r = simulate("quickstart", "--out", out)
    assert r.code == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"wrote {out / 'summary.json'} and {out / 'config.yaml'}" in r.stderr
    assert (out / "summary.json").is_file()


def test_simulate_refuses_to_write_into_a_training_run(tmp_path, fake_run):
    (tmp_path / "train" / "checkpoints").mkdir(parents=True)
    (tmp_path / "train" / "metrics.jsonl").write_text("{}\n")
    assert_one_line(simulate("quickstart", "-q", "--out", tmp_path / "train"), 2, "holds a training run",
                    "checkpoints")
    assert {p.name for p in (tmp_path / "train").iterdir()} == {"checkpoints", "metrics.jsonl"}


def test_a_figure_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from coasejax.plots import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = tmp_path / "f.png"
    save_figure(fig, path)
    good = path.read_bytes()
    assert good[:8] == b"\x89PNG\r\n\x1a\n"

    def full_disk(fd):  # the new figure's bytes are in the temporary file when the disk fills
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cliutil.os, "fsync", full_disk)
    with pytest.raises(cliutil.EnvironmentFault, match="No space left"):
        save_figure(fig, path)
    assert path.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------------
# report on files of an unexpected shape
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,content", [
    ("summary.json", "[1, 2, 3]"), ("summary.json", "not json"), ("summary.json", b"\x89PNG\x00\xff"),
    ("summary.json", "[" * 100_000 + "]" * 100_000), ("metrics.jsonl", '{"step": 1}\nnot json\n{"step": 2}\n'),
    ("summary.json", "7"), ("sweep.json", "null"),
])
def test_report_on_an_unreadable_run_file_is_one_line_exit_2(tmp_path, name, content):
    (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    assert_one_line(run_cli("report", tmp_path), 2)


@pytest.mark.parametrize("summary", [
    {"per_round": 5}, {"per_round": {"welfare": "x", "efficiency": None}}, {"layer_binding": [1, 2]},
    {"wealth_lorenz": {"a": 1}}, {"coalition_size_histogram": [1, 2], "pledge_ratio_histogram": 3},
    {"cost_curve": {"curve": [{"regime": 1}]}}, {"efficiency_by_group": [1, "a", None]},
    {"config": {"a": [1, {"b": None}]}, "mechanism": ["x"], "welfare": 1e308, "x": float("nan")},
])
def test_report_on_a_summary_of_an_unexpected_shape_never_raises(tmp_path, summary):
    """The figures it cannot read are left out with the reason, and the page lists what it can; no traceback."""
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "tc_curves.json").write_text(json.dumps({"curves": 3}))
    r = run_cli("report", tmp_path, "-q")
    assert r.code == 0 and "Traceback" not in r.stderr, r.stderr
    assert (tmp_path / "report.html").read_text().startswith("<!doctype html>")


def test_report_skips_a_torn_last_metrics_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "efficiency": 0.5}\n{"step": 2, "effic')
    r = run_cli("report", tmp_path, "-q")
    assert r.code == 0, r.stderr
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
