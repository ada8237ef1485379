"""What we tell users about their jobs: failure reports with log tails, the job table.

No dask imports: plain text built from TrackedJob records and log files.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Iterable

from .tracker import MISSING, TrackedJob, exit_code_from_logs, tail  # noqa: F401 (here for callers of reports)

TAIL_LINES = 20
# what a dask worker logs when it cannot reach its scheduler
_UNREACHABLE = ("Timed out trying to connect", "Waiting to connect to", "Failed to connect",
                "Connection refused", "No route to host", "Timed out during handshake",
                "cannot reach the scheduler")


class ClusterEndingWarning(UserWarning):
    """A named cluster's scheduler job nears its walltime: the cluster stops soon (shown in
    every client connected to it)."""


class JobFailedError(RuntimeError):
    """A job ended before its workers connected; the message is the full report."""

    def __init__(self, job: TrackedJob, report: str):
        self.job = job
        self.job_id = job.job_id
        super().__init__(report)


def job_logs(jobs: Iterable[TrackedJob]) -> dict[str, str]:
    """The whole stdout and stderr of each job, by job id (files that do not exist are left out)."""
    out = {}
    for job in jobs:
        parts = [f"--- {path}\n{text}" for path in job.log_paths if (text := tail(path, lines=10**6)) is not None]
        if parts:
            out[job.job_id] = "\n".join(parts)
    return out


def describe_end(job: TrackedJob) -> str:
    """e.g. "failed, exit code 3 (NonZeroExitCode)" or "timeout (TimeLimit)"."""
    words = job.display_state
    if job.exit_code is not None:
        words += f", killed by signal {-job.exit_code}" if job.exit_code < 0 else f", exit code {job.exit_code}"
    if job.reason and job.reason != MISSING:
        words += f" ({job.reason})"
    elif job.reason == MISSING:
        words += " (no longer listed by the batch system)"
    return words


def failure_report(job: TrackedJob, scheduler_address: str) -> str:
    """Why a job produced no worker: its end state, exit code and the tails of its logs."""
    lines = [f"job {job.job_id} (worker {job.name}) ended before any of its workers connected: "
             f"{describe_end(job)}"]
    unreachable = False
    found = False
    for path in job.log_paths:
        text = tail(path, TAIL_LINES)
        if text is None:
            continue
        found = True
        lines.append(f"--- last lines of {path}:" if text else f"--- {path} is empty")
        lines.extend("    " + line for line in text.splitlines())
        unreachable = unreachable or any(marker in text for marker in _UNREACHABLE)
    if not found and job.log_paths:
        lines.append(f"(no log file found at {', '.join(job.log_paths)})")
    if unreachable:
        lines.append(
            f"The worker could not reach the scheduler at {scheduler_address}. If the compute nodes "
            "reach this machine through another network, pass interface='ib0' (the workers' and the "
            "scheduler's interface) or scheduler_options={'interface': '<interface the nodes can reach>'}.")
    return "\n".join(lines)


@dataclass
class JobRow:
    job_id: str
    name: str
    state: str
    reason: str
    workers: int
    since: float
    pool: str = "default"


class JobTable(list):
    """The cluster's jobs, one JobRow each; prints as a table, renders in Jupyter."""

    COLUMNS = ("job_id", "name", "state", "reason", "workers", "since")

    def _pools(self) -> bool:
        return any(r.pool != "default" for r in self)

    def _columns(self) -> tuple[str, ...]:
        return self.COLUMNS + (("pool",) if self._pools() else ())

    def _cells(self) -> list[tuple[str, ...]]:
        now = time.time()
        pools = self._pools()
        return [(r.job_id, r.name, r.state, r.reason, str(r.workers), f"{now - r.since:.0f}s ago")
                + ((r.pool,) if pools else ()) for r in self]

    def __str__(self) -> str:
        columns = self._columns()
        rows = [columns] + self._cells()
        widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)

    def _repr_html_(self) -> str:
        import html

        head = "".join(f"<th>{c}</th>" for c in self._columns())
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in self._cells())
        return f"<table><tr>{head}</tr>{body}</table>"


def summarize(jobs: Iterable[TrackedJob]) -> str:
    """e.g. "3 running, 7 pending (Priority)": live jobs by state, pending ones by reason."""
    counts: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for job in jobs:
        if job.finished:
            continue
        counts[job.state.value] = counts.get(job.state.value, 0) + 1
        if job.state.value == "pending" and job.reason:
            reasons[job.reason] = reasons.get(job.reason, 0) + 1
    parts = []
    for state in ("running", "pending", "unknown"):
        n = counts.get(state)
        if not n:
            continue
        text = f"{n} {state}"
        if state == "pending" and reasons:
            if len(reasons) == 1 and next(iter(reasons.values())) == n:
                text += f" ({next(iter(reasons))})"
            else:
                text += " (" + ", ".join(f"{k} {r}" for r, k in sorted(reasons.items())) + ")"
        parts.append(text)
    return ", ".join(parts) or "none queued or running"


class WaitProgress:
    """The status line of a wait for workers: rewritten in place about once a second on a
    terminal; elsewhere (a log, a notebook) a plain line every ``interval`` seconds, never
    a carriage return. Nothing for waits shorter than ``delay``; ``interval`` 0: silent."""

    def __init__(self, n_workers: int, interval: float = 30.0, delay: float = 2.0, stream=None):
        self.n_workers = n_workers
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.delay = delay
        try:
            self.tty = self.stream.isatty() and os.environ.get("TERM") != "dumb"
        except (AttributeError, ValueError):
            self.tty = False
        self.started = time.monotonic()
        self.last = self.started
        self.width = 0

    def line(self, running: int, jobs: str) -> str:
        return (f"jobqueue: {running} of {self.n_workers} workers after {time.monotonic() - self.started:.0f} s; "
                f"jobs: {jobs}")

    def update(self, running: int, jobs: str) -> None:
        now = time.monotonic()
        if not self.interval or now - self.started < self.delay:
            return
        if self.tty and now - self.last >= 1.0:
            text = self.line(running, jobs)
            self._write("\r" + text.ljust(self.width))
            self.width, self.last = len(text), now
        elif not self.tty and now - self.last >= self.interval:
            self._write(self.line(running, jobs) + "\n")
            self.last = now

    def close(self) -> None:
        if self.width:  # leave the terminal line clean for what comes next
            self._write("\r" + " " * self.width + "\r")
            self.width = 0

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.interval = 0  # the stream closed: stay silent
