"""Register jobqueue's defaults (jobqueue.yaml) with dask.config under the "jobqueue" key."""

from __future__ import annotations

import os

import dask.config
import yaml

_FILE = os.path.join(os.path.dirname(__file__), "jobqueue.yaml")

with open(_FILE) as _f:
    defaults = yaml.safe_load(_f)



def reconfigure() -> None:
    """Register jobqueue's defaults again (e.g. after a test cleared dask.config).
    update_defaults keeps values the user already set (in ~/.config/dask/jobqueue.yaml,
    environment variables, or dask-jobqueue's own defaults when both are installed)."""
    dask.config.update_defaults(defaults)
    from .security import use_user_tls

    use_user_tls()  # this user's TLS credentials (if made already) for every Security() of this process


reconfigure()


def get(config_name: str, key: str, default=None):
    """``jobqueue.<config_name>.<key>`` with a default for keys the section lacks."""
    return dask.config.get(f"jobqueue.{config_name}.{key}", default)
