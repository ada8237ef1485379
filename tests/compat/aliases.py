"""The import aliases of the compatibility shim, without pytest: loaded by shim.py (the
pytest plugin) and by site/sitecustomize.py in every Python process the upstream tests
start (mpirun ranks running `from dask_mpi import initialize`).

    dask_jobqueue[.X]   -> jobqueue[.X]        (dask_jobqueue.tests: the vendored tests)
    dask_mpi[.X]        -> jobqueue.runtime.mpi[.X]   (dask_mpi.tests: the vendored tests)
    the dask-mpi command -> python -m jobqueue.runtime.mpi   (bin/ first on PATH)
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
NOT_YET: tuple[str, ...] = ()  # systems of another issue: their tests are not counted


def _stand_in(name: str) -> type:
    def refuse(*args, **kwargs):
        raise NotImplementedError(f"{name}: jobqueue has no such system yet")

    return type(name, (), {"__init__": refuse, "job_cls": None, "__doc__": "not in jobqueue yet"})


class Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import ``old[.X]`` as the module ``new[.X]``; ``old.tests[.X]`` from ``tests_dir``."""

    def __init__(self, old: str, new: str, tests_dir: str):
        self.old, self.new, self.tests_dir = old, new, tests_dir

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.old and not fullname.startswith(self.old + "."):
            return None
        if fullname == self.old + ".tests" or fullname.startswith(self.old + ".tests."):
            where = os.path.join(self.tests_dir, *fullname.split(".")[:-1])
            return importlib.machinery.PathFinder.find_spec(fullname, [where])
        return importlib.util.spec_from_loader(fullname, self, is_package=True)

    def create_module(self, spec):
        target = self.new + spec.name[len(self.old):]
        try:
            real = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name != target or not any(s.lower() in spec.name for s in NOT_YET):
                raise
            real = None
        proxy = types.ModuleType(spec.name, getattr(real, "__doc__", None))

        def __getattr__(attr, real=real):
            if real is not None and hasattr(real, attr):
                return getattr(real, attr)
            if attr.endswith(("Cluster", "Job")) and attr.startswith(NOT_YET):
                return _stand_in(attr)
            try:  # a submodule, e.g. dask_jobqueue.lsf as an attribute
                return importlib.import_module(f"{spec.name}.{attr}")
            except ImportError:
                raise AttributeError(f"{target} has no attribute {attr!r}") from None

        proxy.__getattr__ = __getattr__
        proxy.__path__ = []
        proxy.__jobqueue_target__ = real
        return proxy

    def exec_module(self, module):
        pass


def install() -> None:
    jq = os.path.join(HERE, "dask-jobqueue-0.9.0")
    mpi = os.path.join(HERE, "dask-mpi-2026.3.0")
    for old in ("dask_jobqueue", "dask_mpi"):
        for name in [m for m in sys.modules if m == old or m.startswith(old + ".")]:
            del sys.modules[name]  # an installed dask-jobqueue / dask-mpi must not answer
    if any(isinstance(f, Alias) for f in sys.meta_path):
        return
    sys.meta_path[:0] = [Alias("dask_jobqueue", "jobqueue", jq), Alias("dask_mpi", "jobqueue.runtime.mpi", mpi)]
    bin_dir = os.path.join(HERE, "bin")
    os.environ.setdefault("JOBQUEUE_SHIM_PYTHON", sys.executable)
    if not os.environ.get("PATH", "").startswith(bin_dir):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
