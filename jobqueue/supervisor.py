"""Supervisor: follows a cluster's jobs while it runs.

One status command for all jobs per poll; a job that ended before its workers connected
is reported (state, exit code, log tails) and replaced; a job near its walltime gets its
replacement submitted ahead; after ``max_start_failures`` such jobs in a row the cluster
stops submitting until the user calls scale() again; jobs held back by queue limits
get their turn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from distributed.core import Status

from .commands import CommandError
from .job import JobSubmissionError
from .reports import JobFailedError, describe_end, failure_report
from .spec import retirement
from .tracker import JobTracker, TrackedJob

if TYPE_CHECKING:
    from .cluster import JobQueueCluster

logger = logging.getLogger("jobqueue")


class Supervisor:
    def __init__(self, cluster: JobQueueCluster, tracker: JobTracker, *,
                 poll_interval: float, fast_poll_interval: float, max_start_failures: int,
                 fast_poll_duration: float = 60):
        self.cluster = cluster
        self.tracker = tracker
        floor = tracker.system.min_query_interval  # the site's policy wins over our own wishes
        self.poll_interval = max(poll_interval, floor)
        self.fast_poll_interval = max(min(poll_interval, fast_poll_interval), floor)
        self.fast_poll_duration = fast_poll_duration
        self.max_start_failures = max_start_failures
        self.failures: list[Exception] = []  # submission errors and failed starts, oldest first
        self.replacements: list[dict] = []  # jobs that ended and were replaced: id, name, cause, time
        self.consecutive_start_failures = 0
        self.gave_up = False
        self.status_errors = 0
        self._task: asyncio.Future | None = None
        self._journal_at = -1e9

    @classmethod
    def from_config(cls, cluster: JobQueueCluster, poll_interval=None, max_start_failures=None) -> Supervisor:
        """Keywords where given, else jobqueue.poll-interval, fast-poll-interval, max-start-failures."""
        import dask
        from dask.utils import parse_timedelta

        return cls(cluster, cluster._tracker,
                   poll_interval=parse_timedelta(poll_interval if poll_interval is not None
                                                 else dask.config.get("jobqueue.poll-interval", "5s")),
                   fast_poll_interval=parse_timedelta(dask.config.get("jobqueue.fast-poll-interval", "0.5s")),
                   fast_poll_duration=parse_timedelta(dask.config.get("jobqueue.fast-poll-duration", "60s")),
                   max_start_failures=int(max_start_failures if max_start_failures is not None
                                          else dask.config.get("jobqueue.max-start-failures", 3)))

    # --- the loop ---------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._loop())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _closing(self) -> bool:
        return self.cluster.status in (Status.closing, Status.closed)

    def next_interval(self) -> float:
        """Fast while any job changed state recently, else the steady interval -- also while
        jobs wait for a queue-limit turn: a turn frees when a job's state changes, and
        polling faster than that would only load the controller."""
        now = time.time()
        recent = any(now - j.since < self.fast_poll_duration for j in self.tracker.jobs.values() if not j.finished)
        return self.fast_poll_interval if recent else self.poll_interval

    async def _loop(self) -> None:
        # tick often, poll when the interval (fast right after a submission) has passed, so
        # a job submitted during a long steady-state wait is looked at within the fast interval
        last = time.monotonic()
        while not self._closing():
            await asyncio.sleep(min(0.25, self.fast_poll_interval))
            if self._closing():
                return
            try:
                if time.monotonic() - last >= self.next_interval():
                    last = time.monotonic()
                    await self.poll_once()
                await self.submit_waiting()  # a turn or a retry may be due without a poll
            except Exception:  # the poller must survive anything; say what happened
                logger.exception("jobqueue: job status poll failed")

    async def poll_once(self) -> None:
        try:
            ended = await self.tracker.poll()
        except CommandError as exc:
            self.status_errors += 1
            if self.status_errors in (1, 10) or self.status_errors % 100 == 0:
                logger.warning("jobqueue: %s did not answer (%d time(s) in a row): %s. Job states are kept as "
                               "they were; this is not a job failure.", self.tracker.system.name,
                               self.status_errors, exc)
            return
        self.status_errors = 0
        self.cluster.mark_connected()
        self._refresh_journal()
        changed = False
        for job in ended:
            changed = await self._job_ended(job) or changed
        changed = self._replace_before_walltime() or changed
        if changed and self.cluster.status == Status.running:
            await self.cluster._correct_state()

    def _refresh_journal(self, every: float = 30.0) -> None:
        """Keep what `jobqueue list` reads (job states, usage) in the journal fresh."""
        journal = self.tracker.journal
        if journal is None or not self.tracker.live_ids() or time.monotonic() - self._journal_at < every:
            return
        self._journal_at = time.monotonic()
        journal.info = self.cluster.journal_info()
        self.tracker._write_journal()

    async def submit_waiting(self) -> None:
        for pool in list(self.cluster.pools.values()):
            try:
                await pool.submissions.submit_waiting(lambda: self.cluster.status == Status.running)
            except JobSubmissionError as exc:
                self.record_failure(exc)

    # --- what happened ------------------------------------------------------------------
    def record_failure(self, exc: Exception, jobs=()) -> None:
        """Keep ``exc`` (and the errors of ``jobs`` that failed with it) for wait_for_workers."""
        self.failures.append(exc)
        for job in jobs:  # every failed job of this round, not only the first
            err = getattr(job, "error", None)
            if err is not None and err is not exc and err not in self.failures:
                self.failures.append(err)
        logger.error("jobqueue: %s", exc)

    def worker_connected(self, record: TrackedJob) -> None:
        if not record.workers_seen:
            record.workers_seen = True
            record.started_at = record.started_at or time.time()  # ran between two polls
            self.consecutive_start_failures = 0

    def try_again(self) -> None:
        """The user asked again (scale()): submit after giving up."""
        self.gave_up = False
        self.consecutive_start_failures = 0

    def _replace_before_walltime(self) -> bool:
        """Submit a job's replacement before its workers retire at the walltime, so the
        cluster's capacity does not drop while the replacement waits in the queue."""
        if self.gave_up or self.cluster.status != Status.running:
            return False
        now = time.time()
        added = False
        for tracked in self.tracker.jobs.values():
            if (tracked.finished or tracked.cancelled_by_us or tracked.replaced_ahead
                    or tracked.started_at is None or not tracked.workers_seen):
                continue
            pool = self.cluster.pool_of(tracked.name)
            walltime = pool.spec.walltime
            if not walltime:
                continue
            margin, stagger = retirement(walltime)
            retire_from = walltime - margin - stagger
            # workers retire from (walltime - margin - stagger) on; submit the replacement
            # early enough to be running by then, but never at the very start of a job
            if now < tracked.started_at + retire_from - min(margin, retire_from / 2):
                continue
            if self._slot_of(tracked) is None or tracked.name not in self.cluster.worker_spec:
                continue
            tracked.replaced_ahead = True
            self.cluster.worker_spec.update(pool.new_worker_spec())
            logger.info("jobqueue: job %s reaches its walltime in %.0f s; submitted its replacement ahead",
                        tracked.job_id, tracked.started_at + walltime - now)
            added = True
        return added

    def _slot_of(self, tracked: TrackedJob):
        """The cluster's Job for this batch job, if it still holds the slot."""
        job = self.cluster.workers.get(tracked.name)
        return job if job is not None and getattr(job, "record", None) is tracked else None

    async def _job_ended(self, tracked: TrackedJob) -> bool:
        """A job ended: report it if it never brought a worker, and replace it. True if replaced."""
        cluster = self.cluster
        current = self._slot_of(tracked)
        if tracked.cancelled_by_us or current is None:
            return False  # we ended it, or it was already replaced
        if tracked.replaced_ahead:
            # its replacement is already running or queued: drop this job's slot
            del cluster.workers[tracked.name]
            cluster.worker_spec.pop(tracked.name, None)
            await current.close()
            logger.info("jobqueue: job %s ended at its walltime (%s); its replacement took over",
                        tracked.job_id, describe_end(tracked))
            return False
        if tracked.exit_code is None and not tracked.workers_seen:
            await self.tracker.settle_exit_code(tracked)
        del cluster.workers[tracked.name]
        await current.close()
        if not tracked.workers_seen:
            self.consecutive_start_failures += 1
            error = JobFailedError(tracked, failure_report(tracked, cluster.scheduler_address))
            self.failures.append(error)
            logger.error("jobqueue: %s", error)
        if self.consecutive_start_failures >= self.max_start_failures:
            if not self.gave_up:
                logger.error("jobqueue: %d jobs in a row ended before their workers connected; not "
                             "submitting more. Fix the cause above, then call scale() again.",
                             self.consecutive_start_failures)
            self.gave_up = True
            cluster.worker_spec.pop(tracked.name, None)
            return False
        if tracked.name not in cluster.worker_spec:
            return False
        self.replacements.append({"job_id": tracked.job_id, "name": tracked.name, "cause": describe_end(tracked),
                                  "time": time.time()})
        logger.warning("jobqueue: job %s (worker %s) ended: %s; submitting a replacement",
                       tracked.job_id, tracked.name, describe_end(tracked))
        return True
