"""msgpack game-message helpers: round trips, clear errors, untrusted input fails one way only."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gamesdk.channel.messages import (
    MessageCodec,
    pack_message,
    unpack_map_untrusted,
    unpack_message_untrusted,
)
from gamesdk.errors import LocalProtocolError, RemoteProtocolError

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=20,
)


@given(values)
def test_round_trip(value: object) -> None:
    assert unpack_message_untrusted(pack_message(value)) == value


@given(st.binary(max_size=100))
def test_unpack_raises_only_remote_protocol_error(data: bytes) -> None:
    try:
        unpack_message_untrusted(data)
    except RemoteProtocolError:
        pass


def test_pack_refuses_unencodable_with_a_message() -> None:
    with pytest.raises(LocalProtocolError, match="cannot encode"):
        pack_message({"x": object()})
    with pytest.raises(LocalProtocolError, match="cannot encode"):
        pack_message(2**70)
    assert unpack_message_untrusted(pack_message({"ok": 1})) == {"ok": 1}  # codec still usable
    with pytest.raises(LocalProtocolError, match="over 10"):
        MessageCodec(max_bytes=10).pack(b"x" * 20)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\xc1", "invalid"),
        (b"\x92\x01", "incomplete"),
        (msgpack.packb(1) + b"\x01", "extra"),
        (b"\xdd\xff\xff\xff\xff", "max_array_len"),
    ],
)
def test_unpack_errors_are_clear(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=f"(?i)bad msgpack game message.*{message}"):
        unpack_message_untrusted(data)


def test_unpack_map_checks_fields() -> None:
    data = pack_message({"x": 1, "y": 2.5, "name": "p1", "extra": [1]})
    assert unpack_map_untrusted(data, {"x": int, "y": (int, float), "name": str})["extra"] == [1]
    with pytest.raises(RemoteProtocolError, match="lacks field 'z'"):
        unpack_map_untrusted(data, {"z": int})
    with pytest.raises(RemoteProtocolError, match="'name' is str, expected int"):
        unpack_map_untrusted(data, {"name": int})
    with pytest.raises(RemoteProtocolError, match="'b' is bool"):
        unpack_map_untrusted(pack_message({"b": True}), {"b": int})
    with pytest.raises(RemoteProtocolError, match="is a list, expected a map"):
        unpack_map_untrusted(pack_message([1]), {"x": int})
