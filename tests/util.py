"""Helpers shared by the tests."""

from __future__ import annotations

import subprocess
import time


def wait_for(predicate, timeout: float, interval: float = 0.2):
    """Poll predicate() until it returns a truthy value; return that value, or the last one."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=30)
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def squeue_state(job_id: str) -> str:
    """Slurm's state word for job_id ('' once squeue no longer lists it)."""
    out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", job_id, "-o", "%T"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def scontrol_show(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True,
                          timeout=30).stdout
