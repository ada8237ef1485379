"""The `jobqueue mpi` command line: scheduler and workers across the ranks, workers only,
or a script run as the client (--script)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

from ...security import file_security, read_scheduler_file
from . import initialize
from .roles import _state, launch, quiet, run_worker
from .world import RENDEZVOUS_TIMEOUT, MPIStartError, fail, world


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
                           worker_class=args.worker_class or "distributed.Worker", security=args.tls,
                           scheduler_port=args.scheduler_port)
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
        fail(str(exc))
    worker_class = args.worker_class or ("distributed.Nanny" if args.nanny else "distributed.Worker")
    name = f"{args.name}-{rank}" if args.name else rank
    worker_kw = dict(nthreads=args.nthreads, memory_limit=args.memory_limit, local_directory=args.local_directory,
                     interface=args.interface, protocol=args.protocol, worker_class=worker_class,
                     death_timeout=args.death_timeout)
    quiet()
    if not args.scheduler:
        address, sec = _join_target(args)
        if passthrough is not None:
            # exactly `dask worker <address> --name <name>-<rank> <options>` on every rank
            from distributed.cli.dask_worker import main as dask_worker

            os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "info")
            sys.argv = ["dask-worker", address, "--name", str(name), *passthrough]
            return dask_worker()
        return asyncio.run(run_worker(address, sec, name=name, **worker_kw))
    if size < 2:
        fail(f"not enough ranks: found {size}, need at least 2 (scheduler and one worker)")
    return launch(rank, comm, started, client_rank=None, tls=args.tls,
                  scheduler=dict(interface=args.interface, protocol=args.protocol, port=args.scheduler_port,
                                 dashboard=args.dashboard, dashboard_address=args.dashboard_address,
                                 scheduler_file=args.scheduler_file),
                  worker=worker_kw, worker_name=lambda r: f"{args.name}-{r}" if args.name else r)


def _join_target(args) -> tuple[str, Any]:
    """Workers-only mode: the address and security of an existing scheduler."""
    if args.scheduler_address:
        return args.scheduler_address, None
    if not args.scheduler_file:
        fail("workers-only mode needs --scheduler-address or --scheduler-file")
    deadline = time.monotonic() + RENDEZVOUS_TIMEOUT
    while True:
        try:
            info = read_scheduler_file(args.scheduler_file)
            break
        except (OSError, ValueError) as exc:
            if time.monotonic() > deadline:
                fail(f"cannot read scheduler file {args.scheduler_file}: {exc}")
            time.sleep(0.2)
    return info["address"], file_security(info, "worker")
