"""The challenge path (issue 16): a REGISTER without credentials in the plain shape is challenged from its bytes
(server/splice.py's read_register, RegionalServer._challenged_plainly) without a Message. Each test sends the same
datagrams to a node with the challenge path and to one without (``challenge_path = False``: every REGISTER parsed
and validated in full, the way before it) and expects the very same datagrams out and the same counts: the path
changes the cost, never the meaning. Hypothesis varies the REGISTER over shapes inside and just outside the plain
one (names, separators, values, extra and repeated lines, bodies, line ends), so a request the plain reader takes
that the full path would refuse, or answer with other bytes, shows up as a difference."""

from __future__ import annotations

import itertools
from pathlib import Path

from head_variants import varied_head
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_kit import make_node

from server.node import RegionalServer
from server.splice import read_register

EU = ("127.0.0.1", 5060)
DOMAIN = "eu.gamesdk.test"

_VIAS = [
    "SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-1-7;rport",
    "SIP/2.0/UDP 10.0.0.8:5099;branch=z9hG4bKab.c;rport",
    "SIP/2.0/UDP 10.0.0.8;branch=z9hG4bK77",
    "SIP/2.0/UDP player.example.com:5062;branch=z9hG4bKx",
    "SIP/2.0/UDP 10.0.0.8:65535;branch=z9hG4bK1;rport",
    "SIP/2.0/UDP 10.0.0.8:65536;branch=z9hG4bK1;rport",
    "SIP/2.0/UDP 10.0.0.8:0;branch=z9hG4bK1",
    "SIP/2.0/UDP 256.0.0.8;branch=z9hG4bK1",
    "SIP/2.0/UDP 1.2.3;branch=z9hG4bK1",
    "SIP/2.0/TCP 10.0.0.8;branch=z9hG4bK1",
    "SIP/2.0/UDP 10.0.0.8;branch=old1",
    "SIP/2.0/UDP 10.0.0.8;branch=z9hG4bK1;rport=5",
    "SIP/2.0/UDP 10.0.0.8;rport;branch=z9hG4bK1",
    "SIP/2.0/UDP 10.0.0.8;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK2",
    "SIP/2.0/UDP [::1]:5099;branch=z9hG4bK1",
    "SIP/2.0/UDP 10.0.0.8;branch=",
    "SIP/2.0/UDP bad_host;branch=z9hG4bK1",
    "SIP/2.0/UDP -x.com;branch=z9hG4bK1",
]
_USERS = ["alice", "bob", "nobody", "a.b-c_d~e", "", "al%20ice", "al ice"]
_HOSTS = [DOMAIN, "127.0.0.1", "127.0.0.1:5060", "127.0.0.1:5070", "other.example", "EU.GAMESDK.TEST", "10.1.2.3",
          "999.0.0.1", "eu.gamesdk.test."]
_CALL_IDS = ["42-1@127.0.0.1", "abc", "a@b@c", "x y", "", "~!%*_+.-", "a\tb", "(weird)"]
_CSEQS = ["1 REGISTER", "2 REGISTER", "1 INVITE", "123456789 REGISTER", "2147483648 REGISTER", "x REGISTER",
          "1  REGISTER", "01 REGISTER", "1 register"]
_CONTACTS = ["<sip:{u}@127.0.0.1:5099;transport=udp>", "<sip:{u}@10.0.0.8>", "<sip:{u}@10.0.0.8>;expires=60",
             "<sip:{u}@10.0.0.8>;expires=x", "*", "<tel:+123>", "<sip:{u}@10.0.0.8;ob>;reg-id=1",
             "<sip:{u}@10.0.0.8:99999>", "sip:{u}@10.0.0.8", "<sip:{u}@10.0.0.8;transport=sctp>"]
_NUMBERS = ["0", "70", "255", "256", "3600", "4294967296", "x", "", "007", "999999999"]
_EXTRA = ["Authorization: Digest username=\"alice\", realm=\"eu.gamesdk.test\"", "Require: path", "Require: gruu",
          "User-Agent: sipp", "Supported: path", "Route: <sip:10.0.0.1;lr>", "X-Thing: 1", "Proxy-Require: foo",
          "Path: <sip:10.0.0.2;lr>", "Date: Sat, 13 Nov 2010 23:29:00 GMT"]

_NAMES = {
    "Via": ["Via", "v", "VIA", "via", "Via "],
    "Max-Forwards": ["Max-Forwards", "max-forwards"],
    "From": ["From", "f", "from"],
    "To": ["To", "t", "TO"],
    "Call-ID": ["Call-ID", "i", "Call-Id", "call-id"],
    "CSeq": ["CSeq", "cseq", "CSEQ"],
    "Contact": ["Contact", "m", "contact"],
    "Expires": ["Expires", "expires"],
    "Content-Length": ["Content-Length", "l", "content-length"],
}


def varied_register(draw: st.DrawFn, varied: set[str], hosts: list[str], more_ruris: list[str], *,
                    leg: int) -> tuple[str, str, dict[str, str], str]:
    """A login's REGISTER (``leg`` 1: the first, 2: the one with credentials) with the parts named in ``varied``
    drawn from their choices (``hosts`` for the host, ``more_ruris`` beside the usual Request-URIs): its user, its
    Request-URI, its header values in order and its body (the login path's test uses it too)."""
    def pick(part: str, plain: str, choices: list[str]) -> str:
        return draw(st.sampled_from(choices)) if part in varied else plain

    user = pick("user", "alice", _USERS)
    host = pick("host", DOMAIN, hosts)
    to_user = pick("to_user", user, [user, "alice", "bob", ""])
    ruri = pick("ruri", f"sip:{DOMAIN}", [f"sip:{DOMAIN}", "sip:127.0.0.1:5060", f"sip:{user}@{DOMAIN}",
                                          f"sip:{host}", "tel:+123", f"sips:{DOMAIN}", f"sip:{DOMAIN};transport=udp",
                                          *more_ruris, f"sip:{DOMAIN}:5060"])
    n = draw(st.integers(1, 10**6))
    values = {
        "Via": pick("Via", f"SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-{leg}-{n};rport", _VIAS),
        "Max-Forwards": pick("Max-Forwards", "70", _NUMBERS),
        "From": pick("From", f"<sip:{user}@{host}>;tag=1reg{n}", [
            f"<sip:{user}@{host}>;tag=1reg7", f"<sip:{user}@{host}>", f"\"A\" <sip:{user}@{host}>;tag=x",
            f"<sip:{user}@{host}>;tag=a;tag=b", f"<sip:{user}@{host}>;tag=", f"<sip:{user}@{host}>;tag=a b"]),
        "To": pick("To", f"<sip:{to_user}@{host}>", [
            f"<sip:{to_user}@{host}>;tag=9", f"sip:{to_user}@{host}", f"<sip:{to_user}@{host};user=phone>",
            f"<sips:{to_user}@{host}>", f"<sip:{to_user}@{host}> "]),
        "Call-ID": pick("Call-ID", f"{n}-1@127.0.0.1", _CALL_IDS),
        "CSeq": pick("CSeq", f"{leg} REGISTER", _CSEQS),
        "Contact": pick("Contact", _CONTACTS[0], _CONTACTS).format(u=user or "x"),
        "Expires": pick("Expires", "3600", _NUMBERS),
        "Content-Length": pick("Content-Length", "0", ["00", "1", "x", ""]),
    }
    body = draw(st.sampled_from(["x", "\r\n", "\r\n\r\n"])) if "body" in varied else ""
    return user, ruri, values, body


@st.composite
def registers(draw: st.DrawFn) -> bytes:
    """A REGISTER of the plain shape with a few of its parts (at most three) varied."""
    varied = draw(st.sets(st.sampled_from(["user", "host", "to_user", "ruri", "Via", "Max-Forwards", "From", "To",
                                           "Call-ID", "CSeq", "Contact", "Expires", "Content-Length", "name", "sep",
                                           "case", "twice", "drop", "extra", "body", "end", "order", "utf8"]),
                          max_size=3))

    _, ruri, values, body = varied_register(draw, varied, _HOSTS, ["sip:127.0.0.1:5070"], leg=1)
    return varied_head(draw, varied, f"REGISTER {ruri} SIP/2.0", values, _NAMES, _EXTRA, body).encode()


def _nodes(tmp: Path) -> tuple[RegionalServer, RegionalServer]:
    pair = []
    for on in (True, False):
        folder = tmp / str(on)
        folder.mkdir(exist_ok=True)
        node = make_node("eu", 5060, 5062, folder, {"alice": "apw", "bob": "bpw", "a.b-c_d~e": "pw"})
        node.challenge_path = on
        pair.append(node)
    return pair[0], pair[1]


def _counts(node: RegionalServer) -> tuple[object, ...]:
    registrar = node.registrar.stats
    return (node.stats.requests, node.stats.malformed, node.stats.dropped, dict(node.stats.by_method),
            registrar.registers, registrar.challenges, dict(registrar.by_status), node.login.challenges_sent)


_SOURCES = itertools.count(1)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=registers(), via_host=st.booleans())
def test_the_challenge_path_answers_every_register_as_the_full_path(tmp_path: Path, data: bytes,
                                                                    via_host: bool) -> None:
    fast, full = _nodes(tmp_path)
    n = next(_SOURCES)
    source = ("10.0.0.8", 5099) if via_host else (f"192.0.{n % 250}.{n // 250 % 250 + 1}", 5000 + n % 1000)
    for now in (10.0, 10.5):  # and again: a retransmission gets the same
        assert fast.handle_datagram(data, source, now) == full.handle_datagram(data, source, now)
    assert _counts(fast) == _counts(full)


def _plain(user: str = "alice", n: int = 1) -> bytes:
    return (f"REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-1-{n};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=1reg{n}\r\nTo: <sip:{user}@{DOMAIN}>\r\n"
            f"Call-ID: {n}-1@127.0.0.1\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@127.0.0.1:5099;transport=udp>\r\n"
            "Expires: 3600\r\nContent-Length: 0\r\n\r\n").encode()


def test_a_logins_first_register_takes_the_challenge_path(tmp_path: Path) -> None:
    fast, full = _nodes(tmp_path)
    for n in range(3):  # the lines the reader keeps come back
        data = _plain(n=n)
        plain = read_register(data)
        assert plain is not None and plain.via.branch == f"z9hG4bK-1-{n}" and plain.to_uri.user == "alice"
        assert [k for k, _, _ in plain.items] == ["via", "max-forwards", "from", "to", "call-id", "cseq", "contact",
                                                  "expires", "content-length"]
        got = fast.handle_datagram(data, ("127.0.0.1", 5099), 1.0)
        assert got == full.handle_datagram(data, ("127.0.0.1", 5099), 1.0)
        assert got[0][0].startswith(b"SIP/2.0 401 Unauthorized\r\n")
    assert _counts(fast) == _counts(full)
    # What the reader leaves to the full path.
    data = _plain()
    assert read_register(data.replace(b"Expires: 3600", b"Expires: 3600\r\nAuthorization: Digest x")) is None
    assert read_register(data.replace(b"Call-ID:", b"i:")) is None
    assert read_register(data.replace(b"CSeq: 1", b"CSeq:  1")) is None
    assert read_register(data.replace(b"To:", b"To: <sip:a@b>\r\nTo:")) is None
    assert read_register(data + b"x") is None
    assert read_register(data.replace(b"Max-Forwards: 70", b"Max-Forwards: 256")) is None


def test_a_draining_node_and_a_retransmission_of_an_answered_register_take_the_full_path(tmp_path: Path) -> None:
    fast, full = _nodes(tmp_path)
    for node in (fast, full):
        node.drain(5, quiet_udp=False)
    data = _plain()
    assert fast.handle_datagram(data, ("127.0.0.1", 5099), 1.0) == full.handle_datagram(data, ("127.0.0.1", 5099),
                                                                                          1.0)
    assert _counts(fast) == _counts(full)
