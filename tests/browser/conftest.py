from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Playwright's async API needs asyncio; module scope lets one browser serve a module's tests."""
    return "asyncio"
