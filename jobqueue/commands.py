"""Run external commands: always an argv list, always a timeout, failures as exceptions.

This module is a leaf. Callers on the event loop use :func:`run_async`, which runs the
blocking call in a thread so the scheduler never stalls behind a slow controller.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import shlex
import subprocess
import threading
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


class UnreadableOutput(CommandError):
    """The command succeeded but its output held no answer we could read (e.g. no job id)."""


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


class _Threads:
    """Daemon threads that run blocking calls for event loops, kept and reused.

    Not the loop's default executor: at interpreter exit (a script that ends without
    close(), Ctrl-C) Python shuts executors down before atexit handlers run, and the close
    that cancels our jobs would fail with "cannot schedule new futures after shutdown";
    these threads still take work then. Kept rather than one thread per call: starting a
    thread blocks its caller -- the event loop that runs the scheduler -- until the new
    thread is scheduled, which on a busy login node took the loop 0.6 s per 12 s of a
    32-worker scale-up (the status polls alone)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """No threads (also in a forked child, which has none of its parent's)."""
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, task) -> None:
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1  # an idle thread is waiting in get(): it takes this task
        self._tasks.put(task)
        if start:
            threading.Thread(target=self._work, name="jobqueue-command", daemon=True).start()

    def _work(self) -> None:
        while True:
            deliver = self._tasks.get()()
            with self._lock:  # idle before the caller hears back: its next call reuses this thread
                self._idle += 1
            deliver()


_THREADS = _Threads()
os.register_at_fork(after_in_child=_THREADS.reset)


async def in_thread(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in one of jobqueue's command threads, awaited from the event loop."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(outcome: str, value) -> None:
        if not future.done():
            getattr(future, outcome)(value)

    def target():
        try:
            outcome, value = "set_result", fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            outcome, value = "set_exception", exc

        def deliver() -> None:
            try:
                loop.call_soon_threadsafe(settle, outcome, value)
            except RuntimeError:  # the loop closed meanwhile: nobody is waiting
                pass

        return deliver

    _THREADS.submit(target)
    return await future


async def run_async(argv: Sequence[str], **kwargs) -> CommandResult:
    """:func:`run` in a thread, for callers on an event loop."""
    return await in_thread(run, argv, **kwargs)
