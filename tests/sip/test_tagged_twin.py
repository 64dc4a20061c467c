"""The parser's twin for tagged From and To values (``parser._tagged_name_addr``) against ``NameAddr.parse``.

The twin reads ``<prefix>;tag=<tag>`` from the prefix's name-addr parsed before and the tag; whatever it returns
must be what the full parse returns for the whole value, on its first meeting of the prefix and on later ones,
and it must return nothing where the full parse refuses the value.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip import parser
from gamesdk.sip.parser import checked_value
from gamesdk.sip.uri import NameAddr

_PIECES = ["<", ">", '"', "\\", ";", "=", "%", "%41", "@", ":", " ", "\t", ",", "?", "[", "]", "tag=", ">;tag=",
           "sip:", "SIP:", "sips:", "tel:", "alice", "Bob", "bob smith", "1.2.3.4", "host.example", ":5060",
           ":99999", ";transport=udp", ";lr", "[::1]", "~", "`", "'", "!", "*", "+", "x" * 40, ""]


def _value(parts: list[str]) -> str:
    return "".join(parts)


_display = st.sampled_from(["", '"alice" ', "alice ", "Alice Smith ", '"a>;tag=b" ', '"a<b" ', '"a\\"b" ', " ",
                            '"" ', "a%41 ", "<", '"x'])
_uri = st.sampled_from(["sip:alice@eu.example", "sip:alice@1.2.3.4:5070", "SIP:Bob@host", "sips:a@b;lr",
                        "sip:a%41@b", "sip:a@[::1]:5060", "tel:+123", "sip:a@b:99999", "sip:a@b?x=y", "sip:",
                        "sip:a@b;transport=udp", " sip:a@b", "sip:a@b ", "sip:a@b>x"])
_tag = st.sampled_from(["1", "abc", "a.b-c", "x%41", "a`'!*_+~", "a b", "a;b", "a,b", "", "a=b", '"q"', "A" * 30])
_shaped = st.builds(lambda d, u, t, tail: f"{d}<{u}>;tag={t}{tail}", _display, _uri, _tag,
                    st.sampled_from(["", ";x=1", " ", ">", ";tag=2"]))
_mutated = st.lists(st.sampled_from(_PIECES), max_size=12).map(_value)


def _full(value: str) -> NameAddr | None:
    try:
        return NameAddr.parse(value)
    except RemoteProtocolError:
        return None


@settings(max_examples=600, deadline=None)
@given(st.one_of(_shaped, _mutated, st.text(max_size=40)))
@example('"alice" <sip:alice@eu.example>;tag=1')
@example("<sip:alice@1.2.3.4:5070>;tag=a.b-c")
@example('"a>;tag=b" <sip:a@b>;tag=c')
@example("<sip:a%41@b>;tag=1")
@example("<sip:a@b>;tag=x%41")
@example("<sip:a@b>;tag=1;x=2")
@example("sip:a@b>;tag=1")
def test_twin_gives_what_the_full_parse_gives(value: str) -> None:
    full = _full(value)
    for _ in range(2):  # the prefix unknown, then remembered
        twin = parser._tagged_name_addr(value)
        if twin is not None:
            assert full is not None
            assert twin == full
            assert type(twin) is NameAddr
            assert twin.tag == full.tag


def test_the_checked_from_is_the_full_parse() -> None:
    """The memoized check of a From takes the twin: the same value as the parse, for new tags of one prefix."""
    parser.clear_memo()
    for tag in ("1", "2", "abc"):
        value = f'"alice" <sip:alice@eu.example:5070>;tag={tag}'
        assert checked_value("from", value) == NameAddr.parse(value)
    assert parser._UNTAGGED
    parser.clear_memo()
    assert not parser._UNTAGGED
