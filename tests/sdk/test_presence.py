"""Presence across two real regions: a player sees another come online, play a match, go offline; a watcher the
rule refuses; the game-loop client too."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from regions import DOMAINS, USERS, Regions, running_regions, threaded_regions

from gamesdk import ClientConfig, GameClient, GameSession, PollingClient, PresenceStatus, WatchRefused
from gamesdk.events import PresenceChanged, Registered


def run(tmp_path: Path, scenario: Any, timeout_s: float = 30.0) -> None:
    async def main() -> None:
        async with running_regions(tmp_path) as regions:
            await scenario(regions)

    asyncio.run(asyncio.wait_for(main(), timeout_s))


async def next_status(client: GameClient, player: str) -> PresenceStatus:
    while True:
        event = await asyncio.wait_for(client.next_presence(), 5.0)
        if isinstance(event, PresenceChanged) and event.player == player:
            return event.status


def test_watching_a_player_in_another_region(tmp_path: Path) -> None:
    async def scenario(regions: Regions) -> None:
        alice, bob, carol = regions.client("alice"), regions.client("bob"), regions.client("carol")
        await alice.login()
        await carol.login()
        bob_aor = "sip:bob@na.gamesdk.test"
        # alice (eu) watches bob (na): eu authenticated her, na (the peer) accepts, NOTIFYs come straight to her
        assert await alice.watch("bob@na.gamesdk.test") is PresenceStatus.OFFLINE
        await bob.login()
        assert await next_status(alice, bob_aor) is PresenceStatus.ONLINE

        async def answer() -> GameSession:
            return await (await bob.next_invite()).accept()

        callee = asyncio.create_task(answer())
        session = await carol.invite("bob@na.gamesdk.test")
        await callee
        assert await next_status(alice, bob_aor) is PresenceStatus.IN_MATCH
        await session.end()
        assert await next_status(alice, bob_aor) is PresenceStatus.ONLINE
        await bob.logout()
        assert await next_status(alice, bob_aor) is PresenceStatus.OFFLINE
        assert alice.presence[bob_aor] is PresenceStatus.OFFLINE
        await alice.unwatch("bob@na.gamesdk.test")
        last = await asyncio.wait_for(alice.next_presence(), 5.0)
        assert isinstance(last, PresenceChanged) and not last.watching
        for client in (alice, bob, carol):
            await client.close()

    run(tmp_path, scenario)


def test_a_watcher_the_rule_refuses(tmp_path: Path) -> None:
    async def scenario(regions: Regions) -> None:
        bob, dave = regions.client("bob"), regions.client("dave")
        await bob.login()
        # dave has an account in na but is not logged in: only logged-in players may watch
        with pytest.raises(WatchRefused) as caught:
            await dave.watch("bob@na.gamesdk.test")
        assert caught.value.status == 403 and "log in" in caught.value.reason.lower()
        # and a wrong password never gets to watch
        mallory = regions.client("dave", password="not-dave")
        with pytest.raises(WatchRefused) as wrong:
            await mallory.watch("bob@na.gamesdk.test")
        assert wrong.value.status == 403
        with pytest.raises(WatchRefused) as unknown:
            await bob.watch("nobody@na.gamesdk.test")
        assert unknown.value.status == 404
        for client in (bob, dave, mallory):
            await client.close()

    run(tmp_path, scenario)


def test_the_game_loop_client_watches_too(tmp_path: Path) -> None:
    with threaded_regions(tmp_path) as (eu, na):
        bob = PollingClient(ClientConfig(username="bob", password=USERS["na"]["bob"], domain=DOMAINS["na"],
                                         server=na.address))
        alice = PollingClient(ClientConfig(username="alice", password=USERS["eu"]["alice"], domain=DOMAINS["eu"],
                                           server=eu.address))
        bob.login(time.monotonic())
        seen: list[PresenceStatus] = []
        watching = alice_in = False
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and seen[-1:] != [PresenceStatus.ONLINE]:  # bounded game loop
            now = time.monotonic()
            for event in bob.poll(now):
                if isinstance(event, Registered) and not watching:
                    bob.watch("alice@eu.gamesdk.test", now)
                    watching = True
                elif isinstance(event, PresenceChanged):
                    seen.append(event.status)
            alice.poll(now)
            if seen == [PresenceStatus.OFFLINE] and not alice_in:
                alice.login(now)
                alice_in = True
            time.sleep(0.005)
        assert seen == [PresenceStatus.OFFLINE, PresenceStatus.ONLINE]
        alice.close()
        bob.close()
