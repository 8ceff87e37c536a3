"""`python -m wsendpoints`: serve the demo app with uvicorn."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line of `python -m wsendpoints`."""
    parser = argparse.ArgumentParser(prog="python -m wsendpoints", description="Serve the wsendpoints demo.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the demo until interrupted; return the exit status."""
    args = parse_args(argv)
    try:
        import uvicorn
    except ImportError:
        print('The demo needs uvicorn: pip install "wsendpoints[demo]"', file=sys.stderr)
        return 2
    uvicorn.run("wsendpoints.demo:create_app", factory=True, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
