"""gamesdk/channel/simulator: a seeded network simulator (latency, jitter, loss, duplicates, reorder).

It sits in a driver's send or receive path (or between two cores in tests): ``submit()`` a datagram with
the current time, then ``due(now)`` hands back what the "network" delivers by then. It imports no
``random``: a tiny SplitMix64 generator of its own makes every run with the same seed identical.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from gamesdk.address import Address
from gamesdk.errors import LocalProtocolError

__all__ = ["NetworkSimulator", "SimulatorConfig", "SplitMix64"]

_MASK64 = (1 << 64) - 1


class SplitMix64:
    """SplitMix64 (Steele, Lea, Flood 2014): 64-bit state, passes BigCrush, ten lines."""

    __slots__ = ("_state",)

    def __init__(self, seed: int) -> None:
        self._state = seed & _MASK64

    def next_u64(self) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & _MASK64
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def random(self) -> float:
        """Uniform in [0, 1)."""
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorConfig:
    """What the simulated network does to each datagram. Probabilities are fractions (0.2 = 20 %)."""

    #: One-way base delay, seconds.
    latency_s: float = 0.0
    #: Extra delay drawn uniformly from [0, jitter_s] per datagram (so jitter alone may reorder).
    jitter_s: float = 0.0
    #: Probability that a datagram is dropped.
    loss: float = 0.0
    #: Probability that a datagram is delivered twice (the copy with its own delay).
    duplicate: float = 0.0
    #: Probability that a datagram is held back by ``reorder_delay_s`` so later ones overtake it.
    reorder: float = 0.0
    reorder_delay_s: float = 0.01
    seed: int = 1

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise LocalProtocolError(f"{name} must be a probability in [0, 1], got {value}")
        for name in ("latency_s", "jitter_s", "reorder_delay_s"):
            if getattr(self, name) < 0:
                raise LocalProtocolError(f"{name} must not be negative")


class NetworkSimulator:
    """A one-direction lossy link. Deterministic for a given seed and call sequence."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self._rng = SplitMix64(config.seed)
        self._queue: list[tuple[float, int, bytes, Address]] = []
        self._order = 0
        #: Counters, for tests and for comparing measured loss with the configured one.
        self.submitted = 0
        self.dropped = 0
        self.duplicated = 0
        self.delivered = 0

    def _schedule(self, data: bytes, addr: Address, now: float) -> None:
        cfg = self.config
        delay = cfg.latency_s
        if cfg.jitter_s:
            delay += self._rng.random() * cfg.jitter_s
        if cfg.reorder and self._rng.random() < cfg.reorder:
            delay += cfg.reorder_delay_s
        self._order += 1
        heapq.heappush(self._queue, (now + delay, self._order, data, addr))

    def submit(self, data: bytes, addr: Address, now: float) -> None:
        """Hand a datagram to the link at time ``now``."""
        self.submitted += 1
        cfg = self.config
        if cfg.loss and self._rng.random() < cfg.loss:
            self.dropped += 1
            return
        self._schedule(data, addr, now)
        if cfg.duplicate and self._rng.random() < cfg.duplicate:
            self.duplicated += 1
            self._schedule(data, addr, now)

    def next_time(self) -> float | None:
        """When the next datagram comes out, or ``None`` if the link is empty."""
        return self._queue[0][0] if self._queue else None

    def due(self, now: float) -> list[tuple[bytes, Address]]:
        """Datagrams the link delivers by ``now``, in delivery order."""
        out: list[tuple[bytes, Address]] = []
        queue = self._queue
        while queue and queue[0][0] <= now:
            _, _, data, addr = heapq.heappop(queue)
            out.append((data, addr))
        self.delivered += len(out)
        return out

    def __len__(self) -> int:
        return len(self._queue)
