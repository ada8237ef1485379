"""Test set-up: batch-system fixtures that skip on a bare laptop but fail in CI.

Set JOBQUEUE_TEST_REQUIRE=slurm (CI does) to turn "Slurm not available" skips into
failures. At the end of the session the Slurm queue must hold no job this run left
behind; if it does, they are cancelled and the run fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import dask
import pytest
from util import squeue_ids, wait_for

REQUIRED = {s.strip() for s in os.environ.get("JOBQUEUE_TEST_REQUIRE", "").split(",") if s.strip()}
_preexisting: set[str] = set()


def slurm_unavailable() -> str | None:
    """Why Slurm cannot be used here, or None when it can."""
    if not shutil.which("sbatch"):
        return "sbatch is not on PATH"
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`scontrol ping` failed: {exc}"
    if "UP" not in out.stdout:
        return f"slurmctld does not answer `scontrol ping`: {out.stdout.strip()} {out.stderr.strip()}"
    return None


def require(system: str, reason: str | None) -> None:
    if reason is None:
        return
    if system in REQUIRED:
        pytest.fail(f"{system} is required here (JOBQUEUE_TEST_REQUIRE={os.environ['JOBQUEUE_TEST_REQUIRE']}) "
                    f"but not usable: {reason}", pytrace=False)
    pytest.skip(f"{system} not available: {reason}. Start one with `bash ci/slurm/start.sh` (root) "
                f"or set JOBQUEUE_TEST_REQUIRE={system} to make this a failure")


@pytest.fixture(scope="session")
def slurm():
    """A usable Slurm; the test is skipped (or fails under JOBQUEUE_TEST_REQUIRE) without one."""
    require("slurm", slurm_unavailable())
    return True


@pytest.fixture(autouse=True)
def _quiet_dashboard():
    # A random dashboard port so parallel clusters never fight over 8787.
    with dask.config.set({"jobqueue.slurm.scheduler-options": {"dashboard_address": ":0"},
                          "jobqueue.local.scheduler-options": {"dashboard_address": ":0"}}):
        yield


def pytest_sessionstart(session):
    if slurm_unavailable() is None:
        _preexisting.update(squeue_ids())


def pytest_sessionfinish(session, exitstatus):
    if slurm_unavailable() is not None:
        return
    left = wait_for(lambda: not (squeue_ids() - _preexisting), timeout=30)
    if left:
        return
    leftover = sorted(squeue_ids() - _preexisting)
    subprocess.run(["scancel", *leftover], timeout=30)
    print(f"\nERROR: the test run left Slurm jobs in the queue: {' '.join(leftover)} (cancelled now)")
    session.exitstatus = 1
