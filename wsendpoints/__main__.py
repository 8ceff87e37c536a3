"""`python -m wsendpoints`: serve the demo app with uvicorn.

Rooms live in the process by default (`MemoryBroker`). `--redis URL` shares them through Redis
(`RedisBroker`), which is what makes `--workers N` one set of rooms: the URL reaches each worker
through the environment variable `WSENDPOINTS_REDIS_URL`, read by `wsendpoints.demo.create_app`.

uvicorn runs with `wsendpoints.serving.uvicorn_settings()`: `WebSocketProtocol` (a peer that stops
reading loses its socket within seconds of being closed), `ws_max_size` at the largest message the
demo's endpoints accept, keepalive pings, `limit_concurrency` and a bounded graceful shutdown.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence

from .demo import HOST_ENV, REDIS_URL_ENV, create_app

__all__ = ["main", "parse_args"]


def _workers(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {count}")
    return count


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line of `python -m wsendpoints`.

    Exits with status 2 and a message on bad arguments, among them `--workers` over 1 without
    `--redis`: each worker would then have rooms of its own.
    """
    parser = argparse.ArgumentParser(prog="python -m wsendpoints", description="Serve the wsendpoints demo.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: %(default)s)")
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=os.environ.get(REDIS_URL_ENV) or None,
        help=(
            "share the rooms through the Redis server at URL, e.g. redis://127.0.0.1:6379/0 "
            f"(default: ${REDIS_URL_ENV}; if unset, rooms live in the process)"
        ),
    )
    parser.add_argument(
        "--workers", type=_workers, default=1, metavar="N", help="uvicorn worker processes; over 1 needs --redis"
    )
    args = parser.parse_args(argv)
    if args.workers > 1 and not args.redis:
        parser.error(
            f"--workers {args.workers} needs --redis URL: without Redis each worker process would have "
            "rooms of its own, and members on different workers would never see each other"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the demo until interrupted; return the exit status."""
    args = parse_args(argv)
    try:
        import uvicorn

        from .serving import uvicorn_settings
    except ImportError:
        print('The demo needs uvicorn 0.35+ and websockets: pip install "wsendpoints[demo]"', file=sys.stderr)
        return 2
    if args.redis:
        if importlib.util.find_spec("redis") is None:
            print('--redis needs redis-py: pip install "wsendpoints[redis]"', file=sys.stderr)
            return 2
        os.environ[REDIS_URL_ENV] = args.redis
    else:
        os.environ.pop(REDIS_URL_ENV, None)
    os.environ[HOST_ENV] = args.host  # create_app answers only requests addressed to this host
    # --- serving settings (wsendpoints.serving): measured on a throwaway app, since each worker builds its own.
    settings = uvicorn_settings(create_app(redis_url=""))
    # --- end of serving settings
    uvicorn.run(
        "wsendpoints.demo:create_app", factory=True, host=args.host, port=args.port, workers=args.workers, **settings
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
