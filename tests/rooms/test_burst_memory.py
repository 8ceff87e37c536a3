"""The server's memory during bursts stays within what the queue bounds allow: uvicorn in a process of its own."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from websockets.asyncio.client import connect

from tests.hostile.conftest import Server, free_port, stop_server
from tests.rooms.test_bursts import CLIENT, read, stuck_member, wait_open

pytestmark = [pytest.mark.server, pytest.mark.anyio]

MIB = 1024 * 1024


@pytest.fixture
def burst_server() -> Iterator[Server]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "tests.rooms.burst_app:app", "--host", "127.0.0.1"]
    server = Server(subprocess.Popen([*command, "--port", str(port), "--log-level", "warning"]), port)
    wait_open(port)
    yield server
    stop_server(server)


def peak_rss(pid: int) -> int:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmHWM"].split()[0]) * 1024


async def test_server_memory_during_a_burst_with_a_stuck_member_stays_bounded(burst_server: Server) -> None:
    """50 readers and one member that never reads take 2,000 messages of 8 KiB (16 MiB to each member).

    Bound: every member's queue holds the same payload objects, so the distinct text queued is
    at most about `max_queue_bytes` (1 MiB) for the readers plus 1 MiB for the stuck member;
    each connection adds uvicorn's write buffer (64 KiB before it pushes back) and one frame
    being built (8 KiB): 2 MiB + 51 x 72 KiB is about 5.6 MiB. The stated bound, with room for
    the allocator, is 16 MiB over the peak with everyone connected (one run measured 2.4 MiB).
    """
    base = f"{burst_server.base}/rooms/mem"
    readers = [await connect(f"{base}/r{n}", **CLIENT) for n in range(50)]
    stuck = await stuck_member(burst_server.base, "stuck", room="mem")
    stuck.transport.pause_reading()
    baseline = peak_rss(burst_server.process.pid)
    payload = "x" * 8192
    try:
        received: list[list[str]] = [[] for _ in readers]
        with anyio.fail_after(120):
            async with connect(f"{base}/sender", **CLIENT) as sender, anyio.create_task_group() as tasks:
                for reader, into in zip(readers, received, strict=True):
                    tasks.start_soon(read, reader, 2000, into)
                for _ in range(2000):
                    await sender.send(payload)
        assert all(len(into) == 2000 for into in received)
        growth = peak_rss(burst_server.process.pid) - baseline
        assert growth < 16 * MIB, f"{growth / MIB:.1f} MiB"
    finally:
        stuck.transport.resume_reading()
        await stuck.close()
        for reader in readers:
            await reader.close()
