from __future__ import annotations

import re
from collections.abc import Iterator
from importlib.resources import files

import anyio
import pytest
from starlette.testclient import TestClient

from tests.conftest import ClientFactory
from tests.envelopes import unid
from tests.redis_server import RedisServer
from wsendpoints import MemoryBroker, testing
from wsendpoints.demo import HEADERS, REDIS_URL_ENV, STATIC_FILES, create_app
from wsendpoints.demo.app import RECENT_MESSAGES
from wsendpoints.exceptions import BrokerClosedError

STATIC = files("wsendpoints.demo") / "static"


def test_demo_home_page_links_the_echo_and_chat_pages() -> None:
    with TestClient(create_app()) as client:
        response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert 'href="/echo.html"' in response.text
    assert 'href="/chat.html"' in response.text


def test_demo_serves_every_static_file_with_its_type_and_headers() -> None:
    types = {
        "html": "text/html; charset=utf-8",
        "js": "text/javascript; charset=utf-8",
        "css": "text/css; charset=utf-8",
    }
    types["svg"] = "image/svg+xml"
    with TestClient(create_app()) as client:
        for name in STATIC_FILES:
            response = client.get(f"/{name}")
            assert response.status_code == 200, name
            assert response.content == (STATIC / name).read_bytes()
            assert response.headers["content-type"] == types[name.rpartition(".")[2]]
            for header, value in HEADERS.items():
                assert response.headers[header] == value
        head = client.head("/chat.html")
        assert (head.status_code, head.content) == (200, b"")


def test_demo_ships_only_files_it_serves() -> None:
    assert sorted(item.name for item in STATIC.iterdir()) == sorted(STATIC_FILES)


def test_demo_answers_404_for_unknown_pages() -> None:
    with TestClient(create_app()) as client:
        response = client.get("/app.py")
    assert (response.status_code, response.text) == (404, "Not Found")
    assert response.headers["Content-Security-Policy"] == HEADERS["Content-Security-Policy"]


def test_demo_pages_load_scripts_and_styles_from_files_only() -> None:
    """With the Content-Security-Policy, inline scripts, styles and handlers would not run."""
    for name in STATIC_FILES:
        if name.endswith(".html"):
            text = (STATIC / name).read_text()
            assert re.findall(r"<script(?![^>]*\bsrc=)", text) == [], name
            assert re.findall(r"<style|\sstyle=|\son\w+=", text) == [], name


def test_demo_scripts_never_insert_text_as_html() -> None:
    for name in STATIC_FILES:
        if name.endswith(".js"):
            text = (STATIC / name).read_text()
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
                assert sink not in text, f"{name} uses {sink}"


def test_demo_mounts_echo_and_ok(client_factory: ClientFactory) -> None:
    client = client_factory(create_app())
    with client.websocket_connect("/echo") as ws:
        ws.send_text("hi")
        assert testing.receive_text(ws) == "hi"
    with client.websocket_connect("/ok") as ws:
        ws.send_text("hi")
        assert testing.receive_text(ws) == "OK!"


def test_demo_rooms_speak_json_with_presence_and_notices(client_factory: ClientFactory) -> None:
    app = create_app()
    client = client_factory(app)
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        assert testing.receive_json(ann) == {"type": "presence", "room": "lobby", "users": ["ann"]}
        with client.websocket_connect("/rooms/lobby/bob") as bob:
            assert testing.receive_json(bob) == {"type": "presence", "room": "lobby", "users": ["ann", "bob"]}
            assert unid(testing.receive_json(ann)) == {"type": "join", "room": "lobby", "user": "bob"}
            bob.send_json({"text": "<img src=x onerror=alert(1)>"})
            message = {"type": "message", "room": "lobby", "user": "bob", "text": "<img src=x onerror=alert(1)>"}
            assert unid(testing.receive_json(ann)) == message
            testing.assert_no_message(bob)
        assert unid(testing.receive_json(ann)) == {"type": "leave", "room": "lobby", "user": "bob"}


def test_demo_rooms_are_the_apps_own(client_factory: ClientFactory) -> None:
    """Two demo apps in one process never share rooms: each has its own broker."""
    first, second = create_app(), create_app()
    assert first.state.broker is not second.state.broker
    with (
        client_factory(first).websocket_connect("/rooms/lobby/ann") as ann,
        client_factory(second).websocket_connect("/rooms/lobby/bob") as bob,
    ):
        assert testing.receive_json(ann)["users"] == ["ann"]
        assert testing.receive_json(bob)["users"] == ["bob"]
        testing.assert_no_message(ann)


def test_demo_uses_the_memory_broker_without_a_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REDIS_URL_ENV, raising=False)
    assert isinstance(create_app().state.broker, MemoryBroker)
    monkeypatch.setenv(REDIS_URL_ENV, "")
    assert isinstance(create_app().state.broker, MemoryBroker)
    monkeypatch.setenv(REDIS_URL_ENV, "redis://127.0.0.1:1/0")
    assert isinstance(create_app(redis_url="").state.broker, MemoryBroker)


def test_demo_closes_its_broker_on_shutdown() -> None:
    app = create_app()
    with TestClient(app) as client:
        assert client.get("/").status_code == 200
    with pytest.raises(BrokerClosedError):
        anyio.run(app.state.room.broadcast, "lobby", "after shutdown")


def test_demo_serves_a_rooms_latest_messages_over_http(client_factory: ClientFactory) -> None:
    app = create_app()
    client = client_factory(app)
    assert client.get("/rooms/lobby/history").json() == {"room": "lobby", "messages": []}
    for n in range(RECENT_MESSAGES + 1):
        anyio.run(app.state.room.broadcast, "lobby", f"m{n}")
    response = client.get("/rooms/lobby/history")
    messages = response.json()["messages"]
    assert [m["text"] for m in messages] == [f"m{n}" for n in range(1, RECENT_MESSAGES + 1)]
    assert all(m["id"] for m in messages)
    assert response.headers["Content-Security-Policy"] == HEADERS["Content-Security-Policy"]
    response = client.get("/rooms/no%20such/history")
    assert (response.status_code, response.text) == (400, "invalid room name")


def test_demo_lists_a_rooms_members_over_http(client_factory: ClientFactory) -> None:
    client = client_factory(create_app())
    assert client.get("/rooms/lobby/members").json() == {"room": "lobby", "users": []}
    with client.websocket_connect("/rooms/lobby/zoe"), client.websocket_connect("/rooms/lobby/adam"):
        response = client.get("/rooms/lobby/members")
        assert response.json() == {"room": "lobby", "users": ["adam", "zoe"]}
        assert response.headers["Content-Security-Policy"] == HEADERS["Content-Security-Policy"]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


@pytest.mark.redis
def test_demo_shares_rooms_through_redis(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two demo apps (two workers, say) on one Redis have the same rooms."""
    from wsendpoints.brokers.redis import RedisBroker

    monkeypatch.setenv(REDIS_URL_ENV, redis_url)
    first, second = create_app(), create_app()
    assert isinstance(first.state.broker, RedisBroker)
    with TestClient(first) as one, TestClient(second) as two, one.websocket_connect("/rooms/lobby/ann") as ann:
        assert testing.receive_json(ann, timeout=5)["users"] == ["ann"]
        with two.websocket_connect("/rooms/lobby/bob") as bob:
            assert testing.receive_json(bob, timeout=5)["users"] == ["ann", "bob"]
            assert unid(testing.receive_json(ann, timeout=5)) == {"type": "join", "room": "lobby", "user": "bob"}
            assert one.get("/rooms/lobby/members").json()["users"] == ["ann", "bob"]
