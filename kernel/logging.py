"""structlog configuration: key=value lines on a terminal, JSON lines when FLEXMARKET_LOG_JSON=1."""

from __future__ import annotations

import logging
import sys
from typing import TextIO, cast

import structlog

from kernel.config import get_settings


class _CurrentStderr:
    """Writes to whatever sys.stderr is at the time of writing: cached loggers must survive the stream
    being swapped (pytest's capture, a daemonising process) instead of keeping a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(participant: str | None = None) -> None:
    settings = get_settings()
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=level, format="%(message)s", force=True)
    renderer = (
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=True,
    )
    for noisy in ("httpx", "httpcore", "pgserver", "alembic"):  # one line per request drowns the useful lines
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if participant:
        structlog.contextvars.bind_contextvars(participant=participant)
