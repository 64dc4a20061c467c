"""demo_game/protocol: the game's messages and their msgpack encoding (the only module that has one).

Every message is a msgpack map with a one-letter type under ``"t"``:

=====  ========================  ==========  ============================================
 t      message                    lane        sent by
=====  ========================  ==========  ============================================
 s      :class:`StateMsg`          state       host, once per tick (unreliable-sequenced)
 i      :class:`InputMsg`          reliable    guest, once per tick
 p      :class:`PointMsg`          reliable    host, when a point is scored
 e      :class:`EndMsg`            reliable    host when the match ends; either side on quit
=====  ========================  ==========  ============================================

Snapshots go on the unreliable-sequenced lane because a late snapshot is worthless (the next one
supersedes it); inputs, points and the end must arrive, so they use the reliable-ordered lane
(DESIGN section 6). One input per tick lets the host apply them tick for tick, as the guest
predicted its own paddle. Floats are packed as 32-bit: a snapshot then fits in about 90 bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack  # type: ignore[import-untyped]

from demo_game.world import BadSnapshot, Snapshot, snapshot_from_fields_untrusted, snapshot_to_fields

__all__ = [
    "BadMessage",
    "EndMsg",
    "InputMsg",
    "Message",
    "PointMsg",
    "StateMsg",
    "decode_message_untrusted",
    "encode_message",
]

#: Largest message we accept from the peer; the biggest we send is about 100 bytes.
MAX_MESSAGE_BYTES = 4096

#: Why a match ended (``EndMsg.reason``).
END_REASONS = ("score", "time", "quit")


class BadMessage(ValueError):
    """A message from the peer that is not one of ours; the only error the decoder raises."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """Base class of the game messages."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StateMsg(Message):
    snapshot: Snapshot
    #: the newest guest input (InputMsg.seq) the host has applied, -1 before any; lets the
    #: guest replay only its newer inputs on top of the snapshot (client-side prediction)
    input_ack: int = -1


@dataclass(frozen=True, slots=True, kw_only=True)
class InputMsg(Message):
    #: increases with every input the guest sends
    seq: int
    #: paddle command in [-1, 1], negative = up
    move: float


@dataclass(frozen=True, slots=True, kw_only=True)
class PointMsg(Message):
    tick: int
    scorer: int
    score: tuple[int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class EndMsg(Message):
    #: one of END_REASONS
    reason: str
    score: tuple[int, int]
    #: side that won, or None (time ran out level, or someone quit)
    winner: int | None = None


_packer = msgpack.Packer(use_single_float=True, use_bin_type=True)


def encode_message(msg: Message) -> bytes:
    """msgpack bytes of ``msg``."""
    fields: dict[str, Any]
    if isinstance(msg, StateMsg):
        fields = {"t": "s", "a": msg.input_ack, **snapshot_to_fields(msg.snapshot)}
    elif isinstance(msg, InputMsg):
        fields = {"t": "i", "n": msg.seq, "m": msg.move}
    elif isinstance(msg, PointMsg):
        fields = {"t": "p", "k": msg.tick, "w": msg.scorer, "sc": list(msg.score)}
    elif isinstance(msg, EndMsg):
        fields = {"t": "e", "why": msg.reason, "w": msg.winner, "sc": list(msg.score)}
    else:
        raise TypeError(f"not a game message: {msg!r}")
    return _packer.pack(fields)  # type: ignore[no-any-return]


def _int(fields: dict[Any, Any], key: str, lo: int, hi: int) -> int:
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadMessage(f"field {key!r} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def _score(fields: dict[Any, Any]) -> tuple[int, int]:
    sc = fields.get("sc")
    if (
        not isinstance(sc, list)
        or len(sc) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 10_000 for v in sc)
    ):
        raise BadMessage(f"field 'sc' must be two small integers, got {sc!r}")
    return (sc[0], sc[1])


def _winner(fields: dict[Any, Any]) -> int | None:
    w = fields.get("w")
    if w is not None and (isinstance(w, bool) or w not in (0, 1)):
        raise BadMessage(f"field 'w' must be 0, 1 or nil, got {w!r}")
    return w


def decode_message_untrusted(data: bytes) -> Message:
    """Decode bytes received from the peer.

    Raises:
        BadMessage: for anything that is not a well-formed game message; nothing else.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise BadMessage(f"message of {len(data)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        fields = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises ValueError, TypeError, ExtraData, StackError...
        # on peer data; whatever it is, the one failure mode of this decoder is BadMessage.
        raise BadMessage(f"not msgpack: {exc}") from None
    if not isinstance(fields, dict):
        raise BadMessage(f"message must be a map, got {type(fields).__name__}")
    kind = fields.get("t")
    if kind == "s":
        try:
            snapshot = snapshot_from_fields_untrusted(fields)
        except BadSnapshot as exc:
            raise BadMessage(f"bad snapshot: {exc}") from None
        return StateMsg(snapshot=snapshot, input_ack=_int(fields, "a", -1, 2**63))
    if kind == "i":
        move = fields.get("m")
        if isinstance(move, bool) or not isinstance(move, (int, float)) or not math.isfinite(move):
            raise BadMessage(f"field 'm' must be a finite number, got {move!r}")
        return InputMsg(seq=_int(fields, "n", 0, 2**63), move=max(-1.0, min(1.0, float(move))))
    if kind == "p":
        scorer = _winner(fields)
        if scorer is None:
            raise BadMessage("a point message needs a scorer 'w'")
        return PointMsg(tick=_int(fields, "k", 0, 2**53), scorer=scorer, score=_score(fields))
    if kind == "e":
        reason = fields.get("why")
        if reason not in END_REASONS:
            raise BadMessage(f"field 'why' must be one of {END_REASONS}, got {reason!r}")
        return EndMsg(reason=reason, score=_score(fields), winner=_winner(fields))
    raise BadMessage(f"unknown message type {kind!r}")
