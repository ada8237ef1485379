"""Dask preload for jobqueue's workers: graceful retirement before walltime and on SIGTERM.

The job script runs ``dask worker ... --preload jobqueue.runtime.worker`` and exports

    JOBQUEUE_JOB_END        epoch seconds when the batch system will end the job
    JOBQUEUE_RETIRE_MARGIN  seconds before that end at which workers retire
    JOBQUEUE_RETIRE_STAGGER workers retire at a random point up to this much earlier,
                            so the workers of one job do not all leave at once

Retiring (Worker.close_gracefully) asks the scheduler to move the worker's data to
other workers before it closes, so reaching the walltime loses no results.

SIGTERM (scancel, preemption, the time limit itself) triggers the same graceful
retirement instead of an abrupt close, and so do the signals in JOBQUEUE_RETIRE_SIGNALS
(comma-separated names): the batch system's own warning before its limit (LSF's SIGUSR2
at the run limit, Flux's SIGALRM at expiry). Batch systems signal every process of the job:
the worker process retires itself; the nanny forwards the signal to its worker and
waits for it, instead of killing it mid-retirement as dask's own handler would.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time

logger = logging.getLogger("jobqueue.runtime")


def retire_delay(now: float | None = None) -> float | None:
    """Seconds from now until this worker should retire, or None without a walltime."""
    try:
        end = float(os.environ["JOBQUEUE_JOB_END"])
    except (KeyError, ValueError):
        return None
    margin = float(os.environ.get("JOBQUEUE_RETIRE_MARGIN", "60"))
    stagger = float(os.environ.get("JOBQUEUE_RETIRE_STAGGER", "0"))
    now = time.time() if now is None else now
    return max(0.0, end - margin - random.uniform(0, stagger) - now)


def _install(signum: int, callback) -> None:
    """Run callback on the server's loop when signum arrives (main thread only)."""
    loop = asyncio.get_running_loop()
    try:
        signal.signal(signum, lambda *_: loop.call_soon_threadsafe(callback))
    except ValueError:  # not the main thread: leave dask's handling in place
        logger.debug("jobqueue preload: cannot install a %s handler outside the main thread", signum)


def gpu_devices(index: int, environ=os.environ) -> str | None:
    """The CUDA_VISIBLE_DEVICES of worker ``index`` of its job: its share of the devices the batch
    system gave the job (its CUDA_VISIBLE_DEVICES), else of 0..JOBQUEUE_GPUS-1; None without GPUs."""
    try:
        per_worker = int(environ["JOBQUEUE_GPUS_PER_WORKER"])
        total = int(environ.get("JOBQUEUE_GPUS", per_worker))
    except (KeyError, ValueError):
        return None
    given = [d for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    devices = given if len(given) >= total else [str(i) for i in range(total)]
    mine = devices[index * per_worker:(index + 1) * per_worker]
    return ",".join(mine) if mine else None


def _worker_index(name) -> int:
    """A worker's place in its job: dask worker --nworkers k names them <name>-0 ... <name>-(k-1)."""
    try:
        per_job = int(os.environ["JOBQUEUE_GPUS"]) // int(os.environ["JOBQUEUE_GPUS_PER_WORKER"])
    except (KeyError, ValueError, ZeroDivisionError):
        return 0
    suffix = str(name).rpartition("-")[2]
    return int(suffix) if per_job > 1 and suffix.isdigit() else 0


def _setup_worker(worker) -> None:
    retiring = False
    if getattr(worker, "nanny", None) is None:  # no nanny to set it before this process started
        devices = gpu_devices(_worker_index(worker.name))
        if devices is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = devices

    def retire(reason: str) -> None:
        nonlocal retiring
        if retiring:
            return
        retiring = True
        logger.info("jobqueue: retiring worker %s gracefully (%s)", worker.address, reason)
        asyncio.ensure_future(worker.close_gracefully(reason=f"jobqueue-{reason}"))

    delay = retire_delay()
    if delay is not None:
        logger.info("jobqueue: worker %s will retire in %.0f s, before the job's walltime", worker.name, delay)
        asyncio.get_running_loop().call_later(delay, retire, "walltime")
    for signum in (signal.SIGTERM, *retire_signals()):
        _install(signum, lambda name=signal.Signals(signum).name: retire(name))


def retire_signals() -> list[int]:
    """The batch system's warning signals named in JOBQUEUE_RETIRE_SIGNALS (unknown names ignored)."""
    out = []
    for name in filter(None, os.environ.get("JOBQUEUE_RETIRE_SIGNALS", "").split(",")):
        signum = getattr(signal, name.strip().upper(), None)
        if isinstance(signum, signal.Signals) and signum != signal.SIGTERM:
            out.append(signum)
    return out


_FORK_HANDLER_REGISTERED = False


def _default_signals_in_child() -> None:
    """A worker forked from its nanny starts with the signal handling a spawned one has,
    not the nanny's handlers (which would act on the nanny's loop, not the worker's)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for signum in retire_signals():
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _setup_nanny(nanny) -> None:
    global _FORK_HANDLER_REGISTERED
    devices = gpu_devices(_worker_index(getattr(nanny, "name", None) or nanny.worker_kwargs.get("name")))
    if devices is not None:  # the worker process starts with it (before anything touches CUDA)
        nanny.env["CUDA_VISIBLE_DEVICES"] = devices
    if not _FORK_HANDLER_REGISTERED:  # one per process, however many nannies it runs
        os.register_at_fork(after_in_child=_default_signals_in_child)
        _FORK_HANDLER_REGISTERED = True

    def forward(signum: int = signal.SIGTERM) -> None:
        process = getattr(nanny, "process", None)
        pid = getattr(getattr(process, "process", None), "pid", None)
        if pid:
            logger.info("jobqueue: %s: asking worker process %s to retire gracefully", signal.Signals(signum).name, pid)
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for signum in (signal.SIGTERM, *retire_signals()):
        _install(signum, lambda signum=signum: forward(signum))


def dask_setup(server) -> None:
    from distributed import Nanny, Worker

    if isinstance(server, Worker):
        _setup_worker(server)
    elif isinstance(server, Nanny):
        _setup_nanny(server)
