"""`RedisBroker`'s history: the room's stream, read back; ids are stream entry ids."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient

from tests.bounded import bounded
from tests.envelopes import unid
from wsendpoints import BrokerError, Message, RoomEndpoint
from wsendpoints.brokers.redis import RedisBroker
from wsendpoints.testing import Collector, assert_no_message, receive_json

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url, protocol=2)
    yield client
    await client.aclose()


@bounded(30)
async def test_redis_broker_ids_are_stream_entry_ids(redis_url: str, admin: redis.asyncio.Redis) -> None:
    async with RedisBroker(redis_url, prefix="ids") as broker:
        got = Collector()
        async with broker.subscribe("r", got):
            await broker.publish("r", Message("one"))
            await got.wait_for(1)
        entries: Any = await admin.xrange(b"ids:room:r")
        entry_id = entries[0][0].decode()
        assert got.messages[0].id == entry_id
        assert broker.position(entry_id) == tuple(map(int, entry_id.split("-")))
        for garbage in ("", "1", "1-", "-1", "a-1", "1-1-1", "1 -1", "\u0661-\u0661", "1" * 21 + "-0"):
            assert broker.position(garbage) is None, garbage


@bounded(30)
async def test_redis_broker_history_holds_a_message_appended_twice_once(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    """A publisher cancelled before Redis answered may have its message appended again."""
    async with RedisBroker(redis_url, prefix="twice") as broker:
        await broker.publish("r", Message("once"))
        entries: Any = await admin.xrange(b"twice:room:r")
        await admin.xadd(b"twice:room:r", entries[0][1])
        await broker.publish("r", Message("next"))
        found = await broker.history("r")
        assert [m.payload for m in found.messages] == ["once", "next"]


@bounded(30)
async def test_redis_broker_history_skips_entries_it_did_not_write(
    redis_url: str, admin: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    async with RedisBroker(redis_url, prefix="junk") as broker:
        await broker.publish("r", Message("first"))
        await admin.xadd(b"junk:room:r", {b"data": b"not json"})
        await broker.publish("r", Message("last"))
        with caplog.at_level(logging.WARNING, "wsendpoints"):
            found = await broker.history("r")
        assert [m.payload for m in found.messages] == ["first", "last"]
        assert broker.malformed == 1
        assert "ignored a malformed stream entry" in caplog.text
        assert (await broker.history("r", limit=0)).messages == []
        assert (await broker.history("r", since="0-0")).recovered is False


@bounded(30)
async def test_redis_broker_history_of_a_key_that_is_not_a_stream_raises(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    async with RedisBroker(redis_url, prefix="broken") as broker:
        await admin.set(b"broken:room:r", b"garbage")
        with pytest.raises(BrokerError, match="refused"):
            await broker.history("r")


@bounded(30)
async def test_redis_broker_history_keeps_direct_messages_which_the_endpoint_leaves_out(redis_url: str) -> None:
    async with RedisBroker(redis_url, prefix="directs") as broker:
        endpoint = RoomEndpoint.configure(broker=broker, mode="json")
        await endpoint.send_to("lobby", "alice", "psst")
        await endpoint.broadcast("lobby", "news")
        found = await broker.history("rooms/lobby")
        assert [(m.to, m.close) for m in found.messages] == [("alice", None), (None, None)]
        assert [envelope["text"] for envelope in await endpoint.history("lobby")] == ["news"]


def test_redis_resume_never_replays_a_direct_message(redis_url: str) -> None:
    """The stream holds `send_to()`'s message among the room's: a member that resumes past it does not get it."""
    broker = RedisBroker(redis_url, prefix="replay")
    endpoint = RoomEndpoint.configure(broker=broker, mode="json")

    async def say(request: Request) -> Response:
        await endpoint.broadcast("lobby", request.query_params["text"])
        return Response(status_code=204)

    async def whisper(request: Request) -> Response:
        await endpoint.send_to("lobby", "alice", "psst")
        return Response(status_code=204)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with broker:
            yield

    routes = [
        WebSocketRoute("/rooms/{room}/{user}", endpoint),
        Route("/say", say, methods=["POST"]),
        Route("/whisper", whisper, methods=["POST"]),
    ]
    with TestClient(Starlette(routes=routes, lifespan=lifespan)) as client:
        with client.websocket_connect("/rooms/lobby/alice") as alice:
            receive_json(alice)
            client.post("/say", params={"text": "seen"})
            last = receive_json(alice)["id"]
        client.post("/whisper")
        client.post("/say", params={"text": "news"})
        with client.websocket_connect(f"/rooms/lobby/alice?since={last}") as alice:
            assert receive_json(alice)["type"] == "presence"
            assert receive_json(alice) == {"type": "resume", "room": "lobby", "recovered": True, "missed": 1}
            assert unid(receive_json(alice)) == {"type": "message", "room": "lobby", "user": None, "text": "news"}
            assert_no_message(alice)
