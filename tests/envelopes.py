"""Envelopes as RoomEndpoint sends them in JSON mode: `message`, `join` and `leave` carry the broker's `"id"`."""

from __future__ import annotations

from typing import Any


def unid(envelope: Any) -> Any:
    """Return `envelope` without its `"id"`, after checking that it has one: a non-empty string."""
    assert isinstance(envelope, dict), envelope
    rest = dict(envelope)
    message_id = rest.pop("id", None)
    assert isinstance(message_id, str), f"no id in {envelope!r}"
    assert message_id, f"an empty id in {envelope!r}"
    return rest
