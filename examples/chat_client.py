"""A terminal chat client for `examples.room_chat`, on the `websockets` package.

Type a line to send it; what the others say is printed as it comes. `exit` (or end of input,
Ctrl-D) leaves the room with a normal close. If the server closes the connection, the client
prints the close code and reason and exits with status 1. The prompt goes to stderr, so stdout
holds only the room's messages, one line each: control characters in them (a line break that
would fake a line from someone else, an escape sequence for the terminal) print as U+FFFD.

Run: python -m examples.chat_client ws://127.0.0.1:8000/websocket/lobby/ann
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidHandshake, InvalidURI

__all__ = ["PROMPT", "chat", "main", "printable"]

PROMPT = "> "

_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def printable(message: str) -> str:
    """Return `message` with C0 and C1 controls and DEL, except tab, replaced by U+FFFD: one line, no escapes.

    Servers other than a text-mode `RoomEndpoint` (which already does this) may send anything.
    """
    return _CONTROLS.sub("\ufffd", message)


def _read_lines(
    stdin: TextIO, prompt: TextIO, loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]
) -> None:
    """Feed `lines` with what is typed, then None at the end of input; runs in a daemon thread.

    Handing over None is its last step: once the client has it and quits, this thread has
    nothing left to do (a daemon thread ends wherever it is when the process exits).
    """
    while True:
        prompt.write(PROMPT)
        prompt.flush()
        line = stdin.readline()
        if not line:
            # Hand over the end last: once it is handed over the client may exit and end this thread.
            return _hand(loop, lines, None)
        _hand(loop, lines, line.rstrip("\r\n"))


def _hand(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None], line: str | None) -> None:
    with contextlib.suppress(RuntimeError):  # the event loop is gone: the client has already quit
        loop.call_soon_threadsafe(lines.put_nowait, line)


async def _send_lines(ws: ClientConnection, lines: asyncio.Queue[str | None], leaving: asyncio.Event) -> None:
    """Send each line until `exit` or the end of input, then close the connection normally."""
    with contextlib.suppress(ConnectionClosed):  # the server closed first; chat() reports it
        while True:
            line = await lines.get()
            if line is None or line.strip() == "exit":
                leaving.set()
                await ws.close()
                return
            if line:
                await ws.send(line)


async def chat(url: str, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    """Chat in the room at `url` until the user leaves or the server closes the connection.

    Returns:
        0 if the user left; 1 if the server closed the connection or it could not be opened.
    """
    try:
        ws = await connect(url, open_timeout=10)
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        print(f"cannot connect to {url}: {exc}", file=stderr)
        return 1
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    reader = threading.Thread(target=_read_lines, args=(stdin, stderr, asyncio.get_running_loop(), lines), daemon=True)
    reader.start()
    leaving = asyncio.Event()
    sender = asyncio.create_task(_send_lines(ws, lines, leaving))
    async with ws:
        with contextlib.suppress(ConnectionClosedError):  # reported below with its code
            async for message in ws:
                print(printable(str(message)), file=stdout, flush=True)
    if leaving.is_set():
        await sender  # it closed the connection, and returns
        return 0
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sender
    print(f"connection closed by the server: {ws.close_code} {ws.close_reason}".rstrip(), file=stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and chat; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.chat_client", description="Chat in a room of examples.room_chat."
    )
    parser.add_argument("url", help="the room's URL, e.g. ws://127.0.0.1:8000/websocket/lobby/ann")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(chat(args.url))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
