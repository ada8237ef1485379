"""SubmissionQueue: brings the jobs of one cluster to the batch system within the rules of
the cluster (max_jobs, max_pending_jobs) and of the site (array size limits, per-user job
submit limits, transient refusals and rate limits), as array jobs where the system has them.

It renders each job script and hands it to the JobTracker; the Jobs (jobqueue.job) it
submits are SpecCluster's handles, which it never creates itself.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING, Any, Sequence

from distributed.core import Status

from . import keywords
from .commands import CommandError
from .scripts import PLACEHOLDER_ADDRESS, render
from .spec import JobSpec
from .systems import BatchSystem, JobState
from .tracker import JobTracker, TrackedJob

if TYPE_CHECKING:
    from .job import Job

logger = logging.getLogger("jobqueue")


class SubmissionQueue:
    """Submits a cluster's jobs: one at a time, or the jobs started in the same moment
    (one scale() call) as array jobs no larger than the site allows; jobs over ``max_jobs``
    / ``max_pending_jobs`` wait here, in order, until :meth:`submit_waiting` gives them
    their turn.

    The site's own rules are learned, not failed on: an array the system refuses for its
    size is split and tried again (and later arrays are no larger); a refusal for a
    per-user/QOS job-count limit keeps the jobs waiting here ("job submit limit") -- they
    go as others end, and one job tries again after a growing pause (5 s ... ``limit_retry``)
    in case the limit was lifted or jobs elsewhere ended. A transient refusal (controller
    unreachable, rate limit, timeout) puts the jobs back at the front of the line, and
    nothing is submitted before a growing backoff (2 s ... 60 s)."""

    def __init__(self, spec: JobSpec, system: BatchSystem, tracker: JobTracker, *, template: str | None = None,
                 worker_args: Sequence[str] = (), max_jobs: int | None = None,
                 max_pending_jobs: int | None = None, job_array: bool = True, token: str = "",
                 max_array_size: int | None = None, limit_retry: float = 60.0):
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
        # the largest array to submit: the config's, else the system's (asked once), else what it refused
        self.array_limit: int | None = max_array_size
        self._array_limit_asked = max_array_size is not None
        # the site's job-count limit: how many of our jobs were live when it refused more
        self.site_cap: int | None = None
        self.limit_error = ""
        self.limit_retry = limit_retry
        self.limit_delay = 0.0
        self.probe_at = 0.0  # monotonic time from which one job may try beyond site_cap
        self._limit_told = False
        system.configure(spec)
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
        """e.g. "2 waiting (max_jobs=4)", "4 waiting (job submit limit)" or "2 waiting to
        resubmit (...; next try in 8 s)"."""
        if not self.waiting:
            return ""
        if self.transient_error:
            wait = max(0.0, self.retry_at - time.monotonic())
            return (f"{len(self.waiting)} waiting to resubmit ({self.system.name} refused for now: "
                    f"{self.transient_error}; next try in {wait:.0f} s)")
        return f"{len(self.waiting)} waiting ({self.waiting_reason()})"

    def waiting_reason(self) -> str:
        """Why jobs wait here: the site's job submit limit, or our own max_jobs/max_pending_jobs."""
        if self.transient_error:
            return f"{self.system.name} refused for now: {self.transient_error}"
        if self.site_cap is not None:
            return "job submit limit"
        return self.limits or "submitting"

    def _counts(self) -> tuple[int, int]:
        """(live jobs, pending jobs) of this queue, submissions in flight counted as both."""
        live = [j for j in self.tracker.jobs.values() if not j.finished and not j.cancelled_by_us]
        pending = sum(1 for j in live if j.state in (JobState.PENDING, JobState.UNKNOWN))
        return len(live) + self.in_flight, pending + self.in_flight

    def room(self) -> int:
        """How many jobs may be submitted now (0: none; 1 beyond the site's limit, once its
        pause is over: a probe)."""
        now = time.monotonic()
        if now < self.retry_at:
            return 0
        active, pending = self._counts()
        n = 10**9
        if self.max_jobs is not None:
            n = min(n, self.max_jobs - active)
        if self.max_pending_jobs is not None:
            n = min(n, self.max_pending_jobs - pending)
        if self.site_cap is not None:
            n = min(n, self.site_cap - active if active < self.site_cap else int(now >= self.probe_at))
        return max(n, 0)

    def may_submit(self) -> bool:
        return self.room() > 0

    async def start(self, job: Job) -> None:
        """Submit ``job`` now (alone or in this moment's array), or queue it behind a limit."""
        if self.waiting or not self.may_submit():
            self._hold([job])
        elif self.job_array and self.system.supports_arrays:
            await self._join_batch(job)
        else:
            await self.submit(job)

    def _hold(self, jobs: list[Job], front: bool = False) -> None:
        """Put jobs in the waiting line (at its front: they were there first)."""
        now = time.time()
        for job in jobs:
            job.waiting_since = getattr(job, "waiting_since", None) or now
        new = [job for job in jobs if job not in self.waiting]
        if front:
            self.waiting[:0] = new
        else:
            self.waiting.extend(new)

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
        """Waiting jobs get their turn, in order (as one array where the system has them),
        while ``running()`` and the limits allow. A refused submission stops the round
        (raised: the cluster records it)."""
        while self.waiting and running() and (n := self.room()) > 0:
            if not (self.job_array and self.system.supports_arrays):
                n = 1
            batch, self.waiting[:n] = self.waiting[:n], []
            self.in_flight += len(batch)
            try:
                await self._submit_jobs(batch)
            finally:
                self.in_flight -= len(batch)
            failed = [job for job in batch if job.status == Status.failed]
            if failed:
                raise failed[0].error from failed[0].error.cause

    def unique_name(self) -> str | None:
        if not self.token:
            return None
        self.submissions += 1
        return f"{self.spec.job_name or 'dask-worker'}-{self.token}-{self.submissions}"

    async def _submit_one(self, job: Job) -> None:
        await self._submit_jobs([job])
        if job.status == Status.failed:
            raise job.error from job.error.cause

    async def _max_array(self) -> int:
        if not self._array_limit_asked:
            self._array_limit_asked = True
            try:
                self.array_limit = await self.system.max_array_size()
            except CommandError as exc:
                logger.debug("could not read %s's array size limit: %s", self.system.name, exc)
        return self.array_limit or 10**9

    async def _submit_jobs(self, jobs: list[Job]) -> None:
        """Submit ``jobs``: a plain job, or arrays no larger than the site allows. A refusal
        for the site's job-count limit or a transient one puts the jobs not yet submitted
        back in the waiting line; any other error fails each of them."""
        rest = list(jobs)
        size = await self._max_array() if len(rest) > 1 else 1
        while rest:
            chunk = rest[:size]
            try:
                records = await self._submit_chunk(chunk)
            except Exception as exc:  # noqa: BLE001 - the jobs not submitted get the error
                if len(chunk) > 1 and self.system.array_too_large(exc):
                    size = self.array_limit = (len(chunk) + 1) // 2
                    logger.warning("jobqueue: %s refused an array of %d jobs (%s); submitting arrays of at most %d",
                                   self.system.name, len(chunk), _last_line(exc), size)
                    continue
                if len(chunk) > 1 and self.system.submit_limited(exc):
                    size = (len(chunk) + 1) // 2  # fewer may still fit under the limit
                    continue
                if self.system.submit_limited(exc):
                    self._limited(rest, exc)
                elif self.system.transient(exc):
                    self._defer(rest, exc)
                else:
                    for job in rest:
                        job.fail(exc)
                return
            self._submitted()
            for job, record in zip(chunk, records):
                job.record, job.waiting_since = record, None
            rest = rest[len(chunk):]

    async def _submit_chunk(self, jobs: list[Job]) -> list[TrackedJob]:
        names = [str(job.name) for job in jobs]
        name = self.unique_name()
        if len(jobs) == 1:
            script = self.render(jobs[0].scheduler_address, names[0])
            return [await self.tracker.submit(script, names[0], self.system.log_paths(self.spec, name), job_name=name)]
        script = self.render(jobs[0].scheduler_address, array_names=names)
        return await self.tracker.submit_array(script, names, self.system.array_log_paths(self.spec, name),
                                               job_name=name)

    def _limited(self, jobs: list[Job], exc: Exception) -> None:
        """The site's job-count limit: these jobs wait for others to end (or the limit to lift)."""
        live = self._counts()[0] - self.in_flight
        self.site_cap = live
        self.limit_delay = min(max(2 * self.limit_delay, 5.0), max(self.limit_retry, 5.0))
        self.probe_at = time.monotonic() + self.limit_delay
        self.limit_error = _last_line(exc, self.system.submit_limit_errors)
        self._hold(jobs, front=True)
        log = logger.debug if self._limit_told else logger.warning
        self._limit_told = True
        log("jobqueue: %s allows no more queued jobs for now (%s); %d job(s) wait here and go as others end "
            "(%d queued or running now; trying one more in %.0f s)", self.system.name, self.limit_error,
            len(self.waiting), live, self.limit_delay)

    def _defer(self, jobs: list[Job], exc: Exception) -> None:
        self.retry_delay = min(max(2 * self.retry_delay, 2.0), 60.0)
        self.retry_at = time.monotonic() + self.retry_delay
        self.transient_error = _last_line(exc)
        self._hold(jobs, front=True)
        logger.warning("jobqueue: %s refused %d job(s) for now (%s); trying again in %.0f s",
                       self.system.name, len(jobs), self.transient_error, self.retry_delay)

    def _submitted(self) -> None:
        if self.transient_error:
            logger.warning("jobqueue: %s accepts jobs again", self.system.name)
        self.retry_delay, self.transient_error = 0.0, ""
        if self.site_cap is not None and self._counts()[0] - self.in_flight > self.site_cap:
            # a job beyond the limit was accepted: it was lifted, or other jobs ended
            logger.info("jobqueue: %s accepts more jobs again (job submit limit)", self.system.name)
            self.site_cap, self.limit_delay = None, 0.0

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


def site_policy(system: BatchSystem, config_name: str) -> dict[str, Any]:
    """The site's rules from the config: the command timeout and ``jobqueue.<config_name>.
    min-poll-interval`` go on the system (its queries wait their turn); the SubmissionQueue
    keywords are returned. Called before the tracker's first command."""
    import dask
    from dask.utils import parse_timedelta

    from . import config

    system.command_timeout = float(parse_timedelta(dask.config.get("jobqueue.command-timeout", "60s")))
    system.min_query_interval = float(parse_timedelta(config.get(config_name, "min-poll-interval") or 0))
    size = config.get(config_name, "max-array-size")
    return {"max_array_size": keywords.queue_limit("max-array-size", size),
            "limit_retry": float(parse_timedelta(dask.config.get("jobqueue.submit-limit-retry", "60s")))}


def _last_line(exc: BaseException, pattern: str | None = None) -> str:
    """The line of an error that says why: the last one matching ``pattern``, else the last
    (Grid Engine ends its refusals with "Exiting.")."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    chosen = [line for line in lines if pattern and re.search(pattern, line, re.I)] or lines
    return chosen[-1][:200] if chosen else type(exc).__name__


