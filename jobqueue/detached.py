"""Named clusters whose scheduler and manager live in a batch job: `jobqueue up`, `down`, `list`.

``up`` validates the keywords, writes the cluster's owner-only directory
(``<state-directory>/named/<name>``: cluster.json), submits the scheduler job (a head,
jobqueue.head), follows it in the queue until its scheduler answers (or fails with its
log), asks it for the worker jobs, and returns: no process stays on the login node.
``attach(name)`` (jobqueue.attached) and ``connect(name)`` reach it from any process of the
owner; ``down(name)`` stops it and checks with the batch system that nothing is left.

The rendezvous files are private (0700 directory, 0600 files) and the scheduler accepts
only TLS connections with the owner's certificate: other users can neither list, read nor
connect.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from typing import Any, Callable

from . import files
from .files import write_private
from .head import CONTROL, read_json
from .systems.base import BatchSystem, JobState

# keywords about the worker jobs' size and command; the scheduler job gets its own size
WORKER_ONLY = {"cores", "memory", "processes", "walltime", "job_cpu", "job_mem", "job_nodes", "resource_spec",
               "worker_extra_args", "worker_command", "nanny", "death_timeout", "local_directory", "job_name",
               "log_directory", "ncpus", "mem", "job_script_epilogue", "gpus", "worker_resources", "container",
               "container_runtime"}
# what the batch system's commands need on a compute node, passed from the login node (PATH merged)
ENVIRONMENT = ("PATH", "PYTHONPATH", "SLURM_CONF", "SGE_ROOT", "SGE_CELL", "SGE_QMASTER_PORT", "SGE_EXECD_PORT",
               "SGE_CLUSTER_NAME", "PBS_CONF_FILE", "PBS_SERVER", "LSF_ENVDIR", "LSF_SERVERDIR", "LSF_BINDIR",
               "CONDOR_CONFIG", "FLUX_URI", "OAR_CONFIG_FILE", "DASK_CONFIG")


def record_path(name: str) -> str:
    return os.path.join(files.named_dir(name), "cluster.json")


def read_record(name: str) -> dict:
    """The named cluster's record (cluster.json) with head.json's contents under "head"."""
    record = read_json(record_path(name))
    if record is None:
        names = ", ".join(files.named_clusters()) or "none"
        raise ValueError(f"no cluster named {name!r} (yours: {names}); start one with "
                         f"`jobqueue up SYSTEM --name {name} ...`")
    record["head"] = read_json(os.path.join(files.named_dir(name), "head.json")) or {}
    return record


def _system(record: dict) -> BatchSystem:
    from .systems import load

    return load(record["system"])()


def head_state(record: dict, system: BatchSystem | None = None) -> tuple[str, str]:
    """(state, reason) of the named cluster's scheduler job, asked of the batch system
    ("gone" when it no longer knows the job; a local head is a process on this machine)."""
    job_id = record.get("head_job_id")
    if not job_id:
        return "unknown", "not submitted"
    if record["system"] == "local":
        import psutil

        try:
            alive = psutil.Process(int(job_id)).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
        except psutil.Error:
            alive = False
        return ("running", "") if alive else ("gone", "")
    from .commands import CommandError

    try:
        status = asyncio.run((system or _system(record)).status([job_id])).get(job_id)
    except (CommandError, OSError) as exc:
        return "unknown", f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    if status is None or status.gone:
        return "gone", ""
    return status.state.value, status.reason


def control(record: dict, op: str, timeout: float = 10.0, **kwargs: Any):
    """Call the head's ``jobqueue`` handler once (a short-lived TLS connection)."""
    from distributed.core import rpc

    from .security import file_security

    info = read_json(os.path.join(files.named_dir(record["name"]), "scheduler.json"))
    if not info:
        raise ConnectionError(f"cluster {record['name']!r} has no running scheduler (no scheduler.json)")
    security = file_security(info)
    args = security.get_connection_args("client") if security else {}

    async def call():
        async with rpc(info["address"], connection_args=args, timeout=timeout) as r:
            return await asyncio.wait_for(getattr(r, CONTROL)(action=op, **kwargs), timeout)

    return asyncio.run(call())


class Detachable:
    """The named-cluster class methods of every cluster class (a mixin of JobQueueCluster)."""

    @classmethod
    def up(cls, name: str, jobs: int = 0, **kwargs: Any):
        """Start a named cluster whose scheduler and manager run in a batch job of their own and
        outlive this process (`jobqueue up`); returns it attached. Keywords as the constructor's,
        plus ``scheduler_cores``, ``scheduler_memory``, ``scheduler_walltime`` and ``timeout``.
        A later process gets it back with ``jobqueue.attach(name)`` or ``<Class>.from_name(name)``."""
        return up(cls.system_cls.name, name, jobs, **kwargs)

    @classmethod
    def from_name(cls, name: str):
        """The named cluster ``name`` of this user (distributed's Cluster.from_name): jobqueue.attach."""
        from .attached import attach

        return attach(name)


def up(system: str, name: str, jobs: int = 0, *, scheduler_cores: int = 1, scheduler_memory: str = "2GB",
       scheduler_walltime: str | None = None, timeout: float = 600, echo: Callable[[str], None] = print,
       **job_kwargs: Any):
    """Start the named cluster ``name`` on ``system``; returns an attached cluster (jobqueue.attach)."""
    from .attached import attach
    from .cluster import CLUSTER_CLASSES
    from .scripts import render_head

    if system not in CLUSTER_CLASSES:
        raise ValueError(f"invalid system {system!r}; write one of {', '.join(CLUSTER_CLASSES)}")
    cls = CLUSTER_CLASSES[system]
    directory = files.named_dir(name)
    head_kwargs = _head_keywords(cls, job_kwargs)
    walltime = scheduler_walltime or job_kwargs.get("walltime")
    head_spec = cls.build_spec(**head_kwargs, cores=scheduler_cores, memory=scheduler_memory, processes=1,
                               job_name=f"{name}-scheduler", log_directory=os.path.join(directory, "logs"),
                               **({"walltime": walltime} if walltime else {}))
    batch = cls.system_cls()
    if os.path.exists(record_path(name)):
        old = read_record(name)
        state, _ = head_state(old, batch)
        if state in ("pending", "running", "unknown"):
            raise ValueError(f"a cluster named {name!r} exists (scheduler job {old.get('head_job_id')}, {state}); "
                             f"attach with jobqueue.attach({name!r}), stop it with `jobqueue down {name}`, "
                             "or choose another --name")
        shutil.rmtree(directory, ignore_errors=True)
    files.named_dir(name, create=True)
    files.private_dir(os.path.join(directory, "logs"))
    import dask

    names = ENVIRONMENT + tuple(dask.config.get("jobqueue.up.environment", None) or ())
    record = {"name": name, "system": system, "job_kwargs": job_kwargs, "jobs": jobs, "created": time.time(),
              "scheduler": {"cores": scheduler_cores, "memory": scheduler_memory, "walltime": walltime},
              "environment": {k: v for k, v in os.environ.items() if k in names or k.startswith("DASK_")},
              "head_job_id": None}
    write_private(record_path(name), json.dumps(record, indent=1))
    script = render_head(head_spec, batch, directory)
    log_paths = batch.log_paths(head_spec)
    try:
        job_id = asyncio.run(batch.submit(script, log_paths, name=f"{name}-scheduler"))
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    record["head_job_id"] = job_id
    record["head_logs"] = [p.replace("%J", batch.log_id(job_id)) for p in log_paths]
    write_private(record_path(name), json.dumps(record, indent=1))
    echo(f"jobqueue up: cluster {name!r}: scheduler job {job_id} submitted to {system}")
    try:
        head = _wait_for_head(record, batch, timeout, echo)
    except BaseException:
        asyncio.run(batch.cancel([job_id]))
        wait_gone(batch, [job_id], 30)
        shutil.rmtree(directory, ignore_errors=True)
        raise
    echo(f"scheduler at {head['address']}; dashboard {head.get('dashboard') or '-'}")
    if jobs:
        _start_workers(record, jobs, echo)
    return attach(name)


def _head_keywords(cls, job_kwargs: dict) -> dict:
    """Check the keywords before anything is submitted; the scheduler job's share of them."""
    from .keywords import CLUSTER_KEYWORDS

    cluster_keys = {kw.name for kw in CLUSTER_KEYWORDS}
    try:
        json.dumps(job_kwargs)
    except TypeError as exc:
        raise ValueError(f"invalid keyword value for a named cluster ({exc}): its scheduler job reads the keywords "
                         "from a file; write strings, numbers, lists or dicts (e.g. security is always the "
                         "owner's TLS)") from None
    for key in ("security", "loop", "asynchronous", "scheduler_cls", "job_cls", "n_workers"):
        if key in job_kwargs:
            raise ValueError(f"invalid keyword {key}= for a named cluster: its scheduler job sets it; leave it out"
                             + (" and pass jobs=N" if key == "n_workers" else ""))
    job = {k: v for k, v in job_kwargs.items() if k not in cluster_keys or k == "interface"}
    cls.build_spec(**job)
    return {k: v for k, v in job.items() if k not in WORKER_ONLY}


def _start_workers(record: dict, jobs: int, echo) -> None:
    """Ask the head for the first worker jobs; stop the cluster if it cannot submit any."""
    name = record["name"]
    info = control(record, "scale", jobs=jobs)
    deadline = time.monotonic() + 60
    while len(info["job_ids"]) < jobs and not info["failures"] and time.monotonic() < deadline:
        time.sleep(0.5)
        info = control(record, "info")
    echo(f"worker jobs: {' '.join(info['job_ids']) or '-'} ({info['summary']})")
    if info["failures"] and not info["job_ids"]:
        down(name, echo=echo)
        raise RuntimeError(
            f"the scheduler job could not submit worker jobs, so cluster {name!r} was stopped: "
            f"{info['failures'][-1]}\nIf your site does not allow submitting jobs from compute nodes, "
            "run the cluster in your own process instead (see the docs, \"Ways to run\").")
    for failure in info["failures"]:
        echo(f"warning: {failure}")


def _wait_for_head(record: dict, batch: BatchSystem, timeout: float, echo) -> dict:
    """Follow the scheduler job until its scheduler answers; raise with its log if it ends."""
    start = time.monotonic()
    said = None
    path = os.path.join(files.named_dir(record["name"]), "head.json")
    while True:
        head = read_json(path) or {}
        if head.get("state") == "running":
            try:
                control(record, "info", timeout=5)
                return head
            except (OSError, asyncio.TimeoutError) as exc:
                if time.monotonic() - start > timeout:
                    raise TimeoutError(f"the scheduler at {head.get('address')} does not answer: {exc}") from None
        state, reason = head_state(record, batch)
        if (state, reason) != said:
            echo(f"scheduler job {record['head_job_id']}: {state}" + (f" ({reason})" if reason else "")
                 + f" after {time.monotonic() - start:.0f} s")
            said = (state, reason)
        if _ended(state):
            if state == "gone" and time.monotonic() - start < 10:  # not listed yet by a slow system
                time.sleep(0.5)
                continue
            raise RuntimeError(f"the scheduler job {record['head_job_id']} ended ({state}) before its scheduler "
                               f"answered; its log:\n{_log_tail(record)}")
        if timeout and time.monotonic() - start > timeout:
            raise TimeoutError(f"the scheduler job {record['head_job_id']} is still {state} after {timeout:g} s; "
                               f"it was cancelled. Try again with a longer --timeout (0: wait as long as it takes)")
        time.sleep(0.5)


def _ended(state: str) -> bool:
    return state == "gone" or state in {s.value for s in JobState if s.finished}


def _log_tail(record: dict, lines: int = 30) -> str:
    from .tracker import tail

    parts = [f"--- {p}\n{tail(p, lines)}" for p in record.get("head_logs", []) if tail(p, lines)]
    return "\n".join(parts) or "(no log written)"


def wait_gone(batch: BatchSystem, job_ids: list[str], timeout: float, interval: float = 0.5) -> list[str]:
    """Ask the batch system itself (not our bookkeeping) until none of ``job_ids`` is queued or
    running (a job it purged counts as ended); the ones still alive."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = asyncio.run(batch.status(job_ids)) if job_ids else {}
        alive = [i for i, st in statuses.items() if not st.state.finished and not st.gone]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(interval)


def down(name: str, timeout: float = 60, echo: Callable[[str], None] = print) -> None:
    """Stop the named cluster: its head cancels the worker jobs and exits; then check with the
    batch system that neither they nor the scheduler job are left (cancelling what is)."""
    from .watchdog import cancel_intents, cancel_jobs

    record = read_record(name)
    batch = _system(record)
    head_id = record.get("head_job_id")
    workers: list[str] = []
    try:
        workers = control(record, "down")["job_ids"]
        echo(f"cluster {name!r}: the scheduler cancels its worker jobs: {' '.join(workers) or 'none'}")
    except Exception as exc:  # noqa: BLE001 - whatever the head's state, the jobs go
        echo(f"cluster {name!r}: the scheduler does not answer ({exc}); cancelling its jobs here")
    deadline = time.monotonic() + timeout
    while head_id and time.monotonic() < deadline and head_state(record, batch)[0] in ("running", "pending"):
        time.sleep(0.5)
    if head_id and head_state(record, batch)[0] in ("running", "pending", "unknown"):
        _cancel_head(record, batch)
    journal = read_json(record["head"].get("journal") or "") if record["head"].get("journal") else None
    if journal and journal.get("job_ids"):
        ok, line = cancel_jobs(journal)
        cancel_intents(journal)
        workers += [str(i) for i in journal["job_ids"]]
        echo(line)
        if ok:
            os.unlink(record["head"]["journal"])
    left = wait_gone(batch, [i for i in [head_id, *workers] if i and record["system"] != "local"], 30)
    if left:
        asyncio.run(batch.cancel(left))
        left = wait_gone(batch, left, 30)
    if left:
        raise RuntimeError(f"{record['system']} still lists jobs {' '.join(left)} of cluster {name!r}; "
                           f"run `jobqueue down {name}` again")
    shutil.rmtree(files.named_dir(name), ignore_errors=True)
    echo(f"cluster {name!r} is down: scheduler job {head_id} and {len(set(workers))} worker job(s) ended; "
         f"{record['system']} lists none of them")


def _cancel_head(record: dict, batch: BatchSystem) -> None:
    job_id = record["head_job_id"]
    if record["system"] == "local":
        import signal

        try:
            os.killpg(int(job_id), signal.SIGTERM)
            for _ in range(100):
                if head_state(record)[0] != "running":
                    return
                time.sleep(0.1)
            os.killpg(int(job_id), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return
    asyncio.run(batch.cancel([job_id]))


def list_named() -> list[dict]:
    """One row per named cluster of this user: name, system, scheduler job id and state,
    workers, jobs by state, walltime left."""
    rows = []
    for name in files.named_clusters():
        try:
            record = read_record(name)
        except ValueError:
            continue
        state, reason = head_state(record)
        row = {"name": name, "system": record["system"], "job_id": record.get("head_job_id") or "-",
               "state": state + (f" ({reason})" if reason else ""), "workers": "-", "jobs": "-", "left": "-"}
        end = record["head"].get("end")
        if end:
            left = max(0, int(end - time.time()))
            row["left"] = f"{left // 3600}:{left % 3600 // 60:02d}:{left % 60:02d}"
        if state == "running" and record["head"].get("state") == "running":
            try:
                info = control(record, "info", timeout=5)
                row.update(workers=str(info["workers"]), jobs=info["summary"])
            except Exception as exc:  # noqa: BLE001 - a row for it all the same
                row["jobs"] = f"(scheduler not answering: {type(exc).__name__})"
        rows.append(row)
    return rows
