"""The import shim that runs dask-jobqueue's and dask-mpi's own test suites against jobqueue.

Loaded as a pytest plugin (``-p shim``, with tests/compat on PYTHONPATH) before the
upstream conftest.py, it makes a migrating user's one changed import for every module:

    dask_jobqueue[.X]   -> jobqueue[.X]        (dask_jobqueue.tests: the vendored tests)
    dask_mpi[.X]        -> jobqueue.runtime.mpi[.X]   (dask_mpi.tests: the vendored tests)
    the dask-mpi command -> python -m jobqueue.runtime.mpi   (tests/compat/bin on PATH)

Names jobqueue does not have yet (the LSF, HTCondor, OAR and Moab classes, issue 16) are
stand-ins that skip, so upstream modules that import them still load; their tests are
deselected and not counted. Upstream tests listed in known-failures.txt are marked
xfail(strict): a listed test that starts passing fails the run until the list is updated.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
NOT_YET = ("LSF", "HTCondor", "OAR", "Moab")  # systems of another issue: their tests are not counted
KNOWN_FAILURES = os.path.join(HERE, "known-failures.txt")


def _stand_in(name: str) -> type:
    def refuse(*args, **kwargs):
        pytest.skip(f"{name}: jobqueue has no such system yet")

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
    sys.meta_path[:0] = [Alias("dask_jobqueue", "jobqueue", jq), Alias("dask_mpi", "jobqueue.runtime.mpi", mpi)]
    bin_dir = os.path.join(HERE, "bin")
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


install()


def known_failures() -> dict[str, str]:
    """test id (as pytest prints it, relative to the suite) -> why jobqueue fails it on purpose."""
    out: dict[str, str] = {}
    with open(KNOWN_FAILURES) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                test, _, why = line.partition(" ")
                out[test] = why.strip(" -")
    return out


def pytest_ignore_collect(collection_path, config):
    name = collection_path.name
    if name.startswith("test_") and any(s.lower() in name for s in NOT_YET):
        return True  # test_lsf.py, test_htcondor.py, test_oar.py: systems of issue 16
    if any(str(collection_path).endswith(test) for test in known_failures() if test.endswith(".py")):
        return True  # a whole module on the list: not even collected
    return None


def pytest_collection_modifyitems(config, items):
    failures = known_failures()
    deselected = [item for item in items if any(s in item.nodeid for s in NOT_YET)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]
    for item in items:
        for test, why in failures.items():
            if item.nodeid.endswith(test):
                item.add_marker(pytest.mark.xfail(reason=why, strict=True))
