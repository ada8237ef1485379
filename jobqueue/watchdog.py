"""Cancel a cluster's jobs when the process that owns them dies.

Started by each cluster as a small detached process:

    python /path/to/jobqueue/watchdog.py JOURNAL

It is run as a file, not with -m, so it imports nothing of jobqueue or dask and starts
in milliseconds. Every half second it checks that the journal still exists (the owner
removes it after a clean close: the watchdog then exits) and that the owner is alive.
When the owner is gone (SIGKILL, OOM killer, a zombie nobody reaped), or its cluster
closed but could not get the cancel confirmed (a controller outage), it runs the cancel
command the journal records (the batch system's own, for every job it lists), retrying
with backoff until the batch system confirms, for up to six hours, and logs each try in
watchdog.log beside the journals.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

import psutil

# how long the watchdog keeps retrying a cancel the batch system does not confirm
DEADLINE = float(os.environ.get("JOBQUEUE_WATCHDOG_DEADLINE", 6 * 3600))


def process_identity(pid: int) -> float | None:
    """When ``pid`` started (tells a dead owner from a reused pid); None if it is not running."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, ValueError):
        return None


def owner_gone(data: dict) -> bool:
    """Has the process that wrote this journal ended? A zombie (ended, not yet reaped by a
    parent that does not wait for it) has ended. A journal written on another host (the
    scheduler job of a named cluster) cannot be judged from here: not gone."""
    host = data.get("owner_host")
    if host and host != socket.gethostname():
        return False
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


def unconfirmed(returncode: int, output: str, ok_pattern: str) -> list[str]:
    """The lines of a cancel command's output that say it failed: none when it exited 0;
    else every line the system's ``ok_pattern`` does not match (cancelled, or the job had
    already ended), or "(no output)" when it printed nothing."""
    if returncode == 0:
        return []
    ok = re.compile(ok_pattern or r"^$")
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    failed = [ln for ln in lines if not ok.search(ln)]
    return failed if failed or lines else ["(no output)"]


def cancel_jobs(data: dict, timeout: float = 60.0) -> tuple[bool, str]:
    """Run the journal's cancel command once: (confirmed, a line saying what happened).
    Confirmed means the batch system took every cancel or said the job had already ended."""
    ids = [str(i) for i in data.get("job_ids", [])]
    if not ids:
        return True, "no live jobs"
    argv = data.get("cancel_argv")
    if not argv:
        return False, f"the journal names no cancel command; cancel {data.get('system')} jobs {' '.join(ids)} by hand"
    failed = run_cancel(argv, data.get("cancel_ok", ""), timeout)
    if failed:
        return False, f"`{shlex.join(argv)}` failed with {failed}"
    return True, f"cancelled {data.get('system')} jobs {' '.join(ids)} (`{shlex.join(argv)}`)"


def run_cancel(argv: list[str], ok_pattern: str, timeout: float) -> str | None:
    """Run one cancel command: None when confirmed (see unconfirmed), else what went wrong."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    failed = unconfirmed(out.returncode, out.stdout + "\n" + out.stderr, ok_pattern)
    return f"exit code {out.returncode}: {' / '.join(failed)}" if failed else None


def cancel_intents(data: dict, timeout: float = 60.0) -> tuple[bool, str]:
    """Cancel by name the submissions whose id never arrived (``data["intents"]``: name ->
    [argv, until]). One is settled once cancelled after ``until``, when it can no longer
    land; the rest stay in ``data``."""
    left, said = {}, []
    for name, (argv, until) in (data.get("intents") or {}).items():
        failed = run_cancel(argv, data.get("cancel_ok", ""), timeout)
        if failed or time.time() < until:
            left[name] = [argv, until]
        said.append(f"`{shlex.join(argv)}`" + (f" failed with {failed}" if failed else ""))
    data["intents"] = left
    return not left, "; ".join(said)


def settle(path: str, data: dict, deadline: float = DEADLINE) -> int:
    """Cancel what the journal lists, retrying with backoff (a controller outage, a slow
    controller) until the batch system confirms or ``deadline`` seconds have passed, and
    the submissions whose id never arrived by name until they can no longer land. The
    journal is removed only once all is confirmed: until then `jobqueue cleanup` finds it."""
    start = time.monotonic()
    delay = 1.0
    why = "its owner is gone" if owner_gone(data) else "its cluster closed without confirming the cancel"
    said = None
    while True:
        ok, line = cancel_jobs(data)
        done, by_name = cancel_intents(data)
        if (line, by_name) != said:
            log(f"{os.path.basename(path)}: {why}; {line}" + (f"; by name: {by_name}" if by_name else ""))
            said = (line, by_name)
        if ok:
            data["job_ids"] = []  # confirmed: not again
        if ok and done:
            with contextlib.suppress(OSError):
                os.unlink(path)
            return 0
        if time.monotonic() - start > deadline:
            log(f"{os.path.basename(path)}: giving up after {deadline:.0f} s; the journal stays for "
                "`jobqueue cleanup`")
            return 1
        time.sleep(delay if not ok else 1.0)  # a submission in flight may land any moment
        delay = min(delay * 2, 30.0)
        if not os.path.exists(path):
            return 0  # `jobqueue cleanup` (or the owner) settled it meanwhile


def log(line: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} jobqueue watchdog: {line}", file=sys.stderr, flush=True)


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
        elif data.get("closed") or owner_gone(data):
            # read again: the owner may have written a last update before dying
            return settle(path, read(path) or data)
        time.sleep(interval)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the owner's terminal is not for us
    sys.exit(watch(sys.argv[1]))
