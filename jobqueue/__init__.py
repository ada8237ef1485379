"""jobqueue: deploy Dask clusters on HPC batch systems (Slurm, Grid Engine, PBS, and the local runner).

>>> from jobqueue import SLURMCluster
>>> cluster = SLURMCluster(cores=8, memory="16GB", walltime="02:00:00")  # doctest: +SKIP
>>> cluster.scale(jobs=10)                                               # doctest: +SKIP

The cluster classes are imported on first use, so that code running inside an
allocation (jobqueue.runtime) does not pay for jinja2 and the login-node machinery.
"""

from . import config  # noqa: F401  (registers the jobqueue.* config defaults)

__version__ = "0.1.0"

_LAZY = {
    "SLURMCluster": "cluster", "SGECluster": "cluster", "PBSCluster": "cluster", "LocalCluster": "cluster",
    "JobQueueCluster": "cluster", "connect": "cluster",
    "JobSubmissionError": "cluster", "UnknownKeywordError": "cluster", "JobFailedError": "reports",
    "CommandError": "commands", "CommandTimeout": "commands", "JobSpec": "spec",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jobqueue' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
