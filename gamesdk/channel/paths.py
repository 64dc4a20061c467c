"""gamesdk/channel/paths: the PATH_CHALLENGE values a channel sends and the answers it waits for.

A challenge proves that whoever answers receives datagrams at the address it was sent to (RFC 9000 section 8.2).
The values come from a key only this side holds (derived from its own private key), so neither an attacker
nor the peer itself can answer for an address it does not receive at: the peer knows the traffic keys, so a
value it could compute would let a hostile peer "validate" a victim's address.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict

from gamesdk.address import Address

__all__ = ["CHALLENGE_BYTES", "PathChallenges"]

CHALLENGE_BYTES = 8
#: Outstanding challenges remembered at most; older ones are forgotten (their answers then count for nothing).
MAX_OUTSTANDING = 16


class PathChallenges:
    """Makes challenge values and matches answers to the address each challenge went to."""

    __slots__ = ("_counter", "_key", "_last", "_outstanding")

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._counter = 0
        self._outstanding: OrderedDict[bytes, Address] = OrderedDict()
        self._last = b"\x80"

    def new(self, addr: Address) -> bytes:
        """A fresh challenge for a datagram to ``addr``."""
        self._counter += 1
        value = hmac.new(self._key, self._counter.to_bytes(8, "big"), hashlib.sha256).digest()[:CHALLENGE_BYTES]
        self._outstanding[value] = addr
        if len(self._outstanding) > MAX_OUTSTANDING:
            self._outstanding.popitem(last=False)
        self._last = value
        return value

    def answered(self, value: bytes) -> Address | None:
        """The address the challenge ``value`` went to, if it is one of ours and still outstanding (once)."""
        return self._outstanding.pop(value, None)

    def forget(self) -> None:
        """Drop every outstanding challenge: their answers will count for nothing."""
        self._outstanding.clear()

    def jitter(self) -> float:
        """A factor in [0.8, 1.2] from the last challenge (RFC 7675 randomises consent checks so)."""
        return 0.8 + 0.4 * self._last[0] / 255

    def __repr__(self) -> str:
        return f"PathChallenges({len(self._outstanding)} outstanding)"
