"""An IBM Spectrum LSF 10.1 emulator: bsub, bjobs, bkill, written from
../shared/research/lsf-interface.md (section numbers below are that note's), never from
guesses. Jobs run as real local processes.

State lives in $LSFEMU_HOME (default /tmp/lsfemu-<uid>): config.json (queues, slots,
limits, timings), cluster.json (the job table) under a lock, spool/ (job files and output
being written). $LSF_ENVDIR/lsf.conf holds LSF_UNIT_FOR_LIMITS (§1.4, §6: the library reads it).

What it enforces (§7): `bsub < script` reads #BSUB lines anywhere in the script, the command
line wins (§1.3); a script path argument is a command, its #BSUB lines ignored unless
LSB_BSUB_PARSE_SCRIPT=Y (§1.1); every client error exits 255 with "<msg>. Job not
submitted." (§1.5); -W [h:]m (§1.4); arrays are job names "name[1-k]" with
MAX_JOB_ARRAY_SIZE (§2); bjobs with ids shows finished jobs for CLEAN_PERIOD, then
"Job <N> is not found" and exit 255 while still printing the others (§3.2, §3.5); -o/-json
(§3.6); bkill messages and exit codes, SIGINT -> SIGTERM -> SIGKILL JOB_TERMINATE_INTERVAL
apart (§4); SIGUSR2 at the run limit, killed WARN_TIME later, exit 140 (§5.2); environment
LSB_JOBID/LSB_JOBINDEX/LSB_HOSTS... (§5.1); output appended at the end with %J/%I (§1.4).
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

HOME = os.environ.get("LSFEMU_HOME") or f"/tmp/lsfemu-{os.getuid()}"
NOT_SUBMITTED = "Job not submitted."

DEFAULT_CONFIG: dict[str, Any] = {
    "cluster_name": "lsfemu",
    "default_queue": "normal",
    # queue -> {"open": bool, "runlimit_minutes": int|None}
    "queues": {"normal": {"open": True, "runlimit_minutes": None}, "short": {"open": True, "runlimit_minutes": 60}},
    "slots": 64,                  # slots of the one emulated host
    "host": socket.gethostname().split(".")[0],
    "clean_period": 3600,         # §3.2 CLEAN_PERIOD
    "job_terminate_interval": 10,  # §4 JOB_TERMINATE_INTERVAL
    "warn_time": 600,             # §5.2 WARN_TIME after SIGUSR2
    "max_job_array_size": 1000,   # §2 MAX_JOB_ARRAY_SIZE
    "sched_latency": 0.2,
    "parse_script": False,        # §1.1 LSB_BSUB_PARSE_SCRIPT
    "unit_for_limits": "MB",      # §1.4 LSF_UNIT_FOR_LIMITS (written to lsf.conf)
}


class Exit(Exception):
    def __init__(self, message: str, code: int = 255):
        super().__init__(message)
        self.message, self.code = message, code


# ------------------------------------------------------------------ state
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
    write_lsf_conf()


def write_lsf_conf() -> str:
    """$LSF_ENVDIR/lsf.conf with LSF_UNIT_FOR_LIMITS, so the library and bsub agree (§6)."""
    envdir = os.environ.get("LSF_ENVDIR") or os.path.join(HOME, "conf")
    os.makedirs(envdir, exist_ok=True)
    with open(os.path.join(envdir, "lsf.conf"), "w") as f:
        f.write(f"LSF_UNIT_FOR_LIMITS={config()['unit_for_limits']}\nLSB_JOB_MEMLIMIT=N\n")
    return envdir


@contextlib.contextmanager
def locked_state():
    os.makedirs(os.path.join(HOME, "spool"), exist_ok=True)
    with open(os.path.join(HOME, "cluster.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = os.path.join(HOME, "cluster.json")
        try:
            with open(path) as f:
                state = json.load(f)
        except (FileNotFoundError, ValueError):
            state = {"next_id": 100, "jobs": {}}
        _purge(state)
        yield state
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, path)


def read_state() -> dict:
    with locked_state() as state:
        return json.loads(json.dumps(state))


def _purge(state: dict) -> None:
    """Finished jobs leave mbatchd's memory CLEAN_PERIOD after they end (§3.2)."""
    period = config()["clean_period"]
    now = time.time()
    for key in [k for k, j in state["jobs"].items() if j["stat"] in ("DONE", "EXIT") and now - j["end"] > period]:
        del state["jobs"][key]


def key_of(jobid: int | str, index: int) -> str:
    return f"{jobid}[{index}]" if index else str(jobid)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


# ------------------------------------------------------------------ bsub (§1, §2)
BSUB_OPTS = {"-J": 1, "-q": 1, "-P": 1, "-n": 1, "-R": 1, "-M": 1, "-W": 1, "-o": 1, "-e": 1, "-oo": 1, "-eo": 1,
             "-u": 1, "-cwd": 1, "-env": 1, "-gpu": 1, "-H": 0, "-x": 0, "-N": 0, "-B": 0, "-K": 0}


def _parse_options(words: list[str], where: str) -> tuple[dict, list[str]]:
    """Options in bsub's table (§1.3: the same for the command line and #BSUB lines)."""
    opts: dict[str, Any] = {}
    i = 0
    while i < len(words) and words[i].startswith("-"):
        word = words[i]
        if word not in BSUB_OPTS:
            raise Exit(f"bsub: illegal option -- {word.lstrip('-')}\nUsage: bsub [options] command [arguments]. "
                       + NOT_SUBMITTED)
        if BSUB_OPTS[word]:
            if i + 1 >= len(words):
                raise Exit(f"bsub: option requires an argument -- {word.lstrip('-')}. {NOT_SUBMITTED}")
            if word == "-R":
                opts.setdefault("-R", []).append(words[i + 1])
            else:
                opts[word] = words[i + 1]
            i += 2
        else:
            opts[word] = True
            i += 1
    return opts, words[i:]


def _directives(script: str) -> list[str]:
    """The words of every #BSUB line (§1.3): any line of the script, "#" + spaces + "BSUB" +
    spaces + "-", quotes respected, a word starting with "#" ends it, "\\" continues it."""
    words: list[str] = []
    lines = script.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        while line.endswith("\\") and i + 1 < len(lines) and re.match(r"#\s*BSUB", line):
            i += 1
            line = line[:-1] + " " + lines[i].strip()
        i += 1
        m = re.match(r"#\s*BSUB\s+(-.*)$", line)
        if not m:
            continue
        try:
            parts = shlex.split(m.group(1), comments=False)
        except ValueError:
            raise Exit(f"Bad argument. {NOT_SUBMITTED}") from None
        for part in parts:
            if part.startswith("#"):
                break
            words.append(part)
    return words


def _memory_kb(value: str, unit: str) -> int:
    """-M: an integer in LSF_UNIT_FOR_LIMITS, or with a unit suffix, optional "!" (§1.4)."""
    m = re.fullmatch(r"(\d+)([KMGTPEZ]B?)?(!)?", value.strip(), re.I)
    if not m:
        raise Exit(f"{value}: MEMLIMT value should be a positive integer. {NOT_SUBMITTED}")
    scale = {"K": 1, "M": 1024, "G": 1024 ** 2, "T": 1024 ** 3, "P": 1024 ** 4, "E": 1024 ** 5, "Z": 1024 ** 6}
    return int(m.group(1)) * scale[(m.group(2) or unit)[0].upper()]


def bsub(argv: list[str], stdin_text: str | None) -> tuple[str, str]:
    cfg = config()
    cli, rest = _parse_options(argv, "command line")
    if rest:  # a command (§1.1): #BSUB lines of a script path only with LSB_BSUB_PARSE_SCRIPT=Y
        command = rest
        script = None
        if cfg["parse_script"] and os.path.isfile(rest[0]):
            with open(rest[0]) as f:
                script = f.read()
    else:
        if stdin_text is None:
            raise Exit(f"No command is specified in the script file. {NOT_SUBMITTED}")
        script, command = stdin_text, None
        if not any(line.strip() and not line.strip().startswith("#") for line in script.splitlines()):
            raise Exit(f"No command is specified in the script file. {NOT_SUBMITTED}")
    opts: dict[str, Any] = {}
    if script is not None:
        embedded, _ = _parse_options(_directives(script), "script")
        opts.update(embedded)
    opts.update(cli)  # §1.3: the command line wins
    queue = opts.get("-q") or cfg["default_queue"]
    qcfg = cfg["queues"].get(queue)
    if qcfg is None:
        raise Exit(f"{queue}: No such queue. {NOT_SUBMITTED}")
    if not qcfg.get("open", True):
        raise Exit(f"{queue}: Queue has been closed. {NOT_SUBMITTED}")
    runlimit = None
    if "-W" in opts:
        m = re.fullmatch(r"(?:(\d+):)?(\d+)", opts["-W"].split("/")[0])
        if not m:
            raise Exit(f"{opts['-W']}: Bad RUNLIMIT specification. {NOT_SUBMITTED}")
        runlimit = (int(m.group(1) or 0) * 60 + int(m.group(2))) * 60
        if qcfg.get("runlimit_minutes") and runlimit > qcfg["runlimit_minutes"] * 60:
            raise Exit(f"RUNLIMIT: Cannot exceed queue's hard limit(s). {NOT_SUBMITTED}")
    if "-M" in opts:
        _memory_kb(opts["-M"], cfg["unit_for_limits"])
    slots = 1
    if "-n" in opts:
        m = re.fullmatch(r"(\d+)(?:,(\d+))?", opts["-n"])
        if not m or int(m.group(1)) < 1:
            raise Exit(f"{opts['-n']}: Bad argument. {NOT_SUBMITTED}")
        slots = int(m.group(1))
    for req in opts.get("-R", []):
        if req.count("[") != req.count("]"):
            raise Exit(f"Bad resource requirement syntax. {NOT_SUBMITTED}")
    name = opts.get("-J") or (" ".join(command) if command else "STDIN")
    indices = [0]
    m = re.fullmatch(r"(.*)\[([\d,:\-]+)\](?:%\d+)?", name)
    if m and opts.get("-J"):
        indices = []
        for part in m.group(2).split(","):
            r = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
            if not r or int(r.group(1)) < 1:
                raise Exit(f"Job array index error. {NOT_SUBMITTED}")
            indices += range(int(r.group(1)), int(r.group(2) or r.group(1)) + 1, int(r.group(3) or 1))
        if len(indices) > cfg["max_job_array_size"] or max(indices) > cfg["max_job_array_size"]:
            raise Exit(f"Job array index too large. {NOT_SUBMITTED}")
    env = dict(os.environ)  # §5.1: the submission environment goes with the job, unless -env says
    if opts.get("-env"):
        items = [i.strip() for i in opts["-env"].split(",") if i.strip()]
        if items and items[0].lower() == "none":
            env = {k: v for k, v in env.items() if k in ("PATH", "HOME", "USER", "LOGNAME", "SHELL")}
        env.update(dict(i.split("=", 1) for i in items if "=" in i))
    now = time.time()
    with locked_state() as state:
        jobid = state["next_id"]
        state["next_id"] += 1
        for index in indices:
            state["jobs"][key_of(jobid, index)] = {
                "jobid": jobid, "index": index, "name": name if not index else f"{m.group(1)}[{index}]",
                "array_name": name, "user": _user(), "queue": queue, "stat": "PSUSP" if opts.get("-H") else "PEND",
                "pend_reason": ("The job was suspended by the user while pending;" if opts.get("-H")
                                else "New job is waiting for scheduling;"),
                "slots": slots, "runlimit": runlimit, "submit": now, "start": None, "end": None,
                "exit_code": None, "cwd": opts.get("-cwd") or os.getcwd(), "out": opts.get("-o") or opts.get("-oo"),
                "err": opts.get("-e") or opts.get("-eo"), "project": opts.get("-P", "default"),
                "script": script if command is None else None, "command": command, "env": env, "pid": None,
                "kill": None,
            }
    for index in indices:
        subprocess.Popen([sys.executable, os.path.abspath(__file__), "run", key_of(jobid, index)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, env=dict(os.environ, LSFEMU_HOME=HOME))
    where = f"queue <{queue}>" if "-q" in opts else f"default queue <{queue}>"
    line = f"Job <{jobid}> is submitted to {where}.\n"
    if os.environ.get("BSUB_QUIET"):
        return "", ""
    if os.environ.get("BSUB_STDERR"):
        return "", line
    return line, ""


# ------------------------------------------------------------------ running (§5)
def _expand(path: str, job: dict) -> str:
    path = path.replace("%J", str(job["jobid"])).replace("%I", str(job["index"]))
    if path.endswith("/"):
        return os.path.join(path, f"{job['jobid']}")
    return path if os.path.isabs(path) else os.path.join(job["cwd"], path)


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def run_job(key: str) -> None:
    cfg = config()
    while True:  # pending: wait for free slots
        time.sleep(0.1)
        with locked_state() as state:
            job = state["jobs"].get(key)
            if job is None or job["stat"] in ("DONE", "EXIT"):
                return
            if job["stat"] != "PEND" or time.time() - job["submit"] < cfg["sched_latency"]:
                continue
            used = sum(j["slots"] for j in state["jobs"].values() if j["stat"] in ("RUN", "USUSP", "SSUSP"))
            if used + job["slots"] > cfg["slots"]:
                job["pend_reason"] = "Job slot limit reached;"
                continue
            job.update({"stat": "RUN", "start": time.time(), "pend_reason": ""})
            break
    spool = os.path.join(HOME, "spool")
    out_spool, err_spool = os.path.join(spool, f"{key}.out"), os.path.join(spool, f"{key}.err")
    env = dict(job["env"])
    hosts = " ".join([cfg["host"]] * job["slots"])
    env.update({"LSB_JOBID": str(job["jobid"]), "LSB_JOBINDEX": str(job["index"]), "LSB_JOBNAME": job["array_name"],
                "LSB_QUEUE": job["queue"], "LSB_HOSTS": hosts, "LSB_MCPU_HOSTS": f"{cfg['host']} {job['slots']}",
                "LSB_DJOB_NUMPROC": str(job["slots"]), "LS_SUBCWD": job["cwd"], "LSFUSER": job["user"]})
    if job["out"]:
        env["LSB_OUTPUTFILE"] = _expand(job["out"], job)
    if job["err"]:
        env["LSB_ERRORFILE"] = _expand(job["err"], job)
    if job["script"] is not None:  # the spooled script, run by its own #! line (§1.3)
        path = os.path.join(spool, f"{key}.shell")
        with open(path, "w") as f:
            f.write(job["script"])
        os.chmod(path, 0o700)
        argv = [path] if job["script"].startswith("#!") else ["/bin/sh", path]
    else:
        argv = ["/bin/sh", "-c", " ".join(shlex.quote(a) for a in job["command"])]
    cwd = job["cwd"] if os.path.isdir(job["cwd"]) else "/tmp"
    # the job starts with default signal dispositions, as under LSF's daemons: a SIGINT ignored by
    # whoever started this emulator (a shell's background job) would make the job's trap on it void
    for signum in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)
    with open(out_spool, "w") as out, open(err_spool, "w") as err:
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err if job["err"] or not job["out"] else out, start_new_session=True)
        except OSError as exc:
            err.write(f"{argv[0]}: {exc.strerror}\n")
            proc = None
    if proc is not None:
        with locked_state() as state:
            if key in state["jobs"]:
                state["jobs"][key]["pid"] = proc.pid
    warned = killing = None
    reason = None
    sent: list = []  # the kill sequence's later signals, each sent once
    while proc is not None and proc.poll() is None:
        time.sleep(0.1)
        now = time.time()
        with locked_state() as state:
            current = state["jobs"].get(key) or {"kill": time.time()}
            kill, runlimit = current.get("kill"), current.get("runlimit")
        if kill and killing is None:  # bkill (§4): SIGINT, then SIGTERM, then SIGKILL
            killing, reason = now, "TERM_OWNER"
            _killpg(proc.pid, signal.SIGINT)
        if killing is None and runlimit and now - job["start"] > runlimit and warned is None:
            warned = now  # §5.2: SIGUSR2 at the run limit, the kill sequence WARN_TIME later
            reason = "TERM_RUNLIMIT"
            _killpg(proc.pid, signal.SIGUSR2)
        if killing is None and warned is not None and now - warned > cfg["warn_time"]:
            killing = now
            _killpg(proc.pid, signal.SIGINT)
        if killing is not None:
            step = cfg["job_terminate_interval"]
            due = [sig for n, sig in ((1, signal.SIGTERM), (2, signal.SIGKILL)) if now - killing > n * step]
            for sig in due[len(sent):]:
                sent.append(sig)
                _killpg(proc.pid, sig)
    rc = 127 if proc is None else proc.returncode
    if proc is not None:
        _killpg(proc.pid, signal.SIGKILL)  # whatever the job left behind
    code = 128 - rc if rc < 0 else rc  # killed by signal N: 128+N
    _deliver(job, out_spool, err_spool, code)
    with locked_state() as state:
        current = state["jobs"].get(key)
        if current is not None:
            current.update({"stat": "DONE" if code == 0 else "EXIT", "exit_code": code, "end": time.time(),
                            "exit_reason": reason or "", "pid": None})


def _deliver(job: dict, out_spool: str, err_spool: str, code: int) -> None:
    """Output appended to -o/-e at the end, with the job report in the -o file (§1.4, §5.3);
    without -o the output would be mailed: dropped here."""
    report = ("\n------------------------------------------------------------\nSender: LSF System\n"
              f"Subject: Job {job['jobid']}: <{job['name']}> "
              + ("Done\n\nSuccessfully completed.\n" if code == 0 else f"Exited\n\nExited with exit code {code}.\n"))
    pairs = []
    if job["out"]:
        pairs.append((out_spool, _expand(job["out"], job), report))
    if job["err"]:
        pairs.append((err_spool, _expand(job["err"], job), ""))
    for src, dst, tail in pairs:
        with contextlib.suppress(OSError):
            with open(src) as f, open(dst, "a") as g:
                g.write(f.read() + tail)
    for src in (out_spool, err_spool):
        with contextlib.suppress(OSError):
            os.unlink(src)


# ------------------------------------------------------------------ bjobs (§3)
def _select(state: dict, ids: list[str]) -> tuple[list[dict], list[str]]:
    jobs, missing = [], []
    for typed in ids:
        m = re.fullmatch(r"(\d+)(?:\[(\d+)\])?", typed)
        found = [] if not m else [j for j in state["jobs"].values() if str(j["jobid"]) == m.group(1)
                                  and (m.group(2) is None or j["index"] == int(m.group(2)))]
        if found:
            jobs += found
        else:
            missing.append(typed)
    return jobs, missing


def _field(job: dict, name: str) -> str:
    value = {"jobid": job["jobid"], "jobindex": job["index"], "stat": job["stat"], "user": job["user"],
             "queue": job["queue"], "job_name": job["name"], "proj_name": job["project"],
             "exit_code": job["exit_code"] if job["exit_code"] else "", "pend_reason": job["pend_reason"],
             "exit_reason": job.get("exit_reason", ""), "kill_reason": "", "suspend_reason": "",
             "exec_host": job and (f"{job['slots']}*{config()['host']}" if job["start"] else ""),
             "output_file": job["out"] or "", "error_file": job["err"] or "",
             "submit_time": time.strftime("%b %d %H:%M", time.localtime(job["submit"]))}.get(name.lower(), "")
    return str(value)


def bjobs(argv: list[str]) -> tuple[str, str, int]:
    flags, ids, fmt, name_filter, i = set(), [], None, None, 0
    while i < len(argv):
        a = argv[i]
        if a in ("-o", "-J", "-u", "-q"):
            if a == "-o":
                fmt = argv[i + 1]
            elif a == "-J":
                name_filter = argv[i + 1]
            i += 2
            continue
        if a.startswith("-"):
            flags.add(a)
        else:
            ids.append(a)
        i += 1
    if "-json" in flags and fmt is None:
        return "", "bjobs: The -json option must be used with the -o option.\n", 255
    if "-json" in flags and "-noheader" in flags:
        return "", "bjobs: The -json option cannot be used with -noheader.\n", 255
    state = read_state()
    errors: list[str] = []
    if ids:
        jobs, missing = _select(state, ids)  # with ids: every state (§3.1)
        errors = [f"Job <{m}> is not found" for m in missing]
    else:
        jobs = [j for j in state["jobs"].values() if j["user"] == _user()
                and ("-a" in flags or j["stat"] not in ("DONE", "EXIT"))]
    if name_filter is not None:
        pattern = re.escape(name_filter).replace(r"\*", ".*")
        jobs = [j for j in jobs if re.fullmatch(pattern, j["name"]) or re.fullmatch(pattern, j["array_name"])
                or re.fullmatch(pattern, j["array_name"].split("[")[0])]
    jobs.sort(key=lambda j: (j["jobid"], j["index"]))
    if not jobs and not ids:
        return "", ("No job found\n" if "-a" in flags else "No unfinished job found\n"), 255
    out = ""
    if fmt is not None:
        m = re.search(r"delimiter='(.)'", fmt)
        delim = m.group(1) if m else " "
        fields = [f.split(":")[0] for f in re.sub(r"delimiter='.'", "", fmt).split()]
        if "-json" in flags:
            records = [{f.upper(): _field(j, f) for f in fields} for j in jobs]
            records += [{"JOBID": e.split("<")[1].split(">")[0], "ERROR": e} for e in errors]
            out = json.dumps({"COMMAND": "bjobs", "JOBS": len(records), "RECORDS": records}, indent=2) + "\n"
        else:
            if "-noheader" not in flags:
                out += delim.join(f.upper() for f in fields) + "\n"
            for j in jobs:
                out += delim.join(_field(j, f) or "-" for f in fields) + "\n"
    else:
        if jobs and "-noheader" not in flags:
            out += "JOBID   USER    STAT  QUEUE      FROM_HOST   EXEC_HOST   JOB_NAME   SUBMIT_TIME\n"
        for j in jobs:
            host = config()["host"]
            out += "%-7d %-7.7s %-5.5s %-10.10s %-11.11s %-11.11s %-10.10s %-14.14s\n" % (
                j["jobid"], j["user"], j["stat"], j["queue"], host, host if j["start"] else "",
                j["name"], _field(j, "submit_time"))
    return out, "".join(e + "\n" for e in errors), 255 if errors else 0


# ------------------------------------------------------------------ bkill (§4)
def bkill(argv: list[str]) -> tuple[str, str, int]:
    ids, name = [], None
    i = 0
    while i < len(argv):
        if argv[i] == "-J":
            name = argv[i + 1]
            i += 2
            continue
        ids.append(argv[i])
        i += 1
    if not ids and name is None:
        return "", ("Job ID or one of '-m', '-u' '-q' -'g' and '-J' must be specified\n"
                    "Usage: bkill [-h] [-V] [-l] [-m host_name] [-q queue_name] [-J job_name] [jobId ...]\n"), 255
    out, err, failed = [], [], False
    with locked_state() as state:
        if name is not None:
            targets = [j for j in state["jobs"].values() if j["user"] == _user() and j["stat"] not in ("DONE", "EXIT")
                       and (j["array_name"] == name or j["array_name"].split("[")[0] == name)]
            if not targets:
                err.append("No matching job found")
                failed = True
            groups = [(key_of(j["jobid"], j["index"]), [j]) for j in targets]
        else:
            groups = []
            for typed in ids:
                found, _ = _select(state, [typed])
                groups.append((typed, found))
        for typed, found in groups:
            if not found:
                err.append(f"Job <{typed}>: No matching job found")
                failed = True
                continue
            for job in found:
                label = key_of(job["jobid"], job["index"])
                if job["stat"] in ("DONE", "EXIT"):
                    err.append(f"Job <{label}>: Job has already finished")
                    failed = True
                    continue
                if job["stat"] in ("PEND", "PSUSP"):  # removed at once (§4)
                    job.update({"stat": "EXIT", "exit_code": 130, "end": time.time(), "exit_reason": "TERM_OWNER"})
                else:
                    job["kill"] = time.time()
                out.append(f"Job <{label}> is being terminated")
    return "".join(o + "\n" for o in out), "".join(e + "\n" for e in err), 255 if failed else 0


# ------------------------------------------------------------------ test controls
def live_jobs() -> list[str]:
    return [k for k, j in read_state()["jobs"].items() if j["stat"] not in ("DONE", "EXIT")]


def reset() -> None:
    with locked_state() as state:
        for job in state["jobs"].values():
            if job.get("pid"):
                _killpg(job["pid"], signal.SIGKILL)
        state["jobs"] = {}


def main(prog: str, argv: list[str]) -> int:
    try:
        if prog == "bsub":
            stdin_text = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
            out, err = bsub(argv, stdin_text)
            code = 0
        elif prog == "bjobs":
            out, err, code = bjobs(argv)
        elif prog == "bkill":
            out, err, code = bkill(argv)
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
