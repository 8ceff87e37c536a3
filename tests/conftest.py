from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal

import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp

from tests.servers import UvicornThread

ClientFactory = Callable[[ASGIApp], TestClient]


@pytest.fixture(params=["asyncio", "trio"])
def client_factory(request: pytest.FixtureRequest) -> ClientFactory:
    """Make `TestClient`s on each anyio backend in turn."""
    backend: Literal["asyncio", "trio"] = request.param

    def make(app: ASGIApp) -> TestClient:
        return TestClient(app, backend=backend)

    return make


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """Serve apps with uvicorn on free 127.0.0.1 ports; yield a function returning the ws:// base URL.

    Keyword arguments go to `UvicornThread` (e.g. `sndbuf`).
    """
    servers: list[UvicornThread] = []

    def start(app: ASGIApp, **options: Any) -> str:
        server = UvicornThread(app, **options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def _no_bound_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo, after each test, the demo host that `wsendpoints.__main__.main()` puts in the environment."""
    monkeypatch.delenv("WSENDPOINTS_HOST", raising=False)
