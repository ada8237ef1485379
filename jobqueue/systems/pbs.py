"""PBS (OpenPBS, PBS Pro): qsub / qstat -f -F json / qdel.

Directives and defaults as dask-jobqueue 0.9.0's PBSCluster: -N, -q, -A,
-l select=1:ncpus=<cores>:mem=<memory> (or resource_spec), -l walltime, -e/-o.

Status parsing is written for what real servers do (see docs/pbs.md): qstat exits 153
for ids it no longer knows and 35 for finished jobs while history is kept, prints no
"Jobs" key when nothing matched, types any value that looks like a number as a number,
may emit invalid JSON (backslashes), and omits Exit_status and comment until they exist.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from typing import Any, Sequence

from ..commands import CommandError, CommandResult, run_async
from ..keywords import ACCOUNT, QUEUE, RESOURCE_SPEC
from ..spec import JobSpec
from .base import BatchSystem, Directive, JobState, JobStatus

# "1234.server", "1234[].server", "1234[5].server.example.com"; Torque-style wrappers print "1234"
_JOB_ID = re.compile(r"^\d+(?:\[\d*\])?(?:\.[\w.-]+)?$")
# qstat/qdel per-id errors: "qstat: Unknown Job Id 12.srv", "qstat: 12.srv Job has finished, ..."
_UNKNOWN = re.compile(r"Unknown Job Id (?:Error )?(\S+)")
_FINISHED = re.compile(r"(\S+) Job has finished|Job has finished (\S+)")


_HISTORY = "finished (kept in job history)"

_STATES = {
    "Q": (JobState.PENDING, "queued"), "H": (JobState.PENDING, "held"),
    "W": (JobState.PENDING, "waiting for its start time"), "T": (JobState.PENDING, "in transit"),
    "S": (JobState.PENDING, "suspended"), "U": (JobState.PENDING, "suspended (workstation busy)"),
    "M": (JobState.PENDING, "moved"),
    "R": (JobState.RUNNING, ""), "B": (JobState.RUNNING, ""), "E": (JobState.RUNNING, "exiting"),
    "X": (JobState.COMPLETED, ""), "F": (JobState.COMPLETED, ""), "C": (JobState.COMPLETED, ""),
}


def pbs_format_bytes_ceil(n: int) -> str:
    """Bytes as PBS's mem= wants them (PBS's KB/MB/GB are binary), rounded up.

    >>> pbs_format_bytes_ceil(1234567890)
    '1178MB'
    """
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= 10 * size:
            return f"{math.ceil(n / size)}{unit}"
    return f"{n}B"


def ended_state(exit_status: Any, comment: str = "", substate: Any = None) -> tuple[JobState, int | None]:
    """State and exit code (negative: killed by that signal) of a finished PBS job."""
    try:
        code = int(exit_status)
    except (TypeError, ValueError):
        # deleted before it ran (substate 91, no Exit_status) or history without a status
        if str(substate) == "91" or "terminated" in comment:
            return JobState.CANCELLED, None
        return JobState.COMPLETED, None
    if code == -29 or "exceeded resource walltime" in comment:
        return JobState.TIMEOUT, code
    if code > 256:  # 256 + signal: the job's shell was killed
        signal = code - 256
        if "terminated" in comment or str(substate) == "91":
            return JobState.CANCELLED, -signal
        return JobState.FAILED, -signal
    if code == 0:
        return JobState.COMPLETED, 0
    if "terminated" in comment or str(substate) == "91":
        return JobState.CANCELLED, code
    return JobState.FAILED, code


def _loads(text: str) -> dict:
    """qstat's JSON; OpenPBS <= 23.06 escapes backslashes poorly, so retry repaired."""
    try:
        return json.loads(text, strict=False)
    except ValueError:
        repaired = re.sub(r'\\(?!["\\/bfnrtu])', r"\\\\", text)
        return json.loads(repaired, strict=False)


class PBSSystem(BatchSystem):
    name = "pbs"
    display_name = "PBS"
    cluster_name = "PBSCluster"
    summary = ("A Dask cluster whose workers are PBS jobs: OpenPBS, PBS Pro or Torque (keywords as "
               "dask-jobqueue's PBSCluster).")
    example = ('>>> cluster = PBSCluster(cores=8, memory="16GB", walltime="02:00:00", account="proj")'
               '  # doctest: +SKIP')
    keywords = (QUEUE, ACCOUNT, RESOURCE_SPEC)
    deprecated = {"project": "account"}
    keyword_env = {"account": "PBS_ACCOUNT"}
    # "openpbs" or "torque": from `qsub --version` before the first array, or when a
    # qstat rejects -F json (then the plain Torque table is read instead)
    flavour: str | None = None
    directive_prefix = "#PBS"
    submit_command = "qsub"
    cancel_command = "qdel"
    status_command = "qstat"
    template = "pbs.sh.j2"
    # already finished (35) or purged (153) ids are not an error: they are gone
    cancel_ok = r"Unknown Job Id|Job has finished|nonexistent job id|finished array subjob"
    array_size_errors = r"Array job exceeds server or queue size limit"
    # entity limits ("would exceed complex's per-user limit of jobs in 'Q' state"), max_queued;
    # Torque-syntax wrappers over Slurm pass sbatch's own words on
    submit_limit_errors = r"would exceed .*limit of jobs|Maximum number of jobs|MaxSubmitJob|job submit limit"

    async def max_array_size(self) -> int | None:
        """The server's max_array_size (`qstat -B -f`); Torque's qstat has no such line."""
        result = await self.query([self.status_command, "-B", "-f"])
        m = re.search(r"^\s*max_array_size\s*=\s*(\d+)", result.stdout, re.M)
        return int(m.group(1)) if m else None

    def available(self) -> bool:
        """qsub on PATH and not Grid Engine's (which comes with qconf)."""
        import shutil

        return shutil.which("qsub") is not None and shutil.which("qconf") is None

    def directives(self, spec: JobSpec) -> list[Directive]:
        d: list[Directive] = []
        if spec.job_name is not None:
            d.append(Directive("-N", spec.job_name))
        if spec.queue is not None:
            d.append(Directive("-q", spec.queue))
        if spec.account is not None:
            d.append(Directive("-A", spec.account))
        resource_spec = spec.resource_spec
        if resource_spec is None:
            resource_spec = f"select=1:ncpus={spec.cores}:mem={pbs_format_bytes_ceil(spec.memory)}"
            if spec.gpus:
                resource_spec += f":ngpus={spec.gpus}"
        d.append(Directive("-l", resource_spec))
        if spec.walltime is not None:
            d.append(Directive("-l", f"walltime={spec.walltime_hms}"))
        d += self.directory_log_directives(spec)
        return d

    array_index_env = "PBS_ARRAY_INDEX"

    @property
    def supports_arrays(self) -> bool:
        # OpenPBS arrays (-J); Torque's and Slurm's wrapper's differ: submit one by one there
        return self.detect_flavour() == "openpbs"

    def detect_flavour(self) -> str:
        """OpenPBS/PBS Pro print "pbs_version = X" for `qsub --version`; Torque prints
        "Version:" on stderr, and Slurm's Torque wrapper refuses the option."""
        if self.flavour is None:
            from ..commands import run

            try:
                result = run([self.submit_command, "--version"], timeout=15, check=False)
                self.flavour = "openpbs" if "pbs_version" in result.stdout else "torque"
            except CommandError:
                return "unknown"  # qsub missing: decide later
        return self.flavour

    def array_directive(self, n: int) -> Directive:
        return Directive("-J", f"0-{n - 1}")  # PBS wants X < Y: arrays of 2 or more

    def array_element_ids(self, array_id: str, n: int) -> list[str]:
        head, _, server = array_id.partition(".")
        number = head.split("[")[0]
        return [f"{number}[{i}]" + (f".{server}" if server else "") for i in range(n)]

    def log_paths(self, spec: JobSpec, name: str | None = None) -> tuple[str, ...]:
        # -o <dir>/: PBS writes <dir>/<full job id>.OU and .ER, when the job ends
        if spec.log_directory is None:
            return ()
        return (f"{spec.log_directory}/%J.OU", f"{spec.log_directory}/%J.ER")

    # --- commands ------------------------------------------------------------
    def name_argv(self, name: str) -> list[str]:
        # Torque keeps 15 characters of a name: jobs keep the script's there
        return ["-N", name] if self.detect_flavour() == "openpbs" else []

    async def find(self, name: str) -> list[str]:
        result = await self.query([self.status_command, "-f", "-F", "json"])
        try:
            jobs = (_loads(result.stdout).get("Jobs") or {}) if result.stdout.strip() else {}
        except ValueError:
            return []
        return sorted(job_id for job_id, info in jobs.items() if str(info.get("Job_Name")) == name)

    async def submit(self, script: str, log_paths: Sequence[str] = (), name: str | None = None) -> str:
        # from a file, not stdin: Torque-style qsubs (e.g. Slurm's wrapper) cannot read stdin,
        # and the job name is then ours, not "STDIN". qsub copies the script; the file goes.
        fd, path = tempfile.mkstemp(prefix="jobqueue-", suffix=".sh")  # owner-only (0600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(script)
            result = await run_async([*self.submit_argv(name), path], timeout=self.command_timeout)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return self.parse_submit(result)

    def submitted_id(self, line: str) -> str | None:
        job_id = line.split()[-1]
        return job_id if _JOB_ID.match(job_id) else None

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        # no -x: with job history off (the default) the server then answers nothing at all
        return [self.status_command, "-f", "-F", "json", *job_ids]

    def parse_status(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        out: dict[str, JobStatus] = {}
        finished = {m.group(1) or m.group(2) for m in _FINISHED.finditer(result.stderr)}
        unknown = {m.group(1) for m in _UNKNOWN.finditer(result.stderr)}
        text = result.stdout.strip()
        if result.returncode not in (0, 35, 153) or (not text and not finished and not unknown
                                                     and result.returncode != 0):
            raise CommandError(result.argv, result.returncode, result.stdout, result.stderr)
        jobs: dict = {}
        if text:
            try:
                data = _loads(text)
            except ValueError as exc:
                raise CommandError(result.argv, result.returncode, result.stdout, result.stderr,
                                   reason=f"could not parse `qstat -f -F json` output ({exc})") from None
            jobs = data.get("Jobs") or {}
        for job_id in job_ids:
            info = _lookup(jobs, job_id)
            if info is not None:
                out[job_id] = _job_status(job_id, info)
            elif _matches(job_id, finished):
                out[job_id] = JobStatus(job_id, JobState.COMPLETED, _HISTORY)
            elif _matches(job_id, unknown):
                out[job_id] = JobStatus(job_id, JobState.UNKNOWN, gone=True)  # "Unknown Job Id": the server forgot it
        return out

    async def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        if not job_ids:
            return {}
        if self.flavour == "torque":
            return await self._torque_status(job_ids)
        try:
            out = await super().status(job_ids)
        except CommandError as exc:
            if exc.returncode == 2 and re.search(r"Unknown option|invalid option|illegal option", exc.stderr or "",
                                                 re.I):
                self.flavour = "torque"  # Torque, or Slurm's Torque wrapper: no JSON, no history
                return await self._torque_status(job_ids)
            raise
        ended = [i for i, st in out.items() if st.state.finished and st.reason == _HISTORY]
        if ended:
            # qstat said "Job has finished" (history is on): one more call, with -x, tells how
            jobs = await self._history(ended)
            for job_id in ended:
                info = _lookup(jobs, job_id)
                out[job_id] = _job_status(job_id, info) if info else JobStatus(job_id, JobState.COMPLETED)
        return out

    async def _history(self, job_ids: Sequence[str]) -> dict:
        """The "Jobs" of `qstat -x -f -F json <ids>` ({} when the server keeps no history)."""
        result = await self.query([self.status_command, "-x", "-f", "-F", "json", *job_ids])
        try:
            return (_loads(result.stdout).get("Jobs") or {}) if result.stdout.strip() else {}
        except ValueError:
            return {}

    async def _torque_status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Plain `qstat <ids>`: the state letter is the fifth column; 153 when none is known."""
        result = await self.query([self.status_command, *job_ids])
        if result.returncode not in (0, 153) and not result.stdout.strip():
            raise CommandError(result.argv, result.returncode, result.stdout, result.stderr)
        out: dict[str, JobStatus] = {}
        rows = {}
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[0][:1].isdigit():
                rows[parts[0]] = parts[-2] if len(parts[-2]) == 1 else parts[4]
        unknown = {m.group(1) for m in _UNKNOWN.finditer(result.stderr)}
        for job_id in job_ids:
            letter = rows.get(job_id) or next((v for k, v in rows.items() if _short(k) == _short(job_id)), None)
            if letter is not None:
                state, reason = _STATES.get(letter, (JobState.UNKNOWN, letter))
                out[job_id] = JobStatus(job_id, state, reason)
            elif _matches(job_id, unknown):
                out[job_id] = JobStatus(job_id, JobState.UNKNOWN, gone=True)
        return out

    async def history(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """`qstat -x`: the server's job history, where it keeps one (not Torque)."""
        if self.flavour == "torque":
            return {}
        jobs = await self._history(job_ids)
        return {job_id: _job_status(job_id, info) for job_id in job_ids if (info := _lookup(jobs, job_id))}

    async def exit_code(self, job_id: str) -> int | None:
        if self.flavour == "torque":
            return None
        # only servers that keep job history can still tell
        info = _lookup(await self._history([job_id]), job_id)
        if not info:
            return None
        return ended_state(info.get("Exit_status"), str(info.get("comment", "")), info.get("substate"))[1]


def _short(job_id: str) -> str:
    return job_id.split(".")[0]


def _matches(job_id: str, ids: set[str]) -> bool:
    return job_id in ids or _short(job_id) in {_short(i) for i in ids}


def _lookup(jobs: dict, job_id: str) -> dict | None:
    if job_id in jobs:
        return jobs[job_id]
    for key, info in jobs.items():  # "12" submitted, "12.server" reported (or the reverse)
        if _short(str(key)) == _short(job_id):
            return info
    return None


def _job_status(job_id: str, info: dict) -> JobStatus:
    code = str(info.get("job_state", "")).strip()
    comment = str(info.get("comment", "") or "")
    if code in ("F", "X") or (code == "C" and "Exit_status" in info):
        state, exit_code = ended_state(info.get("Exit_status"), comment, info.get("substate"))
        return JobStatus(job_id, state, "", exit_code)
    state, reason = _STATES.get(code, (JobState.UNKNOWN, code))
    if state == JobState.PENDING and comment and not comment.startswith("Job run at"):
        reason = comment  # "Not Running: Insufficient amount of resource: ncpus (R: 64 A: 8 T: 8)"
    return JobStatus(job_id, state, reason)
