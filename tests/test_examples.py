from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

import anyio
import pytest
from anyio.from_thread import BlockingPortal
from starlette.testclient import TestClient
from starlette.types import ASGIApp
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect

from examples import chat_client, echo_page, ok_check, ok_responder, push_from_http, quickstart, room_chat
from tests.conftest import ClientFactory
from tests.demo.serving import CHILD_ENV, ROOT, get_json, serve_command
from tests.redis_server import RedisServer, free_port
from wsendpoints import Broker, CloseCode
from wsendpoints.testing import assert_no_message, expect_close, receive_text

WAIT = 10.0
"""Seconds any one wait on a subprocess or a real server may take."""


def new_room() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


def test_quickstart_mounts_echo_ok_and_templated_echo(client_factory: ClientFactory) -> None:
    client = client_factory(quickstart.app)
    with client.websocket_connect("/echo") as ws:
        ws.send_text("hi")
        assert receive_text(ws) == "hi"
    with client.websocket_connect("/ok") as ws:
        ws.send_text("hi")
        assert receive_text(ws) == "OK!"
    with client.websocket_connect("/chat-echo") as ws:
        ws.send_text("hi")
        assert receive_text(ws) == "Message text was: hi"


def test_echo_page_serves_the_form_and_inserts_text_only() -> None:
    with TestClient(echo_page.app) as client:
        response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<form id="form">' in response.text
    assert "textContent" in response.text
    assert "innerHTML" not in response.text


def test_echo_page_socket_answers_with_the_template(client_factory: ClientFactory) -> None:
    with client_factory(echo_page.app).websocket_connect("/ws") as ws:
        ws.send_text("<b>hi</b>")
        assert receive_text(ws) == "Message text was: <b>hi</b>"
        ws.send_bytes(b"\x00")
        assert ws.receive_bytes() == b"\x00"


def test_ok_responder_answers_text_and_bytes(client_factory: ClientFactory) -> None:
    with client_factory(ok_responder.app).websocket_connect("/ws") as ws:
        ws.send_text("Hello")
        assert receive_text(ws) == "OK!"
        ws.send_bytes(b"Hello")
        assert receive_text(ws) == "OK!"


def test_ok_check_passes_against_the_responder(capsys: pytest.CaptureFixture[str]) -> None:
    assert ok_check.main() == 0
    assert "ok_responder:" in capsys.readouterr().out


def test_ok_check_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.ok_check"],
        cwd=ROOT,
        env={**os.environ, **CHILD_ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert "OK!" in result.stdout


def test_room_chat_sends_user_text_to_the_others(client_factory: ClientFactory) -> None:
    room = new_room()
    client = client_factory(room_chat.app)
    with client.websocket_connect(f"/websocket/{room}/ann") as ann:
        with client.websocket_connect(f"/websocket/{room}/bob") as bob:
            assert receive_text(ann) == "bob joined the chat"
            ann.send_text("hello")
            assert receive_text(bob) == "ann: hello"
            bob.send_text("hi")
            assert receive_text(ann) == "bob: hi"
            assert_no_message(ann)
        assert receive_text(ann) == "bob left the chat"


def test_room_chat_closes_on_a_bad_user_name(client_factory: ClientFactory) -> None:
    with client_factory(room_chat.app).websocket_connect(f"/websocket/{new_room()}/a b") as ws:
        assert expect_close(ws) == (CloseCode.POLICY_VIOLATION, "invalid user name")


PUSH_TOKEN = "s3cret-for-tests"
AUTHORIZED = {"Authorization": f"Bearer {PUSH_TOKEN}"}


@pytest.fixture
def push_token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(push_from_http.TOKEN_ENV, PUSH_TOKEN)
    return PUSH_TOKEN


@pytest.mark.usefixtures("push_token")
def test_push_from_http_broadcasts_the_body_and_lists_members(client_factory: ClientFactory) -> None:
    room = new_room()
    client = client_factory(push_from_http.app)
    with client.websocket_connect(f"/rooms/{room}/ann") as ann:
        response = client.post(f"/rooms/{room}/messages", content="Server restarts in 5 minutes", headers=AUTHORIZED)
        assert (response.status_code, response.json()) == (202, {"room": room, "members": ["ann"]})
        assert receive_text(ann) == "Server restarts in 5 minutes"
        assert client.get(f"/rooms/{room}/members").json() == {"room": room, "members": ["ann"]}
    assert client.get(f"/rooms/{room}/members").json() == {"room": room, "members": []}


@pytest.mark.usefixtures("push_token")
@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"", 400, "no text"),
        (b"\xff", 400, "text must be UTF-8"),
        (b"x" * (push_from_http.MAX_TEXT + 1), 413, "text over 65536 bytes"),
    ],
)
def test_push_from_http_refuses_bad_text(body: bytes, status: int, error: str) -> None:
    room = new_room()
    with TestClient(push_from_http.app) as client, client.websocket_connect(f"/rooms/{room}/ann") as ann:
        response = client.post(f"/rooms/{room}/messages", content=body, headers=AUTHORIZED)
        assert (response.status_code, response.json()) == (status, {"error": error})
        assert_no_message(ann)


@pytest.mark.usefixtures("push_token")
def test_push_from_http_refuses_a_bad_room_name() -> None:
    with TestClient(push_from_http.app) as client:
        response = client.post("/rooms/a%20b/messages", content="hi", headers=AUTHORIZED)
    assert response.status_code == 400
    assert response.json()["error"].startswith("room name 'a b' does not match name_pattern")


@pytest.mark.usefixtures("push_token")
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": PUSH_TOKEN}])
def test_push_from_http_without_the_secret_is_401_and_publishes_nothing(headers: dict[str, str]) -> None:
    room = new_room()
    with TestClient(push_from_http.app) as client, client.websocket_connect(f"/rooms/{room}/ann") as ann:
        response = client.post(f"/rooms/{room}/messages", content="spoofed", headers=headers)
        assert (response.status_code, response.json()) == (401, {"error": "a valid bearer token is required"})
        assert response.headers["www-authenticate"] == "Bearer"
        assert_no_message(ann)


def test_push_from_http_is_off_without_a_configured_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(push_from_http.TOKEN_ENV, raising=False)
    room = new_room()
    with TestClient(push_from_http.app) as client, client.websocket_connect(f"/rooms/{room}/ann") as ann:
        response = client.post(f"/rooms/{room}/messages", content="hi", headers={"Authorization": "Bearer "})
        assert (response.status_code, response.json()) == (403, {"error": "pushing is off: set PUSH_TOKEN"})
        assert_no_message(ann)


# The terminal client, driven as a user would: a subprocess with its stdin and stdout on pipes.


class ChatClient:
    """`python -m examples.chat_client URL` in a subprocess; every wait is bounded by `WAIT`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.process = subprocess.Popen(
            [sys.executable, "-m", "examples.chat_client", url],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **CHILD_ENV},
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.streams = (self.process.stdin, self.process.stdout, self.process.stderr)
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: list[str] = []
        self.readers = [
            threading.Thread(target=self._read_lines, args=(self.process.stdout,), daemon=True),
            threading.Thread(target=self._read_errors, args=(self.process.stderr,), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read_lines(self, stream: IO[bytes]) -> None:
        for line in stream:
            self.lines.put(line.decode().rstrip("\n"))

    def _read_errors(self, stream: IO[bytes]) -> None:
        self.errors.append(stream.read().decode())

    @property
    def stderr(self) -> str:
        """What the client wrote to stderr, once it has exited."""
        return "".join(self.errors)

    def type(self, line: str) -> None:
        self.streams[0].write(line.encode() + b"\n")
        self.streams[0].flush()

    def end_input(self) -> None:
        self.streams[0].close()

    def expect(self, line: str) -> None:
        assert self.lines.get(timeout=WAIT) == line  # raises queue.Empty if no line comes

    def exit_status(self) -> int:
        status = self.process.wait(WAIT)
        for reader in self.readers:
            reader.join(WAIT)
        return status

    def stop(self) -> None:
        self.process.kill()  # does nothing if it has exited
        self.process.wait(WAIT)
        for stream in self.streams:
            stream.close()


@pytest.fixture
def chat_clients() -> Iterator[Callable[[str], ChatClient]]:
    clients: list[ChatClient] = []

    def start(url: str) -> ChatClient:
        client = ChatClient(url)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.stop()
        print(f"{client.url}: exit status {client.process.returncode}, stderr {client.stderr!r}")


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    with anyio.from_thread.start_blocking_portal() as portal:
        yield portal


@contextmanager
def published(portal: BlockingPortal, broker: Broker, key: str) -> Iterator[queue.Queue[str]]:
    """Subscribe to `key` on `broker`; yield a queue of what is published there, as it comes.

    A room's key is `"{namespace}/{room}"`. Its join notice is published once a member is subscribed
    and present, and its leave notice once it is gone: what a test needs to wait for, without polling.
    """
    payloads: queue.Queue[str] = queue.Queue()
    with portal.wrap_async_context_manager(broker.subscribe(key, lambda message: payloads.put(message.payload))):
        yield payloads


def wait_for(payloads: queue.Queue[str], expected: str) -> list[str]:
    """Take payloads up to and including `expected`, for at most `WAIT` seconds each; return those before it."""
    before = []
    while (payload := payloads.get(timeout=WAIT)) != expected:
        before.append(payload)
    return before


def members(room: str) -> list[str]:
    return anyio.run(room_chat.Chat.members, room)


@pytest.mark.server
def test_chat_client_talks_with_another_client_through_a_real_server(
    serve: Callable[[ASGIApp], str], chat_clients: Callable[[str], ChatClient], portal: BlockingPortal
) -> None:
    base, room = serve(room_chat.app), new_room()
    with published(portal, room_chat.Chat.broker, f"room_chat/{room}") as notices:
        ann = chat_clients(f"{base}/websocket/{room}/ann")
        assert wait_for(notices, "ann joined the chat") == []
        bob = chat_clients(f"{base}/websocket/{room}/bob")
        ann.expect("bob joined the chat")
        ann.type("hello bob")
        bob.expect("ann: hello bob")
        bob.type("")
        bob.type("hi ann")
        ann.expect("bob: hi ann")
        ann.type("exit")
        bob.expect("ann left the chat")
        assert ann.exit_status() == 0
        bob.end_input()
        assert bob.exit_status() == 0
        assert wait_for(notices, "bob left the chat") == [
            "bob joined the chat",
            "ann: hello bob",
            "bob: hi ann",
            "ann left the chat",
        ]
    assert members(room) == []
    assert ann.stderr.startswith(chat_client.PROMPT)
    assert "Traceback" not in ann.stderr + bob.stderr


@pytest.mark.server
def test_chat_client_reports_the_servers_close_code(
    serve: Callable[[ASGIApp], str], chat_clients: Callable[[str], ChatClient]
) -> None:
    client = chat_clients(f"{serve(room_chat.app)}/websocket/{new_room()}/not!valid")
    assert client.exit_status() == 1
    assert "connection closed by the server: 1008 invalid user name" in client.stderr


@pytest.mark.server
def test_chat_client_prints_each_message_on_one_line_without_controls(
    serve: Callable[[ASGIApp], str], chat_clients: Callable[[str], ChatClient], portal: BlockingPortal
) -> None:
    base, room = serve(room_chat.app), new_room()
    with published(portal, room_chat.Chat.broker, f"room_chat/{room}") as notices:
        ann = chat_clients(f"{base}/websocket/{room}/ann")
        wait_for(notices, "ann joined the chat")
        anyio.run(room_chat.Chat.broadcast, room, "hi\nbob: I agree\r\x1b[2J\x85\tend")  # the app's text, as it is
        ann.expect("hi\ufffdbob: I agree\ufffd\ufffd[2J\ufffd\tend")
        ann.type("exit")
        assert ann.exit_status() == 0


def test_chat_client_says_when_it_cannot_connect(chat_clients: Callable[[str], ChatClient]) -> None:
    url = f"ws://127.0.0.1:{free_port()}/websocket/lobby/ann"
    client = chat_clients(url)
    assert client.exit_status() == 1
    assert f"cannot connect to {url}" in client.stderr


@pytest.mark.server
def test_chat_client_leaves_quietly_on_ctrl_c(
    serve: Callable[[ASGIApp], str], chat_clients: Callable[[str], ChatClient], portal: BlockingPortal
) -> None:
    base, room = serve(room_chat.app), new_room()
    with published(portal, room_chat.Chat.broker, f"room_chat/{room}") as notices:
        client = chat_clients(f"{base}/websocket/{room}/ann")
        wait_for(notices, "ann joined the chat")
        client.process.send_signal(signal.SIGINT)
        assert client.exit_status() == 130
        wait_for(notices, "ann left the chat")
    assert "Traceback" not in client.stderr
    assert members(room) == []


# The FastAPI example: FastAPI is an optional dependency of the examples only.


def test_fastapi_chat_serves_the_tutorial_page() -> None:
    pytest.importorskip("fastapi", reason="examples/fastapi_chat.py needs FastAPI: pip install fastapi")
    from examples import fastapi_chat

    with TestClient(fastapi_chat.app) as client:
        response = client.get("/")
    assert response.status_code == 200
    assert "WebSocket Chat" in response.text
    assert "innerHTML" not in response.text


def test_fastapi_chat_sends_the_tutorials_messages(client_factory: ClientFactory) -> None:
    pytest.importorskip("fastapi", reason="examples/fastapi_chat.py needs FastAPI: pip install fastapi")
    from examples import fastapi_chat

    client = client_factory(fastapi_chat.app)
    first, second = (f"{n}{uuid.uuid4().int % 10**9}" for n in (1, 2))
    with client.websocket_connect(f"/ws/{first}") as ws1:
        with client.websocket_connect(f"/ws/{second}") as ws2:
            assert_no_message(ws1)
            ws1.send_text("Hello")
            assert receive_text(ws1) == "You wrote: Hello"
            assert receive_text(ws2) == f"Client #{first} says: Hello"
            assert_no_message(ws1)
            ws2.send_text("Hi")
            assert receive_text(ws2) == "You wrote: Hi"
            assert receive_text(ws1) == f"Client #{second} says: Hi"
        assert receive_text(ws1) == f"Client #{second} left the chat"
        assert anyio.run(fastapi_chat.Chat.members, "chat") == [first]


def test_fastapi_chat_keeps_the_tutorials_types_and_states_its_limit(client_factory: ClientFactory) -> None:
    """`client_id` is an int, as in the tutorial; a message over 64 KiB closes 1009, as the page says."""
    pytest.importorskip("fastapi", reason="examples/fastapi_chat.py needs FastAPI: pip install fastapi")
    from examples import fastapi_chat

    assert "64 KiB" in fastapi_chat.PAGE
    client = client_factory(fastapi_chat.app)
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ws/not-a-number"):
        pass  # pragma: no cover - never reached
    with client.websocket_connect(f"/ws/{uuid.uuid4().int % 10**9}") as ws:
        ws.send_text("x" * (64 * 1024 + 1))
        assert expect_close(ws) == (1009, "message too big")


# The multi-process example, on a real redis-server: two uvicorn processes stand for two workers.


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


def test_multiworker_mounts_rooms_on_redis() -> None:
    pytest.importorskip("redis", reason='examples/multiworker.py needs redis-py: pip install "wsendpoints[redis]"')
    from examples import multiworker
    from wsendpoints.brokers.redis import RedisBroker

    assert isinstance(multiworker.broker, RedisBroker)
    assert multiworker.Chat.broker is multiworker.broker


@contextmanager
def serve_example(name: str, redis_url: str) -> Iterator[str]:
    """Run `uvicorn examples.NAME:app` on a free port with `REDIS_URL` set; yield its ws:// URL."""
    port = free_port()
    command = ["-m", "uvicorn", f"examples.{name}:app", "--port", str(port), "--log-level", "warning"]
    with serve_command(command, port, ready="/rooms/probe", env={"REDIS_URL": redis_url}) as url:
        yield url


async def receive_until(ws: ClientConnection, last: str) -> list[str | bytes]:
    """Receive messages up to and including `last`; return them."""
    with anyio.fail_after(WAIT):
        received = [await ws.recv()]
        while received[-1] != last:
            received.append(await ws.recv())
    return received


@pytest.mark.server
@pytest.mark.redis
def test_multiworker_rooms_span_processes(redis_url: str, portal: BlockingPortal) -> None:
    """Members served by two processes on one Redis share the room; this test, a third process, sees it too."""
    from wsendpoints.brokers.redis import RedisBroker

    room = new_room()

    async def chat(first: str, second: str, notices: queue.Queue[str]) -> None:
        async def notice(expected: str) -> list[str]:
            return await anyio.to_thread.run_sync(wait_for, notices, expected)

        async def present(base: str) -> object:
            return await anyio.to_thread.run_sync(get_json, f"{base.replace('ws://', 'http://')}/rooms/{room}")

        async with connect(f"{first}/websocket/{room}/ann") as ann:
            assert await notice("ann joined the chat") == []
            async with connect(f"{second}/websocket/{room}/bob") as bob:
                assert await receive_until(ann, "bob joined the chat") == ["bob joined the chat"]
                await ann.send("hello from the first process")
                assert await receive_until(bob, "ann: hello from the first process") == [
                    "ann: hello from the first process"
                ]
                await bob.send("hello from the second process")
                await bob.send("and again")
                assert await receive_until(ann, "bob: and again") == [
                    "bob: hello from the second process",
                    "bob: and again",
                ]
                assert await present(first) == {"room": room, "members": ["ann", "bob"]}
            assert await receive_until(ann, "bob left the chat") == ["bob left the chat"]
        assert await notice("ann left the chat") == [
            "bob joined the chat",
            "ann: hello from the first process",
            "bob: hello from the second process",
            "bob: and again",
            "bob left the chat",
        ]
        assert await present(second) == {"room": room, "members": []}

    broker = RedisBroker(redis_url)
    with (
        portal.wrap_async_context_manager(broker),
        published(portal, broker, f"multiworker/{room}") as notices,
        serve_example("multiworker", redis_url) as first,
        serve_example("multiworker", redis_url) as second,
    ):
        anyio.run(chat, first, second, notices)
