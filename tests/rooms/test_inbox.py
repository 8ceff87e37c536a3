from __future__ import annotations

import threading

from wsendpoints.brokers.base import Message, message_order
from wsendpoints.rooms.inbox import Inbox


class Box:
    """An inbox for "ann" whose member keeps the payloads it is given, the kicks, and how often it was steady."""

    def __init__(self, limit: int = 10) -> None:
        self.passed: list[str] = []
        self.kicks: list[tuple[int, str]] = []
        self.steady = 0
        self.inbox = Inbox(
            "ann", lambda message: self.passed.append(message.payload), self._kick, limit, steady=self._steady
        )

    def _kick(self, code: int, reason: str) -> None:
        self.kicks.append((code, reason))

    def _steady(self) -> None:
        self.steady += 1


def test_message_order_reads_stream_ids() -> None:
    assert message_order("1700000000000-3") == (1700000000000, 3)
    assert message_order("0-12") < message_order("1-0")
    assert message_order("7") == (7, 0)


def test_inbox_holds_until_open_then_drops_what_came_before_the_entry() -> None:
    box = Box()
    for n in (1, 2, 3):
        box.inbox.deliver(Message(f"m{n}", id=f"0-{n}"))
    assert box.passed == []
    box.inbox.open("0-2")
    assert box.passed == ["m3"]
    assert box.steady == 1  # m3 came after the entry: nothing more to skip
    box.inbox.deliver(Message("m4", id="0-4"))
    box.inbox.deliver(Message("no id"))
    assert box.passed == ["m3", "m4", "no id"]


def test_inbox_without_an_entry_point_passes_everything_held() -> None:
    box = Box()
    box.inbox.deliver(Message("a", id="0-1"))
    box.inbox.deliver(Message("b"))
    box.inbox.open(None)
    assert box.passed == ["a", "b"]
    assert box.steady == 1


def test_inbox_over_its_limit_passes_all_in_order_unchecked() -> None:
    box = Box(limit=2)
    for n in (1, 2, 3, 4):
        box.inbox.deliver(Message(f"m{n}", id=f"0-{n}"))
    assert box.passed == ["m1", "m2", "m3", "m4"]
    assert box.steady == 1
    box.inbox.open("0-4")  # too late to skip anything
    box.inbox.deliver(Message("m5", id="0-5"))
    assert box.passed == ["m1", "m2", "m3", "m4", "m5"]
    assert box.steady == 1


def test_inbox_is_steady_once_a_message_after_the_entry_passes() -> None:
    box = Box()
    box.inbox.deliver(Message("m1", id="0-1"))
    box.inbox.open("0-2")  # what is held all came before the entry
    box.inbox.deliver(Message("m2", id="0-2"))
    box.inbox.deliver(Message("no id"))  # proves nothing
    assert box.steady == 0
    box.inbox.deliver(Message("m3", id="0-3"))
    assert box.passed == ["no id", "m3"]
    assert box.steady == 1


def test_inbox_keeps_only_what_is_addressed_to_its_user_and_turns_kicks_into_calls() -> None:
    box = Box()
    box.inbox.open(None)
    box.inbox.deliver(Message("for ann", to="ann"))
    box.inbox.deliver(Message("for anna", to="anna"))
    box.inbox.deliver(Message("bye anna", to="anna", close=1008))
    box.inbox.deliver(Message("bye ann", to="ann", close=4001))
    assert box.passed == ["for ann"]
    assert box.kicks == [(4001, "bye ann")]


def test_inbox_keeps_the_order_when_another_thread_delivers_while_it_opens() -> None:
    box = Box(limit=100_000)
    started = threading.Event()

    def publish() -> None:
        for n in range(1, 20_001):
            box.inbox.deliver(Message(f"{n}", id=f"0-{n}"))
            if n == 100:
                started.set()

    thread = threading.Thread(target=publish)
    thread.start()
    assert started.wait(5)
    box.inbox.open("0-50")
    thread.join(10)
    assert box.passed == [str(n) for n in range(51, 20_001)]


def test_inbox_passes_on_what_it_finds_opened_once_it_has_the_lock() -> None:
    """A delivery that saw the inbox closed, then found it opened by another thread, is passed on."""
    box = Box()
    box.inbox.open(None)
    assert not box.inbox._hold(Message("late"))


def test_inbox_orders_ids_as_it_is_told_and_passes_those_it_does_not_know() -> None:
    passed: list[str] = []

    def order(message_id: str) -> tuple[int, ...] | None:
        return (int(message_id[1:]),) if message_id.startswith("e") else None

    inbox = Inbox("ann", lambda message: passed.append(message.payload), print, 10, order)
    for message_id in ("e1", "e2", "x9", "e3"):
        inbox.deliver(Message(message_id, id=message_id))
    inbox.open("e2")
    assert passed == ["x9", "e3"]
