"""The session setup's fast path (bench/bench_setup.py): what was moved off the critical path still happens.

- the user agent finds its next deadline in a heap (ended calls linger 64*T1): same answers as a full scan;
- ``attach_channel`` opens the asyncio channel with no loop round trip, and it carries data and closes;
- ``GameClient`` hands the session out before the "confirmed" PUBLISH, and a session ended at once still
  publishes "confirmed" then "terminated", so both regions bill it;
- an invitation answered within ``ringing_delay_s`` gets its 200 alone; one still undecided then rings.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from regions import Regions, running_regions

from gamesdk import GameClient, GameSession
from gamesdk.channel import ChannelClosed, ChannelEstablished, ChannelEvent, Lane, MessageReceived
from gamesdk.channel.testing import make_params_pair
from gamesdk.config import ClientConfig
from gamesdk.events import Ringing
from gamesdk.io.channel_asyncio import attach_channel
from gamesdk.io.channel_poll import bind_udp
from gamesdk.session.agent import UserAgent
from gamesdk.session.calls import Call
from gamesdk.sip.dialog_info import parse_dialog_info_untrusted
from gamesdk.sip.ids import RandomIdFactory
from gamesdk.sip.message import Request
from gamesdk.sip.parser import parse_message_untrusted
from server.billing.store import read_rows

LOOPBACK = "127.0.0.1"
NAMES = ("invite", "answer", "refresh", "publish", "forget")

# -- the deadline heap (sans-IO) ------------------------------------------------------------------------------

ops = st.lists(
    st.tuples(
        st.sampled_from(["set", "pop", "forget", "run"]),
        st.integers(0, 7),  # which call
        st.sampled_from(NAMES),
        st.integers(0, 50),  # deadline / clock, in tenths of a second
    ),
    max_size=60,
)


def bare_agent() -> UserAgent:
    config = ClientConfig(username="alice", password="pw", domain="eu.gamesdk.test", server=(LOOPBACK, 5060))
    return UserAgent(
        config,
        (LOOPBACK, 5062),
        ids=RandomIdFactory(os.urandom, call_id_host=LOOPBACK),
        random_bytes=os.urandom,
        channel_addr=lambda call_id: (LOOPBACK, 40000),
    )


@settings(max_examples=150, deadline=None)
@given(ops)
def test_next_deadline_and_due_timers_match_a_scan_of_every_call(script: list[tuple[str, int, str, int]]) -> None:
    agent = bare_agent()
    fired: list[tuple[str, str]] = []
    agent._call_timer = lambda call, name, now: fired.append((call.call_id, name))  # type: ignore[method-assign]
    calls: dict[int, Call] = {}
    for op, index, name, tenths in script:
        call = calls.get(index)
        if call is None or agent._calls.get(call.call_id) is not call:
            call = Call(call_id=f"call-{index}-{len(fired)}-{tenths}", is_caller=True, local_uri="sip:a@x",
                        peer_uri="sip:b@y", local_tag="t")
            agent._track(call)
            calls[index] = call
        if op == "set":
            call.timers[name] = tenths / 10
        elif op == "pop":
            call.timers.pop(name, None)
        elif op == "forget":
            agent._calls.pop(call.call_id, None)
        else:
            now = tenths / 10
            expected = sorted(
                (c.call_id, n) for c in agent._calls.values() for n, d in c.timers.items() if d <= now
            )
            fired.clear()
            agent.handle_timer(now)
            assert sorted(fired) == expected
        scan = [d for c in agent._calls.values() for d in c.timers.values()]
        assert agent.get_timer() == (min(scan) if scan else None)


# -- attach_channel ------------------------------------------------------------------------------------------


def test_attached_channel_is_open_at_once_carries_data_and_closes() -> None:
    async def main() -> None:
        sa, sb = bind_udp(LOOPBACK), bind_udp(LOOPBACK)
        offer, answer = make_params_pair(
            suite="chacha20-poly1305", offer_addr=sa.getsockname(), answer_addr=sb.getsockname()
        )
        b_events: list[ChannelEvent] = []
        got = asyncio.Event()

        def on_b(event: ChannelEvent) -> None:
            b_events.append(event)
            if isinstance(event, MessageReceived) and event.data == b"last":
                got.set()

        a = attach_channel(offer, sock=sa)
        b = attach_channel(answer, sock=sb, on_event=on_b)
        # no await between creating and using them: the transports exist already
        assert a.local_addr == sa.getsockname() and not a.closed.is_set()
        assert await asyncio.wait_for(a.next_event(), 5) == ChannelEstablished()
        for i in range(50):
            a.send(i.to_bytes(2, "big"), Lane.RELIABLE)
        a.send(bytes(20_000), Lane.RELIABLE)
        a.send(b"last", Lane.RELIABLE)
        await asyncio.wait_for(got.wait(), 10)
        data = [e.data for e in b_events if isinstance(e, MessageReceived)]
        assert data == [i.to_bytes(2, "big") for i in range(50)] + [bytes(20_000), b"last"]
        a.close("bye")
        await asyncio.wait_for(a.closed.wait(), 5)
        assert sa.fileno() == -1  # the transport closed the socket it was given

        async def b_closed() -> None:
            while not any(isinstance(e, ChannelClosed) for e in b_events):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(b_closed(), 5)
        assert [e for e in b_events if isinstance(e, ChannelClosed)] == [ChannelClosed(by_peer=True, reason="bye")]
        b.close()

    asyncio.run(asyncio.wait_for(main(), 20))


# -- GameClient: the established event first, the publication right after ------------------------------------


def _tap(client: Any, log: list[tuple[str, bytes]]) -> None:
    transport = client._transport
    send = transport.sendto

    def sendto(data: bytes, addr: Any = None) -> None:
        log.append(("sent", data))
        send(data, addr)

    transport.sendto = sendto


def _published_states(log: list[tuple[str, bytes]]) -> list[str]:
    states = []
    for kind, data in log:
        if kind == "sent" and data.startswith(b"PUBLISH "):
            message = parse_message_untrusted(data)
            assert isinstance(message, Request)
            states.append(parse_dialog_info_untrusted(message.body).dialogs[0].state.value)
    return states


def test_session_is_handed_out_before_its_confirmed_publish_and_an_immediate_end_is_billed(tmp_path: Path) -> None:
    async def scenario(regions: Regions) -> None:
        # the order of what leaves the SIP socket: without ICE, which sends the ACK from the game socket over the
        # nominated pair (tests/ice cover that path)
        alice, bob = regions.client("alice", ice=False), regions.client("bob", ice=False)
        await alice.login()
        await bob.login()
        alice_log: list[tuple[str, bytes]] = []
        bob_log: list[tuple[str, bytes]] = []
        _tap(alice, alice_log)
        _tap(bob, bob_log)

        async def answer() -> GameSession:
            session = await (await bob.next_invite()).accept()
            bob_log.append(("accept() returned", b""))
            return session

        callee = asyncio.create_task(answer())
        session = await alice.invite("bob@na.gamesdk.test", latency_ms=80)
        alice_log.append(("invite() returned", b""))
        sent = [data.split(b" ", 1)[0] if kind == "sent" else kind.encode() for kind, data in alice_log]
        # the ACK left before invite() returned; the "confirmed" PUBLISH had not left yet
        assert sent.index(b"ACK") < sent.index(b"invite() returned")
        assert b"PUBLISH" not in sent
        await session.end("quick game")  # at once, before the deferred publication ran
        bobs = await asyncio.wait_for(callee, 5)
        await asyncio.wait_for(bobs.ended.wait(), 5)
        # each side published its dialog's whole life, in order
        assert _published_states(alice_log) == ["confirmed", "terminated"]

        async def both_billed() -> list[Any]:
            while True:
                rows = []
                for region in ("eu", "na"):
                    with sqlite3.connect(tmp_path / f"{region}.sqlite3") as conn:
                        rows += [r for r in read_rows(conn) if r.call_id == session.call_id]
                if len(rows) == 2 and all(r.t_start is not None and r.t_stop is not None for r in rows):
                    return rows
                await asyncio.sleep(0.02)

        rows = await asyncio.wait_for(both_billed(), 5)
        assert sorted(r.region for r in rows) == ["eu", "na"]
        assert _published_states(bob_log) == ["confirmed", "terminated"]
        await alice.close()
        await bob.close()

    async def main() -> None:
        async with running_regions(tmp_path) as regions:
            await scenario(regions)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_quick_answer_sends_no_180_and_a_slow_one_rings(tmp_path: Path) -> None:
    async def scenario(regions: Regions) -> None:
        alice, bob = regions.client("alice"), GameClient(regions.client_config("bob"), ringing_delay_s=0.05)
        await alice.login()
        await bob.login()
        bob_log: list[tuple[str, bytes]] = []
        _tap(bob, bob_log)
        statuses: list[list[bytes]] = []
        for think_s in (0.0, 0.3):  # an at-once acceptance, then one after the delay expired

            async def answer(think_s: float = think_s) -> GameSession:
                invite = await bob.next_invite()
                await asyncio.sleep(think_s)
                return await invite.accept()

            bob_log.clear()
            alice.history.clear()
            callee = asyncio.create_task(answer())
            session = await alice.invite("bob@na.gamesdk.test", latency_ms=80)
            bobs = await asyncio.wait_for(callee, 5)
            statuses.append([data.split(b" ", 2)[1] for _, data in bob_log if data.startswith(b"SIP/2.0 ")])
            rang = any(isinstance(e, Ringing) for e in alice.history)
            assert rang == (think_s > 0)
            await session.end("next")
            await asyncio.wait_for(bobs.ended.wait(), 5)
        assert statuses[0][:1] == [b"200"] and b"180" not in statuses[0]
        assert statuses[1][:2] == [b"180", b"200"]
        await alice.close()
        await bob.close()

    async def main() -> None:
        async with running_regions(tmp_path) as regions:
            await scenario(regions)

    asyncio.run(asyncio.wait_for(main(), 30))
