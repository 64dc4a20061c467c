"""quick_game_terms, the server's reader of the game terms: for every body it gives the full reader's terms
(``game_from_sdp(parse_sdp_untrusted(body), role).terms``) or None (not sure: the full reader then decides, and
names the fault as always); never other terms, never an error. The usual bodies take the quick way."""

from __future__ import annotations

import random
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gamesdk.errors import GameSdkError
from gamesdk.qos import SessionTerms
from gamesdk.sdp import format_sdp, game_from_sdp, parse_sdp_untrusted
from gamesdk.sdp.examples import example_answer, example_offer
from gamesdk.sdp.game import Role, quick_game_terms

from .test_game import EXTENSION_ERRORS

KEY = "BpX91tYOUWWR0njamwM01k_WUCT6BWf_Sw-qnBMvVCs"
OFFER = (
    "v=0\r\no=alice 3912409810 3912409810 IN IP4 127.0.0.1\r\ns=gamesdk\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=application 50000 UDP/GSDK gsdk\r\nb=AS:64\r\na=gsdk-format:pong/1;tick=60\r\n"
    "a=gsdk-format:pong/2;tick=120\r\na=gsdk-class:action\r\na=gsdk-qos:lat=50;jit=10;loss=10000;pps=60\r\n"
    f"a=gsdk-sec:chacha20-poly1305,aes-256-gcm\r\na=gsdk-kx:x25519 {KEY}\r\na=gsdk-sid:305419896\r\n"
)
ANSWER = (
    "v=0\r\no=bob 3912409811 3912409811 IN IP6 ::1\r\ns=-\r\nt=0 0\r\n"
    "m=application 50002 UDP/GSDK gsdk\r\nc=IN IP6 ::1\r\nb=AS:64\r\na=gsdk-format:pong/1;tick=60\r\n"
    "a=gsdk-class:action\r\na=gsdk-qos:lat=50;jit=10;loss=10000;pps=60\r\na=gsdk-sec:chacha20-poly1305\r\n"
    f"a=gsdk-kx:x25519 {KEY}\r\na=ice-ufrag:abcd\r\na=candidate:1 1 udp 1 127.0.0.1 5 typ host\r\n"
    "a=end-of-candidates\r\na=gsdk-sid:2864434397\r\n"
)
SEEDS = [OFFER, ANSWER, format_sdp(example_offer()), format_sdp(example_answer())]
ROLES = (None, Role.OFFER, Role.ANSWER)

#: Lines a mutation inserts: each is near something one of the readers refuses or treats specially.
LINES = [
    "b=AS:0", "b=AS:65", "b=CT:5", "b=AS:064", "b=AS:", "b=:5", "c=IN IP4 0.0.0.0", "c=IN IP4 127.0.0.2",
    "c=IN IP6 127.0.0.1", "c=IN IP4 224.0.0.1", "c=IN  IP4 1.2.3.4", "c=IN IP4 1.2.3.4 ", "a=gsdk-sid:01",
    "a=gsdk-sid:7", "a=:x", "a=", "a= x", "a=gsdk-class", "a=gsdk-class:", "a=gsdk-kx:x25519 short",
    "a=gsdk-format:pong/1;tick=60", "a=gsdk-format:chess/3", "a=gsdk-sec:aes-256-gcm", "a=gsdk-x:unknown",
    "a=rtpmap:0 PCMU/8000", "i=info", "k=prompt", "t=0 0", "t=1 x", "r=1 2 3", "z=1 2", "e=a@b", "u=http://x",
    "m=audio 0 RTP/AVP 0", "m=application 6 UDP/GSDK gsdk", "m=application 0 UDP/GSDK gsdk",
    "m=application 5/2 UDP/GSDK gsdk", "s=again", "o=x 1 1 IN IP4 1.2.3.4", "v=0", "x=unknown", "", " ",
    "a=gsdk-qos:lat=50;jit=10;loss=10000;pps=60", "a=gsdk-qos:lat=5;jit=1;loss=1;pps=1;x", "a=gsdk-kx:x448 k",
    "a=gsdk-sec:a,a", "a=gsdk-sec:a,,b", "a=gsdk-class:a,b", "a=end-of-candidates", "b=AS:1000001",
]
CHARS = [" ", ":", "=", "\r", "\n", "\x00", "\u00e9", "0", "9", "/", ",", ";", "a", "-", "\t", "\ufeff", "\x7f"]


def full(body: str | bytes, role: Role | None) -> SessionTerms | str:
    try:
        return game_from_sdp(parse_sdp_untrusted(body), role).terms
    except GameSdkError as exc:
        return f"error: {exc}"


def mutate(rng: random.Random, text: str) -> str:
    lines = text.split("\r\n")
    for _ in range(rng.randint(1, 3)):
        where = rng.randrange(len(lines))
        step = rng.randrange(7)
        if step == 0 and len(lines) > 1:
            del lines[where]
        elif step == 1:
            lines.insert(where, lines[where])
        elif step == 2 and where + 1 < len(lines):
            lines[where], lines[where + 1] = lines[where + 1], lines[where]
        elif step == 3:
            lines.insert(where, rng.choice(LINES))
        elif step == 4 and lines[where]:
            at = rng.randrange(len(lines[where]))
            lines[where] = lines[where][:at] + rng.choice(CHARS) + lines[where][at + 1:]
        elif step == 5 and lines[where]:
            at = rng.randrange(len(lines[where]) + 1)
            lines[where] = lines[where][:at] + rng.choice(CHARS) + lines[where][at:]
        else:
            lines[where] = lines[where][: rng.randrange(len(lines[where]) + 1)]
    ending = rng.choice(["\r\n", "\r\n", "\n"])
    return ending.join(lines) + rng.choice(["", "\r\n", "\r", "\n\n", "\r\n\r\n"])


def test_the_usual_bodies_take_the_quick_way() -> None:
    for seed in SEEDS:
        for data in (seed, seed.encode(), seed.replace("\r\n", "\n")):
            for role in ROLES:
                expected = full(data, role)
                if isinstance(expected, str):
                    assert role is Role.ANSWER and seed in (OFFER, SEEDS[2])  # an offer lists several formats
                    assert quick_game_terms(data, role) is None
                else:
                    assert quick_game_terms(data, role) == expected


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_quick_terms_are_the_full_readers_or_none(seed: int) -> None:
    rng = random.Random(seed)
    quick_taken = 0
    for _ in range(3000):
        text = mutate(rng, SEEDS[seed])
        data: str | bytes = text.encode("utf-8", "surrogatepass") if rng.random() < 0.5 else text
        for role in ROLES:
            terms = quick_game_terms(data, role)
            if terms is not None:
                quick_taken += 1
                assert terms == full(data, role), (text, role)
    assert quick_taken > 300  # harmless edits (an unknown a= line, a reordered a= line) keep the quick way


@pytest.mark.parametrize(("text", "line", "fragment"), EXTENSION_ERRORS)
def test_every_refused_extension_is_left_to_the_full_reader(text: str, line: str | None, fragment: str) -> None:
    for role in ROLES:
        assert quick_game_terms(text, role) is None


def test_other_inputs_are_left_to_the_full_reader() -> None:
    assert quick_game_terms(bytearray(OFFER.encode())) is None
    assert quick_game_terms(OFFER.encode()[:-30] + b"\xff\r\n") is None
    assert quick_game_terms(OFFER + "a=x:" + "y" * 70_000 + "\r\n") is None
    assert quick_game_terms("") is None


@pytest.mark.parametrize("last", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
def test_the_key_text_is_checked_as_the_full_reader_checks_it(last: str) -> None:
    # The last of 43 characters carries 4 key bits and 2 unused ones: only 16 of 64 characters are canonical.
    body = OFFER.replace(f"x25519 {KEY}", f"x25519 {KEY[:-1]}{last}")
    quick, expected = quick_game_terms(body, Role.OFFER), full(body, Role.OFFER)
    assert quick == expected if quick is not None else isinstance(expected, str)


def test_the_sdks_layout_is_read_by_one_match_and_its_game_lines_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK's bodies (game_to_sdp's layout) are matched whole; the line reader reads a game's lines only the
    # first time (their terms are kept per text), however the per-call values (origin, address, port, key, sid)
    # change.
    game_module = sys.modules[quick_game_terms.__module__]
    assert all(game_module._QUICK_SHAPE.fullmatch(seed.replace("\r\n", "\n")) for seed in SEEDS)
    # The line reader keeps every game's terms it reads in ``_quick_terms`` (seen through the module's caches, not by
    # patching its functions: a compiled build calls them directly, past any patch).
    monkeypatch.setattr(game_module, "_shaped_terms", {})
    monkeypatch.setattr(game_module, "_quick_terms", {})
    for n in range(20):
        body = (OFFER.replace("alice 3912409810", f"p{n} {3912409810 + n}").replace("50000", str(50000 + n))
                .replace("127.0.0.1", f"10.0.{n}.7").replace("305419896", str(305419896 + n)))
        assert quick_game_terms(body.encode(), Role.OFFER) == full(body, Role.OFFER)
        if n == 0:
            assert len(game_module._quick_terms) == 1 and len(game_module._shaped_terms) == 1  # read once
            monkeypatch.setattr(game_module, "_quick_terms", {})
    assert game_module._quick_terms == {}  # the line reader did not run again
    assert len(game_module._shaped_terms) == 1


@pytest.mark.parametrize("change", [
    ("x25519 " + KEY, "x25519 " + KEY[:-1] + "B"), ("a=gsdk-sid:305419896", "a=gsdk-sid:4294967296"),
    ("a=gsdk-sid:305419896", "a=gsdk-sid:0305419896"), ("m=application 50000", "m=application 0"),
    ("m=application 50000", "m=application 65536"), ("c=IN IP4 127.0.0.1", "c=IN IP4 224.0.0.1"),
    ("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"), ("c=IN IP4 127.0.0.1", "c=IN IP6 127.0.0.1"),
    ("c=IN IP4 127.0.0.1\r\n", ""), ("s=gamesdk", "s="), ("o=alice", "o=al\u00e9ce"),
    ("a=gsdk-sec:chacha20-poly1305,aes-256-gcm", "a=gsdk-sec:chacha20-poly1305,chacha20-poly1305"),
    ("\r\na=gsdk-sid", "\r\na=ice-ufrag:x y\r\na=gsdk-x:1\r\na=gsdk-sid"),
])
def test_per_call_values_are_checked_after_the_game_lines_were_kept(change: tuple[str, str]) -> None:
    assert quick_game_terms(OFFER, Role.OFFER) == full(OFFER, Role.OFFER)  # the game's lines are known now
    body = OFFER.replace(*change)
    assert body != OFFER
    quick, expected = quick_game_terms(body, Role.OFFER), full(body, Role.OFFER)
    assert quick == expected if quick is not None else True
    if isinstance(expected, str):
        assert quick is None, (change, expected)


def test_the_kept_game_texts_are_bounded_in_length() -> None:
    # Both caches of game terms keep no key over 1,024 characters of text (a game's own are under 300): 256 keys of
    # up to a 64 KiB body each would hold megabytes. Long texts are still read, with the full reader's terms.
    game_module = sys.modules[quick_game_terms.__module__]
    long_class = "a" * 5_000
    for body in (OFFER.replace("gsdk-class:action", f"gsdk-class:{long_class}"),
                 OFFER.replace("gsdk-class:action", f"gsdk-class:{long_class}").replace("\r\na=gsdk-sid",
                                                                                   "\r\na=gsdk-x:1\r\na=gsdk-sid")):
        assert quick_game_terms(body, Role.OFFER) == full(body, Role.OFFER)
        assert quick_game_terms(body, Role.OFFER) is not None
    for cache in (game_module._shaped_terms, game_module._quick_terms):
        assert all(sum(len(part) for part in key if isinstance(part, str)) <= 1024
                   and all(len(text) <= 1024 for text in (key[0] if isinstance(key[0], tuple) else ()))
                   for key in cache), [len(str(k)) for k in cache]


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.2.0.7", "0.0.0.0", "224.0.0.1", "255.255.255.255", "1.2.3.04", "1.2.3", "::1", "::", "ff02::1",
    "2001:db8::1", "::ffff:192.0.2.1", "fe80::1%eth0", "host.example", "", "1.2.3.4 ", "1" * 46,
])
def test_a_kept_address_type_is_the_one_ipaddress_gives(address: str) -> None:
    """The address types quick_game_terms keeps per text (a player's address repeats in its bodies) are what the
    uncached reader says, asked once or many times, in any order."""
    from gamesdk.sdp import game

    expected = game._address_type(address)
    for _ in range(2):
        assert game._quick_connection(f"IN IP4 {address}") == (address if expected == "IP4" else None)
        assert game._quick_connection(f"IN IP6 {address}") == (address if expected == "IP6" else None)
    if len(address) <= game._MAX_ADDRESS_CHARS:
        assert game._address_type_kept(address) == expected
    # The layout's reader keeps the connection values it took, with their address: the uncached reader's, asked
    # once or many times.
    for value in (f"IN IP4 {address}", f"IN IP6 {address}", f"IN  IP4 {address}", f"IN IP4 {address}\r"):
        for _ in range(2):
            assert game._kept_connection(value) == game._quick_connection(value)
        assert game._connections.get(value) == game._quick_connection(value)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.from_regex(r"[0-9]{1,12}", fullmatch=True),
                 st.sampled_from(["0", "00", "01", "4294967295", "4294967296", "9999999999", "0000000000"])))
def test_the_quick_session_id_check_is_the_general_one(digits: str) -> None:
    from gamesdk.sdp import game

    assert game._canonical_u32_digits(digits) == (game._canonical_u32(digits) is not None)


def test_the_layouts_groups_are_read_in_the_patterns_order() -> None:
    # _shaped_game_terms takes the groups positionally (Match.groups()).
    from gamesdk.sdp import game

    assert list(game._QUICK_SHAPE.groupindex) == ["session_c", "port", "media_c", "game", "sid"]
    assert game._QUICK_SHAPE.groups == 5 and list(game._QUICK_SHAPE.groupindex.values()) == list(range(1, 6))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SEEDS), st.lists(st.sampled_from(["\r\n", "\n", "\r", "\r\r\n", "\n\r", " \r\n"]),
                                        min_size=40, max_size=40),
       st.sampled_from(["\r\n", "\n", None]), st.sampled_from(ROLES))
def test_the_layout_is_matched_as_received_whatever_its_line_ends(seed: str, ends: list[str], same: str | None,
                                                                    role: Role | None) -> None:
    # The layout is matched on the body as received, with CRLF line ends (a SIP body's) or LF ones; any other CR
    # the line reader would refuse fails the match or is refused after it (a connection value, the game's lines).
    # A body that mixes them, or has other CRs, takes the line reader. Either way the terms are the full
    # reader's, or None.
    from gamesdk.sdp import game

    lines = seed.split("\r\n")[:-1]
    if same is not None:
        ends = [same] * len(lines)
    body = "".join(line + ends[index] for index, line in enumerate(lines))
    expected = full(body, role)
    for data in (body, body.encode()):
        terms = quick_game_terms(data, role)
        assert terms == expected if terms is not None else True
        if same is not None and not isinstance(expected, str):
            assert terms == expected
    if same is not None:
        shape = game._QUICK_SHAPE_CRLF if same == "\r\n" else game._QUICK_SHAPE
        matched = shape.fullmatch(body)
        assert matched is not None
        assert (matched.group("game"), role == Role.ANSWER) in game._shaped_terms or isinstance(expected, str)


@pytest.mark.parametrize("line", ["s=game\rsdk", "c=IN IP4 127.0.0.1\r", "c=IN IP4\r 127.0.0.1",
                                  "a=gsdk-class:act\rion", "a=gsdk-qos:lat=50;jit=10;loss=10000;pps=60\r",
                                  "a=gsdk-format:pong/1;tick=60\r", "b=AS:64\r", "a=gsdk-sid:305419896\r",
                                  "a=x:y\r", "a=x\r", "t=0 0\r"])
def test_a_cr_the_line_reader_refuses_is_refused_in_the_crlf_layout(line: str) -> None:
    # Each line of the offer (CRLF line ends) with a CR of its own: the full reader's terms or None, as the line
    # reader gives them, whether the game's lines were read before or not.
    name = line.split(":", 1)[0].split(" ", 1)[0].rstrip("\r")
    plain = line.replace("\r", "")
    body = OFFER.replace(plain + "\r\n", line + "\r\n") if plain in OFFER else OFFER.replace(
        "\r\na=gsdk-sid", f"\r\n{line}\r\na=gsdk-sid")
    assert body != OFFER, name
    for _ in range(2):
        assert quick_game_terms(OFFER, Role.OFFER) == full(OFFER, Role.OFFER)
        quick, expected = quick_game_terms(body, Role.OFFER), full(body, Role.OFFER)
        assert quick is None or quick == expected, (line, expected)
