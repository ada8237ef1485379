"""Living within a real site's rules (issue 15), on the real Slurm, the real Grid Engine and
the PBS emulator, with stand-ins that enforce what real sites enforce:

- an sbatch wrapper that refuses arrays larger than 4 ("Invalid job array specification",
  Slurm's text for an array beyond MaxArraySize, seen on ci/slurm) and more than 6 queued
  jobs per user (the two lines sbatch prints for QOS MaxSubmitJobsPerUser, e.g. CSCS, ULHPC);
- an squeue wrapper that answers at most one call per N seconds and fails otherwise;
- Grid Engine's own max_aj_tasks and max_u_jobs (set with qconf, its real refusals);
- the PBS emulator's max_array_size and per-user queued limit (pbs-interface.md §0 table
  "MaxArraySize 15107", §1.5 "entity limits ... would exceed").
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask
import pytest
from distributed import Client

from faults import Wrappers, calls
from jobqueue import LocalCluster, SLURMCluster
from util import wait_for

slurm = pytest.mark.usefixtures("slurm")

QOS_REFUSAL = ("sbatch: error: QOSMaxSubmitJobPerUserLimit\n"
               "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
               "(job submit limit, user's size and/or time limits)")
ARRAY_REFUSAL = "sbatch: error: Batch job submission failed: Invalid job array specification"


def real(command: str) -> str:
    path = shutil.which(command)
    assert path, f"{command} is not on PATH"
    return path


def queued(squeue: str) -> int:
    out = subprocess.run([squeue, "-h", "-r", "-t", "PENDING,RUNNING,CONFIGURING,COMPLETING", "-o", "%i"],
                         capture_output=True, text=True, timeout=30)
    return len(out.stdout.split())


@pytest.fixture
def site(tmp_path, monkeypatch, slurm):
    """The stand-ins of a strict Slurm site; ``site.limit`` (a file) holds the per-user job
    limit while it exists (remove it to lift the limit)."""
    squeue = real("squeue")
    wrappers = Wrappers(tmp_path, monkeypatch)
    limit = tmp_path / "max-submit-jobs"
    limit.write_text("6")
    accepted = tmp_path / "accepted-arrays"
    accepted.write_text("")
    script = tmp_path / "script"
    wrappers.wrap("sbatch", f"""
cat > {script}
n=$(sed -n 's/^#SBATCH --array=0-\\([0-9]*\\)$/\\1/p' {script})
if [ -n "$n" ]; then n=$((n + 1)); else n=1; fi
if [ "$n" -gt 4 ]; then echo '{ARRAY_REFUSAL}' >&2; exit 1; fi
if [ -e {limit} ]; then
  have=$({squeue} -h -r -t PENDING,RUNNING,CONFIGURING,COMPLETING -o %i | wc -l)
  if [ $((have + n)) -gt "$(cat {limit})" ]; then printf '%s\\n' "{QOS_REFUSAL}" >&2; exit 1; fi
fi
echo "$n" >> {accepted}
exec "$REAL" "$@" < {script}""")
    calls_log = tmp_path / "squeue-calls"
    refused = tmp_path / "squeue-refused"
    for path in (calls_log, refused):
        path.write_text("")
    # one call per 2 s for this user, or "rate limited" (and the refusal is recorded)
    wrappers.wrap("squeue", f"""
exec 9>{tmp_path}/squeue.lock; flock 9
now=$(date +%s.%N); last=$(tail -n 1 {calls_log})
if [ -n "$last" ] && awk -v n="$now" -v l="$last" 'BEGIN {{ exit !(n - l < 2) }}'; then
  echo "$now $last" >> {refused}; echo 'squeue: error: rate limit: one call per 2 s' >&2; exit 1
fi
echo "$now" >> {calls_log}""")

    class Site:
        pass

    s = Site()
    s.limit, s.accepted, s.calls, s.refused, s.squeue = limit, accepted, calls_log, refused, squeue
    with dask.config.set({"jobqueue.slurm.min-poll-interval": "2s", "jobqueue.submit-limit-retry": "5s"}):
        yield s


@slurm
def test_scale_within_the_sites_array_submit_and_polling_limits(site):
    """scale(jobs=10) ends with 6 running and 4 waiting "(job submit limit)", never more than 6
    queued, never an error; once the limit is lifted all 10 run; no array above 4 went in;
    every squeue call kept to the site's one per 2 s."""
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], queued(site.squeue))
            time.sleep(0.3)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with SLURMCluster(cores=1, memory="100MB", processes=1) as cluster:
            cluster.scale(jobs=10)
            cluster.wait_for_workers(6, timeout=180)
            assert wait_for(lambda: "6 running, 4 waiting (job submit limit)" in repr(cluster), 60), repr(cluster)
            rows = [r for r in cluster.jobs if r.state == "waiting"]
            assert len(rows) == 4 and {r.reason for r in rows} == {"job submit limit"}, str(cluster.jobs)
            assert cluster.failures == []
            time.sleep(8)  # a probe or two beyond the limit: refused, nothing changes
            assert "6 running, 4 waiting (job submit limit)" in repr(cluster)
            stop.set()
            sampler.join()
            site.limit.unlink()  # the site lifts the limit
            t0 = time.monotonic()
            cluster.wait_for_workers(10, timeout=180)
            lifted = time.monotonic() - t0
            assert len(cluster.tracker.jobs) == 10, f"duplicates: {sorted(cluster.tracker.jobs)}"
            assert cluster.failures == [] and "waiting" not in repr(cluster)
    finally:
        stop.set()
    sizes = [int(n) for n in calls(site.accepted)]
    polls = calls(site.calls)
    print(f"\n[measure] arrays accepted: {sizes}; all 10 running {lifted:.1f} s after the limit was lifted; "
          f"{len(polls)} squeue calls, {len(calls(site.refused))} refused for the rate; peak queued {peak[0]}")
    assert peak[0] <= 6, f"{peak[0]} jobs queued under a limit of 6"
    assert max(sizes) <= 4 and sum(sizes) == 10, sizes
    assert calls(site.refused) == [], f"squeue calls closer than 2 s: {calls(site.refused)}"


@slurm
def test_a_job_that_leaves_squeue_while_running_is_settled_from_history(tmp_path, monkeypatch):
    """squeue stops listing a running job (a controller glitch, a site's filtered view): it
    stays running on scontrol's word, past lost-after, and is not replaced; once it really
    ends while still hidden, scontrol's record settles it and it is replaced exactly once."""
    wrappers = Wrappers(tmp_path, monkeypatch)
    with dask.config.set({"jobqueue.lost-after": "3s"}):
        with SLURMCluster(cores=1, memory="100MB", processes=1) as cluster:
            cluster.scale(jobs=1)
            cluster.wait_for_workers(1, timeout=120)
            hidden = cluster.job_ids[0]
            wrappers.wrap("squeue", f'"$REAL" "$@" | grep -v "^{hidden}|"; exit 0')
            time.sleep(8)  # well past lost-after
            assert cluster.replacements == [] and len(cluster.tracker.jobs) == 1
            assert [r.state for r in cluster.jobs] == ["running"], str(cluster.jobs)
            subprocess.run([real("scancel"), hidden], check=True, timeout=30)
            assert wait_for(lambda: cluster.replacements, 60), str(cluster.jobs)
            cluster.wait_for_workers(1, timeout=120)
            time.sleep(4)
            assert [r["job_id"] for r in cluster.replacements] == [hidden]
            assert len(cluster.tracker.jobs) == 2, sorted(cluster.tracker.jobs)
            assert cluster.tracker.jobs[hidden].state.value == "cancelled"


# --- Grid Engine and PBS: their own limits and refusals ------------------------------------
SGE_CONF = "/tmp/jobqueue-test-sge-conf"


def _sge_conf(text: str | None = None, **values) -> str:
    """Set keys of Grid Engine's global configuration (or all of it to ``text``); returns
    what it was (qconf -Mconf reads a file named after the configuration, "global")."""
    os.makedirs(SGE_CONF, exist_ok=True)
    before = subprocess.run(["qconf", "-sconf", "global"], capture_output=True, text=True, timeout=30,
                            check=True).stdout
    if text is None:
        text = before
        for key, value in values.items():
            text = re.sub(rf"^{key}\s+.*$", f"{key}                 {value}", text, flags=re.M)
    Path(SGE_CONF, "global").write_text(text)
    subprocess.run(["qconf", "-Mconf", f"{SGE_CONF}/global"], capture_output=True, timeout=30, check=True)
    return before


@pytest.mark.parametrize("system", ["sge", "pbs", "lsf"])
def test_grid_engine_pbs_and_lsf_limits(system, backend):
    """Grid Engine: max_aj_tasks 4 is read from qconf (arrays of at most 4 go in), max_u_jobs 2
    refuses the third array ("only 2 jobs are allowed per user"): 8 run, 2 wait "(job submit
    limit)"; lifted, all 10 run. PBS emulator: max_array_size 3 (read from qstat -B -f) and 5
    queued per user ("would exceed complex's per-user limit of jobs in 'Q' state"). LSF
    emulator: MAX_JOB_ARRAY_SIZE 3, which LSF does not tell: learned from bsub's refusal
    ("Job array index too large", lsf-interface.md §1.5, §2)."""
    from backends import lsfemu, pbsemu

    if system == "sge":
        original = []
        set_limits = lambda: original.append(_sge_conf(max_aj_tasks=4, max_u_jobs=2))  # noqa: E731
        lift = lambda: original and _sge_conf(original[0])  # noqa: E731
        n, running = 10, 8
    elif system == "pbs":
        set_limits = lambda: pbsemu.set_config(max_array_size=3, max_queued_per_user=5)  # noqa: E731
        lift = lambda: pbsemu.set_config(max_array_size=10000, max_queued_per_user=None)  # noqa: E731
        n, running = 7, 5
    else:
        set_limits = lambda: lsfemu.set_config(max_job_array_size=3)  # noqa: E731
        lift = lambda: lsfemu.set_config(max_job_array_size=1000)  # noqa: E731
        n, running = 7, 7
    set_limits()
    try:
        with dask.config.set({"jobqueue.submit-limit-retry": "5s"}):
            with backend.cls(cores=1, memory="100MB", processes=1) as cluster:
                cluster.scale(jobs=n)
                cluster.wait_for_workers(running, timeout=180)
                expected = (f"{running} running, {n - running} waiting (job submit limit)" if n > running
                            else f"{running} running")
                assert wait_for(lambda: expected in repr(cluster), 60), repr(cluster)
                assert cluster.failures == []
                assert cluster._submissions.array_limit == {"sge": 4, "pbs": 3, "lsf": 2}[system]
                lift()
                cluster.wait_for_workers(n, timeout=180)
                assert len(cluster.tracker.jobs) == n and cluster.failures == []
    finally:
        lift()


# --- waiting feedback -----------------------------------------------------------------------
WAIT = r'''
import dask, sys
from jobqueue import SLURMCluster
with dask.config.set({"jobqueue.progress-interval": "2s"}):
    with SLURMCluster(cores=1, memory="100MB", processes=1, job_extra_directives=["--hold"],
                      scheduler_options={"dashboard_address": ":0"}) as cluster:
        cluster.scale(jobs=2)
        try:
            cluster.wait_for_workers(2, timeout=7)
        except TimeoutError as exc:
            print("TIMEOUT", exc, file=sys.stderr)
'''


@slurm
@pytest.mark.parametrize("terminal", [False, True])
def test_waiting_shows_states_and_reasons(terminal, tmp_path):
    """While jobs wait, wait_for_workers says so: on a terminal one line rewritten in place,
    elsewhere a plain line every progress-interval (no carriage return in a log); the timeout
    error gives the reasons in words."""
    script = tmp_path / "wait.py"
    script.write_text(WAIT)
    if terminal:
        primary, secondary = pty.openpty()
        proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.DEVNULL, stdout=secondary,
                                stderr=secondary, close_fds=True)
        os.close(secondary)
        chunks = []
        while True:
            try:
                data = os.read(primary, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(60)
        os.close(primary)
        text = b"".join(chunks).decode(errors="replace")
    else:
        text = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120).stderr
    assert "TIMEOUT 0 of 2 workers after 7 s: 2 pending (JobHeldUser)" in text, text
    lines = re.findall(r"jobqueue: 0 of 2 workers after (\d+) s; jobs: 2 pending \(JobHeldUser\)", text)
    if terminal:
        assert "\r" in text and len(lines) >= 3, text  # about once a second, in place
    else:
        assert "\r" not in text and 2 <= len(lines) <= 4, text  # every 2 s from 2 s on
        assert [int(s) for s in lines] == sorted(int(s) for s in lines)


# --- usage ----------------------------------------------------------------------------------
def test_usage_reports_core_hours_held_and_busy(capfd):
    """cluster.usage(): the jobs' held core-hours and the workers' busy time (20 tasks of 0.3 s
    on 2 one-core jobs: 6 busy core-seconds); a line at close says the same."""
    with LocalCluster(cores=1, memory="500MB", processes=1, walltime="00:10:00") as cluster:
        cluster.scale(jobs=2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=60)
            client.gather(client.map(time.sleep, [0.3] * 20, pure=False))
            usage = cluster.usage()
            pool = usage.total
            assert pool.jobs == 2 and pool.cores_per_job == 1
            assert 5.5 / 3600 <= pool.core_hours_busy <= 8 / 3600, pool
            assert pool.core_hours_held >= pool.core_hours_busy
            assert abs(pool.core_hours_requested - 2 * 600 / 3600) < 1e-9
            assert "core-h busy" in str(usage) and 0 < pool.efficiency <= 1
            listing = wait_for(lambda: (out := subprocess.run([sys.executable, "-m", "jobqueue", "list"],
                                                             capture_output=True, text=True, timeout=60).stdout)
                               and "2 running" in out and out, 30)
            assert cluster._cluster_id in listing and re.search(r"local\s+\d+\s+2\s+0\.\d{3}\s+0\.\d{3}", listing), \
                listing
    listing = subprocess.run([sys.executable, "-m", "jobqueue", "list"], capture_output=True, text=True,
                             timeout=60).stdout
    assert cluster._cluster_id not in listing, listing
    err = capfd.readouterr().err
    assert re.search(r"jobqueue: LocalCluster closed; 2 job\(s\) held [\d.e-]+ core-hours \(requested 0\.333\); "
                     r"workers were busy [\d.e-]+ \(\d+ %\)", err), err
