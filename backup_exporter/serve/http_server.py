"""The daemon's HTTP endpoints: /metrics, /healthz, /readyz, and the run API.

Scrapes only serialise the registry (the metrics collector over the plans' live state): nothing is listed or
computed in storage at scrape time, so /metrics stays fast while a backup runs. /metrics speaks
prometheus-client's content negotiation (OpenMetrics when asked, gzip when accepted) and answers 503 until
the daemon has loaded the stored status once, so a scrape right after a restart never shows zeros. The run
API is off unless a bearer token is configured.
"""

from __future__ import annotations

import gzip
import hmac
import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

log = logging.getLogger(__name__)

_RUN_PATH = re.compile(r"^/api/v1/plans/([^/]+)/run$")


class Unavailable(Exception):
    """Raised by DaemonState.start_run when no run may start now (shutdown); answered with 503."""


class DaemonState(Protocol):
    """What the HTTP layer needs from the daemon."""

    registry: CollectorRegistry
    api_token: str | None

    def healthy(self) -> tuple[bool, str]: ...

    def metrics_ready(self) -> tuple[bool, str]:
        """Return whether /metrics may be served (the stored status was loaded once), and why not."""

    def ready(self) -> tuple[bool, str]: ...

    def status(self) -> dict[str, Any]: ...

    def plan_names(self) -> list[str]: ...

    def start_run(self, plan: str) -> dict[str, Any] | None:
        """Return the started run, or None when the plan is already running. Raises Unavailable."""


def make_handler(state: DaemonState) -> type[BaseHTTPRequestHandler]:
    """Return a request handler class bound to the daemon state."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "backup_exporter"
        protocol_version = "HTTP/1.1"
        # Headers and body go out as two writes; with Nagle + delayed ACK a kept-alive scrape would wait ~40 ms.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http %s", format % args)

        def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
                  headers: tuple[tuple[str, str], ...] = ()) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, code: int, data: Any) -> None:
            self._send(code, (json.dumps(data, indent=1) + "\n").encode(), "application/json")

        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            if path == "/metrics":
                self._metrics(query)
            elif path == "/healthz":
                ok, why = state.healthy()
                self._send(200 if ok else 503, (why + "\n").encode())
            elif path == "/readyz":
                ok, why = state.ready()
                self._send(200 if ok else 503, (why + "\n").encode())
            elif path == "/api/v1/status":
                self._json(200, state.status())
            elif path == "/":
                self._send(200, b"backup_exporter: see /metrics, /healthz, /readyz, /api/v1/status\n")
            else:
                self._json(404, {"error": f"no such path: {path}"})

        do_HEAD = do_GET

        def _metrics(self, query: str) -> None:
            ready, why = state.metrics_ready()
            if not ready:
                self._send(503, f"metrics not ready: {why}\n".encode(), headers=(("Retry-After", "5"),))
                return
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            registry: Any = state.registry
            names = parse_qs(query).get("name[]")
            if names:
                registry = registry.restricted_registry(names)
            body = encoder(registry)
            headers: tuple[tuple[str, str], ...] = (("Vary", "Accept, Accept-Encoding"),)
            if gzip_accepted(self.headers.get("Accept-Encoding", "")):
                body = gzip.compress(body, compresslevel=6)
                headers += (("Content-Encoding", "gzip"),)
            self._send(200, body, content_type, headers)

        def do_POST(self) -> None:
            header = (self.headers.get("Content-Length") or "0").strip()
            if not header.isdigit() or int(header) > 65536:
                # Reading an unknown or huge body would block or buffer; the API takes no body anyway.
                self.close_connection = True
                self._json(400, {"error": f"bad Content-Length '{header[:20]}' (the run API takes no body)"})
                return
            if int(header):
                self.rfile.read(int(header))
            match = _RUN_PATH.match(self.path.split("?", 1)[0])
            if not match:
                self._json(404, {"error": "no such path"})
                return
            if not state.api_token:
                self._json(404, {"error": "the run API is off: set BACKUP_API_TOKEN (server.api_token) to enable"})
                return
            given = self.headers.get("Authorization", "")
            expected = f"Bearer {state.api_token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                self.send_response(401)
                self.send_header("WWW-Authenticate", "Bearer")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            plan = match.group(1)
            if plan not in state.plan_names():
                self._json(404, {"error": f"no plan named '{plan}'"})
                return
            try:
                run = state.start_run(plan)
            except Unavailable as exc:
                self._json(503, {"error": str(exc)})
                return
            if run is None:
                self._json(409, {"error": f"plan '{plan}' is already running"})
                return
            self._json(202, run)

    return Handler


class MetricsServer:
    """A threaded HTTP server on its own thread."""

    def __init__(self, host: str, port: int, state: DaemonState) -> None:
        """Bind host:port. Raises OSError when the address is in use or not allowed."""
        self.httpd = ThreadingHTTPServer((host, port), make_handler(state))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="http")

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
