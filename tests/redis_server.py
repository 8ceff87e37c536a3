"""Run a real `redis-server` for tests: on a free 127.0.0.1 port, without persistence, in its own directory."""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
import threading
from types import TracebackType

__all__ = ["RedisServer", "free_port"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A `redis-server` child process on 127.0.0.1 that can be stopped and started again on the same port.

    The server saves nothing (`--save ""`, `--appendonly no`), so a restart loses every key, as a
    Redis without persistence does. It is stopped at the latest when the interpreter exits.

    Example:
        ```python
        with RedisServer() as server:
            client = redis.Redis.from_url(server.url)
            server.restart()
        ```
    """

    def __init__(self, binary: str = "redis-server") -> None:
        path = shutil.which(binary)
        if path is None:
            raise RuntimeError(
                f"{binary!r} is not installed: run `make system-deps` (Debian package redis-server), "
                "or leave these tests out with `-m 'not redis'`"
            )
        self.binary = path
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = tempfile.mkdtemp(prefix="wsendpoints-redis-")
        self.process: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._log_reader = threading.Thread()
        atexit.register(self.close)

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and return once it accepts connections.

        Raises:
            RuntimeError: If it exits or does not get ready within `timeout` seconds, with its log.
        """
        if self.process is not None:
            raise RuntimeError("the server is running")
        command = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        command += ["--dir", self.directory, "--logfile", "", "--loglevel", "notice", "--daemonize", "no"]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        ready, settled = threading.Event(), threading.Event()
        self._log_reader = threading.Thread(target=self._read_log, args=(self.process, ready, settled), daemon=True)
        self._log_reader.start()
        if not settled.wait(timeout) or not ready.is_set():
            self.stop()
            raise RuntimeError("redis-server did not start:\n" + "".join(self.log[-20:]))

    def _read_log(self, process: subprocess.Popen[str], ready: threading.Event, settled: threading.Event) -> None:
        """Keep the server's log, so that its pipe never fills up.

        Set `ready` and `settled` when it accepts connections; `settled` alone when it exits first.
        """
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                self.log.append(line)
                if "Ready to accept connections" in line:
                    ready.set()
                    settled.set()
        settled.set()

    def stop(self, timeout: float = 10.0, *, save: bool = False) -> None:
        """Stop the server; stopping a stopped server does nothing.

        Args:
            timeout: Seconds to wait for it to exit before killing it.
            save: Have it write its keys to disk first (`SHUTDOWN SAVE`), so that the next
                `start()` loads them, as a Redis with persistence would. Otherwise SIGTERM.
        """
        process, self.process = self.process, None
        if process is None:
            return
        if save:
            with socket.create_connection(("127.0.0.1", self.port), timeout) as sock:
                sock.sendall(b"SHUTDOWN SAVE\r\n")
                sock.recv(1)  # nothing comes back: the server closes the connection as it exits
        else:
            process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover - only when redis-server hangs on shutdown
            process.kill()
            process.wait()
        self._log_reader.join(timeout)

    def kill(self) -> None:
        """Stop the server with SIGKILL, as a crash would: it neither saves nor says goodbye."""
        process = self.process
        if process is not None:
            process.kill()
            process.wait()
        self.stop()

    def restart(self, *, save: bool = False) -> None:
        """Stop the server and start a new one on the same port, with no keys unless `save`."""
        self.stop(save=save)
        self.start()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
