"""Run uvicorn for real-server tests: in a thread of this process, on a free 127.0.0.1 port."""

from __future__ import annotations

import threading
import time

import uvicorn
from starlette.types import ASGIApp

__all__ = ["UvicornThread"]


class UvicornThread:
    """A uvicorn server on 127.0.0.1 in a background thread; `start()` returns its ws:// URL."""

    def __init__(self, app: ASGIApp, **config: object) -> None:
        self.config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", **config)  # type: ignore[arg-type]
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 10.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")  # pragma: no cover - only when uvicorn fails
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():  # pragma: no cover - only when uvicorn fails to stop
            self.server.force_exit = True
            self.thread.join(timeout)
