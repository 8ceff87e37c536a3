"""Find headless Chromium and Playwright for the browser tests, or say clearly what is missing.

Playwright for Python drives the system's Chromium (Debian package `chromium`) through
`executable_path`; it never downloads a browser of its own. Where one of them is missing the
browser tests skip, saying what to install; with `WSENDPOINTS_REQUIRE_BROWSER=1` (CI) they fail.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType
from typing import NoReturn

import pytest

__all__ = ["CHROMIUM_ARGS", "CHROMIUM_ENV", "REQUIRE_ENV", "chromium_executable", "missing", "playwright_api"]

CHROMIUM_ENV = "WSENDPOINTS_CHROMIUM"
"""Names the Chromium binary to drive, if not `chromium` on the PATH."""

REQUIRE_ENV = "WSENDPOINTS_REQUIRE_BROWSER"
"""When set (to anything but empty), a missing browser fails the tests instead of skipping them."""

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def missing(what: str) -> NoReturn:
    """Skip the test saying `what` is missing; fail instead if `WSENDPOINTS_REQUIRE_BROWSER` is set."""
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{what} ({REQUIRE_ENV} is set)", pytrace=False)
    pytest.skip(what)


def chromium_executable() -> str:
    """Return the path of the Chromium to drive: `$WSENDPOINTS_CHROMIUM`, else `chromium` on the PATH."""
    path = shutil.which(os.environ.get(CHROMIUM_ENV) or "chromium")
    if path is None:
        missing(f"Chromium not found: apt-get install chromium, or set {CHROMIUM_ENV} to its path")
    return path


def playwright_api() -> ModuleType:
    """Return `playwright.async_api`."""
    try:
        return importlib.import_module("playwright.async_api")
    except ImportError:
        missing("Playwright for Python is not installed: pip install playwright (no browser download needed)")
