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

A worker (its nanny, if it has one) that has not registered with the scheduler
JOBQUEUE_REACH_TIMEOUT seconds (default 10) after it started probes the scheduler's
host and port; if nothing answers there it logs the address it tried, from which host
and address, and the error, and exits (code 68) -- instead of retrying silently until
death_timeout -- so the job ends and the cluster reports it within seconds.

With JOBQUEUE_QUIET_IDLE=1 (the lean job script's default) idle workers and nannies wake up
less often: see jobqueue/runtime/idle.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import sys
import time

from .idle import quiet_nanny, quiet_worker

logger = logging.getLogger("jobqueue.runtime")

if "_jobqueue_lean_start" in sys.modules:  # started lean (jobqueue/runtime/boot): the imports are done
    sys.modules["_jobqueue_lean_start"].finish()


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
    _memory_kill_is_immediate(nanny)


def _memory_kill_is_immediate(nanny) -> None:
    """distributed's nanny stops a worker past the terminate fraction of its memory limit with
    SIGTERM, which kills a dask worker at once -- but jobqueue's workers take SIGTERM as the
    batch system's notice and retire gracefully: the task kept growing for as long as it ran,
    the retirement closed the nanny too (no restart), and the scheduler moved the task to the
    next job rather than counting a failure. So that one SIGTERM is a SIGKILL here."""
    callback = nanny.periodic_callbacks.get("memory_monitor")
    if callback is None:
        return
    monitor = callback.callback

    def kill_past_the_limit():
        process = getattr(getattr(nanny, "process", None), "process", None)
        if process is None:
            return monitor()
        process.terminate = process.kill  # this instance, for this call
        try:
            return monitor()
        finally:
            del process.terminate

    callback.callback = kill_past_the_limit


UNREACHABLE_EXIT = 68  # EX_NOHOST


def probe(address: str, timeout: float = 5.0) -> str | None:
    """None if a TCP connection to the host and port of ``address`` opens within ``timeout``,
    else the error (e.g. "[Errno 113] No route to host")."""
    from distributed.comm import get_address_host_port

    host, port = get_address_host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return str(exc) or type(exc).__name__


def _local_address(address: str) -> str:
    """This host's address on the way to ``address`` (its hostname's if there is no way)."""
    from distributed.comm import get_address_host_port

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((get_address_host_port(address)[0], 9))  # UDP: no packet is sent
            return s.getsockname()[0]
    except OSError:
        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return "?"


async def _watch_registration(server, address: str | None, delay: float) -> None:
    """Exit with the cause if ``server`` is not registered after ``delay`` s and the scheduler's
    port does not answer; a scheduler that answers but is slow to register us is waited for."""
    from distributed.core import Status

    await asyncio.sleep(delay)
    if not address or server.status in (Status.running, Status.closing, Status.closed, Status.closing_gracefully):
        return
    loop = asyncio.get_running_loop()
    error = await loop.run_in_executor(None, probe, address)
    if error is not None and "timed out" in error:  # a scheduler swamped by connections can be slow to accept
        error = await loop.run_in_executor(None, probe, address, 15.0)
    if error is None:
        logger.info("jobqueue: not registered after %.0f s, but the scheduler at %s answers: waiting", delay, address)
        return
    logger.error("jobqueue: the worker on %s (%s) cannot reach the scheduler at %s: %s. Nothing answered for "
                 "%.0f s; exiting now rather than waiting death_timeout. The compute nodes need a route to the "
                 "scheduler's address: create the cluster with interface= naming a network they share.",
                 socket.gethostname(), _local_address(address), address, error, delay)
    for handler in logging.getLogger().handlers + logging.getLogger("distributed").handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(UNREACHABLE_EXIT)


def _watch(server, address: str | None) -> None:
    try:
        delay = float(os.environ.get("JOBQUEUE_REACH_TIMEOUT", "10"))
    except ValueError:
        delay = 10.0
    if delay > 0:
        server._jobqueue_reach = asyncio.ensure_future(_watch_registration(server, address, delay))


def dask_setup(server) -> None:
    from distributed import Nanny, Worker

    if isinstance(server, Worker):
        _setup_worker(server)
        if os.environ.get("JOBQUEUE_QUIET_IDLE") == "1":
            quiet_worker(server)
        if getattr(server, "nanny", None) is None:  # under a nanny, the nanny watches
            _watch(server, getattr(getattr(server, "scheduler", None), "address", None))
    elif isinstance(server, Nanny):
        _setup_nanny(server)
        if os.environ.get("JOBQUEUE_QUIET_IDLE") == "1":
            quiet_nanny(server)
        _watch(server, server.scheduler_addr)
