"""dask-jobqueue's module names, so that replacing ``dask_jobqueue`` by ``jobqueue`` in
every import works: ``jobqueue.core`` (Job, JobQueueCluster) and one module per registered
system (``jobqueue.slurm``: SLURMCluster, SLURMJob, and the system's own module contents).

They are derived from the registry (jobqueue.systems.REGISTRY) by a finder installed when
jobqueue is imported, instead of one alias file per system; each is filled on first use.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

from .systems import REGISTRY

PACKAGE = __name__.rsplit(".", 1)[0]


def _attributes(short: str) -> dict:
    from . import cluster, job

    if short == "core":
        return {"Job": job.Job, "JobQueueCluster": cluster.JobQueueCluster,
                "JobSubmissionError": job.JobSubmissionError}
    system = importlib.import_module(f"{PACKAGE}.systems.{REGISTRY[short].split(':')[0]}")
    cls = cluster.CLUSTER_CLASSES[short]
    return {**{k: v for k, v in vars(system).items() if not k.startswith("_")},
            cls.__name__: cls, cls.job_cls.__name__: cls.job_cls}


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        prefix, _, short = fullname.rpartition(".")
        if prefix == PACKAGE and (short == "core" or short in REGISTRY):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        short = module.__name__.rpartition(".")[2]
        module.__doc__ = f"dask-jobqueue's dask_jobqueue.{short}, for code that imports it by that name."

        def __getattr__(name: str):
            values = _attributes(short)
            if name in values:
                return values[name]
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")

        module.__getattr__ = __getattr__
        module.__dir__ = lambda: sorted(_attributes(short))


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
