"""server/random_pool: the system's random bytes read in chunks (:class:`RandomPool`)."""

from __future__ import annotations

import os
import threading
import weakref

__all__ = ["RANDOM_POOL_BYTES", "RandomPool"]

#: Bytes read from the system's random source at a time by :class:`RandomPool`.
RANDOM_POOL_BYTES = 4096

_pools: weakref.WeakSet[RandomPool] = weakref.WeakSet()


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


def _forget_pools_in_child() -> None:
    for pool in list(_pools):
        pool._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_in_child)
