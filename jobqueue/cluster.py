"""JobQueueCluster: a Dask SpecCluster whose workers are batch jobs, and the public
cluster classes (SLURMCluster, SGECluster, ...) derived from the system registry.

The scheduler runs in this process (the login node); each "worker" of the SpecCluster is
one batch job (jobqueue.job), which may start several Dask worker processes. This module
is the glue: it wires keywords (jobqueue.keywords), security, the submission queue and
the supervisor to distributed's SpecCluster, and implements scale/adapt, waiting,
the job table and shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
import uuid
from typing import Any, ClassVar

import dask
from dask.utils import parse_timedelta
from distributed.core import Status
from distributed.deploy.cluster import Cluster
from distributed.deploy.spec import SpecCluster
from distributed.scheduler import Scheduler
from distributed.security import Security

from . import config, files, keywords
from .commands import CommandError
from .dashboard import dashboard_token, gated_scheduler
from .detached import Detachable
from .job import Job, JobSubmissionError, job_class
from .pools import DEFAULT, PoolAdaptive, Pools
from .submission import SubmissionQueue, site_policy
from .cluster_reports import ClusterReports
from .reports import WaitProgress
from .security import Credentials, resolve_security
from .spec import JobSpec
from .supervisor import Supervisor
from .systems import REGISTRY, BatchSystem, LocalSystem, load
from .tracker import Journal, JobTracker

logger = logging.getLogger("jobqueue")

__all__ = ["JobQueueCluster", "JobSubmissionError", "cluster_class"]


class JobQueueCluster(ClusterReports, Detachable, Pools, SpecCluster):
    """Base class of the cluster classes: a Dask cluster whose workers are batch jobs.
    Use SLURMCluster, SGECluster, PBSCluster, ... (their docstrings list every keyword)."""

    system_cls: ClassVar[type[BatchSystem] | None] = None
    config_name: ClassVar[str] = ""
    job_cls: ClassVar[type[Job] | None] = None

    def __init__(self, n_workers: int = 0, job_cls: type[Job] | None = None, loop=None,
                 security: Security | bool | None = None, shared_temp_directory: str | None = None,
                 silence_logs: str | bool = "error", name: str | None = None,
                 asynchronous: bool = False, dashboard_address: str | None = None,
                 host: str | None = None, scheduler_options: dict | None = None,
                 scheduler_cls: type = Scheduler, interface: str | None = None,
                 protocol: str | None = None, config_name: str | None = None,
                 template: str | None = None, max_start_failures: int | None = None,
                 poll_interval: float | str | None = None, max_jobs: int | None = None,
                 max_pending_jobs: int | None = None, job_array: bool | None = None, pools: dict | None = None,
                 **job_kwargs: Any):
        self.status = Status.created
        cls_name = type(self).__name__
        self.job_cls = job_cls = job_cls or type(self).job_cls
        keywords.check_cluster_keywords(cls_name, job_cls, dashboard_address=dashboard_address, host=host)
        self.system_cls = job_cls.system_cls
        self.config_name = config_name = config_name or job_cls.default_config_name()
        cfg = functools.partial(config.get, config_name)
        interface = interface if interface is not None else cfg("interface")
        template = template if template is not None else cfg("template")
        self.shared_temp_directory = shared_temp_directory or cfg("shared-temp-directory")

        security = resolve_security(security, protocol, cls_name, self.shared_temp_directory)
        if protocol is None and security is not None:
            protocol = "tls://"
        self._cluster_id = f"{cls_name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._run_dir = files.run_dir(self._cluster_id)
        self._scheduler_files: list[str] = []
        if not job_kwargs.get("log_directory") and not cfg("log-directory"):
            # keep every job's output even when the user chose no log directory
            job_kwargs["log_directory"] = os.path.join(self._run_dir, "logs")
        given = dict(job_kwargs)
        spec = keywords.build_spec(cls_name, self.system_cls, config_name, interface=interface, protocol=protocol,
                                   **job_kwargs)

        keywords.name_hint(cls_name, name, given, spec.job_name)
        self._system = self.system_cls()
        self._tracker = JobTracker(self._system, Journal(files.journal_path(self._cluster_id), self._system),
                                   lost_after=parse_timedelta(dask.config.get("jobqueue.lost-after", "10s")))
        credentials_base = (self.shared_temp_directory or dask.config.get("jobqueue.credentials-directory", None)
                            or self._run_dir)
        self._credentials = Credentials(os.path.expanduser(os.path.expandvars(credentials_base)))
        limits = {key: keywords.queue_limit(key, value if value is not None else cfg(key.replace("_", "-")))
                  for key, value in (("max_jobs", max_jobs), ("max_pending_jobs", max_pending_jobs))}
        self._queue_options = dict(template=template, worker_args=self._credentials.worker_args(security),
                                   token=self._cluster_id.rsplit("-", 1)[-1][:6], **limits,
                                   job_array=bool(cfg("job-array", True) if job_array is None else job_array),
                                   **site_policy(self._system, config_name))
        self._submissions = SubmissionQueue(spec, self._system, self._tracker, **self._queue_options)
        self.supervisor = Supervisor.from_config(self, poll_interval, max_start_failures)
        if spec.log_directory:
            files.private_dir(spec.log_directory, tighten=False)
        files.prune_old_runs()
        options = {"protocol": protocol, "dashboard_address": ":8787", "security": security,
                   **(scheduler_options if scheduler_options is not None else cfg("scheduler-options", {}) or {})}
        if "host" not in options and "interface" not in options:
            options["interface"] = interface
        self._dashboard_token = dashboard_token(cls_name)
        scheduler = {"cls": functools.partial(gated_scheduler, scheduler_cls, self._dashboard_token), "options": options}
        worker = self._default_pool(given, interface=interface, protocol=protocol, security=security)
        super().__init__(scheduler=scheduler, worker=worker,
                         loop=loop, security=security, silence_logs=silence_logs, asynchronous=asynchronous, name=name)
        self._add_pools(pools if pools is not None else cfg("pools", {}))
        if n_workers:
            self.scale(n_workers)

    def _worker_spec(self, job_cls: type[Job], options: dict, submissions: SubmissionQueue) -> dict:
        """SpecCluster's template of one "worker": a Job, with the pool's job keywords
        (what dask-jobqueue users read in ``cluster.new_spec``) and its submission queue."""
        worker: dict[str, Any] = {"cls": job_cls, "options": {**options, "submissions": submissions}}
        spec = submissions.spec
        if spec.workers_per_job > 1:
            worker["group"] = [f"-{i}" for i in range(spec.workers_per_job)]
        return worker

    @classmethod
    def build_spec(cls, config_name: str | None = None, interface: str | None = None,
                   protocol: str | None = None, **job_kwargs: Any) -> JobSpec:
        """Validate job keywords (falling back to ``jobqueue.<config_name>.*``) into a JobSpec."""
        return keywords.build_spec(cls.__name__, cls.system_cls, config_name or cls.config_name,
                                   interface=interface, protocol=protocol, **job_kwargs)

    def write_scheduler_file(self, path: str) -> str:
        """Write an owner-only file another client (e.g. Jupyter on another node) can
        connect with, security included: ``jobqueue.connect(path)``. Removed on close."""
        info = {"type": "Scheduler", "address": self.scheduler_address, "id": self._cluster_id}
        path = self._credentials.scheduler_file(path, info, self.security)
        self._scheduler_files.append(path)
        return path

    # --- what a dask-jobqueue user reads --------------------------------------------
    job_spec = property(lambda self: self._submissions.spec, doc="The validated JobSpec of every job.")
    batch_system = property(lambda self: self._system, doc="The BatchSystem the jobs go to.")
    tracker = property(lambda self: self._tracker, doc="The JobTracker: every job submitted, by id.")
    job_name = property(lambda self: self.job_spec.job_name)
    queue = property(lambda self: self.job_spec.queue)
    failures = property(lambda self: list(self.supervisor.failures),
                        doc="Submission errors and jobs that ended before their workers connected, oldest first.")
    replacements = property(lambda self: self.supervisor.replacements)

    @property
    def job_header(self) -> str:
        return "\n".join(self._system.header(self.job_spec))

    def job_script(self) -> str:
        """The job script a job of this cluster runs (with the worker name "dummy-name")."""
        return self._submissions.render(self._scheduler_address())

    def _scheduler_address(self) -> str | None:
        try:
            return self.scheduler.address
        except (AttributeError, ValueError):
            return None

    @property
    def _dummy_job(self) -> Job:
        """A job of this cluster that is never started (dask-jobqueue's attribute)."""
        return self.job_cls(self._scheduler_address(), name="dummy-name", submissions=self._submissions)

    @property
    def job_ids(self) -> list[str]:
        """Ids of this cluster's jobs that are queued or running and not being cancelled."""
        return [i for i in self._tracker.live_ids() if not self._tracker.jobs[i].cancelled_by_us]

    def _new_worker_name(self, worker_number: int) -> str:
        return f"{self._name}-{worker_number}"

    # --- scaling --------------------------------------------------------------------
    def scale(self, n: int | None = None, jobs: int = 0, memory: str | None = None, cores: int | None = None):
        """Scale the default pool to ``n`` workers, or ``jobs`` jobs, or enough jobs for ``memory`` /
        ``cores`` (other pools: ``cluster.pools[name].scale``)."""
        return self.pools[DEFAULT].scale(n, jobs=jobs, memory=memory, cores=cores)

    def _before_scale(self, jobs: int) -> None:
        """Refuse what cannot be submitted; an explicit scale is the user asking again."""
        if jobs:
            self._refuse_if_closed(f"scale({jobs} jobs)")
        if jobs and not self._system.available():
            raise RuntimeError(
                f"cannot submit {self._system.name} jobs: `{self._system.submit_command}` is not on PATH "
                f"on this machine. Run on a login node of the cluster, or use jobqueue.LocalCluster.")
        if jobs and self.status == Status.running and not isinstance(self._system, LocalSystem):
            refuse_loopback(self.scheduler_address, self._system.name)
        if self.supervisor.gave_up and not self._adaptive_running():
            self.supervisor.try_again()  # an explicit scale() is the user asking again; adapt's ticks are not
        for name, job in list(self.workers.items()):  # failed submissions: the next round tries again
            if job.status == Status.failed:
                del self.workers[name]
                self.worker_spec.pop(name, None)

    def adapt(self, *args, minimum_jobs: int | None = None, maximum_jobs: int | None = None, **kwargs):
        """Scale the default pool with load between ``minimum_jobs`` and ``maximum_jobs`` (or
        workers, as in Dask); with several pools, only for the work this pool takes."""
        self._refuse_if_closed("adapt()")
        processes = self.job_spec.workers_per_job
        if minimum_jobs is not None:
            kwargs["minimum"] = minimum_jobs * processes
        if maximum_jobs is not None:
            kwargs["maximum"] = maximum_jobs * processes
        kwargs.setdefault("Adaptive", functools.partial(PoolAdaptive, pool=self.pools[DEFAULT]))
        return super().adapt(*args, **kwargs)

    def _refuse_if_closed(self, what: str) -> None:
        if self.status in (Status.closing, Status.closed):
            name = type(self).__name__
            raise RuntimeError(f"cannot {what}: this {name} is {self.status.name} (its jobs were cancelled); "
                               f"start a new cluster, e.g. {name}(cores=..., memory=...)")

    def _connected(self) -> list[str]:
        """The names of the Dask workers connected now."""
        return [str(ws.get("name")) for ws in self.scheduler_info.get("workers", {}).values()]

    def _job_of(self, worker_name: str) -> str:
        """The job (SpecCluster worker) name of a Dask worker name ("<job>-<k>" with processes > 1)."""
        if worker_name in self.workers or worker_name in self.worker_spec:
            return worker_name
        base, _, suffix = worker_name.rpartition("-")
        return base if (base in self.workers or base in self.worker_spec) and suffix.isdigit() else worker_name

    def _adaptive_running(self) -> bool:
        pc = getattr(getattr(self, "_adaptive", None), "periodic_callback", None)
        return bool(pc is not None and pc.is_running())

    async def _correct_state_internal(self) -> None:
        if self.supervisor.gave_up:
            # keep the specs (what the user asked for) but submit nothing new
            for name in set(self.worker_spec) - set(self.workers):
                del self.worker_spec[name]
        try:
            await super()._correct_state_internal()
        except JobSubmissionError as exc:
            self.supervisor.record_failure(exc, self.workers.values())
        except Exception as exc:  # never leave "Task exception was never retrieved"
            logger.exception("jobqueue: scaling failed")
            self.supervisor.record_failure(JobSubmissionError(self._system.name, "?", exc), self.workers.values())

    def _possible_workers(self) -> int:
        """Workers the current jobs could still bring (submission not failed)."""
        if self.supervisor.gave_up:
            return 0
        return sum(pool.spec.workers_per_job for pool in self.pools.values() for name in pool.names()
                   if name not in self.workers or self.workers[name].status != Status.failed)

    def wait_for_workers(self, n_workers: int, timeout: float | None = None) -> None:
        """Block until ``n_workers`` workers run; raises at once with the batch system's error
        when the jobs cannot bring them, and says so when the cluster is closed."""
        self._refuse_if_closed(f"wait for {n_workers} workers")
        return super().wait_for_workers(n_workers, timeout=timeout)

    async def _wait_for_workers(self, n_workers: int = 0, timeout: float | None = None) -> None:
        self._refuse_if_closed(f"wait for {n_workers} workers")
        limit = parse_timedelta(timeout) if timeout else None
        deadline = None if not limit else time.monotonic() + limit
        progress = WaitProgress(n_workers, parse_timedelta(dask.config.get("jobqueue.progress-interval", "30s") or 0))
        try:
            while True:
                info = await self.scheduler_comm.identity(n_workers=-1)
                running = sum(1 for w in info["workers"].values() if w.get("status") == Status.running.name)
                if running >= n_workers:
                    return
                failures = self.supervisor.failures
                settling = self._correct_state_waiting is not None or self._lock.locked()
                if failures and not settling and running + self._possible_workers() < n_workers:
                    raise failures[-1]
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{running} of {n_workers} workers after {limit:g} s: {self._state_words()} "
                                       f"(job ids {' '.join(self.job_ids) or '-'})")
                progress.update(running, self._state_words())
                await asyncio.sleep(0.2)
        finally:
            progress.close()

    # --- job lifecycle --------------------------------------------------------------
    async def _start(self) -> None:
        await super()._start()
        self._busy.scheduler = self.scheduler
        self.scheduler.add_plugin(self._busy, name=self._busy.name)
        self.supervisor.start()

    def mark_connected(self, names=None) -> None:
        """Tell the supervisor which jobs brought workers (also for a worker that connected
        before its submission's answer arrived, e.g. after a slow sbatch)."""
        for name in names or self._connected():
            record = getattr(self.workers.get(self._job_of(name)), "record", None)
            if record is not None:
                self.supervisor.worker_connected(record)

    def _update_worker_status(self, op, msg) -> None:
        if op == "add":
            self.mark_connected([str(info.get("name")) for info in (msg.get("workers") or {}).values()])
        # Skip SpecCluster's lost-worker handler: it closes (and so cancels) whatever job
        # holds that name 15 s later, even a replacement. The supervisor follows real job states.
        Cluster._update_worker_status(self, op, msg)

    # --- shutdown -------------------------------------------------------------------
    async def _close(self) -> None:
        self.supervisor.stop()  # jobs that end from now on are not replaced
        await close_dropped_jobs(self)
        for pool in self.pools.values():  # SpecCluster's close scales the default pool to 0; the others too
            if pool._adaptive is not None:
                pool._adaptive.stop()
            if pool.name != DEFAULT:
                pool.resize(0)
        if self.status == Status.running:
            await ask_workers_to_exit(self.scheduler, timeout=5.0)
            await self._tracker.let_end(self._tracker.running_ids(), timeout=10.0)
        try:
            await super()._close()
        finally:
            try:
                await self._tracker.cancel_all()  # anything the per-job close missed
                self._tracker.mark_cancelled()
                self._report_usage()
            except CommandError as exc:
                logger.error("jobqueue: could not cancel jobs %s: %s (the watchdog will retry)",
                             " ".join(self._tracker.live_ids()), exc)
            self._tracker.close()
            self._system.close()
            self._credentials.remove()
            for path in self._scheduler_files:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            self._scheduler_files = []


async def close_dropped_jobs(cluster: JobQueueCluster) -> None:
    """Close the jobs the supervisor took out of the cluster's slots (they ended) but was stopped
    from closing (a slow cancel command when the cluster closed): SpecCluster's close expects
    every job it made to be closed."""
    for job in list(getattr(cluster, "_created", ())):
        if job.status == Status.running and job not in cluster.workers.values():
            with contextlib.suppress(Exception):
                await job.close()


async def ask_workers_to_exit(sched: Scheduler, timeout: float) -> None:
    """Tell every worker to close, so jobs end on their own (COMPLETED, not killed
    mid-message, which makes the scheduler log tracebacks) before we cancel the rest."""
    if getattr(sched, "status", None) != Status.running or not getattr(sched, "workers", None):
        return
    for address in list(sched.workers):
        with contextlib.suppress(Exception):
            sched.close_worker(address)
    deadline = time.monotonic() + timeout
    while sched.workers and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def refuse_loopback(address: str, system: str) -> None:
    """Refuse a scheduler address the compute nodes cannot reach, before submitting."""
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    if host in ("localhost", "::1") or host.startswith("127."):
        raise ValueError(
            f"the scheduler listens on {address}, a loopback address that {system} jobs on "
            "other nodes cannot reach. Let it listen on a network the compute nodes share: pass "
            "interface='ib0' (or 'eth0', ...), or scheduler_options={'host': '<this node's address>'}.")


def cluster_class(system: type[BatchSystem]) -> type[JobQueueCluster]:
    """The public cluster class of a registered batch system, e.g. SLURMCluster, and its
    Job class (SLURMJob), as ``job_cls``."""
    cls = type(system.cluster_name, (JobQueueCluster,), {
        "system_cls": system, "config_name": system.name, "__module__": __name__, "job_cls": job_class(system, __name__),
        "__doc__": keywords.docstring(system.summary, system, system.example)})
    cls.__signature__ = keywords.signature(system, JobQueueCluster.__init__)
    return cls


CLUSTER_CLASSES: dict[str, type[JobQueueCluster]] = {name: cluster_class(load(name)) for name in REGISTRY}
JOB_CLASSES: dict[str, type[Job]] = {name: cls.job_cls for name, cls in CLUSTER_CLASSES.items()}
globals().update({cls.__name__: cls for cls in (*CLUSTER_CLASSES.values(), *JOB_CLASSES.values())})
__all__ += [cls.__name__ for cls in (*CLUSTER_CLASSES.values(), *JOB_CLASSES.values())]
