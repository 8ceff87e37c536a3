"""The measurements: one `Sample` of one peer in one scenario, taken by the load client.

Every figure comes from a measurement window opened after a warm-up: the client counts what
completes inside the window, and reads the CPU time the server processes and the client used
over exactly that window, so a reader can tell which side was the bottleneck.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from time import perf_counter
from typing import TypeVar

from .client import (
    RING,
    Connection,
    EchoClient,
    EchoRun,
    FanoutRun,
    Idle,
    ReadHub,
    Receiver,
    Sender,
    close_all,
    connect,
    connect_many,
    text_frame,
)
from .procs import Process, process_cpu_seconds

__all__ = [
    "HOST",
    "Fanout",
    "Sample",
    "Settings",
    "Window",
    "echo_sample",
    "memory_sample",
    "percentiles",
    "settle",
]

HOST = "127.0.0.1"
FILL_PROBES = 5_000_000
"""The number of the first probe `Fanout.stick` sends (above any that `Fanout.open` sends)."""
SENDER = "s"
"""The sending member's user name: receivers read the sequence number after `"s: "`."""
T = TypeVar("T", bound=Connection)


@dataclass(frozen=True, slots=True)
class Settings:
    """Sizes and times of a run; `--quick`, `--smoke` and the full run differ only here."""

    reps: int
    warmup: float
    duration: float
    echo_clients: int = 50
    echo_size: int = 32
    fanout_sizes: tuple[int, ...] = (100, 1000)
    window: int = 8
    message_size: int = 32
    slow_reps: int = 1
    slow_members: int = 100
    slow_size: int = 4096
    slow_warmup: float = 2.0
    slow_duration: float = 2.0
    slow_rcvbuf: int = 4096
    idle_members: int = 2000
    redis_members: int = 100
    stall_after: float = 1.0
    read_pace: float = 0.001
    bursts: tuple[tuple[int, int], ...] = ((100, 2000), (1000, 200))
    """(members, messages) of each burst scenario."""
    burst_reps: int = 3
    deflate_reps: int = 3
    stuck_reps: int = 3
    stuck_fill: int = 1024
    """Probes of `slow_size` bytes (4 MiB) that fill the buffers of the stuck member before its burst: more than
    loopback's socket buffers take (about 2.8 MB seen queued in the server's socket alone)."""
    burst_stall: float = 5.0
    """Seconds without any delivery after which a burst is given up (a peer that lost messages)."""


@dataclass(slots=True)
class Sample:
    """One measurement of one peer.

    Attributes:
        value: The figure: round trips/s, deliveries/s, or bytes per idle member.
        p50_us: Median round-trip or delivery latency in the window, microseconds.
        p99_us: 99th percentile of the same.
        server_cpu: CPU time of the server processes over the window, as a fraction of one core.
        client_cpu: CPU time of the load client over the window, as a fraction of one core.
        lost: Messages a healthy member never received.
        errors: Wrong replies, or messages out of order.
        stalled: Whether deliveries stopped for `stall_after` seconds or more.
        closed: Healthy connections the server closed during the run.
        rss_growth: How much the (first) server's RSS grew over warm-up and window, in bytes (bursts:
            its peak during the burst over its RSS before).
        peak_rss: Bursts: the (first) server's peak RSS during the burst, in bytes.
        wire_bytes: Bursts: bytes the healthy receivers read from their sockets, frames and all.
        deliveries: Bursts: messages the healthy receivers got.
    """

    value: float
    p50_us: float | None = None
    p99_us: float | None = None
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    lost: int = 0
    errors: int = 0
    stalled: bool = False
    closed: int = 0
    rss_growth: int = 0
    peak_rss: int = 0
    wire_bytes: int = 0
    deliveries: int = 0

    @property
    def clean(self) -> bool:
        """Whether nothing was lost, nothing came out of order, nobody was closed and nothing stalled."""
        return not (self.lost or self.errors or self.closed or self.stalled)

    @property
    def cpu_per_op(self) -> float | None:
        """Server CPU microseconds per round trip or delivery, or None without any."""
        if not self.value or not self.server_cpu:
            return None
        return self.server_cpu / self.value * 1e6


def percentiles(latencies: list[int]) -> tuple[float | None, float | None]:
    """Return p50 and p99 of `latencies` (nanoseconds) in microseconds."""
    if not latencies:
        return None, None
    ordered = sorted(latencies)
    last = len(ordered) - 1
    return ordered[round(0.5 * last)] / 1000, ordered[round(0.99 * last)] / 1000


class Window:
    """A measurement window over some server processes and this (client) process."""

    def __init__(self, servers: Sequence[Process]) -> None:
        self.servers = servers
        self.elapsed = 0.0
        self.server_cpu = 0.0
        self.client_cpu = 0.0

    def open(self) -> None:
        self._client = process_cpu_seconds()
        self._server = sum(server.cpu() for server in self.servers)
        self._start = perf_counter()

    def close(self) -> None:
        self.elapsed = perf_counter() - self._start
        server = sum(server.cpu() for server in self.servers)
        client = process_cpu_seconds()
        self.server_cpu = (server - self._server) / self.elapsed
        self.client_cpu = (client - self._client) / self.elapsed


async def settle(servers: Sequence[Process], busy: float = 0.05, limit: float = 3.0) -> None:
    """Wait until the servers use under `busy` of a core over 0.1 s, for at most `limit` seconds."""
    gc.collect()
    deadline = perf_counter() + limit
    while perf_counter() < deadline:
        before = sum(server.cpu() for server in servers)
        await asyncio.sleep(0.1)
        if sum(server.cpu() for server in servers) - before < busy * 0.1:
            return


def _factories(make: Callable[[], T], count: int) -> list[Callable[[], T]]:
    return [make] * count


# echo and OK


async def echo_sample(
    server: Process, path: str, settings: Settings, payload: bytes, expect: bytes, clients: int
) -> Sample:
    """Closed-loop round trips: `clients` connections, each with one message in flight."""
    run = EchoRun()
    make = partial(EchoClient, HOST, server.port, path, run, payload, expect)
    connections = await connect_many(_factories(make, clients))
    window = Window([server])
    try:
        for connection in connections:
            connection.start()
        await asyncio.sleep(settings.warmup)
        run.recording = True
        window.open()
        await asyncio.sleep(settings.duration)
        window.close()
        run.recording = False
        run.running = False
        await asyncio.wait_for(run.idle.wait(), 10)
    finally:
        await close_all(connections)
    p50, p99 = percentiles(run.latencies)
    return Sample(
        value=run.count / window.elapsed,
        p50_us=p50,
        p99_us=p99,
        server_cpu=window.server_cpu,
        client_cpu=window.client_cpu,
        errors=run.errors,
        closed=sum(connection.close_code is not None for connection in connections),
    )


# fan-out


class Fanout:
    """One sender and `members` receivers in one room, kept open across repetitions.

    Receivers are spread over `servers` in turn (the two-process scenario); the sender joins
    the first server. `slow` makes one more receiver, with a small receive buffer, that
    `sample(stop_reading=True)` stops reading; `small_buffer=False` gives it the system's default
    receive buffer instead (the reference rooms, where it reads: a 4 KiB window paces the whole
    closed loop on TCP's delayed acknowledgements, by tens of ms, on some runs and some peers, and
    the reference is then not a room where every member keeps up). `deflate` has every connection offer
    permessage-deflate.
    """

    def __init__(
        self,
        servers: Sequence[Process],
        room: str,
        members: int,
        settings: Settings,
        size: int,
        slow: bool = False,
        deflate: bool = False,
        small_buffer: bool = True,
    ) -> None:
        self.servers = servers
        self.room = room
        self.members = members
        self.settings = settings
        self.size = size
        self.slow = slow
        self.small_buffer = small_buffer
        self.deflate = deflate
        self.run = FanoutRun(settings.window, size)
        self.receivers: list[Receiver] = []
        self.sender: Sender | None = None
        self.slow_receiver: Receiver | None = None
        self.hub: ReadHub | None = None

    def _path(self, user: str) -> str:
        return f"/rooms/{self.room}/{user}"

    async def open(self) -> None:
        prefix = len(SENDER) + 2
        makes = [
            partial(Receiver, HOST, self.servers[i % len(self.servers)].port, self._path(f"u{i}"), self.run, prefix)
            for i in range(self.members)
        ]
        # The first member of each server joins alone: broadcaster loses subscribers that join a
        # channel concurrently with its first one (it awaits the backend, then overwrites the set).
        first = len(self.servers)
        self.receivers = await connect_many(makes[:first], concurrency=1, deflate=self.deflate)
        await asyncio.sleep(0.2)
        self.receivers += await connect_many(makes[first:], deflate=self.deflate)
        if self.slow:
            last = self.servers[self.members % len(self.servers)].port
            slow = partial(Receiver, HOST, last, self._path("slow"), self.run, prefix, healthy=False)
            rcvbuf = self.settings.slow_rcvbuf if self.small_buffer else None
            self.slow_receiver = await connect(slow, rcvbuf=rcvbuf, deflate=self.deflate)
        self.hub = ReadHub(self.settings.read_pace)
        for receiver in self._all():
            self.hub.add(receiver)
        self.sender = await connect(
            partial(Sender, HOST, self.servers[0].port, self._path(SENDER)), deflate=self.deflate
        )
        self.run.sender = self.sender
        self.run.healthy = len(self.receivers)
        await self._sync()

    async def close(self) -> None:
        everyone: list[Connection] = [*self.receivers]
        if self.slow_receiver is not None:
            everyone.append(self.slow_receiver)
        if self.sender is not None:
            everyone.append(self.sender)
        await close_all(everyone)
        if self.hub is not None:
            self.hub.close()

    def _all(self) -> list[Receiver]:
        return [*self.receivers, *([self.slow_receiver] if self.slow_receiver is not None else [])]

    async def _sync(self, timeout: float = 20.0) -> None:
        """Probe until every receiver receives what the sender sends: all have joined the room."""
        sender = self.sender
        assert sender is not None
        receivers = self._all()
        deadline = perf_counter() + timeout
        number = 0
        while not all(receiver.last_probe > 0 for receiver in receivers):
            if perf_counter() > deadline:
                missing = sum(receiver.last_probe <= 0 for receiver in receivers)
                raise TimeoutError(f"{missing} of {len(receivers)} members never received a message")
            number += 1
            sender.probe(number, self.size)
            await asyncio.sleep(0.05)
        number += 1
        sender.probe(number, self.size)
        while not all(receiver.last_probe == number for receiver in receivers):
            if perf_counter() > deadline:
                raise TimeoutError("members did not settle on the last probe")
            await asyncio.sleep(0.005)
        for receiver in receivers:
            receiver.count = 0
            receiver.errors = 0

    async def sample(self, stop_reading: bool = False) -> Sample:
        """Run the sender for warm-up + window; `stop_reading` pauses the slow receiver first."""
        settings = self.settings
        run = self.run
        warmup, duration = (
            (settings.slow_warmup, settings.slow_duration) if self.slow else (settings.warmup, settings.duration)
        )
        if stop_reading:
            assert self.slow_receiver is not None
            assert self.hub is not None
            self.hub.stop_reading(self.slow_receiver)
        rss_before = self.servers[0].rss()
        run.running = True
        run.pump()
        window = Window(self.servers)
        stalled = False
        progress_at = perf_counter()
        last_completed = run.completed

        async def watch(seconds: float) -> None:
            nonlocal stalled, progress_at, last_completed
            end = perf_counter() + seconds
            while (now := perf_counter()) < end:
                if run.completed != last_completed:
                    last_completed, progress_at = run.completed, now
                elif now - progress_at >= settings.stall_after:
                    stalled = True
                await asyncio.sleep(min(0.05, max(0.0, end - now)))

        await watch(warmup)
        before = sum(receiver.count for receiver in self.receivers)
        run.recording = True
        window.open()
        await watch(duration)
        window.close()
        run.recording = False
        rss_growth = self.servers[0].rss() - rss_before
        delivered = sum(receiver.count for receiver in self.receivers) - before
        run.running = False
        # drain: everything sent must reach every healthy member (unless the room stalled)
        deadline = perf_counter() + (settings.stall_after if stalled else 10.0)
        while run.completed < run.sent and perf_counter() < deadline:
            run.progress.clear()
            try:
                await asyncio.wait_for(run.progress.wait(), max(0.0, deadline - perf_counter()))
            except asyncio.TimeoutError:
                break
        if run.completed < run.sent:
            stalled = True
        lost = sum(run.sent - receiver.count for receiver in self.receivers)
        errors = sum(receiver.errors for receiver in self.receivers)
        closed = sum(receiver.closed.done() for receiver in self.receivers)
        p50, p99 = percentiles(run.latencies)
        sample = Sample(
            value=delivered / window.elapsed,
            p50_us=p50,
            p99_us=p99,
            server_cpu=window.server_cpu,
            client_cpu=window.client_cpu,
            lost=lost if not stalled else 0,
            errors=errors,
            stalled=stalled,
            closed=closed,
            rss_growth=rss_growth,
        )
        self._reset()
        return sample

    async def stick(self, fill: int, timeout: float = 20.0) -> None:
        """Stop reading the slow receiver and fill the buffers between it and the server.

        The sender sends `fill` join probes of `slow_size` bytes; once every healthy receiver
        has the last one, what the stopped one did not read fills its receive buffer, the
        server's socket and transport buffers, and the rest waits in the server's queue for it.
        """
        sender, slow, hub = self.sender, self.slow_receiver, self.hub
        assert sender is not None
        assert slow is not None
        assert hub is not None
        hub.stop_reading(slow)
        first = FILL_PROBES
        for number in range(first, first + fill):
            sender.probe(number, self.settings.slow_size)
        last = first + fill - 1
        deadline = perf_counter() + timeout
        while not all(receiver.last_probe == last for receiver in self.receivers):
            if perf_counter() > deadline:
                raise TimeoutError("the healthy members did not get the probes that fill the stopped one's buffers")
            await asyncio.sleep(0.005)

    async def burst(self, messages: int) -> Sample:
        """Send `messages` in one write and wait until every receiver has them all (or gives up).

        The window opens just before the write and closes when the last receiver has the last
        message; `value` is deliveries/s over it. A burst that makes no progress for
        `burst_stall` seconds, or whose receivers were all closed, ends there, and what never
        came is counted lost.
        """
        settings = self.settings
        run = self.run
        sender = self.sender
        assert sender is not None
        if messages > RING:
            raise ValueError(f"a burst of {messages} messages does not fit the sequence ring ({RING})")
        frames = b"".join(text_frame(b"%08d" % seq + run.filler) for seq in range(messages))
        receivers = self.receivers
        server = self.servers[0]
        server.reset_peak_rss()
        rss_before = server.rss()
        wire_before = sum(receiver.wire_bytes for receiver in receivers)
        window = Window(self.servers)
        window.open()
        run.sent = messages
        sender.transport.write(frames)
        stalled = False
        progress_at = perf_counter()
        seen = 0
        while run.completed < messages:
            run.progress.clear()
            try:
                await asyncio.wait_for(run.progress.wait(), 0.05)
                continue
            except asyncio.TimeoutError:
                pass
            now = perf_counter()
            count = sum(receiver.count for receiver in receivers)
            if count != seen:
                seen, progress_at = count, now
            elif now - progress_at >= settings.burst_stall or all(r.closed.done() for r in receivers):
                stalled = now - progress_at >= settings.burst_stall
                break
        window.close()
        delivered = sum(receiver.count for receiver in receivers)
        closed = sum(receiver.closed.done() for receiver in [*receivers, sender])
        sample = Sample(
            value=delivered / window.elapsed,
            server_cpu=window.server_cpu,
            client_cpu=window.client_cpu,
            lost=messages * len(receivers) - delivered,
            errors=sum(receiver.errors for receiver in receivers),
            stalled=stalled,
            closed=closed,
            rss_growth=server.peak_rss() - rss_before,
            peak_rss=server.peak_rss(),
            wire_bytes=sum(receiver.wire_bytes for receiver in receivers) - wire_before,
            deliveries=delivered,
        )
        self._reset()
        return sample

    def _reset(self) -> None:
        run = self.run
        run.latencies = []
        run.sent = run.completed = 0
        run.ring = [0] * len(run.ring)
        for receiver in self._all():
            receiver.count = 0
            receiver.errors = 0


# memory


async def memory_sample(server: Process, path: Callable[[int], str], members: int, warm: int = 50) -> Sample:
    """Open `members` idle connections; `value` is the server's RSS growth per connection, in bytes."""

    def makes(count: int, offset: int) -> list[Callable[[], Idle]]:
        return [partial(Idle, HOST, server.port, path(offset + i)) for i in range(count)]

    warmup = await connect_many(makes(warm, members))
    await close_all(warmup)
    await settle([server])
    await asyncio.sleep(0.2)
    before = server.rss()
    connections = await connect_many(makes(members, 0))
    try:
        await settle([server])
        readings = [server.rss()]
        for _ in range(20):  # until RSS holds still, at most ~2 s
            await asyncio.sleep(0.1)
            readings.append(server.rss())
            if abs(readings[-1] - readings[-2]) < 0.001 * readings[-1]:
                break
        after = readings[-1]
        closed = sum(connection.closed.done() for connection in connections)
    finally:
        await close_all(connections)
    return Sample(value=(after - before) / members, closed=closed)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
