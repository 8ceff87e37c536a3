"""The Origin policy against real handshakes, and log lines free of raw control characters."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile.conftest import FIGURES, Server, get_json
from tests.hostile.rawws import RawSocket

pytestmark = pytest.mark.server


def status(server: Server, path: str, headers: list[tuple[str, str]]) -> int:
    """The handshake's HTTP status; 0 when the server does not answer within 2 s."""
    try:
        ws = RawSocket(server.port, path, headers, timeout=2)
    except TimeoutError:  # pragma: no cover - uvicorn 0.54 never answered some refused handshakes
        return 0
    ws.close()
    return ws.status


BEFORE_APP = -1
"""Refused by the server before the application runs: no 101, and no handshake reached the app. How the
server refuses (an HTTP 400, or no answer at all) is its own choice and changes between uvicorn releases."""

SAME = "http://127.0.0.1:{port}"
CASES = [
    ("no Origin (non-browser client)", "/echo", [], 101),
    ("same origin", "/echo", [("Origin", SAME)], 101),
    ("same origin, upper case", "/echo", [("Origin", "HTTP://127.0.0.1:{port}")], 101),
    ("foreign origin", "/echo", [("Origin", "https://evil.example")], 403),
    ("null", "/echo", [("Origin", "null")], 403),
    ("other scheme", "/echo", [("Origin", "https://127.0.0.1:{port}")], 403),
    ("other port", "/echo", [("Origin", "http://127.0.0.1:1")], 403),
    ("suffix trick", "/echo", [("Origin", "http://127.0.0.1:{port}.evil.example")], 403),
    ("path appended", "/echo", [("Origin", "http://127.0.0.1:{port}/x")], 403),
    ("user info", "/echo", [("Origin", "http://evil@127.0.0.1:{port}")], 403),
    # uvicorn's handshake parser refuses duplicate Origin headers (with 400 today).
    ("duplicate, both same", "/echo", [("Origin", SAME), ("Origin", SAME)], BEFORE_APP),
    ("non-ASCII", "/echo", [("Origin", "http://127.0.0.1:{port}\xe9")], 403),
    # uvicorn refuses a handshake whose headers hold control characters: 0.54 never answered it, 0.55
    # answers 400.
    ("control characters", "/echo", [("Origin", "http://evil\x1b[31m.example")], BEFORE_APP),
    ("allow-list: listed", "/allow", [("Origin", "https://app.example.com")], 101),
    ("allow-list: case only", "/allow", [("Origin", "HTTPS://APP.EXAMPLE.COM")], 101),
    ("allow-list: default port", "/allow", [("Origin", "https://app.example.com:443")], 101),
    ("allow-list: suffix", "/allow", [("Origin", "https://app.example.com.evil.com")], 403),
    ("allow-list: prefix", "/allow", [("Origin", "https://evilapp.example.com")], 403),
    ("allow-list: sub-domain", "/allow", [("Origin", "https://x.app.example.com")], 403),
    ("allow-list: other scheme", "/allow", [("Origin", "http://app.example.com")], 403),
    ("allow-list: other port", "/allow", [("Origin", "https://app.example.com:8443")], 403),
    ("allow-list: same origin not listed", "/allow", [("Origin", SAME)], 403),
]


@pytest.mark.parametrize(("case", "path", "headers", "expected"), CASES, ids=[case[0] for case in CASES])
def test_origin_variants_get_the_documented_answer(
    server: Server, case: str, path: str, headers: list[tuple[str, str]], expected: int
) -> None:
    filled = [(name, value.format(port=server.port)) for name, value in headers]
    reached = get_json(server, "/stats")["handshakes"]
    answer = status(server, path, filled)
    if expected == BEFORE_APP:
        assert answer != 101
        assert get_json(server, "/stats")["handshakes"] == reached, "the handshake reached the application"
    else:
        assert answer == expected
    assert status(server, "/echo", []) == 101, "the server stopped serving others"
    FIGURES.setdefault("handshake", {})[case] = answer


def test_log_lines_carry_no_raw_control_characters(server: Server) -> None:
    """Refused origins, bad names and bad messages are logged with control characters escaped."""
    from tests.hostile.conftest import start_server, stop_server

    verbose = start_server("--log-config", str(Path(__file__).with_name("logging.json")))
    try:
        assert status(verbose, "/echo", [("Origin", "http://evil\u00e9.example")]) == 403
        ws = RawSocket(verbose.port, "/rooms/lobby/%1B%5B31mred%0A", [])
        assert ws.status == 101
        assert ws.close_code() == (1008, "invalid user name")
        ws.close()
    finally:
        stderr = stop_server(verbose)
    text = stderr.decode("utf-8", "replace")
    assert "refused handshake" in text
    assert "invalid user name" in text
    lines = text.splitlines()
    assert all(ch >= " " or ch == "\t" for line in lines for ch in line), [line for line in lines if "\x1b" in line]
