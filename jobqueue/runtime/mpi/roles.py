"""The three roles of a launch -- scheduler (rank 0), client, workers -- and ``launch``,
the one function through which initialize() and the `jobqueue mpi` command start them."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import sys
import threading
import time
from typing import Any, Callable

from ...files import private_dir, write_private
from ...security import read_scheduler_file, write_scheduler_file
from .world import MPIStartError, Rendezvous, fail

logger = logging.getLogger("jobqueue.mpi")

# this process's part in the launch: the client rank's address, security, watch connection
_state: dict[str, Any] = {"failed": False}


def new_security(enabled: bool | Any):
    """(Security or None, PEMs or their files to hand to other ranks). By default the
    user's own credentials (jobqueue.security): any process of the user can connect."""
    if enabled is False or enabled is None:
        return None, None
    from distributed.security import Security

    from ...security import use_user_tls, user_security

    if isinstance(enabled, Security):
        sec = enabled
    else:
        sec = user_security()
        use_user_tls(write_dask_config=True)
    pems = {"ca": sec.tls_ca_file, "cert": sec.tls_scheduler_cert, "key": sec.tls_scheduler_key}
    return sec, pems


def security_from(pems: dict | None):
    if not pems:
        return None
    from distributed.security import Security

    return Security(tls_ca_file=pems["ca"], tls_client_cert=pems["cert"], tls_client_key=pems["key"],
                    tls_worker_cert=pems["cert"], tls_worker_key=pems["key"],
                    tls_scheduler_cert=pems["cert"], tls_scheduler_key=pems["key"], require_encryption=True)


def quiet(level: str | None = None) -> None:
    """Scheduler and worker ranks log warnings and errors only (JOBQUEUE_MPI_LOG_LEVEL)."""
    level = level or os.environ.get("JOBQUEUE_MPI_LOG_LEVEL", "WARNING")
    import distributed  # noqa: F401  (configures its loggers; then we override them)

    names = {"distributed", "distributed.active_memory_manager", "distributed.scheduler", "distributed.worker",
             "distributed.nanny", "distributed.core", "distributed.batched", "distributed.comm",
             "distributed.http"}
    names |= {n for n in logging.root.manager.loggerDict if n.startswith("distributed")}
    # worker processes a nanny starts configure their logging from dask's config
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", level.lower())
    import dask

    dask.config.set({"logging.distributed": level.lower()})
    for name in names:
        logging.getLogger(name).setLevel(level)


# ------------------------------------------------------------------ launch
def launch(rank: int, comm: Any, started: float, *, client_rank: int | None, tls: Any,
           scheduler: dict, worker: dict, worker_name: Callable[[int], Any], scheduler_rank: int = 0,
           inclusive: bool = False, on_ready: Callable[[str, Any], None] | None = None) -> int | None:
    """Start this rank's role. ``scheduler_rank`` runs the scheduler (and, if ``inclusive``,
    a worker beside it); ``client_rank`` (if any) becomes the client and gets None back at
    once; every other rank runs a worker. ``on_ready(address, security)`` is called on the
    scheduler rank and worker ranks once their part runs (dask-mpi's execute() starts its
    client function there). Returns the exit code of the scheduler or worker once finished."""
    rendezvous = Rendezvous(comm, root=scheduler_rank)
    if rank == scheduler_rank:
        quiet()
        sec, pems = new_security(tls)
        if scheduler.get("scheduler_file"):
            with contextlib.suppress(OSError):
                os.unlink(scheduler["scheduler_file"])
        beside = dict(worker, name=worker_name(rank)) if inclusive else None
        try:
            code = asyncio.run(run_scheduler(rendezvous, sec, pems, worker=beside, on_ready=on_ready, **scheduler))
        except MPIStartError as exc:
            fail(str(exc))
        rendezvous.remove()
        return code
    info = rendezvous.receive(started)
    if "error" in info:
        fail(info["error"])
    address, sec = info["address"], security_from(info.get("security"))
    if rank == client_rank:
        become_client(address, sec, info.get("security"))
        return None
    quiet()
    return asyncio.run(run_worker(address, sec, name=worker_name(rank), on_ready=on_ready, **worker))


# ------------------------------------------------------------------ scheduler
async def run_scheduler(rendezvous: Rendezvous, security, pems, *, interface=None, protocol=None,
                        port: int | None = 0, dashboard: bool = True, dashboard_address: str | None = ":8787",
                        scheduler_file: str | None = None, worker: dict | None = None,
                        on_ready: Callable[[str, Any], None] | None = None) -> int:
    """Run the scheduler (and ``worker``, a worker's options, beside it) until it is
    closed; return the exit code for this rank."""
    from distributed import Scheduler

    if security is not None and protocol is None:
        protocol = "tls://"
    state = {"done": False, "failed": False, "gone": False}
    try:
        scheduler = Scheduler(interface=interface, protocol=protocol, port=port or 0, dashboard=dashboard,
                              dashboard_address=":8787" if dashboard_address is None else dashboard_address,
                              security=security,
                              scheduler_file=scheduler_file)
        await scheduler
    except BaseException as exc:  # noqa: BLE001 - every failure must reach every rank
        causes, seen = [], exc
        while seen is not None and len(causes) < 4:  # "Scheduler failed to start" hides the reason
            causes.append(f"{type(seen).__name__}: {seen}")
            seen = seen.__cause__ or seen.__context__
        message = "the scheduler could not start: " + " <- ".join(causes)
        rendezvous.publish({"error": message})
        raise MPIStartError(message) from None
    if scheduler_file:
        _private_scheduler_file(scheduler_file, pems)

    async def watch(comm, **_):
        """The client's watch connection: when it closes without "done", the client is gone."""
        try:
            while True:
                msg = await comm.read()
                if msg in ("done", "failed"):
                    state[msg] = True
        except Exception:  # noqa: BLE001 - closed: the client process ended
            pass
        if not state["done"] and not state["failed"]:
            state["gone"] = True
            logger.error("jobqueue mpi: the client rank ended without shutting the cluster down; stopping")
            await scheduler.close(reason="jobqueue-mpi-client-gone")

    scheduler.handlers["jobqueue_watch"] = watch
    rendezvous.publish({"address": scheduler.address, "security": pems})
    beside = asyncio.ensure_future(run_worker(scheduler.address, security, **worker)) if worker else None
    if on_ready is not None:
        on_ready(scheduler.address, security)
    await scheduler.finished()
    if beside is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(beside, 10)
    # a client that failed exits with its own code; one that vanished leaves it to us
    return 1 if state["gone"] else 0


def _private_scheduler_file(path: str, pems: dict | None) -> None:
    """The scheduler file is owner-only and names the credentials (files beside it)."""
    try:
        info = read_scheduler_file(path)
        tls = None
        if pems and all("\n" not in pem for pem in pems.values()):  # files already (the user's credentials)
            tls = {"ca_file": pems["ca"], "cert": pems["cert"], "key": pems["key"]}
        elif pems:  # PEMs in memory (a Security object the caller passed): written beside the file
            cred_dir = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.credentials")
            private_dir(cred_dir)
            written = {key: write_private(os.path.join(cred_dir, f"{key}.pem"), pem) for key, pem in pems.items()}
            tls = {"ca_file": written["ca"], "cert": written["cert"], "key": written["key"]}
        write_scheduler_file(path, info, tls=tls)
    except OSError as exc:
        logger.warning("jobqueue mpi: could not make %s private: %s", path, exc)


# ------------------------------------------------------------------ worker
async def run_worker(address: str, security, *, name: Any, nthreads: int = 1, memory_limit: Any = "auto",
                     local_directory: str | None = None, interface: str | None = None,
                     protocol: str | None = None, worker_class: str = "distributed.Worker",
                     worker_options: dict | None = None, death_timeout: float = 60,
                     on_ready: Callable[[str, Any], None] | None = None) -> int:
    from distributed import Nanny
    from distributed.utils import import_term

    cls = import_term(worker_class) if isinstance(worker_class, str) else worker_class
    opts = {"interface": interface, "protocol": protocol, "nthreads": nthreads, "memory_limit": memory_limit,
            "local_directory": local_directory, "name": name, "security": security,
            "death_timeout": death_timeout, **(worker_options or {})}
    if isinstance(cls, type) and issubclass(cls, Nanny):
        # in the worker process the nanny starts: no shutdown-race traceback (jobqueue.runtime.quiet)
        opts["preload"] = [*(opts.get("preload") or []), "jobqueue.runtime.quiet"]
    async with cls(address, **opts) as w:
        if on_ready is not None:
            on_ready(address, security)
        await w.finished()
    return 0


# ------------------------------------------------------------------ client
def become_client(address: str, security, pems: dict | None) -> None:
    """This process is the client: dask's default scheduler is the launch's, with its TLS,
    and a watch connection tells the scheduler if this process dies."""
    import dask

    _state.update(address=address, security=security)
    dask.config.set(scheduler_address=address)
    if pems:
        dask.config.set({"distributed.comm.tls.ca-file": pems["ca"], "distributed.comm.tls.client.cert": pems["cert"],
                         "distributed.comm.tls.client.key": pems["key"], "distributed.comm.require-encryption": True})
    _start_watch(address, security)


def close_at_exit() -> None:
    """Shut the cluster down when this (client) process exits; an uncaught exception
    makes it a failed run."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        _state["failed"] = True
        previous(kind, value, tb)

    sys.excepthook = hook
    atexit.register(send_close_signal)


def _start_watch(address: str, security) -> None:
    """Hold a connection to the scheduler for as long as this process lives."""
    ready = threading.Event()

    def run():
        from distributed.comm import connect

        async def hold():
            kwargs = security.get_connection_args("client") if security is not None else {}
            comm = await connect(address, **kwargs)
            await comm.write({"op": "jobqueue_watch", "reply": False})
            _state["watch"] = (asyncio.get_running_loop(), comm)
            ready.set()
            await asyncio.Event().wait()

        try:
            asyncio.run(hold())
        except Exception as exc:  # noqa: BLE001
            logger.warning("jobqueue mpi: no watch connection to the scheduler: %s", exc)
            ready.set()

    threading.Thread(target=run, name="jobqueue-mpi-watch", daemon=True).start()
    # not waited for: the user's script starts at once; send_close_signal waits if needed
    _state["watch_ready"] = ready


def _send_watch(message: str) -> None:
    ready = _state.get("watch_ready")
    if ready is not None:
        ready.wait(10)
    held = _state.get("watch")
    if not held:
        return
    loop, comm = held
    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(comm.write(message), loop).result(5)


def send_close_signal(timeout: float = 20) -> None:
    """Shut the cluster down from the client rank: workers first, then the scheduler."""
    import dask
    from distributed import Client, default_client

    with contextlib.suppress(Exception):  # the user's own client: closed first, so it does not see the scheduler vanish
        default_client().close(timeout=timeout)
    address = _state.get("address") or dask.config.get("scheduler_address", None)
    if address is None:
        return
    _send_watch("failed" if _state.get("failed") else "done")
    with contextlib.suppress(Exception):
        with Client(address, security=_state.get("security"), timeout=timeout) as client:
            client.shutdown()  # the scheduler tells its workers to close, then closes
    barrier()
    if _state.get("failed"):
        time.sleep(0.5)  # let the other ranks leave first, so the launcher reports our exit code


def barrier() -> None:
    """All ranks leave together (MPI only), so no launcher kills a rank still exiting."""
    comm = _state.get("comm")
    if comm is not None:
        with contextlib.suppress(Exception):
            comm.Barrier()


def exit_rank(code: int) -> None:
    if not code:
        barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        os._exit(code)
    sys.exit(0)
