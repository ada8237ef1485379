"""One description per batch system, so behavioural tests are written once.

Each Backend says how to see the queue, kill a job from outside, hold jobs so they stay
pending, pass an environment variable through a directive, and which submission error
the system gives for an unknown queue. A new batch system = one more Backend here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
PBS_EMULATOR_BIN = os.path.join(HERE, "pbs_emulator", "bin")
SGE_BIN = "/opt/sge/bin"
SGE_ENV = {"SGE_ROOT": "/var/lib/gridengine", "SGE_CELL": "default"}

LSF_EMULATOR_BIN = os.path.join(HERE, "lsf_emulator", "bin")
OAR_EMULATOR_BIN = os.path.join(HERE, "oar_emulator", "bin")
HTCONDOR_EMULATOR_BIN = os.path.join(HERE, "htcondor_emulator", "bin")
FLUX_EMULATOR_BIN = os.path.join(HERE, "flux_emulator", "bin")

# every test run gets its own emulated PBS server and LSF cluster (state, spool, job ids)
os.environ.setdefault("PBSEMU_HOME", tempfile.mkdtemp(prefix="pbsemu-"))
os.environ.setdefault("LSFEMU_HOME", tempfile.mkdtemp(prefix="lsfemu-"))
os.environ.setdefault("LSF_ENVDIR", os.path.join(os.environ["LSFEMU_HOME"], "conf"))
os.environ.setdefault("OAREMU_HOME", tempfile.mkdtemp(prefix="oaremu-"))
os.environ.setdefault("HTCEMU_HOME", tempfile.mkdtemp(prefix="htcemu-"))
os.environ.setdefault("FLUXEMU_HOME", tempfile.mkdtemp(prefix="fluxemu-"))
sys.path.insert(0, os.path.join(HERE, "pbs_emulator"))
sys.path.insert(0, os.path.join(HERE, "lsf_emulator"))
sys.path.insert(0, os.path.join(HERE, "oar_emulator"))
sys.path.insert(0, os.path.join(HERE, "htcondor_emulator"))
sys.path.insert(0, os.path.join(HERE, "flux_emulator"))
import fluxemu  # noqa: E402
import htcemu  # noqa: E402
import lsfemu  # noqa: E402
import oaremu  # noqa: E402
import pbsemu  # noqa: E402

# LSF's kill sequence steps 10 s apart (JOB_TERMINATE_INTERVAL, lsf-interface.md §4); shorter
# here so that cancelled jobs end within the tests' patience. lsf.conf says MB (§1.4, §6).
lsfemu.set_config(job_terminate_interval=2)


def _run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)


@dataclass
class Backend:
    name: str
    cluster: str                      # class name in jobqueue
    path: str | None = None           # prepended to PATH while the test runs
    env: dict = field(default_factory=dict)
    hold: tuple[str, ...] = ()        # job_extra_directives that keep a job pending
    hold_reason: str = ""             # the reason the cluster then shows
    bad_queue: str | None = None      # a queue name the system rejects at submission
    bad_queue_message: str = ""       # ... and a piece of its own error message
    env_directive: str | None = None  # directive exporting {var}={value} into the job
    env_var: str | None = None        # ... or the variable a directive sets (OAR: --project -> OAR_PROJECT_NAME)
    bad_kwargs: dict | None = None    # keywords the system refuses at submission (default: queue=bad_queue)

    @property
    def cls(self):
        import jobqueue

        return getattr(jobqueue, self.cluster)

    def environ(self) -> dict:
        env = dict(os.environ)
        env.update(self.env)
        if self.path:
            env["PATH"] = f"{self.path}:{env['PATH']}"
        return env

    def unavailable(self) -> str | None:
        return None

    def live_ids(self) -> set[str]:
        raise NotImplementedError

    def alive(self, ids) -> set[str]:
        """Which of ids are still queued or running."""
        return set(ids) & self.live_ids()

    def kill(self, job_id: str) -> None:
        raise NotImplementedError


class Slurm(Backend):
    def unavailable(self):
        if not shutil.which("sbatch"):
            return "sbatch is not on PATH (start one with `bash ci/slurm/start.sh`)"
        out = _run(["scontrol", "ping"])
        if "UP" not in out.stdout:
            return f"slurmctld does not answer `scontrol ping`: {out.stdout.strip()} {out.stderr.strip()}"
        return None

    def live_ids(self):
        out = _run(["squeue", "-h", "-r", "-o", "%i"])
        return {line.strip() for line in out.stdout.splitlines() if line.strip()}

    def kill(self, job_id):
        _run(["scancel", job_id], check=True)


class MultiHost(Slurm):
    """The multi-host site's own Slurm (ci/multihost/start.sh), asked from this machine."""
    SITE = "/etc/jobqueue-multihost/env"
    ON = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ci", "multihost", "on.sh")

    def environ(self) -> dict:
        env = super().environ()
        if os.path.exists(self.SITE):
            env.update(line.strip().split("=", 1) for line in open(self.SITE) if "=" in line)
        return env

    def unavailable(self):
        if not os.path.exists(self.SITE):
            return "the multi-host site is not set up (start it with `bash ci/multihost/start.sh`, root)"
        try:
            pid = open("/run/jobqueue-multihost/mh-login.pid").read().strip()
            if open(f"/proc/{pid}/comm").read().strip() != "sleep":
                raise OSError(pid)
        except OSError:
            return "the multi-host site's hosts are down (start them with `bash ci/multihost/start.sh`, root)"
        out = _run(["scontrol", "ping"], env=self.environ())
        if "UP" not in out.stdout:
            return f"the site's slurmctld does not answer `scontrol ping`: {out.stdout.strip()} {out.stderr.strip()}"
        return None

    def live_ids(self):
        out = _run(["squeue", "-h", "-r", "-o", "%i"], env=self.environ())
        return {line.strip() for line in out.stdout.splitlines() if line.strip()}

    def kill(self, job_id):
        _run(["scancel", job_id], check=True, env=self.environ())


class SGE(Backend):
    def unavailable(self):
        if not os.path.exists(os.path.join(SGE_BIN, "qsub")):
            return f"{SGE_BIN}/qsub not found (start Grid Engine with `bash ci/sge/start.sh`)"
        out = _run(self.argv("qstat"), env=self.environ())
        if out.returncode != 0:
            return f"Grid Engine's qmaster does not answer: {out.stderr.strip()}"
        return None

    def live_ids(self):
        """Job numbers, and "<number>.<task>" for every array task (pending ranges expanded)."""
        import xml.etree.ElementTree as ET

        from jobqueue.systems.sge import _task_ids

        out = _run(self.argv("qstat", "-xml"), env=self.environ())
        ids = set()
        for entry in ET.fromstring(out.stdout).iter("job_list"):
            number = (entry.findtext("JB_job_number") or "").strip()
            ids.add(number)
            ids.update(f"{number}.{t}" for t in _task_ids((entry.findtext("tasks") or "").strip()))
        return ids

    def kill(self, job_id):
        _run(self.argv("qdel", job_id), env=self.environ(), check=True)

    def argv(self, command: str, *args: str) -> list[str]:
        return [os.path.join(SGE_BIN, command), *args]


class MultiHostSGE(SGE):
    """The multi-host site's Grid Engine cell (ci/multihost/sge.sh), asked on its login host
    (the site's qmaster knows no other host of this machine)."""

    def unavailable(self):
        return MULTIHOST.unavailable() or super().unavailable()

    def argv(self, command: str, *args: str) -> list[str]:
        return [MultiHost.ON, "mh-login", *super().argv(command, *args)]


class PBS(Backend):
    def live_ids(self):
        return set(pbsemu.live_jobs())

    def kill(self, job_id):
        pbsemu.lose(job_id)  # a node failure: the job and its processes vanish


class LSF(Backend):
    def live_ids(self):
        return set(lsfemu.live_jobs())

    def kill(self, job_id):
        _run([os.path.join(LSF_EMULATOR_BIN, "bkill"), job_id], env=self.environ())


class OAR(Backend):
    def live_ids(self):
        return set(oaremu.live_jobs())

    def kill(self, job_id):
        _run([os.path.join(OAR_EMULATOR_BIN, "oardel"), job_id], env=self.environ())


class HTCondor(Backend):
    def live_ids(self):
        return set(htcemu.live_jobs())

    def kill(self, job_id):
        _run([os.path.join(HTCONDOR_EMULATOR_BIN, "condor_rm"), job_id], env=self.environ())


class Flux(Backend):
    def live_ids(self):
        return set(fluxemu.live_jobs())

    def kill(self, job_id):
        _run([os.path.join(FLUX_EMULATOR_BIN, "flux"), "cancel", job_id], env=self.environ())


class Local(Backend):
    def live_ids(self):
        return set()  # local jobs are process groups: see alive()

    def alive(self, ids):
        out = set()
        for job_id in ids:
            try:
                os.killpg(int(job_id), 0)
                out.add(job_id)
            except ProcessLookupError:
                pass
        return out

    def kill(self, job_id):
        os.killpg(int(job_id), signal.SIGKILL)


MULTIHOST = MultiHost("multihost", "SLURMCluster")
MULTIHOST_SGE = MultiHostSGE("multihost-sge", "SGECluster", path=SGE_BIN,
                             env={"SGE_ROOT": "/var/lib/gridengine", "SGE_CELL": "multihost"})
BACKENDS: dict[str, Backend] = {
    "slurm": Slurm("slurm", "SLURMCluster", hold=("--begin=now+600",), hold_reason="BeginTime",
                   bad_queue="nosuchpartition", bad_queue_message="invalid partition",
                   env_directive="--export=ALL,{var}={value}"),
    "sge": SGE("sge", "SGECluster", path=SGE_BIN, env=SGE_ENV, hold=("-h",), hold_reason="held",
               bad_queue="nosuch.q", bad_queue_message='unknown queue "nosuch.q"',
               env_directive="-v {var}={value}"),
    "pbs": PBS("pbs", "PBSCluster", path=PBS_EMULATOR_BIN, env={"PBSEMU_HOME": os.environ["PBSEMU_HOME"]},
               hold=("-h",), hold_reason="held", bad_queue="nosuch", bad_queue_message="Unknown queue",
               env_directive="-v {var}={value}"),
    "moab": PBS("moab", "MoabCluster", path=PBS_EMULATOR_BIN, env={"PBSEMU_HOME": os.environ["PBSEMU_HOME"]},
                 hold=("-h",), hold_reason="held", bad_queue="nosuch", bad_queue_message="Unknown queue",
                 env_directive="-v {var}={value}"),
    "lsf": LSF("lsf", "LSFCluster", path=LSF_EMULATOR_BIN,
               env={"LSFEMU_HOME": os.environ["LSFEMU_HOME"], "LSF_ENVDIR": os.environ["LSF_ENVDIR"]},
               hold=("-H",), hold_reason="The job was suspended by the user while pending",
               bad_queue="nosuch", bad_queue_message="nosuch: No such queue. Job not submitted.",
               env_directive='-env "all,{var}={value}"'),
    "oar": OAR("oar", "OARCluster", path=OAR_EMULATOR_BIN, env={"OAREMU_HOME": os.environ["OAREMU_HOME"],
                                                                "DASK_JOBQUEUE__OAR__MEMORY_PER_CORE_PROPERTY_NAME": "memcore"},
               hold=("--hold",), hold_reason="held", bad_queue="nosuch",
               bad_queue_message="# Error: queue 'nosuch' does not exist", env_directive="--project {value}",
               env_var="OAR_PROJECT_NAME"),
    "htcondor": HTCondor("htcondor", "HTCondorCluster", path=HTCONDOR_EMULATOR_BIN,
                         env={"HTCEMU_HOME": os.environ["HTCEMU_HOME"],
                              "DASK_JOBQUEUE__HTCONDOR__DISK": "1GB"},  # for processes the tests start
                         hold=("hold = True",), hold_reason="held",
                         bad_kwargs={"job_extra_directives": {"+Broken": "("}},
                         bad_queue_message="ERROR: Parse error in expression",
                         env_directive='environment = "{var}={value}"'),
    "flux": Flux("flux", "FluxCluster", path=FLUX_EMULATOR_BIN, env={"FLUXEMU_HOME": os.environ["FLUXEMU_HOME"]},
                 hold=("--urgency=hold",), hold_reason="held", bad_kwargs={"job_extra_directives": ["-t 00:30:00"]},
                 bad_queue_message="flux-batch: ERROR: invalid Flux standard duration",
                 env_directive="--env={var}={value}"),
    "local": Local("local", "LocalCluster"),
}
BATCH = ["slurm", "sge", "pbs", "moab", "lsf", "oar", "htcondor", "flux"]
ALL = BATCH + ["local"]
