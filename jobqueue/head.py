"""The head of a named cluster: the Dask scheduler and the cluster manager, inside a batch job.

`jobqueue up` submits a scheduler job that runs ``python -m jobqueue.head DIRECTORY``, where
DIRECTORY is the cluster's owner-only directory (``<state-directory>/named/<name>``, on the
home file system the compute nodes share). The head reads ``cluster.json`` (what the user
asked for), starts the same JobQueueCluster a notebook would, in this process, and writes

    scheduler.json  the address and the paths of the owner's TLS credentials
                    (jobqueue.connect(name) reads it)
    head.json       pid, host, scheduler address, dashboard link, the job's end, its state

Worker jobs are submitted from here (sbatch/qsub on a compute node), tracked, replaced and
retired by the same supervisor as in a notebook; the journal and its watchdog guard them
as they guard any cluster. Attached processes (jobqueue.attach) control it through one
scheduler handler, ``jobqueue``: info, scale, adapt, logs, down.

The head ends, cancelling every worker job first, when `jobqueue down` asks, when the job
is signalled (scancel, qdel, preemption: SIGTERM, and the system's warning signals), and
shortly before its own walltime -- after telling every connected client (a warning in
their process) how long is left.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import time

logger = logging.getLogger("jobqueue.head")

CONTROL = "jobqueue"  # the scheduler handler attached processes call
END_NOTICE = 600.0  # clients are told this long (at most) before the head stops at its walltime


def read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def restore_environment(record: dict) -> None:
    """Give this job what the batch system's commands need (what `jobqueue up` saw on the login
    node: PATH entries, SGE_ROOT, ...), and drop the variables of this job that a submission from
    inside it would otherwise pass on to the worker jobs (Slurm's SLURM_* settings)."""
    config_changed = False
    for key, value in (record.get("environment") or {}).items():
        config_changed |= key.startswith("DASK_") and key not in os.environ
        if key == "PATH":  # the login node's order first: the same qsub the user ran
            login = value.split(os.pathsep)
            here = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p not in login]
            os.environ["PATH"] = os.pathsep.join(login + here)
        elif key not in os.environ:
            os.environ[key] = value
    # this job's own settings, which worker jobs submitted from here would otherwise inherit
    # (Slurm passes the environment on): its end, retirement margins, Slurm's SLURM_* values
    for key in [k for k in os.environ if (k.startswith(("SLURM_", "SBATCH_")) and k != "SLURM_CONF")
                or k.startswith("JOBQUEUE_")]:
        del os.environ[key]
    if config_changed:  # the user's DASK_* settings on the login node hold here too
        import dask

        dask.config.refresh()


class Head:
    def __init__(self, directory: str):
        self.directory = directory
        self.record = read_json(os.path.join(directory, "cluster.json"))
        if self.record is None:
            raise SystemExit(f"jobqueue head: no cluster.json in {directory}")
        self.name = self.record["name"]
        self.cluster = None
        self.stopping: asyncio.Event | None = None
        self.reason = ""
        self.started = time.time()
        end = os.environ.get("JOBQUEUE_JOB_END")
        self.end = float(end) if end else None
        self.margin = float(os.environ.get("JOBQUEUE_RETIRE_MARGIN", "60"))

    # --- files ----------------------------------------------------------------------
    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def write_state(self, state: str) -> None:
        from .files import write_private

        c = self.cluster
        info = {"name": self.name, "state": state, "reason": self.reason, "pid": os.getpid(),
                "host": socket.gethostname(), "started": self.started, "end": self.end, "updated": time.time(),
                "address": c._scheduler_address() if c is not None else None,
                "dashboard": c.dashboard_link if c is not None and state == "running" else None,
                "journal": c.tracker.journal.path if c is not None and c.tracker.journal else None}
        write_private(self.path("head.json"), json.dumps(info, indent=1))

    # --- life -----------------------------------------------------------------------
    async def run(self) -> int:
        from .cluster import CLUSTER_CLASSES

        self.stopping = asyncio.Event()
        restore_environment(self.record)
        cls = CLUSTER_CLASSES[self.record["system"]]
        kwargs = dict(self.record.get("job_kwargs") or {})
        kwargs.setdefault("job_name", f"{self.name}-worker")
        self.cluster = cluster = await cls(asynchronous=True, **kwargs)
        cluster.named = {"name": self.name, "system": self.record["system"],
                         "head_job_id": (read_json(self.path("cluster.json")) or {}).get("head_job_id")}
        cluster.scheduler.handlers[CONTROL] = self.control
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, *_warning_signals()):
            loop.add_signal_handler(signum, self.stop, signal.Signals(signum).name)
        if self.end is not None:
            stop_at = self.end - self.margin
            notice = min(END_NOTICE, max(self.margin, (stop_at - time.time()) / 4))
            loop.call_later(max(0.0, stop_at - notice - time.time()), self.warn_end, stop_at)
            loop.call_later(max(0.0, stop_at - time.time()), self.stop, "walltime")
        try:
            cluster.write_scheduler_file(self.path("scheduler.json"))
            self.write_state("running")
            print(f"jobqueue head: cluster {self.name!r} scheduler at {cluster.scheduler_address}, "
                  f"dashboard {cluster.dashboard_link}", file=sys.stderr, flush=True)
            await self.stopping.wait()
        finally:
            await self.shutdown()
        return 0

    def stop(self, reason: str) -> None:
        if self.stopping is not None and not self.stopping.is_set():
            self.reason = reason
            print(f"jobqueue head: stopping ({reason})", file=sys.stderr, flush=True)
            self.stopping.set()

    def warn_end(self, stop_at: float) -> None:
        left = max(0.0, stop_at - time.time())
        message = (f"jobqueue: cluster {self.name!r}: its scheduler job reaches its walltime; in {left:.0f} s the "
                   f"scheduler stops and its worker jobs are cancelled. Gather your results; `jobqueue up` "
                   f"starts a new cluster (--scheduler-walltime sets how long it lives).")
        print(message, file=sys.stderr, flush=True)
        import pickle

        from .reports import ClusterEndingWarning

        # a warning in every connected client's process (distributed's own "warn" topic)
        self.cluster.scheduler.log_event("warn", {"message": pickle.dumps(message),
                                                  "category": pickle.dumps(ClusterEndingWarning)})
        self.cluster.scheduler.log_event("jobqueue", {"event": "walltime", "message": message, "stop_at": stop_at})

    async def shutdown(self) -> None:
        c = self.cluster
        if c is None:
            return
        with _suppress():
            os.unlink(self.path("scheduler.json"))
        self.write_state("stopping")
        if self.reason not in ("down",):
            # a signal: the batch system kills this job soon; cancel the workers first
            with _suppress():
                await c.tracker.cancel_all()
        with _suppress():
            await c.close()
        self.write_state("stopped")

    # --- the control handler ------------------------------------------------------
    async def control(self, action: str, **kwargs):
        c = self.cluster
        if action == "info":
            return self.info()
        pool = c.pools[kwargs.pop("pool", None) or "default"] if action in ("scale", "adapt", "adapt-stop") else None
        if action == "add-pool":
            c.add_pool(kwargs.pop("name"), **kwargs)
            return self.info()
        if action == "scale":
            pool.scale(**{k: v for k, v in kwargs.items() if v is not None})
            return self.info()
        if action == "adapt":
            pool.adapt(**{k: v for k, v in kwargs.items() if v is not None})
            return self.info()
        if action == "adapt-stop":
            adaptive = c._adaptive if pool.name == "default" else pool._adaptive
            if adaptive is not None:
                adaptive.stop()
            return self.info()
        if action == "logs":
            return c.logs()
        if action == "down":
            ids = list(c.job_ids)
            self.stop("down")
            return {"job_ids": ids}
        raise ValueError(f"unknown jobqueue operation {action!r}; known: info, scale, adapt, adapt-stop, logs, down")

    def info(self) -> dict:
        c = self.cluster
        return {"name": self.name, "system": self.record["system"], "address": c.scheduler_address,
                "dashboard": c.dashboard_link, "workers": len(c.scheduler.workers),
                "summary": c._state_words(), "job_ids": list(c.job_ids),
                "jobs": [dataclasses.astuple(row) for row in c.jobs], "end": self.end, "started": self.started,
                "adaptive": c._adaptive_running(), "failures": [str(f) for f in c.failures[-3:]],
                "pools": {name: p.state_words() for name, p in c.pools.items()},
                "host": socket.gethostname(), "pid": os.getpid()}


def _warning_signals() -> list[int]:
    from .runtime.worker import retire_signals

    return retire_signals()


class _suppress:
    """Log and swallow an error of one shutdown step: the next steps must still run."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is not None and not isinstance(exc, (FileNotFoundError, asyncio.CancelledError)):
            logger.warning("jobqueue head: %s: %s", kind.__name__, exc)
        return exc is not None and not isinstance(exc, asyncio.CancelledError)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m jobqueue.head DIRECTORY  (run by the scheduler job of `jobqueue up`)",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return asyncio.run(Head(os.path.abspath(argv[0])).run())


if __name__ == "__main__":
    sys.exit(main())
