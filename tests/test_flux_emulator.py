"""The Flux emulator behaves as the research note says Flux does (flux-interface.md; the
section of each behaviour is in its test's docstring, §6.5 lists the scenarios). Each test
runs the emulator's real `flux` executable in a private instance directory, and where it
matters checks that jobqueue's Flux parser reads the result right.
"""

import os
import subprocess

import pytest

from backends import FLUX_EMULATOR_BIN, fluxemu
from jobqueue.commands import CommandResult
from jobqueue.systems import FluxSystem, JobState
from jobqueue.systems.flux import f58_decimal, plain
from jobqueue.watchdog import unconfirmed
from util import wait_for


@pytest.fixture
def flux(tmp_path, monkeypatch):
    home = tmp_path / "instance"
    monkeypatch.setenv("FLUXEMU_HOME", str(home))
    monkeypatch.setattr(fluxemu, "HOME", str(home))
    monkeypatch.setenv("PATH", f"{FLUX_EMULATOR_BIN}:{os.environ['PATH']}")
    fluxemu.set_config(sched_latency=0.1, kill_timeout=1)
    workdir = tmp_path / "work"
    workdir.mkdir()

    def run(*argv, input=None, env=None):
        return subprocess.run(["flux", *argv], capture_output=True, text=True, timeout=30, cwd=workdir, input=input,
                              env={**os.environ, **(env or {})})

    run.workdir = workdir
    yield run
    fluxemu.reset()


def _status(flux, *ids):
    out = flux(*FluxSystem().status_argv(list(ids))[1:])
    return FluxSystem().parse_status(CommandResult(tuple(out.args), out.returncode, out.stdout, out.stderr), list(ids))


def _submit(flux, script, *argv, env=None):
    out = flux("batch", *argv, input=script, env=env)
    assert out.returncode == 0, out.stderr
    return FluxSystem().parse_submit(CommandResult(tuple(out.args), 0, out.stdout, out.stderr))


def test_ids_are_f58_with_the_locales_prefix(flux):
    """§1.5, §6.5 item 1: the id alone on stdout, `ƒ...` in a UTF-8 locale, `f...` with LANG=C
    or FLUX_F58_FORCE_ASCII; both name the job; jobqueue keeps the ASCII form."""
    utf = flux("batch", "-n1", input="#!/bin/sh\ntrue\n", env={"LC_ALL": "C.UTF-8"})
    asc = flux("batch", "-n1", input="#!/bin/sh\ntrue\n", env={"LC_ALL": "C"})
    forced = flux("batch", "-n1", input="#!/bin/sh\ntrue\n", env={"LC_ALL": "C.UTF-8", "FLUX_F58_FORCE_ASCII": "1"})
    assert forced.stdout.startswith("f")
    assert utf.stdout.startswith("ƒ") and asc.stdout.startswith("f") and asc.stdout.strip()[1:].isalnum()
    job = FluxSystem().parse_submit(CommandResult(tuple(utf.args), 0, utf.stdout, ""))
    assert job == plain(utf.stdout.strip()) and job.startswith("f")
    assert wait_for(lambda: _status(flux, job)[job].state == JobState.COMPLETED, 20)
    assert flux("jobs", "-n", "-o", "{id.f58plain}", utf.stdout.strip()).stdout.strip() == job


def test_directive_rules(flux):
    """§1.3, §6.5 item 2: directives before the first command; one after it is an orphan; a
    changed sentinel is an error; a bad option in a directive exits 2; the command line wins."""
    orphan = flux("batch", input="#!/bin/sh\n#flux: -n1\necho hi\n#flux: -N1\n")
    assert orphan.returncode == 1 and "orphan 'flux:' detected" in orphan.stderr
    mixed = flux("batch", input="#!/bin/sh\n#flux: -n1\n# flux: -N1\ntrue\n")
    assert mixed.returncode == 1 and "sentinel changed from '#flux:' to '# flux:'" in mixed.stderr
    bad = flux("batch", input="#!/bin/sh\n#flux: -n1\n#flux: --no-such-option\ntrue\n")
    assert bad.returncode == 2 and "argument parsing failed at batch line 3" in bad.stderr
    job = _submit(flux, "#!/bin/sh\n#flux: --job-name=fromfile\n#flux: -n1\ntrue\n", "--job-name=fromcli")
    assert flux("jobs", "-n", "-o", "{name}", job).stdout.strip() == "fromcli"


@pytest.mark.parametrize("value,seconds", [("30", 1800), ("30m", 1800), ("1800s", 1800), ("2h", 7200),
                                           ("1800.0", 108000)])
def test_time_limit_units(flux, value, seconds):
    """§1.2, §6.5 item 3: a bare number is minutes (1800.0 is 30 hours); HH:MM:SS is refused;
    jobqueue always writes a unit."""
    job = _submit(flux, "#!/bin/sh\nsleep 30\n", "-n1", "-t", value, "--urgency=hold")
    assert fluxemu.read_state()["jobs"][str(int(f58_decimal(job)))]["limit"] == seconds
    flux("cancel", job)
    refused = flux("batch", "-n1", "-t", "00:30:00", input="#!/bin/sh\ntrue\n")
    assert refused.returncode == 1 and refused.stderr.strip() == "flux-batch: ERROR: invalid Flux standard duration"
    from jobqueue.systems.flux import flux_duration

    assert [flux_duration(s) for s in (1800, 7200, 90)] == ["30m", "2h", "90s"]


def test_refusals(flux):
    """§1.1, §1.4, §6.5 items 4-5: no #!, no -n/-N, -N above -n: exit 1 with flux-batch's words;
    --cc does not exist on flux batch (exit 2)."""
    cases = [(["-n1"], "true\n", "does not appear to start with '#!'"),
             ([], "#!/bin/sh\ntrue\n", "Number of slots to allocate must be specified"),
             (["-N2", "-n1"], "#!/bin/sh\ntrue\n", "node count must not be greater than task count")]
    for argv, script, message in cases:
        out = flux("batch", *argv, input=script)
        assert out.returncode == 1 and message in out.stderr, out.stderr
    cc = flux("batch", "-n1", "--cc=1-4", input="#!/bin/sh\ntrue\n")
    assert cc.returncode == 2 and "unrecognized arguments" in cc.stderr


def test_batch_environment_and_output(flux, monkeypatch):
    """§1.5, §4.1, §6.5 items 6 and 10: the submitter's environment plus FLUX_URI and
    FLUX_ENCLOSING_ID, never FLUX_JOB_ID; output in flux-<id>.out with stderr merged; {{id.dec}}
    is expanded, %J is not."""
    monkeypatch.setenv("JQ_SUBMITTER", "kept")
    monkeypatch.setenv("FLUX_JOB_ID", "from-outside")
    job = _submit(flux, "#!/bin/sh\necho $JQ_SUBMITTER ${FLUX_JOB_ID:-none} $FLUX_ENCLOSING_ID\necho oops >&2\n",
                  "-n1", "--output=out-{{id.dec}}-%J.txt")
    assert wait_for(lambda: _status(flux, job)[job].state.finished, 20)
    text = (flux.workdir / f"out-{f58_decimal(job)}-%J.txt").read_text()
    assert text == f"kept none {job}\noops\n"
    default = _submit(flux, "#!/bin/sh\necho hi\n", "-n1", env={"LC_ALL": "C.UTF-8"})
    assert wait_for(lambda: _status(flux, default)[default].state.finished, 20)
    assert (flux.workdir / f"flux-ƒ{default[1:]}.out").read_text() == "hi\n"


def test_results_unknown_ids_and_cancel(flux):
    """§2.1, §2.4, §3, §6.5 items 7-8 and 11: ended jobs stay listed with their result; an unknown
    id says "JobID <id> unknown" (exit 1 only when none is known); flux cancel is silent, and a
    finished job's "job is inactive" (exit 1) is no error for jobqueue; a pending job canceled
    has returncode -128; a request larger than the instance is accepted, then FAILED."""
    ok = _submit(flux, "#!/bin/sh\ntrue\n", "-n1")
    bad = _submit(flux, "#!/bin/sh\nexit 3\n", "-n1")
    held = _submit(flux, "#!/bin/sh\ntrue\n", "-n1", "--urgency=hold")
    huge = _submit(flux, "#!/bin/sh\ntrue\n", "-n1", "-c", "999")
    assert wait_for(lambda: all(_status(flux, i)[i].state.finished for i in (ok, bad, huge)), 20)
    st = _status(flux, ok, bad, huge, held)
    assert (st[ok].state, st[bad].state, st[bad].exit_code) == (JobState.COMPLETED, JobState.FAILED, 3)
    assert st[huge].state == JobState.FAILED and (st[held].state, st[held].reason) == (JobState.PENDING, "held")
    unknown = flux("jobs", "-n", "fBBBBBBB")
    assert (unknown.returncode, unknown.stderr) == (1, "JobID fBBBBBBB unknown\n")
    mixed = flux("jobs", "-n", "-o", "{id.f58plain}", ok, "fBBBBBBB")
    assert mixed.returncode == 0 and mixed.stdout.strip() == ok
    assert _status(flux, "fBBBBBBB")["fBBBBBBB"].gone
    first = flux("cancel", held)
    assert (first.returncode, first.stdout, first.stderr) == (0, "", "")
    assert fluxemu.read_state()["jobs"][f58_decimal(held)]["returncode"] == -128
    again = flux("cancel", held)
    assert again.returncode == 1 and again.stderr.endswith(": job is inactive\n")
    assert not unconfirmed(again.returncode, again.stdout + "\n" + again.stderr, FluxSystem.cancel_ok)


def test_time_limit_sends_sigalrm(flux):
    """§4.2, §6.5 item 9: at expiry SIGALRM (not SIGTERM), then SIGKILL; result TIMEOUT."""
    script = "#!/bin/bash\ntrap 'echo ALRM; exit 0' ALRM\ntrap 'echo TERM' TERM\nwhile true; do sleep 0.1; done\n"
    job = _submit(flux, script, "-n1", "-t", "2s", "--output=t.out")
    assert wait_for(lambda: _status(flux, job)[job].state.finished, 20)
    assert _status(flux, job)[job].state == JobState.TIMEOUT
    lines = (flux.workdir / "t.out").read_text().splitlines()
    assert "ALRM" in lines and "TERM" not in lines, lines
