from __future__ import annotations

import threading

import anyio
import pytest

from wsendpoints import Message
from wsendpoints._loop import LoopHandle
from wsendpoints.rooms import Event, Member, Room, SlowConsumerPolicy


class Socket:
    """A fake socket whose sends can be held up."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.flowing = anyio.Event()
        self.flowing.set()
        self.arrived = anyio.Event()

    def stall(self) -> None:
        self.flowing = anyio.Event()

    async def send(self, event: Event) -> None:
        await self.flowing.wait()
        self.sent.append(event["text"])
        self.arrived.set()

    async def wait_for(self, count: int) -> None:
        with anyio.fail_after(1):
            while len(self.sent) < count:
                self.arrived = anyio.Event()
                await self.arrived.wait()


def run(test: object) -> None:
    for backend in ("asyncio", "trio"):
        anyio.run(test, backend=backend)  # type: ignore[arg-type]


def test_member_sends_in_order_and_skips_its_own() -> None:
    async def scenario() -> None:
        member, socket = Member("me", 10, "close", 1.0), Socket()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(member.run, socket.send)
            member.deliver(Message("mine", sender="me"))
            for n in range(5):
                member.deliver(Message(f"m{n}", sender="other"))
            member.push_first("first")
            await socket.wait_for(6)
            member.push_first("later")
            await socket.wait_for(7)
            tasks.cancel_scope.cancel()
        # The writer had not started when "first" was pushed ahead of the five deliveries.
        assert socket.sent[:6] == ["first", "m0", "m1", "m2", "m3", "m4"]
        assert socket.sent[6] == "later"
        assert member.stalled is None

    run(scenario)


def test_member_overflow_with_close_policy_stops_the_writer_at_once() -> None:
    async def scenario() -> None:
        member, socket = Member("me", 3, "close", 60.0), Socket()
        socket.stall()
        with anyio.fail_after(1):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(member.run, socket.send)
                for n in range(10):
                    member.push(f"m{n}")
                    await anyio.lowlevel.checkpoint()
        assert member.overflowed
        assert member.stalled == "slow consumer"
        assert socket.sent == []

    run(scenario)


def test_member_overflow_while_idle_writer_waits() -> None:
    async def scenario() -> None:
        member = Member("me", 1, "close", 60.0)
        member.push("a")
        member.push("b")
        with anyio.fail_after(1):
            await member.run(Socket().send)
        assert member.stalled == "slow consumer"

    run(scenario)


@pytest.mark.parametrize(("policy", "kept"), [("drop_oldest", ["m7", "m8", "m9"]), ("drop_newest", ["m0", "m1", "m2"])])
def test_member_drop_policies_keep_the_member_and_count(policy: SlowConsumerPolicy, kept: list[str]) -> None:
    async def scenario() -> None:
        member, socket = Member("me", 3, policy, 60.0), Socket()
        for n in range(10):
            member.push(f"m{n}")
        assert member.dropped == 7
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(member.run, socket.send)
            await socket.wait_for(3)
            tasks.cancel_scope.cancel()
        assert socket.sent == kept
        assert not member.overflowed

    run(scenario)


def test_member_send_timeout_ends_a_stalled_writer() -> None:
    async def scenario() -> None:
        member, socket = Member("me", 100, "close", 0.1), Socket()
        socket.stall()
        member.push("stuck")
        with anyio.fail_after(2):
            await member.run(socket.send)
        assert member.stalled == "send timeout"

    run(scenario)


def test_member_slow_sends_that_progress_are_not_timed_out() -> None:
    async def scenario() -> None:
        member = Member("me", 200, "close", 0.5)
        sent: list[str] = []

        async def slow_send(event: Event) -> None:
            await anyio.sleep(0.005)  # slow, but every send makes progress
            sent.append(event["text"])

        for n in range(130):  # about 0.8 s of sending in one batch, longer than the timeout
            member.push(f"m{n}")
        with anyio.move_on_after(3):
            await member.run(slow_send)
        assert sent == [f"m{n}" for n in range(130)]
        assert member.stalled is None

    run(scenario)


def test_member_is_woken_from_another_thread() -> None:
    async def scenario() -> None:
        member, socket = Member("me", 1000, "close", 5.0), Socket()

        def publish() -> None:
            for n in range(200):
                member.deliver(Message(f"m{n}"))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(member.run, socket.send)
            await anyio.lowlevel.checkpoint()
            thread = threading.Thread(target=publish)
            thread.start()
            await socket.wait_for(200)
            thread.join()
            tasks.cancel_scope.cancel()
        assert socket.sent == [f"m{n}" for n in range(200)]

    run(scenario)


def test_loop_handle_after_the_loop_ended_does_nothing() -> None:
    async def make() -> LoopHandle:
        return LoopHandle()

    for backend in ("asyncio", "trio"):
        handle = anyio.run(make, backend=backend)
        calls: list[int] = []
        thread = threading.Thread(target=handle.call, args=(calls.clear,))
        thread.start()
        calls.append(1)
        thread.join()
        assert calls == [1]


def test_room_makes_one_item_per_message() -> None:
    room = Room("r")
    first, second = Message("a"), Message("é")
    assert room.item(first) is room.item(first)
    assert room.item(second) == ({"type": "websocket.send", "text": "é"}, 2)
    assert room.item(second) is not room.item(first)


def test_loop_handle_is_shared_per_asyncio_loop_only() -> None:
    async def two() -> tuple[LoopHandle, LoopHandle]:
        return LoopHandle.current(), LoopHandle.current()

    first, second = anyio.run(two)
    assert first is second
    assert first.has_watchdog
    first, second = anyio.run(two, backend="trio")
    assert first is not second
    assert not first.has_watchdog


def test_watchdog_stops_when_nothing_is_watched() -> None:
    class Stalls:
        def __init__(self) -> None:
            self.checks = 0

        def check_stall(self, now: float) -> None:
            self.checks += 1

    async def scenario() -> None:
        handle = LoopHandle.current()
        watched = Stalls()
        handle.watch(watched, 0.04)
        await anyio.sleep(0.1)
        handle.unwatch(watched)
        seen = watched.checks
        await anyio.sleep(0.1)
        assert seen >= 2
        assert watched.checks <= seen + 1

    anyio.run(scenario)


def test_waiter_set_after_its_wait_was_cancelled_is_harmless() -> None:
    async def scenario() -> None:
        waiter = LoopHandle.current().waiter()
        with anyio.move_on_after(0.01):
            await waiter.wait()
        waiter.set()

    run(scenario)


@pytest.mark.parametrize("way", ["deliver", "push"])
def test_message_after_the_idle_writer_was_cancelled_is_queued_quietly(way: str) -> None:
    async def scenario() -> None:
        member, socket = Member("me", 10, "close", 1.0), Socket()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(member.run, socket.send)
            member.deliver(Message("m0", sender="other"))
            await socket.wait_for(1)  # the writer now waits, idle, on its wake-up
            tasks.cancel_scope.cancel()
        # Its wake-up was cancelled with it: nothing raises.
        if way == "deliver":
            member.deliver(Message("m1", sender="other"))
        else:
            member.push("m1")
        assert member.queued[0] == 1
        assert socket.sent == ["m0"]

    run(scenario)


def test_check_stall_waits_for_a_whole_timeout_without_progress() -> None:
    async def scenario() -> None:
        member = Member("me", 10, "close", 1.0)
        scope = anyio.CancelScope()  # never entered: only whether it was cancelled matters
        member._stop, member._sending = scope.cancel, {"text": "m0"}
        member.check_stall(10.0)  # the first look: remembers where the writer stands
        member.check_stall(10.5)  # no progress, but not for a whole timeout
        assert not scope.cancel_called
        member._sending = {"text": "m1"}  # the next send
        member.check_stall(11.2)  # progress: the clock starts again
        member.check_stall(12.0)
        assert not scope.cancel_called
        member.check_stall(12.3)
        assert scope.cancel_called

    anyio.run(scenario)


def test_check_stall_counts_from_the_first_look_at_a_send() -> None:
    """Looks while the writer is idle do not count towards the timeout of the send that follows."""

    async def scenario() -> None:
        member = Member("me", 10, "close", 1.0)
        scope = anyio.CancelScope()  # never entered: only whether it was cancelled matters
        member._stop = scope.cancel
        member.check_stall(10.0)  # idle
        member.check_stall(10.25)  # idle
        member._sending = {"text": "m0"}  # a send begins after that look
        member.check_stall(10.5)  # the first look at the send
        member.check_stall(11.3)  # 1.05 s after the last idle look, 0.8 s after the send was first seen
        assert not scope.cancel_called
        member.check_stall(11.5)  # a whole timeout since the send was first seen
        assert scope.cancel_called

    anyio.run(scenario)


def test_screened_member_queues_room_messages_itself_once_steady() -> None:
    """Until `unscreen()` every delivery goes through the screen; then only messages to one user do."""

    async def scenario() -> None:
        member = Member("me", 10, "close", 1.0)
        screened: list[str] = []

        def screen(message: Message) -> None:
            screened.append(message.payload)
            member.take(message)

        member.screen(screen)
        member.deliver(Message("a", sender="other"))
        member.unscreen()
        member.deliver(Message("b", sender="other"))
        member.deliver(Message("for ann", sender="other", to="ann"))
        member.deliver(Message("mine", sender="me"))
        assert screened == ["a", "for ann"]
        assert member.queued[0] == 3
        unscreened = Member("you", 10, "close", 1.0)  # no screen: messages to one user are queued too
        unscreened.deliver(Message("for ann", sender="other", to="ann"))
        assert unscreened.queued[0] == 1

    run(scenario)


def test_resuming_member_keeps_its_deliveries_on_the_gate_when_unscreened() -> None:
    async def scenario() -> None:
        member = Member("me", 10, "close", 1.0)
        screened: list[str] = []
        member.screen(lambda message: screened.append(message.payload))
        member.resume(lambda message_id: None)
        member.unscreen()
        member.deliver(Message("a", sender="other"))
        assert screened == ["a"]

    run(scenario)


def test_writer_hands_what_a_send_raises_to_on_error() -> None:
    async def scenario() -> None:
        member = Member("me", 10, "close", 1.0)
        failures: list[Exception] = []

        async def send(event: Event) -> None:
            raise RuntimeError("the server failed")

        async def on_error(exc: Exception) -> None:
            failures.append(exc)

        member.deliver(Message("m0", sender="other"))
        with anyio.fail_after(1):
            await member.run(send, on_error=on_error)
        assert [str(exc) for exc in failures] == ["the server failed"]
        assert member.stalled is None
        alone = Member("me", 10, "close", 1.0)  # without `on_error` it is raised
        alone.deliver(Message("m0", sender="other"))
        with anyio.fail_after(1), pytest.raises(RuntimeError, match="the server failed"):
            await alone.run(send)

    run(scenario)


def test_a_message_sent_again_counts_as_progress() -> None:
    """The same message delivered twice: the watchdog, which saw the first send, sees the second as a new one."""

    async def scenario() -> None:
        member = Member("me", 10, "close", 1.0)
        events: list[Event] = []
        looks = iter([10.0, 11.5])  # the second send is looked at a whole timeout after the first

        async def send(event: Event) -> None:
            events.append(event)
            member.check_stall(next(looks))  # the watchdog looks while the send is in flight

        message = Message("ping", sender="other")
        member.deliver(message)
        member.deliver(message)
        with anyio.move_on_after(0.5):  # the writer then waits for more, idle
            await member.run(send)
        assert events == [{"type": "websocket.send", "text": "ping"}] * 2
        assert events[1] is not events[0]
        assert not member._stopping

    run(scenario)


@pytest.mark.parametrize("handled", [True, False])
def test_writer_hands_what_on_stall_raises_to_on_error(handled: bool) -> None:
    async def scenario() -> None:
        member = Member("me", 1, "close", 1.0)
        for n in range(3):  # over its queue before the writer starts: it stalls at once
            member.deliver(Message(f"m{n}", sender="other"))
        failures: list[Exception] = []

        async def on_stall(reason: str) -> None:
            raise RuntimeError(f"could not close: {reason}")

        async def on_error(exc: Exception) -> None:
            failures.append(exc)

        with anyio.fail_after(1):
            if handled:
                await member.run(Socket().send, on_stall, on_error)
                assert [str(exc) for exc in failures] == ["could not close: slow consumer"]
            else:
                with pytest.raises(RuntimeError, match="could not close: slow consumer"):
                    await member.run(Socket().send, on_stall)

    run(scenario)


def test_a_member_has_no_writer_until_its_first_message() -> None:
    """An idle member costs no writer task (nor queue): `start_later` starts one at the first message, once."""

    async def scenario() -> None:
        member, socket = Member("me", 10, "close", 1.0), Socket()
        starts: list[int] = []
        async with anyio.create_task_group() as tasks:

            def start() -> None:
                starts.append(1)
                tasks.start_soon(member.run, socket.send)

            member.start_later(start)
            member.deliver(Message("mine", sender="me"))  # skipped: nothing to send, nothing started
            assert starts == []
            assert member.queued == (0, 0)
            member.deliver(Message("m0", sender="other"))
            member.deliver(Message("m1", sender="other"))
            assert starts == [1]
            await socket.wait_for(2)
            member.deliver(Message("m2", sender="other"))
            await socket.wait_for(3)
            tasks.cancel_scope.cancel()
        assert starts == [1]
        assert socket.sent == ["m0", "m1", "m2"]

    run(scenario)


def test_a_member_with_messages_queued_starts_its_writer_at_once() -> None:
    async def scenario() -> None:
        member = Member("me", 10, "close", 1.0)
        member.push_first("presence")
        starts: list[int] = []
        member.start_later(lambda: starts.append(1))
        assert starts == [1]
        other = Member("other", 10, "close", 1.0)
        other.start_later(lambda: starts.append(2))
        other.push_first("presence")  # what a resume or a joiner's snapshot queues first starts it too
        assert starts == [1, 2]

    run(scenario)


def test_a_muted_member_never_starts_a_writer_nor_queues() -> None:
    async def scenario() -> None:
        member = Member("me", 10, "close", 1.0)
        starts: list[int] = []
        member.start_later(lambda: starts.append(1))
        member.mute()
        member.deliver(Message("m0", sender="other"))
        member.push_first("presence")
        assert starts == []
        assert member.queued == (0, 0)
        member.start_later(lambda: starts.append(2))  # the connection ended before the join finished
        member.push("late")
        assert starts == []
        assert member.queued == (0, 0)

    run(scenario)
