"""JobSpec: the validated, immutable description of one batch job.

Everything a user can get wrong about a job's size is checked here, before anything
is rendered or submitted, and every error names the field, the value given and an
example of a good value. This module is a leaf: it imports nothing from jobqueue.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

# Decimal and binary units, as dask.utils.parse_bytes reads them, so that "16GB"
# means the same number of bytes here as in dask-jobqueue and distributed.
_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "kib": 2**10, "ki": 2**10,
    "m": 10**6, "mb": 10**6, "mib": 2**20, "mi": 2**20,
    "g": 10**9, "gb": 10**9, "gib": 2**30, "gi": 2**30,
    "t": 10**12, "tb": 10**12, "tib": 2**40, "ti": 2**40,
    "p": 10**15, "pb": 10**15, "pib": 2**50, "pi": 2**50,
}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")
_WALLTIME_RE = re.compile(
    r"^(?:(?P<days>\d+)-)?(?P<a>\d+)(?::(?P<b>\d{1,2}))?(?::(?P<c>\d{1,2}))?$"
)
# Values that go into directive lines or the environment unquoted. A directive value
# is read by the batch system, not by a shell, but a newline would start a new line
# of the script and a NUL would truncate it.
_FORBIDDEN_IN_LINE = re.compile(r"[\x00-\x1f\x7f]")
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_.@%+=:,/~-]+$")


def _bad(field_name: str, value: Any, example: str, why: str = "") -> ValueError:
    reason = f" ({why})" if why else ""
    return ValueError(
        f"invalid {field_name}={value!r}{reason}; write something like {field_name}={example}"
    )


def parse_memory(value: Any, field_name: str = "memory") -> int:
    """Parse a memory amount ("16GB", "16 GiB", "1500MB", 2**30) into bytes (> 0)."""
    if isinstance(value, bool):
        raise _bad(field_name, value, '"16GB"', "a memory amount, not a boolean")
    if isinstance(value, (int, float)):
        if value <= 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise _bad(field_name, value, '"16GB"', "must be positive")
        return int(value)
    if not isinstance(value, str):
        raise _bad(field_name, value, '"16GB"', f"expected a string or an integer, got {type(value).__name__}")
    m = _MEMORY_RE.match(value)
    if not m or m.group(2).lower() not in _UNITS:
        raise _bad(field_name, value, '"16GB"', "use a number followed by B, KB, MB, GB, TB, KiB, MiB, GiB or TiB")
    amount = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if amount <= 0:
        raise _bad(field_name, value, '"16GB"', "must be positive")
    return amount


def parse_walltime(value: Any, field_name: str = "walltime") -> int:
    """Parse a walltime into seconds.

    Accepts "HH:MM:SS", "D-HH:MM:SS", "D-HH", "D-HH:MM", "MM:SS" and integer minutes
    (an int or a string of digits), the forms Slurm, PBS and SGE users write.
    """
    example = '"01:30:00"'
    if isinstance(value, bool):
        raise _bad(field_name, value, example, "a duration, not a boolean")
    if isinstance(value, int):
        if value <= 0:
            raise _bad(field_name, value, example, "must be positive (integers are minutes)")
        return value * 60
    if not isinstance(value, str):
        raise _bad(field_name, value, example, f"expected a string or integer minutes, got {type(value).__name__}")
    m = _WALLTIME_RE.match(value.strip())
    if not m:
        raise _bad(field_name, value, example, "use HH:MM:SS, D-HH:MM:SS, MM:SS or integer minutes")
    days, a, b, c = m.group("days"), m.group("a"), m.group("b"), m.group("c")
    if days is not None:
        # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = int(a), int(b or 0), int(c or 0)
        total = int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
        if hours > 23:
            raise _bad(field_name, value, '"1-12:00:00"', "hours after the day must be below 24")
    elif c is not None:
        hours, minutes, seconds = int(a), int(b), int(c)
        total = hours * 3600 + minutes * 60 + seconds
    elif b is not None:
        minutes, seconds = int(a), int(b)
        total = minutes * 60 + seconds
    else:
        minutes, seconds = int(a), 0
        total = minutes * 60
    if seconds > 59 or ((c is not None or days is not None) and minutes > 59):
        raise _bad(field_name, value, example, "minutes and seconds must be below 60")
    if total <= 0:
        raise _bad(field_name, value, example, "must be positive")
    return total


def format_walltime(seconds: int) -> str:
    """Seconds as HH:MM:SS (hours may exceed 24: every batch system reads that)."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def retirement(walltime: int) -> tuple[int, int]:
    """(margin, stagger) in seconds: workers retire between margin and margin + stagger
    before the walltime ends, early enough to hand their data over before the batch
    system kills the job (10% of the walltime, at least 30 s, at most 5 min)."""
    margin = int(min(max(0.1 * walltime, 30), 300, walltime / 2))
    return margin, int(min(margin / 3, 60))


def default_processes(cores: int) -> int:
    """About sqrt(cores) processes that divide cores evenly (distributed's choice)."""
    if cores <= 4:
        return cores
    return min(f for f in range(1, cores + 1) if cores % f == 0 and f >= math.sqrt(cores))


def check_line_value(field_name: str, value: str) -> str:
    """Reject control characters (newline, NUL, ...) in a value that becomes part of a line."""
    if not isinstance(value, str):
        value = str(value)
    bad = _FORBIDDEN_IN_LINE.search(value)
    if bad:
        raise _bad(field_name, value, '"--comment=analysis"', f"contains the control character {bad.group()!r}; one line per value")
    return value


def check_token(field_name: str, value: Any, example: str) -> str:
    """A value written unquoted into a directive: letters, digits and _.@%+=:,/~- only."""
    if isinstance(value, (list, tuple, set, dict)):
        raise _bad(field_name, value, example, "one value, not a list")
    value = str(value)
    if not _SAFE_TOKEN.match(value):
        raise _bad(field_name, value, example, "only letters, digits and _ . @ % + = : , / ~ - are allowed")
    return value


def _int_at_least(field_name: str, value: Any, minimum: int, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _bad(field_name, value, example, "expected an integer")
    try:
        number = int(value)
    except ValueError:
        raise _bad(field_name, value, example, "expected an integer") from None
    if number < minimum:
        raise _bad(field_name, value, example, f"must be at least {minimum}")
    return number


def _as_tuple(field_name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        raise _bad(field_name, value, f'["{value}"]', "expected a list of strings")
    return tuple(check_line_value(field_name, str(v)) for v in value)


def _processes(cores: int, processes: Any, gpus: int) -> int:
    """Worker processes per job: given, else one per GPU, else about sqrt(cores)."""
    if processes is None and gpus:
        if gpus > cores:
            raise _bad("gpus", gpus, str(cores), f"one worker per GPU needs a core each: at most cores={cores}"
                       f", or write cores={gpus}, or processes=1 for one worker with all {gpus} GPUs")
        return gpus
    if processes is None:
        return default_processes(cores)
    n = _int_at_least("processes", processes, 1, "1")
    if n > cores:
        raise _bad("processes", processes, str(cores), f"cannot exceed cores={cores}")
    if cores % n:
        divisors = [d for d in range(1, cores + 1) if cores % d == 0]
        threads = cores // n
        warnings.warn(f"processes={n} does not divide cores={cores}: each worker process gets "
                      f"{threads} thread{'s' if threads > 1 else ''}, so {cores - threads * n} of "
                      f"the {cores} cores each job asks for stay unused. Choose processes among {divisors} "
                      "to use them all.", UserWarning, stacklevel=5)
    if gpus and gpus % n:
        raise _bad("processes", n, str(gpus), f"each worker gets the same number of GPUs: processes must divide "
                   f"gpus={gpus}")
    return n


CONTAINER_RUNTIMES = ("apptainer", "singularity", "podman-hpc", "shifter")
_RESOURCE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def _resources(value: Any) -> tuple[tuple[str, float], ...]:
    """worker_resources as (name, amount) pairs: a dict {"GPU": 1} or strings "GPU=1"."""
    if value in (None, "", (), [], {}):
        return ()
    example = '{"GPU": 1, "BIGMEM": 1}'
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = []
        for word in value:
            name, sep, amount = str(word).partition("=")
            if not sep:
                raise _bad("worker_resources", value, example, f"{word!r} is not NAME=AMOUNT")
            items.append((name.strip(), amount.strip()))
    else:
        raise _bad("worker_resources", value, example, "a dict of resource names and amounts")
    out = []
    for name, amount in items:
        if not _RESOURCE_NAME.match(str(name)):
            raise _bad("worker_resources", value, example, f"resource name {name!r}: letters, digits, _ . -")
        try:
            number = float(amount)
        except (TypeError, ValueError):
            raise _bad("worker_resources", value, example, f"amount of {name} is not a number") from None
        if not number > 0 or not math.isfinite(number):
            raise _bad("worker_resources", value, example, f"amount of {name} must be positive")
        out.append((str(name), int(number) if number.is_integer() else number))
    return tuple(out)


@dataclass(frozen=True)
class JobSpec:
    """What one batch job asks for and what it runs. Build it with :meth:`create`."""

    cores: int
    memory: int
    processes: int
    walltime: int | None = None
    job_name: str | None = "dask-worker"
    queue: str | None = None
    account: str | None = None
    project: str | None = None
    resource_spec: str | None = None
    job_cpu: int | None = None
    job_mem: str | None = None
    job_nodes: int = 1
    job_extra_directives: tuple[str, ...] = ()
    job_directives_skip: tuple[str, ...] = ()
    job_script_prologue: tuple[str, ...] = ()
    strict_prologue: bool = True
    worker_dashboard: bool = False
    lean_start: bool = True
    job_script_epilogue: tuple[str, ...] = ()
    log_directory: str | None = None
    shebang: str = "#!/usr/bin/env bash"
    python: str = "python3"
    worker_command: str = "distributed.cli.dask_worker"
    worker_extra_args: tuple[str, ...] = ()
    nanny: bool = True
    death_timeout: float | None = 60
    local_directory: str | None = None
    interface: str | None = None
    protocol: str | None = None
    gpus: int = 0
    worker_resources: tuple[tuple[str, float], ...] = ()
    container: str | None = None
    container_runtime: str = "apptainer"
    cuda_worker: bool = False
    # what only one system reads (SGE's parallel_environment, the MPI script's task count)
    system_options: dict = field(default_factory=dict)

    @classmethod
    def create(cls, *, cores: Any, memory: Any, processes: Any = None, walltime: Any = None,
               job_cpu: Any = None, job_mem: Any = None, **kwargs: Any) -> "JobSpec":
        """Validate raw user values (keywords or config) and build a JobSpec."""
        if cores is None or memory is None:
            raise ValueError(
                "cores and memory are required: write e.g. cores=8, memory=\"16GB\" "
                "(or set jobqueue.<system>.cores and .memory in the Dask config)"
            )
        cores_n = _int_at_least("cores", cores, 1, "8")
        memory_b = parse_memory(memory)
        gpus_n = 0 if kwargs.get("gpus") in (None, "") else _int_at_least("gpus", kwargs["gpus"], 0, "2")
        kwargs["gpus"] = gpus_n
        processes_n = _processes(cores_n, processes, gpus_n)
        kwargs["worker_resources"] = _resources(kwargs.get("worker_resources"))
        if kwargs.get("cuda_worker") and (not gpus_n or processes_n != gpus_n or (kwargs.get("job_nodes") or 1) != 1):
            raise _bad("cuda_worker", True, "True, gpus=2", "dask-cuda starts one worker per GPU of a one-node job: "
                       "give gpus, leave processes out (or equal to gpus) and job_nodes at 1")
        if kwargs.get("container_runtime") is not None and kwargs["container_runtime"] not in CONTAINER_RUNTIMES:
            raise _bad("container_runtime", kwargs["container_runtime"], '"apptainer"',
                       f"one of {', '.join(CONTAINER_RUNTIMES)}")
        wall = None if walltime in (None, "") else parse_walltime(walltime)
        job_cpu_n = None if job_cpu is None else _int_at_least("job_cpu", job_cpu, 1, "8")
        if kwargs.get("job_nodes") is not None:
            kwargs["job_nodes"] = _int_at_least("job_nodes", kwargs["job_nodes"], 1, "4")
        if job_mem is not None:
            job_mem = check_token("job_mem", job_mem, '"16G"')
        for key in ("job_name", "queue", "account", "project"):
            if kwargs.get(key) is not None:
                kwargs[key] = check_token(key, kwargs[key], '"dask-worker"' if key == "job_name" else '"debug"')
        for key in ("resource_spec", "log_directory", "local_directory", "interface", "protocol",
                    "python", "worker_command", "container"):
            if kwargs.get(key) is not None:
                kwargs[key] = check_line_value(key, kwargs[key])
        shebang = kwargs.get("shebang")
        if shebang is not None:
            check_line_value("shebang", shebang)
            if not shebang.startswith("#!"):
                raise _bad("shebang", shebang, '"#!/usr/bin/env bash"', "must start with #!")
        for key in ("job_extra_directives", "job_directives_skip", "job_script_prologue",
                    "job_script_epilogue", "worker_extra_args"):
            if key in kwargs:
                kwargs[key] = _as_tuple(key, kwargs[key])
        if kwargs.get("death_timeout") is not None:
            try:
                kwargs["death_timeout"] = float(kwargs["death_timeout"])
            except (TypeError, ValueError):
                raise _bad("death_timeout", kwargs["death_timeout"], "60", "seconds, a number") from None
        kwargs = {k: v for k, v in kwargs.items() if v is not None or k in ("job_name",)}
        return cls(cores=cores_n, memory=memory_b, processes=processes_n, walltime=wall,
                   job_cpu=job_cpu_n, job_mem=job_mem, **kwargs)

    @property
    def resources_per_worker(self) -> dict[str, float]:
        """The Dask worker resources each worker offers: ``worker_resources``, and ``GPU`` (its
        share of the job's GPUs) where the job has GPUs and no GPU resource was given."""
        out = dict(self.worker_resources)
        if self.gpus and "GPU" not in out:
            out["GPU"] = self.gpus // self.processes
        return out

    @property
    def workers_per_job(self) -> int:
        """Dask workers one job brings: processes on each of its nodes."""
        return self.processes * self.job_nodes

    @property
    def threads_per_process(self) -> int:
        return self.cores // self.processes

    @property
    def memory_per_process(self) -> int:
        return self.memory // self.processes

    @property
    def walltime_hms(self) -> str | None:
        return None if self.walltime is None else format_walltime(self.walltime)
