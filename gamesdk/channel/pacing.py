"""gamesdk/channel/pacing: the token bucket that keeps the channel inside its negotiated bandwidth.

The bucket fills at the agreed rate (the peer's ``b=AS``, what its region reserved for the downlink) up to
``burst`` bytes. A data packet may leave while the bucket holds a positive balance and is charged after it
is built, so one packet of debt is possible; control packets (acks, keepalives, CLOSE) are charged but never
held, since holding them would only make the peer resend more. Over any interval ``t`` the channel sends at
most ``rate * t + burst + one datagram`` bytes.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """Bytes-per-second token bucket on the caller's clock (sans-IO: ``now`` is passed in)."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate_bytes_s: float, burst_bytes: float, now: float) -> None:
        if rate_bytes_s <= 0 or burst_bytes <= 0:
            raise ValueError("rate and burst must be positive")
        #: Fill rate, bytes per second.
        self.rate = rate_bytes_s
        #: Largest balance, bytes.
        self.burst = burst_bytes
        self._tokens = burst_bytes
        self._last = now

    def _refill(self, now: float) -> float:
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
        return self._tokens

    def may_send(self, now: float) -> bool:
        """True while the balance is positive (a packet may leave now)."""
        return self._refill(now) > 0

    def charge(self, size: int, now: float) -> None:
        """Account for ``size`` bytes sent at ``now`` (the balance may go negative by one packet)."""
        self._refill(now)
        self._tokens -= size

    def ready_at(self, now: float) -> float:
        """When the balance is positive again (``now`` if it already is)."""
        tokens = self._refill(now)
        return now if tokens > 0 else now + (-tokens + 1) / self.rate
