"""The answer path (issue 16): the callee's 2xx of an INVITE in the plain shape is read from its bytes
(server/splice.py's read_answer, RegionalServer._answered_plainly) into the Response the full parse and check make
of it, without parsing every header. Each test runs a call through a node with the path and one without
(``answer_path = False``: every 2xx parsed and validated in full) and expects the very same datagrams out, counts
and state. Hypothesis varies the 2xx over shapes inside and just outside the plain one (status line, names,
separators, values, extra and repeated lines, Vias, tags, framing, line ends), so an answer the reader takes that
the full path would refuse, or handle otherwise, shows up as a difference."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_kit import ANSWER, OFFER, TestUA, Wire
from test_relay_path import logged_in_pair

from gamesdk.address import Address
from gamesdk.errors import RemoteProtocolError
from gamesdk.sip.headers import Via
from gamesdk.sip.message import Request, Response
from gamesdk.sip.parser import parse_message_untrusted, validate_untrusted
from gamesdk.sip.uri import NameAddr
from server import splice
from server.node import RegionalServer
from server.splice import read_answer

EU = ("127.0.0.1", 5060)
DOMAIN = "eu.gamesdk.test"

#: Other names of the header lines of a 2xx (compact, another case), and lines to insert.
_NAMES = {"Via": ["v", "via", "VIA"], "From": ["f", "from"], "To": ["t", "TO"], "Call-ID": ["i", "Call-Id"],
          "CSeq": ["cseq"], "Contact": ["m", "contact"], "Content-Type": ["c", "content-type"],
          "Content-Length": ["l", "content-length"]}
_EXTRA = ["Server: sipp", "User-Agent: gamesdk", "Allow: INVITE, ACK, BYE", "Supported: timer", "Accept: x/y",
          "Record-Route: <sip:10.0.0.1;lr>", "Max-Forwards: 70", "Expires: 30", 'Warning: 370 x "y"', "X-Foo: bar",
          "Contact: <sip:bob@10.0.0.9>", "Identity: abc", "Date: Sat, 13 Nov 2010 23:29:00 GMT", "Server:",
          "Server:  x ", "Require: 100rel", "Content-Type: text/plain", "Via: SIP/2.0/UDP 10.0.0.3;branch=z9hG4bKv",
          "Allow: INVITE", "Server: a\x01b", "Server: \xe9t\xe9"]
_STATUS = ["SIP/2.0 202 Accepted", "SIP/2.0 200", "SIP/2.0 200 ", "SIP/2.0 299 Whatever ok", "SIP/2.0 200 O\tK",
           "SIP/2.0 2000 OK", "SIP/2.0 300 Multiple Choices", "SIP/2.0 200  OK", "SIP/2.1 200 OK", "sip/2.0 200 OK",
           "SIP/2.0 200 OK\x7f", "SIP/2.0 20x OK", "SIP/2.0 183 Session Progress"]
_VIA_TAILS = [";rport", "", ";rport=7001;received=10.0.0.1", ";received=10.0.0.1", ";rport=0", ";rport=70000",
              ";rport=abc", ";rport=7001;received=::1", ";rport=7001;received=300.1.1.1", ";rport=7001;maddr=x",
              ";RPORT=7001", ";rport=07001", ";rport=7001;", ";rport=7001 ", ";rport=7001;received=10.0.0.1;x",
              ";rport;received=10.0.0.1", ";rport=;received=10.0.0.1", ";rport=65535", ";rport=7001;rport"]
#: Text of the pieces values are made of (and of some the shapes refuse).
_PIECES = st.lists(st.sampled_from(list("<>;=:@.-_~ \t\"!%*+`'abzAZ09,\x7f\x01") + [
    "sip:", "tag=", ">;tag=", DOMAIN, "z9hG4bK", ";rport", "127.0.0.1"]), max_size=10).map("".join)
_VARIED = ["status", "name", "sep", "twice", "drop", "extra", "order", "via_tail", "via_top", "via_lower", "tag",
           "to", "from", "call_id", "cseq", "length", "contact", "end", "case", "utf8", "body", "leading"]


def _invited(wire: Wire, alice: TestUA, bob: TestUA) -> tuple[Request, Request]:
    """alice's INVITE through the node's challenge: (as alice signed it, as it arrived at bob)."""
    invite = alice.invite(f"sip:bob@{DOMAIN}", OFFER)
    wire.send(alice.addr, EU, invite)
    (challenge,) = alice.responses()
    wire.send(alice.addr, EU, alice.ack_non2xx(invite, challenge))
    signed = alice.authorize(invite, challenge)
    wire.send(alice.addr, EU, signed)
    (arrived,) = [r for r in bob.requests() if r.method == "INVITE"]  # (bob's inbox may hold an earlier ACK)
    return signed, arrived


def _state(node: RegionalServer) -> tuple[object, ...]:
    proxy = node.proxy
    return (node.stats, proxy.stats, sorted(proxy._dialogs.items(), key=repr), sorted(proxy.ended_client),
            sorted(proxy.ended_server), sorted(proxy.client_txs), sorted(proxy.server_txs),
            sorted(proxy.pending_answers))


def _vary(draw: st.DrawFn, varied: set[str], text: str) -> str:
    """The 2xx ``text`` (CRLF, a Content-Length) with the parts named in ``varied`` changed."""
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    if "status" in varied:
        lines[0] = draw(st.sampled_from(_STATUS))
    if "body" in varied:
        body = draw(st.sampled_from(["", body + "x", body[:-3], "v=0\r\n\r\n"]))
    for at, line in enumerate(lines[1:], 1):
        name, _, value = line.partition(": ")
        if name == "Via" and "via_tail" in varied and value.endswith(";rport=7001"):
            value = value[:-len(";rport=7001")] + draw(st.sampled_from(_VIA_TAILS))
        elif name == "Via" and "via_top" in varied and value.startswith("SIP/2.0/UDP 127.0.0.1:5060"):
            value = draw(st.sampled_from([value.replace("z9hG4bK", "z9hG4bk"), value + ";x", value.upper(),
                                          value.replace(";rport", ""), value + ",SIP/2.0/UDP a;branch=z9hG4bKb",
                                          value.replace("UDP", "TCP"), value.replace(":5060", ""),
                                          value.replace("branch=", "branch=" + draw(_PIECES))]))
        elif name == "Via" and "via_lower" in varied and not value.startswith("SIP/2.0/UDP 127.0.0.1:5060"):
            value = draw(st.sampled_from([value.replace("7001", draw(_PIECES)), value.replace("127.0.0.1", "bob.x"),
                                          value.replace("127.0.0.1", "[::1]"), value.replace("branch", "BRANCH"),
                                          value.replace("z9hG4bK", ""), value.replace("127.0.0.1", "a..b")]))
        elif name == "To" and "tag" in varied:
            value = value.partition(";tag=")[0] + draw(st.sampled_from([";tag=", ";tag=" + draw(_PIECES), "",
                                                                         ";tag=a;x=1", ";TAG=a", ";tag=a%41b"]))
        elif name == "To" and "to" in varied:
            value = draw(st.sampled_from([f'"Bob" {value}', f"Bob {value}", value.replace("<", "").replace(">", ""),
                                          value.replace(DOMAIN, "127.0.0.1:5062"), value.replace("sip:", "sips:"),
                                          f"<{draw(_PIECES)}>;tag=a", value.replace("bob", draw(_PIECES))]))
        elif name == "From" and "from" in varied:
            value = draw(st.sampled_from([f'"Alice" {value}', value.replace(";tag=", ";x=1;tag="),
                                          value.replace("alice", draw(_PIECES)), value.partition(";")[0]]))
        elif name == "Call-ID" and "call_id" in varied:
            value = draw(st.sampled_from(["a b", "", "x@y@z", "ab", draw(_PIECES)]))
        elif name == "CSeq" and "cseq" in varied:
            value = draw(st.sampled_from(["2 invite", "2  INVITE", "x INVITE", "2 BYE", "1234567890 INVITE",
                                          "0 INVITE", " 2 INVITE"]))
        elif name == "Content-Length" and "length" in varied:
            value = draw(st.sampled_from([str(int(value) + 1), str(int(value) - 1), f"   {value}", f"0{value}",
                                          "abc", f"{value} ", "99999999999"]))
        elif name == "Contact" and "contact" in varied:
            value = draw(st.sampled_from(["<sip:bob@127.0.0.1:7002;transport=UDP>", "sip:bob@127.0.0.1:7002",
                                          "<sip:bob@host>;expires=3", "*", "<sip:b@1.2.3.4>, <sip:c@1.2.3.5>",
                                          f"<sip:{draw(_PIECES)}@127.0.0.1:7002>", "<sip:bob@127.0.0.1:99999>"]))
        lines[at] = f"{name}: {value}"
    if "name" in varied:
        at = draw(st.integers(1, len(lines) - 1))
        name, _, value = lines[at].partition(": ")
        lines[at] = f"{draw(st.sampled_from(_NAMES.get(name, [name.lower()])))}: {value}"
    if "sep" in varied:
        at = draw(st.integers(1, len(lines) - 1))
        lines[at] = lines[at].replace(": ", draw(st.sampled_from([":", " : ", ":  ", ": \t", ":\t"])), 1)
    if "case" in varied:
        at = draw(st.integers(1, len(lines) - 1))
        lines[at] = lines[at] + draw(st.sampled_from([" ", "\t", "\r", "\n"]))
    if "twice" in varied:
        at = draw(st.integers(1, len(lines) - 1))
        lines.insert(at, lines[at])
    if "drop" in varied:
        del lines[draw(st.integers(1, len(lines) - 1))]
    if "order" in varied:
        lines[1:] = draw(st.permutations(lines[1:]))
    if "extra" in varied:
        lines.insert(draw(st.integers(1, len(lines))), draw(st.sampled_from(_EXTRA)))
    end = "\n" if "end" in varied else "\r\n"
    text = end.join(lines) + end + end + body
    if "utf8" in varied:
        text = text.replace("bob", "b\u00f6b", 1)
    if "leading" in varied:
        text = "\r\n" + text
    return text


def _send(wire: Wire, src: Address, data: bytes) -> None:
    """``data`` to the node; a datagram a test UA cannot parse (one the node relays as it came) stops the delivery
    there, on both wires alike (their logs are compared)."""
    try:
        wire.send(src, EU, data)
    except RemoteProtocolError:
        pass


def _contact_of(response: Response) -> bool:
    """Whether alice can send an ACK and a BYE for ``response`` (a Contact she can parse)."""
    try:
        return bool(response.contacts)
    except RemoteProtocolError:
        return False


def _reads_as_the_parser(data: bytes) -> None:
    """read_answer takes only what the full parse and check take, and makes of it what they make."""
    response = read_answer(data)
    if response is None:
        return
    parsed = parse_message_untrusted(data, lazy=True)
    validate_untrusted(parsed)
    assert response == parsed
    got, want = dict(response.headers._cache), dict(parsed.headers._cache)
    del got[splice.ANSWER_SPANS]
    del want["from"]  # left to its accessor, which parses it as the parser does
    assert got == want
    assert response.from_ == parsed.from_ and response.body == parsed.body
    raw = response.raw_unchanged()
    assert raw == parsed.raw_unchanged() and raw is not None
    # Its Via lines as noted: spliced upstream as with_vias splices what the full parse keeps.
    end, spans = response.headers._cache[splice.ANSWER_SPANS]
    for vias, extra in ((["SIP/2.0/UDP a;branch=z9hG4bK1"], []), (["v1", "v2;x", "v3"], [("P-X", "1"), ("Y", "")])):
        assert splice.with_vias_at(raw, end, spans, vias, extra) == splice.with_vias(raw, vias, extra)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_answer_path_handles_every_2xx_as_the_full_path(tmp_path: Path, data: st.DataObject) -> None:
    varied = data.draw(st.sets(st.sampled_from(_VARIED), max_size=3))
    runs = []
    texts: list[bytes] = []
    for on in (True, False):
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        wire, alice, bob = logged_in_pair(folder, answer_path=on)
        signed, arrived = _invited(wire, alice, bob)
        if not texts:
            plain = bob.answer(arrived, 200, ANSWER).to_bytes()
            assert read_answer(plain) is not None  # the plain shape itself is read
            texts.append(_vary(data.draw, varied, plain.decode()).encode("utf-8"))
        answer = texts[0]
        _reads_as_the_parser(answer)
        _send(wire, bob.addr, answer)
        _send(wire, bob.addr, answer)  # retransmitted: forwarded again, the same bytes
        got = alice.responses()
        if got and got[-1].status == 200 and _contact_of(got[-1]):
            ok = got[-1]
            _send(wire, alice.addr, alice.ack_2xx(signed, ok).to_bytes())
            _send(wire, alice.addr, alice.bye(signed, ok).to_bytes())
        wire.advance(40.0)  # the timers' ends too
        _send(wire, bob.addr, answer)  # after its transactions ended: a stray
        runs.append((wire, _state(wire.nodes[EU])))
    (fast, fast_state), (full, full_state) = runs
    assert fast.log == full.log
    assert fast_state == full_state


def test_a_calls_2xx_is_read_as_the_full_parse_makes_it(tmp_path: Path) -> None:
    runs = []
    for on in (True, False):
        folder = tmp_path / str(on)
        folder.mkdir()
        wire, alice, bob = logged_in_pair(folder, answer_path=on)
        for _ in range(3):  # the lines the reader keeps come back
            signed, arrived = _invited(wire, alice, bob)
            answer = bob.answer(arrived, 200, ANSWER, tag=bob.ids.tag()).to_bytes()
            assert read_answer(answer) is not None
            _reads_as_the_parser(answer)
            wire.send(bob.addr, EU, answer)
            ok = alice.responses()[-1]  # (after the 100)
            assert ok.status == 200
            wire.send(alice.addr, EU, alice.ack_2xx(signed, ok))
        runs.append((wire, _state(wire.nodes[EU])))
    (fast, fast_state), (full, full_state) = runs
    assert fast.log == full.log and fast_state == full_state
    assert fast_state[1].sessions_set_up == 3


def test_what_the_answer_reader_leaves_to_the_full_path() -> None:
    plain = (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKa.1;rport\r\n"
             f"Via: SIP/2.0/UDP 127.0.0.1:7001;branch=z9hG4bK-2;rport=7001;received=10.0.0.1\r\n"
             f'From: "alice" <sip:alice@{DOMAIN}>;tag=1\r\nTo: <sip:bob@{DOMAIN}>;tag=2\r\nCall-ID: c@h\r\n'
             f"CSeq: 2 INVITE\r\nContact: <sip:bob@127.0.0.1:7002;transport=udp>\r\n"
             f"Content-Type: application/sdp\r\nContent-Length: 3\r\n\r\nv=0").encode()
    response = read_answer(plain)
    assert response is not None and response.status == 200 and response.body == b"v=0"
    assert [via.params for via in response.vias] == [(("branch", "z9hG4bKa.1"), ("rport", None)), (
        ("branch", "z9hG4bK-2"), ("rport", "7001"), ("received", "10.0.0.1"))]
    _reads_as_the_parser(plain)
    _reads_as_the_parser(plain + b"trailing")  # bytes after the body: not forwarded
    assert read_answer(plain + b"trailing").raw_unchanged() == plain  # type: ignore[union-attr]
    # A body that is not ASCII (a UTF-8 session name): the head is still read, the body kept as it came.
    utf8 = plain.replace(b"Content-Length: 3", b"Content-Length: 4").replace(b"\r\n\r\nv=0", b"\r\n\r\nv=\xc3\xa9")
    assert read_answer(utf8).body == b"v=\xc3\xa9"  # type: ignore[union-attr]
    _reads_as_the_parser(utf8)
    for edit in [(b"CSeq: 2 INVITE", b"CSeq: 2 BYE"), (b"Content-Length: 3", b"Content-Length: 4"),
                 (b"Content-Length: 3\r\n", b""), (b"To: <", b"t: <"), (b";tag=2", b""),
                 (b"Call-ID: c@h", b"Call-ID: c@h\r\nCall-ID: c@h"), (b"OK", b"OK\xc3\xa9"),
                 (b"Content-Type", b"Record-Route: <sip:a;lr>\r\nContent-Type"),
                 (b"Content-Type", b"Max-Forwards: 70\r\nContent-Type"), (b"\r\n\r\n", b"\n\n")]:
        assert read_answer(plain.replace(*edit)) is None, edit


@settings(max_examples=500, deadline=None)
@given(tail=st.one_of(st.sampled_from(_VIA_TAILS), _PIECES), tag=_PIECES, prefix=_PIECES)
def test_the_answer_readers_checks_give_what_the_parser_gives(tail: str, tag: str, prefix: str) -> None:
    for value in (f"SIP/2.0/UDP 127.0.0.1:7001;branch=z9hG4bK-1{tail}", f"SIP/2.0/UDP a.b;branch={tag}{tail}",
                  f"SIP/2.0/UDP {prefix}:5060;branch=z9hG4bKx;rport"):
        for _ in range(2):  # and again, from the memos
            via = splice._answer_via(value)
            if via is not None:
                assert via == Via.parse(value)
    for value in (f"<sip:bob@{DOMAIN}>;tag={tag}", f'"Bob" <sip:bob@{DOMAIN}>;tag={tag}', f"<{prefix}>;tag=a",
                  f"{prefix}<sip:bob@{DOMAIN}>;tag=a", f"<sip:{prefix}@{DOMAIN}>;tag={tag}"):
        for _ in range(2):
            named = splice._answer_to(value)
            if named is not None:
                assert named == NameAddr.parse(value)
            else:
                try:
                    full = NameAddr.parse(value)
                except RemoteProtocolError:
                    continue
                # What the reader leaves is outside its shape, never a value it should have read.
                assert not re.fullmatch(rf'(?:"[A-Za-z0-9._~-]+" )?<{splice._PLAYER_URI}>;tag={splice.TOKEN}',
                                        value) or full is None


def test_the_answer_readers_memos_keep_no_long_text() -> None:
    long_name = "b" * 3000
    data = (f"SIP/2.0 200 {'O' * 3000}\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKq;rport=5060;"
            f"received=10.0.0.1\r\nFrom: <sip:a@{DOMAIN}>;tag=1\r\nTo: <sip:{long_name}@{DOMAIN}>;tag=2\r\n"
            f"Call-ID: c\r\nCSeq: 2 INVITE\r\nServer: {'x' * 3000}\r\nContent-Length: 0\r\n\r\n").encode()
    assert read_answer(data) is not None
    kept = [*splice._ANSWER_STARTS, *splice._ANSWER_KNOWN, *splice._TO_PREFIXES, *splice._VIA_TAILS]
    assert kept and max(len(text) for text in kept) <= 512
