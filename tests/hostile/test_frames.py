"""Frames a hostile client can send: compression bombs, invalid UTF-8, sizes at the limit."""

from __future__ import annotations

import pytest

from tests.hostile.conftest import FIGURES, Server, get_json
from tests.hostile.rawws import RawSocket, deflate_bomb, frame

pytestmark = pytest.mark.server

TEXT, BINARY = 0x1, 0x2
MIB = 1024 * 1024


def test_deflate_bomb_is_refused_1009_without_memory_growth(server: Server) -> None:
    bomb = deflate_bomb(64 * MIB)
    before = get_json(server, "/stats")
    ws = RawSocket(server.port, "/echo", [("Sec-WebSocket-Extensions", "permessage-deflate")])
    assert ws.status == 101
    assert "permessage-deflate" in ws.headers
    ws.send(frame(BINARY, bomb, rsv1=True))
    code, _ = ws.close_code()
    ws.close()
    after = get_json(server, "/stats")
    growth_kib = after["peak_rss_kib"] - before["peak_rss_kib"]
    assert code == 1009
    assert growth_kib < 4 * 1024, f"peak RSS grew by {growth_kib} KiB"
    FIGURES["deflate bomb"] = {
        "inflated MiB": 64,
        "compressed KiB": len(bomb) // 1024,
        "close": code,
        "peak RSS growth KiB": growth_kib,
    }


def test_invalid_utf8_text_closes_1007(server: Server) -> None:
    ws = RawSocket(server.port, "/echo", [])
    ws.send(frame(TEXT, "é".encode() * 500))
    assert ws.receive_frame() == (TEXT, "é".encode() * 500)
    ws.send(frame(TEXT, b"valid \xff\xfe invalid"))
    assert ws.close_code()[0] == 1007
    ws.close()


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_message_at_the_limit_passes_and_one_byte_over_closes_1009(server: Server, opcode: int) -> None:
    ws = RawSocket(server.port, "/echo", [])
    ws.send(frame(opcode, b"x" * MIB))
    assert ws.receive_frame() == (opcode, b"x" * MIB)
    ws.send(frame(opcode, b"x" * (MIB + 1)))
    assert ws.close_code()[0] == 1009
    ws.close()
    FIGURES["size limit"] = {"at limit (1 MiB)": "echoed", "limit + 1 byte": 1009}
