"""A named cluster seen from any process of its owner: ``jobqueue.attach(name)``.

The scheduler and the manager run in the cluster's scheduler job (jobqueue.head); the
object here is a thin distributed ``Cluster`` connected to that scheduler with the owner's
TLS credentials. ``Client(cluster)`` works; ``scale``, ``adapt``, ``jobs``, ``logs`` and
``wait_for_workers`` act on the head; ``close()`` stops the cluster (as ``jobqueue down``);
``detach()`` only disconnects, leaving it running for the next process.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

from distributed.core import Status, rpc
from distributed.deploy.cluster import Cluster

from . import files
from .head import CONTROL, read_json
from .reports import JobRow, JobTable


class AttachedCluster(Cluster):
    """A handle on the named cluster ``name`` (started by `jobqueue up` or ``<System>Cluster.up``)."""

    def __init__(self, name: str, asynchronous: bool = False, loop=None):
        import os

        from .detached import read_record
        from .security import file_security

        self.record = read_record(name)
        info = read_json(os.path.join(files.named_dir(name), "scheduler.json"))
        if not info:
            state = self.record["head"].get("state") or "not started yet"
            raise ValueError(f"cluster {name!r} has no running scheduler ({state}); `jobqueue list` shows its "
                             f"scheduler job, `jobqueue down {name}` removes it")
        self._address = info["address"]
        self.security = file_security(info)
        self._info: dict = {}
        self._subscription = None
        super().__init__(asynchronous=asynchronous, loop=loop, name=name)
        from .systems import load

        self._name = load(self.record["system"]).cluster_name
        if not self.asynchronous:
            self._loop_runner.start()
            self.sync(self._start)

    async def _start(self) -> None:
        args = self.security.get_connection_args("client") if self.security else {}
        self.scheduler_comm = rpc(self._address, connection_args=args)
        await super()._start()
        self.name = self.record["name"]  # not the head's own metadata name
        await self._call("info")

    async def _sync_cluster_info(self) -> None:
        return  # the head owns the cluster's metadata on the scheduler

    async def _call(self, op: str, **kwargs: Any):
        result = await getattr(self.scheduler_comm, CONTROL)(action=op, **kwargs)
        if op not in ("logs", "down"):
            self._info = result
        return result

    def _sync(self, op: str, **kwargs: Any):
        return self.sync(self._call, op, **kwargs)

    # --- what a cluster user calls -------------------------------------------------
    def scale(self, n: int | None = None, jobs: int = 0, memory: str | None = None, cores: int | None = None,
              pool: str | None = None):
        """Scale the default pool (or ``pool``) to ``n`` workers, or ``jobs`` jobs, or enough jobs for
        ``memory`` / ``cores`` (done by the cluster's scheduler job)."""
        return self._sync("scale", n=n, jobs=jobs, memory=memory, cores=cores, pool=pool)

    def adapt(self, minimum: int | None = None, maximum: int | None = None, minimum_jobs: int | None = None,
              maximum_jobs: int | None = None, pool: str | None = None, **kwargs: Any):
        """Scale with load, run by the scheduler job (no process of yours needs to stay)."""
        self._sync("adapt", minimum=minimum, maximum=maximum, minimum_jobs=minimum_jobs,
                   maximum_jobs=maximum_jobs, pool=pool, **kwargs)
        return RemoteAdaptive(self, pool)

    def add_pool(self, name: str, **job_kwargs: Any) -> RemotePool:
        """Another kind of job in the cluster (see JobQueueCluster.add_pool), made by the scheduler job."""
        self._sync("add-pool", name=name, **job_kwargs)
        return RemotePool(self, name)

    @property
    def pools(self) -> dict[str, RemotePool]:
        return {name: RemotePool(self, name) for name in self._sync("info")["pools"]}

    def info(self) -> dict:
        """The head's view: workers, job ids, jobs by state, the scheduler job's end, failures."""
        return self._sync("info")

    @property
    def jobs(self) -> JobTable:
        """Every job the cluster submitted (as ``cluster.jobs`` of an in-process cluster)."""
        return JobTable(JobRow(*row) for row in self._sync("info")["jobs"])

    @property
    def job_ids(self) -> list[str]:
        return list(self._sync("info")["job_ids"])

    def logs(self) -> dict[str, str]:
        """The stdout and stderr of every worker job, by job id (read by the scheduler job)."""
        return self._sync("logs")

    @property
    def dashboard_link(self) -> str:
        return self._info.get("dashboard") or super().dashboard_link

    def __repr__(self) -> str:
        text = super().__repr__()
        summary = self._info.get("summary")
        return f"{text[:-1]}, jobs: {summary}, attached)" if summary and text.endswith(")") else text

    # --- leaving --------------------------------------------------------------------
    def detach(self) -> None:
        """Disconnect; the cluster keeps running (attach again by name)."""
        if self.status != Status.closed:
            self.sync(super()._close)
        self._loop_runner.stop()

    async def _close(self) -> None:
        if self.status == Status.closed:
            return
        from .detached import down

        await super()._close()
        await asyncio.to_thread(down, self.name, echo=lambda line: None)

    def close(self, timeout: float | None = None):
        """Stop the cluster (as `jobqueue down`): its worker jobs and its scheduler job end."""
        result = super().close(timeout)
        if not self.asynchronous:
            self._loop_runner.stop()
        return result

    def __del__(self, _warn=warnings.warn):
        return  # an unclosed handle is normal: the cluster lives on without it


class RemoteAdaptive:
    """What ``adapt()`` returns: the head adapts; ``stop()`` turns it off."""

    def __init__(self, cluster: AttachedCluster, pool: str | None = None):
        self.cluster = cluster
        self.pool = pool

    def stop(self) -> None:
        self.cluster._sync("adapt-stop", pool=self.pool)


class RemotePool:
    """One pool of an attached cluster: ``scale``, ``adapt``, ``jobs``."""

    def __init__(self, cluster: AttachedCluster, name: str):
        self.cluster = cluster
        self.name = name

    def scale(self, n: int | None = None, jobs: int = 0, memory: str | None = None, cores: int | None = None):
        return self.cluster.scale(n, jobs=jobs, memory=memory, cores=cores, pool=self.name)

    def adapt(self, **kwargs: Any) -> RemoteAdaptive:
        return self.cluster.adapt(pool=self.name, **kwargs)

    @property
    def jobs(self) -> JobTable:
        return JobTable(row for row in self.cluster.jobs if row.pool == self.name)

    def __repr__(self) -> str:
        return f"<Pool {self.name!r} of {self.cluster.name!r}: {self.cluster._info.get('pools', {}).get(self.name)}>"


def attach(name: str, asynchronous: bool = False, loop=None) -> AttachedCluster:
    """The named cluster ``name`` of this user, e.g. started by `jobqueue up slurm --name NAME`."""
    return AttachedCluster(name, asynchronous=asynchronous, loop=loop)
