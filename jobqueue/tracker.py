"""JobTracker: submits, cancels and asks about the jobs of one cluster.

It knows every job id it submitted until that job is cancelled or seen finished, so
that closing a cluster can cancel whatever is left with one command. Status of all
jobs is asked with one command, never one per job. No dask imports here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

from .commands import CommandError
from .systems.base import BatchSystem, JobState, JobStatus

logger = logging.getLogger("jobqueue.tracker")


@dataclass
class TrackedJob:
    job_id: str
    name: str
    submitted_at: float = field(default_factory=time.time)
    state: JobState = JobState.PENDING
    reason: str = ""
    since: float = field(default_factory=time.time)
    cancelled_by_us: bool = False


class JobTracker:
    def __init__(self, system: BatchSystem):
        self.system = system
        self.jobs: dict[str, TrackedJob] = {}
        self.commands_issued: dict[str, int] = {"submit": 0, "status": 0, "cancel": 0}

    def live_ids(self) -> list[str]:
        """Ids of jobs that may still be queued or running."""
        return [j.job_id for j in self.jobs.values() if not j.state.finished]

    async def submit(self, script: str, name: str) -> str:
        self.commands_issued["submit"] += 1
        job_id = await self.system.submit(script)
        self.jobs[job_id] = TrackedJob(job_id, name)
        logger.info("submitted job %s for worker %s", job_id, name)
        return job_id

    async def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel ``job_ids`` (one command); already finished jobs are no error."""
        ids = [i for i in job_ids if i in self.jobs and not self.jobs[i].state.finished]
        if not ids:
            return
        self.commands_issued["cancel"] += 1
        await self.system.cancel(ids)
        now = time.time()
        for i in ids:
            job = self.jobs[i]
            job.cancelled_by_us = True
            job.state, job.since = JobState.CANCELLED, now
        logger.info("cancelled job(s) %s", " ".join(ids))

    async def cancel_all(self) -> None:
        ids = self.live_ids()
        if not ids:
            return
        try:
            await self.cancel(ids)
        except CommandError as exc:
            logger.error("could not cancel jobs %s: %s", " ".join(ids), exc)
            raise

    async def poll(self) -> dict[str, JobStatus]:
        """Refresh the state of every live job with one status command."""
        ids = self.live_ids()
        if not ids:
            return {}
        self.commands_issued["status"] += 1
        statuses = await self.system.status(ids)
        now = time.time()
        for job_id, st in statuses.items():
            job = self.jobs[job_id]
            if (job.state, job.reason) != (st.state, st.reason):
                job.state, job.reason, job.since = st.state, st.reason, now
        return statuses

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in self.jobs.values():
            counts[job.state.value] = counts.get(job.state.value, 0) + 1
        return counts
