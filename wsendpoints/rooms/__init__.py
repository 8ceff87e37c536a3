"""The machinery of rooms: each member's outbound queue and writer."""

from __future__ import annotations

from .member import Event, Member, SlowConsumerPolicy, event_for

__all__ = ["Event", "Member", "SlowConsumerPolicy", "event_for"]
