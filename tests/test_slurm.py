"""SLURMCluster end to end on a real Slurm (ci/slurm/start.sh starts one)."""

import subprocess
import sys
import time

import pytest
from distributed import Client

from jobqueue import JobSubmissionError, SLURMCluster
from util import scontrol_show, squeue_ids, squeue_state, wait_for

pytestmark = pytest.mark.usefixtures("slurm")


def _gone(job_ids):
    """True once squeue lists none of job_ids as pending, running or completing."""
    return not (set(job_ids) & squeue_ids())


def test_scale_compute_scale_down_close():
    with SLURMCluster(cores=1, memory="1GB", processes=1, walltime="00:10:00") as cluster:
        cluster.scale(jobs=3)
        with Client(cluster) as client:
            client.wait_for_workers(3, timeout=120)
            ids = list(cluster.job_ids)
            assert len(ids) == 3
            assert all(squeue_state(i) == "RUNNING" for i in ids)
            assert client.submit(lambda x: x + 1, 10).result() == 11
            total = client.submit(sum, client.map(lambda x: x * x, range(100))).result()
            assert total == 328350
            hosts = {w["host"] for w in client.scheduler_info()["workers"].values()}
            assert hosts  # workers really connected from the Slurm jobs
            cluster.scale(jobs=1)
            assert wait_for(lambda: len(client.scheduler_info()["workers"]) == 1, 60)
            removed = set(ids) - set(cluster.job_ids)
            assert len(removed) == 2
            assert wait_for(lambda: _gone(removed), 60), f"scaled-down jobs still in squeue: {removed}"
    assert wait_for(lambda: _gone(ids), 60), "close() left jobs in squeue"


def test_adapt_up_under_load_and_down_when_idle():
    with SLURMCluster(cores=1, memory="1GB", processes=1) as cluster:
        cluster.adapt(minimum_jobs=0, maximum_jobs=3, interval="300ms", wait_count=3, target_duration="1s")
        with Client(cluster) as client:
            futures = client.map(lambda x: __import__("time").sleep(0.5) or x, range(30))
            assert wait_for(lambda: len(cluster.job_ids) >= 2, 90), "adapt did not scale up"
            submitted = set(cluster.tracker.jobs)
            assert sum(client.gather(futures)) == 435
            del futures
            assert wait_for(lambda: len(client.scheduler_info()["workers"]) == 0, 90), "adapt did not scale down"
            assert wait_for(lambda: _gone(submitted), 60)


def test_unknown_partition_error_names_it_within_seconds():
    t0 = time.monotonic()
    with SLURMCluster(cores=1, memory="1GB", queue="nosuchpartition") as cluster:
        cluster.scale(jobs=2)
        with pytest.raises(JobSubmissionError) as err:
            cluster.wait_for_workers(2, timeout=120)
    elapsed = time.monotonic() - t0
    assert "invalid partition specified: nosuchpartition" in str(err.value)
    assert "sbatch --parsable" in str(err.value) and "exit code 1" in str(err.value)
    assert elapsed < 30, f"the error took {elapsed:.1f} s to surface"


def test_client_wait_for_workers_also_raises():
    with SLURMCluster(cores=1, memory="1GB", queue="nosuchpartition") as cluster:
        cluster.scale(jobs=1)
        with Client(cluster) as client:
            with pytest.raises(JobSubmissionError, match="nosuchpartition"):
                client.wait_for_workers(1, timeout=120)


def test_job_extra_directives_take_effect():
    with SLURMCluster(cores=1, memory="1GB", job_extra_directives=["--comment=jobqueue-test-comment"],
                      queue="batch", job_name="jq-extra") as cluster:
        cluster.scale(jobs=1)
        cluster.wait_for_workers(1, timeout=120)
        (job_id,) = cluster.job_ids
        info = scontrol_show(job_id)
        assert "Comment=jobqueue-test-comment" in info
        assert "Partition=batch" in info and "JobName=jq-extra" in info
        assert "MinMemoryNode=954M" in info or "mem=954M" in info


def test_resources_reach_slurm_and_workers():
    with SLURMCluster(cores=4, memory="4GB", processes=2, walltime="00:07:00") as cluster:
        cluster.scale(4)  # 4 workers = 2 jobs of 2 processes
        with Client(cluster) as client:
            client.wait_for_workers(4, timeout=120)
            assert len(cluster.job_ids) == 2
            info = scontrol_show(cluster.job_ids[0])
            assert "NumCPUs=4" in info and "TimeLimit=00:07:00" in info
            workers = client.scheduler_info()["workers"].values()
            assert {w["nthreads"] for w in workers} == {2}
            assert all(abs(w["memory_limit"] - 2 * 10**9) < 2**24 for w in workers)


def test_log_directory_receives_job_output(tmp_path):
    logdir = tmp_path / "logs"
    with SLURMCluster(cores=1, memory="1GB", log_directory=str(logdir),
                      job_script_prologue=["echo prologue-output-marker"]) as cluster:
        cluster.scale(jobs=1)
        cluster.wait_for_workers(1, timeout=120)
        (job_id,) = cluster.job_ids
    out = logdir / f"dask-worker-{job_id}.out"
    err = logdir / f"dask-worker-{job_id}.err"
    assert wait_for(lambda: out.exists() and "prologue-output-marker" in out.read_text(), 30)
    assert wait_for(lambda: err.exists() and "distributed" in err.read_text(), 30)


def test_close_cancels_pending_jobs_too():
    # --begin keeps the jobs pending: close() must still remove them from the queue
    with SLURMCluster(cores=1, memory="1GB", job_extra_directives=["--begin=now+600"]) as cluster:
        cluster.scale(jobs=2)
        assert wait_for(lambda: len(cluster.job_ids) == 2, 30)
        ids = list(cluster.job_ids)
        assert wait_for(lambda: all(squeue_state(i) == "PENDING" for i in ids), 30)
    assert wait_for(lambda: _gone(ids), 30)
    assert all(squeue_state(i) in ("CANCELLED", "") for i in ids)


def test_same_script_as_dask_jobqueue(tmp_path):
    """The directives match dask-jobqueue 0.9.0's for the same keywords (when it is installed)."""
    code = r'''
import sys, json
try:
    from dask_jobqueue import SLURMCluster
except ImportError:
    print("{}"); sys.exit(0)
kw = dict(cores=8, memory="16GB", processes=2, queue="batch", account="acc", walltime="01:00:00",
          job_extra_directives=["--comment=x"], job_script_prologue=["module load y"],
          log_directory=sys.argv[1],
          scheduler_options={"dashboard_address": ":0"})
with SLURMCluster(**kw) as c:
    print(json.dumps({"header": c.job_header}))
'''
    logdir = str(tmp_path / "logs")
    out = subprocess.run([sys.executable, "-c", code, logdir], capture_output=True, text=True, timeout=120)
    import json

    theirs = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {}
    if not theirs:
        pytest.skip("dask-jobqueue is not installed")
    with SLURMCluster(cores=8, memory="16GB", processes=2, queue="batch", account="acc", walltime="01:00:00",
                      job_extra_directives=["--comment=x"], job_script_prologue=["module load y"],
                      log_directory=logdir) as cluster:
        assert cluster.job_header == theirs["header"]


def test_demo_finds_slurm_on_path():
    out = subprocess.run([sys.executable, "-m", "jobqueue.cli", "demo"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "on the slurm batch system (SLURMCluster)" in out.stdout
    assert "computed on the cluster: 20540 (expected 20540)" in out.stdout
    assert "slurm lists none of them as queued or running any more" in out.stdout
