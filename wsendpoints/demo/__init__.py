"""The demo app behind `python -m wsendpoints`: a home page, an echo page and a room chat page."""

from __future__ import annotations

from .app import ASCII_NAMES, HEADERS, HOST_ENV, REDIS_URL_ENV, STATIC_FILES, allowed_hosts, create_app

__all__ = ["ASCII_NAMES", "HEADERS", "HOST_ENV", "REDIS_URL_ENV", "STATIC_FILES", "allowed_hosts", "create_app"]
