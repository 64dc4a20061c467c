"""Closing without losing the last words, and a sender that keeps to the negotiated rate (real UDP, real servers)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from regions import DOMAINS, USERS, Regions, running_regions, threaded_regions

from gamesdk import ClientConfig, GameSession, PollingClient, Requirements
from gamesdk.events import ChannelClosed, InviteReceived, MessageReceived, Registered, SessionEnded
from gamesdk.testing import NetworkSimulator, SimulatorConfig

#: Enough to need several resends on a 30 %-loss path; small enough to fit the reliable window at once.
MESSAGES = [b"move %d" % i for i in range(30)] + [b"game over"]


def lossy() -> tuple[NetworkSimulator, NetworkSimulator]:
    return NetworkSimulator(SimulatorConfig(loss=0.3, seed=7)), NetworkSimulator(SimulatorConfig(seed=8))


def test_end_delivers_the_last_reliable_messages_asyncio(tmp_path: Path) -> None:
    async def scenario(regions: Regions) -> None:
        alice = regions.client("alice", simulator=lossy())
        bob = regions.client("bob")
        await alice.login()
        await bob.login()

        async def answer() -> GameSession:
            return await (await bob.next_invite()).accept()

        callee = asyncio.create_task(answer())
        session = await alice.invite("bob@na.gamesdk.test")
        bobs = await callee
        for data in MESSAGES:
            session.send(data)
        await session.end("game over", linger_s=5.0)  # returns once bob acknowledged them all, then BYE
        got: list[object] = []
        while not isinstance(got[-1:] and got[-1], SessionEnded):
            got.append(await asyncio.wait_for(bobs.next_event(), 10.0))
        received = [e.data for e in got if isinstance(e, MessageReceived)]
        assert received == MESSAGES
        # the peer's close is ordered after its data: the last message, the CLOSE, then the end
        kinds = [type(e) for e in got if not isinstance(e, MessageReceived)]
        assert kinds[-2:] == [ChannelClosed, SessionEnded]
        assert session.stats.pending_reliable_messages == 0
        await alice.close()
        await bob.close()

    async def main() -> None:
        async with running_regions(tmp_path) as regions:
            await scenario(regions)

    asyncio.run(asyncio.wait_for(main(), 30.0))


def test_end_delivers_the_last_reliable_messages_polling(tmp_path: Path) -> None:
    with threaded_regions(tmp_path) as (eu, na):
        alice = PollingClient(
            ClientConfig(username="alice", password=USERS["eu"]["alice"], domain=DOMAINS["eu"], server=eu.address),
            simulator=lossy(),
        )
        bob = PollingClient(
            ClientConfig(username="bob", password=USERS["na"]["bob"], domain=DOMAINS["na"], server=na.address)
        )
        now = time.monotonic()
        alice.login(now)
        bob.login(now)
        registered: set[str] = set()
        call_id: str | None = None
        sent = False
        received: list[bytes] = []
        bob_ended = False
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline and not bob_ended:  # the documented frame order, bounded
            now = time.monotonic()
            for name, client in (("alice", alice), ("bob", bob)):
                for event in client.poll(now):
                    if isinstance(event, Registered):
                        registered.add(name)
                    elif isinstance(event, InviteReceived):
                        bob.accept(event.call_id, now)
                    elif isinstance(event, SessionEnded) and name == "bob":
                        bob_ended = True
            if call_id is None and registered == {"alice", "bob"}:
                call_id = alice.invite("bob@na.gamesdk.test", now)
            for session in list(bob.sessions.values()):
                received.extend(e.data for e in session.poll(now) if isinstance(e, MessageReceived))
            for session in list(alice.sessions.values()):
                session.poll(now)
                if not sent and call_id in bob.sessions:
                    for data in MESSAGES:
                        session.send(data)
                    session.flush(time.monotonic())
                    session.end(time.monotonic(), "game over", linger_s=5.0)
                    sent = True
            time.sleep(0.002)
        # the messages the session read before the end are handed out after it, too
        for session in list(bob.sessions.values()):
            received.extend(e.data for e in session.poll(time.monotonic()) if isinstance(e, MessageReceived))
        assert bob_ended
        assert received == MESSAGES
        alice.close()
        bob.close()


def test_a_silent_peer_gets_no_more_than_the_reserved_rate(tmp_path: Path) -> None:
    async def scenario(regions: Regions) -> None:
        alice = regions.client("alice")
        bob = regions.client("bob")
        await alice.login()
        await bob.login()

        async def answer() -> GameSession:
            invite = await bob.next_invite()
            # bob's region reserves 48 kbit/s towards bob: alice must not send faster
            return await invite.accept(requirements=Requirements(formats=invite.offer.formats, receive_kbps=48))

        callee = asyncio.create_task(answer())
        session = await alice.invite("bob@na.gamesdk.test", bandwidth_kbps=96)
        bobs = await callee
        assert session.stats.send_limit_kbps == 48
        # bob's process dies: its sockets close without BYE or CLOSE
        assert bob._transport is not None
        bob._transport.abort()
        bobs.channel._transport.abort()  # type: ignore[union-attr]
        loop = asyncio.get_running_loop()
        start, start_bytes = loop.time(), session.stats.bytes_out
        for tick in range(150):  # 60 Hz of 200-byte reliable updates = 96 kbit/s offered, for 2.5 s
            session.send(b"%05d" % tick + bytes(195))
            await asyncio.sleep(1 / 60)
        elapsed = loop.time() - start
        stats = session.stats
        sent = stats.bytes_out - start_bytes
        burst = max(2 * 1200, 48 * 125 * 0.1)
        assert sent <= 48 * 125 * elapsed + burst + 1200, (sent, elapsed)
        assert stats.paced_holds > 0 and stats.queued_bytes > 0  # what was held back shows
        assert stats.rto_backoff > 0 or stats.retransmissions < 64  # resends backed off
        await session.end(linger_s=0)
        await alice.close()

    async def main() -> None:
        async with running_regions(tmp_path) as regions:
            await scenario(regions)

    asyncio.run(asyncio.wait_for(main(), 30.0))
