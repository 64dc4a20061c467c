"""gamesdk/channel/connection: the sans-IO game channel.

``Channel`` is driven like every other gamesdk core (aioquic's contract): feed it datagrams with
``receive_datagram(data, addr, now)``, collect what to send with ``datagrams_to_send(now)``, call
``handle_timer(now)`` when ``get_timer()`` says so, and drain ``next_event()``. Applications call
``send(lane, data)`` and ``close()``. It never reads a clock, a socket or ``random``.

Receive order per datagram (netcode STANDARD.md): address -> size and header -> session id -> replay check
-> decrypt -> replay update -> frames. Every drop is counted in ``stats``.
"""

from __future__ import annotations

import enum
import hmac
import itertools
from collections import deque

from gamesdk.channel import packet as wire
from gamesdk.channel.config import Address, ChannelConfig, ChannelParams, Lane
from gamesdk.channel.crypto import AEAD_TAG_BYTES, InvalidTag, PacketCrypto, derive_keys
from gamesdk.channel.errors import MessageTooLarge
from gamesdk.channel.events import (
    ChannelClosed,
    ChannelEstablished,
    ChannelEvent,
    Disconnected,
    Interrupted,
    QosRestored,
    QosViolation,
    Resumed,
    SecurityError,
)
from gamesdk.channel.events import message_received as _message
from gamesdk.channel.reliability import (
    Fragment,
    FragmentAssembler,
    ReliableReceiver,
    ReliableSender,
    SequencedReceiver,
)
from gamesdk.channel.replay import REPLAY_WINDOW as _REPLAY_WINDOW
from gamesdk.channel.replay import ReplayWindow
from gamesdk.channel.stats import ChannelStats, RttEstimator
from gamesdk.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["Channel", "ChannelState"]

_ACK_DELAY_UNIT_S = 8e-6  # 8 µs units: a u16 covers 0.52 s
_ACK_DELAY_MAX = 0xFFFF
_MASK64 = (1 << 64) - 1
#: Packet-threshold loss detection: lost once 3 later packets are acked (RFC 9002 §6.1.1).
_PACKET_THRESHOLD = 3
#: Sent-packet records kept at most; older ones count as lost (their acks left the 64-bit bitfield anyway).
_MAX_SENT_RECORDS = 4096

_UNRELIABLE = wire.FrameType.UNRELIABLE.value
_SEQUENCED = wire.FrameType.SEQUENCED.value
_RELIABLE = wire.FrameType.RELIABLE.value
_FRAGMENT = wire.FrameType.FRAGMENT.value
_ACK = wire.ACK
_PING = wire.PING
_CONFIRM = wire.CONFIRM
_CLOSE = wire.CLOSE
_PING_FRAME = bytes((_PING,))
_MIN_DATAGRAM = wire.HEADER_BYTES + AEAD_TAG_BYTES
_HEADER_UNPACK = wire.HEADER.unpack_from
_HEADER_PACK = wire.HEADER.pack
_ACK_PACK = wire.ACK_FRAME.pack
_UNREL_PACK = wire.UNRELIABLE_HEAD.pack
_ACK_BODY_UNPACK = wire.ACK_BODY.unpack_from
_SEQ_BODY_UNPACK = wire.SEQ_BODY.unpack_from
_U16_UNPACK = wire.U16.unpack_from
_FAST_LANES = (wire.FrameType.UNRELIABLE.value, wire.FrameType.SEQUENCED.value)
_ACK_PLUS_SEQ = wire.ACK_FRAME_BYTES + wire.UNRELIABLE_FRAME_OVERHEAD
_VERSION_BITS = wire.VERSION << 6  # and key phase 0
_LANE_UNRELIABLE = Lane.UNRELIABLE
_LANE_SEQUENCED = Lane.SEQUENCED
_LANE_RELIABLE = Lane.RELIABLE


class ChannelState(enum.Enum):
    """Life cycle of a channel."""

    #: Keys derived, CONFIRM not yet received from the peer (data may already flow).
    CONFIRMING = "confirming"
    #: The peer proved it holds the same keys.
    ESTABLISHED = "established"
    #: Closed by CLOSE, ``close()`` or the disconnect timeout; nothing more is sent or accepted.
    CLOSED = "closed"
    #: Keys did not match (``SecurityError``); nothing more is sent or accepted.
    FAILED = "failed"


class _QosWatch:
    __slots__ = ("reported", "since")

    def __init__(self) -> None:
        self.since: float | None = None
        self.reported = False


class Channel:
    """One end of the direct encrypted UDP game channel (DESIGN section 6).

    Args:
        params: what the SDP exchange decided (keys, suite, session ids, peer address).
        config: tunables; the defaults follow DESIGN section 6.
        now: the current time, on the same clock as every later ``now``.

    Raises:
        RemoteProtocolError: the peer's public key is unusable (status hint 488).
    """

    def __init__(self, params: ChannelParams, config: ChannelConfig | None = None, *, now: float) -> None:
        self.params = params
        self.config = cfg = config or ChannelConfig()
        keys = derive_keys(params)
        crypto = PacketCrypto(params.suite, keys)
        self._seal = crypto.seal
        self._encrypt = crypto.encrypt
        self._decrypt = crypto.decrypt
        self._send_iv = crypto.send_iv
        self._recv_iv = crypto.recv_iv
        self._confirm_frame = wire.push_confirm(keys.confirm_send)
        self._confirm_expected = keys.confirm_receive
        self._peer: Address = (params.peer_addr[0], params.peer_addr[1])
        self._local_sid = params.local_session_id
        self._remote_sid = params.remote_session_id
        self._state = ChannelState.CONFIRMING
        self._alive = True
        self._events: deque[ChannelEvent] = deque()
        self._outbox: list[tuple[bytes, Address]] = []

        # Plaintext bytes per packet, and the largest message each lane takes in one packet when ACK and
        # CONFIRM share it.
        self._budget = cfg.max_datagram_bytes - wire.HEADER_BYTES - AEAD_TAG_BYTES
        fixed = wire.ACK_FRAME_BYTES + wire.CONFIRM_FRAME_BYTES
        #: Largest unreliable or sequenced message that travels in one datagram; larger ones are cut into
        #: up to 16 slices of ``_slice_bytes`` and delivered all or nothing.
        self.unfragmented_bytes = self._budget - fixed - wire.SEQUENCED_FRAME_OVERHEAD
        self._slice_bytes = self._budget - fixed - wire.FRAGMENT_FRAME_OVERHEAD
        #: Largest message ``send()`` takes on the unreliable and sequenced lanes.
        self.max_unreliable_bytes = self._slice_bytes * wire.MAX_UNRELIABLE_FRAGMENTS
        fragment_bytes = min(1024, self._budget - fixed - wire.RELIABLE_FRAME_OVERHEAD)
        max_fragments = -(-cfg.max_message_bytes // fragment_bytes)

        # sending
        self._pn = 0
        self._sent: dict[int, tuple[float, int, list[Fragment] | None]] = {}
        self._largest_acked = -1
        self._unreliable_out: deque[bytes] = deque()
        self._sequenced_out: deque[tuple[int, bytes]] = deque()
        self._sequenced_next = 0
        self._slices_out: deque[bytes] = deque()  # FRAGMENT frames, encoded
        self._unreliable_slice_seq = 0
        self._reliable_out = ReliableSender(fragment_bytes, cfg.max_inflight_fragments)
        self._last_send = now - cfg.keepalive_s  # first packet (CONFIRM) is due at once

        # receiving
        self._replay = ReplayWindow()
        self._largest_recv_time = now
        self._ack_pending = 0
        self._ack_deadline: float | None = None
        self._sequenced_in = SequencedReceiver()
        self._assembler = FragmentAssembler()
        self._reliable_in = ReliableReceiver(max_fragments)
        self._last_recv = now
        self._interrupted = False

        # CONFIRM: every packet carries it until one of them is acked
        self._confirm_acked = False
        self._auth_failures = 0
        self._auth_failure_reason = ""
        self._authenticated = False

        # stats
        self._rtt = RttEstimator()
        self.packets_in = self.packets_out = self.bytes_in = self.bytes_out = 0
        self.lost_out = self.acked_out = 0
        self.decrypt_failures = self.replays_dropped = self.wrong_sid_dropped = 0
        self.foreign_address_dropped = self.malformed_dropped = 0
        self._tick_start = now
        self._next_tick = now + cfg.stats_interval_s
        self._tick_base = (0, 0, 0, 0, -1, 0, 0)
        self._rates = (0.0, 0.0, 0.0, 0.0)
        self._loss_in = self._loss_out = 0.0
        self._qos: dict[str, _QosWatch] = {
            "rtt_ms": _QosWatch(),
            "jitter_ms": _QosWatch(),
            "loss_ppm": _QosWatch(),
        }

    # ------------------------------------------------------------------ application API

    @property
    def peer_addr(self) -> Address:
        return self._peer

    @property
    def state(self) -> ChannelState:
        """Where the channel is in its life cycle."""
        return self._state

    @state.setter
    def state(self, value: ChannelState) -> None:
        self._state = value
        self._alive = value is ChannelState.CONFIRMING or value is ChannelState.ESTABLISHED

    @property
    def is_open(self) -> bool:
        """True while the channel may send and receive (CONFIRMING or ESTABLISHED)."""
        return self._alive

    def send(self, lane: Lane | int, data: bytes) -> None:
        """Queue one message; it goes out with the next ``datagrams_to_send()``.

        Raises:
            MessageTooLarge: ``data`` exceeds ``max_unreliable_bytes`` (unreliable and sequenced lanes; above
                ``unfragmented_bytes`` a message is cut into slices delivered all or nothing) or
                ``ChannelConfig.max_message_bytes`` (reliable lane).
            LocalProtocolError: the channel is closed, or ``lane`` is not a ``Lane``.
        """
        if not self._alive:
            raise LocalProtocolError(f"cannot send on a {self.state.value} channel")
        size = len(data)
        if lane == _LANE_UNRELIABLE or lane == _LANE_SEQUENCED:
            if size > self.unfragmented_bytes:
                self._queue_slices(lane, bytes(data))
            elif lane == _LANE_UNRELIABLE:
                self._unreliable_out.append(bytes(data))
            else:
                self._sequenced_out.append((self._sequenced_next, bytes(data)))
                self._sequenced_next = (self._sequenced_next + 1) & 0xFFFF
        elif lane == _LANE_RELIABLE:
            limit = self.config.max_message_bytes
            if size > limit:
                raise MessageTooLarge(
                    f"{size}-byte message exceeds the {limit}-byte limit of the reliable lane", size, limit
                )
            self._reliable_out.push(bytes(data))
        else:
            raise LocalProtocolError(f"unknown lane {lane!r}; use gamesdk.channel.Lane")

    def _queue_slices(self, lane: Lane | int, data: bytes) -> None:
        size = len(data)
        if size > self.max_unreliable_bytes:
            raise MessageTooLarge(
                f"{size}-byte message exceeds the {self.max_unreliable_bytes}-byte limit of the "
                f"{Lane(lane).name.lower()} lane ({wire.MAX_UNRELIABLE_FRAGMENTS} datagrams); "
                "send it on the reliable lane",
                size,
                self.max_unreliable_bytes,
            )
        if lane == _LANE_SEQUENCED:
            seq = self._sequenced_next  # shares the lane's sequence, so staleness spans both forms
            self._sequenced_next = (seq + 1) & 0xFFFF
        else:
            seq = self._unreliable_slice_seq
            self._unreliable_slice_seq = (seq + 1) & 0xFFFF
        step = self._slice_bytes
        count = -(-size // step)
        for index in range(count):
            chunk = data[index * step : (index + 1) * step]
            self._slices_out.append(wire.push_fragment(int(lane), seq, index, count, chunk))

    def close(self, reason: str = "closed by application") -> None:
        """Send CLOSE ``close_copies`` times and close. Emits ``ChannelClosed(by_peer=False)``."""
        if not self._alive:
            return
        frame = wire.push_close(reason)
        for _ in range(self.config.close_copies):
            self._outbox.append(self._build(wire.PacketType.CLOSE, [frame], None, self._largest_recv_time))
        self.state = ChannelState.CLOSED
        self._events.append(ChannelClosed(by_peer=False, reason=reason))

    def next_event(self) -> ChannelEvent | None:
        """The oldest undelivered event, or ``None``."""
        return self._events.popleft() if self._events else None

    def events(self) -> list[ChannelEvent]:
        """All undelivered events, oldest first."""
        out = list(self._events)
        self._events.clear()
        return out

    # ------------------------------------------------------------------ receiving

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Handle one datagram from the socket. Bad datagrams are dropped and counted, never raised."""
        if not self._alive:
            return
        if addr != self._peer and tuple(addr[:2]) != self._peer:
            self.foreign_address_dropped += 1
            return
        # decode_header_untrusted inlined: this runs for every datagram
        if len(data) < _MIN_DATAGRAM:
            self.malformed_dropped += 1
            return
        first, sid, pn = _HEADER_UNPACK(data)
        if first & 0xE0 != _VERSION_BITS or not 1 <= first & 0x1F <= 3:
            self.malformed_dropped += 1
            return
        if sid != self._local_sid:
            self.wrong_sid_dropped += 1
            self._auth_failed("packets from the peer carry a session id we did not announce")
            return
        replay = self._replay
        highest = replay.highest
        # ReplayWindow.check inlined (per-packet path): new, or inside the window and not yet seen
        if pn <= highest and (highest - pn >= _REPLAY_WINDOW or (replay.bits >> (highest - pn)) & 1):
            self.replays_dropped += 1
            return
        try:
            plaintext = self._decrypt((self._recv_iv ^ pn).to_bytes(12, "big"), data[13:], data[:13])
        except InvalidTag:
            self.decrypt_failures += 1
            self._auth_failed("packets from the peer do not decrypt with our keys")
            return
        # Authentic from here on.
        self._authenticated = True
        if pn > highest:
            self._largest_recv_time = now
        replay.update(pn)
        self.packets_in += 1
        self.bytes_in += len(data)
        if self._interrupted:
            self._interrupted = False
            self._events.append(Resumed(silent_s=now - self._last_recv))
        self._last_recv = now
        try:
            # Fast path for the commonest packet of a game stream, ACK + one unreliable or sequenced
            # message filling the rest: the same checks as parse_frames_untrusted without building tuples.
            size = len(plaintext)
            if size >= _ACK_PLUS_SEQ and plaintext[0] == _ACK and plaintext[19] in _FAST_LANES:
                lane_byte = plaintext[19]
                seq = start = length = -1
                if lane_byte == _UNRELIABLE:
                    (length,) = _U16_UNPACK(plaintext, 20)
                    start = 22
                elif size >= 24:
                    seq, length = _SEQ_BODY_UNPACK(plaintext, 20)
                    start = 24
                if start + length == size:
                    largest, bits, delay = _ACK_BODY_UNPACK(plaintext, 1)
                    self._on_ack(largest, bits, delay, now)
                    if lane_byte == _UNRELIABLE:
                        self._events.append(_message(_LANE_UNRELIABLE, plaintext[22:]))
                    elif self._sequenced_in.accept(seq):
                        self._events.append(_message(_LANE_SEQUENCED, plaintext[24:]))
                    self._ack_pending += 1
                    if self._ack_deadline is None:
                        self._ack_deadline = now + self.config.max_ack_delay_s
                    return
            self._handle_frames(wire.parse_frames_untrusted(plaintext), now)
        except RemoteProtocolError as exc:
            # An authenticated peer that breaks the frame grammar is broken or hostile: stop talking to it.
            self.malformed_dropped += 1
            self._fail_closed(f"peer broke the channel protocol: {exc.message}")

    def _auth_failed(self, reason: str) -> None:
        if self._authenticated or self.state is not ChannelState.CONFIRMING:
            return  # after the first authentic packet, failures are just counted (forgery, corruption)
        self._auth_failures += 1
        self._auth_failure_reason = reason
        if self._auth_failures >= self.config.confirm_failures:
            self._security_error()

    def _security_error(self) -> None:
        # The peer holds other keys, so it cannot read a CLOSE from us; a last burst of CONFIRM packets lets
        # it count its own failures and report the same error instead of a mere timeout.
        for _ in range(self.config.confirm_failures):
            self._outbox.append(
                self._build(wire.PacketType.CONFIRM, [self._confirm_frame], None, self._last_send)
            )
        self.state = ChannelState.FAILED
        self._events.append(
            SecurityError(
                reason=f"{self._auth_failure_reason}: the two sides derived different keys, so one of the SDPs "
                "was changed on the way (or the peer is not who the SDP says); channel closed"
            )
        )

    def _fail_closed(self, reason: str) -> None:
        if self._alive:
            self.state = ChannelState.CLOSED
            self._events.append(ChannelClosed(by_peer=False, reason=reason))

    def _handle_frames(self, frames: list[wire.Frame], now: float) -> None:
        events = self._events
        eliciting = False
        for frame in frames:
            ftype = frame[0]
            if ftype == _UNRELIABLE:
                eliciting = True
                events.append(_message(_LANE_UNRELIABLE, frame[1]))  # type: ignore[arg-type]
            elif ftype == _ACK:
                self._on_ack(frame[1], frame[2], frame[3], now)  # type: ignore[arg-type]
            elif ftype == _SEQUENCED:
                eliciting = True
                if self._sequenced_in.accept(frame[1]):  # type: ignore[arg-type]
                    events.append(_message(_LANE_SEQUENCED, frame[2]))  # type: ignore[arg-type]
            elif ftype == _RELIABLE:
                eliciting = True
                for message in self._reliable_in.receive_untrusted(*frame[1:]):  # type: ignore[arg-type]
                    events.append(_message(_LANE_RELIABLE, message))
            elif ftype == _FRAGMENT:
                eliciting = True
                lane_byte, seq = frame[1], frame[2]
                whole = self._assembler.receive_untrusted(*frame[1:])  # type: ignore[arg-type]
                if whole is not None:
                    if lane_byte == _LANE_UNRELIABLE:
                        events.append(_message(_LANE_UNRELIABLE, whole))
                    elif self._sequenced_in.accept(seq):  # type: ignore[arg-type]
                        events.append(_message(_LANE_SEQUENCED, whole))
            elif ftype == _PING:
                eliciting = True
            elif ftype == _CONFIRM:
                eliciting = True
                if self.state is ChannelState.CONFIRMING:
                    value = frame[1]
                    if not isinstance(value, bytes) or not hmac.compare_digest(value, self._confirm_expected):
                        raise RemoteProtocolError("CONFIRM value does not match the transcript")
                    self.state = ChannelState.ESTABLISHED
                    # CONFIRM precedes every message frame in a packet, so this event comes first
                    events.append(ChannelEstablished())
            elif ftype == _CLOSE:
                if self._alive:
                    self.state = ChannelState.CLOSED
                    events.append(ChannelClosed(by_peer=True, reason=frame[1]))  # type: ignore[arg-type]
                return
        if eliciting:
            self._ack_pending += 1
            if self._ack_deadline is None:
                self._ack_deadline = now + self.config.max_ack_delay_s

    def _on_ack(self, largest: int, bits: int, delay_units: int, now: float) -> None:
        if largest >= self._pn:
            raise RemoteProtocolError(f"ACK for packet {largest} that was never sent")
        sent = self._sent
        if not sent:
            return
        first = next(iter(sent))
        if first > largest:
            return
        if first == largest:
            # the only outstanding packet up to `largest` is `largest` itself (ping-pong, steady streams)
            record = sent.pop(largest)
            if record[2] is not None:
                for frag in record[2]:
                    self._reliable_out.acked(frag)
            self.acked_out += 1
            self._confirm_acked = True
            if largest > self._largest_acked:
                self._largest_acked = largest
                if delay_units < _ACK_DELAY_MAX:
                    self._rtt.update(now - record[0], delay_units * _ACK_DELAY_UNIT_S)
            return
        done: list[int] = []
        newly_acked = lost = 0
        largest_record = None
        reliable = self._reliable_out
        # A packet is lost when 3 later ones were acked (RFC 9002 §6.1.1) and it is older than 9/8 RTT
        # (§6.1.2), so jitter-reordered bursts are not declared lost; beyond the 64-bit bitfield it is lost.
        rtt = self._rtt
        lost_before = now - 1.125 * max(rtt.smoothed or 0.0, rtt.latest or 0.0)
        for pn, record in sent.items():
            if pn > largest:
                break
            distance = largest - pn
            if distance == 0 or (distance <= 64 and (bits >> (distance - 1)) & 1):
                done.append(pn)
                newly_acked += 1
                frags = record[2]
                if frags is not None:
                    for frag in frags:
                        reliable.acked(frag)
                if distance == 0:
                    largest_record = record
            elif distance > 64 or (distance >= _PACKET_THRESHOLD and record[0] <= lost_before):
                done.append(pn)
                lost += 1
                frags = record[2]
                if frags is not None:
                    for frag in frags:
                        if not frag.acked:
                            frag.lost = True
        for pn in done:
            del sent[pn]
        if newly_acked:
            self.acked_out += newly_acked
            self._confirm_acked = True
        self.lost_out += lost
        if largest > self._largest_acked:
            self._largest_acked = largest
            if largest_record is not None and delay_units < _ACK_DELAY_MAX:
                self._rtt.update(now - largest_record[0], delay_units * _ACK_DELAY_UNIT_S)

    # ------------------------------------------------------------------ sending

    def _rto(self) -> float:
        rtt = self._rtt
        if rtt.smoothed is None:
            return self.config.initial_rto_s
        # RFC 9002 §6.2.1 PTO without backoff
        return max(rtt.smoothed + 4 * rtt.var + self.config.max_ack_delay_s, self.config.min_rto_s)

    def _build(
        self, ptype: int, frames: list[bytes], frags: list[Fragment] | None, now: float
    ) -> tuple[bytes, Address]:
        pn = self._pn
        self._pn = pn + 1
        header = _HEADER_PACK(_VERSION_BITS | ptype, self._remote_sid, pn)
        datagram = header + self._encrypt((self._send_iv ^ pn).to_bytes(12, "big"), b"".join(frames), header)
        sent = self._sent
        sent[pn] = (now, len(datagram), frags)
        if len(sent) > _MAX_SENT_RECORDS:
            # the peer stopped acking: drop the oldest half at once (one scan, not one per packet)
            for old_pn in list(itertools.islice(sent, _MAX_SENT_RECORDS // 2)):
                del sent[old_pn]
            self.lost_out += _MAX_SENT_RECORDS // 2
        self.packets_out += 1
        self.bytes_out += len(datagram)
        self._last_send = now
        return datagram, self._peer

    def _ack_frame(self, now: float) -> bytes:
        replay = self._replay
        delay = int((now - self._largest_recv_time) / _ACK_DELAY_UNIT_S)
        if delay > _ACK_DELAY_MAX or delay < 0:
            delay = _ACK_DELAY_MAX if delay > 0 else 0
        return _ACK_PACK(_ACK, replay.highest, (replay.bits >> 1) & _MASK64, delay)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Build every packet due now: queued messages, resends, acks, CONFIRM, keepalive.

        Returns ``(datagram, address)`` pairs to pass to ``sendto``. Call after ``send()``,
        ``receive_datagram()`` and ``handle_timer()``.
        """
        out = self._outbox
        self._outbox = []
        if not self._alive:
            return out
        # fast path: nothing queued, nothing to resend, no ack or keepalive due (most calls in a game loop)
        reliable = self._reliable_out
        if (
            not self._unreliable_out
            and not self._sequenced_out
            and not self._slices_out
            and not reliable.busy
            and self._confirm_acked
            and now < self._last_send + self.config.keepalive_s
            and (
                not self._ack_pending
                or (
                    self._ack_pending < self.config.ack_every_packets
                    and (self._ack_deadline is None or now < self._ack_deadline)
                )
            )
        ):
            return out
        budget = self._budget
        rto = self._rto() if reliable.busy else 0.0
        unreliable = self._unreliable_out
        sequenced = self._sequenced_out
        slices = self._slices_out
        while True:
            frames: list[bytes] = []
            # every packet carries an ACK frame once anything was received; it is built last (its delay
            # field wants the send time) but its room is kept first
            has_ack = self._replay.highest >= 0
            size = wire.ACK_FRAME_BYTES if has_ack else 0
            ptype = wire.PacketType.DATA
            must_send = False
            if not self._confirm_acked:
                frames.append(self._confirm_frame)
                size += len(self._confirm_frame)
                ptype = wire.PacketType.CONFIRM
            frags: list[Fragment] | None = None
            if reliable.busy:
                due = reliable.due(now, rto)
                for frag in due:
                    frame_size = wire.RELIABLE_FRAME_OVERHEAD + len(frag.data)
                    if size + frame_size > budget:
                        reliable.unsend(frag)
                        break
                    frames.append(wire.push_reliable(frag.seq & 0xFFFF, frag.index, frag.count, frag.data))
                    size += frame_size
                    reliable.sent(frag, now)
                    if frags is None:
                        frags = []
                    frags.append(frag)
                due.close()  # type: ignore[attr-defined]  # a generator: release it now
                must_send = frags is not None
            while sequenced:
                seq, data = sequenced[0]
                frame_size = wire.SEQUENCED_FRAME_OVERHEAD + len(data)
                if size + frame_size > budget:
                    break
                sequenced.popleft()
                frames.append(wire.push_sequenced(seq, data))
                size += frame_size
                must_send = True
            while unreliable:
                data = unreliable[0]
                frame_size = 3 + len(data)  # wire.push_unreliable inlined (per-packet path)
                if size + frame_size > budget:
                    break
                unreliable.popleft()
                frames.append(_UNREL_PACK(_UNRELIABLE, len(data)))
                frames.append(data)
                size += frame_size
                must_send = True
            while slices:
                frame = slices[0]
                if size + len(frame) > budget:
                    break
                slices.popleft()
                frames.append(frame)
                size += len(frame)
                must_send = True
            if not must_send:
                ack_due = self._ack_pending and (
                    self._ack_pending >= self.config.ack_every_packets
                    or (self._ack_deadline is not None and now >= self._ack_deadline)
                )
                keepalive_due = now >= self._last_send + self.config.keepalive_s
                if keepalive_due:
                    frames.append(_PING_FRAME)  # ack-eliciting, so idle peers still measure RTT
                if not (keepalive_due or ack_due):
                    break
            if has_ack:
                frames.insert(0, self._ack_frame(now))
                self._ack_pending = 0
                self._ack_deadline = None
            out.append(self._build(ptype, frames, frags, now))
            # another packet only if something is left over (reliable fragments go first, so if none were
            # in this packet, none are due)
            if not must_send or not (unreliable or sequenced or slices or frags is not None):
                break
        return out

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """When ``handle_timer()`` (and then ``datagrams_to_send()``) must run next; ``None`` when closed."""
        if not self._alive:
            return None
        cfg = self.config
        timer = self._last_send + cfg.keepalive_s
        if self._ack_deadline is not None and self._ack_deadline < timer:
            timer = self._ack_deadline
        if not self._interrupted and (self._authenticated or self._auth_failures):
            timer = min(timer, self._last_recv + cfg.interrupted_s)
        if cfg.disconnected_s is not None:
            timer = min(timer, self._last_recv + cfg.disconnected_s)
        timer = min(timer, self._next_tick)
        if self._reliable_out.busy:
            resend = self._reliable_out.next_timer(self._rto())
            if resend is not None and resend < timer:
                timer = resend
        return timer

    def handle_timer(self, now: float) -> None:
        """Run timeouts and the stats interval. Then call ``datagrams_to_send(now)``."""
        if not self._alive:
            return
        cfg = self.config
        silent = now - self._last_recv
        # compare against the same sums get_timer() returned, so float rounding cannot stall a timer
        if cfg.disconnected_s is not None and now >= self._last_recv + cfg.disconnected_s:
            self.state = ChannelState.CLOSED
            self._events.append(Disconnected(reason=f"no packet from the peer for {silent:.1f} s"))
            return
        if not self._authenticated and self._auth_failures and now >= self._last_recv + cfg.interrupted_s:
            # the peer talked, but never with our keys: that is a key mismatch, not a network outage
            self._security_error()
            return
        # Interrupted means traffic stopped; before the first authentic packet there was none to stop
        # (the peer may still be finishing the SIP exchange), so only the disconnect timeout applies.
        if self._authenticated and not self._interrupted and now >= self._last_recv + cfg.interrupted_s:
            self._interrupted = True
            self._events.append(Interrupted(silent_s=silent))
        if now >= self._next_tick:
            self._stats_tick(now)

    def _stats_tick(self, now: float) -> None:
        cfg = self.config
        elapsed = now - self._tick_start
        pin, pout, bin_, bout, highest, lost, acked = self._tick_base
        if elapsed > 0:
            self._rates = (
                (self.packets_in - pin) / elapsed,
                (self.packets_out - pout) / elapsed,
                (self.bytes_in - bin_) * 8 / 1000 / elapsed,
                (self.bytes_out - bout) * 8 / 1000 / elapsed,
            )
        expected = self._replay.highest - highest
        received = self.packets_in - pin
        self._loss_in = max(0, expected - received) / expected if expected > 0 else 0.0
        lost_delta = self.lost_out - lost
        settled = lost_delta + self.acked_out - acked
        self._loss_out = lost_delta / settled if settled > 0 else 0.0
        self._tick_base = (
            self.packets_in, self.packets_out, self.bytes_in, self.bytes_out,
            self._replay.highest, self.lost_out, self.acked_out,
        )  # fmt: skip
        self._tick_start = now
        self._next_tick = max(self._next_tick + cfg.stats_interval_s, now + cfg.stats_interval_s / 2)
        if self.state is ChannelState.ESTABLISHED and not self._interrupted:
            self._check_qos(now)

    def _check_qos(self, now: float) -> None:
        cfg = self.config
        rtt = self._rtt
        measures: list[tuple[str, float | None, float | None]] = [
            ("rtt_ms", None if rtt.smoothed is None else rtt.smoothed * 1000, cfg.max_rtt_ms),
            ("jitter_ms", rtt.jitter * 1000 if rtt.samples > 1 else None, cfg.max_jitter_ms),
            ("loss_ppm", max(self._loss_in, self._loss_out) * 1e6, cfg.max_loss_ppm),
        ]
        for metric, measured, limit in measures:
            if limit is None or measured is None:
                continue
            watch = self._qos[metric]
            if measured > limit:
                if watch.since is None:
                    watch.since = now
                if not watch.reported and now - watch.since >= cfg.qos_grace_s:
                    watch.reported = True
                    self._events.append(
                        QosViolation(
                            metric=metric, measured=measured, limit=limit, duration_s=now - watch.since
                        )
                    )
            else:
                if watch.reported:
                    self._events.append(QosRestored(metric=metric, measured=measured, limit=limit))
                watch.since = None
                watch.reported = False

    # ------------------------------------------------------------------ stats

    @property
    def stats(self) -> ChannelStats:
        """A snapshot of the measurements; rates and loss cover the last complete stats interval."""
        rtt = self._rtt
        ms = 1000.0
        pin, pout, kin, kout = self._rates
        return ChannelStats(
            rtt_ms=None if rtt.smoothed is None else rtt.smoothed * ms,
            rtt_min_ms=None if rtt.min is None else rtt.min * ms,
            rtt_max_ms=None if rtt.max is None else rtt.max * ms,
            jitter_ms=rtt.jitter * ms,
            loss_in=self._loss_in,
            loss_out=self._loss_out,
            packets_in=self.packets_in,
            packets_out=self.packets_out,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            packets_in_per_s=pin,
            packets_out_per_s=pout,
            kbps_in=kin,
            kbps_out=kout,
            pending_reliable_bytes=self._reliable_out.pending_bytes,
            pending_reliable_messages=self._reliable_out.pending_messages,
            retransmissions=self._reliable_out.retransmissions,
            packets_lost_out=self.lost_out,
            decrypt_failures=self.decrypt_failures,
            replays_dropped=self.replays_dropped,
            wrong_sid_dropped=self.wrong_sid_dropped,
            foreign_address_dropped=self.foreign_address_dropped,
            malformed_dropped=self.malformed_dropped,
            stale_dropped=self._sequenced_in.stale,
            partial_messages_dropped=self._assembler.dropped,
            qos_violations=tuple(metric for metric, watch in self._qos.items() if watch.reported),
        )
