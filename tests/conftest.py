import contextlib
import io
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# One persistent XLA compilation cache for the whole suite: its xdist workers and the CLI subprocesses it starts (they
# inherit the environment) load what another already compiled instead of compiling it again. Its size limit turns on
# JAX's file lock, so two workers never read an entry that is half-written. A run's cache is reused by the next run
# on the same machine; set JAX_COMPILATION_CACHE_DIR to use another directory.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"coasejax-tests-xla-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))
# The suite compiles hundreds of small programs and runs most of them for well under a second, so it asks LLVM for
# its cheaper optimisation level (1, the default is 2): about a fifth less CPU time over the suite, the same
# arithmetic (no fast-math either way). Speed is measured by `coasejax bench` and scripts/, never by the tests. Tests
# that start processes with a forced device count add that flag to these (tests.conftest.xla_flags).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=1".strip()


def xla_flags(*flags: str) -> str:
    """The suite's XLA_FLAGS with ``flags`` added (for a subprocess that forces a host device count)."""
    return " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()

import pytest  # noqa: E402

from coasejax.config import load_config  # noqa: E402
from coasejax.simulate import simulate  # noqa: E402


def make_cfg(**overrides):
    """A small config: defaults, N=2000, 3 rounds, with ``section__key=value`` overrides (``__`` for ``.``)."""
    base = {"population.n_agents": 2000, "sim.rounds": 3}
    base.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_config(None, [f"{k}={v}" for k, v in base.items()])


@pytest.fixture
def run():
    def _run(**overrides):
        return simulate(make_cfg(**overrides))

    return _run


def cli(*args, **kw):
    """``python -m coasejax.cli ARGS`` in a subprocess (``kw``: subprocess.run's, e.g. ``cwd``)."""
    kw.setdefault("timeout", 300)
    return subprocess.run([sys.executable, "-m", "coasejax.cli", *args], capture_output=True, text=True, **kw)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.strip()]


def run_cli(*args) -> Result:
    """``coasejax ARGS`` in this process: the real ``main()`` with ``sys.argv`` set, stdout and stderr captured."""
    from coasejax.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["coasejax", *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return Result(code, out.getvalue(), err.getvalue())
