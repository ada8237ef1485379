"""JobTracker: submits, cancels and follows the jobs of one cluster.

It knows every job it submitted until the batch system reports it ended, asks the
state of all of them with ONE status command per poll, and keeps an on-disk journal
of the live job ids (owner-only) so that a watchdog or `jobqueue cleanup` can cancel
them if the owning process dies without closing its cluster. No dask imports here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

from .commands import CommandError
from .files import private_dir, write_private
from .systems.base import BatchSystem, JobState
from .watchdog import process_identity

logger = logging.getLogger("jobqueue.tracker")

MISSING = "missing"  # reason given to a job the status command stopped listing


def tail(path: str, lines: int = 20) -> str | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    return "\n".join(data.splitlines()[-lines:])


_EXIT_MARK = re.compile(r"^\[jobqueue\] job script exited with code (\d+)\s*$", re.M)


def exit_code_from_logs(paths) -> int | None:
    """The exit code the job script's EXIT trap wrote to its log, if it did."""
    for path in paths:
        text = tail(path, 20)
        if text:
            found = _EXIT_MARK.findall(text)
            if found:
                return int(found[-1])
    return None


@dataclass
class TrackedJob:
    job_id: str
    name: str
    submitted_at: float = field(default_factory=time.time)
    state: JobState = JobState.PENDING
    reason: str = ""
    since: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    cancelled_by_us: bool = False
    workers_seen: bool = False
    replaced_ahead: bool = False  # a replacement was submitted before its walltime ends
    log_paths: tuple[str, ...] = ()
    absent_since: float | None = None  # when a status answer first omitted it (not yet confirmed ended)

    @property
    def finished(self) -> bool:
        return self.state.finished

    @property
    def display_state(self) -> str:
        """The state word shown to users. "missing": it ended, or vanished from the
        batch system, without any of its workers ever connecting and without a
        failure of its own (e.g. workers that could not reach the scheduler)."""
        if (self.finished and not self.workers_seen and not self.cancelled_by_us
                and (self.state == JobState.COMPLETED or self.reason == MISSING)):
            return MISSING
        return self.state.value


class Journal:
    """Owner-only JSON file listing a cluster's live job ids and the exact command that
    cancels them, so the watchdog and `jobqueue cleanup` need no table of systems."""

    def __init__(self, path: str, system: BatchSystem, owner_pid: int | None = None):
        self.path = path
        self.system = system
        self.owner_pid = owner_pid or os.getpid()
        self.owner_started = process_identity(self.owner_pid)
        self.info: dict = {}  # what `jobqueue list` shows: the cluster's name, job states, usage
        private_dir(os.path.dirname(path))

    def write(self, job_ids: Sequence[str], closed: bool = False, intents: dict[str, float] | None = None) -> None:
        """``closed``: the cluster closed without the cancel of these jobs confirmed; the
        watchdog takes over at once (it retries until the batch system confirms).
        ``intents``: unique job names of submissions whose id has not arrived, each with the
        time until which it may still land; the watchdog cancels those by name."""
        by_name = {name: (self.system.cancel_name_argv(name), until) for name, until in (intents or {}).items()}
        intents = {name: [argv, until] for name, (argv, until) in by_name.items() if argv}
        data = {**self.info, "owner_pid": self.owner_pid, "owner_started": self.owner_started, "system": self.system.name,
                "job_ids": list(job_ids), "cancel_argv": self.system.cancel_argv(list(job_ids)) if job_ids else [],
                "cancel_ok": self.system.cancel_ok, "intents": intents, "closed": closed, "updated": time.time(), "owner_host": socket.gethostname()}
        write_private(self.path, json.dumps(data))

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def start_watchdog(self) -> subprocess.Popen:
        """A detached process that cancels the journal's jobs if this process dies."""
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "watchdog.py")
        log = os.path.join(os.path.dirname(self.path), "watchdog.log")
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            return subprocess.Popen([sys.executable, script, self.path], stdin=subprocess.DEVNULL,
                                    stdout=fd, stderr=fd, start_new_session=True, close_fds=True)
        finally:
            os.close(fd)


class JobTracker:
    """``lost_after``: a job that status answers omit (an empty answer, a controller
    restarting) is taken as ended only when its system's history says so, or when a
    later answer still omits it this many seconds after the first did."""

    def __init__(self, system: BatchSystem, journal: Journal | None = None, lost_after: float = 10.0):
        self.system = system
        self.journal = journal
        self.lost_after = lost_after
        self.jobs: dict[str, TrackedJob] = {}
        # unique names of submissions whose id has not arrived -> until when they may land
        self.intents: dict[str, float] = {}
        self.watchdog: subprocess.Popen | None = None
        self.commands_issued: dict[str, int] = {"submit": 0, "status": 0, "cancel": 0}
        self.on_close: list = []  # what else goes when the tracker closes (a standalone job's credentials)

    def live_ids(self) -> list[str]:
        """Ids of jobs the batch system may still hold (queued, running or ending)."""
        return [j.job_id for j in self.jobs.values() if not j.finished]

    def _write_journal(self, closed: bool = False) -> None:
        if self.journal is not None:
            try:
                self.journal.write(self.live_ids(), closed=closed, intents=self.intents)
            except OSError as exc:  # the journal is a safety net; never fail a job for it
                logger.warning("could not write the job journal %s: %s", self.journal.path, exc)
            if self.watchdog is None:
                self.watchdog = self.journal.start_watchdog()

    async def submit(self, script: str, name: str, log_paths: tuple[str, ...] = (),
                     job_name: str | None = None) -> TrackedJob:
        """Submit one job for worker ``name``, as the unique batch job name ``job_name``."""
        job_id = await self._submit(script, log_paths, job_name)
        logger.info("submitted job %s for worker %s", job_id, name)
        return self._track([job_id], [name], log_paths)[0]

    async def submit_array(self, script: str, names: Sequence[str], log_paths: tuple[str, ...] = (),
                           job_name: str | None = None) -> list[TrackedJob]:
        """Submit one array job whose element i runs worker names[i]; each element is
        tracked (and cancelled) as a job of its own."""
        array_id = await self._submit(script, log_paths, job_name)
        ids = self.system.array_element_ids(array_id, len(names))
        logger.info("submitted array job %s: elements %s for workers %s", array_id, " ".join(ids), " ".join(names))
        return self._track(ids, names, log_paths)

    async def _submit(self, script: str, log_paths: tuple[str, ...], job_name: str | None) -> str:
        """Journal the intent (the unique job name) first, so that a submission whose answer
        never arrives -- the owner killed meanwhile, a timeout, an unreadable answer -- can
        still be found, or cancelled by name. Returns the job id."""
        self.commands_issued["submit"] += 1
        if job_name:
            self.intents[job_name] = time.time() + self.system.command_timeout + 30
            self._write_journal()
        try:
            job_id = await self.system.submit(script, log_paths, name=job_name)
        except CommandError as exc:
            if not job_name or not self.system.ambiguous(exc):
                self.intents.pop(job_name, None)
                raise
            found = await self._find(job_name)
            if not found:
                raise  # the intent stays journaled: cancelled by name at close, or by the watchdog
            logger.warning("%s (%s); found the job by its name %s: %s", exc, type(exc).__name__, job_name, found[0])
            job_id = found[0]
        self.intents.pop(job_name, None)
        return job_id

    async def _find(self, job_name: str) -> list[str]:
        try:
            return await self.system.find(job_name)
        except CommandError as exc:
            logger.warning("could not look for job %s by its name: %s", job_name, exc)
            return []

    def _track(self, job_ids: Sequence[str], names: Sequence[str], log_paths: tuple[str, ...]) -> list[TrackedJob]:
        """Record newly submitted jobs (%J in log paths is each one's id), journal them,
        and start the watchdog with the first."""
        records = [TrackedJob(job_id, name, log_paths=tuple(p.replace("%J", self.system.log_id(job_id))
                                                            for p in log_paths))
                   for job_id, name in zip(job_ids, names)]
        self.jobs.update((r.job_id, r) for r in records)
        self._write_journal()
        return records

    async def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel ``job_ids`` with one command; already finished jobs are no error.

        Their state is left to the next poll, so the real end (cancelled, completed,
        timeout) is what users see.
        """
        ids = [i for i in job_ids if i in self.jobs and not self.jobs[i].finished]
        if not ids:
            return
        self.commands_issued["cancel"] += 1
        for i in ids:
            self.jobs[i].cancelled_by_us = True
        try:
            await self.system.cancel(ids)
        except BaseException:
            for i in ids:  # still ours to cancel: the journal (and the watchdog) keep them
                self.jobs[i].cancelled_by_us = False
            raise
        logger.info("cancelled job(s) %s", " ".join(ids))

    def mark_cancelled(self) -> None:
        """After the cluster closed: jobs we cancelled read "cancelled", not their last state."""
        now = time.time()
        for job in self.jobs.values():
            if job.cancelled_by_us and not job.finished:
                job.state, job.reason, job.since, job.ended_at = JobState.CANCELLED, "cluster closed", now, now

    def running_ids(self) -> list[str]:
        return [j.job_id for j in self.jobs.values() if j.state == JobState.RUNNING]

    async def let_end(self, job_ids: Sequence[str], timeout: float) -> None:
        """Wait up to ``timeout`` s for jobs whose workers were asked to exit to end on their
        own (COMPLETED in the batch system's records), before anything is cancelled."""
        deadline = time.monotonic() + timeout
        while any(not self.jobs[i].finished for i in job_ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            try:
                for job in await self.poll():
                    await self.settle_exit_code(job)
            except CommandError:
                return  # the system does not answer: cancel as usual

    async def settle_exit_code(self, job: TrackedJob) -> None:
        """An ended job's exit code, from the system or else from its log (PBS without job
        history forgets a job at once; the job script wrote its code to its log); a job the
        system forgot is then finished or failed by that code, not "missing"."""
        if job.exit_code is None:
            with contextlib.suppress(Exception):
                job.exit_code = await self.system.exit_code(job.job_id)
        if job.exit_code is None:
            job.exit_code = exit_code_from_logs(job.log_paths)
        if job.exit_code is not None and job.reason == MISSING and not job.cancelled_by_us:
            job.state = JobState.COMPLETED if job.exit_code == 0 else JobState.FAILED
            job.reason = ""

    async def cancel_all(self) -> None:
        """Cancel every live job, and any job of a submission whose id never arrived."""
        for job_name in list(self.intents):
            ids = await self._find(job_name)
            if ids:
                await self.system.cancel(ids)
                logger.warning("cancelled job(s) %s, found by the name %s", " ".join(ids), job_name)
            if not ids and time.time() < self.intents[job_name]:
                continue  # may still land: the watchdog keeps watching for it
            del self.intents[job_name]
        await self.cancel(self.live_ids())

    async def poll(self) -> list[TrackedJob]:
        """Refresh every live job with one status command; return the jobs that just ended.

        Raises CommandError when the batch system does not answer: that is not a job
        failure, and states stay as they were.
        """
        ids = self.live_ids()
        if not ids:
            return []
        self.commands_issued["status"] += 1
        statuses = await self.system.status(ids)
        now = time.time()
        absent = [i for i in ids if i not in statuses]
        if absent:
            statuses.update(await self._settle_absent(absent, now))
        ended, requeued = [], []
        for job_id in ids:
            job = self.jobs[job_id]
            if job_id not in statuses:
                continue  # omitted by this answer, not confirmed ended: unchanged, still tracked
            st = statuses[job_id]
            if st is None or st.gone:
                # the system says it no longer knows it (purged, or never started): it is over
                state, reason, code = (JobState.CANCELLED if job.cancelled_by_us else JobState.FAILED), MISSING, None
            else:
                state, reason, code = st.state, st.reason, st.exit_code
                job.absent_since = None
                if job.cancelled_by_us and state == JobState.FAILED:
                    state = JobState.CANCELLED  # killed by our cancel
            if state == JobState.PENDING and job.started_at is not None and not job.cancelled_by_us:
                # it ran and is back in the queue: the batch system requeued it (its node failed,
                # preemption). Its workers are gone and a rerun would start afresh, only later
                # (Slurm holds a requeued job ~2 min): end it now, so that it is replaced now.
                state, reason = JobState.FAILED, f"requeued by the batch system: {reason or 'pending again'}"
                requeued.append(job)
            if (state, reason) != (job.state, job.reason):
                job.state, job.reason, job.since = state, reason, now
            if code is not None:
                job.exit_code = code
            if state == JobState.RUNNING and job.started_at is None:
                job.started_at = now
            if state.finished:
                job.ended_at = now
                ended.append(job)
        # e.g. Grid Engine's Eqw: the job failed but sits in the queue until deleted; requeued jobs
        stuck = [j for j in ended if (st := statuses.get(j.job_id)) is not None and st.stuck] + requeued
        if stuck:
            try:
                await self.system.cancel([j.job_id for j in stuck])
                self.commands_issued["cancel"] += 1
            except CommandError as exc:
                logger.warning("could not remove failed jobs %s: %s", [j.job_id for j in stuck], exc)
        if ended:
            self._write_journal()
        return ended

    async def _settle_absent(self, absent: list[str], now: float) -> dict:
        """Jobs a status answer omitted: their history's word where it has one (ended with
        an exit code, or still there), None (lost) once still omitted ``lost_after`` s after
        the first omission; nothing for the others, which stay as they were."""
        due = []
        for job_id in absent:
            job = self.jobs[job_id]
            if job.absent_since is None:
                job.absent_since = now
                due.append(job_id)
            elif now - job.absent_since >= self.lost_after:
                due.append(job_id)
        if not due:
            return {}
        try:
            history = await self.system.history(due)
        except CommandError as exc:
            logger.warning("could not read the history of jobs %s: %s", " ".join(due), exc)
            history = {}
        out: dict = {job_id: st for job_id, st in history.items() if job_id in due}
        for job_id in due:
            if job_id not in out and now - self.jobs[job_id].absent_since >= self.lost_after:
                out[job_id] = None
                logger.warning("job %s has been missing from %s's answers for %.0f s; taking it as ended",
                               job_id, self.system.name, now - self.jobs[job_id].absent_since)
        return out

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in self.jobs.values():
            counts[job.display_state] = counts.get(job.display_state, 0) + 1
        return counts

    def close(self) -> None:
        """Drop the journal (the watchdog then exits) once nothing is left to cancel; else
        mark it closed, and the watchdog keeps cancelling what is left until confirmed."""
        while self.on_close:
            self.on_close.pop()()
        if self.journal is None:
            return
        left = [j.job_id for j in self.jobs.values() if not j.finished and not j.cancelled_by_us]
        if left or self.intents:
            self._write_journal(closed=True)
            logger.warning("jobs %s are not confirmed cancelled; the watchdog retries (log: %s)",
                           " ".join(left + list(self.intents)),
                           os.path.join(os.path.dirname(self.journal.path), "watchdog.log"))
            return
        self.journal.remove()
        if self.watchdog is not None:
            try:
                self.watchdog.wait(5)
            except subprocess.TimeoutExpired:
                self.watchdog.kill()
            self.watchdog = None
