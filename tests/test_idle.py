"""Idle workers that sleep (jobqueue/runtime/idle.py): what an idle nanny and worker wake up for,
counted in real workers of real job scripts, and distributed's memory decisions kept."""

import sys
import time

import cloudpickle
import dask
import pytest
from distributed import Client

from jobqueue import LocalCluster

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this module

COUNTED = ("memory_monitor", "tick", "profile", "heartbeat")


def _count_runs(dask_worker):
    """From now on, count the runs of the server's periodic callbacks (nanny or worker)."""
    counts = getattr(dask_worker, "_test_runs", None)
    if counts is None:
        counts = dask_worker._test_runs = {}
        for name in COUNTED:
            pc = dask_worker.periodic_callbacks.get(name)
            if pc is None:
                continue
            real = pc.callback

            def counted(name=name, real=real):
                counts[name] += 1
                return real()

            pc.callback = counted
    for name in COUNTED:
        counts[name] = 0
    return sorted(dask_worker.periodic_callbacks)


def _runs(dask_worker):
    return dict(dask_worker._test_runs)


def _one(client, fn, **kw):
    (value,) = client.run(fn, **kw).values()
    return value


def test_idle_workers_and_nannies_wake_up_rarely_and_busy_workers_as_dask_does():
    """An idle nanny+worker cost 5 % of a core: the profiler ran every 10 ms, memory monitors every
    100 ms, ticks every 200 ms, system monitors every 500 ms, busy or not."""

    def spin(seconds):  # local: pickled by value
        end = time.time() + seconds
        while time.time() < end:
            pass
        return True

    with LocalCluster(cores=1, memory="1GB", processes=1) as cluster:
        assert "JOBQUEUE_QUIET_IDLE=1" in cluster.job_script()
        cluster.scale(jobs=1)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=60)
            worker_callbacks = _one(client, _count_runs)
            nanny_callbacks = _one(client, _count_runs, nanny=True)
            assert "monitor" not in nanny_callbacks, "nothing reads a nanny's system monitor"
            assert "monitor" not in worker_callbacks, "a worker without a dashboard samples with its heartbeat"
            time.sleep(3.0)
            idle, nanny = _one(client, _runs), _one(client, _runs, nanny=True)
            assert idle["profile"] == 0, idle
            assert idle["memory_monitor"] <= 4 and idle["tick"] <= 4, f"idle worker in 3 s: {idle} (dask: 30, 15)"
            assert nanny["memory_monitor"] <= 4 and nanny["tick"] <= 4, f"nanny in 3 s: {nanny} (dask: 30, 15)"

            _one(client, _count_runs)
            assert client.submit(spin, 2.0, pure=False).result()
            busy = _one(client, _runs)
            # dask's pace (10 ms, 100 ms, 200 ms: ~200, 20, 10 runs); a loaded machine delays some
            assert busy["profile"] >= 40, f"a 2 s task is sampled every 10 ms: {busy}"
            assert busy["memory_monitor"] >= 8, f"memory checked every 100 ms while busy: {busy}"
            assert busy["tick"] >= 5, f"ticks every 200 ms while busy: {busy}"

            # the process samples still reach the scheduler, with each heartbeat
            ws = next(iter(cluster.scheduler.workers.values()))
            before = ws.last_seen
            deadline = time.time() + 10
            while ws.last_seen == before and time.time() < deadline:
                time.sleep(0.1)
            assert ws.last_seen > before and ws.metrics["memory"] > 0 and ws.metrics["num_fds"] > 0, ws.metrics
            assert "cpu" in ws.metrics


@pytest.mark.parametrize("lean_start", [True, False])
def test_an_idle_worker_still_spills_and_a_nanny_still_restarts_a_worker_over_its_limit(lean_start):
    """The memory monitors are slower while idle but decide as distributed does: a result that
    leaves the worker idle above the spill fraction goes to disk; a task past the terminate
    fraction gets its worker restarted by the nanny -- killed, not retired gracefully as jobqueue's
    workers retire on SIGTERM (which kept the task growing, ended the job, and moved the task on)."""
    np = pytest.importorskip("numpy")

    def hold(n_bytes):  # local: pickled by value; touches every page
        return np.ones(n_bytes // 8)

    def blow_up(n_bytes):
        block = np.ones(n_bytes // 8)
        time.sleep(30)
        return block.sum()

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with LocalCluster(cores=1, memory="1GB", processes=1, lean_start=lean_start) as cluster:
            cluster.scale(jobs=1)
            with Client(cluster) as client:
                client.wait_for_workers(1, timeout=60)
                limit = _one(client, lambda dask_worker: dask_worker.memory_manager.memory_limit)
                held = client.submit(hold, int(limit * 0.75), pure=False)
                held.result(timeout=60)
                t0 = time.time()
                spilled = []
                while time.time() - t0 < 15 and not spilled:
                    spilled = _one(client, lambda dask_worker: list(dask_worker.data.slow.keys()))
                    time.sleep(0.2)
                assert held.key in spilled, "an idle worker above the spill fraction spills its data"
                del held

                first, jobs = set(cluster.scheduler.workers), list(cluster.job_ids)
                doomed = client.submit(blow_up, int(limit * 1.02), pure=False)
                with pytest.raises(Exception) as info:
                    doomed.result(timeout=60)
                assert type(info.value).__name__ == "KilledWorker", info.value  # a failure, not a move elsewhere
                client.wait_for_workers(1, timeout=60)
                assert set(cluster.scheduler.workers) != first, "the nanny restarted the worker"
                assert list(cluster.job_ids) == jobs and not cluster.replacements, "the same job runs on"
