"""Checks for endpoint options, run when a class is defined or configured."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

__all__ = ["OptionCheck", "check_choice", "check_number", "check_pair", "check_size", "check_template", "check_text"]

OptionCheck = Callable[[str, Any], None]
"""Checks one option's value; raises `TypeError` or `ValueError` naming the option."""


def check_size(*, optional: bool = True, minimum: int = 1) -> OptionCheck:
    """Accept a whole number of at least `minimum` (or None if `optional`)."""

    def check(name: str, value: Any) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int{' or None' if optional else ''}, got {value!r}")
        if value < minimum:
            raise ValueError(f"{name} must be at least {minimum}, got {value!r}")

    return check


def check_number(*, optional: bool = True) -> OptionCheck:
    """Accept a positive, finite int or float (or None if `optional`)."""

    def check(name: str, value: Any) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a number of seconds{' or None' if optional else ''}, got {value!r}")
        if not 0 < value < float("inf"):
            raise ValueError(f"{name} must be positive and finite, got {value!r}")

    return check


def check_choice(choices: Collection[Any]) -> OptionCheck:
    """Accept exactly one of `choices`."""

    def check(name: str, value: Any) -> None:
        if value not in choices or isinstance(value, bool):
            raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")

    return check


def check_text(*, optional: bool = False) -> OptionCheck:
    """Accept a str (or None if `optional`)."""

    def check(name: str, value: Any) -> None:
        if not (isinstance(value, str) or (value is None and optional)):
            raise TypeError(f"{name} must be a str{' or None' if optional else ''}, got {value!r}")

    return check


def check_template(*fields: str, optional: bool = True) -> OptionCheck:
    """Accept a `str.format` template that uses only the named `fields` (or None if `optional`)."""

    def check(name: str, value: Any) -> None:
        check_text(optional=optional)(name, value)
        if value is None:
            return
        try:
            value.format_map({field: "" for field in fields})
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ValueError(f"{name} {value!r} is not a template of the fields {', '.join(fields)}: {exc!r}") from None

    return check


def check_pair(name: str, value: Any) -> None:
    """Accept None or `(count, seconds)` with a positive int count and positive seconds."""
    if value is None:
        return
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise TypeError(f"{name} must be None or a pair (count, seconds), got {value!r}")
    check_size(optional=False)(f"{name}[0]", value[0])
    check_number(optional=False)(f"{name}[1]", value[1])
