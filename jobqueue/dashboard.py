"""The dashboard, for its owner only.

distributed's dashboard is plain HTTP without authentication: on a shared login node any
user who can reach its port reads worker addresses, memory use and the scheduler's log.
TLS secures only the Dask protocol. So each cluster gates its dashboard with a random
token, as Jupyter does: ``dashboard_link`` carries it (``.../status?token=...``), the
first request with it sets an HttpOnly cookie and redirects to the clean URL, and a
request without the cookie (or an ``Authorization: Bearer <token>`` header, for
Prometheus) gets 403. The gate is installed on the scheduler's HTTP server right after
it is created, before the event loop can serve a single request. ``/health`` stays open.
"""

from __future__ import annotations

import hmac
import http.cookies
import logging
import secrets
import warnings
from typing import Any
from urllib.parse import parse_qsl, urlencode

import dask
from tornado import httputil

logger = logging.getLogger("jobqueue")

OPEN_PATHS = ("/health",)


def cookie_name(port: int | str) -> str:
    # cookies are per host, not per port: one per dashboard, so two clusters do not clash
    return f"jobqueue-dashboard-{port}"


def with_token(link: str, token: str) -> str:
    return f"{link}{'&' if '?' in link else '?'}token={token}"


class Gate(httputil.HTTPServerConnectionDelegate):
    """Stands in front of the dashboard's tornado application."""

    def __init__(self, app: httputil.HTTPServerConnectionDelegate, token: str, port: int | str):
        self.app = app
        self.token = token
        self.cookie = cookie_name(port)

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        return _Request(self, server_conn, request_conn)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)

    def verdict(self, start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders):
        """True to serve the request, else (status, reason, headers, body) to answer instead."""
        path, _, query = start_line.path.partition("?")
        if path in OPEN_PATHS or self._matches(self._cookie(headers)) or self._matches(self._bearer(headers)):
            return True
        params = parse_qsl(query, keep_blank_values=True)
        if self._matches(next((v for k, v in params if k == "token"), None)):
            if start_line.method not in ("GET", "HEAD"):
                return True
            rest = urlencode([(k, v) for k, v in params if k != "token"])
            # relative, so that it also works behind a proxy (Jupyter's /user/x/proxy/8787/status)
            here = path.rsplit("/", 1)[-1] or "./"
            return (302, "Found", {"Location": here + (f"?{rest}" if rest else ""), "Set-Cookie":
                    f"{self.cookie}={self.token}; HttpOnly; SameSite=Lax; Path=/"}, b"")
        body = ("This Dask dashboard belongs to another user's jobqueue cluster, or your link lacks its "
                "token: open the link cluster.dashboard_link gives.\n").encode()
        return 403, "Forbidden", {"Content-Type": "text/plain; charset=utf-8"}, body

    def _matches(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(value.encode(), self.token.encode())

    def _cookie(self, headers: httputil.HTTPHeaders) -> str | None:
        jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
        try:
            jar.load(headers.get("Cookie", ""))
        except http.cookies.CookieError:
            return None
        morsel = jar.get(self.cookie)
        return morsel.value if morsel else None

    @staticmethod
    def _bearer(headers: httputil.HTTPHeaders) -> str | None:
        kind, _, value = headers.get("Authorization", "").partition(" ")
        return value.strip() if kind.lower() in ("bearer", "token") else None


class _Request(httputil.HTTPMessageDelegate):
    def __init__(self, gate: Gate, server_conn: object, request_conn: httputil.HTTPConnection):
        self.gate = gate
        self.server_conn = server_conn
        self.request_conn = request_conn
        self.inner: httputil.HTTPMessageDelegate | None = None

    def headers_received(self, start_line, headers):
        verdict = self.gate.verdict(start_line, headers)
        if verdict is True:
            self.inner = self.gate.app.start_request(self.server_conn, self.request_conn)
            return self.inner.headers_received(start_line, headers)
        status, reason, extra, body = verdict
        response = httputil.HTTPHeaders({**extra, "Content-Length": str(len(body))})
        self.request_conn.write_headers(httputil.ResponseStartLine("HTTP/1.1", status, reason), response, body)
        self.request_conn.finish()
        return None

    def data_received(self, chunk):
        if self.inner is not None:
            return self.inner.data_received(chunk)
        return None

    def finish(self) -> None:
        if self.inner is not None:
            self.inner.finish()

    def on_connection_close(self) -> None:
        if self.inner is not None:
            self.inner.on_connection_close()


def gated_scheduler(scheduler_cls: type, token: str | None, **options: Any):
    """Create the scheduler (its HTTP server listens from its constructor on) and put the
    gate in front of the dashboard before the event loop serves anything."""
    scheduler = scheduler_cls(**options)
    server = getattr(scheduler, "http_server", None)
    if token and server is not None:
        server.request_callback = Gate(server.request_callback, token, getattr(server, "port", ""))
    return scheduler


def dashboard_token(cls_name: str) -> str | None:
    """A fresh token for the owner-only dashboard, or None when jobqueue.dashboard-auth is off."""
    if dask.config.get("jobqueue.dashboard-auth", True):
        return secrets.token_urlsafe(24)
    warnings.warn(f"{cls_name}: jobqueue.dashboard-auth is off: any user who can reach the dashboard's port "
                  "reads your workers, tasks and logs.", UserWarning, stacklevel=4)
    return None
