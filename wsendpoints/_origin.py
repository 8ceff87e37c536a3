"""The handshake's Origin policy: same origin by default, or an exact allow-list.

Browsers send an `Origin` header with every WebSocket handshake and, unlike for `fetch`, no
CORS check protects the server: without this policy any page the user visits could open a
socket with the user's cookies (cross-site WebSocket hijacking).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Origin", "OriginPolicy", "parse_origin"]

Origin = tuple[str, str, int]
"""An origin as (scheme, host, port), lower case, the port always explicit."""

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_WS_TO_HTTP = {"ws": "http", "wss": "https"}
_ORIGIN = re.compile(r"([a-z][a-z0-9+.-]*)://(\[[0-9a-f:.]+\]|[a-z0-9_.~!$&'()*+,;=%-]+)(?::([0-9]{1,5}))?/?")


def parse_origin(value: str) -> Origin | None:
    """Parse `scheme://host[:port]` into an `Origin`; anything else (`null`, paths, user info) gives None."""
    if not value.isascii():
        return None
    match = _ORIGIN.fullmatch(value.lower())
    if match is None:
        return None
    scheme, host, port = match.groups()
    number = int(port) if port is not None else _DEFAULT_PORTS.get(scheme, 0)
    if number > 65535:
        return None
    return scheme, host, number


def _request_origin(scope: Mapping[str, Any], host: str | None) -> Origin | None:
    scheme = _WS_TO_HTTP.get(scope.get("scheme", "ws"), "http")
    if host is None:
        server = scope.get("server")
        if not server:
            return None
        host = f"{server[0]}:{server[1]}"
    return parse_origin(f"{scheme}://{host}")


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """Which Origin headers a handshake may carry.

    `allowed` None means same origin only; `allow_any` accepts every origin.
    """

    allowed: frozenset[Origin] | None = None
    allow_any: bool = False

    @classmethod
    def from_option(cls, allowed_origins: Sequence[str] | None) -> OriginPolicy:
        """Build the policy from the `allowed_origins` option.

        Raises:
            TypeError: If the option is not None or a list of strings.
            ValueError: If an entry is not `"*"` or of the form `scheme://host[:port]`.
        """
        if allowed_origins is None:
            return cls()
        if isinstance(allowed_origins, str) or not isinstance(allowed_origins, Sequence | frozenset | set):
            raise TypeError(f"allowed_origins must be None or a list of origins, got {allowed_origins!r}")
        parsed: set[Origin] = set()
        for entry in allowed_origins:
            if not isinstance(entry, str):
                raise TypeError(f"allowed_origins entries must be strings, got {entry!r}")
            if entry == "*":
                return cls(allow_any=True)
            origin = parse_origin(entry)
            if origin is None:
                raise ValueError(f"allowed_origins entry {entry!r} is not of the form 'scheme://host[:port]'")
            parsed.add(origin)
        return cls(allowed=frozenset(parsed))

    def refusal(self, scope: Mapping[str, Any]) -> str | None:
        """Return why the handshake in `scope` is refused, or None if its origin is allowed."""
        origins: list[bytes] = []
        host: str | None = None
        for name, value in scope.get("headers", ()):
            if name == b"origin":
                origins.append(value)
            elif name == b"host":
                host = value.decode("latin-1")
        if not origins or self.allow_any:
            return None
        if len(origins) > 1:
            return "more than one Origin header"
        origin = parse_origin(origins[0].decode("latin-1"))
        if origin is None:
            return "malformed Origin header"
        if self.allowed is not None:
            return None if origin in self.allowed else "origin not allowed"
        return None if origin == _request_origin(scope, host) else "cross-origin request"
