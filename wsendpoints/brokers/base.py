"""The interface every broker implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TypeVar

__all__ = ["Broker", "Deliver", "Entry", "History", "Message", "message_order"]

B = TypeVar("B", bound="Broker")


@dataclass(frozen=True, slots=True)
class Message:
    """One message published to a room.

    Attributes:
        payload: The text frame the members receive, encoded once for all of them.
        sender: The id of the publishing member, which does not receive it; None reaches everyone.
        id: The broker's id for the message within its room, unique and ordered there (see
            `Broker.position`). A broker sets it on every message it delivers or returns from
            `Broker.history`; what a publisher passes is ignored.
        to: The user name whose members alone take the message (`Broker.publish_to`); None
            for the whole room.
        close: For a message `to` a user, the close code its members close with, `payload`
            being the reason (a kick); None for a message to send.
    """

    payload: str
    sender: str | None = None
    id: str | None = None
    to: str | None = None
    close: int | None = None


def message_order(message_id: str) -> tuple[int, int]:
    """Return the order of a message id within its room: `"1700000000000-3"` -> `(1700000000000, 3)`."""
    first, _, second = message_id.partition("-")
    return int(first), int(second or 0)


@dataclass(frozen=True, slots=True)
class Entry:
    """What `Broker.enter` tells a member that entered a room.

    Attributes:
        count: How many members the room has now, this one included (0 when refused).
        first: Whether it is the first member of its user name in the room: its greeting was published.
        users: The user names present, sorted, each once, as they were when it entered.
        after: The id of the last message published to the room before it entered, where the
            broker assigns ids: the member skips messages up to it, which `users` covers. None
            when it need skip nothing.
        refused: Why it was refused, if it was: "name taken" (`unique`, and its user name was
            present) or "room full" (`max_members` were present). Nothing changed then.
    """

    count: int
    first: bool
    users: tuple[str, ...]
    after: str | None = None
    refused: str | None = None


@dataclass(frozen=True, slots=True)
class History:
    """What `Broker.history` found of a room's recent messages.

    Attributes:
        messages: The messages, oldest first, each with its `id`.
        recovered: Whether the history answers the question: with `since`, that id is still in
            the room's history (so `messages` is everything published after it, up to `limit`);
            without, that the broker keeps a history of this room at all.
    """

    messages: list[Message]
    recovered: bool


Deliver = Callable[[Message], None]
"""Called with each message of a subscribed room. It must not block, and may be called from any thread."""


class Broker(ABC):
    """Carries a room's messages to its subscribers and keeps track of who is in it.

    A room is an opaque string (the endpoints pass `"{namespace}/{room}"`); a broker must keep
    any two distinct strings apart. A broker guarantees, for each room:

    - every subscriber receives each message published while it is subscribed exactly once;
    - all subscribers receive the room's messages in the same order, and each publisher's
      messages in the order it published them;
    - nothing from another room, and nothing after its subscription ended;
    - a `deliver` callback that raises is logged and does not affect other subscribers.

    Each delivered message carries an `id` from the broker, unique and ordered within its room
    (`position`). A broker that keeps history (`history`, as much as `publish` asks for) lets a
    member that reconnects recover what it missed; one that keeps none inherits defaults that
    say so, and its members are told that recovery was not possible.

    Presence counts members (connections) with a user name each; several members may share
    a name. `enter` and `depart` keep presence per name: a greeting when a name's first member
    enters, a farewell when its last departs. `publish_to` reaches the members of one user
    name. Every broker passes `wsendpoints.testing.check_broker`.

    Example:
        ```python
        async with MemoryBroker() as broker:
            async with broker.subscribe("rooms/lobby", print):
                await broker.publish("rooms/lobby", Message("hello"))
        ```
    """

    @abstractmethod
    async def publish(self, room: str, message: Message, *, history_size: int = 0, history_ttl: float = 0.0) -> None:
        """Send `message` to every subscriber of `room`, with the id the broker gives it.

        Args:
            room: The room.
            message: What to send; its `id` is ignored: subscribers get a copy with the broker's.
            history_size: Keep at least this many of `room`'s latest messages for `history`
                (0: the publisher needs none).
            history_ttl: Keep them at least this many seconds after `room`'s latest message.

        Raises:
            BrokerClosedError: If the broker was closed.
        """

    @abstractmethod
    def subscribe(
        self, room: str, deliver: Deliver, paused: Callable[[], bool] | None = None
    ) -> AbstractAsyncContextManager[None]:
        """Call `deliver` with each message published to `room` until the context exits.

        Args:
            room: The room, as the endpoints name it (`"{namespace}/{room}"`).
            deliver: Called with each message; see `Deliver`.
            paused: A cheap, thread-safe check that a broker which reads ahead (`RedisBroker`)
                calls before reading more of `room`: while it returns True the broker leaves the
                room's backlog where it is (in Redis) and checks again at least every 50 ms. A
                broker that delivers as it publishes (`MemoryBroker`) may ignore it: holding
                publishers back is then the room's job. The rooms pass it for every member.

        Raises:
            BrokerClosedError: If the broker was closed.
        """

    @abstractmethod
    async def join(self, room: str, member: str, user: str) -> int:
        """Add `member` (a connection id unique across processes) named `user` to `room`'s presence.

        Returns:
            How many members `room` has now, this one included.
        """

    @abstractmethod
    async def leave(self, room: str, member: str) -> None:
        """Remove `member` from `room`'s presence; unknown members are ignored."""

    @abstractmethod
    async def members(self, room: str) -> list[str]:
        """Return the user names present in `room`, sorted, each once."""

    # Presence per user name, and messages to one user. The defaults below are built on the
    # methods above, one call after another: correct for one member at a time. A broker shared
    # by many processes overrides them to make each one atomic (see `MemoryBroker`, `RedisBroker`).

    async def enter(
        self,
        room: str,
        member: str,
        user: str,
        *,
        greeting: Message | None = None,
        farewell: Message | None = None,
        unique: bool = False,
        max_members: int | None = None,
        history_size: int = 0,
        history_ttl: float = 0.0,
    ) -> Entry:
        """Add `member` named `user` to `room`'s presence, announcing the name if it is new there.

        Args:
            room: The room.
            member: A connection id unique across processes.
            user: The member's user name.
            greeting: Published to `room` if `member` is the first of `user` in it.
            farewell: Kept, and published to `room` when the last member of `user` departs
                (or, on a broker shared by processes, drops out with its dead process).
            unique: Refuse `member` (nothing changes) if `user` is present already.
            max_members: Refuse `member` (nothing changes) if the room has that many members already.
            history_size: As `publish`'s, for the greeting and the farewell.
            history_ttl: As `publish`'s, for the greeting and the farewell.

        Returns:
            The head count, whether the name is new, the names present and where the member
            starts reading (see `Entry`).
        """
        users = await self.members(room)
        if unique and user in users:
            return Entry(0, False, tuple(users), refused="name taken")
        count = await self.join(room, member, user)
        if max_members is not None and count > max_members:
            await self.leave(room, member)
            return Entry(0, False, tuple(users), refused="room full")
        self._farewells()[room, member] = (user, farewell, history_size, history_ttl)
        first = user not in users
        if first and greeting is not None:
            await self.publish(room, greeting, history_size=history_size, history_ttl=history_ttl)
        return Entry(count, first, tuple(sorted({*users, user})))

    async def depart(self, room: str, member: str) -> bool:
        """Remove `member` from `room`'s presence; publish its farewell if it was its name's last member.

        Returns:
            Whether it was the last member of its user name (unknown members: False).
        """
        user, farewell, history_size, history_ttl = self._farewells().pop((room, member), (None, None, 0, 0.0))
        await self.leave(room, member)
        if user is None or user in await self.members(room):
            return False
        if farewell is not None:
            await self.publish(room, farewell, history_size=history_size, history_ttl=history_ttl)
        return True

    async def publish_to(self, room: str, user: str, message: Message) -> int | None:
        """Send `message` to the members of `room` named `user` only, on every process the broker reaches.

        Every subscriber gets it with `to` set to `user`; the endpoints' members keep only what
        is addressed to their own name.

        Returns:
            How many members it reached, where the broker can tell (`MemoryBroker`); else None.
        """
        await self.publish(room, replace(message, to=user))
        return None

    def _farewells(self) -> dict[tuple[str, str], tuple[str, Message | None, int, float]]:
        farewells: dict[tuple[str, str], tuple[str, Message | None, int, float]] = self.__dict__.setdefault(
            "_entered", {}
        )
        return farewells

    # History and recovery: a broker that keeps no history need not override these.

    async def history(self, room: str, since: str | None = None, limit: int | None = None) -> History:
        """Return `room`'s kept messages, oldest first: those after `since`, else the latest.

        Without `since`, the latest `limit` messages (all kept if None). With `since`, the first
        `limit` messages published after the message of that id, and `recovered` False (with no
        messages) when that id is no longer kept, is another broker's (or another run's), or is
        not an id at all: never an error.

        Raises:
            BrokerClosedError: If the broker was closed.
            BrokerError: If the backend cannot be read.
        """
        return History([], recovered=False)

    def position(self, message_id: str) -> tuple[int, ...] | None:
        """Return where the message `message_id` stands in its room: later messages have greater positions.

        Returns None for a string that is not an id this broker gives (garbage, or an id of
        another broker or of an earlier run of this one). Recovery uses it to drop, at the
        boundary between history and live messages, those a member already has.
        """
        return None

    async def aclose(self) -> None:  # noqa: B027 - a broker without resources need not override it
        """Release the broker's resources; publishing afterwards raises `BrokerClosedError`."""

    async def __aenter__(self: B) -> B:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
