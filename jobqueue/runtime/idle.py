"""Idle workers that sleep: what an idle nanny and worker wake up for, cut to what matters.

An idle nanny+worker pair cost 5 % of a core (distributed 2026.8, Python 3.11): a hundred of
them on a node -- or sharing the login node's cores with the scheduler -- spend whole cores
waking up. Each periodic callback run is a tornado task on the event loop (tens of µs),
whatever it does, and these ran most often:

- the worker's sampling profiler every 10 ms (``distributed.worker.profile.interval``); it
  records nothing while no task runs, it returns at once -- 3.3 % of a core;
- the worker's and the nanny's memory monitors every 100 ms (``...memory.monitor-interval``);
  they act only past the spill, pause or terminate fraction, and the nanny builds a new
  ``psutil.Process`` each time -- ~1 % together;
- the system monitor every 500 ms in both processes: the nanny's is read by nothing (a nanny
  has no heartbeat and no HTTP server); the worker's reaches the scheduler in its heartbeats
  (every 0.5-2 s) and its own dashboard, which jobqueue's workers do not start by default.

So, while jobqueue's preload runs in a worker started lean (``JOBQUEUE_QUIET_IDLE=1``, set by
the job script unless ``lean_start=False``):

- the profiler runs while a task executes (same interval, same samples) and stops between;
- the worker's memory monitor runs every 100 ms while tasks execute, data is fetched or the
  worker is paused, and every second while it is idle -- an idle worker's memory does not
  grow; a task or transfer starting brings the 100 ms back at once;
- in front of both memory monitors a cheap reading of /proc/<pid>/statm (what psutil reads)
  calls distributed's monitor only past the fraction where it acts, so its decisions are
  distributed's; the nanny checks every second while its worker's memory is steady (within
  1 % of the limit since the last check) and under half the limit, else every 100 ms;
- the nanny's system monitor stops; a worker without a dashboard samples its process right
  before each heartbeat instead of every 500 ms;
- the event-loop tick (``distributed.admin.tick.interval``, which only watches for a blocked
  loop: it still reports one blocked past ``distributed.admin.tick.limit``) runs every second
  in the nanny and in an idle worker, at the configured interval in a busy one.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger("jobqueue.runtime")

NAME = "jobqueue-quiet-when-idle"
IDLE_MEMORY_CHECK = 1.0  # seconds between memory checks of an idle worker, or a nanny whose worker is steady
IDLE_TICK = 1.0  # seconds between event-loop ticks of an idle worker, and of a nanny
STEADY = 0.01  # of the memory limit: a nanny's reading that moved less than this is steady
LOW = 0.5  # of the memory limit: a nanny backs off only below this
_COMPUTING = frozenset({"executing", "long-running"})
_BUSY = _COMPUTING | {"flight"}
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss(pid: int | str = "self") -> int | None:
    """Resident bytes of a process from /proc/<pid>/statm -- the file psutil's
    ``memory_info().rss`` reads on Linux -- or None where it cannot be read."""
    try:
        fd = os.open(f"/proc/{pid}/statm", os.O_RDONLY)
    except OSError:
        return None
    try:
        return int(os.read(fd, 128).split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None
    finally:
        os.close(fd)


def _fraction(value: Any) -> float:
    return float("inf") if value is False or value is None else float(value)


def _restart(callback: Any, seconds: float) -> None:
    """Run a running PeriodicCallback every ``seconds`` from now on (a stopped one stays stopped)."""
    if callback.callback_time == seconds * 1000:
        return
    callback.callback_time = seconds * 1000
    if callback.is_running():
        callback.stop()
        callback.start()


class _WhileComputing:
    """Stands in for ``worker.periodic_callbacks["profile"]``: the worker starts and stops it as
    it would the callback (at registration, on reconnect, at close). The real callback starts
    when a task starts executing (``wake``) and stops itself after a sample finds none running."""

    def __init__(self, callback: Any, computing) -> None:
        self._callback, self._computing, self._wanted = callback, computing, False
        sample = callback.callback

        def sample_then_sleep():
            sample()
            if not computing():
                callback.stop()  # inside its own run: no next run is scheduled

        callback.callback = sample_then_sleep

    def __getattr__(self, name: str) -> Any:  # callback_time and the rest
        return getattr(self._callback, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._callback, name, value)

    def start(self) -> None:
        self._wanted = True
        self.wake()

    def stop(self) -> None:
        self._wanted = False
        if self._callback.is_running():
            self._callback.stop()

    def is_running(self) -> bool:
        return self._wanted

    def wake(self) -> None:
        if self._wanted and not self._callback.is_running() and self._computing():
            self._callback.start()


class QuietWhenIdle:
    """A worker plugin: task transitions tell it when work arrives, and it brings dask's pace
    back at once; the callbacks themselves slow down after a run that finds the worker idle
    (so a stream of short tasks costs a comparison per transition, not a timer restart)."""

    def __init__(self, worker: Any) -> None:
        from distributed.core import Status

        self._worker, self._state, self._paused = worker, worker.state, Status.paused
        self.profile: _WhileComputing | None = None
        self.memory = None  # the worker's memory monitor, once paced by _worker_memory_check
        self.in_memory_check = False  # a PeriodicCallback restarted inside its own run would run twice
        self.busy_memory_check = None
        self.tick = worker.periodic_callbacks.get("tick")
        self.busy_tick = self.tick.callback_time / 1000 if self.tick is not None else None
        if self.tick is not None:
            measure = self.tick.callback

            def measure_then_pace():
                measure()
                _pace_next(self.tick, self.pace(self.busy_tick, IDLE_TICK))

            self.tick.callback = measure_then_pace
            _pace_next(self.tick, self.pace(self.busy_tick, IDLE_TICK))

    def computing(self) -> bool:
        return bool(self._state.executing or self._state.long_running)

    def busy(self) -> bool:
        return self.computing() or bool(getattr(self._state, "in_flight_tasks", ())) or \
            self._worker.status == self._paused

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish in _BUSY:
            self.wake()

    def wake(self) -> None:
        """Work arrived: profiler on, memory checks and ticks at dask's pace from now."""
        if self.profile is not None:
            self.profile.wake()
        if self.memory is not None:
            (_pace_next if self.in_memory_check else _restart)(self.memory, self.busy_memory_check)
        if self.tick is not None:
            _restart(self.tick, self.busy_tick)

    def pace(self, busy_seconds: float, idle_seconds: float) -> float:
        """A callback's interval now: dask's while busy, never faster than that while idle."""
        return busy_seconds if self.busy() else max(idle_seconds, busy_seconds)


def _worker_memory_check(worker: Any, quiet: QuietWhenIdle) -> None:
    manager, callback = worker.memory_manager, worker.periodic_callbacks["memory_monitor"]
    monitor, limit = callback.callback, manager.memory_limit
    act_above = min(_fraction(manager.memory_spill_fraction), _fraction(manager.memory_pause_fraction)) * limit
    quiet.memory, quiet.busy_memory_check = callback, callback.callback_time / 1000

    async def act():
        quiet.in_memory_check = True
        try:
            await monitor()
        finally:
            quiet.in_memory_check = False
            _pace_next(callback, quiet.pace(quiet.busy_memory_check, IDLE_MEMORY_CHECK))  # paused or resumed by the monitor: its pace follows

    def check():
        if worker.status != quiet._paused:
            used = rss()
            if used is not None and used <= act_above:
                _pace_next(callback, quiet.pace(quiet.busy_memory_check, IDLE_MEMORY_CHECK))
                return None
        return act()

    callback.callback = check
    _pace_next(callback, quiet.pace(quiet.busy_memory_check, IDLE_MEMORY_CHECK))


def quiet_worker(worker: Any) -> QuietWhenIdle | None:
    """Apply the idle rules above to a worker; call it before the worker starts its periodic
    callbacks (a preload's ``dask_setup`` runs before). None if already applied."""
    if NAME in worker.plugins:
        return None
    quiet = QuietWhenIdle(worker)
    profile = worker.periodic_callbacks.get("profile")
    if profile is not None:  # distributed.worker.profile.enabled
        quiet.profile = _WhileComputing(profile, quiet.computing)
        if profile.is_running():
            profile.stop()
            quiet.profile.start()
        worker.periodic_callbacks["profile"] = quiet.profile
    if "memory_monitor" in worker.periodic_callbacks and worker.memory_manager.memory_limit and rss() is not None:
        _worker_memory_check(worker, quiet)
    monitor, heartbeat = worker.periodic_callbacks.get("monitor"), worker.periodic_callbacks.get("heartbeat")
    if not getattr(worker, "_dashboard", True) and monitor is not None and heartbeat is not None:
        monitor.stop()
        del worker.periodic_callbacks["monitor"]
        beat = heartbeat.callback

        def sample_then_beat():
            try:
                worker.monitor.update()
            except Exception:  # noqa: BLE001 - a failed sample must not cost the heartbeat
                logger.debug("jobqueue: system monitor sample failed", exc_info=True)
            return beat()

        heartbeat.callback = sample_then_beat
    worker.plugins[NAME] = quiet  # the worker's state machine tells its plugins of transitions
    return quiet


def quiet_nanny(nanny: Any) -> None:
    """Apply the idle rules above to a nanny."""
    from distributed.core import Status

    monitor = nanny.periodic_callbacks.pop("monitor", None)
    if monitor is not None:
        monitor.stop()
    tick = nanny.periodic_callbacks.get("tick")
    if tick is not None:
        _restart(tick, max(IDLE_TICK, tick.callback_time / 1000))
    callback = nanny.periodic_callbacks.get("memory_monitor")
    manager = getattr(nanny, "memory_manager", None)
    if callback is None or manager is None or not manager.memory_limit or rss() is None:
        return
    original, limit, busy_interval = callback.callback, manager.memory_limit, callback.callback_time / 1000
    act_above = _fraction(manager.memory_terminate_fraction) * limit
    last: list[int | None] = [None]

    def check():
        pid = getattr(getattr(nanny.process, "process", None), "pid", None)
        if nanny.status != Status.running or pid is None:
            return None
        used, before = rss(pid), last[0]
        last[0] = used
        steady = used is not None and before is not None and abs(used - before) < STEADY * limit
        _pace_next(callback, max(IDLE_MEMORY_CHECK, busy_interval) if steady and used < LOW * limit else busy_interval)
        return original() if used is None or used > act_above else None

    callback.callback = check


def _pace_next(callback: Any, seconds: float) -> None:
    """Change the pace of a PeriodicCallback from within its own run: the next run is scheduled
    with the new interval when this one returns."""
    callback.callback_time = seconds * 1000
