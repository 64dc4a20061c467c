"""The proxy's own answers written straight to bytes are the bytes the Response path gave: the INVITE's 100 Trying
(server.proxy_responses.trying_bytes, from the Via values the transaction's responses go up with) against
response_for + mark_received + to_bytes, and marked_via's short way for the usual Via against the general one; and
the proxy's other short ways against their general ones (a Contact's address)."""

from __future__ import annotations

import itertools

import pytest

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip.headers import Via
from gamesdk.sip.message import Request
from gamesdk.sip.parser import parse_message_untrusted
from server.proxy import first_contact_addr, first_contact_addr_generally
from server.proxy_responses import (
    ServerTx,
    answer_bytes,
    marked_via,
    marked_via_generally,
    trying_bytes,
    upstream_vias,
)
from server.splice import read_head

_HEAD = (
    "INVITE sip:bob@eu.gamesdk.test SIP/2.0\r\n"
    "{vias}"
    "Max-Forwards: 70\r\n"
    "f: \"Alice\" <sip:alice@eu.gamesdk.test>;tag=a1\r\n"
    "To: <sip:bob@eu.gamesdk.test>\r\n"
    "Call-ID: c1@host\r\n"
    "CSeq: 7 INVITE\r\n"
    "Contact: <sip:alice@10.0.0.1:5070>\r\n"
    "Content-Length: 0\r\n\r\n"
)

VIAS = [
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a;rport\r\n",
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a\r\n",
    "Via: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bK-a\r\n",
    "v: SIP/2.0/UDP 10.0.0.1:5070;rport;branch=z9hG4bK-a\r\n",
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a;rport=1234\r\n",
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a;RPORT\r\n",
    "Via: SIP/2.0/UDP 10.0.0.1:5070;rport=9;branch=z9hG4bK-a; rport\r\n",
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a;received=10.0.0.2;rport\r\n",
    "Via: SIP/2.0/UDP rport.example:5070;branch=z9hG4bK-a;rport\r\n",
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a;rport, SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-b\r\n",
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a, SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-b;rport\r\n",
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a;rport\r\nv: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK-b\r\n",
    "Via: SIP/2.0/UDP edge.example;branch=z9hG4bK-a;received=10.0.0.1\r\n",
]
SOURCES = [("10.0.0.1", 5070), ("10.0.0.1", 40000), ("198.51.100.7", 5070)]


@pytest.mark.parametrize(("vias", "source"), list(itertools.product(VIAS, SOURCES)))
def test_trying_bytes_are_the_response_paths(vias: str, source: tuple[str, int]) -> None:
    request = parse_message_untrusted(_HEAD.format(vias=vias).encode())
    assert isinstance(request, Request)
    expected = answer_bytes(request, source, 100)
    tx = ServerTx(("k",), "INVITE", request, source)
    assert trying_bytes(tx) == expected
    # The values it made are those its later responses go up with.
    assert tx.upstream_vias is not None and upstream_vias(tx) is tx.upstream_vias


TEXTS = [
    "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a;rport",
    "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-a;rport",
    "SIP/2.0/UDP 10.0.0.1:5070;rport=77;branch=z9hG4bK-a;x=rport",
    "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a;RPORT",
    "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a;received=10.9.9.9;rport",
    "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a;Received;rport",
    "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKrport;rport",
    "SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK-a;rport",
    "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a",
]


@pytest.mark.parametrize(("text", "source"), list(itertools.product(TEXTS, SOURCES + [("2001:db8::1", 5070)])))
def test_marked_via_short_way_is_the_general_one(text: str, source: tuple[str, int]) -> None:
    via = Via.parse(text)
    assert marked_via(via, text, source) == marked_via_generally(via, text, source)


HEAD_VIAS = [
    "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-2;rport",
    "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-2",
    "SIP/2.0/TCP host.example;branch=z9hG4bK.x~y",
    "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK-a;rport",
    "SIP/2.0/UDP 127.0.0.1:5061;rport;branch=z9hG4bK-1-2",
    "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-2;rport=5",
    "SIP/2.0/udp 127.0.0.1:5061;branch=z9hG4bK-1-2;rport",
    "SIP/2.0/UDP 127.0.0.1:99999;branch=z9hG4bK-1-2;rport",
    "SIP/2.0/UDP 127.0.0.1:5061 ;branch=z9hG4bK-1-2;rport",
]


@pytest.mark.parametrize("line", HEAD_VIAS)
def test_relay_heads_top_via_is_the_parsers(line: str) -> None:
    """A relayed request's top Via read by the relay path's short way is the Via the parser makes of it (or the
    same refusal)."""
    data = (f"BYE sip:bob@127.0.0.1:5062 SIP/2.0\r\nVia: {line}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\n"
            "Call-ID: c\r\nCSeq: 3 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    head = read_head(data)
    assert head is not None
    try:
        expected = Via.parse(line)
    except RemoteProtocolError:
        with pytest.raises(RemoteProtocolError):
            head.top_via()
        return
    got = head.top_via()
    assert got == expected and got.params == expected.params and got.protocol == expected.protocol
    assert type(got) is Via


CONTACTS = [
    ["<sip:bob@127.0.0.1:5062;transport=udp>"],
    ["<sip:bob@127.0.0.1>"],
    ['"Bob" <sip:bob@192.0.2.4:5070;ob>;expires=60'],
    ["Bob <sips:bob@192.0.2.4:5071>;+sip.instance=x"],
    ["<sip:[2001:db8::1]:5062>"],
    ["<sip:bob@host.example:5062>"],
    ["<sip:bob@127.0.0.1:99999>"],
    ["<sip:bob@127.0.0.1:0>"],
    ["<sip:b%6Fb@127.0.0.1:5062>"],
    ["<sip:b%zzb@127.0.0.1:5062>"],
    ["sip:bob@127.0.0.1:5062;transport=udp"],
    ["sip:bob@127.0.0.1:5062;expires=3"],
    ['<sip:bob@192.0.2.4>;+sip.instance="<urn:uuid:1>"'],
    ["<sip:bob@127.0.0.1:5062>, <sip:bob@192.0.2.9>"],
    ["<sip:bob@192.0.2.9>", "<sip:bob@127.0.0.1:5062>"],
    ["<sip:bob@192.0.2.9>", "<bad"],
    ["*"],
    ["<sip:bob@999.1.1.1:5062>"],
    ["<sip:bob@127.0.0.1:5062?subject=x>"],
    ["<tel:+123>"],
    ["<sip:bob@127.0.0.1 :5062>"],
    [],
]


@pytest.mark.parametrize(("contacts", "lazy"), list(itertools.product(CONTACTS, [False, True])))
def test_contact_address_short_way_is_the_general_one(contacts: list[str], lazy: bool) -> None:
    """The address a dialog party is known by from its first Contact (ProxyCore._dialog_opened): the short way
    for one plain Contact line gives what the parsed Contacts give, for every shape (or the same None)."""
    lines = "".join(f"Contact: {value}\r\n" for value in contacts)
    data = _HEAD.format(vias=VIAS[0]).replace("Contact: <sip:alice@10.0.0.1:5070>\r\n", lines).encode()
    try:
        message = parse_message_untrusted(data, lazy=lazy)
    except RemoteProtocolError:
        # Refused by the eager parse (a bad port, escape or name-addr): such a message never reaches the proxy.
        # The lazy parse, which the relay path uses, takes every shape here to the Contact read, where the short
        # way must agree (the same shapes with lazy=True).
        assert not lazy
        return
    expected = first_contact_addr_generally(message)
    for _ in range(2):  # read, then remembered
        again = parse_message_untrusted(data, lazy=lazy)
        assert first_contact_addr(again) == expected
