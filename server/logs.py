"""Logging of the server and the policy process: one line per event on stderr, UTC timestamps with the zone.

``text``: ``2026-12-04T03:22:01.123Z INFO server.sessions session set up call-id=... caller=... status=200``.
``json``: one object per line, ``{"time", "level", "logger", "message"}`` plus ``exception`` when there is one, for
log shippers. DEBUG adds one line per SIP message (``server.trace``: direction, peer, Call-ID, start line) but never
a body; whole messages (``server.trace.full``) only with ``--trace``, which works at any level.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

from server.loglimit import RateLimitFilter

__all__ = ["JsonFormatter", "UtcFormatter", "setup_logging"]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _utc(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class UtcFormatter(logging.Formatter):
    """``time level logger message``, the time in UTC with its ``Z``."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_utc(record)} {record.levelname} {record.name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line (a message's own newlines stay inside its string)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {"time": _utc(record), "level": record.levelname, "logger": record.name,
                                   "message": record.getMessage()}
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def setup_logging(level: str = "INFO", fmt: str = "text", *, trace: bool = False,
                  stream: TextIO | None = None) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) in ``fmt`` ("text" or "json"); returns the handler.

    Replaces handlers set up before (a test process may call this twice). ``trace`` logs every SIP message in
    full whatever ``level`` is; without it whole messages stay off even at DEBUG.
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_gamesdk", False):
            root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else UtcFormatter())
    handler._gamesdk = True  # type: ignore[attr-defined]
    # Refusals of outside input are logged, so a flood must not become a flood of lines (server.loglimit).
    handler.addFilter(RateLimitFilter(exempt=("server.trace",)))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    set_trace(trace)
    return handler


def set_trace(on: bool) -> None:
    """Whole SIP messages (and their one-line summaries) in the log, or not, independent of the level."""
    level = logging.DEBUG if on else logging.NOTSET
    logging.getLogger("server.trace").setLevel(level)
    # NOTSET would inherit DEBUG from the root and print bodies at --log-level DEBUG: INFO keeps them off.
    logging.getLogger("server.trace.full").setLevel(logging.DEBUG if on else logging.INFO)
