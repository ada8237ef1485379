"""JobQueueCluster: a Dask SpecCluster whose workers are batch jobs.

The scheduler runs in this process (the login node); each "worker" of the
SpecCluster is one batch job, which may start several Dask worker processes.
Keywords and config keys are dask-jobqueue 0.9.0's, so switching is one import.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import dask
from dask.utils import parse_bytes
from distributed.core import Status
from distributed.deploy.cluster import Cluster
from distributed.deploy.spec import ProcessInterface, SpecCluster
from distributed.scheduler import Scheduler
from distributed.security import Security

from . import config
from .commands import CommandError
from .files import write_private
from .scripts import PLACEHOLDER_ADDRESS, render
from .spec import JobSpec, check_token, retirement
from .systems import BatchSystem, JobState, LocalSystem, PBSSystem, SGESystem, SlurmSystem
from .reports import (JobFailedError, JobRow, JobTable, describe_end, exit_code_from_logs, failure_report,
                      summarize, tail)
from .tracker import MISSING, Journal, JobTracker, TrackedJob

logger = logging.getLogger("jobqueue")


class UnknownKeywordError(TypeError, ValueError):
    """A keyword the cluster does not know (a TypeError, and a ValueError as in dask-jobqueue)."""


class JobSubmissionError(RuntimeError):
    """The batch system refused a job; carries the system's own error message."""

    def __init__(self, system: str, worker_name: str, cause: Exception):
        self.system = system
        self.worker_name = worker_name
        self.cause = cause
        super().__init__(f"{system} rejected the job for worker {worker_name!r}: {cause}")


# keyword -> config key, shared by every system
_JOB_KEYS: dict[str, str | None] = {
    "cores": "cores", "memory": "memory", "processes": "processes", "nanny": None,
    "death_timeout": "death-timeout", "local_directory": "local-directory",
    "worker_command": "worker-command", "worker_extra_args": "worker-extra-args",
    "job_extra_directives": "job-extra-directives", "job_directives_skip": "job-directives-skip",
    "job_script_prologue": "job-script-prologue", "job_script_epilogue": "job-script-epilogue",
    "log_directory": "log-directory", "shebang": "shebang", "python": "python",
    "job_name": "name", "walltime": "walltime",
}
# deprecated keyword -> its replacement (dask-jobqueue 0.8 renames)
_DEPRECATED: dict[str, str] = {
    "extra": "worker_extra_args", "job_extra": "job_extra_directives",
    "env_extra": "job_script_prologue", "header_skip": "job_directives_skip",
}
_CLUSTER_KEYS = {
    "n_workers", "job_cls", "loop", "security", "shared_temp_directory", "silence_logs", "name",
    "asynchronous", "dashboard_address", "host", "scheduler_options", "scheduler_cls",
    "interface", "protocol", "config_name", "template", "max_start_failures", "poll_interval",
    "max_jobs", "max_pending_jobs", "job_array",
}


@dataclass
class _JobContext:
    """What every Job of one cluster shares: built once, handed to each Job."""

    spec: JobSpec
    system: BatchSystem
    tracker: JobTracker
    template: str | None
    extra_worker_args: tuple[str, ...]
    max_jobs: int | None = None
    max_pending_jobs: int | None = None
    # jobs held back by max_jobs / max_pending_jobs, in the order they were asked for
    waiting: list = dataclasses.field(default_factory=list)
    in_flight: int = 0  # submissions started but not yet answered (they count as pending)
    job_array: bool = True  # k jobs asked for at once go in one array submission
    batch: list = dataclasses.field(default_factory=list)  # (job, future) waiting to be submitted together
    batch_task: Any = None

    def may_submit(self) -> bool:
        live = [j for j in self.tracker.jobs.values() if not j.finished and not j.cancelled_by_us]
        if self.max_jobs is not None and len(live) + self.in_flight >= self.max_jobs:
            return False
        pending = sum(1 for j in live if j.state in (JobState.PENDING, JobState.UNKNOWN)) + self.in_flight
        return self.max_pending_jobs is None or pending < self.max_pending_jobs


class Job(ProcessInterface):
    """One batch job of a cluster (one SpecCluster "worker", possibly several processes)."""

    def __init__(self, scheduler: str | None = None, name: str | None = None, *,
                 context: _JobContext, **_sizes: Any):
        # _sizes holds cores/memory, which SpecCluster reads from the spec to scale by
        # cores= or memory=; the job takes them from context.spec
        super().__init__(scheduler=scheduler, name=name)
        self.scheduler_address = scheduler
        self.name = name
        self.job_id: str | None = None
        self.error: Exception | None = None
        self._context = context

    def job_script(self) -> str:
        c = self._context
        return render(c.spec, c.system, scheduler_address=self.scheduler_address or PLACEHOLDER_ADDRESS,
                      worker_name=str(self.name), template=c.template,
                      extra_worker_args=c.extra_worker_args)

    async def start(self) -> None:
        c = self._context
        if c.waiting or not c.may_submit():
            # over max_jobs / max_pending_jobs: wait for a turn; the cluster's poll loop
            # submits waiting jobs in order as running jobs end or pending ones start
            c.waiting.append(self)
            await super().start()
            return
        if c.job_array and c.system.supports_arrays:
            await self._submit_batched()
        else:
            await self.submit()
        await super().start()

    async def submit(self) -> None:
        c = self._context
        c.in_flight += 1
        try:
            await self._submit_one()
        finally:
            c.in_flight -= 1

    async def _submit_one(self) -> None:
        c = self._context
        try:
            script = self.job_script()
            self.job_id = await c.tracker.submit(script, str(self.name), c.system.log_paths(c.spec))
        except Exception as exc:
            raise self._fail(exc) from exc

    async def _submit_batched(self) -> None:
        """Join the jobs being started in this same moment (one scale() call): they go
        to the batch system as one array job, one submission command for all."""
        c = self._context
        future = asyncio.get_running_loop().create_future()
        c.batch.append((self, future))
        c.in_flight += 1
        if c.batch_task is None:
            c.batch_task = asyncio.ensure_future(_flush_batch(c))
        await future

    def _fail(self, exc: Exception) -> JobSubmissionError:
        self.status = Status.failed
        self.error = JobSubmissionError(self._context.system.name, str(self.name), exc)
        return self.error

    async def close(self) -> None:
        if self in self._context.waiting:
            self._context.waiting.remove(self)
        if self.job_id is not None:
            try:
                await self._context.tracker.cancel([self.job_id])
            except CommandError as exc:
                logger.warning("could not cancel job %s of worker %s: %s", self.job_id, self.name, exc)
        await super().close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} job_id={self.job_id} status={self.status.name}>"


async def _flush_batch(c: _JobContext) -> None:
    for _ in range(3):  # let every start() of this scale() join the batch
        await asyncio.sleep(0)
    batch, c.batch, c.batch_task = c.batch, [], None
    try:
        if len(batch) == 1:
            job, future = batch[0]
            await job._submit_one()
            future.set_result(None)
            return
        jobs = [job for job, _ in batch]
        names = [str(job.name) for job in jobs]
        try:
            script = render(c.spec, c.system, scheduler_address=jobs[0].scheduler_address or PLACEHOLDER_ADDRESS,
                            template=c.template, extra_worker_args=c.extra_worker_args, array_names=names)
            ids = await c.tracker.submit_array(script, names, c.system.array_log_paths(c.spec))
        except Exception as exc:  # noqa: BLE001 - every job of the batch gets the error
            for job, future in batch:
                if not future.done():
                    future.set_exception(job._fail(exc))
            return
        for (job, future), job_id in zip(batch, ids):
            job.job_id = job_id
            future.set_result(None)
    except Exception as exc:  # noqa: BLE001
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)
    finally:
        c.in_flight -= len(batch)


class JobQueueCluster(SpecCluster):
    """Base class: a Dask cluster whose workers are batch jobs. Use a subclass."""

    system_cls: ClassVar[type[BatchSystem]] = BatchSystem
    config_name: ClassVar[str] = ""
    # keywords only this system has, keyword -> config key
    system_keys: ClassVar[dict[str, str]] = {}
    # deprecated per-system aliases, e.g. SLURM's project -> account
    system_deprecated: ClassVar[dict[str, str]] = {}
    job_cls = Job

    def __init__(self, n_workers: int = 0, job_cls: type | None = None, loop=None,
                 security: Security | bool | None = None, shared_temp_directory: str | None = None,
                 silence_logs: str | bool = "error", name: str | None = None,
                 asynchronous: bool = False, dashboard_address: str | None = None,
                 host: str | None = None, scheduler_options: dict | None = None,
                 scheduler_cls: type = Scheduler, interface: str | None = None,
                 protocol: str | None = None, config_name: str | None = None,
                 template: str | None = None, max_start_failures: int | None = None,
                 poll_interval: float | str | None = None, max_jobs: int | None = None,
                 max_pending_jobs: int | None = None, job_array: bool | None = None, **job_kwargs: Any):
        self.status = Status.created
        cls_name = type(self).__name__
        if dashboard_address is not None:
            raise ValueError(
                f"pass 'dashboard_address' through 'scheduler_options': write "
                f"{cls_name}(..., scheduler_options={{\"dashboard_address\": \"{dashboard_address}\"}})")
        if host is not None:
            raise ValueError(
                f"pass 'host' through 'scheduler_options': write "
                f"{cls_name}(..., scheduler_options={{\"host\": \"{host}\"}})")
        self.config_name = config_name = config_name or type(self).config_name

        def cfg(key: str, default: Any = None) -> Any:
            return config.get(config_name, key, default)

        if interface is None:
            interface = cfg("interface")
        if scheduler_options is None:
            scheduler_options = cfg("scheduler-options", {}) or {}
        if template is None:
            template = cfg("template")
        if shared_temp_directory is None:
            shared_temp_directory = cfg("shared-temp-directory")
        self.shared_temp_directory = shared_temp_directory

        security = _resolve_security(security, protocol, cls_name)
        if protocol is None and security is not None:
            protocol = "tls://"
        self._cluster_id = f"{type(self).__name__}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._state_dir = os.path.expanduser(dask.config.get("jobqueue.state-directory", "~/.jobqueue"))
        self._run_dir = os.path.join(self._state_dir, "clusters", self._cluster_id)
        os.makedirs(self._state_dir, mode=0o700, exist_ok=True)
        for d in (os.path.dirname(self._run_dir), self._run_dir):
            _private_dir(d)
        self._scheduler_files: list[str] = []
        if not job_kwargs.get("log_directory") and not cfg("log-directory"):
            # keep every job's output even when the user chose no log directory
            job_kwargs["log_directory"] = os.path.join(self._run_dir, "logs")
        spec = self.build_spec(config_name=config_name, interface=interface, protocol=protocol,
                               **job_kwargs)
        self._max_start_failures = int(max_start_failures if max_start_failures is not None
                                       else dask.config.get("jobqueue.max-start-failures", 3))
        self._poll_interval = dask.utils.parse_timedelta(
            poll_interval if poll_interval is not None else dask.config.get("jobqueue.poll-interval", "5s"))
        self._fast_poll_interval = min(self._poll_interval,
                                       dask.utils.parse_timedelta(dask.config.get("jobqueue.fast-poll-interval", "0.5s")))

        self._system = self.system_cls()
        self._tracker = JobTracker(self._system, Journal(
            os.path.join(self._state_dir, "journals", f"{self._cluster_id}.json"), self._system.name))
        self._secrets_dir: str | None = None
        self._worker_tls: dict[str, str] = {}  # the credential files workers are given, by key
        self._failures: list[Exception] = []
        self._consecutive_start_failures = 0
        self._gave_up = False
        self._poll_task: asyncio.Task | None = None
        self._status_errors = 0
        self.replacements: list[dict] = []
        extra_args = self._worker_security_args(security)
        limits = {}
        for key, value in (("max_jobs", max_jobs), ("max_pending_jobs", max_pending_jobs)):
            if value is None:
                value = cfg(key.replace("_", "-"))
            if value is not None:
                if isinstance(value, bool) or not str(value).isdigit() or int(value) < 1:
                    raise ValueError(f"invalid {key}={value!r} (a whole number of jobs, at least 1); "
                                     f"write something like {key}=50, or leave it out for no limit")
                value = int(value)
            limits[key] = value
        if job_array is None:
            job_array = cfg("job-array", True)
        self._context = _JobContext(spec, self._system, self._tracker, template, tuple(extra_args), **limits,
                                    job_array=bool(job_array))
        render(spec, self._system, template=template, extra_worker_args=extra_args)  # fail now, not per job

        if spec.log_directory:
            os.makedirs(spec.log_directory, mode=0o700, exist_ok=True)
        _prune_old_runs(os.path.join(self._state_dir, "clusters"))

        options = {"protocol": protocol, "dashboard_address": ":8787", "security": security}
        options.update(scheduler_options)
        if "host" not in options and "interface" not in options:
            options["interface"] = interface
        worker: dict[str, Any] = {"cls": job_cls or self.job_cls,
                                  "options": {"context": self._context, "cores": spec.cores * spec.job_nodes,
                                              "memory": spec.memory * spec.job_nodes}}
        if spec.workers_per_job > 1:
            worker["group"] = [f"-{i}" for i in range(spec.workers_per_job)]
        super().__init__(scheduler={"cls": scheduler_cls, "options": options}, worker=worker,
                         loop=loop, security=security, silence_logs=silence_logs,
                         asynchronous=asynchronous, name=name)
        if n_workers:
            self.scale(n_workers)

    # --- keywords -------------------------------------------------------------
    @classmethod
    def build_spec(cls, config_name: str | None = None, interface: str | None = None,
                   protocol: str | None = None, **job_kwargs: Any) -> JobSpec:
        """Validate job keywords (falling back to ``jobqueue.<config_name>.*``) into a JobSpec.

        Raises before anything is started or submitted.
        """
        config_name = config_name or cls.config_name
        cls._check_keywords(job_kwargs)

        def cfg(key: str, default: Any = None) -> Any:
            return config.get(config_name, key, default)

        spec_kwargs = cls._resolve_job_kwargs(job_kwargs, cfg)
        spec_kwargs["interface"] = interface if interface is not None else cfg("interface")
        spec_kwargs["protocol"] = protocol
        if spec_kwargs.get("python") is None:
            spec_kwargs["python"] = sys.executable
        if spec_kwargs.get("log_directory"):
            spec_kwargs["log_directory"] = os.path.abspath(os.path.expanduser(spec_kwargs["log_directory"]))
        # system keywords JobSpec has no field for (e.g. SGE's parallel_environment) travel in extra
        fields = {f.name for f in dataclasses.fields(JobSpec)}
        extra = {key: spec_kwargs.pop(key) for key in [k for k in spec_kwargs if k not in fields]}
        spec_kwargs["extra"] = {key: check_token(key, value, '"smp"')
                                for key, value in extra.items() if value is not None}
        return JobSpec.create(**spec_kwargs)

    @classmethod
    def _known_job_keys(cls) -> dict[str, str | None]:
        return {**_JOB_KEYS, **cls.system_keys}

    @classmethod
    def _check_keywords(cls, job_kwargs: dict) -> None:
        known = set(cls._known_job_keys()) | set(_DEPRECATED) | set(cls.system_deprecated) | _CLUSTER_KEYS
        for key in job_kwargs:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise UnknownKeywordError(
                    f"{cls.__name__} got an unexpected keyword argument {key!r}{hint} "
                    f"Known keywords: {', '.join(sorted(known - _CLUSTER_KEYS))}")

    @classmethod
    def _resolve_job_kwargs(cls, given: dict, cfg) -> dict:
        """Keyword, else config value, else default; deprecated aliases with a FutureWarning."""
        out: dict[str, Any] = {}
        for key, cfg_key in cls._known_job_keys().items():
            value = given.get(key)
            if value is None and cfg_key is not None:
                value = cfg(cfg_key)
            out[key] = value
        for old, new in {**_DEPRECATED, **cls.system_deprecated}.items():
            value = given.get(old)
            if value is None:
                value = cfg(old.replace("_", "-"))
            if value is None:
                continue
            warnings.warn(f"{old} has been renamed to {new}; please use {new} (also in config files). "
                          f"{old} is used for now only where {new} is not set.", FutureWarning, stacklevel=4)
            if not out.get(new):
                out[new] = value
        if out.get("nanny") is None:
            out["nanny"] = True
        return out

    def _credential_file(self, role: str, key: str, value: str) -> str:
        """A PEM held in memory, written to an owner-only file compute nodes can read.

        The directory is 0700 and the file 0600, under the home directory by default
        (``shared_temp_directory`` or ``jobqueue.credentials-directory`` to change it);
        the credentials never appear in a job script or on a command line."""
        if self._secrets_dir is None:
            base = (self.shared_temp_directory or dask.config.get("jobqueue.credentials-directory", None)
                    or self._run_dir)
            base = os.path.expanduser(os.path.expandvars(base))
            os.makedirs(base, mode=0o700, exist_ok=True)
            self._secrets_dir = tempfile.mkdtemp(prefix="credentials-", dir=base)  # 0700
        return write_private(os.path.join(self._secrets_dir, f"{role}-{key}.pem"), value)

    def _worker_security_args(self, security: Security | None) -> list[str]:
        """--tls-* arguments naming credential files (in-memory PEMs are written to files)."""
        if security is None:
            return []
        args: list[str] = []
        for key, value in security.get_tls_config_for_role("worker").items():
            if key == "ciphers" or value is None:
                continue
            if "\n" in value:
                value = self._credential_file("worker", key, value)
            self._worker_tls[key] = value
            args += ["--tls-" + key.replace("_", "-"), value]
        return args

    def write_scheduler_file(self, path: str) -> str:
        """Write an owner-only file another client (e.g. Jupyter on another node) can
        connect with, security included: ``jobqueue.connect(path)``. Removed on close."""
        info: dict[str, Any] = {"type": "Scheduler", "address": self.scheduler_address,
                                "id": self._cluster_id}
        if self.security is not None and self.security.require_encryption:
            tls = {}
            for key, value in self.security.get_tls_config_for_role("client").items():
                if key == "ciphers" or value is None:
                    continue
                tls[key] = self._credential_file("client", key, value) if "\n" in value else value
            info["security"] = {"tls_ca_file": tls.get("ca_file"), "tls_client_cert": tls.get("cert"),
                                "tls_client_key": tls.get("key"), "require_encryption": True}
            # for workers that join by this file (jobqueue mpi --no-scheduler --scheduler-file ...)
            worker = self._worker_tls
            if worker:
                info["worker_security"] = {"tls_ca_file": worker.get("ca_file"), "tls_worker_cert": worker.get("cert"),
                                           "tls_worker_key": worker.get("key")}
        # private even when the file existed with wider permissions
        path = write_private(os.path.abspath(os.path.expanduser(path)), json.dumps(info, indent=1))
        self._scheduler_files.append(path)
        return path

    # --- what a dask-jobqueue user reads --------------------------------------
    @property
    def job_spec(self) -> JobSpec:
        return self._context.spec

    @property
    def batch_system(self) -> BatchSystem:
        return self._system

    @property
    def tracker(self) -> JobTracker:
        return self._tracker

    @property
    def job_header(self) -> str:
        return "\n".join(self._system.header(self._context.spec))

    @property
    def job_name(self) -> str | None:
        return self._context.spec.job_name

    @property
    def queue(self) -> str | None:
        return self._context.spec.queue

    def job_script(self) -> str:
        """The job script a job of this cluster runs (with the worker name "dummy-name")."""
        try:
            address = self.scheduler.address or PLACEHOLDER_ADDRESS
        except (AttributeError, ValueError):
            address = PLACEHOLDER_ADDRESS
        c = self._context
        return render(c.spec, c.system, scheduler_address=address, worker_name="dummy-name",
                      template=c.template, extra_worker_args=c.extra_worker_args)

    @property
    def job_ids(self) -> list[str]:
        """Ids of this cluster's jobs that are queued or running and not being cancelled."""
        return [i for i in self._tracker.live_ids() if not self._tracker.jobs[i].cancelled_by_us]

    def _new_worker_name(self, worker_number: int) -> str:
        return f"{self._name}-{worker_number}"

    # --- scaling ----------------------------------------------------------------
    def scale(self, n: int | None = None, jobs: int = 0, memory: str | None = None,
              cores: int | None = None):
        """Scale to ``n`` workers, or ``jobs`` jobs, or enough jobs for ``memory`` / ``cores``."""
        spec = self._context.spec
        if n is not None:
            jobs = max(jobs, math.ceil(n / spec.workers_per_job))
        if memory is not None:
            jobs = max(jobs, math.ceil(parse_bytes(memory) / (spec.memory * spec.job_nodes)))
        if cores is not None:
            jobs = max(jobs, math.ceil(cores / (spec.cores * spec.job_nodes)))
        if jobs and self.status not in (Status.closing, Status.closed) and not self._system.available():
            raise RuntimeError(
                f"cannot submit {self._system.name} jobs: `{self._system.submit_command}` is not on PATH "
                f"on this machine. Run on a login node of the cluster, or use jobqueue.LocalCluster.")
        if jobs and self.status == Status.running:
            self._preflight_address()
        if self._gave_up and not self._adaptive_running():
            # an explicit scale() is the user asking again; adapt's ticks are not
            self._gave_up = False
            self._consecutive_start_failures = 0
        self._forget_failed_jobs()
        if len(self.worker_spec) > jobs:
            # remove jobs that have no connected worker (still queued) before running ones
            connected = self._job_names_with_workers()
            queued = [name for name in self.worker_spec if name not in connected]
            while len(self.worker_spec) > jobs and queued:
                del self.worker_spec[queued.pop()]
        return super().scale(jobs)

    def adapt(self, *args, minimum_jobs: int | None = None, maximum_jobs: int | None = None, **kwargs):
        """Scale with load between ``minimum_jobs`` and ``maximum_jobs`` (or workers, as in Dask)."""
        processes = self._context.spec.workers_per_job
        if minimum_jobs is not None:
            kwargs["minimum"] = minimum_jobs * processes
        if maximum_jobs is not None:
            kwargs["maximum"] = maximum_jobs * processes
        return super().adapt(*args, **kwargs)

    def _job_names_with_workers(self) -> set:
        names = set()
        groups = self.new_spec.get("group", [""]) if self.new_spec else [""]
        for ws in self.scheduler_info.get("workers", {}).values():
            wname = str(ws.get("name"))
            for suffix in groups:
                if suffix and wname.endswith(suffix):
                    names.add(wname[: -len(suffix)])
            names.add(wname)
        return names

    def _forget_failed_jobs(self) -> None:
        """Drop jobs whose submission failed, so the next scale() tries again."""
        for name, job in list(self.workers.items()):
            if job.status == Status.failed:
                del self.workers[name]
                self.worker_spec.pop(name, None)

    async def _correct_state_internal(self) -> None:
        if self._gave_up:
            # keep the specs (what the user asked for) but submit nothing new
            for name in set(self.worker_spec) - set(self.workers):
                del self.worker_spec[name]
        try:
            await super()._correct_state_internal()
        except JobSubmissionError as exc:
            self._record_failure(exc)
        except Exception as exc:  # never leave "Task exception was never retrieved"
            logger.exception("jobqueue: scaling failed")
            self._record_failure(JobSubmissionError(self._system.name, "?", exc))

    def _record_failure(self, exc: Exception) -> None:
        self._failures.append(exc)
        for job in self.workers.values():  # every failed job of this round, not only the first
            err = getattr(job, "error", None)
            if err is not None and err is not exc and err not in self._failures:
                self._failures.append(err)
        logger.error("jobqueue: %s", exc)

    @property
    def failures(self) -> list[Exception]:
        """Submission errors and jobs that ended before their workers connected, oldest first."""
        return list(self._failures)

    def _possible_workers(self) -> int:
        """Workers the current jobs could still bring (submission not failed)."""
        if self._gave_up:
            return 0
        processes = self._context.spec.workers_per_job
        ok = sum(1 for name in self.worker_spec
                 if name not in self.workers or self.workers[name].status != Status.failed)
        return ok * processes

    async def _wait_for_workers(self, n_workers: int = 0, timeout: float | None = None) -> None:
        deadline = None if not timeout else time.monotonic() + dask.utils.parse_timedelta(timeout)
        seen_failures = 0
        while True:
            info = await self.scheduler_comm.identity(n_workers=-1)
            running = sum(1 for w in info["workers"].values() if w.get("status") == Status.running.name)
            if running >= n_workers:
                return
            settling = self._correct_state_waiting is not None or self._lock.locked()
            if self._failures and not settling and running + self._possible_workers() < n_workers:
                raise self._failures[-1]
            if len(self._failures) > seen_failures:
                seen_failures = len(self._failures)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {running} of {n_workers} workers connected within {timeout} s; "
                    f"jobs: {self._tracker.summary() or 'none submitted'} (ids {' '.join(self.job_ids) or '-'})")
            await asyncio.sleep(0.2)

    # --- job lifecycle ------------------------------------------------------------
    async def _start(self) -> None:
        await super()._start()
        if self._poll_task is None:
            self._poll_task = asyncio.ensure_future(self._poll_loop())

    def _adaptive_running(self) -> bool:
        adaptive = getattr(self, "_adaptive", None)
        pc = getattr(adaptive, "periodic_callback", None)
        return bool(pc is not None and pc.is_running())

    def _preflight_address(self) -> None:
        """Refuse a scheduler address the compute nodes cannot reach, before submitting."""
        if isinstance(self._system, LocalSystem):
            return
        address = self.scheduler_address
        host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
        if host in ("localhost", "::1") or host.startswith("127."):
            raise ValueError(
                f"the scheduler listens on {address}, a loopback address that {self._system.name} jobs on "
                "other nodes cannot reach. Let it listen on a network the compute nodes share: pass "
                "interface='ib0' (or 'eth0', ...), or scheduler_options={'host': '<this node's address>'}.")

    def _job_of(self, worker_name: str) -> str:
        """The job (SpecCluster worker) name of a Dask worker name ("<job>-<k>" with processes > 1)."""
        if worker_name in self.workers:
            return worker_name
        base, _, suffix = worker_name.rpartition("-")
        return base if base in self.workers and suffix.isdigit() else worker_name

    def _update_worker_status(self, op, msg) -> None:
        if op == "add":
            for info in (msg.get("workers") or {}).values():
                job = self.workers.get(self._job_of(str(info.get("name"))))
                tracked = self._tracker.jobs.get(getattr(job, "job_id", None) or "")
                if tracked is not None and not tracked.workers_seen:
                    tracked.workers_seen = True
                    self._consecutive_start_failures = 0
        # Skip SpecCluster's lost-worker handler: it closes (and so cancels) whatever job
        # holds that name 15 s later, even a replacement. The poller follows real job states.
        Cluster._update_worker_status(self, op, msg)

    def _next_poll_interval(self) -> float:
        if self._context.waiting:
            return self._fast_poll_interval  # a job may start at any moment and free a turn
        now = time.time()
        recent = any(now - j.since < 60 for j in self._tracker.jobs.values() if not j.finished)
        return self._fast_poll_interval if recent else self._poll_interval

    async def _poll_loop(self) -> None:
        # tick often, poll when the interval (fast right after a submission) has passed, so
        # a job submitted during a long steady-state wait is looked at within the fast interval
        last = time.monotonic()
        while self.status not in (Status.closing, Status.closed):
            await asyncio.sleep(min(0.25, self._fast_poll_interval))
            if self.status in (Status.closing, Status.closed):
                return
            if time.monotonic() - last < self._next_poll_interval():
                continue
            last = time.monotonic()
            try:
                await self._poll_once()
            except Exception:  # the poller must survive anything; say what happened
                logger.exception("jobqueue: job status poll failed")

    async def _poll_once(self) -> None:
        try:
            ended = await self._tracker.poll()
        except CommandError as exc:
            self._status_errors += 1
            if self._status_errors in (1, 10) or self._status_errors % 100 == 0:
                logger.warning("jobqueue: %s did not answer (%d time(s) in a row): %s. Job states are kept as "
                               "they were; this is not a job failure.", self._system.name,
                               self._status_errors, exc)
            return
        self._status_errors = 0
        changed = False
        for job in ended:
            changed = await self._job_ended(job) or changed
        changed = self._replace_before_walltime() or changed
        if changed and self.status == Status.running:
            await self._correct_state()
        await self._submit_waiting()

    async def _submit_waiting(self) -> None:
        """Jobs held back by max_jobs / max_pending_jobs get their turn, in order."""
        c = self._context
        while c.waiting and c.may_submit() and self.status == Status.running:
            job = c.waiting.pop(0)
            try:
                await job.submit()
            except JobSubmissionError as exc:
                self._failures.append(exc)
                logger.error("jobqueue: %s", exc)
                break

    def _replace_before_walltime(self) -> bool:
        """Submit a job's replacement before its workers retire at the walltime, so the
        cluster's capacity does not drop while the replacement waits in the queue."""
        walltime = self._context.spec.walltime
        if not walltime or self._gave_up or self.status != Status.running:
            return False
        margin, stagger = retirement(walltime)
        now = time.time()
        added = False
        for tracked in self._tracker.jobs.values():
            if (tracked.finished or tracked.cancelled_by_us or tracked.replaced_ahead
                    or tracked.started_at is None or not tracked.workers_seen):
                continue
            # workers retire from (walltime - margin - stagger) on; submit the replacement
            # early enough to be running by then, but never at the very start of a job
            retire_from = walltime - margin - stagger
            if now < tracked.started_at + retire_from - min(margin, retire_from / 2):
                continue
            current = self.workers.get(tracked.name)
            if current is None or current.job_id != tracked.job_id or tracked.name not in self.worker_spec:
                continue
            tracked.replaced_ahead = True
            self.worker_spec.update(self.new_worker_spec())
            logger.info("jobqueue: job %s reaches its walltime in %.0f s; submitted its replacement ahead",
                        tracked.job_id, tracked.started_at + walltime - now)
            added = True
        return added

    async def _job_ended(self, tracked: TrackedJob) -> bool:
        """A job ended: report it if it never brought a worker, and replace it. True if replaced."""
        current = self.workers.get(tracked.name)
        if tracked.cancelled_by_us or current is None or current.job_id != tracked.job_id:
            return False  # we ended it, or it was already replaced
        if tracked.replaced_ahead:
            # its replacement is already running or queued: drop this job's slot
            del self.workers[tracked.name]
            self.worker_spec.pop(tracked.name, None)
            await current.close()
            logger.info("jobqueue: job %s ended at its walltime (%s); its replacement took over",
                        tracked.job_id, describe_end(tracked))
            return False
        if tracked.exit_code is None and not tracked.workers_seen:
            with contextlib.suppress(Exception):
                tracked.exit_code = await self._system.exit_code(tracked.job_id)
            if tracked.exit_code is None:
                # PBS without job history forgets it; the job script wrote it to its log
                tracked.exit_code = exit_code_from_logs(tracked.log_paths)
            if tracked.exit_code is not None and tracked.reason == MISSING and not tracked.cancelled_by_us:
                tracked.state = JobState.COMPLETED if tracked.exit_code == 0 else JobState.FAILED
                tracked.reason = ""
        del self.workers[tracked.name]
        await current.close()
        if not tracked.workers_seen:
            self._consecutive_start_failures += 1
            error = JobFailedError(tracked, failure_report(tracked, self.scheduler_address))
            self._failures.append(error)
            logger.error("jobqueue: %s", error)
        if self._consecutive_start_failures >= self._max_start_failures:
            if not self._gave_up:
                logger.error("jobqueue: %d jobs in a row ended before their workers connected; not "
                             "submitting more. Fix the cause above, then call scale() again.",
                             self._consecutive_start_failures)
            self._gave_up = True
            self.worker_spec.pop(tracked.name, None)
            return False
        if tracked.name not in self.worker_spec:
            return False
        self.replacements.append({"job_id": tracked.job_id, "name": tracked.name, "cause": describe_end(tracked),
                                  "time": time.time()})
        logger.warning("jobqueue: job %s (worker %s) ended: %s; submitting a replacement",
                       tracked.job_id, tracked.name, describe_end(tracked))
        return True

    @property
    def jobs(self) -> JobTable:
        """Every job this cluster submitted: id, name, state, reason, workers, since."""
        per_job: dict[str, int] = {}
        for ws in self.scheduler_info.get("workers", {}).values():
            job = self.workers.get(self._job_of(str(ws.get("name"))))
            if job is not None and job.job_id:
                per_job[job.job_id] = per_job.get(job.job_id, 0) + 1
        return JobTable(JobRow(j.job_id, j.name, j.display_state, j.reason, per_job.get(j.job_id, 0), j.since)
                        for j in self._tracker.jobs.values())

    def logs(self) -> dict[str, str]:
        """The stdout and stderr of every job, by job id (files that do not exist are left out)."""
        out = {}
        for job in self._tracker.jobs.values():
            parts = []
            for path in job.log_paths:
                text = tail(path, lines=10**6)
                if text is not None:
                    parts.append(f"--- {path}\n{text}")
            if parts:
                out[job.job_id] = "\n".join(parts)
        return out

    def __repr__(self) -> str:
        text = super().__repr__()
        return f"{text[:-1]}, jobs: {self._jobs_summary()})" if text.endswith(")") else text

    def _jobs_summary(self) -> str:
        text = summarize(self._tracker.jobs.values())
        waiting = len(self._context.waiting)
        if waiting:
            limits = ", ".join(f"{k}={v}" for k, v in (("max_jobs", self._context.max_jobs),
                                                       ("max_pending_jobs", self._context.max_pending_jobs)) if v)
            text = ("" if text.startswith("none") else text + ", ") + f"{waiting} waiting ({limits})"
        return text

    def _repr_html_(self, cluster_status=None) -> str:
        status = f"<p><b>Jobs:</b> {self._jobs_summary()}</p>"
        return super()._repr_html_(cluster_status=(cluster_status or "") + status)

    # --- shutdown ---------------------------------------------------------------
    async def _ask_workers_to_exit(self, timeout: float) -> None:
        """Tell every worker to close, so jobs end on their own (COMPLETED, not killed
        mid-message, which makes the scheduler log tracebacks) before we cancel the rest."""
        sched = self.scheduler
        if getattr(sched, "status", None) != Status.running or not getattr(sched, "workers", None):
            return
        for address in list(sched.workers):
            with contextlib.suppress(Exception):
                sched.close_worker(address)
        deadline = time.monotonic() + timeout
        while sched.workers and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _close(self) -> None:
        if self.status == Status.running:
            await self._ask_workers_to_exit(timeout=5.0)
        if self._poll_task is not None:
            self._poll_task.cancel()
        try:
            await super()._close()
        finally:
            try:
                await self._tracker.cancel_all()  # anything the per-job close missed
                self._tracker.mark_cancelled()
            except CommandError as exc:
                logger.error("jobqueue: could not cancel jobs %s: %s (the watchdog will retry)",
                             " ".join(self._tracker.live_ids()), exc)
            self._tracker.close()
            self._system.close()
            if self._secrets_dir:
                shutil.rmtree(self._secrets_dir, ignore_errors=True)
                self._secrets_dir = None
            for path in self._scheduler_files:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            self._scheduler_files = []


def _resolve_security(security: Security | bool | None, protocol: str | None, cls_name: str) -> Security | None:
    """TLS with fresh per-cluster credentials unless the user opts out or brings their own."""
    if security is None:
        security = dask.config.get("jobqueue.security", True)
    if security is None or security is True:
        if protocol is not None and not protocol.startswith("tls"):
            warnings.warn(f"{cls_name}(protocol={protocol!r}) turns TLS off: any user who can reach the "
                          "scheduler's port can run code as you. Write security=False to say so explicitly, "
                          "or drop protocol= to keep TLS.", UserWarning, stacklevel=3)
            return None
        return Security.temporary()  # a fresh CA, certificate and key for this cluster alone
    if security is False:
        warnings.warn(f"{cls_name}(security=False): the scheduler accepts plain TCP connections, so any "
                      "user who can reach its port (e.g. anyone on this login node) can run code as you.",
                      UserWarning, stacklevel=3)
        return None
    if not isinstance(security, Security):
        raise ValueError(f"invalid security={security!r}; write security=True (the default: TLS with "
                         "per-cluster credentials), security=False, or a distributed.security.Security")
    return security


def _private_dir(path: str) -> None:
    """Create ``path`` owner-only (0700), or tighten a directory we created earlier."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    with contextlib.suppress(OSError):
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o700)


def connect(scheduler_file: str, **client_kwargs: Any):
    """A Client for the cluster that wrote ``scheduler_file`` (``write_scheduler_file``),
    with the TLS credentials the file names."""
    from distributed import Client

    with open(os.path.expanduser(scheduler_file)) as f:
        info = json.load(f)
    security = Security(**info["security"]) if info.get("security") else None
    return Client(info["address"], security=security, **client_kwargs)


def _prune_old_runs(clusters_dir: str, max_age_days: float = 14) -> None:
    """Remove per-cluster directories (logs) older than two weeks; best effort."""
    try:
        entries = os.listdir(clusters_dir)
    except OSError:
        return
    limit = time.time() - max_age_days * 86400
    for entry in entries:
        path = os.path.join(clusters_dir, entry)
        try:
            if os.path.getmtime(path) < limit:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


class SLURMCluster(JobQueueCluster):
    """A Dask cluster whose workers are Slurm jobs (keywords as dask-jobqueue's SLURMCluster).

    >>> cluster = SLURMCluster(cores=8, memory="16GB", walltime="02:00:00", account="proj")
    >>> cluster.scale(jobs=10)  # doctest: +SKIP
    """

    system_cls = SlurmSystem
    config_name = "slurm"
    system_keys = {"queue": "queue", "account": "account", "job_cpu": "job-cpu", "job_mem": "job-mem",
                   "job_nodes": "job-nodes"}
    system_deprecated = {"project": "account"}


class SGECluster(JobQueueCluster):
    """A Dask cluster whose workers are Grid Engine jobs (keywords as dask-jobqueue's SGECluster).

    ``parallel_environment`` (e.g. "smp") with ``job_cpu`` adds ``-pe <pe> <slots>``;
    ``job_cpu`` alone uses the "smp" parallel environment.

    >>> cluster = SGECluster(cores=8, memory="16GB", walltime="02:00:00", queue="all.q")  # doctest: +SKIP
    """

    system_cls = SGESystem
    config_name = "sge"
    system_keys = {"queue": "queue", "project": "project", "resource_spec": "resource-spec",
                   "job_cpu": "job-cpu", "parallel_environment": "parallel-environment"}


class PBSCluster(JobQueueCluster):
    """A Dask cluster whose workers are PBS jobs (keywords as dask-jobqueue's PBSCluster).

    >>> cluster = PBSCluster(cores=8, memory="16GB", walltime="02:00:00", account="proj")  # doctest: +SKIP
    """

    system_cls = PBSSystem
    config_name = "pbs"
    system_keys = {"queue": "queue", "account": "account", "resource_spec": "resource-spec"}
    system_deprecated = {"project": "account"}

    @classmethod
    def _resolve_job_kwargs(cls, given: dict, cfg) -> dict:
        out = super()._resolve_job_kwargs(given, cfg)
        if not out.get("account") and os.environ.get("PBS_ACCOUNT"):
            out["account"] = os.environ["PBS_ACCOUNT"]  # as dask-jobqueue
        return out


class LocalCluster(JobQueueCluster):
    """Jobs run as local background processes: for laptops, tests and the demo."""

    system_cls = LocalSystem
    config_name = "local"
