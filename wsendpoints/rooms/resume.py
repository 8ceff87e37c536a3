"""Message ids in JSON envelopes, and the gate that lets a reconnecting member resume without gap or duplicate.

A member that resumes from an id (`since`) subscribes first and holds what the room delivers
meanwhile (`Gate`); then it reads the room's history after `since`; then the gate opens: the
history goes into the member's queue, then the held messages, dropping those the history
already had (by the broker's `position` of their ids), then the live stream. Every message
published after `since` is either in the history or delivered after the subscription began,
and the overlap is dropped, so nothing is missed and nothing comes twice.
"""

from __future__ import annotations

from collections.abc import Callable
from json.encoder import encode_basestring
from typing import TYPE_CHECKING

from ..brokers.base import Message

if TYPE_CHECKING:  # pragma: no cover - imports for the type checker only
    from .member import Member

__all__ = ["Gate", "text_bytes", "with_id"]

Position = Callable[[str], "tuple[int, ...] | None"]


def text_bytes(text: str) -> int:
    """Return the size of `text` in UTF-8."""
    return len(text) if text.isascii() else len(text.encode())


def with_id(payload: str, message_id: str | None) -> str:
    """Return the JSON object text `payload` with `"id": message_id` added last.

    Anything else (no id, or a payload that is not a JSON object's text) is returned as it is.
    """
    if message_id is None or payload[-1:] != "}" or payload[:1] != "{" or payload == "{}":
        return payload
    return f'{payload[:-1]},"id":{encode_basestring(message_id)}}}'


class Gate:
    """Holds a resuming member's deliveries until its history is in its queue, then lets them through once.

    `take` and `open` run in the member's event loop (the member hands `take` over to it).

    Args:
        member: The member resuming.
        position: The broker's `position`.
        limit: Most messages held before the member is treated as overflowing its queue.
        max_bytes: Most bytes of text held, likewise; None for no bound in bytes.
    """

    __slots__ = ("_bytes", "_held", "_limit", "_max_bytes", "_member", "_position", "_through")

    def __init__(self, member: Member, position: Position, limit: int, max_bytes: int | None = None) -> None:
        self._member = member
        self._position = position
        self._limit = limit
        self._max_bytes = max_bytes
        self._bytes = 0
        self._held: list[Message] | None = []
        self._through: tuple[int, ...] | None = None

    def take(self, message: Message) -> None:
        """Hold `message` while the gate is shut; after, queue it unless the history had it."""
        held = self._held
        if held is not None:
            size = text_bytes(message.payload)
            if len(held) < self._limit and (self._max_bytes is None or self._bytes + size <= self._max_bytes):
                held.append(message)
                self._bytes += size
            else:
                self._member.refuse()
            return
        through = self._through
        if through is not None:
            position = None if message.id is None else self._position(message.id)
            if position is not None and position <= through:
                return  # the history had it
            self._through = None  # the room's order: everything after this is newer still
        self._member.put_message(message)

    def open(self, replay: list[Message], through: tuple[int, ...] | None) -> None:
        """Queue `replay`, then what was held, dropping what is at or before `through`; then let all through."""
        held, self._held = self._held or [], None
        self._bytes = 0
        self._through = through
        for message in replay:
            self._member.put_message(message)
        for message in held:
            self.take(message)
