"""The registry of batch systems: one line each.

A system is its module here (a BatchSystem subclass declaring its names, keywords,
directives and commands), its template in jobqueue/templates, and one line below. The
cluster classes (jobqueue.SLURMCluster, ...), the `jobqueue script` / `jobqueue demo`
choices and the lazy public names are derived from this list. Its order is the
detection order of `jobqueue demo`: sbatch, then qsub with qconf (Grid Engine), then msub
(Moab, which sits on a PBS), then any other qsub (PBS), then bsub (LSF); the local system
comes last and is always available.
"""

from __future__ import annotations

import importlib

from .base import BatchSystem, Directive, JobState, JobStatus

REGISTRY: dict[str, str] = {  # system name -> "module:class"
    "slurm": "slurm:SlurmSystem",
    "sge": "sge:SGESystem",
    "moab": "moab:MoabSystem",
    "pbs": "pbs:PBSSystem",
    "lsf": "lsf:LSFSystem",
    "oar": "oar:OARSystem",
    "htcondor": "htcondor:HTCondorSystem",
    "flux": "flux:FluxSystem",
    "local": "local:LocalSystem",
}


def load(name: str) -> type[BatchSystem]:
    """The BatchSystem class registered as ``name``."""
    try:
        module, cls = REGISTRY[name].split(":")
    except KeyError:
        raise ValueError(f"unknown batch system {name!r}; choose one of {', '.join(REGISTRY)}") from None
    return getattr(importlib.import_module(f".{module}", __name__), cls)


def all_systems() -> dict[str, type[BatchSystem]]:
    return {name: load(name) for name in REGISTRY}


def detect_system() -> str:
    """The batch system whose submit command is on PATH, else "local"."""
    for name, cls in all_systems().items():
        if name != "local" and cls().available():
            return name
    return "local"


def __getattr__(name: str):
    # SlurmSystem, SGESystem, ... by class name, loaded on first use
    for system, entry in REGISTRY.items():
        if entry.endswith(":" + name):
            return load(system)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BatchSystem", "Directive", "JobState", "JobStatus", "REGISTRY", "load", "all_systems",
           "detect_system", *[entry.split(":")[1] for entry in REGISTRY.values()]]
