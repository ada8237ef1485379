"""Batch systems, by name. A new system is one module here plus one template."""

from __future__ import annotations

from .base import BatchSystem, Directive, JobState, JobStatus
from .local import LocalSystem
from .pbs import PBSSystem
from .sge import SGESystem
from .slurm import SlurmSystem

# detection order: sbatch, then qsub with qconf (Grid Engine), then any other qsub (PBS)
SYSTEMS: dict[str, type[BatchSystem]] = {
    "slurm": SlurmSystem, "sge": SGESystem, "pbs": PBSSystem, "local": LocalSystem}


def get_system(name: str) -> type[BatchSystem]:
    try:
        return SYSTEMS[name]
    except KeyError:
        raise ValueError(f"unknown batch system {name!r}; choose one of {sorted(SYSTEMS)}") from None


def detect_system() -> str:
    """The batch system whose submit command is on PATH, else "local"."""
    for name, cls in SYSTEMS.items():
        if name != "local" and cls().available():
            return name
    return "local"


__all__ = ["BatchSystem", "LocalSystem", "PBSSystem", "SGESystem", "SlurmSystem", "Directive", "JobState", "JobStatus", "SYSTEMS", "get_system", "detect_system"]
