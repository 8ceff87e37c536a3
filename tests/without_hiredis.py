"""A pytest plugin that hides hiredis, so that redis-py parses replies with its own pure-Python parser.

The `redis` extra installs hiredis, and redis-py uses it whenever it can import it; a user who
installs `redis` alone gets the pure-Python parser. `make test` runs the broker tests a second
time with this plugin (`pytest -p tests.without_hiredis tests/brokers`) so that both parsers
are tested. It must be loaded before anything imports redis: `-p` plugins are.
"""

from __future__ import annotations

import sys

sys.modules["hiredis"] = None  # type: ignore[assignment]  # `import hiredis` now raises ImportError


def pytest_report_header() -> str:
    return "redis-py parser: pure Python (hiredis hidden by tests.without_hiredis)"
