"""The peers under test: which server process, which route, which packages they need."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from .procs import ServerSpec

__all__ = [
    "BURST_PEERS",
    "DEFLATE_PEERS",
    "ECHO_PEERS",
    "OK_PEERS",
    "PEERS",
    "REDIS_PEERS",
    "ROOM_PEERS",
    "SERVERS",
    "Peer",
    "missing_packages",
]

SERVERS: dict[str, ServerSpec] = {
    spec.key: spec
    for spec in (
        ServerSpec("raw", "asgi", "benchmarks.servers.raw_asgi:app"),
        # the bursts' baseline: the same app with unbounded queues (see raw_asgi's docstring)
        ServerSpec("raw-unbounded", "asgi", "benchmarks.servers.raw_asgi:app", (("BENCH_RAW_MAX_QUEUE", "0"),)),
        ServerSpec("starlette", "asgi", "benchmarks.servers.starlette_endpoint:app"),
        ServerSpec("fastapi", "asgi", "benchmarks.servers.fastapi_app:app"),
        ServerSpec("broadcaster", "asgi", "benchmarks.servers.broadcaster_app:app"),
        ServerSpec("websockets", "websockets", "benchmarks.servers.websockets_native:serve"),
        ServerSpec("wsendpoints", "asgi", "benchmarks.servers.wsendpoints_app:app"),
        # the Redis scenario: two processes of each, BENCH_REDIS_URL added when started
        ServerSpec("raw-redis", "asgi", "benchmarks.servers.raw_asgi_redis:app"),
        ServerSpec("broadcaster-redis", "asgi", "benchmarks.servers.broadcaster_app:app"),
        ServerSpec("wsendpoints-redis", "asgi", "benchmarks.servers.wsendpoints_app:app"),
    )
}
"""Every server process the harness can start, by key."""


@dataclass(frozen=True, slots=True)
class Peer:
    """One implementation of one job.

    Attributes:
        key: Unique name, as `--peers` takes it ("fastapi", "wsendpoints", ...).
        label: Name in the table.
        server: Key in `SERVERS`.
        path: Route of the job ("/echo", "/ok", "/rooms").
        requires: Modules that must import (the peer is skipped otherwise).
        baseline: Whether the ratios of its scenario are taken against it.
        ours: Whether it is wsendpoints (checked against the targets).
    """

    key: str
    label: str
    server: str
    path: str
    requires: tuple[str, ...] = ()
    baseline: bool = False
    ours: bool = False


def _family(path: str, rows: list[tuple[str, str, str, tuple[str, ...]]]) -> list[Peer]:
    return [
        Peer(key, label, server, path, requires, baseline=index == 0, ours=key == "wsendpoints")
        for index, (key, label, server, requires) in enumerate(rows)
    ]


ECHO_PEERS = _family(
    "/echo",
    [
        ("raw", "raw ASGI", "raw", ()),
        ("starlette", "Starlette WebSocketEndpoint", "starlette", ()),
        ("fastapi", "FastAPI route", "fastapi", ("fastapi",)),
        ("websockets", "websockets server", "websockets", ("websockets",)),
        ("wsendpoints", "wsendpoints EchoEndpoint", "wsendpoints", ()),
    ],
)

OK_PEERS = _family(
    "/ok",
    [
        ("raw", "raw ASGI", "raw", ()),
        ("starlette", "Starlette WebSocketEndpoint", "starlette", ()),
        ("fastapi", "FastAPI route", "fastapi", ("fastapi",)),
        ("websockets", "websockets server", "websockets", ("websockets",)),
        ("wsendpoints", "wsendpoints OKEndpoint", "wsendpoints", ()),
    ],
)

ROOM_PEERS = _family(
    "/rooms",
    [
        ("raw", "raw ASGI per-member queues", "raw", ()),
        ("fastapi", "FastAPI ConnectionManager", "fastapi", ("fastapi",)),
        ("broadcaster", "broadcaster (memory)", "broadcaster", ("broadcaster",)),
        ("websockets", "websockets broadcast()", "websockets", ("websockets",)),
        ("wsendpoints", "wsendpoints RoomEndpoint", "wsendpoints", ("wsendpoints.endpoints.room",)),
    ],
)

BURST_PEERS = _family(
    "/rooms",
    [
        ("raw", "raw ASGI, unbounded queues", "raw-unbounded", ()),
        ("raw-bounded", "raw ASGI, queues of 1,024", "raw", ()),
        ("fastapi", "FastAPI ConnectionManager", "fastapi", ("fastapi",)),
        ("broadcaster", "broadcaster (memory)", "broadcaster", ("broadcaster",)),
        ("websockets", "websockets broadcast()", "websockets", ("websockets",)),
        ("wsendpoints", "wsendpoints RoomEndpoint", "wsendpoints", ("wsendpoints.endpoints.room",)),
    ],
)
"""The bursts: raw ASGI with unbounded queues is the baseline (with bounded ones it drops every reader)."""

DEFLATE_PEERS = [peer for peer in BURST_PEERS if peer.key in ("raw", "wsendpoints")]
"""permessage-deflate bursts: wsendpoints and its baseline, each with and without compression."""

REDIS_PEERS = _family(
    "/rooms",
    [
        ("raw", "raw ASGI + redis-py pub/sub", "raw-redis", ("redis",)),
        ("broadcaster", "broadcaster (Redis)", "broadcaster-redis", ("broadcaster", "redis")),
        (
            "wsendpoints",
            "wsendpoints RoomEndpoint + RedisBroker",
            "wsendpoints-redis",
            ("redis", "wsendpoints.endpoints.room", "wsendpoints.brokers.redis"),
        ),
    ],
)

PEERS = sorted({peer.key for family in (ECHO_PEERS, OK_PEERS, ROOM_PEERS, BURST_PEERS, REDIS_PEERS) for peer in family})
"""Every peer key `--peers` accepts."""


def missing_packages(peer: Peer) -> list[str]:
    """Return the modules `peer` needs that do not import here."""
    missing = []
    for module in peer.requires:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(module)
    return missing
