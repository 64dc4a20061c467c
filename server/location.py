"""Location service (RFC 3261 section 10): address-of-record -> bindings with expiry. Pure: ``now`` comes in.

A binding remembers its Contact (requests for the player go there, RFC 3261 section 16.5, so a tool may register on
behalf of another process, as the SIPp harness does), where the REGISTER came from, and which access network that
source address belongs to (longest prefix match over the region's ``[[access_networks]]``), which the policy
component needs. A Contact that names a host instead of an IP address is reached at the source address (there is
no DNS in the server; a player behind a NAT is reached the same way).
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

from gamesdk.address import Address
from server.config import AccessNetworkRef
from server.prefixes import PrefixMatcher

__all__ = ["AccessNetworkMap", "Binding", "LocationService", "is_ip_literal"]

_IP_CACHE: dict[str, bool] = {}


def is_ip_literal(host: str) -> bool:
    """True when ``host`` is an IPv4 or IPv6 address (brackets allowed): a place we can send to without DNS."""
    # Cached: ipaddress parsing costs more than the rest of routing a BYE. Bounded (hosts come from the network).
    known = _IP_CACHE.get(host)
    if known is not None:
        return known
    try:
        ipaddress.ip_address(host.strip("[]"))
        result = True
    except ValueError:
        result = False
    if len(_IP_CACHE) < 4096:
        _IP_CACHE[host] = result
    return result


# Not frozen, though never changed once made: a frozen dataclass's __init__ sets each field through
# object.__setattr__ (3.6 µs more for ten fields in CPython), and logins make these. Hashable as before. Its
# __init__ written out (the same parameters): the compiled build runs a dataclass's generated one interpreted,
# where a written one stores the fields natively (every login makes one).
@dataclass(slots=True, unsafe_hash=True, init=False)
class Binding:
    """One registered contact of an address-of-record."""

    aor: str
    #: The Contact URI as registered (``sip:alice@127.0.0.1:5070;transport=udp``); becomes the Request-URI.
    contact: str
    expires_at: float
    #: The address the REGISTER came from (its IP decides the access network).
    source: Address
    access_network: str | None
    call_id: str
    cseq: int
    registered_at: float

    #: Where requests for the player are sent: the first Path hop, else the Contact's IP and port, else ``source``.
    target: Address | None = None
    #: The REGISTER's Path header values (RFC 3327): proxies between us and the player (an edge), put as Route
    #: on every request for the player so they stay on the path.
    path: tuple[str, ...] = ()

    def __init__(self, aor: str, contact: str, expires_at: float, source: Address, access_network: str | None,
                 call_id: str, cseq: int, registered_at: float, target: Address | None = None,
                 path: tuple[str, ...] = ()) -> None:
        self.aor = aor
        self.contact = contact
        self.expires_at = expires_at
        self.source = source
        self.access_network = access_network
        self.call_id = call_id
        self.cseq = cseq
        self.registered_at = registered_at
        self.target = target
        self.path = path

    @property
    def next_hop(self) -> Address:
        return self.target or self.source

    def expires_in(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))


class AccessNetworkMap:
    """IP address -> access network name, by longest prefix (an address may sit in nested prefixes); the same
    matcher as the policy's (``server.prefixes.PrefixMatcher``), so both name the same network for an address."""

    def __init__(self, networks: Iterable[AccessNetworkRef]) -> None:
        self._matcher: PrefixMatcher[str] = PrefixMatcher(
            (prefix, net.name) for net in networks for prefix in net.prefixes)

    def lookup(self, host: str) -> str | None:
        return self._matcher.lookup(host)


def _registered_at(binding: Binding) -> float:
    return binding.registered_at


_NONE: Mapping[str, Binding] = MappingProxyType({})


class LocationService:
    """Bindings per AOR. AORs are ``sip:user@domain`` in lower case (``SipUri.aor``)."""

    def __init__(self, networks: Sequence[AccessNetworkRef] = ()) -> None:
        self.networks = AccessNetworkMap(networks)
        self._bindings: dict[str, dict[str, Binding]] = {}
        # Source IP -> number of bindings registered from it (who may have in-dialog requests relayed).
        self._source_ips: dict[str, int] = {}
        # (expires_at, aor, contact) min-heap with lazy deletion: stale entries are skipped on pop.
        # One entry per binding (not one per refresh): at most one entry a binding counts on, at or before its
        # expiry, and where it is (by (aor, contact)). A refresh to a later expiry pushes nothing; when its entry
        # comes up early the binding's entry is put back at its expiry. (One push per REGISTER kept an entry per
        # refresh for the whole registration time: a player refreshing every minute with Expires 3600 left 60.)
        self._expiry: list[tuple[float, str, str]] = []
        self._expiry_at: dict[tuple[str, str], float] = {}
        # (aor, contact) -> the binding as it is now, or None once gone: what the driver has yet to persist so a
        # restart keeps every player logged in (take_changes()). Bounded by the number of bindings.
        self._changes: dict[tuple[str, str], Binding | None] = {}

    def __len__(self) -> int:
        return sum(len(b) for b in self._bindings.values())

    def aors(self) -> list[str]:
        return sorted(self._bindings)

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of ``aor``, most recent registration first."""
        found = self._bindings.get(aor)
        if not found:
            return []
        live = [b for b in found.values() if b.expires_at > now]
        if len(live) > 1:
            live.sort(key=_registered_at, reverse=True)
        return live

    def current(self, aor: str) -> Mapping[str, Binding]:
        """Every binding of ``aor`` held now (live or not yet expired by :meth:`expire`), by contact; read only."""
        return self._bindings.get(aor) or _NONE

    def get(self, aor: str, contact: str) -> Binding | None:
        return self._bindings.get(aor, {}).get(contact)

    def put(self, binding: Binding) -> Binding | None:
        """Add or refresh a binding; returns the binding it replaced, if any."""
        per_aor = self._bindings.setdefault(binding.aor, {})
        old = per_aor.get(binding.contact)
        per_aor[binding.contact] = binding
        if old is not None:
            self._forget_ip(old.source[0])
        self._source_ips[binding.source[0]] = self._source_ips.get(binding.source[0], 0) + 1
        key = (binding.aor, binding.contact)
        at = self._expiry_at.get(key)
        if at is None or binding.expires_at < at:
            heapq.heappush(self._expiry, (binding.expires_at, binding.aor, binding.contact))
            self._expiry_at[key] = binding.expires_at
        self._changes[key] = binding
        return old

    def restore(self, bindings: Iterable[Binding]) -> int:
        """Put bindings read back at start (not reported again by :meth:`take_changes`); the access network is
        looked up again, as the region file may have changed. Returns how many were restored."""
        count = 0
        for binding in bindings:
            self.put(replace(binding, access_network=self.networks.lookup(binding.source[0])))
            self._changes.pop((binding.aor, binding.contact), None)
            count += 1
        return count

    def take_changes(self) -> dict[tuple[str, str], Binding | None]:
        """Bindings added, refreshed (the binding) or removed (None) since the last call."""
        changes, self._changes = self._changes, {}
        return changes

    def set_networks(self, networks: Sequence[AccessNetworkRef]) -> None:
        """Use a new access network list (a reloaded region file) for new and existing bindings alike."""
        self.networks = AccessNetworkMap(networks)
        for per_aor in self._bindings.values():
            for contact, binding in per_aor.items():
                network = self.networks.lookup(binding.source[0])
                if network != binding.access_network:
                    per_aor[contact] = replace(binding, access_network=network)

    def bindings(self) -> list[Binding]:
        """Every binding held (live or not yet expired by :meth:`expire`), by AOR."""
        return [b for aor in sorted(self._bindings) for b in self._bindings[aor].values()]

    def remove(self, aor: str, contact: str) -> Binding | None:
        per_aor = self._bindings.get(aor)
        if per_aor is None:
            return None
        old = per_aor.pop(contact, None)
        if not per_aor:
            del self._bindings[aor]
        if old is not None:
            self._forget_ip(old.source[0])
            self._changes[(aor, contact)] = None
        return old

    def remove_all(self, aor: str) -> list[Binding]:
        gone = list(self._bindings.pop(aor, {}).values())
        for binding in gone:
            self._forget_ip(binding.source[0])
            self._changes[(aor, binding.contact)] = None
        return gone

    def _forget_ip(self, ip: str) -> None:
        count = self._source_ips.get(ip, 0) - 1
        if count > 0:
            self._source_ips[ip] = count
        else:
            self._source_ips.pop(ip, None)

    def has_source_ip(self, ip: str) -> bool:
        """Whether some player registered from this IP address (bindings not yet expired by :meth:`expire`)."""
        return ip in self._source_ips

    def next_expiry(self) -> float | None:
        """When the earliest binding may expire (possibly a stale heap entry: :meth:`expire` then does nothing)."""
        return self._expiry[0][0] if self._expiry else None

    def expire(self, now: float) -> list[Binding]:
        """Remove and return every binding whose time has come."""
        gone: list[Binding] = []
        heap = self._expiry
        tracked = self._expiry_at
        while heap and heap[0][0] <= now:
            at, aor, contact = heapq.heappop(heap)
            key = (aor, contact)
            if tracked.get(key) != at:
                continue  # an entry left behind by an earlier expiry pushed since: that one is counted on
            del tracked[key]
            binding = self._bindings.get(aor, {}).get(contact)
            if binding is None:
                continue
            if binding.expires_at <= now:
                self.remove(aor, contact)
                gone.append(binding)
            else:  # refreshed since the entry was pushed: back in at its expiry
                heapq.heappush(heap, (binding.expires_at, aor, contact))
                tracked[key] = binding.expires_at
        return gone
