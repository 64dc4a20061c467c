"""The INVITE's challenge path (issue 16): a player's INVITE without credentials in the plain shape is challenged
from its bytes (server/splice.py's read_invite, RegionalServer._invite_challenged_plainly, ProxyCore.challenge_plain)
without a Message. As tests/server/test_challenge_path.py does for the REGISTER, each test sends the same datagrams
to a node with the path and to one without (``challenge_path = False``) and expects the very same datagrams out, the
same counts and the same transactions: the path changes the cost, never the meaning. Hypothesis varies the INVITE
over shapes inside and just outside the plain one, sends it twice (a retransmission) and then the ACK of its 407."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

from head_variants import varied_head
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_kit import TestUA, make_node

from gamesdk.address import Address
from gamesdk.sip.headers import Via
from gamesdk.sip.message import Response
from gamesdk.sip.parser import parse_message_untrusted
from server import splice
from server.node import RegionalServer
from server.proxy import DialogParties
from server.splice import read_ack, read_invite

DOMAIN = "eu.gamesdk.test"
PEER = ("127.0.0.1", 5062)  # make_node's peer region
BODY = "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=application 5 UDP/GSDK gsdk\r\n"

_VIAS = [
    "SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-1-7;rport",
    "SIP/2.0/UDP 10.0.0.8;branch=z9hG4bK77",
    "SIP/2.0/UDP player.example.com:5062;branch=z9hG4bKx",
    "SIP/2.0/UDP 10.0.0.8:65536;branch=z9hG4bK1;rport",
    "SIP/2.0/UDP 10.0.0.8:0;branch=z9hG4bK1",
    "SIP/2.0/TCP 10.0.0.8;branch=z9hG4bK1",
    "SIP/2.0/UDP 10.0.0.8;branch=old1",
    "SIP/2.0/UDP 10.0.0.8;branch=z9hG4bK1;rport=5",
    "SIP/2.0/UDP 10.0.0.8;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK2",
    "SIP/2.0/UDP [::1]:5099;branch=z9hG4bK1",
    "SIP/2.0/UDP 10.0.0.8;branch=",
    "SIP/2.0/UDP bad_host;branch=z9hG4bK1",
]
_RURIS = [f"sip:bob@{DOMAIN}", "sip:bob@127.0.0.1:5060", f"sip:nobody@{DOMAIN}", "sip:bob@other.example",
          "tel:+123", f"sips:bob@{DOMAIN}", f"sip:bob@{DOMAIN};transport=udp", f"sip:{DOMAIN}", "sip:bob@10.0.0.9:5070",
          f"sip:bob@{DOMAIN}?x=y", f"sip:b%20ob@{DOMAIN}", "sip:bob@999.0.0.1"]
_FROMS = ['"alice" <sip:alice@{h}>;tag={n}uac', "<sip:alice@{h}>;tag=x", "<sip:alice@{h}>", '"a b" <sip:alice@{h}>;tag=x',
          "alice <sip:alice@{h}>;tag=x", "sip:alice@{h};tag=x", "<sip:alice@{h}>;tag=a;tag=b", "<sip:alice@{h}>;tag=",
          '"" <sip:alice@{h}>;tag=x', "<sip:mallory@{h}>;tag=x", "<sip:alice@other.example>;tag=x",
          "<sip:alice@127.0.0.1:5060>;tag=x", "<tel:+1>;tag=x", '"al\\"ice" <sip:alice@{h}>;tag=x']
_TOS = ["<sip:bob@{h}>", '"bob" <sip:bob@{h}>', "<sip:bob@{h}>;tag=9", "sip:bob@{h}", "<sip:bob@{h};user=phone>",
        "<sips:bob@{h}>", "<sip:bob@{h}> "]
_CALL_IDS = ["42-1@127.0.0.1", "abc", "a@b@c", "x y", "", "(weird)"]
_CSEQS = ["1 INVITE", "2 INVITE", "1 REGISTER", "123456789 INVITE", "2147483648 INVITE", "x INVITE", "1  INVITE",
          "01 INVITE", "1 invite"]
_CONTACTS = ["<sip:alice@127.0.0.1:5099;transport=udp>", "<sip:alice@10.0.0.8>", "*", "<tel:+123>",
             "<sip:alice@10.0.0.8;ob>;expires=5", "<sip:alice@10.0.0.8:99999>", "sip:alice@10.0.0.8", "<sip:a@b>, <sip:c@d>"]
_MAX_FORWARDS = ["70", "0", "1", "255", "256", "00", "070", "x", ""]
_TEXTS = ["INVITE, ACK, CANCEL, BYE, OPTIONS", "", " x", "x ", "a\tb", "caf\u00e9", "x:y", "100rel, timer"]
_EXTRA = ["Proxy-Authorization: Digest username=\"alice\", realm=\"eu.gamesdk.test\"", "Proxy-Require: foo",
          "Route: <sip:127.0.0.1:5060;lr>", "Route: <sip:10.0.0.1;lr>", "Require: 100rel", "Expires: 60", "Expires: x",
          "Date: Sat, 13 Nov 2010 23:29:00 GMT", "Date: yesterday", "Supported: timer", "Accept: application/sdp",
          "Record-Route: <sip:10.0.0.1;lr>", "X-Thing: 1", "Identity: abc", "Via: SIP/2.0/UDP 10.0.0.7;branch=z9hG4bKlow",
          "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKxyz.loop", "Content-Type: text/plain"]

_NAMES = {
    "Via": ["Via", "v", "VIA", "Via "],
    "Max-Forwards": ["Max-Forwards", "max-forwards"],
    "From": ["From", "f"],
    "To": ["To", "t"],
    "Call-ID": ["Call-ID", "i", "Call-Id"],
    "CSeq": ["CSeq", "cseq"],
    "Contact": ["Contact", "m"],
    "Allow": ["Allow", "allow"],
    "User-Agent": ["User-Agent", "user-agent"],
    "Content-Type": ["Content-Type", "c", "content-type"],
    "Content-Length": ["Content-Length", "l"],
}


def invite_values(pick: Callable[[str, str, list[str]], str], n: int, host: str, length: int, *, leg: int,
                  credentials: str | None = None, subject: str | None = None) -> dict[str, str]:
    """The header values of a call's plain INVITE (SIPp's) in their order, each varied through ``pick(part, plain,
    choices)``: the first INVITE (``leg`` 1) or the second (2: its own branch and CSeq, with the ``credentials`` and
    ``subject`` lines when given)."""
    values = {
        "Via": pick("Via", f"SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-1-{n}-{leg};rport", _VIAS),
        "Max-Forwards": pick("Max-Forwards", "70", _MAX_FORWARDS),
        "From": pick("From", _FROMS[0], _FROMS).format(h=host, n=n),
        "To": pick("To", _TOS[0], _TOS).format(h=host),
        "Call-ID": pick("Call-ID", f"{n}-1@127.0.0.1", _CALL_IDS),
        "CSeq": pick("CSeq", f"{leg} INVITE", _CSEQS),
        "Contact": pick("Contact", _CONTACTS[0], _CONTACTS),
    }
    if credentials is not None:
        values["Proxy-Authorization"] = credentials
    values["Allow"] = pick("Allow", _TEXTS[0], _TEXTS)
    values["User-Agent"] = pick("User-Agent", "gamesdk-sipp-interop", _TEXTS)
    if subject is not None:
        values["Subject"] = subject
    values["Content-Type"] = "application/sdp"
    values["Content-Length"] = pick("Content-Length", str(length), [
        str(length + 1), str(max(length - 1, 0)), "x", "", "0" + str(length), "123456", f"{length:5}",
        f"{length + 1:6}", f"\t{length}", f" {length} "])
    return values


@st.composite
def invites(draw: st.DrawFn) -> bytes:
    """An INVITE of the plain shape (SIPp's) with a few of its parts (at most three) varied."""
    varied = draw(st.sets(st.sampled_from(["ruri", "host", "Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq",
                                           "Contact", "Allow", "User-Agent", "Content-Length", "name", "sep", "case",
                                           "twice", "drop", "extra", "body", "end", "order", "utf8", "lead"]),
                          max_size=3))

    def pick(part: str, plain: str, choices: list[str]) -> str:
        return draw(st.sampled_from(choices)) if part in varied else plain

    n = draw(st.integers(1, 10**6))
    host = pick("host", DOMAIN, [DOMAIN, "127.0.0.1", "127.0.0.1:5060", "EU.GAMESDK.TEST", "other.example"])
    body = pick("body", BODY, [BODY, "", BODY + "trailing", "\r\n"])
    length = len(body.encode()) if body != BODY + "trailing" else len(BODY)
    values = invite_values(pick, n, host, length, leg=1)
    text = varied_head(draw, varied, f"INVITE {pick('ruri', _RURIS[0], _RURIS)} SIP/2.0", values, _NAMES, _EXTRA,
                       body)
    if "lead" in varied:
        text = "\r\n" + text
    return text.encode()


def _nodes(tmp: Path, **auth: object) -> tuple[RegionalServer, RegionalServer]:
    pair = []
    for on in (True, False):
        folder = tmp / str(on)
        folder.mkdir(exist_ok=True)
        node = make_node("eu", 5060, 5062, folder, {"alice": "apw", "bob": "bpw"}, **auth)
        node.challenge_path = on
        pair.append(node)
    return pair[0], pair[1]


def _state(node: RegionalServer) -> tuple[object, ...]:
    proxy = node.proxy
    return (node.stats, proxy.stats, node.login.challenges_sent, dict(node.unverified._buckets),
            node.unverified.refused, sorted((key, tx.state.name) for key, tx in proxy.server_txs.items()),
            sorted(proxy.ended_server), node.get_timer())


def _log_in(nodes: tuple[RegionalServer, RegionalServer], user: str, addr: Address, now: float) -> None:
    """``user`` logs in from ``addr`` on both nodes (the same draws on each)."""
    for node in nodes:
        ua = TestUA(user, DOMAIN, {"alice": "apw", "bob": "bpw"}[user], addr)
        register = ua.register()
        out = node.handle_datagram(register.to_bytes(), addr, now)
        challenge = parse_message_untrusted(out[0][0])
        assert isinstance(challenge, Response) and challenge.status == 401
        out = node.handle_datagram(ua.authorize(register, challenge).to_bytes(), addr, now)
        assert out[0][0].startswith(b"SIP/2.0 200"), out


def _ack_of(invite: bytes, answer: bytes) -> bytes | None:
    """The ACK of ``answer`` (a final response to ``invite``) as SIPp's scenario writes it: the INVITE's Via,
    From, Call-ID and Request-URI, the answer's To, CSeq n ACK."""
    try:
        head = invite.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        to = answer.split(b"\r\nTo: ", 1)[1].split(b"\r\n", 1)[0].decode()
    except (IndexError, UnicodeDecodeError):
        return None
    start = head[0].split(" ")
    keep = [line for line in head[1:] if line.split(":", 1)[0] in ("Via", "Max-Forwards", "From", "Call-ID")]
    seq = next((line.split(": ", 1)[1].split(" ")[0] for line in head if line.startswith("CSeq: ")), "1")
    if len(start) != 3:
        return None
    lines = [f"ACK {start[1]} SIP/2.0", *keep, f"To: {to}", f"CSeq: {seq} ACK", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


_SOURCES = itertools.count(1)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=invites(), source_kind=st.sampled_from(["via", "stranger", "registered", "peer"]))
def test_the_challenge_path_answers_every_invite_as_the_full_path(tmp_path: Path, data: bytes,
                                                                  source_kind: str) -> None:
    fast, full = _nodes(tmp_path)
    n = next(_SOURCES)
    source = {"via": ("10.0.0.8", 5099), "stranger": (f"192.0.{n % 250}.{n // 250 % 250 + 1}", 5000 + n % 1000),
              "registered": ("127.0.0.1", 5099), "peer": PEER}[source_kind]
    if source_kind == "registered":
        _log_in((fast, full), "alice", source, 9.0)
    answers = []
    for now in (10.0, 10.5):  # and again: a retransmission gets the same
        got = fast.handle_datagram(data, source, now)
        assert got == full.handle_datagram(data, source, now)
        answers.extend(got)
        assert _state(fast) == _state(full)
    for answer, _ in answers:
        ack = _ack_of(data, answer) if answer.startswith(b"SIP/2.0 4") else None
        if ack is not None:
            assert fast.handle_datagram(ack, source, 11.0) == full.handle_datagram(ack, source, 11.0)
            assert _state(fast) == _state(full)
    assert fast.handle_timer(50.0) == full.handle_timer(50.0)
    assert _state(fast) == _state(full)


def _plain(n: int = 1, source: Address = ("127.0.0.1", 5099)) -> bytes:
    body = BODY.encode()
    return (f"INVITE sip:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {source[0]}:{source[1]};branch=z9hG4bK-1-{n}-1;rport\r\n"
            f"Max-Forwards: 70\r\nFrom: \"alice\" <sip:alice@{DOMAIN}>;tag={n}uac\r\nTo: <sip:bob@{DOMAIN}>\r\n"
            f"Call-ID: {n}-1@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{source[0]}:{source[1]};transport=udp>\r\n"
            "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\nUser-Agent: gamesdk-sipp-interop\r\n"
            f"Subject: pong/1 ranked match\r\nContent-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


def test_sipps_invite_takes_the_challenge_path(tmp_path: Path) -> None:
    fast, full = _nodes(tmp_path)
    source = ("127.0.0.1", 5099)
    for n in range(3):
        data = _plain(n)
        plain = read_invite(data)
        assert plain is not None and plain.via.branch == f"z9hG4bK-1-{n}-1" and plain.from_uri.user == "alice"
        got = fast.handle_datagram(data, source, 1.0)
        assert got == full.handle_datagram(data, source, 1.0)
        assert got[0][0].startswith(b"SIP/2.0 407 Proxy Authentication Required\r\n")
    assert _state(fast) == _state(full)
    assert fast.stats.requests == 3 and fast.proxy.stats.challenges == 3
    # SIPp writes its [len] padded with spaces: the parser's value drops them, and so does the reader.
    padded = _plain(3).replace(f"Content-Length: {len(BODY.encode())}".encode(),
                               f"Content-Length: {len(BODY.encode()):5}".encode())
    plain = read_invite(padded)
    assert plain is not None and plain.items == parse_message_untrusted(padded).headers._items
    got = fast.handle_datagram(padded, source, 1.0)
    assert got == full.handle_datagram(padded, source, 1.0) and _state(fast) == _state(full)
    assert fast.stats.requests == 4 and fast.proxy.stats.challenges == 4
    # What the reader leaves to the full path.
    data = _plain()
    assert read_invite(data.replace(b"Subject:", b"Proxy-Authorization: Digest x\r\nSubject:")) is None
    assert read_invite(data.replace(b"Call-ID:", b"i:")) is None
    assert read_invite(data.replace(b"Max-Forwards: 70", b"Max-Forwards: 0")) is None
    assert read_invite(data.replace(b"Subject:", b"Route: <sip:x>\r\nSubject:")) is None
    assert read_invite(data.replace(b"To: <sip:bob@eu.gamesdk.test>", b"To: <sip:bob@eu.gamesdk.test>;tag=1")) is None
    assert read_invite(data[:-1]) is None  # the body cut short


def test_the_unverified_limit_counts_the_same_on_both_paths(tmp_path: Path) -> None:
    fast, full = _nodes(tmp_path)
    registered = ("127.0.0.1", 5099)
    _log_in((fast, full), "alice", registered, 1.0)
    for node in (fast, full):
        node.unverified.burst = 2.0
        node.unverified.rate = 0.001
    stranger = ("127.0.0.2", 5099)
    for n in range(5):
        data = _plain(n, stranger)
        assert fast.handle_datagram(data, stranger, 1.0) == full.handle_datagram(data, stranger, 1.0)
    assert _state(fast) == _state(full)
    assert fast.stats.dropped == 3
    # a registered caller's challenges skip the limit of strangers
    for n in range(10, 15):
        got = fast.handle_datagram(_plain(n), registered, 1.0)
        assert got and got == full.handle_datagram(_plain(n), registered, 1.0)
    assert _state(fast) == _state(full)
    assert fast.stats.dropped == 3


def test_a_draining_node_and_a_peer_take_the_full_path(tmp_path: Path) -> None:
    fast, full = _nodes(tmp_path)
    for node in (fast, full):
        node.drain(5, quiet_udp=False)
    data = _plain()
    assert fast.handle_datagram(data, ("127.0.0.1", 5099), 1.0) == full.handle_datagram(data, ("127.0.0.1", 5099),
                                                                                          1.0)
    assert _state(fast) == _state(full)


_ACK_VIAS = ["SIP/2.0/UDP 127.0.0.1:5099;branch={b}", "SIP/2.0/UDP 127.0.0.1:5099;branch={b};rport=1",
             "SIP/2.0/UDP 127.0.0.1:5099;branch={b}, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK2", "SIP/2.0/TCP 127.0.0.1:5099;branch={b}",
             "SIP/2.0/UDP 127.0.0.1:5099", "SIP/2.0/UDP 127.0.0.1:5099;branch=old", "SIP/2.0/UDP 127.0.0.1:70000;branch={b}",
             "SIP/2.0/UDP 127.0.0.1;branch={b};rport", "SIP/2.0/UDP LOCALHOST:5099;branch={b}"]
_ACK_EXTRA = ["Route: <sip:127.0.0.1:5060;lr>", "Route: <sip:10.0.0.1;lr>", "X-Thing: 1", "Proxy-Require: foo",
              "Content-Type: application/sdp", "Via: SIP/2.0/UDP 10.0.0.7;branch=z9hG4bKlow", "Allow: ACK",
              "Proxy-Authorization: Digest username=\"alice\""]
_ACK_NAMES = {"Via": ["v", "VIA"], "Max-Forwards": ["max-forwards"], "From": ["f", "FROM"], "To": ["t"],
              "Call-ID": ["i", "Call-Id"], "CSeq": ["CSEQ"], "Content-Length": ["l", "content-length"]}


@st.composite
def acks(draw: st.DrawFn, branch: str, call_id: str, to: str, seq: int) -> bytes:
    """The ACK of a final response as SIPp and the SDK write it, with a few of its parts (at most three) varied."""
    varied = draw(st.sets(st.sampled_from(["ruri", "Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq",
                                           "Content-Length", "name", "sep", "twice", "drop", "extra", "body", "end",
                                           "order", "utf8", "case"]), max_size=3))

    def pick(part: str, plain: str, choices: list[str]) -> str:
        return draw(st.sampled_from(choices)) if part in varied else plain

    values = {
        "Via": pick("Via", f"SIP/2.0/UDP 127.0.0.1:5099;branch={branch};rport", _ACK_VIAS).format(b=branch),
        "Max-Forwards": pick("Max-Forwards", "70", _MAX_FORWARDS),
        "From": pick("From", f"\"alice\" <sip:alice@{DOMAIN}>;tag=x", ["", "<sip:alice@x>;tag=\u00e9", "x y",
                                                                          "a\tb", "<sip:alice@x> "]),
        "To": pick("To", to, ["", f"{to} ", "<sip:bob@x>", "t\te"]),
        "Call-ID": pick("Call-ID", call_id, ["", "x y", "other@x", f"{call_id} "]),
        "CSeq": pick("CSeq", f"{seq} ACK", [f"{seq} INVITE", "x ACK", f"{seq}  ACK", "4294967296 ACK", f"{seq} ack"]),
        "Content-Length": pick("Content-Length", "0", ["1", "x", "", "00", "5"]),
    }
    ruri = pick("ruri", f"sip:bob@{DOMAIN}", ["sip:bob@127.0.0.1:5062", "tel:1", "sip:bob@x y", "*", ""])
    body = draw(st.sampled_from(["x", "\r\n", "hello"])) if "body" in varied else ""
    return varied_head(draw, varied, f"ACK {ruri} SIP/2.0", values, _ACK_NAMES, _ACK_EXTRA, body).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), which=st.sampled_from(["407", "480", "in a call"]))
def test_the_ack_of_a_challenge_is_dropped_as_the_relay_path_drops_it(tmp_path: Path, data: st.DataObject,
                                                                       which: str) -> None:
    """The ACK of a stateless 407 (dropped), of a final of ours (absorbed by its transaction: Confirmed), and of
    a 407 whose Call-ID is a call set up here (relayed or dropped by the relay path), in shapes inside and just
    outside the plain one: the same datagrams, counts and transactions with the path and without."""
    fast, full = _nodes(tmp_path)
    source = ("127.0.0.1", 5099)
    _log_in((fast, full), "alice", source, 1.0)
    n = next(_SOURCES)
    invite = _plain(n)
    answers = [fast.handle_datagram(invite, source, 2.0), full.handle_datagram(invite, source, 2.0)]
    assert answers[0] == answers[1] and answers[0][0][0].startswith(b"SIP/2.0 407")
    branch, call_id, seq = f"z9hG4bK-1-{n}-1", f"{n}-1@127.0.0.1", 1
    final = answers[0][0][0]
    if which == "480":  # the INVITE again with credentials, to bob, who is not logged in: 480 from a transaction
        ua = TestUA("alice", DOMAIN, "apw", source)
        request = parse_message_untrusted(invite)
        challenge = parse_message_untrusted(final)
        assert isinstance(challenge, Response)
        again = ua.authorize(request, challenge)  # type: ignore[arg-type]
        branch, seq = again.top_via.branch or "", 2
        outs = [node.handle_datagram(again.to_bytes(), source, 2.0) for node in (fast, full)]
        assert outs[0] == outs[1]
        final = next(d for d, _ in outs[0] if d.startswith(b"SIP/2.0 480"))
    elif which == "in a call":
        for node in (fast, full):
            node.proxy._dialogs[call_id] = DialogParties((source,), (("127.0.0.1", 5062),), 1e9)
    to = final.split(b"\r\nTo: ", 1)[1].split(b"\r\n", 1)[0].decode()
    ack = data.draw(acks(branch, call_id, to, seq))
    for now in (3.0, 3.5):  # and its repeat
        assert fast.handle_datagram(ack, source, now) == full.handle_datagram(ack, source, now)
        assert _state(fast) == _state(full)
    assert fast.handle_timer(50.0) == full.handle_timer(50.0)
    assert _state(fast) == _state(full)


def test_the_ack_of_sipps_challenge_is_read_from_its_bytes(tmp_path: Path) -> None:
    fast, full = _nodes(tmp_path)
    source = ("127.0.0.1", 5099)
    invite = _plain(3)
    answer = fast.handle_datagram(invite, source, 1.0)
    assert answer == full.handle_datagram(invite, source, 1.0)
    ack = _ack_of(invite, answer[0][0])
    assert ack is not None
    read = read_ack(ack)
    assert read is not None and read[0].branch == "z9hG4bK-1-3-1" and read[1:] == ("3-1@127.0.0.1", 70)
    assert fast.handle_datagram(ack, source, 1.0) == full.handle_datagram(ack, source, 1.0) == []
    assert _state(fast) == _state(full)
    assert fast.proxy.stats.acks_dropped == 1 and fast.stats.relayed_lazily == 1
    assert read_ack(ack.replace(b"Call-ID:", b"i:")) is None
    assert read_ack(ack.replace(b"Content-Length: 0", b"Content-Length: 1")) is None


_VIA_PARTS = st.sampled_from(["SIP/2.0/UDP ", "SIP/2.0/TCP ", "", "10.0.0.8", "player.example.com", "[::1]", ":5099",
                              ":0", ":65536", ";branch=", "z9hG4bK", "-1.x", ";rport", ";rport=5", ";", ">", " ", "a b"])
_FROM_PARTS = st.sampled_from(['"alice" ', '"a b" ', "<", "sip:", "alice", "@", DOMAIN, "10.0.0.8", ":5060", ">",
                               ";tag=", "x1", ">;tag=", ";tag=a>;tag=b", " ", "", "\u00e9"])


@given(st.lists(_VIA_PARTS, max_size=8).map("".join), st.lists(_FROM_PARTS, max_size=8).map("".join))
def test_the_via_and_from_readers_take_what_their_expressions_take(via: str, from_: str) -> None:
    """_via_of and _from_of (a part remembered, the rest checked alone) against the expressions they stand for."""
    via = "SIP/2.0/UDP 10.0.0.8:5099;branch=z9hG4bK" + via if via.startswith("-") else via
    for value in (via, "SIP/2.0/UDP 10.0.0.8:5099;branch=z9hG4bK1" + via):
        match = splice._VIA.fullmatch(value)
        read = splice._via_of(value)
        if match is None:
            assert read is None
        else:
            host, port, branch, rport = match.groups()
            assert read == Via("UDP", host, None if port is None else int(port),
                               (("branch", branch), ("rport", None)) if rport else (("branch", branch),))
            assert read == Via.parse(value)
    for value in (from_, f'"alice" <sip:alice@{DOMAIN}>;tag=' + from_):
        assert (splice._from_of(value) is None) == (splice._FROM.fullmatch(value) is None)
