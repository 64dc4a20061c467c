"""The developer's protocol trace: every SIP message in and out, and every channel event, on one logger.

Switch it on with ``ClientConfig(trace=True)`` or the environment variable ``GAMESDK_TRACE=1`` (as the
server's ``--trace``). Lines go to the ``gamesdk.trace`` logger at INFO; when the application configured no
logging, a stderr handler is added so the trace shows without any setup.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["TRACE_ENV", "enable_trace", "trace_default", "trace_log"]

#: The environment variable that switches the trace on for every client of the process.
TRACE_ENV = "GAMESDK_TRACE"

trace_log = logging.getLogger("gamesdk.trace")


def trace_default() -> bool:
    """True when ``GAMESDK_TRACE`` is set to something other than ``0``/empty."""
    return os.environ.get(TRACE_ENV, "").strip() not in ("", "0", "false", "no")


def enable_trace() -> None:
    """Make the trace visible: INFO on ``gamesdk.trace``, and a stderr handler if logging is unconfigured."""
    trace_log.setLevel(logging.INFO)
    if not trace_log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        trace_log.addHandler(handler)
