"""The type checker catches misconfigured endpoints: every `configure()` is typed with its class's options."""

from __future__ import annotations

from pathlib import Path
from typing import get_type_hints

import pytest
from mypy import api

from wsendpoints import EchoEndpoint, Endpoint, OKEndpoint, RoomEndpoint
from wsendpoints.endpoints.base import EndpointOptions
from wsendpoints.endpoints.echo import EchoOptions
from wsendpoints.endpoints.ok import OKOptions
from wsendpoints.endpoints.room import RoomOptions

# Each line that mypy must refuse names the option it must name; the last two are valid.
CALLS = [
    ("Endpoint.configure(max_mesage_size=1)", '"max_mesage_size"'),
    ('Endpoint.configure(idle_timeout="5")', '"idle_timeout"'),
    ("EchoEndpoint.configure(template=1)", '"template"'),
    ("OKEndpoint.configure(reply=None)", '"reply"'),
    ('RoomEndpoint.configure(mode="xml")', '"mode"'),
    ('RoomEndpoint.configure(encoding="json")', '"encoding"'),  # follows from `mode`
    ("RoomEndpoint.configure(max_members=10, rate_limit=(5, 1.0), send_timeout=2, max_message_size=1024)", None),
    ('Endpoint.configure(send_timeout=None, encoding="json", allowed_origins=["https://a.example"])', None),
]


def test_mypy_catches_misspelt_and_mistyped_options(tmp_path: Path) -> None:
    module = tmp_path / "snippet.py"
    header = "from wsendpoints import EchoEndpoint, Endpoint, OKEndpoint, RoomEndpoint\n"
    module.write_text(header + "".join(f"{call}\n" for call, _ in CALLS))
    stdout, _, _ = api.run(["--strict", "--cache-dir", str(tmp_path / "cache"), str(module)])
    errors: dict[int, str] = {}
    for line in stdout.splitlines():
        if ": error: " in line:
            number = int(line.split(":")[1]) - 2  # after the import, 0-based
            errors[number] = errors.get(number, "") + line
    for number, (call, option) in enumerate(CALLS):
        if option is None:
            assert number not in errors, f"{call}: {errors[number]}"
        else:
            assert option in errors.get(number, ""), f"mypy let {call} through: {stdout}"
    assert len(errors) == sum(option is not None for _, option in CALLS), stdout


@pytest.mark.parametrize(
    ("endpoint", "options"),
    [(Endpoint, EndpointOptions), (EchoEndpoint, EchoOptions), (OKEndpoint, OKOptions), (RoomEndpoint, RoomOptions)],
)
def test_each_typed_option_set_names_exactly_the_checked_options(endpoint: type[Endpoint], options: type) -> None:
    """An option added to a class's checks but not to its TypedDict would be refused by the type checker."""
    assert set(get_type_hints(options)) == set(endpoint._wsendpoints_options)
