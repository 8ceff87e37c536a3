"""The app of the first server process: `uvicorn tests.multiprocess.app_one:app`."""

from __future__ import annotations

from tests.multiprocess.chat import make_app

__all__ = ["app"]

app = make_app()
