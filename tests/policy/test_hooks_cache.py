"""The per-call caches of the policy hooks: each SDP body parsed once per call, network lookups per address.

The caches must never change a decision: a miss (evicted, expired, a different body under the same key) parses
again, and every test here checks the decision as well as the work saved.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import pytest

import server.policy.hooks as policy_hooks
from gamesdk.qos.model import SessionTerms
from gamesdk.sdp.codec import format_sdp, parse_sdp_untrusted
from gamesdk.sdp.examples import example_answer, example_offer
from gamesdk.sdp.game import Role
from gamesdk.sdp.model import SessionDescription
from gamesdk.sip.message import Request, Response
from gamesdk.sip.parser import parse_message_untrusted
from server import prefixes
from server.billing import MemoryBilling
from server.hooks import CallInfo
from server.policy import PolicyConfig, PolicyServer
from server.policy.hooks import RESERVATION_HEADER, RegionPolicyHooks
from server.publish import DialogPublications

OFFER = format_sdp(example_offer()).encode()
ANSWER = format_sdp(example_answer()).encode()


def invite(call_id: str, body: bytes = OFFER) -> Request:
    text = (
        "INVITE sip:bob@eu.example SIP/2.0\r\nVia: SIP/2.0/UDP 10.2.0.7:5070;branch=z9hG4bK1\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@eu.example>;tag=a1\r\nTo: <sip:bob@eu.example>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    message = parse_message_untrusted(text.encode() + body)
    assert isinstance(message, Request)
    return message


def ok(call_id: str, to_tag: str = "b1") -> Response:
    text = (
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.2.0.7:5070;branch=z9hG4bK1\r\n"
        f"From: <sip:alice@eu.example>;tag=a1\r\nTo: <sip:bob@eu.example>;tag={to_tag}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(ANSWER)}\r\n\r\n"
    )
    message = parse_message_untrusted(text.encode() + ANSWER)
    assert isinstance(message, Response)
    return message


def call(request: Request) -> CallInfo:
    # Both players local (the ours1 path): both sides are checked, so the offer is needed twice per phase.
    return CallInfo(
        call_id=request.call_id, from_tag="a1", caller="sip:alice@eu.example", callee="sip:bob@eu.example",
        caller_local=True, callee_local=True, caller_network=None, callee_network=None,
        caller_address=("10.2.0.7", 5070), callee_address=("10.2.0.9", 5080), peer_domain=None,
        offer=request.body, content_type=request.content_type, invite=request,
    )


def make_hooks(config: PolicyConfig, tokens: Callable[[], str], billing: MemoryBilling,
               read_terms: Callable[[bytes, str | None, Role], SessionTerms | None]) -> RegionPolicyHooks:
    tags = itertools.count(1)
    return RegionPolicyHooks(
        backend=PolicyServer(config, token_factory=tokens, region="eu", billing=billing),
        config=config, domain="eu.example", publications=DialogPublications(etag_factory=lambda: "e"),
        wall_clock=lambda: 1_000_000.0, tag_factory=lambda: f"tag{next(tags)}", transit_rtt_ms=lambda d: None,
        read_terms=read_terms,
    )


@pytest.fixture
def parses() -> list[bytes]:
    """Every SDP body the hooks read into terms, in order (the quick reader or the full parser)."""
    return []


@pytest.fixture
def hooks(config: PolicyConfig, tokens: Callable[[], str], billing: MemoryBilling,
          parses: list[bytes]) -> RegionPolicyHooks:
    # The hooks' reader, counting: handed to them (a compiled build would call a patched module function past
    # the patch).
    def counting(body: bytes, content_type: str | None, role: Role) -> SessionTerms | None:
        parses.append(body)
        return policy_hooks._terms_untrusted(body, content_type, role)

    return make_hooks(config, tokens, billing, counting)


def test_each_body_is_parsed_once_per_call(hooks: RegionPolicyHooks, parses: list[bytes]) -> None:
    request = invite("c1")
    assert hooks.invite_received(call(request), 0.0).ok
    headers = hooks.answer_received(call(request), ok("c1"), 0.1)
    assert [name for name, _ in headers].count("P-Media-Authorization") == 2  # callee's and caller's grants
    assert (RESERVATION_HEADER, "eu.example;network=eu-fibre;up=64;down=64") in headers
    assert parses == [OFFER, ANSWER]


def test_a_new_body_under_the_same_call_is_parsed_afresh(hooks: RegionPolicyHooks, parses: list[bytes]) -> None:
    assert hooks.invite_received(call(invite("c1")), 0.0).ok
    broken = OFFER.replace(b"a=gsdk-qos:lat=80", b"a=gsdk-qos:lat=abc")
    verdict = hooks.invite_received(call(invite("c1", broken)), 0.1)
    assert not verdict.ok and verdict.status == 488 and "lat" in (verdict.warning or "")
    assert parses == [OFFER, broken]


def test_a_second_2xx_after_the_first_still_decides_on_its_offer(hooks: RegionPolicyHooks,
                                                                  parses: list[bytes]) -> None:
    request = invite("c1")
    hooks.invite_received(call(request), 0.0)
    first = hooks.answer_received(call(request), ok("c1", "b1"), 0.1)
    # The transaction ended with the first 2xx, so a second 2xx parses the offer again; one INVITE gets one
    # reservation, so this one is refused with a reason (no token).
    second = hooks.answer_received(call(request), ok("c1", "b2"), 0.2)
    assert [n for n, _ in first][:2] == ["P-Media-Authorization", "P-Gamesdk-Reservation"]
    assert second[0][0] == "Warning" and "one reservation per INVITE" in second[0][1]
    assert parses == [OFFER, ANSWER, OFFER, ANSWER]


def test_failed_invite_forgets_the_offer(hooks: RegionPolicyHooks, parses: list[bytes]) -> None:
    request = invite("c1")
    hooks.invite_received(call(request), 0.0)
    hooks.invite_failed(call(request), 486, 0.1)
    hooks.answer_received(call(request), ok("c1"), 0.2)
    assert parses == [OFFER, OFFER, ANSWER]


def test_offer_cache_is_bounded_in_count_and_time(hooks: RegionPolicyHooks, parses: list[bytes],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy_hooks, "OFFER_CACHE_MAX", 3)
    requests = [invite(f"c{i}") for i in range(10)]
    for i, request in enumerate(requests):
        hooks.invite_received(call(request), i * 0.01)
    assert len(hooks._offers) == 3
    # The oldest were dropped: their 2xx parses the offer again, the newest's does not.
    parses.clear()
    hooks.answer_received(call(requests[0]), ok("c0"), 0.2)
    hooks.answer_received(call(requests[9]), ok("c9"), 0.2)
    assert parses == [OFFER, ANSWER, ANSWER]
    # Past the INVITE transaction's lifetime an entry is not used, and the next INVITE sweeps it out.
    parses.clear()
    later = policy_hooks.OFFER_CACHE_TTL_S + 1.0
    hooks.answer_received(call(requests[8]), ok("c8"), later)
    hooks.invite_received(call(invite("fresh")), later)
    assert parses == [OFFER, ANSWER, OFFER]
    assert list(hooks._offers) == [("fresh", "a1")]


def test_network_for_address_is_cached_bounded_and_unchanged(config: PolicyConfig,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    addresses = ["10.1.2.3", "10.2.5.9", "10.2.6.1", "[fd00:2::1]", "192.0.2.1", "not-an-ip", ""]
    # The uncached lookup is the reference.
    expected = {a: (n.name if (n := config._matcher._cache._match(a)) is not None else None) for a in addresses}
    assert expected["10.2.5.9"] == "eu-lab" and expected["10.2.6.1"] == "eu-fibre"  # longest prefix wins
    assert expected["192.0.2.1"] is None and expected["not-an-ip"] is None
    monkeypatch.setattr(prefixes, "CACHE_MAX", 4)
    for _ in range(3):
        for a in addresses:
            net = config.network_for_address(a)
            assert (net.name if net is not None else None) == expected[a]
            assert len(config._matcher._cache) <= 4


def test_the_usual_bodies_skip_the_full_parser_and_faults_still_get_its_answer(
        config: PolicyConfig, tokens: Callable[[], str], billing: MemoryBilling) -> None:
    full: list[bytes] = []

    def counting(body: bytes) -> SessionDescription:
        full.append(body)
        return parse_sdp_untrusted(body)

    hooks = make_hooks(config, tokens, billing, functools.partial(policy_hooks._terms_untrusted, parse=counting))
    request = invite("c1")
    assert hooks.invite_received(call(request), 0.0).ok
    headers = hooks.answer_received(call(request), ok("c1"), 0.1)
    assert [name for name, _ in headers].count("P-Media-Authorization") == 2
    assert full == []  # read by quick_game_terms
    broken = OFFER.replace(b"a=gsdk-qos:lat=80", b"a=gsdk-qos:lat=abc")
    verdict = hooks.invite_received(call(invite("c2", broken)), 0.2)
    assert not verdict.ok and verdict.status == 488
    assert verdict.warning is not None and "a=gsdk-qos:lat=abc" in verdict.warning
    assert full == [broken]


def test_requests_built_from_kept_terms_are_the_bridges(hooks: RegionPolicyHooks) -> None:
    from gamesdk.qos.model import Side as QosSide
    from gamesdk.qos.negotiation import demand
    from gamesdk.sdp.game import quick_game_terms
    from server.policy.bridge import app_session_from_demand

    offer, answer = quick_game_terms(OFFER, Role.OFFER), quick_game_terms(ANSWER, Role.ANSWER)
    assert offer is not None and answer is not None
    other_answer = quick_game_terms(ANSWER.replace(b"b=AS:64", b"b=AS:32"), Role.ANSWER)
    for n, (theirs, side) in enumerate([(None, QosSide.CALLER), (None, QosSide.CALLEE), (answer, QosSide.CALLEE),
                                        (answer, QosSide.CALLER), (answer, QosSide.CALLER),
                                        (other_answer, QosSide.CALLER), (answer, QosSide.CALLER)]):
        info = call(invite(f"c{n}"))
        caller = side is QosSide.CALLER
        expected = app_session_from_demand(
            demand(offer, theirs, side), call_id=info.call_id, from_tag="a1", to_tag=f"t{n}",
            player=info.caller if caller else info.callee, peer=info.callee if caller else info.caller,
            player_ip="10.2.0.7" if caller else "10.2.0.9", peer_access_rtt_ms=n)
        assert hooks._request(info, offer, theirs, side, f"t{n}", n) == expected
    assert len(hooks._demands) == 5  # one entry per (offer, answer, side) seen


def test_a_reservation_value_kept_is_the_grants_own(hooks: RegionPolicyHooks) -> None:
    """The reservation header's value is kept per network and rates: another grant, or the same under another
    domain, gets its own text."""
    from server.policy.model import Grant

    def grant(network: str, up: int, down: int) -> Grant:
        return Grant(token="t", network=network, qos_class="action", priority=1, uplink_kbps=up, downlink_kbps=down,
                     latency_ms=20)

    assert hooks._reservation_value(grant("eu-fibre", 64, 64)) == "eu.example;network=eu-fibre;up=64;down=64"
    assert hooks._reservation_value(grant("eu-fibre", 64, 32)) == "eu.example;network=eu-fibre;up=64;down=32"
    assert hooks._reservation_value(grant("eu-dsl", 64, 64)) == "eu.example;network=eu-dsl;up=64;down=64"
    assert hooks._reservation_value(grant("eu-fibre", 64, 64)) == "eu.example;network=eu-fibre;up=64;down=64"
    hooks.domain = "eu2.example"
    assert hooks._reservation_value(grant("eu-fibre", 64, 64)) == "eu2.example;network=eu-fibre;up=64;down=64"
