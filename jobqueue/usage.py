"""What a cluster's jobs cost and what its workers did with it: core-hours and GPU-hours.

Three numbers per pool of identical jobs, all from the cluster's own tracking (no
accounting database needed): *requested* (walltime x cores of every job that started:
what the jobs asked the batch system for), *held* (start to end x cores: what the site
charges) and *busy* (the thread-seconds the workers spent computing tasks, as the
scheduler received them from the workers). Busy / held is how well the allocation was used.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Iterable

from distributed.diagnostics.plugin import SchedulerPlugin

from .tracker import TrackedJob


class BusyTime(SchedulerPlugin):
    """Sums, per worker name, the compute time of every task a worker finished or failed."""

    name = "jobqueue-busy-time"

    def __init__(self) -> None:
        self.scheduler = None
        self.seconds: dict[str, float] = {}

    async def start(self, scheduler) -> None:
        self.scheduler = scheduler

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if start != "processing" or not kwargs.get("startstops"):
            return
        ws = self.scheduler.workers.get(kwargs.get("worker")) if self.scheduler is not None else None
        name = str(ws.name) if ws is not None else str(kwargs.get("worker"))
        busy = sum(max(0.0, ss["stop"] - ss["start"]) for ss in kwargs["startstops"] if ss.get("action") == "compute")
        self.seconds[name] = self.seconds.get(name, 0.0) + busy


@dataclass
class PoolUsage:
    pool: str
    jobs: int = 0                      # jobs that started
    cores_per_job: int = 0
    gpus_per_job: int = 0
    core_hours_requested: float = 0.0  # walltime x cores of each started job
    core_hours_held: float = 0.0       # run time x cores: what the site charges
    core_hours_busy: float = 0.0       # workers computing tasks
    gpu_hours_requested: float = 0.0
    gpu_hours_held: float = 0.0
    gpu_hours_busy: float = 0.0        # busy share of each job's time x its GPUs

    @property
    def efficiency(self) -> float | None:
        """Busy / held core-hours (None before any job ran)."""
        return self.core_hours_busy / self.core_hours_held if self.core_hours_held else None


@dataclass
class Usage:
    """``cluster.usage()``: one PoolUsage per pool; prints as a table."""

    pools: dict[str, PoolUsage] = field(default_factory=dict)

    @property
    def total(self) -> PoolUsage:
        out = PoolUsage("total")
        for p in self.pools.values():
            out.cores_per_job, out.gpus_per_job = max(out.cores_per_job, p.cores_per_job), max(out.gpus_per_job,
                                                                                               p.gpus_per_job)
            for name in ("jobs", "core_hours_requested", "core_hours_held", "core_hours_busy",
                         "gpu_hours_requested", "gpu_hours_held", "gpu_hours_busy"):
                setattr(out, name, getattr(out, name) + getattr(p, name))
        return out

    def to_dict(self) -> dict:
        return {name: asdict(p) for name, p in self.pools.items()}

    def line(self) -> str:
        """One sentence, e.g. for the end of a run."""
        t = self.total
        text = (f"{t.jobs} job(s) held {t.core_hours_held:.3g} core-hours (requested {t.core_hours_requested:.3g}); "
                f"workers were busy {t.core_hours_busy:.3g}")
        if t.efficiency is not None:
            text += f" ({100 * t.efficiency:.0f} %)"
        if t.gpu_hours_held:
            text += f"; GPU-hours held {t.gpu_hours_held:.3g}, busy {t.gpu_hours_busy:.3g}"
        return text

    def __str__(self) -> str:
        head = ("pool", "jobs", "core-h requested", "core-h held", "core-h busy", "busy %",
                "GPU-h requested", "GPU-h held", "GPU-h busy")
        rows = [head]
        for p in [*self.pools.values(), self.total] if len(self.pools) > 1 else list(self.pools.values()):
            eff = f"{100 * p.efficiency:.0f}" if p.efficiency is not None else "-"
            rows.append((p.pool, str(p.jobs), f"{p.core_hours_requested:.3f}", f"{p.core_hours_held:.3f}",
                         f"{p.core_hours_busy:.3f}", eff, f"{p.gpu_hours_requested:.3f}", f"{p.gpu_hours_held:.3f}",
                         f"{p.gpu_hours_busy:.3f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def pool_usage(pool: str, jobs: Iterable[TrackedJob], busy: dict[str, float], *, cores: int, gpus: int,
               threads: int, walltime: float | None, job_of=lambda worker: worker) -> PoolUsage:
    """The usage of one pool's ``jobs`` (each ``cores`` cores, ``gpus`` GPUs and ``threads``
    worker threads); ``busy`` is BusyTime.seconds, ``job_of`` maps a worker name to its
    job's name."""
    now = time.time()
    out = PoolUsage(pool, cores_per_job=cores, gpus_per_job=gpus)
    busy_by_job: dict[str, float] = {}
    for worker, seconds in busy.items():
        busy_by_job[job_of(worker)] = busy_by_job.get(job_of(worker), 0.0) + seconds
    for job in jobs:
        if job.started_at is None:
            continue
        held = max(0.0, (job.ended_at or now) - job.started_at)
        out.jobs += 1
        out.core_hours_held += cores * held / 3600
        out.gpu_hours_held += gpus * held / 3600
        if walltime:
            out.core_hours_requested += cores * walltime / 3600
            out.gpu_hours_requested += gpus * walltime / 3600
        seconds = busy_by_job.pop(job.name, 0.0)
        out.core_hours_busy += seconds / 3600
        out.gpu_hours_busy += gpus * seconds / max(threads, 1) / 3600
    rest = sum(busy_by_job.values())  # workers of jobs no longer known by name
    out.core_hours_busy += rest / 3600
    out.gpu_hours_busy += gpus * rest / max(threads, 1) / 3600
    return out
