"""What a JobQueueCluster shows its user: the job table (waiting jobs included), logs,
the repr with job states and reasons, the dashboard link with its token, and the usage
report (core-hours held vs. busy, jobqueue.usage). A mixin of JobQueueCluster."""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter

import dask
from distributed.core import Status

from .dashboard import with_token
from .pools import DEFAULT
from .reports import JobRow, JobTable, job_logs
from .usage import BusyTime, Usage, pool_usage

logger = logging.getLogger("jobqueue")


class ClusterReports:
    """What a JobQueueCluster shows: the job table, logs, repr, the dashboard link, usage."""

    named: dict | None = None  # set by the head of a named cluster (jobqueue.head): name, system, job id

    @property
    def jobs(self) -> JobTable:
        """Every job this cluster submitted (id, name, state, reason, workers, since), then the
        jobs waiting here for their turn (id "-", state "waiting", and why)."""
        workers = Counter(getattr(self.workers.get(self._job_of(name)), "job_id", None) for name in self._connected())
        return JobTable([JobRow(j.job_id, j.name, j.display_state, j.reason, workers[j.job_id], j.since,
                                self.pool_of(j.name).name) for j in self._tracker.jobs.values()]
                        + [JobRow("-", str(job.name), "waiting", pool.submissions.waiting_reason(), 0,
                                  getattr(job, "waiting_since", None) or time.time(), pool.name)
                           for pool in self.pools.values() for job in pool.submissions.waiting])

    def logs(self) -> dict[str, str]:
        """The stdout and stderr of every job, by job id (files that do not exist are left out)."""
        return job_logs(self._tracker.jobs.values())

    def __repr__(self) -> str:
        text = super().__repr__()
        if self.status in (Status.closing, Status.closed):
            return f"{text[:-1]}, {self.status.name})" if text.endswith(")") else text
        return f"{text[:-1]}, jobs: {self._jobs_summary()})" if text.endswith(")") else text

    def _jobs_summary(self) -> str:
        return f"{self._state_words()} (job name {self.job_spec.job_name})"

    def _state_words(self) -> str:
        """e.g. "6 running, 4 waiting (job submit limit)" or "2 pending (Priority)"; with several
        pools, one part per pool: "default: 2 running; gpu: 1 pending (Resources)"."""
        if len(self.pools) > 1:
            return "; ".join(f"{name}: {pool.state_words()}" for name, pool in self.pools.items())
        return self.pools[DEFAULT].state_words()

    def _repr_html_(self, cluster_status=None) -> str:
        import html

        if len(self.pools) > 1:  # one line per pool
            status = "".join(f"<p><b>Pool {html.escape(name)}:</b> {html.escape(pool.state_words())}</p>"
                             for name, pool in self.pools.items())
        else:
            status = f"<p><b>Jobs:</b> {html.escape(self._jobs_summary())}</p>"
        return super()._repr_html_(cluster_status=(cluster_status or "") + status)

    @property
    def dashboard_link(self) -> str:
        """The dashboard's address, with the token that lets its owner in (see jobqueue.dashboard)."""
        link = super().dashboard_link
        return with_token(link, self._dashboard_token) if link and self._dashboard_token else link

    @functools.cached_property
    def _busy(self) -> BusyTime:
        """The scheduler plugin that sums the workers' compute time (added at start)."""
        return BusyTime()

    def usage(self) -> Usage:
        """Core-hours (and GPU-hours) of this cluster's jobs: requested (walltime x cores of
        each job that started), held (run time x cores: what the site charges) and busy (the
        time its workers spent computing tasks, from the scheduler), per pool."""
        pools = {}
        for name, pool in self.pools.items():
            spec = pool.spec
            label = (spec.job_name or "workers") if len(self.pools) == 1 else name
            busy = {w: s for w, s in self._busy.seconds.items() if pool.owns(self._job_of(w))}
            pools[label] = pool_usage(label, [j for j in self._tracker.jobs.values() if pool.owns(j.name)], busy,
                                      cores=spec.cores * spec.job_nodes, gpus=spec.gpus * spec.job_nodes,
                                      threads=spec.cores * spec.job_nodes, walltime=spec.walltime,
                                      job_of=self._job_of)
        return Usage(pools)

    def journal_info(self) -> dict:
        """What `jobqueue list` shows of this cluster (kept in its job journal)."""
        return {"cluster": type(self).__name__, "name": str(self.name), "scheduler": self._scheduler_address(),
                "jobs_summary": self._state_words(), "usage": self.usage().to_dict(), "info_time": time.time(),
                **({"named": self.named} if self.named else {})}

    def _report_usage(self) -> None:
        """The line at close: what the jobs held and how busy the workers were."""
        if not dask.config.get("jobqueue.usage-report", True):
            return
        try:
            usage = self.usage()
        except Exception:  # noqa: BLE001 - a report must never break a close
            logger.debug("jobqueue: no usage report", exc_info=True)
            return
        if usage.total.jobs:
            import sys

            print(f"jobqueue: {type(self).__name__} closed; {usage.line()}", file=sys.stderr)
