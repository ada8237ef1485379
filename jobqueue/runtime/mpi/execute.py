"""execute(): run one function as the client of a cluster spread over the ranks
(dask_mpi.execute's keywords and meaning).

The scheduler runs on ``scheduler_rank``; ``client_function`` runs on ``client_rank``,
alone there when ``exclusive_workers`` (the default) and that rank is not the
scheduler's, else in a thread beside the scheduler or worker of that rank; every other
rank is a worker (and the scheduler's rank too, with ``exclusive_workers=False``).
When the function returns, the cluster shuts down and every rank's execute() returns.
With ``scheduler=False`` the ranks only join ``scheduler_address``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable

from .roles import _state, become_client, launch, quiet, run_worker, send_close_signal
from .world import WorldTooSmallException, world


def execute(client_function: Callable | None = None, client_args: tuple = (), client_kwargs: dict | None = None,
            client_rank: int = 1, scheduler: bool = True, scheduler_rank: int = 0,
            scheduler_address: str | None = None, scheduler_port: int | None = None,
            scheduler_file: str | None = None, interface: str | None = None, nthreads: int = 1,
            local_directory: str | None = "", memory_limit: Any = "auto", nanny: bool = False,
            dashboard: bool = True, dashboard_address: str = ":8787", protocol: str | None = None,
            exclusive_workers: bool = True, worker_class: str = "distributed.Worker",
            worker_options: dict | None = None, worker_name: str | None = None, comm: Any = None,
            security: Any = True) -> None:
    """Run ``client_function(*client_args, **client_kwargs)`` on ``client_rank`` with a Dask
    cluster on the ranks of ``comm`` (MPI.COMM_WORLD by default), then shut it down.

    Raises WorldTooSmallException when there are fewer than
    ``1 + max(client_rank, scheduler_rank, exclusive_workers)`` ranks, as dask-mpi does.
    TLS with the user's credentials unless ``security=False`` (``Client()`` in the
    function connects without arguments)."""
    started = time.time()
    rank, size, comm = world(comm)
    needed = 1 + max(client_rank, scheduler_rank, int(exclusive_workers))
    if size < needed:
        raise WorldTooSmallException(
            f"Not enough MPI ranks to start cluster with exclusive_workers={exclusive_workers} and "
            f"scheduler_rank={scheduler_rank}, found {size} MPI ranks but needs {needed}.")
    with_client = callable(client_function) and rank == client_rank
    if nanny:
        worker_class = "distributed.Nanny"  # dask-mpi raises here; we do what was asked
    worker = dict(nthreads=nthreads, memory_limit=memory_limit, local_directory=local_directory or None,
                  interface=interface, protocol=protocol, worker_class=worker_class, worker_options=worker_options)

    def name(r: int) -> Any:
        return f"{worker_name}-{r}" if worker_name else r

    def client(address: str, sec: Any) -> None:
        become_client(address, sec, None)
        try:
            client_function(*client_args, **(client_kwargs or {}))
        finally:
            send_close_signal()

    def beside(address: str, sec: Any) -> None:
        threading.Thread(target=client, args=(address, sec), name="dask-mpi-client").start()

    if not scheduler:
        if scheduler_address is None:
            raise ValueError("Must provide scheduler_address if executing with scheduler=False")
        quiet()
        if with_client and exclusive_workers:
            return client(scheduler_address, None)
        asyncio.run(run_worker(scheduler_address, None, name=name(rank), on_ready=beside if with_client else None,
                               **worker))
        return None
    alone = with_client and exclusive_workers and rank != scheduler_rank
    code = launch(rank, comm, started, client_rank=client_rank if alone else None, tls=security,
                  scheduler=dict(interface=interface, protocol=protocol, port=scheduler_port, dashboard=dashboard,
                                 dashboard_address=dashboard_address, scheduler_file=scheduler_file),
                  worker=worker, worker_name=name, scheduler_rank=scheduler_rank,
                  inclusive=not exclusive_workers, on_ready=beside if with_client else None)
    if code is None:  # this rank is the client, alone
        try:
            client_function(*client_args, **(client_kwargs or {}))
        finally:
            send_close_signal()
    _state.pop("address", None)
    return None
