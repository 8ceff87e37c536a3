"""The attack `send_timeout` stops: clients that send echo requests and never read, against uvicorn."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import connect

from tests.hostile.conftest import FIGURES, Server, get_json, stop_server, wait_until
from tests.hostile.rawws import frame
from tests.hostile.stall_app import SEND_TIMEOUT

pytestmark = [pytest.mark.server, pytest.mark.anyio]

ATTACKERS = 200
PER_ATTACKER = 512 * 1024
"""Bytes each attacker sends at most: far more than the server's buffers toward a client that does not read."""


@pytest.fixture(scope="module")
def stall_server() -> Iterator[Server]:
    """Serve `stall_app` from a listening socket with a small send buffer, which accepted sockets inherit.

    Without it the kernel would take megabytes per connection before a send blocks.
    """
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    command = [sys.executable, "-m", "uvicorn", "tests.hostile.stall_app:app", "--fd", str(listener.fileno())]
    process = subprocess.Popen(
        [*command, "--log-level", "warning"], pass_fds=[listener.fileno()], stderr=subprocess.PIPE
    )
    listener.close()  # the server has its own copy
    running = Server(process, port)
    # The listening socket exists already: this request waits in its backlog until uvicorn serves it.
    get_json(running, "/stats")
    yield running
    stderr = stop_server(running)
    assert b"unhandled error" not in stderr, stderr.decode(errors="replace")


def attacker(port: int) -> socket.socket:
    """Open a WebSocket to /echo with a tiny receive window and return its socket, non-blocking."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        assert chunk, "the server closed the handshake"
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response
    sock.setblocking(False)
    return sock


def flood(sockets: list[socket.socket], within: float = 20) -> None:
    """Send echo requests on every socket, never reading, until each has sent `PER_ATTACKER` bytes or is full."""
    request = frame(0x2, b"x" * (32 * 1024))
    sent = dict.fromkeys(sockets, 0)
    deadline = time.monotonic() + within
    while sent and time.monotonic() < deadline:
        for sock in list(sent):
            try:
                sent[sock] += sock.send(request)
            except BlockingIOError:  # pragma: no cover - only when the window fills before PER_ATTACKER bytes
                del sent[sock]  # its window is full: the server has stopped reading it
                continue
            except OSError:  # pragma: no cover - the server dropped it already
                del sent[sock]
                continue
            if sent[sock] >= PER_ATTACKER:
                del sent[sock]


async def wave(server: Server) -> dict[str, Any]:
    """Run one wave of attackers while a well-behaved client echoes; return the server's stats after it."""
    before = get_json(server, "/stats")
    served = 0
    async with connect(f"{server.base}/well") as well:

        async def well_behaved(stop: anyio.Event) -> None:
            nonlocal served
            while not stop.is_set():
                await well.send(f"ping {served}")
                with anyio.fail_after(5):  # generous: two shared cores under attack; the point is "answered"
                    assert await well.recv() == f"ping {served}"
                served += 1
                await anyio.sleep(0.05)

        stop = anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(well_behaved, stop)
            sockets = [await anyio.to_thread.run_sync(attacker, server.port) for _ in range(ATTACKERS)]
            try:
                await anyio.to_thread.run_sync(flood, sockets)
                started = time.monotonic()
                target = before.get("on_disconnect", 0) + ATTACKERS

                def all_released() -> bool:
                    stats = last[0] = get_json(server, "/stats")
                    return bool(stats.get("on_disconnect", 0) >= target and stats.get("running", 0) == 0)

                last: list[Any] = [None]
                # send_timeout plus a few seconds; generous because two cores are shared with other test runs.
                try:
                    await wait_until(all_released, within=SEND_TIMEOUT + 9)
                except TimeoutError:  # pragma: no cover - only when send_timeout fails to stop the attack
                    raise AssertionError(f"not all attackers released: {last[0]}") from None
                elapsed = time.monotonic() - started
            finally:
                for sock in sockets:
                    sock.close()
            stop.set()
    # Measure once the server has let go of every attacker's socket (the stats request holds one).
    await wait_until(lambda: get_json(server, "/stats")["fds"] <= before["fds"])
    after: dict[str, Any] = get_json(server, "/stats")
    after["served"] = served
    after["released_within_s"] = round(elapsed, 2)
    after["new_1013"] = after.get("closed 1013 by server", 0) - before.get("closed 1013 by server", 0)
    return after


async def test_clients_that_never_read_are_closed_within_send_timeout(stall_server: Server) -> None:
    first = await wave(stall_server)
    second = await wave(stall_server)
    FIGURES["send timeout attack"] = {
        "attackers": ATTACKERS,
        "released_within_s": max(first["released_within_s"], second["released_within_s"]),
        "rss_kib_after_waves": f"{first['rss_kib']}, {second['rss_kib']}",
    }
    for stats in (first, second):
        assert stats["new_1013"] == ATTACKERS, stats  # every attacker ended by send_timeout, by the server
        assert stats["served"] > 0, "the well-behaved client was not served"
    assert second["on_disconnect"] == 2 * ATTACKERS  # once each
    assert "on_disconnect twice" not in second
    assert second["running"] == 0
    assert second["returned"] == 2 * ATTACKERS
    # The allocator keeps freed pages, so compare the waves: the second must reuse what the first freed.
    # 10% plus 4 MiB of slack for what the allocator and uvicorn's buffers do differently from run to run.
    assert second["rss_kib"] <= first["rss_kib"] * 1.1 + 4096, (first["rss_kib"], second["rss_kib"])
