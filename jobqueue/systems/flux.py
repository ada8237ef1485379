"""Flux: flux batch / flux jobs / flux cancel. No dask-jobqueue release has Flux; the
directives follow its open pull request #700 (the shape FluxCluster users will meet):
--job-name, -q, -B <account>, -t <duration>, -N/-n/-c.

What Flux does differently (docs/flux.md): directives are `#flux:` lines grouped at the top
(RFC 36); -t is in *minutes* unless it carries a unit (`-t 1800` is 30 hours: jobqueue
writes `30m`); job ids are F58 (`ƒM7Zq9AKHno`, or `fM7Zq9AKHno` outside a UTF-8 locale:
both name the same job; jobqueue keeps the ASCII form); `flux batch` has no arrays (one job
per submission); `flux jobs <ids>` lists ended jobs too, and says `JobID <id> unknown` for
purged ones; the time limit sends SIGALRM.
"""

from __future__ import annotations

import re
from typing import Sequence

from ..commands import CommandError, CommandResult
from ..keywords import ACCOUNT, JOB_CPU, QUEUE, Keyword
from ..spec import JobSpec
from .base import BatchSystem, Directive, JobState, JobStatus

_STATES = {"DEPEND": (JobState.PENDING, "dependency"), "PRIORITY": (JobState.PENDING, "priority"),
           "SCHED": (JobState.PENDING, "waiting for resources"), "RUN": (JobState.RUNNING, ""),
           "CLEANUP": (JobState.RUNNING, "cleanup")}
_RESULTS = {"COMPLETED": JobState.COMPLETED, "FAILED": JobState.FAILED, "CANCELED": JobState.CANCELLED,
            "TIMEOUT": JobState.TIMEOUT}
_F58 = re.compile(r"^[ƒf]([1-9A-HJ-NP-Za-km-z]+)$")
_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def plain(job_id: str) -> str:
    """An F58 id in its ASCII form (`ƒ` -> `f`): the form jobqueue keeps and passes back."""
    return "f" + job_id[1:] if job_id.startswith("ƒ") else job_id


def f58_decimal(job_id: str) -> str:
    """The decimal form of an F58 id (what {{id.dec}} writes in file names)."""
    n = 0
    for c in plain(job_id)[1:]:
        n = n * 58 + _ALPHABET.index(c)
    return str(n)


def flux_duration(seconds: int) -> str:
    """Seconds as a Flux standard duration with its unit (a bare number would be minutes)."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


class FluxSystem(BatchSystem):
    name = "flux"
    display_name = "Flux"
    cluster_name = "FluxCluster"
    summary = "A Dask cluster whose workers are Flux batch jobs (flux batch; directives as dask-jobqueue PR #700)."
    example = ('>>> cluster = FluxCluster(cores=8, memory="16GB", walltime="02:00:00", queue="pbatch")'
               '  # doctest: +SKIP\n>>> cluster.scale(jobs=10)  # doctest: +SKIP')
    keywords = (QUEUE, ACCOUNT, JOB_CPU,
                Keyword("job_nodes", "job-nodes", "Nodes per job; cores, memory and processes are per node, "
                        "workers start with flux run.", int, "1"))
    directive_prefix = "#flux:"
    submit_command = "flux batch"
    cancel_command = "flux cancel"
    status_command = "flux jobs"
    template = "flux.sh.j2"
    cancel_ok = r"unknown job id|job is inactive|^$"
    warning_signals = ("SIGALRM",)  # Flux: at expiry, SIGKILL 5 s later
    transient_errors = BatchSystem.transient_errors + r"|Connection refused|broker"

    def directives(self, spec: JobSpec) -> list[Directive]:
        d: list[Directive] = []
        if spec.job_name is not None:
            d.append(Directive("--job-name", spec.job_name, "="))
        if spec.log_directory is not None:
            self.checked_log_directory(spec)  # base log_paths: <dir>/<name>-%J.out|.err
            out, err = self.log_paths(spec)
            d += [Directive("--output", out.replace("%J", "{{id.dec}}"), "="),
                  Directive("--error", err.replace("%J", "{{id.dec}}"), "=")]
        if spec.queue is not None:
            d.append(Directive("-q", spec.queue))
        if spec.account is not None:
            d.append(Directive("-B", spec.account))
        if spec.walltime is not None:
            d.append(Directive("-t", flux_duration(spec.walltime)))
        if spec.job_nodes > 1:  # one worker task per process on each node, started by flux run
            d += [Directive("-N", str(spec.job_nodes)), Directive("-n", str(spec.workers_per_job)),
                  Directive("-c", str(spec.job_cpu or spec.threads_per_process))]
        else:
            d += [Directive("-N", "1"), Directive("-n", "1"), Directive("-c", str(spec.job_cpu or spec.cores))]
        if spec.gpus:
            # GPUs per slot: the job's (one slot), or each worker task's (a slot per worker)
            d.append(Directive("-g", str(spec.gpus if spec.job_nodes == 1 else spec.gpus // spec.processes)))
        return d

    def log_id(self, job_id: str) -> str:
        return f58_decimal(job_id)

    def parallel_launcher(self, spec: JobSpec) -> list[str]:
        # inside the batch job's own Flux instance: one task per worker process
        return ["flux", "run", "-N", str(spec.job_nodes), "-n", str(spec.workers_per_job)] if spec.job_nodes > 1 else []

    # --- command side ----------------------------------------------------------------
    def available(self) -> bool:
        import shutil

        return shutil.which("flux") is not None

    def submit_argv(self, name: str | None = None) -> list[str]:
        # the script on stdin; a --job-name on the command line wins over the directive
        return ["flux", "batch", *([f"--job-name={name}"] if name else [])]

    def submitted_id(self, line: str) -> str | None:
        return plain(line) if _F58.match(line) else None

    def cancel_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["flux", "cancel", *job_ids]

    async def find(self, name: str) -> list[str]:
        result = await self.query(["flux", "jobs", "-n", "-o", "{id.f58plain}", f"--name={name}"])
        return sorted(line.strip() for line in result.stdout.splitlines() if _F58.match(line.strip()))

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["flux", "jobs", "-n", "-o", "{id.f58plain}|{state}|{result}|{returncode}|{urgency}", *job_ids]

    def parse_status(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """`id|state|result|returncode|urgency` per known job (ended ones too); "JobID <id> unknown"
        on stderr for each purged or never-known id (exit 1 only when none was found)."""
        unknown = {plain(m) for m in re.findall(r"JobID (\S+) unknown", result.stderr)}
        rows = [line.split("|") for line in result.stdout.splitlines() if line.count("|") >= 3]
        if result.returncode != 0 and not unknown:
            raise CommandError(result.argv, result.returncode, result.stdout, result.stderr)
        wanted = {plain(i): i for i in job_ids}
        out: dict[str, JobStatus] = {}
        for row in rows:
            job_id = wanted.get(plain(row[0].strip()))
            if job_id is None:
                continue
            state_word, result_word = row[1].strip(), row[2].strip()
            code = int(row[3]) if re.fullmatch(r"-?\d+", row[3].strip()) else None
            if state_word == "INACTIVE":
                state = _RESULTS.get(result_word, JobState.FAILED)
                out[job_id] = JobStatus(job_id, state, "" if state == JobState.COMPLETED else result_word,
                                        None if code == -128 else code)
            else:
                state, reason = _STATES.get(state_word, (JobState.UNKNOWN, state_word))
                if len(row) > 4 and row[4].strip() == "0":
                    reason = "held"  # urgency 0: held
                out[job_id] = JobStatus(job_id, state, reason)
        for typed in unknown:
            if typed in wanted and wanted[typed] not in out:
                out[wanted[typed]] = JobStatus(wanted[typed], JobState.UNKNOWN, gone=True)
        return out
