"""Render job scripts from Jinja2 templates.

Directive values are validated by :mod:`jobqueue.spec`; every word of the worker
command is shell-quoted here. Quoting keeps ``$NAME`` and ``${NAME}`` (so
``local_directory="$TMPDIR"`` still works on the compute node, as in dask-jobqueue)
but escapes every other ``$``, backtick, quote and backslash: a value such as
``x$(touch /tmp/p)`` is printed, never run.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Iterable, Sequence

import jinja2
from dask.utils import format_bytes, parse_timedelta

from .spec import JobSpec, check_line_value, retirement
from .systems.base import BatchSystem

_PLAIN = re.compile(r"^[A-Za-z0-9_./:=@%+,-]+$")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VAR = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})")
PLACEHOLDER_ADDRESS = "tcp://<insert-scheduler-address-here>:8786"
RUNTIME_PRELOAD = "jobqueue.runtime.worker"
MPI_RUNTIME = "jobqueue.runtime.mpi"
WORKER_TICK = "200ms"  # the workers' event-loop tick while busy (jobqueue/runtime/idle.py slows it when idle)
DASK_TICK = 0.02  # dask's own default, in seconds: a tick the user configured is kept
LEAN_START_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runtime", "boot")  # its sitecustomize


def shell_word(value: object) -> str:
    """Quote one word for bash, leaving only $VAR / ${VAR} expansions live."""
    text = check_line_value("value", str(value))
    if _PLAIN.match(text):
        return text
    out, i = [], 0
    while i < len(text):
        m = _VAR.match(text, i)
        if m:
            out.append(m.group())
            i = m.end()
            continue
        ch = text[i]
        out.append("\\" + ch if ch in '\\"`$' else ch)
        i += 1
    return '"' + "".join(out) + '"'


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def worker_argv(spec: JobSpec, scheduler_address: str, worker_name: str,
                extra_args: Sequence[str] = ()) -> list[str]:
    """The worker command of one job, as words (dask-jobqueue 0.9.0's order).

    A job spanning several nodes (``job_nodes``) starts one task per worker through the
    system's parallel launcher (srun), each in jobqueue's workers-only MPI mode, which
    names its worker ``<name>-<rank>`` and runs ``dask worker`` with the same options."""
    multi = spec.job_nodes > 1
    if spec.cuda_worker:
        return cuda_worker_argv(spec, scheduler_address, worker_name, extra_args)
    if multi:
        if spec.worker_command != "distributed.cli.dask_worker":
            raise ValueError(f"invalid worker_command={spec.worker_command!r} with job_nodes={spec.job_nodes} "
                             "(multi-node jobs start dask workers); write worker_command="
                             "\"distributed.cli.dask_worker\" or job_nodes=1")
        argv = [spec.python, "-m", MPI_RUNTIME, "--no-scheduler", "--scheduler-address", scheduler_address,
                "--name", worker_name, "--",
                "--nthreads", str(spec.threads_per_process),
                "--memory-limit", format_bytes(spec.memory_per_process).replace(" ", "")]
    else:
        argv = [spec.python, "-m", spec.worker_command, scheduler_address,
                "--name", worker_name,
                "--nthreads", str(spec.threads_per_process),
                "--memory-limit", format_bytes(spec.memory_per_process).replace(" ", "")]
    if spec.worker_command == "distributed.cli.dask_worker":
        if spec.processes > 1 and not multi:
            argv += ["--nworkers", str(spec.processes)]
        argv.append("--nanny" if spec.nanny else "--no-nanny")
    if spec.death_timeout is not None:
        argv += ["--death-timeout", _number(spec.death_timeout)]
    if spec.worker_command == "distributed.cli.dask_worker":
        # graceful retirement before the walltime and on SIGTERM (jobqueue/runtime/worker.py)
        argv += ["--preload", RUNTIME_PRELOAD]
        if spec.nanny:
            argv += ["--preload-nanny", RUNTIME_PRELOAD]
        if not spec.worker_dashboard:
            argv.append("--no-dashboard")  # no Bokeh import per worker (worker_dashboard=True for it)
    return _worker_tail(spec, argv, extra_args)


def cuda_worker_argv(spec: JobSpec, scheduler_address: str, worker_name: str, extra_args: Sequence[str]) -> list[str]:
    """dask-cuda's worker command: it starts one worker (with its nanny) per GPU the job has and
    gives each its own CUDA_VISIBLE_DEVICES, so jobqueue's preload only retires them."""
    argv = [spec.python, "-m", "dask", "cuda", "worker", scheduler_address, "--name", worker_name,
            "--nthreads", str(spec.threads_per_process),
            "--memory-limit", format_bytes(spec.memory_per_process).replace(" ", ""), "--preload", RUNTIME_PRELOAD]
    if spec.death_timeout is not None:
        argv += ["--death-timeout", _number(spec.death_timeout)]
    return _worker_tail(spec, argv, extra_args)


def _worker_tail(spec: JobSpec, argv: list[str], extra_args: Sequence[str]) -> list[str]:
    """What every worker command ends with: the local directory, worker_extra_args, interface,
    protocol, the workers' resources (unless worker_extra_args give them) and the cluster's own
    arguments; the whole run inside the container where there is one."""
    if spec.local_directory is not None:
        argv += ["--local-directory", spec.local_directory]
    for arg in spec.worker_extra_args:
        # dask-jobqueue joined these with spaces, so users wrote "--lifetime 55m": split
        # on whitespace only; quotes or $(...) in them stay literal text
        argv += arg.split()
    if spec.interface is not None:
        argv += ["--interface", spec.interface]
    if spec.protocol is not None:
        argv += ["--protocol", spec.protocol]
    resources = spec.resources_per_worker
    if resources and not any(a.startswith("--resources") for a in argv):  # worker_extra_args win
        argv += ["--resources", ",".join(f"{k}={_number(v)}" for k, v in resources.items())]
    argv += list(extra_args)
    return container_argv(spec, extra_args) + argv if spec.container else argv


def container_argv(spec: JobSpec, extra_args: Sequence[str] = ()) -> list[str]:
    """The words that run the worker command inside ``spec.container``: the runtime's exec with
    the directories the workers need bound (their TLS credentials, the log directory, the
    local directory) and its GPU flag when the job has GPUs."""
    binds: list[str] = []
    args = list(extra_args)
    for i, word in enumerate(args[:-1]):
        if word.startswith("--tls-"):
            binds.append(os.path.dirname(args[i + 1]))
    binds += [d for d in (spec.log_directory, spec.local_directory) if d]
    binds = list(dict.fromkeys(binds))  # in order, once each
    runtime, image = spec.container_runtime, spec.container
    if runtime in ("apptainer", "singularity"):
        return [runtime, "exec", *(["--bind", ",".join(binds)] if binds else []), *(["--nv"] if spec.gpus else []),
                image]
    if runtime == "podman-hpc":
        volumes = [w for d in binds for w in ("-v", f"{d}:{d}")]
        return ["podman-hpc", "run", "--rm", "--net", "host", "--env-host", *volumes,
                *(["--gpu"] if spec.gpus else []), image]
    # shifter
    return ["shifter", f"--image={image}", *[f"--volume={d}:{d}" for d in binds],
            *(["--module=gpu"] if spec.gpus else [])]


def fork_start_environment(spec: JobSpec) -> list[str]:
    """Shell lines that let each nanny fork its worker from its own, already imported process.

    A forked worker costs no interpreter start and no imports, so a job with k workers pays
    about one Python start-up instead of k + 1 (dask's default, spawn) -- as fast as a bare
    ``--no-nanny`` worker, with nanny semantics intact. What a spawned worker would read at
    start-up (distributed.nanny.pre-spawn-environ: PYTHONHASHSEED, so every worker hashes
    alike; MALLOC_TRIM_THRESHOLD_; OMP/MKL/OpenBLAS threads, read when numpy loads) is then
    exported before Python starts. A value already in the job's environment wins, and a
    multiprocessing-method the user configured (other than dask's default) is kept."""
    if not spec.nanny or spec.worker_command != "distributed.cli.dask_worker":
        return []
    import dask
    import distributed  # noqa: F401  (registers the distributed.* config defaults read here)

    method = dask.config.get("distributed.worker.multiprocessing-method", "spawn")
    env = {"DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD": "fork" if method == "spawn" else method}
    pre = {str(k): v for k, v in (dask.config.get("distributed.nanny.pre-spawn-environ", None) or {}).items()
           if v is not None}
    if str(pre.get("PYTHONHASHSEED", "0")) == "0":
        pre["PYTHONHASHSEED"] = 6640  # what distributed's nanny gives its workers
    env.update(pre)
    return [_export_unless_set(name, value) for name, value in env.items() if _NAME.fullmatch(name)]


def _export_unless_set(name: str, value: object) -> str:
    """A shell line exporting name=value unless the job's environment (or prologue) set it."""
    return f'[ -n "${{{name}+x}}" ] || export {name}={shell_word(value)}'


def lean_start_environment(spec: JobSpec) -> list[str]:
    """Shell lines that give the job's ``dask worker`` the lean start of jobqueue/runtime/boot
    (no garbage collection during its imports, libyaml for dask's config), which
    jobqueue's preload ends once the worker command has imported what it needs. Not for
    containers (their Python need not see this directory) nor other worker commands.

    And a quieter idle: JOBQUEUE_QUIET_IDLE=1 has jobqueue's preload apply
    jobqueue/runtime/idle.py (profiler, 100 ms memory checks and ticks at dask's pace only
    while busy), and dask's event-loop tick (distributed.admin.tick.interval, which only looks
    for a blocked loop) is 200 ms instead of 20 ms while busy, unless the user configured one."""
    if not spec.lean_start or spec.worker_command != "distributed.cli.dask_worker" or spec.container \
            or spec.cuda_worker or spec.job_nodes > 1:
        return []
    lines = [f"export JOBQUEUE_LEAN_START=1 JOBQUEUE_QUIET_IDLE=1 PYTHONPATH={shell_word(LEAN_START_DIR)}"
             "${PYTHONPATH:+:$PYTHONPATH}"]
    import dask
    import distributed  # noqa: F401  (registers the distributed.* config defaults read here)

    if parse_timedelta(dask.config.get("distributed.admin.tick.interval", "20ms")) == DASK_TICK:
        lines.append(_export_unless_set("DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL", WORKER_TICK))
    return lines


@functools.lru_cache(maxsize=32)
def _environment(user_dir: str | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if user_dir:
        loaders.append(jinja2.FileSystemLoader(user_dir))
    loaders.append(jinja2.PackageLoader("jobqueue", "templates"))
    return jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                              autoescape=False)


def load_template(system: BatchSystem, template: str | None = None) -> jinja2.Template:
    """The system's template, or the user's file ``template`` (which may extend ours)."""
    if template is None:
        return _environment(None).get_template(system.template)
    path = os.path.abspath(os.path.expanduser(template))
    if not os.path.isfile(path):
        raise ValueError(f"invalid template={template!r} (no such file); write the path of a Jinja2 "
                         f"file, e.g. template=\"my-job.sh.j2\" containing {{% extends \"{system.template}\" %}}")
    return _environment(os.path.dirname(path)).get_template(os.path.basename(path))


def render_mpi(spec: JobSpec, system: BatchSystem, command: Sequence[str], template: str | None = None) -> str:
    """A batch script that runs ``command`` (``python analysis.py ...``) with the mpirun
    bootstrap: scheduler on rank 0, the script as the client on rank 1, workers on the
    other ranks, all inside one allocation. The script's exit code is the job's."""
    import dataclasses

    if not command:
        raise ValueError("no command: write e.g. jobqueue script slurm --mpi ... -- python analysis.py")
    words = list(command)
    interpreter = spec.python
    if os.path.basename(words[0]).startswith("python"):
        first = words.pop(0)
        if os.sep in first:
            interpreter = first  # an explicit interpreter path; jobqueue must be installed there
    if not words or not words[0].endswith(".py"):
        raise ValueError(f"invalid command {' '.join(command)!r}: the bootstrap runs a Python script; "
                         "write e.g. -- python analysis.py [arguments]")
    launcher = system.mpi_launcher(spec)
    workers = spec.workers_per_job
    tasks = workers + 2  # + the scheduler and the client
    spec = dataclasses.replace(spec, system_options={**spec.system_options, "mpi_tasks": tasks},
                               python=interpreter)
    argv = [interpreter, "-m", MPI_RUNTIME, "--nthreads", str(spec.threads_per_process),
            "--memory-limit", format_bytes(spec.memory_per_process).replace(" ", "")]
    # workers run without a nanny, as dask-mpi's: the launcher owns the processes
    if spec.interface is not None:
        argv += ["--interface", spec.interface]
    if spec.local_directory is not None:
        argv += ["--local-directory", spec.local_directory]
    argv += ["--script", *words]
    return _render(spec, system, launcher + argv, argv, template or "mpi.sh.j2")


def render_head(spec: JobSpec, system: BatchSystem, directory: str, template: str | None = None) -> str:
    """The batch script of a named cluster's scheduler job (`jobqueue up`): it runs the head
    (``python -m jobqueue.head DIRECTORY``: scheduler and cluster manager), with the system's
    directives and the user's prologue, and outlives SIGTERM so the head can cancel its workers."""
    argv = [spec.python, "-m", "jobqueue.head", directory]
    if template is None and system.template.endswith(".sh.j2"):
        template = "head.sh.j2"
    return _render(spec, system, argv, argv, template)


def render(spec: JobSpec, system: BatchSystem, *, scheduler_address: str = PLACEHOLDER_ADDRESS,
           worker_name: str = "dummy-name", template: str | None = None,
           extra_worker_args: Iterable[str] = (), array_names: Sequence[str] = ()) -> str:
    """The complete job script for one job of ``spec`` on ``system``, or with
    ``array_names`` for a job array whose element i runs the worker named array_names[i]."""
    if array_names:
        worker_name = "$JOBQUEUE_WORKER_NAME"
        for name in array_names:
            if not re.fullmatch(r"[\w.+-]+", str(name)):
                raise ValueError(f"invalid worker name {name!r} for a job array; use letters, digits, _ . + -")
    argv = worker_argv(spec, scheduler_address, worker_name, list(extra_worker_args))
    return _render(spec, system, system.parallel_launcher(spec) + argv, argv, template, list(array_names))


def _render(spec: JobSpec, system: BatchSystem, command: list[str], argv: list[str], template: str | None,
            array_names: list[str] | None = None) -> str:
    margin, stagger = retirement(spec.walltime) if spec.walltime else (0, 0)
    context = {
        "shebang": spec.shebang,
        "retire_margin": margin,
        "retire_stagger": stagger,
        "retire_signals": ",".join(system.warning_signals),
        "directives": system.array_header(spec, len(array_names)) if array_names else system.header(spec),
        "array_names": array_names or [],
        "array_index_env": system.array_index_env,
        "array_first_index": system.array_first_index,
        "fork_environment": fork_start_environment(spec),
        "lean_environment": lean_start_environment(spec),
        "prologue": list(spec.job_script_prologue),
        "epilogue": list(spec.job_script_epilogue),
        "worker_argv": argv,
        "worker_command": " ".join(shell_word(a) for a in command),
        "system_template": system.template,
        "job_name": spec.job_name,
        "spec": spec,
        "system": system.name,
    }
    context = system.script_context(context)
    try:
        if template in ("mpi.sh.j2", "head.sh.j2"):
            return _environment(None).get_template(template).render(context)
        return load_template(system, template).render(context)
    except jinja2.TemplateError as exc:
        where = f" in {template}" if template else ""
        raise ValueError(f"job script template error{where}: {exc}") from exc
