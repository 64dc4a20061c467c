"""gamesdk/channel/stats: what the channel measured, as one frozen snapshot (yojimbo ``NetworkInfo`` +
GameNetworkingSockets ``RealTimeStatus``, research/channel.md (c))."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ChannelStats", "RttEstimator"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelStats:
    """A snapshot of the channel's measurements. Rates and loss cover the last stats interval."""

    #: Smoothed round-trip time (RFC 9002 §5.3), ms; ``None`` before the first sample.
    rtt_ms: float | None
    rtt_min_ms: float | None
    rtt_max_ms: float | None
    #: Mean deviation between consecutive RTT samples (RFC 3550 §6.4.1 estimator on RTT), ms.
    jitter_ms: float
    #: Fraction of the peer's packets that did not arrive, last interval.
    loss_in: float
    #: Fraction of our packets the peer's acks show as lost, last interval.
    loss_out: float
    packets_in: int
    packets_out: int
    bytes_in: int
    bytes_out: int
    packets_in_per_s: float
    packets_out_per_s: float
    kbps_in: float
    kbps_out: float
    #: Reliable bytes sent or queued but not yet acknowledged, and the messages they belong to.
    pending_reliable_bytes: int
    pending_reliable_messages: int
    retransmissions: int
    #: Our packets declared lost since the start.
    packets_lost_out: int
    #: Datagrams dropped, by reason.
    decrypt_failures: int
    replays_dropped: int
    wrong_sid_dropped: int
    foreign_address_dropped: int
    malformed_dropped: int
    #: Sequenced-lane messages dropped because a newer one had been delivered.
    stale_dropped: int
    #: Fragmented unreliable or sequenced messages given up on because a slice never came.
    partial_messages_dropped: int
    #: Measures currently reported by ``QosViolation`` (empty while within the negotiated `gsdk-qos`).
    qos_violations: tuple[str, ...] = ()
    #: The pacing rate now, kbit/s (``None``: unpaced); below the negotiated rate while loss is high.
    send_limit_kbps: float | None = None
    #: Times queued data had to wait for the pacer (the negotiated rate was used up).
    paced_holds: int = 0
    #: Bytes queued for sending (all lanes) that have not left yet.
    queued_bytes: int = 0
    #: Resend timeouts in a row (each doubles the resend timer; 0 while acks arrive).
    rto_backoff: int = 0
    #: Key updates of the sending direction so far (RFC 9001 key phase).
    key_phase: int = 0
    #: True once the peer's address passed a path check; game data goes nowhere else.
    path_validated: bool = False
    #: Times the channel moved to a new peer address (roaming).
    path_changes: int = 0


class RttEstimator:
    """Smoothed RTT, RTT variance and min/max (RFC 9002 §5), plus RTT jitter."""

    __slots__ = ("jitter", "latest", "max", "min", "samples", "smoothed", "var")

    def __init__(self) -> None:
        self.smoothed: float | None = None
        self.var = 0.0
        self.min: float | None = None
        self.max: float | None = None
        self.latest: float | None = None
        self.jitter = 0.0
        self.samples = 0

    def update(self, latest_rtt: float, ack_delay: float) -> None:
        """Feed one sample: time from sending a packet to the ack, and the ack delay the peer reported."""
        # Subtract the time the peer held the ack (RFC 9002 §5.3). RFC 9002 refuses to go below min_rtt to
        # resist lying peers; our peer is authenticated and acks are often held for a whole keepalive
        # period, so the plain subtraction is the accurate one here.
        rtt = latest_rtt - ack_delay if latest_rtt >= ack_delay else latest_rtt
        if self.min is None or rtt < self.min:
            self.min = rtt
        if self.max is None or rtt > self.max:
            self.max = rtt
        if self.smoothed is None:
            self.smoothed = rtt
            self.var = rtt / 2
        else:
            self.var = 0.75 * self.var + 0.25 * abs(self.smoothed - rtt)
            self.smoothed = 0.875 * self.smoothed + 0.125 * rtt
            assert self.latest is not None
            # RFC 3550 §6.4.1 gain of 1/16 on the difference between consecutive samples
            self.jitter += (abs(rtt - self.latest) - self.jitter) / 16
        self.latest = rtt
        self.samples += 1
