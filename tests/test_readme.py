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
