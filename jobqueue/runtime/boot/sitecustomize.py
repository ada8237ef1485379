"""jobqueue's lean worker start: what a worker does not need to start is not paid at start.

The job script puts this directory first on PYTHONPATH (with JOBQUEUE_LEAN_START=1) for
its ``python -m distributed.cli.dask_worker`` line, so Python's ``site`` imports this
module before the worker command runs. In that process only, and until jobqueue's
preload (jobqueue.runtime.worker) calls ``finish()`` once distributed and the command's
imports are done:

- the garbage collector is off: the ~600 modules distributed imports allocate objects
  that live as long as the process, and collecting them during import is wasted work;
  ``finish()`` turns it on again and freezes what exists (``gc.freeze()``), so the
  workers a nanny forks do not copy or scan those pages;
- dask's YAML configuration is parsed with libyaml's C loader (the same safe constructor)
  instead of the pure-Python one, where PyYAML has it.

Any other process (a python started by the prologue, a task's subprocess) is left alone:
the directory is taken out of PYTHONPATH and sys.path at once, and a sitecustomize this
one shadows (a site's or a distribution's) is run as it would have been.
"""

import gc
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
WORKER_MODULE = "distributed.cli.dask_worker"
_ASKED = os.environ.pop("JOBQUEUE_LEAN_START", None) == "1"  # not inherited by this process's children


def _unshadow() -> None:
    """Take this directory out of PYTHONPATH (children) and sys.path (this process)."""
    keep = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.abspath(p) != _HERE]
    if keep:
        os.environ["PYTHONPATH"] = os.pathsep.join(keep)
    else:
        os.environ.pop("PYTHONPATH", None)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]


def _chain() -> None:
    """Run the sitecustomize that this one shadows, if there is one."""
    me = sys.modules.pop(__name__, None)
    try:
        import sitecustomize  # noqa: F401  (the next one on sys.path)
    except ImportError as e:
        if e.name != "sitecustomize":
            raise
    finally:
        # site's `import sitecustomize` returns sys.modules["sitecustomize"]: the other one if it
        # ran, else this one; jobqueue's preload finds this one under its own name
        sys.modules.setdefault("sitecustomize", me)
        sys.modules["_jobqueue_lean_start"] = me


def _is_worker_start() -> bool:
    argv = list(getattr(sys, "orig_argv", ()))  # Python 3.10+; older Pythons start as usual
    return _ASKED and "-m" in argv[:-1] \
        and argv[argv.index("-m") + 1] == WORKER_MODULE


_patched = {}


def _c_safe_load(stream):
    """yaml.safe_load with libyaml: the same safe constructor, parsed in C."""
    import yaml

    return yaml.load(stream, Loader=yaml.CSafeLoader)


def _start() -> None:
    gc.disable()
    try:
        import yaml
    except ImportError:
        return
    if getattr(yaml, "__with_libyaml__", False):
        _patched["safe_load"] = yaml.safe_load
        yaml.safe_load = _c_safe_load


def finish() -> None:
    """The worker command's imports are done: back to Python's defaults, and freeze what
    exists so the workers a nanny forks share it."""
    if "safe_load" in _patched:
        import yaml

        yaml.safe_load = _patched.pop("safe_load")
    gc.enable()
    gc.freeze()


_unshadow()
_chain()
if _is_worker_start():
    _start()
