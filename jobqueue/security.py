"""TLS for the scheduler: the user's own credentials, the files workers read them from, and
the scheduler file another client or worker connects with (written and read here, for
the cluster on the login node and the mpirun bootstrap alike).

The trust boundary is the user: the threat on a shared login node is other users, not
the same user's other clusters. So by default every cluster of a user (and every mpirun
launch) uses one CA and certificate of that user, in an owner-only directory
(``<state-directory>/tls``), created on first use. A scheduler accepts only connections
that present a certificate of that CA; other users cannot read the key. Because the
credentials are the user's, any process of that user can connect, with no argument:
``Client(scheduler_file=...)``, ``Client("tls://...")``. Importing jobqueue sets the
dask config keys that make that work, and a dask config file (``jobqueue tls`` writes it,
as does the first cluster) does the same for processes that never import jobqueue.

Imports nothing of distributed at module level: the runtime inside a job uses it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from typing import TYPE_CHECKING, Any

from .files import private_dir, state_dir, write_private

if TYPE_CHECKING:
    from distributed.security import Security

TLS_KEYS = ("ca_file", "cert", "key")
USER_FILES = {"ca_file": "ca.pem", "cert": "cert.pem", "key": "key.pem"}
RENEW_AFTER_DAYS = 300  # Security.temporary() certificates are valid for 365 days
DASK_CONFIG_FILE = "jobqueue-tls.yaml"


def user_tls_directory() -> str:
    import dask

    base = dask.config.get("jobqueue.credentials-directory", None)
    return os.path.join(os.path.expanduser(os.path.expandvars(base)) if base else state_dir(), "tls")


def user_tls_files(create: bool = True) -> dict[str, str] | None:
    """{"ca_file", "cert", "key"} -> paths of this user's credentials, created (or renewed
    when old) on first use; None if they do not exist and ``create`` is False."""
    directory = user_tls_directory()
    paths = {key: os.path.join(directory, name) for key, name in USER_FILES.items()}
    try:
        fresh = all(os.path.exists(p) for p in paths.values()) and \
            os.path.getmtime(paths["cert"]) > time.time() - RENEW_AFTER_DAYS * 86400
    except OSError:
        fresh = False
    if fresh:
        return paths
    if not create:
        return None
    from distributed.security import Security

    temporary = Security.temporary()  # a CA and one certificate for every role, in memory
    parent = private_dir(os.path.dirname(directory), tighten=False)
    staging = tempfile.mkdtemp(prefix=".tls-", dir=parent)  # 0700; renamed into place whole
    for key, name in USER_FILES.items():
        write_private(os.path.join(staging, name), getattr(temporary, {"ca_file": "tls_ca_file", "cert":
                                                                      "tls_client_cert", "key": "tls_client_key"}[key]))
    old = directory + f".old-{os.getpid()}"
    if os.path.isdir(directory):
        os.replace(directory, old)  # expired: replaced
    try:
        os.rename(staging, directory)
    except OSError:  # another process won the race: use its credentials
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return paths


def user_security() -> Security:
    """This user's Security: the same CA and certificate for scheduler, workers and clients."""
    from distributed.security import Security

    f = user_tls_files()
    return Security(tls_ca_file=f["ca_file"], tls_scheduler_cert=f["cert"], tls_scheduler_key=f["key"],
                    tls_worker_cert=f["cert"], tls_worker_key=f["key"], tls_client_cert=f["cert"],
                    tls_client_key=f["key"], require_encryption=True)


def user_tls_config(paths: dict[str, str]) -> dict:
    """The dask config that lets any Security() of this user's processes (a plain
    ``Client(scheduler_file=...)``, ``dask worker tls://...``) present the user's certificate."""
    return {"distributed": {"comm": {"tls": {
        "ca-file": paths["ca_file"], "client": {"cert": paths["cert"], "key": paths["key"]},
        "worker": {"cert": paths["cert"], "key": paths["key"]}}}}}


def use_user_tls(write_dask_config: bool = False) -> str | None:
    """Set this process's dask config to the user's credentials, where the user configured
    none; with ``write_dask_config``, also write them to a file in the dask config directory
    (read by every dask process of the user). Returns that file's path (None if not written)."""
    import dask

    paths = user_tls_files(create=write_dask_config)
    if paths is None:
        return None
    if dask.config.get("distributed.comm.tls.ca-file", None) is None:
        dask.config.update(dask.config.config, user_tls_config(paths), priority="new")
    if not write_dask_config or not dask.config.get("jobqueue.tls-dask-config", True):
        return None
    import yaml

    target = os.path.join(dask.config.PATH, DASK_CONFIG_FILE)
    text = ("# written by jobqueue: this user's TLS credentials, so that every dask process of the user\n"
            "# connects to the user's jobqueue schedulers (delete to stop; `jobqueue tls` writes it again)\n"
            + yaml.safe_dump(user_tls_config(paths), default_flow_style=False))
    try:
        with open(target) as f:
            if f.read() == text:
                return target
    except OSError:
        pass
    try:
        os.makedirs(dask.config.PATH, exist_ok=True)
        return write_private(target, text)
    except OSError:
        return None


def resolve_security(security: Any, protocol: str | None, cls_name: str,
                     shared_temp_directory: str | None = None) -> Security | None:
    """TLS with the user's credentials unless the user opts out or brings their own;
    ``security=True`` keeps dask-jobqueue's meaning (fresh per-cluster credentials)."""
    import dask
    from distributed.security import Security

    if security is True:
        if not shared_temp_directory:
            warnings.warn(f"{cls_name}(security=True) makes fresh per-cluster credentials, which workers read "
                          "from files; no shared_temp_directory is set, so they go to this cluster's run directory "
                          "under jobqueue.state-directory. Set shared_temp_directory= to a directory the compute "
                          "nodes share, or leave security out to use your per-user credentials.",
                          UserWarning, stacklevel=4)
        return Security.temporary()
    if security is None:
        security = dask.config.get("jobqueue.security", True)
    if security is None or security is True:
        if protocol is not None and not protocol.startswith("tls"):
            warnings.warn(f"{cls_name}(protocol={protocol!r}) turns TLS off: any user who can reach the "
                          "scheduler's port can run code as you. Write security=False to say so explicitly, "
                          "or drop protocol= to keep TLS.", UserWarning, stacklevel=4)
            return None
        security = user_security()
        use_user_tls(write_dask_config=True)
        return security
    if security is False:
        warnings.warn(f"{cls_name}(security=False): the scheduler accepts plain TCP connections, so any "
                      "user who can reach its port (e.g. anyone on this login node) can run code as you.",
                      UserWarning, stacklevel=4)
        return None
    if not isinstance(security, Security):
        raise ValueError(f"invalid security={security!r}; leave it out (TLS with your per-user credentials), "
                         "or write security=True (fresh per-cluster credentials), security=False, or a "
                         "distributed.security.Security")
    return security


class Credentials:
    """In-memory PEMs written to owner-only files that compute nodes can read.

    The directory is 0700 and each file 0600, under ``base`` (the cluster's run directory
    in the home directory by default, which compute nodes share); the credentials never
    appear in a job script or on a command line."""

    def __init__(self, base: str):
        self.base = base
        self.written: list[str] = []
        self.worker: dict[str, str] = {}  # the files workers are given, by TLS key

    def file(self, role: str, key: str, pem: str) -> str:
        base = private_dir(self.base, tighten=False)  # may be a site's shared directory: left as is
        # named as dask-jobqueue names them, so a site's clean-up rules still match
        fd, path = tempfile.mkstemp(prefix=f".dask-jobqueue.{role}.{key}.", dir=base)  # 0600
        os.close(fd)
        self.written.append(write_private(path, pem))
        return path

    def files_for(self, security: Security, role: str) -> dict[str, str]:
        """{"ca_file", "cert", "key"} -> a file path for ``role`` (in-memory PEMs written out)."""
        out = {}
        for key, value in security.get_tls_config_for_role(role).items():
            if key in TLS_KEYS and value is not None:
                out[key] = self.file(role, key, value) if "\n" in value else value
        return out

    def worker_args(self, security: Security | None) -> list[str]:
        """The workers' --tls-* arguments, naming credential files."""
        if security is None:
            return []
        self.worker = self.files_for(security, "worker")
        return [word for key, path in self.worker.items() for word in ("--tls-" + key.replace("_", "-"), path)]

    def scheduler_file(self, path: str, info: dict, security: Security | None) -> str:
        """A scheduler file for ``info`` naming the client's (and workers') credential files."""
        tls = None
        if security is not None and security.require_encryption:
            tls = self.files_for(security, "client")
        return write_scheduler_file(path, info, tls=tls, worker_tls=self.worker if tls else None)

    def remove(self) -> None:
        for path in self.written:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.written = []


def write_scheduler_file(path: str, info: dict, tls: dict[str, str] | None = None,
                         worker_tls: dict[str, str] | None = None) -> str:
    """Write ``info`` (at least {"address"}) as an owner-only scheduler file, with the
    client's TLS files (``tls``: ca_file/cert/key paths) and the workers' if they differ."""
    info = dict(info)
    if tls:
        info["security"] = {"tls_ca_file": tls.get("ca_file"), "tls_client_cert": tls.get("cert"),
                            "tls_client_key": tls.get("key"), "require_encryption": True}
    if worker_tls:
        info["worker_security"] = {"tls_ca_file": worker_tls.get("ca_file"), "tls_worker_cert": worker_tls.get("cert"),
                                   "tls_worker_key": worker_tls.get("key")}
    # private even when the file existed with wider permissions
    return write_private(os.path.abspath(os.path.expanduser(path)), json.dumps(info, indent=1))


def read_scheduler_file(path: str) -> dict:
    with open(os.path.expanduser(path)) as f:
        return json.load(f)


def file_security(info: dict, role: str = "client") -> Security | None:
    """The Security a ``role`` ("client" or "worker") connects with, from a scheduler file."""
    from distributed.security import Security

    client = info.get("security")
    if role == "client":
        return Security(**client) if client else None
    tls = info.get("worker_security") or client
    if not tls:
        return None
    return Security(tls_ca_file=tls["tls_ca_file"], tls_worker_cert=tls.get("tls_worker_cert") or tls["tls_client_cert"],
                    tls_worker_key=tls.get("tls_worker_key") or tls["tls_client_key"], require_encryption=True)


def connect(scheduler_file: str, **client_kwargs: Any):
    """A Client for a named cluster (`jobqueue up --name NAME`: ``connect("NAME")``) or for the
    cluster that wrote ``scheduler_file`` (``write_scheduler_file``, the mpirun bootstrap), with
    the TLS credentials the file names."""
    from distributed import Client

    from .files import NAME_PATTERN, named_dir

    path = os.path.expanduser(scheduler_file)
    if not os.path.exists(path) and re.fullmatch(NAME_PATTERN, scheduler_file) and not path.endswith(".json"):
        path = os.path.join(named_dir(scheduler_file), "scheduler.json")
        if not os.path.exists(path):
            from .detached import read_record

            read_record(scheduler_file)  # says which clusters there are
            raise ValueError(f"cluster {scheduler_file!r} has no running scheduler; `jobqueue list` shows it")
    info = read_scheduler_file(path)
    return Client(info["address"], security=file_security(info), **client_kwargs)
