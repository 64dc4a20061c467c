"""RegionPolicyHooks without sockets: the hook points fed with parsed SIP messages and the example SDP bodies."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from gamesdk.sdp.codec import format_sdp
from gamesdk.sdp.examples import example_answer, example_offer
from gamesdk.sip.message import Request, Response
from gamesdk.sip.parser import parse_message_untrusted
from server.billing import MemoryBilling
from server.dialog_info import (
    CONTENT_TYPE,
    DialogEntry,
    DialogInfo,
    DialogState,
    Direction,
    format_dialog_info,
)
from server.hooks import CallInfo
from server.location import Binding
from server.policy import PolicyConfig, PolicyServer, ReservationState
from server.policy.hooks import ACCESS_RTT_HEADER, RESERVATION_HEADER, RegionPolicyHooks
from server.publish import DialogPublications

OFFER = format_sdp(example_offer()).encode()
ANSWER = format_sdp(example_answer(modified=True)).encode()  # lat=100, bob receives 48 kbit/s
CALLER, CALLEE = "sip:alice@eu.example", "sip:bob@na.example"


def invite(body: bytes = OFFER, ctype: str = "application/sdp", extra: str = "") -> Request:
    text = (
        "INVITE sip:bob@na.example SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.0.7:5070;branch=z9hG4bK1\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@eu.example>;tag=a1\r\nTo: <sip:bob@na.example>\r\n"
        f"Call-ID: c1@eu.example\r\nCSeq: 1 INVITE\r\n{extra}Content-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    message = parse_message_untrusted(text.encode() + body)
    assert isinstance(message, Request)
    return message


def ok(body: bytes = ANSWER, extra: str = "") -> Response:
    text = (
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.1.0.7:5070;branch=z9hG4bK1\r\n"
        "From: <sip:alice@eu.example>;tag=a1\r\nTo: <sip:bob@na.example>;tag=b1\r\n"
        f"Call-ID: c1@eu.example\r\nCSeq: 1 INVITE\r\n{extra}Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    message = parse_message_untrusted(text.encode() + body)
    assert isinstance(message, Response)
    return message


def call(request: Request, *, caller_local: bool = True, callee_local: bool = False,
         caller_ip: str = "10.1.0.7", callee_ip: str = "10.2.0.9") -> CallInfo:
    return CallInfo(
        call_id=request.call_id, from_tag="a1", caller=CALLER, callee=CALLEE, caller_local=caller_local,
        callee_local=callee_local, caller_network=None, callee_network=None,
        caller_address=(caller_ip, 5070) if caller_local else None,
        callee_address=(callee_ip, 5080) if callee_local else None,
        peer_domain=None if caller_local and callee_local else "na.example",
        offer=request.body, content_type=request.content_type, invite=request,
    )


@pytest.fixture
def hooks(config: PolicyConfig, tokens: Callable[[], str], billing: MemoryBilling) -> RegionPolicyHooks:
    tags = itertools.count(1)
    etags = itertools.count(1)
    return RegionPolicyHooks(
        backend=PolicyServer(config, token_factory=tokens, region="eu", billing=billing),
        config=config, domain="eu.example",
        publications=DialogPublications(etag_factory=lambda: f"etag{next(etags)}"),
        wall_clock=lambda: 1_000_000.0, tag_factory=lambda: f"tag{next(tags)}",
        transit_rtt_ms=lambda domain: 40.0 if domain == "na.example" else None,
    )


def policy_of(hooks: RegionPolicyHooks) -> PolicyServer:
    assert isinstance(hooks.backend, PolicyServer)
    return hooks.backend


def test_invite_checks_offer_and_states_access_rtt(hooks: RegionPolicyHooks) -> None:
    # eu-dsl 20 ms + transit 40 ms (+ unknown peer access) fits lat=80.
    verdict = hooks.invite_received(call(invite()), 0.0)
    assert verdict.ok and verdict.headers == ((ACCESS_RTT_HEADER, "20"),)
    assert policy_of(hooks).is_idle()


def test_invite_refused_names_network_and_resource(hooks: RegionPolicyHooks) -> None:
    for n in range(3):  # fill eu-dsl's three session slots
        policy_of(hooks).final(_dsl_request(n), 0.0)
    verdict = hooks.invite_received(call(invite()), 0.0)
    assert not verdict.ok and verdict.status == 580
    assert verdict.warning == '370 eu.example "session limit reached in eu-dsl (3 of 3)"'


def _dsl_request(n: int) -> Any:
    from server.policy import AppSession, MediaComponent, Side

    return AppSession(call_id=f"x{n}", from_tag="f", to_tag="t", side=Side.ORIG, player=f"sip:p{n}@eu.example",
                      peer="sip:q@eu.example", player_ip="10.1.9.9",
                      components=(MediaComponent(uplink_kbps=1, downlink_kbps=1, max_latency_ms=500),))


def test_peer_stated_access_rtt_enters_the_budget(hooks: RegionPolicyHooks) -> None:
    # The callee's server: transit 40 + the caller's access 50 (stated by eu) + eu-fibre 5 = 95 > 80.
    # The caller put its own value first; its server's value comes last and is the one believed.
    request = invite(extra=f"{ACCESS_RTT_HEADER}: 0\r\n{ACCESS_RTT_HEADER}: 50\r\n")
    verdict = hooks.invite_received(call(request, caller_local=False, callee_local=True), 0.0)
    assert not verdict.ok
    assert "latency budget 95 ms exceeds 80 ms (eu-fibre 5 ms + transit 40 ms + peer access 50 ms)" in (
        verdict.warning or "")


@pytest.mark.parametrize("stated", ["\u00b2", "\u0663", "abc", "1234567"])
def test_unusable_stated_access_rtt_counts_as_zero(hooks: RegionPolicyHooks, stated: str) -> None:
    # '\u00b2' and '\u0663' pass str.isdigit; the first is no number to int() at all. Like any value that is not
    # 1-6 ASCII digits, each counts as 0: transit 40 + eu-fibre 5 = 45 ms fits the 80 ms budget.
    request = invite(extra=f"{ACCESS_RTT_HEADER}: {stated}\r\n")
    verdict = hooks.invite_received(call(request, caller_local=False, callee_local=True), 0.0)
    assert verdict.ok, verdict.warning


@pytest.mark.parametrize(
    ("body", "ctype"),
    [(b"", "application/sdp"), (b"v=0\r\n", "text/plain"),
     (b"v=0\r\no=- 1 1 IN IP4 10.1.0.7\r\ns=-\r\nc=IN IP4 10.1.0.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
      "application/sdp")],
)
def test_non_game_invites_pass_unpoliced(hooks: RegionPolicyHooks, body: bytes, ctype: str) -> None:
    verdict = hooks.invite_received(call(invite(body, ctype)), 0.0)
    assert verdict.ok and verdict.headers == ()
    assert hooks.answer_received(call(invite(body, ctype)), ok(b""), 0.0) == []


def test_broken_game_offer_gets_488_naming_the_problem(hooks: RegionPolicyHooks) -> None:
    broken = OFFER.replace(b"a=gsdk-qos:lat=80", b"a=gsdk-qos:lat=abc")
    verdict = hooks.invite_received(call(invite(broken)), 0.0)
    assert not verdict.ok and verdict.status == 488
    assert (verdict.warning or "").startswith("399 eu.example ") and "lat" in (verdict.warning or "")


def test_answer_reserves_on_the_answer_and_adds_token(hooks: RegionPolicyHooks) -> None:
    request = invite()
    headers = hooks.answer_received(call(request), ok(extra=f"{ACCESS_RTT_HEADER}: 10\r\n"), 5.0)
    assert headers == [
        ("P-Media-Authorization", f"{1:032x}"),
        (RESERVATION_HEADER, "eu.example;network=eu-dsl;up=48;down=64"),
    ]
    [res] = policy_of(hooks).reservations()
    assert res.request.components[0].max_latency_ms == 100  # the answer's lat, not the offer's 80
    assert res.grant.latency_ms == 20 + 40 + 10
    assert res.t_2xx == 1_000_000.0  # wall clock, not the node clock
    # A retransmitted 2xx gets the identical headers.
    assert hooks.answer_received(call(request), ok(extra=f"{ACCESS_RTT_HEADER}: 10\r\n"), 5.5) == headers


def test_caller_server_does_not_reserve_after_peer_refusal(hooks: RegionPolicyHooks) -> None:
    refused = ok(extra='Warning: 370 na.example "insufficient downlink in na-dsl"\r\n')
    assert hooks.answer_received(call(invite()), refused, 0.0) == []
    assert policy_of(hooks).is_idle()


def test_2xx_without_usable_answer_gets_warning(hooks: RegionPolicyHooks) -> None:
    headers = hooks.answer_received(call(invite()), ok(b"v=0\r\nbroken"), 0.0)
    [(name, value)] = headers
    assert name == "Warning" and value.startswith('370 eu.example "no usable game answer in the 2xx')
    assert policy_of(hooks).is_idle()


def test_both_players_local_reserves_callee_then_caller(hooks: RegionPolicyHooks) -> None:
    request = invite()
    info = call(request, callee_local=True, callee_ip="10.2.0.9")
    assert hooks.invite_received(info, 0.0).ok
    headers = hooks.answer_received(info, ok(), 1.0)
    assert [v for n, v in headers if n == RESERVATION_HEADER] == [
        "eu.example;network=eu-fibre;up=64;down=48", "eu.example;network=eu-dsl;up=48;down=64",
    ]
    assert {r.grant.latency_ms for r in policy_of(hooks).reservations()} == {5 + 20}


def _publish(hooks: RegionPolicyHooks, state: DialogState, now: float, etag: str | None = None,
             event: str | None = None) -> Response:
    body = format_dialog_info(DialogInfo(entity=CALLER, version=1, dialogs=(DialogEntry(
        id="d", state=state, call_id="c1@eu.example", local_tag="a1", remote_tag="b1",
        direction=Direction.INITIATOR, event=event),)))
    text = (
        "PUBLISH sip:alice@eu.example SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.0.7:5070;branch=z9hG4bK9\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@eu.example>;tag=p1\r\nTo: <sip:alice@eu.example>\r\n"
        "Call-ID: p1@eu.example\r\nCSeq: 1 PUBLISH\r\nEvent: dialog\r\nExpires: 90\r\n"
        + (f"SIP-If-Match: {etag}\r\n" if etag else "")
        + f"Content-Type: {CONTENT_TYPE}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    request = parse_message_untrusted(text.encode() + body)
    assert isinstance(request, Request)
    return hooks.publish_received(request, "alice", ("10.1.0.7", 5070), now)


def test_publish_confirms_and_terminates(hooks: RegionPolicyHooks, billing: MemoryBilling) -> None:
    hooks.answer_received(call(invite()), ok(), 0.0)
    response = _publish(hooks, DialogState.CONFIRMED, 1.0)
    assert response.status == 200 and response.headers.get("SIP-ETag") == "etag1"
    assert response.headers.get("Expires") == "90" and response.to.tag == "tag1"
    assert policy_of(hooks).reservations()[0].state is ReservationState.ACTIVE
    # First the publication's own expiry (node clock 1 + 90), then the policy's lease (the same monotonic
    # clock: 1 + 90 + 32 slack).
    assert hooks.get_timer() == 91.0
    assert policy_of(hooks).get_timer() == 1.0 + 90 + 32
    response = _publish(hooks, DialogState.TERMINATED, 2.0, etag="etag1", event="local-bye")
    assert response.status == 200
    assert hooks.get_timer() == 92.0  # only the new publication's expiry is left
    assert policy_of(hooks).is_idle()
    assert [e.end_reason for e in billing.events if e.end_reason] == ["bye-local"]


def test_bad_publish_headers_get_clear_answers(hooks: RegionPolicyHooks) -> None:
    text = (
        "PUBLISH sip:alice@eu.example SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.0.7:5070;branch=z9hG4bK9\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@eu.example>;tag=p1\r\nTo: <sip:alice@eu.example>\r\n"
        "Call-ID: p1@eu.example\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nContent-Length: 0\r\n\r\n"
    )
    request = parse_message_untrusted(text.encode())
    assert isinstance(request, Request)
    response = hooks.publish_received(request, "alice", ("10.1.0.7", 5070), 0.0)
    assert response.status == 489 and response.headers.get("Allow-Events") == "dialog"
    no_body = parse_message_untrusted(text.replace("Event: presence", "Event: dialog").encode())
    assert isinstance(no_body, Request)
    response = hooks.publish_received(no_body, "alice", ("10.1.0.7", 5070), 0.0)
    assert (response.status, response.reason) == (400, "initial PUBLISH needs a dialog-info body")


def test_binding_removal_releases_that_address_only(hooks: RegionPolicyHooks) -> None:
    hooks.answer_received(call(invite()), ok(), 0.0)
    other = Binding(aor=CALLER, contact="sip:alice@10.9.9.9", expires_at=0.0, source=("10.9.9.9", 5070),
                    access_network=None, call_id="r", cseq=1, registered_at=0.0)
    hooks.bindings_removed([other], 10.0)
    assert len(policy_of(hooks).reservations()) == 1
    mine = Binding(aor=CALLER, contact="sip:alice@10.1.0.7", expires_at=0.0, source=("10.1.0.7", 5070),
                   access_network=None, call_id="r", cseq=1, registered_at=0.0)
    hooks.bindings_removed([mine], 10.0)
    assert policy_of(hooks).is_idle()


def test_timers_translate_between_node_and_wall_clock(config: PolicyConfig, tokens: Callable[[], str]) -> None:
    clock = {"node": 0.0}
    hooks = RegionPolicyHooks(
        backend=PolicyServer(config, token_factory=tokens), config=config, domain="eu.example",
        publications=DialogPublications(etag_factory=lambda: "e"),
        wall_clock=lambda: clock["node"] + 1_700_000_000.0, tag_factory=lambda: "t",
        transit_rtt_ms=lambda domain: None,
    )
    hooks.answer_received(call(invite()), ok(), 0.0)
    assert hooks.get_timer() == 32.0  # the confirm deadline, on the node's clock
    clock["node"] = 31.0
    hooks.handle_timer(31.0)
    assert not policy_of(hooks).is_idle()
    clock["node"] = 32.0
    hooks.handle_timer(32.0)
    assert policy_of(hooks).is_idle() and hooks.get_timer() is None


class BrokenBackend:
    """A policy whose database has gone away: every call raises."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            if name == "get_timer":
                return None
            raise RuntimeError("database disk image is malformed")

        return fail


def test_policy_faults_never_lose_the_request(hooks: RegionPolicyHooks, caplog: pytest.LogCaptureFixture) -> None:
    hooks.backend = BrokenBackend()
    verdict = hooks.invite_received(call(invite()), 0.0)
    assert not verdict.ok and verdict.status == 580 and "policy server error" in (verdict.warning or "")
    # The 2xx is still forwarded: with the reason and without a token.
    assert hooks.answer_received(call(invite()), ok(), 0.0) == [("Warning", '370 eu.example "policy server error"')]
    assert _publish(hooks, DialogState.CONFIRMED, 1.0).status == 503
    hooks.bindings_removed([Binding(aor=CALLER, contact="sip:alice@10.1.0.7", expires_at=0.0,
                                    source=("10.1.0.7", 5070), access_network=None, call_id="r", cseq=1,
                                    registered_at=0.0)], 2.0)
    hooks.handle_timer(3.0)
    assert sum("failed" in r.getMessage() for r in caplog.records) >= 4


def test_records_carry_the_wall_time_of_their_events_not_of_a_late_run(
        config: PolicyConfig, tokens: Callable[[], str], billing: MemoryBilling) -> None:
    """A 2xx handled 250 ms after it arrived (the rest of a batch, a preempted process) is stamped at its arrival:
    the record's wall offset is taken from the event's time, so every time derived from it (START, STOP) is the
    event's, and two regions that saw one end at once stamp it alike."""
    node = {"now": 0.0}
    epoch = 1_700_000_000.0
    hooks = RegionPolicyHooks(
        backend=PolicyServer(config, token_factory=tokens, region="eu", billing=billing), config=config,
        domain="eu.example", publications=DialogPublications(etag_factory=lambda: "e"),
        wall_clock=lambda: epoch + node["now"], clock=lambda: node["now"], tag_factory=lambda: "t",
        transit_rtt_ms=lambda domain: None,
    )
    node["now"] = 10.25  # the hooks run now, for a 2xx that arrived at 10.0
    hooks.answer_received(call(invite()), ok(), 10.0)
    node["now"] = 20.0
    assert _publish(hooks, DialogState.CONFIRMED, 20.0).status == 200
    node["now"] = 50.0
    assert _publish(hooks, DialogState.TERMINATED, 50.0, etag="e", event="local-bye").status == 200
    times = {e.kind.value: e.time for e in billing.events}
    assert abs(times["START"] - (epoch + 20.0)) < 1e-6, times
    assert abs(times["STOP"] - (epoch + 50.0)) < 1e-6, times
