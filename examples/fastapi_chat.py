"""The FastAPI multi-user chat, rebuilt by mounting a `RoomEndpoint` subclass into a FastAPI app.

Same URLs, types and messages as the tutorial: the page at / opens /ws/{client_id}, where
`client_id` is an int (`{client_id:int}`: any other path is refused); the sender gets
"You wrote: ...", the others "Client #id says: ...", and "Client #id left the chat" when one
leaves. Unlike the tutorial's `ConnectionManager`, the sender does not get its own broadcast,
one member that stops reading never holds up the others, and a client leaving in the middle of
a broadcast breaks nothing. Messages are limited to 64 KiB (RoomEndpoint's `max_message_size`):
a longer one closes that client's connection with 1009 "message too big".

Needs FastAPI, which wsendpoints itself does not: pip install fastapi
Run: uvicorn examples.fastapi_chat:app, then open http://127.0.0.1:8000/ in two tabs
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from wsendpoints import RoomEndpoint

__all__ = ["PAGE", "Chat", "app"]

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Chat</title></head>
<body>
<h1>WebSocket Chat</h1>
<h2>Your ID: <span id="ws-id"></span></h2>
<p>Messages up to 64 KiB; a longer one closes the connection (1009).</p>
<form id="form">
  <input type="text" id="messageText" autocomplete="off" required>
  <button>Send</button>
</form>
<ul id="messages"></ul>
<script>
  const clientId = Date.now();
  document.getElementById("ws-id").textContent = clientId;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/ws/${clientId}`);
  const messages = document.getElementById("messages");
  function show(text) {
    const item = document.createElement("li");
    item.textContent = text;  // text, never HTML
    messages.append(item);
  }
  ws.onmessage = (event) => show(event.data);
  ws.onclose = (event) => show(`closed: ${event.code} ${event.reason}`);
  document.getElementById("form").onsubmit = (event) => {
    event.preventDefault();
    const input = document.getElementById("messageText");
    ws.send(input.value);
    input.value = "";
  };
</script>
</body>
</html>
"""


class Chat(RoomEndpoint):
    """The tutorial's messages, in one room for everyone, since its URL names none.

    `max_message_size` stays RoomEndpoint's 64 KiB: a longer message closes with 1009.
    """

    user_param = "client_id"
    echo_template = "You wrote: {text}"
    message_template = "Client #{user} says: {text}"
    join_template = None
    leave_template = "Client #{user} left the chat"
    namespace = "fastapi_chat"

    async def on_connect(self, websocket: WebSocket) -> None:
        websocket.path_params["room"] = "chat"  # the URL names no room: everyone is in this one
        await super().on_connect(websocket)


app = FastAPI()
app.router.routes.append(WebSocketRoute("/ws/{client_id:int}", Chat))  # the tutorial's `client_id: int`


@app.get("/", response_class=HTMLResponse)
async def get() -> str:
    """Serve the chat page."""
    return PAGE
