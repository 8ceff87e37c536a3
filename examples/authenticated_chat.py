"""Chat with logged-in users: names from a signed session, a private room, and moderator routes.

Who is who comes from Starlette itself: `SessionMiddleware` keeps the user name in a cookie
that itsdangerous signs with SECRET_KEY (the browser can read it, not change it), and
`AuthenticationMiddleware` turns it into `websocket.user` for every connection. With
`require_auth=True` the rooms take the name from there; the URL names the room only, so
nobody can join as someone else, and a connection without a log-in is closed with 1008
"not authenticated".

- GET /: a page to log in and chat (it shows why the server closed the connection).
- POST /login (form field `user`): stands in for your real log-in (passwords, OAuth...): it
  accepts the names in USERS and stores the name in the session. POST /logout ends it.
- /rooms/{room}: every user may enter any room but "staff", which only STAFF may (`authorize`).
- POST /rooms/{room}/send/{user}: the body's text to every connection of that user.
- POST /rooms/{room}/kick/{user}: closes them with 1008 "removed by a moderator".

The two POST routes speak for the server, so they are for MODERATORS only (Starlette's
`requires("moderator")`: 403 for anyone else). The session cookie is `SameSite=Lax`, so
another site's page cannot post to them with a moderator's cookie, nor open a WebSocket with
it (RoomEndpoint's same-origin check refuses it as well).

Run: SECRET_KEY=change-me uvicorn examples.authenticated_chat:app
Then open http://127.0.0.1:8000/ in two browsers, log in as alice and as mod, and kick alice:
    a page logged in as mod can run fetch("/rooms/lobby/kick/alice", {method: "POST"})
"""

from __future__ import annotations

import os
import secrets
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser, requires
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from wsendpoints import RoomEndpoint

__all__ = ["MODERATORS", "STAFF", "USERS", "Chat", "SessionBackend", "app"]

USERS = frozenset({"alice", "bob", "carol", "mod"})
"""Who may log in (your user database)."""
STAFF = frozenset({"alice", "mod"})
"""Who may enter the room "staff"."""
MODERATORS = frozenset({"mod"})
"""Who may send to one user and kick."""

SECRET_KEY = os.environ.get("SECRET_KEY") or secrets.token_urlsafe(32)
"""Signs the session cookies. Without SECRET_KEY set, a random key: sessions end when the server
restarts, and several workers would not accept each other's cookies."""


class SessionBackend(AuthenticationBackend):
    """The logged-in user of the session; moderators get the scope "moderator"."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        name = conn.session.get("user")
        if name not in USERS:  # no session, or a user removed since
            return None
        scopes = ["authenticated", "moderator"] if name in MODERATORS else ["authenticated"]
        return AuthCredentials(scopes), SimpleUser(name)


class Chat(RoomEndpoint):
    """Rooms of logged-in users, in json mode; "staff" is private."""

    mode = "json"
    require_auth = True
    namespace = "authenticated"

    async def authorize(self, websocket: WebSocket, room: str, user: str) -> bool:
        return room != "staff" or user in STAFF


async def log_in(request: Request) -> Response:
    """Log in as the form's `user` if it is one of USERS (a stand-in for checking a password)."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    name = form.get("user", [""])[0]
    if name not in USERS:
        return JSONResponse({"error": "unknown user"}, status_code=403)
    request.session.clear()
    request.session["user"] = name
    return RedirectResponse("/", status_code=303)


async def log_out(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/", status_code=303)


@requires("moderator")
async def send_to(request: Request) -> JSONResponse:
    """Send the body's text to every connection of the user in the room."""
    room, user = request.path_params["room"], request.path_params["user"]
    try:
        await Chat.send_to(room, user, (await request.body()).decode("utf-8"))
    except ValueError as exc:  # a bad room or user name, or a text too long
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({"room": room, "user": user}, status_code=202)


@requires("moderator")
async def kick(request: Request) -> JSONResponse:
    """Close every connection of the user in the room with 1008 "removed by a moderator"."""
    room, user = request.path_params["room"], request.path_params["user"]
    try:
        await Chat.kick(room, user, reason="removed by a moderator")
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({"room": room, "kicked": user}, status_code=202)


PAGE = """<!doctype html>
<meta charset="utf-8">
<title>Authenticated chat</title>
<link rel="icon" href="data:,">
<p id="who"></p>
<form id="login" method="post" action="/login" hidden>
  <input name="user" placeholder="alice, bob, carol or mod" autofocus> <button>Log in</button>
</form>
<form id="logout" method="post" action="/logout" hidden><button>Log out</button></form>
<form id="join" hidden><input id="room" value="lobby"> <button>Join</button></form>
<form id="say" hidden><input id="text" autocomplete="off"> <button>Send</button></form>
<ul id="log"></ul>
<script>
const user = document.body.dataset.user;
const show = (id) => { document.getElementById(id).hidden = false; };
const log = (text) => {
  const item = document.createElement("li");
  item.textContent = text;  // text only: nothing a member sends becomes markup
  document.getElementById("log").append(item);
};
let socket = null;
if (!user) {
  show("login");
} else {
  document.getElementById("who").textContent = `Logged in as ${user}`;
  ["logout", "join"].forEach(show);
  document.getElementById("join").onsubmit = (event) => {
    event.preventDefault();
    const room = encodeURIComponent(document.getElementById("room").value);
    socket = new WebSocket(`${location.origin.replace("http", "ws")}/rooms/${room}`);
    socket.onopen = () => show("say");
    socket.onmessage = (event) => {
      const data = JSON.parse(event.data);
      if (data.type === "presence") log(`present: ${data.users.join(", ")}`);
      else if (data.type === "message") log(`${data.user ?? "server"}: ${data.text}`);
      else if (data.type === "direct") log(`to you: ${data.text}`);
      else log(`${data.user} ${data.type === "join" ? "joined" : "left"}`);
    };
    socket.onclose = (event) => log(`closed: ${event.code} ${event.reason}`);
  };
  document.getElementById("say").onsubmit = (event) => {
    event.preventDefault();
    const text = document.getElementById("text");
    socket.send(JSON.stringify({text: text.value}));
    text.value = "";
  };
}
</script>
"""


async def page(request: Request) -> HTMLResponse:
    """The chat page; the user name goes in as a data attribute, which the script reads as text."""
    user = request.user.display_name if request.user.is_authenticated else ""
    body = PAGE.replace("<p id", f'<body data-user="{user}"><p id', 1)  # a name of USERS: no markup in it
    return HTMLResponse(body)


app = Starlette(
    routes=[
        Route("/", page),
        Route("/login", log_in, methods=["POST"]),
        Route("/logout", log_out, methods=["POST"]),
        WebSocketRoute("/rooms/{room}", Chat),
        Route("/rooms/{room}/send/{user}", send_to, methods=["POST"]),
        Route("/rooms/{room}/kick/{user}", kick, methods=["POST"]),
    ],
    middleware=[
        Middleware(SessionMiddleware, secret_key=SECRET_KEY, same_site="lax", https_only=False),
        Middleware(AuthenticationMiddleware, backend=SessionBackend()),
    ],
)
