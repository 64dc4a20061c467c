"""Header reads (issue 16 made them cheaper) answer as the plain definitions do: names case-insensitive with
compact forms, parameters matched case-insensitively, the first match wins."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gamesdk.sip._grammar import find_param
from gamesdk.sip.headers import Via
from gamesdk.sip.message import COMPACT_FORMS, Headers
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
