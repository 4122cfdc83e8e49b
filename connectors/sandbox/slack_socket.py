"""A fake Slack Socket Mode server on loopback, and the interactions Slack sends when someone clicks.

The server speaks just enough RFC 6455 for ``slack_sdk``'s built-in Socket Mode client: the opening
handshake, text frames (the client's are masked), ping/pong and close. Like Slack it greets with
``{"type": "hello"}``, sends envelopes ``{"envelope_id", "type": "interactive", "payload", ...}`` and
expects each to be acknowledged with ``{"envelope_id"}``; the acknowledgements are recorded.

The interaction builders make the form bodies and signed headers that Slack POSTs to a Request URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import struct
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlencode

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA


# -- what Slack POSTs ------------------------------------------------------------------------------


def block_actions(
    action_id: str, value: str, *, user: str, channel: str, ts: str, trigger_id: str = "t.fake"
) -> dict[str, Any]:
    """A ``block_actions`` payload: one button clicked on the message ``channel``/``ts``."""
    return {
        "type": "block_actions",
        "team": {"id": "T0FAKE", "domain": "fake"},
        "user": {"id": user, "username": user.lower(), "team_id": "T0FAKE"},
        "api_app_id": "A0FAKE",
        "token": "legacy-verification-token",
        "trigger_id": trigger_id,
        "container": {"type": "message", "message_ts": ts, "channel_id": channel},
        "channel": {"id": channel, "name": "approvals"},
        "message": {"type": "message", "ts": ts, "text": "proposal"},
        "response_url": "https://hooks.slack.test/actions/T0FAKE/1/x",
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": f"block_{value}",
                "value": value,
                "action_ts": ts,
            }
        ],
    }


def view_submission(
    callback_id: str, private_metadata: str, *, user: str, values: Mapping[str, Any]
) -> dict[str, Any]:
    """A ``view_submission`` payload of a modal with ``view.state.values`` as given."""
    return {
        "type": "view_submission",
        "team": {"id": "T0FAKE", "domain": "fake"},
        "user": {"id": user, "username": user.lower(), "team_id": "T0FAKE"},
        "api_app_id": "A0FAKE",
        "trigger_id": "t.submit",
        "view": {
            "id": "V0FAKE",
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": private_metadata,
            "state": {"values": dict(values)},
        },
    }


def form_body(payload: Mapping[str, Any]) -> bytes:
    """The ``application/x-www-form-urlencoded`` body Slack POSTs: ``payload=<json>``."""
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed_headers(secret: str, body: bytes, *, timestamp: int, retry: int | None = None) -> dict[str, str]:
    """Slack's headers for ``body``: the ``v0`` signature at ``timestamp`` (and a retry number)."""
    base = f"v0:{timestamp}:".encode() + body
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest(),
    }
    if retry is not None:
        headers["X-Slack-Retry-Num"] = str(retry)
        headers["X-Slack-Retry-Reason"] = "http_timeout"
    return headers


# -- Socket Mode -----------------------------------------------------------------------------------


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("socket closed")
        data += chunk
    return data


def _frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked (server-to-client) frame."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    b1, b2 = _recv_exact(sock, 2)
    opcode = b1 & 0x0F
    n = b2 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", _recv_exact(sock, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", _recv_exact(sock, 8))
    mask = _recv_exact(sock, 4) if b2 & 0x80 else b""
    data = _recv_exact(sock, n)
    if mask:
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
    return opcode, data


class SocketModeServer:
    """One fake Socket Mode endpoint: accepts connections, sends envelopes, records acknowledgements."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"ws://127.0.0.1:{self._listener.getsockname()[1]}/link/?ticket=fake"
        self._clients: list[socket.socket] = []
        self._send_lock = threading.Lock()
        self._changed = threading.Condition()
        self.acks: dict[str, dict[str, Any]] = {}
        self._closed = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Accept connections on a background thread."""
        thread = threading.Thread(target=self._accept, name="fake-socket-mode", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _handshake(self, conn: socket.socket) -> bool:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:
                return False
            request += chunk
        headers = {}
        for line in request.decode("latin-1").split("\r\n")[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        key = headers.get("sec-websocket-key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()  # noqa: S324 - RFC 6455
        conn.sendall(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        return True

    def _serve(self, conn: socket.socket) -> None:
        try:
            if not self._handshake(conn):
                return
            hello = {"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0FAKE"}}
            with self._send_lock:
                conn.sendall(_frame(_TEXT, json.dumps(hello).encode()))
            with self._changed:
                self._clients.append(conn)
                self._changed.notify_all()
            while True:
                opcode, data = _read_frame(conn)
                if opcode == _PING:
                    with self._send_lock:
                        conn.sendall(_frame(_PONG, data))
                elif opcode == _CLOSE:
                    with self._send_lock:
                        conn.sendall(_frame(_CLOSE, data[:2]))
                    return
                elif opcode == _TEXT:
                    message = json.loads(data)
                    if isinstance(message, dict) and "envelope_id" in message:
                        with self._changed:
                            self.acks[str(message["envelope_id"])] = message
                            self._changed.notify_all()
        except (ConnectionError, OSError, ValueError):
            return
        finally:
            with self._changed:
                if conn in self._clients:
                    self._clients.remove(conn)
            conn.close()

    @property
    def connections(self) -> int:
        """How many clients are connected now."""
        with self._changed:
            return len(self._clients)

    def wait_connected(self, timeout: float = 10) -> None:
        """Block until a client has connected (and been greeted)."""
        with self._changed:
            if not self._changed.wait_for(lambda: bool(self._clients), timeout):
                raise TimeoutError("no Socket Mode client connected")

    def deliver(self, payload: Mapping[str, Any], *, kind: str = "interactive", retry: int = 0) -> str:
        """Send one envelope to the first connected client; return its envelope id."""
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": dict(payload),
            "accepts_response_payload": kind == "interactive",
            "retry_attempt": retry,
            "retry_reason": "timeout" if retry else "",
        }
        with self._changed:
            client = self._clients[0]
        with self._send_lock:
            client.sendall(_frame(_TEXT, json.dumps(envelope).encode()))
        return envelope_id

    def wait_ack(self, envelope_id: str, timeout: float = 10) -> dict[str, Any]:
        """The client's acknowledgement of ``envelope_id``."""
        with self._changed:
            if not self._changed.wait_for(lambda: envelope_id in self.acks, timeout):
                raise TimeoutError(f"envelope {envelope_id} was not acknowledged")
            return self.acks[envelope_id]

    def close(self) -> None:
        """Stop accepting and drop the connections."""
        self._closed = True
        self._listener.close()
        with self._changed:
            clients = list(self._clients)
        for conn in clients:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


@contextmanager
def serve_socket_mode() -> Iterator[SocketModeServer]:
    """A running fake Socket Mode server; set ``FakeSlack.socket_url`` to its ``url``."""
    server = SocketModeServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


def values_of(pairs: Sequence[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
    """``view.state.values`` from ``(block_id, action_id, value)`` triples."""
    out: dict[str, Any] = {}
    for block_id, action_id, value in pairs:
        out.setdefault(block_id, {})[action_id] = value
    return out
