"""Reading Slurm's command output, as seen on the real Slurm 22.05 (ci/slurm)."""

import pytest

from jobqueue.commands import CommandError, CommandResult
from jobqueue.systems import JobState, SlurmSystem
from jobqueue.systems.slurm import slurm_format_bytes_ceil


def res(stdout="", stderr="", rc=0, argv=("squeue",)):
    return CommandResult(tuple(argv), rc, stdout, stderr)


@pytest.mark.parametrize("n, text", [(1, "1K"), (1234, "2K"), (12345678, "12M"), (10**9, "954M"),
                                     (15 * 10**9, "14G"), (2**30, "1G"), (2**30 + 1, "2G")])
def test_format_bytes_ceil(n, text):
    assert slurm_format_bytes_ceil(n) == text


@pytest.mark.parametrize("stdout, job_id", [("7\n", "7"), ("146;testcluster\n", "146")])
def test_parse_submit(stdout, job_id):
    assert SlurmSystem().parse_submit(res(stdout, argv=("sbatch", "--parsable"))) == job_id


def test_parse_submit_garbage_is_an_error():
    with pytest.raises(CommandError, match="could not read a job id"):
        SlurmSystem().parse_submit(res("Submitted batch job 8", argv=("sbatch", "--parsable")))


def test_status_argv_is_one_command_for_all_jobs():
    argv = SlurmSystem().status_argv(["1", "2", "3"])
    assert argv[0] == "squeue" and argv[-1] == "1,2,3" and "-h" in argv


def test_parse_status_states_and_reasons():
    out = ("13|PENDING|BeginTime\n15|PENDING|Resources\n12|PENDING|JobHeldUser\n14|RUNNING|None\n"
           "7|COMPLETED|None\n36|FAILED|NonZeroExitCode\n17|CANCELLED|None\n369|TIMEOUT|TimeLimit\n"
           "99|RUNNING|None\n")
    st = SlurmSystem().parse_status(res(out), ["13", "15", "12", "14", "7", "36", "17", "369"])
    assert st["13"].state == JobState.PENDING and st["13"].reason == "BeginTime"
    assert st["12"].reason == "JobHeldUser"
    assert st["14"].state == JobState.RUNNING and st["14"].reason == ""
    assert st["7"].state == JobState.COMPLETED
    assert st["36"].state == JobState.FAILED and st["36"].reason == "NonZeroExitCode"
    assert st["17"].state == JobState.CANCELLED
    assert st["369"].state == JobState.TIMEOUT
    assert "99" not in st  # not ours


def test_parse_status_single_unknown_id_is_gone_not_error():
    r = res("", "slurm_load_jobs error: Invalid job id specified\n", rc=1)
    st = SlurmSystem().parse_status(r, ["999999"])
    assert set(st) == {"999999"} and st["999999"].gone


def test_parse_status_controller_down_raises_with_stderr():
    r = res("", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n", rc=1)
    with pytest.raises(CommandError, match="Unable to contact slurm controller"):
        SlurmSystem().parse_status(r, ["5"])


def test_history_reads_scontrol_records_and_array_task_ranges(monkeypatch):
    """`scontrol show job -o` as slurm-wlm 22.05 prints it (ci/slurm): one ended job, one
    array whose pending tasks share a line, one running task."""
    import asyncio

    from jobqueue.systems import base

    out = ("JobId=41 JobName=dask-worker UserId=root(0) JobState=COMPLETED Reason=None Dependency=(null) "
           "ExitCode=0:0 RunTime=00:00:05\n"
           "JobId=42 ArrayJobId=42 ArrayTaskId=2-3 ArrayTaskThrottle=0 JobName=dask-worker JobState=PENDING "
           "Reason=JobHeldUser ExitCode=0:0\n"
           "JobId=44 ArrayJobId=42 ArrayTaskId=1 JobName=dask-worker JobState=FAILED Reason=NonZeroExitCode "
           "ExitCode=3:0\n")

    async def fake_run(argv, **kw):
        assert argv == ["scontrol", "show", "job", "-o"]
        return res(out, "", 0)

    monkeypatch.setattr(base, "run_async", fake_run)
    st = asyncio.run(SlurmSystem().history(["41", "42_2", "42_3", "42_1", "7"]))
    assert st["41"].state == JobState.COMPLETED and st["41"].exit_code == 0
    assert st["42_2"].state == st["42_3"].state == JobState.PENDING and st["42_3"].reason == "JobHeldUser"
    assert st["42_1"].state == JobState.FAILED and st["42_1"].exit_code == 3
    assert "7" not in st


def test_sacct_records_settle_jobs_the_controller_forgot():
    """`sacct -X -n -P -o JobID,State,ExitCode,Reason` (sacct(1): --parsable2 is "|"-delimited
    with no trailing "|"; -X one line per job; array tasks still pending together share one
    "<id>_[a-b]" line; a cancel reads "CANCELLED by <uid>"). Real sites run slurmdbd; ci/slurm
    does not, so this is the parsing side only."""
    from jobqueue.systems.slurm import parse_sacct

    out = ("41|COMPLETED|0:0|None\n"
           "42_[2-3]|PENDING|0:0|JobHeldUser\n"
           "42_1|FAILED|3:0|NonZeroExitCode\n"
           "44|CANCELLED by 0|0:15|None\n"
           "45|TIMEOUT|0:0|TimeLimit\n")
    st = parse_sacct(out, ["41", "42_1", "42_2", "42_3", "44", "45", "7"])
    assert st["41"].state == JobState.COMPLETED and st["41"].exit_code == 0
    assert st["42_2"].state == st["42_3"].state == JobState.PENDING and st["42_3"].reason == "JobHeldUser"
    assert st["42_1"].state == JobState.FAILED and st["42_1"].exit_code == 3
    assert st["44"].state == JobState.CANCELLED and st["44"].exit_code == -15
    assert st["45"].state == JobState.TIMEOUT and st["45"].reason == "TimeLimit"
    assert "7" not in st


def test_slurm_limit_refusals_are_told_apart():
    """A job-count limit (QOSMaxSubmitJobPerUserLimit, or the bare policy message) holds jobs;
    the same policy message after a wall-time or GRES limit is about the job itself and fails
    it; "Invalid job array specification" splits the array."""
    from jobqueue.commands import CommandError

    def refusal(*lines):
        return CommandError(["sbatch"], 1, "", "\n".join(lines))

    policy = ("sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
              "(job submit limit, user's size and/or time limits)")
    system = SlurmSystem()
    assert system.submit_limited(refusal("sbatch: error: QOSMaxSubmitJobPerUserLimit", policy))
    assert system.submit_limited(refusal("sbatch: error: AssocMaxSubmitJobLimit", policy))
    assert system.submit_limited(refusal(policy))
    assert not system.submit_limited(refusal("sbatch: error: QOSMaxWallDurationPerJobLimit", policy))
    assert not system.submit_limited(refusal("sbatch: error: QOSGrpGRES", policy))
    assert system.array_too_large(refusal("sbatch: error: Batch job submission failed: Invalid job array specification"))
    assert not system.transient(refusal("sbatch: error: QOSMaxSubmitJobPerUserLimit", policy))
    # rate limiting and a busy controller pass: back off and retry (not a job-count limit)
    for text in ("sbatch: error: Batch job submission failed: Resource temporarily unavailable",
                 "sbatch: error: Batch job submission failed: Rate limit exceeded, please retry momentarily",
                 "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"):
        assert system.transient(refusal(text)) and not system.submit_limited(refusal(text)), text
