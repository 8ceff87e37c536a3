"""The demo answers only the host it binds (DNS rebinding), and takes only ASCII names."""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse

from tests.test_main import FakeUvicorn, serve_demo
from wsendpoints import CloseCode
from wsendpoints.__main__ import main
from wsendpoints.demo import ASCII_NAMES, HOST_ENV, allowed_hosts, create_app
from wsendpoints.testing import expect_close, receive_json, receive_text

LOOPBACK = ["127.0.0.1", "localhost", "[::1]"]


@pytest.mark.parametrize(
    ("host", "names"),
    [
        ("127.0.0.1", LOOPBACK),
        ("127.0.0.2", LOOPBACK),
        ("localhost", LOOPBACK),
        ("::1", LOOPBACK),
        ("192.0.2.10", ["192.0.2.10"]),
        ("2001:db8::1", ["[2001:db8::1]"]),
        ("Chat.Example.org", ["chat.example.org"]),
        ("0.0.0.0", None),
        ("::", None),
        ("", None),
    ],
)
def test_allowed_hosts_for_the_bound_host(host: str, names: list[str] | None) -> None:
    assert allowed_hosts(host) == names


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000"])
def test_demo_bound_to_loopback_answers_loopback_names(host: str) -> None:
    with TestClient(create_app(host="127.0.0.1")) as client:
        assert client.get("/", headers={"host": host}).status_code == 200
        with client.websocket_connect("/echo", headers={"host": host}) as ws:
            ws.send_text("hi")
            assert receive_text(ws) == "hi"


def test_demo_bound_to_loopback_refuses_a_rebound_name() -> None:
    """A DNS-rebinding page sends its own name as `Host`: no page, no socket, no members."""
    rebound = {"host": "attacker.example:8000"}
    with TestClient(create_app(host="127.0.0.1")) as client:
        response = client.get("/rooms/lobby/members", headers=rebound)
        assert (response.status_code, response.text) == (400, "Invalid host header")
        with pytest.raises(WebSocketDenialResponse) as denial:
            client.websocket_connect("/rooms/lobby/ann", headers=rebound).__enter__()
        assert denial.value.status_code == 400


def test_demo_reads_the_bound_host_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOST_ENV, "127.0.0.1")
    with TestClient(create_app()) as client:  # Host: testserver
        assert client.get("/").status_code == 400
    monkeypatch.setenv(HOST_ENV, "")
    with TestClient(create_app()) as client:
        assert client.get("/").status_code == 200


def test_main_hands_the_bound_host_to_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", FakeUvicorn())
    assert main(["--host", "192.0.2.10", "--port", "9003"]) == 0
    assert os.environ[HOST_ENV] == "192.0.2.10"


def test_demo_takes_only_ascii_names() -> None:
    assert ASCII_NAMES == r"[A-Za-z0-9_.-]{1,64}"
    with TestClient(create_app()) as client:
        with client.websocket_connect("/rooms/lobby/\u0430dmin") as lookalike:  # Cyrillic a
            assert expect_close(lookalike) == (CloseCode.POLICY_VIOLATION, "invalid user name")
        with client.websocket_connect("/rooms/lobby/\uff41dmin") as wide:  # full-width a: NFKC makes it admin
            assert receive_json(wide) == {"type": "presence", "room": "lobby", "users": ["admin"]}


def test_demo_limits_joins_per_address() -> None:
    with TestClient(create_app()) as client:
        for n in range(30):
            with client.websocket_connect(f"/rooms/churn/u{n}") as ws:
                assert receive_json(ws)["type"] == "presence"
        with client.websocket_connect("/rooms/churn/one-more") as ws:
            assert expect_close(ws) == (CloseCode.POLICY_VIOLATION, "too many connections")


def status_line(url: str, request: str) -> bytes:
    """Send `request` (its Host header included) to the server at ws:// `url`; return the status line."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request.encode())
        return sock.makefile("rb").readline().rstrip()


@pytest.mark.server
def test_python_m_wsendpoints_refuses_a_rebound_host_and_serves_its_own() -> None:
    handshake = (
        "GET /rooms/lobby/ann HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    page = "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    with serve_demo() as url:
        port = urlsplit(url).port
        for host in ("attacker.example", f"attacker.example:{port}"):
            assert status_line(url, page.format(host=host)) == b"HTTP/1.1 400 Bad Request"
            assert status_line(url, handshake.format(host=host)) == b"HTTP/1.1 400 Bad Request"
        for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
            assert status_line(url, page.format(host=host)) == b"HTTP/1.1 200 OK"
            assert status_line(url, handshake.format(host=host)) == b"HTTP/1.1 101 Switching Protocols"
