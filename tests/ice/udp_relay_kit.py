"""A UDP relay between players and their region, for tests on loopback: one upstream socket per player socket
(like a NAT's mapping), ``edit`` applied to every datagram, and ``rebind()`` to give every player socket a new
mapping (a NAT rebinding toward the region)."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable

from gamesdk.address import Address


class OnPathRelay:
    """Forwards datagrams between players and a region (one upstream socket per player socket, like a NAT),
    passing each through ``edit`` on its way."""

    def __init__(self, region: Address, edit: Callable[[bytes], bytes] = lambda data: data) -> None:
        self.region = region
        self.edit = edit
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.address: Address = self.front.getsockname()[:2]
        self._up: dict[Address, socket.socket] = {}
        self._back: dict[socket.socket, Address] = {}
        self._stop = threading.Event()
        self.edited = 0
        self.rebinds = 0
        #: Every datagram that passed, with its direction: (to_region, player address, data).
        self.seen: list[tuple[bool, Address, bytes]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                watched = [self.front, *self._back]
            try:
                ready, _, _ = select.select(watched, [], [], 0.05)
            except (OSError, ValueError):
                continue  # a socket rebind() closed meanwhile
            with self._lock:
                self._pass(ready)

    def _pass(self, ready: list[socket.socket]) -> None:
        for sock in ready:
            if sock is not self.front and sock not in self._back:
                continue  # closed by rebind() meanwhile
            try:
                data, src = sock.recvfrom(65535)
            except OSError:
                continue  # e.g. the ICMP error of a datagram sent to a socket gone by now
            changed = self.edit(data)
            self.edited += changed != data
            if len(self.seen) < 10_000:
                self.seen.append((sock is self.front, src if sock is self.front else self._back[sock], data))
            if sock is self.front:
                up = self._up.get(src)
                if up is None:
                    if len(self._up) >= 16:
                        continue  # bounded: a test has a handful of player sockets
                    up = self._up[src] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    up.bind(("127.0.0.1", 0))
                    self._back[up] = src
                up.sendto(changed, self.region)
            else:
                self.front.sendto(changed, self._back[sock])

    def rebind(self) -> None:
        """Forget every mapping: the next datagram of each player socket reaches the region from a new port."""
        with self._lock:
            for sock in self._back:
                sock.close()
            self._up.clear()
            self._back.clear()
            self.rebinds += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in (self.front, *self._back):
            sock.close()
