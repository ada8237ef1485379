"""BatchSystem: what differs between Slurm, PBS, SGE and the local runner.

A batch system declares everything about itself on its class: its names, its keywords
and their config section, deprecated aliases, environment defaults, directives, the argv
of its submit, status and cancel commands and how to read their output, and whether it
has job arrays. The cluster class, the CLI options, the docstrings and the watchdog's
cancel command are all derived from that (see docs/add-a-system.md). It knows nothing
about Dask.
"""

from __future__ import annotations

import asyncio
import enum
import re
import shutil
import threading
import time
from dataclasses import dataclass
from typing import ClassVar, Iterable, Sequence

from ..commands import CommandError, CommandResult, CommandTimeout, UnreadableOutput, run_async
from ..keywords import Keyword
from ..spec import JobSpec, check_line_value
from ..watchdog import unconfirmed


_TURN_LOCK = threading.Lock()
_LAST_QUERY: dict[str, float] = {}  # system name -> when this process's last query of it started


def _text(exc: BaseException) -> str:
    return f"{getattr(exc, 'stderr', '')}\n{getattr(exc, 'stdout', '')}\n{exc}"


class JobState(str, enum.Enum):
    """Where a job is in its life, the same words for every batch system."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "finished"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def finished(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.TIMEOUT, JobState.CANCELLED)


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    state: JobState
    reason: str = ""
    exit_code: int | None = None
    # over, but kept in the queue until deleted (Grid Engine's error states)
    stuck: bool = False
    # the system says it does not know this id (any more): ended, no need to ask again
    gone: bool = False


@dataclass(frozen=True)
class Directive:
    """One resource request, e.g. key "--mem", value "954M", sep "=" -> "--mem=954M"."""

    key: str
    value: str | None = None
    sep: str = " "

    @property
    def text(self) -> str:
        return self.key if self.value is None else f"{self.key}{self.sep}{self.value}"


class BatchSystem:
    """Base class: one instance per cluster (the local system keeps process state)."""

    name: ClassVar[str] = ""          # CLI name and config section jobqueue.<name>
    display_name: ClassVar[str] = ""  # as users call it, in messages
    cluster_name: ClassVar[str] = ""  # the public cluster class, e.g. "SLURMCluster"
    summary: ClassVar[str] = ""       # first line of the cluster class's docstring
    example: ClassVar[str] = ""       # its doctest example
    keywords: ClassVar[tuple[Keyword, ...]] = ()     # keywords only this system has
    deprecated: ClassVar[dict[str, str]] = {}        # its deprecated aliases, old -> new
    keyword_env: ClassVar[dict[str, str]] = {}       # keyword -> environment variable default
    directive_prefix: ClassVar[str] = ""
    submit_command: ClassVar[str] = ""
    cancel_command: ClassVar[str] = ""
    # a line of cancel output that is no failure: the job was cancelled, or had already ended
    cancel_ok: ClassVar[str] = r"^$"
    # a refusal that passes (controller down or busy, rate limits): worth trying again later
    transient_errors: ClassVar[str] = (
        r"temporarily unavailable|try again|timed out|connection refused|connect failure|unable to contact"
        r"|cannot connect|commlib error|rate limit|too many (?:requests|rpcs)|Zero Bytes were transmitted"
        r"|Temporary failure|slurm_persist_conn")
    # a refusal because the user (account, QOS) already has as many jobs queued as the site
    # allows: not a failure, the jobs wait for a turn (see SubmissionQueue)
    submit_limit_errors: ClassVar[str] = r"(?!)"
    # a refusal of an array larger than the site allows: split it and try again
    array_size_errors: ClassVar[str] = r"(?!)"
    template: ClassVar[str] = "base.sh.j2"
    command_timeout: float = 60.0
    # site policy: at most one status query (status, history, find) per this many seconds,
    # for all clusters of this process together (jobqueue.<system>.min-poll-interval)
    min_query_interval: float = 0.0

    # --- keywords ----------------------------------------------------------------
    @classmethod
    def prepare(cls, values: dict) -> dict:
        """The resolved keyword values (keyword, config or default) before they are validated
        into a JobSpec: a system that reads a value its own way (LSF's walltime is
        [hour:]minute) adjusts it here; keys JobSpec has no field for go to system_options."""
        return values

    # the system's own warning before it ends a job at its limit: workers retire on it
    warning_signals: ClassVar[tuple[str, ...]] = ()
    # system_options that may hold spaces (the system quotes or checks them itself)
    line_options: ClassVar[tuple[str, ...]] = ()

    @staticmethod
    def job_attributes(spec: JobSpec) -> dict:
        """Attributes dask-jobqueue's Job class of this system had (e.g. LSFJob.use_stdin)."""
        return {}

    def configure(self, spec: JobSpec) -> None:
        """Take what the commands need from the cluster's spec (called once, before any job)."""

    def script_context(self, context: dict) -> dict:
        """The values the job-script template renders with (a system may add its own)."""
        return context

    def log_id(self, job_id: str) -> str:
        """How a job id reads in its log file names (where %J is replaced by it)."""
        return job_id

    # --- script side -------------------------------------------------------------
    def directives(self, spec: JobSpec) -> list[Directive]:
        """The directives our defaults produce for ``spec`` (before skips and extras)."""
        return []

    def header(self, spec: JobSpec) -> list[str]:
        """Directive lines: defaults minus ``job_directives_skip``, plus extras."""
        kept = [d for d in self.directives(spec) if not self._skipped(d, spec.job_directives_skip)]
        lines = [f"{self.directive_prefix} {d.text}" for d in kept]
        for extra in spec.job_extra_directives:
            extra = check_line_value("job_extra_directives", extra).strip()
            if extra.startswith(self.directive_prefix):
                extra = extra[len(self.directive_prefix):].strip()
            lines.append(f"{self.directive_prefix} {extra}")
        return lines

    def _skipped(self, directive: Directive, skips: Iterable[str]) -> bool:
        # Whole keys, whole directives or whole values only: skipping "--mem" must not
        # remove "--mem-per-cpu", and skipping "-n 1" must not remove "-n 10" (dask-jobqueue
        # matched substrings; its users lost directives that way). A resource line
        # "-l name=..." is also named by "-l name" ("-l walltime", "-l h_rt").
        resource = None
        if directive.key == "-l" and directive.value:
            resource = "-l " + re.split(r"[=:]", directive.value)[0]
        for skip in skips:
            s = skip.strip()
            if self.directive_prefix and s.startswith(self.directive_prefix):
                s = s[len(self.directive_prefix):].strip()
            if s in (directive.key, directive.text, resource) or s.rstrip("=") == directive.key:
                return True
            if directive.value and s == directive.value:  # the whole value, e.g. the job's name
                return True
        return False

    def checked_log_directory(self, spec: JobSpec) -> str:
        """spec.log_directory, refused if it holds whitespace (no directive can carry it)."""
        if re.search(r"\s", spec.log_directory or ""):
            raise ValueError(f"invalid log_directory={spec.log_directory!r} ({self.display_name} directives "
                             "cannot hold spaces); write something like log_directory=\"logs\"")
        return spec.log_directory

    def directory_log_directives(self, spec: JobSpec) -> list[Directive]:
        """-e <dir>/ and -o <dir>/: the system names the files itself (PBS, Grid Engine)."""
        if spec.log_directory is None:
            return []
        log_dir = self.checked_log_directory(spec)
        return [Directive("-e", f"{log_dir}/"), Directive("-o", f"{log_dir}/")]


    def parallel_launcher(self, spec: JobSpec) -> list[str]:
        """argv prefix that starts one task per worker of a multi-node job."""
        if spec.job_nodes > 1:
            raise ValueError(f"invalid job_nodes={spec.job_nodes} ({self.name} jobs span one node here); "
                             "write job_nodes=1, or use SLURMCluster for multi-node jobs")
        return []

    # --- job arrays: one submission for k jobs, each element tracked and cancelled alone
    array_index_env: ClassVar[str] = ""   # the element's index inside the job
    array_first_index: ClassVar[int] = 0

    @property
    def supports_arrays(self) -> bool:
        return bool(self.array_index_env)

    def array_directive(self, n: int) -> Directive:
        raise NotImplementedError

    def array_element_ids(self, array_id: str, n: int) -> list[str]:
        raise NotImplementedError

    def array_header(self, spec: JobSpec, n: int) -> list[str]:
        """Directive lines of an n-element array job (the normal header plus the array request)."""
        return self.header(spec) + [f"{self.directive_prefix} {self.array_directive(n).text}"]

    def array_log_paths(self, spec: JobSpec, name: str | None = None) -> tuple[str, ...]:
        """Like log_paths, %J standing for the element's id."""
        return self.log_paths(spec, name)

    def mpi_launcher(self, spec: JobSpec) -> list[str]:
        """argv prefix that starts the bootstrap on every rank of an MPI batch script."""
        raise ValueError(f"--mpi scripts are not available for {self.name} yet; use slurm")

    def log_paths(self, spec: JobSpec, name: str | None = None) -> tuple[str, ...]:
        """Where a job writes stdout and stderr, with %J standing for the job id."""
        if spec.log_directory is None:
            return ()
        stem = f"{spec.log_directory}/{spec.job_name or 'worker'}-%J"
        return (f"{stem}.out", f"{stem}.err")

    # --- site limits ---------------------------------------------------------------
    def submit_limited(self, exc: BaseException) -> bool:
        """Was a submission refused because of a per-user/account/QOS job-count limit?"""
        return isinstance(exc, CommandError) and re.search(self.submit_limit_errors, _text(exc), re.I) is not None

    def array_too_large(self, exc: BaseException) -> bool:
        """Was an array refused for its size (split it and try again)?"""
        return isinstance(exc, CommandError) and re.search(self.array_size_errors, _text(exc), re.I) is not None

    async def max_array_size(self) -> int | None:
        """The most elements one array job may have here, as the system's configuration says
        (None: it does not say; the site's refusal still splits arrays)."""
        return None

    async def query(self, argv: Sequence[str], check: bool = False) -> CommandResult:
        """Run a status query (squeue, scontrol, qstat, qacct ...) in its turn: never sooner
        than ``min_query_interval`` after this process's previous query of this system."""
        if self.min_query_interval > 0:
            with _TURN_LOCK:
                now = time.monotonic()
                # a margin: the site counts when the command reaches it, and process start-up varies
                spacing = self.min_query_interval + min(1.0, 0.1 * self.min_query_interval)
                start = max(now, _LAST_QUERY.get(self.name, -1e9) + spacing)
                _LAST_QUERY[self.name] = start
            if start > now:
                await asyncio.sleep(start - now)
        return await run_async(list(argv), timeout=self.command_timeout, check=check)

    # --- command side ------------------------------------------------------------
    def available(self) -> bool:
        """Is this system's submit command on PATH?"""
        return shutil.which(self.submit_command) is not None

    def submit_argv(self, name: str | None = None) -> list[str]:
        """argv that submits a job script read from standard input (as job ``name``, if given)."""
        return [self.submit_command, *self.submit_options, *(self.name_argv(name) if name else [])]

    submit_options: ClassVar[tuple[str, ...]] = ()

    def name_argv(self, name: str) -> list[str]:
        """Options that give a job this name on the command line (it wins over the script's
        directive). Empty: the system cannot, and jobs keep the script's name."""
        return []

    def submitted_id(self, line: str) -> str | None:
        """The job id on one line of the submit command's output, if it holds one."""
        raise NotImplementedError

    def parse_submit(self, result: CommandResult) -> str:
        """The job id: the last output line that holds one (a site's wrapper may print
        notices around it)."""
        for line in reversed(result.stdout.splitlines()):
            job_id = self.submitted_id(line.strip()) if line.strip() else None
            if job_id:
                return job_id
        raise UnreadableOutput(result.argv, result.returncode, result.stdout, result.stderr,
                               reason=f"could not read a job id from `{' '.join(result.argv)}` output: "
                                      f"{result.stdout.strip()!r} (stderr: {result.stderr.strip()!r})")

    async def find(self, name: str) -> list[str]:
        """Ids (as submit prints them) of this user's live jobs named ``name``: where a
        submission's answer never arrived, its job is looked for by its unique name."""
        return []

    def cancel_name_argv(self, name: str) -> list[str] | None:
        """One argv that cancels this user's jobs named ``name`` (the watchdog runs it for a
        submission whose id never arrived); None where the system has no such command."""
        return None

    def ambiguous(self, exc: BaseException) -> bool:
        """Did a failed submission perhaps reach the batch system all the same?"""
        return isinstance(exc, (CommandTimeout, UnreadableOutput))

    def cancel_argv(self, job_ids: Sequence[str]) -> list[str]:
        return [self.cancel_command, *job_ids]

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        raise NotImplementedError

    def parse_status(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        raise NotImplementedError

    async def submit(self, script: str, log_paths: Sequence[str] = (), name: str | None = None) -> str:
        """Submit ``script`` (as job ``name``); return the job id. Raises CommandError with
        the system's stderr.

        ``log_paths`` is where the script's directives send its output (the local
        system, which has no directives, writes there itself)."""
        result = await run_async(self.submit_argv(name), input=script, timeout=self.command_timeout)
        return self.parse_submit(result)

    def transient(self, exc: BaseException) -> bool:
        """Is ``exc`` a refusal that passes (retry later), not one about the job itself?"""
        if isinstance(exc, CommandTimeout):
            return True
        if not isinstance(exc, CommandError):
            return False
        return re.search(self.transient_errors, _text(exc), re.I) is not None

    async def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel with one command. Output lines that ``cancel_ok`` matches (cancelled, or
        already ended -- which qdel reports with a non-zero exit) are no error; any other
        line of a failed command is (the watchdog judges its own attempts the same way)."""
        if not job_ids:
            return
        result = await run_async(self.cancel_argv(list(job_ids)), timeout=self.command_timeout, check=False)
        failed = unconfirmed(result.returncode, result.stdout + "\n" + result.stderr, self.cancel_ok)
        if failed:
            raise CommandError(result.argv, result.returncode, result.stdout, "\n".join(failed))

    async def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """The state of every job in ``job_ids`` with ONE command; unknown ids are left out."""
        if not job_ids:
            return {}
        result = await self.query(self.status_argv(list(job_ids)))
        return self.parse_status(result, list(job_ids))

    async def exit_code(self, job_id: str) -> int | None:
        """Exit code of an ended job when the system can tell (negative: killed by that signal)."""
        return None

    async def history(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """What the system's records say of jobs its status command omitted: an ended state
        with the exit code, or a live state; ids it has no record of are left out."""
        return {}

    def close(self) -> None:
        """Release what the system object holds (nothing for command-line systems)."""
