"""The benchmark harness still runs: `python -m benchmarks --smoke` on tiny sizes, a few peers.

These check that it measures and reports, never how fast anything is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent


def run_harness(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the harness in smoke mode into `out`; the timeout only guards against a hang."""
    command = [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def scenarios(out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Return results.json's rows as {scenario: {peer: row}}."""
    data = json.loads((out / "results.json").read_text())
    return {result["key"]: {row["peer"]["key"]: row for row in result["rows"]} for result in data["results"]}


def assert_measured(row: dict[str, Any]) -> None:
    assert row["samples"], row
    for sample in row["samples"]:
        assert sample["value"] > 0, row
        assert sample["lost"] == 0, row
        assert sample["errors"] == 0, row


def test_benchmarks_smoke_measures_echo_and_ok(tmp_path: Path) -> None:
    done = run_harness(tmp_path, "--scenarios", "echo,ok", "--peers", "starlette,wsendpoints", "--no-chart")

    assert done.returncode == 0, done.stdout + done.stderr
    found = scenarios(tmp_path)
    assert set(found) == {"echo", "ok"}
    for rows in found.values():
        assert list(rows) == ["raw", "starlette", "wsendpoints"]
        for row in rows.values():
            assert_measured(row)
        assert rows["raw"]["ratios"] == [1.0]
    report = (tmp_path / "RESULTS.md").read_text()
    assert "| **wsendpoints EchoEndpoint** |" in report
    assert "| **wsendpoints OKEndpoint** |" in report
    assert "## wsendpoints against the targets of issue 13 (performance round two)" in report
    assert "| EchoEndpoint round trips vs Starlette WebSocketEndpoint | above it (> 1.00x) |" in report
    assert not (tmp_path / "ratios.png").exists()


def test_benchmarks_render_writes_the_same_report_again(tmp_path: Path) -> None:
    measured = tmp_path / "measured"
    assert run_harness(measured, "--scenarios", "ok", "--peers", "wsendpoints", "--no-chart").returncode == 0
    again = tmp_path / "again"

    done = run_harness(again, "--render", str(measured / "results.json"), "--no-chart")

    assert done.returncode == 0, done.stdout + done.stderr
    assert (again / "RESULTS.md").read_text() == (measured / "RESULTS.md").read_text()
    assert not (again / "results.json").exists()


def test_benchmarks_smoke_measures_rooms(tmp_path: Path) -> None:
    pytest.importorskip("wsendpoints.endpoints.room", reason="RoomEndpoint is not in this tree")

    done = run_harness(tmp_path, "--scenarios", "memory,fanout,slow", "--peers", "wsendpoints", "--no-chart")

    assert done.returncode == 0, done.stdout + done.stderr
    found = scenarios(tmp_path)
    assert set(found) == {"memory", "fanout5", "slow"}
    for key in ("fanout5", "slow"):
        assert list(found[key]) == ["raw", "wsendpoints"]
        for row in found[key].values():
            assert_measured(row)
            assert [sample["stalled"] for sample in row["samples"]] == [False]
    assert list(found["memory"]) == ["raw", "wsendpoints"]
    assert len(found["slow"]["wsendpoints"]["reference"]) == 1
    assert "Slow consumer" in (tmp_path / "RESULTS.md").read_text()


def test_benchmarks_smoke_measures_bursts_against_unbounded_raw_asgi(tmp_path: Path) -> None:
    pytest.importorskip("wsendpoints.endpoints.room", reason="RoomEndpoint is not in this tree")

    done = run_harness(
        tmp_path, "--scenarios", "burst,stuck,deflate", "--peers", "raw-bounded,wsendpoints", "--no-chart"
    )

    assert done.returncode == 0, done.stdout + done.stderr
    found = scenarios(tmp_path)
    assert set(found) == {"burst5x40", "burst12x10", "stuck5x40", "deflate5x40", "deflate12x10"}
    for key in ("burst5x40", "burst12x10"):
        assert list(found[key]) == ["raw", "raw-bounded", "wsendpoints"]
        for row in found[key].values():
            assert_measured(row)
            assert row["clean_only"] is True
            [sample] = row["samples"]
            assert sample["closed"] == 0, row
            assert sample["deliveries"] == int(key[5:].split("x")[0]) * int(key.split("x")[1])
            assert sample["peak_rss"] > 0
        assert found[key]["raw"]["ratios"] == [1.0]
    assert list(found["stuck5x40"]) == ["raw", "wsendpoints"]
    for row in found["stuck5x40"].values():
        assert_measured(row)
        assert [sample["deliveries"] for sample in row["reference"]] == [5 * 40]
    for key in ("deflate5x40", "deflate12x10"):
        assert list(found[key]) == ["raw", "wsendpoints"]
        for row in found[key].values():
            assert_measured(row)
            [compressed], [plain] = row["samples"], row["reference"]
            per_delivery = compressed["wire_bytes"] / compressed["deliveries"]
            assert per_delivery < plain["wire_bytes"] / plain["deliveries"], "permessage-deflate was not negotiated"
    report = (tmp_path / "RESULTS.md").read_text()
    assert "| RoomEndpoint fan-out, 5 members x 40-message bursts, flow control on |" in report
    assert "| permessage-deflate cost, wsendpoints RoomEndpoint, 12 members x 10-message bursts | measured |" in report


@pytest.mark.redis
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_benchmarks_smoke_measures_redis_fanout_across_two_processes(tmp_path: Path) -> None:
    pytest.importorskip("redis", reason="redis-py is not installed")
    pytest.importorskip("wsendpoints.brokers.redis", reason="RedisBroker is not in this tree")

    done = run_harness(tmp_path, "--scenarios", "redis", "--peers", "wsendpoints", "--no-chart")

    assert done.returncode == 0, done.stdout + done.stderr
    rows = scenarios(tmp_path)["redis"]
    assert list(rows) == ["raw", "wsendpoints"]
    for row in rows.values():
        assert_measured(row)


def test_benchmarks_smoke_draws_the_chart(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install -r benchmarks/requirements.txt)")

    done = run_harness(tmp_path, "--scenarios", "ok", "--peers", "wsendpoints")

    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "ratios.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "![Ratios to raw ASGI](ratios.png)" in (tmp_path / "RESULTS.md").read_text()


def test_benchmarks_reject_an_unknown_peer(tmp_path: Path) -> None:
    done = run_harness(tmp_path, "--peers", "nginx")

    assert done.returncode == 2
    assert "unknown peers: nginx" in done.stderr
    assert not (tmp_path / "RESULTS.md").exists()
