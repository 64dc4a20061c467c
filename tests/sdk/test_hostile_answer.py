"""An answer whose c=/m= names a silent victim: the caller's game sends it probes, never the game stream."""

from __future__ import annotations

import asyncio
import select
from pathlib import Path

from regions import running_regions

from gamesdk import ChannelConfig, GameSession, Lane
from gamesdk.events import Disconnected
from gamesdk.io.channel_poll import bind_udp

#: Header + tag + ACK + CONFIRM + PATH_CHALLENGE: the largest probe the channel sends an unvalidated address.
MAX_PROBE_BYTES = 13 + 16 + 19 + 17 + 9


def test_an_answer_pointing_at_a_silent_victim_gets_only_probes(tmp_path: Path) -> None:
    victim = bind_udp("127.0.0.1")
    got: list[bytes] = []

    def drain() -> None:
        while select.select([victim], [], [], 0)[0]:
            got.append(victim.recv(2048))

    async def main() -> None:
        async with running_regions(tmp_path) as regions:
            config = ChannelConfig(disconnected_s=2.0)
            # ice=False: the channel's own rule, for a peer without ICE; with ICE the c=/m= address is not used
            # (tests/ice/test_sessions_ice.py covers a victim among the ICE candidates)
            alice = regions.client("alice", channel_config=config, ice=False)
            bob = regions.client("bob", channel_config=config, ice=False)
            await alice.login()
            await bob.login()
            core = bob._core  # bob's SDK writes the victim's address into its answer
            assert core is not None
            real = core.agent._channel_addr

            def hostile(call_id: str) -> tuple[str, int]:
                real(call_id)  # bob's own channel socket still exists; the SDP just does not name it
                host, port = victim.getsockname()[:2]
                return host, port

            core.agent._channel_addr = hostile

            async def answer() -> GameSession:
                return await (await bob.next_invite()).accept()

            callee = asyncio.create_task(answer())
            session = await alice.invite("bob@na.gamesdk.test")
            await callee
            assert session.agreement.peer_addr == victim.getsockname()
            ended = None
            for frame in range(60 * 4):  # a 60 Hz game for up to 4 s (bounded in count and time)
                session.send(bytes(300), lane=Lane.SEQUENCED)
                drain()
                try:
                    event = await asyncio.wait_for(session.next_event(), 1 / 60)
                except TimeoutError:
                    continue
                if isinstance(event, Disconnected):
                    ended = event
                    break
            drain()
            assert ended is not None  # nobody answered: the channel gave up after disconnected_s
            await alice.close()
            await bob.close()

    try:
        asyncio.run(asyncio.wait_for(main(), 40))
    finally:
        victim.close()
    assert got and all(len(d) <= MAX_PROBE_BYTES for d in got)  # no 300-byte snapshot ever reached it
    # probes at 0, 0.1, 0.3, 0.7, 1.5 s (+ the CLOSE copies): a few hundred bytes, not 60 x 330 bytes a second
    assert len(got) <= 10 and sum(map(len, got)) <= 10 * MAX_PROBE_BYTES
