"""The asyncio client's loop readers on its game path sockets never outlive the sockets.

A session's path socket is closed while the client hands out its events (the session ended). A reader left on
that descriptor number breaks the next socket the program opens with the same number: the loop keeps the old
registration, so the new socket's reader never fires (seen as an OPTIONS probe of a test waiting forever after a
game ended), or the client later removes the reader of a socket it does not own.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from gamesdk import ClientConfig, GameClient


class _Agent:
    registered = False


class _CoreClosingAPathInItsEvents:
    """Stands for PlayerSockets: one path socket, closed when the events are taken (a session ended)."""

    def __init__(self) -> None:
        self.agent = _Agent()
        self.flow = None
        self.path = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.path.bind(("127.0.0.1", 0))

    def pump_paths(self, now: float) -> None:
        return None

    def transmit(self, send: Any = None) -> None:
        return None

    def path_sockets(self) -> list[socket.socket]:
        return [self.path] if self.path.fileno() >= 0 else []

    def events(self) -> list[Any]:
        self.path.close()  # PlayerSockets._drop_path of an ended session
        return []

    def next_timer(self) -> float | None:
        return None


def test_a_path_closed_while_events_are_handed_out_leaves_no_reader() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        client = GameClient(ClientConfig(username="alice", password="pw", domain="eu.example",
                                         server=("127.0.0.1", 9)))
        core = _CoreClosingAPathInItsEvents()
        fd = core.path.fileno()
        client._core = core  # type: ignore[assignment]
        client._loop = loop
        client._pump()
        assert fd not in loop._selector.get_map()  # type: ignore[attr-defined]
        # The next socket with that number is read normally.
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        probe.setblocking(False)
        try:
            assert probe.fileno() == fd
            probe.sendto(b"ping", probe.getsockname())
            assert await asyncio.wait_for(loop.sock_recv(probe, 16), 5.0) == b"ping"
        finally:
            probe.close()

    asyncio.run(main())
