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


@pytest.mark.parametrize("system", ["lsf"])
def test_the_systems_own_warning_signal_retires_workers_with_their_data(system, backend):
    """LSF sends SIGUSR2 at the run limit and kills ten minutes later (lsf-interface.md §5.2):
    the worker retires on it, handing its results to the other worker, and nothing is lost."""
    from backends import lsfemu

    with backend.cls(cores=1, memory="1GB", processes=1, walltime="00:10") as cluster:
        cluster.scale(jobs=2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            futures = client.map(lambda i: i * i, range(40), pure=False)
            client.gather(futures)
            holders = client.who_has(futures)
            victim_worker = next(iter(next(iter(holders.values()))))
            name = client.scheduler_info()["workers"][victim_worker]["name"]
            victim = cluster.workers[name].record.job_id
            with lsfemu.locked_state() as state:  # the run limit arrives now for this job
                job = state["jobs"][victim]
                job["runlimit"] = max(1, int(__import__("time").time() - job["start"]))
            assert wait_for(lambda: victim_worker not in client.scheduler_info()["workers"], 60)
            assert client.gather(futures) == [i * i for i in range(40)]  # handed over, not recomputed
            assert _erred_tasks(client) == 0
            assert wait_for(lambda: "Closing worker gracefully" in cluster.logs().get(victim, "")
                            and "Reason: jobqueue-SIGUSR2" in cluster.logs().get(victim, ""), 30), cluster.logs().get(victim)
