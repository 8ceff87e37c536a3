"""The machinery of rooms: the per-process `Room` (flow control) and each member's queue and writer."""

from __future__ import annotations

from .member import Event, Member, SlowConsumerPolicy
from .room import Room

__all__ = ["Event", "Member", "Room", "SlowConsumerPolicy"]
