"""Property-based: hostile strings through every system's template never change the
script's structure and never run anything.

For random text mixed with shell-injection payloads in every user value that reaches
a job script (name, queue, account/project, directives, paths, interface, worker
arguments, scheduler address, worker name), either the value is rejected with a
ValueError before anything is rendered, or the rendered script has exactly the lines
and directives it would have with a harmless value, and running it with bash creates
no marker file.
"""

import os
import subprocess
import tempfile

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from jobqueue.scripts import render
from jobqueue.spec import JobSpec
from jobqueue.systems import FluxSystem, LocalSystem, LSFSystem, OARSystem, PBSSystem, SGESystem, SlurmSystem

MARKER = os.path.join(tempfile.gettempdir(), f"jobqueue-pwned-{os.getpid()}")
PAYLOADS = ["$(touch {m})", "`touch {m}`", ";touch {m}", "\ntouch {m}", "\r\ntouch {m}", "' ; touch {m} ; '",
            '" ; touch {m} ; "', "\\$(touch {m})", "${{IFS}}touch${{IFS}}{m}", "|touch {m}", "&&touch {m}",
            "\n#SBATCH --wrap=touch {m}", "\n#$ -b y touch {m}", "\n#PBS -N x", "$({m})", "#\ntouch {m}"]
NOISE = st.text(alphabet=st.sampled_from(list("abcXYZ019 -_./:=,@%+~$`'\"\\;|&(){}<>*?!#\t")), max_size=12)
SYSTEMS = {"slurm": SlurmSystem, "sge": SGESystem, "pbs": PBSSystem, "lsf": LSFSystem, "oar": OARSystem,
           "flux": FluxSystem, "local": LocalSystem}
SYSTEM_FIELDS = {"slurm": ["account", "queue", "job_mem"], "sge": ["project", "queue", "resource_spec"],
                 "pbs": ["account", "queue", "resource_spec"], "lsf": ["project", "queue"], "oar": ["project", "queue", "resource_spec"],
                 "flux": ["account", "queue"], "local": []}
COMMON_FIELDS = ["job_name", "log_directory", "local_directory", "interface", "worker_extra_args",
                 "job_extra_directives", "job_directives_skip", "scheduler_address", "worker_name", "python",
                 "worker_command"]
BASE = dict(cores=2, memory="2GB", processes=1, walltime="00:10:00", python="/bin/echo")


def _render(system, value=None, field=None):
    kwargs = dict(BASE)
    address, name = "tls://10.0.0.1:8786", "w-0"
    if field == "scheduler_address":
        address = value
    elif field == "worker_name":
        name = value
    elif field in ("worker_extra_args", "job_extra_directives", "job_directives_skip"):
        kwargs[field] = [value]
    elif system == "lsf" and field == "project":  # LSF quotes its project: checked by LSFSystem.prepare
        kwargs["system_options"] = {"lsf_project": LSFSystem.prepare({"project": value})["lsf_project"]}
    elif field is not None:
        kwargs[field] = value
    spec = JobSpec.create(**kwargs)
    return render(spec, SYSTEMS[system](), scheduler_address=address, worker_name=name)


def _structure(system, script):
    prefix = SYSTEMS[system].directive_prefix
    lines = script.split("\n")
    directives = [ln for ln in lines if prefix and ln.startswith(prefix)]
    return len(lines), len(directives)


@pytest.mark.parametrize("system", sorted(SYSTEMS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hostile_values_keep_the_script_intact(system, data):
    field = data.draw(st.sampled_from(COMMON_FIELDS + SYSTEM_FIELDS[system]), label="field")
    payload = data.draw(st.sampled_from(PAYLOADS), label="payload").format(m=MARKER)
    value = data.draw(NOISE, label="before") + payload + data.draw(NOISE, label="after")
    try:
        script = _render(system, value, field)
    except ValueError:
        event(f"{field}: rejected")
        return  # rejected before anything was rendered or submitted: fine
    event(f"{field}: rendered")
    baseline = _render(system, "harmless-value", field)
    assert _structure(system, script) == _structure(system, baseline), (field, value, script)
    if field == "python" or field == "worker_command":
        # the interpreter itself is the user's choice; it must still be one quoted word
        assert script.count("\n") == baseline.count("\n")
        return
    if os.path.exists(MARKER):
        os.unlink(MARKER)
    out = subprocess.run(["bash"], input=script, text=True, capture_output=True, timeout=20,
                         env={"PATH": os.environ["PATH"], "HOME": tempfile.gettempdir()})
    assert not os.path.exists(MARKER), (field, value, script, out.stdout, out.stderr)
