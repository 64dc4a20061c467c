"""server/random_pool: the system's random bytes read in chunks (:class:`RandomPool`)."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable

__all__ = ["RANDOM_POOL_BYTES", "HexTokens", "RandomPool"]

#: Bytes read from the system's random source at a time by :class:`RandomPool`.
RANDOM_POOL_BYTES = 4096

_pools: weakref.WeakSet[RandomPool | HexTokens] = weakref.WeakSet()


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
        _pools.add(self)

    def __call__(self, n: int) -> bytes:
        if n > self._chunk:
            return os.urandom(n)
        with self._lock:
            at = self._at
            end = at + n
            if end > len(self._buffer):
                self._buffer = os.urandom(self._chunk)
                at, end = 0, n
            self._at = end
            return self._buffer[at:end]

    def _forget(self) -> None:
        self._buffer = b""
        self._at = 0
        self._lock = threading.Lock()


class HexTokens:
    """Fresh tokens of ``nbytes`` random bytes as lower-case hex, as ``os.urandom(nbytes).hex()`` gives them (the
    policy's ``P-Media-Authorization`` tokens and billing record ids, two per reservation): :data:`RANDOM_POOL_BYTES`
    read at a time, made hex and cut into tokens at once, each handed out once. A token is one step of a list
    iterator (atomic under the GIL: the loop and the policy's thread may share the tokens), not a pool's draw and
    a ``hex()`` each (some 5,600 instructions a token in a pure build, 1,000 now); a forked child starts with none
    of its parent's."""

    def __init__(self, nbytes: int = 16, chunk: int = RANDOM_POOL_BYTES) -> None:
        if not 0 < nbytes <= chunk:
            raise ValueError(f"a token of {nbytes} bytes from chunks of {chunk}")
        self._nbytes = nbytes
        self._chunk = chunk - chunk % nbytes
        self._lock = threading.Lock()
        self._next: Callable[[], str] = iter(()).__next__
        _pools.add(self)

    def __call__(self) -> str:
        try:
            return self._next()
        except StopIteration:
            pass
        with self._lock:
            try:
                return self._next()  # another thread filled it meanwhile
            except StopIteration:
                # (The chunk is whole tokens: hex() puts a space between every token's bytes and split() cuts
                # there, both in C, where a comprehension of slices was some 1,200 instructions a token.)
                tokens = iter(os.urandom(self._chunk).hex(" ", self._nbytes).split(" "))
                token = next(tokens)
                self._next = tokens.__next__
                return token

    def _forget(self) -> None:
        self._next = iter(()).__next__
        self._lock = threading.Lock()


def _forget_pools_in_child() -> None:
    for pool in list(_pools):
        pool._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_in_child)
