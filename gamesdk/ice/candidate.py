"""ICE candidates (RFC 8445 section 5.1) and their SDP form (RFC 8839 section 5.1).

``a=candidate:<foundation> <component> udp <priority> <address> <port> typ host|srflx|prflx|relay
[raddr <address> rport <port>]``
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from gamesdk.address import Address
from gamesdk.errors import RemoteProtocolError

__all__ = ["TYPE_PREFERENCE", "Candidate", "candidate_priority", "foundation_for"]


#: Type preferences of RFC 8445 section 5.1.2.2's recommendation.
TYPE_PREFERENCE = {"host": 126, "prflx": 110, "srflx": 100, "relay": 0}
#: Component id of our only component (the game channel).
COMPONENT = 1


def candidate_priority(kind: str, local_preference: int = 65535, component: int = COMPONENT) -> int:
    """``2^24 * type preference + 2^8 * local preference + (256 - component)`` (RFC 8445 section 5.1.2.1)."""
    return (TYPE_PREFERENCE[kind] << 24) | (local_preference << 8) | (256 - component)


def foundation_for(kind: str, base_host: str, server: str = "") -> str:
    """Same type, base IP and server give the same foundation (RFC 8445 section 5.1.1.3)."""
    return hashlib.sha256(f"{kind}|{base_host}|{server}".encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One transport address an agent offers (or learned from its peer)."""

    foundation: str
    priority: int
    host: str
    port: int
    kind: str  # host, srflx, prflx, relay
    related: Address | None = None
    component: int = COMPONENT

    @property
    def address(self) -> Address:
        return self.host, self.port

    def to_sdp(self) -> str:
        """The value of an ``a=candidate`` line (without ``candidate:``'s ``a=``)."""
        text = f"candidate:{self.foundation} {self.component} udp {self.priority} {self.host} {self.port} typ {self.kind}"
        if self.related is not None:
            text += f" raddr {self.related[0]} rport {self.related[1]}"
        return text

    @classmethod
    def from_sdp(cls, value: str) -> Candidate:
        """Parse an ``a=candidate`` value; raises ``RemoteProtocolError`` (488) when it is not one we can use."""
        text = value.removeprefix("candidate:")
        parts = text.split()
        if len(parts) < 8 or parts[6] != "typ":
            raise RemoteProtocolError(f"malformed ICE candidate {value[:80]!r}", status_hint=488)
        foundation, component, transport, priority, host, port, _, kind = parts[:8]
        if transport.lower() != "udp":
            raise RemoteProtocolError(f"ICE candidate over {transport[:10]!r}: only udp is used", status_hint=488)
        if kind not in TYPE_PREFERENCE:
            raise RemoteProtocolError(f"ICE candidate type {kind[:10]!r} is unknown", status_hint=488)
        if not (1 <= len(foundation) <= 32 and foundation.isascii()):
            raise RemoteProtocolError("ICE candidate foundation must be 1-32 characters", status_hint=488)
        try:
            ip = ipaddress.ip_address(host)
            number = int(port)
            prio = int(priority)
            comp = int(component)
        except ValueError:
            raise RemoteProtocolError(f"malformed ICE candidate {value[:80]!r}", status_hint=488) from None
        if not (0 < number < 65536 and 0 < prio < 2**31 and 1 <= comp <= 256):
            raise RemoteProtocolError(f"ICE candidate out of range {value[:80]!r}", status_hint=488)
        related: Address | None = None
        rest = parts[8:]
        if len(rest) >= 4 and rest[0] == "raddr" and rest[2] == "rport" and rest[3].isdigit():
            related = (rest[1], int(rest[3]))
        return cls(foundation=foundation, priority=prio, host=str(ip), port=number, kind=kind, related=related,
                   component=comp)
