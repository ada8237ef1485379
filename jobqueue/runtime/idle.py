"""An idle worker that sleeps: its sampling profiler runs only while tasks run.

distributed's worker samples the stacks of its task threads every
``distributed.worker.profile.interval`` (10 ms) from a PeriodicCallback on its event loop.
The callback records nothing while no task runs -- it returns at once when no thread is
active -- yet it wakes the loop 100 times a second: measured here, 3.3 % of a core per idle
worker, two thirds of an idle nanny+worker pair. A hundred idle workers packed on a node, or
sharing the login node's cores with the scheduler, spend whole cores on it.

:func:`profile_while_busy` replaces that callback with one that starts when the worker's
first task starts executing and stops when its last one ends. The samples are the same --
taken at the same interval while tasks run, none while they do not -- so the dashboard's
Profile page and ``Client.profile`` show what they showed; only the idle wake-ups go.
"""

from __future__ import annotations

from typing import Any

NAME = "jobqueue-profile-while-busy"
_RUNNING = frozenset({"executing", "long-running"})


class ProfileWhileBusy:
    """Stands in for ``worker.periodic_callbacks["profile"]`` and is a worker plugin.

    The worker starts and stops it as it would the callback (at registration, on
    reconnect, at close); it runs the real callback only while the worker's state has an
    executing or long-running (seceded) task. Task transitions reach it as a plugin."""

    def __init__(self, worker: Any, callback: Any) -> None:
        self._callback = callback
        self._state = worker.state
        self._wanted = False

    def __getattr__(self, name: str) -> Any:  # callback_time and the rest, read or set
        return getattr(self._callback, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._callback, name, value)

    def start(self) -> None:
        self._wanted = True
        self._update()

    def stop(self) -> None:
        self._wanted = False
        self._update()

    def is_running(self) -> bool:
        return self._wanted

    def busy(self) -> bool:
        return bool(self._state.executing or self._state.long_running)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start in _RUNNING or finish in _RUNNING:
            self._update()

    def _update(self) -> None:
        run = self._wanted and self.busy()
        if run != self._callback.is_running():
            self._callback.start() if run else self._callback.stop()


def profile_while_busy(worker: Any) -> bool:
    """Swap the worker's profiler callback for a :class:`ProfileWhileBusy`. Call it before the
    worker starts its periodic callbacks (a preload's ``dask_setup`` runs before). False if
    the worker has no profiler (``distributed.worker.profile.enabled: false``) or it is swapped."""
    callback = worker.periodic_callbacks.get("profile")
    if callback is None or isinstance(callback, ProfileWhileBusy) or NAME in worker.plugins:
        return False
    proxy = ProfileWhileBusy(worker, callback)
    if callback.is_running():
        callback.stop()
        proxy.start()
    worker.periodic_callbacks["profile"] = proxy
    worker.plugins[NAME] = proxy  # the worker's state machine tells its plugins of transitions
    return True
