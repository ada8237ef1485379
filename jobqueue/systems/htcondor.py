"""HTCondor: condor_submit / condor_q -af (then condor_history) / condor_rm, with
dask-jobqueue 0.9.0's submit description.

The job "script" is a submit description, not a shell script (docs/htcondor.md):
`key = value` commands (dask-jobqueue's: MY.DaskWorkerName, batch_name, RequestCpus /
RequestMemory / RequestDisk as expressions of MY.DaskWorkerCores / Memory / Disk, MY.JobId,
the log files), then `Executable = /bin/bash` (dask-jobqueue: /bin/sh, which is dash on Debian
and refuses the `source` of many prologues; `transfer_executable = False`: the node's own
bash) with the whole job as one `-c` argument in HTCondor's new quoting, then `Queue [N]` (N procs of one cluster: the array). The shell
body is jobqueue's job script written as one line (no `$(`: that is a submit macro).
HTCondor has no walltime: a walltime becomes `allowed_job_duration` (the job is held when
it runs longer; jobqueue removes held jobs). Jobs leave `condor_q` when they end; their end
is read from `condor_history`.
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Sequence

from dask.utils import parse_bytes

from ..commands import CommandError, CommandResult, run_async
from ..keywords import Keyword
from ..spec import JobSpec, check_line_value
from .base import BatchSystem, Directive, JobState, JobStatus

_STATUS = {1: (JobState.PENDING, "Idle"), 2: (JobState.RUNNING, ""), 3: (JobState.RUNNING, "removing"),
           4: (JobState.COMPLETED, ""), 5: (JobState.FAILED, "held"), 6: (JobState.RUNNING, "transferring output"),
           7: (JobState.RUNNING, "suspended")}
_SUBMITTED = re.compile(r"(\d+) job\(s\) submitted to cluster (\d+)\.")


def quote_arguments(args: Sequence[str]) -> str:
    """HTCondor's "new syntax" Arguments value (without the outer double quotes): every ' and
    " doubled, an argument with a space or a ' wrapped in single quotes (as dask-jobqueue)."""
    out = []
    for arg in args:
        arg = arg.replace("'", "''").replace('"', '""')
        out.append(f"'{arg}'" if (" " in arg or "'" in arg) else arg)
    return " ".join(out)


class HTCondorSystem(BatchSystem):
    name = "htcondor"
    display_name = "HTCondor"
    cluster_name = "HTCondorCluster"
    summary = ("A Dask cluster whose workers are HTCondor jobs (keywords as dask-jobqueue's HTCondorCluster; "
               "``disk`` is required).")
    example = ('>>> cluster = HTCondorCluster(cores=4, memory="8GB", disk="4GB")  # doctest: +SKIP\n'
               '>>> cluster.scale(jobs=10)  # doctest: +SKIP')
    keywords = (Keyword("disk", "disk", 'Disk per job, e.g. "4GB" (HTCondor needs it).', default="none, required"),
                Keyword("submit_command_extra", "submit-command-extra", "Extra condor_submit arguments.", list, "[]",
                        cli=None),
                Keyword("cancel_command_extra", "cancel-command-extra", "Extra condor_rm arguments.", list, "[]",
                        cli=None))
    directive_prefix = ""
    submit_command = "condor_submit"
    cancel_command = "condor_rm"
    status_command = "condor_q"
    template = "htcondor.sub.j2"
    cancel_ok = r"marked for removal|not found|There are no jobs in the queue|^$"
    transient_errors = BatchSystem.transient_errors + r"|Failed to connect to local queue manager|Can't find address"
    submit_limit_errors = r"MAX_JOBS_PER_OWNER|MAX_JOBS_SUBMITTED|MAX_JOBS_PER_SUBMISSION"
    array_index_env = "JOBQUEUE_ARRAY_INDEX"
    line_options = ("submit_command_extra_words", "cancel_command_extra_words")
    submit_extra: tuple[str, ...] = ()
    cancel_extra: tuple[str, ...] = ()

    # --- keywords --------------------------------------------------------------------
    @classmethod
    def prepare(cls, values: dict[str, Any]) -> dict[str, Any]:
        """disk is required; job_extra_directives may be a dict (dask-jobqueue's form) or "key =
        value" lines; the extra command arguments are kept as lists."""
        if values.get("disk") is None:
            raise ValueError("You must specify how much disk to use per job like ``disk='1 GB'`` (HTCondor needs "
                             "request_disk), e.g. HTCondorCluster(cores=4, memory=\"8GB\", disk=\"4GB\")")
        try:
            values["disk"] = str(parse_bytes(values["disk"]))
        except (ValueError, TypeError):
            raise ValueError(f"invalid disk={values['disk']!r}; write something like disk=\"4GB\"") from None
        extra = values.get("job_extra_directives")
        if isinstance(extra, dict):
            values["job_extra_directives"] = [f"{k} = {v}" for k, v in extra.items()]
        for key in ("submit_command_extra", "cancel_command_extra"):
            value = values.pop(key, None) or []
            if isinstance(value, str):
                value = shlex.split(value)
            values[f"{key}_words"] = shlex.join(check_line_value(key, str(v)) for v in value) if value else None
        return values

    @staticmethod
    def job_attributes(spec: JobSpec) -> dict[str, Any]:
        opts = spec.system_options
        return {"job_header_dict": HTCondorSystem.header_dict(spec),
                "submit_command": shlex.join(["condor_submit", *shlex.split(opts.get("submit_command_extra_words")
                                                                           or "")]),
                "cancel_command": shlex.join(["condor_rm", *shlex.split(opts.get("cancel_command_extra_words")
                                                                       or "")])}

    # --- the submit description ------------------------------------------------------
    @staticmethod
    def header_dict(spec: JobSpec, name: str = "dummy-name") -> dict[str, Any]:
        """dask-jobqueue's submit commands for one job, in its order (values as it keeps them)."""
        d: dict[str, Any] = {
            "MY.DaskWorkerName": '"htcondor--$F(MY.JobId)--"', "batch_name": name,
            "RequestCpus": "MY.DaskWorkerCores", "RequestMemory": "floor(MY.DaskWorkerMemory / 1048576)",
            "RequestDisk": "floor(MY.DaskWorkerDisk / 1024)", "MY.JobId": '"$(ClusterId).$(ProcId)"',
            "MY.DaskWorkerCores": spec.cores, "MY.DaskWorkerMemory": spec.memory,
            "MY.DaskWorkerDisk": int(spec.system_options.get("disk", 0)),
        }
        if spec.log_directory:
            d.update({"LogDirectory": spec.log_directory, "Output": "$(LogDirectory)/worker-$F(MY.JobId).out",
                      "Error": "$(LogDirectory)/worker-$F(MY.JobId).err", "Log": "$(LogDirectory)/worker-$(ClusterId).log",
                      "Stream_Output": True, "Stream_Error": True})
        if spec.gpus:
            d["request_gpus"] = spec.gpus
        if spec.walltime:
            d["allowed_job_duration"] = spec.walltime  # HTCondor's nearest to a walltime: held when exceeded
        for skip in spec.job_directives_skip:
            if skip not in d:
                raise ValueError(f"invalid job_directives_skip entry {skip!r}: HTCondor skips whole submit commands "
                                 f"by name; write one of {', '.join(d)}")
            del d[skip]
        for line in spec.job_extra_directives:
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"invalid job_extra_directives entry {line!r}: HTCondor takes submit commands; "
                                 'write e.g. {"+Extra": "True"} or ["+Extra = True"]')
            d[key.strip()] = value.strip()
        return d

    def header(self, spec: JobSpec) -> list[str]:
        return [f"{k} = {v}" for k, v in self.header_dict(spec).items()]

    def array_header(self, spec: JobSpec, n: int) -> list[str]:
        return self.header(spec)  # the array is "Queue n" (see the template)

    def directives(self, spec: JobSpec) -> list[Directive]:
        return []

    def log_paths(self, spec: JobSpec, name: str | None = None) -> tuple[str, ...]:
        if not spec.log_directory:
            return ()
        return f"{spec.log_directory}/worker-%J.out", f"{spec.log_directory}/worker-%J.err"

    def script_context(self, context: dict[str, Any]) -> dict[str, Any]:
        """The job as one `bash -c` argument: jobqueue's job script as one line."""
        spec: JobSpec = context["spec"]
        statements = ["trap 'echo \"[jobqueue] job script exited with code $?\" >&2' EXIT"]
        if context["array_names"]:
            cases = " ".join(f"{i}) JOBQUEUE_WORKER_NAME={n} ;;" for i, n in enumerate(context["array_names"]))
            statements += [f"case $(Process) in {cases} *) echo \"[jobqueue] unexpected proc $(Process)\" >&2; "
                           "exit 64 ;; esac", "export JOBQUEUE_WORKER_NAME"]
        statements += list(context["fork_environment"]) + list(context["lean_environment"])
        if spec.gpus and not spec.cuda_worker:
            statements.append(f"export JOBQUEUE_GPUS={spec.gpus} JOBQUEUE_GPUS_PER_WORKER={spec.gpus // spec.processes}")
        if spec.walltime:
            statements += ["JOBQUEUE_JOB_END=`date +%s`",
                           f"JOBQUEUE_JOB_END=`expr $JOBQUEUE_JOB_END + {spec.walltime}`",
                           f"export JOBQUEUE_JOB_END JOBQUEUE_RETIRE_MARGIN={context['retire_margin']} "
                           f"JOBQUEUE_RETIRE_STAGGER={context['retire_stagger']}"]
        prologue = list(context["prologue"])
        if prologue and spec.strict_prologue:
            prologue = ["set -e", *prologue, "set +e"]
        body = "; ".join(statements + prologue + [context["worker_command"]] + list(context["epilogue"]))
        if "$(" in body.replace("$(Process)", ""):
            raise ValueError("a job script line holds $(...), which HTCondor reads as a submit macro; write the "
                             "command substitution with backquotes, e.g. `hostname`")
        context["arguments"] = quote_arguments(["-c", body])
        argv = context["worker_argv"]
        name = argv[argv.index("--name") + 1] if "--name" in argv else "dummy-name"
        if context["array_names"]:
            name = spec.job_name or "dask-worker"  # one batch for the whole cluster of procs
        context["directives"] = [f"batch_name = {name}" if line.startswith("batch_name = ") else line
                                 for line in context["directives"]]
        context["queue"] = len(context["array_names"]) or ""
        return context

    def array_directive(self, n: int) -> Directive:
        return Directive("Queue", str(n))

    def array_element_ids(self, array_id: str, n: int) -> list[str]:
        cluster = array_id.split(".")[0]
        return [f"{cluster}.{i}" for i in range(n)]

    # --- command side ----------------------------------------------------------------
    def submit_argv(self, name: str | None = None) -> list[str]:
        return [self.submit_command, *self.submit_extra]

    def cancel_argv(self, job_ids: Sequence[str]) -> list[str]:
        return [self.cancel_command, *self.cancel_extra, *job_ids]

    async def submit(self, script: str, log_paths: Sequence[str] = (), name: str | None = None) -> str:
        """condor_submit reads the description on stdin (without "-", which would mean -verbose)."""
        result = await run_async(self.submit_argv(name), input=script, timeout=self.command_timeout)
        return self.parse_submit(result)

    def configure(self, spec: JobSpec) -> None:
        opts = spec.system_options
        self.submit_extra = tuple(shlex.split(opts.get("submit_command_extra_words") or ""))
        self.cancel_extra = tuple(shlex.split(opts.get("cancel_command_extra_words") or ""))

    def submitted_id(self, line: str) -> str | None:
        m = _SUBMITTED.search(line)
        return f"{m.group(2)}.0" if m else None

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        return [self.status_command, *job_ids, "-af:j", "JobStatus", "HoldReasonCode", "HoldReason"]

    def parse_status(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """`condor_q <ids> -af:j JobStatus HoldReasonCode HoldReason`: "123.0 5 46 The job ...";
        ended and unknown jobs are not listed (exit 0): their end comes from condor_history."""
        if result.returncode != 0:
            raise CommandError(result.argv, result.returncode, result.stdout, result.stderr)
        wanted = set(job_ids)
        out: dict[str, JobStatus] = {}
        for line in result.stdout.splitlines():
            parts = line.split(None, 3)
            if len(parts) < 2 or parts[0] not in wanted or not parts[1].isdigit():
                continue
            state, reason = _STATUS.get(int(parts[1]), (JobState.UNKNOWN, parts[1]))
            stuck = False
            if int(parts[1]) == 5:
                code = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
                if code in (1, 15, 16):  # held on purpose (condor_hold, submitted on hold, spooling)
                    state, reason = JobState.PENDING, "held"
                else:  # held by a failure or a policy (46: allowed_job_duration): over, remove it
                    reason, stuck = (parts[3] if len(parts) > 3 and parts[3] != "undefined" else "held"), True
            out[parts[0]] = JobStatus(parts[0], state, reason, stuck=stuck)
        return out

    async def history(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """`condor_history <ids> -af:j JobStatus ExitCode ExitBySignal ExitSignal`."""
        result = await self.query(["condor_history", *job_ids, "-af:j", "JobStatus", "ExitCode", "ExitBySignal",
                                   "ExitSignal"])
        if result.returncode != 0:
            raise CommandError(result.argv, result.returncode, result.stdout, result.stderr)
        out: dict[str, JobStatus] = {}
        wanted = set(job_ids)
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) < 5 or parts[0] not in wanted or parts[0] in out:  # newest record first
                continue
            status = int(parts[1]) if parts[1].isdigit() else 0
            code = -int(parts[4]) if parts[3] == "true" and parts[4].isdigit() else (
                int(parts[2]) if parts[2].lstrip("-").isdigit() else None)
            if status == 3:
                out[parts[0]] = JobStatus(parts[0], JobState.CANCELLED, "removed (condor_rm)", code)
            elif status == 4:
                state = JobState.COMPLETED if code == 0 else JobState.FAILED
                out[parts[0]] = JobStatus(parts[0], state, "" if code == 0 else "NonZeroExitCode", code)
        return out

    async def exit_code(self, job_id: str) -> int | None:
        st = (await self.history([job_id])).get(job_id)
        return None if st is None else st.exit_code

