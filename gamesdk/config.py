"""Client configuration: one typed value, units in the names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gamesdk.address import Address
from gamesdk.errors import LocalProtocolError
from gamesdk.sip.timers import TimerConfig
from gamesdk.trace import trace_default

__all__ = ["ClientConfig", "parse_server_address", "parse_server_transport"]

#: Transports a player reaches its server over: plain UDP, or one TLS connection (RFC 5626 outbound).
TRANSPORTS = ("udp", "tls")


def parse_server_transport(text: str) -> tuple[str, Address]:
    """Parse ``udp:HOST:PORT``, ``tls:HOST:PORT`` or ``HOST:PORT`` (UDP) into ``(transport, (host, port))``."""
    lowered = text.lower()
    transport = next((t for t in TRANSPORTS if lowered.startswith(f"{t}:")), "udp")
    return transport, parse_server_address(text)


def parse_server_address(text: str) -> Address:
    """Parse ``udp:HOST:PORT``, ``tls:HOST:PORT`` or ``HOST:PORT`` (IPv6 as ``[::1]:5060``) into ``(host, port)``."""
    lowered = text.lower()
    rest = text[4:] if lowered.startswith(("udp:", "tls:")) else text
    if rest.startswith("["):
        host, _, port_text = rest[1:].partition("]:")
    else:
        host, _, port_text = rest.rpartition(":")
    if not rest.startswith("[") and ":" in host:
        host = ""  # "tcp:HOST:PORT" (a transport we do not speak) or an IPv6 address without brackets
    if not host or not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise LocalProtocolError(f"server address {text!r} must look like udp:HOST:PORT or tls:HOST:PORT")
    return host, int(port_text)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """Everything a player's SDK needs to log in and play.

    ``server`` is the regional game server: ``(host, port)`` or ``"udp:HOST:PORT"`` over UDP, or
    ``"tls:HOST:5061"`` over one TLS connection that also carries the server's requests to the player (RFC 5626
    outbound: no inbound port needed for signalling). ``ca`` is the CA bundle the server's certificate must chain
    to (the system's trust store when None) and ``server_name`` the name it must hold (``domain`` by default).
    ``domain`` is the region's SIP domain (``eu.gamesdk.test``); the player's address is
    ``sip:<username>@<domain>``. After construction ``server`` is always ``(host, port)`` and ``transport`` says
    which.
    """

    username: str
    password: str
    domain: str
    server: Address | str
    transport: str = "udp"
    ca: str | Path | None = None
    server_name: str | None = None
    #: Region CAs whose signed identities (RFC 8224 Identity on INVITEs and 2xx) this player trusts; ``ca``
    #: when None. ``verify_identity`` (default: on when either CA is set) refuses an invitation without a valid
    #: one (428/438) and ends a session whose answer has none.
    identity_ca: str | Path | None = None
    verify_identity: bool | None = None
    #: Over TLS: a CRLFCRLF keep-alive on the connection after this long without traffic (RFC 5626 section 4.4.1
    #: asks for 95-120 s on TCP; the server closes flows idle for [tls] idle_timeout_s, 300 s by default).
    keepalive_s: float = 90.0
    #: Over UDP with ICE (RFC 5626 outbound): a STUN Binding request to the region at a random point between 80 %
    #: and 100 % of this (or of the region's ``Flow-Timer``, if shorter), so the home NAT keeps the mapping the
    #: region reaches the player through; many NATs forget an idle UDP mapping after 30 s.
    stun_keepalive_s: float = 29.0
    display_name: str | None = None
    #: Registration lifetime asked for; refreshed at half of what the server grants (RFC 3261 10.2.4).
    register_expires_s: int = 300
    #: The caller CANCELs an invitation that has no final answer after this long.
    invite_timeout_s: float = 30.0
    #: The callee's application must accept or decline within this long, else 480 is sent.
    answer_timeout_s: float = 20.0
    #: Dialog-state publication (DESIGN section 4): Expires and refresh period.
    publish_expires_s: int = 90
    publish_refresh_s: float = 45.0
    #: In-dialog OPTIONS to the peer this often, so a crashed opponent is noticed (RFC 4028 idea).
    session_refresh_s: float = 10.0
    #: SIP timers (T1 = 500 ms from RFC 3261 by default).
    timers: TimerConfig = field(default_factory=TimerConfig)
    #: NAT traversal (ICE, docs/nat.md): candidates from the session's socket, the server's STUN answer and the
    #: region's TURN relay go in offer and answer, and the game channel (and the ACK) run on the pair the
    #: connectivity checks nominate. Off: the channel goes to the c=/m= address as is (same host or LAN only).
    ice: bool = True
    #: Offer only relayed candidates, so the opponent never learns this player's address (docs/nat.md).
    relay_only: bool = False
    #: Digest algorithms this client answers, in its preference order.
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    user_agent: str = "gamesdk/0.1"
    #: Log every SIP message sent and received and every channel event on the ``gamesdk.trace`` logger
    #: (docs/sdk.md, "Protocol trace"); the environment variable ``GAMESDK_TRACE=1`` sets it by default.
    trace: bool = field(default_factory=trace_default)

    def __post_init__(self) -> None:
        for name in ("username", "domain"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or any(c in value for c in " \t\r\n@:;<>\""):
                raise LocalProtocolError(f"ClientConfig.{name} {value!r} must be a plain name")
        if not isinstance(self.password, str):
            raise LocalProtocolError("ClientConfig.password must be a string")
        if isinstance(self.server, str):
            transport, address = parse_server_transport(self.server)
            object.__setattr__(self, "server", address)
            object.__setattr__(self, "transport", transport)
        if not isinstance(self.server, tuple) or len(self.server) != 2:
            raise LocalProtocolError(f"ClientConfig.server {self.server!r} must be (host, port) or 'tls:HOST:PORT'")
        host, port = self.server
        if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
            raise LocalProtocolError(f"ClientConfig.server {self.server!r} must be (host, port)")
        if self.transport not in TRANSPORTS:
            raise LocalProtocolError(f"ClientConfig.transport {self.transport!r} must be one of {TRANSPORTS}")
        if self.ca is not None and not Path(self.ca).is_file():
            raise LocalProtocolError(f"ClientConfig.ca {str(self.ca)!r} is not a readable CA file")
        if self.identity_ca is not None and not Path(self.identity_ca).is_file():
            raise LocalProtocolError(f"ClientConfig.identity_ca {str(self.identity_ca)!r} is not a readable CA file")
        if self.verify_identity and self.identity_trust is None:
            raise LocalProtocolError("ClientConfig.verify_identity needs identity_ca (or ca)")
        for name in ("keepalive_s", "stun_keepalive_s"):
            if getattr(self, name) <= 0:
                raise LocalProtocolError(f"ClientConfig.{name} must be positive")
        if self.register_expires_s < 1:
            raise LocalProtocolError("register_expires_s must be at least 1")
        for name in ("invite_timeout_s", "answer_timeout_s", "publish_refresh_s", "session_refresh_s"):
            if getattr(self, name) <= 0:
                raise LocalProtocolError(f"ClientConfig.{name} must be positive")

    @property
    def identity_trust(self) -> Path | None:
        """The CA file identities are checked against, or None."""
        chosen = self.identity_ca if self.identity_ca is not None else self.ca
        return None if chosen is None else Path(chosen)

    @property
    def checks_identity(self) -> bool:
        return self.verify_identity if self.verify_identity is not None else self.identity_trust is not None

    @property
    def server_address(self) -> Address:
        """``server`` as ``(host, port)`` (typed for readers; it always is one after construction)."""
        assert isinstance(self.server, tuple)
        return self.server

    @property
    def aor(self) -> str:
        """``sip:<username>@<domain>``."""
        return f"sip:{self.username}@{self.domain}"
