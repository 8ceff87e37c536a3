from __future__ import annotations

import pytest
from websockets.frames import CloseCode as WebsocketsCloseCode

from wsendpoints import CloseCode, describe_close_code


def test_closecode_names_match_websockets_package() -> None:
    for code in CloseCode:
        assert int(WebsocketsCloseCode[code.name]) == int(code)


@pytest.mark.parametrize(
    ("code", "description"),
    [
        (1000, "normal closure"),
        (1008, "policy violation"),
        (1013, "try again later"),
        (1015, "TLS handshake failure"),
        (1004, "reserved"),
        (2999, "reserved"),
        (3000, "registered"),
        (3999, "registered"),
        (4000, "application-defined"),
        (4999, "application-defined"),
        (999, "out of range"),
        (5000, "out of range"),
        (-1, "out of range"),
    ],
)
def test_describe_close_code_covers_every_int(code: int, description: str) -> None:
    assert describe_close_code(code) == description
