"""Run uvicorn for real-server tests: in a thread of this process, on a free 127.0.0.1 port."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from starlette.types import ASGIApp

__all__ = ["UvicornThread"]


class UvicornThread:
    """A uvicorn server on 127.0.0.1 in a background thread; `start()` returns its ws:// URL."""

    def __init__(self, app: ASGIApp, sndbuf: int | None = None, **config: object) -> None:
        """Serve `app`; `sndbuf` sets the kernel send buffer of every connection (no autotuning) when given."""
        self.config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", **config)  # type: ignore[arg-type]
        self.server = uvicorn.Server(self.config)
        self.sock = socket.socket()
        if sndbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)  # accepted sockets inherit it
        self.sock.bind(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self, timeout: float = 10.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")  # pragma: no cover - only when uvicorn fails
            time.sleep(0.01)
        port = self.sock.getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():  # pragma: no cover - only when uvicorn fails to stop
            self.server.force_exit = True
            self.thread.join(timeout)
        self.sock.close()
