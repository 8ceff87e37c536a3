from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.browser.chromium import CHROMIUM_ENV, REQUIRE_ENV, chromium_executable, playwright_api


def test_chromium_executable_takes_the_environment_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = tmp_path / "my-chromium"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv(CHROMIUM_ENV, str(binary))
    assert chromium_executable() == str(binary)


def test_missing_chromium_skips_saying_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CHROMIUM_ENV, raising=False)
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match="Chromium not found: apt-get install chromium"):
        chromium_executable()


def test_missing_playwright_fails_when_a_browser_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "playwright.async_api", None)
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="pip install playwright"):
        playwright_api()
