"""Hypothesis properties: untrusted input has exactly one failure mode; the typed model round-trips."""

from __future__ import annotations

import ipaddress
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gamesdk.errors import SdpError
from gamesdk.qos import GameFormat, QosParams, SessionTerms
from gamesdk.qos.model import MAX_JITTER_MS, MAX_KBPS, MAX_LATENCY_MS, MAX_LOSS_PPM, MAX_PPS
from gamesdk.sdp import (
    GameMedia,
    Role,
    canonical_gsdk_lines,
    format_sdp,
    format_sdp_bytes,
    game_from_sdp,
    game_to_sdp,
    parse_sdp_untrusted,
    read_game_untrusted,
)
from gamesdk.sdp.examples import example_answer, example_offer

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Building whole typed models is slower per example; fewer examples keep the suite fast.
MODEL_SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`{|}~"

OFFER_LINES = format_sdp(example_offer()).split("\r\n")[:-1]
ANSWER_LINES = format_sdp(example_answer(modified=True)).split("\r\n")[:-1]
VALID_LINES = (
    OFFER_LINES
    + ANSWER_LINES
    + [
        "i=info",
        "u=http://example.com/",
        "e=a@example.com",
        "p=+1 555",
        "b=CT:100",
        "r=7d 1h 0 25h",
        "z=3042462419 -1h 3050462419 0",
        "k=prompt",
        "a=recvonly",
        "m=audio 49170 RTP/AVP 0 8",
        "m=video 0 RTP/AVP 31",
        "c=IN IP6 ::1",
    ]
)
NASTY = " =:/;,\r\n\x00\t\"'\\é€0123456789-_" + "abcxyzvosiuepcbtrzkam"


def _check_error(exc: SdpError) -> None:
    """Error messages go into a SIP Warning quoted-string: printable, no double quote."""
    message = str(exc)
    assert message.isprintable() and '"' not in message, message
    assert exc.status_hint in (413, 488)


def _parse_or_sdp_error(data: bytes | str) -> None:
    try:
        desc = parse_sdp_untrusted(data)
    except SdpError as exc:
        _check_error(exc)
        return
    # Whatever parses formats to a body that parses to the same description (a fixed point).
    try:
        text = format_sdp(desc)
    except Exception as exc:  # pragma: no cover - reported by the assertion
        raise AssertionError(f"parsed but cannot format: {exc!r}") from exc
    assert parse_sdp_untrusted(text) == desc
    try:
        game_from_sdp(desc)
    except SdpError as exc:
        _check_error(exc)


@SETTINGS
@given(st.binary(max_size=1500))
def test_arbitrary_bytes_parse_or_raise_sdp_error(data: bytes) -> None:
    _parse_or_sdp_error(data)


@SETTINGS
@given(st.text(max_size=1500))
def test_arbitrary_text_parses_or_raises_sdp_error(text: str) -> None:
    _parse_or_sdp_error(text)


line_strategy = st.one_of(
    st.sampled_from(VALID_LINES),
    st.builds(
        lambda kind, value: f"{kind}={value}",
        st.sampled_from("vosiuepcbtrzkamxy"),
        st.text(NASTY, max_size=30),
    ),
    st.text(NASTY, max_size=20),
)


@SETTINGS
@given(st.lists(line_strategy, max_size=30), st.sampled_from(["\r\n", "\n"]), st.booleans())
def test_line_soup_parses_or_raises_sdp_error(lines: list[str], end: str, as_bytes: bool) -> None:
    text = end.join(lines) + end
    _parse_or_sdp_error(text.encode("utf-8", "surrogatepass") if as_bytes else text)


@st.composite
def mutated_offer(draw: st.DrawFn) -> str:
    """Our offer with a few lines replaced by nasty variants of themselves (mostly gsdk values)."""
    lines = list(draw(st.sampled_from([OFFER_LINES, ANSWER_LINES])))
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(lines) - 1))
        head, sep, _rest = lines[index].partition(":")
        if not sep:
            head, _, _rest = lines[index].partition("=")
            head += "="
        else:
            head += ":"
        lines[index] = head + draw(st.text(NASTY + TOKEN_CHARS, max_size=50))
    if draw(st.booleans()):
        lines.insert(draw(st.integers(5, len(lines))), draw(st.sampled_from(VALID_LINES)))
    return "\r\n".join(lines) + "\r\n"


@SETTINGS
@given(mutated_offer(), st.sampled_from([None, Role.OFFER, Role.ANSWER]))
def test_mutated_offers_read_or_raise_sdp_error(text: str, role: Role | None) -> None:
    try:
        desc, game = read_game_untrusted(text, role)
    except SdpError as exc:
        _check_error(exc)
        return
    assert game_from_sdp(parse_sdp_untrusted(format_sdp(desc)), role) == game
    assert canonical_gsdk_lines(desc)


tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
params = st.lists(st.tuples(tokens, tokens), max_size=3, unique_by=lambda item: item[0]).map(tuple)
formats = st.builds(GameFormat, tokens, st.integers(0, 9999), params)
qos_extra = st.lists(
    st.tuples(tokens.filter(lambda key: key not in ("lat", "jit", "loss", "pps")), tokens),
    max_size=2,
    unique_by=lambda item: item[0],
).map(tuple)
qos = st.builds(
    QosParams,
    latency_ms=st.integers(1, MAX_LATENCY_MS),
    jitter_ms=st.integers(0, MAX_JITTER_MS),
    loss_ppm=st.integers(0, MAX_LOSS_PPM),
    pps=st.integers(1, MAX_PPS),
    extra=qos_extra,
)
suites = st.lists(
    st.one_of(st.sampled_from(["chacha20-poly1305", "aes-256-gcm", "aes-128-gcm"]), tokens),
    min_size=1,
    max_size=4,
    unique=True,
).map(tuple)


def terms(max_formats: int, max_suites: int) -> st.SearchStrategy[SessionTerms]:
    return st.builds(
        SessionTerms,
        formats=st.lists(formats, min_size=1, max_size=max_formats, unique=True).map(tuple),
        classification=tokens,
        qos=qos,
        receive_kbps=st.integers(1, MAX_KBPS),
        suites=suites.map(lambda names: names[:max_suites]),
    )


addresses = st.one_of(
    st.ip_addresses(v=4).filter(lambda ip: not ip.is_multicast and not ip.is_unspecified),
    st.ip_addresses(v=6).filter(lambda ip: not ip.is_multicast and not ip.is_unspecified),
).map(str)


def games(max_formats: int, max_suites: int) -> st.SearchStrategy[GameMedia]:
    return st.builds(
        GameMedia,
        terms=terms(max_formats, max_suites),
        address=addresses,
        port=st.integers(1, 65_535),
        public_key=st.binary(min_size=32, max_size=32),
        session_id=st.integers(0, 2**32 - 1),
    )


@MODEL_SETTINGS
@given(games(4, 4), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_offer_model_round_trips_through_sdp(game: GameMedia, sess_id: int, sess_version: int) -> None:
    desc = game_to_sdp(game, username="alice", sess_id=sess_id, sess_version=sess_version)
    data = format_sdp_bytes(desc)
    parsed, back = read_game_untrusted(data, Role.OFFER)
    assert back == game
    assert parsed == desc
    assert parsed.origin.sess_id == sess_id
    assert ipaddress.ip_address(parsed.origin.address) == ipaddress.ip_address(game.address)


@MODEL_SETTINGS
@given(games(1, 1))
def test_answer_model_round_trips_through_sdp(game: GameMedia) -> None:
    desc = game_to_sdp(
        game, username="bob", sess_id=1, sess_version=1, role=Role.ANSWER, offer=example_offer()
    )
    assert read_game_untrusted(format_sdp(desc), Role.ANSWER)[1] == game


@MODEL_SETTINGS
@given(games(3, 3), games(3, 3))
def test_canonical_lines_equal_exactly_when_the_games_are_equal(first: GameMedia, second: GameMedia) -> None:
    one = canonical_gsdk_lines(game_to_sdp(first, username="a", sess_id=1, sess_version=1))
    two = canonical_gsdk_lines(game_to_sdp(second, username="b", sess_id=2, sess_version=3))
    assert (one == two) == (first == second)
