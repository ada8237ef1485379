"""One behavioural suite for every batch system: real Slurm, real Grid Engine, the OpenPBS
emulator and the local runner. A new batch system = one Backend in backends.py."""

import time

import pytest
from distributed import Client

from backends import ALL, BATCH
from jobqueue import JobSubmissionError
from jobqueue.reports import JobFailedError
from util import wait_for


@pytest.mark.parametrize("system", ALL)
def test_scale_compute_scale_down_close(system, backend):
    with backend.cls(cores=1, memory="1GB", processes=1, walltime="00:10:00") as cluster:
        cluster.scale(jobs=3)
        with Client(cluster) as client:
            client.wait_for_workers(3, timeout=120)
            ids = list(cluster.job_ids)
            assert len(ids) == 3 and backend.alive(ids) == set(ids)
            assert client.submit(lambda x: x + 1, 10).result() == 11
            assert client.submit(sum, client.map(lambda x: x * x, range(100))).result() == 328350
            assert wait_for(lambda: {r.state for r in cluster.jobs} == {"running"}, 30), str(cluster.jobs)
            assert "3 running" in repr(cluster)
            cluster.scale(jobs=1)
            assert wait_for(lambda: len(client.scheduler_info()["workers"]) == 1, 60)
            removed = set(ids) - set(cluster.job_ids)
            assert len(removed) == 2
            assert wait_for(lambda: not backend.alive(removed), 60), f"scaled-down jobs still queued: {removed}"
            assert client.submit(lambda x: x * 2, 21).result() == 42
    assert wait_for(lambda: not backend.alive(ids), 60), "close() left jobs in the queue"
    assert all(r.state in ("cancelled", "finished") for r in cluster.jobs)
    assert cluster.failures == []  # jobs we cancelled are not failures


@pytest.mark.parametrize("system", ALL)
def test_adapt_up_under_load_and_down_when_idle(system, backend):
    with backend.cls(cores=1, memory="1GB", processes=1) as cluster:
        cluster.adapt(minimum_jobs=0, maximum_jobs=3, interval="300ms", wait_count=3, target_duration="1s")
        with Client(cluster) as client:
            futures = client.map(lambda x: __import__("time").sleep(0.5) or x, range(30))
            assert wait_for(lambda: len(cluster.job_ids) >= 2, 90), "adapt did not scale up"
            assert sum(client.gather(futures)) == 435
            submitted = set(cluster.tracker.jobs)
            del futures
            assert wait_for(lambda: len(client.scheduler_info()["workers"]) == 0, 90), "adapt did not scale down"
            assert wait_for(lambda: not backend.alive(submitted), 60)


@pytest.mark.parametrize("system", BATCH)
def test_submission_error_reaches_the_user_with_the_systems_message(system, backend):
    t0 = time.monotonic()
    with backend.cls(cores=1, memory="1GB", **(backend.bad_kwargs or {"queue": backend.bad_queue})) as cluster:
        cluster.scale(jobs=2)
        with Client(cluster) as client:
            with pytest.raises(JobSubmissionError) as err:
                client.wait_for_workers(2, timeout=120)
    elapsed = time.monotonic() - t0
    assert backend.bad_queue_message in str(err.value)
    assert "exit code" in str(err.value)
    assert elapsed < 30, f"the error took {elapsed:.1f} s to surface"


@pytest.mark.parametrize("system", BATCH)
def test_job_extra_directives_take_effect(system, backend):
    directive = backend.env_directive.format(var="JQ_MARK", value="from-directive")
    with backend.cls(cores=1, memory="1GB", processes=1, job_extra_directives=[directive]) as cluster:
        assert directive in cluster.job_script()
        cluster.scale(jobs=1)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=120)
            var = backend.env_var or "JQ_MARK"
            seen = client.run(lambda: __import__("os").environ.get(var))
            assert list(seen.values()) == ["from-directive"]


@pytest.mark.parametrize("system", BATCH)
def test_held_jobs_are_pending_with_a_reason_and_cancelled_on_close(system, backend):
    with backend.cls(cores=1, memory="1GB", job_extra_directives=list(backend.hold)) as cluster:
        cluster.scale(jobs=2)
        assert wait_for(lambda: [r.reason for r in cluster.jobs] == [backend.hold_reason] * 2, 30), str(cluster.jobs)
        assert {r.state for r in cluster.jobs} == {"pending"}
        assert f"2 pending ({backend.hold_reason})" in repr(cluster)
        ids = list(cluster.job_ids)
    assert wait_for(lambda: not backend.alive(ids), 30), "close() left pending jobs"


@pytest.mark.parametrize("system", ALL)
def test_failing_prologue_surfaces_its_output(system, backend):
    with backend.cls(cores=1, memory="1GB", processes=1,
                     job_script_prologue=["echo 'module: python/9.9 not found' >&2", "exit 3"]) as cluster:
        cluster.scale(jobs=1)
        t0 = time.monotonic()
        with pytest.raises(JobFailedError) as err:
            cluster.wait_for_workers(1, timeout=120)
        elapsed = time.monotonic() - t0
        assert "module: python/9.9 not found" in str(err.value)
        assert "exit code 3" in str(err.value), str(err.value)
        ids = list(cluster.tracker.jobs)
    print(f"\n[measure] {backend.name}: failing prologue surfaced after {elapsed:.1f} s")
    assert wait_for(lambda: not backend.alive(ids), 30)


@pytest.mark.parametrize("system", ALL)
def test_job_lost_from_outside_is_replaced(system, backend):
    with backend.cls(cores=1, memory="1GB", processes=1) as cluster:
        cluster.scale(jobs=2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            victim = cluster.job_ids[0]
            backend.kill(victim)
            assert wait_for(lambda: cluster.replacements, 60), "no replacement submitted"
            assert cluster.replacements[0]["job_id"] == victim
            assert wait_for(lambda: len(client.scheduler_info()["workers"]) == 2
                            and len(cluster.job_ids) == 2, 120)
            assert client.submit(lambda: 7).result() == 7


@pytest.mark.parametrize("system", ALL)
def test_max_pending_jobs_never_exceeded_and_the_rest_wait_their_turn(system, backend):
    with backend.cls(cores=1, memory="1GB", processes=1, max_pending_jobs=1) as cluster:
        cluster.scale(jobs=3)
        with Client(cluster) as client:
            most_pending = 0
            deadline = time.monotonic() + 120
            while len(client.scheduler_info()["workers"]) < 3 and time.monotonic() < deadline:
                pending = sum(1 for j in cluster.tracker.jobs.values() if j.state.value == "pending")
                most_pending = max(most_pending, pending)
                time.sleep(0.05)
            assert len(client.scheduler_info()["workers"]) == 3, repr(cluster)
            assert most_pending <= 1
            assert len(cluster.tracker.jobs) == 3 and cluster.tracker.commands_issued["submit"] == 3


@pytest.mark.parametrize("system", BATCH)
def test_max_jobs_holds_the_rest_back(system, backend):
    with backend.cls(cores=1, memory="1GB", processes=1, max_jobs=2,
                     job_extra_directives=list(backend.hold)) as cluster:
        cluster.scale(jobs=5)
        assert wait_for(lambda: len(cluster.job_ids) == 2, 30)
        time.sleep(2)
        assert len(cluster.tracker.jobs) == 2, "more jobs submitted than max_jobs"
        assert "3 waiting (max_jobs=2)" in repr(cluster), repr(cluster)
        ids = list(cluster.job_ids)
        assert backend.alive(ids) == set(ids)
        cluster.scale(jobs=1)  # the waiting ones go first, then one queued job
        assert wait_for(lambda: len(cluster.job_ids) == 1 and "waiting" not in repr(cluster), 30), repr(cluster)
    assert wait_for(lambda: not backend.alive(ids), 30)


def test_invalid_limits_are_rejected_before_anything_starts():
    from jobqueue import LocalCluster

    with pytest.raises(ValueError, match="max_jobs=50"):
        LocalCluster(cores=1, memory="1GB", max_jobs=0)
    with pytest.raises(ValueError, match="max_pending_jobs"):
        LocalCluster(cores=1, memory="1GB", max_pending_jobs="many")


# Moab (msub) and Flux (flux batch) have no arrays of this kind: one submission per job
@pytest.mark.parametrize("system", [s for s in BATCH if s not in ("moab", "flux")])
def test_jobs_asked_for_together_go_as_one_array(system, backend):
    with backend.cls(cores=1, memory="1GB", processes=1) as cluster:
        cluster.scale(jobs=4)
        with Client(cluster) as client:
            client.wait_for_workers(4, timeout=120)
            ids = list(cluster.job_ids)
            assert cluster.tracker.commands_issued["submit"] == 1  # one sbatch/qsub for four jobs
            assert len(set(ids)) == 4 and backend.alive(ids) == set(ids)
            if system == "oar":  # an OAR array is consecutive job ids (oar-interface.md §2)
                assert sorted(int(i) for i in ids) == list(range(min(map(int, ids)), min(map(int, ids)) + 4))
            else:
                assert len({i.replace("[", "_").replace(".", "_").split("_")[0] for i in ids}) == 1  # one array
            names = sorted(w["name"] for w in client.scheduler_info()["workers"].values())
            assert names == sorted(cluster.worker_spec)  # unique, stable names: one per element
            assert client.submit(lambda x: x + 1, 1).result() == 2
            cluster.scale(jobs=2)  # elements are cancelled one by one; the others keep running
            assert wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, 60)
            removed = set(ids) - set(cluster.job_ids)
            assert len(removed) == 2
            assert wait_for(lambda: not backend.alive(removed), 60)
            assert backend.alive(cluster.job_ids) == set(cluster.job_ids)
            assert client.submit(lambda x: x + 1, 2).result() == 3


@pytest.mark.parametrize("system", ["slurm", "local"])
def test_job_array_can_be_turned_off(system, backend):
    with backend.cls(cores=1, memory="1GB", processes=1, job_array=False) as cluster:
        cluster.scale(jobs=3)
        cluster.wait_for_workers(3, timeout=120)
        assert cluster.tracker.commands_issued["submit"] == 3
        assert all("_" not in i for i in cluster.job_ids)
