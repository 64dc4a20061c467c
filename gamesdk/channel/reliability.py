"""gamesdk/channel/reliability: the reliable-ordered and sequenced lanes.

Reliable messages are cut into fragments, each with a u16 sequence number; the fragments of one message have
consecutive numbers. A fragment is *re-included in later packets* until a packet carrying it is acked
(Gaffer On Games, "Reliable Ordered Messages"), never resent as a stored packet. The receiver accepts
sequence numbers within a 1024-fragment window and delivers whole messages in order, exactly once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from gamesdk.errors import RemoteProtocolError

__all__ = [
    "WINDOW",
    "Fragment",
    "FragmentAssembler",
    "ReliableReceiver",
    "ReliableSender",
    "SequencedReceiver",
]

#: Receive window in fragments; the sender never has more than this between oldest unacked and newest.
WINDOW = 1024
_SEQ_MASK = 0xFFFF


class Fragment:
    """One reliable unit: a whole small message or one slice of a large one."""

    __slots__ = ("acked", "count", "data", "index", "last_sent", "lost", "sends", "seq")

    def __init__(self, seq: int, index: int, count: int, data: bytes) -> None:
        #: Absolute sequence number (the wire carries the low 16 bits).
        self.seq = seq
        self.index = index
        self.count = count
        self.data = data
        #: When a packet carrying it was last sent, ``None`` before the first time.
        self.last_sent: float | None = None
        #: A packet carrying it was declared lost: resend at the next chance.
        self.lost = False
        self.acked = False
        self.sends = 0


class ReliableSender:
    """Queue of reliable fragments: unsent, then in flight until acked."""

    def __init__(self, fragment_bytes: int, max_inflight: int) -> None:
        self.fragment_bytes = fragment_bytes
        self.max_inflight = max_inflight
        self._next_seq = 0
        self._unsent: deque[Fragment] = deque()
        #: In flight (sent at least once, not acked), in sequence order.
        self._inflight: dict[int, Fragment] = {}
        #: Bytes of reliable data not yet acknowledged by the peer.
        self.pending_bytes = 0
        self.pending_messages = 0
        #: Fragments unsent or unacknowledged; a plain attribute because the send path checks it per packet.
        self.busy = 0
        self.retransmissions = 0

    def push(self, data: bytes) -> None:
        """Queue one message (already checked against the size limit)."""
        size = self.fragment_bytes
        count = max(1, -(-len(data) // size))
        seq = self._next_seq
        for index in range(count):
            self._unsent.append(Fragment(seq + index, index, count, data[index * size : (index + 1) * size]))
        self._next_seq = seq + count
        self.busy += count
        self.pending_bytes += len(data)
        self.pending_messages += 1

    def unsent_bytes(self) -> int:
        return sum(len(frag.data) for frag in self._unsent)

    def due(self, now: float, rto: float) -> Iterator[Fragment]:
        """Fragments to put into the packet being built: lost or timed-out ones first, then new ones."""
        for frag in list(self._inflight.values()):
            if frag.acked:
                continue
            last = frag.last_sent
            if frag.lost or (last is not None and now >= last + rto):
                yield frag
        inflight = self._inflight
        unsent = self._unsent
        while unsent and len(inflight) < self.max_inflight:
            frag = unsent[0]
            if inflight and frag.seq - next(iter(inflight)) >= WINDOW:
                return  # the peer could not place it in its window yet
            unsent.popleft()
            inflight[frag.seq] = frag
            yield frag

    def sent(self, frag: Fragment, now: float) -> None:
        if frag.sends:
            self.retransmissions += 1
        frag.sends += 1
        frag.last_sent = now
        frag.lost = False

    def unsend(self, frag: Fragment) -> None:
        """A fragment ``due()`` yielded did not fit into the packet: keep it for the next one."""
        if frag.last_sent is None and frag.sends == 0:
            del self._inflight[frag.seq]
            self._unsent.appendleft(frag)

    def acked(self, frag: Fragment) -> None:
        if frag.acked:
            return
        frag.acked = True
        self.busy -= 1
        self._inflight.pop(frag.seq, None)
        self.pending_bytes -= len(frag.data)
        if frag.index == frag.count - 1:
            self.pending_messages -= 1

    def next_timer(self, rto: float) -> float | None:
        """When the oldest in-flight fragment times out."""
        earliest: float | None = None
        for frag in self._inflight.values():
            last = frag.last_sent
            if last is not None and (earliest is None or last < earliest):
                earliest = last
        return None if earliest is None else earliest + rto


class ReliableReceiver:
    """Reassembles and orders reliable fragments; each message comes out exactly once."""

    def __init__(self, max_fragments: int) -> None:
        self.max_fragments = max_fragments
        #: Absolute sequence number of the next fragment to deliver.
        self.next_seq = 0
        self._buffer: dict[int, tuple[int, int, bytes]] = {}
        self.duplicates = 0

    def receive_untrusted(self, wire_seq: int, index: int, count: int, data: bytes) -> list[bytes]:
        """Accept one fragment; returns the messages it completed (maybe none).

        Raises ``RemoteProtocolError`` when the peer's fragments contradict each other.
        """
        if count > self.max_fragments:
            raise RemoteProtocolError(
                f"message of {count} fragments exceeds the limit of {self.max_fragments}"
            )
        offset = (wire_seq - self.next_seq) & _SEQ_MASK
        if offset >= WINDOW:
            self.duplicates += 1  # already delivered (a retransmission whose ack was lost)
            return []
        seq = self.next_seq + offset
        buffer = self._buffer
        if seq in buffer:
            self.duplicates += 1
            return []
        buffer[seq] = (index, count, data)
        messages: list[bytes] = []
        while self.next_seq in buffer:
            head = self.next_seq
            first_index, total, _ = buffer[head]
            if first_index != 0:
                raise RemoteProtocolError(f"reliable message starts with fragment {first_index}")
            if any(head + k not in buffer for k in range(1, total)):
                break
            parts = []
            for k in range(total):
                part_index, part_count, part = buffer.pop(head + k)
                if part_index != k or part_count != total:
                    raise RemoteProtocolError("reliable fragments of one message disagree on their layout")
                parts.append(part)
            messages.append(parts[0] if total == 1 else b"".join(parts))
            self.next_seq = head + total
        return messages


class SequencedReceiver:
    """Drops anything not newer than the newest message delivered (serial arithmetic, RFC 1982)."""

    __slots__ = ("last", "stale")

    def __init__(self) -> None:
        self.last: int | None = None
        self.stale = 0

    def accept(self, seq: int) -> bool:
        last = self.last
        if last is not None and not 0 < ((seq - last) & _SEQ_MASK) < 0x8000:
            self.stale += 1
            return False
        self.last = seq
        return True


class FragmentAssembler:
    """All-or-nothing reassembly of unreliable and sequenced messages cut into 2..16 slices.

    Nothing is resent on these lanes, so a message whose slices never all arrive is dropped when newer
    partial messages push it out (at most ``max_partial`` are kept).
    """

    def __init__(self, max_partial: int = 32) -> None:
        self.max_partial = max_partial
        self._partial: dict[tuple[int, int], tuple[int, dict[int, bytes]]] = {}
        #: Partial messages given up on.
        self.dropped = 0

    def receive_untrusted(self, lane: int, seq: int, index: int, count: int, data: bytes) -> bytes | None:
        """Accept one slice; returns the whole message when this slice completed it."""
        key = (lane, seq)
        entry = self._partial.get(key)
        if entry is None:
            if len(self._partial) >= self.max_partial:
                del self._partial[next(iter(self._partial))]
                self.dropped += 1
            entry = (count, {})
            self._partial[key] = entry
        elif entry[0] != count:
            raise RemoteProtocolError("fragments of one unreliable message disagree on their count")
        parts = entry[1]
        parts[index] = data
        if len(parts) < count:
            return None
        del self._partial[key]
        return b"".join(parts[i] for i in range(count))
