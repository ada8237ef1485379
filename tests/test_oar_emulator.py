"""The OAR 2.5.10 emulator behaves as the research note says OAR does (oar-interface.md; the
section of each behaviour is in its test's docstring, §7.5 lists the scenarios).

Each test runs the emulator's real oarsub/oarstat/oardel executables in a private server
directory, and where it matters checks that jobqueue's OAR parser reads the result right.
"""

import json
import os
import subprocess

import pytest

from backends import OAR_EMULATOR_BIN, oaremu
from jobqueue.commands import CommandResult
from jobqueue.systems import JobState, OARSystem
from util import wait_for


@pytest.fixture
def oar(tmp_path, monkeypatch):
    home = tmp_path / "server"
    monkeypatch.setenv("OAREMU_HOME", str(home))
    monkeypatch.setattr(oaremu, "HOME", str(home))
    monkeypatch.setenv("PATH", f"{OAR_EMULATOR_BIN}:{os.environ['PATH']}")
    oaremu.set_config(sched_latency=0.1)
    workdir = tmp_path / "work"
    workdir.mkdir()

    def run(*argv):
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, cwd=workdir)

    run.workdir = workdir
    yield run
    oaremu.reset()


def _result(out) -> CommandResult:
    return CommandResult(tuple(out.args), out.returncode, out.stdout, out.stderr)


def _status(oar, *ids):
    out = oar(*OARSystem().status_argv(list(ids)))
    return OARSystem().parse_status(_result(out), list(ids))


def test_job_id_after_admission_rule_lines_and_default_walltime(oar):
    """§1.2, §1.3, §7.5 items 1 and 4: without a walltime an admission rule sets 7200 s and says
    so on stdout, with a number, before OAR_JOB_ID=; the id is the OAR_JOB_ID value."""
    out = oar("oarsub", "-l", "/nodes=1/core=1", "true")
    assert out.returncode == 0 and out.stdout.splitlines()[0] == "[ADMISSION RULE] Set default walltime to 7200."
    job = OARSystem().parse_submit(_result(out))
    assert out.stdout.splitlines()[1] == f"OAR_JOB_ID={job}"
    with_wall = oar("oarsub", "-l", "/nodes=1/core=1,walltime=2", "true")
    second = OARSystem().parse_submit(_result(with_wall))
    assert json.loads(oar("oarstat", "-J", "-j", second).stdout)[second]["walltime"] == 7200  # bare 2 = hours
    assert int(second) == int(job) + 1


@pytest.mark.parametrize("argv,code,message", [
    (["-q", "nosuch"], 248, "# Error: queue 'nosuch' does not exist"),
    (["-l", "/nodes=1/core=999"], 251, "# There are not enough resources for your request"),
    (["-p", "nosuchprop>=1"], 251, "# Bad resource request"),
    (["-l", "/nodes=abc"], 18, "# Error: cannot recognize the resource description: nodes=abc"),
    (["-l", "/core=1,walltime=x"], 18, "# Error: cannot recognize walltime resource value"),
])
def test_refusals_and_their_exit_codes(oar, argv, code, message):
    """§1.5, §7.5 item 5: OAR 2's messages on stderr and its exit codes."""
    out = oar("oarsub", *argv, "true")
    assert out.returncode == code and out.stderr.startswith(message), out.stderr


def test_terminated_is_not_success_and_kills_are_errors(oar):
    """§3.1, §3.3, §5.2, §7.5 item 7: a job exiting 1 is Terminated with exit_code 256 (a raw
    wait status), read as failed with code 1; the walltime kills with SIGKILL, no grace: Error,
    no exit code, "Job N KILLED" in its stderr file."""
    ok = OARSystem().parse_submit(_result(oar("oarsub", "-l", "/core=1", "true")))
    bad = OARSystem().parse_submit(_result(oar("oarsub", "-l", "/core=1", "exit 1")))
    slow = OARSystem().parse_submit(_result(oar("oarsub", "-n", "w", "-l", "/core=1,walltime=0:0:2",
                                                "trap '' TERM; sleep 60")))
    assert wait_for(lambda: all(s.state.finished for s in _status(oar, ok, bad, slow).values()), 30)
    st = _status(oar, ok, bad, slow)
    assert (st[ok].state, st[ok].exit_code) == (JobState.COMPLETED, 0)
    assert (st[bad].state, st[bad].exit_code) == (JobState.FAILED, 1)
    assert json.loads(oar("oarstat", "-J", "-j", bad).stdout)[bad]["state"] == "Terminated"
    assert "exit_code = 256 (1,0,0)" in oar("oarstat", "-f", "-j", bad).stdout
    assert st[slow].state == JobState.FAILED and st[slow].exit_code is None
    assert (oar.workdir / f"OAR.w.{slow}.stderr").read_text().endswith(f"Job {slow} KILLED\n")


def test_oarstat_says_nothing_for_unknown_ids(oar):
    """§3.2, §3.4, §7.5 item 6: -s and -J print nothing for an id OAR does not know, exit 0;
    jobqueue reads that as "not listed" (the tracker then waits lost-after)."""
    for argv in (["-s", "-j", "99999"], ["-J", "-j", "99999"], ["-f", "-J", "-j", "99999"]):
        out = oar("oarstat", *argv)
        assert (out.returncode, out.stdout) == (0, ""), argv
    assert _status(oar, "99999") == {}


def test_oardel_texts_and_codes(oar):
    """§4, §7.5 item 8: REGISTERED for a live or an ended job (exit 0), "not the right user" for
    an unknown id (exit 1), "already killed" the second time (exit 6); jobqueue takes each as done."""
    from jobqueue.watchdog import unconfirmed

    job = OARSystem().parse_submit(_result(oar("oarsub", "-l", "/core=1", "sleep 60")))
    assert wait_for(lambda: _status(oar, job)[job].state == JobState.RUNNING, 20)
    first = oar("oardel", job)
    assert first.returncode == 0 and first.stdout == (f"Deleting the job = {job} ...REGISTERED.\n"
                                                      f"The job(s) [ {job} ] will be deleted in the near future.\n")
    assert wait_for(lambda: _status(oar, job)[job].state == JobState.FAILED, 20)
    again, unknown = oar("oardel", job), oar("oardel", "99999")
    assert again.returncode == 6 and "This job was already killed." in again.stderr
    assert unknown.returncode == 1 and unknown.stderr == "Cannot frag 99999 ; You are not the right user.\n"
    for out in (first, again, unknown):
        assert not unconfirmed(out.returncode, out.stdout + "\n" + out.stderr, OARSystem.cancel_ok), out


def test_arrays_are_consecutive_ids_and_oar3_refuses_dash_n(oar):
    """§2, §7.5 item 11: --array 3 prints three OAR_JOB_ID lines and OAR_ARRAY_ID, consecutive ids,
    OAR_ARRAY_INDEX 1..3; §1.6, §7.5 item 10: OAR 3's oarsub refuses -n (exit 2), and the
    options jobqueue passes (--name) work on both."""
    out = oar("oarsub", "--array", "3", "-l", "/core=1", "echo $OAR_ARRAY_INDEX $OAR_ARRAY_ID > idx.$OAR_JOB_ID")
    lines = out.stdout.splitlines()
    first = OARSystem().parse_submit(_result(out))
    assert lines[-4:] == [f"OAR_JOB_ID={first}", f"OAR_JOB_ID={int(first) + 1}", f"OAR_JOB_ID={int(first) + 2}",
                          f"OAR_ARRAY_ID={first}"]
    ids = OARSystem().array_element_ids(first, 3)
    assert wait_for(lambda: all(s.state.finished for s in _status(oar, *ids).values()), 20)
    assert [(oar.workdir / f"idx.{i}").read_text() for i in ids] == [f"{k} {first}\n" for k in (1, 2, 3)]
    oaremu.set_config(version=3)
    refused = oar("oarsub", "-n", "w", "-l", "/core=1", "true")
    assert refused.returncode == 2 and "No such option: -n" in refused.stderr
    script = "#!/bin/bash\n#OAR -n dask-worker\n#OAR -l /nodes=1/core=1,walltime=00:02\necho hi\n"
    options = OARSystem().submit_options(script, "dask-worker-x-1")
    assert options[:2] == ["--name", "dask-worker-x-1"] and "-n" not in options
    accepted = oar("oarsub", *options, "true")
    assert accepted.returncode == 0 and OARSystem().parse_submit(_result(accepted))
