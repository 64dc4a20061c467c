"""The player's SIP socket over UDP with ICE (RFC 5626 outbound): what it sends to its region, seen by a plain
UDP socket playing the region on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Callable
from pathlib import Path

from regions import running_regions
from udp_relay_kit import OnPathRelay

from gamesdk import ClientConfig, GameClient, GameSession, PollingClient
from gamesdk.ice import stun
from gamesdk.lowlevel import TimerConfig
from gamesdk.session.keepalive import StunKeepAlive
from gamesdk.sip.message import response_for
from gamesdk.sip.parser import parse_message_untrusted as parse_message


def _fake_region() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    return sock


def test_register_over_udp_with_ice_says_udp_in_its_via() -> None:
    region = _fake_region()
    client = PollingClient(ClientConfig(username="alice", password="pw", domain="eu.gamesdk.test",
                                        server=region.getsockname()[:2]), bind=("127.0.0.1", 0))
    try:
        client.login(time.monotonic())
        client.poll(time.monotonic())
        data, _ = region.recvfrom(65535)
        register = parse_message(data)
        assert ";ob>" in (register.headers.get("Contact") or "")  # outbound, as over TLS ...
        assert register.top_via.transport == "UDP", register.headers.get("Via")  # ... but sent over UDP
    finally:
        client.close()
        region.close()


def _stun_requests(relay: OnPathRelay, player: tuple[str, int]) -> int:
    return sum(1 for up, src, data in relay.seen if up and src == player and stun.is_stun(data))


def _registers(relay: OnPathRelay, player: tuple[str, int]) -> int:
    return sum(1 for up, src, data in relay.seen if up and src == player and data.startswith(b"REGISTER "))


def test_stun_keepalives_keep_the_flow_and_a_new_mapping_registers_again(tmp_path: Path) -> None:
    """While logged in over UDP the player sends STUN Binding requests on its SIP socket to its region (RFC 5626
    section 4.4.2). When the mapping toward the region changes (a relay between them plays the NAT and rebinds),
    the next keep-alive's answer names a new address: the player registers again at once, so an invitation from
    the region reaches it at the new mapping instead of a dead one."""

    async def main() -> None:
        async with running_regions(tmp_path) as regions:
            relay = OnPathRelay(regions.na.address)
            try:
                bob = GameClient(dataclasses.replace(regions.client_config("bob"), server=relay.address,
                                                     stun_keepalive_s=0.3))
                alice = regions.client("alice")
                await bob.login()
                await alice.login()
                core = bob._core
                assert core is not None
                sip = core.sock.getsockname()[:2]

                async def until(check: Callable[[], bool], what: str) -> None:
                    for _ in range(400):
                        if check():
                            return
                        await asyncio.sleep(0.01)
                    raise AssertionError(what)

                await until(lambda: _stun_requests(relay, sip) >= 2, "no STUN keep-alive on the SIP socket")
                keepalive = core.agent.keepalive
                assert keepalive is not None and keepalive.answered >= 1
                assert keepalive.mapped is not None and keepalive.mapped != sip  # the region saw the relay's port
                before = _registers(relay, sip)
                relay.rebind()  # the NAT forgets the mapping; the next datagram gets a new port
                await until(lambda: _registers(relay, sip) > before, "the new mapping was not registered")
                await until(lambda: core.agent.stats["flow_failures"] >= 1 and core.agent.registered
                            and keepalive.mapped is not None, "no registration after the rebinding")

                async def answer() -> GameSession:
                    return await (await bob.next_invite()).accept()

                callee = asyncio.create_task(answer())
                session = await asyncio.wait_for(alice.invite("bob@na.gamesdk.test"), 20)
                bobs = await asyncio.wait_for(callee, 10)
                assert bobs.call_id == session.call_id  # the region reached bob through the new mapping
                await alice.close()
                await bob.close()
            finally:
                relay.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def _fake_registrar_session(outbound: bool, seconds: float) -> tuple[int, int]:
    """A plain socket plays a registrar that answers REGISTER 200 (``Require: outbound`` or not,
    ``Flow-Timer: 1``) but never STUN. Returns (REGISTERs, STUN requests) it got from the player in ``seconds``."""
    region = _fake_region()
    region.settimeout(0.02)
    client = PollingClient(ClientConfig(username="alice", password="pw", domain="eu.gamesdk.test",
                                        server=region.getsockname()[:2], timers=TimerConfig(t1=0.05)),
                           bind=("127.0.0.1", 0))
    registers = stuns = 0
    try:
        client.login(time.monotonic())
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            client.poll(time.monotonic())
            try:
                data, addr = region.recvfrom(65535)
            except TimeoutError:
                continue
            if stun.is_stun(data):
                stuns += addr[:2] == client.local_addr  # not the game socket's gathering: the SIP socket's
                continue
            request = parse_message(data)
            registers += 1
            extra = [("Contact", f"{request.headers.get('Contact')};expires=300"), ("Flow-Timer", "1")]
            if outbound:
                extra.append(("Require", "outbound"))
            region.sendto(response_for(request, 200, extra=extra).to_bytes(), addr)  # type: ignore[arg-type]
    finally:
        client.close()
        region.close()
    return registers, stuns


def test_no_stun_keepalives_toward_a_registrar_without_outbound() -> None:
    registers, stuns = _fake_registrar_session(outbound=False, seconds=2.0)
    assert registers == 1 and stuns == 0


def test_keepalives_stop_when_the_registrar_never_answers_stun() -> None:
    """5 unanswered tries from a registrar that never answered one: keep-alives stop instead of registering
    again and again (this is a registrar without a STUN responder, not a broken flow)."""
    registers, stuns = _fake_registrar_session(outbound=True, seconds=4.0)
    assert registers == 1 and stuns == StunKeepAlive.TRIES
