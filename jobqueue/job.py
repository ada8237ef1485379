"""Job: one SpecCluster "worker", one batch job, which the cluster's SubmissionQueue
(jobqueue.submission) brings to the batch system.

Why two records per job, Job and TrackedJob: a Job is SpecCluster's handle on a worker
slot (a distributed ProcessInterface, created and closed by SpecCluster); a TrackedJob
(jobqueue.tracker) is the batch system's job, kept by a tracker that imports no dask and
outlives the Job (its state is shown after the slot closed, and the journal follows it).
A Job holds its TrackedJob as ``record``: no join by name or id.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import uuid
from typing import Any, ClassVar, Sequence

from distributed.core import Status
from distributed.deploy.spec import ProcessInterface

from . import files, keywords
from .commands import CommandError, run_async
from .scripts import PLACEHOLDER_ADDRESS, shell_word, worker_argv
from .systems import BatchSystem
from .submission import SubmissionQueue, site_policy
from .tracker import Journal, JobTracker, TrackedJob

logger = logging.getLogger("jobqueue")


class JobSubmissionError(RuntimeError):
    """The batch system refused a job; carries the system's own error message."""

    def __init__(self, system: str, worker_name: str, cause: Exception):
        self.system = system
        self.worker_name = worker_name
        self.cause = cause
        super().__init__(f"{system} rejected the job for worker {worker_name!r}: {cause}")


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
        self.waiting_since: float | None = None  # when it joined the waiting line of its SubmissionQueue
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

    @property
    def submit_command(self) -> str:
        system = self.submissions.system
        return type(system).job_attributes(self.submissions.spec).get("submit_command", system.submit_command)

    @property
    def cancel_command(self) -> str:
        system = self.submissions.system
        return type(system).job_attributes(self.submissions.spec).get("cancel_command", system.cancel_command)

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

    def __getattr__(self, attr: str) -> Any:
        # what dask-jobqueue's Job class of this system had as attributes (LSFJob.use_stdin)
        if attr.startswith("_") or "submissions" not in self.__dict__:
            raise AttributeError(attr)
        extra = type(self.submissions.system).job_attributes(self.submissions.spec)
        if attr in extra:
            return extra[attr]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")


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
        credentials = Credentials(files.run_dir(run_id))
        worker_args = credentials.worker_args(security)
        tracker.on_close.append(credentials.remove)  # in-memory PEMs written for this job: gone with it
    return SubmissionQueue(spec, system, tracker, worker_args=worker_args, token=run_id.rsplit("-", 1)[-1][:6],
                           **site_policy(system, config_name))


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
