"""Spoofed datagrams carrying the caller's channel address reach the callee before the caller's first packet:
the session still establishes (real sessions; the spoofing is done with a raw socket, so it needs root)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from pathlib import Path

import pytest
from regions import running_regions

from gamesdk import GameSession, Lane
from gamesdk.channel import packet as wire
from gamesdk.events import MessageReceived, SecurityError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="spoofing a source address needs a raw socket (root)")


def _spoof(src: tuple[str, int], dst: tuple[str, int], payloads: list[bytes]) -> None:
    """Send UDP datagrams to ``dst`` that claim to come from ``src`` (IPv4 header built by hand)."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        for payload in payloads:
            udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload  # checksum 0: none
            ip = struct.pack(
                "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                socket.inet_aton(src[0]), socket.inet_aton(dst[0]),
            )  # fmt: skip
            raw.sendto(ip + udp, (dst[0], 0))
    finally:
        raw.close()


@pytest.mark.parametrize("ice", [False, True], ids=["sdp-address", "ice"])
def test_spoofed_datagrams_from_the_callers_address_do_not_stop_the_session(tmp_path: Path, ice: bool) -> None:
    async def main() -> None:
        async with running_regions(tmp_path) as regions:
            alice, bob = regions.client("alice", ice=ice), regions.client("bob", ice=ice)
            await alice.login()
            await bob.login()
            addrs: dict[str, tuple[str, int]] = {}
            for name, client in (("alice", alice), ("bob", bob)):
                core = client._core
                assert core is not None
                real = core.agent._channel_addr

                def capture(call_id: str, name: str = name, real: object = real) -> tuple[str, int]:
                    addr = real(call_id)  # type: ignore[operator]
                    addrs[name] = addr
                    if name == "bob":
                        # bob's channel socket exists, its channel does not yet: the spoofer gets in first
                        spoofed = [
                            wire.encode_header(wire.PacketType.CONFIRM, sid, 0) + os.urandom(48)
                            for sid in range(40)  # session ids bob has not even picked yet
                        ] + [b"\x41" + os.urandom(5), os.urandom(300), b"SIP/2.0 200 OK\r\n\r\n"]
                        _spoof(addrs["alice"], addr, spoofed)
                    return addr

                core.agent._channel_addr = capture

            async def answer() -> GameSession:
                return await (await bob.next_invite()).accept()

            callee = asyncio.create_task(answer())
            session = await alice.invite("bob@na.gamesdk.test")
            bobs = await callee
            session.send(b"first move", lane=Lane.RELIABLE)

            async def first_message() -> MessageReceived:
                while True:
                    event = await bobs.next_event()
                    assert not isinstance(event, SecurityError), event
                    if isinstance(event, MessageReceived):
                        return event

            got = await asyncio.wait_for(first_message(), 10)
            assert got.data == b"first move"
            stats = bobs.channel.stats
            # the spoofed datagrams did arrive "from alice" and were dropped and counted, nothing more: by the
            # channel, or with ICE by the path that owns the socket until a pair is nominated
            counted = stats.wrong_sid_dropped + stats.malformed_dropped + stats.decrypt_failures
            core = bob._core
            assert core is not None
            path = core.paths.get(bobs.agreement.call_id) if ice else None
            if path is not None:
                counted += path.early_dropped
            assert counted >= 40
            await session.end("done")
            await alice.close()
            await bob.close()

    asyncio.run(asyncio.wait_for(main(), 30))
