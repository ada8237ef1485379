"""How workers start: lean (jobqueue/runtime/boot), without a Bokeh dashboard each, and as plain
Python once started. Real job scripts on the local system, real dask workers."""

import os
import subprocess
import sys
import urllib.request

import cloudpickle
import pytest
from distributed import Client

from jobqueue import LocalCluster
from jobqueue.scripts import LEAN_START_DIR

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this module


def _state():
    """What a worker (or nanny) process looks like from inside."""
    import gc

    import dask
    import yaml

    return {"tick": dask.config.get("distributed.admin.tick.interval"), "gc": gc.isenabled(), "frozen": gc.get_freeze_count() > 0,
            "yaml_safe_load": yaml.safe_load.__module__ == "yaml" and yaml.safe_load.__name__ == "safe_load",
            "pythonpath": os.environ.get("PYTHONPATH", ""), "on_sys_path": [p for p in sys.path if "boot" in p],
            "bokeh": "bokeh" in sys.modules, "lean_module": "_jobqueue_lean_start" in sys.modules,
            "site_mark": os.environ.get("JOBQUEUE_TEST_SITE_MARK")}


def _child_state():
    """A Python a task starts: it must not see the lean start at all."""
    code = ("import gc, sys, os; print(gc.isenabled(), '_jobqueue_lean_start' in sys.modules, "
            "[p for p in sys.path if 'boot' in p], os.environ.get('JOBQUEUE_LEAN_START'))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()


def test_workers_start_lean_and_run_as_plain_python():
    with LocalCluster(cores=2, memory="2GB", processes=2) as cluster:
        script = cluster.job_script()
        assert f"export JOBQUEUE_LEAN_START=1 JOBQUEUE_QUIET_IDLE=1 PYTHONPATH={LEAN_START_DIR}" in script
        assert " --no-dashboard" in script
        cluster.scale(jobs=1)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=60)
            workers = client.run(_state)
            nannies = client.run(_state, nanny=True)
            assert len(workers) == 2 and len(nannies) == 2
            for state in list(workers.values()) + list(nannies.values()):
                # the preload ended the lean start: collector on, imports frozen, yaml as shipped
                assert state["gc"] and state["frozen"] and state["yaml_safe_load"] and state["lean_module"], state
                assert LEAN_START_DIR not in state["pythonpath"] and not state["on_sys_path"], state
                assert not state["bokeh"], state  # no per-worker Bokeh dashboard by default
                assert state["tick"] == "200ms", state  # a quieter idle loop
            assert set(client.run(_child_state).values()) == {"True False [] None"}
            numpy_sum = lambda n: float(__import__("numpy").arange(n, dtype="f8").sum())  # noqa: E731
            assert client.submit(numpy_sum, 1001).result() == 500500.0
            # the workers' own HTTP routes (health, metrics) are still served without the dashboard
            port = client.run(lambda dask_worker: dask_worker.http_server.port)
            for port in port.values():
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
                    assert r.read() == b"ok"


def test_a_sitecustomize_the_boot_directory_shadows_still_runs(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nos.environ['JOBQUEUE_TEST_SITE_MARK'] = 'ran'\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    with LocalCluster(cores=1, memory="1GB", processes=1) as cluster:
        cluster.scale(jobs=1)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=60)
            (state,) = client.run(_state).values()
            assert state["site_mark"] == "ran" and state["frozen"] and state["gc"], state
            assert state["pythonpath"] == str(site), state  # the user's PYTHONPATH, without ours


def test_lean_start_and_worker_dashboard_can_be_switched(tmp_path):
    with LocalCluster(cores=1, memory="1GB", processes=1, lean_start=False, worker_dashboard=True) as cluster:
        script = cluster.job_script()
        assert "JOBQUEUE_LEAN_START" not in script and "--no-dashboard" not in script
        cluster.scale(jobs=1)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=60)
            (state,) = client.run(_state).values()
            assert state["gc"] and not state["frozen"] and not state["lean_module"], state
            assert state["tick"] == "20ms", state  # dask's own
            assert state["bokeh"], state
            # dask's idle too: no jobqueue idle rules (jobqueue/runtime/idle.py), profiler every 10 ms
            quiet = client.run(lambda dask_worker: (os.environ.get("JOBQUEUE_QUIET_IDLE"),
                                                    "jobqueue-quiet-when-idle" in dask_worker.plugins,
                                                    type(dask_worker.periodic_callbacks["profile"]).__name__,
                                                    "monitor" in dask_worker.periodic_callbacks))
            assert list(quiet.values()) == [(None, False, "PeriodicCallback", True)], quiet
            (port,) = client.run(lambda dask_worker: dask_worker.http_server.port).values()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=30) as r:
                assert r.status == 200 and b"bokeh" in r.read().lower()


@pytest.mark.parametrize("argv", [["-c", "pass"], ["-m", "json.tool", "--help"]])
def test_the_boot_directory_leaves_other_pythons_alone(argv):
    """A python the job script starts for something else (a prologue line) gets no lean start,
    no error from site, and its own children do not inherit the directory."""
    env = dict(os.environ, JOBQUEUE_LEAN_START="1", PYTHONPATH=LEAN_START_DIR)
    code = ("import gc, os, sys; print(gc.isenabled(), gc.get_freeze_count(), os.environ.get('PYTHONPATH'), "
            "[p for p in sys.path if 'boot' in p])")
    out = subprocess.run([sys.executable, *argv[:1], code if argv[0] == "-c" else argv[1], *argv[2:]],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "sitecustomize" not in out.stderr, out.stderr
    if argv[0] == "-c":
        assert out.stdout.split() == ["True", "0", "None", "[]"]


def test_the_worker_command_is_lean_until_jobqueue_preload_ends_it(tmp_path):
    """`python -m distributed.cli.dask_worker` with the boot directory: lean (collector off,
    libyaml) while it imports, plain once jobqueue's preload is imported."""
    (tmp_path / "probe_before.py").write_text(
        "import gc, sys, yaml\nprint('import', gc.isenabled(), yaml.safe_load.__module__, flush=True)\n"
        "def dask_setup(worker):\n    print('setup', gc.isenabled(), yaml.safe_load.__module__, "
        "gc.get_freeze_count() > 0, flush=True)\n")
    env = dict(os.environ, JOBQUEUE_LEAN_START="1", PYTHONPATH=f"{LEAN_START_DIR}:{tmp_path}")
    out = subprocess.run([sys.executable, "-m", "distributed.cli.dask_worker", "tcp://127.0.0.1:9", "--no-nanny",
                          "--no-dashboard", "--death-timeout", "2", "--preload", "probe_before",
                          "--preload", "jobqueue.runtime.worker"],
                         env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in out.stdout.splitlines() if line.startswith(("import", "setup"))]
    assert lines == ["import False sitecustomize", "setup True yaml True"], (out.stdout, out.stderr[-2000:])
    assert "sitecustomize" not in out.stderr

