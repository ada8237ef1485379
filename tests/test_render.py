"""Job script rendering: golden scripts, directive skipping, template override, quoting."""

import os
import subprocess
from pathlib import Path

import pytest

from jobqueue.scripts import LEAN_START_DIR, render, shell_word
from jobqueue.spec import JobSpec
from jobqueue.systems import LocalSystem, PBSSystem, SGESystem, SlurmSystem

GOLDEN = Path(__file__).parent / "golden"
ADDR = "tcp://10.0.0.1:8786"

CASES = {
    # dask-jobqueue 0.9.0 prints the same header for SLURMCluster(cores=1, memory="1GB")
    "slurm-default": dict(cores=1, memory="1GB", walltime="00:30:00"),
    "slurm-full": dict(cores=8, memory="16GB", processes=2, walltime="1-00:00:00", queue="batch",
                       account="proj42", job_name="analysis", log_directory="/scratch/logs",
                       job_extra_directives=["--comment=nightly", "#SBATCH --exclusive"],
                       job_script_prologue=["module load python/3.11", "source ~/venv/bin/activate"],
                       job_script_epilogue=["echo finished"],
                       local_directory="$TMPDIR", interface="ib0", death_timeout=120,
                       worker_extra_args=["--lifetime 55m", "--lifetime-stagger", "5m"]),
    "slurm-skip": dict(cores=4, memory="8GB", processes=1, walltime="02:00:00",
                       job_directives_skip=["--mem", "-n 1"],
                       job_extra_directives=["--mem-per-cpu=2G", "-n 10"], job_cpu=8, nanny=False),
    "local-default": dict(cores=2, memory="4GB", processes=1),
    "sge-default": dict(cores=1, memory="1GB", walltime="00:30:00"),
    "sge-full": dict(cores=8, memory="16GB", processes=2, walltime="02:00:00", queue="all.q", project="proj42",
                     resource_spec="h_vmem=8G,mem_free=8G", job_cpu=8, log_directory="/scratch/logs",
                     job_extra_directives=["-V", "#$ -m n"], job_directives_skip=["-j"],
                     job_script_prologue=["module load python"]),
    "pbs-default": dict(cores=1, memory="1GB", walltime="00:30:00"),
    "pbs-full": dict(cores=8, memory="16GB", processes=2, walltime="1-00:00:00", queue="workq", account="proj42",
                     log_directory="/scratch/logs", job_extra_directives=["-V", "#PBS -m n"],
                     job_directives_skip=["-l walltime"], job_script_prologue=["cd $PBS_O_WORKDIR"]),
    "pbs-resource-spec": dict(cores=4, memory="8GB", resource_spec="select=2:ncpus=4:mem=8GB:mpiprocs=4",
                              walltime="01:00:00"),
}
SYSTEMS = {"slurm": SlurmSystem, "local": LocalSystem, "sge": SGESystem, "pbs": PBSSystem}


def _render(case, **kw):
    spec = JobSpec.create(python="/usr/bin/python3", **CASES[case])
    text = render(spec, SYSTEMS[case.split("-")[0]](), scheduler_address=ADDR, worker_name="w-0", **kw)
    return text.replace(LEAN_START_DIR, "/site-packages/jobqueue/runtime/boot")  # wherever jobqueue is installed


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case):
    text = _render(case)
    golden = GOLDEN / f"{case}.sh"
    if os.environ.get("JOBQUEUE_REGEN_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_script_is_valid_bash():
    for case in CASES:
        subprocess.run(["bash", "-n"], input=_render(case), text=True, check=True)


def test_skip_matches_whole_keys_never_substrings():
    spec = JobSpec.create(cores=4, memory="8GB", job_directives_skip=["--mem", "-n"],
                          job_extra_directives=["--mem-per-cpu=2G"])
    header = SlurmSystem().header(spec)
    assert "#SBATCH --mem-per-cpu=2G" in header  # extras never skipped
    assert not any(line.startswith("#SBATCH --mem=") for line in header)
    assert "#SBATCH -n 1" not in header
    assert "#SBATCH --cpus-per-task=4" in header  # "-n" is not a substring match
    spec = JobSpec.create(cores=4, memory="8GB", walltime="00:30:00", job_directives_skip=["--me", "-t 00"])
    header = SlurmSystem().header(spec)
    assert any(line.startswith("#SBATCH --mem=") for line in header)  # "--me" is no key
    assert "#SBATCH -t 00:30:00" in header  # "-t 00" is neither the key nor the directive
    spec = JobSpec.create(cores=4, memory="8GB", walltime="00:30:00", job_directives_skip=["#SBATCH -t"])
    assert not any(line.startswith("#SBATCH -t") for line in SlurmSystem().header(spec))


def test_user_template_extends_ours(tmp_path):
    tpl = tmp_path / "mine.sh.j2"
    tpl.write_text('{% extends "slurm.sh.j2" %}\n{% block prologue %}\necho "site setup for {{ job_name }}"\n'
                   '{{ super() }}{% endblock %}\n')
    text = _render("slurm-full", template=str(tpl))
    assert 'echo "site setup for analysis"\n' in text and "module load python/3.11\n" in text
    assert text.index("site setup") < text.index("module load python/3.11")  # ours follows theirs (super())
    assert "#SBATCH -p batch" in text and "--name w-0" in text


def test_user_template_replaces_ours(tmp_path):
    tpl = tmp_path / "own.sh.j2"
    tpl.write_text("#!/bin/sh\n{{ directives | join('\\n') }}\nexec {{ worker_command }}\n")
    text = _render("slurm-default", template=str(tpl))
    assert text.startswith("#!/bin/sh\n#SBATCH -J dask-worker\n")
    assert "exec /usr/bin/python3 -m distributed.cli.dask_worker" in text


def test_template_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        _render("slurm-default", template=str(tmp_path / "missing.j2"))
    bad = tmp_path / "bad.sh.j2"
    bad.write_text("{{ no_such_variable }}")
    with pytest.raises(ValueError, match="no_such_variable"):
        _render("slurm-default", template=str(bad))


@pytest.mark.parametrize("value", ["x$(touch {m})", "x`touch {m}`", "x; touch {m}", "x' ; touch {m}; '",
                                   'x" ; touch {m}; "', "x\\$(touch {m})", "x && touch {m} #", "$(touch {m})"])
def test_hostile_values_are_never_run(tmp_path, value):
    marker = tmp_path / "pwned"
    value = value.format(m=marker)
    spec = JobSpec.create(cores=1, memory="1GB", python="/bin/echo", local_directory=value,
                          worker_extra_args=["--resources", value])
    script = render(spec, SlurmSystem(), scheduler_address=value, worker_name=value)
    out = subprocess.run(["bash"], input=script, text=True, capture_output=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert not marker.exists()
    assert out.stdout.count(value) == 4, (script, out.stdout)


def test_shell_word_keeps_environment_variables():
    assert shell_word("$TMPDIR") == '"$TMPDIR"'
    assert shell_word("${HOME}/x y") == '"${HOME}/x y"'
    assert shell_word("plain-word_1.0") == "plain-word_1.0"
    out = subprocess.run(["bash", "-c", "echo " + shell_word("$HOME/$(id)")], capture_output=True,
                         text=True, env={"HOME": "/h"})
    assert out.stdout.strip() == "/h/$(id)"
    with pytest.raises(ValueError):
        shell_word("a\nb")


def test_fork_start_environment_follows_dask_config_and_yields_to_the_job_environment(tmp_path):
    """The job script exports distributed's pre-spawn environment before Python starts
    (a forked worker cannot read it later); a value already set in the job wins."""
    import dask

    marker = tmp_path / "pwned"
    pre = {"MALLOC_TRIM_THRESHOLD_": 65536, "OMP_NUM_THREADS": 1, "SITE_X": f"a b$(touch {marker})",
           "not-a-name": "1", "UNSET_ME": None}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": pre,
                          "distributed.worker.multiprocessing-method": "forkserver"}):
        script = render(JobSpec.create(cores=1, memory="1GB", python="/bin/echo"), SlurmSystem(),
                        scheduler_address=ADDR, worker_name="w")
    env_dump = script + "\nenv\n"
    out = subprocess.run(["bash"], input=env_dump, text=True, capture_output=True, timeout=10,
                         env={"PATH": os.environ["PATH"], "OMP_NUM_THREADS": "7"})
    assert out.returncode == 0, out.stderr
    env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line and not line.startswith("/"))
    assert env["DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD"] == "forkserver"  # the user's choice kept
    assert env["MALLOC_TRIM_THRESHOLD_"] == "65536" and env["PYTHONHASHSEED"] == "6640"
    assert env["OMP_NUM_THREADS"] == "7"  # the job's own value wins
    assert env["SITE_X"] == f"a b$(touch {marker})" and not marker.exists()
    assert "UNSET_ME" not in env and "not-a-name" not in script
    # no nanny: the worker is started directly, nothing to fork
    assert "MULTIPROCESSING_METHOD" not in render(JobSpec.create(cores=1, memory="1GB", nanny=False),
                                                 SlurmSystem(), scheduler_address=ADDR)
