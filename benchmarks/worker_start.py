"""What one job's worker start costs: jobqueue's job script vs dask-jobqueue's vs a bare worker.

Each contender's real command runs here (no batch system, so nothing else competes), against
one plain-TCP scheduler, one at a time, --runs times:

- seconds from exec to the worker's "Registered to" log line, and CPU seconds of the job's
  whole process tree at that moment (median of the runs);
- file-system calls made until then (strace -f, one extra run): stat, open, getdents... This
  is the proxy for a shared file system, where each costs a metadata round trip (on a busy
  Lustre or GPFS 0.1-1 ms: ~6,000 calls are 0.6-6 s per worker start);
- CPU share of the idle job afterwards (nanny and worker, over --idle seconds).

Contenders: "jobqueue" (the job script SLURMCluster renders, its exports included, TCP),
"dask-jobqueue" (the command dask_jobqueue.SLURMCluster renders), "bare" (`dask worker
--no-nanny`, what benchmarks/scale_up.py calls the floor), and "bare+nanny" (dask's default).

    python benchmarks/worker_start.py [--runs 7] [--idle 10] [--no-strace]

Needs dask-jobqueue (pip install '.[test]') and strace (apt-get install strace) for the counts.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import psutil


def _scripts(address: str, workdir: str) -> dict[str, list[str]]:
    """argv of each contender's worker start (a bash script where the job script exports things)."""
    from dask_jobqueue import SLURMCluster as DJQCluster

    from jobqueue import SLURMCluster

    py = sys.executable
    out = {"bare": [py, "-m", "distributed.cli.dask_worker", address, "--no-nanny", "--nthreads", "1",
                    "--memory-limit", "500MB"],
           "bare+nanny": [py, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                          "--memory-limit", "500MB"]}
    kw = dict(cores=1, memory="500MB", processes=1, scheduler_options={"dashboard_address": ":0"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with SLURMCluster(security=False, **kw) as c:
            ours = c.job_script()
        with DJQCluster(**kw) as c:
            theirs = c.job_script()
    for name, text in (("jobqueue", ours), ("dask-jobqueue", theirs)):
        text = re.sub(r"tcp://[\d.]+:\d+", address, text)
        path = os.path.join(workdir, f"{name}.sh")
        with open(path, "w") as f:
            f.write(text)
        out[name] = ["bash", path]
    return out


def _start(argv: list[str], prefix: list[str] = ()) -> tuple[subprocess.Popen, float]:
    """Start argv; return the process and seconds until its "Registered to" line (inf if never)."""
    t0 = time.perf_counter()
    p = subprocess.Popen([*prefix, *argv], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                         start_new_session=True)
    deadline = t0 + 60
    for line in p.stderr:
        if "Registered to" in line:
            return p, time.perf_counter() - t0
        if time.perf_counter() > deadline:
            break
    return p, float("inf")


def _tree(p: subprocess.Popen) -> list[psutil.Process]:
    try:
        root = psutil.Process(p.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for q in procs:
        try:
            total += sum(q.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def _stop(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()
    p.stderr.close()
    time.sleep(0.3)


def measure(argv: list[str], runs: int, idle: float) -> dict:
    walls, cpus, idles = [], [], []
    for i in range(runs):
        p, wall = _start(argv)
        procs = _tree(p)
        cpu = _cpu(procs)
        walls.append(wall)
        cpus.append(cpu)
        if i == 0 and idle > 0:
            time.sleep(1)
            c0 = _cpu(_tree(p))
            time.sleep(idle)
            idles.append((_cpu(_tree(p)) - c0) / idle * 100)
        _stop(p)
    return {"seconds": round(statistics.median(walls), 3), "cpu_seconds": round(statistics.median(cpus), 3),
            "idle_cpu_percent": round(idles[0], 1) if idles else None}


def file_system_calls(argv: list[str]) -> dict:
    """File-system calls of the whole process tree until it registered (strace -f)."""
    with tempfile.NamedTemporaryFile(suffix=".strace", delete=False) as f:
        trace = f.name
    p, _ = _start(argv, ["strace", "-f", "-qq", "-e", "trace=%file,getdents64", "-o", trace])
    _stop(p)
    calls = collections.Counter()
    missing = 0
    with open(trace) as f:
        for line in f:
            m = re.match(r"\d+\s+(\w+)\(", line)
            if m:
                calls[m.group(1)] += 1
                missing += "ENOENT" in line
    os.unlink(trace)
    return {"file_system_calls": sum(calls.values()), "not_found": missing,
            "stat": sum(v for k, v in calls.items() if "stat" in k), "open": calls["openat"] + calls["open"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measured after the first start")
    ap.add_argument("--no-strace", action="store_true")
    ap.add_argument("--json", help="also write the results as JSON here")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="worker-start-")
    sched = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                              "--port", "0", "--dashboard-address", ":0", "--scheduler-file",
                              os.path.join(workdir, "scheduler.json")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(300):
            if os.path.exists(os.path.join(workdir, "scheduler.json")):
                break
            time.sleep(0.1)
        time.sleep(0.5)
        with open(os.path.join(workdir, "scheduler.json")) as f:
            address = json.load(f)["address"]
        results = {}
        for name, argv in _scripts(address, workdir).items():
            results[name] = measure(argv, args.runs, args.idle)
            if not args.no_strace and shutil.which("strace"):
                results[name].update(file_system_calls(argv))
            print(json.dumps({name: results[name]}), flush=True)
    finally:
        os.killpg(sched.pid, signal.SIGKILL)
        sched.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'contender':14} {'s to registered':>15} {'CPU s':>6} {'idle %CPU':>9} {'fs calls':>9} {'stat':>6} "
          f"{'open':>6}")
    for name, r in results.items():
        print(f"{name:14} {r['seconds']:>15} {r['cpu_seconds']:>6} {r['idle_cpu_percent']!s:>9} "
              f"{r.get('file_system_calls', '-')!s:>9} {r.get('stat', '-')!s:>6} {r.get('open', '-')!s:>6}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
