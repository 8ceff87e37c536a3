"""The demo app behind `python -m wsendpoints`."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
