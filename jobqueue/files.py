"""Owner-only files and directories: the state directory and everything under it.

    <state-directory>/              jobqueue.state-directory, default ~/.jobqueue (0700)
        clusters/<cluster id>/      one cluster's run directory: logs, credentials
        journals/<cluster id>.json  its live jobs, for the watchdog and `jobqueue cleanup`
        mpi/<launch id>.json        the mpirun bootstrap's rendezvous without mpi4py
        named/<name>/               a cluster started with `jobqueue up`: cluster.json (what was
                                    asked), head.json + scheduler.json (written by its scheduler
                                    job), logs/ (the scheduler job's output)

Every path under the state directory is spelled here and nowhere else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time


def write_private(path: str, text: str) -> str:
    """Write ``text`` to ``path`` as a 0600 file, atomically.

    The text goes to a temporary file in the same directory (mkstemp creates it 0600),
    which then replaces ``path``: readers never see half a file, and a file that existed
    with wider permissions is replaced by a private one."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".jobqueue-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def private_dir(path: str, tighten: bool = True) -> str:
    """Create ``path`` (and its parents) owner-only (0700). An existing directory is
    tightened to 0700 too, unless ``tighten`` is False (a directory the user chose, which
    may be shared on purpose, is left as it is)."""
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(path, mode=0o700, exist_ok=True)
    if tighten:
        with contextlib.suppress(OSError):
            if os.stat(path).st_mode & 0o077:
                os.chmod(path, 0o700)
    return path


def state_dir() -> str:
    """The state directory (config ``jobqueue.state-directory``), created owner-only."""
    import dask.config

    from . import config  # noqa: F401  (registers the default)

    return private_dir(os.path.expandvars(dask.config.get("jobqueue.state-directory", "~/.jobqueue")))


def state_path(*parts: str) -> str:
    """A path under the state directory; its parent directories are created owner-only."""
    base = state_dir()
    for depth in range(1, len(parts)):  # each level, so none is left group-readable
        private_dir(os.path.join(base, *parts[:depth]))
    return os.path.join(base, *parts)


def run_dir(cluster_id: str) -> str:
    """A cluster's own directory (logs, credentials), owner-only."""
    return private_dir(state_path("clusters", cluster_id))


def journal_path(cluster_id: str) -> str:
    return state_path("journals", f"{cluster_id}.json")


def journals() -> list[str]:
    """Every journal under the state directory, oldest name first."""
    directory = os.path.join(state_dir(), "journals")
    try:
        return sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".json"))
    except OSError:
        return []


NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_.-]{0,62}"


def named_dir(name: str, create: bool = False) -> str:
    """The directory of the named cluster ``name`` (`jobqueue up`), owner-only."""
    import re

    if not re.fullmatch(NAME_PATTERN, name or ""):
        raise ValueError(f"invalid cluster name {name!r}: write a letter, then up to 62 letters, digits, "
                         "'_', '.' or '-', e.g. --name analysis-1")
    path = state_path("named", name)
    return private_dir(path) if create else path


def named_clusters() -> list[str]:
    """The names of this user's named clusters (directories under <state-directory>/named)."""
    directory = os.path.join(state_dir(), "named")
    try:
        return sorted(n for n in os.listdir(directory) if os.path.isdir(os.path.join(directory, n)))
    except OSError:
        return []


def rendezvous_path(launch_id: str) -> str:
    return state_path("mpi", f"{launch_id}.json")


def prune_old_runs(max_age_days: float = 14) -> None:
    """Remove run directories (logs) older than two weeks; best effort."""
    clusters = os.path.join(state_dir(), "clusters")
    try:
        entries = os.listdir(clusters)
    except OSError:
        return
    limit = time.time() - max_age_days * 86400
    for entry in entries:
        path = os.path.join(clusters, entry)
        with contextlib.suppress(OSError):
            if os.path.getmtime(path) < limit:
                shutil.rmtree(path, ignore_errors=True)
