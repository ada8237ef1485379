"""JobSpec parsing and validation: good values parse, bad ones fail before submission."""

import pytest

from jobqueue.spec import JobSpec, default_processes, format_walltime, parse_memory, parse_walltime


@pytest.mark.parametrize("text, expected", [
    ("16GB", 16 * 10**9),
    ("16 GiB", 16 * 2**30),
    ("1500MB", 1500 * 10**6),
    ("1500 mb", 1500 * 10**6),
    ("2.5GB", 2_500_000_000),
    ("512MiB", 512 * 2**20),
    ("1TB", 10**12),
    ("100kB", 100_000),
    ("7G", 7 * 10**9),
    (2**30, 2**30),
    ("1000", 1000),
])
def test_memory_good(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("value", ["", "GB", "16 XB", "-1GB", "0", 0, -5, "1e3GB", "16GB;rm", None, True, [1]])
def test_memory_bad_names_field_value_and_example(value):
    with pytest.raises(ValueError) as err:
        parse_memory(value)
    msg = str(err.value)
    assert "memory=" in msg and repr(value) in msg and '"16GB"' in msg


@pytest.mark.parametrize("text, seconds", [
    ("01:30:00", 5400),
    ("00:30:00", 1800),
    ("48:00:00", 48 * 3600),
    ("1-12:00:00", 36 * 3600),
    ("2-00:00:00", 48 * 3600),
    ("1-06", 30 * 3600),
    ("1-06:30", 30 * 3600 + 1800),
    ("45:30", 45 * 60 + 30),
    (90, 5400),
    ("90", 5400),
])
def test_walltime_good(text, seconds):
    assert parse_walltime(text) == seconds


@pytest.mark.parametrize("value", ["", "abc", "1:2:3:4", "00:61:00", "00:00:75", "-1", 0, -10,
                                   "00:00:00", "1-25:00:00", "1h", None, 1.5, True])
def test_walltime_bad(value):
    with pytest.raises(ValueError) as err:
        parse_walltime(value)
    assert "walltime=" in str(err.value) and "write something like" in str(err.value)


def test_format_walltime_round_trip():
    assert format_walltime(parse_walltime("1-02:03:04")) == "26:03:04"
    assert format_walltime(60) == "00:01:00"


@pytest.mark.parametrize("cores, processes", [(1, 1), (2, 2), (4, 4), (6, 3), (8, 4), (9, 3), (12, 4),
                                              (16, 4), (7, 7), (36, 6)])
def test_default_processes_about_sqrt_and_dividing(cores, processes):
    assert default_processes(cores) == processes


@pytest.mark.parametrize("kwargs, field", [
    (dict(cores=0, memory="1GB"), "cores"),
    (dict(cores=-2, memory="1GB"), "cores"),
    (dict(cores="eight", memory="1GB"), "cores"),
    (dict(cores=4, memory="1GB", processes=0), "processes"),
    (dict(cores=4, memory="1GB", processes=8), "processes"),
    (dict(cores=4, memory="lots"), "memory"),
    (dict(cores=4, memory="1GB", walltime="forever"), "walltime"),
    (dict(cores=4, memory="1GB", queue="debug; rm -rf ~"), "queue"),
    (dict(cores=4, memory="1GB", account="a b"), "account"),
    (dict(cores=4, memory="1GB", job_name="x$(touch /tmp/p)"), "job_name"),
    (dict(cores=4, memory="1GB", job_extra_directives=["--comment=a\n#SBATCH --uid=0"]), "job_extra_directives"),
    (dict(cores=4, memory="1GB", job_extra_directives="--comment=a"), "job_extra_directives"),
    (dict(cores=4, memory="1GB", job_script_prologue=["echo a\necho b"]), "job_script_prologue"),
    (dict(cores=4, memory="1GB", shebang="/bin/bash"), "shebang"),
    (dict(cores=4, memory="1GB", job_cpu=0), "job_cpu"),
    (dict(cores=4, memory="1GB", death_timeout="soon"), "death_timeout"),
])
def test_bad_spec_rejected_with_field_and_example(kwargs, field):
    with pytest.raises(ValueError) as err:
        JobSpec.create(**kwargs)
    msg = str(err.value)
    assert f"{field}=" in msg and "write something like" in msg, msg


def test_cores_and_memory_required():
    with pytest.raises(ValueError, match="cores=8, memory=\"16GB\""):
        JobSpec.create(cores=None, memory="1GB")


def test_processes_not_dividing_cores_are_accepted_with_what_is_wasted():
    # as dask-jobqueue: threads = cores // processes; we say what that wastes and what fits
    with pytest.warns(UserWarning, match=r"2 of the 6 cores .* stay unused.*among \[1, 2, 3, 6\]"):
        spec = JobSpec.create(cores=6, memory="6GB", processes=4)
    assert (spec.processes, spec.threads_per_process) == (4, 1)
    with pytest.raises(ValueError, match="cannot exceed cores=2"):
        JobSpec.create(cores=2, memory="6GB", processes=3)


def test_unknown_config_keys_warn_once_with_a_suggestion():
    import dask

    from jobqueue import SLURMCluster, keywords

    keywords._warned_config.discard(("slurm", "coers"))
    with dask.config.set({"jobqueue.slurm.coers": 4}):
        with pytest.warns(UserWarning, match=r"jobqueue.slurm.coers .* ignored; did you mean 'cores'"):
            SLURMCluster.job_cls(cores=1, memory="1GB")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once only
            SLURMCluster.job_cls(cores=1, memory="1GB")


def test_spec_derived_values():
    spec = JobSpec.create(cores=8, memory="16GB", processes=4, walltime="1-00:00:00")
    assert spec.threads_per_process == 2
    assert spec.memory_per_process == 4 * 10**9
    assert spec.walltime_hms == "24:00:00"
    with pytest.raises(Exception):
        spec.cores = 2  # frozen
