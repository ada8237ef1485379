"""Grid Engine (SGE, Son of Grid Engine, UGE): qsub -terse / qstat -xml / qdel / qacct.

Directives and defaults as dask-jobqueue 0.9.0's SGECluster: -N, -q, -P project,
-l resource_spec, -l h_rt, -e/-o log directory, -cwd, -j y; plus -pe when job_cpu or
parallel_environment asks for several slots.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Sequence

from ..commands import CommandError, CommandResult, run_async
from ..keywords import JOB_CPU, QUEUE, RESOURCE_SPEC, Keyword
from ..spec import JobSpec
from .base import BatchSystem, Directive, JobState, JobStatus

_SUBMITTED = re.compile(r"^(\d+)(?:\.\S+)?$")
# "Your job 27 ("true") has been submitted" (qsub without -terse, or site wrappers)
_SUBMITTED_LONG = re.compile(r"Your job(?:-array)? (\d+)")


def _task_ids(tasks: str) -> list[int]:
    """Grid Engine task lists: "3", "1-5:2", "1,3", "2-4:1,7"."""
    out: list[int] = []
    for part in filter(None, tasks.split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part.strip())
        if m:
            first, last, step = int(m.group(1)), int(m.group(2) or m.group(1)), int(m.group(3) or 1)
            out.extend(range(first, last + 1, step))
    return out


def sge_state(code: str) -> tuple[JobState, str, bool]:
    """(state, reason, stuck) for a qstat state code such as "qw", "hqw", "r", "Eqw", "dr".

    "stuck" marks a job that is over but stays in the queue until it is deleted (E states).
    """
    if "E" in code:
        return JobState.FAILED, f"error state ({code}); see `qstat -j <id>`", True
    if "d" in code:  # being deleted
        return JobState.RUNNING if ("r" in code or "t" in code) else JobState.PENDING, "deleting", False
    if "s" in code or "S" in code or "T" in code:
        return JobState.PENDING, "suspended", False
    if "r" in code or "t" in code or "R" in code:
        return JobState.RUNNING, "", False
    if "h" in code:
        return JobState.PENDING, "held", False
    if "w" in code or "q" in code:
        return JobState.PENDING, "queued", False
    return JobState.UNKNOWN, code, False


class SGESystem(BatchSystem):
    name = "sge"
    display_name = "Grid Engine"
    cluster_name = "SGECluster"
    summary = ("A Dask cluster whose workers are Grid Engine jobs (keywords as dask-jobqueue's SGECluster).\n\n"
               "``parallel_environment`` (e.g. \"smp\") with ``job_cpu`` adds ``-pe <pe> <slots>``; ``job_cpu`` "
               "alone uses the \"smp\" parallel environment.")
    example = ('>>> cluster = SGECluster(cores=8, memory="16GB", walltime="02:00:00", queue="all.q")'
               '  # doctest: +SKIP')
    keywords = (QUEUE, Keyword("project", "project", "Project charged for the jobs (-P).", short="-P"),
                RESOURCE_SPEC, JOB_CPU,
                Keyword("parallel_environment", "parallel-environment",
                        'Parallel environment for -pe, e.g. "smp" ("smp" when only job_cpu is set).'))
    directive_prefix = "#$"
    submit_command = "qsub"
    cancel_command = "qdel"
    status_command = "qstat"
    template = "sge.sh.j2"
    # qdel reports on stdout: "root has registered the job 12 for deletion" or "denied: job
    # "12" does not exist" (ended: no error); any other denied/error line is one
    cancel_ok = r'^(?!.*(?:denied|error)).*$|job "?\S+?"? does not exist|do(?:es)? not exist'
    # "job rejected: you tried to submit a job with more than 4 tasks" (max_aj_tasks)
    array_size_errors = r"submit a job with more than \d+ tasks"
    # "job rejected: only 3 jobs are allowed per user (current job count: 3)" (max_u_jobs; an
    # array counts as one job there), or per cluster (max_jobs)
    submit_limit_errors = r"jobs are allowed per (?:user|cluster)"

    async def max_array_size(self) -> int | None:
        """max_aj_tasks of the global configuration (0: no limit)."""
        result = await run_async(["qconf", "-sconf"], timeout=self.command_timeout, check=False)
        m = re.search(r"^max_aj_tasks\s+(\d+)", result.stdout, re.M)
        return (int(m.group(1)) or None) if m else None

    def available(self) -> bool:
        """qsub on PATH and it is Grid Engine's (qconf exists only there)."""
        import shutil

        return shutil.which("qsub") is not None and shutil.which("qconf") is not None

    def directives(self, spec: JobSpec) -> list[Directive]:
        d: list[Directive] = []
        if spec.job_name is not None:
            d.append(Directive("-N", spec.job_name))
        if spec.queue is not None:
            d.append(Directive("-q", spec.queue))
        if spec.project is not None:
            d.append(Directive("-P", spec.project))
        pe = spec.system_options.get("parallel_environment")
        if pe is None and spec.job_cpu is not None:
            pe = "smp"
        if pe is not None:
            d.append(Directive("-pe", f"{pe} {spec.job_cpu or spec.cores}"))
        if spec.resource_spec is not None:
            d.append(Directive("-l", spec.resource_spec))
        if spec.gpus:  # the site's GPU consumable, defined per job (docs/pools.md)
            d.append(Directive("-l", f"gpu={spec.gpus}"))
        if spec.walltime is not None:
            d.append(Directive("-l", f"h_rt={spec.walltime_hms}"))
        d += self.directory_log_directives(spec)
        d.append(Directive("-cwd"))
        d.append(Directive("-j", "y"))
        return d

    array_index_env = "SGE_TASK_ID"
    array_first_index = 1  # Grid Engine's task ids start at 1

    def array_directive(self, n: int) -> Directive:
        return Directive("-t", f"1-{n}")

    def array_element_ids(self, array_id: str, n: int) -> list[str]:
        return [f"{array_id}.{i}" for i in range(1, n + 1)]

    def log_paths(self, spec: JobSpec, name: str | None = None) -> tuple[str, ...]:
        # -o <dir>/ with -j y: Grid Engine writes <dir>/<job name>.o<job id>, stderr included
        if spec.log_directory is None:
            return ()
        return (f"{spec.log_directory}/{name or spec.job_name or 'STDIN'}.o%J",)

    # --- commands ------------------------------------------------------------
    submit_options = ("-terse",)

    def name_argv(self, name: str) -> list[str]:
        return ["-N", name]

    def submitted_id(self, line: str) -> str | None:
        m = _SUBMITTED.match(line) or _SUBMITTED_LONG.search(line)
        return m.group(1) if m else None

    async def find(self, name: str) -> list[str]:
        result = await self.query([self.status_command, "-xml"], check=True)
        root = ET.fromstring(result.stdout)
        return sorted({(e.findtext("JB_job_number") or "").strip() for e in root.iter("job_list")
                       if (e.findtext("JB_name") or "").strip() == name})

    def cancel_name_argv(self, name: str) -> list[str] | None:
        return [self.cancel_command, name]  # qdel takes job names too

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        # qstat cannot take a list of ids with -xml; it lists the caller's own jobs
        return [self.status_command, "-xml"]

    def parse_status(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        if result.returncode != 0:
            raise CommandError(result.argv, result.returncode, result.stdout, result.stderr)
        try:
            root = ET.fromstring(result.stdout)
        except ET.ParseError as exc:
            raise CommandError(result.argv, result.returncode, result.stdout, result.stderr,
                               reason=f"could not parse `qstat -xml` output ({exc}): "
                                      f"{result.stdout[:200]!r}") from None
        wanted = set(job_ids)
        out: dict[str, JobStatus] = {}
        for entry in root.iter("job_list"):
            number = (entry.findtext("JB_job_number") or "").strip()
            tasks = (entry.findtext("tasks") or "").strip()
            state, reason, stuck = sge_state((entry.findtext("state") or "").strip())
            for job_id in [f"{number}.{t}" for t in _task_ids(tasks)] + [number]:
                if job_id in wanted and job_id not in out:
                    out[job_id] = JobStatus(job_id, state, reason, stuck=stuck)
        return out

    async def history(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """qacct's record of ended jobs (at most ten a poll: each call reads the accounting file)."""
        out: dict[str, JobStatus] = {}
        for job_id in list(job_ids)[:10]:
            code = await self.exit_code(job_id)
            if code is not None:
                out[job_id] = JobStatus(job_id, JobState.COMPLETED if code == 0 else JobState.FAILED,
                                        "" if code == 0 else "NonZeroExitCode", code)
        return out

    async def exit_code(self, job_id: str) -> int | None:
        number, _, task = job_id.partition(".")
        argv = ["qacct", "-j", number] + (["-t", task] if task else [])
        try:
            result = await self.query(argv)
        except CommandError:
            return None
        codes = re.findall(r"^exit_status\s+(\d+)", result.stdout, re.M)
        if not codes:
            return None
        code = int(codes[-1])
        return -(code - 128) if code > 128 else code
