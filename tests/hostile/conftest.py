from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

FIGURES: dict[str, dict[str, object]] = {}
"""What each case measured, printed at the end of the run for docs/reliability.md."""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.section("hostile suite figures")
    for case, figures in sorted(FIGURES.items()):
        terminalreporter.write_line(f"{case}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(*args: str) -> Server:
    """Start uvicorn serving tests.hostile.apps:app in a subprocess; wait until it accepts connections."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "tests.hostile.apps:app", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--log-level", "warning", *args],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return Server(process, port)
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:  # pragma: no cover - only if uvicorn fails
                process.kill()
                raise RuntimeError("uvicorn did not start") from None
            time.sleep(0.05)


def stop_server(server: Server) -> bytes:
    """Stop the server with SIGTERM (SIGKILL after 10 s); return what it wrote to stderr."""
    server.process.send_signal(signal.SIGTERM)  # a no-op once the process has been reaped
    try:
        _, stderr = server.process.communicate(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - only if shutdown hangs
        server.process.kill()
        _, stderr = server.process.communicate()
    return stderr


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """The hostile app under uvicorn with `--ws-max-size 1048576`, matching the echo's `max_message_size`."""
    running = start_server("--ws-max-size", str(1024 * 1024))
    yield running
    stderr = stop_server(running)
    # uvicorn itself logs invalid UTF-8 with a traceback; the library's own errors must not appear.
    assert b"unhandled error" not in stderr, stderr.decode(errors="replace")


def get_json(server: Server, path: str) -> Any:
    """GET `path` from the server over a plain socket and decode the JSON body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return json.loads(response.partition(b"\r\n\r\n")[2])


def post(server: Server, path: str, body: str) -> None:
    """POST `body` to `path` over a plain socket and wait for the response to end."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        data = body.encode()
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        sock.sendall(head.encode() + data)
        while sock.recv(65536):
            pass


async def wait_until(check: Callable[[], bool], within: float = 10) -> None:
    """Poll `check` (it asks the server over HTTP: no event can reach this process) until it holds."""
    with anyio.fail_after(within):
        while True:
            await anyio.sleep(0.02)
            if check():
                return
