"""Multi-process (multi-host) training with JAX's own distributed runtime.

Every process runs the same `jaxlinear train`/`compare` command with its own `--process-id`;
`initialize` connects them through the coordinator (process 0's address) before jax does
anything else. The mesh then spans every device of every process (`jax.devices()`), each
process hands jax only the rows its devices hold (`training.process_rows`), and the compiled
steps sum the gradients over all processes. On CPU the collectives go through gloo.

Faults: a peer that dies makes the survivors' next collective fail at once (gloo sees the
connection reset); the command line turns that into one line and leaves with `os._exit`
(see `cli.main`), because a normal exit runs jax's shutdown barrier, which waits for the dead
peer and then aborts the process with a long C++ log.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from jaxlinear._errors import ConfigError

ENVIRONMENT = {
    "coordinator": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}
"""The environment variables read when the options are not given."""

HEARTBEAT_SECONDS = 10
"""How long the coordinator waits for a silent process before declaring it dead (jax's
default: 100 s). A killed process is usually noticed sooner, by the next collective."""

INITIALIZATION_SECONDS = 60
"""How long `initialize` waits for every process to connect (jax's default: 300 s)."""

SHUTDOWN_SECONDS = 60
"""How long a finished process waits at exit for the others (process 0 writes the outputs
after the last step while the others wait)."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where a multi-process run's processes meet: `coordinator` is `HOST:PORT` of process 0."""

    coordinator: str
    num_processes: int
    process_id: int


def cluster_from(coordinator, num_processes, process_id) -> Cluster | None:
    """The cluster the options (or, for those not given, the `ENVIRONMENT` variables) name;
    `None` for an ordinary one-process run.

    Raises:
      ConfigError: only some of the three are given, or a value is out of range.
    """
    given = {
        "coordinator": coordinator,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    for field, variable in ENVIRONMENT.items():
        if given[field] is None and os.environ.get(variable):
            value = os.environ[variable]
            if field != "coordinator":
                try:
                    value = int(value)
                except ValueError:
                    raise ConfigError(
                        field, f"from ${variable} must be an integer, got {value!r}"
                    ) from None
            given[field] = value
    if all(value is None for value in given.values()):
        return None
    missing = [field for field, value in given.items() if value is None]
    if missing:
        raise ConfigError(
            missing[0],
            "is needed too: a multi-process run needs the coordinator address, the "
            "number of processes and this process's id",
        )
    host, _, port = str(given["coordinator"]).rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError("coordinator", f"must be HOST:PORT, got {given['coordinator']!r}")
    if given["num_processes"] < 1:
        raise ConfigError("num_processes", f"must be at least 1, got {given['num_processes']}")
    if not 0 <= given["process_id"] < given["num_processes"]:
        raise ConfigError(
            "process_id",
            f"must be between 0 and {given['num_processes'] - 1} (--num-processes minus 1), "
            f"got {given['process_id']}",
        )
    return Cluster(**given)


def initialize(cluster: Cluster) -> None:
    """Connects this process to the others; call before anything else uses jax.

    On CPU the cross-process collectives need gloo (jax's CPU default has none). The timeouts
    are shorter than jax's so that a process that never comes, or dies, is noticed in seconds.
    """
    import jax

    # Only the CPU client uses it; on GPU/TPU hosts the accelerators' own collectives run.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=cluster.coordinator,
        num_processes=cluster.num_processes,
        process_id=cluster.process_id,
        initialization_timeout=INITIALIZATION_SECONDS,
        heartbeat_timeout_seconds=HEARTBEAT_SECONDS,
        shutdown_timeout_seconds=SHUTDOWN_SECONDS,
    )


def is_primary() -> bool:
    """True in process 0 (and in a one-process run): the one that prints and writes."""
    import jax

    return jax.process_index() == 0


def global_mesh():
    """A 1-D mesh named `training.DATA_AXIS` over every device of every process."""
    import jax

    from jaxlinear.training import DATA_AXIS

    return jax.make_mesh(
        (jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,)
    )


def connect_collectives(mesh) -> None:
    """Runs one all-reduce over every device of `mesh` now, this process's stdout pointed at
    its stderr meanwhile.

    On CPU, gloo connects the processes at the first collective, and its C++ code then prints
    `[Gloo] Rank 0 is connected to 1 peer ranks. ...` on stdout, where the results go.
    Connecting here sends that line to stderr instead, and a peer that cannot be reached is
    found before training starts. Later collectives over the same devices reuse the
    connection and print nothing more (the tests check stdout).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxlinear.training import DATA_AXIS

    ones = np.ones(jax.local_device_count(), np.float32)
    placed = NamedSharding(mesh, P(DATA_AXIS))
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        values = jax.make_array_from_process_local_data(placed, ones, (mesh.devices.size,))
        jax.block_until_ready(jax.jit(jnp.sum)(values))
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def is_peer_failure(error: BaseException) -> bool:
    """Whether `error` is a collective that failed because another process went away."""
    text = f"{type(error).__name__} {error}"
    return any(
        word in text
        for word in ("Gloo", "gloo", "Connection reset", "Connection closed", "XlaRuntimeError")
    )
