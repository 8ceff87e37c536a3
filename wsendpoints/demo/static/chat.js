// The room chat page: RoomEndpoint in JSON mode on /rooms/{room}/{user}.
// Clients send {"text": ...}; the server sends "presence" (to a joiner, first), "join",
// "leave" and "message" envelopes. A message with user null is a broadcast from the server.
// Each join, leave and message carries an "id": the page keeps the last one and reconnects with
// ?since=<id>; the server then sends a "resume" envelope and what the page missed, in order.
import { addLine, describeClose, keepConnected, socketURL } from "/socket.js";

const params = new URLSearchParams(location.search);
const room = params.get("room") ?? "";
const user = params.get("user") ?? "";

const log = document.getElementById("log");
const presence = document.getElementById("presence");
const input = document.getElementById("message");
document.getElementById("room").value = room || "lobby";
document.getElementById("user").value = user;

// The names present. A join notice may name someone already listed: it was published just
// before this page's connection subscribed. A leave removes the name at once; since another
// connection may have the same name, the server's list is read again REREAD_DELAY_MS later,
// once for all the leaves in between, so that a burst of leaves costs one request, not one each.
const REREAD_DELAY_MS = 1000;
const present = new Set();
let news = 0; // counts presence changes, so that a slow re-read never undoes a newer one
let rereadPending = false;

function showPresence(names) {
  present.clear();
  for (const name of names) present.add(name);
  presence.replaceChildren();
  for (const name of [...present].sort()) {
    const item = document.createElement("li");
    item.textContent = name;
    presence.append(item);
  }
}

async function rereadPresence() {
  const asked = ++news;
  try {
    const response = await fetch(`/rooms/${encodeURIComponent(room)}/members`, { cache: "no-store" });
    const body = await response.json();
    if (response.ok && asked === news) showPresence(body.users);
  } catch {
    // keep the list as the notices left it
  }
}

function rereadSoon() {
  if (rereadPending) return;
  rereadPending = true;
  setTimeout(() => {
    rereadPending = false;
    rereadPresence();
  }, REREAD_DELAY_MS);
}

// Resuming: the id of the last envelope shown, and the ids shown, so that none is shown twice.
let lastId = null;
const shown = new Set();

/** Remember that the envelope of `id` is shown; say whether it already was. */
function seen(id) {
  if (shown.has(id)) return true;
  shown.add(id);
  if (shown.size > 1000) shown.delete(shown.values().next().value); // the oldest
  return false;
}

/** The log line of a join, leave or message envelope: [text, CSS class]. */
function describe(envelope) {
  if (envelope.type === "join") return [`${envelope.user} joined the chat`, "notice"];
  if (envelope.type === "leave") return [`${envelope.user} left the chat`, "notice"];
  if (envelope.user === null) return [`server: ${envelope.text}`, "notice"];
  return [`${envelope.user}: ${envelope.text}`, ""];
}

// When it could not resume, the page shows the room's latest messages it has not shown (not its
// own: it showed those as it sent them), after the notice that says so.
async function showRecent(notice) {
  try {
    const response = await fetch(`/rooms/${encodeURIComponent(room)}/history`, { cache: "no-store" });
    const body = await response.json();
    if (!response.ok) return;
    let place = notice;
    for (const envelope of body.messages) {
      if (envelope.user === user || seen(envelope.id)) continue;
      const item = addLine(log, ...describe(envelope));
      place.after(item);
      place = item;
    }
  } catch {
    // the notice stands
  }
}

function handle(data) {
  let envelope;
  try {
    envelope = JSON.parse(data);
  } catch {
    addLine(log, `unreadable message from the server: ${data}`, "error");
    return;
  }
  if (envelope.id !== undefined) {
    if (seen(envelope.id)) return;
    lastId = envelope.id;
  }
  switch (envelope.type) {
    case "resume":
      if (envelope.recovered) {
        const count = envelope.missed === 1 ? "1 message" : `${envelope.missed} messages`;
        addLine(log, `reconnected: ${count} sent meanwhile`, "notice");
      } else {
        showRecent(addLine(log, "reconnected, but messages sent meanwhile could not be recovered", "error"));
      }
      break;
    case "presence":
      news++;
      showPresence(envelope.users);
      break;
    case "join":
      news++;
      showPresence([...present, envelope.user]);
      addLine(log, ...describe(envelope));
      break;
    case "leave":
      news++;
      present.delete(envelope.user);
      showPresence([...present]);
      addLine(log, ...describe(envelope));
      rereadSoon();
      break;
    case "message":
      addLine(log, ...describe(envelope));
      break;
    default:
      addLine(log, `unknown message from the server: ${data}`, "error");
  }
}

if (room && user) {
  document.getElementById("chat").hidden = false;
  document.getElementById("title").textContent = `${user} in ${room}`;
  document.title = `${room} · wsendpoints demo`;
  const path = `/rooms/${encodeURIComponent(room)}/${encodeURIComponent(user)}`;
  const url = () => socketURL(lastId === null ? path : `${path}?since=${encodeURIComponent(lastId)}`);
  const socket = keepConnected(url, document.getElementById("status"), {
    onMessage: handle,
    onClose: (event) => {
      news++;
      showPresence([]);
      addLine(log, `connection closed: ${describeClose(event)}`, "error");
    },
  });
  document.getElementById("send").addEventListener("submit", (event) => {
    event.preventDefault();
    if (socket.send(JSON.stringify({ text: input.value }))) {
      addLine(log, `${user}: ${input.value}`, "mine");
      input.value = "";
    } else {
      addLine(log, "not connected; try again in a moment", "error");
    }
  });
  input.focus();
} else {
  document.getElementById(room ? "user" : "room").focus();
}
