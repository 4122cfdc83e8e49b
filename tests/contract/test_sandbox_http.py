"""The HTTP base the sandbox's fakes share: one function per request, keep-alive, a quiet hang-up."""

from __future__ import annotations

import http.client
import socket

from connectors.sandbox.http import Request, Response, SandboxHttpServer


def _echo(seen: list[Request]) -> SandboxHttpServer:
    def app(request: Request) -> Response:
        seen.append(request)
        body = f"{request.method} {request.path} {len(request.body)}".encode()
        return Response(201 if request.method == "POST" else 200, body, {"X-Echo": request.target})

    return SandboxHttpServer(app, name="echo-sandbox").start()


def test_requests_reach_the_app_and_answers_keep_the_connection_alive() -> None:
    seen: list[Request] = []
    server = _echo(seen)
    try:
        host, port = server.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("POST", "/api/thing?x=1", body=b"hello", headers={"authorization": "Bearer t"})
        first = conn.getresponse()
        assert (first.status, first.read()) == (201, b"POST /api/thing 5")
        assert first.getheader("X-Echo") == "/api/thing?x=1"
        conn.request("GET", "/other")  # the same connection: HTTP/1.1 with a Content-Length
        second = conn.getresponse()
        assert (second.status, second.read()) == (200, b"GET /other 0")
        conn.close()
        assert [r.headers.get("Authorization") for r in seen] == ["Bearer t", None]  # case-insensitive
    finally:
        server.stop()


def test_a_client_that_hangs_up_does_not_stop_the_server() -> None:
    seen: list[Request] = []
    server = _echo(seen)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")  # then gone
        host, port = server.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", "/after")
        answer = conn.getresponse()
        assert (answer.status, answer.read()) == (200, b"GET /after 0")
        conn.close()
    finally:
        server.stop()
