"""Logging setup shared by every process."""

from __future__ import annotations

import logging

from app.settings import Settings


def configure_logging(settings: Settings) -> None:
    """Set our loggers' level; Dramatiq's CLI and uvicorn set up handlers of their own."""
    for name in ("app", "dramatiq", "periodiq"):
        logging.getLogger(name).setLevel(settings.log_level)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
