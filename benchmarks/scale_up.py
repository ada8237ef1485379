"""Time from scale() to N connected workers on the real Slurm: jobqueue vs dask-jobqueue vs a floor.

Runs the contenders alternately in one run on the same Slurm, so load drifts hit all
alike, and prints a table plus one JSON line:

- time to N workers (N = 8, 16, 32, 64, 128 by --sizes; 1 and 4 processes per job by
  --processes), from the cluster object existing to `wait_for_workers(N)` returning;
- the scheduler's event-loop latency meanwhile (how late a callback asked for every 20 ms
  ran: median, p99, max) and the machine's peak memory in use;
- submission commands issued (sbatch calls, counted with a PATH shim);
- seconds per added worker from 8 to 32 and from 32 to 128, and their ratio;
- status commands per minute and CPU seconds of this (login-node) process while
  --pending jobs wait in the queue (held), over --idle seconds (skip with --no-idle);
- the floor: bare `dask worker --no-nanny` jobs submitted by hand with sbatch, one per
  worker, against a plain scheduler.

    python benchmarks/scale_up.py [--sizes 8,32] [--processes 1,4] [--repeat 1] [--tcp]
        [--contenders jobqueue,dask-jobqueue,floor] [--no-idle] [--plot scaling.png] [--json out.json]

Timing goals live here, never in tests. Needs a running Slurm whose node advertises a CPU
per job (128 single-worker jobs: SLURM_NODE_CPUS=160 SLURM_NODE_MEM_MB=131072 bash
ci/slurm/start.sh), dask-jobqueue (pip install '.[test]') and, for --plot, matplotlib
(pip install '.[bench]').
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
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
    """Wait until the queue is empty and every worker process has exited (so the next run starts
    on a quiet machine and measures its own memory). A bare floor worker sometimes outlives its
    scancel'ed job, orphaned (parent pid 1) and waiting for its closed scheduler: once the queue
    is empty those are killed after 10 s, and said, instead of holding every later run."""
    deadline = time.time() + timeout
    empty_since = None
    while time.time() < deadline:
        out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.strip()
        workers = [p for p in psutil.process_iter(["cmdline", "ppid"]) if "distributed.cli.dask_worker" in
                   " ".join(p.info["cmdline"] or [])]
        if not out and not workers:
            return
        empty_since = (empty_since or time.time()) if not out else None
        if empty_since and time.time() - empty_since > 10:
            for p in workers:
                if p.info["ppid"] == 1 and "--no-nanny" in p.info["cmdline"]:
                    print(f"killing an orphaned floor worker (pid {p.pid}) its job left behind", flush=True)
                    p.kill()
        time.sleep(0.5)


class Sampler:
    """A daemon thread that calls `sample()` every `interval` seconds while in its `with` block."""

    interval = 0.2

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self):
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class LoopLatency(Sampler):
    """How late a callback runs on the scheduler's event loop: one is asked for every 20 ms and
    the delay until it ran is recorded (the scheduler's responsiveness)."""

    interval = 0.02

    def __init__(self, loop):
        super().__init__()
        self.loop, self.samples = loop, []

    def sample(self):
        self.loop.add_callback(self._hit, time.perf_counter())

    def _hit(self, t0: float):
        self.samples.append(time.perf_counter() - t0)

    def summary(self) -> dict:
        ms = sorted(x * 1000 for x in self.samples) or [0.0]
        return {"median_ms": round(ms[len(ms) // 2], 1), "p99_ms": round(ms[int(len(ms) * 0.99)], 1),
                "max_ms": round(ms[-1], 1)}


def _memory_used() -> float:
    return psutil.virtual_memory().used / 2**30


class MemoryPeak(Sampler):
    """Peak memory in use on the machine (GiB) while a run ramps up, sampled every 0.2 s."""

    def __init__(self):
        super().__init__()
        self.base, self.peak = _memory_used(), 0.0

    def sample(self):
        self.peak = max(self.peak, _memory_used() - self.base)


DEADLINE_CAP = None  # --deadline: at most this many seconds per run


def _deadline(n: int) -> float:
    return min(max(120.0, 4.0 * n), DEADLINE_CAP or float("inf"))


def _ramp(cluster, n: int, t0: float, start) -> dict:
    """scale (by `start`) and wait for n connected workers, with the loop latency and memory meanwhile."""
    from distributed import Client

    with LoopLatency(cluster.loop) as lat, MemoryPeak() as mem:
        start()
        with Client(cluster) as client:
            client.wait_for_workers(n, timeout=_deadline(n))
            elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "loop_latency": lat.summary(), "memory_gib": round(mem.peak, 2)}


def _run_cluster(cluster_cls, n: int, processes: int, counter: CommandCounter, **kwargs) -> dict:
    counter.reset()
    t0 = time.perf_counter()
    with cluster_cls(cores=processes, memory=f"{processes * 500}MB", processes=processes, walltime="00:20:00",
                     scheduler_options={"dashboard_address": ":0"}, **kwargs) as cluster:
        out = _ramp(cluster, n, t0, lambda: cluster.scale(n=n))
    _queue_empty()
    return {**out, "submit_commands": counter.count("sbatch")}


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


FLOOR_COMMAND = "{python} -m distributed.cli.dask_worker {address} --no-nanny --nthreads 1 --memory-limit {memory}"


def run_floor(n: int, processes: int, counter: CommandCounter) -> dict:
    """Bare `dask worker --no-nanny` jobs by hand: one sbatch per worker, nothing else."""
    from distributed import LocalCluster

    counter.reset()
    t0 = time.perf_counter()
    ids = []

    def submit():
        for _ in range(n):
            out = subprocess.run(["sbatch", "--parsable", "-n", "1", "--mem=500M", "-o", "/dev/null", "--wrap",
                                  FLOOR_COMMAND.format(python=sys.executable, address=address,
                                                       memory=WORKER_MEMORY)],
                                 capture_output=True, text=True, check=True)
            ids.append(out.stdout.strip())

    with LocalCluster(n_workers=0, dashboard_address=":0", host=_host_ip()) as sched:
        address = sched.scheduler_address
        try:
            out = _ramp(sched, n, t0, submit)
        finally:
            subprocess.run(["scancel", *ids])
    _queue_empty()
    return {**out, "submit_commands": counter.count("sbatch")}


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


def _fits(name: str, n: int, done: dict) -> str | None:
    """None if `name` at n workers should fit this machine's memory, judged by its peak per
    worker so far; else why it is left out."""
    per_worker = max((r["memory_gib"] / r["workers"] for r in done.get(name, [])), default=0.0)
    need, have = per_worker * n * 1.15, psutil.virtual_memory().available / 2**30
    return None if need < have else f"left out: needs ~{need:.0f} GiB, {have:.0f} GiB available"


def _cost_per_worker(rows: list[dict], name: str, p: int) -> dict:
    """Seconds per added worker from 8 to 32 and from 32 to 128 (where measured), and their ratio."""
    t = {r["workers"]: r[name]["seconds"] for r in rows
         if r["processes_per_job"] == p and "seconds" in r.get(name, {})}
    out = {}
    if 8 in t and 32 in t:
        out["8_to_32"] = round((t[32] - t[8]) / 24, 3)
    if 32 in t and 128 in t:
        out["32_to_128"] = round((t[128] - t[32]) / 96, 3)
    if len(out) == 2 and out["8_to_32"] > 0:
        out["ratio"] = round(out["32_to_128"] / out["8_to_32"], 2)
    return out


def plot(rows: list[dict], path: str) -> None:
    """Time to N workers against N, one line per contender and processes per job (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    styles = {"jobqueue": "C0", "jobqueue-tcp": "C9", "dask-jobqueue": "C3", "floor": "C7"}
    for name, colour in styles.items():
        for p, marker, line in ((1, "o", "-"), (4, "s", "--")):
            pts = [(r["workers"], r[name]["seconds"]) for r in rows
                   if r["processes_per_job"] == p and "seconds" in r.get(name, {})]
            if pts:
                label = f"{name}, {p} worker{'s' if p > 1 else ''}/job" if name != "floor" else "floor: bare --no-nanny"
                ax.plot(*zip(*pts), marker=marker, linestyle=line, color=colour, label=label)
    ax.set_xlabel("workers")
    ax.set_ylabel("seconds from cluster creation to N connected workers")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({r["workers"] for r in rows}), [str(n) for n in sorted({r["workers"] for r in rows})])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Time to N workers on a real Slurm (2-core machine)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def _print_table(rows: list[dict], names: list[str]) -> None:
    print(f"\n{'N':>4} {'p/job':>5} | " + " | ".join(f"{n:>13}" for n in names) + " | jq/djq jq/floor")
    for r in rows:
        cells = []
        for name in names:
            c = r.get(name, {})
            cells.append(f"{c['seconds']:>7.2f} ({c['submit_commands']:>3})" if "seconds" in c
                         else f"{'-' if not c else c['skipped'].split(':')[0]:>13}")
        jq, dj, fl = (r.get(k, {}).get("seconds") for k in ("jobqueue", "dask-jobqueue", "floor"))
        ratio = f"{jq / dj:.2f}" if jq and dj else "-"
        rfloor = f"{jq / fl:.2f}" if jq and fl else "-"
        print(f"{r['workers']:>4} {r['processes_per_job']:>5} | " + " | ".join(cells) + f" | {ratio:>6} {rfloor:>8}")
    print("(seconds (sbatch calls); jobqueue uses TLS by default; dask-jobqueue and the floor use plain TCP)")
    print("\nscheduler event-loop latency during the ramp (median / p99 / max ms) and peak memory (GiB):")
    for r in rows:
        for name in names:
            c = r.get(name, {})
            if "loop_latency" in c:
                lat = c["loop_latency"]
                print(f"  {r['workers']:>4} x{r['processes_per_job']} {name:14} {lat['median_ms']:>6} / "
                      f"{lat['p99_ms']:>6} / {lat['max_ms']:>6}   {c['memory_gib']:>5}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="8,16,32,64,128")
    ap.add_argument("--processes", default="1,4")
    ap.add_argument("--repeat", type=int, default=1, help="runs per contender and size (the median is kept)")
    ap.add_argument("--pending", type=int, default=200)
    ap.add_argument("--idle", type=float, default=30)
    ap.add_argument("--deadline", type=float,
                    help="seconds a run may take before it counts as failed (default max(120, 4 N))")
    ap.add_argument("--settle", type=float, default=65, help="seconds to wait after the submissions")
    ap.add_argument("--only-idle", action="store_true", help="skip the scale-up timings")
    ap.add_argument("--no-idle", action="store_true", help="skip the 200-pending-jobs measurement")
    ap.add_argument("--tcp", action="store_true",
                    help="also time jobqueue with security=False (plain TCP, like the others)")
    ap.add_argument("--contenders", default="jobqueue,dask-jobqueue,floor",
                    help="comma-separated: jobqueue, jobqueue-tcp, dask-jobqueue, floor")
    ap.add_argument("--plot", help="write a PNG of time against N here (needs matplotlib: pip install '.[bench]')")
    ap.add_argument("--json", help="also write the results as JSON here")
    args = ap.parse_args()
    global DEADLINE_CAP
    DEADLINE_CAP = args.deadline
    counter = CommandCounter()
    every = {"jobqueue": run_jobqueue, "jobqueue-tcp": run_jobqueue_tcp, "dask-jobqueue": run_dask_jobqueue,
             "floor": run_floor}
    names = [c for c in args.contenders.split(",") if c] + (["jobqueue-tcp"] if args.tcp else [])
    contenders = {name: every[name] for name in dict.fromkeys(names)}
    rows, done, failed = [], {}, {}  # failed: (contender, processes) -> why larger sizes are left out
    for p in [int(x) for x in args.processes.split(",")]:
        for n in ([] if args.only_idle else [int(x) for x in args.sizes.split(",")]):
            if n % p:
                continue
            row = {"workers": n, "processes_per_job": p}
            for name, fn in contenders.items():
                if name == "floor" and p != 1:
                    continue
                why = failed.get((name, p)) or _fits(name, n, done)
                if why:
                    row[name] = {"skipped": why}
                    continue
                runs = []
                for _ in range(args.repeat):
                    # a run that hangs past its deadline prints every thread's stack and ends the benchmark
                    faulthandler.dump_traceback_later(_deadline(n) + 300, exit=True)
                    try:
                        runs.append(fn(n, p, counter))
                    except Exception as exc:  # a contender that does not get there is a result too
                        print(f"{name} at {n} x{p}: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
                        _queue_empty(300)
                        break  # its other runs at this size would fail the same way
                    finally:
                        faulthandler.cancel_dump_traceback_later()
                if not runs:
                    row[name] = {"skipped": f"failed: did not reach {n} workers within {_deadline(n):.0f} s"}
                    failed[(name, p)] = f"left out: failed at {n} workers"
                    continue
                best = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]  # the median run
                row[name] = {**best, "seconds": round(best["seconds"], 2), "all_seconds": [round(r["seconds"], 2)
                                                                                           for r in runs]}
                done.setdefault(name, []).append({"workers": n, "memory_gib": best["memory_gib"]})
            rows.append(row)
            print(json.dumps(row), flush=True)
    idle = {} if args.no_idle else {k: idle_cost(k, args.pending, args.idle, counter, args.settle)
                                    for k in ("jobqueue", "dask-jobqueue")}
    _print_table(rows, list(contenders))
    costs = {f"{name} x{p}": _cost_per_worker(rows, name, p) for name in contenders for p in (1, 4)}
    costs = {k: v for k, v in costs.items() if v}
    if costs:
        print("\nseconds per added worker (8 -> 32, 32 -> 128, ratio):")
        for k, v in costs.items():
            print(f"  {k:18} {v.get('8_to_32', '-')!s:>6} {v.get('32_to_128', '-')!s:>6} {v.get('ratio', '-')!s:>6}")
    if idle:
        print(f"\nwhile {args.pending} jobs wait ({args.idle:.0f} s):")
    for k, v in idle.items():
        print(f"  {k:14} status commands/min {v['status_commands_per_minute']:.1f}, CPU {v['cpu_seconds']} s "
              f"(login-node CPU with its commands: {v['login_cpu_seconds_per_minute']} s/min)")
    result = {"scale_up": rows, "cost_per_added_worker": costs, "idle": idle,
              "machine": {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.plot and rows:
        plot(rows, args.plot)
        print(f"plot written to {args.plot}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
