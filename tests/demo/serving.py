"""Run a server command (`python -m wsendpoints`, `python -m uvicorn examples...`) as a subprocess for a test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["CHILD_ENV", "ROOT", "WAIT", "get_json", "serve_command", "serve_process"]

ROOT = Path(__file__).resolve().parents[2]
"""The repository, where `python -m examples...` finds the examples."""

CHILD_ENV = {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
"""The environment a child Python gets on top of ours: the examples importable from its start, so that
coverage (started by a `.pth` file, before `-m` puts the working directory on `sys.path`) measures them."""

WAIT = 20.0
"""Seconds a server may take to start serving, or to stop."""


def _read(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")


def _wait_until_serving(url: str, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200, f"GET {url} answered {response.status}"
                return
        except OSError:
            assert process.poll() is None, f"the server exited:\n{_read(log)}"
            assert time.monotonic() < deadline, f"the server did not start serving:\n{_read(log)}"
            time.sleep(0.05)


@contextmanager
def serve_command(args: Sequence[str], port: int, ready: str = "/", env: Mapping[str, str] = {}) -> Iterator[str]:
    """Run `python *args` in the repository until the context exits; yield its base ws:// URL (see `serve_process`)."""
    with serve_process(args, port, ready, env) as (url, _):
        yield url


@contextmanager
def serve_process(
    args: Sequence[str], port: int, ready: str = "/", env: Mapping[str, str] = {}
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run `python *args` in the repository until the context exits; yield its base ws:// URL and its process.

    Args:
        args: The command's arguments after `python`; it must serve on 127.0.0.1:`port`.
        port: The port it serves on.
        ready: A path that answers GET with 200 once the server is ready.
        env: Environment variables to add.

    Raises:
        AssertionError: With the server's output, if it does not start serving within `WAIT`
            seconds, or stops with an error.
    """
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **CHILD_ENV, **env},
        )
        try:
            _wait_until_serving(f"http://127.0.0.1:{port}{ready}", process, log)
            yield f"ws://127.0.0.1:{port}", process
        finally:
            process.terminate()
            status = process.wait(WAIT)
            output = _read(log)
            # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why it stopped.
            assert status in (0, -signal.SIGTERM), output
            assert "Traceback" not in output, output


def get_json(url: str) -> object:
    """GET `url` (http://) and return the decoded JSON body."""
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        return json.loads(response.read())
