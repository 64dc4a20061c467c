"""RFC 4475 torture messages against the datagram parser.

Valid messages (and the semantically odd ones of RFC 4475 section 3.3 that the application layer answers later)
must parse with the right fields; invalid ones must raise exactly ``RemoteProtocolError`` with the status the RFC
implies. The corpus lives in ``tests/data/rfc4475`` (``manifest.json`` says which is which).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip.message import Request, Response
from gamesdk.sip.parser import StreamParser, parse_message_untrusted

CORPUS = Path(__file__).resolve().parent.parent / "data" / "rfc4475"
MANIFEST: list[dict[str, Any]] = json.loads((CORPUS / "manifest.json").read_text("utf-8"))["messages"]
VALID = [m for m in MANIFEST if m["valid"]]
INVALID = [m for m in MANIFEST if not m["valid"]]


def _load(tag: str) -> bytes:
    return (CORPUS / f"{tag}.dat").read_bytes()


# tag -> (method or status, Request-URI or reason phrase, Call-ID, (CSeq number, CSeq method), body length)
EXPECTED: dict[str, tuple[str | int, str, str, tuple[int, str], int]] = {
    "wsinv": (
        "INVITE",
        "sip:vivekg@chair-dnrc.example.com;unknownparam",
        "wsinv.ndaksdj@192.0.2.1",
        (9, "INVITE"),
        150,
    ),
    "intmeth": (
        "!interesting-Method0123456789_*+`.%indeed'~",
        (
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too."
            "(doesn't-it)@example.com"
        ),
        "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
        (139122385, "!interesting-Method0123456789_*+`.%indeed'~"),
        0,
    ),
    "esc01": (
        "INVITE",
        "sip:sips%3Auser%40example.com@example.net",
        "esc01.239409asdfakjkn23onasd0-3234",
        (234234, "INVITE"),
        150,
    ),
    "escnull": (
        "REGISTER",
        "sip:example.com",
        "escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd",
        (14398234, "REGISTER"),
        0,
    ),
    "esc02": (
        "RE%47IST%45R",
        "sip:registrar.example.com",
        "esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf",
        (29344, "RE%47IST%45R"),
        0,
    ),
    "lwsdisp": ("OPTIONS", "sip:user@example.com", "lwsdisp.1234abcd@funky.example.com", (60, "OPTIONS"), 0),
    "longreq": (
        "INVITE",
        "sip:user@example.com",
        "longreq.one" + "really" * 20 + "longcallid",
        (3882340, "INVITE"),
        150,
    ),
    "dblreq": ("REGISTER", "sip:example.com", "dblreq.0ha0isndaksdj99sdfafnl3lk233412", (8, "REGISTER"), 0),
    "semiuri": (
        "OPTIONS",
        "sip:user;par=u%40example.net@example.com",
        "semiuri.0ha0isndaksdj",
        (8, "OPTIONS"),
        0,
    ),
    "transports": (
        "OPTIONS",
        "sip:user@example.com",
        "transports.kijh4akdnaqjkwendsasfdj",
        (60, "OPTIONS"),
        0,
    ),
    "mpart01": (
        "MESSAGE",
        "sip:kumiko@example.org",
        "3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..",
        (1, "MESSAGE"),
        553,
    ),
    "unreason": (
        200,
        "= 2**3 * 5**2 но сто девяносто девять - простое",
        "unreason.1234ksdfak3j2erwedfsASdf",
        (35, "INVITE"),
        154,
    ),
    "noreason": (100, "", "noreason.asndj203insdf99223ndf", (35, "INVITE"), 0),
    "badbranch": (
        "OPTIONS",
        "sip:user@example.com",
        "badbranch.sadonfo23i420jv0as0derf3j3n",
        (8, "OPTIONS"),
        0,
    ),
    "unkscm": (
        "OPTIONS",
        "nobodyKnowsThisScheme:totallyopaquecontent",
        "unkscm.nasdfasser0q239nwsdfasdkl34",
        (3923423, "OPTIONS"),
        0,
    ),
    "novelsc": (
        "OPTIONS",
        "soap.beep://192.0.2.103:3002",
        "novelsc.asdfasser0q239nwsdfasdkl34",
        (3923423, "OPTIONS"),
        0,
    ),
    "unksm2": (
        "REGISTER",
        "sip:example.com",
        "unksm2.daksdj@hyphenated-host.example.com",
        (234902, "REGISTER"),
        0,
    ),
    "bext01": ("OPTIONS", "sip:user@example.com", "bext01.0ha0isndaksdj", (8, "OPTIONS"), 0),
    "invut": ("INVITE", "sip:user@example.com", "invut.0ha0isndaksdjadsfij34n23d", (235448, "INVITE"), 40),
    "regaut01": ("REGISTER", "sip:example.com", "regaut01.0ha0isndaksdj", (9338, "REGISTER"), 0),
    "bcast": (200, "OK", "bcast.0384840201234ksdfak3j2erwedfsASdf", (35, "INVITE"), 154),
    "zeromf": (
        "OPTIONS",
        "sip:user@example.com",
        "zeromf.jfasdlfnm2o2l43r5u0asdfas",
        (39234321, "OPTIONS"),
        0,
    ),
    "cparam01": ("REGISTER", "sip:example.com", "cparam01.70710@saturn.example.com", (2, "REGISTER"), 0),
    "cparam02": ("REGISTER", "sip:example.com", "cparam02.70710@saturn.example.com", (3, "REGISTER"), 0),
    "regescrt": (
        "REGISTER",
        "sip:example.com",
        "regescrt.k345asrl3fdbv@192.0.2.1",
        (14398234, "REGISTER"),
        0,
    ),
    "sdp01": ("INVITE", "sip:user@example.com", "sdp01.ndaksdj9342dasdd", (8, "INVITE"), 150),
    "inv2543": (
        "INVITE",
        "sip:UserB@example.com",
        "inv2543.1717@ift.client.example.com",
        (56, "INVITE"),
        105,
    ),
}


def test_corpus_files_are_the_rfc_notation_resolved() -> None:
    # The .dat files are generated from the messages as RFC 4475 prints them; regenerate and compare.
    spec = importlib.util.spec_from_file_location("build_corpus", CORPUS / "build_corpus.py")
    assert spec is not None and spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    assert builder.resolve("a<repeat count=3>bc</repeat>d\n") == b"abcbcbcd\r\n"
    assert builder.resolve("<allOneLine>\nx: 1\n;y=2\n</allOneLine>\nz\n") == b"x: 1;y=2\r\nz\r\n"
    assert builder.resolve("q:<hex>00 0A</hex>\n") == b"q:\x00\n\r\n"
    for tag, source in builder.MESSAGES.items():
        assert _load(tag) == builder.resolve(source), tag
        assert b"\n" not in _load(tag).replace(b"\r\n", b"") or tag == "mpart01", tag  # CRLF line ends only


def test_manifest_covers_every_corpus_file_and_every_valid_message_has_expectations() -> None:
    files = {p.stem for p in CORPUS.glob("*.dat")}
    assert files == {m["tag"] for m in MANIFEST}
    assert len(MANIFEST) == 49  # RFC 4475 section 3 defines 49 messages
    assert {m["tag"] for m in VALID} == set(EXPECTED)


@pytest.mark.parametrize("entry", VALID, ids=[m["tag"] for m in VALID])
def test_valid_message_parses_with_its_fields(entry: dict[str, Any]) -> None:
    tag = entry["tag"]
    message = parse_message_untrusted(_load(tag))
    start, target, call_id, cseq, body_len = EXPECTED[tag]
    if isinstance(start, int):
        assert isinstance(message, Response)
        assert (message.status, message.reason) == (start, target)
    else:
        assert isinstance(message, Request)
        assert (message.method, message.uri) == (start, target)
        assert message.request_uri.scheme == target.split(":", 1)[0].lower()
    assert message.call_id == call_id
    assert (message.cseq.seq, message.cseq.method) == cseq
    assert len(message.body) == body_len
    if message.content_length is not None:
        assert message.content_length == body_len
    # Every parsed message has its typed dialog headers ready for a proxy.
    assert message.vias
    assert message.from_.uri.scheme
    assert message.to.uri.scheme


@pytest.mark.parametrize("entry", INVALID, ids=[m["tag"] for m in INVALID])
def test_invalid_message_raises_remote_protocol_error(entry: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message_untrusted(_load(entry["tag"]))
    assert type(info.value) is RemoteProtocolError
    assert info.value.message  # usable as a reason phrase
    expected = entry.get("expected_status")
    if expected is not None:
        assert info.value.status_hint == expected
    else:
        # Responses the RFC says to discard: a 4xx-class hint is all the stack needs to drop them.
        assert 400 <= info.value.status_hint < 600


@pytest.mark.parametrize("entry", MANIFEST, ids=[m["tag"] for m in MANIFEST])
def test_stream_parser_agrees_with_datagram_parser(entry: dict[str, Any]) -> None:
    # On a stream, Content-Length is mandatory (RFC 3261 section 18.3): messages without one are refused, others
    # give the same result as the datagram parser.
    data = _load(entry["tag"])
    parser = StreamParser()
    parser.feed(data)
    try:
        via_datagram: Request | Response | None = parse_message_untrusted(data)
    except RemoteProtocolError:
        via_datagram = None
    try:
        via_stream = parser.next_message()
    except RemoteProtocolError:
        via_stream = None
    if via_datagram is None or via_datagram.content_length is None:
        assert via_stream is None
    else:
        assert via_stream == via_datagram


def test_wsinv_folding_compact_forms_and_parameters() -> None:
    message = parse_message_untrusted(_load("wsinv"))
    assert [(v.transport, v.host, v.branch) for v in message.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert message.max_forwards == 68
    assert message.to.tag == "1918181833n"
    assert message.from_.tag == "98asjd8"
    assert message.from_.display_name == 'J Rosenberg \\"'
    (contact,) = message.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.param("newparam") == "newvalue"
    assert contact.param("secondparam") == ""
    assert contact.param("q") == "0.33"
    assert message.headers.get("Subject") == ""
    assert message.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert message.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert message.routes[0].uri.has_param("unknown-no-value")


def test_intmeth_keeps_control_characters_and_utf8() -> None:
    message = parse_message_untrusted(_load("intmeth"))
    assert message.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert message.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert message.from_.tag == "_token~1'+`*%!-."
    assert message.from_.param("fromParam''~+*_!.-%") == '"работающий"'
    assert message.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert message.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert message.max_forwards == 255


def test_escapes_are_kept_as_sent() -> None:
    esc01 = parse_message_untrusted(_load("esc01"))
    assert isinstance(esc01, Request)
    assert esc01.request_uri.user == "sips%3Auser%40example.com"
    assert esc01.request_uri.host == "example.net"
    assert esc01.contacts[0].uri.params == (("%6C%72", None), ("n%61me", "v%61lue%25%34%31"))
    escnull = parse_message_untrusted(_load("escnull"))
    assert [c.uri.user for c in escnull.contacts] == ["%00", "%00%00"]
    esc02 = parse_message_untrusted(_load("esc02"))
    # "C%6Fntact" is an unknown header, not a third Contact (RFC 4475 3.1.1.5).
    assert [c.uri.user for c in esc02.contacts] == ["alias1", "alias3"]
    assert esc02.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_longreq_long_values() -> None:
    message = parse_message_untrusted(_load("longreq"))
    assert len(message.vias) == 34
    assert [v.host for v in message.vias[:33]] == [f"sip{n}.example.com" for n in range(33, 0, -1)]
    assert message.vias[33].branch == "very" + "long" * 50 + "branchvalue"
    assert message.to.display_name == "I have a user name of " + "extreme" * 10 + " proportion"
    assert message.to.uri.port == 6000
    assert message.from_.tag == "12" + "982" * 50 + "424"
    assert message.from_.uri.user == "amazinglylongcallername" * 5


def test_dblreq_ignores_the_trailing_invite() -> None:
    data = _load("dblreq")
    message = parse_message_untrusted(data)
    assert isinstance(message, Request) and message.method == "REGISTER"
    assert message.body == b""
    assert b"INVITE sip:joe@example.com" in data  # the noise is really there


def test_semiuri_transports_mpart_and_scheme_cases() -> None:
    semiuri = parse_message_untrusted(_load("semiuri"))
    assert isinstance(semiuri, Request)
    assert semiuri.request_uri.user == "user;par=u%40example.net"
    assert semiuri.request_uri.host == "example.com"
    transports = parse_message_untrusted(_load("transports"))
    assert [v.transport for v in transports.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    mpart = parse_message_untrusted(_load("mpart01"))
    assert mpart.content_type == "multipart/mixed;boundary=7a9cbec02ceef655"
    assert mpart.body.startswith(b"--7a9cbec02ceef655\r\n") and mpart.body.endswith(
        b"--7a9cbec02ceef655--\r\n"
    )
    unksm2 = parse_message_untrusted(_load("unksm2"))
    assert (unksm2.to.uri.scheme, unksm2.to.uri.opaque) == ("isbn", "2983792873")
    assert unksm2.from_.uri.scheme == "http"
    assert unksm2.contacts[0].uri.scheme == "name"
    cparam01 = parse_message_untrusted(_load("cparam01"))
    # Without <>, the parameter belongs to the Contact header, not to the URI (RFC 3261 section 20.10).
    assert cparam01.contacts[0].params == (("unknownparam", None),)
    assert cparam01.contacts[0].uri.params == ()
    cparam02 = parse_message_untrusted(_load("cparam02"))
    assert cparam02.contacts[0].params == ()
    assert cparam02.contacts[0].uri.params == (("unknownparam", None),)
    regescrt = parse_message_untrusted(_load("regescrt"))
    assert regescrt.contacts[0].uri.headers == "Route=%3Csip:sip.example.com%3E"
    zeromf = parse_message_untrusted(_load("zeromf"))
    assert zeromf.max_forwards == 0
    inv2543 = parse_message_untrusted(_load("inv2543"))
    assert inv2543.max_forwards is None and inv2543.top_via.branch is None
