"""The keyword schema: every constructor keyword, its config key, its meaning and default.

One table serves every use: validating a cluster's keywords, reading the config
fallback ``jobqueue.<system>.<key>``, the numpydoc docstrings of the cluster classes,
their signatures (``help(SLURMCluster)``, Jupyter's ``?``) and the options of
``jobqueue script``. Keywords shared by every system are here; each batch system module
declares its own (``BatchSystem.keywords``). No dask imports at module level.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .spec import JobSpec, check_line_value, check_token

if TYPE_CHECKING:
    from .systems.base import BatchSystem


class UnknownKeywordError(TypeError, ValueError):
    """A keyword the cluster does not know (a TypeError, and a ValueError as in dask-jobqueue)."""


@dataclass(frozen=True)
class Keyword:
    """One constructor keyword.

    ``config`` is its key under ``jobqueue.<system>`` (None: keyword only); ``type`` is
    how ``jobqueue script`` reads it (``list``: a repeatable option, ``bool``: a
    --x/--no-x pair); ``cli`` is the option's name when it differs from the keyword's
    (None: not a command-line option); ``short`` an extra short flag."""

    name: str
    config: str | None
    help: str
    type: type = str
    default: str = "None"
    cli: str | None = ""
    short: str | None = None

    @property
    def option(self) -> str | None:
        if self.cli is None:
            return None
        return self.cli or "--" + self.name.replace("_", "-")


# the job keywords of every system, in the order the docstrings list them
JOB_KEYWORDS: tuple[Keyword, ...] = (
    Keyword("cores", "cores", "Cores per job (per node with job_nodes).", int, "none, required"),
    Keyword("memory", "memory", 'Memory per job, e.g. "16GB" (per node with job_nodes).', default="none, required"),
    Keyword("processes", "processes", "Dask worker processes per job; cores are shared among them.", int,
            "about sqrt(cores)"),
    Keyword("walltime", "walltime", 'Time limit of each job, e.g. "02:00:00"; workers retire before it ends.'),
    Keyword("job_name", "name", "Name of each job."),
    Keyword("job_extra_directives", "job-extra-directives",
            'Extra directive lines, e.g. ["--comment=x"] (the prefix is added).', list, "[]",
            cli="--job-extra-directive"),
    Keyword("job_directives_skip", "job-directives-skip",
            'Directive keys to leave out, e.g. ["--mem"] (whole keys, not substrings).', list, "[]",
            cli="--job-directive-skip"),
    Keyword("job_script_prologue", "job-script-prologue",
            "Shell lines run before the workers start (module load, conda activate).", list, "[]",
            cli="--prologue"),
    Keyword("job_script_epilogue", "job-script-epilogue", "Shell lines run after the workers end.", list, "[]",
            cli="--epilogue"),
    Keyword("strict_prologue", "strict-prologue", "A failing prologue line fails the job (reported with its "
            "output); False for sites whose prologue fails harmlessly.", bool, "True"),
    Keyword("worker_dashboard", "worker-dashboard", "Each worker serves its own Bokeh dashboard (costs each "
            "worker ~0.5 s of CPU at start; compute nodes' ports are rarely reachable; the scheduler's dashboard "
            "shows every worker).", bool, "False"),
    Keyword("lean_start", "lean-start", "Workers start lean (no garbage collection during their imports, libyaml for "
            "dask's config: jobqueue/runtime/boot) and idle quietly (200 ms event-loop tick); False: dask's "
            "defaults.", bool, "True"),
    Keyword("log_directory", "log-directory", "Directory for the jobs' stdout and stderr.",
            default="a private directory under jobqueue.state-directory"),
    Keyword("worker_extra_args", "worker-extra-args", 'Extra arguments of `dask worker`, e.g. ["--lifetime 55m"].',
            list, "[]", cli="--worker-extra-arg"),
    Keyword("worker_command", "worker-command", "Module that starts the workers.", cli=None),
    Keyword("python", "python", "Python on the compute nodes.", default="this interpreter"),
    Keyword("local_directory", "local-directory", 'Worker scratch space, e.g. "$TMPDIR".'),
    Keyword("nanny", None, "Start each worker under a nanny (restarts, memory limits).", bool, "True"),
    Keyword("death_timeout", "death-timeout", "Seconds a worker waits for an unreachable scheduler.", float),
    Keyword("shebang", "shebang", "First line of the job script.", cli=None),
    Keyword("gpus", "gpus", "GPUs per job (per node with job_nodes); one worker process per GPU unless "
            "processes says otherwise, each seeing its own (CUDA_VISIBLE_DEVICES) and offering the resource GPU.",
            int, "0"),
    Keyword("worker_resources", "worker-resources", 'Dask resources each worker offers, e.g. {"BIGMEM": 1} '
            "(tasks ask with resources=...); GPU is added with gpus.", list, "{}", cli="--worker-resource"),
    Keyword("container", "container", 'Image the workers run in, e.g. "/images/dask.sif" (Python, distributed and '
            "jobqueue inside).", ),
    Keyword("container_runtime", "container-runtime", "apptainer, singularity, podman-hpc or shifter.",
            default='"apptainer"'),
    Keyword("cuda_worker", "cuda-worker", "Start the workers with dask-cuda's `dask cuda worker` (one per GPU, "
            "device memory limits and spilling); dask-cuda must be installed on the compute nodes.", bool, "False"),
)

# shared by several systems, each with the same meaning
QUEUE = Keyword("queue", "queue", "Queue to submit to (Slurm: partition).", short="-q")
ACCOUNT = Keyword("account", "account", "Account (project) charged for the jobs.", short="-A")
RESOURCE_SPEC = Keyword("resource_spec", "resource-spec", 'Resource request (-l value), e.g. "h_vmem=4G".')
JOB_CPU = Keyword("job_cpu", "job-cpu", "CPUs to request when different from cores.", int)

# what the cluster itself takes (not job keywords): documented, never in a JobSpec
CLUSTER_KEYWORDS: tuple[Keyword, ...] = (
    Keyword("n_workers", None, "Workers to start at once (as scale(n_workers)).", int, "0", cli=None),
    Keyword("interface", "interface", "Network interface of the scheduler and workers, e.g. ib0.",
            default="the address the hostname resolves to"),
    Keyword("protocol", None, 'Dask protocol, "tls://" or "tcp://".', default='"tls://"', cli=None),
    Keyword("security", None, "True: TLS with fresh per-cluster credentials; False: plain TCP "
            "(warns); or a distributed.security.Security.", default="True", cli=None),
    Keyword("scheduler_options", "scheduler-options", 'Options of the scheduler, e.g. {"dashboard_address": ":0"}.',
            default="{}", cli=None),
    Keyword("template", "template", "Path of a Jinja2 job-script template (may extend ours).", cli=""),
    Keyword("job_array", "job-array", "Submit the jobs of one scale() as one job array.", bool, "True", cli=None),
    Keyword("max_jobs", "max-jobs", "At most this many jobs queued or running; the rest wait their turn.",
            int, cli=None),
    Keyword("max_pending_jobs", "max-pending-jobs", "At most this many jobs pending in the queue.", int, cli=None),
    Keyword("max_start_failures", None, "Jobs in a row that end before their workers connect, then stop "
            "submitting.", int, "jobqueue.max-start-failures (3)", cli=None),
    Keyword("poll_interval", None, "How often one status command asks about every job.", default=
            "jobqueue.poll-interval (5s)", cli=None),
    Keyword("shared_temp_directory", "shared-temp-directory", "Shared directory for the workers' TLS "
            "credentials.", default="jobqueue.credentials-directory", cli=None),
    Keyword("pools", "pools", 'More kinds of job, by name: {"gpu": {"queue": "gpu", "gpus": 2}} (the cluster\'s '
            "keywords, then these); cluster.pools[name].scale/adapt.", default="{}", cli=None),
    Keyword("config_name", None, "Config section to read instead of the system's.", cli=None),
    Keyword("name", None, "Name of the cluster (and prefix of its worker names).", cli=None),
    Keyword("asynchronous", None, "Use the cluster from async code.", bool, "False", cli=None),
    Keyword("silence_logs", None, "Log level of the scheduler in this process.", default='"error"', cli=None),
    Keyword("loop", None, "Event loop to run on.", cli=None),
    Keyword("scheduler_cls", None, "Scheduler class.", default="distributed.Scheduler", cli=None),
    Keyword("job_cls", None, "Job class (a subclass of jobqueue.job.Job).", cli=None),
)

# deprecated keyword -> its replacement (dask-jobqueue 0.8 renames), every system
DEPRECATED: dict[str, str] = {
    "extra": "worker_extra_args", "job_extra": "job_extra_directives",
    "env_extra": "job_script_prologue", "header_skip": "job_directives_skip",
}


def job_keywords(system: type[BatchSystem]) -> tuple[Keyword, ...]:
    return JOB_KEYWORDS + tuple(system.keywords)


def deprecated(system: type[BatchSystem]) -> dict[str, str]:
    return {**DEPRECATED, **system.deprecated}


def check_keywords(cls_name: str, system: type[BatchSystem], given: dict[str, Any] | Iterable[str]) -> None:
    """Refuse keywords the class does not know, naming the closest known one (and, as
    dask-jobqueue does, echoing the job keywords given)."""
    job = {k.name for k in job_keywords(system)} | set(deprecated(system))
    known = job | {k.name for k in CLUSTER_KEYWORDS}
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            echo = f" The job keywords given to {cls_name}: job_kwargs={dict(given)!r}." if isinstance(given, dict) else ""
            raise UnknownKeywordError(f"{cls_name} got an unexpected keyword argument {key!r}{hint}{echo} "
                                      f"Known keywords: {', '.join(sorted(job))}")


def resolve(system: type[BatchSystem], given: dict, cfg: Callable[[str], Any]) -> dict:
    """Keyword, else config value, else the system's environment default, else None;
    deprecated aliases with a FutureWarning."""
    out: dict[str, Any] = {}
    for kw in job_keywords(system):
        value = given.get(kw.name)
        if value is None and kw.config is not None:
            value = cfg(kw.config)
        out[kw.name] = value
    for old, new in deprecated(system).items():
        value = given.get(old)
        if value is None:
            value = cfg(old.replace("_", "-"))
        if value is None:
            continue
        warnings.warn(f"{old} has been renamed to {new}; please use {new} (also in config files). "
                      f"{old} is used for now only where {new} is not set.", FutureWarning, stacklevel=5)
        if not out.get(new):
            out[new] = value
    for key, variable in system.keyword_env.items():
        if not out.get(key) and os.environ.get(variable):
            out[key] = os.environ[variable]  # e.g. PBS's account from $PBS_ACCOUNT, as dask-jobqueue
    if out.get("cuda_worker"):
        import importlib.util

        if importlib.util.find_spec("dask_cuda") is None:
            warnings.warn("cuda_worker=True: dask-cuda is not installed in this Python; the workers need it on the "
                          "compute nodes (pip install dask-cuda there, or use gpus= alone for plain workers pinned "
                          "to their GPUs)", UserWarning, stacklevel=5)
    defaults = {f.name: f.default for f in dataclasses.fields(JobSpec)}
    for flag in ("nanny", "strict_prologue", "worker_dashboard", "lean_start"):  # a null in the config
        if out.get(flag) is None:
            out[flag] = defaults[flag]
    return out


def check_cluster_keywords(cls_name: str, job_cls: type | None, **scheduler_keywords: Any) -> None:
    """A cluster needs a Job type; dashboard_address= and host= are scheduler options."""
    if job_cls is None:
        from .systems import REGISTRY, load

        raise ValueError(
            f"You need to specify a Job type: pass job_cls= (e.g. job_cls=jobqueue.core.SLURMJob) or set a "
            f"'job_cls' class variable in {cls_name}; or use one of the cluster classes: "
            f"{', '.join(load(s).cluster_name for s in REGISTRY)}")
    for key, value in scheduler_keywords.items():
        if value is not None:
            raise ValueError(f"pass {key!r} through 'scheduler_options': write "
                             f"{cls_name}(..., scheduler_options={{\"{key}\": \"{value}\"}})")


def name_hint(cls_name: str, name: str | None, given: dict, job_name: str | None) -> None:
    """name= names the cluster, not its batch jobs (dask-jobqueue users mix them up)."""
    if name is not None and "job_name" not in given and name != job_name:
        warnings.warn(f"{cls_name}(name={name!r}) names the cluster (and its workers {name}-0, {name}-1, ...); "
                      f"the batch jobs are still called {job_name!r} in the queue. Write "
                      f"job_name={name!r} to name the jobs too.", UserWarning, stacklevel=3)


_warned_config: set[tuple[str, str]] = set()


def check_config_section(system: type[BatchSystem], config_name: str) -> None:
    """Warn once about each key of ``jobqueue.<config_name>`` that no keyword reads (a typo
    like ``coers:`` in jobqueue.yaml would otherwise be ignored without a word)."""
    import dask

    from . import config

    section = dask.config.get(f"jobqueue.{config_name}", None)
    if not isinstance(section, dict):
        return
    known = set(config.defaults["jobqueue"].get(system.name, {})) | {old.replace("_", "-") for old in deprecated(system)}
    known |= {kw.config for kw in job_keywords(system) + CLUSTER_KEYWORDS if kw.config} | {"ncpus", "mem"}
    for key in section:
        if key in known or (config_name, key) in _warned_config:
            continue
        _warned_config.add((config_name, key))
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        warnings.warn(f"jobqueue.{config_name}.{key} in the Dask config is not a jobqueue setting and is ignored{hint} "
                      f"(see `python -c \"import dask, jobqueue; print(dask.config.get('jobqueue.{system.name}'))\"` "
                      "for the keys)", UserWarning, stacklevel=5)


def build_spec(cls_name: str, system: type[BatchSystem], config_name: str, interface: str | None = None,
               protocol: str | None = None, **job_kwargs: Any) -> JobSpec:
    """Validate job keywords (falling back to ``jobqueue.<config_name>.*``) into a JobSpec.
    Raises before anything is started or submitted."""
    from . import config

    check_keywords(cls_name, system, job_kwargs)
    check_config_section(system, config_name)

    def cfg(key: str) -> Any:
        return config.get(config_name, key)

    spec_kwargs = system.prepare(resolve(system, job_kwargs, cfg))
    cores, memory = spec_kwargs.get("cores"), spec_kwargs.get("memory")
    if cores is None or memory is None:
        cluster = cls_name[:-3] + "Cluster" if cls_name.endswith("Job") else cls_name
        raise ValueError(f"{cluster} needs cores and memory per job ({'memory' if cores else 'cores'} is missing): "
                         f"write e.g. cluster = {cluster}(cores={cores or 8}, memory={memory or '16GB'!r}), or set "
                         f"jobqueue.{config_name}.cores and .memory in the Dask config")
    spec_kwargs["interface"] = interface if interface is not None else cfg("interface")
    spec_kwargs["protocol"] = protocol
    if spec_kwargs.get("python") is None:  # inside a container: the image's own Python
        spec_kwargs["python"] = "python3" if spec_kwargs.get("container") else sys.executable
    if spec_kwargs.get("log_directory"):
        spec_kwargs["log_directory"] = os.path.abspath(os.path.expanduser(spec_kwargs["log_directory"]))
    # system keywords JobSpec has no field for (e.g. SGE's parallel_environment)
    fields = {f.name for f in dataclasses.fields(JobSpec)}
    options = {key: spec_kwargs.pop(key) for key in [k for k in spec_kwargs if k not in fields]}
    spec_kwargs["system_options"] = {key: check_line_value(key, str(value)) if key in system.line_options
                                     else check_token(key, value, '"smp"')
                                     for key, value in options.items() if value is not None}
    return JobSpec.create(**spec_kwargs)


def queue_limit(key: str, value: Any) -> int | None:
    """max_jobs / max_pending_jobs: None (no limit) or a whole number of jobs, at least 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not str(value).isdigit() or int(value) < 1:
        raise ValueError(f"invalid {key}={value!r} (a whole number of jobs, at least 1); "
                         f"write something like {key}=50, or leave it out for no limit")
    return int(value)


# --- what users read ------------------------------------------------------------------
def _type_name(kw: Keyword) -> str:
    return {int: "int", float: "float", bool: "bool", list: "list of str"}.get(kw.type, "str")


def _default(kw: Keyword, config_name: str) -> str:
    from . import config

    if kw.config is not None:
        section = config.defaults.get("jobqueue", {}).get(config_name, {})
        value = section.get(kw.config)
        if value not in (None, [], {}):
            return repr(value)
    return kw.default


def docstring(summary: str, system: type[BatchSystem], example: str) -> str:
    """A numpydoc docstring listing every keyword with its meaning, default and config key."""
    lines = [summary, "", "Parameters", "----------"]
    for kw in job_keywords(system) + CLUSTER_KEYWORDS:
        where = f" Config ``jobqueue.{system.name}.{kw.config}``." if kw.config else ""
        lines += [f"{kw.name} : {_type_name(kw)}", f"    {kw.help} Default: {_default(kw, system.name)}.{where}"]
    if deprecated(system):
        lines += ["", "Deprecated aliases (work with a FutureWarning): "
                  + ", ".join(f"``{old}`` -> ``{new}``" for old, new in deprecated(system).items()) + "."]
    lines += ["", "Examples", "--------", example]
    return "\n".join(lines)


def signature(system: type[BatchSystem], init: Callable) -> inspect.Signature:
    """The constructor's signature with every job keyword named (instead of ``**job_kwargs``);
    ``init`` gives the cluster keywords' defaults."""
    base = inspect.signature(init).parameters
    params = [inspect.Parameter(kw.name, inspect.Parameter.KEYWORD_ONLY,
                                default=base[kw.name].default if kw.name in base else None)
              for kw in CLUSTER_KEYWORDS + job_keywords(system)]
    n_workers = params.pop(0).replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return inspect.Signature([n_workers, *params])
