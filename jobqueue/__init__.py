"""jobqueue: deploy Dask clusters on HPC batch systems (Slurm, Grid Engine, PBS, and the local runner).

>>> from jobqueue import SLURMCluster
>>> cluster = SLURMCluster(cores=8, memory="16GB", walltime="02:00:00")  # doctest: +SKIP
>>> cluster.scale(jobs=10)                                               # doctest: +SKIP

Public names are imported on first use, so that code running inside an allocation
(jobqueue.runtime) does not pay for jinja2 and the login-node machinery. The cluster
classes come from the batch-system registry (jobqueue.systems.REGISTRY).
"""

from . import compat, config  # noqa: F401  (registers the jobqueue.* config defaults)

compat.install()  # jobqueue.core, jobqueue.slurm, ...: dask-jobqueue's module names

__version__ = "0.1.0"

_LAZY = {
    "JobQueueCluster": "cluster", "connect": "security", "JobSubmissionError": "job",
    "UnknownKeywordError": "keywords", "JobFailedError": "reports", "CommandError": "commands",
    "CommandTimeout": "commands", "JobSpec": "spec", "Job": "job",
    "attach": "attached", "AttachedCluster": "attached", "up": "detached", "down": "detached",
}
# not exported by `from jobqueue import *`: it must not shadow distributed.LocalCluster
_NOT_STARRED = {"LocalCluster"}


def _cluster_names() -> list[str]:
    from .systems import all_systems

    return [name for cls in all_systems().values()
            for name in (cls.cluster_name, cls.cluster_name.replace("Cluster", "Job"))]


def __getattr__(name: str):
    import importlib

    if name == "__all__":
        return sorted(set(_LAZY) | set(_cluster_names()) - _NOT_STARRED)
    if name in _LAZY or (not name.startswith("_") and name in _cluster_names()):
        value = getattr(importlib.import_module(f".{_LAZY.get(name, 'cluster')}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jobqueue' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_cluster_names()))
