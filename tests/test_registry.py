"""One registry: everything about a batch system is declared by its module and derived.

The cluster classes, their docstrings and signatures, the CLI choices and options, the
lazy public names, the config sections and the watchdog's cancel command all follow
from jobqueue.systems.REGISTRY; a new system needs nothing else (docs/add-a-system.md).
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import signal
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

import jobqueue
from jobqueue.cli import main
from jobqueue.cluster import CLUSTER_CLASSES, JobQueueCluster, cluster_class
from jobqueue.keywords import CLUSTER_KEYWORDS, Keyword, UnknownKeywordError, job_keywords
from jobqueue.systems import REGISTRY, all_systems
from jobqueue.systems.local import LocalSystem
from jobqueue.tracker import Journal
from jobqueue.watchdog import owner_gone, process_identity

PACKAGE = os.path.dirname(os.path.abspath(jobqueue.__file__))
SYSTEMS = all_systems()


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_registered_system_has_its_public_cluster_class(name):
    system = SYSTEMS[name]
    cls = getattr(jobqueue, system.cluster_name)
    assert cls is CLUSTER_CLASSES[name] and issubclass(cls, JobQueueCluster)
    assert cls.system_cls is system and cls.config_name == name
    assert system.cluster_name in dir(jobqueue)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_docstring_and_signature_list_every_keyword(name):
    cls = CLUSTER_CLASSES[name]
    params = inspect.signature(cls).parameters
    for kw in job_keywords(SYSTEMS[name]) + CLUSTER_KEYWORDS:
        assert f"\n{kw.name} : " in cls.__doc__, kw.name
        assert kw.name in params, kw.name
    assert "cores : int" in cls.__doc__ and "memory : str" in cls.__doc__
    assert "**job_kwargs" not in str(inspect.signature(cls))
    assert params["silence_logs"].default == "error"  # the real defaults, not None everywhere


@pytest.mark.parametrize("name", list(REGISTRY))
def test_config_section_has_every_keyword(name):
    with open(os.path.join(PACKAGE, "jobqueue.yaml")) as f:
        section = yaml.safe_load(f)["jobqueue"][name]
    wanted = {kw.config for kw in job_keywords(SYSTEMS[name]) + CLUSTER_KEYWORDS if kw.config}
    assert wanted - set(section) == set(), f"jobqueue.yaml [{name}] lacks {sorted(wanted - set(section))}"


@pytest.mark.parametrize("name", list(REGISTRY))
def test_cli_offers_every_system_and_its_keywords(name):
    result = CliRunner().invoke(main, ["script", name, "--help"])
    assert result.exit_code == 0, result.output
    for kw in SYSTEMS[name].keywords:
        if kw.option:
            assert kw.option in result.output, kw.option
    result = CliRunner().invoke(main, ["script", name, "--cores", "2", "--memory", "2GB", "--processes", "1"])
    assert result.exit_code == 0, result.output
    assert "--nthreads 2" in result.output


def test_a_system_keyword_is_refused_by_another_system_from_the_cli():
    result = CliRunner().invoke(main, ["script", "slurm", "--cores", "1", "--memory", "1GB",
                                       "--parallel-environment", "smp"])
    assert result.exit_code == 2 and "parallel_environment" in result.output


def test_journal_records_the_exact_cancel_command(tmp_path):
    for name, system in SYSTEMS.items():
        journal = Journal(str(tmp_path / name / "j.json"), system())
        journal.write(["11", "12"])
        data = json.loads((tmp_path / name / "j.json").read_text())
        assert data["cancel_argv"] == system().cancel_argv(["11", "12"]), name
        assert data["job_ids"] == ["11", "12"] and data["system"] == name


class ToySystem(LocalSystem):
    """A system as a new module would declare it: names, one keyword of its own."""

    name = "toy"
    display_name = "Toy"
    cluster_name = "ToyCluster"
    summary = "A toy batch system."
    keywords = (Keyword("toy_lane", "toy-lane", "Lane of the toy queue.", default='"fast"'),)


def test_a_new_system_is_its_module_only():
    cls = cluster_class(ToySystem)
    assert cls.__name__ == "ToyCluster" and "toy_lane : str" in cls.__doc__
    spec = cls.build_spec(cores=1, memory="1GB", toy_lane="slow")
    assert spec.system_options == {"toy_lane": "slow"}
    with pytest.raises(UnknownKeywordError, match="toy_lanes.*did you mean 'toy_lane'"):
        cls.build_spec(cores=1, memory="1GB", toy_lanes="slow")


def test_star_import_does_not_shadow_distributed_localcluster():
    namespace: dict = {}
    exec("from distributed import LocalCluster\nfrom jobqueue import *", namespace)
    import distributed

    assert namespace["LocalCluster"] is distributed.LocalCluster
    assert "SLURMCluster" in namespace and "PBSCluster" in namespace
    assert "not ``distributed.LocalCluster``" in jobqueue.LocalCluster.__doc__


def test_base_class_alone_is_refused():
    with pytest.raises(ValueError, match="You need to specify a Job type.*SLURMCluster"):
        JobQueueCluster(cores=1, memory="1GB")


@pytest.mark.parametrize("argv", [[sys.executable, "-m", "jobqueue", "--help"],
                                  [sys.executable, os.path.join(PACKAGE, "cli.py"), "--help"],
                                  [sys.executable, os.path.join(PACKAGE, "cli.py"), "mpi", "--help"],
                                  ["jobqueue", "--help"]])
def test_every_way_of_running_the_command(argv):
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout or "usage:" in out.stdout


def test_zombie_owner_is_gone():
    # a parent that does not reap (a workflow tool's Popen without wait()): the owner is
    # a zombie, and its jobs must be cancelled as if it had been reaped
    child = subprocess.Popen(["sleep", "60"])
    data = {"owner_pid": child.pid, "owner_started": process_identity(child.pid)}
    assert not owner_gone(data)
    os.kill(child.pid, signal.SIGKILL)
    try:
        deadline = __import__("time").monotonic() + 10
        while open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            assert __import__("time").monotonic() < deadline
        assert os.path.exists(f"/proc/{child.pid}")  # not reaped: the pid still exists
        assert owner_gone(data)
    finally:
        child.wait()


def test_modules_stay_small():
    """Each file one job: no module over ~400 lines, class over ~300, function over ~60."""
    too_big = []
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            text = open(path).read()
            rel = os.path.relpath(path, PACKAGE)
            if text.count("\n") > 420:
                too_big.append(f"{rel}: {text.count(chr(10))} lines")
            for node in ast.walk(ast.parse(text)):
                size = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
                if isinstance(node, ast.ClassDef) and size > 300:
                    too_big.append(f"{rel}: class {node.name} {size} lines")
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > 65:
                    too_big.append(f"{rel}: {node.name}() {size} lines")
    assert not too_big, too_big
