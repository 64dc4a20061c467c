"""Client configuration: one typed value, units in the names."""

from __future__ import annotations

from dataclasses import dataclass, field

from gamesdk.errors import LocalProtocolError
from gamesdk.sip.timers import TimerConfig

__all__ = ["ClientConfig", "parse_server_address"]


def parse_server_address(text: str) -> tuple[str, int]:
    """Parse ``udp:HOST:PORT`` or ``HOST:PORT`` (IPv6 as ``[::1]:5060``) into ``(host, port)``."""
    rest = text[4:] if text.lower().startswith("udp:") else text
    if rest.startswith("["):
        host, _, port_text = rest[1:].partition("]:")
    else:
        host, _, port_text = rest.rpartition(":")
    if not host or not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise LocalProtocolError(f"server address {text!r} must look like udp:HOST:PORT")
    return host, int(port_text)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """Everything a player's SDK needs to log in and play.

    ``server`` is the regional game server, ``(host, port)``; ``domain`` is its SIP domain
    (``eu.gamesdk.test``); the player's address is ``sip:<username>@<domain>``.
    """

    username: str
    password: str
    domain: str
    server: tuple[str, int]
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
    #: Digest algorithms this client answers, in its preference order.
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    user_agent: str = "gamesdk/0.1"

    def __post_init__(self) -> None:
        for name in ("username", "domain"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or any(c in value for c in " \t\r\n@:;<>\""):
                raise LocalProtocolError(f"ClientConfig.{name} {value!r} must be a plain name")
        if not isinstance(self.password, str):
            raise LocalProtocolError("ClientConfig.password must be a string")
        host, port = self.server
        if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
            raise LocalProtocolError(f"ClientConfig.server {self.server!r} must be (host, port)")
        if self.register_expires_s < 1:
            raise LocalProtocolError("register_expires_s must be at least 1")
        for name in ("invite_timeout_s", "answer_timeout_s", "publish_refresh_s", "session_refresh_s"):
            if getattr(self, name) <= 0:
                raise LocalProtocolError(f"ClientConfig.{name} must be positive")

    @property
    def aor(self) -> str:
        """``sip:<username>@<domain>``."""
        return f"sip:{self.username}@{self.domain}"
