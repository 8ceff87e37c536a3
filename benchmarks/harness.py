"""`python -m benchmarks`: start the servers, run the scenarios, print and write the results.

Repetitions are interleaved: repetition 1 of every peer, then repetition 2 of every peer
(each starting with a different peer), and so on, so that a change in the machine's load
during the run falls on every peer alike. Ratios are taken repetition by repetition against
the baseline's sample of the same repetition, and the median is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import resource
import shlex
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from .peers import (
    BURST_PEERS,
    DEFLATE_PEERS,
    ECHO_PEERS,
    OK_PEERS,
    PEERS,
    REDIS_PEERS,
    ROOM_PEERS,
    SERVERS,
    Peer,
    missing_packages,
)
from .procs import ROOT, Cores, Process, Processes, fix_malloc, terminate_on_sigterm
from .report import Row, Run, ScenarioResult, environment, load, now, print_table, render, write_results
from .scenarios import Fanout, Sample, Settings, echo_sample, memory_sample, settle

__all__ = ["MODES", "SCENARIOS", "main"]

SCENARIOS = ("memory", "echo", "ok", "fanout", "burst", "slow", "stuck", "deflate", "redis")

MODES: dict[str, Settings] = {
    "full": Settings(reps=7, warmup=1.0, duration=2.0, slow_reps=3, slow_warmup=2.0, slow_duration=2.0),
    "quick": Settings(
        reps=3,
        warmup=0.3,
        duration=0.6,
        slow_reps=2,
        slow_warmup=1.0,
        slow_duration=1.0,
        burst_reps=2,
        deflate_reps=1,
        stuck_reps=1,
    ),
    "smoke": Settings(
        reps=1,
        warmup=0.05,
        duration=0.15,
        echo_clients=3,
        fanout_sizes=(5,),
        slow_reps=1,
        slow_members=4,
        slow_size=256,
        slow_warmup=0.1,
        slow_duration=0.1,
        idle_members=20,
        redis_members=4,
        stall_after=0.5,
        bursts=((5, 40), (12, 10)),
        burst_reps=1,
        deflate_reps=1,
        stuck_reps=1,
        stuck_fill=8,
    ),
}
"""Each mode's sizes and times: "full" (the default, about ten minutes), "quick" (about two), "smoke" (seconds)."""

RUN_ID = f"b{int(time.time()) % 100000}"
"""Prefix of this run's room names."""


def log(message: str) -> None:
    print(message, flush=True)


def describe(sample: Sample, unit: str) -> str:
    """One sample as a progress line."""
    text = f"{sample.value:,.0f} {unit}"
    if sample.server_cpu or sample.client_cpu:
        text += f" (server CPU {sample.server_cpu:.0%}, client CPU {sample.client_cpu:.0%})"
    for count, what in ((sample.lost, "lost"), (sample.errors, "errors"), (sample.closed, "closed by server")):
        if count:
            text += f", {count:,} {what}"
    return text + (", STALLED" if sample.stalled else "")


def rotated(peers: Sequence[Peer], rep: int) -> list[Peer]:
    """`peers` starting at a different one each repetition, so that none is always measured first."""
    shift = rep % len(peers)
    return [*peers[shift:], *peers[:shift]]


def ratios(
    samples: Sequence[Sample], references: Sequence[Sample], clean_only: bool = False
) -> tuple[list[float], list[float]]:
    """Pair `samples` with `references` repetition by repetition: value ratios, and CPU-per-message ratios.

    With `clean_only`, a repetition counts only if both its samples are clean (nothing lost, nobody closed).
    """
    values: list[float] = []
    cpu: list[float] = []
    for sample, reference in zip(samples, references, strict=False):
        if clean_only and not (sample.clean and reference.clean):
            continue
        if reference.value:
            values.append(sample.value / reference.value)
        mine, theirs = sample.cpu_per_op, reference.cpu_per_op
        if mine and theirs:
            cpu.append(theirs / mine)
    return values, cpu


def against_baseline(rows: list[Row]) -> list[Row]:
    """Set each row's ratios against the first row's samples of the same repetitions; return `rows`."""
    for row in rows:
        row.ratios, row.cpu_ratios = ratios(row.samples, rows[0].samples, row.clean_only)
    return rows


class Harness:
    """Runs the scenarios against started servers and keeps their results."""

    def __init__(self, settings: Settings, procs: Processes, selected: dict[str, list[Peer]]) -> None:
        self.settings = settings
        self.procs = procs
        self.selected = selected
        self.servers: dict[str, Process] = {}
        self.results: list[ScenarioResult] = []
        self.seconds: dict[str, float] = {}
        """How long each scenario took, starting its servers aside."""

    def servers_of(self, peer: Peer) -> list[Process]:
        return [self.servers[peer.server]]

    async def scenario(self, name: str, run: Callable[[], Awaitable[ScenarioResult]]) -> None:
        log(f"[{name}]")
        started = time.monotonic()
        self.results.append(await run())
        self.seconds[name] = time.monotonic() - started
        log(f"[{name}] {self.seconds[name]:.0f} s")

    async def memory(self, peers: list[Peer]) -> ScenarioResult:
        """RSS growth per idle room member; once per peer, on servers that have done nothing else yet."""
        members = self.settings.idle_members
        rows = []
        for peer in peers:
            server = self.servers[peer.server]
            sample = await memory_sample(server, lambda i: f"/rooms/{RUN_ID}idle/m{i}", members)
            rows.append(Row(peer, [sample]))
            log(f"  memory {peer.label}: {sample.value / 1024:,.1f} KiB per member")
            await settle([server])
        return ScenarioResult(
            "memory",
            f"Memory per idle member: server RSS growth / {members:,} members in one room",
            "KiB/member",
            "peer / raw ASGI (lower is better)",
            against_baseline(rows),
            short=f"Memory per idle member ({members:,} members), lower is better",
            lower_is_better=True,
            scale=1024,
            latency=False,
            notes=[
                "Measured first, on servers that have served nothing else, after 50 connections opened and "
                "closed; RSS is read once it holds still.",
            ],
        )

    async def echo(self, key: str, peers: list[Peer]) -> ScenarioResult:
        """Closed-loop round trips: `echo_clients` connections with one message in flight each."""
        settings = self.settings
        payload = b"m" * settings.echo_size
        expect = payload if key == "echo" else b"OK!"
        rows = {peer.key: Row(peer) for peer in peers}
        for rep in range(settings.reps):
            for peer in rotated(peers, rep):
                server = self.servers[peer.server]
                sample = await echo_sample(server, peer.path, settings, payload, expect, settings.echo_clients)
                rows[peer.key].samples.append(sample)
                log(f"  {key} rep {rep + 1}/{settings.reps} {peer.label}: {describe(sample, 'round trips/s')}")
                await settle([server])
        job = "each message echoed back" if key == "echo" else 'each message answered with "OK!"'
        return ScenarioResult(
            key,
            f"{'Echo' if key == 'echo' else 'OK'}: round trips/s, {settings.echo_clients} concurrent clients, "
            f"{settings.echo_size}-byte text, {job}",
            "round trips/s",
            "peer / raw ASGI",
            against_baseline([rows[peer.key] for peer in peers]),
            short=f"{'Echo' if key == 'echo' else 'OK'} round trips/s ({settings.echo_clients} clients)",
            notes=["Each client keeps one message in flight; latency is the round trip."],
        )

    async def fanout(
        self,
        key: str,
        title: str,
        short: str,
        members: int,
        peers: list[Peer],
        servers_of: Callable[[Peer], list[Process]],
    ) -> ScenarioResult:
        """Deliveries/s from one sender to `members` receivers; the rooms stay open across repetitions."""
        settings = self.settings
        rows = {peer.key: Row(peer, clean_only=True) for peer in peers}  # runs with a loss do not count
        rooms: list[Fanout] = []
        try:
            by_peer = {}
            for peer in peers:
                room = Fanout(servers_of(peer), f"{RUN_ID}{key}", members, settings, settings.message_size)
                rooms.append(room)
                await room.open()
                by_peer[peer.key] = room
            for rep in range(settings.reps):
                for peer in rotated(peers, rep):
                    sample = await by_peer[peer.key].sample()
                    rows[peer.key].samples.append(sample)
                    log(f"  {key} rep {rep + 1}/{settings.reps} {peer.label}: {describe(sample, 'deliveries/s')}")
                    await settle(servers_of(peer))
        finally:
            for room in rooms:
                await room.close()
        return ScenarioResult(
            key,
            title,
            "deliveries/s",
            "peer / raw ASGI",
            against_baseline([rows[peer.key] for peer in peers]),
            short=short,
            notes=[
                f"The sender keeps {settings.window} messages of {settings.message_size} bytes in flight; a "
                "message is done when every receiver has it. Latency runs from sending to each delivery. "
                "Every receiver checks that it gets every message, in order; *lost* counts what a receiver "
                "never got after the sender stopped and the room drained. The client reads the receivers' "
                f"sockets at most every {settings.read_pace * 1000:g} ms, so latencies have that resolution. "
                "Figures and ratios count only runs where nothing was lost and nobody was closed.",
            ],
        )

    async def _burst_room(self, peer: Peer, name: str, members: int, messages: int, deflate: bool = False) -> Fanout:
        """Open a room of `members` receivers on `peer`'s server, warmed up by one short unmeasured burst."""
        settings = self.settings
        room = Fanout([self.servers[peer.server]], name, members, settings, settings.message_size, deflate=deflate)
        try:
            await room.open()
            await room.burst(min(messages, 100))
        except BaseException:
            await room.close()
            raise
        return room

    async def _bursts(
        self, key: str, peers: list[Peer], members: int, messages: int, modes: Sequence[bool], reps: int
    ) -> dict[str, Row]:
        """Bursts of `messages` into rooms of `members` readers, per peer and deflate mode, interleaved.

        The rooms stay open across repetitions; a room whose burst was not clean (a loss, a close)
        is closed and a new one opened for the next. Samples with compression go to each row's
        `samples` and those without to its `reference` when `modes` has both.
        """
        rows = {peer.key: Row(peer, clean_only=True) for peer in peers}
        rooms: dict[tuple[str, bool], Fanout] = {}
        try:
            for rep in range(reps):
                for peer in rotated(peers, rep):
                    server = self.servers[peer.server]
                    for deflate in modes:
                        room = rooms.get((peer.key, deflate))
                        if room is None:
                            name = f"{RUN_ID}{key}{'d' if deflate else ''}-{rep}"
                            room = rooms[peer.key, deflate] = await self._burst_room(
                                peer, name, members, messages, deflate
                            )
                        sample = await room.burst(messages)
                        row = rows[peer.key]
                        (row.reference if len(modes) > 1 and not deflate else row.samples).append(sample)
                        mode = " with deflate" if deflate else ""
                        log(f"  {key} rep {rep + 1}/{reps} {peer.label}{mode}: {describe(sample, 'deliveries/s')}")
                        if not sample.clean:
                            await rooms.pop((peer.key, deflate)).close()
                        await settle([server])
        finally:
            for room in rooms.values():
                await room.close()
        return rows

    async def burst(self, peers: list[Peer], members: int, messages: int) -> ScenarioResult:
        """One sender's burst of `messages` in a row into a room of `members` readers reading as fast as they can."""
        settings = self.settings
        key = f"burst{members}x{messages}"
        rows = await self._bursts(key, peers, members, messages, (False,), settings.burst_reps)
        return ScenarioResult(
            key,
            f"Bursts: deliveries/s, {members:,} members x {messages:,} messages sent in a row by one member",
            "deliveries/s",
            "peer / raw ASGI with unbounded queues (runs where nothing was lost and nobody closed)",
            against_baseline([rows[peer.key] for peer in peers]),
            short=f"Bursts, {members:,} members x {messages:,} messages",
            latency=False,
            notes=[
                f"The sender writes {messages:,} messages of {settings.message_size} bytes at once; the window "
                "runs from that write until every receiver has the last one. Figures count only runs where "
                "nothing was lost, nothing came out of order and nobody (receivers or sender) was closed; a run "
                f"that delivers nothing for {settings.burst_stall:g} s is given up and what never came is lost. "
                "Each room gets one unmeasured burst of up to 100 messages first; a room whose run was not clean "
                "is replaced.",
                "The baseline is the raw ASGI app with unbounded queues (`BENCH_RAW_MAX_QUEUE=0`): it delivers "
                "everything with no bookkeeping at all, the ceiling. The same app with its queues of 1,024 and no "
                "flow control drops every reader of a burst longer than that. *Server RSS peaked* is the kernel's "
                "high-water mark over the run, against the RSS just before it, and the peak itself (the process "
                "still holds what earlier scenarios left).",
            ],
        )

    async def deflate(self, peers: list[Peer], members: int, messages: int) -> ScenarioResult:
        """The bursts with permessage-deflate negotiated, against the same bursts without, per peer."""
        settings = self.settings
        key = f"deflate{members}x{messages}"
        rows = await self._bursts(key, peers, members, messages, (False, True), settings.deflate_reps)
        ordered = [rows[peer.key] for peer in peers]
        for row in ordered:
            row.ratios, row.cpu_ratios = ratios(row.samples, ordered[0].samples, clean_only=True)
        return ScenarioResult(
            key,
            f"permessage-deflate: deliveries/s, {members:,} members x {messages:,}-message bursts, every "
            "connection compressed",
            "deliveries/s",
            "peer / raw ASGI, both with permessage-deflate (runs where nothing was lost and nobody closed)",
            ordered,
            short=f"Bursts with permessage-deflate, {members:,} x {messages:,}",
            latency=False,
            notes=[
                "Every connection offers permessage-deflate as browsers do (`client_max_window_bits`); uvicorn "
                "accepts it (12-bit windows, `memLevel` 5, context takeover) and compresses each member's copy "
                "separately. The client inflates every message. *Uncompressed* is the same peer's bursts without "
                "the offer, run alternately with these; *bytes per delivery on the wire* are what the receivers "
                "read, frame headers included. The messages are a sequence number and a fixed filler, so they "
                "compress better than chat text.",
            ],
        )

    async def stuck(self, peers: list[Peer], members: int, messages: int) -> ScenarioResult:
        """The others' deliveries/s in a burst while one more member is stuck, against the same burst without it."""
        settings = self.settings
        key = f"stuck{members}x{messages}"
        rows = {peer.key: Row(peer, clean_only=True) for peer in peers}
        for rep in range(settings.stuck_reps):
            for peer in rotated(peers, rep):
                server = self.servers[peer.server]
                row = rows[peer.key]
                for stuck in (False, True):
                    name = f"{RUN_ID}{key}{'s' if stuck else 'n'}-{rep}"
                    room = Fanout(
                        [server], name, members, settings, settings.message_size, slow=True, small_buffer=stuck
                    )
                    try:
                        await room.open()
                        await room.burst(min(messages, 100))
                        if stuck:
                            await room.stick(settings.stuck_fill)
                        sample = await room.burst(messages)
                    finally:
                        await room.close()
                    (row.samples if stuck else row.reference).append(sample)
                    state = "one stuck" if stuck else "none stuck"
                    log(f"  {key} rep {rep + 1}/{settings.stuck_reps} {peer.label}, {state}: {describe(sample, '/s')}")
                    await settle([server])
        ordered = [rows[peer.key] for peer in peers]
        for row in ordered:
            row.ratios, row.cpu_ratios = ratios(row.samples, row.reference, clean_only=True)
        return ScenarioResult(
            key,
            f"Burst with one stuck member: deliveries/s to {members:,} members of a {messages:,}-message burst "
            f"while one more member does not read",
            "deliveries/s",
            "the others' rate / their rate in the same burst with the extra member reading",
            ordered,
            short=f"Burst {members:,} x {messages:,}, one more member stuck / reading",
            latency=False,
            notes=[
                f"Each run opens a room of {members:,} readers and one more member. With it stuck, that member "
                f"has a {settings.slow_rcvbuf:,}-byte receive buffer, stops reading, and "
                f"{settings.stuck_fill} messages of {settings.slow_size:,} bytes fill the buffers between it and "
                "the server before the burst (more than loopback's socket buffers take, so it is stuck when the burst "
                "starts; wsendpoints may drop it before or during the burst); without, it reads like the others, "
                "with the system's default receive buffer. "
                "A run counts only if the "
                "readers lost nothing and nobody but the stuck member was closed. *Server RSS peaked* shows what "
                "the server held for the stuck member.",
            ],
        )

    async def slow(self, peers: list[Peer]) -> ScenarioResult:
        """The others' deliveries/s with one member that stopped reading, against the same room with none."""
        settings = self.settings
        rows = {peer.key: Row(peer) for peer in peers}
        others = settings.slow_members - 1
        for rep in range(settings.slow_reps):
            for peer in rotated(peers, rep):
                server = self.servers[peer.server]
                row = rows[peer.key]
                for stop_reading in (False, True):
                    name = f"{RUN_ID}slow{rep}{'s' if stop_reading else 'n'}"
                    room = Fanout(
                        [server], name, others, settings, settings.slow_size, slow=True, small_buffer=stop_reading
                    )
                    try:
                        await room.open()
                        sample = await room.sample(stop_reading=stop_reading)
                    finally:
                        await room.close()
                    (row.samples if stop_reading else row.reference).append(sample)
                    state = "one stopped reading" if stop_reading else "all reading"
                    log(f"  slow rep {rep + 1}/{settings.slow_reps} {peer.label}, {state}: {describe(sample, '/s')}")
                    await settle([server])
        ordered = [rows[peer.key] for peer in peers]
        for row in ordered:
            row.ratios, row.cpu_ratios = ratios(row.samples, row.reference)
        return ScenarioResult(
            "slow",
            f"Slow consumer: deliveries/s to {others} members while 1 of {settings.slow_members} stops reading "
            f"({settings.slow_size:,}-byte messages)",
            "deliveries/s",
            "the others' rate / their rate in a room of the same peer where every member reads",
            ordered,
            short=f"Slow consumer: the others' rate, 1 of {settings.slow_members} stopped / none stopped",
            notes=[
                f"The stopped member has a {settings.slow_rcvbuf:,}-byte receive buffer and pauses its transport "
                f"once it has joined; the window opens {settings.slow_warmup} s later, when the buffers between "
                f"it and the server are full. *Stalled*: no delivery for {settings.stall_after} s. A stalled "
                "room is not drained, so nothing is counted lost there. *Server RSS* is how much the server "
                "grew over warm-up and window with the member stopped: what piles up for it. In the reference "
                "room the extra member reads with the system's default receive buffer: with 4 KiB it paced the "
                "whole closed loop on TCP's delayed acknowledgements on some runs (raw ASGI 94k/s in one, 175k/s "
                "in the next), so the reference was not a room where everyone keeps up.",
            ],
        )


async def run_local_scenarios(harness: Harness, scenarios: list[str]) -> None:
    """Every scenario but Redis, on one process per server."""
    selected = harness.selected
    rooms = selected["rooms"]
    if "memory" in scenarios and rooms:
        await harness.scenario("memory", lambda: harness.memory(rooms))
    for key in ("echo", "ok"):
        if key in scenarios and selected[key]:
            await harness.scenario(key, lambda key=key: harness.echo(key, selected[key]))  # type: ignore[misc]
    if "fanout" in scenarios and rooms:
        for members in harness.settings.fanout_sizes:

            async def fanout(members: int = members) -> ScenarioResult:
                title = f"Fan-out: deliveries/s, 1 sender and {members:,} receivers in one room"
                short = f"Fan-out deliveries/s ({members:,} receivers)"
                return await harness.fanout(f"fanout{members}", title, short, members, rooms, harness.servers_of)

            await harness.scenario(f"fanout{members}", fanout)
    bursts = selected["burst"]
    if "burst" in scenarios and bursts:
        for members, messages in harness.settings.bursts:
            await harness.scenario(
                f"burst{members}x{messages}",
                lambda members=members, messages=messages: harness.burst(bursts, members, messages),  # type: ignore[misc]
            )
    if "slow" in scenarios and rooms:
        await harness.scenario("slow", lambda: harness.slow(rooms))
    stuck = selected["stuck"]
    if "stuck" in scenarios and stuck:
        members, messages = harness.settings.bursts[0]
        await harness.scenario(f"stuck{members}x{messages}", lambda: harness.stuck(stuck, members, messages))
    compressed = selected["deflate"]
    if "deflate" in scenarios and compressed:
        for members, messages in harness.settings.bursts:
            await harness.scenario(
                f"deflate{members}x{messages}",
                lambda members=members, messages=messages: harness.deflate(compressed, members, messages),  # type: ignore[misc]
            )


def run_redis_scenario(harness: Harness, procs: Processes, peers: list[Peer]) -> None:
    """Two server processes per peer on one redis-server; receivers split between them."""
    redis = procs.start_redis()
    url = f"redis://127.0.0.1:{redis.port}"
    started: dict[str, Process] = {}
    try:
        specs = []
        for peer in peers:
            spec = SERVERS[peer.server]
            env = (*spec.env, ("BENCH_REDIS_URL", url), ("BENCH_BROADCAST_URL", url))
            specs += [dataclasses.replace(spec, key=f"{peer.server}-{half}", env=env) for half in "ab"]
        started = procs.start_servers(specs)
        pairs = {peer.key: [started[f"{peer.server}-a"], started[f"{peer.server}-b"]] for peer in peers}
        members = harness.settings.redis_members

        async def run() -> ScenarioResult:
            title = (
                f"Redis fan-out across two server processes: deliveries/s, 1 sender and {members:,} receivers "
                "(half on each process)"
            )
            short = f"Redis fan-out deliveries/s, two processes ({members:,} receivers)"
            result = await harness.fanout("redis", title, short, members, peers, lambda peer: pairs[peer.key])
            result.notes.append(
                "Both server processes share the server core; redis-server runs on the client's core. Server "
                "CPU is the two server processes together."
            )
            return result

        asyncio.run(harness.scenario("redis", run))
    finally:
        for process in [*started.values(), redis]:
            procs.stop(process)


def select_peers(wanted: set[str] | None) -> tuple[dict[str, list[Peer]], list[str]]:
    """Pick the peers asked for (the baselines always) whose packages import; say why others are left out."""
    families = {
        "echo": ECHO_PEERS,
        "ok": OK_PEERS,
        "rooms": ROOM_PEERS,
        "burst": BURST_PEERS,
        "deflate": DEFLATE_PEERS,
        "stuck": DEFLATE_PEERS,
        "redis": REDIS_PEERS,
    }
    skipped: list[str] = []
    selected: dict[str, list[Peer]] = {}
    for family, peers in families.items():
        chosen: list[Peer] = []
        for peer in peers:
            if wanted is not None and not peer.baseline and peer.key not in wanted:
                continue
            missing = missing_packages(peer)
            if not missing:
                chosen.append(peer)
                continue
            skipped.append(f"{peer.label} ({family}): needs {', '.join(missing)}")
            if peer.baseline:  # no baseline, no ratios: the whole family is left out
                chosen = []
                break
        selected[family] = chosen
    return selected, skipped


def without_notes(argv: list[str]) -> list[str]:
    """`argv` less its `--note` options (the notes have their own section)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--note":
            skip = True
        elif not arg.startswith("--note="):
            kept.append(arg)
    return kept


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Benchmark wsendpoints against its peers; see benchmarks/README.md."
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick", help="about two minutes")
    mode.add_argument("--smoke", action="store_const", dest="mode", const="smoke", help="tiny sizes: seconds (tests)")
    parser.set_defaults(mode="full")
    parser.add_argument("--scenarios", help=f"comma-separated, of: {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--peers", help=f"comma-separated, of: {', '.join(PEERS)} (default: all; raw always runs)")
    parser.add_argument("--reps", type=int, help="repetitions of each measurement (the median is reported)")
    parser.add_argument("--duration", type=float, help="seconds of each measurement window")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="where RESULTS.md goes")
    parser.add_argument("--no-chart", action="store_true", help="do not draw ratios.png")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the servers and the client to cores")
    parser.add_argument("--note", action="append", default=[], help="a line for RESULTS.md's notes (repeatable)")
    parser.add_argument(
        "--render", type=Path, metavar="RESULTS_JSON", help="measure nothing: write RESULTS.md and the chart again"
    )
    args = parser.parse_args(argv)
    for name, choices in (("scenarios", SCENARIOS), ("peers", PEERS)):
        value = getattr(args, name)
        if value is not None:
            items = [item.strip() for item in value.split(",") if item.strip()]
            unknown = sorted(set(items) - set(choices))
            if unknown:
                parser.error(f"unknown {name}: {', '.join(unknown)} (choose from {', '.join(choices)})")
            setattr(args, name, items)
    for name in ("reps", "duration"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name} must be positive, got {value}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        for path in render(load(args.render), args.out, chart=not args.no_chart):
            log(f"wrote {path}")
        return 0
    overrides: dict[str, Any] = {}
    if args.reps is not None:
        overrides.update(reps=args.reps, slow_reps=args.reps, burst_reps=args.reps, deflate_reps=args.reps)
        overrides["stuck_reps"] = args.reps
    if args.duration is not None:
        overrides["duration"] = args.duration
    settings = dataclasses.replace(MODES[args.mode], **overrides)
    scenarios: list[str] = args.scenarios or list(SCENARIOS)
    selected, skipped = select_peers(set(args.peers) if args.peers else None)
    if "redis" in scenarios and selected["redis"] and shutil.which("redis-server") is None:
        selected["redis"] = []
        skipped.append("the Redis scenario: needs redis-server (Debian package redis-server)")
    for reason in skipped:
        log(f"skipping {reason} (pip install -r benchmarks/requirements.txt)")
    fix_malloc()
    cores = Cores.detect(pin=not args.no_pin)
    cores.pin_client()
    largest = max(settings.idle_members, *settings.fanout_sizes, *(members for members, _ in settings.bursts))
    raise_fd_limit(4 * (largest + 500) * len(BURST_PEERS))
    log(f"mode {args.mode}: {cores.describe()}")
    env = environment()
    gc.disable()  # the load client collects between measurements (`settle`), never during one
    started = time.monotonic()
    with terminate_on_sigterm(), Processes(cores) as procs:
        harness = Harness(settings, procs, selected)
        local = [key for key in scenarios if key != "redis"]
        families = ["echo"] * ("echo" in local) + ["ok"] * ("ok" in local)
        families += ["rooms"] * bool({"memory", "fanout", "slow"} & set(local))
        families += [family for family in ("burst", "stuck", "deflate") if family in local]
        needed = sorted({peer.server for family in families for peer in selected[family]})
        if needed:
            log(f"starting {', '.join(needed)}")
            harness.servers = procs.start_servers([SERVERS[key] for key in needed])
            asyncio.run(run_local_scenarios(harness, local))
            for process in harness.servers.values():
                procs.stop(process)
        if "redis" in scenarios and selected["redis"]:
            run_redis_scenario(harness, procs, selected["redis"])
    print_table(harness.results)
    env["loadavg_end"] = environment()["loadavg"]
    settings_rows = {
        "mode": args.mode,
        "repetitions": f"{settings.reps} (slow consumer: {settings.slow_reps}; bursts: {settings.burst_reps}; "
        f"burst with one stuck: {settings.stuck_reps}; deflate: {settings.deflate_reps}), interleaved across peers",
        "bursts": ", ".join(f"{members:,} members x {messages:,} messages" for members, messages in settings.bursts),
        "warm-up / window": f"{settings.warmup} s / {settings.duration} s "
        f"(slow consumer: {settings.slow_warmup} s / {settings.slow_duration} s)",
        "pinning": cores.describe(),
        "uvicorn": "loop=asyncio, http=h11, ws=websockets-sansio, lifespan=on; the rest at its defaults",
        "malloc": "glibc mmap threshold 1 MiB and trim threshold 2 MiB in every process (see benchmarks/README.md)",
        "load client": "one asyncio process, hand-written framing (benchmarks/client.py)",
        "total time": f"{time.monotonic() - started:.0f} s ("
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in harness.seconds.items())
        + ")",
    }
    command = shlex.join(["python", "-m", "benchmarks", *without_notes(argv if argv is not None else sys.argv[1:])])
    run = Run(command, now(), env, settings_rows, harness.results, skipped, args.note)
    for path in write_results(run, args.out, chart=not args.no_chart):
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
