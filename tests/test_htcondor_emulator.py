"""The HTCondor 25.0 emulator behaves as the research note says HTCondor does
(htcondor-interface.md; the section of each behaviour is in its test's docstring, §5.5 lists
the scenarios). Each test runs the emulator's real condor_* executables in a private schedd
directory, and where it matters checks that jobqueue's HTCondor parser reads the result right.
"""

import json
import os
import subprocess

import pytest

from backends import HTCONDOR_EMULATOR_BIN, htcemu
from jobqueue.commands import CommandResult
from jobqueue.systems import HTCondorSystem, JobState
from jobqueue.watchdog import unconfirmed
from util import wait_for

SUB = "executable = /bin/sh\narguments = \"-c 'echo hi; exit {code}'\"\noutput = out.$(Cluster).$(Process)\n" \
      "error = err.$(Cluster).$(Process)\nqueue {n}\n"


@pytest.fixture
def condor(tmp_path, monkeypatch):
    home = tmp_path / "schedd"
    monkeypatch.setenv("HTCEMU_HOME", str(home))
    monkeypatch.setattr(htcemu, "HOME", str(home))
    monkeypatch.setenv("PATH", f"{HTCONDOR_EMULATOR_BIN}:{os.environ['PATH']}")
    htcemu.set_config(negotiator_interval=0.1, killing_timeout=2)
    workdir = tmp_path / "work"
    workdir.mkdir()

    def run(*argv, input=None):
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, cwd=workdir, input=input)

    run.workdir = workdir
    yield run
    htcemu.reset()


def _result(out) -> CommandResult:
    return CommandResult(tuple(out.args), out.returncode, out.stdout, out.stderr)


async def _ended(ids):
    return await HTCondorSystem().history(ids)


def _state(condor, *ids):
    """What jobqueue's tracker sees: condor_q, then condor_history for what it no longer lists."""
    import asyncio

    out = HTCondorSystem().parse_status(_result(condor(*HTCondorSystem().status_argv(list(ids)))), list(ids))
    missing = [i for i in ids if i not in out]
    if missing:
        out.update(asyncio.run(_ended(missing)))
    return out


def test_submission_output_file_stdin_terse_verbose(condor, tmp_path):
    """§1.2, §5.5 items 1-3: from a file or stdin (without "-"): "Submitting job(s)." and
    "N job(s) submitted to cluster C."; -terse prints the id range; "-" or -verbose print the ad
    and no summary line (jobqueue then fails loudly instead of guessing)."""
    path = condor.workdir / "job.sub"
    path.write_text(SUB.format(code=0, n=1))
    a = condor("condor_submit", str(path))
    assert a.stdout == f"Submitting job(s).\n1 job(s) submitted to cluster {HTCondorSystem().parse_submit(_result(a))[:-2]}.\n"
    b = condor("condor_submit", input=SUB.format(code=0, n=3))
    assert "Submitting job(s)...\n3 job(s) submitted to cluster" in b.stdout
    first = HTCondorSystem().parse_submit(_result(b))
    assert HTCondorSystem().array_element_ids(first, 3) == [first[:-1] + str(i) for i in range(3)]
    c = condor("condor_submit", "-terse", str(path))
    assert c.stdout.strip().endswith(".0 - " + c.stdout.split(".")[0] + ".0")
    d = condor("condor_submit", "-", input=SUB.format(code=0, n=1))
    assert "** Proc" in d.stdout and "submitted to cluster" not in d.stdout
    with pytest.raises(Exception, match="could not read a job id"):
        HTCondorSystem().parse_submit(_result(d))


def test_errors_exit_1_and_unused_keys_only_warn(condor):
    """§1.4, §5.5 items 4-5: no queue statement, no executable, a bad expression: "ERROR:" on
    stderr and exit 1 (stdout may already say "Submitting job(s)"); an unknown key is accepted
    with a warning on stderr and exit 0."""
    no_queue = condor("condor_submit", input="executable = /bin/true\n")
    assert no_queue.returncode == 1 and 'ERROR: "(stdin)" doesn\'t contain any "queue" commands' in no_queue.stderr
    no_exe = condor("condor_submit", input="queue\n")
    assert no_exe.returncode == 1 and "ERROR: No 'executable' parameter was provided" in no_exe.stderr
    bad = condor("condor_submit", input="executable = /bin/true\n+Foo = (\nqueue\n")
    assert bad.returncode == 1 and "ERROR: Parse error in expression" in bad.stderr
    assert bad.stdout.startswith("Submitting job(s)")
    typo = condor("condor_submit", input="executable = /bin/true\nrequest_cpu = 1\nqueue\n")
    assert typo.returncode == 0 and "WARNING: the line 'request_cpu = 1' was unused" in typo.stderr


def test_ended_jobs_leave_condor_q_for_condor_history(condor):
    """§2.2, §2.4, §2.6, §5.5 items 6-7: a finished job is absent from condor_q (empty -af and
    -json output, exit 0) and found by condor_history with its ExitCode; jobqueue reads 0 as
    finished and 3 as failed."""
    ok = HTCondorSystem().parse_submit(_result(condor("condor_submit", input=SUB.format(code=0, n=1))))
    bad = HTCondorSystem().parse_submit(_result(condor("condor_submit", input=SUB.format(code=3, n=1))))
    assert wait_for(lambda: all(s.state.finished for s in _state(condor, ok, bad).values())
                    and len(_state(condor, ok, bad)) == 2, 20)
    q = condor("condor_q", ok, bad, "-af:j", "JobStatus")
    assert (q.returncode, q.stdout) == (0, "")
    assert condor("condor_q", ok, "-json").stdout == ""
    st = _state(condor, ok, bad)
    assert (st[ok].state, st[ok].exit_code) == (JobState.COMPLETED, 0)
    assert (st[bad].state, st[bad].exit_code) == (JobState.FAILED, 3)
    assert condor("condor_history", bad, "-af", "JobStatus", "ExitCode").stdout == "4 3\n"
    assert (condor.workdir / f"out.{ok.split('.')[0]}.0").read_text() == "hi\n"


def test_condor_rm_texts_and_codes(condor):
    """§3, §4.3, §5.5 item 8: "Job C.P marked for removal" (exit 0); a job already gone: "Job C.P
    not found" (exit 1), which jobqueue takes as done; a running job gets SIGTERM and leaves the
    queue as removed (JobStatus 3 in the history)."""
    job = HTCondorSystem().parse_submit(_result(condor(
        "condor_submit", input="executable = /bin/sh\narguments = \"-c 'sleep 60'\"\nqueue\n")))
    assert wait_for(lambda: _state(condor, job)[job].state == JobState.RUNNING, 20)
    rm = condor("condor_rm", job)
    assert (rm.returncode, rm.stdout) == (0, f"Job {job} marked for removal\n")
    assert wait_for(lambda: _state(condor, job).get(job) and _state(condor, job)[job].state == JobState.CANCELLED, 20)
    again = condor("condor_rm", job)
    assert again.returncode == 1 and f"Job {job} not found" in again.stderr
    for out in (rm, again):
        assert not unconfirmed(out.returncode, out.stdout + "\n" + out.stderr, HTCondorSystem.cancel_ok), out


def test_a_job_over_its_allowed_duration_is_held_and_jobqueue_removes_it(condor):
    """§4.2, §5.5 item 9: allowed_job_duration exceeded -> held (JobStatus 5, HoldReasonCode 46),
    in the queue until removed: jobqueue reads it as failed and stuck (it removes such jobs);
    a job submitted on hold (code 15) is pending, not failed."""
    job = HTCondorSystem().parse_submit(_result(condor(
        "condor_submit", input="executable = /bin/sh\narguments = \"-c 'sleep 60'\"\nallowed_job_duration = 1\nqueue\n")))
    assert wait_for(lambda: _state(condor, job)[job].stuck, 20)
    st = _state(condor, job)[job]
    assert st.state == JobState.FAILED and "exceeded allowed job duration" in st.reason
    held = HTCondorSystem().parse_submit(_result(condor(
        "condor_submit", input="executable = /bin/true\nhold = True\nqueue\n")))
    assert (_state(condor, held)[held].state, _state(condor, held)[held].reason) == (JobState.PENDING, "held")
    condor("condor_rm", job, held)


def test_the_job_does_not_get_the_submitters_environment(condor, monkeypatch):
    """§4.1, §5.5 item 12: without getenv the job's environment is HTCondor's, not the
    submitter's; `environment = "A=1"` adds to it."""
    monkeypatch.setenv("JQ_SUBMITTER_ONLY", "yes")
    job = HTCondorSystem().parse_submit(_result(condor("condor_submit", input=(
        "executable = /bin/sh\narguments = \"-c 'echo ${JQ_SUBMITTER_ONLY:-absent} $A $BATCH_SYSTEM'\"\n"
        "environment = \"A=1\"\noutput = env.out\nqueue\n"))))
    assert wait_for(lambda: _state(condor, job).get(job) and _state(condor, job)[job].state.finished, 20)
    assert (condor.workdir / "env.out").read_text() == "absent 1 HTCondor\n"
    assert json.loads(condor("condor_history", job, "-json").stdout)[0]["JobStatus"] == 4
