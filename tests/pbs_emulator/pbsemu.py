"""An OpenPBS 23.06 emulator: qsub, qstat and qdel over a file-locked queue.

It exists because no real PBS server can run here. It really runs job scripts as
process groups, with PBS's environment, and reproduces OpenPBS 23.06.06's outputs and
exit codes for everything jobqueue calls, error cases included. The behaviour follows
the team's research note on the PBS interface (OpenPBS source, man pages and PTL tests);
each rule below cites the section of that note.

State lives in $PBSEMU_HOME (default /tmp/pbsemu-<uid>): config.json (server name,
queues, job history, cpus, kill_delay, scheduling latency), server.json (the jobs) and
spool/ (job output until the job ends). The commands are bin/qsub, bin/qstat, bin/qdel;
tests drive transitions (hold, release, lose a job) with the functions at the bottom.
Only the standard library is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import getopt
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any

VERSION = "23.06.06"
HOME = os.environ.get("PBSEMU_HOME") or f"/tmp/pbsemu-{os.getuid()}"

DEFAULT_CONFIG: dict[str, Any] = {
    "server_name": "pbsserver",
    "default_queue": "workq",
    # queue -> {"enabled": bool, "resources_max": {"walltime": "HH:MM:SS"}, "kill_delay": s}
    "queues": {"workq": {"enabled": True, "resources_max": {}, "kill_delay": 10}},
    "job_history_enable": False,
    "max_array_size": 10000,     # server attribute; larger arrays are refused (§0 table, §1.5)
    "max_queued_per_user": None,  # entity limit: live jobs (array elements each) per user (§1.5)
    "ncpus": 64,                 # what the fake complex offers ("Can Never Run" beyond it)
    "node": socket.gethostname().split(".")[0],
    "sched_latency": 0.3,        # seconds between qsub and the job starting
    "home": None,                # the jobs' working directory (default: $HOME)
}

KNOWN_RESOURCES = {"select", "place", "walltime", "ncpus", "mem", "vmem", "nodes", "nodect", "host",
                   "cput", "mpiprocs", "ompthreads", "software", "arch", "pmem", "pvmem", "file"}

QSUB_USAGE = """usage: qsub [-a date_time] [-A account_string] [-c interval]
\t[-C directive_prefix] [-e path] [-f ] [-h ] [-I [-X]] [-j oe|eo] [-J X-Y[:Z]]
\t[-k keep] [-l resource_list] [-m mail_options] [-M user_list]
\t[-N jobname] [-o path] [-p priority] [-P project] [-q queue] [-r y|n]
\t[-R o|e|oe] [-S path] [-u user_list] [-W otherattributes=value...]
\t[-v variable_list] [-V ] [-z] [script | -- command [arg1 ...]]
       qsub --version
"""
QSTAT_USAGE = """usage: 
qstat [-f] [-J] [-p] [-t] [-x] [-E] [-F format | -w] [-D delim] [ job_identifier... | destination... ]
qstat [-a|-i|-r|-H|-T] [-J] [-t] [-u user] [-n] [-s] [-G|-M] [-1] [-w]
\t[ job_identifier... | destination... ]
qstat -Q [-f] [-F format] [-D delim] [ destination... ]
qstat -q [-G|-M] [ destination... ]
qstat -B [-f] [-F format] [-D delim] [ server_name... ]
qstat --version
"""
QDEL_USAGE = "usage:\n\tqdel [-W force|suppress_email=X] [-x] job_identifier...\n\tqdel --version\n"


class Exit(Exception):
    """Leave a command with this stderr text and exit code."""

    def __init__(self, code: int, message: str = ""):
        super().__init__(message)
        self.code, self.message = code, message


# ------------------------------------------------------------------ the server state
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
        json.dump(current, f, indent=1)


@contextlib.contextmanager
def locked_state():
    """The server's job table, read and written under an exclusive lock."""
    os.makedirs(os.path.join(HOME, "spool"), exist_ok=True)
    with open(os.path.join(HOME, "server.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = os.path.join(HOME, "server.json")
        try:
            with open(path) as f:
                state = json.load(f)
        except (FileNotFoundError, ValueError):
            state = {"next_seq": 0, "jobs": {}}
        yield state
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, path)


def read_state() -> dict:
    with locked_state() as state:
        return json.loads(json.dumps(state))


def ctime(t: float) -> str:
    """C ctime() without the newline, as qstat prints times (§2.3)."""
    return time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(t))


def normalise(job_id: str, server: str) -> str:
    """qstat's get_server: "12" -> "12.<server>" (§2.1)."""
    return job_id if "." in job_id else f"{job_id}.{server}"


def seq_of(job_id: str) -> str:
    return job_id.split(".")[0]


# ------------------------------------------------------------------ value checks
def walltime_seconds(value: str) -> int | None:
    """[[hh:]mm:]ss[.fff], digits only, at most two colons (§1.3)."""
    if not re.fullmatch(r"\d+(?::\d+){0,2}(?:\.\d+)?", value):
        return None
    parts = [float(p) for p in value.split(":")]
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + p
    return int(seconds)


def hms(seconds: int) -> str:
    return "%02d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)


def size_ok(value: str) -> bool:
    return re.fullmatch(r"\d+(?:[kmgtp]?[bw]?)", value, re.I) is not None


def size_normal(value: str) -> str:
    """27GB -> 27gb, 1234B -> 1234b, 5 -> 5b (§1.3)."""
    v = value.lower()
    if v[-1:] == "w" or v[-1:] == "b":
        return v
    return v + "b"


def size_kb(value: str) -> int:
    m = re.fullmatch(r"(\d+)([kmgtp]?)([bw]?)", value.lower())
    n, unit, word = int(m.group(1)), m.group(2), m.group(3)
    n *= {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}[unit]
    if word == "w":
        n *= 8
    return max(1, -(-n // 1024))


# ------------------------------------------------------------------ qsub
QSUB_OPTS = "a:A:c:C:e:fhIj:J:k:l:m:M:N:o:p:q:r:R:S:u:v:VW:XzP:"


def _parse_resources(text: str) -> list[tuple[str, str]]:
    """"select=1:ncpus=4,walltime=1:00:00" -> [(select, ...), (walltime, ...)]."""
    out = []
    for item in re.split(r",(?![^\"]*\"$)", text):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not name or not sep:
            raise Exit(2, "qsub: illegal -l value\n" + QSUB_USAGE)
        out.append((name.strip(), value.strip().strip('"')))
    return out


def _apply_options(opts, attrs: dict, set_here: set, resources: dict, from_directive: bool,
                   protected: set, protected_res: set) -> None:
    """Apply getopt pairs to attrs; options already set on the command line win (§1.4)."""
    for opt, val in opts:
        key = opt
        if opt == "-l":
            for name, value in _parse_resources(val):
                if from_directive and name in protected_res:
                    continue
                resources[name] = value
            continue
        if from_directive and key in protected:
            continue
        set_here.add(key)
        if opt == "-v":
            attrs.setdefault("-v", [])
            attrs["-v"] = attrs["-v"] + [val]
        else:
            attrs[key] = val


def _bad_value(option: str, from_directive: bool, line_words: list[str] | None) -> Exit:
    if from_directive:
        return Exit(1, f"qsub: illegal {option} value\nqsub: directive error: {' '.join(line_words or [])} ")
    return Exit(2, f"qsub: illegal {option} value\n" + QSUB_USAGE)


def _array_bounds(spec: str) -> tuple[int, int, int]:
    """range() arguments of a -J range "a-b[:s][%n]"."""
    m = re.fullmatch(r"(\d+)-(\d+)(?::(\d+))?(?:%\d+)?", spec)
    return (int(m.group(1)), int(m.group(2)) + 1, int(m.group(3) or 1)) if m else (0, 0, 1)


def qsub(argv: list[str], stdin_text: str | None = None) -> str:
    if argv == ["--version"]:
        return f"pbs_version = {VERSION}\n"
    try:
        opts, args = getopt.getopt(argv, QSUB_OPTS)
    except getopt.GetoptError as exc:
        letter = exc.opt
        what = "option requires an argument" if "requires argument" in exc.msg else "invalid option"
        raise Exit(2, f"qsub: {what} -- '{letter}'\n" + QSUB_USAGE) from None
    if len(args) > 1 or (args and args[0] == "--"):
        raise Exit(2, QSUB_USAGE)  # the script must be the last argument (§1.2)
    cfg = config()
    cwd = os.environ.get("PWD") if os.environ.get("PWD") and os.path.samefile(os.environ["PWD"], ".") \
        else os.getcwd()

    if args and args[0] != "-":
        path = args[0]
        if not os.path.exists(path):
            raise Exit(1, "qsub: script file:: No such file or directory")
        if not os.path.isfile(path):
            raise Exit(1, "qsub: script not a file")
        try:
            with open(path, newline="") as f:
                script = f.read()
        except PermissionError:
            raise Exit(8, f"qsub: could not open script file {path}") from None
        default_name = os.path.basename(path)
    else:
        script = stdin_text if stdin_text is not None else sys.stdin.read()
        default_name = "STDIN"
    if "\r\n" in script:
        raise Exit(1, "qsub: script contains cr, lf")

    attrs: dict[str, Any] = {}
    resources: dict[str, str] = {}
    cmd_set: set = set()
    _apply_options(opts, attrs, cmd_set, resources, False, set(), set())
    cmd_resources = set(resources)

    # directives (§1.4): prefix, whitespace-tolerant, stop at the first executable line
    prefix = attrs.get("-C", os.environ.get("PBS_DPREFIX", "#PBS"))
    if prefix:
        lines = script.split("\n")
        i = 0
        while i < len(lines):
            line = lines[i]
            stripped = line.lstrip()
            if stripped.startswith(prefix):
                text = stripped[len(prefix):]
                while text.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    text = text[:-1] + lines[i]
                try:
                    words = shlex.split(text)
                except ValueError:
                    raise Exit(1, "qsub: unmatched quote in directive") from None
                try:
                    dopts, rest = getopt.getopt(words, QSUB_OPTS)
                except getopt.GetoptError:
                    raise Exit(1, f"qsub: directive error: {' '.join(words)} ") from None
                if rest:
                    raise Exit(1, f"qsub: directive error: {' '.join(words)} ")
                try:
                    _check_options(dopts, True, words)
                except Exit:
                    raise
                _apply_options(dopts, attrs, set(), resources, True, cmd_set, cmd_resources)
            elif stripped == "" or stripped.startswith("#") or stripped.startswith(":"):
                pass
            else:
                break
            i += 1
    _check_options(opts, False, None)

    # client-side resource checks (§1.5): exit 166 with the attribute named
    for name, value in resources.items():
        if name == "walltime" and walltime_seconds(value) is None:
            raise Exit(166, "qsub: Illegal attribute or resource value Resource_List.walltime")
        if name in ("mem", "vmem", "pmem", "pvmem") and not size_ok(value):
            raise Exit(166, f"qsub: Illegal attribute or resource value Resource_List.{name}")
        if name == "select":
            for chunk in value.split("+"):
                for part in chunk.split(":")[1:] if chunk.split(":")[0].isdigit() else chunk.split(":"):
                    r, _, v = part.partition("=")
                    if r in ("mem", "vmem") and not size_ok(v):
                        raise Exit(166, "qsub: Illegal attribute or resource value Resource_List.select")
                    if r == "ncpus" and not v.isdigit():
                        raise Exit(166, "qsub: Illegal attribute or resource value Resource_List.select")

    # server-side checks (§1.5)
    queue = attrs.get("-q") or cfg["default_queue"]
    queue = queue.split("@")[0] or cfg["default_queue"]
    qcfg = cfg["queues"].get(queue)
    if qcfg is None:
        raise Exit(170, "qsub: Unknown queue")
    if not qcfg.get("enabled", True):
        raise Exit(173, "qsub: Queue is not enabled")
    for name in resources:
        if name not in KNOWN_RESOURCES:
            raise Exit(187, f"qsub: Unknown resource Resource_List.{name}")
    if "select" in resources:
        for name in ("mem", "ncpus", "vmem"):
            if name in resources:
                raise Exit(5, f'qsub: "-lresource=" cannot be used with "select" or "place", resource is: {name}')
    limit = (qcfg.get("resources_max") or {}).get("walltime")
    if limit and "walltime" in resources and walltime_seconds(resources["walltime"]) > walltime_seconds(limit):
        raise Exit(188, "qsub: Job violates queue and/or server resource limits")
    if attrs.get("-J"):
        if len(range(*_array_bounds(attrs["-J"]))) > cfg["max_array_size"]:
            raise Exit(3, "qsub: Array job exceeds server or queue size limit")
    for var in attrs.get("-v", []):
        for item in var.split(","):
            if "=" not in item and item not in os.environ:
                raise Exit(1, "qsub: cannot send environment with the job")

    # build the job (§8.1.5)
    server = cfg["server_name"]
    name = attrs.get("-N", default_name)
    host = socket.getfqdn()
    user = os.environ.get("USER") or _username()
    now = int(time.time())
    res_list = _resource_list(resources)
    variables = _variable_list(attrs, cwd, host, queue)
    array = attrs.get("-J")
    with locked_state() as state:
        limit = cfg.get("max_queued_per_user")
        if limit is not None:
            mine = [j for j in state["jobs"].values() if j["job_state"] not in ("F", "X") and "_subjobs" not in j
                    and str(j.get("Job_Owner", "")).split("@")[0] == user]
            adding = len(range(*_array_bounds(array))) if array else 1
            if len(mine) + adding > limit:
                raise Exit(38, "qsub: would exceed complex's per-user limit of jobs in 'Q' state")
        seq = state["next_seq"]
        state["next_seq"] = seq + 1
        job_id = f"{seq}[].{server}" if array else f"{seq}.{server}"
        base = {
            "Job_Name": name, "Job_Owner": f"{user}@{host}", "job_state": "H" if "-h" in attrs else "Q",
            "queue": queue, "server": server, "Checkpoint": "u", "ctime": now,
            "Error_Path": _out_path(attrs.get("-e"), cwd, host, name, seq, "e"),
            "Hold_Types": "u" if "-h" in attrs else "n", "Join_Path": attrs.get("-j", "n"),
            "Keep_Files": attrs.get("-k", "n"), "Mail_Points": "a", "mtime": now,
            "Output_Path": _out_path(attrs.get("-o"), cwd, host, name, seq, "o"),
            "Priority": 0, "qtime": now, "Rerunable": "True", "Resource_List": res_list,
            "substate": 20 if "-h" in attrs else 10, "Variable_List": variables, "etime": now,
            "Submit_arguments": " ".join(argv), "project": attrs.get("-P", "_pbs_project_default"),
            "Submit_Host": host,
        }
        if "-A" in attrs:
            base["Account_Name"] = attrs["-A"]
        private = {"_script": script, "_shell": attrs.get("-S"), "_kill_delay": qcfg.get("kill_delay", 10)}
        if array:
            m = re.fullmatch(r"(\d+)-(\d+)(?::(\d+))?(?:%\d+)?", array)
            indices = list(range(int(m.group(1)), int(m.group(2)) + 1, int(m.group(3) or 1)))
            base.update({"array": "True", "array_indices_submitted": array.split("%")[0],
                         "array_indices_remaining": array.split("%")[0]})
            state["jobs"][job_id] = {**base, **private, "_subjobs": [f"{seq}[{i}].{server}" for i in indices]}
            for i in indices:
                sub = f"{seq}[{i}].{server}"
                state["jobs"][sub] = {**base, **private, "array_id": job_id, "array_index": i}
                for key in ("array", "array_indices_submitted", "array_indices_remaining"):
                    state["jobs"][sub].pop(key, None)
            to_run = [f"{seq}[{i}].{server}" for i in indices]
        else:
            state["jobs"][job_id] = {**base, **private}
            to_run = [job_id]
    for jid in to_run:
        subprocess.Popen([sys.executable, os.path.abspath(__file__), "_run", jid], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         close_fds=True, env={**os.environ, "PBSEMU_HOME": HOME})
    if "-z" in attrs:
        return ""
    return job_id + "\n"


def _check_options(opts, from_directive: bool, words) -> None:
    for opt, val in opts:
        if opt == "-N" and (not re.fullmatch(r"[A-Za-z0-9_+.\-]+", val) or len(val) > 230):
            if len(val) > 230:
                raise Exit(2, "qsub: Job name is too long ")
            raise _bad_value("-N", from_directive, words)
        if opt == "-r" and val not in ("y", "n"):
            raise _bad_value("-r", from_directive, words)
        if opt == "-j" and val not in ("oe", "eo", "n"):
            raise _bad_value("-j", from_directive, words)
        if opt == "-J":
            m = re.fullmatch(r"(\d+)-(\d+)(?::(\d+))?(?:%\d+)?", val)
            if not m or int(m.group(1)) >= int(m.group(2)) or (m.group(3) and int(m.group(3)) < 1):
                raise _bad_value("-J", from_directive, words)
        if opt == "-W" and val.startswith("depend=") and not re.fullmatch(
                r"depend=(after|afterok|afternotok|afterany|before|beforeok|beforenotok|beforeany|on)"
                r":[\w.\[\]:-]+(,.*)?", val):
            raise _bad_value("-W", from_directive, words)


def _username() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _resource_list(resources: dict[str, str]) -> dict[str, Any]:
    """Derive job-wide ncpus/mem/nodect/place from select, as the server does (§1.3)."""
    out: dict[str, Any] = {}
    for name, value in resources.items():
        if name == "walltime":
            out[name] = hms(walltime_seconds(value))
        elif name in ("mem", "vmem"):
            out[name] = size_normal(value)
        elif name == "nodes":
            m = re.fullmatch(r"(\d+)(?::ppn=(\d+))?", value)
            n, ppn = (int(m.group(1)), int(m.group(2) or 1)) if m else (1, 1)
            out["select"] = f"{n}:ncpus={ppn}:mpiprocs={ppn}"
            out["place"] = "scatter"
        else:
            out[name] = value
    if "select" not in out:
        out["select"] = f"1:ncpus={out.get('ncpus', 1)}" + (f":mem={out['mem']}" if "mem" in out else "")
        out.setdefault("place", "pack")
    ncpus, mem_kb, nodect = 0, 0, 0
    for chunk in str(out["select"]).split("+"):
        parts = chunk.split(":")
        count = int(parts[0]) if parts[0].isdigit() else 1
        items = dict(p.partition("=")[::2] for p in (parts[1:] if parts[0].isdigit() else parts))
        nodect += count
        ncpus += count * int(items.get("ncpus", 1))
        if "mem" in items:
            mem_kb += count * size_kb(items["mem"])
    out.setdefault("ncpus", ncpus)
    if mem_kb and "mem" not in resources:
        out["mem"] = f"{mem_kb}kb"
    out["nodect"] = nodect
    out.setdefault("place", "free")
    return out


def _variable_list(attrs: dict, cwd: str, host: str, queue: str) -> dict[str, str]:
    env = os.environ
    out = {f"PBS_O_{k}": env[k] for k in ("HOME", "LANG", "LOGNAME", "PATH", "MAIL", "SHELL", "TZ")
           if k in env}
    out.update({"PBS_O_WORKDIR": cwd, "PBS_O_SYSTEM": os.uname().sysname, "PBS_O_QUEUE": queue,
                "PBS_O_HOST": host})
    if "-V" in attrs:
        out.update({k: v for k, v in env.items() if not k.startswith("BASH_FUNC_")})
    for var in attrs.get("-v", []):
        for item in var.split(","):
            k, sep, v = item.partition("=")
            out[k] = v if sep else env.get(k, "")
    return out


def _out_path(value: str | None, cwd: str, host: str, name: str, seq: int, kind: str) -> str:
    """host:/abs/path; a directory keeps its trailing "/" (§4.3)."""
    if value is None:
        return f"{host}:{cwd}/{name}.{kind}{seq}"
    path = value.split(":", 1)[1] if ":" in value and not value.startswith("/") else value
    path = os.path.join(cwd, path)
    if os.path.isdir(path) and not path.endswith("/"):
        path += "/"
    return f"{host}:{path}"


# ------------------------------------------------------------------ running a job (§8.2)
def _deliver(job: dict, job_id: str, spool_out: str, spool_err: str) -> None:
    join = job.get("Join_Path", "n")
    seq = re.match(r"\d+", job_id).group()
    idx = job.get("array_index")

    def target(attr: str, suffix: str) -> str:
        path = job[attr].split(":", 1)[1]
        if path.endswith("/"):
            return os.path.join(path, f"{job_id}.{suffix}")
        if idx is not None:  # <name>.o<seq>.<index> for subjobs
            path = re.sub(rf"\.([oe]){re.escape(seq)}$", rf".\g<1>{seq}.{idx}", path)
        return path

    pairs = [(spool_out, target("Output_Path", "OU")), (spool_err, target("Error_Path", "ER"))]
    if join == "oe":
        pairs = [(spool_out, pairs[0][1])]
    elif join == "eo":
        pairs = [(spool_err, pairs[1][1])]
    for src, dst in pairs:
        with contextlib.suppress(OSError):
            shutil.copyfile(src, dst)
        with contextlib.suppress(OSError):
            os.unlink(src)


def _can_run(job: dict, state: dict, cfg: dict) -> str | None:
    """None if the job fits now, else the scheduler's comment."""
    want = int(job["Resource_List"].get("ncpus", 1))
    total = int(cfg["ncpus"])
    used = sum(int(j["Resource_List"].get("ncpus", 1)) for j in state["jobs"].values()
               if j.get("job_state") in ("R", "E") and "_subjobs" not in j)
    if want > total:
        return f"Can Never Run: Insufficient amount of resource: ncpus (R: {want} A: {total} T: {total})"
    if used + want > total:
        return f"Not Running: Insufficient amount of resource: ncpus (R: {want} A: {total - used} T: {total})"
    return None


def run_job(job_id: str) -> None:
    """The MoM's part for one job: wait to be scheduled, run, enforce walltime, end."""
    cfg = config()
    # --- queued: wait for the "scheduler"
    while True:
        time.sleep(0.1)
        with locked_state() as state:
            job = state["jobs"].get(job_id)
            if job is None or job["job_state"] in ("F", "X"):
                return
            if job.get("_lost"):
                return
            if job["job_state"] != "Q" or time.time() - job["qtime"] < cfg["sched_latency"]:
                continue
            why = _can_run(job, state, config())
            if why:
                job["comment"] = why
                continue
            now = int(time.time())
            ncpus = job["Resource_List"].get("ncpus", 1)
            node = cfg["node"]
            mem = job["Resource_List"].get("mem")
            vnode = f"({node}:ncpus={ncpus}" + (f":mem={size_kb(mem[:-1] if mem.endswith('b') else mem)}kb"
                                                  if mem else "") + ")"
            job.update({"job_state": "R", "substate": 42, "stime": now, "mtime": now, "exec_host":
                        f"{node}/0*{ncpus}", "exec_vnode": vnode, "run_count": 1,
                        "comment": f"Job run at {time.strftime('%a %b %d at %H:%M', time.localtime(now))} "
                                   f"on {vnode}"})
            if job.get("array_id") and job["array_id"] in state["jobs"]:
                state["jobs"][job["array_id"]]["job_state"] = "B"
            break
    # --- running
    home = cfg["home"] or os.path.expanduser("~")
    spool = os.path.join(HOME, "spool")
    script_path = os.path.join(spool, f"{job_id}.SC")
    with open(script_path, "w") as f:
        f.write(job["_script"])
    os.chmod(script_path, 0o700)
    tmpdir = os.path.join(HOME, "tmp", f"pbs.{job_id}")
    os.makedirs(tmpdir, exist_ok=True)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": os.environ.get("LANG", "C.UTF-8")}
    env.update({k: str(v) for k, v in job["Variable_List"].items()})
    user = job["Job_Owner"].split("@")[0]
    ncpus = str(job["Resource_List"].get("ncpus", 1))
    nodefile = os.path.join(HOME, "aux", job_id)
    os.makedirs(os.path.dirname(nodefile), exist_ok=True)
    with open(nodefile, "w") as f:
        f.write((cfg["node"] + "\n") * int(job["Resource_List"].get("nodect", 1)))
    env.update({"HOME": home, "USER": user, "LOGNAME": user, "SHELL": "/bin/bash",
                "PBS_JOBID": job_id, "PBS_JOBNAME": job["Job_Name"], "PBS_QUEUE": job["queue"],
                "PBS_NODEFILE": nodefile, "NCPUS": ncpus, "OMP_NUM_THREADS": ncpus, "TMPDIR": tmpdir,
                "PBS_JOBDIR": home, "PBS_ENVIRONMENT": "PBS_BATCH", "ENVIRONMENT": "BATCH",
                "PBS_NODENUM": "0", "PBS_TASKNUM": "1", "PBS_JOBCOOKIE": os.urandom(8).hex(),
                "PBS_MOMPORT": "15003", "PBS_O_HOST": job["Submit_Host"]})
    if "Account_Name" in job:
        env["PBS_ACCOUNT"] = job["Account_Name"]
    if job.get("array_id"):
        env["PBS_ARRAY_INDEX"] = str(job["array_index"])
        env["PBS_ARRAY_ID"] = job["array_id"]
    spool_out, spool_err = os.path.join(spool, f"{job_id}.OU"), os.path.join(spool, f"{job_id}.ER")
    shell = job.get("_shell") or os.environ.get("PBS_SHELL") or "/bin/bash"
    with open(spool_out, "w") as out, open(spool_err, "w") as err:
        proc = subprocess.Popen([shell, script_path], cwd=home, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err if job.get("Join_Path") != "oe" else out,
                                start_new_session=True)
    with locked_state() as state:
        if job_id in state["jobs"]:
            state["jobs"][job_id]["session_id"] = proc.pid
    limit = walltime_seconds(job["Resource_List"]["walltime"]) if "walltime" in job["Resource_List"] else None
    started = time.time()
    term_at = None
    why_end = None  # "walltime" | "deleted"
    kill_delay = job["_kill_delay"]
    while proc.poll() is None:
        time.sleep(0.1)
        now = time.time()
        with locked_state() as state:
            current = state["jobs"].get(job_id)
            if current is not None:
                current["resources_used"] = {"cpupercent": 0, "cput": "00:00:00", "mem": "0kb",
                                             "ncpus": int(ncpus), "vmem": "0kb",
                                             "walltime": hms(int(now - started))}
            delete = current.get("_delete") if current else {"force": True}
            lost = current is None or current.get("_lost")
        if lost:
            _killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        if term_at is None and delete:
            why_end = "deleted"
            term_at = now
            _killpg(proc.pid, signal.SIGKILL if delete.get("force") else signal.SIGTERM)
        elif term_at is None and limit is not None and now - started > limit:
            why_end = "walltime"
            term_at = now
            with open(spool_err, "a") as err:
                err.write(f"=>> PBS: job killed: walltime {int(now - started)} exceeded limit {limit}\n")
            _killpg(proc.pid, signal.SIGTERM)
        elif term_at is not None and now - term_at > kill_delay:
            _killpg(proc.pid, signal.SIGKILL)
    rc = proc.returncode
    _killpg(proc.pid, signal.SIGKILL)  # whatever the job left behind
    exit_status = 256 + (-rc) if rc < 0 else rc  # shell killed by signal s: 256 + s
    if why_end == "walltime":
        exit_status = -29
    with locked_state() as state:
        current = state["jobs"].get(job_id)
        if current is None:
            return
        current.update({"job_state": "E", "substate": 51, "Exit_status": exit_status})
    _deliver(job, job_id, spool_out, spool_err)
    shutil.rmtree(tmpdir, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.unlink(script_path)
    with locked_state() as state:
        current = state["jobs"].get(job_id)
        if current is None:
            return
        comment = current.get("comment", "")
        if why_end == "walltime":
            comment += " and exceeded resource walltime"
            substate = 93
        elif why_end == "deleted":
            comment += f" and terminated by {current['Job_Owner']}"
            substate = 91
        else:
            comment += " and finished" if exit_status == 0 else " and failed"
            substate = 92 if exit_status == 0 else 93
        _finish(state, job_id, {"comment": comment, "substate": substate, "obittime": int(time.time())})


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _finish(state: dict, job_id: str, updates: dict) -> None:
    """Move a job to F (history on) or purge it (history off); update its array parent."""
    job = state["jobs"][job_id]
    job.update(updates)
    job.update({"job_state": "F" if not job.get("array_id") else "X", "mtime": int(time.time())})
    job.pop("_delete", None)
    parent_id = job.get("array_id")
    history = config()["job_history_enable"]
    if not history and not parent_id:
        del state["jobs"][job_id]
    if parent_id and parent_id in state["jobs"]:
        parent = state["jobs"][parent_id]
        subs = [state["jobs"].get(s) for s in parent["_subjobs"]]
        if all(s is None or s["job_state"] in ("X", "F") for s in subs):
            parent.update({"job_state": "F", "substate": 92, "mtime": int(time.time())})
            if not history:
                for s in parent["_subjobs"]:
                    state["jobs"].pop(s, None)
                del state["jobs"][parent_id]


# ------------------------------------------------------------------ qdel (§3, §8.4)
def qdel(argv: list[str]) -> tuple[str, str, int]:
    if argv == ["--version"]:
        return f"pbs_version = {VERSION}\n", "", 0
    try:
        opts, ids = getopt.getopt(argv, "W:x")
    except getopt.GetoptError:
        return "", QDEL_USAGE, 2
    if not ids:
        return "", QDEL_USAGE, 2
    force = any(o == "-W" and v == "force" for o, v in opts)
    purge = any(o == "-x" for o, _ in opts)
    cfg = config()
    errors, code = [], 0
    with locked_state() as state:
        for typed in ids:
            job_id = normalise(typed, cfg["server_name"])
            job = state["jobs"].get(job_id)
            if job is None:
                errors.append(f"qdel: Unknown Job Id {typed}")
                code = 153
                continue
            targets = job.get("_subjobs") or [job_id]
            if job["job_state"] in ("F", "X"):
                if job.get("array_id"):
                    errors.append(f"qdel: Request invalid for finished array subjob {typed}")
                    code = 55
                elif purge:
                    for t in [job_id, *job.get("_subjobs", [])]:
                        state["jobs"].pop(t, None)
                else:
                    errors.append(f"qdel: Job has finished {typed}")
                    code = 35
                continue
            if job["job_state"] == "E" and not force:
                errors.append(f"qdel: Request invalid for state of job {typed}")
                code = 168
                continue
            for t in targets:
                sub = state["jobs"].get(t)
                if sub is None or sub["job_state"] in ("F", "X"):
                    continue
                if sub["job_state"] in ("Q", "H", "W", "T"):
                    comment = sub.get("comment")
                    _finish(state, t, {"substate": 91, **({"comment": comment + " and terminated"}
                                                           if comment else {})})
                else:
                    sub["_delete"] = {"force": force, "time": time.time()}
            if job.get("_subjobs") and job_id in state["jobs"]:
                pass
    return "", "".join(e + "\n" for e in errors), code


# ------------------------------------------------------------------ qstat (§2, §8.3)
def _json_value(value: Any, indent: int) -> str:
    if isinstance(value, dict):
        pad = "    " * (indent + 1)
        items = [f'{pad}"{_esc(k)}":{_json_value(v, indent + 1)}' for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "    " * indent + "}"
    text = str(value)
    # 23.06 typing: a number iff strtod eats it all and no leading 0 unless < 1 (§2.4)
    if re.fullmatch(r"-?(?:0|[1-9]\d*)(?:\.\d+)?|-?0?\.\d+", text.strip()):
        return text.strip()
    return f'"{_esc(text)}"'


def _esc(text: str) -> str:
    # 23.06's JSON_ESCAPE: quotes and control characters, but backslashes left as they are
    return text.replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")


def _public(job: dict, full: bool = True) -> dict:
    out = {}
    for key, value in job.items():
        if key.startswith("_"):
            continue
        if key in ("ctime", "mtime", "qtime", "etime", "stime", "obittime"):
            value = ctime(value)
        out[key] = value
    return out


def _json(jobs: list[tuple[str, dict]], server: str) -> str:
    text = "{\n" + f'    "timestamp":{int(time.time())},\n    "pbs_version":"{VERSION}",\n' \
           f'    "pbs_server":"{server}"'
    if jobs:
        body = {jid: _public(job) for jid, job in jobs}
        text += ',\n    "Jobs":' + _json_value(body, 1) + "\n}\n"
    else:
        text += "\n}"  # closed without a trailing newline when there are no jobs
    return text


def _full_text(job_id: str, job: dict) -> str:
    lines = [f"Job Id: {job_id}"]
    for key, value in _public(job).items():
        if isinstance(value, dict):
            if key == "Variable_List":
                lines.append(f"    {key} = " + ",".join(f"{k}={v}" for k, v in value.items()))
            else:
                lines.extend(f"    {key}.{k} = {v}" for k, v in value.items())
        else:
            lines.append(f"    {key} = {value}")
    wrapped = []
    for line in lines:  # TAB continuation at 78 columns
        while len(line) > 78 and "," in line[:78]:
            cut = line[:78].rindex(",") + 1
            wrapped.append(line[:cut])
            line = "\t" + line[cut:]
        wrapped.append(line)
    return "\n".join(wrapped) + "\n\n"


def _table_row(job_id: str, job: dict) -> str:
    jid = job_id
    parts = jid.split(".")
    if len(parts) > 2:
        jid = ".".join(parts[:2])
    if len(jid) > 17:
        jid = jid[:16] + "*"
    name = job["Job_Name"] if len(job["Job_Name"]) < 16 else job["Job_Name"][:15] + "*"
    user = job["Job_Owner"].split("@")[0]
    user = user if len(user) <= 16 else user[:15] + "*"
    used = (job.get("resources_used") or {}).get("cput", "0")
    queue = job["queue"] if len(job["queue"]) <= 16 else job["queue"][:15] + "*"
    return "%-17s %-16s %-16s  %8s %1s %-16s\n" % (jid, name, user, used, job["job_state"], queue)


TABLE_HEADER = ("Job id            Name             User              Time Use S Queue\n"
                "----------------  ---------------- ----------------  -------- - -----\n")


def qstat(argv: list[str]) -> tuple[str, str, int]:
    if argv == ["--version"]:
        return f"pbs_version = {VERSION}\n", "", 0
    try:
        opts, operands = getopt.getopt(argv, "ainpqrstwxu:fGHJMQEBW:T1F:D:")
    except getopt.GetoptError as exc:
        return "", f"qstat: invalid option -- '{exc.opt}'\n" + QSTAT_USAGE, 2
    flags = {o for o, _ in opts}
    fmt = next((v for o, v in opts if o == "-F"), None)
    full = "-f" in flags
    if fmt is not None and (not full and "-Q" not in flags and "-B" not in flags):
        return "", "qstat: conflicting options.\n" + QSTAT_USAGE, 2
    if fmt is not None and "-w" in flags:
        return "", "qstat: option w cannot be used with -F\n" + QSTAT_USAGE, 2
    if fmt not in (None, "json", "dsv"):
        return "", "qstat: conflicting options.\n" + QSTAT_USAGE, 2
    history = "-x" in flags or "-H" in flags
    subjobs = "-t" in flags
    cfg = config()
    server = cfg["server_name"]
    state = read_state()
    jobs = state["jobs"]
    if "-Q" in flags or "-B" in flags:
        return _qstat_queue_or_server(flags, cfg, jobs), "", 0
    out_jobs: list[tuple[str, dict]] = []
    errors: list[str] = []
    code = 0
    if not operands:
        if history and not cfg["job_history_enable"]:
            errors.append("qstat: PBS is not configured to maintain job history ")
        else:
            for jid, job in jobs.items():
                if job.get("array_id") and not subjobs:
                    continue
                if job["job_state"] in ("F", "X") and not history:
                    continue
                out_jobs.append((jid, job))
    for operand in operands:
        if not operand[:1].isdigit():
            if operand.split("@")[0] and operand.split("@")[0] not in cfg["queues"]:
                errors.append(f"qstat: Unknown queue {operand}")
                code = 170
            continue
        if not re.fullmatch(r"\d+(\[\d*(-\d+)?\])?(\.[\w.-]+)?", operand):
            errors.append(f"qstat: illegally formed job identifier: {operand}")
            code = 1
            continue
        jid = normalise(operand, server)
        if history and not cfg["job_history_enable"]:
            errors.append(f"qstat: PBS is not configured to maintain job history {jid}")
            continue
        job = jobs.get(jid)
        if job is None:
            errors.append(f"qstat: Unknown Job Id {jid}")
            code = 153
            continue
        if job["job_state"] in ("F", "X") and not history:
            errors.append(f"qstat: {jid} Job has finished, use -x or -H to obtain historical job information")
            code = 35
            continue
        out_jobs.append((jid, job))
        if subjobs and job.get("_subjobs"):
            out_jobs.extend((s, jobs[s]) for s in job["_subjobs"] if s in jobs)
    if fmt == "json":
        text = _json(out_jobs, server)
    elif full:
        text = "".join(_full_text(jid, job) for jid, job in out_jobs)
    else:
        text = (TABLE_HEADER if out_jobs else "") + "".join(_table_row(jid, job) for jid, job in out_jobs)
    return text, "".join(e + "\n" for e in errors), code


def _qstat_queue_or_server(flags: set, cfg: dict, jobs: dict) -> str:
    def counts(selected):
        c = {s: 0 for s in "QRHWTE"}
        for j in selected:
            if j["job_state"] in c:
                c[j["job_state"]] += 1
        return c
    live = [j for j in jobs.values() if j["job_state"] not in ("F", "X") and "array_id" not in j]
    if "-B" in flags and "-f" in flags:
        return f"Server: {cfg['server_name']}\n    server_state = Active\n    max_array_size = {cfg['max_array_size']}\n\n"
    if "-B" in flags:
        c = counts(live)
        return ("Server             Max   Tot   Que   Run   Hld   Wat   Trn   Ext Status\n"
                "---------------- ----- ----- ----- ----- ----- ----- ----- ----- -----------\n"
                + "%-16s %5s %5s %5s %5s %5s %5s %5s %5s %-10s\n" % (
                    cfg["server_name"], 0, len(live), c["Q"], c["R"], c["H"], c["W"], c["T"], c["E"], "Active"))
    text = ("Queue              Max   Tot Ena Str   Que   Run   Hld   Wat   Trn   Ext Type\n"
            "---------------- ----- ----- --- --- ----- ----- ----- ----- ----- ----- ----\n")
    for name, q in cfg["queues"].items():
        mine = [j for j in live if j["queue"] == name]
        c = counts(mine)
        ena = "yes" if q.get("enabled", True) else "no"
        text += "%-16s %5s %5s %3s %3s %5s %5s %5s %5s %5s %5s %-4s\n" % (
            name, 0, len(mine), ena, "yes", c["Q"], c["R"], c["H"], c["W"], c["T"], c["E"], "Exe*")
    return text


# ------------------------------------------------------------------ test controls
def hold(job_id: str) -> None:
    """qhold: a queued job goes to H."""
    with locked_state() as state:
        job = state["jobs"][normalise(job_id, config()["server_name"])]
        if job["job_state"] == "Q":
            job.update({"job_state": "H", "Hold_Types": "u", "substate": 20})


def release(job_id: str) -> None:
    """qrls: a held job goes back to Q."""
    with locked_state() as state:
        job = state["jobs"][normalise(job_id, config()["server_name"])]
        if job["job_state"] == "H":
            job.update({"job_state": "Q", "Hold_Types": "n", "substate": 10, "qtime": time.time() - 60})


def lose(job_id: str) -> None:
    """A node failure: the job's processes die and the server forgets the job."""
    with locked_state() as state:
        job = state["jobs"].pop(normalise(job_id, config()["server_name"]), None)
    if job and job.get("session_id"):
        _killpg(job["session_id"], signal.SIGKILL)


def live_jobs() -> list[str]:
    """Ids of jobs not yet finished (for "the queue is empty" checks)."""
    return [jid for jid, job in read_state()["jobs"].items()
            if job["job_state"] not in ("F", "X") and "_subjobs" not in job]


def reset() -> None:
    """Kill every job and forget all state (config kept)."""
    with locked_state() as state:
        for job in state["jobs"].values():
            if job.get("session_id"):
                _killpg(job["session_id"], signal.SIGKILL)
        state["jobs"] = {}


# ------------------------------------------------------------------ entry points
def main(prog: str, argv: list[str]) -> int:
    try:
        if prog == "qsub":
            sys.stdout.write(qsub(argv))
            return 0
        if prog == "_run":
            run_job(argv[0])
            return 0
        out, err, code = {"qstat": qstat, "qdel": qdel}[prog](argv)
        sys.stdout.write(out)
        sys.stderr.write(err)
        return code & 255
    except Exit as exc:
        if exc.message:
            sys.stderr.write(exc.message if exc.message.endswith("\n") else exc.message + "\n")
        return exc.code & 255


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
