"""The policy hook points of the node (DESIGN section 4), driven by a recording fake policy on two in-memory nodes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from server_kit import ANSWER, TestUA, Wire, make_node

from gamesdk.address import Address
from gamesdk.sip.headers import Warning as SipWarning
from gamesdk.sip.message import Request, Response, response_for
from server.hooks import CallInfo, InviteVerdict
from server.location import Binding
from server.node import RegionalServer

EU = ("127.0.0.1", 5060)
NA = ("127.0.0.1", 5062)


@dataclass
class FakePolicy:
    region: str
    refuse_invite: bool = False
    refuse_answer: bool = False
    events: list[tuple[str, object]] = field(default_factory=list)

    def invite_received(self, call: CallInfo, now: float) -> InviteVerdict:
        self.events.append(("invite", call))
        if self.refuse_invite:
            return InviteVerdict(ok=False, status=580,
                                 warning=f'370 {self.region}.gamesdk.test "insufficient uplink in {self.region}-dsl"')
        return InviteVerdict(headers=(("P-Test-Invite", self.region),))

    def answer_received(self, call: CallInfo, response: Response, now: float) -> list[tuple[str, str]]:
        self.events.append(("answer", call))
        if self.refuse_answer:
            return [("Warning", f'370 {self.region}.gamesdk.test "no room"')]
        return [("P-Media-Authorization", f"{len(self.events):04x}")]

    def invite_failed(self, call: CallInfo, status: int, now: float) -> None:
        self.events.append(("failed", status))

    def publish_received(self, request: Request, user: str, source: Address, now: float) -> Response:
        self.events.append(("publish", user))
        return response_for(request, 200, to_tag="esc", extra=[("SIP-ETag", "e1"), ("Expires", "90")])

    def bindings_removed(self, bindings: Sequence[Binding], now: float) -> None:
        self.events.append(("removed", [b.aor for b in bindings]))

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        return None

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


@dataclass
class World:
    wire: Wire
    eu: RegionalServer
    na: RegionalServer
    eu_policy: FakePolicy
    na_policy: FakePolicy
    alice: TestUA
    bob: TestUA


def login(wire: Wire, ua: TestUA, server: Address, expires: int = 600) -> Response:
    request = ua.register(expires)
    wire.send(ua.addr, server, request)
    (challenge,) = ua.responses()
    wire.send(ua.addr, server, ua.authorize(request, challenge))
    (ok,) = ua.responses()
    return ok


@pytest.fixture
def world(tmp_path: Path) -> World:
    wire = Wire()
    eu = wire.add_node(make_node("eu", 5060, 5062, tmp_path, {"alice": "apw"}))
    na = wire.add_node(make_node("na", 5062, 5060, tmp_path, {"bob": "bpw"}))
    eu_policy, na_policy = FakePolicy("eu"), FakePolicy("na")
    eu.set_hooks(eu_policy)
    na.set_hooks(na_policy)
    alice = wire.add_ua(TestUA("alice", "eu.gamesdk.test", "apw", ("127.0.0.1", 7001)))
    bob = wire.add_ua(TestUA("bob", "na.gamesdk.test", "bpw", ("127.0.0.1", 7002)))
    assert login(wire, alice, EU).status == 200
    assert login(wire, bob, NA).status == 200
    return World(wire, eu, na, eu_policy, na_policy, alice, bob)


def call(w: World) -> Request:
    invite = w.alice.invite("sip:bob@na.gamesdk.test")
    w.wire.send(w.alice.addr, EU, invite)
    (challenge,) = w.alice.responses()
    w.wire.send(w.alice.addr, EU, w.alice.ack_non2xx(invite, challenge))
    signed = w.alice.authorize(invite, challenge)
    w.wire.send(w.alice.addr, EU, signed)
    return signed


def test_invite_path_asks_each_server_with_its_view_of_the_call(world: World) -> None:
    w = world
    call(w)
    (_, eu_call), = [e for e in w.eu_policy.events if e[0] == "invite"]
    (_, na_call), = [e for e in w.na_policy.events if e[0] == "invite"]
    assert isinstance(eu_call, CallInfo) and isinstance(na_call, CallInfo)
    # eu is the caller's server: alice is local (authenticated here), her network found from her address.
    assert (eu_call.caller_local, eu_call.callee_local) == (True, False)
    assert eu_call.caller_network == "eu-fiber" and eu_call.peer_domain == "na.gamesdk.test"
    # na is the callee's server: bob is local, the request came from the eu peer.
    assert (na_call.caller_local, na_call.callee_local) == (False, True)
    assert na_call.callee_network == "na-fiber" and na_call.peer_domain == "eu.gamesdk.test"
    assert eu_call.offer == na_call.offer and eu_call.call_id == na_call.call_id
    (arrived,) = w.bob.requests()
    assert arrived.headers.get_all("P-Test-Invite") == ["eu", "na"]  # verdict headers ride on the INVITE


def test_preliminary_refusal_answers_580_with_warning_370(world: World) -> None:
    w = world
    w.na_policy.refuse_invite = True
    call(w)
    statuses = w.alice.responses()
    final = [r for r in statuses if r.status >= 200]
    assert [r.status for r in final] == [580]
    (warning,) = final[0].warnings
    assert isinstance(warning, SipWarning) and warning.code == 370 and "na-dsl" in warning.text
    assert w.bob.requests() == []
    assert ("failed", 580) in w.eu_policy.events  # the caller's server drops its tentative hold


def test_answer_path_callee_server_first_and_cached_per_to_tag(world: World) -> None:
    w = world
    call(w)
    (arrived,) = w.bob.requests()
    ok = w.bob.answer(arrived, 200, ANSWER)
    w.wire.send(w.bob.addr, NA, ok)
    w.wire.send(w.bob.addr, NA, ok)  # retransmission
    first, again = [r for r in w.alice.responses() if r.status >= 200]
    assert first.body == ANSWER
    assert first.headers.get_all("P-Media-Authorization") == again.headers.get_all("P-Media-Authorization")
    assert len(first.headers.get_all("P-Media-Authorization")) == 2
    assert w.na_policy.kinds().count("answer") == 1 and w.eu_policy.kinds().count("answer") == 1


def test_refused_answer_still_forwards_the_2xx_with_warning(world: World) -> None:
    w = world
    w.na_policy.refuse_answer = True
    call(w)
    (arrived,) = w.bob.requests()
    w.wire.send(w.bob.addr, NA, w.bob.answer(arrived, 200, ANSWER))
    (ok,) = [r for r in w.alice.responses() if r.status >= 200]
    assert ok.status == 200 and ok.body == ANSWER  # a proxy may not drop or edit a 2xx
    assert any(warning.code == 370 for warning in ok.warnings)


def test_failed_invite_and_ended_registrations_reach_the_policy(world: World) -> None:
    w = world
    call(w)
    (arrived,) = w.bob.requests()
    w.wire.send(w.bob.addr, NA, w.bob.answer(arrived, 486))
    assert ("failed", 486) in w.na_policy.events and ("failed", 486) in w.eu_policy.events
    assert login(w.wire, w.bob, NA, expires=0).status == 200  # Expires: 0 ends bob's binding
    assert ("removed", ["sip:bob@na.gamesdk.test"]) in w.na_policy.events
    w.wire.advance(601)  # alice's registration runs out
    assert ("removed", ["sip:alice@eu.gamesdk.test"]) in w.eu_policy.events


def test_publish_is_authenticated_then_handed_to_the_policy(world: World) -> None:
    w = world
    publish = Request("PUBLISH", w.alice.aor, [
        ("Via", w.alice.via()), ("Max-Forwards", "70"), ("From", f"<{w.alice.aor}>;tag=p1"),
        ("To", f"<{w.alice.aor}>"), ("Call-ID", "pub-1"), ("CSeq", "1 PUBLISH"), ("Event", "dialog"),
        ("Expires", "90"), ("Content-Type", "application/dialog-info+xml")], b"<dialog-info/>")
    w.wire.send(w.alice.addr, EU, publish)
    (challenge,) = w.alice.responses()
    assert challenge.status == 401
    w.wire.send(w.alice.addr, EU, w.alice.authorize(publish, challenge))
    (ok,) = w.alice.responses()
    assert ok.status == 200 and ok.headers.get("SIP-ETag") == "e1"
    assert ("publish", "alice") in w.eu_policy.events


def test_a_query_answer_is_the_frozen_dataclass_it_was() -> None:
    # Its __init__ is written out (the slots' setters, not object.__setattr__ per field): the same signature,
    # defaults, value semantics and immutability as the dataclass's generated one.
    import dataclasses
    import inspect

    from server.hooks import QueryAnswer

    assert list(inspect.signature(QueryAnswer).parameters.values()) == list(
        inspect.signature(dataclasses.dataclass(frozen=True)(type("QueryAnswer", (), {
            "__annotations__": {"results": "tuple[object, ...]", "error": "str | None"}, "results": (),
            "error": None}))).parameters.values())
    answer = QueryAnswer((1, "x"), "busy")
    assert (answer.results, answer.error) == ((1, "x"), "busy")
    assert QueryAnswer() == QueryAnswer((), None) and QueryAnswer(error="e") == QueryAnswer((), "e")
    assert answer == QueryAnswer(results=(1, "x"), error="busy") and hash(answer) == hash(QueryAnswer((1, "x"), "busy"))
    assert answer != QueryAnswer((1, "x")) and repr(answer) == "QueryAnswer(results=(1, 'x'), error='busy')"
    assert dataclasses.replace(answer, error=None) == QueryAnswer((1, "x"))
    for name in ("results", "error"):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(answer, name, None)
    assert not hasattr(answer, "__dict__")


def test_the_policy_answers_maker_sets_every_field_of_query_answer() -> None:
    # server.policy.queries._answer fills a QueryAnswer's slots itself (no interpreted __init__ on the hot path):
    # a field added to QueryAnswer must be set there too, or answers would come out without it.
    import dataclasses

    from server.hooks import QueryAnswer
    from server.policy.queries import _answer

    assert [f.name for f in dataclasses.fields(QueryAnswer)] == ["results", "error"]
    made = _answer([1, "two"], "stopped")
    assert made == QueryAnswer((1, "two"), "stopped")
    assert type(made) is QueryAnswer
    assert _answer([], None) == QueryAnswer()
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.error = None  # type: ignore[misc]
