"""The `jobqueue` command."""

import subprocess
import sys

import pytest

from click.testing import CliRunner

from jobqueue.cli import main


def test_script_slurm_prints_directives_and_worker_command():
    result = CliRunner().invoke(main, ["script", "slurm", "--cores", "4", "--memory", "8GB", "--walltime",
                                       "01:00:00", "-q", "batch", "--job-extra-directive", "--comment=x",
                                       "--prologue", "module load python", "--scheduler-address",
                                       "tcp://10.1.1.1:8786"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("#!/usr/bin/env bash\n")
    for line in ("#SBATCH -J dask-worker", "#SBATCH -p batch", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=8G",
                 "#SBATCH -t 01:00:00", "#SBATCH --comment=x", "module load python"):
        assert line + "\n" in out
    assert "-m distributed.cli.dask_worker tcp://10.1.1.1:8786 --name dummy-name --nthreads 1" in out
    assert "--nworkers 4" in out


def test_script_bad_value_is_a_usage_error():
    result = CliRunner().invoke(main, ["script", "slurm", "--cores", "4", "--memory", "eight"])
    assert result.exit_code == 2
    assert "memory='eight'" in result.output and "16GB" in result.output


def test_script_unknown_system():
    result = CliRunner().invoke(main, ["script", "loadleveler", "--cores", "1", "--memory", "1GB"])
    assert result.exit_code == 2 and "loadleveler" in result.output


def test_demo_on_the_local_system():
    out = subprocess.run([sys.executable, "-m", "jobqueue.cli", "demo", "--system", "local"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "2 worker(s) connected" in out.stdout
    assert "computed on the cluster: 20540 (expected 20540)" in out.stdout
    assert "lists none of them as queued or running any more" in out.stdout
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("system,args,expected", [
    ("sge", ["--cores", "4", "--memory", "8GB", "--walltime", "01:00:00", "--project", "p1", "--queue", "all.q"],
     ["#$ -N dask-worker", "#$ -q all.q", "#$ -P p1", "#$ -l h_rt=01:00:00", "#$ -cwd", "#$ -j y"]),
    ("sge", ["--cores", "4", "--memory", "8GB", "--job-cpu", "4", "--parallel-environment", "mpi"],
     ["#$ -pe mpi 4"]),
    ("pbs", ["--cores", "4", "--memory", "8GB", "--account", "proj", "--queue", "workq"],
     ["#PBS -N dask-worker", "#PBS -q workq", "#PBS -A proj", "#PBS -l select=1:ncpus=4:mem=7630MB",
      "#PBS -l walltime=00:30:00"]),
    ("pbs", ["--cores", "2", "--memory", "2GB", "--resource-spec", "select=1:ncpus=2:mem=2gb"],
     ["#PBS -l select=1:ncpus=2:mem=2gb"]),
])
def test_script_for_sge_and_pbs(system, args, expected):
    from click.testing import CliRunner

    from jobqueue.cli import main

    result = CliRunner().invoke(main, ["script", system, *args])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for line in expected:
        assert line in lines, (line, result.output)


def test_script_rejects_a_keyword_the_system_does_not_have():
    from click.testing import CliRunner

    from jobqueue.cli import main

    result = CliRunner().invoke(main, ["script", "sge", "--cores", "1", "--memory", "1GB", "--account", "x"])
    assert result.exit_code == 2 and "unexpected keyword argument 'account'" in result.output


EMULATED = {"pbs": "qsub", "moab": "msub", "lsf": "bsub", "oar": "oarsub", "htcondor": "condor_submit", "flux": "flux"}


@pytest.mark.parametrize("system", sorted(EMULATED))
def test_demo_finds_and_runs_each_emulated_system(system, backend, monkeypatch, tmp_path):
    """`jobqueue demo` picks the batch system whose command is on PATH (here only the
    emulator's) and runs its two-job demo on it, leaving no job behind."""
    import os

    from jobqueue.systems import detect_system

    path = backend.path
    if system == "pbs":  # the emulator's bin also has Moab's msub: a PBS site without Moab has none
        for command in ("qsub", "qstat", "qdel"):
            os.symlink(os.path.join(backend.path, command), tmp_path / command)
        path = str(tmp_path)
    with monkeypatch.context() as m:
        m.setenv("PATH", path)
        assert detect_system() == system
    env = {**backend.environ(), "DASK_JOBQUEUE__HTCONDOR__DISK": "1GB",
           "DASK_JOBQUEUE__OAR__MEMORY_PER_CORE_PROPERTY_NAME": "memcore"}
    out = subprocess.run([sys.executable, "-m", "jobqueue.cli", "demo", "--system", system], capture_output=True,
                         text=True, timeout=240, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"on the {system} batch system" in out.stdout and "sum of squares of 0..39 computed" in out.stdout
    assert "lists none of them as queued or running any more" in out.stdout
