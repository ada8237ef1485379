"""Command-output parsing for Grid Engine and PBS, on outputs seen from the real tools."""

import pytest

from jobqueue.commands import CommandError, CommandResult
from jobqueue.systems import JobState, PBSSystem, SGESystem
from jobqueue.systems.pbs import ended_state, pbs_format_bytes_ceil
from jobqueue.systems.sge import sge_state

QSTAT_XML = """<?xml version='1.0'?>
<job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd">
  <queue_info>
    <job_list state="running">
      <JB_job_number>5</JB_job_number>
      <JAT_prio>0.50000</JAT_prio>
      <JB_name>runner</JB_name>
      <JB_owner>root</JB_owner>
      <state>r</state>
      <JAT_start_time>2026-11-22T10:27:27</JAT_start_time>
      <queue_name>all.q@vm</queue_name>
      <slots>1</slots>
    </job_list>
    <job_list state="running">
      <JB_job_number>7</JB_job_number>
      <state>t</state>
      <tasks>1</tasks>
    </job_list>
  </queue_info>
  <job_info>
    <job_list state="pending">
      <JB_job_number>6</JB_job_number>
      <state>hqw</state>
    </job_list>
    <job_list state="pending">
      <JB_job_number>9</JB_job_number>
      <state>qw</state>
    </job_list>
    <job_list state="pending">
      <JB_job_number>10</JB_job_number>
      <state>Eqw</state>
    </job_list>
  </job_info>
</job_info>
"""


def _result(stdout="", stderr="", rc=0, argv=("qstat",)):
    return CommandResult(tuple(argv), rc, stdout, stderr)


def test_sge_qstat_xml():
    st = SGESystem().parse_status(_result(QSTAT_XML), ["5", "6", "7.1", "9", "10", "11"])
    assert st["5"].state == JobState.RUNNING
    assert st["7.1"].state == JobState.RUNNING  # "t" (transferring) counts as running
    assert (st["6"].state, st["6"].reason) == (JobState.PENDING, "held")
    assert (st["9"].state, st["9"].reason) == (JobState.PENDING, "queued")
    assert st["10"].state == JobState.FAILED and st["10"].stuck  # Eqw: failed, must be deleted
    assert "11" not in st  # no longer listed: ended


def test_sge_empty_and_broken_outputs():
    empty = "<?xml version='1.0'?>\n<job_info>\n  <queue_info>\n  </queue_info>\n  <job_info>\n  </job_info>\n</job_info>\n"
    assert SGESystem().parse_status(_result(empty), ["1"]) == {}
    with pytest.raises(CommandError, match="qmaster"):
        SGESystem().parse_status(_result("", "error: unable to send message to qmaster", 1), ["1"])


@pytest.mark.parametrize("code,state", [("r", "running"), ("qw", "pending"), ("hqw", "pending"), ("Eqw", "failed"),
                                        ("dr", "running"), ("s", "pending"), ("Rr", "running")])
def test_sge_state_codes(code, state):
    assert sge_state(code)[0].value == state


@pytest.mark.parametrize("stdout,job_id", [("5\n", "5"), ("9.1-3:1\n", "9"),
                                           ('Your job 27 ("true") has been submitted\n', "27")])
def test_sge_submit_output(stdout, job_id):
    assert SGESystem().parse_submit(_result(stdout, argv=("qsub", "-terse"))) == job_id


def test_pbs_submit_output():
    parse = PBSSystem().parse_submit
    assert parse(_result("1234.pbs.example.com\n")) == "1234.pbs.example.com"
    assert parse(_result("1234[].srv\n")) == "1234[].srv"
    assert parse(_result("144\n")) == "144"  # Slurm's Torque wrapper
    with pytest.raises(CommandError):
        parse(_result("There was an error running the Slurm sbatch command.\n", rc=0))


def test_pbs_status_without_jobs_key_and_partial_errors():
    text = '{\n    "timestamp":1,\n    "pbs_version":"23.06.06",\n    "pbs_server":"srv"\n}'
    st = PBSSystem().parse_status(_result(text, "qstat: Unknown Job Id 3.srv\n", 153), ["3.srv"])
    assert set(st) == {"3.srv"} and st["3.srv"].gone
    both = ('{"timestamp":1,"pbs_version":"23.06.06","pbs_server":"srv","Jobs":{"4.srv":{"job_state":"Q",'
            '"comment":"Not Running: Insufficient amount of resource: ncpus (R: 8 A: 2 T: 2)"}}}')
    st = PBSSystem().parse_status(_result(both, "qstat: Unknown Job Id 3.srv\n", 153), ["3.srv", "4.srv"])
    assert st["3.srv"].gone and not st["4.srv"].gone and st["4.srv"].state == JobState.PENDING
    assert st["4.srv"].reason.startswith("Not Running: Insufficient amount of resource")
    with pytest.raises(CommandError):
        PBSSystem().parse_status(_result("", "qstat: cannot connect to server srv (errno=111)\n", 111), ["4.srv"])


@pytest.mark.parametrize("exit_status,comment,substate,expected", [
    (0, "Job run at x and finished", 92, (JobState.COMPLETED, 0)),
    (3, "and failed", 93, (JobState.FAILED, 3)),
    (-29, "and exceeded resource walltime", 93, (JobState.TIMEOUT, -29)),
    (271, "and terminated by alice@h", 91, (JobState.CANCELLED, -15)),
    (265, "", 93, (JobState.FAILED, -9)),
    (None, "", 91, (JobState.CANCELLED, None)),
    ("7", "", 93, (JobState.FAILED, 7)),  # numbers may arrive as strings
])
def test_pbs_ended_state(exit_status, comment, substate, expected):
    assert ended_state(exit_status, comment, substate) == expected


def test_pbs_memory_format_matches_dask_jobqueue():
    assert pbs_format_bytes_ceil(1) == "1B"
    assert pbs_format_bytes_ceil(12345678) == "12MB"
    assert pbs_format_bytes_ceil(15000000000) == "14GB"
    assert pbs_format_bytes_ceil(10 * 1024 + 1) == "11kB"
