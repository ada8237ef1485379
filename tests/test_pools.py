"""Worker pools, GPUs and containers.

Golden job scripts for ``gpus=`` and ``container=`` on every system; GPU pinning and the
keyword checks as units; then real clusters: a container stand-in (records its argv, then
runs the command) on the real Slurm, and on the real Slurm and Grid Engine a cluster with a
default CPU pool and a "gpu" pool over a stand-in GPU resource (a Slurm GRES, a Grid Engine
consumable; ci/slurm/start.sh and ci/sge/start.sh define them), scaled and adapted per pool.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from jobqueue.cluster import CLUSTER_CLASSES
from jobqueue.runtime.worker import gpu_devices
from jobqueue.scripts import render
from jobqueue.spec import JobSpec
from jobqueue.systems import REGISTRY

from util import wait_for

GOLDEN = Path(__file__).parent / "golden"
STANDIN = str(Path(__file__).parent / "container_standin")
ADDR = "tls://10.0.0.1:8786"
TLS_ARGS = ["--tls-ca-file", "/home/u/.jobqueue/tls/ca.pem", "--tls-cert", "/home/u/.jobqueue/tls/cert.pem",
            "--tls-key", "/home/u/.jobqueue/tls/key.pem"]
SYSTEM_KEYWORDS = {"lsf": {"lsf_units": "MB"}, "htcondor": {"disk": "1GB"}}


@pytest.mark.parametrize("system", list(REGISTRY))
def test_golden_gpus_and_container(system):
    """gpus=2 and container= on every system: the GPU request in the system's own words, one
    worker per GPU offering GPU=1, and the worker command run through apptainer with --nv and
    the credentials' and logs' directories bound."""
    cls = CLUSTER_CLASSES[system]
    spec = cls.build_spec(cores=4, memory="8GB", gpus=2, walltime="01:00:00", container="/images/dask.sif",
                          log_directory="/scratch/logs", job_name="gpu-worker", **SYSTEM_KEYWORDS.get(system, {}))
    text = render(spec, cls.system_cls(), scheduler_address=ADDR, worker_name="w-0", extra_worker_args=TLS_ARGS)
    golden = GOLDEN / f"{system}-gpus-container.sh"
    if os.environ.get("JOBQUEUE_REGEN_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    assert "apptainer exec --bind /home/u/.jobqueue/tls,/scratch/logs --nv /images/dask.sif python3 -m " in text
    assert "--nworkers 2" in text and "--resources GPU=1" in text
    assert "JOBQUEUE_GPUS=2 JOBQUEUE_GPUS_PER_WORKER=1" in text


@pytest.mark.parametrize("runtime,words", [
    ("singularity", "singularity exec --bind /scratch/logs --nv /i.sif python3"),
    ("podman-hpc", "podman-hpc run --rm --net host --env-host -v /scratch/logs:/scratch/logs --gpu /i.sif python3"),
    ("shifter", "shifter --image=/i.sif --volume=/scratch/logs:/scratch/logs --module=gpu python3"),
])
def test_each_container_runtime(runtime, words):
    spec = CLUSTER_CLASSES["slurm"].build_spec(cores=2, memory="2GB", gpus=1, container="/i.sif",
                                               container_runtime=runtime, log_directory="/scratch/logs")
    assert words in render(spec, CLUSTER_CLASSES["slurm"].system_cls(), scheduler_address=ADDR)


def test_gpu_pinning_per_worker():
    env = {"JOBQUEUE_GPUS": "4", "JOBQUEUE_GPUS_PER_WORKER": "1"}
    assert [gpu_devices(i, env) for i in range(4)] == ["0", "1", "2", "3"]
    # the batch system's own assignment wins (Slurm with gres.conf File=, a GPU-aware SGE)
    env["CUDA_VISIBLE_DEVICES"] = "4,5,6,7"
    assert [gpu_devices(i, env) for i in range(4)] == ["4", "5", "6", "7"]
    assert gpu_devices(0, {"JOBQUEUE_GPUS": "4", "JOBQUEUE_GPUS_PER_WORKER": "2"}) == "0,1"
    assert gpu_devices(1, {"JOBQUEUE_GPUS": "4", "JOBQUEUE_GPUS_PER_WORKER": "2"}) == "2,3"
    assert gpu_devices(0, {}) is None


@pytest.mark.parametrize("kwargs,words", [
    (dict(cores=1, gpus=2), "at most cores=1"),
    (dict(cores=4, gpus=3, processes=2), "processes must divide gpus=3"),
    (dict(cores=2, worker_resources={"GPU": -1}), "must be positive"),
    (dict(cores=2, worker_resources=["BIGMEM"]), "is not NAME=AMOUNT"),
    (dict(cores=2, container="/i.sif", container_runtime="docker"), "apptainer, singularity, podman-hpc, shifter"),
])
def test_bad_gpu_resource_and_container_keywords(kwargs, words):
    with pytest.raises(ValueError, match=words):
        JobSpec.create(memory="2GB", **kwargs)


def test_worker_resources_and_a_pool_name_are_checked_before_submitting():
    spec = JobSpec.create(cores=4, memory="8GB", gpus=4, processes=2, worker_resources={"BIGMEM": 1})
    assert spec.resources_per_worker == {"BIGMEM": 1, "GPU": 2}
    from jobqueue import LocalCluster

    with LocalCluster(cores=1, memory="1GB", scheduler_options={"dashboard_address": ":0"}) as cluster:
        for bad in ("9x", "has space", "default"):
            with pytest.raises(ValueError, match="pool"):
                cluster.add_pool(bad, cores=1)
        with pytest.raises(ValueError, match="gpus"):
            cluster.add_pool("gpu", cores=1, gpus=2)
        assert list(cluster.pools) == ["default"] and not cluster.tracker.jobs


@pytest.mark.parametrize("system", ["slurm"])
def test_workers_run_through_the_container_runtime(system, backend, tmp_path, monkeypatch):
    """container= on the real Slurm, with a stand-in apptainer on PATH: the worker command ran
    through it (exec, the binds the workers need, then the image), and the workers computed."""
    from distributed import Client

    record = tmp_path / "apptainer.jsonl"
    monkeypatch.setenv("PATH", f"{STANDIN}:{os.environ['PATH']}")
    monkeypatch.setenv("CONTAINER_STANDIN_RECORD", str(record))
    with backend.cls(cores=1, memory="1GB", processes=1, walltime="00:10:00", container="/images/dask.sif",
                     python=sys.executable, log_directory=str(tmp_path / "logs")) as cluster:
        cluster.scale(jobs=2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            assert client.submit(sum, range(10)).result() == 45
        script = cluster.job_script()
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(calls) == 2, calls
    tls_dir = os.path.dirname(cluster.security.tls_ca_file)
    for call in calls:
        args = call["args"]
        assert args[:2] == ["exec", "--bind"] and args[3] == "/images/dask.sif", args
        assert set(args[2].split(",")) == {tls_dir, str(tmp_path / "logs")}, args
        assert args[4:7] == [sys.executable, "-m", "distributed.cli.dask_worker"], args
    assert "apptainer exec --bind" in script


def _burst(client, n, resources=None, seconds=2.0):
    return client.map(lambda i, s=seconds: (time.sleep(s), os.environ.get("CUDA_VISIBLE_DEVICES", "none"))[1],
                      range(n), resources=resources, pure=False)


@pytest.mark.parametrize("system", ["slurm", "sge"])
def test_a_cpu_pool_and_a_gpu_pool_adapt_each_to_their_own_work(system, backend):
    """The issue's scenario on a real batch system with a stand-in GPU resource: tasks that need
    a GPU run only on the gpu pool's workers; under adapt, a burst of them grows only the gpu
    pool, a burst of plain tasks only the default pool, and both shrink back when idle."""
    from distributed import Client

    with backend.cls(cores=1, memory="1GB", processes=1, walltime="00:15:00") as cluster:
        gpu = cluster.add_pool("gpu", cores=1, memory="1GB", gpus=1)
        assert gpu.spec.resources_per_worker == {"GPU": 1}
        text = gpu.job_script()
        assert ("--gres=gpu:1" in text) if system == "slurm" else ("-l gpu=1" in text)
        cluster.adapt(minimum_jobs=0, maximum_jobs=2, interval="500ms", wait_count=4)
        gpu.adapt(minimum_jobs=0, maximum_jobs=2, interval="500ms", wait_count=4)
        with Client(cluster) as client:
            futures = _burst(client, 8, resources={"GPU": 1})
            assert wait_for(lambda: gpu.job_ids, timeout=60), cluster.jobs
            devices = client.gather(futures)
            assert "none" not in devices and len(set(devices)) >= 1, devices  # ran on gpu workers only
            gpu_jobs = {r.job_id for r in gpu.jobs}
            assert gpu_jobs and not cluster.pools["default"].jobs, str(cluster.jobs)

            futures = _burst(client, 8)
            assert wait_for(lambda: cluster.pools["default"].job_ids, timeout=60), cluster.jobs
            client.gather(futures)
            assert {r.job_id for r in gpu.jobs} == gpu_jobs, str(cluster.jobs)  # no new gpu job for plain work

            assert wait_for(lambda: not cluster.job_ids, timeout=120), str(cluster.jobs)
            assert not gpu.job_ids and not cluster.pools["default"].job_ids
        assert "gpu:" in repr(cluster) and "default:" in repr(cluster)
        usage = cluster.usage().to_dict()
        assert set(usage) >= {"default", "gpu"}


def test_dask_cuda_worker_where_installed():
    """cuda_worker=True: dask-cuda's `dask cuda worker` starts the job's workers (one per GPU,
    its own device pinning, so jobqueue exports none); without dask-cuda here, a warning says
    it must be on the compute nodes."""
    import importlib.util

    cls = CLUSTER_CLASSES["slurm"]
    with pytest.warns(UserWarning, match="dask-cuda") if importlib.util.find_spec("dask_cuda") is None else \
            __import__("contextlib").nullcontext():
        spec = cls.build_spec(cores=4, memory="8GB", gpus=2, cuda_worker=True)
    text = render(spec, cls.system_cls(), scheduler_address=ADDR, worker_name="w-0", extra_worker_args=TLS_ARGS)
    assert f"-m dask cuda worker {ADDR} --name w-0 --nthreads 2 --memory-limit 3.73GiB" in text
    assert "--resources GPU=1" in text and "--nworkers" not in text and "JOBQUEUE_GPUS" not in text
    assert "#SBATCH --gres=gpu:2" in text
    with pytest.raises(ValueError, match="one worker per GPU"):
        cls.build_spec(cores=4, memory="8GB", gpus=2, processes=1, cuda_worker=True)


def test_pools_from_config_repr_and_script(monkeypatch):
    """A `pools:` config section makes the pools of every cluster of that system; the repr and
    the Jupyter view have one part per pool; `jobqueue script --pool` prints a pool's script."""
    import dask
    from click.testing import CliRunner

    from jobqueue import LocalCluster
    from jobqueue.cli import main

    pools = {"big": {"cores": 2, "memory": "2GB", "worker_resources": {"BIG": 1}}}
    with dask.config.set({"jobqueue.local.pools": pools}):
        with LocalCluster(cores=1, memory="1GB", scheduler_options={"dashboard_address": ":0"}) as cluster:
            assert list(cluster.pools) == ["default", "big"]
            big = cluster.pools["big"]
            assert big.spec.cores == 2 and big.spec.resources_per_worker == {"BIG": 1}
            assert "--resources BIG=1" in big.job_script() and "--resources" not in cluster.job_script()
            assert "default: none queued or running; big: none queued or running" in repr(cluster)
            html = cluster._repr_html_()
            assert "Pool default:" in html and "Pool big:" in html
        result = CliRunner().invoke(main, ["script", "local", "--cores", "1", "--memory", "1GB", "--pool", "big"])
        assert result.exit_code == 0 and "--resources BIG=1" in result.output, result.output
        result = CliRunner().invoke(main, ["script", "local", "--cores", "1", "--memory", "1GB", "--pool", "gpu"])
        assert result.exit_code == 2 and "no pool 'gpu'" in result.output


@pytest.mark.parametrize("system", ["local"])
def test_a_pool_in_a_named_cluster(system, backend, tmp_path):
    """add_pool on an attached cluster: the pool lives in the scheduler job; its workers take
    the tasks that need its resource."""
    import subprocess
    import textwrap

    env = {**backend.environ(), "DASK_JOBQUEUE__STATE_DIRECTORY": str(tmp_path / "state"),
           "DASK_JOBQUEUE__TLS_DASK_CONFIG": "false", "PYTHONPATH": os.pathsep.join(sys.path)}
    code = textwrap.dedent("""
        import jobqueue
        from distributed import Client
        cluster = jobqueue.LocalCluster.up("t-pool", cores=1, memory="1GB", processes=1)
        try:
            big = cluster.add_pool("big", worker_resources={"BIG": 1})
            big.scale(jobs=1)
            cluster.scale(jobs=1)
            with Client(cluster) as client:
                client.wait_for_workers(2, timeout=90)
                where = client.submit(lambda: __import__("distributed").get_worker().name, resources={"BIG": 1},
                                      pure=False).result()
            print("POOLS", sorted(cluster.pools), "ROWS", sorted({r.pool for r in cluster.jobs}))
            print("RAN ON", where)
        finally:
            cluster.close()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=env)
    assert "POOLS ['big', 'default'] ROWS ['big', 'default']" in out.stdout, out.stdout + out.stderr
    assert re.search(r"^RAN ON \S+-big-\d+$", out.stdout, re.M), out.stdout  # a worker of the pool "big"
