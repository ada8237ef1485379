"""An HTCondor 25.0 emulator: condor_submit, condor_q, condor_history, condor_rm, written from
../shared/research/htcondor-interface.md (section numbers below are that note's), never from
guesses. Jobs run as real local processes.

State lives in $HTCEMU_HOME (default /tmp/htcemu-<uid>): config.json (slots, timings),
schedd.json (the queue and the history) under a lock.

What it enforces (§5): a submit description (key = value, case-insensitive, comments, "\\"
continuation, macros $(ClusterId) $(ProcId) $(Process) $(JobId), $F(...) stripping quotes,
user macros, MY.x / +x attributes, `queue [N]`), read from a file or from stdin (§1.1-§1.3);
"Submitting job(s)." and "N job(s) submitted to cluster C." (or -terse, or -verbose without
the summary) (§1.2); errors with "ERROR:" and exit 1, unused keys warned about (§1.4); job
status codes 1/2/3/4/5 (§2.1); ended jobs leave condor_q (empty output, exit 0) for
condor_history (§2.2, §2.4, §2.6); -af[:j] and -json (§2.3, §2.5); condor_rm's texts and exit
codes, SIGTERM then SIGKILL after KILLING_TIMEOUT (§3, §4.3); the job's environment is not
the submitter's (§4.1); allowed_job_duration holds the job with HoldReasonCode 46 (§4.2).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

HOME = os.environ.get("HTCEMU_HOME") or f"/tmp/htcemu-{os.getuid()}"
DEFAULT_CONFIG: dict[str, Any] = {"cpus": 64, "negotiator_interval": 0.3, "killing_timeout": 30}
KNOWN = {"hold", "executable", "arguments", "args", "output", "error", "log", "queue", "batch_name", "requestcpus",
         "request_cpus", "requestmemory", "request_memory", "requestdisk", "request_disk", "stream_output",
         "stream_error", "universe", "getenv", "environment", "initialdir", "allowed_job_duration",
         "should_transfer_files", "when_to_transfer_output", "transfer_executable", "requirements", "leave_in_queue", "periodic_remove"}


class Exit(Exception):
    def __init__(self, message: str, code: int = 1, stdout: str = ""):
        super().__init__(message)
        self.message, self.code, self.stdout = message, code, stdout


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
    with open(os.path.join(HOME, "schedd.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = os.path.join(HOME, "schedd.json")
        try:
            with open(path) as f:
                state = json.load(f)
        except (FileNotFoundError, ValueError):
            state = {"next_cluster": 100, "queue": {}, "history": []}
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


# ------------------------------------------------------------------ condor_submit (§1)
def _lines(text: str) -> list[str]:
    out, pending = [], ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _expand(value: str, macros: dict[str, str], depth: int = 0) -> str:
    """$(X), $F(X) (a filename: quotes stripped), case-insensitive (§1.3)."""
    if depth > 10:
        return value

    def one(m: re.Match) -> str:
        func, name = m.group(1), m.group(2)
        found = macros.get(name.lower())
        if found is None:
            return m.group(0) if name.lower().startswith(("my.", "+")) else ""
        found = _expand(found, macros, depth + 1)
        return found.strip('"') if func == "F" else found

    return re.sub(r"\$(F?)\(([\w.+]+)\)", one, value)


def _arguments(value: str) -> list[str]:
    """The new syntax (§1.1): the whole value in double quotes, "" and '' escapes, single quotes
    group words with spaces."""
    value = value.strip()
    if not (value.startswith('"') and value.endswith('"')):
        return value.split()
    text = value[1:-1].replace('""', '"')
    args, cur, quoted, i, have = [], "", False, 0, False
    while i < len(text):
        c = text[i]
        if c == "'":
            if quoted and text[i + 1:i + 2] == "'":
                cur += "'"
                i += 2
                continue
            quoted, have = not quoted, True
        elif c == " " and not quoted:
            if cur or have:
                args.append(cur)
            cur, have = "", False
        else:
            cur += c
        i += 1
    if cur or have:
        args.append(cur)
    return args


def condor_submit(argv: list[str], stdin_text: str | None) -> tuple[str, str]:
    terse = verbose = False
    files, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-") and a != "-":
            if "-terse".startswith(a) and len(a) >= 4:
                terse = True
            elif "-verbose".startswith(a):
                verbose = True
            elif a in ("-name", "-pool", "-batch-name"):
                i += 1
            i += 1
            continue
        files.append(a)
        i += 1
    where = "(stdin)"
    if files and files[0] != "-":
        try:
            with open(files[0]) as f:
                text = f.read()
            where = files[0]
        except OSError as exc:
            raise Exit(f"\nERROR: Failed to open command file ({files[0]}) ({exc.strerror})") from None
    else:
        if files and files[0] == "-" and not terse:
            verbose = True  # §1.2: an explicit "-" implies -verbose
        text = stdin_text or ""
    macros: dict[str, str] = {}
    commands: list[tuple[str, str]] = []
    count = None
    for line in _lines(text):
        m = re.fullmatch(r"queue(?:\s+(\d+))?", line, re.I)
        if m:
            count = int(m.group(1) or 1)
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise Exit(f"\nERROR: on Line 1 of {where}: Illegal Line in submit file: {line}\n"
                       f"\nERROR: Failed to parse command file (line 1).", stdout="Submitting job(s)")
        key, value = key.strip(), value.strip()
        commands.append((key, value))
        macros[key.lower()] = value
        if key.lower().startswith(("my.", "+")):
            macros["my." + key.lower().lstrip("+").split(".", 1)[-1]] = value
    if count is None:
        raise Exit(f"\nERROR: \"{where}\" doesn't contain any \"queue\" commands -- no jobs queued",
                   stdout="Submitting job(s)")
    if "executable" not in macros:
        raise Exit("\nERROR: No 'executable' parameter was provided", stdout="Submitting job(s)")
    for key, value in commands:  # custom attributes are ClassAd expressions (§1.3, §1.4)
        if key.lower().startswith(("my.", "+")) and (value.count("(") != value.count(")") or value.count('"') % 2):
            raise Exit(f"\nERROR: Parse error in expression: \n\t{key} = {value}\n\t", stdout="Submitting job(s)")
    unused = [f"{k} = {v}" for k, v in commands if k.lower() not in KNOWN and not k.lower().startswith(("my.", "+"))
              and not re.search(rf"\$F?\({re.escape(k)}\)", text, re.I)]
    now = time.time()
    with locked_state() as state:
        cluster = state["next_cluster"]
        state["next_cluster"] += 1
        for proc in range(count):
            m = dict(macros, clusterid=str(cluster), cluster=str(cluster), procid=str(proc), process=str(proc),
                     jobid=f"{cluster}.{proc}")
            held = macros.get("hold", "").lower() == "true"  # submitted on hold: code 15 (§2.1)
            ad = {"ClusterId": cluster, "ProcId": proc, "JobStatus": 5 if held else 1, "Owner": _user(), "QDate": int(now),
                  "EnteredCurrentStatus": int(now), "Cmd": _expand(macros["executable"], m),
                  "Args": _arguments(_expand(macros.get("arguments", macros.get("args", "")), m)),
                  "Out": _expand(macros.get("output", "/dev/null"), m), "Err": _expand(macros.get("error", "/dev/null"),
                                                                                       m),
                  "Iwd": _expand(macros.get("initialdir", os.getcwd()), m),
                  "Environment": _arguments(_expand(macros["environment"], m)) if "environment" in macros else [],
                  "GetEnv": macros.get("getenv", "").lower() == "true", "JobBatchName": macros.get("batch_name"),
                  "AllowedJobDuration": int(macros["allowed_job_duration"])
                  if macros.get("allowed_job_duration", "").isdigit() else None, "pid": None, "remove": None,
                  **({"HoldReasonCode": 15, "HoldReason": "submitted on hold"} if held else {})}
            for key, value in commands:
                if key.lower().startswith(("my.", "+")):
                    ad[key.split(".", 1)[1] if "." in key else key.lstrip("+")] = _expand(value, m).strip('"')
            state["queue"][f"{cluster}.{proc}"] = ad
    for proc in range(count):
        subprocess.Popen([sys.executable, os.path.abspath(__file__), "run", f"{cluster}.{proc}"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, env=dict(os.environ, HTCEMU_HOME=HOME))
    err = "".join(f"\nWARNING: the line '{line}' was unused by condor_submit. Is it a typo?\n" for line in unused)
    if terse:
        return f"{cluster}.0 - {cluster}.{count - 1}\n", err
    if verbose:
        return "".join(f"\n** Proc {cluster}.{p}:\nClusterId = {cluster}\nProcId = {p}\n" for p in range(count)), err
    return f"Submitting job(s){'.' * count}\n{count} job(s) submitted to cluster {cluster}.\n", err


# ------------------------------------------------------------------ running (§4)
def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _leave(state: dict, job_id: str, **updates: Any) -> None:
    """A job that completed or was removed leaves the queue for the history (§2.2)."""
    ad = state["queue"].pop(job_id, None)
    if ad is not None:
        ad.update(updates, EnteredCurrentStatus=int(time.time()), CompletionDate=int(time.time()))
        state["history"].insert(0, ad)


def run_job(job_id: str) -> None:
    cfg = config()
    while True:
        time.sleep(0.1)
        with locked_state() as state:
            ad = state["queue"].get(job_id)
            if ad is None or ad["JobStatus"] != 1:
                return
            if time.time() - ad["QDate"] < cfg["negotiator_interval"]:
                continue
            ad.update(JobStatus=2, EnteredCurrentStatus=int(time.time()), JobStartDate=int(time.time()))
            break
    iwd = ad["Iwd"]
    scratch = os.path.join(HOME, "execute", f"dir_{job_id}")
    os.makedirs(scratch, exist_ok=True)
    cpus = str(ad.get("DaskWorkerCores", 1))
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.path.expanduser("~"), "_CONDOR_SCRATCH_DIR": scratch,
           "TMPDIR": scratch, "TMP": scratch, "TEMP": scratch, "_CONDOR_SLOT": "slot1_1", "BATCH_SYSTEM": "HTCondor",
           "_CONDOR_JOB_IWD": iwd, "OMP_NUM_THREADS": cpus, "MKL_NUM_THREADS": cpus, "OPENBLAS_NUM_THREADS": cpus}
    if ad.get("GetEnv"):  # §1.3: getenv copies the submitter's environment (not kept here: the emulator's)
        env = {**os.environ, **env}
    env.update(item.split("=", 1) for item in ad.get("Environment", []) if "=" in item)

    def path(p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(iwd, p)

    with open(path(ad["Out"]), "a") as out, open(path(ad["Err"]), "a") as err:
        proc = subprocess.Popen([ad["Cmd"], *ad["Args"]], cwd=iwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, start_new_session=True)
    with locked_state() as state:
        if job_id in state["queue"]:
            state["queue"][job_id]["pid"] = proc.pid
    started, term_at, held = time.time(), None, False
    while proc.poll() is None:
        time.sleep(0.1)
        with locked_state() as state:
            current = state["queue"].get(job_id) or {"remove": time.time()}
            remove = current.get("remove")
            limit = current.get("AllowedJobDuration")
            if limit and not held and time.time() - started > limit:  # §4.2: held, code 46
                held = True
                current.update(JobStatus=5, HoldReasonCode=46, HoldReasonSubCode=0, EnteredCurrentStatus=int(time.time()),
                               HoldReason=f"The job exceeded allowed job duration of {limit} seconds")
        if (remove or held) and term_at is None:  # §4.3: SIGTERM, SIGKILL after KILLING_TIMEOUT
            term_at = time.time()
            _killpg(proc.pid, signal.SIGTERM)
        elif term_at is not None and time.time() - term_at > cfg["killing_timeout"]:
            _killpg(proc.pid, signal.SIGKILL)
    _killpg(proc.pid, signal.SIGKILL)
    rc = proc.returncode
    with locked_state() as state:
        current = state["queue"].get(job_id)
        if current is None:
            return
        if current.get("remove"):
            _leave(state, job_id, JobStatus=3, RemoveReason=f"via condor_rm (by user {_user()})", pid=None)
        elif held:
            current["pid"] = None  # stays in the queue, held, until removed (§2.2)
        else:
            _leave(state, job_id, JobStatus=4, ExitBySignal=rc < 0, ExitSignal=-rc if rc < 0 else None,
                   ExitCode=rc if rc >= 0 else None, pid=None)


# ------------------------------------------------------------------ condor_q / condor_history (§2)
def _value(ad: dict, attr: str) -> Any:
    for key, value in ad.items():
        if key.lower() == attr.lower():
            return value
    return None


def _render(ad: dict, attr: str) -> str:
    value = _value(ad, attr)
    if value is None:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(value)
    return str(value)


def _query(argv: list[str], ads: list[dict]) -> tuple[str, str, int]:
    ids, attrs, qualifiers, as_json, i = [], [], "", False, 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-af") or a.startswith("-autoformat"):
            qualifiers = a.split(":", 1)[1] if ":" in a else ""
            i += 1
            while i < len(argv) and not argv[i].startswith("-"):
                attrs.append(argv[i])
                i += 1
            if not attrs:
                return "", "Error: -autoformat requires at least one attribute parameter\n", 1
            continue
        if a == "-json":
            as_json = True
        elif a.startswith("-"):
            pass
        elif re.fullmatch(r"\d+(\.\d+)?", a):
            ids.append(a)
        else:
            pass  # an owner name
        i += 1
    if ids:
        ads = [ad for ad in ads if f"{ad['ClusterId']}.{ad['ProcId']}" in ids or str(ad["ClusterId"]) in ids]
    public = [{k: v for k, v in ad.items() if k not in ("pid", "remove")} for ad in ads]
    if as_json:
        if not public:
            return "", "", 0  # §2.5: empty, not []
        return "[\n" + "\n,\n".join(json.dumps(ad, indent=2, sort_keys=True) for ad in public) + "\n]\n", "", 0
    if attrs:
        lines = []
        for ad in public:
            words = [_render(ad, a) for a in attrs]
            if "j" in qualifiers:
                words.insert(0, f"{ad['ClusterId']}.{ad['ProcId']}")
            lines.append(" ".join(words))
        return "".join(line + "\n" for line in lines), "", 0
    out = f"\n\n-- Schedd: emulated@{os.uname().nodename} : <127.0.0.1:9618?...\n"
    out += "OWNER BATCH_NAME      SUBMITTED   DONE   RUN    IDLE  TOTAL JOB_IDS\n"
    for ad in public:
        out += f"{ad['Owner']} {ad.get('JobBatchName') or 'ID: ' + str(ad['ClusterId'])} - - - - 1 " \
               f"{ad['ClusterId']}.{ad['ProcId']}\n"
    out += f"\nTotal for query: {len(public)} jobs; 0 completed, 0 removed, 0 idle, 0 running, 0 held, 0 suspended\n"
    return out, "", 0


def condor_q(argv: list[str]) -> tuple[str, str, int]:
    state = read_state()
    ads = sorted(state["queue"].values(), key=lambda ad: (ad["ClusterId"], ad["ProcId"]))
    return _query(argv, ads)


def condor_history(argv: list[str]) -> tuple[str, str, int]:
    return _query(argv, read_state()["history"])  # newest first (§2.6)


# ------------------------------------------------------------------ condor_rm (§3)
def condor_rm(argv: list[str]) -> tuple[str, str, int]:
    operands = [a for a in argv if not a.startswith("-")]
    flags = [a for a in argv if a.startswith("-")]
    if "-name" in flags:
        return "", "condor_rm: Can't find address for schedd\n", 1
    if not operands and "-all" not in flags:
        return "", "You did not specify any jobs\nUsage: condor_rm [options] [constraints]\n", 1
    out, err, failed = [], [], False
    with locked_state() as state:
        queue = state["queue"]

        def remove(job_id: str) -> None:
            ad = queue[job_id]
            if ad["JobStatus"] in (1, 5) and not ad.get("pid"):
                _leave(state, job_id, JobStatus=3, RemoveReason=f"via condor_rm (by user {_user()})")
            else:
                ad.update(JobStatus=3, remove=time.time())

        if "-all" in flags:
            for job_id in list(queue):
                remove(job_id)
            return "All jobs have been marked for removal\n", "", 0
        for op in operands:
            if "." in op:
                ad = queue.get(op)
                if ad is None:
                    err += ["", f"Job {op} not found"]
                    failed = True
                elif ad["JobStatus"] == 3:
                    err.append(f"Job {op} already marked for removal")
                    failed = True
                else:
                    remove(op)
                    out.append(f"Job {op} marked for removal")
            else:
                members = [k for k, ad in queue.items() if str(ad["ClusterId"]) == op]
                if not queue:
                    err.append("condor_rm:0:There are no jobs in the queue")
                elif not members:
                    err += ["", f"Couldn't find/remove all jobs in cluster {op}"]
                    failed = True
                else:
                    for job_id in members:
                        remove(job_id)
                    out.append(f"All jobs in cluster {op} have been marked for removal")
    return "".join(o + "\n" for o in out), "".join(e + "\n" for e in err), 1 if failed else 0


# ------------------------------------------------------------------ test controls
def live_jobs() -> list[str]:
    return list(read_state()["queue"])


def reset() -> None:
    with locked_state() as state:
        for ad in state["queue"].values():
            if ad.get("pid"):
                _killpg(ad["pid"], signal.SIGKILL)
        state["queue"] = {}


def main(prog: str, argv: list[str]) -> int:
    try:
        if prog == "condor_submit":
            stdin_text = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
            out, err = condor_submit(argv, stdin_text)
            code = 0
        elif prog in ("condor_q", "condor_history", "condor_rm"):
            out, err, code = {"condor_q": condor_q, "condor_history": condor_history, "condor_rm": condor_rm}[prog](argv)
        elif prog == "run":
            run_job(argv[0])
            return 0
        else:
            raise SystemExit(f"unknown command {prog}")
    except Exit as exc:
        sys.stdout.write(exc.stdout)
        sys.stderr.write(exc.message + "\n")
        return exc.code
    sys.stdout.write(out)
    sys.stderr.write(err)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
