"""Job (one SpecCluster "worker": one batch job) and the SubmissionQueue that brings the
jobs of one cluster to the batch system: queue limits, array batching, the job script.

Why two records per job, Job and TrackedJob: a Job is SpecCluster's handle on a worker
slot (a distributed ProcessInterface, created and closed by SpecCluster); a TrackedJob
(jobqueue.tracker) is the batch system's job, kept by a tracker that imports no dask and
outlives the Job (its state is shown after the slot closed, and the journal follows it).
A Job holds its TrackedJob as ``record``: no join by name or id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import time
import uuid
from typing import Any, ClassVar, Sequence

from distributed.core import Status
from distributed.deploy.spec import ProcessInterface

from . import files, keywords
from .commands import CommandError, run_async
from .scripts import PLACEHOLDER_ADDRESS, render, shell_word, worker_argv
from .spec import JobSpec
from .systems import BatchSystem, JobState
from .tracker import Journal, JobTracker, TrackedJob

logger = logging.getLogger("jobqueue")


class JobSubmissionError(RuntimeError):
    """The batch system refused a job; carries the system's own error message."""

    def __init__(self, system: str, worker_name: str, cause: Exception):
        self.system = system
        self.worker_name = worker_name
        self.cause = cause
        super().__init__(f"{system} rejected the job for worker {worker_name!r}: {cause}")


class SubmissionQueue:
    """Submits a cluster's jobs: one at a time, or the jobs started in the same moment
    (one scale() call) as one array job; jobs over ``max_jobs`` / ``max_pending_jobs``
    wait here, in order, until :meth:`submit_waiting` gives them their turn. A transient
    refusal (controller unreachable, rate limit, timeout) puts the jobs back at the front
    of that line, and nothing is submitted before a growing backoff (2 s ... 60 s)."""

    def __init__(self, spec: JobSpec, system: BatchSystem, tracker: JobTracker, *, template: str | None = None,
                 worker_args: Sequence[str] = (), max_jobs: int | None = None,
                 max_pending_jobs: int | None = None, job_array: bool = True, token: str = ""):
        self.spec = spec
        self.system = system
        self.tracker = tracker
        self.template = template
        self.worker_args = tuple(worker_args)
        self.max_jobs = max_jobs
        self.max_pending_jobs = max_pending_jobs
        self.job_array = job_array
        self.waiting: list[Job] = []  # held back by a limit, in the order they were asked for
        self.in_flight = 0  # submissions started but not answered yet (they count as pending)
        self._batch: list[tuple[Job, asyncio.Future]] = []
        self._batch_task: asyncio.Future | None = None
        # each submission's batch job name is unique: <job_name>-<cluster token>-<n>, so one
        # whose answer never arrived can be found (or cancelled) by name
        self.token = token
        self.submissions = 0
        self.retry_at = 0.0  # monotonic time before which nothing is submitted (after a transient refusal)
        self.retry_delay = 0.0
        self.transient_error = ""  # what the system last said, while the backoff lasts
        self.render()  # a template or value error fails now, not once per job

    def render(self, scheduler_address: str | None = None, worker_name: str = "dummy-name",
               array_names: Sequence[str] = ()) -> str:
        return render(self.spec, self.system, scheduler_address=scheduler_address or PLACEHOLDER_ADDRESS,
                      worker_name=worker_name, template=self.template, extra_worker_args=self.worker_args,
                      array_names=array_names)

    @property
    def limits(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in (("max_jobs", self.max_jobs),
                                                  ("max_pending_jobs", self.max_pending_jobs)) if v)

    def waiting_summary(self) -> str:
        """e.g. "2 waiting (max_jobs=4)" or "2 waiting to resubmit (...; next try in 8 s)"."""
        if not self.waiting:
            return ""
        if self.transient_error:
            wait = max(0.0, self.retry_at - time.monotonic())
            return (f"{len(self.waiting)} waiting to resubmit ({self.system.name} refused for now: "
                    f"{self.transient_error}; next try in {wait:.0f} s)")
        return f"{len(self.waiting)} waiting ({self.limits})"

    def may_submit(self) -> bool:
        if time.monotonic() < self.retry_at:
            return False
        live = [j for j in self.tracker.jobs.values() if not j.finished and not j.cancelled_by_us]
        if self.max_jobs is not None and len(live) + self.in_flight >= self.max_jobs:
            return False
        pending = sum(1 for j in live if j.state in (JobState.PENDING, JobState.UNKNOWN)) + self.in_flight
        return self.max_pending_jobs is None or pending < self.max_pending_jobs

    async def start(self, job: Job) -> None:
        """Submit ``job`` now (alone or in this moment's array), or queue it behind a limit."""
        if self.waiting or not self.may_submit():
            self.waiting.append(job)
        elif self.job_array and self.system.supports_arrays:
            await self._join_batch(job)
        else:
            await self.submit(job)

    def withdraw(self, job: Job) -> None:
        if job in self.waiting:
            self.waiting.remove(job)

    async def submit(self, job: Job) -> None:
        self.in_flight += 1
        try:
            await self._submit_one(job)
        finally:
            self.in_flight -= 1

    async def submit_waiting(self, running) -> None:
        """Waiting jobs get their turn, in order, while ``running()`` and the limits allow.
        A refused submission stops the round (raised: the cluster records it)."""
        while self.waiting and self.may_submit() and running():
            await self.submit(self.waiting.pop(0))

    def unique_name(self) -> str | None:
        if not self.token:
            return None
        self.submissions += 1
        return f"{self.spec.job_name or 'dask-worker'}-{self.token}-{self.submissions}"

    async def _submit_one(self, job: Job) -> None:
        await self._submit_jobs([job])
        if job.status == Status.failed:
            raise job.error from job.error.cause

    async def _submit_jobs(self, jobs: list[Job]) -> None:
        """One submission for ``jobs``: a plain job, or an array of several. A transient
        refusal puts them back in the waiting line; any other error fails each of them."""
        names = [str(job.name) for job in jobs]
        try:
            name = self.unique_name()
            if len(jobs) == 1:
                script = self.render(jobs[0].scheduler_address, names[0])
                records = [await self.tracker.submit(script, names[0], self.system.log_paths(self.spec, name),
                                                     job_name=name)]
            else:
                script = self.render(jobs[0].scheduler_address, array_names=names)
                records = await self.tracker.submit_array(script, names, self.system.array_log_paths(self.spec, name),
                                                          job_name=name)
        except Exception as exc:  # noqa: BLE001 - every job of the submission gets the error
            if self.system.transient(exc):
                self._defer(jobs, exc)
            else:
                for job in jobs:
                    job.fail(exc)
            return
        self._submitted()
        for job, record in zip(jobs, records):
            job.record = record

    def _defer(self, jobs: list[Job], exc: Exception) -> None:
        self.retry_delay = min(max(2 * self.retry_delay, 2.0), 60.0)
        self.retry_at = time.monotonic() + self.retry_delay
        self.transient_error = str(exc).strip().splitlines()[-1][:200]
        self.waiting[:0] = [job for job in jobs if job not in self.waiting]
        logger.warning("jobqueue: %s refused %d job(s) for now (%s); trying again in %.0f s",
                       self.system.name, len(jobs), self.transient_error, self.retry_delay)

    def _submitted(self) -> None:
        if self.transient_error:
            logger.warning("jobqueue: %s accepts jobs again", self.system.name)
        self.retry_delay, self.transient_error = 0.0, ""

    async def _join_batch(self, job: Job) -> None:
        future = asyncio.get_running_loop().create_future()
        self._batch.append((job, future))
        self.in_flight += 1
        if self._batch_task is None:
            self._batch_task = asyncio.ensure_future(self._flush())
        await future

    async def _flush(self) -> None:
        for _ in range(3):  # let every start() of this scale() join the batch
            await asyncio.sleep(0)
        batch, self._batch, self._batch_task = self._batch, [], None
        try:
            await self._submit_jobs([job for job, _ in batch])
            for job, future in batch:
                if job.status == Status.failed:
                    future.set_exception(job.error)
                else:
                    future.set_result(None)
        except Exception as exc:  # noqa: BLE001
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self.in_flight -= len(batch)


class Job(ProcessInterface):
    """One batch job (one SpecCluster "worker", possibly several Dask worker processes).

    A cluster builds its jobs and hands them its SubmissionQueue (``submissions=``); the
    other keywords it passes are the cluster's job keywords, kept for whoever reads
    ``cluster.new_spec``. Built alone, as dask-jobqueue's Job classes are
    (``SLURMJob(scheduler=address, name="w", cores=8, memory="16GB")``, then ``await job``),
    a job validates its keywords like a cluster and owns its submission queue."""

    system_cls: ClassVar[type[BatchSystem] | None] = None
    config_name: ClassVar[str | None] = None
    job_id_regexp: str = r"(?P<job_id>\d+)"  # read by _job_id_from_submit_output, as in dask-jobqueue

    def __init__(self, scheduler: str | None = None, name: str | None = None, config_name: str | None = None, *,
                 submissions: SubmissionQueue | None = None, **job_kwargs: Any):
        super().__init__(scheduler=scheduler, name=name)
        self.scheduler_address = scheduler
        self.name = name
        self.record: TrackedJob | None = None
        self.error: Exception | None = None
        self._owns_queue = submissions is None
        if submissions is None:
            submissions = standalone_queue(type(self), config_name, scheduler, **job_kwargs)
        self.submissions = submissions
        self.config_name = config_name or self.config_name

    @classmethod
    def default_config_name(cls) -> str:
        """The config section this job class reads (``jobqueue.<config_name>``)."""
        if getattr(cls, "config_name", None) is None or cls.system_cls is None:
            raise ValueError(
                f"a Job class needs a 'config_name' class variable (the config section it reads, "
                f"jobqueue.<config_name>) and a batch system: {cls.__qualname__} has neither. Derive it from "
                "a system's class, e.g. class MyJob(jobqueue.core.SLURMJob), or set config_name = \"slurm\"")
        return cls.config_name

    @property
    def job_id(self) -> str | None:
        return None if self.record is None else self.record.job_id

    @property
    def job_header(self) -> str:
        """The directive lines of this job's script."""
        return "\n".join(self.submissions.system.header(self.submissions.spec))

    submit_command = property(lambda self: self.submissions.system.submit_command)
    cancel_command = property(lambda self: self.submissions.system.cancel_command)

    def job_script(self) -> str:
        return self.submissions.render(self.scheduler_address, self._worker_name)

    @property
    def _worker_name(self) -> str:
        return "dummy-name" if self.name is None else str(self.name)

    @property
    def _command_template(self) -> str:
        """The worker command line of this job's script (dask-jobqueue's attribute)."""
        q = self.submissions
        argv = worker_argv(q.spec, self.scheduler_address or PLACEHOLDER_ADDRESS, self._worker_name, q.worker_args)
        return " ".join(shell_word(a) for a in argv)

    def _job_id_from_submit_output(self, out: str) -> str:
        """The job id in a submit command's output, found with ``job_id_regexp`` (dask-jobqueue's hook)."""
        match = re.search(self.job_id_regexp, out)
        if match is None:
            raise ValueError(f"Could not parse job id from submission command output.\nJob id regexp is "
                             f"{self.job_id_regexp!r}\nSubmission command output is:\n{out}")
        job_id = match.groupdict().get("job_id")
        if job_id is None:
            raise ValueError("You need to use a 'job_id' named group in your regexp, e.g. '(?P<job_id>\\d+)'. "
                             f"Your regexp was: {self.job_id_regexp!r}")
        return job_id

    @staticmethod
    async def _call(cmd: Sequence[str], **kwargs: Any) -> str:
        """Run ``cmd`` (an argv list) and return its stdout; RuntimeError with both streams if it fails."""
        result = await run_async(list(cmd), check=False, **kwargs)
        if result.returncode != 0:
            raise RuntimeError(f"Command exited with non-zero exit code.\nExit code: {result.returncode}\n"
                               f"Command:\n{shlex.join(cmd)}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}\n")
        return result.stdout

    async def start(self) -> None:
        await self.submissions.start(self)
        await super().start()

    def fail(self, exc: Exception) -> JobSubmissionError:
        self.status = Status.failed
        self.error = JobSubmissionError(self.submissions.system.name, str(self.name), exc)
        return self.error

    async def close(self) -> None:
        self.submissions.withdraw(self)
        try:
            if self.record is not None:
                await self.submissions.tracker.cancel([self.record.job_id])
        except CommandError as exc:
            logger.warning("could not cancel job %s of worker %s: %s", self.record.job_id, self.name, exc)
        finally:
            if self._owns_queue:
                self.submissions.tracker.close()
                self.submissions.system.close()
        await super().close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} job_id={self.job_id} status={self.status.name}>"


def standalone_queue(cls: type[Job], config_name: str | None, scheduler: str | None, *,
                     security: Any = None, protocol: str | None = None, interface: str | None = None,
                     **job_kwargs: Any) -> SubmissionQueue:
    """The submission queue of a job built alone: its keywords validated like a cluster's,
    its own tracker and journal (so the watchdog cancels it if this process dies)."""
    config_name = config_name or cls.default_config_name()
    spec = keywords.build_spec(cls.__name__, cls.system_cls, config_name, interface=interface,
                               protocol=protocol, **job_kwargs)
    run_id = f"{cls.__name__}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    system = cls.system_cls()
    tracker = JobTracker(system, Journal(files.journal_path(run_id), system))
    worker_args: list[str] = []
    if security is not None and security is not False:
        from .security import Credentials, resolve_security

        security = resolve_security(security, protocol, cls.__name__)
        worker_args = Credentials(files.run_dir(run_id)).worker_args(security)
    return SubmissionQueue(spec, system, tracker, worker_args=worker_args, token=run_id.rsplit("-", 1)[-1][:6])


def job_class(system: type[BatchSystem], module: str = __name__) -> type[Job]:
    """The public Job class of a registered batch system, e.g. SLURMJob."""
    name = system.cluster_name.replace("Cluster", "Job")
    return type(name, (Job,), {"system_cls": system, "config_name": system.name, "__module__": module,
                                "__doc__": f"One {system.display_name} job (see {system.cluster_name} for its keywords)."})


def removal_order(names, waiting: set, connected: set) -> list:
    """Jobs to drop on scale-down, first to last: never submitted (waiting for a turn: they
    hold no place in the queue), then queued ones newest first. Running ones are left to
    SpecCluster."""
    queued = [name for name in names if name not in connected and name not in waiting]
    return [name for name in names if name in waiting][::-1] + queued[::-1]
