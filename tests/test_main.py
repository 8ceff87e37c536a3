from __future__ import annotations

import json
import os
import runpy
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.demo.serving import serve_command
from tests.envelopes import unid
from tests.redis_server import RedisServer, free_port
from wsendpoints.__main__ import main, parse_args
from wsendpoints.demo import REDIS_URL_ENV
from wsendpoints.serving import WebSocketProtocol  # imported now: the tests below stand a fake in for uvicorn


def test_parse_args_defaults_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REDIS_URL_ENV, raising=False)
    args = parse_args([])
    assert (args.host, args.port, args.redis, args.workers) == ("127.0.0.1", 8000, None, 1)
    args = parse_args(["--host", "0.0.0.0", "--port", "9000", "--redis", "redis://h:1/0", "--workers", "3"])
    assert (args.host, args.port, args.redis, args.workers) == ("0.0.0.0", 9000, "redis://h:1/0", 3)


def test_parse_args_takes_the_redis_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REDIS_URL_ENV, "redis://env:1/0")
    assert parse_args(["--workers", "2"]).redis == "redis://env:1/0"
    assert parse_args(["--redis", "redis://arg:1/0"]).redis == "redis://arg:1/0"


def test_parse_args_refuses_workers_without_redis(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(REDIS_URL_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--workers", "2"])
    assert exit_info.value.code == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "--workers 2 needs --redis URL: without Redis each worker process would have rooms of its own" in error


@pytest.mark.parametrize(("value", "error"), [("0", "expected at least 1, got 0"), ("x", "expected a whole number")])
def test_parse_args_refuses_bad_worker_counts(value: str, error: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--workers", value])
    assert error in capsys.readouterr().err


def test_main_without_uvicorn_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main([]) == 2
    assert 'uvicorn 0.35+ and websockets: pip install "wsendpoints[demo]"' in capsys.readouterr().err


class FakeUvicorn:
    """Stands in for the `uvicorn` module and records how `main` calls it."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def run(self, *args: object, **kwargs: object) -> None:
        self.calls.append((args, kwargs))


def test_main_runs_the_demo_factory_with_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeUvicorn()
    monkeypatch.setitem(sys.modules, "uvicorn", fake)
    monkeypatch.setenv(REDIS_URL_ENV, "")
    assert main(["--port", "9001"]) == 0
    settings = {
        "ws": WebSocketProtocol,
        "ws_max_size": 1024 * 1024,  # the echo's and responder's limit; the room takes 4096 bytes
        "limit_concurrency": 1000,
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
        "timeout_graceful_shutdown": 10,
    }
    assert fake.calls == [
        (
            ("wsendpoints.demo:create_app",),
            {"factory": True, "host": "127.0.0.1", "port": 9001, "workers": 1, **settings},
        )
    ]
    assert REDIS_URL_ENV not in os.environ


def test_main_hands_the_redis_url_to_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeUvicorn()
    monkeypatch.setitem(sys.modules, "uvicorn", fake)
    monkeypatch.setenv(REDIS_URL_ENV, "")  # restored (unset) after the test, though main() sets it
    assert main(["--redis", "redis://127.0.0.1:1/0", "--workers", "4"]) == 0
    assert fake.calls[0][1]["workers"] == 4
    assert os.environ[REDIS_URL_ENV] == "redis://127.0.0.1:1/0"


def test_main_with_redis_but_without_redis_py_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeUvicorn()
    monkeypatch.setitem(sys.modules, "uvicorn", fake)
    monkeypatch.setitem(sys.modules, "redis", None)
    assert main(["--redis", "redis://127.0.0.1:1/0"]) == 2
    assert 'pip install "wsendpoints[redis]"' in capsys.readouterr().err
    assert fake.calls == []


# `python -m wsendpoints` for real: a subprocess serving on a free loopback port.


@contextmanager
def serve_demo(*args: str) -> Iterator[str]:
    """Run `python -m wsendpoints` with `args` on a free port until the context exits; yield its ws:// URL."""
    port = free_port()
    with serve_command(["-m", "wsendpoints", "--port", str(port), *args], port) as url:
        yield url


async def receive_json(ws: ClientConnection) -> dict[str, Any]:
    with anyio.fail_after(10):
        envelope: dict[str, Any] = json.loads(await ws.recv())
        return envelope


@pytest.fixture
def demo_url() -> Iterator[str]:
    with serve_demo() as url:
        yield url


@pytest.mark.server
def test_python_m_wsendpoints_serves_pages_and_echo(demo_url: str) -> None:
    with urllib.request.urlopen(demo_url.replace("ws://", "http://") + "/", timeout=10) as response:
        assert b"wsendpoints demo" in response.read()

    async def echo() -> None:
        async with connect(f"{demo_url}/echo") as ws:
            await ws.send("demo")
            with anyio.fail_after(10):
                assert await ws.recv() == "demo"

    anyio.run(echo)


@pytest.mark.server
def test_python_m_wsendpoints_serves_json_rooms(demo_url: str) -> None:
    async def chat() -> None:
        base = f"{demo_url}/rooms/lobby"
        async with connect(f"{base}/ann") as ann:
            assert await receive_json(ann) == {"type": "presence", "room": "lobby", "users": ["ann"]}
            async with connect(f"{base}/bob") as bob:
                assert await receive_json(bob) == {"type": "presence", "room": "lobby", "users": ["ann", "bob"]}
                assert unid(await receive_json(ann)) == {"type": "join", "room": "lobby", "user": "bob"}
                await bob.send(json.dumps({"text": "hi"}))
                assert unid(await receive_json(ann)) == {
                    "type": "message",
                    "room": "lobby",
                    "user": "bob",
                    "text": "hi",
                }

    anyio.run(chat)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


async def receive_until_message(ws: ClientConnection) -> list[dict[str, Any]]:
    """Receive envelopes up to and including the next "message"; return them."""
    received = [await receive_json(ws)]
    while received[-1]["type"] != "message":
        received.append(await receive_json(ws))
    return received


@pytest.mark.server
@pytest.mark.redis
def test_python_m_wsendpoints_shares_rooms_between_workers_through_redis(redis_url: str) -> None:
    """Members see each other wherever the kernel put them: presence, join notices and messages."""
    names = [f"user{n}" for n in range(6)]
    room = f"room-{uuid.uuid4().hex[:8]}"
    message = {"type": "message", "room": room, "user": names[0], "text": "hello, workers"}

    async def chat(url: str) -> None:
        async with AsyncExitStack() as stack:
            first = await stack.enter_async_context(connect(f"{url}/rooms/{room}/{names[0]}"))
            assert await receive_json(first) == {"type": "presence", "room": room, "users": names[:1]}
            others: list[ClientConnection] = []
            for count, name in enumerate(names[1:], start=2):
                others.append(await stack.enter_async_context(connect(f"{url}/rooms/{room}/{name}")))
                assert await receive_json(others[-1]) == {"type": "presence", "room": room, "users": names[:count]}
                # Once the first member has it, the join notice is in the room before anything sent later.
                assert unid(await receive_json(first)) == {"type": "join", "room": room, "user": name}
            await first.send(json.dumps({"text": "hello, workers"}))
            for index, ws in enumerate(others, start=1):
                *joins, last = await receive_until_message(ws)
                # A join notice published just before this member subscribed may come too.
                later = [join["user"] for join in joins if join["user"] not in names[:index]]
                assert (later, unid(last)) == (names[index + 1 :], message)

    with serve_demo("--redis", redis_url, "--workers", "2") as url:
        anyio.run(chat, url)


def test_python_m_wsendpoints_exits_with_the_status_of_main(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", FakeUvicorn())
    monkeypatch.delitem(sys.modules, "wsendpoints.__main__")  # else runpy warns that it is imported already
    monkeypatch.setattr(sys, "argv", ["wsendpoints", "--port", "9002"])
    monkeypatch.setenv(REDIS_URL_ENV, "")
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("wsendpoints", run_name="__main__")
    assert exit_info.value.code == 0
