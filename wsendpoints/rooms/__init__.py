"""The machinery of rooms: each member's outbound queue and writer."""

from __future__ import annotations

from .member import Member, SlowConsumerPolicy

__all__ = ["Member", "SlowConsumerPolicy"]
