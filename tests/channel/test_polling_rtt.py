"""A game loop's round trip is the network's, not the frame sleep: PollChannel at 50 Hz against asyncio, same run."""

from __future__ import annotations

import asyncio
import time

from gamesdk.channel.config import ChannelConfig, Lane
from gamesdk.channel.connection import Channel
from gamesdk.channel.testing import make_params_pair
from gamesdk.io.channel_asyncio import attach_channel
from gamesdk.io.channel_poll import PollChannel, bind_udp

FRAMES = 60  # 1.2 s at 50 Hz: some 60 RTT samples each way
FRAME_S = 1 / 50
CONFIG = ChannelConfig(disconnected_s=None)


def polling_rtt_ms() -> float:
    a_sock, b_sock = bind_udp(), bind_udp()
    offer, answer = make_params_pair(offer_addr=a_sock.getsockname()[:2], answer_addr=b_sock.getsockname()[:2])
    now = time.monotonic()
    a = PollChannel(Channel(offer, CONFIG, now=now), a_sock)
    b = PollChannel(Channel(answer, CONFIG, now=now), b_sock)
    try:
        for frame in range(FRAMES):  # the documented frame: poll, update (send), flush with a fresh now
            now = time.monotonic()
            a.poll(now)
            b.poll(now)
            a.send(b"input %d" % frame, Lane.SEQUENCED)
            b.send(b"state %d" % frame, Lane.SEQUENCED)
            a.flush(time.monotonic())
            b.flush(time.monotonic())
            time.sleep(FRAME_S)
        rtt = a.stats.rtt_ms
        assert rtt is not None
        return rtt
    finally:
        a.close(time.monotonic())
        b.close(time.monotonic())


def asyncio_rtt_ms() -> float:
    async def main() -> float:
        a_sock, b_sock = bind_udp(), bind_udp()
        offer, answer = make_params_pair(offer_addr=a_sock.getsockname()[:2], answer_addr=b_sock.getsockname()[:2])
        a = attach_channel(offer, CONFIG, sock=a_sock, on_event=lambda e: None)
        b = attach_channel(answer, CONFIG, sock=b_sock, on_event=lambda e: None)
        try:
            for frame in range(FRAMES):
                a.send(b"input %d" % frame, Lane.SEQUENCED)
                b.send(b"state %d" % frame, Lane.SEQUENCED)
                await asyncio.sleep(FRAME_S)
            rtt = a.stats.rtt_ms
            assert rtt is not None
            return rtt
        finally:
            a.close()
            b.close()

    return asyncio.run(main())


def test_polling_round_trip_matches_asyncio_at_50_hz() -> None:
    polled = polling_rtt_ms()
    awaited = asyncio_rtt_ms()
    # a datagram waits up to a whole 20 ms frame in the socket; timed at the poll, that wait was the "RTT"
    assert polled - awaited < 1.0, f"polling {polled:.3f} ms vs asyncio {awaited:.3f} ms"
