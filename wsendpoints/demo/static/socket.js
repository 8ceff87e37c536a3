// A WebSocket that reconnects with backoff and reports every close with its code and reason.
// User text only ever reaches the page through textContent (see addLine), never as HTML.

const FIRST_DELAY = 500; // ms before the first reconnection
const MAX_DELAY = 30000; // ms, the longest wait between attempts
const STABLE = 5000; // ms a connection must stay open before the backoff starts over

/** Return the ws:// or wss:// URL of `path` on this page's host. */
export function socketURL(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

/** Append a line of plain text to the list `log`, with an optional CSS class; keep it scrolled. */
export function addLine(log, text, kind) {
  const item = document.createElement("li");
  item.textContent = text;
  if (kind) item.className = kind;
  log.append(item);
  log.scrollTop = log.scrollHeight;
  return item;
}

/** Describe a close event: "1009 message too big", or the code alone. */
export function describeClose(event) {
  return event.reason ? `${event.code} ${event.reason}` : String(event.code);
}

/**
 * Keep a WebSocket to `url` open: on each close, report it and try again after a delay that
 * doubles up to 30 s (with jitter), and starts over once a connection has lasted a while.
 * `url` may be a function, called for each connection (e.g. to resume from the last message seen).
 *
 * handlers.onOpen(), handlers.onMessage(data) and handlers.onClose(event, delay) are optional.
 * The status element shows the state (in its data-state attribute too: connecting, open, closed).
 * Returns { send(data) }, which sends if the socket is open and says whether it did.
 */
export function keepConnected(url, status, handlers) {
  let socket = null;
  let delay = FIRST_DELAY;
  let openedAt = 0;

  function show(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function connect() {
    show("connecting", "connecting…");
    socket = new WebSocket(typeof url === "function" ? url() : url);
    socket.addEventListener("open", () => {
      openedAt = Date.now();
      show("open", "connected");
      handlers.onOpen?.();
    });
    socket.addEventListener("message", (event) => handlers.onMessage?.(event.data));
    socket.addEventListener("close", (event) => {
      socket = null;
      if (openedAt && Date.now() - openedAt > STABLE) delay = FIRST_DELAY;
      openedAt = 0;
      const wait = delay + Math.floor(Math.random() * delay * 0.2);
      delay = Math.min(delay * 2, MAX_DELAY);
      const seconds = (wait / 1000).toFixed(1);
      show("closed", `closed: ${describeClose(event)}; reconnecting in ${seconds} s`);
      handlers.onClose?.(event, wait);
      setTimeout(connect, wait);
    });
  }

  connect();
  return {
    send(data) {
      if (socket === null || socket.readyState !== WebSocket.OPEN) return false;
      socket.send(data);
      return true;
    },
  };
}
