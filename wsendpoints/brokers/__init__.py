"""Brokers carry room messages and presence between the members of a room.

`MemoryBroker` serves one process; `wsendpoints.brokers.redis.RedisBroker` (extra "redis")
serves many processes and hosts.
"""

from __future__ import annotations

from .base import Broker, Deliver, History, Message
from .memory import MemoryBroker

__all__ = ["Broker", "Deliver", "History", "MemoryBroker", "Message"]
