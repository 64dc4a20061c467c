"""The login path (issue 16): a REGISTER with credentials in the plain shape is read from its bytes (server/splice.py's
read_login, RegionalServer._read_plainly) into the Request the full parse and check make of it, without
parsing every header. Each test logs in to a node with the path and to one without (``challenge_path = False``:
every REGISTER parsed and validated in full) and expects the very same datagrams out, counts and bindings.
Hypothesis varies the credentialed REGISTER over shapes inside and just outside the plain one (names, separators,
values, extra and repeated lines, credentials, bodies, line ends), so a request the reader takes that the full path
would refuse, or answer otherwise, shows up as a difference."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from head_variants import varied_head
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_kit import make_node
from test_challenge_path import _NAMES, varied_register

from gamesdk.sip.digest import compute_ha1, compute_response
from gamesdk.sip.parser import parse_message_untrusted, validate_untrusted
from server.node import RegionalServer
from server.splice import read_login

DOMAIN = "eu.gamesdk.test"
PASSWORDS = {"alice": "apw", "bob": "bpw", "a.b-c_d~e": "pw"}
_NONCE = re.compile(rb'nonce="([^"]+)"')

_HOSTS = [DOMAIN, "127.0.0.1", "127.0.0.1:5060", "other.example", "EU.GAMESDK.TEST", "10.1.2.3"]
_EXTRA = ["Require: path", "Require: gruu", "User-Agent: sipp", "Supported: path", "Route: <sip:10.0.0.1;lr>",
          "X-Thing: 1", "Proxy-Require: foo", "Path: <sip:10.0.0.2;lr>", "Date: Sat, 13 Nov 2010 23:29:00 GMT",
          "Authorization: Digest username=\"bob\", realm=\"x\"", "Proxy-Authorization: Digest username=\"a\"",
          "Contact: <sip:alice@10.0.0.9>"]
_NAMES_LOGIN = {**_NAMES, "Authorization": ["Authorization", "authorization", "AUTHORIZATION",
                                            "Proxy-Authorization"]}


def _credentials(draw: st.DrawFn, varied: set[str], user: str, realm: str, nonce: str, uri: str,
                 method: str = "REGISTER") -> str:
    password = PASSWORDS.get(user, "x")
    kind = draw(st.sampled_from(["right", "password", "realm", "uri", "nonce", "nc", "qop", "algorithm", "user",
                                 "garbled", "empty", "quote", "basic", "spaced"])) if "auth" in varied else "right"
    name = {"user": "bob" if user != "bob" else "alice"}.get(kind, user)
    if kind == "password":
        password += "x"
    digest_uri = {"uri": f"sip:{DOMAIN}:5060" if uri != f"sip:{DOMAIN}:5060" else f"sip:{DOMAIN}"}.get(kind, uri)
    used_nonce = nonce[:-2] + "00" if kind == "nonce" else nonce
    nc = "00000000" if kind == "nc" else "00000001"
    response = compute_response(ha1=compute_ha1(name, realm, password), nonce=used_nonce, method=method,
                                uri=digest_uri, cnonce="6b8b4567", nc=int(nc, 16))
    value = (f'Digest username="{name}",realm="{"other" if kind == "realm" else realm}",cnonce="6b8b4567",'
             f'nc={nc},qop={"auth-int" if kind == "qop" else "auth"},uri="{digest_uri}",nonce="{used_nonce}",'
             f'response="{response}",algorithm={"SHA-512" if kind == "algorithm" else "MD5"}')
    if kind == "garbled":
        value = value.replace(",", " ", 2)
    elif kind == "empty":
        value = "Digest"
    elif kind == "quote":
        value = value.replace('"', "", 1)
    elif kind == "basic":
        value = "Basic YWxpY2U6YXB3"
    elif kind == "spaced":  # as the SDK and most phones write them
        value = value.replace(",", ", ")
    return value


@st.composite
def logins(draw: st.DrawFn) -> tuple[bytes, str, str, str]:
    """A REGISTER with credentials of the plain shape with a few of its parts (at most three) varied: its text
    with a placeholder for the credentials' value, its user, its Request-URI, and "auth" when the credentials are
    to be varied too."""
    varied = draw(st.sets(st.sampled_from(["user", "host", "to_user", "ruri", "Via", "Max-Forwards", "From", "To",
                                           "Call-ID", "CSeq", "Contact", "Expires", "Content-Length", "name", "sep",
                                           "case", "twice", "drop", "extra", "body", "end", "order", "auth"]),
                          max_size=3))

    user, ruri, values, body = varied_register(draw, varied, _HOSTS, [], leg=2)
    length = values.pop("Content-Length")
    values["Authorization"] = "\x00credentials"
    values["Content-Length"] = length
    text = varied_head(draw, varied, f"REGISTER {ruri} SIP/2.0", values, _NAMES_LOGIN, _EXTRA, body)
    return text.encode(), user, ruri, "auth" if "auth" in varied else ""  # the credentials: once the nonce is known


def _first(user: str, n: int) -> bytes:
    return (f"REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-1-{n};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=1reg{n}\r\nTo: <sip:{user}@{DOMAIN}>\r\n"
            f"Call-ID: {n}-1@127.0.0.1\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@127.0.0.1:5099;transport=udp>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
            ).encode()


def _nodes(tmp: Path) -> tuple[RegionalServer, RegionalServer]:
    pair = []
    for on in (True, False):
        folder = tmp / str(on)
        folder.mkdir(exist_ok=True)
        node = make_node("eu", 5060, 5062, folder, PASSWORDS, digest_algorithms=("MD5", "SHA-256"))
        node.challenge_path = on
        pair.append(node)
    return pair[0], pair[1]


def _state(node: RegionalServer) -> tuple[object, ...]:
    registrar = node.registrar.stats
    return (node.stats.requests, node.stats.malformed, node.stats.dropped, dict(node.stats.by_method),
            registrar.registers, registrar.challenges, registrar.auth_failures, registrar.ok,
            dict(registrar.by_status), node.login.challenges_sent, node.login.failures,
            sorted(node.location.bindings(), key=repr))


_SOURCES = itertools.count(1)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=logins(), data=st.data(), via_host=st.booleans())
def test_the_login_path_answers_every_register_as_the_full_path(tmp_path: Path, drawn: tuple[bytes, str, str, str],
                                                                data: st.DataObject, via_host: bool) -> None:
    text, user, ruri, kind = drawn
    fast, full = _nodes(tmp_path)
    n = next(_SOURCES)
    source = ("10.0.0.8", 5099) if via_host else (f"192.0.{n % 250}.{n // 250 % 250 + 1}", 5000 + n % 1000)
    first = _first(user if user in PASSWORDS else "alice", n)
    challenge = fast.handle_datagram(first, source, 10.0)
    assert challenge == full.handle_datagram(first, source, 10.0)
    match = _NONCE.search(challenge[0][0])
    assert match is not None
    credentials = _credentials(data.draw, {kind}, user, fast.login.realm, match.group(1).decode(), ruri)
    second = re.sub(rb"\x00credentials", credentials.encode(), text, flags=re.IGNORECASE)
    for now in (10.1, 10.6):  # and again: a retransmission gets the same
        assert fast.handle_datagram(second, source, now) == full.handle_datagram(second, source, now)
    assert _state(fast) == _state(full)


def _plain(user: str, n: int, nonce: str, realm: str, cseq: int = 2) -> bytes:
    response = compute_response(ha1=compute_ha1(user, realm, PASSWORDS[user]), nonce=nonce, method="REGISTER",
                                uri=f"sip:{DOMAIN}", cnonce="6b8b4567", nc=1)
    auth = (f'Digest username="{user}",realm="{realm}",cnonce="6b8b4567",nc=00000001,qop=auth,'
            f'uri="sip:{DOMAIN}",nonce="{nonce}",response="{response}",algorithm=MD5')
    return _first(user, n).replace(b"CSeq: 1 REGISTER", f"CSeq: {cseq} REGISTER".encode()).replace(
        b"Content-Length: 0", f"Authorization: {auth}\r\nContent-Length: 0".encode())


def test_a_logins_second_register_is_read_as_the_full_parse_makes_it(tmp_path: Path) -> None:
    fast, full = _nodes(tmp_path)
    source = ("127.0.0.1", 5099)
    for n in range(3):  # the lines the reader keeps come back
        challenge = fast.handle_datagram(_first("alice", n), source, 1.0)
        assert challenge == full.handle_datagram(_first("alice", n), source, 1.0)
        match = _NONCE.search(challenge[0][0])
        assert match is not None
        data = _plain("alice", n, match.group(1).decode(), fast.login.realm)
        request = read_login(data)
        parsed = parse_message_untrusted(data, lazy=True)
        validate_untrusted(parsed)
        assert request is not None and request == parsed
        got_cache, want_cache = request.headers._cache, dict(parsed.headers._cache)
        del want_cache["from"]  # left to its accessor, which parses it as the parser does
        assert got_cache == want_cache
        assert request.request_uri == parsed.request_uri and request.from_ == parsed.from_
        got = fast.handle_datagram(data, source, 1.0)
        assert got == full.handle_datagram(data, source, 1.0)
        assert got[0][0].startswith(b"SIP/2.0 200 OK\r\n")
    assert _state(fast) == _state(full)
    # What the reader leaves to the full path.
    data = _plain("alice", 9, "abc", fast.login.realm)
    assert read_login(data) is not None
    assert read_login(data.replace(b"Authorization: ", b"Authorization:  ")) is None
    assert read_login(data.replace(b"Authorization: ", b"authorization: ")) is None
    assert read_login(data.replace(b"Authorization: ", b"Proxy-Authorization: ")) is None
    assert read_login(data.replace(b"Expires: 3600", b"Authorization: Digest x")) is None
    assert read_login(data.replace(b"Call-ID:", b"i:")) is None
    assert read_login(data.replace(b"Max-Forwards: 70", b"Max-Forwards: 256")) is None
    assert read_login(data + b"x") is None
    assert read_login(_first("alice", 1)) is None


def test_a_registrar_result_is_equal_hashable_and_shown_as_the_dataclass_was() -> None:
    from server.registrar import RegistrarResult

    one = RegistrarResult(200, b"x", user="alice")
    assert one == RegistrarResult(200, b"x", 0.0, (), (), "alice", False) and hash(one) == hash(
        RegistrarResult(200, b"x", user="alice"))
    assert one != RegistrarResult(200, b"x", user="bob") and one != (200, b"x")
    assert repr(one) == ("RegistrarResult(status=200, data=b'x', delay_s=0.0, added=(), removed=(), user='alice', "
                         "challenge=False)")


#: Text of the pieces the shapes are made of (and of some they refuse).
_SHAPE_TEXT = st.lists(st.sampled_from(list("<>;=:@.-_~ \t\"!%*+`'abzAZ09\x7f\x01") + [
    "sip:", "tag=", ">;tag=", DOMAIN]), max_size=12).map("".join)


@settings(max_examples=500, deadline=None)
@given(user=_SHAPE_TEXT, host=st.sampled_from([DOMAIN, "127.0.0.1", "1.2.3", "x_y", "a.b:5060", "a:0"]),
       tag=_SHAPE_TEXT, raw=_SHAPE_TEXT)
def test_the_readers_checks_take_what_their_expressions_take(user: str, host: str, tag: str, raw: str) -> None:
    from server import splice

    tagged = re.compile(rf"<{splice._PLAYER_URI}>;tag={splice.TOKEN}")
    # (the To's and the Contact's expressions as the shape had them before their readers)
    to = re.compile(rf"<({splice._PLAYER_URI})>")
    contact = re.compile(rf"<{splice._PLAYER_URI}(?:;transport=(?:udp|tcp|tls|UDP|TCP|TLS))?>(?:;expires=[0-9]{{1,9}})?")
    for value in (f"<sip:{user}@{host}>;tag={tag}", f"<sip:alice@{host}>;tag={tag}", raw, f"<{raw}>;tag={tag}"):
        for _ in range(2):  # and again, from the memo
            assert (splice._tagged_of(value) is not None) == (tagged.fullmatch(value) is not None), value
    for value in (f"<sip:{user}@{host}>", f"<sip:alice@{host}>", f"<sip:{user}@{host}{tag}>", f"<{raw}>", raw,
                  f"<sip:{user}@{host};transport={tag}>;expires={raw}", f"<sip:alice@{host};transport=udp>{raw}",
                  f"<sip:{user}@{host};transport=tls>;expires=3600", f"<sip:{user}@{host}>;expires=0{tag}"):
        for _ in range(2):
            assert (splice._register_to_of(value) is not None) == (to.fullmatch(value) is not None), value
            assert (splice._contact_of(value) is not None) == (contact.fullmatch(value) is not None), value
        if value.isascii():
            assert (splice._printable(value) is not None) == (splice._TEXT.fullmatch(value) is not None), value


def test_a_binding_is_made_as_the_dataclass_made_it() -> None:
    import dataclasses

    from server.location import Binding

    one = Binding("sip:a@x", "sip:a@1.2.3.4", 10.0, ("1.2.3.4", 5), None, "c", 1, 2.0)
    same = Binding(aor="sip:a@x", contact="sip:a@1.2.3.4", expires_at=10.0, source=("1.2.3.4", 5),
                   access_network=None, call_id="c", cseq=1, registered_at=2.0, target=None, path=())
    assert one == same and hash(one) == hash(same) and repr(one) == repr(same)
    assert [f.name for f in dataclasses.fields(Binding)] == ["aor", "contact", "expires_at", "source",
                                                              "access_network", "call_id", "cseq", "registered_at",
                                                              "target", "path"]
    moved = dataclasses.replace(one, access_network="lan", path=("<sip:p;lr>",))
    assert (moved.access_network, moved.path, moved.target, moved.aor) == ("lan", ("<sip:p;lr>",), None, "sip:a@x")
    assert repr(one).startswith("Binding(aor='sip:a@x', contact='sip:a@1.2.3.4', expires_at=10.0,")
