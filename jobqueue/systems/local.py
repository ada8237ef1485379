"""The local batch system: job scripts run as background processes on this machine.

It is the default when no batch system is on PATH (a laptop, a CI runner), and lets
the cluster machinery be exercised in seconds. Each job is a process group of its
own, so cancelling a job kills everything its script started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Sequence

from ..commands import in_thread
from ..spec import JobSpec
from .base import BatchSystem, Directive, JobState, JobStatus


def interpreter_argv(script: str, path: str) -> list[str]:
    """Run the script through its #! interpreter, as the kernel would, instead of exec'ing
    the file: a child forked meanwhile by any thread of this process may still hold the
    file's write descriptor, and exec'ing a file open for writing fails (ETXTBSY)."""
    first = script.split("\n", 1)[0]
    if first.startswith("#!") and first[2:].strip():
        return [*first[2:].strip().split(None, 1), path]  # interpreter and at most one argument
    return ["/bin/sh", path]


class LocalSystem(BatchSystem):
    name = "local"
    display_name = "local"
    cluster_name = "LocalCluster"
    summary = ("A batch system on this machine: each job script runs as a local process group.\n\n"
               "This is not ``distributed.LocalCluster``: jobs are real job scripts (prologue, directives, "
               "walltime retirement, logs, journal and watchdog) run without a batch system -- for laptops, "
               "tests and the demo. ``from jobqueue import *`` does not export it, so it never shadows "
               "distributed's class; import it by name.")
    example = ">>> cluster = LocalCluster(cores=1, memory=\"1GB\")  # doctest: +SKIP"
    directive_prefix = "#LOCAL"
    submit_command = "bash"
    cancel_command = "kill"
    template = "local.sh.j2"
    cancel_ok = r"No such process"
    kill_grace = 3.0

    def __init__(self) -> None:
        self._procs: dict[str, subprocess.Popen] = {}
        self._cancelled: set[str] = set()
        self._dir: str | None = None

    def directives(self, spec: JobSpec) -> list[Directive]:
        return []

    def available(self) -> bool:
        return True

    @property
    def directory(self) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="jobqueue-local-")  # mode 0700
        return self._dir

    def _start(self, script: str, log_paths: Sequence[str]) -> str:
        fd, path = tempfile.mkstemp(prefix="job-", suffix=".sh", dir=self.directory)
        with os.fdopen(fd, "w") as f:
            f.write(script)
        os.chmod(path, 0o700)
        with open(path[:-3] + ".out", "wb") as out, open(path[:-3] + ".err", "wb") as err:
            proc = subprocess.Popen(interpreter_argv(script, path), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, start_new_session=True, cwd=os.getcwd())
        job_id = str(proc.pid)  # the job id is the pid of its process group leader
        self._procs[job_id] = proc
        if len(log_paths) != 2:
            log_paths = (os.path.join(self.directory, "job-%J.out"), os.path.join(self.directory, "job-%J.err"))
        for suffix, target in zip((".out", ".err"), log_paths):
            # the open files follow the rename: the job keeps writing to them
            os.replace(path[:-3] + suffix, target.replace("%J", job_id))
        return job_id

    async def submit(self, script: str, log_paths: Sequence[str] = (), name: str | None = None) -> str:
        return await in_thread(self._start, script, list(log_paths))

    async def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        out = {}
        for job_id in job_ids:
            proc = self._procs.get(job_id)
            if proc is None:
                continue
            code = proc.poll()
            if code is None:
                out[job_id] = JobStatus(job_id, JobState.RUNNING)
                continue
            # as a batch system does when a job script ends: nothing it started lives on
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            if job_id in self._cancelled:
                out[job_id] = JobStatus(job_id, JobState.CANCELLED, exit_code=code)
            elif code == 0:
                out[job_id] = JobStatus(job_id, JobState.COMPLETED, exit_code=0)
            else:
                out[job_id] = JobStatus(job_id, JobState.FAILED, "NonZeroExitCode", exit_code=code)
        return out

    def _kill(self, job_ids: Sequence[str]) -> None:
        procs = []
        for job_id in job_ids:
            proc = self._procs.get(job_id)
            if proc is None or proc.poll() is not None:
                continue
            self._cancelled.add(job_id)
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            procs.append(proc)
        deadline = time.monotonic() + self.kill_grace
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # the group may outlive its leader: make sure nothing of it survives
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()

    def cancel_argv(self, job_ids: Sequence[str]) -> list[str]:
        # what the watchdog runs if this process dies: a job id is its process group's id
        return ["kill", "-KILL", "--", *[f"-{i}" for i in job_ids]]

    async def cancel(self, job_ids: Sequence[str]) -> None:
        await in_thread(self._kill, list(job_ids))

    def close(self) -> None:
        self._kill(list(self._procs))
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
