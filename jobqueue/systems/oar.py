"""OAR (2.5 and 3): oarsub / oarstat -f -J / oardel, with dask-jobqueue 0.9.0's directives.

Directives as dask-jobqueue's OARCluster: -n, -q, --project, -l <resources>,walltime=...,
the extra directives, then the memory property (-p <name>>=<MiB per core>, combined with
the user's last -p). What OAR does differently (docs/oar.md): it runs a *command*, so the
#OAR lines are turned into oarsub options (as dask-jobqueue does) and the job script is kept
as a file the command names; `-n` exists only in OAR 2's oarsub, so the name goes as
`--name` (both versions); "Terminated" is any normal end (its exit_code is a raw wait
status), "Error" a kill (oardel or walltime: SIGKILL, no grace); oarstat exits 0 and prints
nothing for ids it does not know; walltime is H[:M[:S]] and a bare number is hours.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import uuid
import warnings
from typing import Any, Sequence

from ..commands import CommandError, CommandResult, run_async
from ..keywords import QUEUE, RESOURCE_SPEC, Keyword
from ..spec import JobSpec
from .base import BatchSystem, Directive, JobState, JobStatus

_STATES = {
    "Waiting": (JobState.PENDING, ""), "Hold": (JobState.PENDING, "held"), "toLaunch": (JobState.PENDING, ""),
    "toAckReservation": (JobState.PENDING, "reservation"), "Launching": (JobState.PENDING, "launching"),
    "Running": (JobState.RUNNING, ""), "Suspended": (JobState.RUNNING, "suspended"),
    "Resuming": (JobState.RUNNING, "resuming"), "Finishing": (JobState.RUNNING, "finishing"),
    "toError": (JobState.FAILED, "Error"), "Error": (JobState.FAILED, "Error (killed: oardel or walltime)"),
}
_JOB_ID = re.compile(r"^OAR_JOB_ID=(\d+)\s*$", re.M)


def _walltime_seconds(value: str) -> int | None:
    """OAR's H[:M[:S]] (a bare number is hours) in seconds; None if it is not that form."""
    m = re.fullmatch(r"\s*(\d+)(?::(\d+))?(?::(\d+))?\s*", value)
    return None if not m else int(m.group(1)) * 3600 + int(m.group(2) or 0) * 60 + int(m.group(3) or 0)


def return_last_job_property(job_extra_directives: Sequence[str]) -> str | None:
    """The value of the last "-p ..." extra directive (OAR keeps only one -p), as dask-jobqueue."""
    for directive in reversed(list(job_extra_directives)):
        if directive.strip().startswith("-p "):
            return directive.strip()[3:].strip()
    return None



def oar_resources(spec: JobSpec) -> str:
    """OAR's resource hierarchy for one job: cores on one node, or GPUs each with their share of
    the cores (/gpu=k/core=c: k GPUs with c cores each)."""
    if not spec.gpus:
        return f"/nodes=1/core={spec.cores}"
    if spec.cores % spec.gpus:
        raise ValueError(f"invalid gpus={spec.gpus} with cores={spec.cores} on OAR: each GPU comes with the same "
                         f"number of cores (/gpu={spec.gpus}/core=...); write cores as a multiple of gpus, e.g. "
                         f"cores={spec.gpus * max(1, spec.cores // spec.gpus)}, or a resource_spec")
    return f"/nodes=1/gpu={spec.gpus}/core={spec.cores // spec.gpus}"

class OARSystem(BatchSystem):
    name = "oar"
    display_name = "OAR"
    cluster_name = "OARCluster"
    summary = "A Dask cluster whose workers are OAR jobs (keywords as dask-jobqueue's OARCluster)."
    example = ('>>> cluster = OARCluster(cores=8, memory="16GB", walltime="02:00:00", '
               'memory_per_core_property_name="memcore")  # doctest: +SKIP')
    keywords = (QUEUE, Keyword("project", "project", "Project charged for the jobs (--project).", short="-P"),
                RESOURCE_SPEC,
                Keyword("memory_per_core_property_name", "memory-per-core-property-name",
                        'The resource property holding memory per core in MiB (e.g. "memcore"), so jobs get '
                        'nodes with enough memory; "not_applicable" where there is none.'))
    directive_prefix = "#OAR"
    submit_command = "oarsub"
    cancel_command = "oardel"
    status_command = "oarstat"
    template = "oar.sh.j2"
    # OAR 2 prints the request then REGISTERED; an ended job is "REGISTERED" too; an unknown id
    # reads "not the right user" (OAR 2) or "does not exist" (OAR 3); a second oardel "already killed"
    cancel_ok = (r"REGISTERED|will be deleted in the near future|This job was already killed|Job does not exist"
                 r"|You are not the right user|^Deleting the job = \d+ \.\.\.(?:ERROR\.)?$|^$")
    transient_errors = BatchSystem.transient_errors + r"|cannot connect to executor|Cannot connect to the database"
    array_index_env = "OAR_ARRAY_INDEX"
    array_first_index = 1
    line_options = ("oar_walltime",)

    @classmethod
    def prepare(cls, values: dict[str, Any]) -> dict[str, Any]:
        """OAR reads walltime as H[:M[:S]]: "00:02" is two minutes, "2" two hours; the value
        as written goes into -l (as in dask-jobqueue)."""
        walltime = values.get("walltime")
        seconds = _walltime_seconds(walltime) if isinstance(walltime, str) else None
        if seconds:
            values["oar_walltime"] = walltime.strip()
            values["walltime"] = format_hms(seconds)
        return values

    def directives(self, spec: JobSpec) -> list[Directive]:
        d: list[Directive] = []
        if spec.job_name is not None:
            d.append(Directive("-n", spec.job_name))
        if spec.queue is not None:
            d.append(Directive("-q", spec.queue))
        if spec.project is not None:
            d.append(Directive("--project", spec.project))
        resources = [spec.resource_spec or oar_resources(spec)]
        if spec.walltime is not None:
            resources.append(f"walltime={spec.system_options.get('oar_walltime') or spec.walltime_hms}")
        d.append(Directive("-l", ",".join(resources)))
        if spec.log_directory is not None:
            self.checked_log_directory(spec)  # base log_paths: <dir>/<name>-%J.out|.err
            out, err = self.log_paths(spec)
            d += [Directive("-O", out.replace("%J", "%jobid%")), Directive("-E", err.replace("%J", "%jobid%"))]
        return d

    def header(self, spec: JobSpec) -> list[str]:
        """Ours, the extra directives, then the memory property: after the skip filter (as in
        dask-jobqueue: it cannot be skipped) and combined with the user's last -p (OAR keeps one)."""
        lines = super().header(spec)
        prop = spec.system_options.get("memory_per_core_property_name")
        if prop is None:
            warnings.warn("OAR Job memory reserved resources will not be set according to Dask Worker memory limit, "
                          "which can cause crashes. See `memory_per_core_property_name` documentation for more "
                          "details", UserWarning, stacklevel=2)
        elif prop != "not_applicable":
            mib = math.ceil(spec.memory / (spec.cores * 2**20))
            last = return_last_job_property(spec.job_extra_directives)
            lines.append(f"{self.directive_prefix} -p '{last} AND {prop}>={mib}'" if last is not None
                         else f"{self.directive_prefix} -p {prop}>={mib}")
        return lines

    def array_directive(self, n: int) -> Directive:
        return Directive("--array", str(n))

    def array_element_ids(self, array_id: str, n: int) -> list[str]:
        return [str(int(array_id) + i) for i in range(n)]  # consecutive ids, the first is the array's

    # --- command side ----------------------------------------------------------------
    def submit_options(self, script: str, name: str | None) -> list[str]:
        """The #OAR lines as oarsub options (shlex-split, as dask-jobqueue); -n as --name, which
        OAR 2 and OAR 3 both accept on the command line, and the unique name wins."""
        options: list[str] = []
        for line in script.splitlines():
            if line.startswith("#OAR "):
                words = shlex.split(line[len("#OAR "):])
                if words and words[0] in ("-n", "--name"):
                    words[0] = "--name"
                    if name:
                        words = ["--name", name]
                options += words
        if name and "--name" not in options:
            options += ["--name", name]
        return options

    async def submit(self, script: str, log_paths: Sequence[str] = (), name: str | None = None) -> str:
        """oarsub runs a command on the first node: the script is kept as an owner-only file
        (beside the logs, which compute nodes see) and named by the command, so its shebang and
        its shell are kept whatever the user's login shell."""
        from ..files import private_dir, write_private

        directory = os.path.join(os.path.dirname(log_paths[0]), "scripts") if log_paths else None
        if directory is None:
            from ..files import state_path

            directory = os.path.dirname(state_path("scripts", "x"))
        private_dir(directory)
        path = write_private(os.path.join(directory, f"{name or 'job'}-{uuid.uuid4().hex[:8]}.sh"), script)
        os.chmod(path, 0o700)
        argv = [self.submit_command, *self.submit_options(script, name), path]
        result = await run_async(argv, timeout=self.command_timeout)
        return self.parse_submit(result)

    def submitted_id(self, line: str) -> str | None:
        m = _JOB_ID.match(line.strip())
        return m.group(1) if m else None

    def parse_submit(self, result: CommandResult) -> str:
        # the first OAR_JOB_ID line (an array prints one per job, then OAR_ARRAY_ID); admission
        # rules may print numbers before it
        m = _JOB_ID.search(result.stdout)
        return m.group(1) if m else super().parse_submit(result)

    async def find(self, name: str) -> list[str]:
        result = await self.query([self.status_command, "-u", _user(), "-J"])
        jobs = _loads(result.stdout)
        return sorted(job_id for job_id, info in jobs.items() if isinstance(info, dict) and info.get("name") == name)

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        return [self.status_command, "-f", "-J", *[a for job_id in job_ids for a in ("-j", job_id)]]

    def parse_status(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """`oarstat -f -J -j ...`: {"<id>": {"state": ..., "exit_code": <raw wait status>|null}};
        ids it does not know are simply absent (exit 0, or no output at all)."""
        if result.returncode != 0:
            raise CommandError(result.argv, result.returncode, result.stdout, result.stderr)
        try:
            jobs = _loads(result.stdout)
        except ValueError as exc:
            raise CommandError(result.argv, result.returncode, result.stdout, result.stderr,
                               reason=f"could not parse `oarstat -f -J` output ({exc})") from None
        out: dict[str, JobStatus] = {}
        for job_id in job_ids:
            info = jobs.get(job_id)
            if not isinstance(info, dict):
                continue
            state_word = str(info.get("state", ""))
            raw = info.get("exit_code")
            code = None
            if isinstance(raw, int) or (isinstance(raw, str) and raw.isdigit()):
                raw = int(raw)
                code = -(raw & 0x7F) if raw & 0x7F else raw >> 8  # a raw wait status
            if state_word == "Terminated":
                state = JobState.COMPLETED if code == 0 else JobState.FAILED
                reason = "" if code == 0 else "NonZeroExitCode"
            else:
                state, reason = _STATES.get(state_word, (JobState.UNKNOWN, state_word))
            out[job_id] = JobStatus(job_id, state, reason, code)
        return out


def format_hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _loads(text: str) -> dict:
    text = text.strip()
    return json.loads(text) if text else {}


def _user() -> str:
    import getpass

    return getpass.getuser()

