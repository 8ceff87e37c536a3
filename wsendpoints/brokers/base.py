"""The interface every broker implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

__all__ = ["Broker", "Deliver", "Message"]

B = TypeVar("B", bound="Broker")


@dataclass(frozen=True, slots=True)
class Message:
    """One message published to a room.

    Attributes:
        payload: The text frame the members receive, encoded once for all of them.
        sender: The id of the publishing member, which does not receive it; None reaches everyone.
        id: The broker's id for the message within its room, where the broker assigns one
            (reserved for history and recovery on reconnect); None otherwise.
    """

    payload: str
    sender: str | None = None
    id: str | None = None


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

    Presence counts members (connections) with a user name each; several members may share
    a name. Every broker passes `wsendpoints.testing.check_broker`.

    Example:
        ```python
        async with MemoryBroker() as broker:
            async with broker.subscribe("rooms/lobby", print):
                await broker.publish("rooms/lobby", Message("hello"))
        ```
    """

    @abstractmethod
    async def publish(self, room: str, message: Message) -> None:
        """Send `message` to every subscriber of `room`.

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

    async def aclose(self) -> None:  # noqa: B027 - a broker without resources need not override it
        """Release the broker's resources; publishing afterwards raises `BrokerClosedError`."""

    async def __aenter__(self: B) -> B:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
