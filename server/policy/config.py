"""server/policy/config: the region's access networks, QoS classes, tariff and policy settings.

Built from the plain mapping the server's TOML loader produces (the whole document; only the
``[[access_networks]]``, ``[[classes]]``, ``[tariff]`` and ``[policy]`` tables are read here). Every error is a
:class:`ConfigError` whose ``key`` names the offending key, e.g. ``access_networks[1].uplink_kbps``, so the CLI's
``check-config`` can point at the line to fix. Unknown keys inside these tables are errors too: a typo such as
``uplink_kpbs`` must not silently fall back to a default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from server.billing.tariff import ClassTariff, Tariff
from server.config import ConfigError
from server.prefixes import IpNetwork, PrefixError, PrefixMatcher, parse_prefixes

__all__ = [
    "AccessNetwork",
    "ClassTariff",
    "ConfigError",
    "IpNetwork",
    "PolicyConfig",
    "PolicySettings",
    "QosClass",
    "Tariff",
]


#: Names of networks and classes appear in Warning texts and URLs: keep them to a token-ish alphabet.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

#: A player plays one match at a time; a few more cover a rematch whose old session is still ending. A callee
#: that answers one INVITE many times, or a player that never confirms, cannot pin a network's capacity.
DEFAULT_MAX_RESERVATIONS_PER_PLAYER = 4
#: RFC 3261 section 13.3.1.4 / 17.1.1.2: 64*T1 = 32 s is the UAS's 2xx retransmission span, so a player that has
#: not confirmed within it never will (DESIGN section 4).
DEFAULT_CONFIRM_TIMEOUT_S = 32.0
#: DESIGN section 4: a lease lasts Expires + 32 s, so one refresh that runs into Timer F (32 s) still lands.
DEFAULT_LEASE_SLACK_S = 32.0
#: RFC 3903 leaves the minimum to the ESC; 60 s keeps PUBLISH load bounded while the SDK refreshes every 45 s.
DEFAULT_MIN_EXPIRES_S = 60
#: Upper bound on a lease; the SDK asks for 90 s (DESIGN section 4). One hour mirrors RFC 3903's default.
DEFAULT_MAX_EXPIRES_S = 3600
#: Used when a PUBLISH carries no Expires header (RFC 3903 section 6 step 4: a locally configured default).
DEFAULT_EXPIRES_S = 90
#: A policy round-trip longer than this counts as a failure (research/protocol.md (c): "cap the wait (e.g. 2 s)").
DEFAULT_POLICY_TIMEOUT_S = 2.0
DEFAULT_MAX_SESSIONS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessNetwork:
    """One access network of the region, with the capacity the policy server may hand out."""

    name: str
    prefixes: tuple[IpNetwork, ...]
    uplink_kbps: int
    """Capacity from players towards the network (what players send), kbit/s."""
    downlink_kbps: int
    """Capacity towards players (what players receive), kbit/s."""
    rtt_ms: int = 0
    """Typical round-trip time between a player and the region's edge, ms."""
    jitter_ms: int = 0
    loss_ppm: int = 0
    max_sessions: int = DEFAULT_MAX_SESSIONS


@dataclass(frozen=True, slots=True, kw_only=True)
class QosClass:
    """A game classification (``a=gsdk-class``) mapped to a priority and a share of every access network."""

    name: str
    priority: int = 0
    """Higher is more important; handed back in grants (N5 ``resPrio``) and shown by ``sessions``."""
    max_share: float = 1.0
    """Fraction (0 < share <= 1) of each direction's capacity this class may hold in one access network."""
    aliases: tuple[str, ...] = ()
    """Other classifications this class serves, by an explicit rule (``aliases = ["moba"]``); any other
    unknown classification is refused, never put into a class it did not ask for."""
    catch_all: bool = False
    """Serves every classification: only the implicit class of a region file without ``[[classes]]``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySettings:
    """The ``[policy]`` table: timers and where the policy server runs."""

    url: str | None = None
    """``http://host:port`` of a separate policy process; ``None`` = embedded in the SIP server."""
    listen: str = "127.0.0.1:7080"
    """Address ``gamesdk-server policy`` listens on (host:port)."""
    token: str | None = None
    """The bearer token a separate policy process requires of its callers (and the SIP server sends)."""
    timeout_s: float = DEFAULT_POLICY_TIMEOUT_S
    confirm_timeout_s: float = DEFAULT_CONFIRM_TIMEOUT_S
    lease_slack_s: float = DEFAULT_LEASE_SLACK_S
    min_expires_s: int = DEFAULT_MIN_EXPIRES_S
    max_expires_s: int = DEFAULT_MAX_EXPIRES_S
    default_expires_s: int = DEFAULT_EXPIRES_S
    max_reservations_per_player: int = DEFAULT_MAX_RESERVATIONS_PER_PLAYER
    """Reservations one player may hold at once (held or ending); a FINAL beyond it is refused."""

    @property
    def listen_host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyConfig:
    """Everything the policy server and billing need, validated."""

    networks: tuple[AccessNetwork, ...]
    classes: tuple[QosClass, ...]
    default_class: str
    tariff: Tariff
    settings: PolicySettings

    # Lookup tables built once (the config is immutable); admission runs them per request.
    _by_name: dict[str, AccessNetwork] = field(init=False, repr=False, compare=False)
    _classes_by_name: dict[str, QosClass] = field(init=False, repr=False, compare=False)
    # Address -> network, longest prefix first (server.prefixes: the same matcher as the SIP side's location).
    _matcher: PrefixMatcher[AccessNetwork] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {n.name: n for n in self.networks})
        by_name = {c.name: c for c in self.classes}
        for c in self.classes:
            by_name.update(dict.fromkeys(c.aliases, c))
        object.__setattr__(self, "_classes_by_name", by_name)
        object.__setattr__(self, "_matcher",
                           PrefixMatcher((prefix, net) for net in self.networks for prefix in net.prefixes))

    def network(self, name: str) -> AccessNetwork | None:
        return self._by_name.get(name)

    def known_class(self, name: str | None) -> QosClass | None:
        """The class serving classification ``name`` (its own name or an alias); the default class when the
        request names none; ``None`` for a classification no rule of this region covers."""
        if not name:
            return self._classes_by_name[self.default_class]
        found = self._classes_by_name.get(name)
        if found is None and any(c.catch_all for c in self.classes):
            return self._classes_by_name[self.default_class]
        return found

    def qos_class(self, name: str | None) -> QosClass:
        """The class called ``name``; missing names map to the default class (admission has already refused
        unknown ones, see :meth:`known_class`)."""
        if name:
            found = self._classes_by_name.get(name)
            if found is not None:
                return found
        return self._classes_by_name[self.default_class]

    def network_for_address(self, address: str) -> AccessNetwork | None:
        """The access network whose prefix matches ``address`` most specifically (longest prefix wins)."""
        return self._matcher.lookup(address)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> PolicyConfig:
        """Validate the policy tables of a parsed region config. Raises :class:`ConfigError`."""
        return _parse(doc)


# ---------------------------------------------------------------------------------------------------------------
# Parsing helpers: each takes the key path so every error names its key.


def _table(value: object, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"must be a table, not {type(value).__name__}")
    return value


def _check_keys(table: Mapping[str, Any], allowed: set[str], key: str) -> None:
    for name in table:
        if name not in allowed:
            raise ConfigError(f"{key}.{name}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _int(table: Mapping[str, Any], name: str, key: str, *, default: int | None = None, minimum: int = 0) -> int:
    full = f"{key}.{name}"
    if name not in table:
        if default is None:
            raise ConfigError(full, "is required")
        return default
    value = table[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(full, f"must be an integer, not {value!r}")
    if value < minimum:
        raise ConfigError(full, f"must be >= {minimum}, not {value}")
    return value


def _float(table: Mapping[str, Any], name: str, key: str, *, default: float, minimum: float = 0.0) -> float:
    full = f"{key}.{name}"
    if name not in table:
        return default
    value = table[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(full, f"must be a number, not {value!r}")
    if value < minimum:
        raise ConfigError(full, f"must be >= {minimum}, not {value}")
    return float(value)


def _money(table: Mapping[str, Any], name: str, key: str) -> Decimal:
    """A tariff rate as an exact decimal: ``0.02`` (a TOML float, read as the digits written) or ``"0.02"``."""
    full = f"{key}.{name}"
    value = table.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(full, f"must be a number like 0.02, not {value!r}")
    try:
        # repr() of a float is the shortest text that reads back as it, i.e. what the operator wrote.
        amount = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise ConfigError(full, f"must be a number like 0.02, not {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ConfigError(full, f"must be a finite number >= 0, not {value!r}")
    return amount


def _name(table: Mapping[str, Any], key: str) -> str:
    full = f"{key}.name"
    value = table.get("name")
    if value is None:
        raise ConfigError(full, "is required")
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ConfigError(full, f"must be 1-64 letters, digits, '.', '_' or '-', not {value!r}")
    return value


def _list(value: object, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(key, f"must be an array, not {type(value).__name__}")
    return value


_NETWORK_KEYS = {
    "name", "prefixes", "uplink_kbps", "downlink_kbps", "rtt_ms", "jitter_ms", "loss_ppm", "max_sessions",
}
_CLASS_KEYS = {"name", "priority", "max_share", "default", "aliases"}
_TARIFF_CLASS_KEYS = {"per_minute", "per_kbps_minute"}
_POLICY_KEYS = {
    "url", "listen", "token", "timeout_s", "confirm_timeout_s", "lease_slack_s", "min_expires_s", "max_expires_s",
    "default_expires_s", "default_class", "max_reservations_per_player",
}


def _parse_network(raw: object, key: str) -> AccessNetwork:
    table = _table(raw, key)
    _check_keys(table, _NETWORK_KEYS, key)
    name = _name(table, key)
    try:
        prefixes = parse_prefixes(table.get("prefixes"))  # the one parser of these lists (server/prefixes.py)
    except PrefixError as exc:
        raise ConfigError(f"{key}.{exc.key}", exc.message) from None
    uplink = _int(table, "uplink_kbps", key, minimum=1)
    downlink = _int(table, "downlink_kbps", key, minimum=1)
    return AccessNetwork(
        name=name,
        prefixes=prefixes,
        uplink_kbps=uplink,
        downlink_kbps=downlink,
        rtt_ms=_int(table, "rtt_ms", key, default=0),
        jitter_ms=_int(table, "jitter_ms", key, default=0),
        loss_ppm=_int(table, "loss_ppm", key, default=0),
        max_sessions=_int(table, "max_sessions", key, default=DEFAULT_MAX_SESSIONS, minimum=1),
    )


def _parse_class(raw: object, key: str) -> tuple[QosClass, bool]:
    table = _table(raw, key)
    _check_keys(table, _CLASS_KEYS, key)
    name = _name(table, key)
    share = _float(table, "max_share", key, default=1.0)
    if not 0.0 < share <= 1.0:
        raise ConfigError(f"{key}.max_share", f"must be a fraction in (0, 1], not {share}")
    priority = table.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigError(f"{key}.priority", f"must be an integer, not {priority!r}")
    is_default = table.get("default", False)
    if not isinstance(is_default, bool):
        raise ConfigError(f"{key}.default", f"must be true or false, not {is_default!r}")
    aliases: list[str] = []
    for i, alias in enumerate(_list(table.get("aliases", []), f"{key}.aliases")):
        if not isinstance(alias, str) or not _NAME_RE.match(alias):
            raise ConfigError(f"{key}.aliases[{i}]", f"must be 1-64 letters, digits, '.', '_' or '-', not {alias!r}")
        aliases.append(alias)
    return QosClass(name=name, priority=priority, max_share=share, aliases=tuple(aliases)), is_default


def _parse(doc: Mapping[str, Any]) -> PolicyConfig:
    doc = _table(doc, "<config>")

    # Access networks -----------------------------------------------------------------------------------------
    networks: list[AccessNetwork] = []
    seen_prefixes: dict[IpNetwork, str] = {}
    for i, raw in enumerate(_list(doc.get("access_networks", []), "access_networks")):
        key = f"access_networks[{i}]"
        net = _parse_network(raw, key)
        if any(n.name == net.name for n in networks):
            raise ConfigError(f"{key}.name", f"duplicate access network {net.name!r}")
        for j, prefix in enumerate(net.prefixes):
            if prefix in seen_prefixes:
                raise ConfigError(
                    f"{key}.prefixes[{j}]", f"{prefix} is already a prefix of {seen_prefixes[prefix]!r}"
                )
            seen_prefixes[prefix] = net.name
        networks.append(net)

    # Classes -------------------------------------------------------------------------------------------------
    classes: list[QosClass] = []
    flagged: list[str] = []
    for i, raw in enumerate(_list(doc.get("classes", []), "classes")):
        key = f"classes[{i}]"
        cls, is_default = _parse_class(raw, key)
        if any(c.name == cls.name for c in classes):
            raise ConfigError(f"{key}.name", f"duplicate class {cls.name!r}")
        if any(cls.name in c.aliases for c in classes):
            raise ConfigError(f"{key}.name", f"{cls.name!r} is already an alias of another class (aliases)")
        for alias in cls.aliases:
            if alias == cls.name or any(alias == c.name or alias in c.aliases for c in classes):
                raise ConfigError(f"{key}.aliases", f"{alias!r} already names a class or another class's alias")
        if is_default:
            if flagged:
                raise ConfigError(f"{key}.default", f"only one class may be the default (already {flagged[0]!r})")
            flagged.append(cls.name)
        classes.append(cls)

    # Policy settings -----------------------------------------------------------------------------------------
    ptable = _table(doc.get("policy", {}), "policy")
    _check_keys(ptable, _POLICY_KEYS, "policy")
    default_class: str
    if "default_class" in ptable:
        value = ptable["default_class"]
        if not isinstance(value, str) or not any(c.name == value for c in classes):
            names = ", ".join(c.name for c in classes) or "none configured"
            raise ConfigError("policy.default_class", f"{value!r} is not a configured class ({names})")
        default_class = value
    elif flagged:
        default_class = flagged[0]
    elif classes:
        default_class = classes[0].name
    else:
        # No [[classes]] at all: one class that may use the whole network, so an example config runs as is.
        classes.append(QosClass(name="default", catch_all=True))
        default_class = "default"
    settings = _parse_settings(ptable)

    # Tariff --------------------------------------------------------------------------------------------------
    ttable = _table(doc.get("tariff", {}), "tariff")
    currency = ttable.get("currency", "EUR")
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
        raise ConfigError("tariff.currency", f"must be a 3-letter currency code, not {currency!r}")
    class_tariffs: dict[str, ClassTariff] = {}
    for cname, raw in ttable.items():
        if cname == "currency":
            continue
        key = f"tariff.{cname}"
        if not any(c.name == cname for c in classes):
            raise ConfigError(key, f"no class named {cname!r} (classes: {', '.join(c.name for c in classes)})")
        entry = _table(raw, key)
        _check_keys(entry, _TARIFF_CLASS_KEYS, key)
        class_tariffs[cname] = ClassTariff(
            per_minute=_money(entry, "per_minute", key),
            per_kbps_minute=_money(entry, "per_kbps_minute", key),
        )
    tariff = Tariff(currency=currency.upper(), classes=class_tariffs, default_class=default_class)
    return PolicyConfig(
        networks=tuple(networks),
        classes=tuple(classes),
        default_class=default_class,
        tariff=tariff,
        settings=settings,
    )


def _parse_settings(ptable: Mapping[str, Any]) -> PolicySettings:
    url = ptable.get("url")
    if url is not None:
        if not isinstance(url, str) or not re.fullmatch(r"https?://[^/\s:]+(:\d{1,5})?/?", url):
            raise ConfigError("policy.url", f"must look like \"http://127.0.0.1:7080\" or \"https://...\" "
                                            f"(TLS with the region's [tls] certificate), not {url!r}")
        url = url.rstrip("/")
    listen = ptable.get("listen", "127.0.0.1:7080")
    if not isinstance(listen, str) or not re.fullmatch(r"(\[[0-9A-Fa-f:]+\]|[^\s:\[\]]+):\d{1,5}", listen):
        raise ConfigError("policy.listen", f"must be host:port, not {listen!r}")
    if int(listen.rpartition(":")[2]) > 65535:
        raise ConfigError("policy.listen", f"port out of range in {listen!r}")
    token = ptable.get("token")
    if token is not None and (not isinstance(token, str) or not re.fullmatch(r"[\x21-\x7e]{16,512}", token)):
        raise ConfigError("policy.token", "must be 16 to 512 printable ASCII characters without spaces "
                                          "(e.g. the output of: python3 -c \"import secrets; "
                                          "print(secrets.token_urlsafe(32))\")")
    if url is not None and token is None:
        raise ConfigError("policy.token", "is required with policy.url: the policy process refuses callers "
                                          "without its bearer token")
    timeout = _float(ptable, "timeout_s", "policy", default=DEFAULT_POLICY_TIMEOUT_S)
    if timeout <= 0:
        raise ConfigError("policy.timeout_s", "must be > 0")
    min_expires = _int(ptable, "min_expires_s", "policy", default=DEFAULT_MIN_EXPIRES_S, minimum=1)
    max_expires = _int(ptable, "max_expires_s", "policy", default=DEFAULT_MAX_EXPIRES_S, minimum=1)
    if max_expires < min_expires:
        raise ConfigError("policy.max_expires_s", f"must be >= min_expires_s ({min_expires})")
    default_expires = _int(ptable, "default_expires_s", "policy", default=DEFAULT_EXPIRES_S, minimum=1)
    if not min_expires <= default_expires <= max_expires:
        raise ConfigError(
            "policy.default_expires_s", f"must lie between min_expires_s ({min_expires}) and max_expires_s"
        )
    return PolicySettings(
        url=url,
        listen=listen,
        token=token,
        timeout_s=timeout,
        confirm_timeout_s=_float(ptable, "confirm_timeout_s", "policy", default=DEFAULT_CONFIRM_TIMEOUT_S),
        lease_slack_s=_float(ptable, "lease_slack_s", "policy", default=DEFAULT_LEASE_SLACK_S),
        min_expires_s=min_expires,
        max_expires_s=max_expires,
        default_expires_s=default_expires,
        max_reservations_per_player=_int(ptable, "max_reservations_per_player", "policy",
                                         default=DEFAULT_MAX_RESERVATIONS_PER_PLAYER, minimum=1),
    )
