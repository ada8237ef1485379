"""Cancel a cluster's jobs when the process that owns them dies.

Started by each cluster as a small detached process:

    python /path/to/jobqueue/watchdog.py JOURNAL

It is run as a file, not with -m, so it imports nothing of jobqueue or dask and starts
in milliseconds. Every half second it checks that the journal still exists (the owner
removes it after a clean close: the watchdog then exits) and that the owner is alive.
When the owner is gone (SIGKILL, OOM killer, a crashed node session) it cancels every
job the journal lists, with the batch system's own cancel command, and exits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

CANCEL = {"slurm": ["scancel"], "pbs": ["qdel"], "sge": ["qdel"]}


def start_time(pid: int):
    """Start time of pid in clock ticks since boot (tells a dead owner from a reused pid)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return float(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def owner_gone(data: dict) -> bool:
    """Has the process that wrote this journal ended?"""
    start = start_time(int(data["owner_pid"]))
    return start is None or (data.get("owner_started") is not None and start != data["owner_started"])


def cancel_jobs(data: dict, timeout: float = 60.0) -> str:
    """Cancel what the journal lists; return a line saying what was done."""
    ids = [str(i) for i in data.get("job_ids", [])]
    if not ids:
        return "no live jobs"
    system = data.get("system")
    if system == "local":
        for pid in ids:  # local job ids are process-group leaders
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError, ValueError):
                pass
        return f"killed local job process groups {' '.join(ids)}"
    argv = CANCEL[system] + ids
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        return f"`{' '.join(argv)}` failed with exit code {out.returncode}: {out.stderr.strip()}"
    return f"cancelled {system} jobs {' '.join(ids)}"


def read(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def watch(path: str, interval: float = 0.5) -> int:
    while True:
        data = read(path)
        if data is None:
            if not os.path.exists(path):
                return 0  # the owner closed its cluster cleanly
        elif owner_gone(data):
            # read again: the owner may have written a last update before dying
            data = read(path) or data
            try:
                print(f"jobqueue watchdog: owner {data['owner_pid']} is gone; {cancel_jobs(data)}",
                      file=sys.stderr)
            finally:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            return 0
        time.sleep(interval)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the owner's terminal is not for us
    sys.exit(watch(sys.argv[1]))
