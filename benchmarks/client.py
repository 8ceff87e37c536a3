"""The load client: lean asyncio protocols with hand-written WebSocket framing.

Each connection is an `asyncio.Protocol` that speaks just enough RFC 6455 for the benchmark:
the HTTP upgrade, unfragmented text frames, ping (answered) and close. Client frames are
masked, as the RFC requires, with the all-zero key, so masking costs nothing. By default no
extension is offered, so no server compresses; `connect(..., deflate=True)` offers
permessage-deflate as browsers do, and the connection then inflates every compressed frame
(one `zlib` decompressor per connection, kept across messages: servers keep their context).
The client itself always sends plain frames, which the extension allows. The roles
(`EchoClient`, `Receiver`, ...) do their work in `on_message`, called straight from
`data_received`: no task, queue or future per message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import select
import socket
import zlib
from collections.abc import Callable, Sequence
from time import perf_counter_ns
from typing import TypeVar

__all__ = [
    "RING",
    "Connection",
    "EchoClient",
    "EchoRun",
    "FanoutRun",
    "HandshakeError",
    "ReadHub",
    "Receiver",
    "Sender",
    "close_all",
    "connect",
    "connect_many",
    "text_frame",
]

C = TypeVar("C", bound="Connection")

_MASK = b"\x00\x00\x00\x00"
_CLOSE_1000 = bytes((0x88, 0x82)) + _MASK + (1000).to_bytes(2, "big")
_DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
"""What Chromium and Firefox offer."""
_DEFLATE_TAIL = b"\x00\x00\xff\xff"


class HandshakeError(ConnectionError):
    """The server refused or botched the WebSocket upgrade."""


def text_frame(payload: bytes) -> bytes:
    """Return a final, masked text frame carrying `payload` (UTF-8)."""
    return _frame(0x81, payload)


def _frame(first: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        header = bytes((first, 0x80 | size))
    elif size < 65536:
        header = bytes((first, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + size.to_bytes(8, "big")
    return header + _MASK + payload


class Connection(asyncio.Protocol):
    """One client WebSocket connection; subclasses override `on_message`.

    Attributes:
        opened: Done when the server has accepted the upgrade (or failed it).
        closed: Done when the TCP connection is gone.
        close_code: The code of the server's close frame, if it sent one.
        deflate: Whether to offer permessage-deflate (set before connecting).
        wire_bytes: Bytes read from the socket after the handshake (through a `ReadHub`).
    """

    transport: asyncio.Transport

    def __init__(self, host: str, port: int, path: str) -> None:
        loop = asyncio.get_running_loop()
        self.host = host
        self.port = port
        self.path = path
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.close_code: int | None = None
        self.hub: ReadHub | None = None
        self.deflate = False
        self.wire_bytes = 0
        self._inflate: zlib._Decompress | None = None
        self._handshaking = True
        self._buffer = b""

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        )
        if self.deflate:
            request += f"Sec-WebSocket-Extensions: {_DEFLATE_OFFER}\r\n"
        request += "\r\n"
        transport.write(request.encode())

    def data_received(self, data: bytes) -> None:
        if self._handshaking:
            data = self._buffer + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = data
                return
            self._handshaking = False
            self._buffer = b""
            status = data[: data.find(b"\r\n")]
            if not status.startswith(b"HTTP/1.1 101"):
                self._fail_open(HandshakeError(f"{self.path}: {status.decode(errors='replace')}"))
                self.transport.close()
                return
            if self.deflate:
                headers = data[:end].lower()
                if b"\r\nsec-websocket-extensions:" not in headers or b"permessage-deflate" not in headers:
                    self._fail_open(HandshakeError(f"{self.path}: the server did not accept permessage-deflate"))
                    self.transport.close()
                    return
                self._inflate = zlib.decompressobj(-15)  # the server's window is at most 2**15
            self.opened.set_result(None)
            data = data[end + 4 :]
            if not data:
                return
        self.feed(data, perf_counter_ns())

    def feed(self, data: bytes, now: int) -> None:
        """Parse the frames in `data` (after the handshake), received at `now`."""
        if self._buffer:
            data = self._buffer + data
        size = len(data)
        pos = 0
        while size - pos >= 2:
            length = data[pos + 1]  # servers never mask
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(data[start : start + 2], "big")
                start += 2
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(data[start : start + 8], "big")
                start += 8
            end = start + length
            if end > size:
                break
            first = data[pos]
            if first == 0x81 or first == 0x82:
                self.on_message(data[start:end], now)
            elif first & 0x40 and self._inflate is not None:  # RSV1: a compressed (unfragmented) message
                self.on_message(self._inflate.decompress(data[start:end] + _DEFLATE_TAIL), now)
            else:
                self._control(first & 0x0F, data[start:end])
            pos = end
        self._buffer = data[pos:] if pos < size else b""

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_open(ConnectionError(f"{self.path}: connection lost during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    # the roles' hook

    def on_message(self, payload: bytes, now: int) -> None:
        """Handle one text or binary message received at `now` (`perf_counter_ns`)."""

    # helpers

    def _fail_open(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x9:  # ping
            self.transport.write(_frame(0x8A, payload))
        elif opcode == 0x8:  # close
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.close()

    def send_text(self, payload: bytes) -> None:
        """Send one text message."""
        self.transport.write(_frame(0x81, payload))

    def close(self) -> None:
        """Send a close frame (1000) and close the TCP connection once it is written."""
        if self.hub is not None:
            self.hub.remove(self)
        if not self.transport.is_closing():
            self.transport.write(_CLOSE_1000)
            self.transport.close()

    def abort(self) -> None:
        """Drop the TCP connection at once."""
        if self.hub is not None:
            self.hub.remove(self)
        self.transport.abort()


class ReadHub:
    """Reads many connections from one epoll set, drained by one asyncio reader callback.

    asyncio wakes one callback per readable socket; here one callback reads every ready socket
    in a tight loop. Most of what a read costs is the kernel's (on loopback a read also runs
    the server's side of the ACK it sends), so the hub reads at most every `pace` seconds:
    one read then takes every frame that arrived meanwhile, which halves the load client's CPU
    per delivery at 1 ms, at the price of that much resolution in the latencies.

    An attached connection's transport is paused; its socket is read through a duplicate of
    its file descriptor, closed on `remove`.
    """

    def __init__(self, pace: float = 0.0) -> None:
        self.pace = pace
        self.loop = asyncio.get_running_loop()
        self.epoll = select.epoll()
        self.connections: dict[int, tuple[Connection, socket.socket]] = {}
        self._resume: asyncio.TimerHandle | None = None
        self.loop.add_reader(self.epoll.fileno(), self.drain)

    def add(self, connection: Connection) -> None:
        """Read `connection` here from now on."""
        connection.transport.pause_reading()
        raw = connection.transport.get_extra_info("socket").fileno()
        sock = socket.socket(fileno=os.dup(raw))
        sock.setblocking(False)
        self.connections[sock.fileno()] = (connection, sock)
        self.epoll.register(sock.fileno(), select.EPOLLIN)
        connection.hub = self

    def stop_reading(self, connection: Connection) -> None:
        """Leave `connection`'s socket unread (it stays open)."""
        for fd, (other, _) in list(self.connections.items()):
            if other is connection:
                self.epoll.unregister(fd)

    def remove(self, connection: Connection) -> None:
        connection.hub = None
        for fd, (other, sock) in list(self.connections.items()):
            if other is connection:
                del self.connections[fd]
                with contextlib.suppress(OSError):
                    self.epoll.unregister(fd)
                sock.close()

    def drain(self) -> None:
        if self.pace:
            self.loop.remove_reader(self.epoll.fileno())
            self._resume = self.loop.call_later(self.pace, self.loop.add_reader, self.epoll.fileno(), self.drain)
        connections = self.connections
        for fd, _ in self.epoll.poll(0):
            entry = connections.get(fd)
            if entry is None:
                continue
            connection, sock = entry
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                connection.wire_bytes += len(data)
                connection.feed(data, perf_counter_ns())
            else:  # the server closed it
                connection.abort()

    def close(self) -> None:
        for connection, _ in list(self.connections.values()):
            self.remove(connection)
        if self._resume is not None:
            self._resume.cancel()
        self.loop.remove_reader(self.epoll.fileno())
        self.epoll.close()


async def connect(
    factory: Callable[[], C], *, timeout: float = 10.0, rcvbuf: int | None = None, deflate: bool = False
) -> C:
    """Open the connection `factory()` describes and wait for its upgrade.

    Args:
        factory: Makes the protocol; its `host`, `port` and `path` say where to connect.
        timeout: Seconds for the TCP connect and the upgrade together.
        rcvbuf: `SO_RCVBUF` to set before connecting (a small one makes a slow reader stall sooner).
        deflate: Offer permessage-deflate; the upgrade fails if the server does not accept it.
    """
    loop = asyncio.get_running_loop()
    protocol = factory()
    protocol.deflate = deflate
    # proto=IPPROTO_TCP, or asyncio leaves Nagle's algorithm on (it sets TCP_NODELAY only then)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)

        async def open_() -> None:
            await loop.sock_connect(sock, (protocol.host, protocol.port))
            await loop.create_connection(lambda: protocol, sock=sock)
            await protocol.opened

        await asyncio.wait_for(open_(), timeout)
    except BaseException:
        transport: asyncio.Transport | None = getattr(protocol, "transport", None)
        if transport is not None:
            transport.abort()
        else:
            sock.close()
        raise
    return protocol


async def connect_many(
    factories: Sequence[Callable[[], C]], *, concurrency: int = 64, timeout: float = 30.0, deflate: bool = False
) -> list[C]:
    """Open every connection, at most `concurrency` handshakes at a time; close them all if one fails."""
    done: list[C] = []
    try:
        for start in range(0, len(factories), concurrency):
            batch = factories[start : start + concurrency]
            opened = await asyncio.gather(
                *(connect(f, timeout=timeout, deflate=deflate) for f in batch), return_exceptions=True
            )
            failures = [result for result in opened if isinstance(result, BaseException)]
            done.extend(result for result in opened if not isinstance(result, BaseException))
            if failures:
                raise failures[0]
    except BaseException:
        await close_all(done)
        raise
    return done


async def close_all(connections: Sequence[Connection], timeout: float = 5.0) -> None:
    """Close every connection and wait (at most `timeout` seconds) until they are gone."""
    for connection in connections:
        if connection.hub is None and not connection.transport.is_reading():
            connection.abort()  # a stopped reader would never see the close handshake through
        else:
            connection.close()
    pending = [connection.closed for connection in connections if not connection.closed.done()]
    if pending:
        _, still = await asyncio.wait(pending, timeout=timeout)
        for connection in connections:
            if not connection.closed.done():
                connection.abort()
        if still:
            await asyncio.wait(still, timeout=1.0)


# echo and OK: closed loops of one message in flight per connection


class EchoRun:
    """The shared state of one echo/OK measurement."""

    def __init__(self) -> None:
        self.running = True
        self.recording = False
        self.count = 0
        self.errors = 0
        self.latencies: list[int] = []
        self.in_flight = 0
        self.idle: asyncio.Event = asyncio.Event()


class EchoClient(Connection):
    """Sends `payload`, waits for `expect`, sends again: one round trip in flight at a time."""

    def __init__(self, host: str, port: int, path: str, run: EchoRun, payload: bytes, expect: bytes) -> None:
        super().__init__(host, port, path)
        self.run = run
        self.frame = text_frame(payload)
        self.expect = expect
        self.sent_at = 0

    def start(self) -> None:
        self.run.in_flight += 1
        self.sent_at = perf_counter_ns()
        self.transport.write(self.frame)

    def on_message(self, payload: bytes, now: int) -> None:
        run = self.run
        if payload != self.expect:
            run.errors += 1
        if run.recording:
            run.count += 1
            run.latencies.append(now - self.sent_at)
        if run.running:
            self.sent_at = perf_counter_ns()
            self.transport.write(self.frame)
        else:
            run.in_flight -= 1
            if not run.in_flight:
                run.idle.set()


# fan-out: one sender, many receivers, a window of messages in flight

RING = 1 << 14
_RING_MASK = RING - 1


class FanoutRun:
    """The shared state of one fan-out measurement.

    The sender keeps `window` messages in flight; a message is complete when every healthy
    receiver has it. Receivers check that sequence numbers arrive in order without gaps.
    Message texts are `b"%08d" % seq` (data) or `b"P%07d" % n` (join probes), padded to `size`.
    """

    def __init__(self, window: int, size: int) -> None:
        self.window = window
        self.size = size
        self.healthy = 0
        self.running = False
        self.recording = False
        self.sent = 0
        self.completed = 0
        self.ring = [0] * RING
        self.sent_at = [0] * RING
        self.latencies: list[int] = []
        self.sender: Sender | None = None
        self.progress: asyncio.Event = asyncio.Event()
        self.filler = b"x" * max(0, size - 8)

    def pump(self) -> None:
        """Send messages until `window` are in flight (while running)."""
        sender = self.sender
        room = self.window - (self.sent - self.completed)
        if room <= 0 or not self.running or sender is None:
            return
        now = perf_counter_ns()
        first = self.sent
        sent_at = self.sent_at
        filler = self.filler
        frames = []
        for seq in range(first, first + room):
            sent_at[seq & _RING_MASK] = now
            frames.append(text_frame(b"%08d" % seq + filler))
        self.sent = first + room
        sender.transport.write(b"".join(frames))

    def complete(self, seq: int) -> None:
        ring = self.ring
        for earlier in range(self.completed, seq):  # lost somewhere: never completes, free its slot
            ring[earlier & _RING_MASK] = 0
        self.completed = seq + 1
        self.progress.set()
        self.pump()


class Sender(Connection):
    """The member who publishes; it receives nothing from the room."""

    def probe(self, number: int, size: int) -> None:
        self.send_text(b"P%07d" % number + b"x" * max(0, size - 8))


class Receiver(Connection):
    """A room member who counts, checks and times what it receives.

    Attributes:
        count: Data messages received (the next sequence number expected).
        errors: Messages out of order, skipped or unreadable.
        last_probe: The last join probe received, -1 before any.
        healthy: Whether the run waits for this receiver (a stopped reader is not healthy).
    """

    def __init__(self, host: str, port: int, path: str, run: FanoutRun, prefix: int, healthy: bool = True) -> None:
        super().__init__(host, port, path)
        self.run = run
        self.start = prefix
        self.stop = prefix + 8
        self.count = 0
        self.errors = 0
        self.last_probe = -1
        self.healthy = healthy

    def on_message(self, payload: bytes, now: int) -> None:
        head = payload[self.start : self.stop]
        try:
            if head[:1] == b"P":
                self.last_probe = int(head[1:])
                return
            seq = int(head)
        except ValueError:
            self.errors += 1
            return
        if seq != self.count:
            self.errors += 1
        self.count = seq + 1
        if not self.healthy:
            return
        run = self.run
        slot = seq & _RING_MASK
        if run.recording:
            run.latencies.append(now - run.sent_at[slot])
        reached = run.ring[slot] + 1
        if reached >= run.healthy:
            run.ring[slot] = 0
            if seq >= run.completed:
                run.complete(seq)
        else:
            run.ring[slot] = reached


class Idle(Connection):
    """A connection that only holds its place (memory per idle member)."""
