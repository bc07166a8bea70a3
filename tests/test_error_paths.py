"""Error paths of the ``coasejax`` entry point (issue 17): a real XLA out-of-memory error is exit 3 with one line,
command-line usage errors are one ``error:`` line (exit 2) naming the option and the ``--help`` to read, ``--help``
and Ctrl-C keep their exit codes, and ``report`` names a ``summary.json`` that holds JSON but not an object."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from coasejax import cliutil
from tests.conftest import cli, run_cli
from tests.test_validation import assert_one_line, simulate

ROOT = Path(__file__).resolve().parents[1]


def _raise(exc):
    def f(*a, **k):
        raise exc
    return f


# ---------------------------------------------------------------------------------------------------------------------
# out of memory
# ---------------------------------------------------------------------------------------------------------------------


def test_a_real_out_of_memory_error_is_exit_3_saying_how_much(monkeypatch, tmp_path):
    """4·10¹² bytes (10¹² float32): XLA refuses the allocation up front (RESOURCE_EXHAUSTED in about 0.05 s on CPU,
    the resident memory grows by a few MB, the compilation), raising the class JAX really raises."""
    import jax
    import jax.numpy as jnp

    raised = []

    def build(*a, **k):
        try:
            jnp.zeros((10**6, 10**6), jnp.float32).block_until_ready()
        except Exception as e:  # noqa: BLE001
            raised.append(e)
            raise

    monkeypatch.setattr("coasejax.simulate.build", build)
    line = assert_one_line(simulate("quickstart", "-q", "--out", tmp_path / "o"), cliutil.EXIT_ENVIRONMENT,
                           "out of device memory", "could not allocate 4,000.0 GB", "population.n_agents",
                           "sim.envs", "RESOURCE_EXHAUSTED")
    assert len(raised) == 1 and isinstance(raised[0], jax.errors.JaxRuntimeError), raised
    assert "internal error" not in line
    assert not (tmp_path / "o" / "summary.json").exists()


@pytest.mark.parametrize("message, size", [
    ("INTERNAL: Failed to allocate the buffer: Out of memory", None),  # XLA under `ulimit -v`
    ("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 3.73TiB.", "3.73TiB"),  # a GPU's allocator
    ("RESOURCE_EXHAUSTED: Out of memory allocating 400000000 bytes.", "400.0 MB"),  # measured under ulimit -v 6e6
])
def test_other_out_of_memory_messages_are_exit_3(monkeypatch, tmp_path, message, size):
    import jax

    monkeypatch.setattr("coasejax.simulate.build", _raise(jax.errors.JaxRuntimeError(message)))
    line = assert_one_line(simulate("quickstart", "-q", "--out", tmp_path / "o"), cliutil.EXIT_ENVIRONMENT,
                           "out of device memory", "population.n_agents")
    assert (f"could not allocate {size};" in line) if size else ("could not allocate" not in line), line


def test_another_xla_error_is_still_an_internal_error(monkeypatch, tmp_path):
    import jax

    monkeypatch.setattr("coasejax.simulate.build",
                        _raise(jax.errors.JaxRuntimeError("INVALID_ARGUMENT: shapes do not match")))
    assert_one_line(simulate("quickstart", "-q", "--out", tmp_path / "o"), cliutil.EXIT_INTERNAL, "internal error",
                    "JaxRuntimeError", "INVALID_ARGUMENT")


# ---------------------------------------------------------------------------------------------------------------------
# command-line usage errors
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, names", [
    (["simulate", "--bogus"], ["No such option: --bogus", "see 'coasejax simulate --help'"]),
    (["simulate"], ["Missing argument 'config'", "see 'coasejax simulate --help'"]),
    (["report"], ["Missing argument 'run_dir'", "see 'coasejax report --help'"]),
    (["bogus"], ["No such command 'bogus'", "see 'coasejax --help'"]),
    (["simulate", "quickstart", "--set"], ["--set", "requires an argument", "see 'coasejax simulate --help'"]),
    (["simulate", "[red]x", "--bogus[/]"], ["--bogus[/]"]),  # printed literally, not as markup
])
def test_a_usage_error_is_one_line_exit_2(args, names):
    r = run_cli(*args)
    assert_one_line(r, cliutil.EXIT_BAD_INPUT, *names)
    assert "Usage:" not in r.stderr and "╭" not in r.stderr and not r.stdout


def test_help_and_no_arguments_keep_their_exit_codes():
    r = run_cli("--help")
    assert r.code == 0 and "simulate" in r.stdout and "Usage" in r.stdout and not r.stderr.strip()
    r = run_cli("simulate", "--help")
    assert r.code == 0 and "--dry-run" in r.stdout and not r.stderr.strip()
    r = run_cli()  # no_args_is_help: the help, exit 2 as before
    assert r.code == 2 and "simulate" in r.stdout and "error:" not in r.stderr


def test_ctrl_c_is_exit_130_and_an_explicit_exit_code_passes_through(monkeypatch, tmp_path):
    monkeypatch.setattr("coasejax.simulate.build", _raise(KeyboardInterrupt()))
    assert simulate("quickstart", "-q", "--out", tmp_path / "o").code == 130
    import typer

    monkeypatch.setattr("coasejax.simulate.build", _raise(typer.Exit(code=5)))
    assert simulate("quickstart", "-q", "--out", tmp_path / "o").code == 5


def test_the_console_script_gets_the_one_line_usage_error():
    """The script pyproject installs is ``coasejax.cli:main``; run as a separate process it prints one line."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["coasejax"] == "coasejax.cli:main"
    p = cli("simulate", "quickstart", "--bogus", cwd=ROOT, timeout=120)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and lines[0].startswith("error: No such option: --bogus"), p.stderr
    assert "see 'coasejax simulate --help'" in lines[0]


# ---------------------------------------------------------------------------------------------------------------------
# report on a summary.json that is not an object
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, holds", [("[1, 2, 3]", "an array"), ("42", "a number"), ("null", "null"),
                                         ('"x"', "a string")])
def test_report_on_a_summary_that_is_not_an_object_names_the_file(tmp_path, text, holds):
    (tmp_path / "summary.json").write_text(text)
    line = assert_one_line(run_cli("report", tmp_path), cliutil.EXIT_BAD_INPUT, str(tmp_path / "summary.json"),
                           "exists but is not a JSON object", holds)
    assert "not a coasejax run directory" not in line and "ReportError" not in line
    assert not (tmp_path / "report.html").exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
