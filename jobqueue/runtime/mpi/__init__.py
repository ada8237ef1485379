"""Start a Dask cluster across the ranks of one mpirun/srun launch (dask-mpi compatible).

``initialize()`` has dask_mpi.initialize's keywords and meaning: rank 0 runs the
scheduler, rank 1 returns and runs the rest of the user's script as the client, every
other rank is a worker; with ``exit=True`` everything shuts down when the script ends.
``python -m jobqueue.runtime.mpi`` (``jobqueue mpi``, in .command) runs a scheduler on
rank 0 (writing ``--scheduler-file``) and workers on the others, or only workers
(``--no-scheduler``) joining an existing scheduler by address or scheduler file.

The package: .world (rank and size, the rendezvous), .roles (scheduler, client and
worker, and ``launch``, which both entry points use), .command (the command line).

What dask-mpi does not do, and this does:

- No rank waits forever. A scheduler that cannot start (unwritable scheduler file,
  port in use, bad interface) sends its error to every rank, and all exit non-zero
  within seconds. Rank 1 keeps a watch connection to the scheduler: if its process
  dies (exception, SIGKILL), the scheduler notices the closed connection and shuts
  everything down with a non-zero exit.
- A clean run exits 0 and prints no tracebacks: the client closes the workers before
  the scheduler, and the scheduler and worker ranks log warnings and errors only.
- Rank and size come from mpi4py when it is there, else from the launcher's
  environment (PMI_RANK, OMPI_COMM_WORLD_RANK, PMIX_RANK, SLURM_PROCID), so `srun`
  works without mpi4py; the scheduler's address then travels through an owner-only
  file under the state directory (jobqueue.state-directory, ~/.jobqueue/mpi).
- TLS by default: rank 0 makes credentials for this launch and hands them to the other
  ranks with the address (by MPI, or in the owner-only file), so other users on the
  nodes cannot use the cluster. ``security=False`` turns it off.
- A script that calls initialize() itself also runs unchanged under
  ``jobqueue mpi --script``: the second call finds the cluster started and returns.
"""

from __future__ import annotations

import time
from typing import Any

from .execute import execute
from .roles import _state, close_at_exit, exit_rank, launch, send_close_signal
from .world import MPIStartError, WorldTooSmallException, fail, world

__all__ = ["initialize", "execute", "send_close_signal", "MPIStartError", "WorldTooSmallException", "world", "main"]


def initialize(interface: str | None = None, nthreads: int = 1, local_directory: str | None = None,
               memory_limit: Any = "auto", nanny: bool = False, dashboard: bool = True,
               dashboard_address: str = ":8787", protocol: str | None = None,
               worker_class: str = "distributed.Worker", worker_options: dict | None = None,
               comm: Any = None, exit: bool = True, security: Any = True, scheduler_port: int = 0):
    """Rank 0 scheduler, rank 1 client (returns), other ranks workers (as dask_mpi.initialize).

    With ``exit=False`` every rank returns: True on the client rank, False elsewhere
    (after its scheduler or worker has finished); the client then calls
    :func:`send_close_signal` itself. Called again in the client process (a script run by
    ``jobqueue mpi --script`` that initializes itself), it returns True at once.
    """
    if "address" in _state:
        return True
    started = time.time()
    try:
        rank, size, comm = world(comm)
    except MPIStartError as exc:
        fail(str(exc))
    if size < 3:
        raise WorldTooSmallException(
            f"Not enough MPI ranks to start cluster, found {size}, needs at least 3, one each for the scheduler, "
            "client and a worker: run with e.g. mpirun -n 4")
    _state["comm"] = comm if exit else None
    if nanny:
        worker_class = "distributed.Nanny"  # dask-mpi raises here; we do what was asked
    code = launch(rank, comm, started, client_rank=1, tls=security,
                  scheduler=dict(interface=interface, protocol=protocol, port=scheduler_port, dashboard=dashboard,
                                 dashboard_address=dashboard_address),
                  worker=dict(nthreads=nthreads, memory_limit=memory_limit, local_directory=local_directory,
                              interface=interface, protocol=protocol, worker_class=worker_class,
                              worker_options=worker_options),
                  worker_name=lambda r: r)
    if code is None:  # the client
        if exit:
            close_at_exit()
        return True
    if exit:
        exit_rank(code)
    return False


def main(argv: list[str] | None = None) -> int:
    """The `jobqueue mpi` command (``python -m jobqueue.runtime.mpi``)."""
    from .command import main as command_main

    return command_main(argv)
