"""The cluster machinery on the local batch system: real job scripts, real dask workers."""

import asyncio
import os
import warnings

import dask
import psutil
import pytest
from distributed import Client

from jobqueue import JobSubmissionError, LocalCluster, SLURMCluster, UnknownKeywordError
from util import wait_for


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_scale_compute_scale_down_close():
    with LocalCluster(cores=1, memory="1GB", processes=1) as cluster:
        cluster.scale(jobs=3)
        with Client(cluster) as client:
            client.wait_for_workers(3, timeout=60)
            assert client.submit(lambda x: x + 1, 10).result() == 11
            assert sum(client.gather(client.map(lambda x: x * x, range(20)))) == 2470
            pids = [int(i) for i in cluster.job_ids]
            assert len(pids) == 3 and all(_alive(p) for p in pids)
            cluster.scale(jobs=1)
            assert wait_for(lambda: len(client.scheduler_info()["workers"]) == 1, 30)
            assert wait_for(lambda: sum(_alive(p) for p in pids) == 1, 30)
    assert wait_for(lambda: not any(_alive(p) for p in pids), 15)


def test_processes_per_job_group_workers():
    with LocalCluster(cores=2, memory="2GB", processes=2) as cluster:
        cluster.scale(4)  # workers -> 2 jobs of 2 processes
        with Client(cluster) as client:
            client.wait_for_workers(4, timeout=60)
            names = sorted(w["name"] for w in client.scheduler_info()["workers"].values())
            assert len(cluster.job_ids) == 2
            assert names == sorted(f"{job}{suffix}" for job in cluster.workers for suffix in ("-0", "-1"))
            assert {w["nthreads"] for w in client.scheduler_info()["workers"].values()} == {1}
            cluster.scale(2)
            assert wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, 30)
            assert len(cluster.worker_spec) == 1


def test_scale_by_cores_and_memory():
    with LocalCluster(cores=2, memory="2GB", processes=1) as cluster:
        cluster.scale(cores=5)
        assert len(cluster.worker_spec) == 3
        cluster.scale(memory="3GB")
        assert len(cluster.worker_spec) == 2
        cluster.scale(0)


def test_adapt_scales_up_under_load_and_down_when_idle():
    with LocalCluster(cores=1, memory="1GB", processes=1) as cluster:
        adapt = cluster.adapt(minimum_jobs=0, maximum_jobs=2, interval="200ms", wait_count=2,
                              target_duration="1s")
        assert adapt.minimum == 0 and adapt.maximum == 2
        with Client(cluster) as client:
            futures = client.map(lambda x: __import__("time").sleep(0.5) or x, range(16))
            assert wait_for(lambda: len(cluster.job_ids) == 2, 60)
            assert sum(client.gather(futures)) == 120
            del futures
            assert wait_for(lambda: len(client.scheduler_info()["workers"]) == 0, 60)


def test_worker_memory_and_threads_as_requested():
    with LocalCluster(cores=2, memory="2GiB", processes=1) as cluster:
        cluster.scale(jobs=1)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=60)
            (w,) = client.scheduler_info()["workers"].values()
            assert w["nthreads"] == 2
            assert abs(w["memory_limit"] - 2 * 2**30) < 2**24


def test_async_cluster():
    async def main():
        async with LocalCluster(cores=1, memory="1GB", processes=1, asynchronous=True) as cluster:
            cluster.scale(jobs=2)
            async with Client(cluster, asynchronous=True) as client:
                await client.wait_for_workers(2, timeout=60)
                return await client.submit(lambda: 42)

    assert asyncio.run(main()) == 42


def test_prologue_runs_in_the_job(tmp_path):
    marker = tmp_path / "prologue-ran"
    with LocalCluster(cores=1, memory="1GB", processes=1,
                      job_script_prologue=[f"echo $$ > {marker}", "export JQ_TEST_VAR=hello"]) as cluster:
        cluster.scale(jobs=1)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=60)
            assert client.submit(lambda: __import__("os").environ["JQ_TEST_VAR"]).result() == "hello"
    assert marker.read_text().strip() == cluster.tracker.jobs[next(iter(cluster.tracker.jobs))].job_id


def test_cancel_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "child"
    with LocalCluster(cores=1, memory="1GB", processes=1,
                      job_script_prologue=[f"sleep 600 & echo $! > {pidfile}"]) as cluster:
        cluster.scale(jobs=1)
        cluster.wait_for_workers(1, timeout=60)
        child = int(pidfile.read_text())
        assert _alive(child)
    assert wait_for(lambda: not _alive(child), 10)


def test_unknown_keyword_rejected_with_suggestion():
    with pytest.raises(UnknownKeywordError, match="did you mean 'walltime'"):
        SLURMCluster(cores=1, memory="1GB", wall_time="01:00:00")
    with pytest.raises(TypeError):
        LocalCluster(cores=1, memory="1GB", queue_name="x")
    with pytest.raises(ValueError):
        SLURMCluster(cores=1, memory="1GB", wall_time="01:00:00")


def test_bad_values_rejected_before_start():
    with pytest.raises(ValueError, match="cores=0"):
        SLURMCluster(cores=0, memory="1GB")
    with pytest.raises(ValueError, match=r"memory='16 parsecs'"):
        SLURMCluster(cores=1, memory="16 parsecs")
    with pytest.raises(ValueError, match="scheduler_options"):
        SLURMCluster(cores=1, memory="1GB", dashboard_address=":1234")
    with pytest.raises(ValueError, match="scheduler_options"):
        SLURMCluster(cores=1, memory="1GB", host="0.0.0.0")


def test_config_keys_are_dask_jobqueues(tmp_path):
    with dask.config.set({"jobqueue.slurm.cores": 4, "jobqueue.slurm.memory": "8GB",
                          "jobqueue.slurm.queue": "batch", "jobqueue.slurm.account": "acc1",
                          "jobqueue.slurm.walltime": "02:00:00",
                          "jobqueue.slurm.job-extra-directives": ["--comment=cfg"],
                          "jobqueue.slurm.job-script-prologue": ["module load x"]}):
        with SLURMCluster() as cluster:
            script = cluster.job_script()
    for expected in ("#SBATCH -p batch", "#SBATCH -A acc1", "#SBATCH -t 02:00:00", "#SBATCH --comment=cfg",
                     "#SBATCH --cpus-per-task=4", "#SBATCH --mem=8G", "module load x"):
        assert expected in script
    # a custom config section picked with config_name=, as in dask-jobqueue
    with dask.config.set({"jobqueue.mysite": {**dask.config.get("jobqueue.slurm"), "cores": 2,
                                              "memory": "2GB", "queue": "special"}}):
        with SLURMCluster(config_name="mysite") as cluster:
            assert "#SBATCH -p special" in cluster.job_script()


def test_deprecated_aliases_work_with_a_warning():
    with pytest.warns(FutureWarning, match="job_extra has been renamed to job_extra_directives"):
        with SLURMCluster(cores=1, memory="1GB", job_extra=["--comment=old"],
                          env_extra=["echo old"], project="acc") as cluster:
            script = cluster.job_script()
    assert "#SBATCH --comment=old" in script and "echo old" in script and "#SBATCH -A acc" in script
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SLURMCluster(cores=1, memory="1GB").close()


def test_job_script_has_scheduler_address():
    with LocalCluster(cores=1, memory="1GB") as cluster:
        assert cluster.scheduler_address in cluster.job_script()
        assert "--name dummy-name" in cluster.job_script()


def test_scale_without_batch_system_on_path_fails_fast(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with SLURMCluster(cores=1, memory="1GB") as cluster:
        with pytest.raises(RuntimeError, match="sbatch` is not on PATH"):
            cluster.scale(jobs=1)


def test_failing_submission_reaches_wait_for_workers(tmp_path, monkeypatch):
    # a fake sbatch that rejects everything, as a site with a bad account would
    fake = tmp_path / "sbatch"
    fake.write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Invalid account' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with SLURMCluster(cores=1, memory="1GB") as cluster:
        cluster.scale(jobs=2)
        with pytest.raises(JobSubmissionError, match="Invalid account"):
            cluster.wait_for_workers(2, timeout=60)
        assert len(cluster.failures) == 2


def _facts_task():
    """A task reporting how this worker was started (nested, so it is pickled by value)."""
    def facts():
        import os

        import dask
        return {"method": dask.config.get("distributed.worker.multiprocessing-method"),
                "hash": hash("jobqueue"), "omp": os.environ.get("OMP_NUM_THREADS"),
                "pid": os.getpid(), "ppid": os.getppid()}
    return facts


def test_workers_forked_from_their_nanny_keep_nanny_semantics():
    """Each nanny forks its worker (no interpreter start per worker); restart, the memory
    limit and equal hashing on every worker (PYTHONHASHSEED) work as with dask's spawn."""
    from distributed import Client
    from distributed.scheduler import KilledWorker

    from jobqueue import LocalCluster

    with LocalCluster(cores=2, memory="600MB", processes=2,
                      scheduler_options={"dashboard_address": ":0"}) as cluster:
        assert "MULTIPROCESSING_METHOD=fork" in cluster.job_script()
        cluster.scale(jobs=2)
        with Client(cluster) as client:
            client.wait_for_workers(4, timeout=60)
            facts = client.run(_facts_task())
            assert {f["method"] for f in facts.values()} == {"fork"}, facts
            assert len({f["hash"] for f in facts.values()}) == 1, facts  # same seed everywhere
            assert {f["omp"] for f in facts.values()} == {"1"}, facts
            assert len({f["ppid"] for f in facts.values()}) == 2  # one process of nannies per job
            pids = {f["pid"] for f in facts.values()}

            client.restart()
            client.wait_for_workers(4, timeout=60)
            assert {f["pid"] for f in client.run(_facts_task()).values()}.isdisjoint(pids)  # new processes

            def hog():  # far over the 300 MB per worker: the nanny must end and restart it
                import time
                block = bytearray(900_000_000)
                time.sleep(10)
                return len(block)

            with pytest.raises(KilledWorker):
                client.submit(hog, retries=0).result(timeout=120)
            client.wait_for_workers(4, timeout=60)
            assert sum(client.gather(client.map(lambda x: x * 2, range(50)))) == 2450


def test_your_environment_wins_over_the_fork_defaults():
    """A prologue that sets the method or a thread count keeps it."""
    from distributed import Client

    from jobqueue import LocalCluster

    with LocalCluster(cores=1, memory="1GB", processes=1, scheduler_options={"dashboard_address": ":0"},
                      job_script_prologue=["export OMP_NUM_THREADS=3",
                                           "export DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD=spawn"]) as cluster:
        cluster.scale(jobs=1)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=60)
            (facts,) = client.run(_facts_task()).values()
            assert facts["method"] == "spawn" and facts["omp"] == "3", facts


def test_local_jobs_run_through_their_shebang_interpreter():
    """The local system runs a script through its #! line (never exec'ing a file another
    thread's fork may still hold open for writing: ETXTBSY)."""
    from jobqueue.systems.local import interpreter_argv

    assert interpreter_argv("#!/usr/bin/env bash\necho", "/j.sh") == ["/usr/bin/env", "bash", "/j.sh"]
    assert interpreter_argv("#! /bin/bash -l\necho", "/j.sh") == ["/bin/bash", "-l", "/j.sh"]
    assert interpreter_argv("#!/usr/bin/env python3 -u -X dev\n", "/j.sh") == ["/usr/bin/env", "python3 -u -X dev",
                                                                                 "/j.sh"]  # one argument, as Linux
    assert interpreter_argv("echo no shebang\n", "/j.sh") == ["/bin/sh", "/j.sh"]


def test_close_while_the_supervisor_is_closing_an_ended_job():
    """A job ended and the supervisor was still closing it (its cancel command slow) when the
    cluster closed: the close cancelled the supervisor mid-way, leaving that job neither in the
    cluster's slots nor closed, and SpecCluster's close failed with `AssertionError:
    Status.running` (seen once under load in the full suite). The cluster closes it itself."""
    import signal

    with LocalCluster(cores=1, memory="1GB", processes=1, scheduler_options={"dashboard_address": ":0"}) as cluster:
        cluster.scale(jobs=1)
        cluster.wait_for_workers(1, timeout=60)
        job = next(iter(cluster.workers.values()))
        tracker = cluster.tracker
        real_cancel = tracker.cancel
        closing = []

        async def slow_cancel(job_ids):
            closing.append(job_ids)
            await asyncio.sleep(3)
            await real_cancel(job_ids)

        tracker.cancel = slow_cancel
        os.killpg(int(job.job_id), signal.SIGKILL)  # the job ends outside the cluster's doing
        assert wait_for(lambda: closing, timeout=30)  # the supervisor is closing it now
    assert job.status.name in ("closing", "closed", "failed")
