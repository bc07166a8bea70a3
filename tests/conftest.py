import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

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
