"""Bursts into one room: does every member get every message, and at what cost? `python -m benchmarks.bursts`.

One sender sends N messages in a row into a room of M readers that read as fast as the
`websockets` client can, against `benchmarks.servers.wsendpoints_app` and the raw ASGI
baseline (`benchmarks.servers.raw_asgi`), each under uvicorn in a process of its own. Each run
reports the messages lost, the connections closed, the deliveries per second, the server's
CPU time per delivery (the scheduler's count, so a busy machine changes it little) and its
peak RSS; the fan-out figures count only runs where nothing was lost and nobody was closed.
`--deflate` runs everything again with the clients offering permessage-deflate, as browsers
do (uvicorn accepts it unless `--ws-per-message-deflate false`).

    python -m benchmarks.bursts             # 100 x 2,000 and 1,000 x 200, 3 runs each
    python -m benchmarks.bursts --quick     # one run each
    python -m benchmarks.bursts --quick --deflate --apps wsendpoints,raw
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

from .procs import _child_env
from .serve import UVICORN_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
CLIENT = {"max_size": None, "max_queue": None, "compression": None, "open_timeout": 30}
SIZES = ((100, 2000), (1000, 200))
APPS = {"wsendpoints": "benchmarks.servers.wsendpoints_app:app", "raw": "benchmarks.servers.raw_asgi:app"}


@dataclass(frozen=True, slots=True)
class Run:
    app: str
    deflate: bool
    members: int
    messages: int
    seconds: float
    lost: int
    closed: int
    peak_rss_mib: float
    cpu_seconds: float

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.closed == 0

    @property
    def deliveries_per_second(self) -> float:
        return self.members * self.messages / self.seconds

    @property
    def cpu_per_delivery_us(self) -> float:
        return self.cpu_seconds * 1e6 / (self.members * self.messages)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(app: str, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", APPS[app], "--port", str(port)]
    command += ["--host", "127.0.0.1", "--ws", UVICORN_SETTINGS["ws"], "--loop", "asyncio", "--log-level", "warning"]
    command += ["--limit-concurrency", "5000", "--backlog", "4096"]
    server = subprocess.Popen(command, cwd=ROOT, env=_child_env())
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


def cpu_seconds(pid: int) -> float:
    """The process's time on a CPU so far (Linux's scheduler count, nanoseconds), in seconds."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except OSError:  # not Linux
        return 0.0


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


async def burst(port: int, room: str, members: int, messages: int, pid: int, app: str, deflate: bool) -> Run:
    base = f"ws://127.0.0.1:{port}/rooms/{room}"
    client: dict[str, object] = {**CLIENT, "compression": "deflate" if deflate else None}
    readers = [await connect(f"{base}/r{n}", **client) for n in range(members)]  # type: ignore[arg-type]
    sender = await connect(f"{base}/s", **client)  # type: ignore[arg-type]
    negotiated = [ws.response.headers.get("Sec-WebSocket-Extensions") is not None for ws in readers]  # type: ignore[union-attr]
    if not all(n == deflate for n in negotiated):
        raise RuntimeError(f"permessage-deflate {'not ' if deflate else ''}negotiated on some connections")
    started = time.monotonic()
    cpu_before = cpu_seconds(pid)
    deadline = started + 120
    tasks = [asyncio.create_task(read(ws, messages, deadline)) for ws in readers]
    for n in range(messages):
        await sender.send(str(n))
    counts = await asyncio.gather(*tasks)
    seconds = time.monotonic() - started
    cpu = cpu_seconds(pid) - cpu_before
    closed = sum(ws.close_code is not None for ws in [*readers, sender])
    for ws in [*readers, sender]:
        await ws.close()
    lost = members * messages - sum(counts)
    return Run(app, deflate, members, messages, seconds, lost, closed, peak_rss_mib(pid), cpu)


async def main_async(runs: int, apps: list[str], modes: list[bool]) -> list[Run]:
    results: list[Run] = []
    for app in apps:
        port = free_port()
        server = start_server(app, port)
        try:
            for deflate in modes:
                for members, messages in SIZES:
                    for n in range(runs):
                        room = f"b{members}-{n}-{int(deflate)}"
                        results.append(await burst(port, room, members, messages, server.pid, app, deflate))
        finally:
            server.terminate()
            server.wait(10)
    return results


def report(results: list[Run]) -> str:
    lines = [
        "| app | permessage-deflate | burst | runs | lost | closed | deliveries/s (clean runs, median) "
        "| server CPU per delivery (clean runs, median) | CPU / raw ASGI's | server peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cpu(app: str, deflate: bool, size: tuple[int, int]) -> float | None:
        clean = [
            r.cpu_per_delivery_us
            for r in results
            if (r.app, r.deflate, (r.members, r.messages)) == (app, deflate, size) and r.clean
        ]
        return statistics.median(clean) if clean else None

    for app, deflate in dict.fromkeys((r.app, r.deflate) for r in results):
        for members, messages in SIZES:
            mine = [
                r for r in results if (r.app, r.deflate, r.members, r.messages) == (app, deflate, members, messages)
            ]
            clean = [r.deliveries_per_second for r in mine if r.clean]
            rate = f"{statistics.median(clean):,.0f}" if clean else "no clean run"
            mine_cpu, raw_cpu = cpu(app, deflate, (members, messages)), cpu("raw", deflate, (members, messages))
            per = f"{mine_cpu:.2f} µs" if mine_cpu is not None else "-"
            ratio = f"{raw_cpu / mine_cpu:.2f}x" if mine_cpu and raw_cpu else "-"
            rss = max(r.peak_rss_mib for r in mine)
            lost, closed = sum(r.lost for r in mine), sum(r.closed for r in mine)
            lines.append(
                f"| {app} | {'on' if deflate else 'off'} | {members} x {messages:,} | {len(mine)} | {lost} | {closed} "
                f"| {rate} | {per} | {ratio} | {rss:.0f} MiB |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one run per size")
    parser.add_argument("--apps", default="wsendpoints", help=f"comma-separated, of: {', '.join(APPS)}")
    parser.add_argument("--deflate", action="store_true", help="also run with permessage-deflate negotiated")
    args = parser.parse_args()
    apps = args.apps.split(",")
    if not set(apps) <= set(APPS):
        parser.error(f"--apps: choose from {', '.join(APPS)}")
    os.chdir(ROOT)
    modes = [False, True] if args.deflate else [False]
    print(report(asyncio.run(main_async(1 if args.quick else 3, apps, modes))))


if __name__ == "__main__":
    main()
