"""Clients that never read, and what a server process still holds for them (Linux `/proc`)."""

from __future__ import annotations

import base64
import os
import socket
import time
from collections.abc import Callable, Collection

import anyio

__all__ = ["peak_rss_kib", "server_sockets", "stalled_client", "wait_for"]


def stalled_client(
    port: int, path: str, rcvbuf: int = 4096, mss: int = 536, source: str = "127.0.0.1"
) -> socket.socket:
    """Open a WebSocket to 127.0.0.1:`port` with a tiny receive buffer; return the socket, which the test never reads.

    The handshake's answer is read (and anything after it in the same segment); nothing else ever is. Both
    options are set before connecting: `rcvbuf` sets the window the client offers, and a small `mss` keeps
    the server's kernel from growing its send buffer for the connection to 4 MiB, as it does on loopback
    (its 64 KiB segments), so that the server's own sends stall after some 150 KiB rather than 4 MiB.
    `source` is the loopback address to connect from (rooms limit joins per address).
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
    sock.settimeout(10)
    try:
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(4096)
            assert chunk, f"the server closed the connection during the handshake: {response!r}"
            response += chunk
        assert response.startswith(b"HTTP/1.1 101 "), response
    except BaseException:
        sock.close()
        raise
    return sock


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # pragma: no cover - an fd closed while listing
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def server_sockets(pid: int, server_port: int, client_ports: Collection[int]) -> int:
    """Count the sockets that process `pid` holds for connections from `client_ports` to its `server_port`."""
    inodes = _socket_inodes(pid)
    count = 0
    with open(f"/proc/{pid}/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            remote_port = int(fields[2].split(":")[1], 16)
            if local_port == server_port and remote_port in client_ports and fields[9] in inodes:
                count += 1
    return count


def peak_rss_kib(pid: int) -> int:
    """The peak resident memory of process `pid` so far (`VmHWM`), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM for process {pid}")  # pragma: no cover - Linux always has it


async def wait_for(check: Callable[[], bool], within: float) -> float:
    """Poll `check` every 50 ms until it holds; return the seconds it took; fail after `within` seconds."""
    start = time.monotonic()
    with anyio.fail_after(within):
        while True:
            if check():
                return time.monotonic() - start
            await anyio.sleep(0.05)
