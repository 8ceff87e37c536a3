"""`bounded`: a time limit for a whole async test."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec

import anyio

__all__ = ["bounded"]

P = ParamSpec("P")


def bounded(seconds: float) -> Callable[[Callable[P, Awaitable[None]]], Callable[P, Awaitable[None]]]:
    """Fail the async test if it takes longer than `seconds`: every wait in it is bounded."""

    def decorate(test: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
        @functools.wraps(test)
        async def run(*args: P.args, **kwargs: P.kwargs) -> None:
            with anyio.fail_after(seconds):
                await test(*args, **kwargs)

        return run

    return decorate
