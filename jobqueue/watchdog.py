"""Cancel a cluster's jobs when the process that owns them dies.

Started by each cluster as a small detached process:

    python /path/to/jobqueue/watchdog.py JOURNAL

It is run as a file, not with -m, so it imports nothing of jobqueue or dask and starts
in milliseconds. Every half second it checks that the journal still exists (the owner
removes it after a clean close: the watchdog then exits) and that the owner is alive.
When the owner is gone (SIGKILL, OOM killer, a crashed node session) it runs the cancel
command the journal records (the batch system's own, for every job it lists) and exits.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import psutil


def process_identity(pid: int) -> float | None:
    """When ``pid`` started (tells a dead owner from a reused pid); None if it is not running."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, ValueError):
        return None


def owner_gone(data: dict) -> bool:
    """Has the process that wrote this journal ended? A zombie (ended, not yet reaped by a
    parent that does not wait for it) has ended."""
    pid = int(data["owner_pid"])
    try:
        proc = psutil.Process(pid)
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return True
        started = proc.create_time()
    except psutil.Error:
        return True
    recorded = data.get("owner_started")
    return recorded is not None and abs(started - float(recorded)) > 1e-3  # the pid was reused


def cancel_jobs(data: dict, timeout: float = 60.0) -> str:
    """Run the journal's cancel command; return a line saying what was done."""
    ids = [str(i) for i in data.get("job_ids", [])]
    if not ids:
        return "no live jobs"
    argv = data.get("cancel_argv")
    if not argv:
        return f"the journal names no cancel command; cancel {data.get('system')} jobs {' '.join(ids)} by hand"
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`{shlex.join(argv)}` failed: {exc}"
    if out.returncode != 0:
        return f"`{shlex.join(argv)}` failed with exit code {out.returncode}: {out.stderr.strip()}"
    return f"cancelled {data.get('system')} jobs {' '.join(ids)} (`{shlex.join(argv)}`)"


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
