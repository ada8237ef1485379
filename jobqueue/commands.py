"""Run external commands: always an argv list, always a timeout, failures as exceptions.

This module is a leaf. Callers on the event loop use :func:`run_async`, which runs the
blocking call in a thread so the scheduler never stalls behind a slow controller.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import subprocess
from dataclasses import dataclass
from typing import Sequence

logger = logging.getLogger("jobqueue.commands")

DEFAULT_TIMEOUT = 60.0


class CommandError(RuntimeError):
    """An external command failed: names the command, its exit code and its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str,
                 reason: str | None = None):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.command = shlex.join(self.argv)
        if reason is None:
            detail = stderr.strip() or stdout.strip() or "(no output)"
            reason = f"`{self.command}` failed with exit code {returncode}: {detail}"
        super().__init__(reason)


class CommandTimeout(CommandError):
    """The command did not finish within its timeout."""


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run(argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, input: str | None = None,
        check: bool = True, env: dict | None = None) -> CommandResult:
    """Run ``argv`` (never through a shell) and return its output.

    Raises :class:`CommandError` when the command is missing or exits non-zero (unless
    ``check=False``) and :class:`CommandTimeout` when it runs longer than ``timeout``.
    """
    argv = [str(a) for a in argv]
    logger.debug("running %s", shlex.join(argv))
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True,
                              timeout=timeout, env=env,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise CommandError(argv, None, "", "", reason=(
            f"`{argv[0]}` was not found on PATH (needed for `{shlex.join(argv)}`); "
            "is the batch system's client installed and on PATH on this machine?")) from None
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise CommandTimeout(argv, None, out, err, reason=(
            f"`{shlex.join(argv)}` did not finish within {timeout:g} s"
            + (f"; stderr so far: {err.strip()}" if err.strip() else ""))) from None
    result = CommandResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
    return result


async def run_async(argv: Sequence[str], **kwargs) -> CommandResult:
    """:func:`run` in a worker thread, for callers on an event loop."""
    return await asyncio.to_thread(run, argv, **kwargs)
