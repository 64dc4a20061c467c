"""Hostile input on the peer's own address, over real UDP on 127.0.0.1: spoofed datagrams never end a channel."""

from __future__ import annotations

import select
import time

from gamesdk.channel import (
    Channel,
    ChannelEstablished,
    ChannelEvent,
    ChannelState,
    Lane,
    MessageReceived,
    SecurityError,
)
from gamesdk.channel import packet as wire
from gamesdk.channel.testing import make_params_pair
from gamesdk.io.channel_poll import PollChannel, bind_udp

LOOPBACK = "127.0.0.1"


def _pump(chans: list[PollChannel], logs: list[list[ChannelEvent]], until: object, max_s: float) -> None:
    end = time.monotonic() + max_s
    while time.monotonic() < end:
        now = time.monotonic()
        for ch, log in zip(chans, logs, strict=True):
            log.extend(ch.poll(now))
        if callable(until) and until():
            return
        select.select(chans, [], [], 0.005)


def test_spoofed_datagrams_from_the_peer_address_before_confirmation_do_not_stop_the_session() -> None:
    sa, sb = bind_udp(LOOPBACK), bind_udp(LOOPBACK)
    offer, answer = make_params_pair(offer_addr=sa.getsockname(), answer_addr=sb.getsockname())
    # keys of another session: "wrong key" packets that are well formed and carry the right session id
    other_offer, _ = make_params_pair(
        seed=7, offer_addr=sa.getsockname(), answer_addr=sb.getsockname(), answer_sid=offer.local_session_id
    )
    a = PollChannel.open(offer, now=time.monotonic(), sock=sa)
    forger = Channel(other_offer, now=time.monotonic())
    forged = [d for d, _ in forger.datagrams_to_send(time.monotonic())]
    assert forged, "the forger's first packet (CONFIRM)"
    sid = offer.local_session_id
    spoofed = [
        wire.encode_header(wire.PacketType.CONFIRM, sid ^ 1, 0) + bytes(40),  # wrong session id
        wire.encode_header(wire.PacketType.DATA, sid ^ 0xFFFF, 5) + bytes(60),
        b"\x41" + bytes(3),  # garbage, too short
        bytes(range(200)),  # garbage
        wire.encode_header(wire.PacketType.CONFIRM, sid, 0) + bytes(50),  # right sid, not encrypted
        *forged,  # right sid, wrong key
    ]
    a_events: list[ChannelEvent] = []
    b_events: list[ChannelEvent] = []
    try:
        # the peer's socket exists but its channel is not open yet: datagrams "from the peer" are the spoofer's
        for _ in range(3):
            for d in spoofed:
                sb.sendto(d, sa.getsockname())
        _pump([a], [a_events], lambda: a.stats.decrypt_failures >= 6, max_s=5.0)
        assert a.stats.wrong_sid_dropped >= 6 and a.stats.decrypt_failures >= 6
        assert a.channel.state is ChannelState.CONFIRMING and a_events == []
        # now the real peer opens, well within the key-mismatch deadline
        b = PollChannel(Channel(answer, now=time.monotonic()), sb)
        a.send(b"hello", Lane.RELIABLE)
        _pump(
            [a, b],
            [a_events, b_events],
            lambda: any(isinstance(e, MessageReceived) for e in b_events) and ChannelEstablished() in a_events,
            max_s=10.0,
        )
        assert ChannelEstablished() in a_events and ChannelEstablished() in b_events
        assert [e.data for e in b_events if isinstance(e, MessageReceived)] == [b"hello"]
        assert not any(isinstance(e, SecurityError) for e in a_events + b_events)
        # and more spoofing after confirmation is only counted
        for d in spoofed:
            sb.sendto(d, sa.getsockname())
        _pump([a, b], [a_events, b_events], None, max_s=0.3)
        assert a.channel.state is ChannelState.ESTABLISHED
    finally:
        sa.close()
        sb.close()


def test_a_flood_of_unauthenticated_datagrams_costs_a_bounded_amount_of_work_per_poll() -> None:
    sa, sb, flooder = bind_udp(LOOPBACK), bind_udp(LOOPBACK), bind_udp(LOOPBACK)
    offer, answer = make_params_pair(offer_addr=sa.getsockname(), answer_addr=sb.getsockname())
    now = time.monotonic()
    a, b = PollChannel.open(offer, now=now, sock=sa), PollChannel.open(answer, now=now, sock=sb)
    a_events: list[ChannelEvent] = []
    b_events: list[ChannelEvent] = []
    try:
        _pump([a, b], [a_events, b_events], lambda: ChannelEstablished() in b_events, max_s=10.0)
        sid = answer.local_session_id
        junk = [wire.encode_header(wire.PacketType.DATA, sid, 10**6 + i) + bytes(100) for i in range(1500)]
        sent = 0
        for i, d in enumerate(junk):  # from the peer's address and from a stranger, right session id
            try:
                (sa if i % 2 else flooder).sendto(d, sb.getsockname())
                sent += 1
            except BlockingIOError:
                break
        assert sent > 2 * b.max_reads, "the flood is larger than one poll may take"

        def dropped() -> int:
            s = b.stats
            return s.decrypt_failures + s.foreign_address_dropped + s.wrong_sid_dropped + s.malformed_dropped

        before = dropped()
        b_events.extend(b.poll(time.monotonic()))
        assert 0 < dropped() - before <= b.max_reads == 256
        # the rest drains over the next polls, and the session carries on meanwhile
        a.send(b"still here", Lane.RELIABLE)
        _pump(
            [a, b], [a_events, b_events],
            lambda: any(isinstance(e, MessageReceived) for e in b_events), max_s=10.0,
        )  # fmt: skip
        assert [e.data for e in b_events if isinstance(e, MessageReceived)] == [b"still here"]
        assert b.channel.state is ChannelState.ESTABLISHED
    finally:
        for s in (sa, sb, flooder):
            s.close()


def test_the_asyncio_reader_takes_a_bounded_burst_per_wake_up_under_a_flood() -> None:
    import asyncio

    from gamesdk.io.channel_asyncio import _ReaderTransport, attach_channel

    async def main() -> None:
        sa, sb, flooder = bind_udp(LOOPBACK), bind_udp(LOOPBACK), bind_udp(LOOPBACK)
        offer, answer = make_params_pair(offer_addr=sa.getsockname(), answer_addr=sb.getsockname())
        got: list[ChannelEvent] = []
        a = attach_channel(offer, sock=sa, on_event=lambda e: None)
        b = attach_channel(answer, sock=sb, on_event=got.append)
        try:
            for _ in range(500):
                if b.channel.peer_validated and a.channel.peer_validated:
                    break
                await asyncio.sleep(0.01)
            sid = answer.local_session_id
            sent = 0
            for i in range(1500):
                try:
                    flooder.sendto(wire.encode_header(wire.PacketType.DATA, sid, 10**6 + i) + bytes(80), sb.getsockname())
                    sent += 1
                except BlockingIOError:
                    break
            deltas: list[int] = []
            last = b.stats.foreign_address_dropped

            def tick() -> None:  # runs once per loop iteration while the flood drains
                nonlocal last
                now_dropped = b.stats.foreign_address_dropped
                deltas.append(now_dropped - last)
                last = now_dropped
                if now_dropped < sent and len(deltas) < 10_000:
                    asyncio.get_running_loop().call_soon(tick)

            asyncio.get_running_loop().call_soon(tick)
            for _ in range(500):
                if b.stats.foreign_address_dropped >= sent:
                    break
                await asyncio.sleep(0.01)
            assert b.stats.foreign_address_dropped == sent > 2 * _ReaderTransport.BURST
            assert max(deltas) <= _ReaderTransport.BURST  # other callbacks ran between bursts
            a.send(b"still here", Lane.RELIABLE)
            for _ in range(500):
                if any(isinstance(e, MessageReceived) for e in got):
                    break
                await asyncio.sleep(0.01)
            assert [e.data for e in got if isinstance(e, MessageReceived)] == [b"still here"]
        finally:
            a.close()
            b.close()
            flooder.close()

    asyncio.run(asyncio.wait_for(main(), 30))
