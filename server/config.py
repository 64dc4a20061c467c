"""Regional server configuration: one TOML file per region, one typed :class:`ServerConfig`.

Every error is a :class:`ConfigError` whose ``key`` names the offending key in dotted form
(``peers[1].address``), so ``gamesdk-server check-config`` can say exactly what to fix.

The ``[[access_networks]]``, ``[[classes]]``, ``[tariff]`` and ``[policy]`` tables belong to the policy
component: this module checks only what the SIP side needs from them (access network names and prefixes, for
the location service) and keeps each table as a raw mapping for the policy parser.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gamesdk.address import Address
from gamesdk.errors import GameSdkError
from server.prefixes import IpNetwork, PrefixError, parse_prefixes
from server.relay import RelayConfig, parse_relay
from server.tls_config import TRANSPORTS, TlsConfig, parse_tls, tls_path

__all__ = [
    "AccessNetworkRef",
    "AuthConfig",
    "ConfigError",
    "LimitsConfig",
    "ListenAddress",
    "PeerConfig",
    "RegistrarConfig",
    "ServerConfig",
    "TimerSettings",
    "load_config",
    "parse_address",
]

SECONDS = 1.0
KIB = 1024

#: RFC 8760 algorithm names we can challenge with; SHA-256 first (RFC 8760 section 2.3: most preferred first).
KNOWN_DIGEST_ALGORITHMS = ("SHA-256", "MD5")


class ConfigError(GameSdkError):
    """A configuration value is missing or wrong. ``key`` is the dotted path of the key (``region.listen``,
    ``classes[0].max_share``); the policy tables' checks in :mod:`server.policy.config` raise it too."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where a server listens or a peer is reached: ``udp:HOST:PORT`` or ``tls:HOST:PORT`` (SIP over TLS)."""

    transport: str
    host: str
    port: int

    @property
    def addr(self) -> Address:
        return (self.host, self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """A federated region: its SIP domain and the address of its regional server.

    Over ``tls:`` the peer must present a certificate for ``tls_name`` (its domain unless set) chaining to
    ``ca`` (the region's ``[tls] ca`` unless set): a peer is a certificate, not a source address.
    """

    domain: str
    address: ListenAddress
    tls_name: str | None = None
    ca: Path | None = None

    @property
    def certificate_name(self) -> str:
        return self.tls_name or self.domain


@dataclass(frozen=True, slots=True)
class AccessNetworkRef:
    """What the SIP side needs of an access network: its name and IP prefixes (the policy owns the rest)."""

    name: str
    prefixes: tuple[IpNetwork, ...]


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Digest authentication (RFC 8760) and failure throttling."""

    realm: str
    #: Challenge order. SHA-256 only by default: with MD5 offered as well, an on-path party can strip the SHA-256
    #: challenge. Deployments serving MD5-only tools list it (SIPp 3.6.1 reads only the first challenge: MD5 first).
    digest_algorithms: tuple[str, ...] = ("SHA-256",)
    #: How long a nonce is accepted; after that the client gets ``stale=true`` and retries without a prompt.
    nonce_lifetime_s: float = 300 * SECONDS
    #: Failures (per user and per source address) within ``failure_window_s`` before responses are slowed down.
    slow_after_failures: int = 3
    #: Extra delay per failure beyond ``slow_after_failures``, capped at ``max_delay_s``.
    delay_step_s: float = 0.5 * SECONDS
    max_delay_s: float = 4 * SECONDS
    #: Failures within the window after which the user or address is refused for ``block_s``.
    block_after_failures: int = 10
    failure_window_s: float = 300 * SECONDS
    block_s: float = 300 * SECONDS
    #: Edge proxies (addresses or prefixes) whose requests are throttled by the client address they report in
    #: their Via (``received``), not by the proxy's own: one abuser behind the edge does not lock out the rest.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


@dataclass(frozen=True, slots=True)
class RegistrarConfig:
    """RFC 3261 section 10.3 limits. 60 s minimum keeps refresh load bounded; 3600 s is the RFC's default."""

    min_expires_s: int = 60
    max_expires_s: int = 3600
    default_expires_s: int = 3600
    max_bindings_per_aor: int = 4


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Input limits. 8 KiB is ample for our INVITEs (about 1.5 KiB with the SDP); larger datagrams get 513."""

    max_message_bytes: int = 8 * KIB
    #: Requests per second one source address may send before it has authenticated (challenges and refusals
    #: cost it nothing to cause); beyond the burst the excess is dropped unanswered.
    unauthenticated_per_s: float = 100.0
    unauthenticated_burst: int = 400
    #: Hard cap on the proxy's transactions (and on other tables keyed by outside input); beyond it new requests
    #: get 503 statelessly.
    max_transactions: int = 100_000


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """RFC 3261 section 17.1.1.1 timer values (T1 = 500 ms RTT estimate, T2 = 4 s, T4 = 5 s) and Timer C (> 3 min)."""

    t1_s: float = 0.5
    t2_s: float = 4.0
    t4_s: float = 5.0
    timer_c_s: float = 180.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything one regional server needs. Build it with :func:`load_config` or :meth:`from_mapping`."""

    name: str
    domain: str
    listen: ListenAddress
    database: Path
    peers: tuple[PeerConfig, ...] = ()
    access_networks: tuple[AccessNetworkRef, ...] = ()
    auth: AuthConfig = field(default_factory=lambda: AuthConfig(realm=""))
    registrar: RegistrarConfig = field(default_factory=RegistrarConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    timers: TimerSettings = field(default_factory=TimerSettings)
    #: Interval of the OPTIONS pings that measure the round-trip time to each peer.
    options_interval_s: float = 10 * SECONDS
    log_level: str = "INFO"
    #: "text" (one line: time level logger message) or "json" (one JSON object per line).
    log_format: str = "text"
    #: The local control socket of ``gamesdk-server ctl`` (``[control] socket``); None = ``<database>.ctl``.
    control_socket: Path | None = None
    #: The address written into Via and pings when the server listens on a wildcard (``region.advertise``).
    advertise: Address | None = None
    #: "auto" (uvloop when installed, else asyncio), "asyncio" or "uvloop" (research/perf.md: uvloop passes
    #: about 1.4x the datagrams of the default loop).
    event_loop: str = "auto"
    #: While draining, leave new UDP requests unanswered (retransmitted to the restarted server) rather than 503.
    drain_quiet_udp: bool = True
    #: Raw policy tables, handed to the policy component's own parser.
    access_networks_raw: tuple[Mapping[str, Any], ...] = ()
    classes_raw: tuple[Mapping[str, Any], ...] = ()
    tariff_raw: Mapping[str, Any] = field(default_factory=dict)
    policy_raw: Mapping[str, Any] = field(default_factory=dict)
    #: The ``[web]`` table (the player site and operator console), checked by :mod:`server.web.config`.
    web: Any = None
    #: The file this was read from, if any (relative paths were resolved against its folder).
    source: Path | None = None
    #: More listening addresses beside ``listen`` (``tls:`` ones); ``region.listen`` may be a list.
    listen_more: tuple[ListenAddress, ...] = ()
    tls: TlsConfig = field(default_factory=TlsConfig)
    #: The coturn relay handed to players (``[relay]``, :mod:`server.relay`); None = no relay.
    relay: RelayConfig | None = None

    @property
    def advertised(self) -> Address:
        """Host and port that others reach this server at (Via sent-by, pings): ``region.advertise`` or the
        UDP listen address."""
        return self.advertise or (self.listen.host, self.listen.port)

    @property
    def control_path(self) -> Path:
        return self.control_socket or self.database.with_name(self.database.name + ".ctl")

    @property
    def listens(self) -> tuple[ListenAddress, ...]:
        """Every address the region listens on, ``listen`` first."""
        return (self.listen, *self.listen_more)

    @property
    def tls_listen(self) -> ListenAddress | None:
        return next((a for a in self.listens if a.transport == "tls"), None)

    def peer_for_domain(self, domain: str) -> PeerConfig | None:
        domain = domain.lower()
        for peer in self.peers:
            if peer.domain == domain:
                return peer
        return None

    def with_listen(self, host: str, port: int) -> ServerConfig:
        """A copy listening elsewhere (tests and the demo bind port 0 and learn the real port)."""
        return replace(self, listen=ListenAddress(self.listen.transport, host, port))

    def with_tls_listen(self, host: str, port: int) -> ServerConfig:
        """A copy whose tls: address is ``host:port`` (the TLS listener bound port 0)."""
        more = tuple(ListenAddress("tls", host, port) if a.transport == "tls" else a for a in self.listen_more)
        return replace(self, listen_more=more)

    def with_peer_address(self, domain: str, host: str, port: int) -> ServerConfig:
        """A copy with one peer moved (tests start two regions on free ports)."""
        peers = tuple(
            replace(p, address=ListenAddress(p.address.transport, host, port)) if p.domain == domain else p
            for p in self.peers
        )
        return replace(self, peers=peers)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> ServerConfig:
        """Check and convert a parsed TOML document. Raises :class:`ConfigError` naming the wrong key."""
        return _build(data, base_dir or Path.cwd(), None)


def load_config(path: str | Path) -> ServerConfig:
    """Read and check a region's TOML file. Raises :class:`ConfigError` (key ``file`` for I/O and syntax)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError("file", f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("file", f"cannot read {path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("file", f"{path} is not valid TOML: {exc}") from None
    return _build(data, path.resolve().parent, path.resolve())


def parse_address(key: str, value: object) -> ListenAddress:
    """``udp:HOST:PORT`` or ``tls:HOST:PORT`` (IPv6 hosts in brackets) -> :class:`ListenAddress`."""
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string like 'udp:127.0.0.1:5060', not {_kind(value)}")
    transport, sep, rest = value.partition(":")
    transport = transport.lower()
    if not sep or transport not in TRANSPORTS:
        raise ConfigError(key, f"{value!r}: expected 'udp:HOST:PORT' or 'tls:HOST:PORT'")
    if rest.startswith("["):
        host, bracket, port_text = rest[1:].partition("]")
        if not bracket or not port_text.startswith(":"):
            raise ConfigError(key, f"{value!r}: expected 'udp:[IPv6]:PORT'")
        port_text = port_text[1:]
    else:
        host, sep, port_text = rest.rpartition(":")
        if not sep:
            raise ConfigError(key, f"{value!r}: missing ':PORT'")
    if not host:
        raise ConfigError(key, f"{value!r}: missing host")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(key, f"{value!r}: host must be an IP address (no DNS in the server)") from None
    # ASCII digits only: str.isdigit also takes U+00B2, which int() refuses.
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ConfigError(key, f"{value!r}: port must be a number from 0 to 65535")
    return ListenAddress(transport, host, int(port_text))


def _listens(value: object) -> tuple[ListenAddress, tuple[ListenAddress, ...]]:
    """``region.listen``: one address or a list; exactly one ``udp:`` address (the first in the list)."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError("region.listen", "must name at least one address")
    addresses = [parse_address(f"region.listen[{i}]" if isinstance(value, list) else "region.listen", v)
                 for i, v in enumerate(items)]
    udp = [a for a in addresses if a.transport == "udp"]
    if len(udp) != 1:
        raise ConfigError("region.listen", "needs exactly one 'udp:HOST:PORT' address (federation pings, "
                                           "legacy tools)")
    if sum(a.transport == "tls" for a in addresses) > 1:
        raise ConfigError("region.listen", "at most one 'tls:HOST:PORT' address")
    return udp[0], tuple(a for a in addresses if a.transport != "udp")


# --- helpers -----------------------------------------------------------------------------------------


def _kind(value: object) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _table(data: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        if required:
            raise ConfigError(path, "missing table")
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"must be a table, not {_kind(value)}")
    return value


def _array_of_tables(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise ConfigError(key, f"must be an array of tables ([[{key}]])")
    return list(value)


def _str(table: Mapping[str, Any], key: str, path: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if value is None:
        raise ConfigError(path, "missing")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(path, f"must be a non-empty string, not {_kind(value)}")
    return value.strip()


def _number(table: Mapping[str, Any], key: str, path: str, default: float, *, minimum: float = 0.0) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, f"must be a number, not {_kind(value)}")
    if value < minimum:
        raise ConfigError(path, f"must be at least {minimum:g}, not {value}")
    return float(value)


def _int(table: Mapping[str, Any], key: str, path: str, default: int, *, minimum: int = 0) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"must be an integer, not {_kind(value)}")
    if value < minimum:
        raise ConfigError(path, f"must be at least {minimum}, not {value}")
    return value


def _domain(table: Mapping[str, Any], key: str, path: str) -> str:
    domain = _str(table, key, path).lower()
    labels = domain.split(".")
    if any(not label or not all(c.isalnum() or c == "-" for c in label) for label in labels):
        raise ConfigError(path, f"{domain!r} is not a valid domain name")
    return domain


def _advertise(region: Mapping[str, Any], listen: ListenAddress) -> Address | None:
    """``region.advertise`` = "HOST" or "HOST:PORT" (IPv6 in brackets); required for a wildcard listen."""
    wildcard = listen.host in ("0.0.0.0", "::")
    if "advertise" not in region:
        if wildcard:
            raise ConfigError("region.advertise", f"region.listen is the wildcard {listen.host}: set the address "
                              "others reach this server at, e.g. advertise = \"203.0.113.7\" (it goes into Via)")
        return None
    text = _str(region, "advertise", "region.advertise")
    port = listen.port
    host = text
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ConfigError("region.advertise", f"{text!r}: expected '[IPv6]' or '[IPv6]:PORT'")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) <= 65535:
            raise ConfigError("region.advertise", f"{text!r}: port must be a number from 1 to 65535")
        port = int(port_text)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError("region.advertise", f"{text!r}: must be an IP address (no DNS in the server)") from None
    if address.is_unspecified:
        raise ConfigError("region.advertise", f"{text!r} is a wildcard, not an address others can reach")
    return str(address), port


def _prefixes(value: object, key: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, "must be a list of IP addresses or prefixes, e.g. [\"10.0.0.5\", \"10.1.0.0/24\"]")
    out = []
    for i, text in enumerate(value):
        try:
            out.append(ipaddress.ip_network(str(text), strict=True))
        except ValueError as exc:
            raise ConfigError(f"{key}[{i}]", f"{text!r} is not an IP address or prefix: {exc}") from None
    return tuple(out)


def _unknown_keys(table: Mapping[str, Any], allowed: set[str], path: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{path}.{key}" if path else key, "unknown key (a typo?)")


_TOP_KEYS = {"region", "peers", "access_networks", "classes", "tariff", "policy", "auth", "registrar",
             "limits", "timers", "federation", "log", "runtime", "tls", "relay", "web", "control"}


def _build(data: Mapping[str, Any], base_dir: Path, source: Path | None) -> ServerConfig:
    _unknown_keys(data, _TOP_KEYS, "")
    region = _table(data, "region", "region", required=True)
    _unknown_keys(region, {"name", "domain", "listen", "database", "advertise"}, "region")
    name = _str(region, "name", "region.name")
    domain = _domain(region, "domain", "region.domain")
    listen, listen_more = _listens(region.get("listen", "udp:127.0.0.1:5060"))
    db_text = _str(region, "database", "region.database", f"{name}.sqlite3")
    database = Path(db_text).expanduser()
    if not database.is_absolute():
        # Relative to the config file, so `gamesdk-server run --config examples/eu.toml` works from anywhere.
        database = base_dir / database

    advertise = _advertise(region, listen)

    peers: list[PeerConfig] = []
    for i, peer in enumerate(_array_of_tables(data, "peers")):
        path = f"peers[{i}]"
        _unknown_keys(peer, {"domain", "address", "tls_name", "ca"}, path)
        peer_domain = _domain(peer, "domain", f"{path}.domain")
        if peer_domain == domain:
            raise ConfigError(f"{path}.domain", f"{peer_domain!r} is this region's own domain")
        if any(p.domain == peer_domain for p in peers):
            raise ConfigError(f"{path}.domain", f"{peer_domain!r} is listed twice")
        tls_name = _str(peer, "tls_name", f"{path}.tls_name", peer_domain).lower()
        peer_ca = tls_path(peer, "ca", f"{path}.ca", base_dir)
        peer_address = parse_address(f"{path}.address", peer.get("address"))
        if peer_address.addr in ((listen.host, listen.port), advertise) and peer_address.port != 0:
            raise ConfigError(f"{path}.address", f"{peer_address.host}:{peer_address.port} is this server itself")
        peers.append(PeerConfig(peer_domain, peer_address,
                                tls_name=None if tls_name == peer_domain else tls_name, ca=peer_ca))

    networks_raw = _array_of_tables(data, "access_networks")
    networks: list[AccessNetworkRef] = []
    for i, net in enumerate(networks_raw):
        path = f"access_networks[{i}]"
        net_name = _str(net, "name", f"{path}.name")
        if any(n.name == net_name for n in networks):
            raise ConfigError(f"{path}.name", f"{net_name!r} is listed twice")
        try:
            prefixes = parse_prefixes(net.get("prefixes"))  # the one parser of these lists, the policy's too
        except PrefixError as exc:
            raise ConfigError(f"{path}.{exc.key}", exc.message) from None
        networks.append(AccessNetworkRef(net_name, prefixes))

    auth_t = _table(data, "auth", "auth")
    _unknown_keys(auth_t, {"realm", "digest_algorithms", "nonce_lifetime_s", "slow_after_failures",
                           "delay_step_s", "max_delay_s", "block_after_failures", "failure_window_s",
                           "block_s", "trusted_proxies"}, "auth")
    algorithms_value = auth_t.get("digest_algorithms", ["SHA-256"])
    if not isinstance(algorithms_value, list) or not algorithms_value:
        raise ConfigError("auth.digest_algorithms", "must be a non-empty list, e.g. [\"SHA-256\", \"MD5\"]")
    algorithms: list[str] = []
    for j, alg in enumerate(algorithms_value):
        canonical = next((k for k in KNOWN_DIGEST_ALGORITHMS if isinstance(alg, str) and k == alg.upper()), None)
        if canonical is None:
            raise ConfigError(f"auth.digest_algorithms[{j}]",
                              f"{alg!r} is not one of {', '.join(KNOWN_DIGEST_ALGORITHMS)}")
        if canonical in algorithms:
            raise ConfigError(f"auth.digest_algorithms[{j}]", f"{canonical} is listed twice")
        algorithms.append(canonical)
    defaults = AuthConfig(realm=domain)
    auth = AuthConfig(
        realm=_str(auth_t, "realm", "auth.realm", domain),
        digest_algorithms=tuple(algorithms),
        nonce_lifetime_s=_number(auth_t, "nonce_lifetime_s", "auth.nonce_lifetime_s", defaults.nonce_lifetime_s,
                                 minimum=1),
        slow_after_failures=_int(auth_t, "slow_after_failures", "auth.slow_after_failures",
                                 defaults.slow_after_failures, minimum=1),
        delay_step_s=_number(auth_t, "delay_step_s", "auth.delay_step_s", defaults.delay_step_s),
        max_delay_s=_number(auth_t, "max_delay_s", "auth.max_delay_s", defaults.max_delay_s),
        block_after_failures=_int(auth_t, "block_after_failures", "auth.block_after_failures",
                                  defaults.block_after_failures, minimum=1),
        failure_window_s=_number(auth_t, "failure_window_s", "auth.failure_window_s", defaults.failure_window_s,
                                 minimum=1),
        block_s=_number(auth_t, "block_s", "auth.block_s", defaults.block_s),
        trusted_proxies=_prefixes(auth_t.get("trusted_proxies", []), "auth.trusted_proxies"),
    )
    if auth.block_after_failures < auth.slow_after_failures:
        raise ConfigError("auth.block_after_failures", "must not be below auth.slow_after_failures")

    reg_t = _table(data, "registrar", "registrar")
    _unknown_keys(reg_t, {"min_expires_s", "max_expires_s", "default_expires_s", "max_bindings_per_aor"},
                  "registrar")
    rdef = RegistrarConfig()
    registrar = RegistrarConfig(
        min_expires_s=_int(reg_t, "min_expires_s", "registrar.min_expires_s", rdef.min_expires_s, minimum=1),
        max_expires_s=_int(reg_t, "max_expires_s", "registrar.max_expires_s", rdef.max_expires_s, minimum=1),
        default_expires_s=_int(reg_t, "default_expires_s", "registrar.default_expires_s", rdef.default_expires_s,
                               minimum=1),
        max_bindings_per_aor=_int(reg_t, "max_bindings_per_aor", "registrar.max_bindings_per_aor",
                                  rdef.max_bindings_per_aor, minimum=1),
    )
    if registrar.max_expires_s < registrar.min_expires_s:
        raise ConfigError("registrar.max_expires_s", "must not be below registrar.min_expires_s")
    if not registrar.min_expires_s <= registrar.default_expires_s <= registrar.max_expires_s:
        raise ConfigError("registrar.default_expires_s", "must lie between min_expires_s and max_expires_s")

    lim_t = _table(data, "limits", "limits")
    _unknown_keys(lim_t, {"max_message_bytes", "unauthenticated_per_s", "unauthenticated_burst",
                          "max_transactions"}, "limits")
    lim_d = LimitsConfig()
    limits = LimitsConfig(
        _int(lim_t, "max_message_bytes", "limits.max_message_bytes", lim_d.max_message_bytes, minimum=1024),
        _number(lim_t, "unauthenticated_per_s", "limits.unauthenticated_per_s", lim_d.unauthenticated_per_s,
                minimum=0.1),
        _int(lim_t, "unauthenticated_burst", "limits.unauthenticated_burst", lim_d.unauthenticated_burst, minimum=1),
        _int(lim_t, "max_transactions", "limits.max_transactions", lim_d.max_transactions, minimum=100))
    if limits.max_message_bytes > 65507:
        raise ConfigError("limits.max_message_bytes", "must not exceed 65507 (the largest UDP payload)")

    tim_t = _table(data, "timers", "timers")
    _unknown_keys(tim_t, {"t1_s", "t2_s", "t4_s", "timer_c_s"}, "timers")
    tdef = TimerSettings()
    timers = TimerSettings(
        t1_s=_number(tim_t, "t1_s", "timers.t1_s", tdef.t1_s, minimum=0.01),
        t2_s=_number(tim_t, "t2_s", "timers.t2_s", tdef.t2_s, minimum=0.01),
        t4_s=_number(tim_t, "t4_s", "timers.t4_s", tdef.t4_s, minimum=0.01),
        timer_c_s=_number(tim_t, "timer_c_s", "timers.timer_c_s", tdef.timer_c_s, minimum=1),
    )

    if timers.t1_s > timers.t2_s:
        raise ConfigError("timers.t1_s", f"{timers.t1_s:g} s is above timers.t2_s ({timers.t2_s:g} s): RFC 3261 "
                          "retransmissions start at T1 and grow up to T2")

    fed_t = _table(data, "federation", "federation")
    _unknown_keys(fed_t, {"options_interval_s"}, "federation")
    options_interval_s = _number(fed_t, "options_interval_s", "federation.options_interval_s", 10.0, minimum=0.1)

    log_t = _table(data, "log", "log")
    _unknown_keys(log_t, {"level", "format"}, "log")
    log_format = _str(log_t, "format", "log.format", "text").lower()
    if log_format not in {"text", "json"}:
        raise ConfigError("log.format", f"{log_format!r} is not one of text, json")
    ctl_t = _table(data, "control", "control")
    _unknown_keys(ctl_t, {"socket"}, "control")
    control_socket = None
    if "socket" in ctl_t:
        control_socket = Path(_str(ctl_t, "socket", "control.socket")).expanduser()
        if not control_socket.is_absolute():
            control_socket = base_dir / control_socket
        if len(str(control_socket).encode()) > 100:
            raise ConfigError("control.socket", f"{control_socket} is too long for a UNIX socket path (100 bytes)")
    log_level = _str(log_t, "level", "log.level", "INFO").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError("log.level", f"{log_level!r} is not one of DEBUG, INFO, WARNING, ERROR")

    run_t = _table(data, "runtime", "runtime")
    _unknown_keys(run_t, {"event_loop", "drain_udp"}, "runtime")
    drain_udp = _str(run_t, "drain_udp", "runtime.drain_udp", "quiet").lower()
    if drain_udp not in {"quiet", "503"}:
        raise ConfigError("runtime.drain_udp", f"{drain_udp!r} is not one of quiet, 503")
    event_loop = _str(run_t, "event_loop", "runtime.event_loop", "auto").lower()
    if event_loop not in {"auto", "asyncio", "uvloop"}:
        raise ConfigError("runtime.event_loop", f"{event_loop!r} is not one of auto, asyncio, uvloop")

    tls = parse_tls(_table(data, "tls", "tls"), base_dir, listen_more, tuple(peers))
    relay = parse_relay(_table(data, "relay", "relay"), domain)
    from server.web.config import parse_web  # the web table's own parser (it imports ConfigError from here)

    web = parse_web(_table(data, "web", "web"), tls)

    return ServerConfig(
        name=name,
        domain=domain,
        listen=listen,
        listen_more=listen_more,
        tls=tls,
        relay=relay,
        database=database,
        peers=tuple(peers),
        access_networks=tuple(networks),
        auth=auth,
        registrar=registrar,
        limits=limits,
        timers=timers,
        options_interval_s=options_interval_s,
        log_level=log_level,
        log_format=log_format,
        control_socket=control_socket,
        advertise=advertise,
        event_loop=event_loop,
        drain_quiet_udp=drain_udp == "quiet",
        access_networks_raw=tuple(networks_raw),
        classes_raw=tuple(_array_of_tables(data, "classes")),
        tariff_raw=_table(data, "tariff", "tariff"),
        policy_raw=_table(data, "policy", "policy"),
        web=web,
        source=source,
    )
