"""Load and flow control, bounded in count and time, against uvicorn in a subprocess."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.hostile.conftest import FIGURES, Server, get_json, post, start_server, stop_server, wait_until

pytestmark = [pytest.mark.server, pytest.mark.anyio]


@pytest.fixture(scope="module")
def busy_server() -> Iterator[Server]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:  # pragma: no cover - depends on the machine's limits
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    running = start_server()
    yield running
    stderr = stop_server(running)
    assert b"unhandled error" not in stderr, stderr.decode(errors="replace")


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


async def test_1000_connections_each_doing_100_echoes_in_order(busy_server: Server) -> None:
    connections, echoes = 1000, 100
    latencies: list[float] = []
    answered = 0

    async def one(n: int, ready: anyio.Event, go: anyio.Event, count: list[int]) -> None:
        nonlocal answered
        async with connect(f"{busy_server.base}/echo", compression=None, open_timeout=30) as ws:
            count[0] += 1
            if count[0] == connections:
                ready.set()
            await go.wait()
            for m in range(echoes):
                started = time.perf_counter()
                await ws.send(f"{n}:{m}")
                assert await ws.recv() == f"{n}:{m}"
                latencies.append(time.perf_counter() - started)
                answered += 1

    ready, go, count = anyio.Event(), anyio.Event(), [0]
    with anyio.fail_after(240):
        async with anyio.create_task_group() as tasks:
            for n in range(connections):
                tasks.start_soon(one, n, ready, go, count)
            await ready.wait()
            started = time.perf_counter()
            go.set()
        elapsed = time.perf_counter() - started
    assert answered == connections * echoes
    FIGURES["1000 connections x 100 echoes"] = {
        "answered": answered,
        "lost": 0,
        "p99 ms": round(p99(latencies) * 1000, 1),
        "echoes/s": round(answered / elapsed),
    }


async def test_flooding_client_is_rate_limited_while_a_bystander_keeps_its_latency(busy_server: Server) -> None:
    """The room allows 50 messages a second per member; a flooder is closed, the bystander never notices."""
    base = busy_server.base
    opts: dict[str, Any] = {"compression": None, "max_queue": None}

    async def round_trips(ws: ClientConnection, peer: ClientConnection, count: int) -> list[float]:
        samples = []
        for n in range(count):
            started = time.perf_counter()
            await ws.send(f'{{"text": "{n}"}}')
            while f'"text":"{n}"' not in str(await peer.recv()):
                pass
            samples.append(time.perf_counter() - started)
            await anyio.sleep(0.03)  # 33 messages a second: under the limit
        return samples

    async with (
        connect(f"{base}/rooms/flood/bystander", **opts) as bystander,
        connect(f"{base}/rooms/flood/listener", **opts) as listener,
    ):
        quiet = await round_trips(bystander, listener, 20)
        loud: list[float] = []

        async def measure() -> None:
            loud.extend(await round_trips(bystander, listener, 20))

        async with connect(f"{base}/rooms/flood/flooder", **opts) as flooder, anyio.create_task_group() as tasks:
            tasks.start_soon(measure)
            with anyio.fail_after(30), pytest.raises(ConnectionClosed):
                await flood(flooder)
        assert flooder.protocol.close_rcvd is not None
        assert flooder.protocol.close_rcvd.code == 1008
    FIGURES["flood"] = {
        "flooder close": 1008,
        "bystander p99 ms quiet": round(p99(quiet) * 1000, 1),
        "bystander p99 ms during flood": round(p99(loud) * 1000, 1),
    }
    # Generous on purpose (shared cores): it catches a bystander held up by the flood, not a slow machine.
    assert p99(loud) < max(10 * p99(quiet), 0.5)


async def flood(ws: ClientConnection) -> None:
    for n in range(100_000):
        await ws.send(f'{{"text": "flood {n}"}}')
        await anyio.lowlevel.checkpoint()
    raise AssertionError("the flooder was never closed")  # pragma: no cover - reached only if the limit fails


async def test_member_reset_mid_broadcast_leaves_no_error_and_no_membership(busy_server: Server) -> None:
    base = busy_server.base
    async with connect(f"{base}/rooms/reset/stays", compression=None, max_queue=None) as stays:
        for round_ in range(20):
            victim = await connect(f"{base}/rooms/reset/victim{round_}", compression=None)
            name = f"victim{round_}"
            await wait_until(lambda name=name: name in get_json(busy_server, "/members/reset"))  # type: ignore[misc]
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(blast, busy_server, 50)
                await anyio.sleep(0.005)
                victim.transport.abort()  # a TCP reset, no close frame
        await wait_until(lambda: get_json(busy_server, "/members/reset") == ["stays"])
        assert stays.state.name == "OPEN"
    FIGURES["reset mid-broadcast"] = {"resets": 20, "leaked members": 0}


async def blast(server: Server, count: int) -> None:
    for n in range(count):
        await anyio.to_thread.run_sync(post, server, "/broadcast/reset", f"b{n}")
