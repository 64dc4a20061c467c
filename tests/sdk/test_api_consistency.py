"""One consistent API, over real sessions through two regional servers on loopback: the send order, typed
errors for misuse, ``by_peer`` that agrees between channel and session, a send that races the peer's hang-up,
``Requirements`` that take what ``invite()`` takes, and an ``on_invite`` handler that fails loudly."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from regions import DOMAINS, FAST_TIMERS, USERS, Regions, running_regions, threaded_regions

from gamesdk import (
    Accept,
    ChannelConfig,
    ClientConfig,
    GameClient,
    GameSession,
    IncomingInvite,
    Lane,
    LocalProtocolError,
    PollingClient,
    PollingSession,
    Requirements,
    SessionError,
)
from gamesdk.events import (
    ChannelClosed,
    Disconnected,
    Event,
    InviteReceived,
    MessageReceived,
    Registered,
    SessionEnded,
)
from gamesdk.testing import NetworkSimulator, SimulatorConfig

#: Every wait below is bounded; a healthy run takes well under a second per step.
STEP_S = 10.0


def run(tmp_path: Path, scenario: Any) -> None:
    async def main() -> None:
        async with running_regions(tmp_path) as regions:
            await scenario(regions)

    asyncio.run(asyncio.wait_for(main(), 60))


async def pair(regions: Regions, *, alice: dict[str, Any] | None = None, bob: dict[str, Any] | None = None,
               requirements: Requirements | None = None) -> tuple[GameClient, GameClient, GameSession, GameSession]:
    a = regions.client("alice", **(alice or {}))
    b = regions.client("bob", **(bob or {}))
    await a.login()
    await b.login()

    async def answer() -> GameSession:
        return await (await b.next_invite()).accept(requirements=requirements)

    callee = asyncio.create_task(answer())
    session = await asyncio.wait_for(a.invite("bob@na.gamesdk.test"), STEP_S)
    return a, b, session, await asyncio.wait_for(callee, STEP_S)


async def events_until(session: GameSession, kind: type[Event]) -> list[Event]:
    """The session's events up to and including the first ``kind``."""
    seen: list[Event] = []
    while not seen or not isinstance(seen[-1], kind):
        seen.append(await asyncio.wait_for(session.next_event(), STEP_S))
    return seen


def test_send_takes_the_message_first_on_sessions_and_channels(tmp_path: Path) -> None:
    async def scenario(regions: Regions) -> None:
        alice, bob, mine, theirs = await pair(regions)
        mine.send(b"session", Lane.SEQUENCED)
        mine.channel.send(b"channel", Lane.RELIABLE)  # the same order one level down
        mine.channel.channel.send(b"core")  # ... and in the sans-IO core, reliable by default
        with pytest.warns(DeprecationWarning, match=r"send\(data, lane\)") as warned:
            mine.channel.send(Lane.RELIABLE, b"old order")  # type: ignore[arg-type]
        with pytest.warns(DeprecationWarning, match=r"send\(data, lane\)") as warned_core:
            mine.channel.channel.send(Lane.RELIABLE, b"old core")  # type: ignore[arg-type]
        assert [w.filename for w in [*warned, *warned_core]] == [__file__, __file__]  # names the caller's line
        mine.channel.flush()
        got: set[bytes] = set()
        while len(got) < 5:
            event = await asyncio.wait_for(theirs.next_event(), STEP_S)
            if isinstance(event, MessageReceived):
                got.add(event.data)
        assert got == {b"session", b"channel", b"core", b"old order", b"old core"}
        # a str is refused with what to pass instead, on every level
        for send in (mine.send, mine.channel.send, mine.channel.channel.send):
            with pytest.raises(TypeError, match=r"got str: encode it first .*send_message"):
                send("hello")  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError, match=r"unknown lane 7; use gamesdk.Lane"):
            mine.send(b"x", 7)
        await mine.end()
        await alice.close()
        await bob.close()

    run(tmp_path, scenario)


@pytest.mark.parametrize("close_lost", [False, True], ids=["close-arrives", "close-lost"])
def test_the_peers_hang_up_is_by_peer_on_channel_and_session(tmp_path: Path, close_lost: bool) -> None:
    async def scenario(regions: Regions) -> None:
        link = NetworkSimulator(SimulatorConfig())
        alice, bob, mine, theirs = await pair(regions, bob={"simulator": (link, None)})
        if close_lost:
            link.config = SimulatorConfig(loss=1.0)  # bob's CLOSE copies never arrive; his BYE does
        await theirs.end("bob leaves", linger_s=0)
        seen = await events_until(mine, SessionEnded)
        closed = [e for e in seen if isinstance(e, ChannelClosed)]
        ended = seen[-1]
        assert isinstance(ended, SessionEnded) and ended.by_peer
        assert closed and all(e.by_peer for e in closed), seen
        # and on bob's own side both say it was not the peer
        own = await events_until(theirs, SessionEnded)
        assert [e.by_peer for e in own if isinstance(e, (ChannelClosed, SessionEnded))] == [False, False]
        await alice.close()
        await bob.close()

    run(tmp_path, scenario)


def test_a_send_racing_the_peers_hang_up_is_dropped_until_the_end_is_read(tmp_path: Path) -> None:
    async def scenario(regions: Regions) -> None:
        alice, bob, mine, theirs = await pair(regions)
        await theirs.end("bob leaves", linger_s=0)
        await asyncio.wait_for(mine.ended.wait(), STEP_S)  # the SDK has closed the channel; the game loop
        mine.send(b"one more frame", Lane.SEQUENCED)  # has not read the event yet: no exception
        mine.send_message({"tick": 1})
        await events_until(mine, SessionEnded)
        with pytest.raises(LocalProtocolError, match="closed channel"):
            mine.send(b"after the end was read")
        with pytest.raises(TypeError):
            mine.send("still a str")  # type: ignore[arg-type]
        await alice.close()
        await bob.close()

    run(tmp_path, scenario)


def test_a_send_racing_a_silent_peer_is_dropped_until_disconnected_is_read(tmp_path: Path) -> None:
    async def scenario(regions: Regions) -> None:
        quick = ChannelConfig(interrupted_s=0.2, disconnected_s=0.5)
        silent = NetworkSimulator(SimulatorConfig())
        alice, bob, mine, _ = await pair(regions, alice={"channel_config": quick},
                                              bob={"simulator": (silent, None)})
        silent.config = SimulatorConfig(loss=1.0)  # bob's game goes quiet (a cable pulled)
        await asyncio.wait_for(mine.ended.wait(), STEP_S)  # Disconnected, then the SDK's own BYE
        for _ in range(3):
            mine.send(bytes(300), Lane.SEQUENCED)  # the frames a 60 Hz loop sends before it reads the news
        seen = await events_until(mine, SessionEnded)
        assert any(isinstance(e, Disconnected) for e in seen)
        with pytest.raises(LocalProtocolError):
            mine.send(bytes(300), Lane.SEQUENCED)
        await alice.close()
        await bob.close()

    run(tmp_path, scenario)



@pytest.mark.parametrize("noticed_by", ["channel", "signalling"])
def test_a_crashed_peer_is_not_a_hang_up_whichever_side_notices_first(tmp_path: Path, noticed_by: str) -> None:
    """bob's process dies (no CLOSE, no BYE). Either alice's channel notices the silence first (Disconnected) or
    her in-dialog OPTIONS go unanswered first: both ways her session ends with by_peer=False (the peer did not
    hang up; her SDK ended it), her channel is closed, and the events agree."""

    async def scenario(regions: Regions) -> None:
        if noticed_by == "channel":
            alice_changes: dict[str, Any] = {"channel_config": ChannelConfig(interrupted_s=0.2, disconnected_s=0.6)}
        else:  # the channel never gives up (as while debugging): only the OPTIONS refresh notices
            alice_changes = {"channel_config": ChannelConfig(disconnected_s=None), "session_refresh_s": 0.3,
                             "timers": FAST_TIMERS}
        alice, bob, mine, theirs = await pair(regions, alice=alice_changes)
        assert bob._transport is not None
        bob._transport.abort()  # bob's process dies: its sockets close, nothing more is sent
        theirs.channel._transport.abort()  # type: ignore[union-attr]
        seen = await events_until(mine, SessionEnded)
        ended = seen[-1]
        assert isinstance(ended, SessionEnded) and not ended.by_peer, seen
        assert all(not e.by_peer for e in seen if isinstance(e, ChannelClosed)), seen
        assert any(isinstance(e, Disconnected if noticed_by == "channel" else ChannelClosed) for e in seen), seen
        assert not mine.channel.channel.is_open
        await alice.close()

    run(tmp_path, scenario)


def test_requirements_with_a_format_text_answer_a_real_offer(tmp_path: Path) -> None:
    async def scenario(regions: Regions) -> None:
        needs = Requirements(formats="pong/1", receive_kbps=48, classes="action")
        alice, bob, mine, theirs = await pair(regions, requirements=needs)
        for session in (mine, theirs):
            assert session.agreement.format.name == "pong" and session.agreement.answer.receive_kbps == 48
        await mine.end()
        await alice.close()
        await bob.close()

    run(tmp_path, scenario)


def test_an_on_invite_handler_that_raises_is_logged_declined_and_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(regions: Regions) -> None:
        async def broken(invite: IncomingInvite) -> Accept:
            raise RuntimeError("the lobby has a bug")

        alice = regions.client("alice")
        bob = regions.client("bob", on_invite=broken)
        await alice.login()
        await bob.login()
        with pytest.raises(SessionError) as refused:
            await asyncio.wait_for(alice.invite("bob@na.gamesdk.test"), STEP_S)
        assert refused.value.status == 500 and "invite handler failed" in refused.value.reason
        with pytest.raises(RuntimeError, match="the lobby has a bug"):
            await asyncio.wait_for(bob.next_session(), STEP_S)
        await alice.close()
        await bob.close()

    with caplog.at_level(logging.ERROR, logger="gamesdk.client"):
        run(tmp_path, scenario)
    logged = [r for r in caplog.records if r.name == "gamesdk.client" and r.levelno == logging.ERROR]
    assert logged and logged[0].exc_info is not None and "next_session()" in logged[0].getMessage()


def test_the_peers_hang_up_is_by_peer_in_a_game_loop_too(tmp_path: Path) -> None:
    """The PollingClient: bob's CLOSE copies are lost and his BYE ends alice's session; the ChannelClosed her
    session's poll returns says by_peer, as her SessionEnded does, and sending afterwards raises."""
    with threaded_regions(tmp_path) as (eu, na):
        link = NetworkSimulator(SimulatorConfig())
        alice = PollingClient(ClientConfig(username="alice", password=USERS["eu"]["alice"], domain=DOMAINS["eu"],
                                           server=eu.address))
        bob = PollingClient(ClientConfig(username="bob", password=USERS["na"]["bob"], domain=DOMAINS["na"],
                                         server=na.address), simulator=(link, None))
        now = time.monotonic()
        alice.login(now)
        bob.login(now)
        logged: set[str] = set()
        call_id: str | None = None
        mine: PollingSession | None = None
        ended: list[SessionEnded] = []
        deadline = time.monotonic() + STEP_S
        while not ended and time.monotonic() < deadline:  # the game loop, bounded in time
            now = time.monotonic()
            for name, client in (("alice", alice), ("bob", bob)):
                for event in client.poll(now):
                    if isinstance(event, Registered):
                        logged.add(name)
                    elif isinstance(event, InviteReceived):
                        bob.accept(event.call_id, now)
                    elif isinstance(event, SessionEnded) and name == "alice":
                        ended.append(event)
            if call_id is None and logged == {"alice", "bob"}:
                call_id = alice.invite("bob@na.gamesdk.test", now)
            if mine is None and call_id in alice.sessions and call_id in bob.sessions:
                mine = alice.sessions[call_id]
                link.config = SimulatorConfig(loss=1.0)  # bob's CLOSE copies never arrive; his BYE does
                bob.sessions[call_id].end(now, "bob leaves", linger_s=0)
            time.sleep(0.002)
        assert mine is not None and ended and ended[0].by_peer
        closed = [e for e in mine.poll(time.monotonic()) if isinstance(e, ChannelClosed)]
        assert closed and all(e.by_peer for e in closed)
        with pytest.raises(LocalProtocolError, match="closed channel"):
            mine.send(b"after the end")
        alice.close()
        bob.close()
