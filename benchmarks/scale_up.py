"""Time from scale() to N connected workers on the real Slurm: jobqueue vs dask-jobqueue vs a floor.

Runs the contenders alternately in one run on the same Slurm, so load drifts hit all
alike, and prints a table plus one JSON line:

- time to N workers (N = 8, 32, 64 by --sizes; 1 and 4 processes per job by --processes),
  from the cluster object existing to `wait_for_workers(N)` returning;
- submission commands issued (sbatch calls, counted with a PATH shim);
- status commands per minute and CPU seconds of this (login-node) process while
  --pending jobs wait in the queue (held), over --idle seconds;
- the floor: bare `dask worker --no-nanny` jobs submitted by hand with sbatch, one per
  worker, against a plain scheduler.

    python benchmarks/scale_up.py [--sizes 8,32] [--processes 1,4] [--repeat 1] [--pending 200] [--tcp] [--no-idle]

Timing goals live here, never in tests. Needs a running Slurm (bash ci/slurm/start.sh)
and dask-jobqueue (pip install '.[test]').
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

WORKER_MEMORY = "500MB"


class CommandCounter:
    """PATH shims that count sbatch and squeue calls made by this process and its children."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="bench-shims-")
        self.log = os.path.join(self.dir, "calls")
        for cmd in ("sbatch", "squeue"):
            real = subprocess.run(["which", cmd], capture_output=True, text=True).stdout.strip()
            path = os.path.join(self.dir, cmd)
            with open(path, "w") as f:
                f.write(f"#!/bin/sh\necho {cmd} >> {self.log}\nexec {real} \"$@\"\n")
            os.chmod(path, 0o755)
        os.environ["PATH"] = f"{self.dir}:{os.environ['PATH']}"

    def reset(self):
        open(self.log, "w").close()

    def count(self, cmd: str) -> int:
        try:
            with open(self.log) as f:
                return sum(1 for line in f if line.strip() == cmd)
        except FileNotFoundError:
            return 0


def _queue_empty(timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.strip()
        if not out:
            return
        time.sleep(0.5)


def _run_cluster(cluster_cls, n: int, processes: int, counter: CommandCounter, **kwargs) -> dict:
    from distributed import Client

    counter.reset()
    t0 = time.perf_counter()
    with cluster_cls(cores=processes, memory=f"{processes * 500}MB", processes=processes, walltime="00:20:00",
                     scheduler_options={"dashboard_address": ":0"}, **kwargs) as cluster:
        cluster.scale(n=n)
        with Client(cluster) as client:
            client.wait_for_workers(n, timeout=600)
            elapsed = time.perf_counter() - t0
    _queue_empty()
    return {"seconds": elapsed, "submit_commands": counter.count("sbatch")}


def run_jobqueue(n: int, processes: int, counter: CommandCounter) -> dict:
    from jobqueue import SLURMCluster

    return _run_cluster(SLURMCluster, n, processes, counter)


def run_jobqueue_tcp(n: int, processes: int, counter: CommandCounter) -> dict:
    """jobqueue without its default TLS: plain TCP, as dask-jobqueue and the floor use."""
    import warnings

    from jobqueue import SLURMCluster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the security=False warning
        return _run_cluster(SLURMCluster, n, processes, counter, security=False)


def run_dask_jobqueue(n: int, processes: int, counter: CommandCounter) -> dict:
    from dask_jobqueue import SLURMCluster

    return _run_cluster(SLURMCluster, n, processes, counter)


def run_floor(n: int, processes: int, counter: CommandCounter) -> dict:
    """Bare `dask worker --no-nanny` jobs by hand: one sbatch per worker, nothing else."""
    from distributed import Client, LocalCluster

    counter.reset()
    t0 = time.perf_counter()
    with LocalCluster(n_workers=0, dashboard_address=":0", host=_host_ip()) as sched:
        address = sched.scheduler_address
        ids = []
        for _ in range(n):
            out = subprocess.run(["sbatch", "--parsable", "-n", "1", "--mem=500M", "-o", "/dev/null", "--wrap",
                                  f"{sys.executable} -m distributed.cli.dask_worker {address} --no-nanny "
                                  f"--nthreads 1 --memory-limit {WORKER_MEMORY}"],
                                 capture_output=True, text=True, check=True)
            ids.append(out.stdout.strip())
        with Client(sched) as client:
            client.wait_for_workers(n, timeout=600)
            elapsed = time.perf_counter() - t0
        subprocess.run(["scancel", *ids])
    _queue_empty()
    return {"seconds": elapsed, "submit_commands": counter.count("sbatch")}


def _host_ip() -> str:
    import socket

    from distributed.utils import get_ip

    return get_ip() or socket.gethostbyname(socket.gethostname())


def idle_cost(kind: str, pending: int, idle: float, counter: CommandCounter, settle: float = 65) -> dict:
    """Status commands per minute and CPU seconds of this process while `pending` held jobs wait."""
    if kind == "jobqueue":
        from jobqueue import SLURMCluster
        extra = {"job_extra_directives": ["--hold"]}
    else:
        from dask_jobqueue import SLURMCluster
        extra = {"job_extra_directives": ["--hold"]}
    me = psutil.Process()
    with SLURMCluster(cores=1, memory="100MB", processes=1, scheduler_options={"dashboard_address": ":0"},
                      **extra) as cluster:
        cluster.scale(jobs=pending)
        deadline = time.time() + 300
        while time.time() < deadline:
            out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout
            if len(out.split()) >= pending:
                break
            time.sleep(1)
        time.sleep(settle)  # jobqueue polls every 0.5 s for a minute after changes, then every 5 s
        counter.reset()
        cpu0, all0 = sum(me.cpu_times()[:2]), sum(me.cpu_times()[:4])
        time.sleep(idle)
        cpu, cpu_all = sum(me.cpu_times()[:2]) - cpu0, sum(me.cpu_times()[:4]) - all0
        status = counter.count("squeue")
    _queue_empty()
    # cpu_seconds: this process; login_cpu_seconds_per_minute: with the status commands it ran
    return {"status_commands_per_minute": status * 60 / idle, "cpu_seconds": round(cpu, 2), "idle_seconds": idle,
            "login_cpu_seconds_per_minute": round(cpu_all * 60 / idle, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="8,32")
    ap.add_argument("--processes", default="1,4")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--pending", type=int, default=200)
    ap.add_argument("--idle", type=float, default=30)
    ap.add_argument("--settle", type=float, default=65, help="seconds to wait after the submissions")
    ap.add_argument("--only-idle", action="store_true", help="skip the scale-up timings")
    ap.add_argument("--no-idle", action="store_true", help="skip the 200-pending-jobs measurement")
    ap.add_argument("--tcp", action="store_true",
                    help="also time jobqueue with security=False (plain TCP, like the others)")
    args = ap.parse_args()
    counter = CommandCounter()
    contenders = {"jobqueue": run_jobqueue, "dask-jobqueue": run_dask_jobqueue, "floor": run_floor}
    if args.tcp:
        contenders["jobqueue-tcp"] = run_jobqueue_tcp
    rows = []
    for n in ([] if args.only_idle else [int(x) for x in args.sizes.split(",")]):
        for p in [int(x) for x in args.processes.split(",")]:
            if n % p:
                continue
            samples: dict[str, list[dict]] = {k: [] for k in contenders}
            for _ in range(args.repeat):
                for name, fn in contenders.items():
                    if name == "floor" and p != 1:
                        continue
                    samples[name].append(fn(n, p, counter))
            row = {"workers": n, "processes_per_job": p}
            for name, runs in samples.items():
                if runs:
                    row[name] = {"seconds": round(statistics.median(r["seconds"] for r in runs), 2),
                                 "submit_commands": runs[0]["submit_commands"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    idle = {} if args.no_idle else {k: idle_cost(k, args.pending, args.idle, counter, args.settle)
                                    for k in ("jobqueue", "dask-jobqueue")}

    print(f"\n{'N':>4} {'p/job':>5} | {'jobqueue s':>10} {'subm':>5} | {'dask-jq s':>9} {'subm':>5} | "
          f"{'floor s':>7} | {'jq/djq':>6} {'jq/floor':>8}")
    for r in rows:
        jq, dj, fl = r.get("jobqueue", {}), r.get("dask-jobqueue", {}), r.get("floor", {})
        ratio = f"{jq['seconds'] / dj['seconds']:.2f}" if jq and dj else "-"
        rfloor = f"{jq['seconds'] / fl['seconds']:.2f}" if jq and fl else "-"
        print(f"{r['workers']:>4} {r['processes_per_job']:>5} | {jq.get('seconds', '-')!s:>10} "
              f"{jq.get('submit_commands', '-')!s:>5} | {dj.get('seconds', '-')!s:>9} "
              f"{dj.get('submit_commands', '-')!s:>5} | {fl.get('seconds', '-')!s:>7} | {ratio:>6} {rfloor:>8}")
    for r in rows:
        if "jobqueue-tcp" in r:
            print(f"jobqueue with security=False, {r['workers']} workers at {r['processes_per_job']}/job: "
                  f"{r['jobqueue-tcp']['seconds']} s")
    print("(jobqueue uses TLS by default; dask-jobqueue and the floor use plain TCP)")
    if idle:
        print(f"\nwhile {args.pending} jobs wait ({args.idle:.0f} s):")
    for k, v in idle.items():
        print(f"  {k:14} status commands/min {v['status_commands_per_minute']:.1f}, CPU {v['cpu_seconds']} s "
              f"(login-node CPU with its commands: {v['login_cpu_seconds_per_minute']} s/min)")
    print(json.dumps({"scale_up": rows, "idle": idle}))


if __name__ == "__main__":
    main()
