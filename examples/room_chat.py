"""Chat rooms with the room and the user name in the URL: /websocket/{room}/{user}.

The classic tutorial's rooms, rebuilt on `RoomEndpoint`: each message goes to the others in
the room as "user: text", and they are told "user joined the chat" and "user left the chat".
Every member has its own bounded queue, so one member that stops reading never holds up the
room; a member that falls 1024 messages behind is closed with 1013. Names must match
`[\\w.-]{1,64}`, else the socket closes with 1008 and says why.

Run: uvicorn examples.room_chat:app
Then, in two terminals: python -m examples.chat_client ws://127.0.0.1:8000/websocket/lobby/ann
                        python -m examples.chat_client ws://127.0.0.1:8000/websocket/lobby/bob
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from wsendpoints import RoomEndpoint

__all__ = ["Chat", "app"]

Chat = RoomEndpoint.configure(namespace="room_chat", max_members=100, rate_limit=(20, 10.0))
"""Text mode: the others get "{user}: {text}"; at most 100 members a room, 20 messages in 10 s each."""

app = Starlette(routes=[WebSocketRoute("/websocket/{room}/{user}", Chat)])
