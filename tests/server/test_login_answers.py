"""The login's answers (the registrar's 401/200, the proxy's stateless 407) written straight to bytes
(server.auth.answer_bytes_direct) are the bytes the Response path gave: response_for, mark_received, to_bytes.
And a login asks the account store once (its HA1), not a second time whether the account exists."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from server_kit import MemoryAccounts, TestUA, Wire, counter_bytes, example_config

from gamesdk.sip.ids import SequentialIdFactory
from gamesdk.sip.message import response_for
from gamesdk.sip.parser import parse_message_untrusted
from server.auth import answer_bytes_direct
from server.node import RegionalServer
from server.proxy_responses import mark_received
from server.relay import RelayConfig

EU = ("127.0.0.1", 5060)

_HEAD = (
    "REGISTER sip:eu.gamesdk.test SIP/2.0\r\n"
    "{vias}"
    "Max-Forwards: 70\r\n"
    "From: <sip:alice@eu.gamesdk.test>;tag=a1\r\n"
    "{to}"
    "Call-ID: c1@host\r\n"
    "CSeq: 7 REGISTER\r\n"
    "Contact: <sip:alice@10.0.0.1:5070>\r\n"
    "Content-Length: 0\r\n\r\n"
)

VIAS = [
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a;rport\r\n",
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a\r\n",  # no rport, host = source: left as it is
    "Via: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bK-a\r\n",  # host != source: received added
    "v: SIP/2.0/UDP 10.0.0.1:5070;rport;branch=z9hG4bK-a\r\n",  # compact name, rport in the middle
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a;rport=1234\r\n",  # rport with a value: replaced
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a;rport, SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-b\r\n",
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a;rport\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK-b\r\n",
    "Via: SIP/2.0/UDP edge.example;branch=z9hG4bK-a;received=10.0.0.1\r\n",
    # the bare rport written last takes a shortcut: every other shape of rport must not
    "Via: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bK-a;rport\r\n",  # host != source: received too
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a;RPORT\r\n",
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a;rport=7;rport\r\n",
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a;rportx=1;rport\r\n",
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a ; rport\r\n",
    'Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a;x="a;rport;b";rport\r\n',
]
TOS = [
    "To: <sip:alice@eu.gamesdk.test>\r\n",
    "To: <sip:alice@eu.gamesdk.test>;tag=already\r\n",
    "t: sip:alice@eu.gamesdk.test;TAG=Upper\r\n",
    "To: \"Alice\" <sip:alice@eu.gamesdk.test>\r\n",
]


def by_response_object(data: bytes, source: tuple[str, int], status: int, reason: str | None, tag: str,
                       extra: tuple[tuple[str, str], ...]) -> bytes:
    request = parse_message_untrusted(data)
    response = response_for(request, status, reason, to_tag=tag, extra=extra)  # type: ignore[arg-type]
    mark_received(response.headers, request.top_via, source)
    return response.to_bytes()


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("to", TOS)
@pytest.mark.parametrize(("status", "reason", "extra"), [
    (401, None, (("WWW-Authenticate", 'Digest realm="eu", nonce="n", algorithm=MD5, qop="auth"'),)),
    (407, None, (("Proxy-Authenticate", 'Digest realm="eu", nonce="n"'), ("Proxy-Authenticate", "Digest x=y"))),
    (200, None, (("Contact", "<sip:alice@10.0.0.1:5070>;expires=600"), ("Require", "outbound"))),
    (403, "Wrong user name or password", ()),
    (100, None, ()),  # never tagged
    (599, None, ()),  # a status without a phrase of its own
])
def test_direct_answer_is_the_response_objects_bytes(via: str, to: str, status: int, reason: str | None,
                                                     extra: tuple[tuple[str, str], ...]) -> None:
    data = _HEAD.format(vias=via, to=to).encode()
    request = parse_message_untrusted(data)
    for source in (("10.0.0.1", 5070), ("198.51.100.7", 40000)):
        want = by_response_object(data, source, status, reason, "t9", extra)
        got = answer_bytes_direct(request, source, status, reason, to_tag="t9", extra=extra)  # type: ignore[arg-type]
        assert got == want
    # the request is not changed by it (its fields, its parsed Via)
    assert parse_message_untrusted(data).to_bytes() == request.to_bytes()  # type: ignore[union-attr]


class CountingAccounts(MemoryAccounts):
    """Counts the questions a login asks the account store."""

    def __init__(self, realm: str, users: dict[str, str]) -> None:
        super().__init__(realm, users)
        self.asked: list[str] = []

    def ha1(self, name: str, algorithm: str) -> str | None:
        self.asked.append(f"ha1 {name}")
        return super().ha1(name, algorithm)

    def exists(self, name: str) -> bool:
        self.asked.append(f"exists {name}")
        return super().exists(name)


def make(tmp_path: Path, relay: bool = False) -> tuple[Wire, RegionalServer, TestUA, CountingAccounts]:
    config = example_config("eu", 5060, 5062, tmp_path)
    config = dataclasses.replace(config, relay=RelayConfig(urls=("turn:192.0.2.5:3478?transport=udp",
                                                                 "turn:192.0.2.5:3478?transport=tcp"),
                                                           shared_secret="s3cret") if relay else None)
    accounts = CountingAccounts(config.auth.realm, {"alice": "wonderland"})
    node = RegionalServer(config, accounts, random_bytes=counter_bytes(), ids=SequentialIdFactory("eu"))
    wire = Wire()
    wire.add_node(node)
    ua = wire.add_ua(TestUA("alice", "eu.gamesdk.test", "wonderland", ("127.0.0.1", 7001)))
    return wire, node, ua, accounts


def test_a_login_looks_the_account_up_once(tmp_path: Path) -> None:
    # Before: its HA1 (authentication), then whether it exists (registrar step 5) with the same name.
    wire, node, ua, accounts = make(tmp_path)
    request = ua.register(600)
    wire.send(ua.addr, EU, request)
    (challenge,) = ua.responses()
    assert challenge.status == 401
    assert accounts.asked == []  # a challenge asks nothing
    wire.send(ua.addr, EU, ua.authorize(request, challenge))
    (ok,) = ua.responses()
    assert ok.status == 200
    assert accounts.asked == ["ha1 alice"]
    assert [b.contact for b in node.location.lookup("sip:alice@eu.gamesdk.test", wire.now)] == [ua.contact]
    # an account removed since is refused at its next login, as before
    del accounts.users["alice"]
    request = ua.register(600)
    wire.send(ua.addr, EU, request)
    wire.send(ua.addr, EU, ua.authorize(request, ua.responses()[0]))
    (refused,) = ua.responses()
    assert (refused.status, refused.reason) == (403, "Wrong user name or password")


@pytest.mark.parametrize("relay", [False, True])
def test_the_logins_answers_on_the_wire_are_the_response_objects(tmp_path: Path, relay: bool) -> None:
    wire, node, ua, _ = make(tmp_path, relay)
    if relay:
        assert node.config.relay is not None
    request = ua.register(600)
    wire.send(ua.addr, EU, request)
    sent = wire.log[-1][2]
    challenge = parse_message_untrusted(sent)
    tag = challenge.to.tag
    assert tag is not None
    extra = tuple(("WWW-Authenticate", v) for v in challenge.headers.get_all("WWW-Authenticate"))
    assert len(extra) == len(node.config.auth.digest_algorithms)
    assert sent == by_response_object(request.to_bytes(), ua.addr, 401, None, tag, extra)
    ua.responses()
    signed = ua.authorize(request, challenge)  # type: ignore[arg-type]
    wire.send(ua.addr, EU, signed)
    sent = wire.log[-1][2]
    ok = parse_message_untrusted(sent)
    tag = ok.to.tag
    assert tag is not None and ok.status == 200  # type: ignore[union-attr]
    extra = tuple((name, value) for _, name, value in ok.headers._items if name in ("Contact", "Relay"))
    turn = [value for name, value in extra if name == "Relay"]
    assert len(turn) == (2 if relay else 0)  # the TURN credentials of a region with a relay, after the bindings
    assert extra[0] == ("Contact", f"<{ua.contact}>;expires=600")
    assert sent == by_response_object(signed.to_bytes(), ua.addr, 200, None, tag, extra)
