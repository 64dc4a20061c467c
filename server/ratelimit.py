"""Token buckets per source address, in a table of bounded size. Pure: ``now`` comes in.

Used for what a stranger can make the server do before it has authenticated: every challenge or refusal costs
the server a response, so each source address gets ``rate`` of them a second after a ``burst``. The key is the
client address (the source IP, or the address a trusted proxy reports for it). The table holds at most
``max_keys`` buckets; when full, the least recently used bucket is forgotten (O(1)), which only ever errs on the
side of letting a request through.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["SourceRateLimiter"]


class SourceRateLimiter:
    """``allow(key, now)`` is True while ``key`` stays within ``rate`` per second after ``burst``."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 20_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, last refill]
        self.refused = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str, now: float) -> bool:
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = [self.burst, now]
            if len(buckets) > self.max_keys:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(key)
            bucket[0] = min(self.burst, bucket[0] + max(0.0, now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] < 1.0:
            self.refused += 1
            return False
        bucket[0] -= 1.0
        return True
