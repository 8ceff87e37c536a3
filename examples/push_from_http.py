"""Push to a room from an HTTP route: POST /rooms/{room}/messages broadcasts the body's text.

`RoomEndpoint.broadcast(room, text)` works from any coroutine of the app; here a POST route
sends its body to every member of the room, and GET /rooms/{room}/members says who is there.

The POST route speaks for the server, so only callers holding the shared secret in the
environment variable PUSH_TOKEN may use it (`Authorization: Bearer <token>`); without
PUSH_TOKEN set, pushing is off.

Run: PUSH_TOKEN=change-me uvicorn examples.push_from_http:app
Then: python -m examples.chat_client ws://127.0.0.1:8000/rooms/lobby/ann
And:  curl -H "Authorization: Bearer change-me" --data-binary "Server restarts in 5 minutes" \
        http://127.0.0.1:8000/rooms/lobby/messages
"""

from __future__ import annotations

import os
import secrets

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from wsendpoints import RoomEndpoint

__all__ = ["MAX_TEXT", "TOKEN_ENV", "Chat", "app"]

TOKEN_ENV = "PUSH_TOKEN"
"""The environment variable holding the shared secret a POST must present as a bearer token."""

MAX_TEXT = 64 * 1024
"""The longest text a POST may broadcast, in bytes."""

Chat = RoomEndpoint.configure(namespace="push")


async def post_message(request: Request) -> JSONResponse:
    """Broadcast the body, UTF-8 text of at most `MAX_TEXT` bytes, to the room; answer 202 and who got it.

    Anyone who can reach an open push route can post to every room as the server, and examples
    get copied into production: so the caller must present the shared secret (401 if it does
    not), and with no secret configured the route refuses everyone (403).
    """
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        return JSONResponse({"error": f"pushing is off: set {TOKEN_ENV}"}, status_code=403)
    given = request.headers.get("authorization", "").encode()
    if not secrets.compare_digest(given, f"Bearer {token}".encode()):  # in constant time: no guessing by timing
        return JSONResponse({"error": "a valid bearer token is required"}, 401, {"WWW-Authenticate": "Bearer"})
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
    try:
        await Chat.broadcast(room, text)  # checks the room name too
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
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
