"""The `jobqueue` command: print job scripts, run a demo cluster, clean up, run the MPI bootstrap.

The systems it offers and the options of `jobqueue script` come from the batch-system
registry and its keyword tables (jobqueue.keywords), so a new system or keyword appears
here without an edit.
"""

from __future__ import annotations

import sys
import time

if __name__ == "__main__" and not __package__:  # `python jobqueue/cli.py ...`: run it as jobqueue.cli
    import os
    import runpy

    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runpy.run_module("jobqueue.cli", run_name="__main__", alter_sys=True)
    raise SystemExit(0)

import click

from .keywords import CLUSTER_KEYWORDS, JOB_KEYWORDS, Keyword
from .systems import REGISTRY, all_systems


def _cluster_class(system: str):
    from .cluster import CLUSTER_CLASSES

    return CLUSTER_CLASSES[system]


def _keyword_options(command):
    """One option per keyword of any system (repeatable for lists, --x/--no-x for flags);
    a keyword only some systems have says which in its help."""
    systems = all_systems()
    batch = [cls for name, cls in systems.items() if name != "local"]
    seen: dict[str, tuple[Keyword, list[str]]] = {}
    for kw in JOB_KEYWORDS + tuple(kw for cls in systems.values() for kw in cls.keywords) + CLUSTER_KEYWORDS:
        if kw.option is not None and kw.name not in seen:
            owners = [cls.display_name for cls in batch if kw in cls.keywords]
            seen[kw.name] = (kw, owners if kw not in JOB_KEYWORDS + CLUSTER_KEYWORDS else [])
    for kw, owners in reversed(list(seen.values())):
        help_text = (", ".join(owners) + ": " if owners and len(owners) < len(batch) else "") + kw.help
        flags = [kw.option] + ([kw.short] if kw.short else [])
        if kw.type is bool:
            command = click.option(f"{kw.option}/--no-{kw.option[2:]}", kw.name, default=None, help=help_text)(command)
        elif kw.type is list:
            command = click.option(*flags, kw.name, multiple=True, help=help_text + " (repeatable)")(command)
        else:
            command = click.option(*flags, kw.name, type=kw.type, help=help_text)(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="jobqueue")
def main() -> None:
    """Deploy Dask clusters on HPC batch systems."""


@main.command()
@click.argument("system", type=click.Choice(list(REGISTRY)))
@_keyword_options
@click.option("--scheduler-address", default=None,
              help="Address the workers connect to (default: a placeholder).")
@click.option("--pool", "pool", default=None,
              help="Print the job script of this pool of the config's jobqueue.<system>.pools (its keywords win).")
@click.option("--mpi", is_flag=True, default=False,
              help="Print a batch script that runs COMMAND (-- python analysis.py) with scheduler, client "
                   "and workers inside one allocation (the mpirun bootstrap).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def script(system: str, scheduler_address: str | None, template: str | None, interface: str | None, mpi: bool,
           command: tuple, pool: str | None, **options) -> None:
    """Print the job script SYSTEM would run for one job, e.g.

        jobqueue script slurm --cores 4 --memory 8GB --walltime 01:00:00

        jobqueue script pbs --cores 4 --memory 8GB --account proj

    or, with --mpi, a batch script to submit from the login node that runs your
    analysis with its own Dask cluster inside the allocation:

        jobqueue script slurm --mpi --cores 2 --memory 4GB --processes 2 -- python analysis.py
    """
    from .scripts import PLACEHOLDER_ADDRESS, render, render_mpi

    if command and not mpi:
        raise click.UsageError(f"unexpected arguments {' '.join(command)!r}; a command after -- needs --mpi")

    cls = _cluster_class(system)
    kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()
              if v is not None and v != ()}
    if pool is not None:
        from . import config

        pools = config.get(cls.config_name, "pools") or {}
        if pool not in pools:
            raise click.UsageError(f"no pool {pool!r} in jobqueue.{cls.config_name}.pools (pools there: "
                                   f"{', '.join(pools) or 'none'})")
        from .pools import pool_keywords

        kwargs = pool_keywords(kwargs, pools[pool])
    try:
        spec = cls.build_spec(interface=interface, **kwargs)
        if template is None:
            from . import config

            template = config.get(cls.config_name, "template")
        if mpi:
            text = render_mpi(spec, cls.system_cls(), command, template=template)
        else:
            text = render(spec, cls.system_cls(), scheduler_address=scheduler_address or PLACEHOLDER_ADDRESS,
                          template=template)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(text, nl=False)


@main.command()
@click.option("--system", type=click.Choice(["auto", *REGISTRY]), default="auto",
              show_default=True, help="Batch system; auto = the one found on PATH, else local.")
@click.option("--jobs", type=int, default=2, show_default=True, help="Jobs to start.")
@click.option("--timeout", type=float, default=120, show_default=True,
              help="Seconds to wait for the workers.")
def demo(system: str, jobs: int, timeout: float) -> None:
    """Start a small cluster, compute on it, clean up, and say what happened."""
    from distributed import Client

    from .systems import detect_system

    if system == "auto":
        system = detect_system()
    cls = _cluster_class(system)
    click.echo(f"jobqueue demo: {jobs} job(s) of 1 core / 1 GB on the {system} batch system "
               f"({cls.__name__})")
    t0 = time.monotonic()
    with cls(cores=1, memory="1GB", processes=1, walltime="00:10:00",
             scheduler_options={"dashboard_address": ":0"}) as cluster:
        click.echo(f"scheduler listening at {cluster.scheduler_address}")
        cluster.scale(jobs=jobs)
        with Client(cluster) as client:
            try:
                client.wait_for_workers(jobs, timeout=timeout)
            except Exception as exc:
                click.echo(f"error: the workers did not start: {exc}", err=True)
                sys.exit(1)
            t_ready = time.monotonic() - t0
            ids = " ".join(cluster.job_ids)
            click.echo(f"{jobs} worker(s) connected after {t_ready:.1f} s (job ids: {ids})")
            futures = client.map(_slow_square, range(40))
            _progress(futures)
            total = client.submit(sum, futures).result()
            click.echo(f"sum of squares of 0..39 computed on the cluster: {total} "
                       f"(expected {sum(i * i for i in range(40))})")
            workers = {w["name"] for w in client.scheduler_info()["workers"].values()}
    submitted = list(cluster.tracker.jobs)
    from .detached import wait_gone

    left = wait_gone(cluster.batch_system, submitted, timeout=30, interval=0.25)
    click.echo(f"cluster closed after {time.monotonic() - t0:.1f} s: {len(submitted)} job(s) submitted, "
               f"workers used: {', '.join(sorted(workers))}; "
               + (f"{system} lists none of them as queued or running any more." if not left
                  else f"jobs still queued or running: {' '.join(left)}"))
    if total != sum(i * i for i in range(40)) or left:
        sys.exit(1)


@main.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be cancelled.")
def cleanup(dry_run: bool) -> None:
    """Cancel the jobs of clusters whose owning process died without closing them.

    Every cluster keeps an owner-only journal of its live job ids under
    ~/.jobqueue/journals (config jobqueue.state-directory); a watchdog process usually
    cancels them within seconds of the owner's death. This catches what it could not
    (e.g. the login node rebooted). A journal is removed only once the batch system
    confirmed the cancel; otherwise it stays and this exits 1, to be run again.
    """
    import os

    from .files import journals
    from .watchdog import cancel_intents, cancel_jobs, owner_gone, read

    stale = failed = 0
    for path in journals():
        data = read(path)
        if data is None or not (data.get("closed") or owner_gone(data) or _head_ended(data)):
            continue
        stale += 1
        why = (f"owner {data['owner_pid']} is gone" if owner_gone(data) else
               f"its scheduler job {data['named'].get('head_job_id')} ended" if _head_ended(data) else
               "closed without a confirmed cancel")
        ids = " ".join(map(str, data.get("job_ids", []))) or "none"
        if dry_run:
            click.echo(f"{os.path.basename(path)}: {why}; would cancel {data.get('system')} jobs: {ids}")
            continue
        ok, line = cancel_jobs(data)
        done, by_name = cancel_intents(data)
        ok = ok and done
        click.echo(f"{os.path.basename(path)}: {why}; {line}" + (f"; by name: {by_name}" if by_name else "")
                   + ("" if ok else " (journal kept: run again)"))
        if ok:
            os.unlink(path)
        failed += not ok
    if not stale:
        click.echo("no stale journals: every recorded cluster's owner is alive")
    if failed:
        sys.exit(1)


def _head_ended(data: dict) -> bool:
    """A named cluster's journal written in its scheduler job on another host: has that job ended?"""
    import socket

    named = data.get("named") or {}
    if not named.get("head_job_id") or data.get("owner_host") in (None, socket.gethostname()):
        return False
    from .detached import _ended, head_state

    return _ended(head_state({"system": named["system"], "head_job_id": named["head_job_id"]})[0])


@main.command(name="list")
def list_clusters() -> None:
    """Your clusters: the named ones (`jobqueue up`: scheduler job, workers, jobs, walltime left),
    then those running in a process of yours (their jobs and core-hours held, and busy)."""
    import os

    from .files import journals
    from .watchdog import owner_gone, read

    from .detached import list_named

    named = list_named()
    if named:
        _table(("name", "system", "scheduler job", "state", "workers", "walltime left", "jobs"),
               [(r["name"], r["system"], r["job_id"], r["state"], r["workers"], r["left"], r["jobs"]) for r in named])
    rows = []
    for path in journals():
        data = read(path)
        if data is None or data.get("closed") or owner_gone(data) or data.get("named"):
            continue
        usage = list((data.get("usage") or {}).values())
        held = sum(p.get("core_hours_held", 0) for p in usage)
        busy = sum(p.get("core_hours_busy", 0) for p in usage)
        rows.append((os.path.basename(path)[:-5], str(data.get("system", "?")), str(data.get("owner_pid")),
                     str(len(data.get("job_ids", []))), f"{held:.3f}", f"{busy:.3f}" + (f" ({100 * busy / held:.0f} %)"
                                                                                    if held else ""),
                     str(data.get("jobs_summary", "-"))))
    if not rows and not named:
        click.echo("no running clusters of yours (jobqueue list reads ~/.jobqueue)")
        return
    if rows:
        if named:
            click.echo()
        _table(("cluster", "system", "pid", "live jobs", "core-h held", "core-h busy", "jobs"), rows)


def _table(head: tuple, rows: list) -> None:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


@main.command()
@click.argument("system", type=click.Choice(list(REGISTRY)))
@click.option("--name", "cluster_name", required=True, help="The cluster's name, to attach to and stop it by.")
@click.option("--jobs", type=int, default=0, show_default=True, help="Worker jobs to start.")
@click.option("--scheduler-cores", type=int, default=1, show_default=True, help="Cores of the scheduler job.")
@click.option("--scheduler-memory", default="2GB", show_default=True, help="Memory of the scheduler job.")
@click.option("--scheduler-walltime", default=None,
              help="Time limit of the scheduler job, i.e. how long the cluster lives (default: --walltime).")
@click.option("--timeout", type=float, default=600, show_default=True,
              help="Seconds to wait for the scheduler job to start (0: as long as it takes).")
@_keyword_options
def up(system: str, cluster_name: str, jobs: int, scheduler_cores: int, scheduler_memory: str,
       scheduler_walltime: str | None, timeout: float, **options) -> None:
    """Start a named cluster whose scheduler runs in a batch job of its own, and return:

        jobqueue up slurm --name analysis --jobs 4 --cores 8 --memory 16GB --walltime 04:00:00

    Worker jobs are submitted, tracked and replaced from the scheduler job; nothing stays
    on the login node. Then, from any of your processes: jobqueue.connect("analysis")
    (a Client) or jobqueue.attach("analysis") (scale, adapt, jobs, logs, close);
    `jobqueue list`; `jobqueue down analysis`.
    """
    from .detached import up as start

    kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items() if v is not None and v != ()}
    try:
        cluster = start(system, cluster_name, jobs, scheduler_cores=scheduler_cores, scheduler_memory=scheduler_memory,
                        scheduler_walltime=scheduler_walltime, timeout=timeout, echo=click.echo, **kwargs)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except (RuntimeError, TimeoutError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    cluster.detach()
    click.echo(f"""cluster {cluster_name!r} is up. From any of your processes:
    import jobqueue
    client = jobqueue.connect("{cluster_name}")        # a dask Client
    cluster = jobqueue.attach("{cluster_name}")        # scale, adapt, jobs, logs, close
  jobqueue list                 # your clusters
  jobqueue down {cluster_name}{' ' * max(1, 15 - len(cluster_name))}# cancel its workers and its scheduler job
Dashboard from a laptop: see `jobqueue.attach("{cluster_name}").dashboard_link` and docs "Ways to run".""")


@main.command()
@click.argument("name")
@click.option("--timeout", type=float, default=60, show_default=True,
              help="Seconds to let the scheduler cancel its workers before its job is cancelled.")
def down(name: str, timeout: float) -> None:
    """Stop the named cluster NAME: cancel its worker jobs and its scheduler job, and check
    with the batch system that none is left."""
    from .detached import down as stop

    try:
        stop(name, timeout=timeout, echo=click.echo)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except RuntimeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@main.command()
def tls() -> None:
    """Make your TLS credentials (once) and write them to your dask config, so that dask
    processes that never import jobqueue connect to your clusters too, e.g. a notebook's
    plain ``Client(scheduler_file="scheduler.json")``."""
    from .security import use_user_tls, user_tls_directory

    written = use_user_tls(write_dask_config=True)
    click.echo(f"credentials: {user_tls_directory()} (owner-only; yours, for all your clusters)")
    if written:
        click.echo(f"dask config: {written} (read by every dask process you start)")
    else:
        click.echo("dask config: not written (jobqueue.tls-dask-config is false or the directory is not "
                   "writable); set DASK_DISTRIBUTED__COMM__TLS__CA_FILE, ..._CLIENT__CERT and ..._CLIENT__KEY")


def _progress(futures, width: int = 40) -> None:
    """A text progress bar from the futures' own state (no scheduler stream to leave open)."""
    total = len(futures)
    while True:
        done = sum(f.done() for f in futures)
        filled = width * done // total
        click.echo(f"\r[{'#' * filled}{' ' * (width - filled)}] {done}/{total} tasks", nl=False)
        if done == total:
            click.echo()
            return
        time.sleep(0.1)


def _slow_square(x: int) -> int:
    time.sleep(0.05)
    return x * x



@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                "help_option_names": []}, add_help_option=False)
@click.pass_context
def mpi(ctx: click.Context) -> None:
    """Dask across MPI ranks: scheduler on rank 0, workers on the rest (as dask-mpi).

        mpirun -n 8 jobqueue mpi --scheduler-file sched.json

        srun jobqueue mpi --no-scheduler --scheduler-file sched.json   # workers only

    Options: jobqueue mpi --help.
    """
    from .runtime.mpi import main as mpi_main

    raise SystemExit(mpi_main(list(ctx.args)))


if __name__ == "__main__":
    main()
