"""gamesdk/channel/lanes: what ``send()`` queues, per lane, and the size limits it enforces.

Sizes follow from the datagram budget: a packet's plaintext holds the ACK frame and (until the peer acked
one) the CONFIRM frame besides the messages, so the limits below hold even in the first packets.
"""

from __future__ import annotations

import warnings
from collections import deque

from gamesdk.channel import packet as wire
from gamesdk.channel.config import Lane
from gamesdk.channel.errors import MessageTooLarge
from gamesdk.channel.reliability import ReliableSender
from gamesdk.errors import LocalProtocolError

__all__ = ["OutgoingLanes", "message_and_lane", "require_bytes"]

_UNRELIABLE = Lane.UNRELIABLE
_SEQUENCED = Lane.SEQUENCED
_RELIABLE = Lane.RELIABLE
#: Reliable slice size (yojimbo's 1 KiB block fragments), smaller if the datagram budget demands it.
RELIABLE_SLICE_BYTES = 1024


def message_and_lane(data: object, lane: object, stacklevel: int = 3) -> tuple[bytes, Lane | int]:
    """``send(data, lane)``'s arguments, with the pre-0.2 order ``send(lane, data)`` turned around.

    The two orders cannot be confused: a message is bytes, a lane an int. The old order still works, with a
    DeprecationWarning pointing at the caller, for one 0.x release.
    """
    if isinstance(data, int) and isinstance(lane, (bytes, bytearray, memoryview)):
        warnings.warn(
            "send(lane, data) is deprecated: the message comes first, send(data, lane)",
            DeprecationWarning,
            stacklevel=stacklevel,
        )
        return lane, data  # type: ignore[return-value]  # bytes-like; push() copies it to bytes
    return data, lane  # type: ignore[return-value]  # push() checks both, with a message that says what to pass


def require_bytes(data: object) -> None:
    """Raise a ``TypeError`` that says what to pass when a message is not bytes (a ``str``, most often)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"send() takes bytes, got {type(data).__name__}: encode it first (text.encode()) or use "
            "send_message(obj) for msgpack-encoded game messages"
        )


class OutgoingLanes:
    """The send queues of the three lanes; the packet builder drains them in order."""

    def __init__(self, plaintext_budget: int, max_message_bytes: int, max_inflight_fragments: int) -> None:
        fixed = wire.ACK_FRAME_BYTES + wire.CONFIRM_FRAME_BYTES
        #: Largest unreliable or sequenced message that travels in one datagram; larger ones are cut into
        #: up to 16 slices of ``slice_bytes`` and delivered all or nothing.
        self.unfragmented_bytes = plaintext_budget - fixed - wire.SEQUENCED_FRAME_OVERHEAD
        self.slice_bytes = plaintext_budget - fixed - wire.FRAGMENT_FRAME_OVERHEAD
        #: Largest message the unreliable and sequenced lanes take.
        self.max_unreliable_bytes = self.slice_bytes * wire.MAX_UNRELIABLE_FRAGMENTS
        self.max_message_bytes = max_message_bytes
        fragment_bytes = min(RELIABLE_SLICE_BYTES, plaintext_budget - fixed - wire.RELIABLE_FRAME_OVERHEAD)
        #: Most fragments one reliable message may have (the receiver refuses more).
        self.max_reliable_fragments = -(-max_message_bytes // fragment_bytes)
        self.unreliable: deque[bytes] = deque()
        self.sequenced: deque[tuple[int, bytes]] = deque()
        #: FRAGMENT frames, already encoded.
        self.slices: deque[bytes] = deque()
        self.reliable = ReliableSender(fragment_bytes, max_inflight_fragments)
        self._sequenced_next = 0
        self._unreliable_slice_seq = 0

    def push(self, lane: Lane | int, data: bytes) -> None:
        """Queue one message; raises ``MessageTooLarge``, ``LocalProtocolError`` (unknown lane) or ``TypeError``."""
        require_bytes(data)
        size = len(data)
        if lane == _UNRELIABLE or lane == _SEQUENCED:
            if size > self.unfragmented_bytes:
                self._push_slices(lane, bytes(data))
            elif lane == _UNRELIABLE:
                self.unreliable.append(bytes(data))
            else:
                self.sequenced.append((self._sequenced_next, bytes(data)))
                self._sequenced_next = (self._sequenced_next + 1) & 0xFFFF
        elif lane == _RELIABLE:
            limit = self.max_message_bytes
            if size > limit:
                raise MessageTooLarge(
                    f"{size}-byte message exceeds the {limit}-byte limit of the reliable lane", size, limit
                )
            self.reliable.push(bytes(data))
        else:
            raise LocalProtocolError(f"unknown lane {lane!r}; use gamesdk.Lane (UNRELIABLE, SEQUENCED or RELIABLE)")

    def queued_bytes(self) -> int:
        """Bytes queued on every lane and not yet sent (reliable: not yet sent once)."""
        return (
            sum(len(d) for d in self.unreliable)
            + sum(len(d) for _, d in self.sequenced)
            + sum(len(f) for f in self.slices)
            + self.reliable.unsent_bytes()
        )

    def _push_slices(self, lane: Lane | int, data: bytes) -> None:
        size = len(data)
        if size > self.max_unreliable_bytes:
            raise MessageTooLarge(
                f"{size}-byte message exceeds the {self.max_unreliable_bytes}-byte limit of the "
                f"{Lane(lane).name.lower()} lane ({wire.MAX_UNRELIABLE_FRAGMENTS} datagrams); "
                "send it on the reliable lane",
                size,
                self.max_unreliable_bytes,
            )
        if lane == _SEQUENCED:
            seq = self._sequenced_next  # shares the lane's sequence, so staleness spans both forms
            self._sequenced_next = (seq + 1) & 0xFFFF
        else:
            seq = self._unreliable_slice_seq
            self._unreliable_slice_seq = (seq + 1) & 0xFFFF
        step = self.slice_bytes
        count = -(-size // step)
        for index in range(count):
            chunk = data[index * step : (index + 1) * step]
            self.slices.append(wire.push_fragment(int(lane), seq, index, count, chunk))
