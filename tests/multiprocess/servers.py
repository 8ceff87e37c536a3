"""Run the `tests/multiprocess` apps in uvicorn processes of their own, on free 127.0.0.1 ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.redis_server import free_port

__all__ = ["AppServer"]

ROOT = Path(__file__).resolve().parents[2]


class AppServer:
    """`python -m uvicorn tests.multiprocess.{module}:app` as a child process, sharing rooms through Redis.

    Example:
        ```python
        with AppServer("app_one", redis_url) as one:
            async with websockets.asyncio.client.connect(f"{one.url}/rooms/lobby/ann") as ann:
                ...
        ```
    """

    def __init__(self, module: str, redis_url: str, presence_ttl: float = 15.0) -> None:
        self.module = module
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.http = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),  # importable from the start, so that coverage measures the apps
            "PYTHONUNBUFFERED": "1",
            "MULTIPROCESS_REDIS_URL": redis_url,
            "MULTIPROCESS_PRESENCE_TTL": str(presence_ttl),
        }
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self._output_reader = threading.Thread()

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and return once it serves.

        Raises:
            RuntimeError: With its output, if it exits or does not serve within `timeout` seconds.
        """
        command = [sys.executable, "-m", "uvicorn", f"tests.multiprocess.{self.module}:app"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "info", "--no-access-log"]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready, settled = threading.Event(), threading.Event()
        self._output_reader = threading.Thread(target=self._read, args=(self.process, ready, settled), daemon=True)
        self._output_reader.start()
        if not settled.wait(timeout) or not ready.is_set():
            self.kill()
            raise RuntimeError(f"{self.module} did not start:\n{''.join(self.output)}")

    def _read(self, process: subprocess.Popen[str], ready: threading.Event, settled: threading.Event) -> None:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                self.output.append(line)
                if "Application startup complete" in line:
                    ready.set()
                    settled.set()
        settled.set()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server as a process manager would (SIGTERM), and check that it shut down cleanly.

        Raises:
            AssertionError: With its output, if it printed a traceback or did not exit cleanly.
        """
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        status = process.wait(timeout)
        self._output_reader.join(timeout)
        output = "".join(self.output)
        assert status in (0, -signal.SIGTERM), output  # uvicorn re-raises SIGTERM after shutting down
        assert "Traceback" not in output, output

    def kill(self) -> None:
        """Stop the server with SIGKILL, as a crash or the OOM killer would: it cleans nothing up."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()
            self._output_reader.join()

    def get(self, path: str) -> Any:
        """GET `path` and return the JSON it answers."""
        with urllib.request.urlopen(f"{self.http}{path}", timeout=10) as response:
            return json.loads(response.read())

    def post(self, path: str, text: str) -> None:
        """POST `text` to `path`."""
        request = urllib.request.Request(f"{self.http}{path}", data=text.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def __enter__(self) -> AppServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
