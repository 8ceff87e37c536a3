"""The README's close table, row by row, under uvicorn and under `TestClient`.

Each scenario runs under both servers; what each client saw must be what the README's row
says for that server (the code or HTTP status appears in that column), and `on_disconnect`
must get the code and `closed_by` of the row.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException, WebSocketException
from starlette.routing import WebSocketRoute
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import ClientFactory
from tests.hostile.rawws import RawSocket, frame
from tests.servers import UvicornThread
from wsendpoints import Endpoint

README = Path(__file__).parent.parent / "README.md"
disconnects: list[tuple[int, str | None]] = []
disconnected = threading.Event()


class Table(Endpoint):
    encoding = "json"

    async def on_connect(self, websocket: WebSocket) -> None:
        how = websocket.query_params.get("how", "")
        if how == "http":
            raise HTTPException(401, "who are you?")
        if how == "ws-before":
            raise WebSocketException(4401, "no token")
        if how == "crash":
            raise RuntimeError("before accept")
        await super().on_connect(websocket)

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        if data == "close":
            await websocket.close(4001, "bye")
        elif data == "raise":
            raise RuntimeError("secret")
        else:  # "ws-after"
            raise WebSocketException(4402, "token expired")

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        disconnects.append((close_code, self.closed_by))
        disconnected.set()


app = Starlette(routes=[WebSocketRoute("/ws", Table)])

# row of the README -> (what the client sends or asks, uvicorn sees, TestClient sees, on_disconnect)
Outcome = tuple[str, int]  # ("close", code) or ("http", status) or ("none", 0)
ROWS: dict[str, tuple[str, Outcome, Outcome, tuple[int, str | None] | None]] = {
    "the client closes": ("client-close-no-code", ("none", 0), ("none", 0), (1005, "client")),
    "a handler calls `websocket.close(code, reason)`": ('"close"', ("close", 4001), ("close", 4001), (4001, "server")),
    'with `encoding="json"`': ("{", ("close", 1007), ("close", 1007), (1007, "server")),
    "a handler raises": ('"raise"', ("close", 1011), ("close", 1011), (1011, "error")),
    "a handler raises `WebSocketException(code, reason)`": (
        '"ws-after"',
        ("close", 4402),
        ("close", 4402),
        (4402, "server"),
    ),
    "a handler raises `WebSocketException(code, reason)`, before the accept": (
        "?how=ws-before",
        ("http", 403),
        ("close", 4401),
        None,
    ),
    "`HTTPException(status)` before the accept": ("?how=http", ("http", 401), ("http", 401), None),
    "foreign `Origin`": ("origin", ("http", 403), ("http", 403), None),
    "`on_connect` raises before accepting": ("?how=crash", ("http", 500), ("http", 500), None),
    "the server shuts down": ("shutdown", ("close", 1012), ("none", 0), (1012, "client")),
}


def readme_row(key: str) -> list[str]:
    """The cells of the README close-table row that `key` starts (up to its first comma for "before" rows)."""
    first = key.split(", before")[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in README.read_text().splitlines()]
    matching = [cells for cells in rows if len(cells) == 5 and cells[0].startswith(first)]
    assert matching, f"no README close-table row starts with {first!r}"
    return matching[0]


def check_readme(key: str, column: int, outcome: Outcome, seen: tuple[int, str | None] | None) -> None:
    cells = readme_row(key)
    kind, number = outcome
    if kind == "none":
        assert cells[column].startswith("—"), (key, cells[column])
    else:
        # A row of a code the app chooses says "that code"; the others name the code or status.
        assert re.search(rf"\b{number}\b|that (code|HTTP status|status)", cells[column]), (key, cells[column], outcome)
    if seen is None:
        assert cells[3] == "not called" or ", before" in key, (key, cells[3])
    else:
        assert re.search(rf"\b{seen[0]}\b|that code", cells[3]), (key, cells[3], seen)
        assert f'"{seen[1]}"' in cells[4], (key, cells[4], seen)


async def drain(ws: ClientConnection) -> None:
    while True:
        await ws.recv()


@pytest.fixture(autouse=True)
def _clear() -> None:
    disconnects.clear()
    disconnected.clear()


@pytest.mark.parametrize("key", list(ROWS))
def test_close_table_under_testclient(client_factory: ClientFactory, key: str) -> None:
    action, _, expected, on_disconnect = ROWS[key]
    client = client_factory(app)
    seen: Outcome = ("none", 0)
    if action == "shutdown":  # TestClient has no server to shut down: the row says so
        check_readme(key, 2, expected, on_disconnect)
        return
    query = action if action.startswith("?") else ""
    headers = {"origin": "https://evil.example"} if action == "origin" else {}
    try:
        with client.websocket_connect(f"/ws{query}", headers=headers) as ws:
            if action == "client-close-no-code":
                ws.close(code=None)  # type: ignore[arg-type]  # a close frame without a status code
            else:
                ws.send_text(action)
                with pytest.raises(WebSocketDisconnect) as closed:
                    ws.receive_text()
                seen = ("close", closed.value.code)
    except WebSocketDenialResponse as denied:
        seen = ("http", denied.status_code)
    except WebSocketDisconnect as refused:
        seen = ("close", refused.code)
    assert seen == expected
    assert disconnects == ([] if on_disconnect is None else [on_disconnect])
    check_readme(key, 2, expected, on_disconnect)


@pytest.mark.server
@pytest.mark.anyio
@pytest.mark.parametrize("key", list(ROWS))
async def test_close_table_under_uvicorn(key: str) -> None:
    action, expected, _, on_disconnect = ROWS[key]
    server = UvicornThread(app)
    base = server.start()
    seen: Outcome = ("none", 0)
    try:
        query = action if action.startswith("?") else ""
        origin: Any = "https://evil.example" if action == "origin" else None
        if action == "client-close-no-code":
            port = int(base.rsplit(":", 1)[1])
            raw = RawSocket(port, "/ws", [])
            raw.send(frame(0x8, b""))  # a close frame with no status code
            assert raw.receive_frame()[0] == 8
            raw.close()
        else:
            try:
                async with connect(f"{base}/ws{query}", origin=origin, open_timeout=5, close_timeout=5) as ws:
                    if action == "shutdown":
                        server.server.should_exit = True
                    else:
                        await ws.send(action)
                    with anyio.fail_after(10), pytest.raises(ConnectionClosed):
                        await drain(ws)
                assert ws.protocol.close_rcvd is not None
                seen = ("close", ws.protocol.close_rcvd.code)
            except InvalidStatus as refused:
                seen = ("http", refused.response.status_code)
        if on_disconnect is not None:
            assert await anyio.to_thread.run_sync(disconnected.wait, 10)
    finally:
        server.stop()
    assert seen == expected
    assert disconnects == ([] if on_disconnect is None else [on_disconnect])
    check_readme(key, 1, expected, on_disconnect)
