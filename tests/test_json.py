from __future__ import annotations

import pytest

from wsendpoints import _json


def lists(depth: int, inner: object) -> object:
    """`inner` inside `depth` lists, built without the parser under test."""
    for _ in range(depth):
        inner = [inner]
    return inner


def objects(depth: int, inner: object) -> object:
    """`inner` inside `depth` objects {"k": ...}."""
    for _ in range(depth):
        inner = {"k": inner}
    return inner


@pytest.mark.parametrize(
    ("data", "value"),
    [
        ('{"text": "hi"}', {"text": "hi"}),
        (b"[1, 2.5, true, null]", [1, 2.5, True, None]),
        ('"\\ud83d\\ude00"', "\U0001f600"),
        ("[" * 64 + "]" * 64, lists(63, [])),
        ("[" + "[]," * 100 + "[]]", [[]] * 101),
        ("1" * 100, int("1" * 100)),
        ('[{"a": "\\u00e9", "\\ud83d\\ude00": ["x", 1]}]', [{"a": "é", "\U0001f600": ["x", 1]}]),
        ('{"k": ' * 30 + "[" * 30 + "0" + "]" * 30 + "}" * 30, objects(30, lists(30, 0))),
    ],
)
def test_loads_accepts_plain_json(data: str | bytes, value: object) -> None:
    assert _json.loads(data) == value


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("{", "malformed JSON"),
        (b"\xff", "invalid UTF-8"),
        ("NaN", "NaN is not valid JSON"),
        ("[-Infinity]", "-Infinity is not valid JSON"),
        ("1e999", "number out of range"),
        ("1" * 101, "number too long"),
        ("1." + "1" * 100, "number too long"),
        ("[" * 65 + "]" * 65, "JSON nested too deeply"),
        ('{"a":' * 65 + "1" + "}" * 65, "JSON nested too deeply"),
        ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
        ('["\\udc00"]', "lone surrogate in JSON string"),
        ('{"\\ud800": 1}', "lone surrogate in JSON string"),
    ],
)
def test_loads_rejects_with_reason(data: str | bytes, reason: str) -> None:
    with pytest.raises(_json.JSONRejected) as info:
        _json.loads(data)
    assert info.value.reason == reason


def test_dumps_is_compact_and_refuses_nan() -> None:
    assert _json.dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'
    with pytest.raises(ValueError, match="Out of range"):
        _json.dumps(float("nan"))
