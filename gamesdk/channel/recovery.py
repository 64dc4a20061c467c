"""gamesdk/channel/recovery: what happened to the packets we sent (aioquic's ``recovery.py`` role).

Keeps one record per sent packet until an ACK frame settles it: acked (its reliable fragments are done) or
lost (its reliable fragments are resent in the next packet). Lost means 3 later packets were acked
(RFC 9002 §6.1.1) *and* it is older than 9/8 RTT (§6.1.2), so jitter-reordered bursts are not declared
lost; a packet that fell out of the 64-bit ack bitfield is lost. The ACK of the largest packet gives an RTT
sample (RFC 9002 §5).
"""

from __future__ import annotations

import itertools

from gamesdk.channel.config import ChannelConfig
from gamesdk.channel.reliability import Fragment, ReliableSender
from gamesdk.channel.stats import RttEstimator
from gamesdk.errors import RemoteProtocolError

__all__ = ["ACK_DELAY_MAX", "ACK_DELAY_UNIT_S", "MAX_SENT_RECORDS", "Recovery"]

#: ACK delay units: 8 µs, so the u16 field covers 0.52 s; the maximum means "saturated, no RTT sample".
ACK_DELAY_UNIT_S = 8e-6
ACK_DELAY_MAX = 0xFFFF
_PACKET_THRESHOLD = 3
#: Sent-packet records kept at most; beyond, the peer stopped acking and the oldest half counts as lost.
MAX_SENT_RECORDS = 4096

#: One sent packet: (time sent, datagram bytes, reliable fragments it carried or None).
SentRecord = tuple[float, int, list[Fragment] | None]


class Recovery:
    """Sent-packet records, ACK processing, loss detection and the RTT estimate."""

    __slots__ = ("acked", "backoff", "config", "largest_acked", "lost", "reliable", "rtt", "sent")

    def __init__(self, config: ChannelConfig, reliable: ReliableSender) -> None:
        self.config = config
        self.reliable = reliable
        #: pn -> record, in sending order; the channel inserts directly (per-packet path).
        self.sent: dict[int, SentRecord] = {}
        self.largest_acked = -1
        #: Packets settled either way since the start.
        self.acked = 0
        self.lost = 0
        self.rtt = RttEstimator()
        #: Resend timeouts in a row without an ack in between; each doubles the resend timer.
        self.backoff = 0

    def trim(self) -> None:
        """Called when ``sent`` outgrew ``MAX_SENT_RECORDS``: drop the oldest half in one scan."""
        sent = self.sent
        for pn in list(itertools.islice(sent, MAX_SENT_RECORDS // 2)):
            del sent[pn]
        self.lost += MAX_SENT_RECORDS // 2

    def rto(self) -> float:
        """Resend timer for reliable fragments: RFC 9002 §6.2.1 PTO with a floor, doubled per timeout in a
        row (exponential back-off), capped at ``max_rto_s``."""
        rtt = self.rtt
        cfg = self.config
        if rtt.smoothed is None:
            base = cfg.initial_rto_s
        else:
            base = max(rtt.smoothed + 4 * rtt.var + cfg.max_ack_delay_s, cfg.min_rto_s)
        if self.backoff:
            return max(base, min(base * (1 << self.backoff), cfg.max_rto_s))
        return base

    def on_timeout(self) -> None:
        """A resend timer fired: back off (the ACK that settles anything resets it)."""
        if self.backoff < 16:
            self.backoff += 1

    def on_ack_untrusted(self, largest: int, bits: int, delay_units: int, now: float, next_pn: int) -> int:
        """Apply one ACK frame; returns how many packets it newly acknowledged.

        Raises ``RemoteProtocolError`` for an ACK of a packet never sent.
        """
        if largest >= next_pn:
            raise RemoteProtocolError(f"ACK for packet {largest} that was never sent")
        sent = self.sent
        if not sent:
            return 0
        first = next(iter(sent))
        if first > largest:
            return 0
        if first == largest:
            # the only outstanding packet up to `largest` is `largest` itself (ping-pong, steady streams)
            record = sent.pop(largest)
            self.backoff = 0
            if record[2] is not None:
                for frag in record[2]:
                    self.reliable.acked(frag)
            self.acked += 1
            if largest > self.largest_acked:
                self.largest_acked = largest
                if delay_units < ACK_DELAY_MAX:
                    self.rtt.update(now - record[0], delay_units * ACK_DELAY_UNIT_S)
            return 1
        done: list[int] = []
        newly_acked = lost = 0
        largest_record = None
        reliable = self.reliable
        rtt = self.rtt
        lost_before = now - 1.125 * max(rtt.smoothed or 0.0, rtt.latest or 0.0)
        for pn, record in sent.items():
            if pn > largest:
                break
            distance = largest - pn
            if distance == 0 or (distance <= 64 and (bits >> (distance - 1)) & 1):
                done.append(pn)
                newly_acked += 1
                frags = record[2]
                if frags is not None:
                    for frag in frags:
                        reliable.acked(frag)
                if distance == 0:
                    largest_record = record
            elif distance > 64 or (distance >= _PACKET_THRESHOLD and record[0] <= lost_before):
                done.append(pn)
                lost += 1
                frags = record[2]
                if frags is not None:
                    for frag in frags:
                        if not frag.acked:
                            frag.lost = True
        for pn in done:
            del sent[pn]
        self.acked += newly_acked
        self.lost += lost
        if newly_acked:
            self.backoff = 0
        if largest > self.largest_acked:
            self.largest_acked = largest
            if largest_record is not None and delay_units < ACK_DELAY_MAX:
                rtt.update(now - largest_record[0], delay_units * ACK_DELAY_UNIT_S)
        return newly_acked
