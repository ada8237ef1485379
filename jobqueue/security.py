"""TLS for the scheduler: per-cluster credentials, the files workers read them from, and
the scheduler file another client or worker connects with (written and read here, for
the cluster on the login node and the mpirun bootstrap alike).

Imports nothing of distributed at module level: the runtime inside a job uses it too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from typing import TYPE_CHECKING, Any

from .files import private_dir, write_private

if TYPE_CHECKING:
    from distributed.security import Security

TLS_KEYS = ("ca_file", "cert", "key")


def resolve_security(security: Any, protocol: str | None, cls_name: str) -> Security | None:
    """TLS with fresh per-cluster credentials unless the user opts out or brings their own."""
    import dask
    from distributed.security import Security

    if security is None:
        security = dask.config.get("jobqueue.security", True)
    if security is None or security is True:
        if protocol is not None and not protocol.startswith("tls"):
            warnings.warn(f"{cls_name}(protocol={protocol!r}) turns TLS off: any user who can reach the "
                          "scheduler's port can run code as you. Write security=False to say so explicitly, "
                          "or drop protocol= to keep TLS.", UserWarning, stacklevel=4)
            return None
        return Security.temporary()  # a fresh CA, certificate and key for this cluster alone
    if security is False:
        warnings.warn(f"{cls_name}(security=False): the scheduler accepts plain TCP connections, so any "
                      "user who can reach its port (e.g. anyone on this login node) can run code as you.",
                      UserWarning, stacklevel=4)
        return None
    if not isinstance(security, Security):
        raise ValueError(f"invalid security={security!r}; write security=True (the default: TLS with "
                         "per-cluster credentials), security=False, or a distributed.security.Security")
    return security


class Credentials:
    """In-memory PEMs written to owner-only files that compute nodes can read.

    The directory is 0700 and each file 0600, under ``base`` (the cluster's run directory
    in the home directory by default, which compute nodes share); the credentials never
    appear in a job script or on a command line."""

    def __init__(self, base: str):
        self.base = base
        self.directory: str | None = None
        self.worker: dict[str, str] = {}  # the files workers are given, by TLS key

    def file(self, role: str, key: str, pem: str) -> str:
        if self.directory is None:
            base = private_dir(self.base, tighten=False)  # may be a site's shared directory: left as is
            self.directory = tempfile.mkdtemp(prefix="credentials-", dir=base)  # 0700
        return write_private(os.path.join(self.directory, f"{role}-{key}.pem"), pem)

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
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


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
    """A Client for the cluster that wrote ``scheduler_file`` (``write_scheduler_file``),
    with the TLS credentials the file names."""
    from distributed import Client

    info = read_scheduler_file(scheduler_file)
    return Client(info["address"], security=file_security(info), **client_kwargs)
