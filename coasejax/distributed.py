"""Multi-controller runs (``jax.distributed``): joining the run, the global mesh, host copies, process 0's outputs.

A run is several processes only when asked for, through the environment (docs/scaling.md), so that a plain
``coasejax`` never waits for peers that will not come:

* ``COASEJAX_COORDINATOR=HOST:PORT``, ``COASEJAX_NUM_PROCESSES=N`` and ``COASEJAX_PROCESS_ID=I`` (all three, I in
  0 … N−1): an explicit launch, e.g. ``scripts/launch_local.sh``. Process 0 serves the coordinator at HOST:PORT.
* ``COASEJAX_DISTRIBUTED=auto``: ``jax.distributed.initialize()`` with no arguments, so JAX detects the cluster itself
  (SLURM, Open MPI, TPU pods); ``scripts/slurm_template.sh`` sets it.
* ``COASEJAX_DISTRIBUTED=off`` (or nothing set): one process.

``COASEJAX_INIT_TIMEOUT`` (seconds, default 300) bounds the wait for the other processes. A malformed setting is a
:class:`coasejax.config.ConfigError` (one line, exit 2); a coordinator that cannot be reached is an environment fault.

:func:`initialize` must run before anything starts a JAX backend (``jax.devices()``, any computation): the command line
calls it first thing (:mod:`coasejax.cli`). On CPU it selects the gloo collectives, without which XLA:CPU cannot
compute across processes. Every process then runs the same program on its share of the global arrays; only process 0
(:func:`is_primary`) writes summaries, logs, figures and configs, while every process takes part in Orbax's checkpoint
saves (each writes the shards it holds).
"""

from __future__ import annotations

import os
from typing import Mapping

from coasejax.cliutil import EnvironmentFault
from coasejax.config import ConfigError

COORDINATOR = "COASEJAX_COORDINATOR"
NUM_PROCESSES = "COASEJAX_NUM_PROCESSES"
PROCESS_ID = "COASEJAX_PROCESS_ID"
MODE = "COASEJAX_DISTRIBUTED"
TIMEOUT = "COASEJAX_INIT_TIMEOUT"

_joined = False  # this process called jax.distributed.initialize (through this module)


class JoinError(EnvironmentFault):
    """The other processes of a multi-process run could not be reached (an environment fault: one line, exit 3)."""


def settings(environ: Mapping[str, str] | None = None) -> dict | None:
    """What the environment asks for: None (one process), ``{"auto": True}`` or ``{"coordinator_address": …,
    "num_processes": …, "process_id": …}``, with ``initialization_timeout``. Raises :class:`ConfigError` naming the
    variable for a malformed or incomplete setting."""
    env = os.environ if environ is None else environ
    mode = env.get(MODE, "").strip().lower()
    if mode not in ("", "auto", "off"):
        raise ConfigError(f"{MODE}={env[MODE]!r}: expected auto (JAX detects SLURM, Open MPI or a TPU pod) or off")
    explicit = {k: env[k].strip() for k in (COORDINATOR, NUM_PROCESSES, PROCESS_ID) if env.get(k, "").strip()}
    timeout = 300
    if env.get(TIMEOUT, "").strip():
        try:
            timeout = int(env[TIMEOUT])
            assert timeout > 0
        except (ValueError, AssertionError):
            raise ConfigError(f"{TIMEOUT}={env[TIMEOUT]!r}: expected a positive number of seconds") from None
    if mode == "off":
        return None
    if explicit:
        if mode == "auto":
            raise ConfigError(f"{MODE}=auto and {', '.join(explicit)} are both set: use auto (JAX detects the cluster) "
                              f"or the explicit {COORDINATOR}/{NUM_PROCESSES}/{PROCESS_ID}, not both")
        missing = [k for k in (COORDINATOR, NUM_PROCESSES, PROCESS_ID) if k not in explicit]
        if missing:
            raise ConfigError(f"{', '.join(missing)}: not set, but {', '.join(explicit)} is; a multi-process launch "
                              f"needs all of {COORDINATOR}=HOST:PORT, {NUM_PROCESSES}=N and {PROCESS_ID}=0…N−1")
        address = explicit[COORDINATOR]
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{COORDINATOR}={address!r}: expected HOST:PORT, e.g. 127.0.0.1:29500 (the address "
                              f"process 0 serves the coordinator on)")
        try:
            n = int(explicit[NUM_PROCESSES])
            assert n >= 1
        except (ValueError, AssertionError):
            raise ConfigError(f"{NUM_PROCESSES}={explicit[NUM_PROCESSES]!r}: expected a whole number ≥ 1") from None
        try:
            i = int(explicit[PROCESS_ID])
            assert 0 <= i < n
        except (ValueError, AssertionError):
            raise ConfigError(f"{PROCESS_ID}={explicit[PROCESS_ID]!r}: expected a whole number from 0 to {n - 1} "
                              f"({NUM_PROCESSES}={n})") from None
        if n == 1:
            return None
        return {"coordinator_address": address, "num_processes": n, "process_id": i,
                "initialization_timeout": timeout}
    if mode == "auto":
        return {"auto": True, "initialization_timeout": timeout}
    return None


def initialize(environ: Mapping[str, str] | None = None) -> bool:
    """Join the multi-process run the environment describes (:func:`settings`); returns whether this is one. A no-op
    (and no JAX import) when nothing is set, and after the first call."""
    global _joined
    if _joined:
        return True
    spec = settings(environ)
    if spec is None:
        return False
    import jax

    # XLA:CPU computes across processes only through a collectives library; the default ("none") fails at the first
    # cross-process computation. No effect on GPU or TPU backends.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if not spec.get("auto") and spec["process_id"] != 0:
        _wait_for_coordinator(spec["coordinator_address"], spec["initialization_timeout"], spec["process_id"],
                              spec["num_processes"])
    kwargs = {k: v for k, v in spec.items() if k != "auto"}
    where = ("the cluster JAX detects" if spec.get("auto") else
             f"{spec['coordinator_address']} as process {spec['process_id']} of {spec['num_processes']}")
    try:
        jax.distributed.initialize(**kwargs)
    except ValueError as e:  # auto: no cluster detected
        if not spec.get("auto"):
            raise JoinError(f"cannot join the multi-process run at {where}: {' '.join(str(e).split())[:200]}") from None
        raise ConfigError(f"{MODE}=auto: JAX detected no cluster to join ({' '.join(str(e).split())[:200]}); "
                          f"outside SLURM, Open MPI or a TPU pod set {COORDINATOR}, {NUM_PROCESSES} and "
                          f"{PROCESS_ID}") from None
    except Exception as e:  # noqa: BLE001  (the coordinator unreachable, a timeout: the machine's fault)
        raise JoinError(f"cannot join the multi-process run at {where}: {type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]}") from None
    _joined = True
    return True


def _wait_for_coordinator(address: str, timeout: int, process_id: int, num_processes: int) -> None:
    """Wait until the coordinator at ``address`` accepts a connection, or raise :class:`JoinError` after ``timeout``
    seconds: JAX's own client, when its connection times out, aborts the whole process with a stack trace instead of
    raising. (Process 0 serves the coordinator and cannot check its peers this way: when they never come, JAX's
    abort is what ends it.)"""
    import socket
    import time

    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise JoinError(f"cannot join the multi-process run at {address} as process {process_id} of "
                                f"{num_processes}: no coordinator answered there within {timeout} s ({e.strerror or e}"
                                f"); is process 0 running, and is {COORDINATOR} its address?") from None
            time.sleep(0.2)


def process_index() -> int:
    """This process's index (0 in a one-process run; JAX is not imported for that)."""
    if not _joined:
        return 0
    import jax

    return jax.process_index()


def process_count() -> int:
    if not _joined:
        return 1
    import jax

    return jax.process_count()


def is_primary() -> bool:
    """Whether this process writes the run's outputs (process 0)."""
    return process_index() == 0


def multi_process() -> bool:
    return process_count() > 1


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (nothing in a one-process run)."""
    if multi_process():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"coasejax:{name}")


def replicated_mesh():
    """A 1-D mesh of one device per process (each process's first local device): the mesh a computation that is not
    sharded (a training state, the evaluation) is replicated over, once per process rather than once per device."""
    import jax
    import numpy as np
    from jax.sharding import Mesh

    firsts = {}
    for d in jax.devices():
        firsts.setdefault(d.process_index, d)
    return Mesh(np.asarray([firsts[p] for p in sorted(firsts)]), ("processes",))


def replicate(tree, mesh=None):
    """In a multi-process run, ``tree``'s arrays as global arrays fully replicated over ``mesh`` (default
    :func:`replicated_mesh`), each process contributing its own copy (every process computed the same values: same
    config, same seed); unchanged in a one-process run. Non-array leaves are left as they are."""
    if not multi_process():
        return tree
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    sharding = NamedSharding(mesh if mesh is not None else replicated_mesh(), PartitionSpec())

    def put(x):
        if not isinstance(x, (jax.Array, np.ndarray, np.generic)):
            return x
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return x  # already global
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = np.asarray(jax.random.key_data(x))
            return jax.random.wrap_key_data(jax.make_array_from_process_local_data(sharding, data, data.shape),
                                            impl=jax.random.key_impl(x))
        data = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, data, data.shape)

    return jax.tree.map(put, tree)


def to_host(tree):
    """``tree``'s arrays as numpy arrays holding the global values: a global array sharded over other processes'
    devices is gathered (every process must call this together); a replicated one, or a local one, is copied from
    this process's own devices (``jax.device_get``)."""
    import jax
    import numpy as np

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:  # this process holds it whole: no collective
                return np.asarray(x.addressable_data(0))
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return jax.device_get(x)

    return jax.tree.map(get, tree)


def local_copy(tree):
    """The inverse of :func:`replicate`: each global replicated array as this process's own copy (on its first
    device); anything else unchanged."""
    if not multi_process():
        return tree
    import jax

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and x.is_fully_replicated:
            return x.addressable_data(0)
        return x

    return jax.tree.map(get, tree)
