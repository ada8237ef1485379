"""Smoke test through a real Torque-syntax qsub: Slurm's slurm-wlm-torque wrappers
(/usr/bin/qsub, qstat, qdel) submitting PBSCluster's job script to the real Slurm.

The wrappers are a Torque-flavoured subset (no `qstat -F json`, no job history, ids
without a server name, script from a file only), so this proves PBSCluster works with
Torque-style tools: it falls back to the plain qstat table for job states."""

import os
import shutil

from distributed import Client

from conftest import require
from util import squeue_ids, wait_for

WRAPPER = "/usr/bin/qsub"


def _torque_unavailable():
    if not os.path.exists(WRAPPER):
        return "/usr/bin/qsub not found (apt-get install slurm-wlm-torque)"
    with open(WRAPPER, errors="replace") as f:
        if "slurm" not in f.read(4096).lower():
            return "/usr/bin/qsub is not Slurm's Torque wrapper"
    if not shutil.which("sbatch"):
        return "Slurm is not running (bash ci/slurm/start.sh)"
    return None


def test_pbs_cluster_through_slurms_torque_wrappers(monkeypatch, tmp_path):
    require("torque", _torque_unavailable())
    monkeypatch.setenv("PATH", f"/usr/bin:{os.environ['PATH']}")
    # the wrapper reads -o/-e only from its command line, never from #PBS lines, so Slurm
    # writes <script>.o<id>/.e<id> into the submitting directory: keep that out of the checkout
    monkeypatch.chdir(tmp_path)
    from jobqueue import PBSCluster

    with PBSCluster(cores=1, memory="1GB", processes=1, walltime="00:10:00",
                    scheduler_options={"dashboard_address": ":0"}) as cluster:
        cluster.scale(jobs=2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            ids = list(cluster.job_ids)
            assert all(i.isdigit() for i in ids) and set(ids) <= squeue_ids()  # Slurm job ids
            assert client.submit(lambda x: x + 1, 41).result() == 42
            assert wait_for(lambda: {r.state for r in cluster.jobs} == {"running"}, 30), str(cluster.jobs)
            assert cluster.batch_system.flavour == "torque"
    assert wait_for(lambda: not (set(ids) & squeue_ids()), 60), "qdel left jobs in Slurm"
