"""gamesdk/channel/qos_monitor: per-interval rates and loss, and the negotiated-QoS watch.

Once per ``stats_interval_s`` the channel hands its counters to ``IntervalMeter.tick`` (rates and loss of
the interval just ended) and, while established, the measures to ``QosMonitor.check``, which reports a
bound broken for longer than ``qos_grace_s`` once (``QosViolation``) and its return (``QosRestored``).
"""

from __future__ import annotations

from gamesdk.channel.config import ChannelConfig
from gamesdk.channel.events import ChannelEvent, QosRestored, QosViolation

__all__ = ["IntervalMeter", "QosMonitor"]


class IntervalMeter:
    """Rates and loss over the last complete interval, from cumulative counters."""

    __slots__ = (
        "_base",
        "_start",
        "kbps_in",
        "kbps_out",
        "loss_in",
        "loss_out",
        "next_tick",
        "pps_in",
        "pps_out",
    )

    def __init__(self, now: float, interval_s: float) -> None:
        self._start = now
        self.next_tick = now + interval_s
        # packets in/out, bytes in/out, highest pn received, our packets lost/acked
        self._base = (0, 0, 0, 0, -1, 0, 0)
        self.pps_in = self.pps_out = self.kbps_in = self.kbps_out = 0.0
        #: Fraction of the peer's packets missing (gaps in its packet numbers) in the interval.
        self.loss_in = 0.0
        #: Fraction of our packets settled in the interval that were lost.
        self.loss_out = 0.0

    def tick(self, now: float, interval_s: float, counters: tuple[int, int, int, int, int, int, int]) -> None:
        """Close the interval at ``now`` with the cumulative ``counters`` (same order as ``_base``)."""
        pin, pout, bin_, bout, highest, lost, acked = self._base
        cin, cout, cbin, cbout, chighest, clost, cacked = counters
        elapsed = now - self._start
        if elapsed > 0:
            self.pps_in = (cin - pin) / elapsed
            self.pps_out = (cout - pout) / elapsed
            self.kbps_in = (cbin - bin_) * 8 / 1000 / elapsed
            self.kbps_out = (cbout - bout) * 8 / 1000 / elapsed
        expected = chighest - highest
        received = cin - pin
        self.loss_in = max(0, expected - received) / expected if expected > 0 else 0.0
        lost_delta = clost - lost
        settled = lost_delta + cacked - acked
        self.loss_out = lost_delta / settled if settled > 0 else 0.0
        self._base = counters
        self._start = now
        # catch up after a long pause (a debugger, a stalled game) without a burst of ticks
        self.next_tick = max(self.next_tick + interval_s, now + interval_s / 2)


class _Watch:
    __slots__ = ("reported", "since")

    def __init__(self) -> None:
        self.since: float | None = None
        self.reported = False


class QosMonitor:
    """Compares measures with the negotiated `gsdk-qos` bounds of a ``ChannelConfig``."""

    def __init__(self, config: ChannelConfig) -> None:
        self.config = config
        self._limits: dict[str, float | None] = {
            "rtt_ms": config.max_rtt_ms,
            "jitter_ms": config.max_jitter_ms,
            "loss_ppm": None if config.max_loss_ppm is None else float(config.max_loss_ppm),
        }
        self._watches = {metric: _Watch() for metric in self._limits}

    @property
    def violations(self) -> tuple[str, ...]:
        """Measures currently reported as out of bounds."""
        return tuple(metric for metric, watch in self._watches.items() if watch.reported)

    def check(self, now: float, measured: dict[str, float | None]) -> list[ChannelEvent]:
        """Feed this interval's measures (``None`` = no sample yet); returns the events to report."""
        events: list[ChannelEvent] = []
        grace = self.config.qos_grace_s
        for metric, limit in self._limits.items():
            value = measured.get(metric)
            if limit is None or value is None:
                continue
            watch = self._watches[metric]
            if value > limit:
                if watch.since is None:
                    watch.since = now
                if not watch.reported and now - watch.since >= grace:
                    watch.reported = True
                    events.append(
                        QosViolation(metric=metric, measured=value, limit=limit, duration_s=now - watch.since)
                    )
            else:
                if watch.reported:
                    events.append(QosRestored(metric=metric, measured=value, limit=limit))
                watch.since = None
                watch.reported = False
        return events
