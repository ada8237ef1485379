"""Job lifecycle on the real Slurm and the local system: states, failures, healing, orphans."""

import os
import signal
import subprocess
import sys
import time

import pytest
from distributed import Client

from jobqueue import LocalCluster, SLURMCluster
from jobqueue.reports import JobFailedError
from backends import ALL
from util import squeue_ids, wait_for

slurm = pytest.mark.usefixtures("slurm")
CLUSTERS = {"slurm": SLURMCluster, "local": LocalCluster}


def _system(request, name):
    if name == "slurm":
        request.getfixturevalue("slurm")
    return CLUSTERS[name]


@slurm
def test_pending_jobs_listed_with_their_reason():
    with SLURMCluster(cores=1, memory="1GB", job_extra_directives=["--begin=now+120"]) as cluster:
        cluster.scale(jobs=3)
        assert wait_for(lambda: [r.reason for r in cluster.jobs] == ["BeginTime"] * 3, 30), str(cluster.jobs)
        assert {r.state for r in cluster.jobs} == {"pending"}
        assert "jobs: 3 pending (BeginTime)" in repr(cluster)
        assert "3 pending (BeginTime)" in cluster._repr_html_()
        assert "BeginTime" in str(cluster.jobs) and "job_id" in str(cluster.jobs)


@slurm
def test_running_and_pending_summarized():
    with SLURMCluster(cores=1, memory="1GB") as cluster:
        cluster.scale(jobs=1)
        cluster.wait_for_workers(1, timeout=60)
        held = subprocess.run(["sbatch", "--parsable", "--hold", "--wrap", "true"], capture_output=True,
                              text=True).stdout.strip()
        try:
            assert wait_for(lambda: "1 running" in repr(cluster), 30)
            assert [r.workers for r in cluster.jobs] == [1]
        finally:
            subprocess.run(["scancel", held])


@pytest.mark.parametrize("system", ["slurm", "local"])
def test_failing_prologue_surfaces_stderr_within_seconds(request, system):
    cls = _system(request, system)
    t0 = time.monotonic()
    with cls(cores=1, memory="1GB", processes=1,
             job_script_prologue=["echo 'module: python/9.9 not found' >&2", "exit 3"]) as cluster:
        cluster.scale(jobs=2)
        with pytest.raises(JobFailedError) as err:
            cluster.wait_for_workers(2, timeout=300)
        elapsed = time.monotonic() - t0
        report = str(err.value)
        assert "ended before any of its workers connected" in report
        assert "exit code 3" in report
        assert "module: python/9.9 not found" in report
        assert elapsed < 60, f"took {elapsed:.1f} s"
        submitted = len(cluster.tracker.jobs)
        assert submitted <= 2 + cluster.supervisor.max_start_failures  # no thrashing queue
        time.sleep(2)
        assert len(cluster.tracker.jobs) == submitted  # and nothing more after giving up
        assert all(r.state == "failed" for r in cluster.jobs)
        logs = cluster.logs()
        assert set(logs) == set(cluster.tracker.jobs)
        assert all("module: python/9.9 not found" in text for text in logs.values())
    print(f"\n[measure] {system}: failing prologue surfaced after {elapsed:.1f} s")
    if system == "slurm":
        assert wait_for(lambda: not (set(cluster.tracker.jobs) & squeue_ids()), 30)


@slurm
def test_a_job_the_batch_system_requeues_is_replaced_at_once():
    """Slurm requeues a running job whose node failed (scontrol requeue does the same) and holds
    it pending ~2 minutes (BeginTime); its workers are gone. The cluster ends it and submits a
    replacement now, instead of running with a worker short until the rerun."""
    with SLURMCluster(cores=1, memory="1GB", processes=1) as cluster:
        cluster.scale(jobs=2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            victim = cluster.job_ids[0]
            subprocess.run(["scontrol", "requeue", victim], check=True, timeout=30)
            assert wait_for(lambda: cluster.replacements, 60), f"no replacement submitted\n{cluster.jobs}"
            assert cluster.replacements[0]["job_id"] == victim
            assert "requeued by the batch system" in cluster.replacements[0]["cause"]
            assert wait_for(lambda: victim not in squeue_ids(), 30), "the requeued job was left in the queue"
            assert wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, 60)
            assert client.submit(lambda: 7).result() == 7


@pytest.mark.parametrize("system", ["slurm", "local"])
def test_job_killed_from_outside_is_replaced(request, system):
    cls = _system(request, system)
    with cls(cores=1, memory="1GB", processes=1) as cluster:
        cluster.scale(jobs=2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            victim = cluster.job_ids[0]
            if system == "slurm":
                subprocess.run(["scancel", victim], check=True)
            else:
                os.killpg(int(victim), signal.SIGKILL)
            assert wait_for(lambda: cluster.replacements, 60), "no replacement submitted"
            assert cluster.replacements[0]["job_id"] == victim
            assert victim not in cluster.job_ids
            assert wait_for(lambda: len(client.scheduler_info()["workers"]) == 2 and len(cluster.job_ids) == 2, 120)
            assert client.submit(lambda: 7).result() == 7
            assert cluster.failures == []  # it had workers: a loss, not a start failure


@slurm
def test_status_commands_do_not_grow_with_the_number_of_jobs(tmp_path, monkeypatch):
    """One squeue per poll interval, whether 5 or 50 jobs wait."""
    counter = tmp_path / "squeue-calls"
    shim = tmp_path / "bin" / "squeue"
    shim.parent.mkdir()
    real = subprocess.run(["which", "squeue"], capture_output=True, text=True).stdout.strip()
    shim.write_text(f"#!/bin/sh\necho \"$*\" >> {counter}\nexec {real} \"$@\"\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}:{os.environ['PATH']}")
    calls = {}
    for n in (5, 50):
        counter.write_text("")
        with SLURMCluster(cores=1, memory="100MB", poll_interval=0.5,
                          job_extra_directives=["--hold"]) as cluster:
            cluster.scale(jobs=n)
            assert wait_for(lambda: len(cluster.job_ids) == n, 60)
            counter.write_text("")
            time.sleep(5)
            lines = counter.read_text().splitlines()
            calls[n] = len(lines)
            assert all(line.count(",") == n - 1 for line in lines)  # every call asks about all n jobs
            assert cluster.tracker.summary() == {"pending": n}
    print(f"\n[measure] squeue calls in 5 s: {calls}")
    assert 5 <= calls[5] <= 12 and 5 <= calls[50] <= 12
    assert abs(calls[5] - calls[50]) <= 2


OWNER = r'''
import sys, time
import dask
import jobqueue
dask.config.set({f"jobqueue.{n}.scheduler-options": {"dashboard_address": ":0"}
                 for n in ("slurm", "sge", "pbs", "local")})
cls = getattr(jobqueue, sys.argv[2])
running = cls(cores=1, memory="1GB", processes=1)
running.scale(jobs=2)
running.wait_for_workers(2, timeout=120)
ids = list(running.job_ids)
hold = sys.argv[3:]
if hold:
    pending = cls(cores=1, memory="1GB", processes=1, job_extra_directives=hold)
    pending.scale(jobs=2)
    while len(pending.job_ids) < 2:
        time.sleep(0.1)
    ids += pending.job_ids
print("READY", " ".join(ids), flush=True)
time.sleep(600)
'''



@pytest.mark.parametrize("system", ALL)
def test_sigkill_of_owner_leaves_no_job(system, backend, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", OWNER, system, backend.cluster, *backend.hold],
                            stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY"), line
        ids = line.split()[1:]
        assert len(ids) == (4 if backend.hold else 2)
        assert backend.alive(ids) == set(ids)
        proc.kill()
        proc.wait()
        t0 = time.monotonic()
        gone = wait_for(lambda: not backend.alive(ids), 30)
        elapsed = time.monotonic() - t0
        assert gone, f"jobs {backend.alive(ids)} outlived their owner"
        print(f"\n[measure] {system}: queue empty {elapsed:.1f} s after SIGKILL of the owner "
              f"({len(ids)} jobs, {len(ids) - 2} of them pending)")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cleanup_cancels_what_stale_journals_list(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from jobqueue.cli import main

    monkeypatch.setenv("DASK_JOBQUEUE__STATE_DIRECTORY", str(tmp_path))
    victim = subprocess.Popen(["sleep", "600"], start_new_session=True)
    (tmp_path / "journals").mkdir()
    dead_owner = subprocess.Popen(["true"])
    dead_owner.wait()
    (tmp_path / "journals" / "c1.json").write_text(json.dumps(
        {"owner_pid": dead_owner.pid, "owner_started": None, "system": "local", "job_ids": [str(victim.pid)],
         "cancel_argv": ["kill", "-KILL", "--", f"-{victim.pid}"]}))
    (tmp_path / "journals" / "c2.json").write_text(json.dumps(
        {"owner_pid": os.getpid(), "owner_started": None, "system": "local", "job_ids": ["1"]}))
    import dask

    with dask.config.set({"jobqueue.state-directory": str(tmp_path)}):
        result = CliRunner().invoke(main, ["cleanup"])
    assert result.exit_code == 0, result.output
    assert f"cancelled local jobs {victim.pid} (`kill -KILL -- -{victim.pid}`)" in result.output
    assert victim.wait(10) == -signal.SIGKILL
    assert not (tmp_path / "journals" / "c1.json").exists()
    assert (tmp_path / "journals" / "c2.json").exists()  # its owner (this process) lives


def test_journal_is_owner_only_and_gone_after_close():
    with LocalCluster(cores=1, memory="1GB", processes=1) as cluster:
        cluster.scale(jobs=1)
        cluster.wait_for_workers(1, timeout=60)
        path = cluster.tracker.journal.path
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert os.stat(os.path.dirname(path)).st_mode & 0o077 == 0
        assert cluster.tracker.watchdog.poll() is None
        watchdog = cluster.tracker.watchdog
    assert not os.path.exists(path)
    assert watchdog.poll() is not None  # exited with the clean close


@slurm
def test_loopback_scheduler_refused_before_submission():
    with SLURMCluster(cores=1, memory="1GB", scheduler_options={"host": "127.0.0.1"}) as cluster:
        with pytest.raises(ValueError, match="loopback address .* interface="):
            cluster.scale(jobs=1)
        assert cluster.tracker.jobs == {}


def test_unreachable_scheduler_report_names_address_and_suggests_interface(tmp_path):
    tpl = tmp_path / "unreachable.sh.j2"
    # the worker dials a closed port, as one on a node that cannot route to us would
    tpl.write_text('{% extends "local.sh.j2" %}{% block worker %}'
                   '{{ worker_argv[0] }} -m distributed.cli.dask_worker tcp://127.0.0.1:9 --death-timeout 2 '
                   '--no-nanny\n{% endblock %}\n')
    with LocalCluster(cores=1, memory="1GB", processes=1, template=str(tpl), max_start_failures=1) as cluster:
        cluster.scale(jobs=1)
        with pytest.raises(JobFailedError) as err:
            cluster.wait_for_workers(1, timeout=120)
    report = str(err.value)
    assert "could not reach the scheduler" in report and cluster.scheduler_address in report
    assert "interface=" in report and "scheduler_options" in report


def test_a_worker_that_cannot_reach_the_scheduler_ends_its_job_within_seconds(tmp_path):
    """The worker's preload probes the scheduler when it has not registered after
    JOBQUEUE_REACH_TIMEOUT s: nothing answers, so it exits with the address it tried instead of
    retrying for death_timeout (60 s here). (tests/test_multihost.py: the same across hosts.)"""
    tpl = tmp_path / "unreachable.sh.j2"
    tpl.write_text('{% extends "local.sh.j2" %}{% block worker %}export JOBQUEUE_REACH_TIMEOUT=2\n'
                   '{{ worker_argv[0] }} -m distributed.cli.dask_worker tcp://127.0.0.1:9 --death-timeout 60 '
                   '--preload jobqueue.runtime.worker --preload-nanny jobqueue.runtime.worker\n{% endblock %}\n')
    t0 = time.monotonic()
    with LocalCluster(cores=1, memory="1GB", processes=1, template=str(tpl), max_start_failures=1) as cluster:
        cluster.scale(jobs=1)
        with pytest.raises(JobFailedError) as err:
            cluster.wait_for_workers(1, timeout=120)
    elapsed = time.monotonic() - t0
    report = str(err.value)
    assert "cannot reach the scheduler at tcp://127.0.0.1:9: [Errno 111] Connection refused" in report, report
    assert "exit code 68" in report and "interface=" in report, report
    assert elapsed < 40, f"reported after {elapsed:.0f} s, as if it had waited for death_timeout"
