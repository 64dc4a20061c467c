"""Federation with the other regions: the peer table and OPTIONS pings that measure round-trip times. Pure.

Each server pings each peer with OPTIONS every ``interval_s`` (one datagram, never retransmitted, so a
sample is one real round trip). A sample is the path's delay *plus* the time the ping waited in the peer's (and our
own) receive queue, and under load the queueing dominates (75 ms seen on loopback at full load). So the transit
latency the policy reads (:meth:`FederationTable.rtt_ms`) is the minimum over the samples of a recent window, as
RFC 9002 section 5.2 keeps ``min_rtt`` to estimate the path without queueing (and BBR a windowed minimum, so a
route that really got longer shows up once the window has passed). The smoothed round-trip time of RFC 6298
section 2 (SRTT <- 7/8 SRTT + 1/8 sample) is still kept, for monitoring only.

A sample is timed at arrival, and without the peer's own wait: the driver hands the kernel's receive time of the
answer (``received_at``; the answer may wait in our socket behind a batch of other datagrams, 460 ms seen with two
CPU hogs), and each ping carries a ``Timestamp`` header (RFC 3261 section 20.38) that the peer echoes with the
time the ping spent with it (section 8.2.6.1: from its arrival to the answer), which is taken off. What remains is
the path between the two servers' kernels: what the game traffic, which never passes the servers, crosses too.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from gamesdk.address import Address
from gamesdk.errors import RemoteProtocolError
from gamesdk.sip.ids import IdFactory
from gamesdk.sip.message import Headers, Request, Response
from server.config import PeerConfig

__all__ = ["FederationTable", "PeerState", "timestamp_echo"]

log = logging.getLogger(__name__)


#: A ping not answered within this many seconds counts as lost (and its late answer is ignored).
PING_TIMEOUT_S = 5.0
#: Peers that missed this many pings in a row are reported unreachable (calls to them still get tried).
UNREACHABLE_AFTER = 3
#: Samples older than this drop out of the path estimate (the minimum): 30 pings at the default 10 s interval.
MIN_RTT_WINDOW_S = 300.0
#: Until a peer answered this many pings, it is pinged every STARTUP_INTERVAL_S (if that is sooner than the
#: configured interval): at start-up the minimum is over one sample, and one answered late (a busy start, the
#: sender preempted between timing and sending it) would hold for a whole interval, refusing calls with 580.
STARTUP_PINGS = 3
STARTUP_INTERVAL_S = 1.0


@dataclass(slots=True)
class PeerState:
    domain: str
    address: Address
    #: Smoothed round-trip time in seconds (RFC 6298), None until the first answer. Includes queueing: monitoring.
    rtt_s: float | None = None
    last_rtt_s: float | None = None
    last_answer_at: float | None = None
    pings_sent: int = 0
    answers: int = 0
    missed_in_a_row: int = 0
    #: branch -> send time of pings in flight.
    pending: dict[str, float] = field(default_factory=dict)
    #: (answer time, sample) of the recent window, for the windowed minimum.
    samples: deque[tuple[float, float]] = field(default_factory=deque)

    def add_sample(self, sample: float, now: float) -> None:
        """Take one measured round trip (seconds) answered at ``now``."""
        self.last_rtt_s = sample
        self.rtt_s = sample if self.rtt_s is None else 0.875 * self.rtt_s + 0.125 * sample
        samples = self.samples
        # Keep the deque increasing in sample value (a monotonic queue): a sample that is larger than a newer one
        # can never be the minimum again. The front is then the minimum; old ones fall off the front by age.
        while samples and samples[-1][1] >= sample:
            samples.pop()
        samples.append((now, sample))
        while samples[0][0] < now - MIN_RTT_WINDOW_S:
            samples.popleft()

    @property
    def min_rtt_s(self) -> float | None:
        """The path's round-trip time: the smallest sample of the last ``MIN_RTT_WINDOW_S`` (None: none yet)."""
        return self.samples[0][1] if self.samples else None

    @property
    def min_rtt_ms(self) -> float | None:
        value = self.min_rtt_s
        return None if value is None else value * 1000.0

    @property
    def reachable(self) -> bool:
        return self.answers > 0 and self.missed_in_a_row < UNREACHABLE_AFTER

    @property
    def rtt_ms(self) -> float | None:
        return None if self.rtt_s is None else self.rtt_s * 1000.0


class FlowLookup(Protocol):
    """What the federation asks the TLS driver (server.transport_tls.TlsTransport)."""

    def came_over_flow(self, addr: Address) -> bool: ...

    def peer_of(self, addr: Address) -> PeerConfig | None: ...


class FederationTable:
    """Peer domains -> servers, and their measured round-trip times."""

    def __init__(self, peers: tuple[PeerConfig, ...], *, local_domain: str, via_host: str, via_port: int,
                 ids: IdFactory, interval_s: float) -> None:
        self.local_domain = local_domain
        self.via_host = via_host
        self.via_port = via_port
        self.ids = ids
        self.interval_s = interval_s
        self._by_domain: dict[str, PeerState] = {}
        self._by_addr: dict[Address, PeerState] = {}
        #: Peers reached over tls: are authenticated by certificate only (see authenticated_peer).
        self._tls_domains = {p.domain for p in peers if p.address.transport == "tls"}
        #: The TLS flows (set by the driver): which peer a connection authenticated as.
        self.flows: FlowLookup | None = None
        for peer in peers:
            self.set_peer(peer.domain, peer.address.addr)
        self._next_ping: float | None = 0.0 if peers else None
        self._cseq = 0

    # -- the table -----------------------------------------------------------------------------------------

    def set_peer(self, domain: str, address: Address) -> None:
        """Add a peer or move it to a new address (tests start regions on free ports)."""
        domain = domain.lower()
        old = self._by_domain.get(domain)
        if old is not None:
            self._by_addr.pop(old.address, None)
        state = PeerState(domain, address)
        self._by_domain[domain] = state
        self._by_addr[address] = state
        self._next_ping = 0.0

    def replace_peers(self, peers: tuple[PeerConfig, ...]) -> None:
        """Use a reloaded [[peers]] table: peers whose address is unchanged keep their measured round trips."""
        wanted = {p.domain.lower(): p.address.addr for p in peers}
        for domain in list(self._by_domain):
            if domain not in wanted:
                self._by_addr.pop(self._by_domain.pop(domain).address, None)
        for domain, address in wanted.items():
            old = self._by_domain.get(domain)
            if old is None or old.address != address:
                self.set_peer(domain, address)

    def peers(self) -> list[PeerState]:
        return list(self._by_domain.values())

    def by_domain(self, domain: str) -> PeerState | None:
        return self._by_domain.get(domain)

    def by_address(self, address: Address) -> PeerState | None:
        """The peer configured at ``address`` (where its server is reached)."""
        return self._by_addr.get(address)

    def authenticated_peer(self, source: Address) -> PeerState | None:
        """The peer a message came from, if the way it came proves it (requests from peers are accepted as
        already authenticated): a TLS flow whose certificate is the peer's, or, for a peer configured over
        ``udp:``, its address. A datagram that merely comes from a TLS peer's address proves nothing."""
        flows = self.flows
        if flows is not None and flows.came_over_flow(source):
            peer = flows.peer_of(source)
            return None if peer is None else self._by_domain.get(peer.domain)
        state = self._by_addr.get(source)
        if state is None or state.domain in self._tls_domains:
            return None
        return state

    def rtt_ms(self, domain: str) -> float | None:
        """Transit latency to the server of ``domain`` in ms for the policy: the windowed minimum round trip,
        free of queueing under load (None: not measured yet). The smoothed value is ``PeerState.rtt_ms``."""
        peer = self._by_domain.get(domain.lower())
        return None if peer is None else peer.min_rtt_ms

    # -- pings ---------------------------------------------------------------------------------------------

    def ping_now(self) -> None:
        """Make the next pings due at once: a fresh transit sample (after a restart, or before calls that need
        one free of the queueing a busy start-up adds)."""
        if self._by_domain:
            self._next_ping = 0.0

    def get_timer(self) -> float | None:
        return self._next_ping

    def handle_timer(self, now: float) -> list[tuple[bytes, Address]]:
        """Send the due pings; returns the datagrams."""
        if self._next_ping is None or now < self._next_ping:
            return []
        starting = any(p.answers < STARTUP_PINGS for p in self._by_domain.values())
        self._next_ping = now + (min(self.interval_s, STARTUP_INTERVAL_S) if starting else self.interval_s)
        out: list[tuple[bytes, Address]] = []
        for peer in self._by_domain.values():
            for branch, sent_at in list(peer.pending.items()):
                if now - sent_at > PING_TIMEOUT_S:
                    del peer.pending[branch]
                    peer.missed_in_a_row += 1
                    if peer.missed_in_a_row == UNREACHABLE_AFTER:
                        log.warning("federation: %s at %s:%d is not answering OPTIONS", peer.domain,
                                    *peer.address)
            branch = self.ids.branch()
            peer.pending[branch] = now
            peer.pings_sent += 1
            out.append((self._ping(peer, branch, now).to_bytes(), peer.address))
        return out

    def _ping(self, peer: PeerState, branch: str, now: float) -> Request:
        self._cseq += 1
        headers = Headers([
            ("Via", f"SIP/2.0/UDP {self.via_host}:{self.via_port};branch={branch}"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:ping@{self.local_domain}>;tag={self.ids.tag()}"),
            ("To", f"<sip:{peer.domain}>"),
            ("Call-ID", self.ids.call_id()),
            ("CSeq", f"{self._cseq} OPTIONS"),
            ("Accept", "application/sdp"),
            # RFC 3261 section 8.2.6.1: the peer echoes it with the time the ping spent with it
            ("Timestamp", f"{now:.3f}"),
        ])
        return Request("OPTIONS", f"sip:{peer.domain}", headers)

    def handle_response(self, response: Response, now: float, *, received_at: float | None = None) -> bool:
        """Take the answer to one of our pings; False if it is not one.

        ``received_at``: when the answer arrived (the kernel's receive time, same clock as ``now``), if the
        driver knows it; the round trip is timed to it rather than to ``now``, when it was read."""
        try:
            branch = response.top_via.branch
        except RemoteProtocolError:  # a malformed Via simply is not one of ours
            return False
        if branch is None:
            return False
        for peer in self._by_domain.values():
            sent_at = peer.pending.pop(branch, None)
            if sent_at is None:
                continue
            arrived = now if received_at is None or not sent_at <= received_at <= now else received_at
            sample = max(0.0, arrived - sent_at - _peer_delay(response, arrived - sent_at))
            if peer.answers > 0 or peer.domain not in self._tls_domains:
                # (The first ping to a peer over TLS waited for the TCP and TLS handshakes: 74 ms seen on a loaded
                # machine, which alone refused calls with 580; it shows the peer answers, the path comes next.)
                peer.add_sample(sample, now)
            peer.last_answer_at = now
            peer.answers += 1
            if peer.missed_in_a_row >= UNREACHABLE_AFTER:
                log.info("federation: %s answers again (rtt %.2f ms)", peer.domain, sample * 1000)
            peer.missed_in_a_row = 0
            return True
        return False


def _peer_delay(response: Response, rtt: float) -> float:
    """The delay the peer added to our ``Timestamp`` (RFC 3261 section 20.38: ``Timestamp: value [delay]``), in
    seconds, at most the round trip itself; 0 when it reported none or something that is no delay."""
    value = response.headers.get("Timestamp")
    if value is None:
        return 0.0
    parts = value.split()
    if len(parts) != 2 or not _is_decimal(parts[1]):
        return 0.0
    return min(float(parts[1]), rtt)


def _is_decimal(text: str) -> bool:
    """``1*DIGIT [ "." *DIGIT ]`` (RFC 3261 section 25.1, delay), ASCII digits only, of a sane length."""
    whole, _, fraction = text.partition(".")
    return 0 < len(text) <= 20 and whole.isascii() and whole.isdigit() and (
        not fraction or (fraction.isascii() and fraction.isdigit()))


def timestamp_echo(value: str, delay_s: float) -> str | None:
    """The ``Timestamp`` of an answer to a request that carried ``value`` (RFC 3261 section 8.2.6.1): the value
    as it came, and the time the request spent with us; None when the value is not a timestamp."""
    parts = value.split()
    if not parts or len(parts) > 2 or not _is_decimal(parts[0]):
        return None
    return f"{parts[0]} {max(0.0, delay_s):.6f}"
