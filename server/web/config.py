"""server/web/config: the ``[web]`` table of a region file.

```toml
[web]
listen = "http://127.0.0.1:8080"    # or https://... (uses the [tls] certificate and key)
session_ttl_s = 3600                # a login lasts this long
max_connections = 256               # open HTTP connections at most (the oldest idle one makes room)
max_requests_per_s = 200            # more get 503 + Retry-After: page loads must not starve the SIP setups

[[web.formats]]                     # the invite form's defaults, per game format (first = preselected)
format = "pong/1;tick=60"
classification = "action"
latency_ms = 150
jitter_ms = 30
loss_ppm = 20000
bandwidth_kbps = 64
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gamesdk.errors import LocalProtocolError
from gamesdk.qos.model import parse_game_format

__all__ = ["DEFAULT_FORMATS", "FormatDefaults", "WebConfig", "parse_web"]


@dataclass(frozen=True, slots=True)
class FormatDefaults:
    """What the invite form fills in for one game format."""

    format: str
    classification: str = "action"
    latency_ms: int = 150
    jitter_ms: int = 30
    loss_ppm: int = 20000
    bandwidth_kbps: int = 64


DEFAULT_FORMATS = (FormatDefaults("pong/1;tick=60"),)


@dataclass(frozen=True, slots=True)
class WebConfig:
    scheme: str
    host: str
    port: int
    session_ttl_s: float = 3600.0
    max_connections: int = 256
    #: Requests the site serves per second at most (a token bucket, bursts of the same size); more get 503 with
    #: Retry-After. The site shares the SIP server's event loop: this keeps a flood of page loads from starving
    #: the session setups.
    max_requests_per_s: int = 200
    formats: tuple[FormatDefaults, ...] = DEFAULT_FORMATS
    #: For https: the region's certificate and key ([tls]).
    certificate: Any = None
    key: Any = None

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def with_port(self, port: int) -> WebConfig:
        from dataclasses import replace

        return replace(self, port=port)


_LISTEN = re.compile(r"(https?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})/?")
_KEYS = {"listen", "session_ttl_s", "max_connections", "max_requests_per_s", "formats"}
_FORMAT_KEYS = {"format", "classification", "latency_ms", "jitter_ms", "loss_ppm", "bandwidth_kbps"}


def _error(key: str, message: str) -> Exception:
    from server.config import ConfigError

    return ConfigError(key, message)


def _int(table: Mapping[str, Any], key: str, where: str, default: int, lo: int, hi: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _error(where, f"must be an integer from {lo} to {hi}, not {value!r}")
    return value


def parse_web(table: Mapping[str, Any], tls: Any = None) -> WebConfig | None:
    """The checked ``[web]`` table; None when the region file has none (no web site). Raises ConfigError."""
    if not table:
        return None
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise _error(f"web.{unknown[0]}", f"unknown key (known: {', '.join(sorted(_KEYS))})")
    listen = table.get("listen")
    match = _LISTEN.fullmatch(listen) if isinstance(listen, str) else None
    if match is None:
        raise _error("web.listen", f"must look like \"http://127.0.0.1:8080\", not {listen!r}")
    scheme, host, port = match.group(1), match.group(2).strip("[]"), int(match.group(3))
    if port > 65535:
        raise _error("web.listen", f"port out of range in {listen!r}")
    certificate = key = None
    if scheme == "https":
        certificate = getattr(tls, "certificate", None)
        key = getattr(tls, "key", None)
        if certificate is None or key is None:
            raise _error("web.listen", "https needs the region's certificate: set [tls] certificate and key")
    ttl = table.get("session_ttl_s", 3600)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 60 <= ttl <= 30 * 86400:
        raise _error("web.session_ttl_s", f"must be a number of seconds from 60 to 2592000, not {ttl!r}")
    max_connections = _int(table, "max_connections", "web.max_connections", 256, 8, 100_000)
    max_rate = _int(table, "max_requests_per_s", "web.max_requests_per_s", 200, 1, 1_000_000)
    raw_formats = table.get("formats", [])
    if not isinstance(raw_formats, list):
        raise _error("web.formats", "must be an array of tables ([[web.formats]])")
    formats: list[FormatDefaults] = []
    for i, entry in enumerate(raw_formats):
        where = f"web.formats[{i}]"
        if not isinstance(entry, Mapping):
            raise _error(where, "must be a table")
        unknown = sorted(set(entry) - _FORMAT_KEYS)
        if unknown:
            raise _error(f"{where}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(_FORMAT_KEYS))})")
        text = entry.get("format")
        try:
            parse_game_format(text if isinstance(text, str) else "")
        except LocalProtocolError as exc:
            raise _error(f"{where}.format", str(exc)) from None
        cls = entry.get("classification", "action")
        if not isinstance(cls, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,32}", cls):
            raise _error(f"{where}.classification", f"must be a token, not {cls!r}")
        formats.append(FormatDefaults(
            format=text if isinstance(text, str) else "",
            classification=cls,
            latency_ms=_int(entry, "latency_ms", f"{where}.latency_ms", 150, 1, 10_000),
            jitter_ms=_int(entry, "jitter_ms", f"{where}.jitter_ms", 30, 0, 10_000),
            loss_ppm=_int(entry, "loss_ppm", f"{where}.loss_ppm", 20000, 0, 1_000_000),
            bandwidth_kbps=_int(entry, "bandwidth_kbps", f"{where}.bandwidth_kbps", 64, 1, 1_000_000),
        ))
    return WebConfig(scheme=scheme, host=host, port=port, session_ttl_s=float(ttl), max_connections=max_connections,
                     max_requests_per_s=max_rate,
                     formats=tuple(formats) or DEFAULT_FORMATS, certificate=certificate, key=key)
