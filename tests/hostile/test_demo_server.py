"""Attacks on `python -m wsendpoints` itself: what its uvicorn settings and `WebSocketProtocol` stop.

Each test starts the demo in a subprocess, as `python -m wsendpoints` on a free loopback port, and
watches the server process from outside: its peak memory (`VmHWM`) and the sockets it holds for the
attacking clients (`/proc/<pid>/fd` and the kernel's TCP table).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.demo.serving import serve_process
from tests.hostile.conftest import FIGURES, free_port
from tests.hostile.rawws import RawSocket, deflate_bomb, frame
from tests.stalled import peak_rss_kib, server_sockets, stalled_client, wait_for
from wsendpoints.serving import CLOSE_DEADLINE

pytestmark = [pytest.mark.server, pytest.mark.anyio]

BINARY = 0x2
MIB = 1024 * 1024

SEND_TIMEOUT = 10.0
"""The default `send_timeout` of the demo's endpoints (`RoomEndpoint`'s, and `Endpoint`'s once it has one)."""

MARGIN = 5.0
"""Seconds of slack on top of the stated bound: the test machine's two cores are shared with other runs."""

RELEASE_BOUND = SEND_TIMEOUT + CLOSE_DEADLINE + MARGIN
"""A client that stops reading loses its server-side socket within `send_timeout` + `close_deadline`."""


@contextmanager
def demo() -> Iterator[tuple[int, int]]:
    """Serve `python -m wsendpoints` on a free port until the context exits; yield the port and the server's pid."""
    port = free_port()
    with serve_process(["-m", "wsendpoints", "--port", str(port)], port) as (_, process):
        yield port, process.pid


# The deflate bomb: `ws_max_size` at the demo's largest message (1 MiB) caps what uvicorn inflates.

BOMBS = 20
BOMB_GROWTH_BOUND_KIB = BOMBS * 2 * 1024
"""Twice `ws_max_size` (1 MiB) per bomb in flight; measured about 1.3 MiB each. With uvicorn's default
`ws_max_size` (16 MiB) the same 20 bombs grew the server by about 350 MiB."""


async def test_deflate_bombs_against_the_demo_close_1009_and_leave_its_memory_alone() -> None:
    bomb = frame(BINARY, deflate_bomb(64 * MIB), rsv1=True)  # 64 MiB of zeros in about 63 KiB
    with demo() as (port, pid), ExitStack() as stack:
        await _echo_round_trip(port)  # the first connection's one-off costs, before measuring
        before = peak_rss_kib(pid)
        sockets = []
        for _ in range(BOMBS):
            ws = RawSocket(port, "/echo", [("Sec-WebSocket-Extensions", "permessage-deflate")])
            stack.callback(ws.close)
            assert "permessage-deflate" in ws.headers
            sockets.append(ws)
        for ws in sockets:  # all sent before any answer is read: 20 bombs in the server at once
            ws.send(bomb)
        codes = [ws.close_code()[0] for ws in sockets]
        growth = peak_rss_kib(pid) - before
    assert codes == [1009] * BOMBS
    assert growth < BOMB_GROWTH_BOUND_KIB, f"peak RSS grew by {growth} KiB"
    FIGURES["demo: deflate bombs"] = {"connections": BOMBS, "inflated MiB each": 64, "peak RSS growth KiB": growth}


# Waves of clients that never read: each wave's sockets must be gone within the bound, and a wave must
# not push the server's peak memory past the one before (the allocator keeps freed pages, so waves are
# compared with each other, never with the baseline).

Attack = Callable[[ExitStack, int], Awaitable[set[int]]]
"""Connect a wave of attacking clients to the port (each closed by the stack); return their local ports."""

WAVE_GROWTH_BOUND_KIB = 3 * 1024
"""How much further a wave may push the peak: the allocator's noise (1-2 MiB measured). Each wave passes
megabytes through the server (5 MiB of room messages, 50 MiB of echo requests); a wave whose queues or
buffers were kept would show that much."""


async def _wave(pid: int, port: int, attack: Attack) -> tuple[float, int]:
    """Run `attack`; return the seconds until the server released its sockets, and its peak RSS then."""
    with ExitStack() as stack:
        ports = await attack(stack, port)
        return await wait_for(lambda: server_sockets(pid, port, ports) == 0, within=RELEASE_BOUND), peak_rss_kib(pid)


async def _waves(attack: Attack) -> dict[str, object]:
    """Serve the demo; run a wave that warms the process up (its peak grows 1-2 MiB either way), then two
    measured waves; check them; return their figures."""
    with demo() as (port, pid):
        await _wave(pid, port, attack)
        first_released, first_peak = await _wave(pid, port, attack)
        second_released, second_peak = await _wave(pid, port, attack)
        assert second_peak - first_peak < WAVE_GROWTH_BOUND_KIB, f"{first_peak} KiB, then {second_peak} KiB"
        return {
            "sockets released after s": f"{first_released:.1f}, {second_released:.1f}",
            "peak RSS KiB": f"{first_peak}, {second_peak}",
        }


# Room members that never read: once the kernel's and uvicorn's buffers are full (some 150 KiB), a
# member's queue (`max_queue`, 1,024 messages) fills, the room closes it 1013 "slow consumer", and
# `WebSocketProtocol` releases its socket although the close frame cannot go.

STALLED = 10
"""Stalled members per wave."""

SENDERS = 8
"""Sender connections at a time; each sends `MESSAGES` and leaves."""

ROUNDS = 8
MESSAGES = 19
"""Messages per sender connection: the demo's rate limit allows 20 in 10 s."""

TEXT = "x" * 4000
"""Near the demo room's 4096-byte limit: 8 x 8 x 19 = 1,216 messages, more than the buffers and `max_queue` hold."""


async def _drain(ws: ClientConnection) -> None:
    try:
        async for _ in ws:
            pass
    except ConnectionClosed:  # pragma: no cover - only if the server drops a sender
        pass


async def _send_into(port: int, room: str) -> None:
    """`ROUNDS` times, connect `SENDERS` members that read everything and send `MESSAGES` each, then leave."""
    for round_ in range(ROUNDS):
        async with anyio.create_task_group() as tg:
            senders = []
            for n in range(SENDERS):
                # Each sender from an address of its own: the demo limits joins per client address.
                source = (f"127.0.{round_ + 1}.{n + 1}", 0)
                ws = await connect(f"ws://127.0.0.1:{port}/rooms/{room}/sender{n}", max_size=None, local_addr=source)
                senders.append(ws)
                tg.start_soon(_drain, ws)
            with anyio.fail_after(30):
                for _ in range(MESSAGES):
                    for ws in senders:
                        await ws.send(json.dumps({"text": TEXT}))
            for ws in senders:
                await ws.close()


async def _stall_room_members(stack: ExitStack, port: int) -> set[int]:
    clients = [
        stack.enter_context(stalled_client(port, f"/rooms/stall/stalled{n}", source=f"127.0.100.{n + 1}"))
        for n in range(STALLED)
    ]
    await _send_into(port, "stall")
    return {client.getsockname()[1] for client in clients}


async def test_stalled_room_members_lose_their_sockets_and_a_second_wave_needs_no_more_memory() -> None:
    FIGURES["demo: stalled room members"] = {"per wave": STALLED, **await _waves(_stall_room_members)}


# Echo clients that send and never read: the echo's send stalls, `send_timeout` closes it and the
# protocol releases the socket.

ECHO_CLIENTS = 50
ECHO_REQUESTS = frame(BINARY, b"e" * 512 * 1024) * 2
"""Two echo requests of 512 KiB: the first reply alone overfills the kernel's send buffer (some 250 KiB) and
uvicorn's high-water mark (64 KiB), so the handler's second send stalls for good. The server reads both."""


async def _echo_round_trip(port: int) -> None:
    async with connect(f"ws://127.0.0.1:{port}/echo") as ws:
        await ws.send("still served")
        with anyio.fail_after(10):
            assert await ws.recv() == "still served"


async def _stall_echoes(stack: ExitStack, port: int) -> set[int]:
    """Stall `ECHO_CLIENTS` echo handlers; check that a well-behaved client is served meanwhile."""
    clients = [stack.enter_context(stalled_client(port, "/echo")) for _ in range(ECHO_CLIENTS)]
    for client in clients:
        client.settimeout(10)
        client.sendall(ECHO_REQUESTS)
    await _echo_round_trip(port)
    return {client.getsockname()[1] for client in clients}


async def test_echo_clients_that_never_read_lose_their_sockets_and_a_second_wave_needs_no_more_memory() -> None:
    FIGURES["demo: echo clients that never read"] = {"per wave": ECHO_CLIENTS, **await _waves(_stall_echoes)}
