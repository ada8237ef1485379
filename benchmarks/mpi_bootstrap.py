"""mpirun -n 4 bootstrap: jobqueue.runtime.mpi.initialize vs dask_mpi.initialize, alternately.

For each run: time from launching mpirun to the client's result being printed, and to
mpirun's exit; plus stderr lines and tracebacks printed. Prints a table and JSON.

    python benchmarks/mpi_bootstrap.py [--runs 5] [--ranks 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SCRIPT = """
import time
from {module} import initialize
initialize()
from distributed import Client
with Client() as c:
    r = c.submit(lambda x: x + 1, 41).result()
    print("RESULT", r, time.time(), flush=True)
"""


def one(module: str, ranks: int, workdir: str) -> dict:
    path = os.path.join(workdir, f"bench_{module.replace('.', '_')}.py")  # never shadow the module
    with open(path, "w") as f:
        f.write(SCRIPT.format(module=module))
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__DASHBOARD": "False"}
    t0 = time.time()
    proc = subprocess.Popen([shutil.which("mpirun"), "-n", str(ranks), sys.executable, path], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = proc.communicate(timeout=300)
    t_exit = time.time() - t0
    result_at = next((float(line.split()[2]) for line in out.splitlines() if line.startswith("RESULT")), None)
    return {"rc": proc.returncode, "to_result_s": None if result_at is None else result_at - t0,
            "to_exit_s": t_exit, "stderr_lines": len(err.splitlines()), "tracebacks": err.count("Traceback")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ranks", type=int, default=4)
    args = ap.parse_args()
    contenders = {"jobqueue": "jobqueue.runtime.mpi", "dask-mpi": "dask_mpi"}
    results: dict[str, list[dict]] = {k: [] for k in contenders}
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.runs):  # alternate, so drift hits both alike
            for name, module in contenders.items():
                results[name].append(one(module, args.ranks, workdir))
    summary = {}
    for name, runs in results.items():
        ok = [r for r in runs if r["rc"] == 0 and r["to_result_s"] is not None]
        summary[name] = {
            "runs": len(runs), "ok": len(ok),
            "median_to_result_s": round(statistics.median(r["to_result_s"] for r in ok), 3) if ok else None,
            "median_to_exit_s": round(statistics.median(r["to_exit_s"] for r in ok), 3) if ok else None,
            "median_stderr_lines": statistics.median(r["stderr_lines"] for r in runs),
            "total_tracebacks": sum(r["tracebacks"] for r in runs),
        }
    print(f"mpirun -n {args.ranks}, {args.runs} runs each (median)")
    print(f"{'':10} {'to result':>10} {'to exit':>9} {'stderr lines':>13} {'tracebacks':>11} {'ok':>4}")
    for name, s in summary.items():
        print(f"{name:10} {s['median_to_result_s']!s:>10} {s['median_to_exit_s']!s:>9} "
              f"{s['median_stderr_lines']!s:>13} {s['total_tracebacks']!s:>11} {s['ok']:>2}/{s['runs']}")
    jq, dm = summary["jobqueue"], summary["dask-mpi"]
    if jq["median_to_exit_s"] and dm["median_to_exit_s"]:
        print(f"ratio jobqueue/dask-mpi: to result {jq['median_to_result_s'] / dm['median_to_result_s']:.2f}, "
              f"to exit {jq['median_to_exit_s'] / dm['median_to_exit_s']:.2f}")
    print(json.dumps({"ranks": args.ranks, "summary": summary, "runs": results}))


if __name__ == "__main__":
    main()
