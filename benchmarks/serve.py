"""Run one server under test on a listening socket the harness hands over: the child process.

    python -m benchmarks.serve asgi benchmarks.servers.raw_asgi:app --fd 3
    python -m benchmarks.serve websockets benchmarks.servers.websockets_native:serve --fd 3

Prints "READY" on stdout once it accepts connections, and stops on SIGTERM or SIGINT. ASGI
apps run on uvicorn with its websockets-sansio protocol on the plain asyncio loop, everything
else at uvicorn's defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import socket
import sys
from typing import Any

__all__ = ["UVICORN_SETTINGS", "main"]

UVICORN_SETTINGS: dict[str, Any] = {
    "loop": "asyncio",
    "http": "h11",
    "ws": "websockets-sansio",
    "lifespan": "on",
    "log_level": "warning",
    "access_log": False,
    "timeout_graceful_shutdown": 2,
}
"""What the harness fixes for every ASGI peer; the rest is uvicorn's defaults."""


def ready() -> None:
    print("READY", flush=True)


def load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


async def serve_asgi(target: str, sock: socket.socket) -> None:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(target, **UVICORN_SETTINGS))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    ready()
    await task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__)
    parser.add_argument("kind", choices=("asgi", "websockets"))
    parser.add_argument("target", help="module:attribute")
    parser.add_argument("--fd", type=int, required=True, help="an inherited listening TCP socket")
    args = parser.parse_args(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=args.fd)
    if args.kind == "asgi":
        asyncio.run(serve_asgi(args.target, sock))
    else:
        asyncio.run(load(args.target)(sock, ready))
    return 0


if __name__ == "__main__":
    sys.exit(main())
