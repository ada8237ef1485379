"""Worker pools: several kinds of job in one cluster, each scaled and adapted on its own.

A cluster's constructor keywords make its *default* pool; ``cluster.add_pool("gpu", queue="gpu",
cores=8, memory="64GB", gpus=2)`` adds another, with its own job keywords (the cluster's, then
these), its own submission queue (arrays, limits), and workers that offer its Dask resources
(``GPU=1`` per worker of a pool with gpus, plus ``worker_resources``). Every pool's jobs share
the cluster's tracker (one status command per poll for all), supervisor, journal and scheduler.

Adaptive scaling per pool (``pool.adapt``): Dask's adaptive core asks a target number of workers
and which workers to close; with one pool that is Dask's own answer (from the scheduler's
occupancy). With several, a pool's target counts the tasks *it* can run that are waiting or
running on it -- tasks whose resource restrictions its workers satisfy, and, for the pool that
takes plain work (the default, or the first without resources), the unrestricted ones -- so a
pool never grows for work it cannot run; and it closes only its own idle workers.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import TYPE_CHECKING, Any

from distributed.core import Status
from distributed.deploy.adaptive import Adaptive
from distributed.utils import NoOpAwaitable

from .job import removal_order
from .reports import JobRow, JobTable, summarize

if TYPE_CHECKING:
    from .cluster import JobQueueCluster
    from .submission import SubmissionQueue

DEFAULT = "default"


def pool_keywords(base: dict, pool: dict) -> dict:
    """A pool's job keywords: ``base`` (the cluster's), then the pool's own; a pool that gives
    ``gpus`` but not ``processes`` gets one worker per GPU, not the base's process count."""
    merged = {**base, **pool}
    if pool.get("gpus") and "processes" not in pool:
        merged.pop("processes", None)
    return merged


class Pool:
    """One kind of job in a cluster: ``scale``, ``adapt``, ``jobs``, ``job_ids``, ``job_script``."""

    def __init__(self, cluster: JobQueueCluster, name: str, submissions: SubmissionQueue, template: dict):
        self.cluster = cluster
        self.name = name
        self.submissions = submissions
        self.template = template  # SpecCluster's worker spec of one job of this pool
        self._counter = itertools.count()
        self._adaptive: PoolAdaptive | None = None
        self.created: set = set()  # every job name this pool made (a default pool's: all the others')

    spec = property(lambda self: self.submissions.spec, doc="The JobSpec of this pool's jobs.")

    # --- membership ----------------------------------------------------------------
    def owns(self, spec_name) -> bool:
        if self.name != DEFAULT:
            return spec_name in self.created
        return not any(p.owns(spec_name) for p in self.cluster.pools.values() if p is not self)

    def names(self) -> list:
        """This pool's jobs (SpecCluster worker names), oldest first."""
        return [name for name in self.cluster.worker_spec if self.owns(name)]

    def _expand(self, names) -> set:
        out = set()
        for name in names:
            group = (self.cluster.worker_spec.get(name) or self.template).get("group")
            out.update({f"{name}{suffix}" for suffix in group} if group else {name})
        return out

    def plan(self) -> set:
        return self._expand(self.names())

    def requested(self) -> set:
        return self._expand([n for n in self.cluster.workers if self.owns(n)])

    def worker_states(self) -> list:
        """The scheduler's WorkerState of each connected worker of this pool."""
        sched = self.cluster.scheduler
        return [ws for ws in getattr(sched, "workers", {}).values() if self.owns(self.cluster._job_of(str(ws.name)))]

    def observed(self) -> set:
        return {ws.name for ws in self.worker_states()}

    def new_worker_spec(self) -> dict:
        if self.name == DEFAULT:
            return self.cluster.new_worker_spec()
        while True:
            name = f"{self.cluster._name}-{self.name}-{next(self._counter)}"
            if name not in self.cluster.worker_spec and name not in self.cluster.workers:
                self.created.add(name)
                return {name: dict(self.template)}

    # --- scaling --------------------------------------------------------------------
    def jobs_for(self, n: int | None = None, jobs: int = 0, memory: str | None = None,
                 cores: int | None = None) -> int:
        from dask.utils import parse_bytes

        spec = self.spec
        if n is not None:
            jobs = max(jobs, math.ceil(n / spec.workers_per_job))
        if memory is not None:
            jobs = max(jobs, math.ceil(parse_bytes(memory) / (spec.memory * spec.job_nodes)))
        if cores is not None:
            jobs = max(jobs, math.ceil(cores / (spec.cores * spec.job_nodes)))
        return jobs

    def scale(self, n: int | None = None, jobs: int = 0, memory: str | None = None, cores: int | None = None):
        """Scale this pool to ``n`` workers, or ``jobs`` jobs, or enough for ``memory`` / ``cores``
        (``cluster.scale`` is the default pool's)."""
        jobs = self.jobs_for(n, jobs, memory, cores)
        self.cluster._before_scale(jobs)
        self.resize(jobs)
        self.cluster.loop.add_callback(self.cluster._correct_state)
        return NoOpAwaitable() if self.cluster.asynchronous else None

    def resize(self, jobs: int) -> None:
        """Add or drop this pool's job specs to ``jobs`` (never-submitted and queued ones go first)."""
        cluster = self.cluster
        names = self.names()
        if len(names) > jobs:
            waiting = {job.name for job in self.submissions.waiting} | (set(names) - set(cluster.workers))
            connected = {cluster._job_of(n) for n in cluster._connected()}
            for name in removal_order(names, waiting, connected):
                if len(names) > jobs:
                    del cluster.worker_spec[name]
                    names.remove(name)
            while len(names) > jobs:  # running ones too: the newest first
                del cluster.worker_spec[names.pop()]
        while len(names) < jobs and cluster.status not in (Status.closing, Status.closed):
            new = self.new_worker_spec()
            cluster.worker_spec.update(new)
            names += list(new)

    def adapt(self, minimum: int | None = None, maximum: int | None = None, minimum_jobs: int | None = None,
              maximum_jobs: int | None = None, **kwargs: Any) -> PoolAdaptive:
        """Scale this pool with the load it can take, between ``minimum_jobs`` and ``maximum_jobs``
        (or workers, as in Dask)."""
        if self.name == DEFAULT:
            return self.cluster.adapt(minimum=minimum, maximum=maximum, minimum_jobs=minimum_jobs,
                                      maximum_jobs=maximum_jobs, **kwargs)
        self.cluster._refuse_if_closed(f"adapt pool {self.name!r}")
        per_job = self.spec.workers_per_job
        if minimum_jobs is not None:
            minimum = minimum_jobs * per_job
        if maximum_jobs is not None:
            maximum = maximum_jobs * per_job
        if self._adaptive is not None:
            self._adaptive.stop()
        self._adaptive = PoolAdaptive(self.cluster, pool=self, minimum=minimum or 0,
                                      maximum=maximum if maximum is not None else math.inf, **kwargs)
        return self._adaptive

    def adapting(self) -> bool:
        adaptive = self.cluster._adaptive if self.name == DEFAULT else self._adaptive
        pc = getattr(adaptive, "periodic_callback", None)
        return bool(pc is not None and pc.is_running())

    # --- what adapt asks ------------------------------------------------------------
    def takes_plain_work(self) -> bool:
        """Does this pool grow for tasks without resource restrictions?"""
        pools = list(self.cluster.pools.values())
        plain = next((p for p in pools if not p.spec.resources_per_worker), pools[0])
        return plain is self

    def can_run(self, ts) -> bool:
        restrictions = getattr(ts, "resource_restrictions", None) or {}
        if not restrictions:
            return self.takes_plain_work()
        mine = self.spec.resources_per_worker
        return all(mine.get(k, 0) >= v for k, v in restrictions.items())

    def adaptive_target(self) -> int:
        """Workers this pool needs for the tasks it can run: waiting ones and its own running ones."""
        sched = self.cluster.scheduler
        waiting = itertools.chain(getattr(sched, "unrunnable", ()), getattr(sched, "queued", ()))
        count = sum(1 for ts in waiting if self.can_run(ts))
        # its running tasks that are its kind of work (plain tasks may run on a GPU worker: they
        # keep it busy, so it is not retired, but they are no reason to grow the GPU pool)
        count += sum(1 for ws in self.worker_states() for ts in ws.processing if self.can_run(ts))
        return math.ceil(count / max(1, self.spec.threads_per_process))

    def workers_to_close(self, target: int) -> list[str]:
        """This pool's idle workers beyond ``target``, those holding the least data first."""
        states = self.worker_states()
        idle = sorted((ws for ws in states if not ws.processing), key=lambda ws: ws.nbytes)
        return [str(ws.name) for ws in idle[:max(0, len(states) - target)]]

    # --- what users read -------------------------------------------------------------
    @property
    def jobs(self) -> JobTable:
        """This pool's jobs (as ``cluster.jobs``)."""
        return JobTable(row for row in self.cluster.jobs if row.pool == self.name)

    @property
    def job_ids(self) -> list[str]:
        """This pool's jobs that are queued or running and not being cancelled (as cluster.job_ids)."""
        tracked = self.cluster.tracker.jobs
        return [i for i in self.cluster.job_ids if self.owns(tracked[i].name)]

    def job_script(self) -> str:
        return self.submissions.render(self.cluster._scheduler_address())

    def state_words(self) -> str:
        records = [r for r in self.cluster.tracker.jobs.values() if self.owns(r.name)]
        text = summarize(records)
        waiting = self.submissions.waiting_summary()
        return (("" if text.startswith("none") else text + ", ") + waiting) if waiting else text

    def __repr__(self) -> str:
        resources = ", ".join(f"{k}={v:g}" for k, v in self.spec.resources_per_worker.items())
        return (f"<Pool {self.name!r}: {len(self.names())} job(s) of {self.spec.cores} cores, "
                f"{self.spec.workers_per_job} worker(s) each{' with ' + resources if resources else ''}; "
                f"{self.state_words()}>")


class Pools:
    """``add_pool`` of every cluster class (a mixin of JobQueueCluster)."""

    def add_pool(self, name: str, **job_kwargs: Any) -> Pool:
        """Another kind of job in this cluster, e.g. ``add_pool("gpu", queue="gpu", gpus=2)``:
        the cluster's job keywords, then these; its own ``scale``, ``adapt``, ``jobs``."""
        from . import files, keywords
        from .submission import SubmissionQueue

        check_pool_name(name, self.pools)
        given = pool_keywords({**self._given, "job_name": f"{self.job_spec.job_name or 'dask-worker'}-{name}"},
                              job_kwargs)
        spec = keywords.build_spec(type(self).__name__, self.system_cls, self.config_name,
                                   interface=self._worker_options["interface"],
                                   protocol=self._worker_options["protocol"], **given)
        if spec.log_directory:
            files.private_dir(spec.log_directory, tighten=False)
        queue = SubmissionQueue(spec, self._system, self._tracker, **self._queue_options)
        options = {**self._worker_options, **given, "cores": spec.cores, "memory": spec.memory}
        self.pools[name] = pool = Pool(self, name, queue, self._worker_spec(self.job_cls, options, queue))
        return pool

    def _default_pool(self, given: dict, **options: Any) -> dict:
        """The default pool (the constructor's keywords); its SpecCluster worker template."""
        spec = self._submissions.spec
        self._given = given
        self._worker_options = {"cores": spec.cores, "memory": spec.memory, **given, "config_name": self.config_name,
                                **options}
        worker = self._worker_spec(self.job_cls, self._worker_options, self._submissions)
        self.pools: dict[str, Pool] = {DEFAULT: Pool(self, DEFAULT, self._submissions, worker)}
        return worker

    def _add_pools(self, pools: dict | None) -> None:
        for name, kwargs in (pools or {}).items():
            self.add_pool(name, **(kwargs or {}))

    def pool_of(self, job_name) -> Pool:
        """The pool a job (SpecCluster worker name) belongs to."""
        return next((p for p in self.pools.values() if p.name != DEFAULT and p.owns(job_name)), self.pools[DEFAULT])


class PoolAdaptive(Adaptive):
    """Dask's adaptive core, for one pool: its target, its plan, its idle workers."""

    def __init__(self, cluster, pool: Pool, **kwargs: Any):
        self.pool = pool
        super().__init__(cluster, **kwargs)

    plan = property(lambda self: self.pool.plan())
    requested = property(lambda self: self.pool.requested())
    observed = property(lambda self: self.pool.observed())

    def _alone(self) -> bool:
        return len(self.cluster.pools) == 1

    async def target(self) -> int:
        return await super().target() if self._alone() else self.pool.adaptive_target()

    async def workers_to_close(self, target: int) -> list[str]:
        return await super().workers_to_close(target) if self._alone() else self.pool.workers_to_close(target)

    async def scale_up(self, n: int) -> None:
        self.pool.scale(n)


def check_pool_name(name: str, taken) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,30}", name):
        raise ValueError(f"invalid pool name {name!r}: a letter, then letters, digits or _, e.g. add_pool(\"gpu\", ...)")
    if name in taken:
        raise ValueError(f"the cluster has a pool named {name!r} already; choose another name")
    return name


def pool_rows(cluster, rows: list[JobRow]) -> list[JobRow]:
    """The job table's rows with the pool each job belongs to."""
    pools = list(cluster.pools.values())
    out = []
    for row in rows:
        owner = next((p.name for p in pools if p.owns(row.name)), DEFAULT)
        out.append(JobRow(row.job_id, row.name, row.state, row.reason, row.workers, row.since, owner))
    return out
