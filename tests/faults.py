"""Fault injection for the tests: PATH wrappers in front of the real batch commands, and
a Slurm controller stopped and restarted with its job state kept.

A wrapper is a shell script named like the real command, first on PATH; it runs the
test's shell code, then (unless that code exited) the real command. The flag helpers
make a fault switchable while a cluster runs: the wrapper misbehaves while its flag
file exists.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from util import wait_for

SLURMCTLD_PID = "/run/slurm/slurmctld.pid"


class Wrappers:
    """PATH wrappers in one directory (put first on PATH by monkeypatch)."""

    def __init__(self, tmp_path: Path, monkeypatch, path: str | None = None):
        self.dir = tmp_path / "wrappers"
        self.dir.mkdir(exist_ok=True)
        self.path = path or os.environ["PATH"]
        monkeypatch.setenv("PATH", f"{self.dir}:{self.path}")

    def wrap(self, command: str, body: str) -> Path:
        """``command`` runs ``body`` (sh; $REAL is the real command, "$@" its arguments) first."""
        real = shutil.which(command, path=self.path)
        assert real, f"{command} is not on PATH"
        script = self.dir / command
        script.write_text(f"#!/bin/sh\nREAL={real}\n{body}\nexec \"$REAL\" \"$@\"\n")
        script.chmod(0o755)
        return script

    def count(self, command: str) -> Path:
        """Each call of ``command`` appends its arguments to the returned file."""
        log = self.dir / f"{command}.calls"
        log.write_text("")
        self.wrap(command, f'echo "$*" >> {log}')
        return log

    def fail_while(self, command: str, stderr: str, code: int = 1, stdout: str = "") -> Path:
        """``command`` fails with ``stderr`` while the returned flag file exists (created now)."""
        flag = self.dir / f"{command}.failing"
        flag.write_text("")
        self.wrap(command, f"if [ -e {flag} ]; then printf '%s' '{stdout}'; echo '{stderr}' >&2; exit {code}; fi")
        return flag


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines()


def slurmctld_pid() -> int | None:
    try:
        pid = int(Path(SLURMCTLD_PID).read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def stop_slurmctld() -> None:
    """Stop the controller (SIGTERM: it saves its state, as in a real outage or upgrade)."""
    pid = slurmctld_pid()
    assert pid, "slurmctld is not running"
    os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: slurmctld_pid() is None, 30), "slurmctld did not stop"


def start_slurmctld() -> None:
    """Start it again WITHOUT -c, so it recovers every job it had (ci/slurm/start.sh's -c wipes them)."""
    subprocess.run(["/usr/sbin/slurmctld"], check=True, timeout=60)
    ok = wait_for(lambda: "UP" in subprocess.run(["scontrol", "ping"], capture_output=True, text=True,
                                                 timeout=15).stdout, 60)
    assert ok, "slurmctld did not come back"
    time.sleep(0.5)
