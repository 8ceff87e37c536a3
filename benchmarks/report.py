"""Summaries of the samples: the table, RESULTS.md, results.json and the chart of the ratios."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .peers import Peer
from .procs import ROOT
from .scenarios import Sample

__all__ = [
    "Row",
    "Run",
    "ScenarioResult",
    "Target",
    "environment",
    "load",
    "now",
    "print_table",
    "render",
    "targets",
    "write_results",
]

ISSUES = {13: "performance round two", 10: "flow control"}
"""The issues whose targets RESULTS.md checks, in the order of its tables."""

PACKAGES = ("uvicorn", "starlette", "fastapi", "websockets", "broadcaster", "redis", "anyio", "wsendpoints")


@dataclass
class Row:
    """One peer in one scenario: its samples, one per repetition, and the ratio of each."""

    peer: Peer
    samples: list[Sample] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    cpu_ratios: list[float] = field(default_factory=list)
    """Per repetition: the reference's server CPU per message / this peer's (higher is leaner)."""
    reference: list[Sample] = field(default_factory=list)
    """Slow consumer: the same peer's samples without the stopped reader; deflate: without compression."""
    clean_only: bool = False
    """Whether its figures count only the clean samples (nothing lost, nobody closed: fan-out and bursts)."""

    @property
    def counted(self) -> list[Sample]:
        """The samples its figures come from: all, or with `clean_only` the clean ones."""
        return [sample for sample in self.samples if sample.clean] if self.clean_only else self.samples

    @property
    def cpu_ratio(self) -> float | None:
        return statistics.median(self.cpu_ratios) if self.cpu_ratios else None

    @property
    def cpu_per_op(self) -> float | None:
        return _cpu_per_op(self.counted)

    @property
    def value(self) -> float:
        counted = self.counted
        return statistics.median(sample.value for sample in counted) if counted else 0.0

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    def median_of(self, attribute: str, samples: list[Sample] | None = None) -> float | None:
        values = [getattr(sample, attribute) for sample in (self.counted if samples is None else samples)]
        present = [value for value in values if value is not None]
        return statistics.median(present) if present else None

    def to_json(self) -> dict[str, Any]:
        return {
            "peer": dataclasses.asdict(self.peer),
            "samples": [dataclasses.asdict(sample) for sample in self.samples],
            "reference": [dataclasses.asdict(sample) for sample in self.reference],
            "ratios": self.ratios,
            "cpu_ratios": self.cpu_ratios,
            "clean_only": self.clean_only,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        peer = Peer(**{**data["peer"], "requires": tuple(data["peer"]["requires"])})
        return cls(
            peer,
            [Sample(**sample) for sample in data["samples"]],
            data["ratios"],
            data["cpu_ratios"],
            [Sample(**sample) for sample in data["reference"]],
            data.get("clean_only", False),
        )

    @property
    def lost(self) -> int:
        return sum(sample.lost for sample in self.samples)

    @property
    def errors(self) -> int:
        return sum(sample.errors for sample in self.samples)

    @property
    def stalled(self) -> int:
        return sum(sample.stalled for sample in self.samples)

    @property
    def closed(self) -> int:
        return sum(sample.closed for sample in self.samples)


def _cpu_per_op(samples: list[Sample]) -> float | None:
    values = [value for sample in samples if (value := sample.cpu_per_op) is not None]
    return statistics.median(values) if values else None


@dataclass
class ScenarioResult:
    """One scenario's rows, the first being the baseline.

    Attributes:
        key: "echo", "fanout100", ...
        title: What it measures, for the table's heading.
        unit: Unit of `Row.value` in the table.
        ratio: What the ratio column is.
        lower_is_better: True for memory.
        scale: Divides `Row.value` for display (1024 to show bytes as KiB).
    """

    key: str
    title: str
    unit: str
    ratio: str
    rows: list[Row]
    short: str = ""
    """The title on the chart."""
    lower_is_better: bool = False
    scale: float = 1.0
    latency: bool = True
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "rows"}
        return {**fields, "rows": [row.to_json() for row in self.rows]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScenarioResult:
        return cls(**{**data, "rows": [Row.from_json(row) for row in data["rows"]]})


@dataclass(frozen=True, slots=True)
class Target:
    """One of the issues' targets for wsendpoints, and whether this run met it (None: nothing to meet)."""

    name: str
    wanted: str
    measured: str
    met: bool | None
    issue: int = 13


def _fmt_number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _fmt_range(values: list[float]) -> str:
    if len(values) < 2:
        return "-"
    return f"{min(values):.2f}-{max(values):.2f}"


def _fmt_cpu(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _is_burst(result: ScenarioResult) -> bool:
    return result.key.startswith(("burst", "deflate", "stuck"))


def _burst_notes(result: ScenarioResult, row: Row) -> list[str]:
    """Bursts: which runs were clean, what the server's memory peaked at; deflate: what compression cost."""
    notes = []
    unclean = [sample for sample in row.samples if not sample.clean]
    if not unclean:
        notes.append("nothing lost, nobody closed")
    else:
        lost, closed = sum(s.lost for s in unclean), sum(s.closed for s in unclean)
        text = f"{len(unclean)} of {len(row.samples)} runs lost {lost:,}, {closed:,} closed"
        if any(s.errors for s in unclean):
            text += f", {sum(s.errors for s in unclean):,} out of order"
        if any(s.stalled for s in unclean):
            text += ", gave up"
        notes.append(text)
    peak, growth = row.median_of("peak_rss", row.samples), row.median_of("rss_growth", row.samples)
    if peak:
        notes.append(f"server RSS peaked {growth / 2**20:+,.1f} MiB over the run, at {peak / 2**20:,.0f} MiB")
    if result.key.startswith("stuck") and row.reference:
        normal = row.median_of("value", [sample for sample in row.reference if sample.clean])
        notes.append(f"without it: {normal:,.0f}/s" if normal else "no clean run without it")
    if result.key.startswith("deflate") and row.reference:
        plain = [sample for sample in row.reference if sample.clean]
        off, on = _cpu_per_op(plain), row.cpu_per_op
        if off and on:
            notes.append(f"uncompressed: {off:.2f} µs; compression costs {on - off:+.2f} µs/delivery ({on / off:.2f}x)")
        wire_off, wire_on = _wire_per_delivery(plain), _wire_per_delivery(row.counted)
        if wire_off and wire_on:
            notes.append(f"bytes per delivery on the wire {wire_off:.1f} -> {wire_on:.1f}")
    return notes


def _wire_per_delivery(samples: list[Sample]) -> float | None:
    values = [sample.wire_bytes / sample.deliveries for sample in samples if sample.deliveries]
    return statistics.median(values) if values else None


def _row_notes(result: ScenarioResult, row: Row) -> str:
    notes = []
    reps = len(row.samples)
    burst = _is_burst(result)
    if burst:
        notes += _burst_notes(result, row)
    elif result.key.startswith(("fanout", "slow", "redis")) and not row.stalled:
        notes.append(f"{row.lost:,} lost" if row.lost else "nothing lost")
    if row.stalled and not burst:
        notes.append(f"stalled in {row.stalled}/{reps}")
    if row.errors and not burst:
        notes.append(f"{row.errors:,} errors")
    if row.closed and not burst:
        notes.append(f"{row.closed} closed by server")
    server_cpu = row.median_of("server_cpu")
    waits = burst or result.key == "memory"  # a burst's server waits on its readers now and then, even when idle
    if not waits and server_cpu is not None and server_cpu < 0.85 and not row.stalled:
        notes.append("server under 85% busy: disturbed, or waiting")
    client_cpu = row.median_of("client_cpu")
    if result.key != "memory" and client_cpu is not None and client_cpu >= 0.85:
        notes.append("client over 85% busy: the row may understate the server")
    if row.reference and result.key == "slow":
        normal = statistics.median(sample.value for sample in row.reference)
        notes.append(f"without it: {normal:,.0f}/s")
        growth = statistics.median(sample.rss_growth for sample in row.samples) / 2**20
        notes.append(f"server RSS {growth:+,.1f} MiB while it stopped")
    return "; ".join(notes)


def table_lines(result: ScenarioResult) -> list[str]:
    """The Markdown table of one scenario."""
    head = ["peer", result.unit, "ratio", "range"]
    if result.key != "memory":
        head += ["server CPU µs/msg", "CPU ratio"]
    if result.latency:
        head += ["p50 µs", "p99 µs"]
    if result.key != "memory":
        head += ["server CPU", "client CPU"]
    head += ["notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|"]
    for row in result.rows:
        cells = [
            f"**{row.peer.label}**" if row.peer.ours else row.peer.label,
            _fmt_number(row.value / result.scale, 1 if result.scale != 1 else 0) if row.counted else "no clean run",
            _fmt_ratio(row.ratio),
            _fmt_range(row.ratios),
        ]
        if result.key != "memory":
            cells += [_fmt_number(row.cpu_per_op, 2 if _is_burst(result) else 1), _fmt_ratio(row.cpu_ratio)]
        if result.latency:
            cells += [_fmt_number(row.median_of("p50_us")), _fmt_number(row.median_of("p99_us"))]
        if result.key != "memory":
            cells += [_fmt_cpu(row.median_of("server_cpu")), _fmt_cpu(row.median_of("client_cpu"))]
        cells.append(_row_notes(result, row))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def print_table(results: list[ScenarioResult]) -> None:
    for result in results:
        print(f"\n{result.title}\n  ratio: {result.ratio}")
        for line in table_lines(result):
            print("  " + line)


# targets


def _paired(mine: list[Sample], theirs: list[Sample], clean_only: bool = False) -> tuple[float | None, float | None]:
    """Median ratios of `mine` to `theirs`, repetition by repetition: of the values, and of CPU efficiency.

    With `clean_only`, a repetition counts only if both samples of it are clean.
    """
    pairs = [(a, b) for a, b in zip(mine, theirs, strict=False) if not clean_only or (a.clean and b.clean)]
    values = [a.value / b.value for a, b in pairs if b.value]
    cpu = [b.cpu_per_op / a.cpu_per_op for a, b in pairs if a.cpu_per_op is not None and b.cpu_per_op is not None]
    return (statistics.median(values) if values else None, statistics.median(cpu) if cpu else None)


def _both(value: float | None, cpu: float | None, at_least: float, above: bool = False) -> tuple[str, bool | None]:
    """Show a throughput ratio with its CPU ratio; met only if both reach `at_least` (or pass it, with `above`)."""
    if value is None:
        return "-", None
    digits = 3 if above else 2  # "above 1.00x" must not read 1.00x when it is 0.996x

    def fmt(ratio: float) -> str:
        return f"{ratio:.{digits}f}x"

    shown = fmt(value) + (f" (CPU {fmt(cpu)})" if cpu is not None else "")

    def reaches(ratio: float) -> bool:
        return ratio > at_least if above else ratio >= at_least

    return shown, reaches(value) and (cpu is None or reaches(cpu))


def _clean_runs(row: Row) -> str:
    """How many of a burst row's runs were clean, and what the others lost."""
    clean = len(row.counted)
    text = f"{clean} of {len(row.samples)} runs clean"
    lost, closed = row.lost, row.closed
    if lost or closed:
        text += f" ({lost:,} lost, {closed:,} closed)"
    return text


def _burst_target(row: Row, at_least: float) -> tuple[str, bool]:
    """A burst row's ratio against `at_least`: met only if every run was clean, too."""
    shown, met = _both(row.ratio, row.cpu_ratio, at_least)
    clean = len(row.counted) == len(row.samples) > 0
    return ("no clean run" if shown == "-" else shown) + f"; {_clean_runs(row)}", bool(met) and clean


def targets(results: list[ScenarioResult]) -> list[Target]:
    """Check wsendpoints against the targets of issues 13 and 10, for the scenarios that ran.

    A throughput target counts as met only when the CPU ratio (server CPU per message) reaches
    it too: on a busy machine one repetition can get more of the core than another, and the
    throughput ratio then says more about the machine than about the peers. Fan-out and burst
    figures count only runs where nothing was lost and nobody was closed.
    """
    by_key = {result.key: result for result in results}
    found: list[Target] = []

    def row_of(key: str, match: Callable[[Peer], bool]) -> Row | None:
        result = by_key.get(key)
        return None if result is None else next((row for row in result.rows if match(row.peer)), None)

    def ours(key: str) -> Row | None:
        return row_of(key, lambda peer: peer.ours)

    def peer(key: str, name: str) -> Row | None:
        return row_of(key, lambda other: other.key == name)

    for key, name in (("echo", "EchoEndpoint round trips"), ("ok", "OKEndpoint round trips")):
        row = ours(key)
        if row is None or row.ratio is None:
            continue
        shown, met = _both(row.ratio, row.cpu_ratio, 0.95)
        found.append(Target(name, ">= 0.95x raw ASGI", shown, met, 13))
        starlette = peer(key, "starlette")
        if starlette is not None:
            shown, met = _both(*_paired(row.samples, starlette.samples), 1.0, above=True)
            found.append(Target(f"{name} vs {starlette.peer.label}", "above it (> 1.00x)", shown, met, 13))
    for key in sorted((key for key in by_key if key.startswith("burst")), key=_burst_order):
        row = ours(key)
        if row is None:
            continue
        shown, met = _burst_target(row, 0.95)
        size = _burst_size(key)
        found.append(
            Target(
                f"RoomEndpoint fan-out, {size}, flow control on",
                ">= 0.95x raw ASGI (unbounded queues); nothing lost, nobody closed",
                shown,
                met,
                13,
            )
        )
    for key in sorted((key for key in by_key if key.startswith("fanout")), key=lambda k: int(k[6:])):
        row = ours(key)
        if row is None or row.ratio is None:
            continue
        members = int(key[6:])
        wanted = {100: 0.90, 1000: 0.88}.get(members, 0.90)
        clean = all(sample.clean for sample in row.samples)
        shown, met = _both(row.ratio, row.cpu_ratio, wanted)
        found.append(
            Target(
                f"RoomEndpoint fan-out with flow control, {members:,} members (closed loop)",
                f">= {wanted:.2f}x raw ASGI, nothing lost",
                shown + ("" if clean else f"; {_row_notes(by_key[key], row)}"),
                bool(met) and clean,
                10,
            )
        )
    row = ours("slow")
    if row is not None and row.ratio is not None:
        shown, met = _both(row.ratio, row.cpu_ratio, 0.95)
        found.append(
            Target(
                "one stuck member: the others' rate",
                ">= 0.95x of the room without it; no stall, nothing lost",
                shown + (f"; stalled in {row.stalled}" if row.stalled else "; no stall"),
                bool(met) and not row.stalled and row.lost == 0,
                13,
            )
        )
    row = ours("memory")
    if row is not None and row.ratio is not None:
        found.append(
            Target("memory per idle member", "<= 1.15x raw ASGI", _fmt_ratio(row.ratio), row.ratio <= 1.15, 13)
        )
    row = ours("redis")
    if row is not None:
        ceiling, _ = _both(row.ratio, row.cpu_ratio, 0.0)
        broadcaster = peer("redis", "broadcaster")
        if broadcaster is not None:
            shown, met = _both(*_paired(row.samples, broadcaster.samples, clean_only=True), 1.25)
            shown += f"; ceiling: {ceiling} of raw ASGI + redis-py"
        else:
            shown, met = f"(broadcaster not measured); ceiling: {ceiling} of raw ASGI + redis-py", None
        found.append(Target("Redis fan-out, two processes, vs broadcaster's Redis backend", ">= 1.25x", shown, met, 13))
    for key in sorted((key for key in by_key if key.startswith("stuck")), key=_burst_order):
        row = ours(key)
        if row is None:
            continue
        shown, met = _burst_target(row, 0.90)
        found.append(
            Target(
                f"one stuck member in {_burst_size(key)}: the others' rate",
                ">= 0.90x of the same burst without it; nothing lost, no reader closed",
                shown,
                met,
                10,
            )
        )
    for key in sorted((key for key in by_key if key.startswith("deflate")), key=_burst_order):
        size = _burst_size(key)
        for row in by_key[key].rows:
            on, off = row.cpu_per_op, _cpu_per_op([s for s in row.reference if s.clean])
            if on is None or off is None:
                continue
            shown = f"{off:.2f} -> {on:.2f} µs server CPU per delivery ({on - off:+.2f} µs, {on / off:.2f}x)"
            wire_off, wire_on = (
                _wire_per_delivery([s for s in row.reference if s.clean]),
                _wire_per_delivery(row.counted),
            )
            if wire_off and wire_on:
                shown += f"; {wire_off:.1f} -> {wire_on:.1f} bytes per delivery on the wire"
            found.append(Target(f"permessage-deflate cost, {row.peer.label}, {size}", "measured", shown, None, 13))
    return found


def _burst_order(key: str) -> tuple[int, int]:
    """(members, messages) of a burst scenario's key, "burst100x2000" or "deflate100x2000"."""
    found = re.fullmatch(r"[a-z]+(\d+)x(\d+)", key)
    if found is None:
        raise ValueError(f"not a burst scenario: {key!r}")
    return int(found[1]), int(found[2])


def _burst_size(key: str) -> str:
    members, messages = _burst_order(key)
    return f"{members:,} members x {messages:,}-message bursts"


# environment


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def environment() -> dict[str, Any]:
    """Machine, versions and load, for RESULTS.md."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem = next((line.split()[1] for line in _read("/proc/meminfo").splitlines() if line.startswith("MemTotal")), "")
    versions: dict[str, str] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    redis_server = shutil.which("redis-server")
    if redis_server:
        try:
            out = subprocess.run([redis_server, "--version"], capture_output=True, text=True, timeout=10, check=False)
            versions["redis-server"] = next(
                (word[2:] for word in out.stdout.split() if word.startswith("v=")), out.stdout.strip()
            )
        except (OSError, subprocess.SubprocessError):
            pass
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem) / 1024 / 1024, 1) if mem.isdigit() else None,
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        "versions": versions,
        "commit": (commit + (" with uncommitted changes" if dirty else "")) if commit else "unknown",
        "loadavg": _read("/proc/loadavg").split()[:3],
    }


# output


@dataclass
class Run:
    """Everything a run produced: what `results.json` holds and `RESULTS.md` shows."""

    command: str
    measured_at: str
    environment: dict[str, Any]
    settings: dict[str, Any]
    results: list[ScenarioResult]
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "results"}
        return {"format": 1, **fields, "results": [result.to_json() for result in self.results]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        fields = {name: value for name, value in data.items() if name not in ("format", "results", "targets")}
        return cls(**fields, results=[ScenarioResult.from_json(result) for result in data["results"]])


def markdown(run: Run, chart: str | None, chart_note: str = "") -> str:
    """The text of RESULTS.md."""
    env = run.environment
    lines = [
        "# Benchmark results",
        "",
        f"Measured {run.measured_at} with `{run.command}` on commit {env['commit']}.",
        "Ratios are against the raw ASGI baseline measured in the same run, paired repetition by repetition",
        "(the median of the per-repetition ratios; *range* is the lowest and highest of them). *CPU ratio*",
        "compares server CPU per message the same way; it does not depend on how much of its core a server",
        "got, so on a busy machine it is the steadier of the two. See `benchmarks/README.md`.",
        "",
    ]
    if chart is not None:
        lines += [f"![Ratios to raw ASGI]({chart})", ""]
    elif chart_note:
        lines += [chart_note, ""]
    found = targets(run.results)
    for issue, what in ISSUES.items():
        mine = [target for target in found if target.issue == issue]
        if not mine:
            continue
        lines += [
            f"## wsendpoints against the targets of issue {issue} ({what})",
            "",
            "Throughput targets count as met only when the CPU ratio reaches them too; fan-out and burst",
            "figures count only runs where nothing was lost and nobody was closed.",
            "",
            "| target | wanted | measured | met |",
            "|---|---|---|---|",
        ]
        for target in mine:
            met = "-" if target.met is None else ("yes" if target.met else "**no**")
            lines.append(f"| {target.name} | {target.wanted} | {target.measured} | {met} |")
        lines.append("")
    lines += ["## Results", ""]
    for result in run.results:
        lines += [f"### {result.title}", "", f"Ratio: {result.ratio}.", ""]
        lines += table_lines(result)
        lines += [""] + [f"- {note}" for note in result.notes] + ([""] if result.notes else [])
    lines += [
        "## Machine and versions",
        "",
        f"- CPU: {env['cpu']}, {env['cores']} cores; {env['memory_gib']} GiB memory; {env['os']}",
        f"- Load average (1, 5, 15 min) when the run started: {' '.join(env['loadavg'])}; when it ended: "
        + " ".join(env.get("loadavg_end", [])),
        "- " + ", ".join(f"{name} {version}" for name, version in env["versions"].items()),
        "",
        "## Settings",
        "",
    ]
    lines += [f"- {name}: {value}" for name, value in run.settings.items()]
    notes = [*run.notes, *(f"Skipped: {skip}" for skip in run.skipped)]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def render(run: Run, out: Path, chart: bool) -> list[Path]:
    """Write RESULTS.md and (with matplotlib) ratios.png into `out`; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    chart_note = ""
    if chart:
        try:
            draw_chart(run.results, out / "ratios.png")
            written.append(out / "ratios.png")
        except ImportError:
            chart_note = "No chart: matplotlib is not installed (`pip install -r benchmarks/requirements.txt`)."
    results_md = out / "RESULTS.md"
    results_md.write_text(markdown(run, "ratios.png" if written else None, chart_note))
    return [results_md, *written]


def write_results(run: Run, out: Path, chart: bool) -> list[Path]:
    """Write results.json, RESULTS.md and (with matplotlib) ratios.png into `out`; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    results_json = out / "results.json"
    data = run.to_json()
    data["targets"] = [dataclasses.asdict(target) for target in targets(run.results)]
    results_json.write_text(json.dumps(data, indent=1) + "\n")
    return [*render(run, out, chart), results_json]


def load(path: Path) -> Run:
    """Read a run back from its results.json."""
    return Run.from_json(json.loads(path.read_text()))


def now() -> str:
    return f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"


def draw_chart(results: list[ScenarioResult], path: Path) -> None:
    """Draw each scenario's ratios as horizontal bars, ours highlighted; ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [result for result in results if any(row.ratio is not None for row in result.rows)]
    if not shown:
        return
    heights = [0.6 + 0.32 * len(result.rows) for result in shown]
    figure, axes = plt.subplots(
        len(shown), 1, figsize=(8.5, sum(heights) + 0.6), gridspec_kw={"height_ratios": heights}, squeeze=False
    )
    for axis, result in zip(axes[:, 0], shown, strict=True):
        rows = [row for row in result.rows if row.ratio is not None]
        ratios = [row.ratio or 0.0 for row in rows]
        low = [ratio - min(row.ratios) for ratio, row in zip(ratios, rows, strict=True)]
        high = [max(row.ratios) - ratio for ratio, row in zip(ratios, rows, strict=True)]
        colors = ["#d95f02" if row.peer.ours else ("#7f7f7f" if row.peer.baseline else "#1b9e77") for row in rows]
        positions = list(range(len(rows)))[::-1]
        axis.barh(positions, ratios, color=colors, xerr=[low, high], ecolor="#555555", capsize=2, height=0.7)
        cpu = [(position, row.cpu_ratio) for position, row in zip(positions, rows, strict=True) if row.cpu_ratio]
        if cpu:
            axis.plot([c for _, c in cpu], [p for p, _ in cpu], "D", color="black", markersize=3.5, label="CPU ratio")
        axis.set_yticks(positions, [row.peer.label for row in rows], fontsize=8)
        axis.axvline(1.0, color="#333333", linewidth=0.8)
        axis.axvline(1.15 if result.lower_is_better else 0.95, color="#d95f02", linewidth=0.8, linestyle="--")
        right = max([*ratios, *(max(row.ratios) for row in rows), *(c for _, c in cpu)])
        for position, ratio, row in zip(positions, ratios, rows, strict=True):
            text = f"{ratio:.2f}x" + (f" (CPU {row.cpu_ratio:.2f}x)" if row.cpu_ratio else "")
            axis.text(max(ratio, max(row.ratios)) + right * 0.01, position, text, va="center", fontsize=7)
        axis.set_title(result.short or result.key, fontsize=9, loc="left")
        axis.tick_params(axis="x", labelsize=8)
        axis.set_xlim(0, max(1.3, right * 1.3))
    figure.suptitle(
        "wsendpoints and its peers: throughput ratios to raw ASGI in the same run\n"
        "(bars: median, whiskers: range over repetitions; diamonds: CPU ratio; dashed: the target)",
        fontsize=9,
    )
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (sum(heights) + 0.6)))
    figure.savefig(path, dpi=110)
    plt.close(figure)
