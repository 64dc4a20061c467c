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
from collections import deque

from gamesdk.address import Address
from gamesdk.channel import packet as wire
from gamesdk.channel.config import ChannelConfig, ChannelParams, Lane
from gamesdk.channel.crypto import AEAD_LIMITS, AEAD_TAG_BYTES, InvalidTag, PhaseKeys, derive_keys
from gamesdk.channel.events import (
    ChannelClosed,
    ChannelEstablished,
    ChannelEvent,
    Disconnected,
    Interrupted,
    PathChanged,
    Resumed,
    SecurityError,
)
from gamesdk.channel.events import message_received as _message
from gamesdk.channel.lanes import OutgoingLanes, message_and_lane, require_bytes
from gamesdk.channel.pacing import TokenBucket
from gamesdk.channel.paths import PathChallenges
from gamesdk.channel.qos_monitor import IntervalMeter, QosMonitor
from gamesdk.channel.recovery import ACK_DELAY_MAX, ACK_DELAY_UNIT_S, MAX_SENT_RECORDS, Recovery
from gamesdk.channel.reliability import (
    Fragment,
    FragmentAssembler,
    ReliableReceiver,
    SequencedReceiver,
)
from gamesdk.channel.replay import REPLAY_WINDOW as _REPLAY_WINDOW
from gamesdk.channel.replay import ReplayWindow
from gamesdk.channel.stats import ChannelStats
from gamesdk.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["Channel", "ChannelState"]

_MASK64 = (1 << 64) - 1
_INF = float("inf")

_UNRELIABLE = wire.FrameType.UNRELIABLE.value
_SEQUENCED = wire.FrameType.SEQUENCED.value
_RELIABLE = wire.FrameType.RELIABLE.value
_FRAGMENT = wire.FrameType.FRAGMENT.value
_ACK = wire.ACK
_PING = wire.PING
_CONFIRM = wire.CONFIRM
_CLOSE = wire.CLOSE
_PATH_CHALLENGE = wire.PATH_CHALLENGE
_PATH_RESPONSE = wire.PATH_RESPONSE
_KEY_PHASE = wire.KEY_PHASE_BIT
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
#: At most this many PATH_CHALLENGEs from the peer wait for their response at once.
_MAX_PENDING_RESPONSES = 8
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
        keys = derive_keys(params)  # once: it takes the params' private key
        suite = params.suite
        # Key phases (RFC 9001 section 6): the current keys each way, the receive keys of the previous phase
        # (kept briefly for reordered packets) and of the next (made on demand, when a packet shows it).
        self._send_keys = PhaseKeys(suite, keys.send.key, keys.send.iv, keys.send_secret)
        self._recv_keys = PhaseKeys(suite, keys.receive.key, keys.receive.iv, keys.receive_secret)
        self._recv_prev: PhaseKeys | None = None
        self._recv_prev_until = 0.0
        self._recv_next: PhaseKeys | None = None
        self._recv_phase_start = 0  # first packet number seen in the current receive phase
        self._encrypt = self._send_keys.aead.encrypt
        self._decrypt = self._recv_keys.aead.decrypt
        self._send_iv = self._send_keys.iv
        self._recv_iv = self._recv_keys.iv
        self._send_bits = _VERSION_BITS
        self._recv_bits = _VERSION_BITS
        confidentiality, integrity = AEAD_LIMITS[suite]
        self._key_packets = min(cfg.key_update_packets, confidentiality // 2)
        #: Packets sealed under one key at most: past this without a key update the channel closes.
        self._key_hard_limit = min(2 * self._key_packets, confidentiality) - min(1024, self._key_packets // 2)
        self._send_phase_start = 0
        self._key_update_at = self._key_packets
        self._key_limit_at = self._key_hard_limit
        self._integrity_limit = cfg.integrity_limit if cfg.integrity_limit is not None else integrity
        self._failed_opens = 0  # from any address, for the integrity limit
        #: Key updates so far (either side starting them).
        self.key_updates = 0
        self._confirm_frame = wire.push_confirm(keys.confirm_send)
        self._confirm_expected = keys.confirm_receive
        self._peer: Address = (params.peer_addr[0], params.peer_addr[1])
        # Paths (RFC 9000 sections 8 and 9): nothing but probes and answers to the peer's address until a
        # PATH_CHALLENGE we sent there came back (or an ICE check says so); then consent checks keep it.
        self._paths = PathChallenges(keys.path_key)
        del keys
        self._validated = False
        self._consent_ok = True
        self._may_send = False
        self._path_in = self._path_out = 0  # authentic bytes from / answers to the unvalidated peer address
        self._probe_at = now
        self._probe_gap = cfg.probe_interval_s
        self._probes = 0
        self._candidate: Address | None = None
        self._cand_probe_at = _INF
        self._cand_gap = cfg.probe_interval_s
        self._cand_probes = 0
        self._consent_at = _INF
        self._consent_until = _INF
        self._responses: list[tuple[bytes, Address]] = []
        self._path_due = now
        self._rx_addr: Address = self._peer
        #: Times the channel moved to a new peer address (roaming) and probes sent.
        self.path_changes = 0
        self.probes_sent = 0
        self._local_sid = params.local_session_id
        self._remote_sid = params.remote_session_id
        self._state = ChannelState.CONFIRMING
        self._alive = True
        self._events: deque[ChannelEvent] = deque()
        self._outbox: list[tuple[bytes, Address]] = []

        # plaintext bytes per packet
        self._budget = cfg.max_datagram_bytes - wire.HEADER_BYTES - AEAD_TAG_BYTES
        self._lanes = lanes = OutgoingLanes(self._budget, cfg.max_message_bytes, cfg.max_inflight_fragments)
        #: Largest unreliable or sequenced message in one datagram (larger ones are sliced).
        self.unfragmented_bytes = lanes.unfragmented_bytes
        #: Largest message ``send()`` takes on the unreliable and sequenced lanes.
        self.max_unreliable_bytes = lanes.max_unreliable_bytes

        # sending
        self._pn = 0
        self._unreliable_out = lanes.unreliable
        self._sequenced_out = lanes.sequenced
        self._slices_out = lanes.slices
        self._reliable_out = lanes.reliable
        self._recovery = Recovery(cfg, self._reliable_out)
        #: The token bucket at the negotiated rate (None: unpaced) and the rate it was configured with.
        self._pacer: TokenBucket | None = None
        self._full_rate = 0.0
        if cfg.send_kbps is not None:
            self._full_rate = cfg.send_kbps * 125.0  # kbit/s -> bytes/s
            burst = max(2 * cfg.max_datagram_bytes, self._full_rate * cfg.pacing_burst_s)
            self._pacer = TokenBucket(self._full_rate, burst, now)
        #: When held-back data may leave (the pacer's balance is positive again), None when nothing waits.
        self._paced_at: float | None = None
        #: Times data waited for the pacer.
        self.paced_holds = 0
        #: A lingering close: the reason, and when it gives up waiting for acks.
        self._closing: str | None = None
        self._linger_until = 0.0
        self._sent = self._recovery.sent
        self._last_send = now - cfg.keepalive_s  # first packet (CONFIRM) is due at once

        # receiving
        self._replay = ReplayWindow()
        self._largest_recv_time = now
        self._ack_pending = 0
        self._ack_deadline: float | None = None
        self._sequenced_in = SequencedReceiver()
        self._assembler = FragmentAssembler()
        self._reliable_in = ReliableReceiver(lanes.max_reliable_fragments)
        self._last_recv = now
        self._interrupted = False

        # CONFIRM: every packet carries it until one of them is acked
        self._confirm_acked = False
        # Key mismatch: decided only at a deadline, and only if nothing authenticated by then
        self._auth_failures = 0
        self._authenticated = False
        self._opened_at = now
        self._mismatch_deadline = now + cfg.confirm_timeout_s

        # stats
        self._rtt = self._recovery.rtt
        self.packets_in = self.packets_out = self.bytes_in = self.bytes_out = 0
        self.decrypt_failures = self.replays_dropped = self.wrong_sid_dropped = 0
        self.foreign_address_dropped = self.malformed_dropped = 0
        self._meter = IntervalMeter(now, cfg.stats_interval_s)
        self._qos = QosMonitor(cfg)

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
        if not self._alive:
            self._may_send = False

    @property
    def is_open(self) -> bool:
        """True while the channel may send and receive (CONFIRMING or ESTABLISHED)."""
        return self._alive

    def send(self, data: bytes, lane: Lane | int = Lane.RELIABLE) -> None:
        """Queue one message on ``lane``; it goes out with the next ``datagrams_to_send()``.

        Raises:
            TypeError: ``data`` is not bytes (a ``str``: encode it, or send a game message with
                ``pack_message``).
            MessageTooLarge: ``data`` exceeds ``max_unreliable_bytes`` (unreliable and sequenced lanes; above
                ``unfragmented_bytes`` a message is cut into slices delivered all or nothing) or
                ``ChannelConfig.max_message_bytes`` (reliable lane).
            LocalProtocolError: the channel is closed, or ``lane`` is not a ``Lane``.
        """
        if isinstance(data, int):  # the pre-0.2 order, send(lane, data)
            data, lane = message_and_lane(data, lane)
        if not self._alive:
            require_bytes(data)  # misuse first: a str is refused the same way whatever the state
            raise LocalProtocolError(f"cannot send on a {self.state.value} channel")
        if self._closing is not None:
            require_bytes(data)
            raise LocalProtocolError("cannot send on a closing channel (close() is waiting for acks)")
        self._lanes.push(lane, data)

    def close(
        self, reason: str = "closed by application", *, now: float | None = None, linger_s: float = 0.0,
        by_peer: bool = False,
    ) -> None:
        """Close: send what is queued, then CLOSE ``close_copies`` times. Emits ``ChannelClosed(by_peer=False)``.

        ``by_peer=True`` when the peer ended the session by other means (its BYE came before, or instead of,
        its CLOSE): the ``ChannelClosed`` then says ``by_peer=True``, as the session's ``SessionEnded`` does.

        With ``linger_s > 0`` (and ``now``) the channel first lingers (GameNetworkingSockets' linger mode):
        it refuses new messages, keeps receiving, and keeps sending until every queued reliable message is
        acknowledged or ``linger_s`` has passed; then the CLOSE leaves with ``datagrams_to_send()``.
        Without ``now`` queued messages still leave, stamped with the last send time.
        """
        if not self._alive or self._closing is not None:
            return
        if linger_s > 0 and now is not None and (self._reliable_out.busy or self._has_queued()):
            self._closing = reason
            self._linger_until = now + linger_s
            return
        self._finish_close(reason, self._last_send if now is None else now, by_peer)

    def _has_queued(self) -> bool:
        return bool(self._unreliable_out or self._sequenced_out or self._slices_out)

    def _finish_close(self, reason: str, now: float, by_peer: bool = False) -> None:
        self._closing = None
        if self._has_queued() or self._reliable_out.busy:
            # the queued messages go first, so the peer reads them before the CLOSE
            self._outbox = self.datagrams_to_send(now)
        frame = wire.push_close(reason)
        for _ in range(self.config.close_copies):
            self._outbox.append(self._build(wire.PacketType.CLOSE, [frame], None, now))
        self.state = ChannelState.CLOSED
        self._events.append(ChannelClosed(by_peer=by_peer, reason=reason))

    @property
    def closing(self) -> bool:
        """True while a lingering ``close()`` waits for the peer to acknowledge the reliable lane."""
        return self._closing is not None

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
        foreign = False
        if addr != self._peer:
            addr = (addr[0], addr[1])
            if addr != self._peer:
                if self._state is not ChannelState.ESTABLISHED:
                    self.foreign_address_dropped += 1  # no roaming before the keys are confirmed (QUIC)
                    return
                foreign = True
        # decode_header_untrusted inlined: this runs for every datagram
        if len(data) < _MIN_DATAGRAM:
            self.malformed_dropped += 1
            return
        first, sid, pn = _HEADER_UNPACK(data)
        other_phase = False
        if first & 0xE0 != self._recv_bits or not 1 <= first & 0x1F <= 3:
            if first & 0xC0 != _VERSION_BITS or not 1 <= first & 0x1F <= 3:
                self.malformed_dropped += 1
                return
            other_phase = True  # a key update, or a reordered packet of the previous phase
        if sid != self._local_sid:
            # not for this channel (or forged): dropped and counted, never a reason to give up (QUIC, WireGuard)
            if foreign:
                self.foreign_address_dropped += 1
                return
            self.wrong_sid_dropped += 1
            self._auth_failed(now)
            return
        replay = self._replay
        highest = replay.highest
        # ReplayWindow.check inlined (per-packet path): new, or inside the window and not yet seen
        if pn <= highest and (highest - pn >= _REPLAY_WINDOW or (replay.bits >> (highest - pn)) & 1):
            self.replays_dropped += 1
            return
        try:
            if other_phase:
                plaintext = self._open_other_phase(pn, data, now)
            else:
                plaintext = self._decrypt((self._recv_iv ^ pn).to_bytes(12, "big"), data[13:], data[:13])
        except InvalidTag:
            if foreign:
                self.foreign_address_dropped += 1
            else:
                self.decrypt_failures += 1
                self._auth_failed(now)
            self._failed_opens += 1
            if self._failed_opens >= self._integrity_limit:
                self._fail_closed(
                    f"AEAD integrity limit: {self._failed_opens} packets failed to authenticate "
                    "(RFC 9001 section 6.6); no more packets are accepted on these keys"
                )
            return
        # Authentic from here on.
        self._authenticated = True
        if pn > highest:
            self._largest_recv_time = now
        replay.update(pn)
        self.packets_in += 1
        self.bytes_in += len(data)
        if foreign:
            # roaming (NAT rebinding): the newest packet from a new address starts a path check there; the
            # channel moves only once it passes, so a replayed or forwarded packet cannot move it
            self._on_new_address(addr, len(data), pn > highest, now)
        elif not self._validated:
            self._path_in += len(data)
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
            self._rx_addr = addr
            self._handle_frames(wire.parse_frames_untrusted(plaintext), now)
        except RemoteProtocolError as exc:
            # An authenticated peer that breaks the frame grammar is broken or hostile: stop talking to it.
            self.malformed_dropped += 1
            self._fail_closed(f"peer broke the channel protocol: {exc.message}")

    def _auth_failed(self, now: float) -> None:
        # Only remembered: anyone can put the peer's address on a datagram, so no number of failures proves
        # anything by itself. The verdict waits for the key-mismatch deadline (handle_timer).
        if not self._authenticated and self._auth_failures == 0:
            self._mismatch_deadline = max(self._mismatch_deadline, now + self.config.confirm_timeout_s)
        self._auth_failures += 1

    def _security_error(self, now: float) -> None:
        # The peer holds other keys, so it cannot read a CLOSE from us; a last burst of CONFIRM packets lets
        # it see failures of its own and reach the same verdict instead of a mere timeout.
        for _ in range(self.config.close_copies):
            self._outbox.append(
                self._build(wire.PacketType.CONFIRM, [self._confirm_frame], None, self._last_send)
            )
        self.state = ChannelState.FAILED
        waited = now - self._opened_at
        self._events.append(
            SecurityError(
                reason=f"the keys differ: no packet from the peer authenticated in {waited:.1f} s while "
                f"{self._auth_failures} from its address failed to (wrong session id or wrong key), so the "
                "two sides derived different keys: one of the SDPs was changed on the way, or the peer is "
                "not who the SDP says; channel closed"
            )
        )

    def _fail_closed(self, reason: str) -> None:
        if self._alive:
            self.state = ChannelState.CLOSED
            self._may_send = False
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
            elif ftype == _PATH_CHALLENGE:
                eliciting = True
                if len(self._responses) < _MAX_PENDING_RESPONSES:
                    self._responses.append((frame[1], self._rx_addr))  # type: ignore[arg-type]
            elif ftype == _PATH_RESPONSE:
                self._on_path_response(frame[1], now)  # type: ignore[arg-type]
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
        if self._recovery.on_ack_untrusted(largest, bits, delay_units, now, self._pn):
            self._confirm_acked = True  # every packet before this carried CONFIRM

    # ------------------------------------------------------------------ sending

    def _build(
        self, ptype: int, frames: list[bytes], frags: list[Fragment] | None, now: float, to: Address | None = None
    ) -> tuple[bytes, Address]:
        pn = self._pn
        self._pn = pn + 1
        header = _HEADER_PACK(self._send_bits | ptype, self._remote_sid, pn)
        datagram = header + self._encrypt((self._send_iv ^ pn).to_bytes(12, "big"), b"".join(frames), header)
        sent = self._sent
        sent[pn] = (now, len(datagram), frags)
        if len(sent) > MAX_SENT_RECORDS:
            self._recovery.trim()
        self.packets_out += 1
        self.bytes_out += len(datagram)
        self._last_send = now
        if self._pacer is not None:
            self._pacer.charge(len(datagram), now)
        return datagram, self._peer if to is None else to

    def _ack_frame(self, now: float) -> bytes:
        replay = self._replay
        delay = int((now - self._largest_recv_time) / ACK_DELAY_UNIT_S)
        if delay > ACK_DELAY_MAX or delay < 0:
            delay = ACK_DELAY_MAX if delay > 0 else 0
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
        if self._responses or now >= self._path_due:
            self._path_packets(now, out)
        if not self._may_send:
            # unvalidated address or no consent: no game data, no keepalives (acks ride on path packets)
            self._ack_pending = 0
            self._ack_deadline = None
            if self._closing is not None and now >= self._linger_until:
                self._finish_close(self._closing, now)
                out.extend(self._outbox)
                self._outbox = []
            return out
        if self._pn >= self._key_update_at:
            self._maybe_update_keys()
            if not self._alive:
                return out
        if self._closing is not None:
            self._packets(now, out)
            if not self._reliable_out.busy or now >= self._linger_until:
                self._finish_close(self._closing, now)
                out.extend(self._outbox)
                self._outbox = []
            return out
        return self._packets(now, out)

    def _packets(self, now: float, out: list[tuple[bytes, Address]]) -> list[tuple[bytes, Address]]:
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
        # Interrupted: the peer is silent, so resending into the void only adds load; keepalives probe
        resending = reliable.busy and not self._interrupted
        rto = self._recovery.rto() if resending else 0.0
        timed_out = False
        if resending:
            oldest = reliable.next_timer(rto)
            timed_out = oldest is not None and now >= oldest
        pacer = self._pacer
        was_held = self._paced_at is not None
        self._paced_at = None
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
            if pacer is not None and not pacer.may_send(now):
                # over the negotiated rate: data waits (counted once per hold), acks and keepalives still go
                if self._paced_at is None and not was_held:
                    self.paced_holds += 1
                self._paced_at = pacer.ready_at(now)
                sending = False
            else:
                sending = True
            if sending and resending:
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
            while sending and sequenced:
                seq, data = sequenced[0]
                frame_size = wire.SEQUENCED_FRAME_OVERHEAD + len(data)
                if size + frame_size > budget:
                    break
                sequenced.popleft()
                frames.append(wire.push_sequenced(seq, data))
                size += frame_size
                must_send = True
            while sending and unreliable:
                data = unreliable[0]
                frame_size = 3 + len(data)  # wire.push_unreliable inlined (per-packet path)
                if size + frame_size > budget:
                    break
                unreliable.popleft()
                frames.append(_UNREL_PACK(_UNRELIABLE, len(data)))
                frames.append(data)
                size += frame_size
                must_send = True
            while sending and slices:
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
        if timed_out:
            self._recovery.on_timeout()  # exponential back-off of the resend timer (RFC 9002 6.2.1)
        return out

    # ------------------------------------------------------------------ key update (RFC 9001 section 6)

    def _open_other_phase(self, pn: int, data: bytes, now: float) -> bytes:
        """Open a packet whose key phase bit is not the current one; raises ``InvalidTag``."""
        prev = self._recv_prev
        if prev is not None and pn < self._recv_phase_start:
            if now >= self._recv_prev_until:
                raise InvalidTag  # the previous phase's keys are gone: too old to accept
            return prev.aead.decrypt((prev.iv ^ pn).to_bytes(12, "big"), data[13:], data[:13])
        nxt = self._recv_next
        if nxt is None:
            nxt = self._recv_next = self._recv_keys.next()
        plaintext = nxt.aead.decrypt((nxt.iv ^ pn).to_bytes(12, "big"), data[13:], data[:13])
        # authentic under the next keys: the peer moved to the next phase
        self._recv_prev = self._recv_keys
        self._recv_prev_until = now + 3 * self._recovery.rto()  # RFC 9001 6.5: about three PTOs
        self._recv_keys = nxt
        self._recv_next = None
        self._recv_phase_start = pn
        self._decrypt = nxt.aead.decrypt
        self._recv_iv = nxt.iv
        self._recv_bits = _VERSION_BITS | (_KEY_PHASE if nxt.phase & 1 else 0)
        if nxt.phase > self._send_keys.phase:
            self._next_send_keys()  # the peer started it: answer in the new phase too
        return plaintext

    def _seal(self, pn: int, header: bytes, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` as packet ``pn`` under the current send keys (tests forge packets with it)."""
        return self._encrypt((self._send_iv ^ pn).to_bytes(12, "big"), plaintext, header)

    def _maybe_update_keys(self) -> None:
        """Start a key update once enough packets were sealed under the current key, if the peer is ready."""
        if (
            self._state is ChannelState.ESTABLISHED
            and self._send_keys.phase == self._recv_keys.phase  # the peer reached our phase
            and self._recovery.largest_acked >= self._send_phase_start  # and acked a packet of it
        ):
            self._next_send_keys()
        elif self._pn >= self._key_limit_at:
            self._fail_closed(
                f"AEAD confidentiality limit: {self._pn - self._send_phase_start} packets under one key and "
                "the peer never took up a key update (RFC 9001 section 6.6)"
            )

    def _next_send_keys(self) -> None:
        keys = self._send_keys = self._send_keys.next()
        self._encrypt = keys.aead.encrypt
        self._send_iv = keys.iv
        self._send_bits = _VERSION_BITS | (_KEY_PHASE if keys.phase & 1 else 0)
        self._send_phase_start = self._pn
        self._key_update_at = self._pn + self._key_packets
        self._key_limit_at = self._pn + self._key_hard_limit
        self.key_updates += 1

    def update_keys(self) -> None:
        """Start a key update now (normally automatic after ``ChannelConfig.key_update_packets``).

        Raises:
            LocalProtocolError: not possible yet (not established, or the previous update is not complete).
        """
        if not (
            self._state is ChannelState.ESTABLISHED
            and self._send_keys.phase == self._recv_keys.phase
            and self._recovery.largest_acked >= self._send_phase_start
        ):
            raise LocalProtocolError(
                "a key update needs an established channel whose peer acknowledged a packet of the current phase"
            )
        self._next_send_keys()

    @property
    def key_phase(self) -> int:
        """Key updates of the sending direction so far (the header carries the low bit)."""
        return self._send_keys.phase

    # ------------------------------------------------------------------ paths (RFC 9000 sections 8, 9; RFC 7675)

    @property
    def peer_validated(self) -> bool:
        """True once the peer's address passed a path check (ours or ICE's): game data may go there."""
        return self._validated

    def path_validated(self, addr: Address, now: float) -> None:
        """A connectivity check with ``addr`` succeeded outside the channel (an ICE check): game data may go
        there, consent is fresh, and if ``addr`` is not the current peer address the channel moves there."""
        addr = (addr[0], addr[1])
        if addr != self._peer:
            self._move_to(addr, now)
        self._validated = True
        self._consent_ok = True
        self._fresh_consent(now)

    def consent_lost(self, now: float) -> None:
        """The peer withdrew consent (RFC 7675, an ICE agent's verdict): stop sending until
        ``path_validated`` or one of the channel's own path checks passes again."""
        self._consent_ok = False
        self._may_send = False
        self._paths.forget()  # answers to checks sent before the verdict do not restore it

    def _fresh_consent(self, now: float) -> None:
        cfg = self.config
        self._consent_until = now + cfg.consent_timeout_s
        if self._consent_at == _INF:
            self._consent_at = now + cfg.consent_interval_s
            self._path_due = min(self._path_due, self._consent_at)
        self._may_send = self._validated and self._consent_ok and self._alive

    def _on_path_response(self, data: bytes, now: float) -> None:
        addr = self._paths.answered(data)
        if addr is None:
            return  # not a challenge of ours (stale, or already answered)
        if addr == self._peer:
            self._validated = True
            self._consent_ok = True
            self._fresh_consent(now)
        elif addr == self._candidate:
            self._move_to(addr, now)
            self._validated = True
            self._fresh_consent(now)

    def _move_to(self, addr: Address, now: float) -> None:
        old = self._peer
        self._peer = addr
        self._candidate = None
        self._cand_probe_at = _INF
        self._path_in = self._path_out = 0
        self.path_changes += 1
        self._events.append(PathChanged(old_addr=old, new_addr=addr))

    def _on_new_address(self, addr: Address, size: int, newest: bool, now: float) -> None:
        if addr == self._candidate or not newest:
            return  # already being checked, or a reordered packet from an address the peer left
        self._candidate = addr
        self._cand_probes = 0
        self._cand_gap = self.config.probe_interval_s
        self._cand_probe_at = now
        self._path_due = now

    def _path_frames(self, now: float, confirm: bool) -> list[bytes]:
        frames: list[bytes] = []
        if self._replay.highest >= 0:
            frames.append(self._ack_frame(now))
            self._ack_pending = 0
            self._ack_deadline = None
        if confirm and not self._confirm_acked:
            frames.append(self._confirm_frame)
        return frames

    def _path_packets(self, now: float, out: list[tuple[bytes, Address]]) -> None:
        """Answers to the peer's PATH_CHALLENGEs, probes of unvalidated addresses, consent checks.

        Before an address is validated it gets only probes (at most ``max_probes`` per check, backing off)
        and answers; answers never exceed three times the bytes received from it (RFC 9000 section 8.1).
        """
        cfg = self.config
        peer = self._peer
        responses, self._responses = self._responses, []
        if not self._consent_ok:
            responses = []  # stopped sending (RFC 7675): not even answers
        for data, addr in responses:
            frames = self._path_frames(now, addr == peer)
            frames.append(wire.push_path_response(data))
            if addr == peer and not self._validated:
                frames.append(wire.push_path_challenge(self._paths.new(peer)))  # a triggered check
                size = wire.HEADER_BYTES + AEAD_TAG_BYTES + sum(len(f) for f in frames)
                if self._path_out + size > 3 * self._path_in:
                    continue  # over the 3x allowance of this unvalidated address
                self._path_out += size
            # an answer elsewhere (a challenge that came from another address) is smaller than three times
            # the datagram that asked for it, and goes once per challenge
            ptype = wire.PacketType.CONFIRM if self._confirm_frame in frames else wire.PacketType.DATA
            out.append(self._build(ptype, frames, None, now, addr))
        if not self._validated and now >= self._probe_at:
            # the SDP's address: probed until it answers or the disconnect timeout ends the channel (the peer
            # may still be in the SIP exchange); backing off to one small probe per max_probe_interval_s
            frames = self._path_frames(now, True)
            frames.append(wire.push_path_challenge(self._paths.new(peer)))
            out.append(self._build(wire.PacketType.CONFIRM, frames, None, now))
            self._probes += 1
            self.probes_sent += 1
            self._probe_at = now + self._probe_gap
            self._probe_gap = min(2 * self._probe_gap, cfg.max_probe_interval_s)
        candidate = self._candidate
        if candidate is not None and now >= self._cand_probe_at:
            if self._cand_probes < cfg.max_probes:
                frames = self._path_frames(now, False)
                frames.append(wire.push_path_challenge(self._paths.new(candidate)))
                out.append(self._build(wire.PacketType.DATA, frames, None, now, candidate))
                self._cand_probes += 1
                self.probes_sent += 1
                self._cand_probe_at = now + self._cand_gap
                self._cand_gap = min(2 * self._cand_gap, cfg.max_probe_interval_s)
            else:
                self._candidate = None  # nobody answers there: it was not the peer
                self._cand_probe_at = _INF
        if self._validated and now >= self._consent_at and self._consent_ok:
            frames = self._path_frames(now, False)
            frames.append(wire.push_path_challenge(self._paths.new(peer)))
            out.append(self._build(wire.PacketType.DATA, frames, None, now))
            # RFC 7675 section 5.1: about every 5 s, randomised by 0.8-1.2 (from the challenge bytes)
            self._consent_at = now + cfg.consent_interval_s * self._paths.jitter()
        self._path_due = min(
            self._probe_at if not self._validated else _INF, self._cand_probe_at, self._consent_at
        )

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """When ``handle_timer()`` (and then ``datagrams_to_send()``) must run next; ``None`` when closed."""
        if not self._alive:
            return None
        cfg = self.config
        if self._may_send:
            timer = self._last_send + cfg.keepalive_s
            if self._ack_deadline is not None and self._ack_deadline < timer:
                timer = self._ack_deadline
        else:
            timer = self._linger_until if self._closing is not None else _INF
        timer = min(timer, self._path_due)
        if self._responses and self._last_recv < timer:
            timer = self._last_recv
        if cfg.disconnected_s is not None:  # off for debugging, like the disconnect timeout
            timer = min(timer, self._consent_until)
        if self._authenticated:
            if not self._interrupted:
                timer = min(timer, self._last_recv + cfg.interrupted_s)
        elif self._auth_failures:
            timer = min(timer, self._mismatch_deadline)
        if cfg.disconnected_s is not None:
            timer = min(timer, self._last_recv + cfg.disconnected_s)
        timer = min(timer, self._meter.next_tick)
        if self._reliable_out.busy and not self._interrupted and self._may_send:
            resend = self._reliable_out.next_timer(self._recovery.rto())
            if resend is not None and resend < timer:
                timer = resend
        if self._paced_at is not None and self._paced_at < timer and self._may_send:
            timer = self._paced_at
        if self._closing is not None and self._linger_until < timer:
            timer = self._linger_until
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
        if now >= self._consent_until and cfg.disconnected_s is not None:
            # RFC 7675: the peer no longer answers our path checks, so it no longer consents to our traffic
            self.state = ChannelState.CLOSED
            self._events.append(
                Disconnected(
                    reason=f"consent expired: the peer answered no path check for {cfg.consent_timeout_s:.0f} s "
                    "(RFC 7675); stopped sending"
                )
            )
            return
        if not self._authenticated and self._auth_failures and now >= self._mismatch_deadline:
            # datagrams came from the peer's address, none with our keys, and the deadline passed: a key
            # mismatch, not a network outage (spoofed ones before the peer's first cannot cause this)
            self._security_error(now)
            return
        # Interrupted means traffic stopped; before the first authentic packet there was none to stop
        # (the peer may still be finishing the SIP exchange), so only the disconnect timeout applies.
        if self._authenticated and not self._interrupted and now >= self._last_recv + cfg.interrupted_s:
            self._interrupted = True
            self._events.append(Interrupted(silent_s=silent))
        if now >= self._meter.next_tick:
            self._stats_tick(now)

    def _stats_tick(self, now: float) -> None:
        meter = self._meter
        meter.tick(
            now,
            self.config.stats_interval_s,
            (
                self.packets_in, self.packets_out, self.bytes_in, self.bytes_out,
                self._replay.highest, self._recovery.lost, self._recovery.acked,
            ),
        )  # fmt: skip
        pacer = self._pacer
        if pacer is not None:
            # Congestion response: the rate never grows above the reservation; loss above the negotiated bound
            # (1 % without one) halves it, down to a quarter, and each clean interval gives back an eighth.
            bound = (self.config.max_loss_ppm or 10_000) / 1e6
            if meter.loss_out > bound:
                pacer.rate = max(pacer.rate / 2, self._full_rate / 4)
            elif pacer.rate < self._full_rate:
                pacer.rate = min(self._full_rate, pacer.rate + self._full_rate / 8)
        if self._state is ChannelState.ESTABLISHED and not self._interrupted:
            rtt = self._rtt
            measured = {
                "rtt_ms": None if rtt.smoothed is None else rtt.smoothed * 1000,
                "jitter_ms": rtt.jitter * 1000 if rtt.samples > 1 else None,
                "loss_ppm": max(meter.loss_in, meter.loss_out) * 1e6,
            }
            self._events.extend(self._qos.check(now, measured))

    # ------------------------------------------------------------------ stats

    @property
    def stats(self) -> ChannelStats:
        """A snapshot of the measurements; rates and loss cover the last complete stats interval."""
        rtt = self._rtt
        ms = 1000.0
        meter = self._meter
        return ChannelStats(
            rtt_ms=None if rtt.smoothed is None else rtt.smoothed * ms,
            rtt_min_ms=None if rtt.min is None else rtt.min * ms,
            rtt_max_ms=None if rtt.max is None else rtt.max * ms,
            jitter_ms=rtt.jitter * ms,
            loss_in=meter.loss_in,
            loss_out=meter.loss_out,
            packets_in=self.packets_in,
            packets_out=self.packets_out,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            packets_in_per_s=meter.pps_in,
            packets_out_per_s=meter.pps_out,
            kbps_in=meter.kbps_in,
            kbps_out=meter.kbps_out,
            pending_reliable_bytes=self._reliable_out.pending_bytes,
            pending_reliable_messages=self._reliable_out.pending_messages,
            retransmissions=self._reliable_out.retransmissions,
            packets_lost_out=self._recovery.lost,
            decrypt_failures=self.decrypt_failures,
            replays_dropped=self.replays_dropped,
            wrong_sid_dropped=self.wrong_sid_dropped,
            foreign_address_dropped=self.foreign_address_dropped,
            malformed_dropped=self.malformed_dropped,
            stale_dropped=self._sequenced_in.stale,
            partial_messages_dropped=self._assembler.dropped,
            qos_violations=self._qos.violations,
            send_limit_kbps=None if self._pacer is None else self._pacer.rate / 125.0,
            paced_holds=self.paced_holds,
            queued_bytes=self._lanes.queued_bytes(),
            rto_backoff=self._recovery.backoff,
            key_phase=self._send_keys.phase,
            path_validated=self._validated,
            path_changes=self.path_changes,
        )
