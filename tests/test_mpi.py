"""The mpirun bootstrap with a real MPI (the PyPI mpich wheel + mpi4py) and the real Slurm."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from distributed import Client

from conftest import require
from jobqueue import LocalCluster, SLURMCluster
from util import scontrol_show, squeue_ids, wait_for


def _mpirun():
    beside = os.path.join(os.path.dirname(sys.executable), "mpirun")  # the mpich wheel installs it there
    path = beside if os.access(beside, os.X_OK) else (shutil.which("mpirun") or shutil.which("mpiexec"))
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        path = None
    require("mpi", None if path else "mpirun and mpi4py are needed (pip install mpi4py mpich)")
    return path


GOOD = """
from jobqueue.runtime.mpi import initialize
initialize()
from distributed import Client
with Client() as c:
    print("RESULT", c.submit(lambda x: x + 1, 41).result(), sum(c.gather(c.map(lambda x: x * x, range(100)))))
"""
RAISES = """
from jobqueue.runtime.mpi import initialize
initialize()
from distributed import Client
c = Client()
assert c.submit(lambda: 1).result() == 1
raise RuntimeError("the analysis failed")
"""
BAD_SCHEDULER = """
from jobqueue.runtime.mpi import initialize
initialize(interface="nosuch0")
print("CLIENT CODE RAN")
"""
WORKER_DIES = """
import os, signal
from jobqueue.runtime.mpi import initialize
initialize()
from distributed import Client
with Client() as c:
    c.wait_for_workers(2)
    c.submit(lambda: os.kill(os.getpid(), signal.SIGKILL)).result()
"""
NO_MPI4PY = "raise ImportError('mpi4py hidden for this test')\n"


def _run(tmp_path, source, n=4, extra_env=None, timeout=120, argv=None):
    script = tmp_path / "script.py"
    script.write_text(source)
    env = {**os.environ, **(extra_env or {})}
    t0 = time.monotonic()
    proc = subprocess.Popen(argv or [_mpirun(), "-n", str(n), sys.executable, str(script)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    elapsed = time.monotonic() - t0
    # no rank may outlive the launcher
    assert wait_for(lambda: not _session_alive(proc.pid), 10), "ranks left running after mpirun returned"
    return proc.returncode, out, err, elapsed


def _session_alive(sid):
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.getsid(int(pid)) == sid:
                    return True
            except (ProcessLookupError, PermissionError):
                pass
    return False


def test_clean_run_exits_zero_without_tracebacks(tmp_path):
    rc, out, err, elapsed = _run(tmp_path, GOOD)
    assert rc == 0, err
    assert "RESULT 42 328350" in out
    assert "Traceback" not in err and "ERROR" not in err, err
    print(f"\n[measure] mpirun -n 4, initialize() script: result and exit in {elapsed:.2f} s")


def test_script_that_raises_ends_every_rank_nonzero(tmp_path):
    rc, out, err, elapsed = _run(tmp_path, RAISES)
    assert rc != 0
    assert "RuntimeError: the analysis failed" in err
    assert elapsed < 30, f"{elapsed:.1f} s"


def test_scheduler_that_cannot_start_ends_every_rank_with_the_cause(tmp_path):
    rc, out, err, elapsed = _run(tmp_path, BAD_SCHEDULER)
    assert rc != 0
    assert "CLIENT CODE RAN" not in out
    assert "the scheduler could not start" in err and "nosuch0" in err
    assert elapsed < 30, f"{elapsed:.1f} s"


def test_cli_scheduler_file_unwritable_and_port_in_use(tmp_path):
    mpirun = _mpirun()
    rc, out, err, elapsed = _run(tmp_path, "", n=3, argv=[
        mpirun, "-n", "3", sys.executable, "-m", "jobqueue.runtime.mpi", "--scheduler-file",
        "/proc/no-such-dir/scheduler.json"])
    assert rc != 0 and "the scheduler could not start" in err and "/proc/no-such-dir" in err, err
    assert elapsed < 30
    busy = socket.socket()
    busy.bind(("", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        rc, out, err, elapsed = _run(tmp_path, "", n=3, argv=[
            mpirun, "-n", "3", sys.executable, "-m", "jobqueue.runtime.mpi", "--scheduler-port", str(port),
            "--scheduler-file", str(tmp_path / "s.json")])
    finally:
        busy.close()
    assert rc != 0 and "the scheduler could not start" in err, err
    assert elapsed < 30


def test_worker_rank_that_dies_fails_the_run_cleanly(tmp_path):
    rc, out, err, elapsed = _run(tmp_path, WORKER_DIES, n=4, timeout=120)
    assert rc != 0
    assert elapsed < 60, f"{elapsed:.1f} s"


@pytest.mark.parametrize("nanny", ["--no-nanny", "--nanny"])
def test_cli_scheduler_and_workers_with_and_without_nanny(tmp_path, nanny):
    from jobqueue import connect

    mpirun = _mpirun()
    sched = tmp_path / "scheduler.json"
    proc = subprocess.Popen([mpirun, "-n", "3", sys.executable, "-m", "jobqueue", "mpi", "--scheduler-file",
                             str(sched), nanny], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert wait_for(sched.exists, 60), "no scheduler file"
        assert os.stat(sched).st_mode & 0o077 == 0  # owner-only
        time.sleep(0.3)
        with connect(str(sched)) as client:
            client.wait_for_workers(2, timeout=60)
            assert client.submit(lambda x: x * 2, 21).result() == 42
            client.shutdown()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_workers_only_mode_joins_a_running_scheduler(tmp_path):
    mpirun = _mpirun()
    with LocalCluster(cores=1, memory="1GB", processes=1) as cluster:  # the login-node cluster
        path = cluster.write_scheduler_file(str(tmp_path / "login.json"))
        proc = subprocess.Popen([mpirun, "-n", "2", sys.executable, "-m", "jobqueue", "mpi", "--no-scheduler",
                                 "--scheduler-file", path, "--name", "mpi"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            with Client(cluster) as client:
                client.wait_for_workers(2, timeout=60)
                names = sorted(w["name"] for w in client.scheduler_info()["workers"].values())
                assert names == ["mpi-0", "mpi-1"]
                assert client.submit(lambda: 6 * 7).result() == 42
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.wait(60) == 0  # the workers leave with their scheduler


def _run_job(script_text, tmp_path):
    path = tmp_path / "job.sh"
    path.write_text(script_text)
    job_id = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True, check=True,
                            cwd=tmp_path).stdout.strip()
    assert wait_for(lambda: job_id not in squeue_ids(), 180), f"job {job_id} did not end"
    info = scontrol_show(job_id)
    return job_id, info


def test_generated_sbatch_script_runs_the_analysis_and_propagates_exit_code(tmp_path, slurm):
    from click.testing import CliRunner

    from jobqueue.cli import main

    (tmp_path / "analysis.py").write_text(
        "import sys\nfrom distributed import Client\nwith Client() as c:\n"
        "    total = c.submit(sum, c.map(lambda x: x * x, range(50))).result()\n"
        "open('result.txt', 'w').write(str(total))\nprint('TOTAL', total)\n"
        "sys.exit(int(sys.argv[1]))\n")
    logs = tmp_path / "logs"
    for code, state in ((0, "COMPLETED"), (3, "FAILED")):
        result = CliRunner().invoke(main, ["script", "slurm", "--mpi", "--cores", "2", "--memory", "2GB",
                                           "--processes", "2", "--walltime", "00:05:00", "--job-name", "analysis",
                                           "--log-directory", str(logs), "--", "python", "analysis.py", str(code)])
        assert result.exit_code == 0, result.output
        assert "srun" in result.output and "--script analysis.py" in result.output
        logs.mkdir(exist_ok=True)
        job_id, info = _run_job(result.output, tmp_path)
        assert f"JobState={state}" in info, info
        assert f"ExitCode={code}:0" in info, info
        assert (tmp_path / "result.txt").read_text() == "40425"
        assert "TOTAL 40425" in (logs / f"analysis-{job_id}.out").read_text()
        (tmp_path / "result.txt").unlink()


def test_srun_without_mpi4py_inside_an_allocation(tmp_path, slurm):
    hide = tmp_path / "hide" / "mpi4py"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text(NO_MPI4PY)
    (tmp_path / "script.py").write_text(GOOD)
    job = (f"#!/bin/bash\n#SBATCH -n 3\n#SBATCH -o {tmp_path}/out.txt\n#SBATCH -e {tmp_path}/err.txt\n"
           f"export PYTHONPATH={tmp_path / 'hide'}\n"
           f"{sys.executable} -c 'import mpi4py' 2>&1 | grep -q 'mpi4py hidden' && echo hidden=1\n"
           f"srun {sys.executable} {tmp_path}/script.py\n")
    job_id, info = _run_job(job, tmp_path)
    out = (tmp_path / "out.txt").read_text()
    assert "hidden=1" in out  # mpi4py really could not be imported
    assert "RESULT 42 328350" in out, (out, (tmp_path / "err.txt").read_text())
    assert "JobState=COMPLETED" in info


def test_multi_task_job_counts_its_workers(slurm):
    """job_nodes: one job, one srun task per worker in workers-only mode. The CI Slurm has
    one node, so the test keeps the tasks and drops -N (the launch path is the same)."""
    with SLURMCluster(cores=1, memory="1GB", processes=1, job_nodes=2,
                      job_directives_skip=["-N", "--ntasks-per-node"], job_extra_directives=["-n 2"]) as cluster:
        script = cluster.job_script()
        assert "srun --kill-on-bad-exit=0" in script and "jobqueue.runtime.mpi --no-scheduler" in script
        cluster.scale(n=4)
        assert len(cluster.worker_spec) == 2  # 2 workers per job
        with Client(cluster) as client:
            client.wait_for_workers(4, timeout=120)
            names = sorted(w["name"] for w in client.scheduler_info()["workers"].values())
            assert names == ["SLURMCluster-0-0", "SLURMCluster-0-1", "SLURMCluster-1-0", "SLURMCluster-1-1"]
            assert client.submit(lambda: 1).result() == 1
            cluster.scale(jobs=1)
            assert wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, 60)


def test_job_nodes_directives():
    from jobqueue.scripts import render
    from jobqueue.systems import SlurmSystem

    spec = SLURMCluster.build_spec(cores=8, memory="16GB", processes=2, job_nodes=4)
    script = render(spec, SlurmSystem(), scheduler_address="tls://10.0.0.1:8786", worker_name="w")
    for line in ("#SBATCH -N 4", "#SBATCH --ntasks-per-node=2", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=15G"):
        assert line in script.splitlines(), script
    assert "--nworkers" not in script and "--nthreads 4" in script
    with pytest.raises(TypeError, match="job_nodes"):
        from jobqueue import PBSCluster

        PBSCluster.build_spec(cores=1, memory="1GB", job_nodes=2)


def test_script_mode_runs_a_script_that_initializes_itself(tmp_path):
    """Issue 13 item 9: `jobqueue mpi --script analysis.py` (what `jobqueue script --mpi` runs)
    with an unchanged dask-mpi script that calls initialize() itself: it works, no hang."""
    (tmp_path / "analysis.py").write_text(GOOD)
    rc, out, err, elapsed = _run(tmp_path, "", n=4, timeout=90, argv=[
        _mpirun(), "-n", "4", sys.executable, "-m", "jobqueue.runtime.mpi", "--script", str(tmp_path / "analysis.py")])
    assert rc == 0, err
    assert "RESULT 42 328350" in out
    assert elapsed < 60, f"{elapsed:.1f} s"


def test_script_mode_uses_the_scheduler_port(tmp_path):
    """Issue 13 item 9: --scheduler-port reaches the scheduler with --script."""
    probe = socket.socket()
    probe.bind(("", 0))
    port = probe.getsockname()[1]
    probe.close()
    (tmp_path / "analysis.py").write_text(
        "import dask\nfrom distributed import Client\n"
        "with Client() as c:\n    print('ADDRESS', c.scheduler.address)\n")
    rc, out, err, elapsed = _run(tmp_path, "", n=3, timeout=90, argv=[
        _mpirun(), "-n", "3", sys.executable, "-m", "jobqueue.runtime.mpi", "--scheduler-port", str(port),
        "--script", str(tmp_path / "analysis.py")])
    assert rc == 0, err
    assert f":{port}" in out.split("ADDRESS", 1)[1].split()[0], out
