"""Operating a running region process: restart keeps registrations, SIGTERM drains, SIGHUP reloads, account
changes reach the running server at once."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from process_kit import RegionProcess, cli, options, write_region
from server_kit import ANSWER, SocketUA

from gamesdk.address import Address
from gamesdk.sip.message import Request, Response, response_for
from gamesdk.sip.parser import parse_message_untrusted


@pytest.fixture
def region(tmp_path: Path) -> Path:
    config = write_region(tmp_path)
    for user in ("alice", "bob"):
        assert cli("user", "add", user, "--password", f"{user}-pw", "--config", str(config))[0] == 0
    return config


@pytest.fixture
def uas() -> Iterator[tuple[SocketUA, SocketUA]]:
    alice = SocketUA("alice", "eu.gamesdk.test", "alice-pw")
    bob = SocketUA("bob", "eu.gamesdk.test", "bob-pw")
    yield alice, bob
    alice.close()
    bob.close()


def invite_through(caller: SocketUA, callee: str, server: Address) -> Request:
    """Send an authenticated INVITE; returns it (the 100 is read)."""
    invite = caller.invite(callee)
    caller.send(invite, server)
    challenge = caller.final()
    assert challenge.status == 407, challenge.status
    caller.send(caller.ack_non2xx(invite, challenge), server)
    invite = caller.authorize(invite, challenge)
    caller.send(invite, server)
    return invite


def next_request(ua: SocketUA) -> Request:
    for _ in range(10):
        message = ua.recv()
        if isinstance(message, Request):
            return message
    raise AssertionError("no request arrived")


def test_registrations_survive_a_restart(region: Path, uas: tuple[SocketUA, SocketUA]) -> None:
    alice, bob = uas
    server = RegionProcess(region)
    try:
        assert alice.login(server.address).status == 200
    finally:
        assert server.stop() == 0
    server = RegionProcess(region)  # alice does not log in again
    try:
        assert "restored 1 registration" in server.log()
        assert bob.login(server.address).status == 200
        invite_through(bob, "sip:alice@eu.gamesdk.test", server.address)
        arrived = next_request(alice)
        assert arrived.method == "INVITE"
    finally:
        server.stop()


def test_sigterm_drains_then_exits(region: Path, uas: tuple[SocketUA, SocketUA]) -> None:
    """New requests get 503 + Retry-After while the INVITE under way waits for its answer; once it is answered
    the 200 still reaches the caller and the process exits 0."""
    alice, bob = uas
    server = RegionProcess(region)
    stranger = SocketUA("carol", "eu.gamesdk.test", "x")
    try:
        assert alice.login(server.address).status == 200
        assert bob.login(server.address).status == 200
        invite_through(bob, "sip:alice@eu.gamesdk.test", server.address)
        arrived = next_request(alice)
        server.signal(signal.SIGTERM)
        server.wait_log("draining")
        # A health check sees the drain; a new UDP request gets no answer: the client retransmits it to the
        # restarted server, where a 503 would end it.
        stranger.send(options(server.address, "drain-ping", stranger.addr), server.address)
        refused = stranger.final()
        assert refused.status == 503 and refused.headers.get("Retry-After") == "5"
        # A first request without credentials still gets its stateless challenge (no transaction is kept), so
        # the client comes back with credentials; with them it is new work, left to the restarted server.
        request = stranger.register(600)
        stranger.send(request, server.address)
        challenge = stranger.final()
        assert challenge.status == 401
        stranger.send(stranger.authorize(request, challenge), server.address)
        assert stranger.silent()
        invite = stranger.invite("sip:alice@eu.gamesdk.test")
        stranger.send(invite, server.address)
        assert stranger.final().status == 407
        assert server.proc.poll() is None  # still waiting for the INVITE's answer
        alice.send(alice.answer(arrived, 200, ANSWER), server.address)
        ok = bob.final()
        assert ok.status == 200
        assert server.proc.wait(15) == 0
    finally:
        stranger.close()
        server.stop()


def test_drain_can_answer_udp_503(region: Path, uas: tuple[SocketUA, SocketUA]) -> None:
    alice, bob = uas
    region.write_text(region.read_text() + '\n[runtime]\ndrain_udp = "503"\n')
    server = RegionProcess(region)
    stranger = SocketUA("carol", "eu.gamesdk.test", "x")
    try:
        assert alice.login(server.address).status == 200 and bob.login(server.address).status == 200
        invite_through(bob, "sip:alice@eu.gamesdk.test", server.address)
        next_request(alice)  # unanswered: the drain waits for it
        server.signal(signal.SIGTERM)
        server.wait_log("draining")
        stranger.send(stranger.register(600), server.address)
        refused = stranger.final()
        assert refused.status == 503 and refused.reason == "Restarting"
    finally:
        stranger.close()
        server.stop()


def test_sighup_reloads_the_region_file_and_refuses_a_bad_one(region: Path, uas: tuple[SocketUA, SocketUA]
                                                              ) -> None:
    alice, bob = uas
    server = RegionProcess(region)
    good = region.read_text()
    try:
        assert alice.login(server.address).status == 200
        assert bob.login(server.address).status == 200
        region.write_text(good.replace('listen = "udp:', 'listen = "tcp:'))
        server.signal(signal.SIGHUP)
        log = server.wait_log("reload refused")
        assert "region.listen" in log and "Traceback" not in log
        assert server.proc.poll() is None
        # Loopback moves to an access network too small for any game: new calls are refused (580) at once,
        # and nobody had to log in again.
        region.write_text(good.replace("uplink_kbps = 100000\ndownlink_kbps = 100000",
                                       "uplink_kbps = 1\ndownlink_kbps = 1", 1))
        server.signal(signal.SIGHUP)
        server.wait_log("reloaded")
        invite_through(bob, "sip:alice@eu.gamesdk.test", server.address)
        final = bob.final()
        assert final.status == 580, (final.status, final.reason)
    finally:
        assert server.stop() == 0


def test_user_remove_reaches_the_running_server(region: Path, uas: tuple[SocketUA, SocketUA]) -> None:
    alice, _ = uas
    server = RegionProcess(region)
    try:
        assert alice.login(server.address).status == 200
        assert cli("user", "remove", "alice", "--config", str(region))[0] == 0
        again = alice.register(600)
        alice.send(again, server.address)
        answer = alice.final()
        if answer.status == 401:
            alice.send(alice.authorize(again, answer), server.address)
            answer = alice.final()
        assert isinstance(answer, Response) and answer.status in (403, 404), answer.status
    finally:
        server.stop()


def test_a_removed_players_binding_stops_receiving_calls_at_once(region: Path, uas: tuple[SocketUA, SocketUA]
                                                                  ) -> None:
    """``user remove`` while alice is logged in: a call to her is refused at once (404), never forwarded to the
    binding she registered before, and her registration is gone from the running server."""
    alice, bob = uas
    server = RegionProcess(region)
    try:
        assert alice.login(server.address).status == 200
        assert bob.login(server.address).status == 200
        assert cli("user", "remove", "alice", "--config", str(region))[0] == 0
        invite_through(bob, "sip:alice@eu.gamesdk.test", server.address)
        refused = bob.final()
        assert refused.status == 404, (refused.status, refused.reason)
        assert alice.silent()
        code, out, err = cli("ctl", "--config", str(region), "--json", "registrations")
        assert code == 0, err
        assert "alice" not in out
    finally:
        server.stop()


def test_a_challenge_from_before_a_restart_is_answered_after_it(region: Path, uas: tuple[SocketUA, SocketUA]
                                                                ) -> None:
    """The nonce key lives in the region database: credentials computed for the old process's challenge are
    accepted by the new one (a call challenged just before a restart completes after it)."""
    alice, _ = uas
    server = RegionProcess(region)
    try:
        request = alice.register(600)
        alice.send(request, server.address)
        challenge = alice.final()
        assert challenge.status == 401
    finally:
        assert server.stop() == 0
    server = RegionProcess(region)
    try:
        alice.send(alice.authorize(request, challenge), server.address)
        assert alice.final().status == 200
    finally:
        server.stop()


def test_nonce_counts_survive_a_restart(region: Path, uas: tuple[SocketUA, SocketUA]) -> None:
    """Credentials captured before a restart are refused after it (their nonce count was seen), while the player
    goes on with the next count of the same nonce; after a crash (no clean handover) every older nonce is stale,
    so a client gets a new challenge, never a failure."""
    alice, _ = uas
    server = RegionProcess(region)
    try:
        first = alice.register(600)
        alice.send(first, server.address)
        challenge = alice.final()
        assert challenge.status == 401
        signed = alice.authorize(first, challenge)
        alice.send(signed, server.address)
        assert alice.final().status == 200
    finally:
        assert server.stop() == 0
    server = RegionProcess(region)
    try:
        # Someone who captured that REGISTER sends its credentials again in a new request.
        replay = alice.register(600)
        replay.headers.set("Authorization", signed.headers.get("Authorization") or "")
        alice.send(replay, server.address)
        refused = alice.final()
        assert refused.status == 401, refused.status
        assert "stale=true" in (refused.headers.get("WWW-Authenticate") or "").lower()
        # The player itself goes on with nc=2 on the nonce it holds.
        alice.send(alice.authorize(alice.register(600), challenge), server.address)
        assert alice.final().status == 200
        server.proc.kill()  # a crash: nothing handed over
        server.proc.wait(10)
    finally:
        server.stop()
    server = RegionProcess(region)
    try:
        request = alice.register(600)
        alice.send(alice.authorize(request, challenge), server.address)  # nc=3 of a nonce from before the crash
        stale = alice.final()
        assert stale.status == 401 and "stale=true" in (stale.headers.get("WWW-Authenticate") or "").lower()
        alice.send(alice.authorize(request, stale), server.address)
        assert alice.final().status == 200
    finally:
        server.stop()


def test_a_registered_player_gets_every_challenge_beyond_the_stranger_rate_limit(tmp_path: Path) -> None:
    """Challenges to unauthenticated sources are rate limited per IP (no reflection), but a player calling from
    the very address it registered from proved it receives there: a burst of calls (SIPp at 200 calls/s, or
    every INVITE retransmitted at once to a restarted region) gets a 407 each. A stranger on the same IP does
    not share that: it stays within the limit."""
    config = write_region(tmp_path, extra="\n[limits]\nunauthenticated_per_s = 0.1\nunauthenticated_burst = 3\n")
    assert cli("user", "add", "alice", "--password", "alice-pw", "--config", str(config))[0] == 0
    alice = SocketUA("alice", "eu.gamesdk.test", "alice-pw")
    stranger = SocketUA("alice", "eu.gamesdk.test", "alice-pw")  # same name, another port: not her binding
    server = RegionProcess(config)
    try:
        assert alice.login(server.address).status == 200  # one token for the 401
        for _ in range(8):
            alice.send(alice.invite("sip:bob@eu.gamesdk.test"), server.address)
            assert alice.final().status == 407
        answered = 0
        for _ in range(4):
            stranger.send(stranger.invite("sip:bob@eu.gamesdk.test"), server.address)
            answered += not stranger.silent(0.5)
        assert answered <= 2, answered  # what was left of the burst of 3
    finally:
        alice.close()
        stranger.close()
        server.stop()


def test_a_restart_keeps_the_peers_round_trip(tmp_path: Path) -> None:
    """The transit latency calls are admitted against is the minimum of the recent ping samples. A restarted
    region takes the samples of its predecessor: its first ping, answered late while the peer (or itself) works
    through the restart's backlog, must not become the transit latency of every call (580, "latency budget
    exceeded", for a whole ping interval)."""
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    delay = [0.0]
    answered = [0]
    stop = threading.Event()

    def answer_pings() -> None:
        peer.settimeout(0.1)
        while not stop.is_set():
            try:
                data, addr = peer.recvfrom(65535)
            except TimeoutError:
                continue
            request = parse_message_untrusted(data)
            if isinstance(request, Request) and request.method == "OPTIONS":
                time.sleep(delay[0])
                peer.sendto(response_for(request, 200).to_bytes(), addr)
                answered[0] += 1

    config = write_region(tmp_path)
    text = re.sub(r'address = "udp:127\.0\.0\.1:\d+"', f'address = "udp:127.0.0.1:{peer.getsockname()[1]}"',
                  config.read_text(), count=1)
    config.write_text(text.replace("options_interval_s = 10", "options_interval_s = 0.2"))
    pinger = threading.Thread(target=answer_pings, daemon=True)
    pinger.start()

    def min_rtt_ms() -> float | None:
        code, out, err = cli("ctl", "--config", str(config), "--json", "stats")
        assert code == 0, err
        (entry,) = json.loads(out)["peers"]
        value = entry["min_rtt_ms"]
        return None if value is None else float(value)

    try:
        server = RegionProcess(config)
        try:
            deadline = time.monotonic() + 10
            while min_rtt_ms() is None:
                assert time.monotonic() < deadline, "no ping answered"
                time.sleep(0.1)
        finally:
            assert server.stop() == 0
        delay[0] = 0.3  # the peer is slow to answer right after the restart
        before = answered[0]
        server = RegionProcess(config)
        try:
            deadline = time.monotonic() + 10
            while answered[0] < before + 2:
                assert time.monotonic() < deadline, "no ping after the restart"
                time.sleep(0.05)
            time.sleep(0.4)  # the late answers are taken in
            rtt = min_rtt_ms()
            assert rtt is not None and rtt < 100, rtt
        finally:
            server.stop()
    finally:
        stop.set()
        pinger.join(5)
        peer.close()


def test_a_player_with_many_calls_in_flight_answers_its_challenges_in_any_order(
        region: Path, uas: tuple[SocketUA, SocketUA]) -> None:
    """One account with many calls in flight (SIPp at 200 calls/s; every call caught by a restart) answers its
    challenges out of order: each answer passes (here 480: bob is not logged in), none gets a stale challenge
    because the account used more than its share of tracked nonces since that challenge was issued."""
    alice, _ = uas
    server = RegionProcess(region)
    try:
        pending = []
        for _ in range(24):  # more than the 16 nonces tracked per account
            invite = alice.invite("sip:bob@eu.gamesdk.test")
            alice.send(invite, server.address)
            challenge = alice.final()
            assert challenge.status == 407
            alice.send(alice.ack_non2xx(invite, challenge), server.address)
            pending.append((invite, challenge))
        for invite, challenge in reversed(pending):  # the newest first: the oldest wait longest
            alice.send(alice.authorize(invite, challenge), server.address)
            final = alice.final()
            assert final.status == 480, (final.status, final.reason, final.headers.get("Proxy-Authenticate"))
            alice.send(alice.ack_non2xx(invite, final), server.address)
    finally:
        server.stop()


def test_the_drain_does_not_wait_for_a_bye_nobody_answers(region: Path, uas: tuple[SocketUA, SocketUA]) -> None:
    """A BYE relayed inside a call whose callee never answers (crashed, or overloaded) must not hold a restart up
    for the whole drain timeout while every new call goes unanswered: the call's parties are saved, so the BYE's
    retransmission is relayed by the restarted process. The drain waits only for INVITEs (and requests outside a
    call) under way."""
    alice, bob = uas
    server = RegionProcess(region)
    try:
        assert alice.login(server.address).status == 200 and bob.login(server.address).status == 200
        invite = invite_through(bob, "sip:alice@eu.gamesdk.test", server.address)
        arrived = next_request(alice)
        alice.send(alice.answer(arrived, 200, ANSWER), server.address)
        ok = bob.final()
        assert ok.status == 200
        bye = bob.bye(invite, ok)
        bob.send(bye, server.address)  # relayed to alice, who never answers
        assert next_request(alice).method == "BYE"
        server.signal(signal.SIGTERM)
        assert server.proc.wait(60) == 0
        log = server.log()
        assert "draining (1 transaction(s) under way, 1 BYE)" in log, log[-2000:]
        assert "drain timed out" not in log, log[-2000:]
    finally:
        server.stop()

