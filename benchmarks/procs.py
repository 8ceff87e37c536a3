"""The processes the harness starts: servers under test and redis-server.

Every process is started in its own session, pinned to the server core where the machine
allows, asked to die with the harness (Linux `PR_SET_PDEATHSIG`), and stopped by `Processes`
on exit, error or Ctrl-C: SIGTERM, then SIGKILL after a grace period. CPU time and memory are
read from `/proc`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = [
    "ROOT",
    "Cores",
    "Process",
    "Processes",
    "ServerSpec",
    "cpu_seconds",
    "fix_malloc",
    "free_port",
    "process_cpu_seconds",
    "rss_bytes",
]

ROOT = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PR_SET_PDEATHSIG = 1
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1


@dataclass(frozen=True, slots=True)
class Cores:
    """Where the servers and the load client run: CPU sets, or None where pinning is not possible."""

    server: frozenset[int] | None
    client: frozenset[int] | None

    @classmethod
    def detect(cls, pin: bool = True) -> Cores:
        """Pin servers to the first allowed core and the client to the others, when there are two or more."""
        if not pin or not hasattr(os, "sched_getaffinity"):
            return cls(None, None)
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) < 2:
            return cls(None, None)
        return cls(frozenset(allowed[:1]), frozenset(allowed[1:]))

    def describe(self) -> str:
        if self.server is None or self.client is None:
            return "not pinned (fewer than 2 cores allowed, or --no-pin)"
        return f"servers on core {sorted(self.server)}, load client on core {sorted(self.client)}"

    def pin_client(self) -> None:
        if self.client is not None:
            os.sched_setaffinity(0, self.client)


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One server process: an ASGI app under uvicorn, or a `websockets` server.

    Attributes:
        key: Short name, unique among the specs of a run.
        kind: "asgi" or "websockets".
        target: "module:attribute" of the app or `serve` function.
        env: Extra environment variables.
    """

    key: str
    kind: str
    target: str
    env: tuple[tuple[str, str], ...] = ()


def cpu_seconds(pid: int) -> float:
    """Return the CPU seconds `pid` has used so far, all its threads.

    From the scheduler's `sum_exec_runtime` (microsecond resolution) where `/proc` has it,
    else from the 10 ms ticks of `/proc/PID/stat`.
    """
    total = 0.0
    found = False
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/task/{task}/sched", "rb") as sched:
                for line in sched:
                    if line.startswith(b"se.sum_exec_runtime"):
                        total += float(line.rpartition(b":")[2]) / 1000
                        found = True
                        break
    if found:
        return total
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rpartition(b")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def process_cpu_seconds() -> float:
    """Return this process's CPU seconds."""
    return time.process_time()


def rss_bytes(pid: int, field: str = "VmRSS:") -> int:
    """Return the resident set size of `pid` (or another size of `/proc/PID/status`, such as its peak)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (for programs that bind it themselves)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _child_setup(cores: frozenset[int] | None) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec
        if cores is not None:
            os.sched_setaffinity(0, cores)
        with contextlib.suppress(Exception):
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return setup


MMAP_THRESHOLD = 1 << 20
TRIM_THRESHOLD = 2 << 20
"""glibc's mmap and trim thresholds, fixed in every process of a run (see `fix_malloc`)."""


def fix_malloc() -> None:
    """Fix glibc's mmap threshold in this process, as `_child_env` does in the servers.

    asyncio reads a socket into a new 256 KiB buffer. Under glibc's dynamic threshold, whether
    that buffer is an mmap/mremap/munmap per read or comes from the heap depends on what the
    process happened to allocate and free before (its imports), which can cost one server a
    third more CPU per message than another doing the same work. A fixed threshold above
    256 KiB takes that accident out of the comparison.
    """
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def _child_env(extra: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
    """The harness's environment, less coverage's subprocess hooks (a traced server is a slow server)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("COVERAGE_")}
    env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    env["MALLOC_TRIM_THRESHOLD_"] = str(TRIM_THRESHOLD)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


@dataclass(eq=False)
class Process:
    """A started process; `port` is where it listens."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def reset_peak_rss(self) -> None:
        """Start the kernel's peak RSS count (`VmHWM`) again from the current RSS, where Linux allows it."""
        with contextlib.suppress(OSError), open(f"/proc/{self.pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")

    def peak_rss(self) -> int:
        """Return the peak RSS since the process started, or since `reset_peak_rss`."""
        return rss_bytes(self.pid, "VmHWM:")

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL (the whole session) if it has not exited after `grace` seconds."""
        if self._stopped:
            return
        self._stopped = True
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(grace)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


class Processes:
    """Starts processes and stops every one of them on exit; use as a context manager."""

    def __init__(self, cores: Cores) -> None:
        self.cores = cores
        self.started: list[Process] = []
        self.logs = Path(tempfile.mkdtemp(prefix="wsendpoints-bench-"))
        self._failed = False

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._failed = exc_type is not None
        self.stop_all()

    def stop_all(self) -> None:
        # SIGTERM to all first, so they shut down together
        for process in self.started:
            if process.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.popen.send_signal(signal.SIGTERM)
        for process in self.started:
            process.stop()
        self.started.clear()
        if self._failed:
            print(f"server logs kept in {self.logs}", file=sys.stderr)
        else:
            shutil.rmtree(self.logs, ignore_errors=True)

    def stop(self, process: Process) -> None:
        process.stop()
        with contextlib.suppress(ValueError):
            self.started.remove(process)

    def start_servers(self, specs: list[ServerSpec], timeout: float = 60.0) -> dict[str, Process]:
        """Start every server in `specs` at once; return them by key once all are ready."""
        pending: list[Process] = []
        for spec in specs:
            # IPPROTO_TCP as asyncio's own create_server has it: accepted sockets inherit the
            # protocol, and asyncio turns Nagle's algorithm off (TCP_NODELAY) only for those.
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(4096)
            port = listener.getsockname()[1]
            log = self.logs / f"{spec.key}.log"
            with listener, open(log, "wb") as log_file:
                popen = subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.serve", spec.kind, spec.target, "--fd", str(listener.fileno())],
                    cwd=ROOT,
                    env=_child_env(spec.env),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=log_file,
                    pass_fds=(listener.fileno(),),
                    start_new_session=True,
                    preexec_fn=_child_setup(self.cores.server),  # the harness has no threads
                )
            process = Process(spec.key, popen, port, log)
            self.started.append(process)
            pending.append(process)
        deadline = time.monotonic() + timeout
        for process in pending:
            self._wait_ready(process, deadline)
        return {process.name: process for process in pending}

    def _wait_ready(self, process: Process, deadline: float) -> None:
        stdout = process.popen.stdout
        assert stdout is not None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{process.name} did not start in time:\n{process.log_tail()}")
            readable, _, _ = select.select([stdout], [], [], min(remaining, 0.5))
            if readable:
                line = stdout.readline()
                if line.strip() == b"READY":
                    return
                if not line:
                    process.popen.wait(5)
                    process.check_alive()
                    raise RuntimeError(f"{process.name} closed its stdout:\n{process.log_tail()}")
            else:
                process.check_alive()

    def start_redis(self, timeout: float = 10.0) -> Process:
        """Start a throwaway redis-server (no persistence) on a free loopback port."""
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            raise FileNotFoundError("redis-server is not installed (Debian package redis-server)")
        for _attempt in range(5):
            port = free_port()
            log = self.logs / f"redis-{port}.log"
            with open(log, "wb") as log_file:
                popen = subprocess.Popen(
                    [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                    cwd=self.logs,
                    env=_child_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_child_setup(self.cores.client),  # the harness has no threads
                )
            process = Process("redis-server", popen, port, log)
            self.started.append(process)
            if _wait_redis(process, time.monotonic() + timeout):
                return process
            self.stop(process)
        raise RuntimeError(f"redis-server did not start:\n{process.log_tail()}")


def _wait_redis(process: Process, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            return False  # most likely the port was taken meanwhile
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", process.port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(64).startswith(b"+PONG"):
                return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into `SystemExit`, so the harness's cleanup runs when it is killed politely."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
