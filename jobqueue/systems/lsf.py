"""IBM Spectrum LSF: bsub < script / bjobs -o / bkill, with dask-jobqueue 0.9.0's directives.

Directives as dask-jobqueue's LSFCluster: -J, -e/-o, -q, -P "<project>", -n <ncpus or
cores> (with -R "span[hosts=1]" above one), -M <mem or memory> in the cluster's
LSF_UNIT_FOR_LIMITS (decimal, no suffix), -W [h:]m. What LSF does differently from the
others (docs/lsf.md): the script goes on bsub's stdin (a script path given as argument is
run as a command and its #BSUB lines are ignored unless LSB_BSUB_PARSE_SCRIPT=Y), every
client error exits 255, an array is a job *name* ("name[1-k]"), bjobs exits 255 as soon as
one id is unknown while still printing the others, and the run limit sends SIGUSR2.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Sequence

from ..commands import CommandError, CommandResult, run_async
from ..keywords import QUEUE, Keyword
from ..spec import JobSpec, check_line_value
from .base import BatchSystem, Directive, JobState, JobStatus

_STATES = {
    "PEND": (JobState.PENDING, ""), "PROV": (JobState.PENDING, "provisioning"), "WAIT": (JobState.PENDING, ""),
    "PSUSP": (JobState.PENDING, "suspended while pending"), "RUN": (JobState.RUNNING, ""),
    "USUSP": (JobState.RUNNING, "suspended by the user"), "SSUSP": (JobState.RUNNING, "suspended by LSF"),
    "UNKWN": (JobState.RUNNING, "host unreachable"), "DONE": (JobState.COMPLETED, ""),
    "EXIT": (JobState.FAILED, ""), "ZOMBI": (JobState.FAILED, "killed while its host was unreachable"),
}
_SUBMITTED = re.compile(r"Job <(\d+)> is submitted to")
_NOT_FOUND = re.compile(r"Job <([^>]+)> is not found")
_FIELDS = "jobid jobindex stat exit_code pend_reason"


def lsf_format_bytes_ceil(n: int, lsf_units: str = "mb") -> str:
    """Bytes in LSF's limit units, rounded up, decimal and without a suffix (as dask-jobqueue).

    >>> lsf_format_bytes_ceil(1234567890)
    '1235'
    """
    exponent = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6, "z": 7}[lsf_units.lower()[0]]
    return "%d" % math.ceil(n / (1000 ** exponent))


def lsf_detect_units() -> str:
    """LSF_UNIT_FOR_LIMITS from $LSF_ENVDIR/lsf.conf (else $LSF_CONFDIR, else /etc), read
    bottom-up as LSF does; "kb", LSF's default, when it is not set."""
    conf_dir = os.environ.get("LSF_ENVDIR") or os.environ.get("LSF_CONFDIR") or "/etc"
    try:
        with open(os.path.join(conf_dir, "lsf.conf")) as f:
            lines = f.readlines()
    except OSError:
        return "kb"
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("LSF_UNIT_FOR_LIMITS"):
            value = line.split("=", 1)[1].strip() if "=" in line else ""
            if value:
                return value[0].lower() + "b"
    return "kb"


def _minutes(value: str) -> int | None:
    """LSF's -W "[hour:]minute" in minutes (None if it is not that form)."""
    m = re.fullmatch(r"\s*(?:(\d+):)?(\d+)\s*", value)
    return None if not m else int(m.group(1) or 0) * 60 + int(m.group(2))


class LSFSystem(BatchSystem):
    name = "lsf"
    display_name = "LSF"
    cluster_name = "LSFCluster"
    summary = "A Dask cluster whose workers are LSF jobs (keywords as dask-jobqueue's LSFCluster)."
    example = ('>>> cluster = LSFCluster(cores=8, memory="16GB", walltime="02:00", queue="normal")'
               '  # doctest: +SKIP\n>>> cluster.scale(jobs=10)  # doctest: +SKIP')
    keywords = (QUEUE, Keyword("project", "project", 'Project charged for the jobs (-P), e.g. "Dask on LSF".',
                               short="-P"),
                Keyword("ncpus", "ncpus", "Slots to request (-n) when different from cores.", int),
                Keyword("mem", "mem", "Memory limit in bytes (-M) when different from memory.", int),
                Keyword("lsf_units", "lsf-units", 'Unit of -M, as LSF_UNIT_FOR_LIMITS ("MB", "GB", ...); '
                        "default: read from lsf.conf, else KB."),
                Keyword("use_stdin", "use-stdin", "Submit with `bsub < script` (True) or `bsub script`.", bool,
                        "True"))
    directive_prefix = "#BSUB"
    submit_command = "bsub"
    cancel_command = "bkill"
    status_command = "bjobs"
    template = "lsf.sh.j2"
    cancel_ok = r"is being terminated|Job has already finished|No matching job found|is not found"
    warning_signals = ("SIGUSR2",)  # LSF: at the run limit, killed ten minutes later
    transient_errors = BatchSystem.transient_errors + r"|Cannot connect to LSF|LSF is down|batch system daemon"
    array_size_errors = r"Job array index too large"
    submit_limit_errors = r"(?:user|queue|project).{0,40}job (?:slot )?limit|Pending job threshold reached"
    array_index_env = "LSB_JOBINDEX"
    array_first_index = 1
    line_options = ("lsf_project",)
    stdin = True  # `bsub < script`; use_stdin=False: `bsub <file>` (LSF runs the file as a command)

    # --- keywords --------------------------------------------------------------------
    @classmethod
    def prepare(cls, values: dict[str, Any]) -> dict[str, Any]:
        """LSF reads -W as [hour:]minute: "00:30" is 30 minutes here, not 30 seconds. The value
        as written is kept for the directive ("1:00" stays "1:00", as in dask-jobqueue)."""
        walltime = values.get("walltime")
        if isinstance(walltime, str) and _minutes(walltime) is not None:
            values["lsf_walltime"] = walltime.strip()
            values["walltime"] = _minutes(walltime) or None
        project = values.get("project")
        if project is not None:
            project = check_line_value("project", str(project))
            if re.search(r"[\"'\\$`]", project):
                raise ValueError(f"invalid project={project!r} (quotes, backslashes, $ and ` cannot go into "
                                 "#BSUB -P \"...\"); write something like project=\"Dask on LSF\"")
            values["lsf_project"], values["project"] = project, None
        for key in ("ncpus", "mem"):
            if values.get(key) is not None:
                if isinstance(values[key], bool) or not str(values[key]).isdigit() or int(values[key]) < 1:
                    raise ValueError(f"invalid {key}={values[key]!r} (a whole number, at least 1); write something "
                                     f"like {key}={'24' if key == 'ncpus' else '16000000000'}")
        if values.get("lsf_units") is not None:
            units = str(values["lsf_units"]).strip().lower()
            if not units or units[0] not in "kmgtpez":
                raise ValueError(f"invalid lsf_units={values['lsf_units']!r}; write one of KB, MB, GB, TB, PB, EB, ZB")
        return values

    @staticmethod
    def job_attributes(spec: JobSpec) -> dict[str, Any]:
        raw = spec.system_options.get("use_stdin")
        return {"use_stdin": None if raw is None else raw == "True"}

    # --- script side -----------------------------------------------------------------
    def configure(self, spec: JobSpec) -> None:
        self.stdin = spec.system_options.get("use_stdin") != "False"

    def directives(self, spec: JobSpec) -> list[Directive]:
        opts = spec.system_options
        d: list[Directive] = []
        if spec.job_name is not None:
            d.append(Directive("-J", spec.job_name))
        if spec.log_directory is not None:
            self.checked_log_directory(spec)  # base log_paths: <dir>/<name>-%J.out|.err
            out, err = self.log_paths(spec)
            d += [Directive("-e", err), Directive("-o", out)]
        if spec.queue is not None:
            d.append(Directive("-q", spec.queue))
        if opts.get("lsf_project") is not None:
            d.append(Directive("-P", f'"{opts["lsf_project"]}"'))
        ncpus = int(opts.get("ncpus") or spec.cores)
        d.append(Directive("-n", str(ncpus)))
        if ncpus > 1:
            d.append(Directive("-R", '"span[hosts=1]"'))
        if spec.gpus:
            d.append(Directive("-gpu", f'"num={spec.gpus}"'))
        units = opts.get("lsf_units") or lsf_detect_units()
        d.append(Directive("-M", lsf_format_bytes_ceil(int(opts.get("mem") or spec.memory), lsf_units=units)))
        if spec.walltime is not None:
            hours, minutes = divmod(math.ceil(spec.walltime / 60), 60)
            d.append(Directive("-W", opts.get("lsf_walltime") or f"{hours:02d}:{minutes:02d}"))
        return d

    def array_header(self, spec: JobSpec, n: int) -> list[str]:
        # an LSF array is a job name: -J "name[1-n]"; each element writes <name>-<id>_<index>.out
        name = spec.job_name or "dask-worker"
        lines = [line.replace("%J", "%J_%I") if line.startswith(("#BSUB -e ", "#BSUB -o ")) else line
                 for line in self.header(spec) if not line.startswith("#BSUB -J ")]
        return [f"{self.directive_prefix} {self.array_directive(n, name).text}", *lines]

    def array_directive(self, n: int, name: str = "dask-worker") -> Directive:
        return Directive("-J", f'"{name}[1-{n}]"')

    def array_element_ids(self, array_id: str, n: int) -> list[str]:
        return [f"{array_id}[{i}]" for i in range(1, n + 1)]

    def log_id(self, job_id: str) -> str:
        """How %J reads in this job's log file names: "1234[3]" writes <name>-1234_3.out."""
        return job_id.replace("[", "_").rstrip("]")

    # --- command side ----------------------------------------------------------------
    def name_argv(self, name: str) -> list[str]:
        return ["-J", name]

    async def submit(self, script: str, log_paths: Sequence[str] = (), name: str | None = None) -> str:
        """`bsub` with the script on stdin (so its #BSUB lines are read); an array keeps its
        index range in the job name given on the command line, which wins over the script's."""
        argv = [self.submit_command]
        if name:
            m = re.search(r'^#BSUB -J "?[^"\s\[]+(\[[^\]]+\])"?\s*$', script, re.M)
            argv += ["-J", name + (m.group(1) if m else "")]
        if self.stdin:
            return self.parse_submit(await run_async(argv, input=script, timeout=self.command_timeout))
        # a file LSF runs at start time (it must stay: owner-only, in the state directory)
        from ..files import state_path, write_private

        path = state_path("scripts", f"{name or 'job'}-{os.getpid()}-{len(script)}.sh")
        write_private(path, script)
        os.chmod(path, 0o700)
        return self.parse_submit(await run_async([*argv, path], timeout=self.command_timeout))

    def submitted_id(self, line: str) -> str | None:
        m = _SUBMITTED.search(line)
        return m.group(1) if m else None

    def parse_submit(self, result: CommandResult) -> str:
        for text in (result.stdout, result.stderr):  # BSUB_STDERR moves the line to stderr
            m = _SUBMITTED.search(text)
            if m:
                return m.group(1)
        return super().parse_submit(result)

    async def find(self, name: str) -> list[str]:
        result = await self.query([self.status_command, "-noheader", "-o", "jobid", "-J", name])
        return sorted({line.strip() for line in result.stdout.splitlines() if line.strip().isdigit()})

    def cancel_name_argv(self, name: str) -> list[str] | None:
        return [self.cancel_command, "-J", name]

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        return [self.status_command, "-noheader", "-o", f"{_FIELDS} delimiter='|'", *job_ids]

    def parse_status(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Rows of `jobid|jobindex|stat|exit_code|pend_reason` ("-" for empty values); bjobs
        exits 255 as soon as one id is unknown ("Job <N> is not found") and still prints the rest."""
        unknown = set(_NOT_FOUND.findall(result.stderr))
        rows = [line.split("|") for line in result.stdout.splitlines() if line.count("|") >= 3]
        if result.returncode != 0 and not rows and not unknown:
            raise CommandError(result.argv, result.returncode, result.stdout, result.stderr)
        wanted = set(job_ids)
        out: dict[str, JobStatus] = {}
        for row in rows:
            jobid, index, stat = row[0].strip(), row[1].strip(), row[2].strip()
            job_id = jobid if index in ("0", "-", "") else f"{jobid}[{index}]"
            if job_id not in wanted:
                continue
            state, reason = _STATES.get(stat, (JobState.UNKNOWN, stat))
            code = row[3].strip()
            exit_code = (0 if state == JobState.COMPLETED else int(code) if code.isdigit() else None)
            pend = row[4].strip().rstrip(";") if len(row) > 4 and row[4].strip() != "-" else ""
            out[job_id] = JobStatus(job_id, state, pend or reason, exit_code)
        for job_id in wanted - set(out):
            if job_id in unknown or job_id.split("[")[0] in unknown:
                out[job_id] = JobStatus(job_id, JobState.UNKNOWN, gone=True)  # purged after CLEAN_PERIOD
        return out
