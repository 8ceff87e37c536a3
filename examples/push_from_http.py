"""Push to a room from an HTTP route: POST /rooms/{room}/messages broadcasts the body's text.

`RoomEndpoint.broadcast(room, text)` works from any coroutine of the app; here a POST route
sends its body to every member of the room, and GET /rooms/{room}/members says who is there.

Run: uvicorn examples.push_from_http:app
Then: python -m examples.chat_client ws://127.0.0.1:8000/rooms/lobby/ann
And:  curl --data-binary "Server restarts in 5 minutes" http://127.0.0.1:8000/rooms/lobby/messages
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from wsendpoints import RoomEndpoint

__all__ = ["MAX_TEXT", "Chat", "app"]

MAX_TEXT = 64 * 1024
"""The longest text a POST may broadcast, in bytes."""

Chat = RoomEndpoint.configure(namespace="push")


async def post_message(request: Request) -> JSONResponse:
    """Broadcast the body, UTF-8 text of at most `MAX_TEXT` bytes, to the room; answer 202 and who got it."""
    room = request.path_params["room"]
    body = b""
    async for chunk in request.stream():  # stop reading as soon as it is too long
        body += chunk
        if len(body) > MAX_TEXT:
            return JSONResponse({"error": f"text over {MAX_TEXT} bytes"}, status_code=413)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return JSONResponse({"error": "text must be UTF-8"}, status_code=400)
    if not text:
        return JSONResponse({"error": "no text"}, status_code=400)
    await Chat.broadcast(room, text)
    return JSONResponse({"room": room, "members": await Chat.members(room)}, status_code=202)


async def members(request: Request) -> JSONResponse:
    """List who is in the room."""
    room = request.path_params["room"]
    return JSONResponse({"room": room, "members": await Chat.members(room)})


app = Starlette(
    routes=[
        WebSocketRoute("/rooms/{room}/{user}", Chat),
        Route("/rooms/{room}/messages", post_message, methods=["POST"]),
        Route("/rooms/{room}/members", members),
    ]
)
