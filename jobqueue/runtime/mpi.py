"""Start a Dask cluster across the ranks of one mpirun/srun launch (dask-mpi compatible).

``initialize()`` has dask_mpi.initialize's keywords and meaning: rank 0 runs the
scheduler, rank 1 returns and runs the rest of the user's script as the client, every
other rank is a worker; with ``exit=True`` everything shuts down when the script ends.
``main()`` is the ``jobqueue mpi`` command: scheduler on rank 0 (writing
``--scheduler-file``), workers on the others, or workers only (``--no-scheduler``)
joining an existing scheduler by address or scheduler file.

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
  file in ~/.jobqueue/mpi (or --scheduler-file).
- TLS by default: rank 0 makes credentials for this launch and hands them to the other
  ranks with the address (by MPI, or in the owner-only file), so other users on the
  nodes cannot use the cluster. ``security=False`` turns it off.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import logging
import os
import sys
import threading
import time
from typing import Any

from ..files import write_private

logger = logging.getLogger("jobqueue.mpi")

RENDEZVOUS_TIMEOUT = float(os.environ.get("JOBQUEUE_MPI_TIMEOUT", "120"))
_RANK_ENV = [("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("PMI_RANK", "PMI_SIZE"),
             ("PMIX_RANK", "OMPI_COMM_WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")]


class MPIStartError(RuntimeError):
    """The cluster could not start; every rank exits non-zero with this message."""


# ------------------------------------------------------------------ rank and size
def world(comm: Any = None, need_comm: bool = True) -> tuple[int, int, Any]:
    """(rank, size, communicator or None). mpi4py when present and consistent with the
    launcher, else the launcher's environment. Without ``need_comm`` (workers-only mode),
    the environment is enough and MPI is not even initialised."""
    env_rank = env_size = None
    for rank_var, size_var in _RANK_ENV:
        if os.environ.get(rank_var, "").isdigit():
            env_rank = int(os.environ[rank_var])
            size = os.environ.get(size_var) or os.environ.get("SLURM_NPROCS") or os.environ.get("PMI_SIZE")
            env_size = int(size) if size and size.isdigit() else None
            break
    if not need_comm and comm is None and env_rank is not None and env_size is not None:
        return env_rank, env_size, None
    if comm is None and os.environ.get("JOBQUEUE_MPI_NO_MPI4PY") != "1":
        try:
            from mpi4py import MPI

            comm = MPI.COMM_WORLD
        except ImportError:
            comm = None
    if comm is not None:
        rank, size = comm.Get_rank(), comm.Get_size()
        if env_size is None or size == env_size or env_size <= 1:
            return rank, size, comm
        # e.g. srun without an MPI plugin: mpi4py sees singletons; trust the launcher
    if env_rank is None or env_size is None:
        raise MPIStartError("cannot tell this process's MPI rank: run it under mpirun/mpiexec or srun "
                            "(or install mpi4py)")
    return env_rank, env_size, None


def _launch_id() -> str:
    for var in ("JOBQUEUE_MPI_ID", "PMIX_NAMESPACE", "PMI_KVSNAME", "OMPI_MCA_ess_base_jobid"):
        if os.environ.get(var):
            return os.environ[var].replace("/", "_")
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}.{os.environ.get('SLURM_STEP_ID', '0')}"
    return f"ppid-{os.getppid()}"


# ------------------------------------------------------------------ rendezvous
class Rendezvous:
    """Rank 0 publishes {"address", "security"} or {"error"}; the other ranks wait for it."""

    def __init__(self, comm: Any, path: str | None = None):
        self.comm = comm
        self.path = path or os.path.join(os.path.expanduser("~/.jobqueue/mpi"), f"{_launch_id()}.json")

    def publish(self, info: dict) -> None:
        if self.comm is not None:
            self.comm.bcast(info, root=0)
            return
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        write_private(self.path, json.dumps({**info, "written": time.time()}))

    def receive(self, started: float) -> dict:
        if self.comm is not None:
            return self.comm.bcast(None, root=0)
        deadline = time.monotonic() + RENDEZVOUS_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with open(self.path) as f:
                    info = json.load(f)
                if info.get("written", 0) >= started - 300:  # not a stale file from an earlier run
                    return info
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        return {"error": f"no scheduler address appeared in {self.path} within {RENDEZVOUS_TIMEOUT:.0f} s "
                         "(did rank 0 start? set JOBQUEUE_MPI_TIMEOUT to wait longer)"}

    def remove(self) -> None:
        if self.comm is None:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def _new_security(enabled: bool | Any):
    """(Security or None, PEM dict to hand to other ranks)."""
    if enabled is False or enabled is None:
        return None, None
    from distributed.security import Security

    sec = enabled if isinstance(enabled, Security) else Security.temporary()
    pems = {"ca": sec.tls_ca_file, "cert": sec.tls_scheduler_cert, "key": sec.tls_scheduler_key}
    return sec, pems


def _security_from(pems: dict | None):
    if not pems:
        return None
    from distributed.security import Security

    return Security(tls_ca_file=pems["ca"], tls_client_cert=pems["cert"], tls_client_key=pems["key"],
                    tls_worker_cert=pems["cert"], tls_worker_key=pems["key"],
                    tls_scheduler_cert=pems["cert"], tls_scheduler_key=pems["key"], require_encryption=True)


def _quiet(level: str | None = None) -> None:
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


def _fail(message: str, code: int = 1):
    sys.stderr.write(f"jobqueue mpi: {message}\n")
    sys.stderr.flush()
    os._exit(code)  # no atexit, no MPI_Finalize wait: every rank leaves now


# ------------------------------------------------------------------ the three roles
async def _run_scheduler(rendezvous: Rendezvous, security, pems, *, interface=None, protocol=None,
                         port: int = 0, dashboard: bool = True, dashboard_address: str = ":8787",
                         scheduler_file: str | None = None, watch_client: bool = True) -> int:
    """Run the scheduler until it is closed; return the exit code for this rank."""
    from distributed import Scheduler

    if security is not None and protocol is None:
        protocol = "tls://"
    state = {"done": False, "failed": False, "watched": False}
    try:
        scheduler = Scheduler(interface=interface, protocol=protocol, port=port, dashboard=dashboard,
                              dashboard_address=dashboard_address, security=security,
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
        """Rank 1's watch connection: when it closes without "done", the client is gone."""
        state["watched"] = True
        try:
            while True:
                msg = await comm.read()
                if msg == "done":
                    state["done"] = True
                elif msg == "failed":
                    state["failed"] = True
        except Exception:  # noqa: BLE001 - closed: the client process ended
            pass
        if not state["done"] and not state["failed"]:
            state["gone"] = True
            logger.error("jobqueue mpi: the client rank ended without shutting the cluster down; stopping")
            await scheduler.close(reason="jobqueue-mpi-client-gone")

    scheduler.handlers["jobqueue_watch"] = watch
    rendezvous.publish({"address": scheduler.address, "security": pems})
    await scheduler.finished()
    # a client that failed exits with its own code; one that vanished leaves it to us
    return 1 if state.get("gone") else 0


def _private_scheduler_file(path: str, pems: dict | None) -> None:
    """The scheduler file is owner-only and carries the security configuration."""
    try:
        with open(path) as f:
            info = json.load(f)
        if pems:
            cred_dir = os.path.join(os.path.dirname(os.path.abspath(path)),
                                    f".{os.path.basename(path)}.credentials")
            os.makedirs(cred_dir, mode=0o700, exist_ok=True)
            files = {key: write_private(os.path.join(cred_dir, f"{key}.pem"), pem) for key, pem in pems.items()}
            info["security"] = {"tls_ca_file": files["ca"], "tls_client_cert": files["cert"],
                                "tls_client_key": files["key"], "require_encryption": True}
        write_private(path, json.dumps(info, indent=1))
    except OSError as exc:
        logger.warning("jobqueue mpi: could not make %s private: %s", path, exc)


async def _run_worker(address: str, security, *, name: Any, nthreads: int = 1, memory_limit: Any = "auto",
                      local_directory: str | None = None, interface: str | None = None,
                      protocol: str | None = None, worker_class: str = "distributed.Worker",
                      worker_options: dict | None = None, death_timeout: float = 60) -> int:
    from distributed.utils import import_term

    from distributed import Nanny

    cls = import_term(worker_class) if isinstance(worker_class, str) else worker_class
    opts = {"interface": interface, "protocol": protocol, "nthreads": nthreads, "memory_limit": memory_limit,
            "local_directory": local_directory, "name": name, "security": security,
            "death_timeout": death_timeout, **(worker_options or {})}
    if isinstance(cls, type) and issubclass(cls, Nanny):
        # in the worker process the nanny starts: no shutdown-race traceback (jobqueue.runtime.quiet)
        opts["preload"] = [*(opts.get("preload") or []), "jobqueue.runtime.quiet"]
    async with cls(address, **opts) as worker:
        await worker.finished()
    return 0


def _start_watch(address: str, security) -> None:
    """Rank 1 holds a connection to the scheduler for as long as its process lives."""
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


_state: dict[str, Any] = {"failed": False}


def _send_watch(message: str) -> None:
    ready = _state.get("watch_ready")
    if ready is not None:
        ready.wait(10)
    held = _state.get("watch")
    if not held:
        return
    loop, comm = held
    try:
        asyncio.run_coroutine_threadsafe(comm.write(message), loop).result(5)
    except Exception:  # noqa: BLE001
        pass


def send_close_signal(timeout: float = 20) -> None:
    """Shut the cluster down from the client rank: workers first, then the scheduler."""
    from distributed import Client, default_client

    with contextlib.suppress(Exception):  # the user's own client: closed first, so it does not see the scheduler vanish
        default_client().close(timeout=timeout)
    address = _state.get("address") or __import__("dask").config.get("scheduler_address", None)
    if address is None:
        return
    _send_watch("failed" if _state.get("failed") else "done")
    with contextlib.suppress(Exception):
        with Client(address, security=_state.get("security"), timeout=timeout) as client:
            client.shutdown()  # the scheduler tells its workers to close, then closes
    _barrier()
    if _state.get("failed"):
        time.sleep(0.5)  # let the other ranks leave first, so the launcher reports our exit code


def _barrier() -> None:
    """All ranks leave together (MPI only), so no launcher kills a rank still exiting."""
    comm = _state.get("comm")
    if comm is not None:
        with contextlib.suppress(Exception):
            comm.Barrier()


def _record_failures() -> None:
    previous = sys.excepthook

    def hook(kind, value, tb):
        _state["failed"] = True
        previous(kind, value, tb)

    sys.excepthook = hook


# ------------------------------------------------------------------ dask-mpi's initialize
def initialize(interface: str | None = None, nthreads: int = 1, local_directory: str | None = None,
               memory_limit: Any = "auto", nanny: bool = False, dashboard: bool = True,
               dashboard_address: str = ":8787", protocol: str | None = None,
               worker_class: str = "distributed.Worker", worker_options: dict | None = None,
               comm: Any = None, exit: bool = True, security: Any = True):
    """Rank 0 scheduler, rank 1 client (returns), other ranks workers (as dask_mpi.initialize).

    With ``exit=False`` every rank returns: True on the client rank, False elsewhere
    (after its scheduler or worker has finished); the client then calls
    :func:`send_close_signal` itself.
    """
    import dask

    started = time.time()
    try:
        rank, size, comm = world(comm)
    except MPIStartError as exc:
        _fail(str(exc))
    if size < 3:
        _fail(f"not enough MPI ranks to start a cluster: found {size}, need at least 3 (scheduler, client, "
              "one worker); run with e.g. mpirun -n 4")
    rendezvous = Rendezvous(comm)
    _state["comm"] = comm if exit else None
    if nanny:
        worker_class = "distributed.Nanny"  # dask-mpi raises here; we do what was asked
    if rank == 0:
        _quiet()
        sec, pems = _new_security(security)
        try:
            code = asyncio.run(_run_scheduler(rendezvous, sec, pems, interface=interface, protocol=protocol,
                                              dashboard=dashboard, dashboard_address=dashboard_address))
        except MPIStartError as exc:
            _fail(str(exc))
        rendezvous.remove()
        if exit:
            _fail_or_exit(code)
        return False
    info = rendezvous.receive(started)
    if "error" in info:
        _fail(info["error"])
    address, sec = info["address"], _security_from(info.get("security"))
    if rank == 1:
        _state.update(address=address, security=sec)
        dask.config.set(scheduler_address=address)
        if sec is not None:
            dask.config.set({"distributed.comm.tls.ca-file": info["security"]["ca"],
                             "distributed.comm.tls.client.cert": info["security"]["cert"],
                             "distributed.comm.tls.client.key": info["security"]["key"],
                             "distributed.comm.require-encryption": True})
        _start_watch(address, sec)
        if exit:
            _record_failures()
            atexit.register(send_close_signal)
        return True
    _quiet()
    code = asyncio.run(_run_worker(address, sec, name=rank, nthreads=nthreads, memory_limit=memory_limit,
                                   local_directory=local_directory, interface=interface, protocol=protocol,
                                   worker_class=worker_class, worker_options=worker_options))
    if exit:
        _fail_or_exit(code)
    return False


def _fail_or_exit(code: int) -> None:
    if not code:
        _barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        os._exit(code)
    sys.exit(0)


# ------------------------------------------------------------------ the `jobqueue mpi` command
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jobqueue mpi",
        description="Run a Dask scheduler on MPI rank 0 and workers on the other ranks (as dask-mpi's "
                    "command), or only workers that join an existing scheduler (--no-scheduler).")
    p.add_argument("--scheduler-file", help="file the scheduler writes its address (and TLS paths) to; "
                                            "workers-only mode reads it")
    p.add_argument("--scheduler-address", help="workers-only mode: the scheduler to join")
    p.add_argument("--scheduler-port", type=int, default=0, help="scheduler port (default: any free one)")
    p.add_argument("--scheduler", dest="scheduler", action="store_true", default=True,
                   help="rank 0 runs the scheduler (default)")
    p.add_argument("--no-scheduler", dest="scheduler", action="store_false",
                   help="workers only, on every rank, joining --scheduler-address or --scheduler-file")
    p.add_argument("--interface", help="network interface, e.g. ib0")
    p.add_argument("--protocol", help="e.g. tcp:// or tls://")
    p.add_argument("--nthreads", type=int, default=1, help="threads per worker (default 1)")
    p.add_argument("--memory-limit", default="auto", help='bytes per worker, e.g. "4GB" (default auto)')
    p.add_argument("--local-directory", help="worker scratch directory")
    p.add_argument("--nanny", dest="nanny", action="store_true", default=False,
                   help="start each worker under a nanny (restarts, memory limits)")
    p.add_argument("--no-nanny", dest="nanny", action="store_false", help="plain workers (default)")
    p.add_argument("--worker-class", default=None, help="worker class (default distributed.Worker, or "
                                                        "distributed.Nanny with --nanny)")
    p.add_argument("--name", help="worker name prefix (workers are named <prefix>-<rank>)")
    p.add_argument("--death-timeout", type=float, default=60, help="seconds a worker waits for its scheduler")
    p.add_argument("--dashboard", dest="dashboard", action="store_true", default=True)
    p.add_argument("--no-dashboard", dest="dashboard", action="store_false")
    p.add_argument("--dashboard-address", default=":8787")
    p.add_argument("--no-tls", dest="tls", action="store_false", default=True,
                   help="plain TCP: anyone who can reach the port can use the cluster")
    p.add_argument("--script", nargs=argparse.REMAINDER,
                   help="run this Python script (and its arguments) on rank 1 as the client, with "
                        "scheduler on rank 0 and workers on the other ranks; its exit code is the run's")
    return p


def run_script(args) -> int:
    """initialize() with the command's options, then the user's script on rank 1."""
    import runpy

    script, *script_args = args.script
    is_client = initialize(interface=args.interface, nthreads=args.nthreads, local_directory=args.local_directory,
                           memory_limit=args.memory_limit, nanny=args.nanny, dashboard=args.dashboard,
                           dashboard_address=args.dashboard_address, protocol=args.protocol,
                           worker_class=args.worker_class or "distributed.Worker", security=args.tls)
    if not is_client:
        return 0
    sys.argv = [script, *script_args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code:
            _state["failed"] = True
            if exc.code is not None and not isinstance(exc.code, int):
                sys.stderr.write(f"{exc.code}\n")
        return code
    except BaseException:
        _state["failed"] = True
        import traceback

        traceback.print_exc()
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] | None = None
    if "--" in argv:  # workers-only: the rest are `dask worker` options, used as they are
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    if args.script:
        return run_script(args)
    started = time.time()
    try:
        rank, size, comm = world(need_comm=args.scheduler)
    except MPIStartError as exc:
        _fail(str(exc))
    worker_class = args.worker_class or ("distributed.Nanny" if args.nanny else "distributed.Worker")
    name = f"{args.name}-{rank}" if args.name else rank
    worker_kw = dict(nthreads=args.nthreads, memory_limit=args.memory_limit, local_directory=args.local_directory,
                     interface=args.interface, protocol=args.protocol, worker_class=worker_class,
                     death_timeout=args.death_timeout)
    _quiet()
    if not args.scheduler:
        address, sec = _join_target(args)
        if passthrough is not None:
            # exactly `dask worker <address> --name <name>-<rank> <options>` on every rank
            from distributed.cli.dask_worker import main as dask_worker

            os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "info")
            sys.argv = ["dask-worker", address, "--name", str(name), *passthrough]
            return dask_worker()
        return asyncio.run(_run_worker(address, sec, name=name, **worker_kw))
    if size < 2:
        _fail(f"not enough ranks: found {size}, need at least 2 (scheduler and one worker)")
    rendezvous = Rendezvous(comm)
    if rank == 0:
        sec, pems = _new_security(args.tls)
        if args.scheduler_file:
            with contextlib.suppress(Exception):
                os.unlink(args.scheduler_file)
        try:
            code = asyncio.run(_run_scheduler(rendezvous, sec, pems, interface=args.interface,
                                              protocol=args.protocol, port=args.scheduler_port,
                                              dashboard=args.dashboard, dashboard_address=args.dashboard_address,
                                              scheduler_file=args.scheduler_file))
        except MPIStartError as exc:
            _fail(str(exc))
        rendezvous.remove()
        return code
    info = rendezvous.receive(started)
    if "error" in info:
        _fail(info["error"])
    return asyncio.run(_run_worker(info["address"], _security_from(info.get("security")), name=name, **worker_kw))


def _join_target(args) -> tuple[str, Any]:
    """Workers-only mode: the address and security of an existing scheduler."""
    if args.scheduler_address:
        return args.scheduler_address, None
    if not args.scheduler_file:
        _fail("workers-only mode needs --scheduler-address or --scheduler-file")
    deadline = time.monotonic() + RENDEZVOUS_TIMEOUT
    while True:
        try:
            with open(args.scheduler_file) as f:
                info = json.load(f)
            break
        except (OSError, ValueError) as exc:
            if time.monotonic() > deadline:
                _fail(f"cannot read scheduler file {args.scheduler_file}: {exc}")
            time.sleep(0.2)
    security = None
    tls = info.get("worker_security") or info.get("security")
    if tls:
        from distributed.security import Security

        security = Security(tls_ca_file=tls["tls_ca_file"], tls_worker_cert=tls.get("tls_worker_cert")
                            or tls["tls_client_cert"], tls_worker_key=tls.get("tls_worker_key")
                            or tls["tls_client_key"], require_encryption=True)
    return info["address"], security


if __name__ == "__main__":
    sys.exit(main())
