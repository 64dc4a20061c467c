"""Sessions with ICE over real loopback sockets: direct on host candidates, and relay_only through a real coturn
(Allocate, CreatePermission, ChannelBind, ChannelData), with game messages both ways."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from coturn_kit import coturn_missing, extra_lines, free_udp_port, running_coturn
from regions import running_regions

from gamesdk import GameClient, GameSession, Lane
from gamesdk.errors import LocalProtocolError
from gamesdk.events import MessageReceived
from server.relay import RelayConfig, turnserver_conf

SECRET = "loopback-secret-0123456789"


async def _exchange(alice: GameSession, bob: GameSession) -> None:
    """One reliable message each way (bounded wait)."""
    alice.send(b"serve", Lane.RELIABLE)
    bob.send(b"return", Lane.RELIABLE)
    for session, expected in ((bob, b"serve"), (alice, b"return")):
        for _ in range(200):
            event = await asyncio.wait_for(session.next_event(), 5)
            if isinstance(event, MessageReceived):
                assert event.data == expected
                break


def _path(client: GameClient, call_id: str) -> object:
    core = client._core
    assert core is not None
    return core.paths[call_id]


def test_loopback_session_runs_on_the_nominated_host_pair(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_regions(tmp_path) as regions:
            alice, bob = regions.client("alice"), regions.client("bob")
            await alice.login()
            await bob.login()

            async def answer() -> GameSession:
                return await (await bob.next_invite()).accept()

            callee = asyncio.create_task(answer())
            session = await alice.invite("bob@na.gamesdk.test")
            bobs = await callee
            await _exchange(session, bobs)
            path = _path(alice, session.call_id)
            pair = path.agent.selected  # type: ignore[attr-defined]
            assert pair is not None and pair.local.kind == "host" and pair.remote.kind == "host"
            assert pair.remote.address == _path(bob, bobs.call_id).agent.local_addr  # type: ignore[attr-defined]
            # the 2xx ACK left alice's game socket over the pair: no server saw it (eu's one ACK is the 407's,
            # which goes hop by hop)
            eu, na = regions.eu.node, regions.na.node
            assert eu is not None and na is not None
            assert eu.stats.by_method.get("ACK", 0) == 1 and na.stats.by_method.get("ACK", 0) == 0
            await alice.close()
            await bob.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_relay_only_players_meet_through_coturn(tmp_path: Path) -> None:
    reason = coturn_missing()
    if reason:
        pytest.skip(reason)
    port = free_udp_port()
    relay = RelayConfig(urls=(f"turn:127.0.0.1:{port}?transport=udp",), shared_secret=SECRET, realm="gamesdk.test",
                        allowed_peer_ips=("127.0.0.1/32",))
    conf = turnserver_conf(relay, "eu") + "allow-loopback-peers\n" + extra_lines(tmp_path, 49400, 49500)

    async def main() -> None:
        async with running_regions(tmp_path, eu={"relay": relay}, na={"relay": relay}) as regions:
            alice = regions.client("alice", relay_only=True)
            bob = regions.client("bob", relay_only=True)
            await alice.login()
            await bob.login()

            async def answer() -> GameSession:
                return await (await bob.next_invite()).accept()

            callee = asyncio.create_task(answer())
            session = await alice.invite("bob@na.gamesdk.test")
            bobs = await callee
            await _exchange(session, bobs)
            for client, call_id in ((alice, session.call_id), (bob, bobs.call_id)):
                agent = _path(client, call_id).agent  # type: ignore[attr-defined]
                assert {c.kind for c in agent.local_candidates} == {"relay"}  # nothing else offered
                assert agent.selected.local.kind == "relay" and agent.selected.remote.kind == "relay"
                assert agent.stats.relayed_in > 0
            await alice.close()
            await bob.close()

    with running_coturn(conf, tmp_path, ("127.0.0.1", port)):
        asyncio.run(asyncio.wait_for(main(), 60))


def test_relay_only_without_a_relay_says_why(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_regions(tmp_path) as regions:
            alice = regions.client("alice", relay_only=True)
            await alice.login()
            with pytest.raises(LocalProtocolError, match="no TURN relay"):
                await alice.invite("bob@na.gamesdk.test")
            await alice.close()

    asyncio.run(asyncio.wait_for(main(), 30))
