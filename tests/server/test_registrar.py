"""Registrar rules (RFC 3261 section 10.3, RFC 8760 digest) on the pure node with a fake clock."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from server_kit import MemoryAccounts, TestUA, Wire, counter_bytes, example_config

from gamesdk.sip.digest import Challenge
from gamesdk.sip.ids import SequentialIdFactory
from gamesdk.sip.message import Response
from server.config import RegistrarConfig
from server.node import RegionalServer

EU = ("127.0.0.1", 5060)


def make(tmp_path: Path, **auth: object) -> tuple[Wire, RegionalServer, TestUA]:
    config = example_config("eu", 5060, 5062, tmp_path, **auth)
    config = dataclasses.replace(config, registrar=RegistrarConfig(min_expires_s=60, max_expires_s=3600,
                                                                   default_expires_s=1800, max_bindings_per_aor=2))
    node = RegionalServer(config, MemoryAccounts(config.auth.realm, {"alice": "wonderland", "bob": "builder"}),
                          random_bytes=counter_bytes(), ids=SequentialIdFactory("eu"))
    wire = Wire()
    wire.add_node(node)
    ua = wire.add_ua(TestUA("alice", "eu.gamesdk.test", "wonderland", ("127.0.0.1", 7001)))
    return wire, node, ua


def one(ua: TestUA) -> Response:
    got = ua.responses()
    assert len(got) == 1, got
    return got[0]


def login(wire: Wire, ua: TestUA, expires: int | None = 3600, **kw: object) -> Response:
    request = ua.register(expires, **kw)  # type: ignore[arg-type]
    wire.send(ua.addr, EU, request)
    challenge = one(ua)
    assert challenge.status == 401
    wire.send(ua.addr, EU, ua.authorize(request, challenge))
    return one(ua)


def test_challenges_in_configured_order_with_qop_auth(tmp_path: Path) -> None:
    wire, _, ua = make(tmp_path, digest_algorithms=("SHA-256", "MD5"))
    wire.send(ua.addr, EU, ua.register())
    challenge = one(ua)
    assert challenge.status == 401
    parsed = [Challenge.parse_untrusted(v) for v in challenge.headers.get_all("WWW-Authenticate")]
    assert [c.algorithm for c in parsed] == ["SHA-256", "MD5"]
    assert all(c.qop == ("auth",) and c.realm == "eu.gamesdk.test" for c in parsed)
    assert parsed[0].nonce == parsed[1].nonce
    assert challenge.top_via.rport == "7001"  # RFC 3581: the port the request came from

    wire2, _, ua2 = make(tmp_path / "b", digest_algorithms=("MD5", "SHA-256"))
    wire2.send(ua2.addr, EU, ua2.register())
    order = [Challenge.parse_untrusted(v).algorithm for v in one(ua2).headers.get_all("WWW-Authenticate")]
    assert order == ["MD5", "SHA-256"]


@pytest.mark.parametrize("algorithms", [("SHA-256",), ("MD5",)])
def test_login_with_each_algorithm_lists_binding(tmp_path: Path, algorithms: tuple[str, ...]) -> None:
    wire, node, ua = make(tmp_path, digest_algorithms=("SHA-256", "MD5"))
    ua.digest.algorithms = algorithms
    ok = login(wire, ua, 600)
    assert ok.status == 200
    assert ok.headers.get_all("Contact") == [f"<{ua.contact}>;expires=600"]
    (binding,) = node.location.lookup("sip:alice@eu.gamesdk.test", wire.now)
    assert binding.source == ua.addr and binding.access_network == "eu-fiber"


def test_wrong_password_is_refused_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wire, node, ua = make(tmp_path)
    ua.digest.password = "not-it"
    ok = login(wire, ua)
    assert ok.status == 403
    assert "password" in ok.reason
    assert node.location.lookup("sip:alice@eu.gamesdk.test", wire.now) == []
    assert "authentication failed" in caplog.text


def test_unknown_user_gets_same_answer_as_wrong_password(tmp_path: Path) -> None:
    wire, _, _ = make(tmp_path)
    mallory = wire.add_ua(TestUA("mallory", "eu.gamesdk.test", "x", ("127.0.0.1", 7009)))
    ok = login(wire, mallory)
    assert (ok.status, ok.reason) == (403, "Wrong user name or password")


def test_expired_nonce_gives_stale_true_and_then_works(tmp_path: Path) -> None:
    wire, _, ua = make(tmp_path, nonce_lifetime_s=30.0)
    request = ua.register()
    wire.send(ua.addr, EU, request)
    challenge = one(ua)
    wire.now += 31
    wire.send(ua.addr, EU, ua.authorize(request, challenge))
    stale = one(ua)
    assert stale.status == 401
    assert all(Challenge.parse_untrusted(v).stale for v in stale.headers.get_all("WWW-Authenticate"))
    wire.send(ua.addr, EU, ua.authorize(request, stale))
    assert one(ua).status == 200


def test_replayed_nonce_count_is_challenged_not_counted(tmp_path: Path) -> None:
    wire, _, ua = make(tmp_path)
    request = ua.register()
    wire.send(ua.addr, EU, request)
    challenge = one(ua)
    signed = ua.authorize(request, challenge)
    wire.send(ua.addr, EU, signed)
    assert one(ua).status == 200
    replay = signed.copy()
    replay.headers.set("Via", ua.via())  # a new transaction with the same credentials (same nc)
    replay.headers.set("CSeq", f"{signed.cseq.seq + 1} REGISTER")
    wire.send(ua.addr, EU, replay)
    again = one(ua)
    # A replay is refused with a fresh (stale) challenge: never a password failure (nobody gets locked out).
    assert again.status == 401
    assert all(Challenge.parse_untrusted(v).stale for v in again.headers.get_all("WWW-Authenticate"))


def test_retransmission_gets_same_answer_not_a_cseq_error(tmp_path: Path) -> None:
    wire, _, ua = make(tmp_path)
    request = ua.register()
    wire.send(ua.addr, EU, request)
    signed = ua.authorize(request, one(ua))
    wire.send(ua.addr, EU, signed)
    first = one(ua)
    wire.send(ua.addr, EU, signed)
    again = one(ua)
    assert first.status == again.status == 200
    assert first.to_bytes() == again.to_bytes()


def test_interval_too_brief_gets_423_with_min_expires(tmp_path: Path) -> None:
    wire, _, ua = make(tmp_path)
    ok = login(wire, ua, 30)
    assert ok.status == 423
    assert ok.headers.get("Min-Expires") == "60"


def test_expires_is_capped_and_defaulted(tmp_path: Path) -> None:
    wire, _, ua = make(tmp_path)
    assert login(wire, ua, 999_999).headers.get_all("Contact") == [f"<{ua.contact}>;expires=3600"]
    assert login(wire, ua, None).headers.get_all("Contact") == [f"<{ua.contact}>;expires=1800"]


def test_star_with_expires_zero_removes_all(tmp_path: Path) -> None:
    wire, node, ua = make(tmp_path)
    login(wire, ua, 600)
    login(wire, ua, 600, contact="<sip:alice@127.0.0.1:7555>")
    assert len(node.location.lookup("sip:alice@eu.gamesdk.test", wire.now)) == 2
    bad = login(wire, ua, 600, contact="*")
    assert bad.status == 400
    ok = login(wire, ua, 0, contact="*")
    assert ok.status == 200 and ok.headers.get_all("Contact") == []
    assert node.location.lookup("sip:alice@eu.gamesdk.test", wire.now) == []


def test_query_without_contact_lists_bindings(tmp_path: Path) -> None:
    wire, _, ua = make(tmp_path)
    login(wire, ua, 600)
    wire.now += 100
    request = ua.register(None)
    request.headers.remove("Contact")
    wire.send(ua.addr, EU, request)
    ok = ua.authorize(request, one(ua))
    wire.send(ua.addr, EU, ok)
    assert one(ua).headers.get_all("Contact") == [f"<{ua.contact}>;expires=500"]


def test_bindings_expire_and_too_many_are_refused(tmp_path: Path) -> None:
    wire, node, ua = make(tmp_path)
    login(wire, ua, 60)
    login(wire, ua, 600, contact="<sip:alice@127.0.0.1:7002>")
    assert login(wire, ua, 600, contact="<sip:alice@127.0.0.1:7003>").status == 403
    wire.advance(61)
    assert [b.contact for b in node.location.lookup("sip:alice@eu.gamesdk.test", wire.now)] == [
        "sip:alice@127.0.0.1:7002"]


def test_out_of_order_cseq_is_refused(tmp_path: Path) -> None:
    wire, _, ua = make(tmp_path)
    login(wire, ua, 600)
    login(wire, ua, 600)
    ua.cseq = 1  # the next REGISTER of this Call-ID carries CSeq 2, then 3: both below the binding's 4
    assert login(wire, ua, 600).status == 500


def test_other_users_address_cannot_be_registered(tmp_path: Path) -> None:
    wire, _, ua = make(tmp_path)
    request = ua.register()
    request.headers.set("To", "<sip:bob@eu.gamesdk.test>")
    wire.send(ua.addr, EU, request)
    wire.send(ua.addr, EU, ua.authorize(request, one(ua)))
    refused = one(ua)
    assert refused.status == 403 and "register this address" in refused.reason


def test_foreign_domain_and_require_are_refused(tmp_path: Path) -> None:
    wire, _, ua = make(tmp_path)
    request = ua.register()
    request.uri = "sip:na.gamesdk.test"
    wire.send(ua.addr, EU, request)
    assert one(ua).status == 404
    request = ua.register()
    request.headers.add("Require", "sec-agree")
    wire.send(ua.addr, EU, request)
    answer = one(ua)
    assert answer.status == 420 and answer.headers.get("Unsupported") == "sec-agree"


def test_failures_are_slowed_down_then_blocked(tmp_path: Path) -> None:
    wire, node, ua = make(tmp_path, slow_after_failures=2, block_after_failures=4, delay_step_s=1.0,
                          max_delay_s=3.0, block_s=60.0)
    ua.digest.password = "guess"
    assert login(wire, ua).status == 403
    # The second failure reaches the slow-down threshold: its answer is held back.
    request = ua.register()
    wire.send(ua.addr, EU, request)
    challenge = one(ua)
    wire.send(ua.addr, EU, ua.authorize(request, challenge))
    assert ua.responses() == []
    wire.advance(1.5)
    assert one(ua).status == 403
    for _ in range(3):
        request = ua.register()
        wire.send(ua.addr, EU, request)
        wire.advance(4)
        got = ua.responses()
        if got[-1].status == 401:
            wire.send(ua.addr, EU, ua.authorize(request, got[-1]))
            wire.advance(4)
            ua.responses()
    # Now blocked: even the right password is refused without a challenge, for block_s.
    ua.digest.password = "wonderland"
    request = ua.register()
    wire.send(ua.addr, EU, request)
    wire.send(ua.addr, EU, ua.authorize(request, one(ua)))
    blocked = one(ua)
    assert blocked.status == 403 and "Too many" in blocked.reason
    wire.advance(61)
    assert login(wire, ua).status == 200
    assert node.registrar.stats.blocked >= 1


def test_one_players_failures_do_not_lock_out_others_on_the_same_address(tmp_path: Path) -> None:
    wire, _, ua = make(tmp_path, slow_after_failures=2, block_after_failures=3, block_s=60.0)
    ua.digest.password = "guess"
    for _ in range(3):
        request = ua.register()
        wire.send(ua.addr, EU, request)
        wire.advance(5)  # answers may be held back by the slow-down
        challenge = ua.responses()[-1]
        wire.send(ua.addr, EU, ua.authorize(request, challenge))
        wire.advance(5)
        assert [r.status for r in ua.responses()] == [403]
    ua.digest.password = "wonderland"
    request = ua.register()
    wire.send(ua.addr, EU, request)
    wire.send(ua.addr, EU, ua.authorize(request, one(ua)))
    assert one(ua).status == 403  # alice herself is blocked from this address
    bob = wire.add_ua(TestUA("bob", "eu.gamesdk.test", "builder", ("127.0.0.1", 7002)))
    assert login(wire, bob).status == 200  # same IP address, other player: not blocked (5x address threshold)


def test_a_refresh_with_the_same_contact_text_follows_each_requests_expires(tmp_path: Path) -> None:
    # The registrar keeps what it read of a Contact line per exact text: the header Expires, the binding's
    # Call-ID/CSeq and the outbound flag of each REGISTER still count, refresh after refresh.
    wire, node, ua = make(tmp_path)
    contact = f"<{ua.contact}>"
    assert login(wire, ua, 600, contact=contact).headers.get_all("Contact") == [f"<{ua.contact}>;expires=600"]
    assert login(wire, ua, 900, contact=contact).headers.get_all("Contact") == [f"<{ua.contact}>;expires=900"]
    assert login(wire, ua, None, contact=contact).headers.get_all("Contact") == [f"<{ua.contact}>;expires=1800"]
    with_param = f"<{ua.contact}>;expires=120"
    assert login(wire, ua, 900, contact=with_param).headers.get_all("Contact") == [f"<{ua.contact}>;expires=120"]
    assert login(wire, ua, 900, contact=with_param).headers.get_all("Contact") == [f"<{ua.contact}>;expires=120"]
    assert login(wire, ua, 30, contact=contact).status == 423  # the header's Expires, below the minimum
    ua.cseq = 1
    assert login(wire, ua, 600, contact=contact).status == 500  # Call-ID/CSeq order, the text known already
    ua.call_id = "another-call-id"
    (binding,) = node.location.lookup(ua.aor, wire.now)
    assert binding.cseq > 4
    outbound = f"<{ua.contact};ob>;reg-id=1"
    for _ in range(2):
        ok = login(wire, ua, 600, contact=outbound)
        assert ok.status == 200 and ok.headers.get("Require") == "outbound"
        assert node.location.get(ua.aor, f"{ua.contact};ob") is not None
        assert node.location.get(ua.aor, f"{ua.contact};ob").target is None  # type: ignore[union-attr]
    assert login(wire, ua, 0, contact=outbound).headers.get("Require") == "outbound"
    assert node.location.get(ua.aor, f"{ua.contact};ob") is None


def test_the_first_unusable_contact_decides_in_order(tmp_path: Path) -> None:
    # Contacts are checked in order: a too short expires on the first comes before the second's scheme.
    wire, node, ua = make(tmp_path)
    assert login(wire, ua, 600, contact=f"<{ua.contact}>;expires=10, <tel:+123>").status == 423
    assert login(wire, ua, 600, contact=f"<tel:+123>, <{ua.contact}>;expires=10").status == 416
    assert login(wire, ua, 600, contact=f"<{ua.contact}>;expires=1x").status == 400
    assert login(wire, ua, 600, contact=f"<{ua.contact}>, <{ua.contact}>;expires=1x").status == 400
    assert node.location.lookup(ua.aor, wire.now) == []  # nothing bound by a refused REGISTER


def test_the_contact_memo_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import server.registrar

    monkeypatch.setattr(server.registrar, "_CONTACT_CACHE_MAX", 2)
    wire, node, ua = make(tmp_path)
    for port in (7101, 7102, 7103):
        assert login(wire, ua, 60, contact=f"<sip:alice@127.0.0.1:{port}>;expires=0").status == 200
    assert len(node.registrar._contact_cache) == 2


def test_the_contact_memo_keeps_no_long_contact(tmp_path: Path) -> None:
    # Bounded in entries only, the memo would keep 4,096 Contact texts of up to a datagram each.
    wire, node, ua = make(tmp_path)
    long_contact = f"<sip:alice@127.0.0.1:7101;x={'y' * 1500}>"
    assert login(wire, ua, 60, contact=long_contact).status == 200
    assert node.location.get(ua.aor, long_contact[1:-1]) is not None  # bound as ever
    assert node.registrar._contact_cache == {}
    assert login(wire, ua, 60, contact="<sip:alice@127.0.0.1:7102>").status == 200
    assert len(node.registrar._contact_cache) == 1  # short ones are kept
