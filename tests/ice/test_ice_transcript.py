"""The ICE lines are part of the channel's transcript: an on-path attacker between a player and its region that
edits a candidate of the answer (here its foundation, so the checks still succeed and the session gets as far
as the channel) leaves the two players with different keys, and the channel says so (real regions and players
on loopback; the attacker is a UDP relay the callee takes for its region)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path

from regions import running_regions
from udp_relay_kit import OnPathRelay

from gamesdk import GameClient, GameSession, Lane
from gamesdk.events import MessageReceived, SecurityError


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
