"""The LSF 10.1 emulator behaves as the research note says LSF does (lsf-interface.md; the
section of each behaviour is in its test's docstring, §7.5 lists the scenarios).

Each test runs the emulator's real bsub/bjobs/bkill executables in a private cluster
directory, and where it matters checks that jobqueue's LSF parser reads the result right.
"""

import asyncio
import os
import subprocess
import time

import pytest

from backends import LSF_EMULATOR_BIN, lsfemu
from jobqueue.commands import CommandError, CommandResult
from jobqueue.systems import JobState, LSFSystem
from util import wait_for


@pytest.fixture
def lsf(tmp_path, monkeypatch):
    """A fresh emulated cluster; returns a function running an LSF command."""
    home = tmp_path / "cluster"
    monkeypatch.setenv("LSFEMU_HOME", str(home))
    monkeypatch.setenv("LSF_ENVDIR", str(home / "conf"))
    monkeypatch.setattr(lsfemu, "HOME", str(home))
    monkeypatch.setenv("PATH", f"{LSF_EMULATOR_BIN}:{os.environ['PATH']}")
    lsfemu.set_config(sched_latency=0.1, job_terminate_interval=1)
    workdir = tmp_path / "work"
    workdir.mkdir()

    def run(*argv, input=None, env=None):
        return subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=30,
                              cwd=workdir, env={**os.environ, **(env or {})})

    run.workdir = workdir
    yield run
    lsfemu.reset()


def _status(lsf, *ids):
    out = lsf("bjobs", "-noheader", "-o", "jobid jobindex stat exit_code pend_reason delimiter='|'", *ids)
    return LSFSystem().parse_status(CommandResult(tuple(out.args), out.returncode, out.stdout, out.stderr), list(ids))


def _submitted(out) -> str:
    assert out.returncode == 0, out.stderr
    return LSFSystem().parse_submit(CommandResult(tuple(out.args), 0, out.stdout, out.stderr))


def test_directives_are_read_from_stdin_anywhere_and_the_command_line_wins(lsf):
    """§1.3, §7.5 item 1: #BSUB lines after the first command, "# BSUB", a quoted -P and an
    inline comment are all honoured; an option on the command line wins."""
    script = ("#!/bin/bash\n#BSUB -J first\necho $LSB_JOBNAME $LSB_QUEUE\n# BSUB -q short\n"
              '#BSUB -P "a b"  # our project\n#BSUB -o out-%J.txt\n')
    job = _submitted(lsf("bsub", "-J", "second", input=script))
    assert wait_for(lambda: _status(lsf, job)[job].state == JobState.COMPLETED, 20)
    assert (lsf.workdir / f"out-{job}.txt").read_text().startswith("second short\n")
    out = lsf("bjobs", "-noheader", "-o", "job_name proj_name queue delimiter='|'", job)
    assert out.stdout.strip() == "second|a b|short"


def test_a_script_path_is_a_command_and_its_directives_are_ignored(lsf):
    """§1.1, §7.5 item 2: `bsub script` runs the file at start time; without
    LSB_BSUB_PARSE_SCRIPT its #BSUB lines are ignored, and a file deleted after submission
    fails the job with 127."""
    path = lsf.workdir / "job.sh"
    path.write_text("#!/bin/bash\n#BSUB -o never-%J.txt\necho ran\n")
    path.chmod(0o755)
    job = _submitted(lsf("bsub", "-o", "out-%J.txt", str(path)))
    path.unlink()
    assert wait_for(lambda: _status(lsf, job)[job].state.finished, 20)
    st = _status(lsf, job)[job]
    assert st.state == JobState.FAILED and st.exit_code == 127
    assert not (lsf.workdir / f"never-{job}.txt").exists()


def test_submission_lines_and_where_they_go(lsf):
    """§1.2, §7.5 item 3: "is submitted to queue <Q>." with -q, "default queue" without;
    BSUB_STDERR moves the line to stderr, BSUB_QUIET drops it; ids increase."""
    a = lsf("bsub", "-q", "normal", input="#!/bin/sh\ntrue\n")
    b = lsf("bsub", input="#!/bin/sh\ntrue\n")
    assert a.stdout.endswith("is submitted to queue <normal>.\n") and "to default queue <normal>." in b.stdout
    assert int(_submitted(b)) == int(_submitted(a)) + 1
    c = lsf("bsub", input="#!/bin/sh\ntrue\n", env={"BSUB_STDERR": "y"})
    assert c.stdout == "" and "is submitted to default queue" in c.stderr and _submitted(c)
    d = lsf("bsub", input="#!/bin/sh\ntrue\n", env={"BSUB_QUIET": "y"})
    assert d.returncode == 0 and d.stdout == d.stderr == ""
    with pytest.raises(CommandError):  # the library fails loudly instead of hanging
        _submitted(d)


@pytest.mark.parametrize("argv,message", [
    (["-W", "00:30:00"], "00:30:00: Bad RUNLIMIT specification. Job not submitted."),
    (["-q", "nosuch"], "nosuch: No such queue. Job not submitted."),
    (["-q", "short", "-W", "2:00"], "RUNLIMIT: Cannot exceed queue's hard limit(s). Job not submitted."),
    (["-J", "w[1-1001]"], "Job array index too large. Job not submitted."),
])
def test_refusals_exit_255_with_lsfs_words(lsf, argv, message):
    """§1.5, §2, §7.5 item 4: every refused bsub prints "<msg>. Job not submitted." on
    stderr and exits 255, nothing on stdout."""
    out = lsf("bsub", *argv, input="#!/bin/sh\ntrue\n")
    assert (out.returncode, out.stdout, out.stderr.strip()) == (255, "", message)


def test_finished_jobs_stay_for_clean_period_then_are_not_found(lsf):
    """§3.2, §3.5, §7.5 item 6: bjobs <id> of a finished job says DONE/EXIT until
    CLEAN_PERIOD, then "Job <id> is not found" with exit 255 while printing the others."""
    lsfemu.set_config(clean_period=3)
    done = _submitted(lsf("bsub", input="#!/bin/sh\ntrue\n"))
    failed = _submitted(lsf("bsub", input="#!/bin/sh\nexit 3\n"))
    assert wait_for(lambda: all(s.state.finished for s in _status(lsf, done, failed).values()), 20)
    st = _status(lsf, done, failed)
    assert st[done].state == JobState.COMPLETED and (st[failed].state, st[failed].exit_code) == (JobState.FAILED, 3)
    running = _submitted(lsf("bsub", input="#!/bin/sh\nsleep 30\n"))
    time.sleep(3.5)
    out = lsf("bjobs", "-noheader", "-o", "jobid stat", done, running)
    assert out.returncode == 255 and f"Job <{done}> is not found" in out.stderr and out.stdout.startswith(running)
    assert _status(lsf, done, running)[done].gone
    lsf("bkill", running)


def test_bjobs_formats(lsf):
    """§3.1, §3.6, §7.5 item 7: the default table, -noheader -o with "-" for empty values,
    -json with COMMAND/JOBS/RECORDS and string values; no job: "No unfinished job found", 255."""
    assert lsf("bjobs").stderr == "No unfinished job found\n" and lsf("bjobs").returncode == 255
    job = _submitted(lsf("bsub", "-H", input="#!/bin/sh\ntrue\n"))
    table = lsf("bjobs").stdout.splitlines()
    assert table[0] == "JOBID   USER    STAT  QUEUE      FROM_HOST   EXEC_HOST   JOB_NAME   SUBMIT_TIME"
    assert table[1].split()[:3] == [job, lsfemu._user()[:7], "PSUSP"]
    assert lsf("bjobs", "-noheader", "-o", "jobid stat exit_code", job).stdout == f"{job} PSUSP -\n"
    import json

    data = json.loads(lsf("bjobs", "-o", "jobid stat", "-json", job).stdout)
    assert data == {"COMMAND": "bjobs", "JOBS": 1, "RECORDS": [{"JOBID": job, "STAT": "PSUSP"}]}
    assert lsf("bjobs", "-json", job).returncode == 255  # -json needs -o
    lsf("bkill", job)


def test_bkill_messages_and_the_kill_sequence(lsf):
    """§4, §7.5 item 8: "Job <N> is being terminated" on stdout; already finished or unknown
    ids on stderr with exit 255 (which jobqueue takes as done); a running job gets SIGINT,
    then SIGTERM, then SIGKILL, and bkill returns before it has ended."""
    script = "#!/bin/bash\ntrap 'echo INT' INT\ntrap 'echo TERM' TERM\necho up\nwhile true; do sleep 0.1; done\n"
    job = _submitted(lsf("bsub", "-o", "k-%J.txt", input=script))
    assert wait_for(lambda: _status(lsf, job)[job].state == JobState.RUNNING, 20)
    # the traps are set once the script has said "up" (in the spool until the job ends, as LSF
    # keeps it); a fixed pause here lost the race under load
    spooled = os.path.join(lsfemu.HOME, "spool", f"{lsfemu.key_of(job, 0)}.out")
    assert wait_for(lambda: os.path.exists(spooled) and open(spooled).read().startswith("up"), 20)
    out = lsf("bkill", job)
    assert (out.returncode, out.stdout) == (0, f"Job <{job}> is being terminated\n")
    assert _status(lsf, job)[job].state == JobState.RUNNING  # not ended yet
    assert wait_for(lambda: _status(lsf, job)[job].state.finished, 20)
    lines = (lsf.workdir / f"k-{job}.txt").read_text().splitlines()
    assert lines[0] == "up" and [line for line in lines if line in ("INT", "TERM")] == ["INT", "TERM"], lines
    assert _status(lsf, job)[job].exit_code == 137
    again = lsf("bkill", job, "999")
    assert again.returncode == 255 and again.stderr == (f"Job <{job}>: Job has already finished\n"
                                                        "Job <999>: No matching job found\n")
    result = asyncio.run(_cancel(again))
    assert result is None


async def _cancel(out):
    from jobqueue.watchdog import unconfirmed

    failed = unconfirmed(out.returncode, out.stdout + "\n" + out.stderr, LSFSystem.cancel_ok)
    assert not failed, failed


def test_run_limit_sends_sigusr2_then_kills(lsf):
    """§5.2, §7.5 item 9: SIGUSR2 at the run limit, the kill sequence WARN_TIME later; a
    script that does not trap SIGUSR2 dies of it: EXIT with 140."""
    lsfemu.set_config(warn_time=1)
    job = _submitted(lsf("bsub", "-W", "1", input="#!/bin/bash\nsleep 600\n"))
    assert wait_for(lambda: _status(lsf, job)[job].state == JobState.RUNNING, 20)
    # a minute is long for a test: shorten this job's limit in the cluster's table
    with lsfemu.locked_state() as state:
        state["jobs"][job]["runlimit"] = 1
    assert wait_for(lambda: _status(lsf, job)[job].state.finished, 30)
    assert _status(lsf, job)[job].exit_code == 140


def test_arrays_are_job_names(lsf):
    """§2, §7.5 item 10: -J "w[1-4]" is one submission with one id; four elements named w[i]
    with LSB_JOBINDEX i and %I in their output names; bkill "N[2]" ends one of them."""
    script = "#!/bin/bash\n#BSUB -o a-%J_%I.txt\necho $LSB_JOBID $LSB_JOBINDEX\nsleep 30\n"
    out = lsf("bsub", "-J", "w[1-4]", input=script)
    job = _submitted(out)
    ids = LSFSystem().array_element_ids(job, 4)
    assert wait_for(lambda: {s.state for s in _status(lsf, *ids).values()} == {JobState.RUNNING}, 20)
    names = lsf("bjobs", "-noheader", "-o", "job_name", job).stdout.split()
    assert names == ["w[1]", "w[2]", "w[3]", "w[4]"]
    assert lsf("bkill", f"{job}[2]").stdout == f"Job <{job}[2]> is being terminated\n"
    assert wait_for(lambda: _status(lsf, ids[1])[ids[1]].state.finished, 20)
    assert {s.state for s in _status(lsf, ids[0], ids[2], ids[3]).values()} == {JobState.RUNNING}
    assert (lsf.workdir / f"a-{job}_2.txt").read_text().startswith(f"{job} 2\n")
    lsf("bkill", job)
    assert wait_for(lambda: not lsfemu.live_jobs(), 20)
