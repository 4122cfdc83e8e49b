"""The HTTP plumbing every fake server of the sandbox shares: one request in, one response out.

Each fake (Salesforce, HubSpot, Slack) is a function from :class:`Request` to :class:`Response`;
:class:`SandboxHttpServer` serves it on a background thread, over TLS when given a context, with
keep-alive (HTTP/1.1, a ``Content-Length`` on every answer), quiet logs and a clean ``stop``. A client
that hangs up mid-answer (a timeout test, a killed sync) is routine, not a traceback on stderr.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """One request as the fake sees it; ``headers`` look names up case-insensitively."""

    method: str
    target: str  # the path with its query string, as sent
    headers: Message
    body: bytes

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]


@dataclass(frozen=True)
class Response:
    """One answer: status, extra headers (``Content-Length`` is added), body."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


App = Callable[[Request], Response]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: App
    label: str

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("%s: connection from %s dropped", self.label, client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = self.server.app(Request(self.command, self.path, self.headers, body))
        try:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s: %s", self.server.label, format % args)


class SandboxHttpServer:
    """``app`` served on ``host:port`` (0: a free port) in a daemon thread from :meth:`start` to :meth:`stop`.

    The socket is bound on construction, so :attr:`url` is known before the first request is served.
    """

    def __init__(
        self,
        app: App,
        *,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._httpd = _Server((host, port), _Handler)
        self._httpd.app = app
        self._httpd.label = name
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        # The host as given, not as bound: the sandbox's certificate names it.
        self.url = f"{'https' if tls is not None else 'http'}://{host}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )

    def start(self) -> SandboxHttpServer:
        """Begin serving in the background; returns the server."""
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._httpd.server_address[1])

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
