"""The ``[relay]`` table of a region file: the coturn relay its players use, and their time-limited credentials.

```toml
[relay]
urls = ["turn:203.0.113.7:3478?transport=udp"]   # what players are told (RFC 7065 URIs)
shared_secret = "a long random string"            # = coturn's static-auth-secret
credential_lifetime_s = 86400                     # how long one login's TURN password works
```

coturn checks these credentials itself (``use-auth-secret``, its "TURN REST API" scheme): username =
``<unix expiry>:<player>``, password = base64(HMAC-SHA1(shared_secret, username)); it never needs the region's
accounts. The region puts them in a ``Relay`` header of each REGISTER 200 OK; ``gamesdk-server relay-config``
prints the turnserver.conf lines that match the table. Pure: the wall-clock time comes in as an argument.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_DENIED_PEER_RANGES", "RELAY_HEADER", "RelayConfig", "parse_relay", "relay_headers",
           "turn_credentials", "turnserver_conf"]

#: The header of a REGISTER 200 OK that carries one TURN server and the player's credentials for it.
RELAY_HEADER = "Relay"

#: Peer addresses coturn must refuse to relay to: private, loopback, link-local, CGN and multicast ranges.
#: Besides keeping the relay from being a door into the operator's own networks, coturn 4.6 closes a whole
#: allocation when asked to relay to an address it cannot route (a private host candidate of the opponent);
#: ``denied-peer-ip`` turns that into a plain 403 and the allocation survives.
DEFAULT_DENIED_PEER_RANGES = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
                              "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
                              "::1/128", "fc00::/7", "fe80::/10")

_TURN_URL = re.compile(r"^turns?:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?(?:\?transport=(udp|tcp))?$")


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """The relay a region hands its players."""

    urls: tuple[str, ...]
    shared_secret: str
    credential_lifetime_s: int = 86400
    #: coturn's realm (``realm=`` in turnserver.conf); the region's domain unless set.
    realm: str = ""
    #: Peer ranges coturn refuses (``denied-peer-ip``); ``allowed_peer_ips`` punches holes in them
    #: (``allowed-peer-ip``, e.g. a lab whose "public" side uses private addresses).
    denied_peer_ips: tuple[str, ...] = DEFAULT_DENIED_PEER_RANGES
    allowed_peer_ips: tuple[str, ...] = ()


def parse_relay(table: Mapping[str, Any], domain: str) -> RelayConfig | None:
    """Check the ``[relay]`` table (``None`` when the region has no relay)."""
    from server.config import ConfigError

    if not table:
        return None
    allowed = {"urls", "shared_secret", "credential_lifetime_s", "realm", "denied_peer_ips", "allowed_peer_ips"}
    for key in table:
        if key not in allowed:
            raise ConfigError(f"relay.{key}", f"unknown key (known: {', '.join(sorted(allowed))})")
    urls = table.get("urls")
    if not isinstance(urls, list) or not urls:
        raise ConfigError("relay.urls", "must be a non-empty list like [\"turn:203.0.113.7:3478?transport=udp\"]")
    for i, url in enumerate(urls):
        if not isinstance(url, str) or _TURN_URL.match(url) is None:
            raise ConfigError(f"relay.urls[{i}]", f"{url!r} is not a TURN URL like 'turn:HOST:PORT?transport=udp'")
    secret = table.get("shared_secret")
    if not isinstance(secret, str) or len(secret) < 16:
        raise ConfigError("relay.shared_secret", "must be a string of at least 16 characters (coturn's "
                          "static-auth-secret)")
    lifetime = table.get("credential_lifetime_s", 86400)
    if not isinstance(lifetime, int) or isinstance(lifetime, bool) or not 60 <= lifetime <= 7 * 86400:
        raise ConfigError("relay.credential_lifetime_s", "must be a whole number of seconds from 60 to 604800")
    realm = table.get("realm", domain)
    if not isinstance(realm, str) or not realm:
        raise ConfigError("relay.realm", "must be a non-empty string")
    ranges: dict[str, tuple[str, ...]] = {}
    for key, default in (("denied_peer_ips", DEFAULT_DENIED_PEER_RANGES), ("allowed_peer_ips", ())):
        value = table.get(key, list(default))
        if not isinstance(value, list):
            raise ConfigError(f"relay.{key}", "must be a list of IP prefixes like '10.0.0.0/8'")
        for j, text in enumerate(value):
            try:
                ipaddress.ip_network(str(text), strict=True)
            except ValueError as exc:
                raise ConfigError(f"relay.{key}[{j}]", f"{text!r} is not an IP prefix: {exc}") from None
        ranges[key] = tuple(str(v) for v in value)
    return RelayConfig(urls=tuple(urls), shared_secret=secret, credential_lifetime_s=lifetime, realm=realm,
                       denied_peer_ips=ranges["denied_peer_ips"], allowed_peer_ips=ranges["allowed_peer_ips"])


def turn_credentials(secret: str, player: str, expires_at: int) -> tuple[str, str]:
    """coturn's ``use-auth-secret`` credentials: (``expiry:player``, base64(HMAC-SHA1(secret, username)))."""
    username = f"{expires_at}:{player}"
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def relay_headers(relay: RelayConfig, player: str, wall_now: float) -> list[tuple[str, str]]:
    """One ``Relay`` header per TURN URL: ``<turn:...>;username="...";password="...";expires=N``."""
    username, password = turn_credentials(relay.shared_secret, player, int(wall_now) + relay.credential_lifetime_s)
    params = f'username="{username}";password="{password}";expires={relay.credential_lifetime_s}'
    return [(RELAY_HEADER, f"<{url}>;{params}") for url in relay.urls]


def _network_range(prefix: str) -> str:
    # turnserver.conf takes ranges as "first-last" (or one address).
    net = ipaddress.ip_network(prefix)
    if net.num_addresses == 1:
        return str(net.network_address)
    return f"{net.network_address}-{net.broadcast_address}"


def turnserver_conf(relay: RelayConfig, region: str) -> str:
    """turnserver.conf lines for a coturn that serves ``relay`` (listening port, realm, secret, peer rules)."""
    match = _TURN_URL.match(relay.urls[0])
    assert match is not None  # parse_relay checked every URL
    host, port = match.group(1).strip("[]"), int(match.group(2) or 3478)
    lines = [f"# coturn for region {region}: generated by 'gamesdk-server relay-config'", f"listening-port={port}"]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass  # a name: coturn listens on every address, as it does by default
    else:
        lines.append(f"listening-ip={host}")
    lines += [
        f"realm={relay.realm}",
        "use-auth-secret",
        f"static-auth-secret={relay.shared_secret}",
        "fingerprint",
        "no-tcp-relay",
        "no-multicast-peers",
        "no-cli",
        "no-tls",
        "no-dtls",
        f"max-allocate-lifetime={min(3600, relay.credential_lifetime_s)}",
    ]
    lines += [f"denied-peer-ip={_network_range(p)}" for p in relay.denied_peer_ips]
    lines += [f"allowed-peer-ip={_network_range(p)}" for p in relay.allowed_peer_ips]
    return "\n".join(lines) + "\n"
