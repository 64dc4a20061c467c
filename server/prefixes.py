"""IP prefixes of the region's ``[[access_networks]]``: the one parser of their ``prefixes`` lists and the one
longest-prefix matcher, shared by the SIP side (``server.config`` / ``server.location``: a player's network from
the address it registered from) and the policy (``server.policy.config``: admission), so both always agree on
which network an address is in. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

__all__ = ["IpNetwork", "PrefixError", "PrefixMatcher", "parse_prefixes"]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")

#: Bound of the per-address cache of a matcher: cleared when full (a flood of distinct sources costs one parse each).
CACHE_MAX = 4096


class PrefixError(ValueError):
    """A ``prefixes`` list that cannot be used; ``key`` names the offending entry (``prefixes[1]``, relative)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def parse_prefixes(value: object) -> tuple[IpNetwork, ...]:
    """The ``prefixes`` of one access network: a non-empty list of IPv4/IPv6 prefixes without host bits.

    Raises :class:`PrefixError` whose ``key`` is ``"prefixes"`` or ``"prefixes[i]"``."""
    if value is None:
        raise PrefixError("prefixes", "is required (e.g. [\"192.0.2.0/24\"])")
    if not isinstance(value, list):
        raise PrefixError("prefixes", f"must be a list of IP prefixes like \"192.0.2.0/24\", not {value!r}")
    if not value:
        raise PrefixError("prefixes", "must list at least one prefix")
    out: list[IpNetwork] = []
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise PrefixError(f"prefixes[{i}]", f"must be a string like \"192.0.2.0/24\", not {text!r}")
        try:
            out.append(ipaddress.ip_network(text, strict=True))
        except ValueError as exc:
            raise PrefixError(f"prefixes[{i}]", f"{text!r} is not an IP prefix: {exc}") from None
    return tuple(out)


class PrefixMatcher(Generic[T]):
    """Address text -> the value of its longest matching prefix (or ``None``), in one dict probe per prefix length,
    with a bounded per-address cache (the same few player addresses are asked several times per call).

    ``lookup(address)`` is the cache's own ``__getitem__``: a known address is answered in C, without a Python
    frame (nine per call through the server, called from compiled modules, each some 600 instructions as a
    method); an address it has not seen is matched by the cache's ``__missing__`` and kept."""

    def __init__(self, entries: Iterable[tuple[IpNetwork, T]]) -> None:
        tables: dict[int, dict[int, dict[int, T]]] = {4: {}, 6: {}}
        for prefix, value in entries:
            tables[prefix.version].setdefault(prefix.prefixlen, {}).setdefault(int(prefix.network_address), value)
        # Per IP version: [(prefixlen, {network address as int: value})], longest prefix first.
        self._cache: _Matches[T] = _Matches({v: sorted(t.items(), key=lambda item: -item[0])
                                             for v, t in tables.items()})
        self.lookup: Callable[[str], T | None] = self._cache.__getitem__


class _Matches(dict[str, "T | None"]):
    """The addresses a :class:`PrefixMatcher` has matched and their values; a missing one is matched, kept (the
    whole cache cleared when it holds :data:`CACHE_MAX`) and returned."""

    def __init__(self, tables: dict[int, list[tuple[int, dict[int, T]]]]) -> None:
        super().__init__()
        self._tables = tables

    def __missing__(self, address: str) -> T | None:
        found = self._match(address)
        if len(self) >= CACHE_MAX:
            self.clear()
        self[address] = found
        return found

    def _match(self, address: str) -> T | None:
        try:
            ip = ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            return None
        value = int(ip)
        bits = ip.max_prefixlen
        for prefixlen, table in self._tables[ip.version]:
            found = table.get(value & (((1 << prefixlen) - 1) << (bits - prefixlen)))
            if found is not None:
                return found
        return None
