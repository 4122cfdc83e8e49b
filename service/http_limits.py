"""Bounds on what one HTTP client can make the daemon hold: body size, body and header time.

:class:`BodyLimit` is an ASGI middleware: a body declared larger than the limit is refused from its
``Content-Length`` before a byte of it is read, a chunked body is cut off as soon as it passes the
limit, a body that trickles slower than the body timeout gets a 408, and a client that goes away
mid-body is a debug line. What passes is handed to the app whole, so no handler reads a body itself.

:class:`HeaderTimeoutProtocol` is uvicorn's HTTP protocol with a deadline on the request line and
headers, which uvicorn itself does not have: a client that dribbles its headers is disconnected.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)


async def _refuse(send: Send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _declared_length(scope: Scope) -> int | str | None:
    """The Content-Length header as a number, None without one, or the bad value as text."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else text
    return None


class BodyLimit:
    """Read each request body up to ``max_bytes`` within ``body_timeout`` seconds, then call the app."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, body_timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if isinstance(declared, str):
            await _refuse(send, 400, f"Content-Length {declared!r} is not a number")
            return
        if declared is not None and declared > self.max_bytes:
            log.info("request body refused", extra={"declared_bytes": declared, "limit": self.max_bytes})
            await _refuse(send, 413, f"body over {self.max_bytes} bytes")
            return
        body = await self._read(receive, send, scope.get("path", ""))
        if body is None:
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive, send: Send, path: str) -> bytes | None:
        """The whole body, or None once a refusal was sent (or the client left)."""
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                log.info("request body too slow", extra={"path": path, "bytes": total})
                await _refuse(send, 408, f"body not received within {self.body_timeout:g} s")
                return None
            if message["type"] == "http.disconnect":
                log.debug("client disconnected mid-body", extra={"path": path, "bytes": total})
                return None
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                log.info("request body cut off", extra={"path": path, "limit": self.max_bytes})
                await _refuse(send, 413, f"body over {self.max_bytes} bytes")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over ``body`` in one message, then waits on the client as usual."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that drops a connection whose headers take over the timeout.

    The deadline starts when the connection opens and again after each response (keep-alive), and
    ends when the headers are complete; set ``header_timeout`` on a subclass (see :func:`protocol`).
    """

    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        log.info("request headers too slow; connection closed", extra={"client": self.client})
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol(header_timeout: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with this header deadline."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout})
