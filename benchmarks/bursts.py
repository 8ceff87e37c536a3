"""Bursts into one room: does every member get every message, and how fast? `python -m benchmarks.bursts`.

One sender sends N messages in a row into a room of M readers that read as fast as the
`websockets` client can, against `benchmarks.servers.wsendpoints_app` under uvicorn in a
process of its own. Each run reports the messages lost, the connections closed, the
deliveries per second and the server's peak RSS; the fan-out figure counts only runs where
nothing was lost and nobody was closed.

    python -m benchmarks.bursts             # 100 x 2,000 and 1,000 x 200, 3 runs each
    python -m benchmarks.bursts --quick     # one run each
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

from .serve import UVICORN_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
CLIENT = {"max_size": None, "max_queue": None, "compression": None, "open_timeout": 30}
SIZES = ((100, 2000), (1000, 200))


@dataclass(frozen=True, slots=True)
class Run:
    members: int
    messages: int
    seconds: float
    lost: int
    closed: int
    peak_rss_mib: float

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.closed == 0

    @property
    def deliveries_per_second(self) -> float:
        return self.members * self.messages / self.seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", "benchmarks.servers.wsendpoints_app:app", "--port", str(port)]
    command += ["--host", "127.0.0.1", "--ws", UVICORN_SETTINGS["ws"], "--loop", "asyncio", "--log-level", "warning"]
    command += ["--limit-concurrency", "5000", "--backlog", "4096"]
    server = subprocess.Popen(command, cwd=ROOT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.05)
    server.kill()
    raise RuntimeError("the server did not start")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0  # not Linux


async def read(ws: ClientConnection, count: int, deadline: float) -> int:
    """Return how many of the `count` messages came, in order, before the deadline or a close."""
    got = 0
    try:
        while got < count:
            message = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
            if message != f"s: {got}":
                return got
            got += 1
    except Exception:
        pass
    return got


async def burst(port: int, room: str, members: int, messages: int, pid: int) -> Run:
    base = f"ws://127.0.0.1:{port}/rooms/{room}"
    readers = [await connect(f"{base}/r{n}", **CLIENT) for n in range(members)]  # type: ignore[arg-type]
    sender = await connect(f"{base}/s", **CLIENT)  # type: ignore[arg-type]
    started = time.monotonic()
    deadline = started + 120
    tasks = [asyncio.create_task(read(ws, messages, deadline)) for ws in readers]
    for n in range(messages):
        await sender.send(str(n))
    counts = await asyncio.gather(*tasks)
    seconds = time.monotonic() - started
    closed = sum(ws.close_code is not None for ws in [*readers, sender])
    for ws in [*readers, sender]:
        await ws.close()
    lost = members * messages - sum(counts)
    return Run(members, messages, seconds, lost, closed, peak_rss_mib(pid))


async def main_async(runs: int) -> list[Run]:
    port = free_port()
    server = start_server(port)
    results: list[Run] = []
    try:
        for members, messages in SIZES:
            for n in range(runs):
                results.append(await burst(port, f"b{members}-{n}", members, messages, server.pid))
    finally:
        server.terminate()
        server.wait(10)
    return results


def report(results: list[Run]) -> str:
    lines = [
        "| burst | runs | lost | closed | deliveries/s (clean runs, median) | server peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    for members, messages in SIZES:
        mine = [r for r in results if (r.members, r.messages) == (members, messages)]
        clean = [r.deliveries_per_second for r in mine if r.clean]
        rate = f"{statistics.median(clean):,.0f}" if clean else "no clean run"
        rss = max(r.peak_rss_mib for r in mine)
        lost, closed = sum(r.lost for r in mine), sum(r.closed for r in mine)
        lines.append(f"| {members} x {messages:,} | {len(mine)} | {lost} | {closed} | {rate} | {rss:.0f} MiB |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one run per size")
    args = parser.parse_args()
    os.chdir(ROOT)
    print(report(asyncio.run(main_async(1 if args.quick else 3))))


if __name__ == "__main__":
    main()
