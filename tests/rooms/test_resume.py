from __future__ import annotations

from typing import Any, cast

from wsendpoints import Message
from wsendpoints.rooms.member import Member
from wsendpoints.rooms.resume import Gate, text_bytes, with_id


class FakeMember:
    """What a `Gate` calls on its member."""

    def __init__(self) -> None:
        self.queued: list[str] = []
        self.refused = 0

    def put_message(self, message: Message) -> None:
        self.queued.append(message.payload)

    def refuse(self) -> None:
        self.refused += 1


def position(message_id: str) -> tuple[int, ...] | None:
    return (int(message_id),) if message_id.isdigit() else None


def gate_of(member: FakeMember, **bounds: Any) -> Gate:
    return Gate(cast(Member, member), position, **bounds)


def test_with_id_adds_the_id_last_to_a_json_object_only() -> None:
    assert with_id('{"type":"join"}', 'e-1"') == '{"type":"join","id":"e-1\\""}'
    for payload in ["plain", "{}", "[1]", "", "{not json"]:
        assert with_id(payload, "e-1") == payload
    assert with_id('{"a":1}', None) == '{"a":1}'


def test_text_bytes_counts_utf8() -> None:
    assert (text_bytes("abc"), text_bytes("é"), text_bytes("😀")) == (3, 2, 4)


def test_gate_holds_within_its_bounds_in_messages_and_bytes() -> None:
    member = FakeMember()
    gate = gate_of(member, limit=3, max_bytes=5)
    for payload in ["aa", "bb", "cc", "d", "e"]:  # "cc" would make 6 bytes; "e" a fourth message
        gate.take(Message(payload, id=payload))
    assert member.refused == 2
    gate.open([], None)
    assert member.queued == ["aa", "bb", "d"]


def test_gate_drops_what_the_history_had_then_lets_everything_through() -> None:
    member = FakeMember()
    gate = gate_of(member, limit=10)
    for n in (4, 5, 6):
        gate.take(Message(f"m{n}", id=str(n)))
    gate.open([Message("m5", id="5"), Message("m6", id="6"), Message("m7", id="7")], (7,))
    gate.take(Message("m7", id="7"))  # late: the history had it
    gate.take(Message("no id"))  # a broker without ids: let through
    gate.take(Message("m8", id="8"))
    gate.take(Message("m3", id="3"))  # after the first new one, nothing is filtered any more
    assert member.queued == ["m5", "m6", "m7", "no id", "m8", "m3"]
