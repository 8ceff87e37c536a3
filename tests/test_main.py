from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import anyio
import pytest
from starlette.testclient import TestClient
from websockets.asyncio.client import connect

from wsendpoints.__main__ import main, parse_args
from wsendpoints.demo import create_app
from wsendpoints.testing import receive_text


def test_parse_args_defaults_and_options() -> None:
    args = parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    args = parse_args(["--host", "0.0.0.0", "--port", "9000"])
    assert (args.host, args.port) == ("0.0.0.0", 9000)


def test_main_without_uvicorn_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main([]) == 2
    assert 'pip install "wsendpoints[demo]"' in capsys.readouterr().err


class FakeUvicorn:
    """Stands in for the `uvicorn` module and records how `main` calls it."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def run(self, *args: object, **kwargs: object) -> None:
        self.calls.append((args, kwargs))


def test_main_runs_the_demo_factory_with_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeUvicorn()
    monkeypatch.setitem(sys.modules, "uvicorn", fake)
    assert main(["--port", "9001"]) == 0
    assert fake.calls == [(("wsendpoints.demo:create_app",), {"factory": True, "host": "127.0.0.1", "port": 9001})]


def test_demo_app_serves_home_and_endpoints() -> None:
    with TestClient(create_app()) as client:
        assert "wsendpoints demo" in client.get("/").text
        with client.websocket_connect("/echo") as ws:
            ws.send_text("hi")
            assert receive_text(ws) == "hi"
        with client.websocket_connect("/ok") as ws:
            ws.send_text("hi")
            assert receive_text(ws) == "OK!"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def echo_once(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            async with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=2) as ws:
                await ws.send("demo")
                with anyio.fail_after(5):
                    assert await ws.recv() == "demo"
                return
        except OSError:
            assert time.monotonic() < deadline, "the demo did not start serving"
            await anyio.sleep(0.1)


@pytest.mark.server
def test_python_m_wsendpoints_serves_the_demo() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "wsendpoints", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        anyio.run(echo_once, port)
    finally:
        process.terminate()
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why it stopped.
        assert process.wait(timeout=10) in (0, -signal.SIGTERM)
