"""JobQueueCluster: a Dask SpecCluster whose workers are batch jobs.

The scheduler runs in this process (the login node); each "worker" of the
SpecCluster is one batch job, which may start several Dask worker processes.
Keywords and config keys are dask-jobqueue 0.9.0's, so switching is one import.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import dask
from dask.utils import parse_bytes
from distributed.core import Status
from distributed.deploy.spec import ProcessInterface, SpecCluster
from distributed.scheduler import Scheduler
from distributed.security import Security

from . import config
from .commands import CommandError
from .scripts import PLACEHOLDER_ADDRESS, render
from .spec import JobSpec
from .systems import BatchSystem, LocalSystem, SlurmSystem
from .tracker import JobTracker

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
    "interface", "protocol", "config_name", "template",
}


@dataclass
class _JobContext:
    """What every Job of one cluster shares: built once, handed to each Job."""

    spec: JobSpec
    system: BatchSystem
    tracker: JobTracker
    template: str | None
    extra_worker_args: tuple[str, ...]


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
        try:
            script = self.job_script()
            self.job_id = await c.tracker.submit(script, str(self.name))
        except Exception as exc:
            self.status = Status.failed
            self.error = JobSubmissionError(c.system.name, str(self.name), exc)
            raise self.error from exc
        await super().start()

    async def close(self) -> None:
        if self.job_id is not None:
            try:
                await self._context.tracker.cancel([self.job_id])
            except CommandError as exc:
                logger.warning("could not cancel job %s of worker %s: %s", self.job_id, self.name, exc)
        await super().close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} job_id={self.job_id} status={self.status.name}>"


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
                 template: str | None = None, **job_kwargs: Any):
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

        if security is True:
            security = Security.temporary()
        elif security is False:
            security = None
        if protocol is None and security is not None:
            protocol = "tls://"
        spec = self.build_spec(config_name=config_name, interface=interface, protocol=protocol,
                               **job_kwargs)

        self._system = self.system_cls()
        self._tracker = JobTracker(self._system)
        self._secrets_dir: str | None = None
        self._failures: list[JobSubmissionError] = []
        extra_args = self._worker_security_args(security)
        self._context = _JobContext(spec, self._system, self._tracker, template, tuple(extra_args))
        render(spec, self._system, template=template, extra_worker_args=extra_args)  # fail now, not per job

        if spec.log_directory:
            os.makedirs(spec.log_directory, exist_ok=True)

        options = {"protocol": protocol, "dashboard_address": ":8787", "security": security}
        options.update(scheduler_options)
        if "host" not in options and "interface" not in options:
            options["interface"] = interface
        worker: dict[str, Any] = {"cls": job_cls or self.job_cls,
                                  "options": {"context": self._context, "cores": spec.cores,
                                              "memory": spec.memory}}
        if spec.processes > 1:
            worker["group"] = [f"-{i}" for i in range(spec.processes)]
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

    def _worker_security_args(self, security: Security | None) -> list[str]:
        """--tls-* arguments; in-memory credentials are written to owner-only files."""
        if security is None:
            return []
        args: list[str] = []
        for key, value in security.get_tls_config_for_role("worker").items():
            if key == "ciphers" or value is None:
                continue
            if "\n" in value:
                if self._secrets_dir is None:
                    base = self.shared_temp_directory or os.path.join(os.path.expanduser("~"), ".jobqueue")
                    base = os.path.expanduser(os.path.expandvars(base))
                    os.makedirs(base, mode=0o700, exist_ok=True)
                    self._secrets_dir = tempfile.mkdtemp(prefix="credentials-", dir=base)
                path = os.path.join(self._secrets_dir, f"worker-{key}.pem")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(value)
                value = path
            args += ["--tls-" + key.replace("_", "-"), value]
        return args

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
        """Ids of this cluster's jobs that may still be queued or running."""
        return self._tracker.live_ids()

    def _new_worker_name(self, worker_number: int) -> str:
        return f"{self._name}-{worker_number}"

    # --- scaling ----------------------------------------------------------------
    def scale(self, n: int | None = None, jobs: int = 0, memory: str | None = None,
              cores: int | None = None):
        """Scale to ``n`` workers, or ``jobs`` jobs, or enough jobs for ``memory`` / ``cores``."""
        spec = self._context.spec
        if n is not None:
            jobs = max(jobs, math.ceil(n / spec.processes))
        if memory is not None:
            jobs = max(jobs, math.ceil(parse_bytes(memory) / spec.memory))
        if cores is not None:
            jobs = max(jobs, math.ceil(cores / spec.cores))
        if jobs and self.status not in (Status.closing, Status.closed) and not self._system.available():
            raise RuntimeError(
                f"cannot submit {self._system.name} jobs: `{self._system.submit_command}` is not on PATH "
                f"on this machine. Run on a login node of the cluster, or use jobqueue.LocalCluster.")
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
        processes = self._context.spec.processes
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
        try:
            await super()._correct_state_internal()
        except JobSubmissionError as exc:
            self._record_failure(exc)
        except Exception as exc:  # never leave "Task exception was never retrieved"
            logger.exception("jobqueue: scaling failed")
            self._record_failure(JobSubmissionError(self._system.name, "?", exc))

    def _record_failure(self, exc: JobSubmissionError) -> None:
        self._failures.append(exc)
        for job in self.workers.values():  # every failed job of this round, not only the first
            err = getattr(job, "error", None)
            if err is not None and err is not exc and err not in self._failures:
                self._failures.append(err)
        logger.error("jobqueue: %s", exc)

    @property
    def failures(self) -> list[JobSubmissionError]:
        """Submission errors seen so far, oldest first."""
        return list(self._failures)

    def _possible_workers(self) -> int:
        """Workers the current jobs could still bring (submission not failed)."""
        processes = self._context.spec.processes
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
        try:
            await super()._close()
        finally:
            try:
                await self._tracker.cancel_all()  # anything the per-job close missed
            except CommandError:
                pass  # already logged by the tracker
            self._system.close()
            if self._secrets_dir:
                shutil.rmtree(self._secrets_dir, ignore_errors=True)
                self._secrets_dir = None


class SLURMCluster(JobQueueCluster):
    """A Dask cluster whose workers are Slurm jobs (keywords as dask-jobqueue's SLURMCluster).

    >>> cluster = SLURMCluster(cores=8, memory="16GB", walltime="02:00:00", account="proj")
    >>> cluster.scale(jobs=10)  # doctest: +SKIP
    """

    system_cls = SlurmSystem
    config_name = "slurm"
    system_keys = {"queue": "queue", "account": "account", "job_cpu": "job-cpu", "job_mem": "job-mem"}
    system_deprecated = {"project": "account"}


class LocalCluster(JobQueueCluster):
    """Jobs run as local background processes: for laptops, tests and the demo."""

    system_cls = LocalSystem
    config_name = "local"
