"""The `jobqueue mpi` command line: scheduler and workers across the ranks, workers only,
or a script run as the client (--script)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from ...security import file_security, read_scheduler_file
from . import initialize
from .roles import _state, launch, quiet, run_worker
from .world import RENDEZVOUS_TIMEOUT, MPIStartError, WorldTooSmallException, fail, world


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jobqueue mpi",
        description="Run a Dask scheduler on one MPI rank and workers on the other ranks, with dask-mpi's "
                    "options and defaults, or only workers that join an existing scheduler (--no-scheduler).")
    p.add_argument("scheduler_address", nargs="?", help="workers-only mode: the scheduler to join (as dask-mpi)")
    p.add_argument("--scheduler-file", help="file the scheduler writes its address (and TLS paths) to; "
                                            "workers-only mode reads it")
    p.add_argument("--scheduler-address", dest="scheduler_address_option", help="workers-only mode: the scheduler "
                                                                               "to join")
    p.add_argument("--scheduler-port", type=int, default=None, help="scheduler port (default: any free one)")
    p.add_argument("--scheduler-rank", type=int, default=0, help="the rank that runs the scheduler (default 0)")
    p.add_argument("--scheduler", dest="scheduler", action="store_true", default=True,
                   help="one rank runs the scheduler (default)")
    p.add_argument("--no-scheduler", dest="scheduler", action="store_false",
                   help="workers only, on every rank, joining SCHEDULER_ADDRESS or --scheduler-file")
    p.add_argument("--exclusive-workers", dest="exclusive", action="store_true", default=True,
                   help="workers only on ranks without the scheduler (default)")
    p.add_argument("--inclusive-workers", dest="exclusive", action="store_false",
                   help="the scheduler's rank runs a worker too")
    p.add_argument("--interface", help="network interface, e.g. ib0")
    p.add_argument("--protocol", help="e.g. tcp:// or tls://")
    p.add_argument("--nthreads", type=int, default=None, help="threads per worker (default: as dask, the cores)")
    p.add_argument("--memory-limit", default="auto", help='bytes per worker, e.g. "4GB" (default auto)')
    p.add_argument("--local-directory", help="worker scratch directory")
    p.add_argument("--nanny", dest="nanny", action="store_true", default=True,
                   help="start each worker under a nanny: restarts, memory limits (default, as dask-mpi)")
    p.add_argument("--no-nanny", dest="nanny", action="store_false", help="plain workers (distributed.Worker)")
    p.add_argument("--worker-class", default=None, help="worker class (default distributed.Nanny, or "
                                                        "distributed.Worker with --no-nanny)")
    p.add_argument("--worker-options", default=None, help='JSON options of every worker, e.g. \'{"lifetime": "1h"}\'')
    p.add_argument("--name", default="dask_mpi", help="worker name prefix: workers are <prefix>-<rank> "
                                                      "(default dask_mpi, as dask-mpi)")
    p.add_argument("--death-timeout", type=float, default=60, help="seconds a worker waits for its scheduler")
    p.add_argument("--dashboard", dest="dashboard", action="store_true", default=True)
    p.add_argument("--no-dashboard", dest="dashboard", action="store_false")
    p.add_argument("--dashboard-address", default=None, help="dashboard address (default :8787)")
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
    is_client = initialize(interface=args.interface, nthreads=args.nthreads or 1,
                           local_directory=args.local_directory, memory_limit=args.memory_limit,
                           dashboard=args.dashboard, dashboard_address=args.dashboard_address or ":8787",
                           protocol=args.protocol, worker_class=args.worker_class or "distributed.Worker",
                           worker_options=_worker_options(args), security=args.tls,
                           scheduler_port=args.scheduler_port or 0)
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
    args.scheduler_address = args.scheduler_address_option or args.scheduler_address
    if args.script:
        return run_script(args)
    started = time.time()
    try:
        rank, size, comm = world(need_comm=args.scheduler)
    except MPIStartError as exc:
        fail(str(exc))
    if not args.nanny:
        worker_class = "distributed.Worker"
    else:
        worker_class = args.worker_class or "distributed.Nanny"
    name = f"{args.name}-{rank}" if args.name else rank
    worker_kw = dict(nthreads=args.nthreads, memory_limit=args.memory_limit, local_directory=args.local_directory,
                     interface=args.interface, protocol=args.protocol, worker_class=worker_class,
                     death_timeout=args.death_timeout, worker_options=_worker_options(args))
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
    needed = 1 + max(args.scheduler_rank, int(args.exclusive))
    if size < needed:
        fail(f"{WorldTooSmallException.__name__}: not enough MPI ranks to start a cluster with "
             f"exclusive_workers={args.exclusive} and scheduler_rank={args.scheduler_rank}: found {size}, "
             f"need {needed} (run with more ranks, or --inclusive-workers to put a worker beside the scheduler)")
    return launch(rank, comm, started, client_rank=None, tls=args.tls,
                  scheduler=dict(interface=args.interface, protocol=args.protocol, port=args.scheduler_port,
                                 dashboard=args.dashboard, dashboard_address=args.dashboard_address,
                                 scheduler_file=args.scheduler_file),
                  worker=worker_kw, worker_name=lambda r: f"{args.name}-{r}" if args.name else r,
                  scheduler_rank=args.scheduler_rank, inclusive=not args.exclusive)


def _worker_options(args) -> dict:
    if not args.worker_options:
        return {}
    try:
        options = json.loads(args.worker_options)
    except ValueError as exc:
        fail(f"--worker-options is not JSON ({exc}); write e.g. --worker-options '{{\"lifetime\": \"1h\"}}'")
    if not isinstance(options, dict):
        fail("--worker-options must be a JSON object, e.g. '{\"lifetime\": \"1h\"}'")
    return options


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
