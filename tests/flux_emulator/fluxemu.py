"""A Flux emulator: `flux batch`, `flux jobs`, `flux cancel` (one `flux` executable), written
from ../shared/research/flux-interface.md (section numbers below are that note's), never from
guesses. Jobs run as real local processes.

State lives in $FLUXEMU_HOME (default /tmp/fluxemu-<uid>): config.json (instance cores,
timings), instance.json (the job table) under a lock.

What it enforces (§6): POSIX option parsing without abbreviations, no --cc on batch (§1.1);
-t in minutes unless it has a unit, HH:MM:SS refused (§1.2); RFC 36 directives: one sentinel,
grouped before the first command, command line wins, a bad option exit 2 (§1.3); the
`flux-batch: ERROR:` refusals, exit 1 (§1.4); F58 ids, `ƒ` in a UTF-8 locale and `f`
otherwise or with FLUX_F58_FORCE_ASCII; output `flux-{{id}}.out` with stderr merged, mustache
tags, `%J` left alone (§1.5); states and results, returncode -128 for a job canceled while
pending (§2.1); `flux jobs` format fields, ids of any state, `JobID <id> unknown` (§2.2-§2.4);
`flux cancel` silent, `unknown job id` / `job is inactive` with exit 1 (§3); the batch
script's environment: the submitter's plus FLUX_URI and FLUX_ENCLOSING_ID, never FLUX_JOB_ID
(§4.1); SIGALRM at the time limit then SIGKILL, TIMEOUT; SIGTERM then SIGKILL on cancel (§4.2);
an oversized request accepted, then FAILED without running (§1.4).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from typing import Any

HOME = os.environ.get("FLUXEMU_HOME") or f"/tmp/fluxemu-{os.getuid()}"
DEFAULT_CONFIG: dict[str, Any] = {"cores": 64, "nodes": 1, "sched_latency": 0.2, "kill_timeout": 5}
ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class Exit(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.message, self.code = message, code


def config() -> dict:
    cfg = dict(DEFAULT_CONFIG)
    with contextlib.suppress(FileNotFoundError):
        with open(os.path.join(HOME, "config.json")) as f:
            cfg.update(json.load(f))
    return cfg


def set_config(**values: Any) -> None:
    os.makedirs(HOME, exist_ok=True)
    path = os.path.join(HOME, "config.json")
    current: dict = {}
    with contextlib.suppress(FileNotFoundError):
        with open(path) as f:
            current = json.load(f)
    current.update(values)
    with open(path, "w") as f:
        json.dump(current, f)


@contextlib.contextmanager
def locked_state():
    os.makedirs(HOME, exist_ok=True)
    with open(os.path.join(HOME, "instance.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = os.path.join(HOME, "instance.json")
        try:
            with open(path) as f:
                state = json.load(f)
        except (FileNotFoundError, ValueError):
            state = {"next": 2 ** 40 + 12345, "jobs": {}}
        yield state
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, path)


def read_state() -> dict:
    with locked_state() as state:
        return json.loads(json.dumps(state))


# ------------------------------------------------------------------ ids (§1.5)
def f58(n: int, ascii_prefix: bool = False) -> str:
    digits = ""
    while n:
        n, r = divmod(n, 58)
        digits = ALPHABET[r] + digits
    return ("f" if ascii_prefix else "ƒ") + (digits or "1")


def utf8_locale() -> bool:
    if os.environ.get("FLUX_F58_FORCE_ASCII"):
        return False
    for var in ("LC_ALL", "LC_CTYPE", "LANG"):
        value = os.environ.get(var)
        if value:
            return "utf-8" in value.lower() or "utf8" in value.lower()
    return False


def parse_id(typed: str) -> int | None:
    """Any encoding jobqueue uses: F58 with ƒ or f, decimal, 0x hex (§1.5)."""
    if typed.startswith(("ƒ", "f")) and all(c in ALPHABET for c in typed[1:]) and len(typed) > 1:
        n = 0
        for c in typed[1:]:
            n = n * 58 + ALPHABET.index(c)
        return n
    if typed.isdigit():
        return int(typed)
    if typed.startswith("0x"):
        with contextlib.suppress(ValueError):
            return int(typed, 16)
    return None


class Ident:
    """A job id as `flux jobs` formats it: {id} (F58, locale prefix), {id.f58}, {id.f58plain}, {id.dec}."""

    def __init__(self, n: int):
        self.dec, self.hex = str(n), hex(n)
        self.f58, self.f58plain = f58(n, not utf8_locale()), f58(n, True)

    def __format__(self, spec: str) -> str:
        return format(self.f58, spec)


# ------------------------------------------------------------------ flux batch (§1)
OPTS = {"-n": "nslots", "--nslots": "nslots", "-c": "cores_per_slot", "--cores-per-slot": "cores_per_slot",
        "-g": "gpus_per_slot", "--gpus-per-slot": "gpus_per_slot", "-N": "nodes", "--nodes": "nodes",
        "-q": "queue", "--queue": "queue", "-B": "bank", "--bank": "bank", "-t": "time_limit",
        "--time-limit": "time_limit", "--job-name": "job_name", "--output": "output", "--error": "error",
        "--cwd": "cwd", "--urgency": "urgency", "--env": "env"}
FLAGS = {"-x": "exclusive", "--exclusive": "exclusive", "--quiet": "quiet", "--dry-run": "dry_run",
         "--wrap": "wrap"}


def _parse(argv: list[str], where: str) -> tuple[dict, list[str]]:
    """POSIX: options stop at the first non-option; long options are never abbreviated (§1.1)."""
    opts: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return opts, argv[i + 1:]
        if not a.startswith("-") or a == "-":
            return opts, argv[i:]
        name, _, value = a.partition("=") if a.startswith("--") else (a[:2], "", a[2:])
        if name in FLAGS:
            opts[FLAGS[name]] = True
            i += 1
            continue
        if name not in OPTS:
            raise Exit(f"usage: flux-batch [OPTIONS...] [SCRIPT] [ARGS...]\nflux-batch: error: unrecognized arguments: "
                       f"{a}", 2)
        if not value:
            if i + 1 >= len(argv):
                raise Exit(f"flux-batch: error: argument {name}: expected one argument", 2)
            value = argv[i + 1]
            i += 1
        if OPTS[name] == "env":  # --env=VAR=VALUE, repeatable
            opts.setdefault("env", []).append(value)
        else:
            opts[OPTS[name]] = value
        i += 1
    return opts, []


def _directives(script: str, name: str) -> list[list[str]]:
    """RFC 36 (§1.3): `^([^\\w]*)((?:flux|FLUX):)(.*)$`, one sentinel, all before the first command."""
    out: list[list[str]] = []
    sentinel = None
    last = None
    seen_command_after = None
    for number, line in enumerate(script.splitlines(), 1):
        m = re.match(r"^([^\w]*)((?:flux|FLUX):)(.*)$", line)
        if m and not line.startswith("#!"):
            if seen_command_after is not None:
                raise Exit(f"flux-batch: ERROR: line {number}: orphan 'flux:' detected: directives disabled after "
                           f"line {seen_command_after}")
            here = m.group(1) + m.group(2)
            if sentinel is not None and here != sentinel:
                raise Exit(f"flux-batch: ERROR: line {number}: sentinel changed from '{sentinel}' to '{here}'")
            sentinel, last = here, number
            try:
                words = shlex.split(m.group(3), comments=True)
            except ValueError as exc:
                raise Exit(f"{name}: line {number}: {exc}") from None
            out.append([str(number), *words])
        elif line.strip() and not line.startswith("#!") and last is not None and seen_command_after is None:
            seen_command_after = number - 1
    return out


def _duration(value: str) -> float:
    """-t: a number is minutes; else FSD with s/m/h/d/ms (§1.2)."""
    try:
        return float(value) * 60
    except ValueError:
        pass
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", value)
    if not m or float(m.group(1)) < 0:
        raise Exit("flux-batch: ERROR: invalid Flux standard duration")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def batch(argv: list[str], stdin_text: str | None) -> tuple[str, str]:
    cfg = config()
    cli, rest = _parse(argv, "command line")
    if rest:
        name_as_typed = rest[0]
        try:
            with open(rest[0], "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise Exit(f"flux-batch: ERROR: {rest[0]}: {exc.strerror}") from None
    else:
        name_as_typed = "batch"
        raw = (stdin_text or "").encode()
    try:
        script = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Exit(f"flux-batch: ERROR: {name_as_typed} does not appear to be a script, or failed to encode as "
                   "utf-8") from None
    if not script.startswith("#!"):
        raise Exit(f"flux-batch: ERROR: {name_as_typed} does not appear to start with '#!'")
    opts: dict[str, Any] = {}
    for words in _directives(script, name_as_typed):
        try:
            found, extra = _parse(words[1:], "directive")
        except Exit:
            raise Exit(f"flux-batch: ERROR: argument parsing failed at {name_as_typed} line {words[0]}", 2) from None
        opts["env"] = opts.get("env", []) + found.pop("env", [])
        opts.update(found)
    env_cli = cli.pop("env", [])
    opts.update(cli)  # §1.3: the command line overrides directives
    opts["env"] = opts.get("env", []) + env_cli
    if "nslots" not in opts and "nodes" not in opts:
        raise Exit("flux-batch: ERROR: Number of slots to allocate must be specified")
    nodes = int(opts.get("nodes", 1))
    nslots = int(opts.get("nslots", nodes))
    if nodes > nslots:
        raise Exit("flux-batch: ERROR: node count must not be greater than task count")
    limit = _duration(opts["time_limit"]) if "time_limit" in opts else None
    cores = nslots * int(opts.get("cores_per_slot", 1))
    now = time.time()
    with locked_state() as state:
        n = state["next"]
        state["next"] += 1 + (n % 7)
        state["jobs"][str(n)] = {
            "id": n, "name": opts.get("job_name", name_as_typed), "state": "SCHED", "result": "", "returncode": None,
            "urgency": 0 if opts.get("urgency") == "hold" else 16, "t_submit": now, "t_run": None, "t_inactive": None,
            "cores": cores, "nodes": nodes, "limit": limit, "cwd": opts.get("cwd") or os.getcwd(),
            "output": opts.get("output", "flux-{{id}}.out"), "error": opts.get("error"), "script": script,
            "env": {**os.environ, **dict(e.split("=", 1) for e in opts.get("env", []) if "=" in e)},
            "userid": os.getuid(), "pid": None, "cancel": None, "exception": "",
            "unsatisfiable": cores > cfg["cores"] or nodes > cfg["nodes"],
        }
    if not opts.get("dry_run"):
        subprocess.Popen([sys.executable, os.path.abspath(__file__), "run", str(n)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                         env=dict(os.environ, FLUXEMU_HOME=HOME))
    return ("" if opts.get("quiet") else f58(n, not utf8_locale()) + "\n"), ""


# ------------------------------------------------------------------ running (§4)
def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _expand(template: str, job: dict) -> str:
    ident = Ident(job["id"])
    values = {"id": ident.f58, "jobid": ident.f58, "id.f58": ident.f58, "id.dec": ident.dec, "id.hex": ident.hex,
              "name": job["name"], "nnodes": str(job["nodes"]), "size": str(job["cores"])}
    out = re.sub(r"\{\{\s*([\w.]+)\s*\}\}", lambda m: values.get(m.group(1), m.group(0)), template)
    return out if os.path.isabs(out) else os.path.join(job["cwd"], out)


def _end(job_id: str, **updates: Any) -> None:
    with locked_state() as state:
        job = state["jobs"].get(job_id)
        if job is not None and job["state"] != "INACTIVE":
            job.update(updates, state="INACTIVE", t_inactive=time.time(), pid=None)


def run_job(job_id: str) -> None:
    cfg = config()
    while True:
        time.sleep(0.1)
        with locked_state() as state:
            job = state["jobs"].get(job_id)
            if job is None or job["state"] == "INACTIVE":
                return
            if job["urgency"] == 0 or time.time() - job["t_submit"] < cfg["sched_latency"]:
                continue
            if job["unsatisfiable"]:  # accepted, then an alloc exception: FAILED without running (§1.4)
                job.update(state="INACTIVE", result="FAILED", returncode=1, t_inactive=time.time(),
                           exception="alloc: unsatisfiable request")
                return
            used = sum(j["cores"] for j in state["jobs"].values() if j["state"] in ("RUN", "CLEANUP"))
            if used + job["cores"] > cfg["cores"]:
                continue
            job.update(state="RUN", t_run=time.time())
            break
    path = os.path.join(HOME, f"script.{job_id}")
    with open(path, "w") as f:
        f.write(job["script"])
    os.chmod(path, 0o700)
    env = {k: v for k, v in job["env"].items() if not k.startswith(("FLUX_JOB_", "FLUX_TASK_", "PMI_", "SLURM_",
                                                                    "PMIX_", "PALS_", "FLUX_KVS_NAMESPACE"))}
    env.update({"FLUX_URI": f"local://{HOME}/instance-{job_id}/local-0", "FLUX_ENCLOSING_ID": f58(job["id"], True)})
    out_path = _expand(job["output"], job)
    err_path = _expand(job["error"], job) if job["error"] else out_path
    with open(out_path, "w") as out:
        err = open(err_path, "w") if err_path != out_path else out
        with err:
            proc = subprocess.Popen([path], cwd=job["cwd"], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)
    with locked_state() as state:
        state["jobs"][job_id]["pid"] = proc.pid
    started, signalled, why = time.time(), None, None
    while proc.poll() is None:
        time.sleep(0.1)
        now = time.time()
        with locked_state() as state:
            cancel = (state["jobs"].get(job_id) or {"cancel": now})["cancel"]
        if why is None and cancel:
            why, signalled = "cancel", now
            _killpg(proc.pid, signal.SIGTERM)
        elif why is None and job["limit"] and now - started > job["limit"]:
            why, signalled = "timeout", now  # §4.2: SIGALRM, not SIGTERM
            _killpg(proc.pid, signal.SIGALRM)
        elif signalled is not None and now - signalled > cfg["kill_timeout"]:
            _killpg(proc.pid, signal.SIGKILL)
    _killpg(proc.pid, signal.SIGKILL)
    rc = proc.returncode
    with contextlib.suppress(OSError):
        os.unlink(path)
    if why == "cancel":
        _end(job_id, result="CANCELED", returncode=rc, exception="cancel")
    elif why == "timeout":
        _end(job_id, result="TIMEOUT", returncode=rc, exception="timeout: resource allocation expired")
    else:
        _end(job_id, result="COMPLETED" if rc == 0 else "FAILED", returncode=rc)


# ------------------------------------------------------------------ flux jobs (§2)
def jobs(argv: list[str]) -> tuple[str, str, int]:
    fmt, header, all_states, name, as_json, ids, i = None, True, False, None, False, [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("-o", "--format"):
            fmt, i = argv[i + 1], i + 2
            continue
        if a.startswith("--format="):
            fmt = a.split("=", 1)[1]
        elif a in ("-n", "--no-header"):
            header = False
        elif a in ("-a",):
            all_states = True
        elif a == "-no":
            header, fmt, i = False, argv[i + 1], i + 2
            continue
        elif a.startswith("--name="):
            name = a.split("=", 1)[1]
        elif a == "--json":
            as_json = True
        elif not a.startswith("-"):
            ids.append(a)
        i += 1
    table = read_state()["jobs"]
    errors: list[str] = []
    if ids:
        selected = []
        for typed in ids:  # ids are looked up one by one, in any state (§2.2)
            n = parse_id(typed)
            if n is None:
                return "", f"flux-jobs: error: argument JOBID: invalid JobID value: '{typed}'\n", 2
            job = table.get(str(n))
            if job is None:
                errors.append(f"JobID {typed} unknown")
            else:
                selected.append(job)
    else:
        selected = [j for j in table.values() if j["userid"] == os.getuid()
                    and (all_states or j["state"] != "INACTIVE")]
    if name is not None:
        selected = [j for j in selected if j["name"] == name]
    code = 1 if ids and not selected else 0
    err = "".join(e + "\n" for e in errors)
    if as_json:
        records = [{"id": j["id"], "jobid": f58(j["id"], not utf8_locale()), "state": j["state"], "name": j["name"],
                    **({"result": j["result"], "returncode": j["returncode"]} if j["state"] == "INACTIVE" else {})}
                   for j in selected]
        if not records:
            return "", err, code
        return json.dumps(records[0] if len(ids) == 1 else {"jobs": records}) + "\n", err, code
    fmt = fmt or "{id.f58:>12} {name:<10.10} {state:<8} {result}"
    out = "" if not header else "JOBID NAME STATE RESULT\n"
    for j in selected:
        status = j["result"] if j["state"] == "INACTIVE" else j["state"]
        out += fmt.format(id=Ident(j["id"]), state=j["state"], result=j["result"], name=j["name"],
                          returncode="" if j["returncode"] is None else j["returncode"], urgency=j["urgency"],
                          status=status, exception=j["exception"]) + "\n"
    return out, err, code


# ------------------------------------------------------------------ flux cancel (§3)
def cancel(argv: list[str]) -> tuple[str, str, int]:
    ids = [a for a in argv if not a.startswith("-")]
    if "--all" in argv:
        with locked_state() as state:
            live = [j for j in state["jobs"].values() if j["state"] != "INACTIVE" and j["userid"] == os.getuid()]
            for job in live:
                _cancel(job)
        return "", (f"flux-cancel: Canceled {len(live)} jobs (0 errors)\n" if live else "flux-cancel: Matched 0 jobs\n"), 0
    if not ids:
        return "", "flux-cancel: ERROR: No target jobs were provided\n", 1
    errors = []
    with locked_state() as state:
        for typed in ids:
            n = parse_id(typed)
            job = state["jobs"].get(str(n)) if n is not None else None
            if job is None:
                errors.append(f"flux-cancel: ERROR: {typed}: unknown job id")
            elif job["state"] == "INACTIVE":
                errors.append(f"flux-cancel: ERROR: {f58(job['id'], not utf8_locale())}: job is inactive")
            else:
                _cancel(job)
    return "", "".join(e + "\n" for e in errors), 1 if errors else 0


def _cancel(job: dict) -> None:
    if job["state"] in ("DEPEND", "PRIORITY", "SCHED") and not job.get("pid"):
        job.update(state="INACTIVE", result="CANCELED", returncode=-128, t_inactive=time.time(), exception="cancel")
    else:
        job["cancel"] = time.time()


# ------------------------------------------------------------------ test controls
def live_jobs() -> list[str]:
    return [f58(j["id"], True) for j in read_state()["jobs"].values() if j["state"] != "INACTIVE"]


def reset() -> None:
    with locked_state() as state:
        for job in state["jobs"].values():
            if job.get("pid"):
                _killpg(job["pid"], signal.SIGKILL)
        state["jobs"] = {}


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write("usage: flux [OPTIONS] COMMAND ARGS\n")
        return 1
    command, args = argv[0], argv[1:]
    try:
        if command == "batch":
            stdin_text = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
            out, err = batch(args, stdin_text)
            code = 0
        elif command == "jobs":
            out, err, code = jobs(args)
        elif command == "cancel":
            out, err, code = cancel(args)
        elif command == "run" and args and args[0].isdigit():
            run_job(args[0])
            return 0
        elif command == "run":  # `flux run` inside a batch job: the tasks, here on this host
            opts, rest = _parse(args, "run")
            tasks = int(opts.get("nslots", 1))
            procs = [subprocess.Popen(rest, env=dict(os.environ, FLUX_TASK_RANK=str(r))) for r in range(tasks)]
            return max(p.wait() for p in procs)
        else:
            sys.stderr.write(f"flux: '{command}' is not a flux command (emulated: batch, jobs, cancel, run)\n")
            return 1
    except Exit as exc:
        sys.stderr.write(exc.message + "\n")
        return exc.code
    sys.stdout.write(out)
    sys.stderr.write(err)
    return code


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "run" and sys.argv[2].isdigit():
        sys.exit(main(["run", sys.argv[2]]))
    sys.exit(main(sys.argv[1:]))
