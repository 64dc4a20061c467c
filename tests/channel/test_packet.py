"""Wire codecs: header and frame round trips; untrusted parsers fail only with RemoteProtocolError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gamesdk.channel import packet as wire
from gamesdk.errors import RemoteProtocolError


def test_header_layout_is_13_bytes_little_endian() -> None:
    header = wire.encode_header(wire.PacketType.DATA, 0x01020304, 0x0A0B0C0D0E0F1011)
    assert len(header) == wire.HEADER_BYTES == 13
    assert header[0] == 0x42  # version 1 in the top two bits, type DATA
    assert header[1:5] == bytes([4, 3, 2, 1])
    assert header[5:13] == bytes.fromhex("11100f0e0d0c0b0a")
    assert wire.decode_header_untrusted(header + bytes(16)) == (2, 0x01020304, 0x0A0B0C0D0E0F1011)
    flipped = wire.encode_header(wire.PacketType.DATA, 0x01020304, 7, key_phase=1)
    assert flipped[0] == 0x62 and wire.key_phase_of(flipped) == 1 and wire.key_phase_of(header) == 0
    assert wire.decode_header_untrusted(flipped + bytes(16)) == (2, 0x01020304, 7)


@pytest.mark.parametrize(
    "data, message",
    [
        (bytes(28), "shorter"),
        (b"\x82" + bytes(28), "version"),
        (b"\x40" + bytes(28), "packet type"),
        (b"\x5f" + bytes(28), "packet type"),
    ],
)
def test_bad_headers_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        wire.decode_header_untrusted(data)


def _all_frames() -> tuple[bytes, list[tuple[object, ...]]]:
    parts = [
        wire.push_ack(70000, (1 << 64) - 1, 65535),
        bytes((wire.PING,)),
        wire.push_confirm(bytes(range(16))),
        wire.push_path_challenge(b"12345678"),
        wire.push_path_response(b"abcdefgh"),
        wire.push_unreliable(b"u" * 5),
        wire.push_sequenced(65535, b""),
        wire.push_reliable(7, 2, 3, b"r" * 1024),
        wire.push_fragment(1, 65535, 15, 16, b"f" * 9),
        wire.push_close("bye ✓"),
    ]
    expected: list[tuple[object, ...]] = [
        (wire.ACK, 70000, (1 << 64) - 1, 65535),
        (wire.PING,),
        (wire.CONFIRM, bytes(range(16))),
        (wire.PATH_CHALLENGE, b"12345678"),
        (wire.PATH_RESPONSE, b"abcdefgh"),
        (wire.FrameType.UNRELIABLE, b"u" * 5),
        (wire.FrameType.SEQUENCED, 65535, b""),
        (wire.FrameType.RELIABLE, 7, 2, 3, b"r" * 1024),
        (wire.FrameType.FRAGMENT, 1, 65535, 15, 16, b"f" * 9),
        (wire.CLOSE, "bye ✓"),
    ]
    return b"".join(parts), expected


def test_every_frame_round_trips() -> None:
    payload, expected = _all_frames()
    assert wire.parse_frames_untrusted(payload) == expected
    assert wire.parse_frames_untrusted(b"") == []


def test_every_truncation_is_refused_or_a_clean_prefix() -> None:
    payload, expected = _all_frames()
    for cut in range(len(payload)):
        try:
            frames = wire.parse_frames_untrusted(payload[:cut])
        except RemoteProtocolError:
            continue
        assert frames == expected[: len(frames)]  # cut exactly at a frame boundary


def test_impossible_fragment_numbers_are_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="impossible"):
        wire.parse_frames_untrusted(wire.push_reliable(1, 3, 3, b"x"))
    with pytest.raises(RemoteProtocolError, match="impossible"):
        wire.parse_frames_untrusted(wire.push_reliable(1, 0, 0, b"x"))
    with pytest.raises(RemoteProtocolError, match="impossible"):
        wire.parse_frames_untrusted(wire.push_fragment(0, 1, 0, 1, b"x"))  # one slice is no fragment
    with pytest.raises(RemoteProtocolError, match="impossible"):
        wire.parse_frames_untrusted(wire.push_fragment(0, 1, 0, 17, b"x"))
    with pytest.raises(RemoteProtocolError, match="only unreliable lanes"):
        wire.parse_frames_untrusted(wire.push_fragment(2, 1, 0, 2, b"x"))
    with pytest.raises(RemoteProtocolError, match="unknown frame"):
        wire.parse_frames_untrusted(b"\x7f")


@given(st.binary(max_size=200))
def test_frames_parser_raises_only_remote_protocol_error(data: bytes) -> None:
    try:
        wire.parse_frames_untrusted(data)
    except RemoteProtocolError:
        pass


@given(st.binary(max_size=64))
def test_header_parser_raises_only_remote_protocol_error(data: bytes) -> None:
    try:
        ptype, sid, pn = wire.decode_header_untrusted(data)
    except RemoteProtocolError:
        return
    assert 1 <= ptype <= 3 and 0 <= sid < 1 << 32 and 0 <= pn < 1 << 64
