"""The echo chat page: a form whose every message comes back as "Message text was: ...".

The classic tutorial page, rebuilt on `EchoEndpoint`: GET / serves the page, and its script
talks to the socket on /ws. Received text goes into the page with `textContent`, never as HTML,
so a message like `<img src=x onerror=alert(1)>` shows up as text. A message over 1 MiB closes
the socket with 1009, and the page says so.

Run: uvicorn examples.echo_page:app, then open http://127.0.0.1:8000/
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route, WebSocketRoute

from wsendpoints import EchoEndpoint

__all__ = ["PAGE", "app"]

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Echo chat</title></head>
<body>
<h1>Echo chat</h1>
<form id="form">
  <input id="text" autocomplete="off" required>
  <button>Send</button>
</form>
<ul id="messages"></ul>
<script>
  const messages = document.getElementById("messages");
  const input = document.getElementById("text");
  function show(text) {
    const item = document.createElement("li");
    item.textContent = text;  // text, never HTML
    messages.append(item);
  }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/ws`);
  ws.onmessage = (event) => show(event.data);
  ws.onclose = (event) => show(`closed: ${event.code} ${event.reason}`);
  document.getElementById("form").onsubmit = (event) => {
    event.preventDefault();
    ws.send(input.value);
    input.value = "";
  };
</script>
</body>
</html>
"""


async def homepage(request: Request) -> HTMLResponse:
    """Serve the chat page."""
    return HTMLResponse(PAGE)


app = Starlette(
    routes=[
        Route("/", homepage),
        WebSocketRoute("/ws", EchoEndpoint.configure(template="Message text was: {data}")),
    ]
)
