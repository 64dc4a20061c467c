"""STUN keep-alives on the SIP socket (RFC 5626 section 4.4.2), so the NAT mapping to the region stays open.

A player behind a NAT registers over UDP from its SIP socket; the region reaches it at the address that REGISTER
came from (RFC 5626 outbound), which only works while the NAT keeps that mapping. Home NATs forget an idle UDP
mapping after 30 s or more, and a REGISTER refresh comes only every few minutes. So while registered the user
agent sends a STUN Binding request to its region (whose SIP port answers STUN, RFC 7983 demultiplexing) at a
random point between 80 % and 100 % of the interval (RFC 5626 section 4.4: the region's ``Flow-Timer`` when
it sends one, else ``ClientConfig.stun_keepalive_s``).

The flow has failed, and the user agent registers again at once, when (section 4.4.2) the mapped address in the
answer differs from the previous one (the NAT gave a new mapping: the region's binding points at a dead one), or
no answer comes after the request was sent ``TRIES`` times. Pure: bytes in and out, ``now`` passed in, randomness
injected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from gamesdk.address import Address
from gamesdk.ice import stun

__all__ = ["StunKeepAlive"]

@dataclass(slots=True)
class StunKeepAlive:
    """The keep-alive of one flow (the SIP socket toward the region's address)."""

    server: Address
    interval_s: float
    random_bytes: Callable[[int], bytes]
    #: First retransmission of an unanswered request; doubles each time (RFC 8489 section 6.2.1's RTO).
    rto_s: float = 0.5
    #: Requests sent (the first and its retransmissions) before the flow counts as failed.
    TRIES: ClassVar[int] = 5
    #: The mapped address the last answer told us (our public address toward the region).
    mapped: Address | None = None
    sent: int = 0
    answered: int = 0
    failures: int = 0
    _next_at: float | None = None
    _txid: bytes | None = None
    _tries: int = 0
    _retry_at: float = 0.0
    _out: list[bytes] = field(default_factory=list)

    def start(self, now: float, interval_s: float | None = None) -> None:
        """Keep the flow open from now on (after each successful REGISTER; a ``Flow-Timer`` may set the interval)."""
        if interval_s is not None:
            self.interval_s = interval_s
        if self._next_at is None and self._txid is None:
            self._next_at = now + self._jittered()

    def stop(self) -> None:
        """Logged out or failed: no keep-alives until :meth:`start`."""
        self._next_at = None
        self._txid = None
        self.mapped = None

    @property
    def running(self) -> bool:
        return self._next_at is not None or self._txid is not None

    def due(self) -> float | None:
        """When :meth:`poll` has something to do."""
        if self._txid is not None:
            return self._retry_at
        return self._next_at

    def poll(self, now: float) -> tuple[list[bytes], bool]:
        """The requests to send to the region now, and whether the flow just failed (no answer)."""
        failed = False
        if self._txid is not None and now >= self._retry_at:
            if self._tries >= self.TRIES:
                self._txid = None
                self.failures += 1
                failed = True
            else:
                self._send(now)
        elif self._txid is None and self._next_at is not None and now >= self._next_at:
            self._next_at = None
            self._txid = self.random_bytes(12)
            self._tries = 0
            self._send(now)
        out, self._out = self._out, []
        return out, failed

    def receive(self, data: bytes, now: float) -> bool | None:
        """A STUN datagram from the region: None if it is not the answer we wait for, True when the flow is fine,
        False when the mapped address changed (the flow failed: register again)."""
        message = stun.parse_untrusted(data)
        if (message is None or self._txid is None or message.transaction_id != self._txid
                or message.message_method != stun.Method.BINDING or message.message_class != stun.Class.RESPONSE):
            return None
        mapped = message.attributes.get("XOR-MAPPED-ADDRESS")
        if not (isinstance(mapped, tuple) and len(mapped) == 2):
            return None
        self._txid = None
        self.answered += 1
        address = (str(mapped[0]), int(mapped[1]))
        self._next_at = now + self._jittered()
        previous, self.mapped = self.mapped, address
        if previous is not None and previous != address:
            self.failures += 1
            return False
        return True

    def _send(self, now: float) -> None:
        assert self._txid is not None
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, transaction_id=self._txid)
        request.add_fingerprint()
        self._out.append(bytes(request))
        self.sent += 1
        self._retry_at = now + self.rto_s * (2 ** self._tries)
        self._tries += 1

    def _jittered(self) -> float:
        # RFC 5626 section 4.4: between 80 % and 100 % of the interval, so many players do not beat in step
        fraction = int.from_bytes(self.random_bytes(2), "big") / 65535
        return self.interval_s * (0.8 + 0.2 * fraction)
