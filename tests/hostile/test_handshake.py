"""The Origin policy against real handshakes, and log lines free of raw control characters."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile.conftest import FIGURES, Server
from tests.hostile.rawws import RawSocket

pytestmark = pytest.mark.server


def status(server: Server, path: str, headers: list[tuple[str, str]]) -> int:
    """The handshake's HTTP status; 0 when the server does not answer within 2 s."""
    try:
        ws = RawSocket(server.port, path, headers, timeout=2)
    except TimeoutError:
        return 0
    ws.close()
    return ws.status


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
    # uvicorn's handshake parser (websockets) refuses duplicate Origin headers with 400 before the app runs.
    ("duplicate, both same", "/echo", [("Origin", SAME), ("Origin", SAME)], 400),
    ("non-ASCII", "/echo", [("Origin", "http://127.0.0.1:{port}\xe9")], 403),
    # uvicorn 0.54 (websockets-sansio) never answers a handshake whose headers hold control characters:
    # the app never sees it, and the connection idles until the client gives up.
    ("control characters", "/echo", [("Origin", "http://evil\x1b[31m.example")], 0),
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
    assert status(server, path, filled) == expected
    assert status(server, "/echo", []) == 101, "the server stopped serving others"
    FIGURES.setdefault("handshake", {})[case] = expected


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
