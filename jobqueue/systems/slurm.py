"""Slurm: sbatch / squeue / scancel, with dask-jobqueue 0.9.0's directives and defaults."""

from __future__ import annotations

import math
import re
from typing import Sequence

from ..commands import CommandError, CommandResult, run_async
from ..keywords import ACCOUNT, JOB_CPU, QUEUE, Keyword
from ..spec import JobSpec
from .base import BatchSystem, Directive, JobState, JobStatus

_STATES = {
    "PENDING": JobState.PENDING, "CONFIGURING": JobState.PENDING, "REQUEUED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING, "REQUEUE_FED": JobState.PENDING, "RESV_DEL_HOLD": JobState.PENDING,
    "SUSPENDED": JobState.PENDING, "STOPPED": JobState.PENDING, "RESIZING": JobState.RUNNING,
    "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING, "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED, "NODE_FAIL": JobState.FAILED, "BOOT_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED, "DEADLINE": JobState.FAILED, "SPECIAL_EXIT": JobState.FAILED,
    "TIMEOUT": JobState.TIMEOUT,
    "CANCELLED": JobState.CANCELLED, "PREEMPTED": JobState.CANCELLED, "REVOKED": JobState.CANCELLED,
}
_JOB_ID = re.compile(r"^\d+(?:_\d+)?$")


def _user() -> str:
    import getpass

    return getpass.getuser()


def _exit_code(text: str) -> int | None:
    """Slurm's "ExitCode=<code>:<signal>" as one number (negative: killed by that signal)."""
    m = re.fullmatch(r"(\d+):(\d+)", text.strip())
    if not m:
        return None
    code, signal = int(m.group(1)), int(m.group(2))
    return -signal if signal else code


def _task_ids(tasks: str) -> list[str]:
    """Slurm task lists: "3", "0-7", "1-9:2", "0,2,4-5" (a "%4" throttle suffix ignored)."""
    out: list[str] = []
    for part in filter(None, tasks.split("%")[0].split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part.strip())
        if m:
            first, last, step = int(m.group(1)), int(m.group(2) or m.group(1)), int(m.group(3) or 1)
            out.extend(str(t) for t in range(first, last + 1, step))
    return out


def parse_sacct(text: str, job_ids: Sequence[str]) -> dict[str, JobStatus]:
    """The states of ``job_ids`` in `sacct -X -n -P -o JobID,State,ExitCode,Reason` output
    ("CANCELLED by 0" is CANCELLED; "42_[2-3]" stands for tasks 42_2 and 42_3)."""
    wanted = set(job_ids)
    out: dict[str, JobStatus] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[1]:
            continue
        m = re.fullmatch(r"(\d+)_\[([^\]]+)\]", parts[0])
        ids = [f"{m.group(1)}_{t}" for t in _task_ids(m.group(2))] if m else [parts[0]]
        state = _STATES.get(parts[1].split()[0].rstrip("+"), JobState.UNKNOWN)
        reason = parts[3] if len(parts) > 3 and parts[3] not in ("None", "(null)") else ""
        code = _exit_code(parts[2]) if state.finished else None
        for job_id in wanted.intersection(ids):
            out[job_id] = JobStatus(job_id, state, reason, code)
    return out


def slurm_format_bytes_ceil(n: int) -> str:
    """Bytes as Slurm's --mem wants them: K/M/G are binary units, rounded up.

    >>> slurm_format_bytes_ceil(10**9)
    '954M'
    """
    for unit, size in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n >= size:
            return f"{math.ceil(n / size)}{unit}"
    return "1K"


class SlurmSystem(BatchSystem):
    name = "slurm"
    display_name = "Slurm"
    cluster_name = "SLURMCluster"
    summary = "A Dask cluster whose workers are Slurm jobs (keywords as dask-jobqueue's SLURMCluster)."
    example = ('>>> cluster = SLURMCluster(cores=8, memory="16GB", walltime="02:00:00", account="proj")'
               '  # doctest: +SKIP\n>>> cluster.scale(jobs=10)  # doctest: +SKIP')
    keywords = (QUEUE, ACCOUNT, JOB_CPU,
                Keyword("job_mem", "job-mem", "--mem value when different from memory, e.g. \"16G\"."),
                Keyword("job_nodes", "job-nodes", "Nodes per job; cores, memory and processes are per node, "
                        "workers start with srun.", int, "1"))
    deprecated = {"project": "account"}
    directive_prefix = "#SBATCH"
    submit_command = "sbatch"
    cancel_command = "scancel"
    status_command = "squeue"
    template = "slurm.sh.j2"
    cancel_ok = r"Invalid job id|already completing or completed"
    array_size_errors = r"Invalid job array specification"
    # sbatch names the limit on the line before the policy message (QOSMaxSubmitJobPerUserLimit,
    # AssocMaxSubmitJobLimit, QOSGrpSubmitJobsLimit ...); other limits it names there (wall time,
    # GRES, TRES) are about the job itself and fail it
    submit_limit_errors = r"MaxSubmitJob|SubmitJobsLimit|job submit limit"

    def submit_limited(self, exc: BaseException) -> bool:
        if not super().submit_limited(exc):
            return False
        named = re.findall(r"error: ((?:QOS|Assoc)\w+)\s*$", getattr(exc, "stderr", "") or "", re.M)
        return not named or any("Submit" in limit for limit in named)

    _config: dict[str, str] | None = None

    async def config(self, key: str) -> str | None:
        """One value of `scontrol show config` (read once per cluster)."""
        if self._config is None:
            result = await run_async(["scontrol", "show", "config"], timeout=self.command_timeout, check=False)
            self._config = dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", result.stdout, re.M))
        return self._config.get(key)

    async def max_array_size(self) -> int | None:
        # MaxArraySize is one more than the largest index: an array 0..n-1 fits when n <= it
        value = await self.config("MaxArraySize")
        return int(value) if value and value.isdigit() else None

    def directives(self, spec: JobSpec) -> list[Directive]:
        d: list[Directive] = []
        if spec.job_name is not None:
            d.append(Directive("-J", spec.job_name))
        if spec.log_directory is not None:
            self.checked_log_directory(spec)
            out, err = self.log_paths(spec)
            d.append(Directive("-e", err))
            d.append(Directive("-o", out))
        if spec.queue is not None:
            d.append(Directive("-p", spec.queue))
        if spec.account is not None:
            d.append(Directive("-A", spec.account))
        if spec.system_options.get("mpi_tasks"):
            # the bootstrap: scheduler + client + workers as tasks of one srun
            if spec.job_nodes > 1:
                d.append(Directive("-N", str(spec.job_nodes)))
            d.append(Directive("-n", str(spec.system_options["mpi_tasks"])))
            d.append(Directive("--cpus-per-task", str(spec.job_cpu or spec.threads_per_process), "="))
        elif spec.job_nodes > 1:
            # one task per worker on each node, started by srun in the job script
            d.append(Directive("-N", str(spec.job_nodes)))
            d.append(Directive("--ntasks-per-node", str(spec.processes), "="))
            d.append(Directive("--cpus-per-task", str(spec.job_cpu or spec.threads_per_process), "="))
        else:
            d.append(Directive("-n", "1"))
            d.append(Directive("--cpus-per-task", str(spec.job_cpu or spec.cores), "="))
        d.append(Directive("--mem", spec.job_mem or slurm_format_bytes_ceil(spec.memory), "="))
        if spec.gpus:
            d.append(Directive("--gres", f"gpu:{spec.gpus}", "="))  # per node
        if spec.walltime is not None:
            d.append(Directive("-t", spec.walltime_hms))
        return d

    array_index_env = "SLURM_ARRAY_TASK_ID"

    def array_directive(self, n: int) -> Directive:
        return Directive("--array", f"0-{n - 1}", "=")

    def array_element_ids(self, array_id: str, n: int) -> list[str]:
        return [f"{array_id}_{i}" for i in range(n)]

    def array_header(self, spec: JobSpec, n: int) -> list[str]:
        # each element writes its own files: <name>-<array id>_<index>.out
        lines = [line.replace("%J", "%A_%a") if line.startswith(("#SBATCH -e ", "#SBATCH -o ")) else line
                 for line in self.header(spec)]
        return lines + [f"{self.directive_prefix} {self.array_directive(n).text}"]

    def parallel_launcher(self, spec: JobSpec) -> list[str]:
        # a worker task that dies must not take the other nodes' workers with it
        return ["srun", "--kill-on-bad-exit=0"] if spec.job_nodes > 1 else []

    def mpi_launcher(self, spec: JobSpec) -> list[str]:
        # no --kill-on-bad-exit: the bootstrap ends every rank itself, and srun then
        # returns the client's own exit code instead of the signal it killed the others with
        return ["srun"]

    submit_options = ("--parsable",)

    def name_argv(self, name: str) -> list[str]:
        return ["-J", name]

    def submitted_id(self, line: str) -> str | None:
        # --parsable prints "<id>" or "<id>;<cluster>"
        job_id = line.split(";")[0].strip()
        return job_id if _JOB_ID.match(job_id) else None

    async def find(self, name: str) -> list[str]:
        # %F: an array's job id, a plain job's own id
        result = await self.query([self.status_command, "-h", "-u", _user(), "-n", name, "-o", "%F"], check=True)
        return sorted({line.strip() for line in result.stdout.splitlines() if line.strip()})

    def cancel_name_argv(self, name: str) -> list[str] | None:
        return [self.cancel_command, "-u", _user(), "--name", name]

    async def exit_code(self, job_id: str) -> int | None:
        result = await self.query(["scontrol", "show", "job", "-o", job_id])
        m = re.search(r"\bExitCode=(\S+)", result.stdout)
        return _exit_code(m.group(1)) if m else None

    async def history(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """What slurmctld still holds of these jobs (ended ones for MinJobAge, 300 s by default),
        then, for the others, the accounting database's record where the site keeps one."""
        out = await self._controller_records(job_ids)
        rest = [job_id for job_id in job_ids if job_id not in out]
        storage = await self.config("AccountingStorageType") or "accounting_storage/none"
        if rest and storage != "accounting_storage/none":
            out.update(await self._accounting_records(rest))
        return out

    async def _accounting_records(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """`sacct -X -n -P -j <ids> -o JobID,State,ExitCode,Reason`: one line per job, array tasks
        as <array id>_<index> ("42_[2-3]" while they are still pending together)."""
        result = await self.query(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids),
                                   "-o", "JobID,State,ExitCode,Reason"])
        if result.returncode != 0:
            raise CommandError(result.argv, result.returncode, result.stdout, result.stderr)
        return parse_sacct(result.stdout, job_ids)

    async def _controller_records(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """`scontrol show job -o`: every job slurmctld still holds, one line each; array tasks
        still pending together are one line with a task range."""
        result = await self.query(["scontrol", "show", "job", "-o"])
        if result.returncode != 0 and "No jobs in the system" not in result.stdout + result.stderr:
            raise CommandError(result.argv, result.returncode, result.stdout, result.stderr)
        wanted = set(job_ids)
        out: dict[str, JobStatus] = {}
        for line in result.stdout.splitlines():
            fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
            ids = [fields.get("JobId", "")]
            if fields.get("ArrayJobId") and fields.get("ArrayTaskId"):
                ids = [f"{fields['ArrayJobId']}_{t}" for t in _task_ids(fields["ArrayTaskId"])]
            state = _STATES.get(fields.get("JobState", "").rstrip("+"), JobState.UNKNOWN)
            reason = fields.get("Reason", "") if fields.get("Reason") not in ("None", "(null)") else ""
            code = _exit_code(fields.get("ExitCode", "")) if state.finished else None
            for job_id in wanted.intersection(ids):
                out[job_id] = JobStatus(job_id, state, reason, code)
        return out

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        # -r: one line per array element, pending ones included ("123_4", not "123_[4-7]")
        return [self.status_command, "-h", "-r", "-t", "all", "-o", "%i|%T|%r", "-j", ",".join(job_ids)]

    def parse_status(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        if result.returncode != 0:
            # squeue -j <one id it no longer knows> exits 1; a list of ids does not
            if "Invalid job id" in result.stderr and len(job_ids) == 1:
                return {job_ids[0]: JobStatus(job_ids[0], JobState.UNKNOWN, gone=True)}
            raise CommandError(result.argv, result.returncode, result.stdout, result.stderr)
        wanted = set(job_ids)
        out: dict[str, JobStatus] = {}
        for line in result.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) < 2 or parts[0] not in wanted:
                continue
            reason = parts[2] if len(parts) > 2 and parts[2] not in ("None", "(null)") else ""
            state = _STATES.get(parts[1].split()[0].rstrip("+"), JobState.UNKNOWN)
            out[parts[0]] = JobStatus(parts[0], state, reason)
        return out
