"""The README's Python example runs as written on the real Slurm."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from util import squeue_ids, wait_for

README = Path(__file__).parent.parent / "README.md"


@pytest.mark.usefixtures("slurm")
def test_readme_example_runs(tmp_path):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    before = squeue_ids()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "4950"
    assert wait_for(lambda: not (squeue_ids() - before), 60)


def test_readme_mpi_example_runs_under_mpirun(tmp_path):
    import os
    import shutil

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(b for b in blocks if "initialize()" in b)
    mpirun = os.path.join(os.path.dirname(sys.executable), "mpirun")
    mpirun = mpirun if os.access(mpirun, os.X_OK) else shutil.which("mpirun")
    if mpirun is None:
        from conftest import require

        require("mpi", "mpirun is needed (pip install mpi4py mpich)")
    (tmp_path / "analysis.py").write_text(code + "from distributed import Client\n"
                                          "print(Client().submit(sum, range(100)).result())\n")
    out = subprocess.run([mpirun, "-n", "4", sys.executable, "analysis.py"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "4950"


@pytest.mark.usefixtures("slurm")
def test_readme_named_cluster_example_runs(tmp_path):
    """The README's `jobqueue up` lines, run one by one as written (in a state directory of
    this test's own), leave nothing in the queue."""
    import os

    block = next(b for b in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S) if "jobqueue up" in b)
    # a state directory of its own, whose credentials must not become the user's dask config
    env = {**os.environ, "DASK_JOBQUEUE__STATE_DIRECTORY": str(tmp_path / "state"),
           "DASK_JOBQUEUE__TLS_DASK_CONFIG": "false", "DASK_JOBQUEUE__PROGRESS_INTERVAL": "0"}
    before = squeue_ids()
    outputs = []
    try:
        for line in block.strip().splitlines():
            out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                                 env=env)
            assert out.returncode == 0, (line, out.stdout, out.stderr[-3000:])
            outputs.append(out.stdout)
    finally:
        subprocess.run([sys.executable, "-m", "jobqueue", "down", "analysis"], capture_output=True, timeout=120,
                       env=env)
    assert outputs[1].strip().splitlines()[-1] == "4950"
    assert "analysis" in outputs[2] and "running" in outputs[2]
    assert "is down" in outputs[3]
    assert wait_for(lambda: not (squeue_ids() - before), 60)
