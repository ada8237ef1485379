"""jobqueue: deploy Dask clusters on HPC batch systems (Slurm, and the local runner).

>>> from jobqueue import SLURMCluster
>>> cluster = SLURMCluster(cores=8, memory="16GB", walltime="02:00:00")  # doctest: +SKIP
>>> cluster.scale(jobs=10)                                               # doctest: +SKIP
"""

from . import config  # noqa: F401  (registers the jobqueue.* config defaults)
from .cluster import JobQueueCluster, JobSubmissionError, LocalCluster, SLURMCluster, UnknownKeywordError
from .commands import CommandError, CommandTimeout
from .spec import JobSpec

__version__ = "0.1.0"

__all__ = [
    "SLURMCluster", "LocalCluster", "JobQueueCluster", "JobSpec",
    "JobSubmissionError", "CommandError", "CommandTimeout", "UnknownKeywordError",
]
