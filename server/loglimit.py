"""Log lines an attacker cannot inflate: values clipped to a length, and lines rate limited per call site.

Every refusal of outside input is logged (the operator must see it), so a flood of refusals would otherwise be a
flood of log lines, each as long as the user name the attacker chose. :func:`clip` shortens one value;
:class:`RateLimitFilter` lets each call site (logger, message template) log at most ``burst`` lines and then
``per_s`` lines a second, and tells how many it held back in the next line it lets through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitFilter", "clip"]

#: Default longest value in a log line.
MAX_VALUE = 64


def clip(value: object, limit: int = MAX_VALUE) -> str:
    """``repr``-style text of an outside value, at most ``limit`` characters (plus a note of what was cut)."""
    text = value if isinstance(value, str) else str(value)
    text = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    if len(text) > limit:
        return f"{text[:limit]}...({len(value) if isinstance(value, str) else '?'} chars)"
    return text


class RateLimitFilter(logging.Filter):
    """A token bucket per (logger, template): at most ``burst`` lines at once and ``per_s`` a second after that.

    The table of call sites is small by nature (templates are in the code, not in the input) but capped anyway.
    ``clock`` is injectable for tests.
    """

    def __init__(self, per_s: float = 20.0, burst: int = 50, clock: Callable[[], float] = time.monotonic,
                 max_sites: int = 4096, exempt: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.exempt = exempt
        self.per_s = per_s
        self.burst = float(burst)
        self.clock = clock
        self.max_sites = max_sites
        self._sites: dict[tuple[str, object], list[float]] = {}  # -> [tokens, last time, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or record.name.startswith(self.exempt):
            return True  # internal errors (and an operator's --trace) are never held back
        key = (record.name, record.msg)
        now = self.clock()
        site = self._sites.get(key)
        if site is None:
            if len(self._sites) >= self.max_sites:
                self._sites.clear()
            site = self._sites[key] = [self.burst, now, 0.0]
        site[0] = min(self.burst, site[0] + (now - site[1]) * self.per_s)
        site[1] = now
        if site[0] < 1.0:
            site[2] += 1
            return False
        site[0] -= 1.0
        if site[2]:
            record.msg = f"{record.msg} [{int(site[2])} similar lines held back]"
            site[2] = 0.0
        return True
