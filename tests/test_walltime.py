"""Work that outlives the walltime: workers retire in time, replacements take over, nothing is lost."""

import time

import pytest
from distributed import Client

from jobqueue import LocalCluster, SLURMCluster
from util import squeue_ids, wait_for


def _erred_tasks(client) -> int:
    return client.run_on_scheduler(
        lambda dask_scheduler: sum(ts.state == "erred" for ts in dask_scheduler.tasks.values()))


def _run_across_walltimes(cluster, client, n_tasks: int, task_seconds: float):
    """Results are kept (never released), so a retiring worker must hand them over."""

    def work(i, seconds=task_seconds):
        import time as t

        t.sleep(seconds)
        return i * i

    futures = client.map(work, range(n_tasks), pure=False)
    total = client.submit(sum, futures)
    return futures, total.result(timeout=1800)


@pytest.mark.usefixtures("slurm")
@pytest.mark.timeout(600)  # the computation itself needs 4-6 minutes: past the suite's 300 s default
def test_computation_across_three_walltimes_on_slurm():
    """walltime 00:02:00 (Slurm counts minutes); the computation needs about 6 minutes."""
    t0 = time.monotonic()
    with SLURMCluster(cores=1, memory="1GB", processes=1, walltime="00:02:00") as cluster:
        cluster.scale(jobs=2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            futures, total = _run_across_walltimes(cluster, client, n_tasks=340, task_seconds=2.0)
            elapsed = time.monotonic() - t0
            assert total == sum(i * i for i in range(340))
            assert all(f.status == "finished" for f in futures)
            assert _erred_tasks(client) == 0
            ended = [j for j in cluster.tracker.jobs.values() if j.replaced_ahead]
            # the first generation of jobs was replaced ahead of its walltime, more than once
            assert len(ended) >= 4, str(cluster.jobs)
            assert cluster.failures == []
            print(f"\n[measure] walltime run: {elapsed:.0f} s, {len(cluster.tracker.jobs)} jobs, "
                  f"erred tasks = {_erred_tasks(client)}\n{cluster.jobs}")
        ids = set(cluster.tracker.jobs)
    assert wait_for(lambda: not (ids & squeue_ids()), 60)


def test_walltime_retirement_on_the_local_system():
    """The same mechanism in under a minute: local jobs are never killed, but their workers
    retire before the walltime and replacements submitted ahead of time take over."""
    with LocalCluster(cores=1, memory="1GB", processes=1, walltime="00:45") as cluster:
        cluster.scale(jobs=2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=60)
            futures, total = _run_across_walltimes(cluster, client, n_tasks=120, task_seconds=0.5)
            assert total == sum(i * i for i in range(120))
            assert _erred_tasks(client) == 0
            # the retired workers' jobs end a moment after their workers leave (nanny shutdown, next poll)
            assert wait_for(lambda: any(j.replaced_ahead and j.finished for j in cluster.tracker.jobs.values()),
                            30), str(cluster.jobs)
            assert cluster.failures == []
