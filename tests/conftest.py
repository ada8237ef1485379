"""Test set-up: batch-system fixtures that skip on a bare laptop but fail in CI.

Set JOBQUEUE_TEST_REQUIRE=slurm,sge,pbs (CI does) to turn "not available" skips into
failures. At the end of the session the Slurm and Grid Engine queues and the PBS
emulator must hold no job this run left behind; if they do, they are cancelled and the
run fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import dask
import pytest
from backends import BACKENDS, MULTIHOST, MULTIHOST_SGE, fluxemu, htcemu, lsfemu, oaremu, pbsemu
from util import wait_for

# dask-jobqueue's and dask-mpi's vendored suites run in their own pytest (tests/test_compat.py)
collect_ignore = ["compat"]

REQUIRED = {s.strip() for s in os.environ.get("JOBQUEUE_TEST_REQUIRE", "").split(",") if s.strip()}
# the queues this session checks are left empty: all, unless JOBQUEUE_TEST_QUEUES names some
# (CI runs the multi-host module in a pytest of its own, alongside the rest: each checks its own)
QUEUES = {s.strip() for s in os.environ.get("JOBQUEUE_TEST_QUEUES", "slurm,sge,multihost,emulators").split(",")}


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
    pytest.skip(f"{system} not available: {reason}. Start one with `bash ci/{system}/start.sh` (root) "
                f"or set JOBQUEUE_TEST_REQUIRE={system} to make this a failure")


@pytest.fixture(scope="session")
def slurm():
    """A usable Slurm; the test is skipped (or fails under JOBQUEUE_TEST_REQUIRE) without one."""
    require("slurm", slurm_unavailable())
    return True


@pytest.fixture(scope="session")
def multihost():
    """The multi-host site (ci/multihost/start.sh): its Slurm, asked from this machine."""
    require("multihost", MULTIHOST.unavailable())
    return MULTIHOST


@pytest.fixture
def backend(request, monkeypatch):
    """The batch system named by the test's ``system`` parameter, usable, with PATH set."""
    b = BACKENDS[request.getfixturevalue("system")]
    require(b.name, b.unavailable())
    for key, value in b.environ().items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    return b


@pytest.fixture(autouse=True)
def _quiet_dashboard():
    # A random dashboard port so parallel clusters never fight over 8787.
    # OAR: the emulated host's memory-per-core property, as a site's jobqueue.yaml would name it
    with dask.config.set({**{f"jobqueue.{name}.scheduler-options": {"dashboard_address": ":0"} for name in BACKENDS},
                          "jobqueue.oar.memory-per-core-property-name": "memcore",
                          "jobqueue.htcondor.disk": "1GB"}):  # HTCondor needs a disk request
        yield


_preexisting_by_system: dict[str, set[str]] = {}


def _queue_backends():
    return {name: b for name, b in {**BACKENDS, "multihost": MULTIHOST, "multihost-sge": MULTIHOST_SGE}.items()
            if name in ("slurm", "sge", "multihost", "multihost-sge") and name.split("-")[0] in QUEUES}


def pytest_sessionstart(session):
    for name, b in _queue_backends().items():
        if b.unavailable() is None:
            _preexisting_by_system[name] = b.live_ids()


def pytest_sessionfinish(session, exitstatus):
    for name, before in _preexisting_by_system.items():
        b = _queue_backends()[name]
        if wait_for(lambda: not (b.live_ids() - before), timeout=30):
            continue
        leftover = sorted(b.live_ids() - before)
        for job_id in leftover:
            try:
                b.kill(job_id)
            except subprocess.CalledProcessError:
                pass  # ended meanwhile
        print(f"\nERROR: the test run left {name} jobs in the queue: {' '.join(leftover)} (cancelled now)")
        session.exitstatus = 1
    if "emulators" not in QUEUES:
        return
    for name, emulator in (("PBS", pbsemu), ("LSF", lsfemu), ("OAR", oaremu), ("HTCondor", htcemu), ("Flux", fluxemu)):
        if not wait_for(lambda: not emulator.live_jobs(), timeout=30):
            print(f"\nERROR: the test run left jobs in the {name} emulator: {' '.join(emulator.live_jobs())}")
            emulator.reset()
            session.exitstatus = 1
