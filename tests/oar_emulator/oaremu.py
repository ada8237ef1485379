"""An OAR 2.5.10 emulator (with an OAR 3 switch): oarsub, oarstat, oardel, written from
../shared/research/oar-interface.md (section numbers below are that note's), never from
guesses. Jobs run as real local processes.

State lives in $OAREMU_HOME (default /tmp/oaremu-<uid>): config.json (queues, the host's
cores and properties, version, timings), server.json (the job table) under a lock.

What it enforces (§7): oarsub runs a command string with the login shell, in the launching
directory, without the submitter's environment (§1.1, §5.1); `-S` scans #OAR lines at
column 0, values unparsed (§1.4); -l with walltime H[:M[:S]] (bare number = hours), the
default walltime set by an admission rule printed on stdout (§1.3); unknown queue 248,
impossible resources / unknown property 251, syntax 18 (§1.5); `OAR_JOB_ID=` lines and
`--array` (§1.2, §2); OAR 3 refuses `-n` on the command line (§1.6, §8); states
Waiting -> Launching -> Running -> Terminated (any exit, raw wait status) or Error (oardel,
walltime: SIGKILL, no grace, "Job N KILLED") (§3.1, §4, §5.2); oarstat -s / -f / -J, silent
for unknown ids (§3.2-§3.4); oardel texts and exit codes (§4); --checkpoint/--signal (§5.2).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import Any

HOME = os.environ.get("OAREMU_HOME") or f"/tmp/oaremu-{os.getuid()}"

DEFAULT_CONFIG: dict[str, Any] = {
    "version": 2,                 # 2 (OAR 2.5.10) or 3
    "queues": ["default", "besteffort", "admin"],
    "cores": 64,                  # cores of the one emulated host (one resource per core)
    "host": socket.gethostname().split(".")[0],
    "properties": {"memcore": 4096, "mem_core": 4096, "gpu_count": 0, "network_address": "node", "host": "node"},
    "default_walltime": 7200,     # the OAR 2 default admission rule (§1.3)
    "shell": "/bin/sh",           # the user's login shell (§1.1)
    "sched_latency": 0.2,
}


class Exit(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.message, self.code = message, code


def config() -> dict:
    cfg = json.loads(json.dumps(DEFAULT_CONFIG))
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
        json.dump(current, f, indent=1)


@contextlib.contextmanager
def locked_state():
    os.makedirs(HOME, exist_ok=True)
    with open(os.path.join(HOME, "server.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = os.path.join(HOME, "server.json")
        try:
            with open(path) as f:
                state = json.load(f)
        except (FileNotFoundError, ValueError):
            state = {"next_id": 1000, "jobs": {}}
        yield state
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, path)


def read_state() -> dict:
    with locked_state() as state:
        return json.loads(json.dumps(state))


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


# ------------------------------------------------------------------ oarsub (§1, §2)
SHORT = {"-n": "name", "-q": "queue", "-l": "resource", "-p": "property", "-t": "type", "-O": "stdout",
         "-E": "stderr", "-d": "directory", "-S": "scanscript", "-V": "version"}
WITH_VALUE = {"name", "queue", "project", "resource", "property", "type", "stdout", "stderr", "directory", "array",
              "checkpoint", "signal"}


def _parse(argv: list[str], version: int) -> tuple[dict, list[str]]:
    opts: dict[str, Any] = {"resource": [], "type": []}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "-n" and version == 3:  # §1.6: click knows only --name
            raise Exit("Usage: oarsub [OPTIONS] [COMMAND]...\nTry 'oarsub --help' for help.\n\n"
                       "Error: No such option: -n", 2)
        key = SHORT.get(word) or (word[2:].split("=")[0] if word.startswith("--") else None)
        if key is None:
            if word.startswith("-"):
                raise Exit(f"Unknown option: {word.lstrip('-')}", 1)
            rest.append(word)
            i += 1
            continue
        if key not in WITH_VALUE | {"scanscript", "version", "hold"}:
            raise Exit(f"Unknown option: {key}", 1)
        if key in WITH_VALUE:
            value = word.split("=", 1)[1] if word.startswith("--") and "=" in word else argv[i + 1]
            i += 1 if word.startswith("--") and "=" in word else 2
            if key in ("resource", "type"):
                opts[key].append(value)
            else:
                opts[key] = value  # scalar options: the last one counts (only one -p is kept, §1.3)
        else:
            opts[key] = True
            i += 1
    return opts, rest


def _scan(path: str) -> list[str]:
    """`-S`: #OAR lines at column 0, the value the rest of the line, quotes kept (§1.4)."""
    words: list[str] = []
    with open(path) as f:
        for line in f:
            m = re.match(r"^#OAR\s+(-\S+)\s*(.*?)\s*$", line)
            if m:
                words += [m.group(1)] + ([m.group(2)] if m.group(2) else [])
    return words


def _walltime(value: str) -> int:
    m = re.fullmatch(r"(\d+)(?::(\d+))?(?::(\d+))?", value)
    if not m:
        raise Exit("# Error: cannot recognize walltime resource value", 18)
    return int(m.group(1)) * 3600 + int(m.group(2) or 0) * 60 + int(m.group(3) or 0)


def _resources(spec: str, cfg: dict) -> tuple[int, int | None]:
    """Cores asked for and the walltime (seconds) of one -l alternative (§1.3)."""
    walltime = None
    cores = 1
    for part in spec.split(","):
        part = part.strip()
        if part.startswith("walltime="):
            walltime = _walltime(part.split("=", 1)[1])
            continue
        for item in filter(None, re.sub(r"^\{.*?\}", "", part).split("/")):
            m = re.fullmatch(r"(\w+)=(\d+|ALL|BEST|BESTHALF)", item)
            if not m:
                raise Exit(f"# Error: cannot recognize the resource description: {item}", 18)
            n = cfg["cores"] if m.group(2) in ("ALL", "BEST") else cfg["cores"] // 2 if m.group(2) == "BESTHALF" \
                else int(m.group(2))
            cores *= n if m.group(1) in ("core", "cpu", "resource_id") else 1
            if m.group(1) in ("nodes", "host", "network_address") and n > 1:
                raise Exit("# There are not enough resources for your request", 251)
    return cores, walltime


def _check_property(clause: str, cfg: dict) -> None:
    """-p is an SQL WHERE clause on the resources' properties (§1.3): unknown names fail the
    query, a clause no resource matches leaves too few resources (§1.5)."""
    props = cfg["properties"]
    for name, op, value in re.findall(r"(\w+)\s*(>=|<=|=|>|<)\s*'?(\w+)'?", clause):
        if name not in props:
            raise Exit(f"# Bad resource request (DBD::Pg::st execute failed: ERROR:  column \"{name}\" does not "
                       "exist)", 251)
        have = props[name]
        ok = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
              "<": lambda a, b: a < b, "=": lambda a, b: str(a) == str(b)}[op]
        if not ok(have, int(value) if value.isdigit() else value):
            raise Exit("# There are not enough resources for your request", 251)


def oarsub(argv: list[str]) -> tuple[str, str]:
    cfg = config()
    opts, rest = _parse(argv, cfg["version"])
    if opts.get("version"):
        return ("OAR version: 2.5.10\n" if cfg["version"] == 2 else "OAR version : 3.0.0\n"), ""
    if not rest:
        raise Exit("Usage: oarsub [options] <command>", 5)
    command = " ".join(rest)
    if opts.get("scanscript"):
        script_path = shlex.split(command)[0]
        scanned, _ = _parse(_scan(script_path), 2)
        for key, value in scanned.items():
            if key in ("resource", "type"):
                opts[key] = opts[key] or value  # command-line -l alternatives win
            elif key not in opts:
                opts[key] = value
    queue = opts.get("queue", "default")
    if queue not in cfg["queues"]:
        raise Exit(f"# Error: queue '{queue}' does not exist", 248)
    stdout_lines = []
    walltime = None
    cores = 1
    for alternative in opts["resource"] or ["/resource_id=1"]:
        cores, walltime = _resources(alternative, cfg)
        if cores > cfg["cores"]:
            raise Exit("# There are not enough resources for your request", 251)
    if walltime is None:
        walltime = cfg["default_walltime"]
        stdout_lines.append(f"[ADMISSION RULE] Set default walltime to {walltime}.")
    if "property" in opts:
        _check_property(opts["property"], cfg)
    count = int(opts.get("array", 1))
    if count <= 0:
        raise Exit("# Error: an array job must have a positive number of sub-jobs.", 6)
    name = opts.get("name")
    cwd = opts.get("directory") or os.getcwd()
    now = time.time()
    with locked_state() as state:
        first = state["next_id"]
        state["next_id"] += count
        for index in range(1, count + 1):
            job_id = first + index - 1
            state["jobs"][str(job_id)] = {
                "Job_Id": job_id, "array_id": first, "array_index": index, "name": name, "owner": _user(),
                "job_user": _user(), "state": "Hold" if opts.get("hold") else "Waiting", "queue": queue,
                "command": command, "launchingDirectory": cwd, "jobType": "PASSIVE", "project": opts.get("project",
                                                                                                           "default"),
                "properties": opts.get("property", ""), "walltime": walltime, "submissionTime": int(now),
                "startTime": 0, "stopTime": 0, "message": "", "exit_code": None, "types": opts["type"],
                "cores": cores, "checkpoint": int(opts.get("checkpoint", 0) or 0),
                "signal": int(opts.get("signal", 12)),
                "stdout_file": _out(opts.get("stdout"), name, job_id, "stdout"),
                "stderr_file": _out(opts.get("stderr"), name, job_id, "stderr"), "pid": None, "frag": False,
            }
            stdout_lines.append(f"OAR_JOB_ID={job_id}")
    if count > 1:
        stdout_lines.append(f"OAR_ARRAY_ID={first}")
    for index in range(count):
        subprocess.Popen([sys.executable, os.path.abspath(__file__), "run", str(first + index)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, env=dict(os.environ, OAREMU_HOME=HOME))
    return "".join(line + "\n" for line in stdout_lines), ""


def _out(value: str | None, name: str | None, job_id: int, kind: str) -> str:
    """-O/-E with %jobid% and %jobname%, default OAR[.<name>].<id>.stdout (§1.3)."""
    if value:
        return value.replace("%jobid%", str(job_id)).replace("%jobname%", name or "")
    return f"OAR.{name}.{job_id}.{kind}" if name else f"OAR.{job_id}.{kind}"


# ------------------------------------------------------------------ running (§5)
def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def run_job(job_id: str) -> None:
    cfg = config()
    while True:
        time.sleep(0.1)
        with locked_state() as state:
            job = state["jobs"].get(job_id)
            if job is None or job["state"] in ("Terminated", "Error"):
                return
            if job["state"] != "Waiting" or time.time() - job["submissionTime"] < cfg["sched_latency"]:
                continue
            used = sum(j["cores"] for j in state["jobs"].values() if j["state"] in ("Launching", "Running"))
            if used + job["cores"] > cfg["cores"]:
                continue
            job.update({"state": "Running", "startTime": int(time.time()), "start": time.time()})
            break
    cwd = job["launchingDirectory"]

    def path(p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(cwd, p)

    nodefile = os.path.join(HOME, f"nodefile.{job_id}")
    with open(nodefile, "w") as f:
        f.write((cfg["host"] + "\n") * job["cores"])
    wall = job["walltime"]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.path.expanduser("~"), "USER": job["owner"],
           "LOGNAME": job["owner"], "SHELL": cfg["shell"], "TERM": "xterm", "SUDO_COMMAND": "OAR",
           "OAR_JOB_ID": job_id, "OAR_JOBID": job_id, "OAR_ARRAY_ID": str(job["array_id"]),
           "OAR_ARRAYID": str(job["array_id"]), "OAR_ARRAY_INDEX": str(job["array_index"]),
           "OAR_ARRAYINDEX": str(job["array_index"]), "OAR_NODEFILE": nodefile, "OAR_FILE_NODES": nodefile,
           "OAR_NODE_FILE": nodefile, "OAR_RESOURCE_FILE": nodefile, "OAR_JOB_NAME": job["name"] or "",
           "OAR_PROJECT_NAME": job["project"], "OAR_JOB_WALLTIME": f"{wall // 3600}:{wall % 3600 // 60}:{wall % 60}",
           "OAR_JOB_WALLTIME_SECONDS": str(wall), "OAR_WORKDIR": cwd, "OAR_O_WORKDIR": cwd,
           "OAR_WORKING_DIRECTORY": cwd, "OAR_USER": job["owner"]}
    out_path, err_path = path(job["stdout_file"]), path(job["stderr_file"])
    with open(out_path, "a") as out, open(err_path, "a") as err:  # appended live (§5.1)
        proc = subprocess.Popen([cfg["shell"], "-c", job["command"]], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, start_new_session=True)
    with locked_state() as state:
        if job_id in state["jobs"]:
            state["jobs"][job_id]["pid"] = proc.pid
    started = time.time()
    killed = checkpointed = False
    while proc.poll() is None:
        time.sleep(0.1)
        now = time.time()
        with locked_state() as state:
            current = state["jobs"].get(job_id) or {"frag": True}
            frag = current.get("frag")
        if job["checkpoint"] and not checkpointed and now >= started + wall - job["checkpoint"]:
            checkpointed = True
            _killpg(proc.pid, job["signal"])
            with open(err_path, "a") as err:
                err.write(f"Job {job_id} CHECKPOINTED with signal {job['signal']}\n")
        if (frag or now > started + wall) and not killed:  # oardel or walltime: SIGKILL, no grace (§4, §5.2)
            killed = True
            _killpg(proc.pid, signal.SIGKILL)
    _killpg(proc.pid, signal.SIGKILL)
    if killed:
        with open(err_path, "a") as err:
            err.write(f"Job {job_id} KILLED\n")
    rc = proc.returncode
    raw = (-rc) & 0x7F if rc < 0 else (rc & 0xFF) << 8  # the raw waitpid status (§3.3)
    with locked_state() as state:
        current = state["jobs"].get(job_id)
        if current is not None:
            current.update({"state": "Error" if killed else "Terminated", "stopTime": int(time.time()),
                            "exit_code": None if killed else raw, "pid": None})
    with contextlib.suppress(OSError):
        os.unlink(nodefile)


# ------------------------------------------------------------------ oarstat (§3)
PUBLIC = ("Job_Id", "array_id", "array_index", "name", "owner", "job_user", "state", "queue", "command",
          "launchingDirectory", "jobType", "properties", "walltime", "submissionTime", "startTime", "stopTime",
          "message", "project", "types", "exit_code", "stdout_file", "stderr_file")
LETTER = {"Waiting": "W", "Hold": "H", "toLaunch": "L", "Launching": "L", "Running": "R", "Suspended": "S",
          "Finishing": "F", "Terminated": "T", "Error": "E", "toError": "E"}


def oarstat(argv: list[str]) -> tuple[str, str, int]:
    ids, flags, user, i = [], set(), None, 0
    while i < len(argv):
        a = argv[i]
        if a in ("-j", "--job"):
            ids.append(argv[i + 1])
            i += 2
            continue
        if a in ("-u", "--user"):
            if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                user = argv[i + 1]
                i += 2
            else:
                user = _user()
                i += 1
            continue
        flags.add({"--full": "-f", "--state": "-s", "--json": "-J"}.get(a, a))
        i += 1
    version = config()["version"]
    jobs = read_state()["jobs"]
    if "-s" in flags and not ids:
        return "", "--state can only be used with an id\n", 1
    if ids:
        selected = [jobs[j] for j in ids if j in jobs]  # unknown ids: silently skipped (§3.2)
    else:
        selected = [j for j in jobs.values() if j["state"] not in ("Terminated", "Error")
                    and (user is None or j["owner"] == user)]
    if "-s" in flags:
        states = {str(j["Job_Id"]): j["state"] for j in selected}
        if "-J" in flags:
            return (json.dumps(states, indent=3) + "\n" if states or version == 3 else ""), "", 0
        return "".join(f"{k}: {v}\n" for k, v in states.items()), "", 0
    if "-J" in flags:
        data = {str(j["Job_Id"]): {k: j.get(k) for k in PUBLIC} for j in selected}
        if not data and version == 2:
            return "", "", 0  # OAR 2 prints nothing at all (§3.4)
        return json.dumps(data, indent=3) + "\n", "", 0
    if "-f" in flags:
        out = ""
        for j in selected:
            out += f"Job_Id: {j['Job_Id']}\n"
            for key in PUBLIC[1:]:
                value = j.get(key)
                if key == "exit_code":
                    if value is None:
                        continue
                    value = f"{value} ({value >> 8},{value & 0x7F},{1 if value & 0x80 else 0})"
                out += f"    {key} = {'' if value is None else value}\n"
            out += "\n"
        return out, "", 0
    out = ("Job id     Name           User           Submission Date     S Queue\n"
           "---------- -------------- -------------- ------------------- - ----------\n")
    for j in selected:
        out += "%-10.10s %-14.14s %-14.14s %-19.19s %1.1s %-10.10s\n" % (
            j["Job_Id"], j["name"] or "", j["owner"], time.strftime("%Y-%m-%d %H:%M:%S",
                                                                     time.localtime(j["submissionTime"])),
            LETTER.get(j["state"], "?"), j["queue"])
    return out, "", 0


# ------------------------------------------------------------------ oardel (§4)
def oardel(argv: list[str]) -> tuple[str, str, int]:
    version = config()["version"]
    ids = [a for a in argv if not a.startswith("-")]
    out, err, code, deleted = [], [], 0, []
    with locked_state() as state:
        for job_id in ids:
            job = state["jobs"].get(job_id)
            if version == 2:
                out.append(f"Deleting the job = {job_id} ...")
            if job is None or job["owner"] != _user():
                if version == 2:
                    out[-1] += "ERROR."
                    err.append(f"Cannot frag {job_id} ; You are not the right user.")
                    code = 1
                else:
                    err.append(f"#WARNING: Cannot frag {job_id} ; Job does not exist.")
                    code = 7
                continue
            if job["frag"]:
                if version == 2:
                    out[-1] += "ERROR."
                err.append(("#WARNING: " if version == 3 else "") + f"Cannot frag {job_id} ; This job was already "
                           "killed.")
                code = 6
                continue
            job["frag"] = True  # an ended job is "REGISTERED" too (§4)
            if job["state"] in ("Waiting", "Hold"):
                job.update({"state": "Error", "stopTime": int(time.time())})
            if version == 2:
                out[-1] += "REGISTERED."
            else:
                err += [f"Deleting the job = {job_id} ...", ""]
            deleted.append(job_id)
    if deleted:
        line = f"The job(s) [ {' '.join(deleted)} ] will be deleted in the near future."
        (out if version == 2 else err).append(line)
    return "".join(o + "\n" for o in out), "".join(e + "\n" for e in err), code


# ------------------------------------------------------------------ test controls
def live_jobs() -> list[str]:
    return [k for k, j in read_state()["jobs"].items() if j["state"] not in ("Terminated", "Error")]


def reset() -> None:
    with locked_state() as state:
        for job in state["jobs"].values():
            if job.get("pid"):
                _killpg(job["pid"], signal.SIGKILL)
        state["jobs"] = {}


def main(prog: str, argv: list[str]) -> int:
    try:
        if prog == "oarsub":
            out, err = oarsub(argv)
            code = 0
        elif prog == "oarstat":
            out, err, code = oarstat(argv)
        elif prog == "oardel":
            out, err, code = oardel(argv)
        elif prog == "run":
            run_job(argv[0])
            return 0
        else:
            raise SystemExit(f"unknown command {prog}")
    except Exit as exc:
        sys.stderr.write(exc.message + "\n")
        return exc.code
    sys.stdout.write(out)
    sys.stderr.write(err)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
