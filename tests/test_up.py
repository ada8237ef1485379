"""Named clusters whose scheduler lives in a batch job (`jobqueue up`, attach, connect, list, down).

On the real Slurm and Grid Engine: `jobqueue up`, a client computes and publishes data, that
client is SIGKILLed, a new process attaches by name, scales, computes and gets the data back;
another user can neither list nor connect; `jobqueue down` leaves the queue empty. The PBS
emulator and the local system run the same cycle; the safety nets (a signalled scheduler job,
a SIGKILLed head, the scheduler job's walltime) are checked on the cheapest system that shows them.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from util import wait_for

OTHER_USER = "jqother"


def cli(args, env, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobqueue", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def env(backend, tmp_path):
    """The backend's environment with a state directory of this test's own (the scheduler job
    gets it too: `jobqueue up` passes DASK_* settings on), whose credentials stay out of the
    user's dask config (a later test's plain Client would present them)."""
    return {**backend.environ(), "DASK_JOBQUEUE__STATE_DIRECTORY": str(tmp_path / "state"),
            "DASK_JOBQUEUE__TLS_DASK_CONFIG": "false",  # its credentials must not become the user's dask config
            "DASK_JOBQUEUE__UP__ENVIRONMENT": json.dumps([k for k in backend.env if k.endswith("EMU_HOME")]),
            "DASK_JOBQUEUE__PROGRESS_INTERVAL": "0", "PYTHONPATH": os.pathsep.join(sys.path)}


def python(code: str, env, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def head_record(env, name) -> dict:
    with open(os.path.join(env["DASK_JOBQUEUE__STATE_DIRECTORY"], "named", name, "cluster.json")) as f:
        return json.load(f)


CLIENT = """
import sys, time, jobqueue
client = jobqueue.connect({name!r})
client.wait_for_workers(2, timeout=120)
total = client.submit(sum, client.map(lambda x: x * x, range(10))).result()
import dask.bag as db
kept = client.persist(db.from_sequence(range(100), npartitions=4).map(lambda x: 3 * x))
client.publish_dataset(kept=kept)
client.wait_for_workers(2)
print("READY", total, flush=True)
time.sleep(3600)
"""

ATTACH = """
import jobqueue
from distributed import Client
cluster = jobqueue.attach({name!r})
client = Client(cluster)
cluster.scale(jobs=3)
client.wait_for_workers(3, timeout=180)
kept = client.get_dataset("kept")
print("KEPT", sum(kept.compute()))
print("SUM", client.submit(sum, client.map(lambda x: x + 1, range(100))).result())
hosts = client.run(lambda: __import__("socket").gethostname())
print("WORKERS", len(hosts))
print("JOBS", " ".join(cluster.job_ids))
print(cluster.jobs)
print("LOGS", len(cluster.logs()))
print("REPR", repr(cluster))
client.close()
cluster.detach()
"""


def as_other_user(check) -> dict:
    """Run ``check()`` in a child process with another user's uid and home (no exec: the
    interpreter and the modules imported here stay usable though root's home is 0700)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a second user")
    try:
        pw = pwd.getpwnam(OTHER_USER)
    except KeyError:
        subprocess.run(["useradd", "-m", OTHER_USER], check=True, capture_output=True, timeout=60)
        pw = pwd.getpwnam(OTHER_USER)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the other user
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            os.environ["HOME"] = pw.pw_dir
            result = check()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            result = {"error": repr(exc)}
        os.write(write, json.dumps(result).encode())
        os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.waitpid(pid, 0)
    return json.loads(data)


def other_user_checks(state_dir: str, name: str, address: str):
    """What another user can do with the named cluster: list, read its files, connect."""
    import asyncio

    import dask
    from distributed import Client
    from distributed.security import Security

    from jobqueue.detached import list_named

    own = Security.temporary()  # the other user's own CA and certificate (made here: imports cryptography)
    with dask.config.set({"distributed.comm.tls.ca-file": None, "distributed.comm.tls.client.cert": None,
                          "distributed.comm.tls.client.key": None}):
        plain = Security()  # no TLS at all (not this process's config, which names root's files)
    attempts = (("own_tls", own, address), ("no_tls", plain, address.replace("tls://", "tcp://")))

    def attempt(security, target) -> str:
        try:
            asyncio.set_event_loop(asyncio.new_event_loop())
            with Client(target, security=security, timeout="5s") as c:
                c.submit(os.getuid).result(timeout=5)
            return "connected"
        except Exception as exc:  # noqa: BLE001
            return f"refused: {type(exc).__name__}: {exc}"

    for _, security, target in attempts:  # as root first: every module the attempt needs gets imported
        attempt(security, target)

    def check() -> dict:
        out = {}
        try:
            os.listdir(os.path.join(state_dir, "named", name))
            out["read_dir"] = "allowed"
        except PermissionError:
            out["read_dir"] = "denied"
        with dask.config.set({"jobqueue.state-directory": os.path.expanduser("~/.jobqueue")}):
            out["listed"] = [row["name"] for row in list_named()]
        for label, security, target in attempts:
            out[label] = attempt(security, target)
        return out

    return as_other_user(check)


@pytest.mark.parametrize("system", ["slurm", "sge"])
def test_up_outlives_its_client_and_down_leaves_nothing(system, backend, env, tmp_path):
    """The issue's scenario: up, compute, the client is SIGKILLed, a new process attaches by
    name, scales, computes and gets the published data; another user is kept out; down."""
    name = f"t-{system}"
    out = cli(["up", system, "--name", name, "--jobs", "2", "--cores", "1", "--memory", "1GB",
               "--walltime", "00:15:00", "--scheduler-memory", "1GB"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"cluster {name!r} is up" in out.stdout and "worker jobs:" in out.stdout
    head_id = head_record(env, name)["head_job_id"]
    ids = {head_id}
    try:
        assert backend.alive([head_id]) == {head_id}
        listing = cli(["list"], env, timeout=60)
        row = next(line for line in listing.stdout.splitlines() if line.startswith(name))
        assert system in row and head_id in row and "running" in row, listing.stdout

        client = subprocess.Popen([sys.executable, "-c", CLIENT.format(name=name)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env)
        line = client.stdout.readline()
        assert line.split() == ["READY", "285"], line + client.stderr.read() if not line else line
        client.send_signal(signal.SIGKILL)
        client.wait(10)

        address = json.load(open(os.path.join(env["DASK_JOBQUEUE__STATE_DIRECTORY"], "named", name,
                                              "head.json")))["address"]
        other = other_user_checks(env["DASK_JOBQUEUE__STATE_DIRECTORY"], name, address)
        assert other["read_dir"] == "denied" and name not in other["listed"], other
        for label in ("own_tls", "no_tls"):  # refused by the scheduler, not by a file or import of root's
            assert re.match(r"refused: (\w*CommClosedError|OSError|TimeoutError|SSLError)", other[label]), other

        attached = python(ATTACH.format(name=name), env, timeout=300)
        assert attached.returncode == 0, attached.stdout + attached.stderr
        text = attached.stdout
        assert "KEPT 14850" in text and "SUM 5050" in text and "WORKERS 3" in text, text
        jobs = re.search(r"^JOBS (.*)$", text, re.M).group(1).split()
        assert len(jobs) == 3, text
        ids |= set(jobs)
        assert re.search(r"^LOGS [1-9]", text, re.M) and "attached)" in text, text
    finally:
        down = cli(["down", name], env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "is down" in down.stdout and "lists none of them" in down.stdout
    assert wait_for(lambda: not backend.alive(ids), timeout=30), backend.alive(ids)
    assert not os.path.exists(os.path.join(env["DASK_JOBQUEUE__STATE_DIRECTORY"], "named", name))
    assert "no running clusters" in cli(["list"], env, timeout=60).stdout


@pytest.mark.parametrize("system", ["pbs", "local"])
def test_up_on_the_pbs_emulator_and_the_local_system(system, backend, env):
    name = f"t-{system}"
    out = cli(["up", system, "--name", name, "--jobs", "2", "--cores", "1", "--memory", "1GB",
               "--walltime", "00:15:00", "--scheduler-memory", "1GB"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    head_id = head_record(env, name)["head_job_id"]
    try:
        done = python(f"""
            import jobqueue
            client = jobqueue.connect({name!r})
            client.wait_for_workers(2, timeout=120)
            print("SUM", client.submit(sum, client.map(lambda x: x * x, range(10))).result())
            cluster = jobqueue.attach({name!r})
            print("JOBS", " ".join(cluster.job_ids))
            cluster.detach()
        """, env)
        assert "SUM 285" in done.stdout, done.stdout + done.stderr
        ids = {head_id, *re.search(r"^JOBS (.*)$", done.stdout, re.M).group(1).split()}
        assert len(ids) == 3
    finally:
        down = cli(["down", name], env)
    assert down.returncode == 0 and "is down" in down.stdout, down.stdout + down.stderr
    assert wait_for(lambda: not backend.alive(ids), timeout=30), backend.alive(ids)


@pytest.mark.parametrize("system,signal_name", [("slurm", "TERM"), ("slurm", "KILL")])
def test_a_cancelled_scheduler_job_cancels_its_workers(system, signal_name, backend, env):
    """scancel of the scheduler job itself (or preemption): SIGTERM reaches the head, which
    cancels its worker jobs before the job ends. With SIGKILL to every process of the job
    (head and watchdog alike), the workers' scheduler is gone and their jobs end on their
    own. Either way none is orphaned."""
    name = f"t-scancel-{signal_name.lower()}"
    out = cli(["up", system, "--name", name, "--jobs", "2", "--cores", "1", "--memory", "1GB",
               "--walltime", "00:15:00", "--scheduler-memory", "1GB"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    head_id = head_record(env, name)["head_job_id"]
    workers = re.search(r"^worker jobs: (.*) \(", out.stdout, re.M).group(1).split()
    assert len(workers) == 2 and wait_for(lambda: backend.alive(workers) == set(workers), timeout=10)
    connected = python(f"import jobqueue; jobqueue.connect({name!r}).wait_for_workers(2, timeout=60)", env)
    assert connected.returncode == 0, connected.stderr
    subprocess.run(["scancel", "--signal", signal_name, "--full", head_id] if signal_name == "KILL"
                   else ["scancel", head_id], check=True, timeout=30, env=env)
    assert wait_for(lambda: not backend.alive([head_id, *workers]), timeout=60), backend.alive([head_id, *workers])
    listing = cli(["list"], env, timeout=60)
    row = next(line for line in listing.stdout.splitlines() if line.startswith(name))
    assert re.search(r"\b(gone|cancelled|finished)\b", row), listing.stdout
    assert cli(["down", name], env).returncode == 0


@pytest.mark.parametrize("system", ["local"])
def test_a_killed_head_leaves_no_worker_job(system, backend, env):
    """The head SIGKILLed (the OOM killer): the journal's watchdog cancels its worker jobs;
    `jobqueue down` then finds nothing left."""
    import psutil

    name = "t-sigkill"
    out = cli(["up", system, "--name", name, "--jobs", "2", "--cores", "1", "--memory", "1GB"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    workers = re.search(r"^worker jobs: (.*) \(", out.stdout, re.M).group(1).split()
    head = json.load(open(os.path.join(env["DASK_JOBQUEUE__STATE_DIRECTORY"], "named", name, "head.json")))
    assert backend.alive(workers) == set(workers)
    psutil.Process(head["pid"]).kill()
    assert wait_for(lambda: not backend.alive(workers), timeout=30), backend.alive(workers)
    down = cli(["down", name], env)
    assert down.returncode == 0 and "is down" in down.stdout, down.stdout + down.stderr


@pytest.mark.parametrize("system", ["local"])
def test_clients_are_told_before_the_scheduler_job_walltime(system, backend, env):
    """The scheduler job nears its walltime: every connected client gets a warning, then the
    head cancels its workers and stops (before the batch system would kill it)."""
    name = "t-walltime"
    out = cli(["up", system, "--name", name, "--jobs", "1", "--cores", "1", "--memory", "1GB",
               "--scheduler-walltime", "00:01:30"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    workers = re.search(r"^worker jobs: (.*) \(", out.stdout, re.M).group(1).split()
    watched = python(f"""
        import time, warnings, jobqueue
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            client = jobqueue.connect({name!r})
            deadline = time.time() + 80
            while time.time() < deadline and not any("walltime" in str(w.message) for w in caught):
                time.sleep(0.5)
        print("WARNED", [str(w.message) for w in caught if "walltime" in str(w.message)])
    """, env)
    assert "its scheduler job reaches its walltime" in watched.stdout, watched.stdout + watched.stderr
    assert wait_for(lambda: not backend.alive(workers), timeout=60), backend.alive(workers)
    assert wait_for(lambda: "stopped" in open(os.path.join(env["DASK_JOBQUEUE__STATE_DIRECTORY"], "named", name,
                                                         "head.json")).read(), timeout=30)
    assert cli(["down", name], env).returncode == 0


@pytest.mark.parametrize("system", ["slurm"])
def test_bad_input_is_refused_before_anything_is_submitted(system, backend, env):
    before = backend.live_ids()
    for args, words in ((["--name", "x1", "--memory", "lots"], "memory"),
                        (["--name", "9/bad", "--memory", "1GB"], "invalid cluster name"),
                        (["--name", "x2", "--memory", "1GB", "--cores", "1", "--queue", "nosuchpartition"], None)):
        out = cli(["up", system, "--cores", "1", *args], env, timeout=120)
        assert out.returncode != 0, out.stdout
        if words:
            assert out.returncode == 2 and words in out.stderr, out.stderr
        else:  # the system refuses the scheduler job: its error, nothing left behind
            assert "nosuchpartition" in out.stdout + out.stderr or "invalid partition" in out.stdout + out.stderr
    assert backend.live_ids() - before == set()
    assert not os.path.exists(os.path.join(env["DASK_JOBQUEUE__STATE_DIRECTORY"], "named", "x2"))
    missing = python("import jobqueue; jobqueue.connect('nosuch')", env, timeout=60)
    assert "no cluster named 'nosuch'" in missing.stderr


@pytest.mark.parametrize("system", ["local"])
def test_a_scheduler_job_that_dies_is_reported_with_its_log(system, backend, env):
    out = cli(["up", system, "--name", "t-dies", "--cores", "1", "--memory", "1GB",
               "--prologue", "echo broken-environment >&2; exit 3"], env, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "ended" in out.stderr and "broken-environment" in out.stderr, out.stderr
    assert not os.path.exists(os.path.join(env["DASK_JOBQUEUE__STATE_DIRECTORY"], "named", "t-dies"))


@pytest.mark.parametrize("system", ["local"])
def test_python_api_and_adapt_run_by_the_scheduler_job(system, backend, env):
    """``<Class>.up`` from Python, ``<Class>.from_name`` in a later process; adapt keeps
    working after the process that asked for it has exited: a burst of tasks grows the
    cluster, idleness shrinks it to the minimum."""
    name = "t-adapt"
    started = python(f"""
        import jobqueue
        cluster = jobqueue.LocalCluster.up({name!r}, cores=1, memory="1GB", processes=1)
        cluster.adapt(minimum_jobs=0, maximum_jobs=2, interval="500ms", wait_count=4)
        print("UP", cluster.name)
        cluster.detach()
    """, env)
    assert f"UP {name}" in started.stdout, started.stdout + started.stderr
    try:
        burst = python(f"""
            import time, jobqueue
            from distributed import Client
            cluster = jobqueue.LocalCluster.from_name({name!r})
            with Client(cluster) as client:
                futures = client.map(lambda x: (time.sleep(1), x)[1], range(40))
                seen = 0
                while not all(f.done() for f in futures):
                    seen = max(seen, len(client.scheduler_info()["workers"]))
                    time.sleep(0.2)
                print("RESULT", sum(client.gather(futures)), "PEAK", seen)
            deadline = time.time() + 90
            while time.time() < deadline and cluster.job_ids:
                time.sleep(1)
            print("AFTER", len(cluster.job_ids))
            cluster.detach()
        """, env, timeout=240)
        assert "RESULT 780" in burst.stdout, burst.stdout + burst.stderr
        assert re.search(r"PEAK [12]\b", burst.stdout) and "AFTER 0" in burst.stdout, burst.stdout
    finally:
        down = cli(["down", name], env)
    assert down.returncode == 0, down.stdout + down.stderr


@pytest.mark.parametrize("system", ["slurm"])
def test_cleanup_leaves_a_live_scheduler_jobs_journal_on_another_host_alone(system, backend, env, tmp_path):
    """The journal of a scheduler job's cluster names a pid on a compute node: `jobqueue cleanup`
    on the login node must not take that pid's absence here for a dead owner (it did before);
    once the batch system says the scheduler job ended, the journal is stale."""
    journals = tmp_path / "state" / "journals"
    journals.mkdir(parents=True)
    held = subprocess.run(["sbatch", "--parsable", "--begin=now+600", "-J", "t-cleanup", "--wrap", "sleep 600"],
                          capture_output=True, text=True, timeout=60, env=env).stdout.strip().split(";")[0]
    worker = subprocess.run(["sbatch", "--parsable", "--begin=now+600", "-J", "t-cleanup-w", "--wrap", "sleep 600"],
                            capture_output=True, text=True, timeout=60, env=env).stdout.strip().split(";")[0]
    data = {"owner_pid": 2 ** 22 - 7, "owner_started": 1.0, "owner_host": "compute-17", "system": "slurm",
            "job_ids": [worker], "cancel_argv": ["scancel", worker], "cancel_ok": "", "intents": {},
            "closed": False, "named": {"name": "x", "system": "slurm", "head_job_id": held}}
    (journals / "SLURMCluster-1-abc.json").write_text(json.dumps(data))
    try:
        out = cli(["cleanup", "--dry-run"], env, timeout=60)
        assert "no stale journals" in out.stdout, out.stdout + out.stderr
        subprocess.run(["scancel", held], timeout=30, env=env)
        assert wait_for(lambda: held not in backend.live_ids(), timeout=30)
        out = cli(["cleanup"], env, timeout=60)
        assert "its scheduler job" in out.stdout and "ended" in out.stdout, out.stdout + out.stderr
        assert wait_for(lambda: not backend.alive([worker]), timeout=30)
    finally:
        subprocess.run(["scancel", held, worker], timeout=30, env=env)


@pytest.mark.parametrize("system", ["slurm"])
def test_the_scheduler_job_heals_its_cluster(system, backend, env):
    """A worker job killed from outside is replaced by the scheduler job with no process of
    the user running; the name cannot be taken twice; close() on an attached cluster is down."""
    name = "t-heal"
    args = ["up", system, "--name", name, "--jobs", "2", "--cores", "1", "--memory", "1GB", "--walltime", "00:15:00",
            "--scheduler-memory", "1GB"]
    out = cli(args, env)
    assert out.returncode == 0, out.stdout + out.stderr
    head_id = head_record(env, name)["head_job_id"]
    workers = re.search(r"^worker jobs: (.*) \(", out.stdout, re.M).group(1).split()
    ids = {head_id, *workers}
    try:
        again = cli(args, env)
        assert again.returncode == 2 and f"a cluster named {name!r} exists" in again.stderr, again.stderr
        assert python(f"import jobqueue; jobqueue.connect({name!r}).wait_for_workers(2, timeout=60)",
                      env).returncode == 0
        backend.kill(workers[0])
        healed = python(f"""
            import time, jobqueue
            cluster = jobqueue.attach({name!r})
            deadline = time.time() + 90
            while time.time() < deadline and not (len(cluster.job_ids) == 2 and {workers[0]!r} not in cluster.job_ids):
                time.sleep(0.5)
            print("JOBS", " ".join(cluster.job_ids))
            from distributed import Client
            with Client(cluster) as client:
                client.wait_for_workers(2, timeout=90)
                print("SUM", client.submit(sum, range(10)).result())
            cluster.close()
            print("CLOSED")
        """, env, timeout=240)
        jobs = re.search(r"^JOBS (.*)$", healed.stdout, re.M).group(1).split()
        ids |= set(jobs)
        assert len(jobs) == 2 and workers[0] not in jobs, healed.stdout + healed.stderr
        assert "SUM 45" in healed.stdout and "CLOSED" in healed.stdout, healed.stdout + healed.stderr
        assert wait_for(lambda: not backend.alive(ids), timeout=30), backend.alive(ids)
        assert not os.path.exists(os.path.join(env["DASK_JOBQUEUE__STATE_DIRECTORY"], "named", name))
    finally:
        if os.path.exists(os.path.join(env["DASK_JOBQUEUE__STATE_DIRECTORY"], "named", name)):
            cli(["down", name], env)
