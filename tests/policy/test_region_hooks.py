"""The policy hooks in two real regional servers on loopback, driven by the real SDK (GameClient over UDP).

Covers the failure table of research/protocol.md (c) for this profile: a normal game, a PRELIMINARY refusal at
the callee's server, a FINAL refusal at the caller's server after the callee modified its answer (2xx still
forwarded with Warning 370 and no token, then ACK and BYE, everything released and billed), and the
registration expiry backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gamesdk import Acceptable, ClientConfig, GameClient, GameSession, Requirements, SessionError
from gamesdk.qos.model import parse_game_format
from server.config import ServerConfig, load_config
from server.io import EmbeddedServer
from server.node import RegionalServer
from server.policy import PolicyServer, ReservationState
from server.policy.cli_support import billing_rows
from server.policy.hooks import RegionPolicyHooks
from server.policy.runner import make_policy_hooks

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DOMAINS = {"eu": "eu.gamesdk.test", "na": "na.gamesdk.test"}
USERS = {"eu": ("alice", "alice-pw"), "na": ("bob", "bob-pw")}
POLICY_TOKEN = "policy-test-token-0123456789"


def region_config(region: str, tmp: Path, network_changes: dict[str, Any] | None = None) -> ServerConfig:
    config = load_config(EXAMPLES / f"{region}.toml")
    networks = tuple({**n, **(network_changes or {})} if i == 0 else dict(n)
                     for i, n in enumerate(config.access_networks_raw))
    return dataclasses.replace(config, database=tmp / f"{region}.sqlite3", access_networks_raw=networks)


class Region:
    def __init__(self, server: EmbeddedServer) -> None:
        self.server = server

    @property
    def hooks(self) -> RegionPolicyHooks:
        assert self.server.node is not None
        hooks = self.server.node.hooks
        assert isinstance(hooks, RegionPolicyHooks)
        return hooks

    @property
    def policy(self) -> PolicyServer:
        backend = self.hooks.backend
        assert isinstance(backend, PolicyServer)
        return backend

    async def until(self, condition: Callable[[PolicyServer], bool], what: str) -> None:
        for _ in range(300):  # bounded: at most ~3 s
            if condition(self.policy):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{self.server.config.name}: timed out waiting for {what}")


def hooks_for(config: ServerConfig) -> Callable[[RegionalServer], RegionPolicyHooks]:
    return lambda node: make_policy_hooks(config, node)


async def peered_regions(eu_config: ServerConfig, na_config: ServerConfig) -> tuple[EmbeddedServer, EmbeddedServer]:
    """eu and na started with the region policy, peered with each other, alice added at eu and bob at na."""
    eu = EmbeddedServer(eu_config, port=0, hooks_factory=hooks_for(eu_config))
    na = EmbeddedServer(na_config, port=0, hooks_factory=hooks_for(na_config))
    await eu.start()
    await na.start()
    eu.set_peer(DOMAINS["na"], na.address)
    na.set_peer(DOMAINS["eu"], eu.address)
    for server, region in ((eu, "eu"), (na, "na")):
        server.add_user(*USERS[region])
    return eu, na


Scenario = Callable[[Region, Region, GameClient, GameClient], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario, eu_net: dict[str, Any] | None = None,
        na_net: dict[str, Any] | None = None, eu_policy_url: str | None = None,
        eu_policy_timeout_s: float = 2.0) -> None:
    async def main() -> None:
        servers: dict[str, EmbeddedServer] = {}
        for region, changes in (("eu", eu_net), ("na", na_net)):
            config = region_config(region, tmp_path, changes)
            if region == "eu" and eu_policy_url is not None:
                config = dataclasses.replace(config, policy_raw={"url": eu_policy_url, "timeout_s": eu_policy_timeout_s,
                                                                 "token": POLICY_TOKEN})
            servers[region] = EmbeddedServer(config, port=0, hooks_factory=hooks_for(config))
        for server in servers.values():
            await server.start()
        try:
            servers["eu"].set_peer(DOMAINS["na"], servers["na"].address)
            servers["na"].set_peer(DOMAINS["eu"], servers["eu"].address)
            clients = []
            for region, (user, password) in USERS.items():
                servers[region].add_user(user, password)
                client = GameClient(ClientConfig(username=user, password=password, domain=DOMAINS[region],
                                                 server=servers[region].address))
                await client.login()
                clients.append(client)
            try:
                await scenario(Region(servers["eu"]), Region(servers["na"]), clients[0], clients[1])
            finally:
                for client in clients:
                    await client.close()
        finally:
            for server in servers.values():
                await server.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def active(policy: PolicyServer) -> bool:
    held = policy.reservations()
    return len(held) == 1 and held[0].state is ReservationState.ACTIVE


def test_normal_game_reserves_both_sides_and_bills(tmp_path: Path) -> None:
    async def scenario(eu: Region, na: Region, alice: GameClient, bob: GameClient) -> None:
        async def answer() -> GameSession:
            return await (await bob.next_invite()).accept()

        callee = asyncio.create_task(answer())
        session = await alice.invite("bob@na.gamesdk.test", format="pong/1;tick=60", latency_ms=80,
                                     bandwidth_kbps=96)
        bobs = await callee
        reservations = {r.region: r for r in session.agreement.reservations}
        assert set(reservations) == {"eu.gamesdk.test", "na.gamesdk.test"}
        assert reservations["eu.gamesdk.test"].network == "eu-fiber"
        assert (reservations["eu.gamesdk.test"].up_kbps, reservations["eu.gamesdk.test"].down_kbps) == (96, 96)
        assert all(r.token and len(r.token) == 32 for r in reservations.values())
        await eu.until(active, "alice's confirmed reservation")
        await na.until(active, "bob's confirmed reservation")
        assert eu.policy.reservations()[0].grant.token == reservations["eu.gamesdk.test"].token
        await session.end("game over")
        await eu.until(PolicyServer.is_idle, "release at eu")
        await na.until(PolicyServer.is_idle, "release at na")
        del bobs

    run(tmp_path, scenario)
    [eu_row] = billing_rows(tmp_path / "eu.sqlite3")
    [na_row] = billing_rows(tmp_path / "na.sqlite3")
    assert (eu_row.side, eu_row.network, eu_row.end_reason) == ("orig", "eu-fiber", "bye-local")
    assert (na_row.side, na_row.network, na_row.end_reason) == ("term", "na-fiber", "bye-remote")
    for row in (eu_row, na_row):
        assert row.t_start is not None and row.t_stop is not None and row.t_stop >= row.t_start
        assert row.game_format == str(parse_game_format("pong/1;tick=60")) and row.qos_class == "action"  # examples: [[classes]] action


@pytest.mark.parametrize(("region", "network"), [("eu", "eu-fiber"), ("na", "na-fiber")])
def test_preliminary_refusal_at_each_server(tmp_path: Path, region: str, network: str) -> None:
    async def scenario(eu: Region, na: Region, alice: GameClient, bob: GameClient) -> None:
        with pytest.raises(SessionError) as info:
            await alice.invite("bob@na.gamesdk.test", latency_ms=80, bandwidth_kbps=64)
        assert info.value.status == 580
        assert f"insufficient uplink in {network} (needs 64 kbit/s, 50 free)" in info.value.reason
        assert eu.policy.is_idle() and na.policy.is_idle()

    small = {"uplink_kbps": 50}
    run(tmp_path, scenario, eu_net=small if region == "eu" else None, na_net=small if region == "na" else None)
    # Nothing was held, so nothing is billed (DESIGN section 4: a PRELIMINARY check holds nothing).
    assert billing_rows(tmp_path / "eu.sqlite3") == [] and billing_rows(tmp_path / "na.sqlite3") == []


def test_final_refusal_at_callee_server(tmp_path: Path) -> None:
    async def scenario(eu: Region, na: Region, alice: GameClient, bob: GameClient) -> None:
        async def answer() -> None:
            invite = await bob.next_invite()
            # Bob wants to receive 200 kbit/s: his downlink at na must carry it, and na has 100.
            requirements = Requirements(formats=(parse_game_format("pong/1"),), receive_kbps=200)
            with contextlib.suppress(SessionError):
                await invite.accept(requirements=requirements)

        callee = asyncio.create_task(answer())
        with pytest.raises(SessionError) as info:
            # alice lets the answer ask for more than her offer (her SDK's default bound is the offer).
            await alice.invite("bob@na.gamesdk.test", format="pong/1", latency_ms=80, bandwidth_kbps=64,
                               acceptable=Acceptable(max_peer_receive_kbps=200))
        assert info.value.status == 580
        assert "insufficient downlink in na-fiber (needs 200 kbit/s, 100 free)" in info.value.reason
        await callee
        # eu saw na's Warning 370 on the 2xx and reserved nothing; na refused, so it holds nothing either.
        assert eu.policy.is_idle() and na.policy.is_idle()

    run(tmp_path, scenario, na_net={"downlink_kbps": 100})
    assert billing_rows(tmp_path / "eu.sqlite3") == []
    [na_row] = billing_rows(tmp_path / "na.sqlite3")
    assert (na_row.end_reason, na_row.token, na_row.t_start) == ("qos-failed", "", None)


def test_the_callee_cannot_inflate_the_callers_reservation(tmp_path: Path) -> None:
    async def scenario(eu: Region, na: Region, alice: GameClient, bob: GameClient) -> None:
        async def answer() -> GameSession:
            invite = await bob.next_invite()
            # Bob asks to receive 200 kbit/s from alice, who offered 64; eu's uplink has 100.
            requirements = Requirements(formats=(parse_game_format("pong/1"),), receive_kbps=200)
            return await invite.accept(requirements=requirements)

        callee = asyncio.create_task(answer())
        session = await alice.invite("bob@na.gamesdk.test", format="pong/1", latency_ms=80, bandwidth_kbps=64,
                                     acceptable=Acceptable(max_peer_receive_kbps=200))
        await callee
        await eu.until(active, "alice's confirmed reservation")
        del session

    run(tmp_path, scenario, eu_net={"uplink_kbps": 100})
    [eu_row] = billing_rows(tmp_path / "eu.sqlite3")
    [na_row] = billing_rows(tmp_path / "na.sqlite3")
    # eu reserves (and bills) alice's side at her offer, not at the 200 the answer asked for; bob's own side at na
    # carries what bob asked to receive.
    assert (eu_row.uplink_kbps, eu_row.downlink_kbps) == (64, 64)
    assert (na_row.uplink_kbps, na_row.downlink_kbps) == (64, 200)


def test_the_callers_sdk_refuses_an_answer_above_its_offer_by_default(tmp_path: Path) -> None:
    async def scenario(eu: Region, na: Region, alice: GameClient, bob: GameClient) -> None:
        async def answer() -> None:
            invite = await bob.next_invite()
            requirements = Requirements(formats=(parse_game_format("pong/1"),), receive_kbps=49000)
            with contextlib.suppress(SessionError):
                await invite.accept(requirements=requirements)

        callee = asyncio.create_task(answer())
        with pytest.raises(SessionError) as info:
            await alice.invite("bob@na.gamesdk.test", format="pong/1", latency_ms=80, bandwidth_kbps=64)
        assert info.value.status == 488 and "49000" in info.value.reason
        await callee
        await eu.until(PolicyServer.is_idle, "release at eu")

    run(tmp_path, scenario)


def test_registration_expiry_releases(tmp_path: Path) -> None:
    async def scenario(eu: Region, na: Region, alice: GameClient, bob: GameClient) -> None:
        async def answer() -> GameSession:
            return await (await bob.next_invite()).accept()

        callee = asyncio.create_task(answer())
        session = await alice.invite("bob@na.gamesdk.test", latency_ms=80, bandwidth_kbps=64)
        await callee
        await eu.until(active, "alice's confirmed reservation")
        # Logging out (REGISTER Expires: 0) removes the binding: the registrar tells the hooks, which release.
        await alice.logout()
        await eu.until(PolicyServer.is_idle, "release on logout")
        del session

    run(tmp_path, scenario)
    [eu_row] = billing_rows(tmp_path / "eu.sqlite3")
    assert eu_row.end_reason == "reg-expired"


def test_separate_policy_process_over_http(tmp_path: Path) -> None:
    """eu's policy runs as its own HTTP service (here on its own loop thread); the SIP server uses the URL."""
    import threading

    from server.policy import PolicyConfig
    from server.policy.http import PolicyHttpService
    from server.policy.runner import HttpQueryRunner, build_policy_server, policy_document

    eu_config = region_config("eu", tmp_path)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start_service() -> tuple[PolicyServer, PolicyHttpService, tuple[str, int]]:
        policy = build_policy_server(PolicyConfig.from_mapping(policy_document(eu_config)),
                                     tmp_path / "eu-policy.sqlite3", region="eu")
        service = PolicyHttpService(policy, token=POLICY_TOKEN)
        return policy, service, await service.start("127.0.0.1", 0)

    policy, service, address = asyncio.run_coroutine_threadsafe(start_service(), loop).result(5)

    async def scenario(eu: Region, na: Region, alice: GameClient, bob: GameClient) -> None:
        assert eu.hooks.backend is None and isinstance(eu.hooks.runner, HttpQueryRunner)

        async def answer() -> GameSession:
            return await (await bob.next_invite()).accept()

        callee = asyncio.create_task(answer())
        session = await alice.invite("bob@na.gamesdk.test", latency_ms=80, bandwidth_kbps=64)
        await callee
        assert {r.region for r in session.agreement.reservations} == {"eu.gamesdk.test", "na.gamesdk.test"}
        for _ in range(300):  # bounded wait for alice's confirmed PUBLISH to reach the policy process
            if policy.reservations() and policy.reservations()[0].state is ReservationState.ACTIVE:
                break
            await asyncio.sleep(0.01)
        assert policy.reservations()[0].state is ReservationState.ACTIVE
        await session.end("game over")
        for _ in range(300):
            if policy.is_idle():
                break
            await asyncio.sleep(0.01)
        assert policy.is_idle()

    try:
        run(tmp_path, scenario, eu_policy_url=f"http://127.0.0.1:{address[1]}", eu_policy_timeout_s=5.0)
    finally:
        asyncio.run_coroutine_threadsafe(service.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    [row] = billing_rows(tmp_path / "eu-policy.sqlite3")
    assert (row.side, row.end_reason) == ("orig", "bye-local")


def test_server_restart_closes_leases_that_ran_out(tmp_path: Path) -> None:
    """eu stops mid-game; when it starts again after the lease ran out, start-up releases and bills it."""

    async def main() -> None:
        game = await _confirmed_session_with_a_short_lease(tmp_path)
        eu, na, alice, bob = game.eu, game.na, game.alice, game.bob
        restarted: EmbeddedServer | None = None
        try:
            port = eu.address[1]
            await eu.stop()  # the eu process goes away with the reservation held
            await asyncio.sleep(1.5)  # longer than the 1 s lease + 0.2 s slack
            # Same port, so the players' later requests (hang-up, logout) reach it and close promptly.
            restarted = EmbeddedServer(game.eu_config, port=port, hooks_factory=hooks_for(game.eu_config))
            await restarted.start()
            assert Region(restarted).policy.is_idle()
        finally:
            await alice.close()
            await bob.close()
            for server in (restarted, na):
                if server is not None:
                    await server.stop()

    asyncio.run(asyncio.wait_for(main(), 30))
    [row] = billing_rows(tmp_path / "eu.sqlite3")
    assert row.end_reason == "server-restart"
    assert row.t_start is not None and row.t_stop == pytest.approx(row.t_start + 1.0)  # billed to the lease end


@dataclasses.dataclass
class _Game:
    eu_config: ServerConfig
    eu: EmbeddedServer
    na: EmbeddedServer
    alice: GameClient
    bob: GameClient


async def _confirmed_session_with_a_short_lease(tmp_path: Path) -> _Game:
    """eu and na with a 1 s lease at eu (+0.2 s slack); alice (eu) publishes with Expires 1 and never refreshes
    within a test, invites bob (na); returns once eu holds alice's confirmed reservation."""
    short = {"min_expires_s": 1, "default_expires_s": 1, "lease_slack_s": 0.2}
    eu_config = dataclasses.replace(region_config("eu", tmp_path), policy_raw=short)
    na_config = region_config("na", tmp_path)
    eu, na = await peered_regions(eu_config, na_config)
    alice = GameClient(ClientConfig(username="alice", password="alice-pw", domain=DOMAINS["eu"],
                                    server=eu.address, publish_expires_s=1, publish_refresh_s=60.0))
    bob = GameClient(ClientConfig(username="bob", password="bob-pw", domain=DOMAINS["na"], server=na.address))
    try:
        await alice.login()
        await bob.login()

        async def answer() -> GameSession:
            return await (await bob.next_invite()).accept()

        callee = asyncio.create_task(answer())
        await alice.invite("bob@na.gamesdk.test", latency_ms=80, bandwidth_kbps=64)
        await callee
        await Region(eu).until(active, "alice's confirmed reservation")
    except BaseException:
        for client in (alice, bob):
            await client.close()
        for server in (eu, na):
            await server.stop()
        raise
    return _Game(eu_config=eu_config, eu=eu, na=na, alice=alice, bob=bob)


def test_lease_expiry_through_the_node_timers(tmp_path: Path) -> None:
    """A player that stops refreshing (crashed): the node's timer runs the policy's lease expiry."""

    async def main() -> None:
        game = await _confirmed_session_with_a_short_lease(tmp_path)
        try:
            await Region(game.eu).until(PolicyServer.is_idle, "the lease to run out (1 s + 0.2 s)")
        finally:
            await game.alice.close()
            await game.bob.close()
            await game.eu.stop()
            await game.na.stop()

    asyncio.run(asyncio.wait_for(main(), 30))
    [row] = billing_rows(tmp_path / "eu.sqlite3")
    assert row.end_reason == "lease-expired"
    assert row.t_start is not None and row.t_stop == pytest.approx(row.t_start + 1.0)


def test_player_gone_before_confirming_releases_not_established(tmp_path: Path) -> None:
    """research/protocol.md (c), "2xx or ACK lost, or a player gone before confirming": alice's SDK falls silent
    as the 2xx arrives (no ACK, no PUBLISH), so neither bob's nor alice's server hears 'confirmed'; each releases
    its own player's reservation at the confirm deadline and bills it "not-established"."""
    quick = {"confirm_timeout_s": 1.0}

    async def main() -> None:
        eu_config = dataclasses.replace(region_config("eu", tmp_path), policy_raw=quick)
        na_config = dataclasses.replace(region_config("na", tmp_path), policy_raw=quick)
        eu, na = await peered_regions(eu_config, na_config)
        # ice=False: the ACK leaves the SIP socket, where this test drops it (with ICE it takes the game socket)
        alice = GameClient(ClientConfig(username="alice", password="alice-pw", domain=DOMAINS["eu"],
                                        server=eu.address, ice=False))
        bob = GameClient(ClientConfig(username="bob", password="bob-pw", domain=DOMAINS["na"], server=na.address,
                                      ice=False))
        callee: asyncio.Task[None] | None = None
        try:
            await alice.login()
            await bob.login()
            transport = alice._transport  # the SDK's socket: from here on alice's ACKs and PUBLISHes are lost
            assert transport is not None
            send = transport.sendto
            dropped: list[bytes] = []

            def lossy_sendto(data: bytes, addr: Any = None) -> None:
                if data.startswith((b"ACK ", b"PUBLISH ")):
                    dropped.append(data[:8])
                    return
                send(data, addr)

            transport.sendto = lossy_sendto  # type: ignore[method-assign,assignment]

            async def answer() -> None:
                with contextlib.suppress(SessionError):
                    await (await bob.next_invite()).accept()

            callee = asyncio.create_task(answer())
            with contextlib.suppress(SessionError):
                await alice.invite("bob@na.gamesdk.test", latency_ms=80, bandwidth_kbps=64)
            # both servers reserved on the 2xx (FINAL), and neither will see a 'confirmed' PUBLISH
            assert any(d.startswith(b"ACK") for d in dropped)
            for name, region in (("eu", Region(eu)), ("na", Region(na))):
                held = region.policy.reservations()
                assert len(held) == 1 and held[0].state is not ReservationState.ACTIVE, (name, held)
            await Region(na).until(PolicyServer.is_idle, "na's release at the 1 s confirm deadline")
            await Region(eu).until(PolicyServer.is_idle, "eu's release at the 1 s confirm deadline")
        finally:
            if callee is not None:
                callee.cancel()
                with contextlib.suppress(asyncio.CancelledError, SessionError):
                    await callee
            await alice.close()
            await bob.close()
            await eu.stop()
            await na.stop()

    asyncio.run(asyncio.wait_for(main(), 30))
    [eu_row] = billing_rows(tmp_path / "eu.sqlite3")
    [na_row] = billing_rows(tmp_path / "na.sqlite3")
    for row in (eu_row, na_row):
        assert row.end_reason == "not-established"
        # Never started, but held until the confirm deadline: the held time is billed.
        assert row.t_start is None and row.t_stop is not None and 0.9 <= row.duration_s and row.charge > 0


def test_callee_modifies_the_qos_and_both_reservations_follow_the_answer(tmp_path: Path) -> None:
    """research/protocol.md (c), callee modifies: each server reserves what the answer says, not the offer."""

    async def scenario(eu: Region, na: Region, alice: GameClient, bob: GameClient) -> None:
        async def answer() -> GameSession:
            invite = await bob.next_invite()
            # bob receives 48 kbit/s (alice offered 96) and wants a 40 ms round trip (alice offered 80)
            reqs = Requirements(formats=invite.offer.formats, receive_kbps=48, max_latency_ms=40)
            return await invite.accept(requirements=reqs)

        callee = asyncio.create_task(answer())
        session = await alice.invite("bob@na.gamesdk.test", format="pong/1;tick=60", latency_ms=80,
                                     bandwidth_kbps=96)
        bobs = await callee
        assert session.agreement.modified and session.agreement.qos.latency_ms == 40
        reservations = {r.region: r for r in session.agreement.reservations}
        # alice sends what bob receives (48) and receives what she offered to receive (96); bob the mirror
        assert (reservations["eu.gamesdk.test"].up_kbps, reservations["eu.gamesdk.test"].down_kbps) == (48, 96)
        assert (reservations["na.gamesdk.test"].up_kbps, reservations["na.gamesdk.test"].down_kbps) == (96, 48)
        await eu.until(active, "alice's confirmed reservation")
        await na.until(active, "bob's confirmed reservation")
        await session.end("game over")
        await eu.until(PolicyServer.is_idle, "release at eu")
        await na.until(PolicyServer.is_idle, "release at na")
        del bobs

    run(tmp_path, scenario)
    [eu_row] = billing_rows(tmp_path / "eu.sqlite3")
    [na_row] = billing_rows(tmp_path / "na.sqlite3")
    assert (eu_row.uplink_kbps, eu_row.downlink_kbps, eu_row.end_reason) == (48, 96, "bye-local")
    assert (na_row.uplink_kbps, na_row.downlink_kbps, na_row.end_reason) == (96, 48, "bye-remote")
    assert "lat=40" in eu_row.qos_text and "lat=40" in na_row.qos_text


def test_a_locked_database_delays_nothing_and_loses_no_stop(tmp_path: Path) -> None:
    """Another process holds eu's database (``BEGIN EXCLUSIVE``) while the game ends: the SIP loop keeps
    answering, the STOP is journaled at the time of the end, and written once when the lock goes."""
    import socket
    import sqlite3
    import time

    ended_at: list[float] = []
    unlocked_at: list[float] = []
    answered_while_locked: list[bool] = []

    async def scenario(eu: Region, na: Region, alice: GameClient, bob: GameClient) -> None:
        async def answer() -> GameSession:
            return await (await bob.next_invite()).accept()

        callee = asyncio.create_task(answer())
        session = await alice.invite("bob@na.gamesdk.test", latency_ms=80, bandwidth_kbps=64)
        await callee
        await eu.until(active, "alice's confirmed reservation")
        locker = sqlite3.connect(tmp_path / "eu.sqlite3", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            ended_at.append(time.time())
            await session.end("game over")
            await eu.until(lambda p: not p.reservations() and p.pending_writes > 0, "the STOP journaled")
            assert Path(f"{tmp_path / 'eu.sqlite3'}.journal").stat().st_size > 0
            # A plain OPTIONS to the server is answered while the lock is still held.
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.bind(("127.0.0.1", 0))
            probe.setblocking(False)
            port = probe.getsockname()[1]
            probe.sendto((f"OPTIONS sip:eu.gamesdk.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKlk1"
                          "\r\nMax-Forwards: 70\r\nFrom: <sip:probe@eu.gamesdk.test>;tag=p\r\nTo: <sip:eu.gamesdk.test>"
                          "\r\nCall-ID: lock-probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(),
                         eu.server.address)
            loop = asyncio.get_running_loop()
            reply = await asyncio.wait_for(loop.sock_recv(probe, 4096), 5.0)
            probe.close()
            answered_while_locked.append(reply.startswith(b"SIP/2.0 200"))
            assert not eu.policy.is_idle()  # the capacity waits for the STOP to be in the books
        finally:
            unlocked_at.append(time.time())
            locker.execute("ROLLBACK")
            locker.close()
        await eu.until(PolicyServer.is_idle, "the journaled STOP written after the lock")
        await na.until(PolicyServer.is_idle, "release at na")

    run(tmp_path, scenario)
    assert answered_while_locked == [True]
    [eu_row] = billing_rows(tmp_path / "eu.sqlite3")
    assert eu_row.end_reason == "bye-local" and eu_row.t_stop is not None
    # Stamped when the end was observed, not when the lock went away.
    assert ended_at[0] <= eu_row.t_stop < unlocked_at[0]
    assert Path(f"{tmp_path / 'eu.sqlite3'}.journal").stat().st_size == 0


class _Unwritable:
    """Stands in for the ledger and the journal of a region while its disk refuses every write."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.broken = True

    def commit(self, change: Any) -> None:
        if self.broken:
            raise OSError(28, "No space left on device")
        self.inner.commit(change)

    def append(self, change: Any) -> None:
        raise OSError(28, "No space left on device")

    def load_all(self) -> Any:
        return self.inner.load_all()


class _Overridden:
    """A policy server with some methods replaced; everything else is the real server's."""

    def __init__(self, inner: Any, **methods: Any) -> None:
        self._inner = inner
        self.__dict__.update(methods)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_confirmed_publish_the_server_could_not_record_is_sent_again(tmp_path: Path) -> None:
    """The region cannot record the START (database and journal both refuse): the PUBLISH is answered 503 with
    Retry-After, the SDK sends it again, and once the disk is back the session is started and billed."""

    async def scenario(eu: Region, na: Region, alice: GameClient, bob: GameClient) -> None:
        policy = eu.policy
        disk = _Unwritable(policy._ledger)
        journal = policy._journal

        async def answer() -> GameSession:
            return await (await bob.next_invite()).accept()

        callee = asyncio.create_task(answer())
        # The FINAL goes in before the disk fails; the confirmed PUBLISH after the ACK does not. The hooks ask a
        # stand-in whose FINALs break the disk once made (a compiled PolicyServer refuses a patch of its methods).
        original_final, original_final_many = policy.final, policy.final_many

        def final_then_fail(*args: Any, **kwargs: Any) -> Any:
            decision = original_final(*args, **kwargs)
            policy._ledger, policy._journal = disk, disk  # type: ignore[assignment]
            return decision

        def final_many_then_fail(*args: Any, **kwargs: Any) -> Any:
            decisions = original_final_many(*args, **kwargs)
            policy._ledger, policy._journal = disk, disk  # type: ignore[assignment]
            return decisions

        def final_batch_then_fail() -> Any:  # the FINALs decided on the loop, their rows written there or by the thread
            batch = policy.final_batch()

            def commit() -> Any:
                decisions = batch.commit()
                policy._ledger, policy._journal = disk, disk  # type: ignore[assignment]
                return decisions

            def commit_now() -> Any:
                decisions = batch.commit_now()
                if decisions is not None:
                    policy._ledger, policy._journal = disk, disk  # type: ignore[assignment]
                return decisions

            return _Overridden(batch, commit=commit, commit_now=commit_now)

        eu.hooks.backend = _Overridden(policy, final=final_then_fail, final_many=final_many_then_fail,
                                       final_batch=final_batch_then_fail)
        session = await alice.invite("bob@na.gamesdk.test", latency_ms=80, bandwidth_kbps=64)
        await callee
        for _ in range(100):  # bounded: until the 503 went out
            if policy.stats["write_failures"] > 0:
                break
            await asyncio.sleep(0.02)
        assert policy.reservations()[0].state is not ReservationState.ACTIVE
        disk.broken = False
        policy._journal = journal
        eu.hooks.backend = policy
        for _ in range(400):  # bounded (~4 s): the SDK's Retry-After is 1 s
            if active(policy):
                break
            await asyncio.sleep(0.01)
        assert active(policy), "the confirmed PUBLISH was not sent again"
        await session.end("game over")
        await eu.until(PolicyServer.is_idle, "release at eu")

    run(tmp_path, scenario)
    [eu_row] = billing_rows(tmp_path / "eu.sqlite3")
    assert eu_row.t_start is not None and eu_row.end_reason == "bye-local"
