"""Identifiers a SIP element invents: Via branches, tags, Call-IDs and digest cnonces.

Randomness never comes from a module global: an :class:`IdFactory` is passed to whatever needs new
identifiers, so tests can inject :class:`SequentialIdFactory` and get repeatable messages. The default
:class:`RandomIdFactory` is built from a random-bytes callable (``os.urandom`` in production).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["BRANCH_MAGIC_COOKIE", "IdFactory", "RandomIdFactory", "SequentialIdFactory"]

#: RFC 3261 section 8.1.1.7: a branch starting with this cookie promises RFC 3261 transaction matching.
BRANCH_MAGIC_COOKIE = "z9hG4bK"


class IdFactory(Protocol):
    """Where new SIP identifiers come from."""

    def branch(self) -> str:
        """A new Via branch, unique in space and time, starting with ``z9hG4bK`` (RFC 3261 8.1.1.7)."""
        ...

    def tag(self) -> str:
        """A new From/To tag with at least 32 bits of randomness (RFC 3261 19.3)."""
        ...

    def call_id(self) -> str:
        """A new globally unique Call-ID (RFC 3261 8.1.1.4)."""
        ...

    def cnonce(self) -> str:
        """A new digest client nonce (RFC 7616 3.4)."""
        ...


def _token(data: bytes) -> str:
    # base64url is a subset of the SIP `token` characters once the padding is gone (RFC 3261 25.1:
    # alphanum / "-" / "_" ...), so the value is valid in a branch, a tag and a Call-ID alike.
    # (binascii and the translation table directly: base64.urlsafe_b64encode is the same through two more calls)
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


_URLSAFE = bytes.maketrans(b"+/", b"-_")


@dataclass(frozen=True, slots=True)
class RandomIdFactory:
    """Identifiers from a random-bytes source, e.g. ``RandomIdFactory(os.urandom)``.

    ``call_id_host`` is appended as ``@host`` to Call-IDs when given (RFC 3261 8.1.1.4 suggests it).
    """

    random_bytes: Callable[[int], bytes]
    call_id_host: str | None = None

    def branch(self) -> str:
        # 96 bits: collisions are out of reach for the lifetime of any transaction table.
        return BRANCH_MAGIC_COOKIE + _token(self.random_bytes(12))

    def tag(self) -> str:
        return _token(self.random_bytes(9))

    def call_id(self) -> str:
        value = _token(self.random_bytes(15))
        return f"{value}@{self.call_id_host}" if self.call_id_host else value

    def cnonce(self) -> str:
        return _token(self.random_bytes(12))


@dataclass(slots=True)
class SequentialIdFactory:
    """Deterministic identifiers for tests: ``z9hG4bK-t1``, ``tag-t2``, ``call-t3@test``, ``cnonce-t4``."""

    prefix: str = "t"
    counter: int = field(default=0)

    def _next(self) -> str:
        self.counter += 1
        return f"{self.prefix}{self.counter}"

    def branch(self) -> str:
        return f"{BRANCH_MAGIC_COOKIE}-{self._next()}"

    def tag(self) -> str:
        return f"tag-{self._next()}"

    def call_id(self) -> str:
        return f"call-{self._next()}@test"

    def cnonce(self) -> str:
        return f"cnonce-{self._next()}"
