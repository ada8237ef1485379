"""Every safety net against the fault that defeats it, on the real Slurm (and Grid Engine,
the PBS emulator and the local system where the fault is theirs too).

Faults are injected, never imagined: PATH wrappers in front of the real commands
(tests/faults.py), the Slurm controller stopped and restarted with its job state kept,
owners SIGKILLed by parents that do not reap them, scripts that end without close().
Each test failed before its fix (issue 13); the item number is in its docstring.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import dask
import pytest
from distributed import Client

from backends import ALL
from faults import Wrappers, calls, start_slurmctld, stop_slurmctld
from jobqueue import LocalCluster, SLURMCluster
from util import squeue_ids, wait_for

slurm = pytest.mark.usefixtures("slurm")


@pytest.fixture
def outage(slurm):
    """stop() the Slurm controller (state kept), start() it again; started again in any case."""
    class Outage:
        stopped = False

        def stop(self):
            stop_slurmctld()
            self.stopped = True

        def start(self):
            start_slurmctld()
            self.stopped = False

    o = Outage()
    yield o
    if o.stopped:
        start_slurmctld()


# --- item 10: use after close -------------------------------------------------------------
def test_use_after_close_says_closed():
    """Item 10: scale/adapt/wait_for_workers on a closed cluster raise, and its repr says closed."""
    cluster = LocalCluster(cores=1, memory="1GB", processes=1)
    client = Client(cluster)
    cluster.close()
    try:
        assert "closed" in repr(cluster)
        for call in (lambda: cluster.scale(jobs=2), lambda: cluster.adapt(maximum_jobs=2),
                     lambda: cluster.wait_for_workers(1, timeout=5), lambda: client.wait_for_workers(1, timeout=5)):
            with pytest.raises(RuntimeError, match="LocalCluster is closed.*start a new cluster"):
                call()
        cluster.scale(0)  # scaling to nothing is what close itself does: no error
    finally:
        client.close()


# --- item 8: polling while jobs wait for a queue-limit turn ---------------------------------
@slurm
def test_polling_slows_down_while_jobs_wait_for_a_turn(tmp_path, monkeypatch):
    """Item 8: with jobs waiting for a max_jobs turn and nothing changing, squeue runs at the
    steady interval, not the fast one forever."""
    log = Wrappers(tmp_path, monkeypatch).count("squeue")
    with dask.config.set({"jobqueue.fast-poll-duration": "2s"}):
        with SLURMCluster(cores=1, memory="100MB", poll_interval=2, max_jobs=1,
                          job_extra_directives=["--hold"]) as cluster:
            cluster.scale(jobs=3)
            assert wait_for(lambda: len(cluster.job_ids) == 1, 30)
            time.sleep(3)  # the fast window after the submission ends
            log.write_text("")
            time.sleep(10)
            n = len(calls(log))
            assert "2 waiting (max_jobs=1)" in repr(cluster)
    print(f"\n[measure] squeue calls in 10 s with 2 jobs waiting and nothing changing: {n} "
          f"({n * 6} a minute)")
    assert n <= 7, f"{n} squeue calls in 10 s at a 2 s poll interval"


# --- item 6: exit without close -------------------------------------------------------------
EXITS = r'''
import os, signal, sys, time
import dask
from jobqueue import SLURMCluster, LocalCluster
cls = {"slurm": SLURMCluster, "local": LocalCluster}[sys.argv[1]]
cluster = cls(cores=1, memory="1GB", processes=1, scheduler_options={"dashboard_address": ":0"})
cluster.scale(jobs=2)
cluster.wait_for_workers(2, timeout=120)
print("IDS", " ".join(cluster.job_ids), flush=True)
if sys.argv[2] == "raise":
    raise RuntimeError("the analysis failed")
if sys.argv[2] == "interrupt":
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(30)
'''


@pytest.mark.parametrize("system", ["slurm", "local"])
@pytest.mark.parametrize("how", ["end", "raise", "interrupt"])
def test_a_script_that_ends_without_close_closes_its_cluster(system, how, backend, tmp_path):
    """Item 6: ending (or raising, or Ctrl-C) without close() closes the cluster at exit:
    no traceback of ours, no false "rejected" error, no job left, no watchdog needed."""
    env = {**os.environ, "DASK_JOBQUEUE__STATE_DIRECTORY": str(tmp_path / "state")}
    out = subprocess.run([sys.executable, "-c", EXITS, system, how], capture_output=True, text=True,
                         timeout=180, env=env, cwd=tmp_path)
    ids = out.stdout.split("IDS", 1)[1].split() if "IDS" in out.stdout else []
    assert len(ids) == 2, out.stdout + out.stderr
    assert wait_for(lambda: not backend.alive(ids), 10), f"jobs {backend.alive(ids)} outlived the script"
    for bad in ("cannot schedule new futures", "rejected the job", "Task exception was never retrieved"):
        assert bad not in out.stderr, out.stderr
    if how == "raise":
        assert "RuntimeError: the analysis failed" in out.stderr
    watchdog_log = tmp_path / "state" / "journals" / "watchdog.log"
    assert "is gone" not in (watchdog_log.read_text() if watchdog_log.exists() else ""), \
        "the watchdog had to cancel the jobs: the exit-time close did not"


# --- item 1: a zombie owner -----------------------------------------------------------------
OWNER = r'''
import sys, time
import jobqueue
cls = getattr(jobqueue, sys.argv[1])
hold = sys.argv[2:]
cluster = cls(cores=1, memory="1GB", processes=1, job_extra_directives=hold,
              scheduler_options={"dashboard_address": ":0"})
cluster.scale(jobs=2)
while len(cluster.job_ids) < 2:
    time.sleep(0.1)
print("READY", " ".join(cluster.job_ids), flush=True)
time.sleep(600)
'''


@pytest.mark.parametrize("system", ["slurm", "sge", "lsf", "local"])
def test_owner_killed_by_a_parent_that_does_not_reap(system, backend, tmp_path):
    """Item 1: the owner is SIGKILLed and left a zombie (its parent -- this test -- does not
    wait for it): its pending jobs are cancelled all the same."""
    proc = subprocess.Popen([sys.executable, "-c", OWNER, backend.cluster, *backend.hold],
                            stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY"), line
        ids = line.split()[1:]
        os.kill(proc.pid, signal.SIGKILL)
        assert wait_for(lambda: open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z", 10)
        t0 = time.monotonic()
        gone = wait_for(lambda: not backend.alive(ids), 30)
        assert os.path.exists(f"/proc/{proc.pid}"), "the owner was reaped: the test did not test a zombie"
        assert gone, f"jobs {backend.alive(ids)} of a zombie owner are still queued"
        print(f"\n[measure] {system}: jobs of a zombie owner gone {time.monotonic() - t0:.1f} s after its SIGKILL")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


# --- item 2: a cancel during a controller outage --------------------------------------------
def _journal(state_dir):
    import json

    paths = list((state_dir / "journals").glob("*.json"))
    return json.loads(paths[0].read_text()) if paths else None


@slurm
def test_close_during_a_controller_outage_cancels_once_it_returns(outage, tmp_path):
    """Item 2: close() while slurmctld is down cannot cancel; the journal stays (marked
    closed) and the watchdog retries with backoff until Slurm confirms, then removes it."""
    state = tmp_path / "state"
    with dask.config.set({"jobqueue.state-directory": str(state)}):
        cluster = SLURMCluster(cores=1, memory="100MB", job_extra_directives=["--hold"])
        cluster.scale(jobs=2)
        assert wait_for(lambda: len(cluster.job_ids) == 2, 30)
        ids = list(cluster.job_ids)
        outage.stop()
        cluster.close()
        journal = _journal(state)
        assert journal and journal["closed"] and sorted(journal["job_ids"]) == sorted(ids), journal
        time.sleep(12)  # the watchdog has tried (each try waits 9 s for the controller) and failed
        outage.start()
        t0 = time.monotonic()
        assert wait_for(lambda: not (set(ids) & squeue_ids()), 90), f"jobs {ids} survived the outage"
        print(f"\n[measure] close() during an outage: jobs cancelled {time.monotonic() - t0:.1f} s "
              "after slurmctld returned")
        assert wait_for(lambda: _journal(state) is None, 30), "the journal outlived the confirmed cancel"
    log = (state / "journals" / "watchdog.log").read_text()
    assert "Unable to contact slurm controller" in log and "cancelled slurm jobs" in log, log


@slurm
def test_owner_killed_during_a_controller_outage_leaves_no_job(outage, tmp_path):
    """Item 2: the owner dies while slurmctld is down; its watchdog keeps trying until it is back."""
    env = {**os.environ, "DASK_JOBQUEUE__STATE_DIRECTORY": str(tmp_path / "state")}
    proc = subprocess.Popen([sys.executable, "-c", OWNER, "SLURMCluster", "--hold"], stdout=subprocess.PIPE,
                            text=True, cwd=tmp_path, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY"), line
        ids = line.split()[1:]
        outage.stop()
        proc.kill()
        proc.wait()
        time.sleep(12)  # at least one cancel fails against the stopped controller
        outage.start()
        t0 = time.monotonic()
        assert wait_for(lambda: not (set(ids) & squeue_ids()), 90), f"jobs {ids} outlived their owner"
        print(f"\n[measure] owner killed during an outage: jobs cancelled {time.monotonic() - t0:.1f} s "
              "after slurmctld returned")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (tmp_path / "state" / "journals" / "watchdog.log").read_text()
    assert "Unable to contact slurm controller" in log and "cancelled slurm jobs" in log, log


# --- item 3: a status answer that omits jobs ------------------------------------------------
@slurm
def test_an_empty_status_answer_neither_ends_nor_duplicates_jobs(tmp_path, monkeypatch):
    """Item 3: squeue answers nothing (exit 0) for a while: no job is taken as ended, nothing
    is replaced or counted as a start failure, the journal keeps every job, close() leaves none."""
    wrappers = Wrappers(tmp_path, monkeypatch)
    flag = wrappers.fail_while("squeue", stderr="", code=0)  # empty output, success
    flag.unlink()
    state = tmp_path / "state"
    with dask.config.set({"jobqueue.state-directory": str(state)}):
        with SLURMCluster(cores=1, memory="100MB", processes=1) as cluster:
            cluster.scale(jobs=2)
            cluster.wait_for_workers(2, timeout=120)
            ids = sorted(cluster.job_ids)
            flag.write_text("")
            time.sleep(6)  # a dozen empty answers at the fast interval
            assert sorted(_journal(state)["job_ids"]) == ids  # still journaled meanwhile
            flag.unlink()
            time.sleep(2)
            assert sorted(cluster.tracker.jobs) == ids, f"jobs submitted meanwhile: {sorted(cluster.tracker.jobs)}"
            assert cluster.replacements == [] and cluster.failures == []
            assert sorted(cluster.job_ids) == ids and {r.state for r in cluster.jobs} == {"running"}
    assert wait_for(lambda: not (set(ids) & squeue_ids()), 30), "close() left the jobs queued"


@slurm
def test_a_job_that_vanishes_for_good_is_replaced_after_lost_after(tmp_path, monkeypatch):
    """Item 3, the other side: a job that squeue keeps omitting and scontrol does not know
    (purged) is taken as ended after jobqueue.lost-after, and replaced."""
    wrappers = Wrappers(tmp_path, monkeypatch)
    with SLURMCluster(cores=1, memory="100MB", processes=1) as cluster:
        cluster.scale(jobs=1)
        cluster.wait_for_workers(1, timeout=120)
        victim = cluster.job_ids[0]
        # from now on neither squeue nor scontrol lists the victim (as after a purge)
        wrappers.wrap("squeue", f'"$REAL" "$@" | grep -v "^{victim}|"; exit 0')
        wrappers.wrap("scontrol", f'"$REAL" "$@" | grep -v "JobId={victim.split("_")[0]} "; exit 0')
        subprocess.run(["/usr/bin/scancel" if os.path.exists("/usr/bin/scancel") else "scancel", victim], check=True)
        t0 = time.monotonic()
        assert wait_for(lambda: cluster.replacements, 60), "the vanished job was never replaced"
        waited = time.monotonic() - t0
        assert cluster.replacements[0]["job_id"] == victim
        assert waited >= 9, f"replaced after {waited:.1f} s: a single omission was taken as the end"
        cluster.wait_for_workers(1, timeout=120)


# --- item 7: a refused submission is retried -------------------------------------------------
@pytest.mark.parametrize("how", ["scale", "adapt"])
def test_scale_during_a_controller_outage_reaches_its_size_when_it_returns(how, outage):
    """Item 7: sbatch fails while slurmctld is down (15 s+); the jobs wait, the repr says for
    what, and the cluster reaches the requested size by itself once the controller is back."""
    with SLURMCluster(cores=1, memory="100MB", processes=1) as cluster:
        outage.stop()
        if how == "scale":
            cluster.scale(jobs=2)
        else:
            cluster.adapt(minimum_jobs=2, maximum_jobs=2)
        assert wait_for(lambda: "waiting to resubmit" in repr(cluster), 30), repr(cluster)
        assert "Unable to contact slurm controller" in repr(cluster)
        assert cluster.failures == []  # not a failure: it passes
        time.sleep(8)
        outage.start()
        t0 = time.monotonic()
        cluster.wait_for_workers(2, timeout=120)
        print(f"\n[measure] {how}() during a controller outage: 2 workers {time.monotonic() - t0:.1f} s "
              "after slurmctld returned")
        assert len(cluster.tracker.jobs) == 2  # no duplicates


@pytest.mark.parametrize("system", ["sge", "pbs"])
def test_qsub_refused_for_now_is_retried(system, backend, tmp_path, monkeypatch):
    """Item 7 on Grid Engine and PBS: qsub cannot reach its server (the messages the research
    notes and a stopped sge_qmaster give); the jobs are submitted once it answers again."""
    message = {"sge": "error: commlib error: got select error (Connection refused)",
               "pbs": "qsub: cannot connect to server pbs-emu (errno=111)"}[system]
    flag = Wrappers(tmp_path, monkeypatch, path=os.environ["PATH"]).fail_while("qsub", message)
    with backend.cls(cores=1, memory="1GB", processes=1) as cluster:
        cluster.scale(jobs=2)
        assert wait_for(lambda: "waiting to resubmit" in repr(cluster), 30), repr(cluster)
        time.sleep(3)
        flag.unlink()
        cluster.wait_for_workers(2, timeout=120)
        assert cluster.failures == []


@slurm
def test_a_permanent_refusal_still_fails_fast():
    """Item 7, the other side: an invalid partition is not retried."""
    from jobqueue import JobSubmissionError

    with SLURMCluster(cores=1, memory="100MB", queue="nosuchpartition") as cluster:
        cluster.scale(jobs=1)
        t0 = time.monotonic()
        with pytest.raises(JobSubmissionError, match="invalid partition"):
            cluster.wait_for_workers(1, timeout=60)
        assert time.monotonic() - t0 < 15


# --- items 4 and 5: a submission whose answer is odd, late or never arrives ------------------
@slurm
def test_a_notice_line_before_the_job_id_is_read(tmp_path, monkeypatch):
    """Item 4: a site's sbatch wrapper prints a notice before the id."""
    Wrappers(tmp_path, monkeypatch).wrap("sbatch", 'echo "NOTICE: project proj has 12.5 core-hours left"')
    with SLURMCluster(cores=1, memory="100MB", processes=1) as cluster:
        cluster.scale(jobs=2)
        cluster.wait_for_workers(2, timeout=120)
        assert cluster.failures == [] and len(cluster.tracker.jobs) == 2
        ids = list(cluster.job_ids)
    assert wait_for(lambda: not (set(ids) & squeue_ids()), 30)


@slurm
def test_sbatch_that_times_out_after_the_controller_accepted_the_job(tmp_path, monkeypatch):
    """Item 4: sbatch submits, then hangs past the command timeout: the job is found by its
    unique name and tracked -- not submitted twice, not left behind."""
    before = squeue_ids()
    Wrappers(tmp_path, monkeypatch).wrap("sbatch", '"$REAL" "$@"; exec sleep 60')
    with dask.config.set({"jobqueue.command-timeout": "5s"}):
        with SLURMCluster(cores=1, memory="100MB", processes=1, job_array=False) as cluster:
            cluster.scale(jobs=2)
            cluster.wait_for_workers(2, timeout=120)  # the workers may connect before sbatch "returns"
            assert wait_for(lambda: len(cluster.tracker.jobs) == 2, 30), sorted(cluster.tracker.jobs)
            assert squeue_ids() - before == set(cluster.job_ids)  # nothing untracked
            assert cluster.failures == []
            assert wait_for(lambda: all(j.workers_seen for j in cluster.tracker.jobs.values()), 10)
    assert wait_for(lambda: not (squeue_ids() - before), 30), "jobs left behind"


SLOW_SUBMIT_OWNER = r'''
import time
from jobqueue import SLURMCluster
cluster = SLURMCluster(cores=1, memory="100MB", processes=1, job_extra_directives=["--hold"],
                       scheduler_options={"dashboard_address": ":0"})
cluster.scale(jobs=1)
print("SCALED", flush=True)
time.sleep(600)
'''


@slurm
def test_owner_killed_while_sbatch_is_still_running(tmp_path, monkeypatch):
    """Item 5: the owner dies while sbatch still runs; the job lands afterwards, with no id
    in any journal. Its intent (unique name) was journaled first: the watchdog cancels it."""
    started, landed = tmp_path / "started", tmp_path / "landed"
    Wrappers(tmp_path, monkeypatch).wrap("sbatch", f'touch {started}; sleep 4; "$REAL" "$@" > {landed}; '
                                                   f'cat {landed}; exit 0')
    env = {**os.environ, "DASK_JOBQUEUE__STATE_DIRECTORY": str(tmp_path / "state")}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SUBMIT_OWNER], stdout=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=env)
    try:
        assert wait_for(lambda: started.exists(), 60), "sbatch never started"
        proc.kill()
        proc.wait()
        assert wait_for(lambda: landed.exists() and landed.read_text().strip(), 30), "the late job never landed"
        job_id = landed.read_text().strip().split(";")[0]
        t0 = time.monotonic()
        assert wait_for(lambda: job_id not in squeue_ids(), 30), f"job {job_id} of a dead owner is still queued"
        print(f"\n[measure] a job that landed after its owner died: cancelled by name "
              f"{time.monotonic() - t0:.1f} s after it appeared")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- item 11: a failing prologue ---------------------------------------------------------------
@pytest.mark.parametrize("system", ALL)
def test_a_failing_prologue_line_fails_the_job(system, backend):
    """Item 11: `source` of a missing environment (a failed module load or conda activate
    looks the same) fails the job, reported with the shell's message -- the workers do not
    start in the wrong environment."""
    from jobqueue import JobFailedError

    with backend.cls(cores=1, memory="1GB", processes=1, max_start_failures=1,
                     job_script_prologue=["source /nonexistent/env.sh", "echo prologue went on"]) as cluster:
        cluster.scale(jobs=1)
        with pytest.raises(JobFailedError) as err:
            cluster.wait_for_workers(1, timeout=120)
    report = str(err.value)
    assert "/nonexistent/env.sh" in report and "exit code 1" in report, report
    assert "prologue went on" not in report


def test_strict_prologue_false_runs_the_workers_anyway():
    """Item 11's opt-out, for sites whose prologue returns non-zero harmlessly."""
    with LocalCluster(cores=1, memory="1GB", processes=1, job_script_prologue=["false"],
                      strict_prologue=False) as cluster:
        cluster.scale(jobs=1)
        cluster.wait_for_workers(1, timeout=60)
    with dask.config.set({"jobqueue.local.strict-prologue": False}):
        with LocalCluster(cores=1, memory="1GB", job_script_prologue=["false"]) as cluster:
            assert "set -e" not in cluster.job_script()


# --- item 12: scale-down order, and how close() ends jobs -------------------------------------
@slurm
def test_scale_down_removes_waiting_jobs_before_queued_ones():
    """Item 12: with max_jobs, scaling down drops jobs still waiting for a turn before jobs
    already queued at Slurm (which would lose their place in the queue)."""
    with SLURMCluster(cores=1, memory="100MB", max_jobs=1, job_extra_directives=["--hold"]) as cluster:
        cluster.scale(jobs=1)
        assert wait_for(lambda: len(cluster.job_ids) == 1, 30)
        first = cluster.job_ids[0]
        cluster.scale(jobs=2)  # the second waits for a turn
        assert wait_for(lambda: "1 waiting" in repr(cluster), 30), repr(cluster)
        subprocess.run(["scancel", first], check=True)  # the first ends: the waiting one gets the turn,
        assert wait_for(lambda: len(cluster.job_ids) == 1 and cluster.job_ids[0] != first, 60)
        queued = cluster.job_ids[0]  # and the first's replacement waits now (its name comes first)
        assert wait_for(lambda: "1 waiting" in repr(cluster), 30), repr(cluster)
        cluster.scale(jobs=1)
        time.sleep(2)
        assert cluster.job_ids == [queued], f"the queued job was removed: {cluster.jobs}"
        assert "waiting" not in repr(cluster)


@slurm
def test_close_lets_running_jobs_complete_and_cancels_queued_ones():
    """Item 12: close() asks the workers to exit and lets their jobs end COMPLETED (as
    docs/lifecycle.md says); only jobs still queued end CANCELLED."""
    from util import scontrol_show

    with SLURMCluster(cores=1, memory="100MB", processes=1, job_array=False) as cluster:
        cluster.scale(jobs=2)
        cluster.wait_for_workers(2, timeout=120)
        running = list(cluster.job_ids)
    with SLURMCluster(cores=1, memory="100MB", job_extra_directives=["--hold"]) as cluster:
        cluster.scale(jobs=1)
        assert wait_for(lambda: cluster.job_ids, 30)
        queued = list(cluster.job_ids)
    for job_id in running:
        assert "JobState=COMPLETED" in scontrol_show(job_id), scontrol_show(job_id)
    for job_id in queued:
        assert "JobState=CANCELLED" in scontrol_show(job_id)
