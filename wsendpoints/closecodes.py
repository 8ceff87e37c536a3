"""WebSocket close codes (RFC 6455, section 7.4) and their descriptions."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CloseCode", "describe_close_code"]


class CloseCode(IntEnum):
    """The close codes of RFC 6455, named as the `websockets` package names them.

    Example:
        ```python
        await websocket.close(CloseCode.POLICY_VIOLATION, "name taken")
        ```
    """

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015


_DESCRIPTIONS = {
    CloseCode.NORMAL_CLOSURE: "normal closure",
    CloseCode.GOING_AWAY: "going away",
    CloseCode.PROTOCOL_ERROR: "protocol error",
    CloseCode.UNSUPPORTED_DATA: "unsupported data",
    CloseCode.NO_STATUS_RCVD: "no status received",
    CloseCode.ABNORMAL_CLOSURE: "abnormal closure (no close frame)",
    CloseCode.INVALID_DATA: "invalid frame payload data",
    CloseCode.POLICY_VIOLATION: "policy violation",
    CloseCode.MESSAGE_TOO_BIG: "message too big",
    CloseCode.MANDATORY_EXTENSION: "mandatory extension",
    CloseCode.INTERNAL_ERROR: "internal error",
    CloseCode.SERVICE_RESTART: "service restart",
    CloseCode.TRY_AGAIN_LATER: "try again later",
    CloseCode.BAD_GATEWAY: "bad gateway",
    CloseCode.TLS_HANDSHAKE: "TLS handshake failure",
}


def describe_close_code(code: int) -> str:
    """Describe any close code in a few words.

    Args:
        code: A close code, as received or sent.

    Returns:
        The RFC 6455 meaning for the codes `CloseCode` names; "registered" for 3000-3999,
        "application-defined" for 4000-4999, "reserved" for the rest of 1000-2999 and
        "out of range" for anything else.

    Example:
        ```python
        describe_close_code(1008)  # "policy violation"
        describe_close_code(4001)  # "application-defined"
        ```
    """
    if code in _DESCRIPTIONS:
        return _DESCRIPTIONS[CloseCode(code)]
    if 3000 <= code <= 3999:
        return "registered"
    if 4000 <= code <= 4999:
        return "application-defined"
    if 1000 <= code <= 2999:
        return "reserved"
    return "out of range"
