"""Moab: PBS job scripts submitted with msub and cancelled with canceljob, as dask-jobqueue
0.9.0's MoabCluster (its PBSCluster with those two commands). Moab schedules over a
PBS/Torque resource manager, whose qstat jobqueue reads for job states (see pbs.py)."""

from __future__ import annotations

import shutil

from .pbs import PBSSystem


class MoabSystem(PBSSystem):
    name = "moab"
    display_name = "Moab"
    cluster_name = "MoabCluster"
    summary = ("A Dask cluster whose workers are Moab jobs: PBS job scripts submitted with msub (keywords as "
               "dask-jobqueue's MoabCluster).")
    example = ('>>> cluster = MoabCluster(cores=8, memory="16GB", walltime="02:00:00", queue="batch")'
               '  # doctest: +SKIP')
    submit_command = "msub"
    cancel_command = "canceljob"

    def available(self) -> bool:
        return shutil.which("msub") is not None

    @property
    def supports_arrays(self) -> bool:
        return False  # msub's arrays are not PBS's -J: one submission per job, as dask-jobqueue
