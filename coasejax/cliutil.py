"""Shared pieces of the command line: the console, the one error printer and its exit codes, atomic writes, the
output directory, the memory estimate, ``--set``.

Exit codes (documented in ``docs/config.md``):

* 0 — success;
* 1 — an internal error (a bug in coasejax: one line, ``COASEJAX_TRACEBACK=1`` shows the traceback);
* 2 — bad input: a config, key, value, file or option that cannot be used; nothing is written;
* 3 — an environment fault: the disk is full or read-only, a directory cannot be created or written, the machine or
  the device ran out of memory. Outputs already on disk stay as they were.

Every user-facing failure is printed by :func:`print_error`, which escapes rich markup, so a path or value holding
``[/]`` or ``[red]`` prints as written.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)
SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a config key, e.g. --set population.n_agents=1000 (repeatable)."),
]

EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3


class EnvironmentFault(Exception):
    """A fault of the machine, not of the input: a full or read-only disk, a directory that cannot be written, memory
    that ran out. The message is one line; the command exits with :data:`EXIT_ENVIRONMENT`."""


def one_line(message: object) -> str:
    """The message on one line (newlines and runs of blanks become one space)."""
    return " ".join(str(message).split())


def print_error(message: object) -> None:
    """Print ``error: message`` on one line, with any rich markup in the message printed literally."""
    console.print(f"[bold red]error:[/] {escape(one_line(message))}", highlight=False, soft_wrap=True)


def fail(message: object, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print ``error: message`` on one line and exit with ``code`` (2: bad input), without a traceback."""
    print_error(message)
    raise typer.Exit(code=code)


def os_fault(e: OSError, what: str = "") -> EnvironmentFault:
    """An :class:`EnvironmentFault` saying which file and why (``[Errno 28] No space left on device``)."""
    name = e.filename if e.filename is not None else what
    reason = e.strerror or str(e) or type(e).__name__
    return EnvironmentFault(f"{name}: {reason}" if name else reason)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder, flushed to disk, and an atomic rename: the
    path holds the old content or the new, never a part. An OS error (a full or read-only disk) raises
    :class:`EnvironmentFault`, and the temporary file is removed."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the output gets the usual permissions
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise os_fault(e, str(path)) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def undefined_as_null(obj):
    """A JSON-like tree with every non-finite float replaced by ``None``: in a training summary a NaN is a metric the
    scenario does not define (an exploitability without a relative action, an efficiency with no bargain), never a
    diverged number, which :func:`coasejax.train.run.check_finite` stops before it is written."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: undefined_as_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [undefined_as_null(v) for v in obj]
    return obj


def check_out_path(out: Path) -> Path:
    """``--out`` must be a directory or not exist yet (exit 2 otherwise); nothing is created."""
    if out.exists() and not out.is_dir():
        fail(f"--out {out}: exists and is not a directory")
    return out


def prepare_out_dir(out: Path) -> Path:
    """Create ``--out`` and check that a file can be written in it, before any work is done: a read-only or full
    disk fails here (exit 3), not after a long run."""
    check_out_path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out, prefix=".write-test."):
            pass
    except OSError as e:
        fail(f"--out {out}: cannot write there ({e.strerror or e})", EXIT_ENVIRONMENT)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Memory: refuse sizes that cannot fit before XLA tries to allocate them
# ----------------------------------------------------------------------------------------------------------------------


def bytes_per_agent(cfg) -> int:
    """A lower bound of the peak bytes per agent and environment of one compiled chunk (BENCHMARKS.md: 88 B at
    k = 4 for the Coase engine, 160 B with small-world index arrays, about 1.3 kB for coase_rounds)."""
    k = cfg.population.degree
    if cfg.env.kind == "coase":
        return 8 + 20 * k + (18 * k if cfg.population.graph == "small_world" else 0)
    if cfg.env.kind == "coase_rounds":
        return 1000
    from coasejax import scenarios

    return scenarios.REGISTRY[cfg.env.kind].bytes_per_agent if cfg.env.kind in scenarios.REGISTRY else 16


def memory_needed(cfg) -> int:
    settings = 1
    for values in cfg.sweep.values():
        settings *= max(len(values), 1)
    return cfg.population.n_agents * cfg.sim.envs * settings * bytes_per_agent(cfg)


def memory_available(shard: bool = True) -> tuple[int, str]:
    """Bytes the run may use and where: the accelerators' memory (all local ones when sharded), or the host's."""
    try:
        import jax

        devices = jax.local_devices()
        stats = devices[0].memory_stats() if devices[0].platform != "cpu" else None
        if stats and stats.get("bytes_limit"):
            n = len(devices) if shard else 1
            return int(stats["bytes_limit"]) * n, f"{n} {devices[0].platform} device(s)"
    except Exception:  # noqa: BLE001  (no device information: fall back to the host's memory)
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "host memory"


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB"


def check_memory(cfg, sharded: bool = True) -> None:
    """Raise :class:`coasejax.config.ConfigError` (exit 2) when the run cannot fit in memory, with the estimate.
    ``sharded``: the agents are split over the processes of a multi-process run (``simulate``; not ``train``, where
    every process holds the whole population), so each process needs its share."""
    from coasejax import distributed
    from coasejax.config import ConfigError

    need = memory_needed(cfg)
    if sharded and cfg.sim.shard:
        need = -(-need // distributed.process_count())
    have, where = memory_available(cfg.sim.shard)
    if need > have:
        per = bytes_per_agent(cfg)
        shape = (f", degree {cfg.population.degree}, graph {cfg.population.graph}"
                 if cfg.env.kind in ("coase", "coase_rounds") else "")
        raise ConfigError(
            f"population.n_agents: {cfg.population.n_agents:,} agents × sim.envs {cfg.sim.envs}"
            f"{' × the sweep settings' if cfg.sweep else ''} need at least {_gb(need)} ({per} B per agent for "
            f"env.kind {cfg.env.kind}{shape}), more than the "
            f"{_gb(have)} of {where}; lower population.n_agents or sim.envs")
