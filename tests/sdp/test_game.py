"""The gsdk SDP extension: typed model <-> SDP, validation naming the line, canonical transcript bytes."""

from __future__ import annotations

import dataclasses

import pytest

from gamesdk.errors import LocalProtocolError, SdpError
from gamesdk.qos import GameFormat, QosParams, SessionTerms
from gamesdk.sdp import (
    Attribute,
    GameMedia,
    MediaDescription,
    Role,
    canonical_gsdk_lines,
    encode_public_key,
    format_sdp,
    game_from_sdp,
    game_to_sdp,
    parse_sdp_untrusted,
    read_game_untrusted,
)
from gamesdk.sdp.examples import ALICE_KEY, BOB_KEY, example_answer, example_offer

KEY_TEXT = encode_public_key(ALICE_KEY)

BASE = [
    "v=0",
    "o=alice 1 1 IN IP4 127.0.0.1",
    "s=-",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "m=application 50000 UDP/GSDK gsdk",
    "b=AS:64",
    "a=gsdk-format:pong/2;tick=60",
    "a=gsdk-format:pong/1",
    "a=gsdk-class:action",
    "a=gsdk-qos:lat=50;jit=10;loss=10000;pps=60",
    "a=gsdk-sec:chacha20-poly1305,aes-256-gcm",
    f"a=gsdk-kx:x25519 {KEY_TEXT}",
    "a=gsdk-sid:7",
]


def body(lines: list[str]) -> str:
    return "\r\n".join(lines) + "\r\n"


def edited(old: str, *new: str) -> str:
    """BASE with the line starting with ``old`` replaced by ``new`` (none: removed)."""
    index = next(i for i, line in enumerate(BASE) if line.startswith(old))
    return body(BASE[:index] + list(new) + BASE[index + 1 :])


def appended(*extra: str) -> str:
    return body(BASE + list(extra))


TERMS = SessionTerms(
    formats=(GameFormat("pong", 2, (("tick", "60"),)), GameFormat("pong", 1)),
    classification="action",
    qos=QosParams(latency_ms=50, jitter_ms=10, loss_ppm=10_000, pps=60),
    receive_kbps=64,
    suites=("chacha20-poly1305", "aes-256-gcm"),
)
GAME = GameMedia(terms=TERMS, address="127.0.0.1", port=50_000, public_key=ALICE_KEY, session_id=7)


def test_reads_the_typed_model() -> None:
    desc, game = read_game_untrusted(body(BASE), Role.OFFER)
    assert game == GAME
    assert desc.media[0].port == 50_000


def test_builds_exactly_the_base_body() -> None:
    desc = game_to_sdp(GAME, username="alice", sess_id=1, sess_version=1)
    assert format_sdp(desc) == body(BASE)


def test_ipv6_game_address() -> None:
    game = dataclasses.replace(GAME, address="::1")
    text = format_sdp(game_to_sdp(game, username="alice", sess_id=1, sess_version=2))
    assert "c=IN IP6 ::1\r\n" in text
    assert "o=alice 1 2 IN IP6 ::1\r\n" in text
    assert game_from_sdp(parse_sdp_untrusted(text)) == game


def test_media_level_connection_wins_over_session_level() -> None:
    text = edited("b=AS", "c=IN IP4 127.0.0.2", "b=AS:64")
    assert game_from_sdp(parse_sdp_untrusted(text)).address == "127.0.0.2"


def test_other_media_and_unknown_lines_are_ignored() -> None:
    text = body(
        BASE[:5]
        + ["m=audio 49170 RTP/AVP 0", "a=rtpmap:0 PCMU/8000"]
        + BASE[5:]
        + ["a=curr:qos local none", "a=gsdk-future:x", "a=gsdk-flag"]
    )
    assert game_from_sdp(parse_sdp_untrusted(text)) == GAME


def test_unknown_suites_are_kept() -> None:
    text = edited("a=gsdk-sec", "a=gsdk-sec:post-quantum-9,chacha20-poly1305")
    assert game_from_sdp(parse_sdp_untrusted(text)).terms.suites == ("post-quantum-9", "chacha20-poly1305")


def test_answer_mirrors_other_offered_sections_with_port_zero() -> None:
    offer = parse_sdp_untrusted(
        body(BASE[:5] + ["m=audio 49170 RTP/AVP 0"] + BASE[5:] + ["m=video 5 RTP/AVP 31"])
    )
    answer_terms = dataclasses.replace(TERMS, formats=TERMS.formats[:1], suites=TERMS.suites[:1])
    game = GameMedia(terms=answer_terms, address="127.0.0.1", port=40_000, public_key=BOB_KEY, session_id=9)
    answer = game_to_sdp(game, username="bob", sess_id=5, sess_version=1, role=Role.ANSWER, offer=offer)
    assert [(m.media, m.port) for m in answer.media] == [("audio", 0), ("application", 40_000), ("video", 0)]
    assert answer.media[0] == MediaDescription("audio", 0, "RTP/AVP", ("0",))
    assert game_from_sdp(answer, Role.ANSWER) == game


def test_builder_refuses_bad_values() -> None:
    with pytest.raises(LocalProtocolError, match="exactly one"):
        game_to_sdp(GAME, username="bob", sess_id=1, sess_version=1, role=Role.ANSWER)
    with pytest.raises(LocalProtocolError, match="username"):
        game_to_sdp(GAME, username="a b", sess_id=1, sess_version=1)
    with pytest.raises(LocalProtocolError, match="sess_id"):
        game_to_sdp(GAME, username="a", sess_id=-1, sess_version=1)
    with pytest.raises(LocalProtocolError, match="sess_version"):
        game_to_sdp(GAME, username="a", sess_id=1, sess_version=1 << 64)
    no_game = parse_sdp_untrusted(
        "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n"
    )
    with pytest.raises(LocalProtocolError, match="no game stream"):
        game_to_sdp(GAME, username="a", sess_id=1, sess_version=1, offer=no_game)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"address": "example.com"}, "unicast"),
        ({"address": "224.0.0.1"}, "unicast"),
        ({"address": "0.0.0.0"}, "unicast"),
        ({"port": 0}, "port"),
        ({"port": 65_536}, "port"),
        ({"public_key": b"\x00" * 31}, "32 bytes"),
        ({"session_id": 1 << 32}, "u32"),
        ({"session_id": -1}, "u32"),
        ({"terms": "not terms"}, "SessionTerms"),
    ],
)
def test_game_media_validates(change: dict[str, object], fragment: str) -> None:
    with pytest.raises(LocalProtocolError, match=fragment):
        dataclasses.replace(GAME, **change)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cls", "value", "change"),
    [
        (GameMedia, GAME, {"address": 127}),
        (GameMedia, GAME, {"port": "50000"}),
        (GameMedia, GAME, {"public_key": ALICE_KEY.hex()}),
        (GameMedia, GAME, {"session_id": "7"}),
        (SessionTerms, TERMS, {"classification": 3}),
        (SessionTerms, TERMS, {"receive_kbps": "64"}),
        (SessionTerms, TERMS, {"suites": (256,)}),
        (QosParams, TERMS.qos, {"latency_ms": "80"}),
        (QosParams, TERMS.qos, {"extra": (("x", 1),)}),
        (GameFormat, TERMS.formats[0], {"name": None}),
        (GameFormat, TERMS.formats[0], {"version": "1"}),
    ],
)
def test_a_field_of_the_wrong_type_is_the_sdks_error(cls: type, value: object, change: dict[str, object]) -> None:
    # Also in the compiled build (setup.py): the value classes stay Python classes there (gamesdk._mypyc), so a
    # field's type is checked by __post_init__ (LocalProtocolError), not by a native class's setter (TypeError).
    assert type(value) is cls and not hasattr(cls, "__mypyc_attrs__")
    with pytest.raises(LocalProtocolError):
        dataclasses.replace(value, **change)  # type: ignore[type-var]


K = KEY_TEXT
EXTENSION_ERRORS = [
    # (body, the line the error must name (None: no single line), message fragment)
    (edited("m=application", "m=audio 50000 RTP/AVP 0"), None, "no 'm=application"),
    (edited("m=application", "m=application 0 UDP/GSDK gsdk"), "m=application 0 UDP/GSDK gsdk", "rejected"),
    (edited("m=application", "m=application 5 UDP/GSDK gsdk x"), "m=application 5 UDP/GSDK gsdk x", "format"),
    (edited("m=application", "m=application 5/2 UDP/GSDK gsdk"), "m=application 5/2 UDP/GSDK gsdk", "single"),
    (appended("m=application 6 UDP/GSDK gsdk"), "m=application 6 UDP/GSDK gsdk", "more than one"),
    (edited("c=IN"), "m=application 50000 UDP/GSDK gsdk", "no c= line"),
    (edited("c=IN", "c=IN IP4 example.com"), "c=IN IP4 example.com", "unicast IP literal"),
    (edited("c=IN", "c=IN IP4 233.252.0.1/127"), "c=IN IP4 233.252.0.1/127", "unicast IP literal"),
    (edited("c=IN", "c=IN IP4 224.0.0.1"), "c=IN IP4 224.0.0.1", "unicast IP literal"),
    (edited("c=IN", "c=ATM IP4 127.0.0.1"), "c=ATM IP4 127.0.0.1", "unicast IP literal"),
    (edited("c=IN", "c=IN IP4 ::1"), "c=IN IP4 ::1", "does not match"),
    (
        edited("b=AS", "c=IN IP4 127.0.0.1", "c=IN IP4 127.0.0.2", "b=AS:64"),
        "c=IN IP4 127.0.0.2",
        "exactly one c=",
    ),
    (edited("b=AS"), "m=application 50000 UDP/GSDK gsdk", "no b=AS"),
    (edited("b=AS", "b=AS:64", "b=AS:65"), "b=AS:65", "b=AS given twice"),
    (edited("b=AS", "b=AS:0"), "b=AS:0", "b=AS must be in 1..1000000"),
    (edited("b=AS", "b=AS:1000001"), "b=AS:1000001", "b=AS must be in"),
    (edited("a=gsdk-format:pong/2", "a=gsdk-format:pong"), "a=gsdk-format:pong", "name/version"),
    (edited("a=gsdk-format:pong/2", "a=gsdk-format:pong/12345"), "a=gsdk-format:pong/12345", "1-4 digits"),
    (edited("a=gsdk-format:pong/2", "a=gsdk-format:pong/01"), "a=gsdk-format:pong/01", "1-4 digits"),
    (edited("a=gsdk-format:pong/2", "a=gsdk-format:po@ng/1"), "a=gsdk-format:po@ng/1", "token"),
    (edited("a=gsdk-format:pong/2", "a=gsdk-format:pong/2;tick"), "a=gsdk-format:pong/2;tick", "token=token"),
    (edited("a=gsdk-format:pong/2", "a=gsdk-format:pong/2;t=1;t=2"), "a=gsdk-format:pong/2;t=1;t=2", "twice"),
    (edited("a=gsdk-format:pong/2", "a=gsdk-format:pong/1"), "a=gsdk-format:pong/1", "listed twice"),
    (edited("a=gsdk-format:pong/2", "a=gsdk-format"), "a=gsdk-format", "needs a value"),
    (
        body([x for x in BASE if "gsdk-format" not in x]),
        "m=application 50000 UDP/GSDK gsdk",
        "no a=gsdk-format",
    ),
    (appended("a=gsdk-class:ranked"), "a=gsdk-class:ranked", "gsdk-class given twice"),
    (edited("a=gsdk-class", "a=gsdk-class:"), "a=gsdk-class:", "needs a value"),
    (edited("a=gsdk-class", "a=gsdk-class:a,b"), "a=gsdk-class:a,b", "token"),
    (edited("a=gsdk-class"), "m=application 50000 UDP/GSDK gsdk", "no a=gsdk-class"),
    (
        edited("a=gsdk-qos", "a=gsdk-qos:lat=0;jit=10;loss=10000;pps=60"),
        "a=gsdk-qos:lat=0;jit=10;loss=10000;pps=60",
        "lat (ms) must be an integer in 1..60000",
    ),
    (
        edited("a=gsdk-qos", "a=gsdk-qos:lat=50;jit=10;loss=1000001;pps=60"),
        "a=gsdk-qos:lat=50;jit=10;loss=1000001;pps=60",
        "loss (ppm)",
    ),
    (
        edited("a=gsdk-qos", "a=gsdk-qos:lat=50;jit=10;loss=1;pps=0"),
        "a=gsdk-qos:lat=50;jit=10;loss=1;pps=0",
        "pps",
    ),
    (
        edited("a=gsdk-qos", "a=gsdk-qos:lat=050;jit=10;loss=1;pps=6"),
        "a=gsdk-qos:lat=050;jit=10;loss=1;pps=6",
        "leading zeros",
    ),
    (
        edited("a=gsdk-qos", "a=gsdk-qos:lat=-5;jit=10;loss=1;pps=6"),
        "a=gsdk-qos:lat=-5;jit=10;loss=1;pps=6",
        "decimal number",
    ),
    (edited("a=gsdk-qos", "a=gsdk-qos:lat=5;jit=10;loss=1"), "a=gsdk-qos:lat=5;jit=10;loss=1", "missing pps"),
    (
        edited("a=gsdk-qos", "a=gsdk-qos:lat=5;lat=6;jit=1;loss=1;pps=1"),
        "a=gsdk-qos:lat=5;lat=6;jit=1;loss=1;pps=1",
        "'lat' given twice",
    ),
    (
        edited("a=gsdk-qos", "a=gsdk-qos:lat=5;jit=1;loss=1;pps=1;x"),
        "a=gsdk-qos:lat=5;jit=1;loss=1;pps=1;x",
        "token=token",
    ),
    (
        edited("a=gsdk-qos", "a=gsdk-qos:lat=5;jit=1;loss=1;pps=1;x=a b"),
        "a=gsdk-qos:lat=5;jit=1;loss=1;pps=1;x=a b",
        "token=token",
    ),
    (
        edited("a=gsdk-sec", "a=gsdk-sec:chacha20-poly1305,,aes-256-gcm"),
        "a=gsdk-sec:chacha20-poly1305,,aes-256-gcm",
        "tokens",
    ),
    (
        edited("a=gsdk-sec", "a=gsdk-sec:aes-256-gcm,aes-256-gcm"),
        "a=gsdk-sec:aes-256-gcm,aes-256-gcm",
        "listed twice",
    ),
    (edited("a=gsdk-kx", f"a=gsdk-kx:x448 {K}"), f"a=gsdk-kx:x448 {K}", "x25519 <key>"),
    (edited("a=gsdk-kx", f"a=gsdk-kx:x25519{K}"), f"a=gsdk-kx:x25519{K}", "x25519 <key>"),
    (edited("a=gsdk-kx", f"a=gsdk-kx:x25519 {K}="), f"a=gsdk-kx:x25519 {K}=", "43 characters"),
    (edited("a=gsdk-kx", f"a=gsdk-kx:x25519 {K[:-1]}"), f"a=gsdk-kx:x25519 {K[:-1]}", "32 bytes"),
    (edited("a=gsdk-kx", f"a=gsdk-kx:x25519 {K[:-1]}+"), f"a=gsdk-kx:x25519 {K[:-1]}+", "base64url"),
    # 'M' ends the canonical text; 'N' sets an unused bit and would name the same key.
    (edited("a=gsdk-kx", f"a=gsdk-kx:x25519 {K[:-1]}N"), f"a=gsdk-kx:x25519 {K[:-1]}N", "base64url"),
    (edited("a=gsdk-kx"), "m=application 50000 UDP/GSDK gsdk", "no a=gsdk-kx"),
    (edited("a=gsdk-sid", "a=gsdk-sid:4294967296"), "a=gsdk-sid:4294967296", "u32"),
    (edited("a=gsdk-sid", "a=gsdk-sid:07"), "a=gsdk-sid:07", "u32"),
    (edited("a=gsdk-sid", "a=gsdk-sid:-1"), "a=gsdk-sid:-1", "u32"),
    (edited("a=gsdk-sid", "a=gsdk-sid:12345678901"), "a=gsdk-sid:12345678901", "u32"),
    (appended("a=gsdk-sid:8"), "a=gsdk-sid:8", "gsdk-sid given twice"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), EXTENSION_ERRORS)
def test_extension_errors_name_the_line(text: str, line: str | None, fragment: str) -> None:
    desc = parse_sdp_untrusted(text)
    with pytest.raises(SdpError) as info:
        game_from_sdp(desc, Role.OFFER)
    assert info.value.line == line
    assert fragment in str(info.value)
    if line is not None:
        assert line in str(info.value)
    assert info.value.status_hint == 488
    with pytest.raises(SdpError):
        canonical_gsdk_lines(desc)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (edited("a=gsdk-sec", "a=gsdk-sec:chacha20-poly1305"), "a=gsdk-format:pong/1"),
        (edited("a=gsdk-format:pong/1"), "a=gsdk-sec:chacha20-poly1305,aes-256-gcm"),
    ],
)
def test_an_answer_holds_one_format_and_one_suite(text: str, line: str) -> None:
    desc = parse_sdp_untrusted(text)
    game_from_sdp(desc, Role.OFFER)
    game_from_sdp(desc)
    with pytest.raises(SdpError, match="an answer picks exactly one") as info:
        game_from_sdp(desc, Role.ANSWER)
    assert info.value.line == line


def test_the_examples_read_back() -> None:
    offer = game_from_sdp(example_offer(), Role.OFFER)
    same = game_from_sdp(example_answer(), Role.ANSWER)
    modified = game_from_sdp(example_answer(modified=True), Role.ANSWER)
    assert same.terms.qos == offer.terms.qos
    assert modified.terms.qos.latency_ms == 100 and modified.terms.qos.pps == 30
    assert modified.terms.formats == (offer.terms.formats[1],)


CANONICAL_BASE = canonical_gsdk_lines(parse_sdp_untrusted(body(BASE)))


def test_canonical_lines_are_the_gsdk_lines() -> None:
    expected = [BASE[5], BASE[3], *BASE[6:]]
    assert CANONICAL_BASE == body(expected).encode()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("m=application", "m=application 50001 UDP/GSDK gsdk"),
        ("c=IN", "c=IN IP4 127.0.0.2"),
        ("b=AS", "b=AS:65"),
        ("a=gsdk-format:pong/2", "a=gsdk-format:pong/2;tick=61"),
        ("a=gsdk-format:pong/2", "a=gsdk-format:pong/3;tick=60"),
        ("a=gsdk-format:pong/1", "a=gsdk-format:pong/1;x=y"),
        ("a=gsdk-class", "a=gsdk-class:actions"),
        ("a=gsdk-qos", "a=gsdk-qos:lat=51;jit=10;loss=10000;pps=60"),
        ("a=gsdk-qos", "a=gsdk-qos:lat=50;jit=11;loss=10000;pps=60"),
        ("a=gsdk-qos", "a=gsdk-qos:lat=50;jit=10;loss=10001;pps=60"),
        ("a=gsdk-qos", "a=gsdk-qos:lat=50;jit=10;loss=10000;pps=61"),
        ("a=gsdk-qos", "a=gsdk-qos:lat=50;jit=10;loss=10000;pps=60;x=1"),
        ("a=gsdk-sec", "a=gsdk-sec:chacha20-poly1305"),
        ("a=gsdk-sec", "a=gsdk-sec:aes-256-gcm,chacha20-poly1305"),
        ("a=gsdk-kx", f"a=gsdk-kx:x25519 {encode_public_key(BOB_KEY)}"),
        ("a=gsdk-sid", "a=gsdk-sid:8"),
    ],
)
def test_canonical_lines_change_with_every_gsdk_value(old: str, new: str) -> None:
    changed = canonical_gsdk_lines(parse_sdp_untrusted(edited(old, new)))
    assert changed != CANONICAL_BASE


def test_canonical_lines_cover_format_order_and_unknown_gsdk_lines() -> None:
    swapped = body(BASE[:7] + [BASE[8], BASE[7]] + BASE[9:])
    assert canonical_gsdk_lines(parse_sdp_untrusted(swapped)) != CANONICAL_BASE
    future = canonical_gsdk_lines(parse_sdp_untrusted(appended("a=gsdk-future:1")))
    assert future == CANONICAL_BASE + b"a=gsdk-future:1\r\n"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("o=alice", ("o=alice 1 2 IN IP4 127.0.0.1",)),
        ("s=-", ("s=A game",)),
        ("a=gsdk-sid", ("a=gsdk-sid:7", "a=tool:x", "a=curr:qos local none")),
        ("b=AS", ("b=AS:64", "b=TIAS:60000")),
        ("c=IN", ("c=IN IP4 127.0.0.1", "b=CT:1000")),
        ("m=application", ("m=audio 4 RTP/AVP 0", "m=application 50000 UDP/GSDK gsdk")),
    ],
)
def test_canonical_lines_ignore_lines_that_do_not_key_the_channel(old: str, new: tuple[str, ...]) -> None:
    assert canonical_gsdk_lines(parse_sdp_untrusted(edited(old, *new))) == CANONICAL_BASE


def test_session_level_connection_moved_to_media_level_keeps_canonical_bytes() -> None:
    moved = body(BASE[:3] + BASE[4:6] + ["c=IN IP4 127.0.0.1"] + BASE[6:])
    assert canonical_gsdk_lines(parse_sdp_untrusted(moved)) == CANONICAL_BASE


def test_attribute_lookup_helpers() -> None:
    section = parse_sdp_untrusted(body(BASE)).media[0]
    assert section.attribute_values("gsdk-format") == ["pong/2;tick=60", "pong/1"]
    assert Attribute("gsdk-sid", "7") in section.attributes
