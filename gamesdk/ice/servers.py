"""The STUN and TURN servers an ICE agent gathers candidates from.

The regional server answers STUN on its SIP port; its REGISTER 200 OK carries one ``Relay`` header per TURN
server with time-limited credentials (coturn's ``use-auth-secret`` scheme)::

    Relay: <turn:203.0.113.7:3478?transport=udp>;username="1733320000:alice";password="q5...=";expires=86400
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gamesdk.address import Address

__all__ = ["RELAY_HEADER", "TurnServer", "parse_relay_header"]

RELAY_HEADER = "Relay"

_VALUE = re.compile(r'^\s*<turn:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?(?:\?transport=udp)?>\s*(;.*)?$')
_PARAM = re.compile(r';\s*([A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)\s*')


@dataclass(frozen=True, slots=True)
class TurnServer:
    """One TURN server (UDP) and the long-term credentials for it."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    #: When the credentials stop working, on the clock of the ``now`` they were parsed with.
    expires_at: float = float("inf")

    @property
    def address(self) -> Address:
        return self.host, self.port


def parse_relay_header(value: str, now: float) -> TurnServer | None:
    """A ``Relay`` header of a REGISTER 200 OK, or ``None`` when it is unusable (e.g. a ``turns:`` or TCP URL)."""
    match = _VALUE.match(value)
    if match is None:
        return None
    params: dict[str, str] = {}
    for key, raw in _PARAM.findall(match.group(3) or ""):
        params[key.lower()] = raw[1:-1].replace('\\"', '"') if raw.startswith('"') else raw
    username, password = params.get("username"), params.get("password")
    if not username or not password:
        return None
    expires = params.get("expires", "")
    lifetime = int(expires) if expires.isdigit() else None
    port = int(match.group(2) or 3478)
    if not 0 < port < 65536:
        return None
    return TurnServer(host=match.group(1).strip("[]"), port=port, username=username, password=password,
                      expires_at=now + lifetime if lifetime is not None else float("inf"))
