"""The demo app behind `python -m wsendpoints`: a home page, an echo page and a room chat page."""

from __future__ import annotations

from .app import HEADERS, REDIS_URL_ENV, STATIC_FILES, create_app

__all__ = ["HEADERS", "REDIS_URL_ENV", "STATIC_FILES", "create_app"]
