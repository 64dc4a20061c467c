"""server/random_pool: the system's random bytes read in chunks (:class:`RandomPool`).

Compiled in the compiled build (setup.py MYPYC_MODULES): the policy draws four tokens a call on its 2xx, each a call
into the interpreter (some 1,700 instructions) while this module was interpreted, and the server's SIP identifiers
(:class:`PooledIdFactory`: two To tags a login) are cut here. Its classes are then native, which
take no weak references, so a forked child is told by a generation number (:data:`_forks`, counted up by the
at-fork hook) that each pool compares with its own, not by a registry of the pools.
"""

from __future__ import annotations

import binascii
import os
import threading
from collections.abc import Callable
from typing import Final

from gamesdk.sip.ids import BRANCH_MAGIC_COOKIE

__all__ = ["RANDOM_POOL_BYTES", "HexTokens", "PooledIdFactory", "RandomPool", "UrlTokens"]

#: Bytes read from the system's random source at a time by :class:`RandomPool`.
RANDOM_POOL_BYTES = 4096

#: The forks this process is a child of (``[0]`` in the process that imported the module): a pool whose bytes or
#: tokens were read in another generation hands none of them out.
_forks: Final = [0]
#: Held while a pool forgets what it read in another generation (made anew in the child, as the pools' own locks).
_forget_lock: Final = [threading.Lock()]


class RandomPool:
    """``os.urandom`` read :data:`RANDOM_POOL_BYTES` at a time and handed out in slices: the tags, branches and
    nonces of a call (six draws of 8-15 bytes) cost one ``getrandom`` system call per some 300 draws instead of one
    each. The bytes are the kernel's CSPRNG output either way, each handed out once (under a lock: the loop and the
    policy's thread may share a pool); a forked child starts with an empty pool, never its parent's bytes."""

    def __init__(self, chunk: int = RANDOM_POOL_BYTES) -> None:
        self._chunk = chunk
        self._lock = threading.Lock()
        self._buffer = b""
        self._at = 0
        self._generation = _forks[0]

    def __call__(self, n: int) -> bytes:
        if n > self._chunk:
            return os.urandom(n)
        if self._generation != _forks[0]:
            self._forget()
        with self._lock:
            at = self._at
            end = at + n
            if end > len(self._buffer):
                self._buffer = os.urandom(self._chunk)
                at, end = 0, n
            self._at = end
            return self._buffer[at:end]

    def _forget(self) -> None:
        # (a new lock: one another thread of the parent held at the fork stays held in the child; set before the
        # generation, which tells the other threads the pool is ready)
        with _forget_lock[0]:
            if self._generation != _forks[0]:
                self._buffer = b""
                self._at = 0
                self._lock = threading.Lock()
                self._generation = _forks[0]


class _Tokens:
    """Fresh tokens, each handed out once: :meth:`_cut` makes a list of them at a time (from one read of the random
    source), and a token is one step of a list iterator (atomic under the GIL: the loop and the policy's thread may
    share the tokens), not a draw and an encoding each; a forked child starts with none of its parent's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: Callable[[], str] = iter(()).__next__
        self._generation = _forks[0]

    def __call__(self) -> str:
        return self.take()

    def take(self) -> str:
        """A fresh token (what calling the tokens gives; compiled, a native call from a compiled caller)."""
        if self._generation == _forks[0]:
            try:
                return self._next()
            except StopIteration:
                pass
        return self._refill()

    def _cut(self) -> list[str]:
        raise NotImplementedError

    def _refill(self) -> str:
        if self._generation != _forks[0]:
            self._forget()
        with self._lock:
            try:
                return self._next()  # another thread filled it meanwhile
            except StopIteration:
                tokens = iter(self._cut())
                token = next(tokens)
                self._next = tokens.__next__
                return token

    def _forget(self) -> None:
        with _forget_lock[0]:
            if self._generation != _forks[0]:
                self._next = iter(()).__next__
                self._lock = threading.Lock()
                self._generation = _forks[0]


class HexTokens(_Tokens):
    """Fresh tokens of ``nbytes`` random bytes as lower-case hex, as ``os.urandom(nbytes).hex()`` gives them (the
    policy's ``P-Media-Authorization`` tokens and billing record ids, two per reservation): :data:`RANDOM_POOL_BYTES`
    read at a time, made hex and cut into tokens at once."""

    def __init__(self, nbytes: int = 16, chunk: int = RANDOM_POOL_BYTES) -> None:
        if not 0 < nbytes <= chunk:
            raise ValueError(f"a token of {nbytes} bytes from chunks of {chunk}")
        super().__init__()
        self._nbytes = nbytes
        self._chunk = chunk - chunk % nbytes

    def _cut(self) -> list[str]:
        # (The chunk is whole tokens: hex() puts a space between every token's bytes and split() cuts there, both
        # in C, where a comprehension of slices was some 1,200 instructions a token.)
        return os.urandom(self._chunk).hex(" ", self._nbytes).split(" ")


_COOKIE: Final = BRANCH_MAGIC_COOKIE  # (bound here: compiled, a constant of this module is native)
#: base64's two characters that are not token characters, to base64url's (RFC 4648 section 5).
_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")


class UrlTokens(_Tokens):
    """Fresh tokens of ``nbytes`` bytes of ``random_bytes`` (a multiple of 3) as unpadded base64url, the SIP
    identifiers :class:`gamesdk.sip.ids.RandomIdFactory` makes of such bytes: a chunk read at a time, encoded at
    once and cut every ``nbytes * 4 // 3`` characters (base64 encodes 3 bytes as 4 characters, so a token's
    characters are its own bytes' alone)."""

    def __init__(self, random_bytes: Callable[[int], bytes], nbytes: int, chunk: int = RANDOM_POOL_BYTES) -> None:
        if not 0 < nbytes <= chunk or nbytes % 3:
            raise ValueError(f"a token of {nbytes} bytes (a multiple of 3) from chunks of {chunk}")
        super().__init__()
        self._random_bytes = random_bytes
        self._chunk = chunk - chunk % nbytes
        self._width = nbytes // 3 * 4

    def _cut(self) -> list[str]:
        text = binascii.b2a_base64(self._random_bytes(self._chunk), newline=False).translate(_URLSAFE).decode()
        width = self._width
        return [text[at:at + width] for at in range(0, len(text), width)]


class PooledIdFactory:
    """The server's SIP identifiers (an :class:`gamesdk.sip.ids.IdFactory`): the same values of the same random
    source as :class:`gamesdk.sip.ids.RandomIdFactory`'s (a tag of 9 bytes, a branch and a cnonce of 12, a
    Call-ID of 15, as base64url), cut from :class:`UrlTokens`. Compiled, a tag is a step of a list iterator where
    the SDK's factory, interpreted, drew and encoded 9 bytes (some 4,000 instructions: two a login, the 401's
    and the 200's To tag, and the 407's of a call)."""

    def __init__(self, random_bytes: Callable[[int], bytes], call_id_host: str | None = None) -> None:
        self.call_id_host = call_id_host
        self._tags = UrlTokens(random_bytes, 9)
        self._twelves = UrlTokens(random_bytes, 12)
        self._call_ids = UrlTokens(random_bytes, 15)

    def branch(self) -> str:
        return _COOKIE + self._twelves.take()

    def tag(self) -> str:
        return self._tags.take()

    def call_id(self) -> str:
        value = self._call_ids.take()
        return f"{value}@{self.call_id_host}" if self.call_id_host else value

    def cnonce(self) -> str:
        return self._twelves.take()


def _forget_pools_in_child() -> None:
    _forget_lock[0] = threading.Lock()
    _forks[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_in_child)
