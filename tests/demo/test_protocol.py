"""The game messages: round trips, size, and the untrusted decoder's single failure mode."""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from demo_game.protocol import (
    BadMessage,
    EndMsg,
    InputMsg,
    PointMsg,
    StateMsg,
    decode_message_untrusted,
    encode_message,
)
from demo_game.world import World


def busy_snapshot() -> StateMsg:
    w = World(seed=4)
    for i in range(400):
        w.step(((i % 7 - 3) / 3, (i % 5 - 2) / 2), 1 / 60)
    return StateMsg(snapshot=w.snapshot(), input_ack=399)


def test_state_round_trip_within_float32_precision() -> None:
    msg = busy_snapshot()
    back = decode_message_untrusted(encode_message(msg))
    assert isinstance(back, StateMsg)
    assert back.input_ack == 399
    s, b = msg.snapshot, back.snapshot
    assert (b.tick, b.score, b.rally, b.hits, b.serve_ticks, b.winner) == (
        s.tick,
        s.score,
        s.rally,
        s.hits,
        s.serve_ticks,
        s.winner,
    )
    # Floats travel as 32-bit: a few millionths of a unit off at most on a 960-unit field.
    assert b.ball_x == pytest.approx(s.ball_x, abs=1e-3)
    assert b.paddle_y == pytest.approx(s.paddle_y, abs=1e-3)


def test_snapshot_fits_the_bandwidth_we_reserve() -> None:
    # demo_game/offline.py reserves for 96-byte snapshots at 60 per second.
    assert len(encode_message(busy_snapshot())) <= 96


@pytest.mark.parametrize(
    "msg",
    [
        InputMsg(seq=12, move=-0.5),
        PointMsg(tick=900, scorer=1, score=(2, 3)),
        EndMsg(reason="score", score=(5, 3), winner=0),
        EndMsg(reason="quit", score=(0, 0), winner=None),
    ],
)
def test_reliable_messages_round_trip(msg: object) -> None:
    assert decode_message_untrusted(encode_message(msg)) == msg  # type: ignore[arg-type]


def test_input_move_is_clamped() -> None:
    data = msgpack.packb({"t": "i", "n": 1, "m": 9.0})
    assert decode_message_untrusted(data) == InputMsg(seq=1, move=1.0)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"t": "z"}, "unknown message type"),
        ({"t": "i", "n": 1, "m": float("nan")}, "'m'"),
        ({"t": "i", "n": -4, "m": 0.0}, "'n'"),
        ({"t": "p", "k": 1, "sc": [0, 1]}, "scorer"),
        ({"t": "e", "why": "bored", "sc": [0, 0]}, "'why'"),
        ({"t": "s", "a": 0}, "bad snapshot"),
        ([1, 2], "must be a map"),
    ],
)
def test_bad_messages_say_what_is_wrong(fields: object, needle: str) -> None:
    with pytest.raises(BadMessage, match=needle):
        decode_message_untrusted(msgpack.packb(fields))


def test_oversize_and_trailing_bytes_are_refused() -> None:
    with pytest.raises(BadMessage, match="limit"):
        decode_message_untrusted(b"\x00" * 5000)
    with pytest.raises(BadMessage, match="not msgpack"):
        decode_message_untrusted(encode_message(InputMsg(seq=1, move=0.0)) + b"\x01")


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_bad_message(data: bytes) -> None:
    try:
        decode_message_untrusted(data)
    except BadMessage:
        pass


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=4)
    | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner, max_size=5),
    max_leaves=8,
)


@settings(max_examples=120, deadline=None)
@given(
    kind=st.sampled_from(["s", "i", "p", "e", "x"]),
    fields=st.dictionaries(
        st.sampled_from(["k", "b", "p", "sc", "r", "h", "sv", "w", "a", "n", "m", "why"]), _values
    ),
)
def test_structured_garbage_raises_only_bad_message(kind: str, fields: dict[str, object]) -> None:
    try:
        decode_message_untrusted(msgpack.packb({"t": kind, **fields}))
    except BadMessage:
        pass
