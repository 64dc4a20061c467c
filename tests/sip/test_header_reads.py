"""Header reads (issue 16 made them cheaper) answer as the plain definitions do: names case-insensitive with
compact forms, parameters matched case-insensitively, the first match wins."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gamesdk.sip._grammar import find_param
from gamesdk.sip.headers import Via
from gamesdk.sip.message import COMPACT_FORMS, REASON_PHRASES, Headers, Request, response_for
from gamesdk.sip.parser import parse_message_untrusted
from gamesdk.sip.uri import NameAddr

_NAMES = ["Via", "v", "VIA", "To", "t", "Route", "route", "Contact", "m", "X-Game", "x-game", "Call-ID", "i"]


def _key(name: str) -> str:
    lower = name.lower()
    return COMPACT_FORMS.get(lower, lower)


@settings(max_examples=200, deadline=None)
@given(fields=st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(["a", "b, c", ""])), max_size=8),
       asked=st.sampled_from(_NAMES + ["Nothing"]))
def test_reads_match_their_definition(fields: list[tuple[str, str]], asked: str) -> None:
    headers = Headers(fields)
    same = [value for name, value in fields if _key(name) == _key(asked)]
    assert headers.get(asked) == (same[0] if same else None)
    assert headers.get_all(asked) == same
    assert (asked in headers) == bool(same)
    assert headers.count(asked) == len(same)


def test_find_param_takes_the_first_match_in_any_case() -> None:
    params = (("Tag", "first"), ("tag", "second"), ("rport", None))
    assert find_param(params, "tag") == "first"
    assert find_param(params, "TAG") == "first"
    assert find_param(params, "rport") == ""
    assert find_param(params, "branch") is None
    assert find_param((), "tag") is None


def test_typed_params_read_in_any_case() -> None:
    via = Via.parse("SIP/2.0/UDP h:5060;BRANCH=z9hG4bKx;branch=z9hG4bKy")
    assert via.branch == "z9hG4bKx"
    assert NameAddr.parse("<sip:a@b>;TAG=1;tag=2").tag == "1"


def _reference_response(request: Request, status: int, to_tag: str | None, extra: list[tuple[str, str]]) -> bytes:
    """response_for + to_bytes by their definition (RFC 3261 section 8.2.6), written out plainly."""
    lines = [f"SIP/2.0 {status} {REASON_PHRASES[status]}"]
    for name, value in request.headers:
        key = _key(name)
        if key in ("via", "from", "call-id", "cseq"):
            lines.append(f"{name}: {value}")
        elif key == "to":
            if to_tag is not None and status != 100 and "tag=" not in value.lower():
                value += f";tag={to_tag}"
            lines.append(f"{name}: {value}")
    lines += [f"{name}: {value}" for name, value in extra]
    return ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()


@pytest.mark.parametrize("to", ["<sip:bob@b>", "<sip:bob@b>;TAG=x", "<sip:bob@b>;tag=y"])
@pytest.mark.parametrize("status", [100, 180, 407])
@pytest.mark.parametrize("to_tag", [None, "z9"])
def test_response_for_builds_what_the_rfc_says(to: str, status: int, to_tag: str | None) -> None:
    data = (
        "INVITE sip:bob@b SIP/2.0\r\nv: SIP/2.0/UDP h:5060;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP g;branch=z9hG4bK0\r\n"
        f"Max-Forwards: 70\r\nf: <sip:a@b>;tag=1\r\nt: {to}\r\ni: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:a@h>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    request = parse_message_untrusted(data, lazy=True)
    assert isinstance(request, Request)
    extra = [("Proxy-Authenticate", 'Digest realm="r"'), ("Retry-After", "5")]
    response = response_for(request, status, to_tag=to_tag, extra=extra)
    assert response.to_bytes() == _reference_response(request, status, to_tag, extra)
    assert response.headers.get("Retry-After") == "5" and response.status == status
    response.headers.add("X", "1")  # the response's fields are its own: the request is unchanged
    assert "x" not in request.headers and request.to_bytes() == data


def test_parsed_values_are_the_tuples_their_constructors_make() -> None:
    # The parsers make Via, CSeq, SipUri and NameAddr with tuple's own constructor (every field given): the same
    # value, of the same class, with the same fields as the class's constructor gives.
    from gamesdk.sip.headers import CSeq, Via
    from gamesdk.sip.uri import NameAddr, SipUri

    via = Via.parse("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;rport")
    assert type(via) is Via and via == Via("UDP", "10.0.0.1", 5060, (("branch", "z9hG4bK-1"), ("rport", None)))
    assert via.protocol == "SIP/2.0" and via._asdict()["protocol"] == "SIP/2.0"
    cseq = CSeq.parse("7 REGISTER")
    assert type(cseq) is CSeq and cseq == CSeq(7, "REGISTER") and cseq.method == "REGISTER"
    uri = SipUri.parse("sip:alice@example.com:5070;transport=udp")
    assert type(uri) is SipUri and uri == SipUri("sip", "example.com", "alice", None, 5070, (("transport", "udp"),))
    assert uri.headers is None and uri.opaque is None and uri.is_sip
    name = NameAddr.parse('"Alice" <sip:alice@example.com>;tag=1')
    assert type(name) is NameAddr and type(name.uri) is SipUri
    assert name == NameAddr(SipUri("sip", "example.com", "alice"), "Alice", (("tag", "1"),))
    assert name.uri._replace(port=1).port == 1 and str(name) == 'Alice <sip:alice@example.com>;tag=1'
