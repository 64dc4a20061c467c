"""The ``[tls]`` table of a region file: certificate files, trusted CAs, the transports players may use and the
limits of the TLS listener.

```toml
[region]
listen = ["udp:0.0.0.0:5060", "tls:0.0.0.0:5061"]

[tls]
certificate = "eu.gamesdk.test.crt"   # PEM, leaf first (chain after it); also signs the region's identities
key = "eu.gamesdk.test.key"
ca = "ca.crt"                         # CAs of peer regions (mutual TLS); peers[].ca overrides per peer
player_transports = ["tls"]           # players over UDP are refused (legacy tools want "udp" here too)
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.config import ListenAddress, PeerConfig

__all__ = ["TRANSPORTS", "TlsConfig", "parse_tls", "tls_path"]

#: Transports a region listens on and players may use.
TRANSPORTS = ("udp", "tls")


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Certificates and limits of SIP over TLS (RFC 3261 section 26, RFC 5630)."""

    certificate: Path | None = None
    key: Path | None = None
    #: CA bundle that peer regions' certificates must chain to (mutual TLS).
    ca: Path | None = None
    #: Transports players may register and call over; requests of players over others get 403.
    player_transports: tuple[str, ...] = TRANSPORTS
    #: Open TLS connections at most; more are closed at once (a full table must not take the server down).
    max_connections: int = 1024
    #: Connections silent this long are closed. RFC 5626 clients ping every 95-120 s on a flow.
    idle_timeout_s: float = 300.0
    #: Bytes queued toward one connection that does not read; beyond it the connection is closed.
    max_write_buffer_bytes: int = 256 * 1024
    #: TLS handshake must finish within this long.
    handshake_timeout_s: float = 10.0


def tls_path(table: Mapping[str, Any], key: str, path: str, base_dir: Path) -> Path | None:
    """An optional file path, relative to the config file's folder."""
    from server.config import ConfigError

    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(path, "must be a file path")
    result = Path(value).expanduser()
    return result if result.is_absolute() else base_dir / result


def parse_tls(table: Mapping[str, Any], base_dir: Path, listen_more: tuple[ListenAddress, ...],
              peers: tuple[PeerConfig, ...]) -> TlsConfig:
    """Check the ``[tls]`` table against the listen addresses and peers that need it."""
    from server.config import ConfigError

    allowed = {"certificate", "key", "ca", "player_transports", "max_connections", "idle_timeout_s",
               "max_write_buffer_bytes", "handshake_timeout_s"}
    for key in table:
        if key not in allowed:
            raise ConfigError(f"tls.{key}", f"unknown key (known: {', '.join(sorted(allowed))})")
    defaults = TlsConfig()
    transports_value = table.get("player_transports", list(TRANSPORTS))
    if not isinstance(transports_value, list) or not transports_value or \
            any(t not in TRANSPORTS for t in transports_value):
        raise ConfigError("tls.player_transports", f"must be a non-empty list of {', '.join(TRANSPORTS)}")

    def number(key: str, default: float, minimum: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            raise ConfigError(f"tls.{key}", f"must be a number of at least {minimum:g}")
        return float(value)

    config = TlsConfig(
        certificate=tls_path(table, "certificate", "tls.certificate", base_dir),
        key=tls_path(table, "key", "tls.key", base_dir),
        ca=tls_path(table, "ca", "tls.ca", base_dir),
        player_transports=tuple(dict.fromkeys(transports_value)),
        max_connections=int(number("max_connections", defaults.max_connections, 1)),
        idle_timeout_s=number("idle_timeout_s", defaults.idle_timeout_s, 1),
        max_write_buffer_bytes=int(number("max_write_buffer_bytes", defaults.max_write_buffer_bytes, 4096)),
        handshake_timeout_s=number("handshake_timeout_s", defaults.handshake_timeout_s, 0.1),
    )
    needs_cert = any(a.transport == "tls" for a in listen_more) or any(p.address.transport == "tls" for p in peers)
    if needs_cert and (config.certificate is None or config.key is None):
        raise ConfigError("tls.certificate", "a tls: listen address or peer needs [tls] certificate and key "
                                             "(make them with 'gamesdk-server cert')")
    if (config.certificate is None) != (config.key is None):
        raise ConfigError("tls.key", "certificate and key go together")
    for i, peer in enumerate(peers):
        if peer.address.transport == "tls" and peer.ca is None and config.ca is None:
            raise ConfigError(f"peers[{i}].ca", "a tls: peer needs a CA to check its certificate against "
                                                "(peers[].ca or [tls] ca)")
    if "tls" in config.player_transports and not any(a.transport == "tls" for a in listen_more) and \
            "player_transports" in table:
        raise ConfigError("tls.player_transports", "lists tls but region.listen has no tls: address")
    if "udp" not in config.player_transports and not any(a.transport == "tls" for a in listen_more):
        raise ConfigError("tls.player_transports", "players need a transport the region listens on")
    return config
