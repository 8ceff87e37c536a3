"""FastAPI as its tutorial writes it: a route per job and the `ConnectionManager` for rooms.

The manager is the tutorial's (a list of connections, `await send_text` to each in turn),
keyed by room, and it skips the sender like every other peer's room does.
"""

from __future__ import annotations

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

__all__ = ["app"]

app = FastAPI()


@app.websocket("/echo")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_text()
            await websocket.send_text(data)
    except WebSocketDisconnect:
        pass


@app.websocket("/ok")
async def ok(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.receive_text()
            await websocket.send_text("OK!")
    except WebSocketDisconnect:
        pass


class ConnectionManager:
    def __init__(self) -> None:
        self.active_connections: dict[str, list[WebSocket]] = {}

    async def connect(self, room: str, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active_connections.setdefault(room, []).append(websocket)

    def disconnect(self, room: str, websocket: WebSocket) -> None:
        connections = self.active_connections[room]
        connections.remove(websocket)
        if not connections:
            del self.active_connections[room]

    async def broadcast(self, room: str, message: str, sender: WebSocket) -> None:
        for connection in self.active_connections[room]:
            if connection is not sender:
                await connection.send_text(message)


manager = ConnectionManager()


@app.websocket("/rooms/{room}/{user}")
async def chat(websocket: WebSocket, room: str, user: str) -> None:
    await manager.connect(room, websocket)
    try:
        while True:
            data = await websocket.receive_text()
            await manager.broadcast(room, f"{user}: {data}", websocket)
    except WebSocketDisconnect:
        pass
    finally:
        manager.disconnect(room, websocket)
