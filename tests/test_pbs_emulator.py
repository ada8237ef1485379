"""The OpenPBS 23.06 emulator behaves as OpenPBS does (the research note's §8.5 scenarios).

Each test runs the emulator's real qsub/qstat/qdel executables in a private server
directory, and where it matters checks that jobqueue's PBS parser reads the result right.
"""

import asyncio
import json
import os
import subprocess
import time

import pytest

from backends import PBS_EMULATOR_BIN, pbsemu
from jobqueue.commands import CommandResult
from jobqueue.systems import JobState, PBSSystem
from util import wait_for


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A fresh emulated server; returns a function running a PBS command."""
    home = tmp_path / "server"
    monkeypatch.setenv("PBSEMU_HOME", str(home))
    monkeypatch.setattr(pbsemu, "HOME", str(home))
    monkeypatch.setenv("PATH", f"{PBS_EMULATOR_BIN}:{os.environ['PATH']}")
    pbsemu.set_config(sched_latency=0.1)
    workdir = tmp_path / "work"
    workdir.mkdir()

    def run(*argv, input=None):
        return subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=30,
                              cwd=workdir, env={**os.environ, "PWD": str(workdir)})

    run.workdir = workdir
    run.home = home
    yield run
    pbsemu.reset()


def _script(tmp_path, body, name="job.sh"):
    path = tmp_path / name
    path.write_text(body)
    return str(path)


def _state(run, job_id, history=False):
    args = ["qstat", "-f", "-F", "json"] + (["-x"] if history else []) + [job_id]
    out = run(*args)
    data = json.loads(out.stdout) if out.stdout.strip() else {}
    return (data.get("Jobs") or {}).get(job_id)


def test_qsub_prints_only_the_id_and_runs_the_script_with_pbs_environment(server, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    pbsemu.set_config(home=str(home))
    script = _script(tmp_path, "#!/bin/bash\n#PBS -N envjob\n#PBS -l select=1:ncpus=2:mem=1gb\n"
                     "env | grep -E '^(PBS_|NCPUS|TMPDIR|MYVAR|HOME)' | sort\npwd\n")
    out = server("qsub", script)
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout == "0.pbsserver\n"
    result = server.workdir / "envjob.o0"
    assert wait_for(result.exists, 20), "output file not delivered"
    text = result.read_text()
    assert "PBS_JOBID=0.pbsserver" in text and "PBS_JOBNAME=envjob" in text
    assert f"PBS_O_WORKDIR={server.workdir}" in text and "PBS_QUEUE=workq" in text
    assert "PBS_ENVIRONMENT=PBS_BATCH" in text and "NCPUS=2" in text and "PBS_NODEFILE=" in text
    assert text.strip().splitlines()[-1] == str(home)  # jobs start in $HOME, not the submit dir


def test_environment_is_not_inherited_without_V(server, tmp_path):
    script = _script(tmp_path, "#!/bin/bash\necho MYVAR=${MYVAR:-unset}\n")
    os.environ["MYVAR"] = "hello"
    try:
        server("qsub", "-N", "plain", script)
        server("qsub", "-N", "withv", "-V", script)
        server("qsub", "-N", "withv2", "-v", "MYVAR=given", script)
    finally:
        del os.environ["MYVAR"]
    outs = [server.workdir / f"{n}.o{i}" for i, n in enumerate(["plain", "withv", "withv2"])]
    assert wait_for(lambda: all(p.exists() for p in outs), 20)
    assert [p.read_text().strip() for p in outs] == ["MYVAR=unset", "MYVAR=hello", "MYVAR=given"]


def test_dotted_server_name_and_table_truncation(server, tmp_path):
    """§8.5.1: ids carry the full server name; the table cuts them."""
    pbsemu.set_config(server_name="pbs.example.com")
    out = server("qsub", "-h", "-N", "averyveryverylongjobname", _script(tmp_path, "sleep 60\n"))
    assert out.stdout == "0.pbs.example.com\n"
    table = server("qstat").stdout.splitlines()
    assert table[0].startswith("Job id            Name             User")
    assert table[2].startswith("0.pbs             averyveryverylo* ")
    assert " H workq" in table[2]
    system = PBSSystem()
    st = asyncio.run(system.status(["0.pbs.example.com"]))
    assert st["0.pbs.example.com"].state == JobState.PENDING and st["0.pbs.example.com"].reason == "held"
    assert server("qdel", "0.pbs.example.com").returncode == 0


def test_finished_job_history_on_and_off(server, tmp_path):
    """§8.5.2-3: 153 without history, 35 with, and -x shows F with Exit_status."""
    script = _script(tmp_path, "exit 3\n")
    job = server("qsub", script).stdout.strip()
    assert wait_for(lambda: server("qstat", job).returncode == 153, 20)
    out = server("qstat", job)
    assert out.stderr == f"qstat: Unknown Job Id {job}\n" and out.stdout == ""
    hist = server("qstat", "-x", "-f", "-F", "json", job)
    assert hist.returncode == 0 and "Jobs" not in json.loads(hist.stdout)
    assert hist.stderr == f"qstat: PBS is not configured to maintain job history {job}\n"

    pbsemu.set_config(job_history_enable=True)
    job = server("qsub", script).stdout.strip()
    assert wait_for(lambda: server("qstat", job).returncode == 35, 20)
    assert server("qstat", job).stderr == (f"qstat: {job} Job has finished, use -x or -H to obtain historical "
                                           "job information\n")
    info = _state(server, job, history=True)
    assert info["job_state"] == "F" and info["Exit_status"] == 3 and info["substate"] == 93
    assert info["comment"].endswith("and failed")
    # jobqueue reads both: 35 means finished; exit_code() asks history
    system = PBSSystem()
    st = asyncio.run(system.status([job]))
    assert st[job].state.finished
    assert asyncio.run(system.exit_code(job)) == 3


def test_json_without_jobs_and_numbers_typed_as_numbers(server, tmp_path):
    """§8.5.4: no "Jobs" key when nothing matched; numeric-looking names are numbers."""
    empty = server("qstat", "-f", "-F", "json")
    assert empty.returncode == 0 and not empty.stdout.endswith("\n")
    assert set(json.loads(empty.stdout)) == {"timestamp", "pbs_version", "pbs_server"}
    job = server("qsub", "-h", "-N", "123", "-A", "42", _script(tmp_path, "true\n")).stdout.strip()
    info = _state(server, job)
    assert info["Job_Name"] == 123 and info["Account_Name"] == 42 and info["Priority"] == 0
    assert info["Resource_List"]["ncpus"] == 1 and info["Resource_List"]["select"] == "1:ncpus=1"
    assert "Exit_status" not in info  # absent until the job ran and ended
    st = asyncio.run(PBSSystem().status([job]))
    assert st[job].state == JobState.PENDING
    server("qdel", job)


def test_qdel_of_finished_or_unknown_job(server, tmp_path):
    """§8.5.5: non-zero exits that jobqueue must treat as success."""
    out = server("qdel", "999")
    assert (out.returncode, out.stderr) == (153, "qdel: Unknown Job Id 999\n")
    pbsemu.set_config(job_history_enable=True)
    job = server("qsub", _script(tmp_path, "true\n")).stdout.strip()
    assert wait_for(lambda: server("qstat", job).returncode == 35, 20)
    out = server("qdel", job)
    assert (out.returncode, out.stderr) == (35, f"qdel: Job has finished {job}\n")
    asyncio.run(PBSSystem().cancel([job, "999.pbsserver"]))  # no error raised


def test_qdel_of_queued_and_running_jobs(server, tmp_path):
    pbsemu.set_config(job_history_enable=True)
    queued = server("qsub", "-h", _script(tmp_path, "sleep 60\n")).stdout.strip()
    running = server("qsub", _script(tmp_path, "sleep 60\n", "b.sh")).stdout.strip()
    assert wait_for(lambda: (_state(server, running) or {}).get("job_state") == "R", 20)
    assert server("qdel", queued, running).returncode == 0
    q = _state(server, queued, history=True)
    assert q["job_state"] == "F" and q["substate"] == 91 and "Exit_status" not in q
    assert wait_for(lambda: (_state(server, running, history=True) or {}).get("job_state") == "F", 20)
    r = _state(server, running, history=True)
    assert r["Exit_status"] == 271 and "terminated" in r["comment"]  # 256 + SIGTERM
    st = asyncio.run(PBSSystem().status([running]))
    assert st[running].state == JobState.CANCELLED


def test_walltime_kill(server, tmp_path):
    """§8.5.6: SIGTERM, Exit_status -29, a line in the stderr file; SIGKILL after kill_delay."""
    pbsemu.set_config(job_history_enable=True, queues={"workq": {"enabled": True, "kill_delay": 1}})
    script = _script(tmp_path, "#PBS -l walltime=00:00:02\ntrap '' TERM\nsleep 30\n")
    job = server("qsub", "-N", "wt", script).stdout.strip()
    t0 = time.monotonic()
    assert wait_for(lambda: (_state(server, job, history=True) or {}).get("job_state") == "F", 30)
    assert time.monotonic() - t0 < 10  # killed at 2 s, SIGKILL 1 s later
    info = _state(server, job, history=True)
    assert info["Exit_status"] == -29 and info["comment"].endswith("exceeded resource walltime")
    assert "=>> PBS: job killed: walltime" in (server.workdir / "wt.e0").read_text()
    st = asyncio.run(PBSSystem().status([job]))
    assert st[job].state == JobState.TIMEOUT


def test_output_delivered_only_at_job_end_into_directory(server, tmp_path):
    """§8.5.7: a directory -o gives <jobid>.OU, written when the job ends."""
    logs = tmp_path / "logs"
    logs.mkdir()
    job = server("qsub", "-o", f"{logs}/", "-e", f"{logs}/",
                 _script(tmp_path, "echo out; echo err >&2; sleep 1.5\n")).stdout.strip()
    assert wait_for(lambda: (_state(server, job) or {}).get("job_state") == "R", 20)
    assert not (logs / f"{job}.OU").exists()  # spooled while running
    assert wait_for(lambda: (logs / f"{job}.OU").exists(), 20)
    assert wait_for(lambda: (logs / f"{job}.ER").exists(), 5)
    assert (logs / f"{job}.OU").read_text() == "out\n" and (logs / f"{job}.ER").read_text() == "err\n"


def test_directive_scanning(server, tmp_path):
    """§8.5.9: directives stop at the first command; errors in #PBS lines exit 1."""
    script = _script(tmp_path, "#!/bin/bash\n\n   #PBS -N first\n# comment\necho hi\n#PBS -N ignored\n")
    job = server("qsub", "-h", script).stdout.strip()
    assert _state(server, job)["Job_Name"] == "first"
    cmdline = server("qsub", "-h", "-N", "fromcli", script).stdout.strip()
    assert _state(server, cmdline)["Job_Name"] == "fromcli"  # command line wins
    bad = server("qsub", _script(tmp_path, "#PBS -N ok # a comment\ntrue\n", "bad.sh"))
    assert bad.returncode == 1 and bad.stderr == "qsub: directive error: -N ok # a comment \n"
    crlf = server("qsub", _script(tmp_path, "#PBS -N x\r\ntrue\r\n", "crlf.sh"))
    assert (crlf.returncode, crlf.stderr) == (1, "qsub: script contains cr, lf\n")
    server("qdel", job, cmdline)


def test_submission_errors_exact(server, tmp_path):
    """§8.5.10: unknown queue 170, bad walltime 166, over the limit 188, usage errors 2."""
    pbsemu.set_config(queues={"workq": {"enabled": True, "resources_max": {"walltime": "01:00:00"}}})
    s = _script(tmp_path, "true\n")
    cases = [
        (["-q", "nosuch", s], 170, "qsub: Unknown queue\n"),
        (["-l", "walltime=abc", s], 166, "qsub: Illegal attribute or resource value Resource_List.walltime\n"),
        (["-l", "walltime=1-00:00:00", s], 166, "qsub: Illegal attribute or resource value Resource_List.walltime\n"),
        (["-l", "walltime=02:00:00", s], 188, "qsub: Job violates queue and/or server resource limits\n"),
        (["-l", "foo=1", s], 187, "qsub: Unknown resource Resource_List.foo\n"),
        (["-l", "select=1:ncpus=1", "-l", "mem=1gb", s], 5,
         'qsub: "-lresource=" cannot be used with "select" or "place", resource is: mem\n'),
        (["-N", "bad name", s], 2, None),
        (["-J", "5", s], 2, None),
    ]
    for argv, code, stderr in cases:
        out = server("qsub", *argv)
        assert out.returncode == code, (argv, out.returncode, out.stderr)
        assert out.stdout == ""
        if stderr is not None:
            assert out.stderr == stderr, argv
        else:
            assert out.stderr.startswith("qsub: illegal -") and "usage: qsub" in out.stderr
    assert server("qsub", s, "-N", "late").returncode == 2  # the script must be last
    assert server("qstat", "-F", "json").returncode == 2  # -F json needs -f
    assert server("qstat", "--version").stdout == "pbs_version = 23.06.06\n"
    assert pbsemu.live_jobs() == []


def test_can_never_run_is_pending_with_the_schedulers_comment(server, tmp_path):
    pbsemu.set_config(ncpus=8)
    job = server("qsub", "-l", "select=1:ncpus=64", _script(tmp_path, "true\n")).stdout.strip()
    assert wait_for(lambda: "comment" in (_state(server, job) or {}), 20)
    st = asyncio.run(PBSSystem().status([job]))[job]
    assert st.state == JobState.PENDING
    assert st.reason == "Can Never Run: Insufficient amount of resource: ncpus (R: 64 A: 8 T: 8)"
    server("qdel", job)


def test_arrays_run_each_index_with_pbs_array_index(server, tmp_path):
    job = server("qsub", "-J", "1-3", "-N", "arr", _script(tmp_path, "echo idx=$PBS_ARRAY_INDEX\n")).stdout
    assert job == "0[].pbsserver\n"
    outs = [server.workdir / f"arr.o0.{i}" for i in (1, 2, 3)]
    assert wait_for(lambda: all(p.exists() for p in outs), 20)
    assert [p.read_text().strip() for p in outs] == ["idx=1", "idx=2", "idx=3"]


def test_parser_survives_invalid_json_from_backslashes():
    """OpenPBS <= 23.06 does not escape backslashes (openpbs #2541)."""
    text = ('{\n    "timestamp":1,\n    "pbs_version":"23.06.06",\n    "pbs_server":"s",\n    "Jobs":{\n'
            '        "7.s":{\n            "Job_Name":"a\\b",\n            "job_state":"R"\n        }\n    }\n}\n')
    result = CommandResult(("qstat",), 0, text, "")
    st = PBSSystem().parse_status(result, ["7.s"])
    assert st["7.s"].state == JobState.RUNNING
