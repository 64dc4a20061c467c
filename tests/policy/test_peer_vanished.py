"""A player's game crashes mid-match: the other player's region tells the crashed player's region over federation,
which releases the reservation at once (billed ``peer-region`` to that moment) instead of holding the capacity
and billing until the lease runs out."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gamesdk import ClientConfig, GameClient, GameSession
from gamesdk.channel import ChannelConfig
from gamesdk.lowlevel import TimerConfig
from server.io import EmbeddedServer
from server.policy import PolicyServer
from server.policy.cli_support import billing_rows
from server.policy.codec import operation_from_json_untrusted, operation_to_json
from server.policy.lifetime import Release
from server.policy.model import DialogRef, EndReason, Grant

from .conftest import make_request
from .test_region_hooks import DOMAINS, Region, active, hooks_for, peered_regions, region_config

FAST_TIMERS = TimerConfig(t1=0.05, t2=0.4, t4=0.5)


def test_a_crashed_players_region_releases_when_the_other_side_sees_it_gone(tmp_path: Path) -> None:
    async def main() -> None:
        eu_config, na_config = region_config("eu", tmp_path), region_config("na", tmp_path)
        eu, na = await peered_regions(eu_config, na_config)
        fast = ChannelConfig(interrupted_s=0.3, disconnected_s=1.0)
        alice = GameClient(ClientConfig(username="alice", password="alice-pw", domain=DOMAINS["eu"],
                                        server=eu.address, timers=FAST_TIMERS), channel_config=fast)
        bob = GameClient(ClientConfig(username="bob", password="bob-pw", domain=DOMAINS["na"], server=na.address,
                                      timers=FAST_TIMERS), channel_config=fast)
        try:
            await alice.login()
            await bob.login()

            async def answer() -> GameSession:
                return await (await bob.next_invite()).accept()

            callee = asyncio.create_task(answer())
            session = await alice.invite("bob@na.gamesdk.test", latency_ms=80, bandwidth_kbps=64)
            bobs = await callee
            await Region(eu).until(active, "alice's confirmed reservation")
            await Region(na).until(active, "bob's confirmed reservation")
            # bob's game dies: its sockets close, nothing more is sent (no BYE, no PUBLISH, no refresh)
            assert bob._transport is not None
            bob._transport.abort()
            bobs.channel._transport.abort()  # type: ignore[union-attr]
            for _ in range(100):  # bounded: alice's channel gives up after 1 s of silence
                if session.ended.is_set():
                    break
                await asyncio.sleep(0.05)
            assert session.ended.is_set()
            await Region(eu).until(PolicyServer.is_idle, "alice's reservation released")
            # bob's lease (the PUBLISH Expires plus slack) is far away: only the notice from eu releases it now
            await Region(na).until(PolicyServer.is_idle, "bob's reservation released on eu's notice")
            assert na.node is not None and eu.node is not None
            assert eu.node.notices.stats["accepted"] == 1
        finally:
            await alice.close()
            await bob.close()
            await eu.stop()
            await na.stop()

    asyncio.run(asyncio.wait_for(main(), 40))
    [eu_row] = billing_rows(tmp_path / "eu.sqlite3")
    [na_row] = billing_rows(tmp_path / "na.sqlite3")
    assert eu_row.end_reason == "bye-local"
    assert na_row.end_reason == "peer-region"
    assert eu_row.t_stop is not None and na_row.t_stop is not None
    # bob's STOP is stamped when eu's notice arrived: after alice's side saw him gone, not at his lease's end (his
    # PUBLISH Expires + 32 s slack, a minute and more away). Each record turns loop time into wall time with the
    # offset of its 2xx's arrival (the wait before the hooks ran is taken off), but the loop time a datagram gets
    # is when its batch is read (uvloop: the iteration's start, in whole ms): two processes on a loaded machine
    # can still differ by that, so the order is checked within 50 ms.
    assert eu_row.t_stop - 0.05 <= na_row.t_stop < eu_row.t_stop + 10.0


def test_a_peer_region_may_end_only_sessions_with_its_own_players(policy: PolicyServer) -> None:
    """Release.peer_domain: na may report alice (ours) silent only in a session whose other player is of na;
    another peer (or a forged domain) names nothing; the JSON form keeps the restriction."""
    request = make_request(1)  # alice (eu, the caller) with bob@na.example
    assert isinstance(policy.final(request, 0.0), Grant)
    assert policy.activate(request.key, 1.0, 90) is not None
    ref = DialogRef(call_id=request.call_id, local_tag=request.from_tag, remote_tag=request.to_tag,
                    player=request.player)
    forged = Release(ref=ref, reason=EndReason.PEER_REGION, peer_domain="other.example")
    assert policy.apply(forged, 5.0) is None
    assert policy.apply(operation_from_json_untrusted(operation_to_json(forged)), 5.0) is None
    assert policy.get(request.key) is not None
    released = policy.apply(Release(ref=ref, reason=EndReason.PEER_REGION, peer_domain="NA.example"), 6.0)
    assert released is not None and policy.get(request.key) is None


def test_a_crashed_player_of_the_same_region_is_released_when_the_other_sees_it_gone(tmp_path: Path) -> None:
    async def main() -> None:
        eu_config = region_config("eu", tmp_path)
        eu = EmbeddedServer(eu_config, port=0, hooks_factory=hooks_for(eu_config))
        await eu.start()
        eu.add_user("alice", "alice-pw")
        eu.add_user("carol", "carol-pw")
        fast = ChannelConfig(interrupted_s=0.3, disconnected_s=1.0)
        alice, carol = (GameClient(ClientConfig(username=name, password=f"{name}-pw", domain=DOMAINS["eu"],
                                                server=eu.address, timers=FAST_TIMERS), channel_config=fast)
                        for name in ("alice", "carol"))
        try:
            await alice.login()
            await carol.login()

            async def answer() -> GameSession:
                return await (await carol.next_invite()).accept()

            callee = asyncio.create_task(answer())
            session = await alice.invite("carol@eu.gamesdk.test", latency_ms=80, bandwidth_kbps=64)
            carols = await callee
            await Region(eu).until(lambda p: len(p.reservations()) == 2 and all(
                r.state.value == "active" for r in p.reservations()), "both confirmed")
            assert carol._transport is not None
            carol._transport.abort()  # carol's game dies: nothing more from it
            carols.channel._transport.abort()  # type: ignore[union-attr]
            for _ in range(100):  # bounded: alice's channel gives up after 1 s of silence
                if session.ended.is_set():
                    break
                await asyncio.sleep(0.05)
            assert session.ended.is_set()
            await Region(eu).until(PolicyServer.is_idle, "both reservations released")
        finally:
            await alice.close()
            await carol.close()
            await eu.stop()

    asyncio.run(asyncio.wait_for(main(), 40))
    rows = {row.player: row for row in billing_rows(tmp_path / "eu.sqlite3")}
    assert rows["sip:alice@eu.gamesdk.test"].end_reason == "bye-local"
    assert rows["sip:carol@eu.gamesdk.test"].end_reason == "peer-region"
