"""Proxy routing rules (RFC 3261 section 16, RFC 6026) on two pure RegionalServer nodes wired in memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from server_kit import ANSWER, OFFER, TestUA, Wire, login, make_node

from gamesdk.sip.message import Request, Response
from gamesdk.sip.parser import parse_message_untrusted
from gamesdk.sip.transaction import TransactionState
from gamesdk.sip.uri import SipUri
from server.node import RegionalServer

EU = ("127.0.0.1", 5060)
NA = ("127.0.0.1", 5062)


@dataclass
class World:
    wire: Wire
    eu: RegionalServer
    na: RegionalServer
    alice: TestUA
    bob: TestUA



@pytest.fixture
def world(tmp_path: Path) -> World:
    wire = Wire()
    eu = wire.add_node(make_node("eu", 5060, 5062, tmp_path, {"alice": "apw", "dave": "dpw"}))
    na = wire.add_node(make_node("na", 5062, 5060, tmp_path, {"bob": "bpw", "carol": "cpw"}))
    alice = wire.add_ua(TestUA("alice", "eu.gamesdk.test", "apw", ("127.0.0.1", 7001)))
    bob = wire.add_ua(TestUA("bob", "na.gamesdk.test", "bpw", ("127.0.0.1", 7002)))
    login(wire, alice, EU)
    login(wire, bob, NA)
    return World(wire, eu, na, alice, bob)


def invite_with_auth(w: World, target: str = "sip:bob@na.gamesdk.test", **kw: object) -> tuple[Request, list[Response]]:
    """INVITE -> 407 -> ACK (absorbed by eu) -> INVITE with credentials; returns it and alice's responses."""
    invite = w.alice.invite(target, **kw)  # type: ignore[arg-type]
    w.wire.send(w.alice.addr, EU, invite)
    (challenge,) = w.alice.responses()
    assert challenge.status == 407
    w.wire.send(w.alice.addr, EU, w.alice.ack_non2xx(invite, challenge))
    signed = w.alice.authorize(invite, challenge)
    w.wire.send(w.alice.addr, EU, signed)
    return signed, w.alice.responses()


def test_call_eu_to_na_body_identical_no_record_route(world: World) -> None:
    w = world
    invite, got = invite_with_auth(w)
    assert [r.status for r in got] == [100]
    (arrived,) = w.bob.requests()
    assert arrived.method == "INVITE"
    assert arrived.uri == w.bob.contact  # retargeted by na's location service
    assert arrived.body == OFFER == invite.body
    assert "Record-Route" not in arrived.headers
    assert "Proxy-Authorization" not in arrived.headers  # eu's credentials stay at eu
    assert arrived.max_forwards == 68
    vias = arrived.vias
    # topology hiding: bob gets na's Via alone, nothing of alice's address; alice gets her own Via back
    assert [v.sent_by for v in vias] == [("127.0.0.1", 5062)]

    w.wire.send(w.bob.addr, NA, w.bob.answer(arrived, 180))
    w.wire.send(w.bob.addr, NA, w.bob.answer(arrived, 200, ANSWER))
    ringing, ok = w.alice.responses()
    assert (ringing.status, ok.status) == (180, 200)
    assert ok.body == ANSWER
    assert "Record-Route" not in ok.headers
    assert len(ok.vias) == 1 and ok.top_via.branch == invite.top_via.branch

    # SIPp sends its ACK and BYE to its proxy: forwarded by Request-URI straight to bob, not via na.
    n_na = len(w.wire.through(NA))
    ack = w.alice.ack_2xx(invite, ok)
    w.wire.send(w.alice.addr, EU, ack)
    (got_ack,) = w.bob.requests()
    assert got_ack.method == "ACK" and got_ack.call_id == invite.call_id
    assert len(w.wire.through(NA)) == n_na
    bye = w.alice.bye(invite, ok)
    w.wire.send(w.alice.addr, EU, bye)
    (got_bye,) = w.bob.requests()
    w.wire.send(w.bob.addr, EU, w.bob.answer(got_bye, 200))  # bob answers to the Via: eu
    (bye_ok,) = w.alice.responses()
    assert bye_ok.status == 200 and bye_ok.cseq.method == "BYE"


def test_ack_from_sdk_goes_direct(world: World) -> None:
    w = world
    invite, _ = invite_with_auth(w)
    (arrived,) = w.bob.requests()
    w.wire.send(w.bob.addr, NA, w.bob.answer(arrived, 200, ANSWER))
    (ok,) = w.alice.responses()
    before = len(w.wire.log)
    w.wire.send(w.alice.addr, w.bob.addr, w.alice.ack_2xx(invite, ok))  # the SDK's way: straight to Contact
    assert [dst for _, dst, _ in w.wire.log[before:]] == [w.bob.addr]


class _AnswerHooks:
    """Policy hooks that admit every INVITE and expect no PUBLISH; each test's subclass records the answers."""

    def invite_received(self, call, now):  # type: ignore[no-untyped-def]
        from server.hooks import InviteVerdict
        return InviteVerdict()

    def publish_received(self, request, user, source, now):  # type: ignore[no-untyped-def]
        raise AssertionError

    def bindings_removed(self, bindings, now):  # type: ignore[no-untyped-def]
        pass

    def get_timer(self):  # type: ignore[no-untyped-def]
        return None

    def handle_timer(self, now):  # type: ignore[no-untyped-def]
        pass


def test_2xx_retransmissions_are_forwarded_with_identical_headers(world: World) -> None:
    w = world
    calls: list[str] = []

    class Recorder(_AnswerHooks):
        def answer_received(self, call, response, now):  # type: ignore[no-untyped-def]
            calls.append(call.call_id)
            return [("P-Media-Authorization", f"{len(calls):08x}")]

        def invite_failed(self, call, status, now):  # type: ignore[no-untyped-def]
            pass

    w.eu.set_hooks(Recorder())
    invite_with_auth(w)
    (arrived,) = w.bob.requests()
    ok = w.bob.answer(arrived, 200, ANSWER)
    w.wire.send(w.bob.addr, NA, ok)
    w.wire.now += 0.5
    w.wire.send(w.bob.addr, NA, ok)  # the UAS retransmits its 2xx until the ACK (section 13.3.1.4)
    first, second = w.alice.responses()
    assert first.to_bytes() == second.to_bytes()
    assert first.headers.get("P-Media-Authorization") == "00000001"
    assert len(calls) == 1


def test_unknown_user_offline_user_unknown_domain(world: World) -> None:
    w = world
    for target, status in (("sip:nobody@na.gamesdk.test", 404), ("sip:carol@na.gamesdk.test", 480),
                           ("sip:dave@eu.gamesdk.test", 480), ("sip:x@elsewhere.test", 604),
                           ("sip:nobody@eu.gamesdk.test", 404)):
        _, got = invite_with_auth(w, target)
        final = [r for r in got if r.status >= 200]
        assert [r.status for r in final] == [status], target
        assert final[0].reason
    assert w.bob.requests() == []


def test_non_2xx_is_acked_hop_by_hop(world: World) -> None:
    w = world
    invite, _ = invite_with_auth(w)
    (arrived,) = w.bob.requests()
    w.wire.send(w.bob.addr, NA, w.bob.answer(arrived, 486))
    (ack,) = w.bob.requests()  # na ACKs bob's 486 itself
    assert ack.method == "ACK" and ack.top_via.sent_by == ("127.0.0.1", 5062)
    assert ack.top_via.branch == arrived.top_via.branch
    (busy,) = w.alice.responses()
    assert busy.status == 486
    # A retransmitted 486 gets the same ACK again and is not forwarded twice.
    w.wire.send(w.bob.addr, NA, w.bob.answer(arrived, 486))
    assert [m.method for m in w.bob.requests()] == ["ACK"]
    assert w.alice.responses() == []
    # Alice's ACK for the 486 stops at eu (hop by hop): neither na nor bob see it.
    ack_up = Request("ACK", invite.uri, invite.headers.copy())
    ack_up.headers.set("CSeq", f"{invite.cseq.seq} ACK")
    ack_up.headers.set("To", busy.headers.get("To") or "")
    ack_up.headers.remove("Content-Type")
    ack_up.body = b""
    before = len(w.wire.through(NA))
    w.wire.send(w.alice.addr, EU, ack_up)
    assert len(w.wire.through(NA)) == before


def test_transactions_keep_bytes_only_while_they_may_be_sent_again(world: World) -> None:
    """RFC 3261 17: a provisional ends Timer A (the INVITE as forwarded is never sent again), the ACK of a non-2xx
    ends the server side's retransmissions (Confirmed sends nothing more): at 1,000 calls/s tens of thousands
    of transactions wait out Timers D and I, and they must not hold those bytes."""
    w = world
    invite, _ = invite_with_auth(w)
    (arrived,) = w.bob.requests()
    na_ctx = next(iter(w.na.proxy.client_txs.values()))
    assert na_ctx.state is TransactionState.CALLING and na_ctx.request_bytes is not None  # bob sent no 100
    eu_ctx = next(iter(w.eu.proxy.client_txs.values()))
    assert eu_ctx.state is TransactionState.PROCEEDING and eu_ctx.request_bytes is None  # na's 100 came back
    eu_tx = eu_ctx.server  # (the client side, ended at its final, keeps no object of the server side)
    w.wire.send(w.bob.addr, NA, w.bob.answer(arrived, 180))
    assert [r.status for r in w.alice.responses()] == [180]
    assert na_ctx.state is TransactionState.PROCEEDING and na_ctx.request_bytes is None
    w.wire.send(w.bob.addr, NA, w.bob.answer(arrived, 486))
    w.bob.requests()
    (busy,) = w.alice.responses()
    assert eu_tx is not None and eu_tx.state is TransactionState.COMPLETED and eu_tx.last_response is not None
    ack_up = Request("ACK", invite.uri, invite.headers.copy())
    ack_up.headers.set("CSeq", f"{invite.cseq.seq} ACK")
    ack_up.headers.set("To", busy.headers.get("To") or "")
    w.wire.send(w.alice.addr, EU, ack_up)
    assert eu_tx.state is TransactionState.CONFIRMED and eu_tx.last_response is None
    # A retransmitted INVITE in Confirmed gets nothing (as before: only Proceeding and Completed answer).
    w.wire.send(w.alice.addr, EU, invite)
    assert w.alice.responses() == []


def test_max_forwards_zero_and_loop(world: World) -> None:
    w = world
    w.wire.send(w.alice.addr, EU, w.alice.invite("sip:bob@na.gamesdk.test", max_forwards=0))
    assert [r.status for r in w.alice.responses()] == [483]  # section 16.3 checks come before authentication
    # A loop: na's peer entry for eu points back at na itself, so an INVITE for eu's domain comes back to na. A
    # peer never speaks for a player of this region, so na refuses its own player's INVITE coming back from "eu".
    w.na.federation.set_peer("eu.gamesdk.test", NA)
    carol = w.wire.add_ua(TestUA("carol", "na.gamesdk.test", "cpw", ("127.0.0.1", 7003)))
    invite = carol.invite("sip:alice@eu.gamesdk.test")
    w.wire.send(carol.addr, NA, invite)
    (challenge,) = carol.responses()
    w.wire.send(carol.addr, NA, carol.authorize(invite, challenge))
    statuses = [r.status for r in carol.responses()]
    assert statuses[0] == 100 and 403 in statuses
    # A request from a peer that already passed eu (eu's Via with this request's loop hash below the top): 482.
    looped = w.bob.invite("sip:alice@eu.gamesdk.test")
    own = f"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{w.eu.proxy._loop_hash(looped)}.x"
    looped.headers.insert_first("Via", own)
    looped.headers.insert_first("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKna1")
    w.wire.send(NA, EU, looped)
    assert any(b" 482 " in data.split(b"\r\n", 1)[0] for data in w.wire.through(NA))


def _ringing_call_cancelled(w: World) -> tuple[Request, Request]:
    """alice calls bob, bob rings, alice sends CANCEL to eu: the INVITE as bob got it, and alice's CANCEL."""
    invite, _ = invite_with_auth(w)
    (arrived,) = w.bob.requests()
    w.wire.send(w.bob.addr, NA, w.bob.answer(arrived, 180))
    w.alice.responses()
    cancel = Request("CANCEL", invite.uri, [
        ("Via", invite.headers.get("Via") or ""), ("Max-Forwards", "70"), ("From", invite.headers.get("From") or ""),
        ("To", invite.headers.get("To") or ""), ("Call-ID", invite.call_id), ("CSeq", f"{invite.cseq.seq} CANCEL")])
    w.wire.send(w.alice.addr, EU, cancel)
    return arrived, cancel


def test_cancel_before_and_after_provisional(world: World) -> None:
    w = world
    arrived, cancel = _ringing_call_cancelled(w)
    (cancel_ok,) = w.alice.responses()
    assert (cancel_ok.status, cancel_ok.cseq.method) == (200, "CANCEL")
    (bob_cancel,) = w.bob.requests()
    assert bob_cancel.method == "CANCEL" and bob_cancel.top_via.branch == arrived.top_via.branch
    w.wire.send(w.bob.addr, NA, w.bob.answer(bob_cancel, 200))
    w.wire.send(w.bob.addr, NA, w.bob.answer(arrived, 487))
    assert [r.status for r in w.alice.responses()] == [487]
    # A CANCEL for nothing gets 481.
    stray = cancel.copy()
    stray.headers.set("Via", w.alice.via())
    w.wire.send(w.alice.addr, EU, stray)
    assert [r.status for r in w.alice.responses()] == [481]


def test_the_proxys_cancel_is_an_sdk_transaction_retransmitted_until_answered(world: World) -> None:
    """Section 9.1: the CANCEL a proxy sends runs in its own non-INVITE client transaction (the SDK's, its timers
    in the proxy's heap): Timer E sends it again while the callee is silent, its 200 stops that, Timer K ends it."""
    w = world
    arrived, _ = _ringing_call_cancelled(w)
    (bob_cancel,) = w.bob.requests()
    assert set(w.na.proxy.cancels) == {arrived.top_via.branch}
    w.wire.advance(1.0)  # T1 = 0.5 s: sent again at 0.5 s and 1.5 s... while bob says nothing
    again = w.bob.requests()
    assert again and all(m.method == "CANCEL" and m.top_via.branch == bob_cancel.top_via.branch for m in again)
    w.wire.send(w.bob.addr, NA, w.bob.answer(bob_cancel, 200))
    w.wire.advance(4.0)
    assert w.bob.requests() == []  # answered: no more retransmissions
    assert w.na.proxy.cancels  # Completed, absorbing retransmitted 200s until Timer K (T4 = 5 s)
    w.wire.advance(2.0)
    assert w.na.proxy.cancels == {}


def test_invite_retransmissions_are_absorbed_and_timeouts_answer_408(world: World) -> None:
    w = world
    w.wire.drop = lambda src, dst, data: dst == w.bob.addr  # bob is gone (crashed without unregistering)
    invite, _ = invite_with_auth(w)
    w.wire.send(w.alice.addr, EU, invite)  # retransmission (same branch)
    assert [r.status for r in w.alice.responses()] == [100]
    w.wire.advance(40)
    statuses = [r.status for r in w.alice.responses()]
    assert statuses and statuses[0] == 408
    na_to_bob = [d for s, dst, d in w.wire.log if dst == w.bob.addr and s == NA and d.startswith(b"INVITE")]
    assert 5 <= len(na_to_bob) <= 8  # Timer A doubling from 0.5 s within Timer B's 32 s
    # Everything is cleaned up once the transaction timers have run out.
    w.wire.advance(40)
    assert not w.eu.proxy.server_txs and not w.eu.proxy.client_txs
    assert not w.na.proxy.server_txs and not w.na.proxy.client_txs


def test_a_ringing_call_is_ended_by_timer_c_not_timer_b(world: World) -> None:
    """RFC 3261 17.1.1.2: Timer B runs in Calling only; once a provisional arrived, Timer C (section 16.6 step 11,
    180 s) governs, and when it fires the proxy CANCELs downstream and answers 408 upstream (section 16.8).
    Found: Timer B kept running after the 180, so a call ringing for 32 s got 408 from both regions while the
    callee's phone rang on (no CANCEL ever reached it)."""
    w = world
    invite_with_auth(w)
    (arrived,) = w.bob.requests()
    w.wire.send(w.bob.addr, NA, w.bob.answer(arrived, 180))
    assert [r.status for r in w.alice.responses()] == [180]
    w.wire.advance(60)
    assert w.alice.responses() == [] and w.bob.requests() == []  # still ringing
    w.wire.advance(130)
    cancels = [m for m in w.bob.requests() if m.method == "CANCEL"]
    assert cancels and cancels[0].top_via.branch == arrived.top_via.branch
    assert 408 in [r.status for r in w.alice.responses()]


def test_requests_from_peers_are_not_challenged_but_strangers_are(world: World) -> None:
    w = world
    # A request from na's address reaches eu's users without a 407 (the peer authenticated its own player).
    dave = TestUA("dave", "eu.gamesdk.test", "dpw", ("127.0.0.1", 7004))
    w.wire.add_ua(dave)
    login(w.wire, dave, EU)
    forged = w.bob.invite("sip:dave@eu.gamesdk.test")
    w.wire.send(w.bob.addr, EU, forged)  # bob straight at eu: he is not a peer server
    assert [r.status for r in w.bob.responses()] == [407]
    forged.headers.set("Via", w.bob.via())
    w.wire.send(NA, EU, forged)  # the same from na's address: forwarded
    (arrived,) = dave.requests()
    assert arrived.method == "INVITE"


def test_from_must_match_the_authenticated_user(world: World) -> None:
    w = world
    invite = w.alice.invite("sip:bob@na.gamesdk.test")
    invite.headers.set("From", "<sip:dave@eu.gamesdk.test>;tag=spoof")
    w.wire.send(w.alice.addr, EU, invite)
    (challenge,) = w.alice.responses()
    w.wire.send(w.alice.addr, EU, w.alice.authorize(invite, challenge))
    (refused,) = w.alice.responses()
    assert refused.status == 403


def test_malformed_oversize_and_unknown_method(world: World) -> None:
    w = world
    good = w.alice.invite("sip:bob@na.gamesdk.test").to_bytes()
    broken = good.replace(b"Max-Forwards: 70", b"Max-Forwards: seventy")
    w.wire.send(w.alice.addr, EU, broken)
    (bad,) = w.alice.responses()
    assert bad.status == 400 and "Max-Forwards" in bad.reason
    # Even a broken CSeq gets its 400, with "0 INVITE" so that the answer itself parses.
    w.wire.send(w.alice.addr, EU, good.replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE"))
    (bad_cseq,) = w.alice.responses()
    assert bad_cseq.status == 400 and "CSeq" in bad_cseq.reason and str(bad_cseq.cseq) == "0 INVITE"
    w.wire.send(w.alice.addr, EU, b"\x00\xffgarbage that is not SIP\r\n\r\n")
    assert w.alice.take() == []  # not even a request line: dropped
    huge = w.alice.invite("sip:bob@na.gamesdk.test", body=b"a=x\r\n" * 3000).to_bytes()
    w.wire.send(w.alice.addr, EU, huge[: w.eu.max_message_bytes + 1])  # what the driver reads
    (too_big,) = w.alice.responses()
    assert too_big.status == 513
    odd = Request("FROBNICATE", "sip:bob@na.gamesdk.test", w.alice.invite("sip:bob@na.gamesdk.test").headers)
    odd.headers.set("CSeq", "1 FROBNICATE")
    w.wire.send(w.alice.addr, EU, odd)
    (unknown,) = w.alice.responses()
    assert unknown.status == 501 and "INVITE" in (unknown.headers.get("Allow") or "")
    assert w.eu.stats.malformed == 3 and w.eu.stats.oversize == 1 and w.eu.stats.unknown_methods == 1


def test_options_answered_and_peer_rtt_measured(world: World) -> None:
    w = world
    w.wire.advance(25)  # pings go out at start, then every 10 s
    peer = w.eu.federation.by_domain("na.gamesdk.test")
    assert peer is not None and peer.answers >= 2 and peer.rtt_ms == 0.0
    options = Request("OPTIONS", "sip:eu.gamesdk.test", w.alice.invite("sip:eu.gamesdk.test").headers)
    options.headers.set("CSeq", "7 OPTIONS")
    options.body = b""
    options.headers.remove("Content-Type")
    w.wire.send(w.alice.addr, EU, options)
    (ok,) = w.alice.responses()
    assert ok.status == 200 and "PUBLISH" in (ok.headers.get("Allow") or "")


def test_unanswered_pings_make_peer_unreachable(tmp_path: Path) -> None:
    wire = Wire()
    eu = wire.add_node(make_node("eu", 5060, 5999, tmp_path, {}))
    wire.advance(60)
    peer = eu.federation.by_domain("na.gamesdk.test")
    assert peer is not None and not peer.reachable and peer.rtt_s is None


def test_every_response_parses(world: World) -> None:
    """Whatever the node sends is well-formed SIP (checked with the strict parser)."""
    w = world
    invite_with_auth(w, "sip:nobody@na.gamesdk.test")
    for _, _, data in w.wire.log:
        parse_message_untrusted(data)


def test_in_dialog_requests_from_strangers_are_not_relayed(world: World) -> None:
    """Unauthenticated in-dialog requests are relayed only for players logged in here (no reflection)."""
    w = world
    stranger = w.wire.add_ua(TestUA("eve", "eu.gamesdk.test", "x", ("192.0.2.66", 7666)))  # in memory only
    victim = "sip:target@198.51.100.7:5060"
    bye = Request("BYE", victim, [
        ("Via", stranger.via()), ("Max-Forwards", "70"), ("From", "<sip:eve@eu.gamesdk.test>;tag=a"),
        ("To", "<sip:target@198.51.100.7>;tag=b"), ("Call-ID", "reflect-1"), ("CSeq", "2 BYE")])
    w.wire.send(stranger.addr, EU, bye)
    (refused,) = stranger.responses()
    assert refused.status == 403
    ack = Request("ACK", victim, bye.headers.copy())
    ack.headers.set("CSeq", "1 ACK")
    ack.headers.set("Via", stranger.via())
    before = len(w.wire.log)
    w.wire.send(stranger.addr, EU, ack)
    assert [dst for _, dst, _ in w.wire.log[before:]] == [EU]  # dropped at eu, nothing sent on
    # The same BYE from alice's address is not relayed either: she is logged in here, but this is no call of
    # hers that eu set up (in-dialog relaying happens only between the two parties of such a call).
    again = bye.copy()
    again.headers.set("Via", w.alice.via())
    w.wire.send(w.alice.addr, EU, again)
    assert not any(dst == ("198.51.100.7", 5060) for _, dst, _ in w.wire.log[before:])
    assert [r.status for r in w.alice.responses()] == [403]


def test_in_dialog_requests_of_a_call_authenticated_here_are_relayed(world: World) -> None:
    """A caller that never REGISTERed (as the benchmark's SIPp) still gets its ACK and BYE relayed."""
    w = world
    roaming = w.wire.add_ua(TestUA("alice", "eu.gamesdk.test", "apw", ("192.0.2.10", 7010)))  # in memory only
    invite = roaming.invite("sip:bob@na.gamesdk.test")
    w.wire.send(roaming.addr, EU, invite)
    (challenge,) = roaming.responses()
    w.wire.send(roaming.addr, EU, roaming.ack_non2xx(invite, challenge))
    invite = roaming.authorize(invite, challenge)
    w.wire.send(roaming.addr, EU, invite)
    (arrived,) = w.bob.requests()
    w.wire.send(w.bob.addr, NA, w.bob.answer(arrived, 200, ANSWER))
    (ok,) = [r for r in roaming.responses() if r.status == 200]
    w.wire.send(roaming.addr, EU, roaming.ack_2xx(invite, ok))
    w.wire.send(roaming.addr, EU, roaming.bye(invite, ok))
    assert [m.method for m in w.bob.requests()] == ["ACK", "BYE"]


def _call_and_bye(w: World) -> tuple[Request, Response, Request]:
    """A call eu -> na answered by bob, then alice's BYE through eu (SIPp style); returns the BYE bob got."""
    invite, _ = invite_with_auth(w)
    (arrived,) = w.bob.requests()
    w.wire.send(w.bob.addr, NA, w.bob.answer(arrived, 200, ANSWER))
    (ok,) = w.alice.responses()
    w.wire.send(w.alice.addr, EU, w.alice.bye(invite, ok))
    (got_bye,) = w.bob.requests()
    return invite, ok, got_bye


def test_response_without_transaction_is_forwarded_by_via(world: World) -> None:
    """RFC 3261 section 16.7 step 1 / 16.11: a response that no longer matches a transaction goes on statelessly
    along the Vias it carries (between regions, where Vias are kept). A player's late retransmission carries our
    Via alone (topology hiding): nowhere to go, dropped."""
    w = world
    _, _, got_bye = _call_and_bye(w)
    assert len(got_bye.vias) == 1
    w.wire.send(w.bob.addr, EU, w.bob.answer(got_bye, 200))
    (first,) = w.alice.responses()
    w.wire.advance(70)  # every transaction of the BYE is gone (Timer K, J)
    assert not any(key[0] == got_bye.top_via.branch for key in w.eu.proxy.client_txs)
    late = w.bob.answer(got_bye, 200)  # bob's retransmission of the final response
    w.wire.send(w.bob.addr, EU, late)
    assert w.alice.responses() == [] and w.eu.proxy.stats.stray_forwarded == 0
    # the same response with the Via stack a transit hop keeps: forwarded to the next Via
    late.headers.add("Via", first.headers.get_all("Via")[0])
    w.wire.send(w.bob.addr, EU, late)
    (again,) = w.alice.responses()
    assert again.status == 200 and again.cseq.method == "BYE"
    assert [v.sent_by for v in again.vias] == [w.alice.addr]  # our Via removed, alice's kept
    assert again.headers.get_all("Via") == first.headers.get_all("Via")
    assert w.eu.proxy.stats.stray_forwarded == 1 and w.eu.proxy.stats.stray_responses >= 1


def test_stray_responses_failing_the_sanity_checks_are_dropped(world: World) -> None:
    w = world
    _, _, got_bye = _call_and_bye(w)
    dropped = w.eu.stats.dropped
    base = w.bob.answer(got_bye, 200)
    alice_via = f"SIP/2.0/UDP {w.alice.addr[0]}:{w.alice.addr[1]};branch=z9hG4bKalice"
    cases = {
        # Our address but a branch this process never made: we are no reflector for forged Vias.
        "forged branch": ["SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKforged", alice_via],
        # Only our Via: the response was for us, nothing to forward to.
        "only ours": [got_bye.headers.get_all("Via")[0]],
        # A next hop by name would need DNS: never on the response path.
        "named next hop": [got_bye.headers.get_all("Via")[0], "SIP/2.0/UDP player.example.test:5070;branch=z9hG4bKx"],
        # The next hop is ourselves: a loop.
        "loop": [got_bye.headers.get_all("Via")[0], "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKy"],
        # Top Via not ours at all (section 18.1.2).
        "not ours": ["SIP/2.0/UDP 127.0.0.1:7777;branch=z9hG4bKz", alice_via],
    }
    w.wire.advance(70)
    for name, vias in cases.items():
        headers = base.headers.copy()
        headers.remove("Via")
        for value in reversed(vias):
            headers.insert_first("Via", value)
        stray = Response(base.status, base.reason, headers, base.body)
        before = len(w.wire.log)
        w.wire.send(w.bob.addr, EU, stray)
        assert [dst for _, dst, _ in w.wire.log[before:]] == [EU], name  # nothing sent on
    assert w.eu.stats.dropped == dropped + len(cases)
    assert w.eu.proxy.stats.stray_forwarded == 0
    assert w.alice.take() == []


def test_options_to_the_servers_own_address_is_answered(world: World) -> None:
    """OPTIONS for the server (its domain, its IP:port, with or without a non-player user) gets 200 with Allow and
    Accept, never a 407 (sipsak and SIPp ping a server this way)."""
    w = world
    for uri in ("sip:127.0.0.1:5060", "sip:127.0.0.1:5060;transport=udp", "sip:service@127.0.0.1:5060",
                "sip:eu.gamesdk.test"):
        request = Request("OPTIONS", uri, w.alice.invite(uri).headers)
        request.headers.set("CSeq", "9 OPTIONS")
        request.headers.remove("Content-Type")
        request.body = b""
        w.wire.send(("127.0.0.1", 7999), EU, request)  # from a stranger: no login needed to ask for options
    answers = [parse_message_untrusted(data) for src, dst, data in w.wire.log if dst == ("127.0.0.1", 7999)]
    assert [a.status for a in answers if isinstance(a, Response)] == [200, 200, 200, 200]
    for answer in answers:
        assert isinstance(answer, Response)
        assert "OPTIONS" in (answer.headers.get("Allow") or "")
        assert "application/sdp" in (answer.headers.get("Accept") or "")
        assert "Proxy-Authenticate" not in answer.headers


def test_a_local_players_2xx_loses_the_identity_it_brought_retransmissions_too(world: World) -> None:
    """The region signs the answers of its players (RFC 8224 as extended in gamesdk.identity) and drops any
    Identity a player put on its 2xx: on the first 2xx and on every retransmission of it."""
    w = world
    invite_with_auth(w)
    (arrived,) = w.bob.requests()
    ok = w.bob.answer(arrived, 200, ANSWER)
    ok.headers.add("Identity", "forged.by.bob;info=<https://bob.invalid/cert>")
    w.wire.send(w.bob.addr, NA, ok)
    w.wire.now += 0.5
    w.wire.send(w.bob.addr, NA, ok)  # retransmitted until the ACK (section 13.3.1.4)
    first, second = w.alice.responses()
    assert (first.status, second.status) == (200, 200)
    assert "Identity" not in first.headers and "Identity" not in second.headers
    assert first.to_bytes() == second.to_bytes()


def test_a_2xx_is_forwarded_as_the_bytes_it_came_in(world: World) -> None:
    """A 2xx goes upstream spliced (its Vias replaced, the policy's headers added, an Identity taken out), not
    serialised again: what the proxies do not edit arrives byte for byte, spacing included."""
    w = world
    invite_with_auth(w)
    (arrived,) = w.bob.requests()
    data = w.bob.answer(arrived, 200, ANSWER).to_bytes()
    data = data.replace(b"\r\nContent-Length:", b"\r\nSubject:   a  game\r\nIdentity: x.y.z\r\nContent-Length:", 1)
    w.wire.send(w.bob.addr, NA, data)
    (ok,) = w.wire.through(w.alice.addr)[-1:]
    assert ok.startswith(b"SIP/2.0 200 ") and b"\r\nSubject:   a  game\r\n" in ok
    assert b"Identity" not in ok and ok.endswith(b"\r\n\r\n" + ANSWER)


def test_ended_transactions_answer_from_their_bytes_until_their_timers_run_out(world: World) -> None:
    """RFC 3261 section 17 with RFC 6026, once the transactions have their finals and wait out their timers as
    the proxy's ended entries (values the cyclic collector does not walk): a 2xx with another To tag (a fork)
    still gets its own policy decision and its retransmissions the cached headers, a CANCEL after the final gets
    its 200 and changes nothing, a retransmitted BYE gets the same 200 until Timer J (64*T1), then nothing is
    kept and no timer is left."""
    w = world
    decisions: list[str] = []
    offers: list[bytes] = []

    class Recorder(_AnswerHooks):
        def answer_received(self, call, response, now):  # type: ignore[no-untyped-def]
            assert call.caller == "sip:alice@eu.gamesdk.test" and call.caller_address == w.alice.addr
            assert (call.invite is None) is bool(decisions)  # the first with the INVITE, a fork's without
            offers.append(call.offer)
            decisions.append(response.to.tag)
            return [("P-Media-Authorization", f"{len(decisions):08x}")]

        def invite_failed(self, call, status, now):  # type: ignore[no-untyped-def]
            raise AssertionError

    w.eu.set_hooks(Recorder())
    invite, _ = invite_with_auth(w)
    (arrived,) = w.bob.requests()
    ok = w.bob.answer(arrived, 200, ANSWER)
    forked = w.bob.answer(arrived, 200, ANSWER, tag="fork")
    w.wire.send(w.bob.addr, NA, ok)
    assert w.eu.proxy.ended_client and w.eu.proxy.ended_server and not w.eu.proxy.client_txs
    w.wire.now += 0.5
    for response in (forked, ok, forked):
        w.wire.send(w.bob.addr, NA, response)
    got = w.alice.responses()
    assert [(r.status, r.to.tag, r.headers.get("P-Media-Authorization")) for r in got] == [
        (200, "callee", "00000001"), (200, "fork", "00000002"), (200, "callee", "00000001"),
        (200, "fork", "00000002")]
    assert got[0].to_bytes() == got[2].to_bytes() and got[1].to_bytes() == got[3].to_bytes()
    assert decisions == ["callee", "fork"] and offers == [invite.body, invite.body]
    cancel = Request("CANCEL", invite.uri, [
        ("Via", invite.headers.get("Via") or ""), ("Max-Forwards", "70"), ("From", invite.headers.get("From") or ""),
        ("To", invite.headers.get("To") or ""), ("Call-ID", invite.call_id), ("CSeq", f"{invite.cseq.seq} CANCEL")])
    w.wire.send(w.alice.addr, EU, cancel)
    assert [r.status for r in w.alice.responses()] == [200] and w.bob.requests() == []
    w.wire.send(w.alice.addr, EU, invite)  # a retransmission in Accepted: absorbed
    assert w.alice.responses() == []
    w.wire.send(w.alice.addr, EU, w.alice.ack_2xx(invite, got[0]))
    bye = w.alice.bye(invite, got[0])
    bye.uri = "sip:bob@na.gamesdk.test"
    w.wire.send(w.alice.addr, EU, bye)
    (_, got_bye) = w.bob.requests()
    w.wire.send(w.bob.addr, NA, w.bob.answer(got_bye, 200))
    (done,) = w.alice.responses()
    ended_at = w.wire.now
    w.wire.advance(31.5)
    w.wire.send(w.alice.addr, EU, bye)  # within Timer J: the final again, from its bytes
    (again,) = w.alice.responses()
    assert again.to_bytes() == done.to_bytes() and w.bob.requests() == []
    w.wire.advance(40)
    for node in (w.eu, w.na):
        proxy = node.proxy
        assert not proxy.ended_server and not proxy.ended_client and not proxy.server_txs
        assert proxy.get_timer() is None
    assert w.wire.now - ended_at > 64 * 0.5


def test_an_in_dialog_uri_resolved_before_follows_the_peers_table_and_the_dialog_rules(world: World) -> None:
    """The in-dialog Request-URIs the proxy remembers as an address (``_direct_targets``) resolve as the general
    way does: the same address each time, a peer named by the URI's host once one is configured, and still a 403
    out of a dialog or from a peer."""
    from server.proxy import Target, _Reject

    proxy = world.eu.proxy
    uri = "sip:bob@198.51.100.7:5070;transport=udp"
    ruri = SipUri.parse(uri)

    def resolved(**kw: bool) -> tuple[str, tuple[str, int], str | None] | int:
        try:
            target: Target = proxy._resolve(uri, ruri, [], now=0.0, **kw)  # type: ignore[arg-type]
        except _Reject as rej:
            return rej.status
        return target.uri, target.dest, target.peer_domain

    first = resolved(out_of_dialog=False)
    assert first == (uri, ("198.51.100.7", 5070), None)
    assert uri in proxy._direct_targets
    assert resolved(out_of_dialog=False) == first
    assert resolved(out_of_dialog=True) == 403
    assert resolved(out_of_dialog=False, from_peer=True) == 403
    proxy.federation.set_peer("198.51.100.7", ("192.0.2.200", 5060))
    assert resolved(out_of_dialog=False) == (uri, ("192.0.2.200", 5060), "198.51.100.7")
    proxy.federation.replace_peers(())
    assert resolved(out_of_dialog=False) == first
