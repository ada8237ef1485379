"""Who is who in one mpirun/srun launch: rank and size, and the rendezvous through which
rank 0 hands the scheduler's address (and TLS credentials, or its error) to every rank."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from ...files import rendezvous_path, write_private

RENDEZVOUS_TIMEOUT = float(os.environ.get("JOBQUEUE_MPI_TIMEOUT", "120"))
_RANK_ENV = [("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("PMI_RANK", "PMI_SIZE"),
             ("PMIX_RANK", "OMPI_COMM_WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")]


class MPIStartError(RuntimeError):
    """The cluster could not start; every rank exits non-zero with this message."""


class WorldTooSmallException(MPIStartError):
    """Too few ranks for the roles asked for (dask-mpi's exception, same name)."""


def fail(message: str, code: int = 1):
    sys.stderr.write(f"jobqueue mpi: {message}\n")
    sys.stderr.flush()
    os._exit(code)  # no atexit, no MPI_Finalize wait: every rank leaves now


def world(comm: Any = None, need_comm: bool = True) -> tuple[int, int, Any]:
    """(rank, size, communicator or None). mpi4py when present and consistent with the
    launcher, else the launcher's environment. Without ``need_comm`` (workers-only mode),
    the environment is enough and MPI is not even initialised."""
    env_rank = env_size = None
    for rank_var, size_var in _RANK_ENV:
        if os.environ.get(rank_var, "").isdigit():
            env_rank = int(os.environ[rank_var])
            size = os.environ.get(size_var) or os.environ.get("SLURM_NPROCS") or os.environ.get("PMI_SIZE")
            env_size = int(size) if size and size.isdigit() else None
            break
    if not need_comm and comm is None and env_rank is not None and env_size is not None:
        return env_rank, env_size, None
    if comm is None and os.environ.get("JOBQUEUE_MPI_NO_MPI4PY") != "1":
        try:
            from mpi4py import MPI

            comm = MPI.COMM_WORLD
        except ImportError:
            comm = None
    if comm is not None:
        rank, size = comm.Get_rank(), comm.Get_size()
        if env_size is None or size == env_size or env_size <= 1:
            return rank, size, comm
        # e.g. srun without an MPI plugin: mpi4py sees singletons; trust the launcher
    if env_rank is None or env_size is None:
        raise MPIStartError("cannot tell this process's MPI rank: run it under mpirun/mpiexec or srun "
                            "(or install mpi4py)")
    return env_rank, env_size, None


def launch_id() -> str:
    for var in ("JOBQUEUE_MPI_ID", "PMIX_NAMESPACE", "PMI_KVSNAME", "OMPI_MCA_ess_base_jobid"):
        if os.environ.get(var):
            return os.environ[var].replace("/", "_")
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}.{os.environ.get('SLURM_STEP_ID', '0')}"
    return f"ppid-{os.getppid()}"


class Rendezvous:
    """Rank 0 publishes {"address", "security"} or {"error"}; the other ranks wait for it:
    by MPI broadcast, or without mpi4py through an owner-only file in the state directory."""

    def __init__(self, comm: Any, path: str | None = None, root: int = 0):
        self.comm = comm
        self.root = root  # the scheduler's rank
        self._path = path

    @property
    def path(self) -> str:
        if self._path is None:
            self._path = rendezvous_path(launch_id())
        return self._path

    def publish(self, info: dict) -> None:
        if self.comm is not None:
            self.comm.bcast(info, root=self.root)
            return
        write_private(self.path, json.dumps({**info, "written": time.time()}))

    def receive(self, started: float) -> dict:
        if self.comm is not None:
            return self.comm.bcast(None, root=self.root)
        deadline = time.monotonic() + RENDEZVOUS_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with open(self.path) as f:
                    info = json.load(f)
                if info.get("written", 0) >= started - 300:  # not a stale file from an earlier run
                    return info
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        return {"error": f"no scheduler address appeared in {self.path} within {RENDEZVOUS_TIMEOUT:.0f} s "
                         "(did rank 0 start? set JOBQUEUE_MPI_TIMEOUT to wait longer)"}

    def remove(self) -> None:
        if self.comm is None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
