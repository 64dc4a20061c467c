"""The ICE lines are part of the channel's transcript: an on-path attacker between a player and its region that
edits a candidate of the answer (here its foundation, so the checks still succeed and the session gets as far
as the channel) leaves the two players with different keys, and the channel says so (real regions and players
on loopback; the attacker is a UDP relay the callee takes for its region)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import select
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from regions import running_regions

from gamesdk import GameClient, GameSession, Lane
from gamesdk.events import MessageReceived, SecurityError

Address = tuple[str, int]


class OnPathRelay:
    """Forwards datagrams between players and a region (one upstream socket per player socket, like a NAT),
    passing each through ``edit`` on its way."""

    def __init__(self, region: Address, edit: Callable[[bytes], bytes]) -> None:
        self.region = region
        self.edit = edit
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.address: Address = self.front.getsockname()[:2]
        self._up: dict[Address, socket.socket] = {}
        self._back: dict[socket.socket, Address] = {}
        self._stop = threading.Event()
        self.edited = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.front, *self._back], [], [], 0.05)
            for sock in ready:
                data, src = sock.recvfrom(65535)
                changed = self.edit(data)
                self.edited += changed != data
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

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in (self.front, *self._back):
            sock.close()


def _new_foundation(data: bytes) -> bytes:
    """In a 200 OK with SDP: the first candidate's foundation replaced by zeros (same length, so the
    Content-Length still holds; foundations only order the checks, so ICE still connects)."""
    if not data.startswith(b"SIP/2.0 200") or b"a=candidate:" not in data:
        return data
    return re.sub(rb"a=candidate:(\S+)", lambda m: b"a=candidate:" + b"0" * len(m.group(1)), data, count=1)


def test_an_edited_candidate_gives_the_players_different_keys(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_regions(tmp_path) as regions:
            relay = OnPathRelay(regions.na.address, _new_foundation)
            try:
                alice = regions.client("alice")
                bob = GameClient(dataclasses.replace(regions.client_config("bob"), server=relay.address))
                await alice.login()
                await bob.login()

                async def answer() -> GameSession:
                    return await (await bob.next_invite()).accept()

                callee = asyncio.create_task(answer())
                session = await alice.invite("bob@na.gamesdk.test")
                bobs = await callee
                assert relay.edited >= 1, "the answer never passed the relay"
                session.send(b"first move", lane=Lane.RELIABLE)

                async def outcome() -> object:
                    while True:
                        event = await bobs.next_event()
                        if isinstance(event, (SecurityError, MessageReceived)):
                            return event

                got = await asyncio.wait_for(outcome(), 20)
                assert isinstance(got, SecurityError), got  # before: the message arrived, the edit unnoticed
                await alice.close()
                await bob.close()
            finally:
                relay.close()

    asyncio.run(asyncio.wait_for(main(), 60))
