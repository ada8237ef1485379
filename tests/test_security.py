"""Secure by default: TLS with the user's own credentials on every batch system, private
files; other users (a process with a home and dask config of its own) are refused, while
any process of the same user connects with no argument."""

import glob
import os
import stat
import subprocess
import sys
import warnings

import pytest
from distributed import Client
from distributed.security import Security

from backends import ALL
from jobqueue import LocalCluster, connect
from jobqueue.security import user_tls_directory


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


STRANGER = r"""
import os, sys
from distributed import Client
from distributed.security import Security
security = Security.temporary() if sys.argv[2] == "other-credentials" else None
with Client(sys.argv[1], security=security, timeout=5) as c:
    print("RAN", c.submit(lambda: 1).result(timeout=5))
"""


def _refused(address, how="none"):
    """True if a stranger's process (another user on the login node: a home and dask config
    of its own, none of our credentials, which are 0600 files in a 0700 directory, checked
    by the tests below) cannot run a task."""
    import tempfile

    home = tempfile.mkdtemp(prefix="stranger-home-")
    os.chmod(home, 0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env["HOME"] = home
    try:
        out = subprocess.run([sys.executable, "-c", STRANGER, address, how], capture_output=True, text=True,
                             timeout=30, env=env)
    except subprocess.TimeoutExpired:
        return True  # hung in the handshake: it got nothing
    return "RAN" not in out.stdout and out.returncode != 0


def _cmdlines():
    out = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as f:
                out.append(f.read().decode(errors="replace"))
        except OSError:
            pass
    return out


@pytest.mark.parametrize("system", ALL)
def test_tls_by_default_and_strangers_are_refused(system, backend):
    with backend.cls(cores=1, memory="1GB", processes=1) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        script = cluster.job_script()
        assert "BEGIN" not in script and "PRIVATE KEY" not in script  # files, never inline
        cluster.scale(jobs=1)
        with Client(cluster) as client:  # the owner needs no extra step
            client.wait_for_workers(1, timeout=120)
            assert all(w.startswith("tls://") for w in client.scheduler_info()["workers"])
            future = client.submit(lambda x: x * 3, 14)
            # while the owner computes: no credentials, plain TCP, or another cluster's credentials
            assert _refused(cluster.scheduler_address)
            assert _refused(cluster.scheduler_address.replace("tls://", "tcp://"))
            assert _refused(cluster.scheduler_address, "other-credentials")
            assert future.result() == 42
            assert not any("PRIVATE KEY" in c or "BEGIN CERTIFICATE" in c for c in _cmdlines())
            secrets = user_tls_directory()  # the user's, shared by all the user's clusters
            assert _mode(secrets) == 0o700
            files = os.listdir(secrets)
            assert {"ca.pem", "cert.pem", "key.pem"} == set(files)
            assert all(_mode(os.path.join(secrets, f)) == 0o600 for f in files)
            assert f"--tls-key {os.path.join(secrets, 'key.pem')}" in script
            assert not cluster._credentials.written  # no per-cluster copies to leave behind
            assert _mode(cluster.job_spec.log_directory) == 0o700


NEVER_IMPORTS_JOBQUEUE = r"""
import sys
from distributed import Client
with Client(scheduler_file=sys.argv[1], timeout=20) as c:
    assert "jobqueue" not in sys.modules
    print("RAN", c.submit(lambda: 2 + 3).result(timeout=20))
"""


def test_plain_client_scheduler_file_works_for_the_same_user(tmp_path):
    # dask-mpi's and many notebooks' way in: Client(scheduler_file=...), in this process
    # (which imported jobqueue) and in one that never imports it (the dask config file)
    with LocalCluster(cores=1, memory="1GB", processes=1) as cluster:
        cluster.scale(jobs=1)
        path = cluster.write_scheduler_file(str(tmp_path / "scheduler.json"))
        with Client(scheduler_file=path) as client:
            client.wait_for_workers(1, timeout=60)
            assert client.submit(lambda: 6 * 7).result() == 42
        out = subprocess.run([sys.executable, "-c", NEVER_IMPORTS_JOBQUEUE, path], capture_output=True, text=True,
                             timeout=60)
        assert "RAN 5" in out.stdout, out.stderr[-2000:]
        assert _refused(cluster.scheduler_address)  # another user still cannot


def test_scheduler_file_carries_security_and_is_private(tmp_path):
    with LocalCluster(cores=1, memory="1GB", processes=1) as cluster:
        cluster.scale(jobs=1)
        path = str(tmp_path / "scheduler.json")
        open(path, "w").close()
        os.chmod(path, 0o644)  # an old file with wide permissions is tightened
        cluster.write_scheduler_file(path)
        assert _mode(path) == 0o600
        with connect(path) as other:  # e.g. Jupyter on another node
            other.wait_for_workers(1, timeout=60)
            assert other.submit(lambda: 5).result() == 5
        with open(path) as f:
            assert "tls_client_key" in f.read()
    assert not os.path.exists(path)


def test_security_false_warns_and_uses_plain_tcp():
    with pytest.warns(UserWarning, match="any user who can reach its port"):
        cluster = LocalCluster(cores=1, memory="1GB", processes=1, security=False)
    with cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        assert "--tls" not in cluster.job_script()
        cluster.scale(jobs=1)
        with Client(cluster) as client:
            assert client.submit(lambda: 2).result() == 2
            # the control for the refusal tests: without TLS, a stranger does run code
            assert not _refused(cluster.scheduler_address)


def test_users_own_security_is_honoured(tmp_path):
    own = Security.temporary()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: TLS stays on
        cluster = LocalCluster(cores=1, memory="1GB", processes=1, security=own)
    with cluster:
        assert cluster.security is own
        cluster.scale(jobs=1)
        with Client(cluster.scheduler_address, security=own) as client:
            client.wait_for_workers(1, timeout=60)
            assert client.submit(lambda: 9).result() == 9


def test_invalid_security_rejected_before_anything_starts():
    with pytest.raises(ValueError, match="security=True"):
        LocalCluster(cores=1, memory="1GB", security="yes")


# --- the dashboard, for its owner only (issue 13 item 13) -------------------------------------
PEEK = r"""
import sys, urllib.request, urllib.error
request = urllib.request.Request(sys.argv[1], headers=dict(h.split(": ", 1) for h in sys.argv[2:]))
try:
    with urllib.request.urlopen(request, timeout=10) as r:
        print(r.status, r.read(200).decode(errors="replace"))
except urllib.error.HTTPError as e:
    print(e.code, e.read(200).decode(errors="replace"))
"""


def _peek(url, *headers):
    """GET url from another process."""
    out = subprocess.run([sys.executable, "-c", PEEK, url, *headers], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[0]), out.stdout


AS_NOBODY = r"""
import os, sys, urllib.request, urllib.error, http.client, email.parser, encodings.idna  # all, before giving up root
"x".encode("idna")
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
try:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        print(r.status, r.read(200).decode(errors="replace"))
except urllib.error.HTTPError as e:
    print(e.code, e.read(200).decode(errors="replace"))
"""


def _peek_as_nobody(url):
    """GET url from a process that imported what it needs as root, then became user nobody
    (65534): another user on this node."""
    out = subprocess.run([sys.executable, "-c", AS_NOBODY, url], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[0]), out.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="asks as another user (nobody), which needs root to become")
def test_another_user_cannot_read_the_dashboard():
    with LocalCluster(cores=1, memory="1GB", processes=1) as cluster:
        cluster.scale(jobs=1)
        cluster.wait_for_workers(1, timeout=60)
        link = cluster.dashboard_link
        assert "token=" in link
        base = link.split("/status")[0]
        for path in ("/json/identity.json", "/info/main/workers.html", "/info/logs/", "/status"):
            status, text = _peek_as_nobody(base + path)
            assert status == 403, (path, text)
        assert "cluster.dashboard_link" in text
        assert _peek_as_nobody(base + "/health")[0] == 200  # harmless, kept open for probes


def test_the_dashboard_link_lets_its_owner_in():
    import http.cookiejar
    import urllib.request

    with LocalCluster(cores=1, memory="1GB", processes=1) as cluster:
        cluster.scale(jobs=1)
        cluster.wait_for_workers(1, timeout=60)
        link, token = cluster.dashboard_link, cluster.dashboard_link.split("token=")[1]
        base = link.split("/status")[0]
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with browser.open(link) as first:  # sets the cookie, then redirects to the clean URL
            assert first.url == base + "/status"
        with browser.open(base + "/json/identity.json") as r:
            assert r.status == 200 and b'"type": "Scheduler"' in r.read()
        assert _peek(base + "/json/identity.json", f"Authorization: Bearer {token}")[0] == 200  # Prometheus et al.
        assert _peek(base + "/json/identity.json", "Authorization: Bearer wrong")[0] == 403


def test_two_clusters_have_their_own_tokens_and_cookies():
    with LocalCluster(cores=1, memory="1GB") as a, LocalCluster(cores=1, memory="1GB") as b:
        ta, tb = a.dashboard_link.split("token=")[1], b.dashboard_link.split("token=")[1]
        assert ta != tb
        url_b = b.dashboard_link.split("/status")[0] + "/json/identity.json"
        port_a = a.dashboard_link.split(":")[2].split("/")[0]
        assert _peek(url_b, f"Cookie: jobqueue-dashboard-{port_a}={ta}")[0] == 403


def test_an_open_dashboard_is_an_explicit_choice():
    import dask

    with dask.config.set({"jobqueue.dashboard-auth": False}):
        with pytest.warns(UserWarning, match="dashboard-auth is off"):
            cluster = LocalCluster(cores=1, memory="1GB")
        with cluster:
            assert "token=" not in cluster.dashboard_link
            assert _peek(cluster.dashboard_link.replace("/status", "/json/identity.json"))[0] == 200


def test_a_job_built_alone_removes_the_credentials_it_wrote():
    """A Job built alone (dask-jobqueue's way) with in-memory TLS credentials writes them to
    owner-only files for its workers; closing the job removes them (no key left on disk)."""
    import asyncio
    import glob

    from distributed.security import Security

    from jobqueue import LocalJob

    security = Security.temporary()
    job = LocalJob(scheduler="tls://127.0.0.1:8786", name="alone-0", cores=1, memory="1GB", security=security)
    script = job.job_script()
    words = script.split()
    keys = [words[i + 1] for i, w in enumerate(words) if w in ("--tls-ca-file", "--tls-cert", "--tls-key")]
    assert keys and all(os.path.exists(k) for k in keys), script
    assert all(oct(os.stat(k).st_mode & 0o777) == "0o600" for k in keys)
    asyncio.run(job.close())
    assert not [k for k in keys if os.path.exists(k)], glob.glob(os.path.dirname(keys[0]) + "/*")
