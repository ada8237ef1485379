"""On a real multi-host site: a login host and three compute hosts, each its own network and
UTS namespace with its own hostname, address and loopback, each compute host its own slurmd
(ci/multihost/start.sh). Every cluster here is created on the login host (ci/multihost/on.sh
mh-login python ...), as a user would; its workers run on the compute hosts.

CI runs this module in a pytest of its own, next to the rest of the suite; JOBQUEUE_TEST_REQUIRE
names ``multihost`` there, so a site that is not up fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from backends import SGE_BIN
from util import wait_for

pytestmark = pytest.mark.multihost

LOGIN, NODES = "mh-login", ("mh-node1", "mh-node2", "mh-node3")
HERE = os.path.dirname(os.path.abspath(__file__))
SITE = os.path.join(os.path.dirname(HERE), "ci", "multihost")

PRELUDE = """
import json, socket, sys, time
from distributed import Client
from jobqueue import SLURMCluster, JobFailedError

def result(**kw):
    print("RESULT " + json.dumps(kw), flush=True)

def whereabouts(client):
    # each worker: its host's name and the address it listens on
    return client.run(lambda dask_worker: [socket.gethostname(), dask_worker.address])
"""


_STATE = tempfile.mkdtemp(prefix="jobqueue-multihost-state-")


def login_env(system: str = "slurm") -> dict:
    """The environment of the user's commands on the login host: a state directory of this
    module's own (journals, credentials), so a pytest running alongside never sees its clusters;
    for Grid Engine, its commands first on PATH (the site's cell comes with on.sh)."""
    env = {**os.environ, "DASK_JOBQUEUE__TLS_DASK_CONFIG": "false", "DASK_JOBQUEUE__STATE_DIRECTORY": _STATE}
    if system == "sge":
        env["PATH"] = f"{SGE_BIN}:{env['PATH']}"
    return env


def on(host: str, *argv: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(SITE, "on.sh"), host, *argv], capture_output=True, text=True,
                          timeout=timeout, **kw)


def login_python(code: str, tmp_path) -> list[str]:
    """The command that runs ``code`` (after PRELUDE) with Python on the login host."""
    script = tmp_path / "login_script.py"
    script.write_text(PRELUDE + textwrap.dedent(code))
    return [os.path.join(SITE, "on.sh"), LOGIN, sys.executable, str(script)]


def on_login(code: str, tmp_path, timeout: float = 240, system: str = "slurm") -> dict:
    """Run ``code`` (after PRELUDE) with Python on the login host; return what it passed to result()."""
    proc = subprocess.run(login_python(code, tmp_path), capture_output=True, text=True, timeout=timeout,
                          cwd=tmp_path, env=login_env(system))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(autouse=True)
def site(multihost):
    """The site, with no job of this test left in its Slurm queue afterwards."""
    before = multihost.live_ids()
    yield multihost
    left = wait_for(lambda: not (multihost.live_ids() - before), 60)
    assert left, f"jobs left in the site's queue: {multihost.live_ids() - before}"


@pytest.fixture
def multihost_sge():
    """The site's Grid Engine cell, with no job of this test left in it afterwards."""
    from backends import MULTIHOST_SGE
    from conftest import require

    require("multihost", MULTIHOST_SGE.unavailable())
    before = MULTIHOST_SGE.live_ids()
    yield MULTIHOST_SGE
    left = wait_for(lambda: not (MULTIHOST_SGE.live_ids() - before), 60)
    assert left, f"jobs left in the site's Grid Engine queue: {MULTIHOST_SGE.live_ids() - before}"


@pytest.mark.parametrize("system", ["slurm", "sge"])
def test_workers_on_three_compute_hosts_dial_back_to_the_login_host(system, tmp_path, request):
    """One whole node per job, three jobs: three hosts, none the login host, addresses on the
    site network; the scheduler listens on the login host's site address, not loopback.
    Grid Engine: the site's own cell (qmaster on mh-ctl, an execd per compute host)."""
    cls = {"slurm": "SLURMCluster", "sge": "SGECluster"}[system]
    # Grid Engine takes the slots from a parallel environment, as sites set it up (4 per host here)
    extra = {"slurm": "", "sge": ', job_extra_directives=["-pe smp 4"]'}[system]
    if system == "sge":
        request.getfixturevalue("multihost_sge")
    t0 = time.monotonic()
    got = on_login(f"""
        from jobqueue import {cls} as Cluster
        t0 = time.monotonic()
        with Cluster(cores=4, memory="1GB", processes=1, walltime="00:10:00"{extra}) as cluster:
            cluster.scale(jobs=3)
            with Client(cluster) as client:
                client.wait_for_workers(3, timeout=120)
                ready = time.monotonic() - t0
                total = client.submit(sum, client.map(lambda x: x * x, range(1000))).result()
                result(login=socket.gethostname(), scheduler=cluster.scheduler_address, ready=ready,
                       workers=whereabouts(client), total=total, jobs=cluster.job_ids)
    """, tmp_path, system=system)
    hosts = [host for host, _ in got["workers"].values()]
    addresses = [address for _, address in got["workers"].values()]
    assert got["login"] == LOGIN
    assert got["scheduler"].startswith("tls://10.77.0.10:"), got["scheduler"]
    assert sorted(hosts) == sorted(NODES), hosts  # three distinct compute hosts, not the login host
    assert all(a.startswith("tls://10.77.0.1") and "127.0.0." not in a for a in addresses), addresses
    assert got["total"] == sum(x * x for x in range(1000))
    print(f"\n[measure] {system}: 3 workers on {sorted(set(hosts))} connected {got['ready']:.1f} s after the "
          f"cluster started (whole test {time.monotonic() - t0:.1f} s)")


def test_interface_picks_the_network_the_compute_hosts_share(tmp_path):
    """interface='eth0' (the site network) for scheduler and workers alike."""
    got = on_login("""
        with SLURMCluster(cores=2, memory="1GB", processes=2, interface="eth0") as cluster:
            cluster.scale(jobs=1)
            with Client(cluster) as client:
                client.wait_for_workers(2, timeout=120)
                result(scheduler=cluster.scheduler_address, workers=whereabouts(client),
                       script=cluster.job_script())
    """, tmp_path)
    assert got["scheduler"].startswith("tls://10.77.0.10:")
    assert "--interface eth0" in got["script"]
    assert len(got["workers"]) == 2
    for host, address in got["workers"].values():
        assert host in NODES and address.startswith("tls://10.77.0.1"), (host, address)


def test_loopback_scheduler_is_refused_before_anything_is_submitted(tmp_path, site):
    got = on_login("""
        with SLURMCluster(cores=1, memory="1GB", scheduler_options={"host": "127.0.0.1"}) as cluster:
            try:
                cluster.scale(jobs=1)
                result(error=None)
            except ValueError as exc:
                result(error=str(exc), jobs=cluster.job_ids)
    """, tmp_path)
    assert got["error"] and "loopback address" in got["error"] and "interface=" in got["error"], got
    assert got["jobs"] == []


UNREACHABLE = """
    t0 = time.monotonic()
    with SLURMCluster(cores=1, memory="1GB", processes=1, max_start_failures=1, **{kwargs}) as cluster:
        cluster.scale(jobs=1)
        try:
            cluster.wait_for_workers(1, timeout=120)
            result(error=None)
        except JobFailedError as exc:
            result(error=str(exc), seconds=time.monotonic() - t0, scheduler=cluster.scheduler_address)
"""


@pytest.mark.parametrize("case", ["scheduler-on-a-login-only-network", "route-blocked-on-the-compute-host"])
def test_a_worker_that_cannot_reach_the_scheduler_is_reported_within_seconds(case, tmp_path):
    """The scheduler on a network only the login host has (priv0), or a compute host whose route
    to the login host is blocked: the job ends and the cluster reports the address the worker
    tried, from which host, without waiting for death_timeout (60 s)."""
    if case == "scheduler-on-a-login-only-network":
        kwargs = {"scheduler_options": {"interface": "priv0"}}
    else:
        kwargs = {"job_extra_directives": ["--nodelist=mh-node3"]}
        blocked = on("mh-node3", "ip", "route", "add", "prohibit", "10.77.0.10/32")
        assert blocked.returncode == 0, blocked.stderr
    try:
        got = on_login(UNREACHABLE.replace("{kwargs}", repr(kwargs)), tmp_path)
    finally:
        if case != "scheduler-on-a-login-only-network":
            on("mh-node3", "ip", "route", "del", "prohibit", "10.77.0.10/32")
    report = got["error"]
    assert report, "the worker connected although it could not reach the scheduler"
    assert f"cannot reach the scheduler at {got['scheduler']}" in report, report
    if case == "scheduler-on-a-login-only-network":
        assert got["scheduler"].startswith("tls://192.168.77.10:")
        assert "Network is unreachable" in report
    else:
        assert "the worker on mh-node3 (10.77.0.13)" in report and "Permission denied" in report
    assert "interface=" in report
    assert got["seconds"] < 45, f"reported after {got['seconds']:.0f} s"
    print(f"\n[measure] {case}: reported {got['seconds']:.1f} s after scale()")


def test_a_two_node_job_spans_two_hosts(tmp_path):
    """job_nodes=2: one job, one worker per node, started by srun on two hosts."""
    got = on_login("""
        with SLURMCluster(cores=2, memory="1GB", processes=1, job_nodes=2) as cluster:
            cluster.scale(jobs=1)
            with Client(cluster) as client:
                client.wait_for_workers(2, timeout=120)
                futures = client.map(lambda x: (x * 3, socket.gethostname()), range(40))
                done = client.gather(futures)
                result(workers=whereabouts(client), jobs=cluster.job_ids,
                       total=sum(v for v, _ in done), script=cluster.job_script())
    """, tmp_path)
    assert len(got["jobs"]) == 1
    assert "#SBATCH -N 2" in got["script"] and "srun" in got["script"]
    hosts = {host for host, _ in got["workers"].values()}
    assert len(hosts) == 2 and hosts <= set(NODES), got["workers"]
    assert got["total"] == 3 * sum(range(40))


MPI_SCRIPT = """
import socket
from jobqueue.runtime.mpi import initialize
initialize(interface="eth0")
from distributed import Client
with Client() as c:
    c.wait_for_workers(4)
    hosts = sorted(set(c.run(socket.gethostname).values()))
    print("RESULT", c.submit(sum, c.map(lambda x: x * x, range(100))).result(), socket.gethostname(), *hosts)
"""


@pytest.mark.parametrize("launcher", ["srun", "mpirun"])
def test_the_mpi_bootstrap_across_two_hosts(launcher, tmp_path, site):
    """A batch script submitted from the login host: srun, or mpirun (the mpich wheel's hydra,
    which starts its proxies through Slurm; ranks talk over MPI), starts the script on 6 ranks
    over two hosts (3 each); rank 0 the scheduler, rank 1 the client code, ranks 2-5 workers."""
    (tmp_path / "analysis.py").write_text(MPI_SCRIPT)
    start = {"srun": "srun", "mpirun": f"{os.path.join(os.path.dirname(sys.executable), 'mpirun')} -n 6"}[launcher]
    job = (f"#!/bin/bash\n#SBATCH -N 2\n#SBATCH --ntasks-per-node=3\n#SBATCH --mem=1G\n"
           f"#SBATCH -o {tmp_path}/out.txt\n#SBATCH -e {tmp_path}/err.txt\n"
           f"{start} {sys.executable} {tmp_path}/analysis.py\n")
    (tmp_path / "job.sh").write_text(job)
    sub = on(LOGIN, "sbatch", "--parsable", str(tmp_path / "job.sh"), cwd=tmp_path)
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip()
    env = site.environ()
    assert wait_for(lambda: not _squeue(env, job_id), 180), f"job {job_id} did not end"
    out = (tmp_path / "out.txt").read_text()
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT")]
    assert line, out + (tmp_path / "err.txt").read_text()[-4000:]
    _, total, client_host, *worker_hosts = line[0].split()
    assert total == str(sum(x * x for x in range(100)))
    assert len(set(worker_hosts)) >= 2 and set(worker_hosts) <= set(NODES), line
    state = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, env=env).stdout
    assert "JobState=COMPLETED" in state and "NodeList=mh-node[" in state, state


def _squeue(env, *ids) -> str:
    argv = ["squeue", "-h", "-o", "%i %T %N"] + (["-j", ",".join(ids)] if ids else [])
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30).stdout.strip()


@pytest.mark.timeout(420)
def test_a_compute_host_dies_mid_computation(tmp_path, site):
    """Three jobs over the hosts; the host of one worker dies (every process of it killed, its
    slurmd too) while tasks run: results stay correct, the job is reported, and capacity comes
    back on the surviving hosts."""
    marker = tmp_path / "victim"
    code = f"""
        import os, pathlib
        marker = pathlib.Path({str(marker)!r})
        with SLURMCluster(cores=2, memory="1GB", processes=1, walltime="00:10:00") as cluster:
            cluster.scale(jobs=3)
            with Client(cluster) as client:
                client.wait_for_workers(3, timeout=120)
                before = whereabouts(client)
                hosts = sorted({{h for h, _ in before.values()}})
                victim = hosts[-1]
                marker.write_text(victim)  # the test kills this host now
                def work(i):
                    import time
                    time.sleep(0.25)
                    return i * i
                futures = client.map(work, range(300), pure=False)
                total = client.submit(sum, futures).result(timeout=300)
                t0 = time.monotonic()
                while time.monotonic() - t0 < 180:
                    now = whereabouts(client)
                    if len(now) == 3 and victim not in {{h for h, _ in now.values()}}:
                        break
                    time.sleep(0.5)
                result(victim=victim, before=before, after=whereabouts(client), total=total,
                       replacements=cluster.supervisor.replacements, jobs=str(cluster.jobs),
                       replaced_after=time.monotonic() - t0)
    """
    proc = subprocess.Popen(login_python(code, tmp_path), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=login_env())
    try:
        assert wait_for(lambda: marker.exists() and marker.read_text() or proc.poll() is not None, 180)
        assert proc.poll() is None, proc.communicate()
        victim = marker.read_text()
        victim_jobs = {i for i, _, nodes in (ln.split() for ln in _squeue(site.environ()).splitlines())
                       if nodes == victim}
        assert victim_jobs, _squeue(site.environ())
        time.sleep(3)  # tasks are running on every worker
        killed = subprocess.run(["bash", os.path.join(SITE, "kill-host.sh"), victim], capture_output=True,
                                text=True, timeout=60)
        assert killed.returncode == 0 and "killed" in killed.stdout, killed
        out, err = proc.communicate(timeout=360)
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["bash", os.path.join(SITE, "start.sh")], capture_output=True, timeout=120)  # host back
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"{out}\n{err[-6000:]}"
    got = json.loads(lines[-1][len("RESULT "):])
    assert got["total"] == sum(i * i for i in range(300))
    after_hosts = [h for h, _ in got["after"].values()]
    assert len(after_hosts) == 3 and victim not in after_hosts, got
    # the dead host's job is reported as ended (Slurm: NODE_FAIL) and replaced
    assert victim_jobs <= {r["job_id"] for r in got["replacements"]}, (victim_jobs, got["replacements"], got["jobs"])
    print(f"\n[measure] host {victim} died: results correct, capacity back on {sorted(set(after_hosts))} "
          f"{got['replaced_after']:.0f} s after the computation; replacements {got['replacements']}")


@pytest.mark.timeout(300)
def test_walltime_retirement_hands_data_over_across_hosts(tmp_path):
    """walltime 1 minute: the workers retire before it with their results moved to the
    replacements, which start ahead of time on whichever hosts Slurm picks."""
    got = on_login("""
        with SLURMCluster(cores=4, memory="1GB", processes=1, walltime="00:01:00") as cluster:
            cluster.scale(jobs=2)
            with Client(cluster) as client:
                client.wait_for_workers(2, timeout=120)
                first = whereabouts(client)
                futures = client.map(lambda i: i * 7, range(200))
                client.gather(futures)
                t0 = time.monotonic()  # until every first worker has retired and two others run
                while time.monotonic() - t0 < 150 and (set(whereabouts(client)) & set(first)
                                                       or len(client.scheduler_info()["workers"]) < 2):
                    time.sleep(1)
                kept = sum(client.gather(futures))
                result(first=first, later=whereabouts(client), kept=kept, failures=[str(f) for f in cluster.failures],
                       replaced=sum(j.replaced_ahead for j in cluster.tracker.jobs.values()))
    """, tmp_path, timeout=280)
    assert set(got["later"]).isdisjoint(got["first"]), got  # every first worker retired
    assert got["kept"] == 7 * sum(range(200))
    assert got["replaced"] >= 2 and got["failures"] == []
    assert {h for h, _ in got["later"].values()} <= set(NODES)


OWNER = """
    cluster = SLURMCluster(cores=1, memory="1GB", processes=1, walltime="00:10:00")
    cluster.scale(jobs=2)
    cluster.wait_for_workers(2, timeout=120)
    print("READY", *cluster.job_ids, flush=True)
    time.sleep(600)
"""


def test_the_watchdog_cancels_the_jobs_of_an_owner_killed_on_the_login_host(tmp_path, site):
    """The owner process on the login host is SIGKILLed (its parent does not reap it yet): the
    watchdog, also on the login host, cancels its jobs on the compute hosts."""
    proc = subprocess.Popen(login_python(OWNER, tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, text=True,
                            env=login_env())
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY"), line
        ids = line.split()[1:]
        assert len(ids) == 2 and site.alive(ids) == set(ids)
        journals = [json.load(open(os.path.join(_STATE, "journals", f)))
                    for f in os.listdir(os.path.join(_STATE, "journals")) if f.endswith(".json")]
        assert [j["owner_host"] for j in journals if set(j["job_ids"]) == set(ids)] == [LOGIN], journals
        os.kill(proc.pid, signal.SIGKILL)  # not reaped until the end: a zombie owner
        t0 = time.monotonic()
        gone = wait_for(lambda: not site.alive(ids), 60)
        assert gone, f"jobs {site.alive(ids)} outlived their owner"
        print(f"\n[measure] the site's queue is empty {time.monotonic() - t0:.1f} s after SIGKILL of the owner")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
