"""The app of the second server process: `uvicorn tests.multiprocess.app_two:app`."""

from __future__ import annotations

from tests.multiprocess.chat import make_app

__all__ = ["app"]

app = make_app()
