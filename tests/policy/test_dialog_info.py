"""RFC 4235 dialog-info: round trips, the RFC example, and hostile or broken XML -> DialogInfoError only."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.dialog_info import (
    MAX_BODY_BYTES,
    DialogEntry,
    DialogInfo,
    DialogInfoError,
    DialogState,
    Direction,
    format_dialog_info,
    parse_dialog_info_untrusted,
)

# RFC 4235 section 5 example, as published (whitespace and all), plus a foreign extension element.
RFC_EXAMPLE = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"
             version="0" state="full" entity="sip:alice@example.com">
  <dialog id="as7d900as8" call-id="a84b4c76e66710" local-tag="1928301774" direction="initiator">
    <state>early</state>
    <x:mood xmlns:x="urn:example:mood">eager</x:mood>
  </dialog>
</dialog-info>
"""


def test_rfc_example() -> None:
    info = parse_dialog_info_untrusted(RFC_EXAMPLE)
    assert (info.entity, info.version, info.full) == ("sip:alice@example.com", 0, True)
    [d] = info.dialogs
    assert (d.id, d.call_id, d.local_tag, d.remote_tag) == ("as7d900as8", "a84b4c76e66710", "1928301774", None)
    assert d.state is DialogState.EARLY and d.direction is Direction.INITIATOR


def test_round_trip_terminated_with_cause() -> None:
    info = DialogInfo(
        entity="sip:alice@eu.example",
        version=3,
        dialogs=(
            DialogEntry(
                id="d1", state=DialogState.TERMINATED, call_id="c<1>@h", local_tag="a&b", remote_tag='q"t',
                direction=Direction.RECIPIENT, event="remote-bye", code=580,
                local_identity="sip:alice@eu.example", remote_identity="sip:bob@na.example",
            ),
        ),
    )
    body = format_dialog_info(info)
    assert b'code="580"' in body and b'event="remote-bye"' in body
    assert parse_dialog_info_untrusted(body) == info
    assert parse_dialog_info_untrusted(body.decode()) == info


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="&lol9;"/>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="sip:a@b">
<dialog id="x"><state>&xxe;</state></dialog></dialog-info>
"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd"> %remote;]>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="sip:a@b"/>
"""

NS = 'xmlns="urn:ietf:params:xml:ns:dialog-info"'


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (BILLION_LAUGHS, "DOCTYPE is not allowed"),
        (EXTERNAL_ENTITY, "DOCTYPE is not allowed"),
        (PARAMETER_ENTITY, "DOCTYPE is not allowed"),
        (b"<dialog-info " + NS.encode() + b' version="0" state="full" entity="x">&undefined;</dialog-info>',
         "undefined entity"),
        (b"<dialog-info " + b"x" * (MAX_BODY_BYTES + 1), "exceeds"),
        (b"", "empty body"),
        (b"   ", "empty body"),
        (b"<dialog-info", "not well-formed"),
        (b"\xff\xfe\x00<", "not well-formed"),
        (b'<dialog-info version="0" state="full" entity="x"/>', "root element"),
        (f'<dialog-info {NS} version="0" state="full"/>'.encode(), "entity"),
        (f'<dialog-info {NS} version="-1" state="full" entity="x"/>'.encode(), "version"),
        (f'<dialog-info {NS} version="0" state="some" entity="x"/>'.encode(), "full or partial"),
        (f'<dialog-info {NS} version="0" state="full" entity="x"><dialog><state>early</state></dialog>'
         f"</dialog-info>".encode(), "id attribute"),
        (f'<dialog-info {NS} version="0" state="full" entity="x"><dialog id="1"/></dialog-info>'.encode(),
         "no <state>"),
        (f'<dialog-info {NS} version="0" state="full" entity="x"><dialog id="1"><state>happy</state></dialog>'
         f"</dialog-info>".encode(), "unknown state"),
        (f'<dialog-info {NS} version="0" state="full" entity="x"><dialog id="1"><state code="9999">terminated'
         f"</state></dialog></dialog-info>".encode(), "SIP status"),
        (f'<dialog-info {NS} version="0" state="full" entity="x"><dialog id="1" direction="sideways">'
         f"<state>early</state></dialog></dialog-info>".encode(), "initiator or recipient"),
        (f'<dialog-info {NS} version="0" state="full" entity="x">'.encode() + b"<a>" * 20 + b"</a>" * 20
         + b"</dialog-info>", "nested deeper"),
        (f'<dialog-info {NS} version="0" state="full" entity="x">'.encode() + b"<a/>" * 600 + b"</dialog-info>",
         "elements"),
    ],
)
def test_hostile_and_broken_bodies(body: bytes, words: str) -> None:
    with pytest.raises(DialogInfoError) as info:
        parse_dialog_info_untrusted(body)
    assert words in info.value.message
    assert info.value.status_hint == 400


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_parse_or_raise_dialog_info_error(data: bytes) -> None:
    try:
        parse_dialog_info_untrusted(data)
    except DialogInfoError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30),
    st.integers(min_value=0, max_value=2**31),
    st.sampled_from(list(DialogState)),
    st.one_of(st.none(), st.integers(min_value=100, max_value=699)),
)
def test_format_parse_round_trip(text: str, version: int, state: DialogState, code: int | None) -> None:
    info = DialogInfo(
        entity="sip:" + text.strip() or "sip:x",
        version=version,
        dialogs=(DialogEntry(id="d" + text, state=state, call_id=text, local_tag=text, remote_tag="r",
                             code=code, event="local-bye"),),
    )
    parsed = parse_dialog_info_untrusted(format_dialog_info(info))
    # XML normalises attribute whitespace and strips text; compare what survives by design.
    assert parsed.version == version and parsed.dialogs[0].state is state and parsed.dialogs[0].code == code
