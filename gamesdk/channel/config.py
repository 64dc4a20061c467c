"""gamesdk/channel/config: the values a channel is built from.

``ChannelParams`` carries what the SDP exchange decided (role, suite, keys, session ids, peer address);
``ChannelConfig`` carries the tunables, with units in their names. Both are frozen values: build them once
and hand them to ``Channel``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gamesdk.address import Address
from gamesdk.errors import LocalProtocolError

__all__ = ["SUITES", "ChannelConfig", "ChannelParams", "Lane", "PrivateKey", "Role"]


#: AEAD suites in `a=gsdk-sec` order, strongest (and default) first (DESIGN section 3).
SUITES: tuple[str, ...] = ("chacha20-poly1305", "aes-256-gcm")


class Role(str, enum.Enum):
    """Which side of the SDP offer/answer this endpoint was; names the key direction (DESIGN section 6)."""

    #: Sent the offer (the caller): sends with the o2a key, receives with a2o.
    OFFER = "offer"
    #: Sent the answer (the callee): sends with the a2o key, receives with o2a.
    ANSWER = "answer"


class Lane(enum.IntEnum):
    """Delivery guarantees a message can ask for. The value is the lane byte on the wire."""

    #: Fire and forget: may be lost, duplicated copies are dropped, may arrive out of order.
    UNRELIABLE = 0
    #: May be lost, never stale: a message older than one already delivered on this lane is dropped
    #: (ENet's default mode; for snapshots and inputs).
    SEQUENCED = 1
    #: Delivered exactly once and in order, retransmitted until acked; large messages are fragmented.
    RELIABLE = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelConfig:
    """Channel tunables. Defaults follow DESIGN section 6 and research/channel.md (c)."""

    #: Send at least one packet after this much send silence (netcode sends 10 Hz keepalives; also keeps
    #: NAT bindings open).
    keepalive_s: float = 0.1
    #: ``Interrupted`` after this much receive silence (GGPO's two-tier notify, first tier).
    interrupted_s: float = 1.0
    #: ``Disconnected`` after this much receive silence; ``None`` switches it off for debugging
    #: (netcode / yojimbo / GameNetworkingSockets all default to 10 s).
    disconnected_s: float | None = 10.0
    #: Largest UDP payload ever sent: netcode's payload cap and QUIC's minimum path MTU (RFC 9000 §14).
    max_datagram_bytes: int = 1200
    #: Largest message accepted by ``send()`` on the reliable lane (yojimbo's block limit).
    max_message_bytes: int = 256 * 1024
    #: Acknowledge an ack-eliciting packet no later than this (RFC 9000 §13.2.1 uses 25 ms; a game wants
    #: faster loss repair).
    max_ack_delay_s: float = 0.005
    #: Send an ack-only packet at once after this many unacknowledged ack-eliciting packets, so bursts do
    #: not fall out of the 64-bit ack bitfield (research/channel.md (c)).
    ack_every_packets: int = 16
    #: Resend timer before the first RTT sample (yojimbo's fixed resend time) and its floor.
    initial_rto_s: float = 0.1
    min_rto_s: float = 0.02
    #: Ceiling of the resend timer after exponential back-off (each timeout in a row doubles it; an ack
    #: resets it). While ``Interrupted`` nothing is resent at all, only keepalives probe.
    max_rto_s: float = 2.0
    #: Pace everything sent to this rate, kbit/s (the SDK sets the peer's ``b=AS``, the rate its region
    #: reserved); ``None``: unpaced. The rate never grows above it; see ``pacing_burst_s``.
    send_kbps: float | None = None
    #: Token-bucket depth in seconds of ``send_kbps`` (at least two full datagrams): what may leave at once
    #: after a quiet spell.
    pacing_burst_s: float = 0.1
    #: Reliable fragments in flight at once: bounds bursts to what a default Linux socket buffer holds.
    max_inflight_fragments: int = 64
    #: Key-mismatch deadline: if this long after opening (or after the first datagram that failed to
    #: authenticate, whichever is later) not one packet from the peer authenticated but some failed to,
    #: the keys differ (``SecurityError``). Failures alone never close a channel: anyone can spoof them.
    confirm_timeout_s: float = 2.0
    #: Path checks (RFC 9000 section 8.2): first probe interval to an unvalidated address, doubling up to
    #: ``max_probe_interval_s``; a new address (roaming) gets at most ``max_probes`` probes, the SDP's
    #: address is probed until it answers or the disconnect timeout ends the channel.
    probe_interval_s: float = 0.1
    max_probe_interval_s: float = 1.0
    max_probes: int = 10
    #: Consent freshness (RFC 7675): a path check about every ``consent_interval_s`` on the validated path;
    #: with no answer for ``consent_timeout_s`` the channel stops sending and reports ``Disconnected``
    #: (not while ``disconnected_s`` is ``None``: a peer paused in a debugger answers nothing).
    consent_interval_s: float = 5.0
    consent_timeout_s: float = 30.0
    #: Key update (RFC 9001 section 6) after this many packets under one key: half of AES-GCM's
    #: confidentiality limit of 2^23 packets (RFC 9001 section 6.6). Past twice this (less a margin) without
    #: the peer taking up the update, the channel closes rather than exceed the limit.
    key_update_packets: int = 1 << 22
    #: Packets that failed to authenticate before the channel closes (RFC 9001 section 6.6's integrity
    #: limit); ``None``: the suite's (2^36 for ChaCha20-Poly1305, 2^52 for AES-GCM).
    integrity_limit: int | None = None
    #: Interval over which rates and loss are measured and QoS is checked.
    stats_interval_s: float = 1.0
    #: Copies of CLOSE sent on ``close()`` (netcode sends 10; 3 survives 20 % independent loss 99 % of the time).
    close_copies: int = 3
    #: Negotiated QoS bounds (`a=gsdk-qos`); ``None`` disables the check for that measure.
    max_rtt_ms: float | None = None
    max_jitter_ms: float | None = None
    max_loss_ppm: int | None = None
    #: A bound must stay broken this long before ``QosViolation`` is reported.
    qos_grace_s: float = 3.0

    def __post_init__(self) -> None:
        if not 128 <= self.max_datagram_bytes <= 65507:
            raise LocalProtocolError(f"max_datagram_bytes must be 128..65507, got {self.max_datagram_bytes}")
        if not 0 < self.max_message_bytes <= 1024 * 1024:
            raise LocalProtocolError(f"max_message_bytes must be 1..1048576, got {self.max_message_bytes}")
        if self.keepalive_s <= 0 or self.interrupted_s <= 0:
            raise LocalProtocolError("keepalive_s and interrupted_s must be positive")
        if self.disconnected_s is not None and self.disconnected_s <= 0:
            raise LocalProtocolError("disconnected_s must be positive or None")
        if not 1 <= self.max_inflight_fragments <= 512:
            raise LocalProtocolError("max_inflight_fragments must be 1..512")
        if self.send_kbps is not None and not self.send_kbps > 0:
            raise LocalProtocolError(f"send_kbps must be positive or None, got {self.send_kbps}")
        if self.pacing_burst_s <= 0 or self.max_rto_s <= 0:
            raise LocalProtocolError("pacing_burst_s and max_rto_s must be positive")
        if self.close_copies < 1 or self.ack_every_packets < 1:
            raise LocalProtocolError("close_copies and ack_every_packets must be >= 1")
        if self.confirm_timeout_s <= 0:
            raise LocalProtocolError("confirm_timeout_s must be positive")
        if not 0 < self.probe_interval_s <= self.max_probe_interval_s or self.max_probes < 1:
            raise LocalProtocolError("need 0 < probe_interval_s <= max_probe_interval_s and max_probes >= 1")
        if not 0 < self.consent_interval_s < self.consent_timeout_s:
            raise LocalProtocolError("need 0 < consent_interval_s < consent_timeout_s")
        if not 16 <= self.key_update_packets <= 1 << 22:
            raise LocalProtocolError(
                f"key_update_packets must be 16..4194304 (half AES-GCM's 2^23 limit), got {self.key_update_packets}"
            )
        if self.integrity_limit is not None and self.integrity_limit < 1:
            raise LocalProtocolError("integrity_limit must be >= 1 or None")


class PrivateKey:
    """An X25519 private key that keys exactly one channel, then is gone.

    ``ChannelParams`` wraps the raw bytes it is given in one of these. The first ``Channel`` built from the
    params takes the key (:meth:`take`), which wipes this copy; a second one is refused, because two
    channels on the same keys would reuse (key, nonce) pairs. The value never appears in ``repr``, and
    copying or pickling is refused, so it cannot leak into logs, events or session history.
    """

    __slots__ = ("_key",)

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, (bytes, bytearray)) or len(raw) != 32:
            raise LocalProtocolError("local_private_key must be 32 bytes")
        self._key: bytearray | None = bytearray(raw)

    @property
    def used(self) -> bool:
        """True once a channel took the key."""
        return self._key is None

    def take(self) -> bytes:
        """The raw key, once; this copy is wiped.

        Raises:
            LocalProtocolError: the key already keyed a channel.
        """
        key = self._key
        if key is None:
            raise LocalProtocolError(
                "these ChannelParams already keyed a channel: key material is single use (a second channel "
                "on the same keys would reuse nonces); make new params from a fresh key pair"
            )
        raw = bytes(key)
        key[:] = bytes(len(key))  # best effort: the bytes the caller passed in are its own to drop
        self._key = None
        return raw

    def __repr__(self) -> str:
        return f"PrivateKey(<{'used' if self._key is None else 'unused'}, not shown>)"

    def __copy__(self) -> PrivateKey:
        return self  # a copy of the params shares the one key, so it is still used only once

    def __deepcopy__(self, memo: object) -> PrivateKey:
        return self

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a channel private key cannot be pickled")


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelParams:
    """What the SDP offer/answer decided, as plain values.

    The SDK fills this from the two SDPs: ``suite`` from the answer's `a=gsdk-sec`, the public keys from
    `a=gsdk-kx`, ``local_session_id`` from our own `a=gsdk-sid` (the id the peer puts in packets it sends
    to us), ``remote_session_id`` from the peer's, ``peer_addr`` from the peer's c=/m= lines, and
    ``transcript_hash`` from :func:`gamesdk.channel.transcript_hash`.
    """

    role: Role | str
    suite: str
    #: Our X25519 private key, 32 raw bytes (see :func:`gamesdk.channel.generate_keypair`), kept as a
    #: single-use :class:`PrivateKey`: the channel built from these params takes it.
    local_private_key: bytes | PrivateKey
    #: The peer's X25519 public key from its `a=gsdk-kx`, 32 raw bytes.
    remote_public_key: bytes
    #: ``transcript_hash(...)`` over both SDPs' gsdk lines, both public keys and the dialog ids.
    transcript_hash: bytes
    local_session_id: int
    remote_session_id: int
    peer_addr: Address

    def __post_init__(self) -> None:
        try:
            role = Role(self.role)
        except ValueError:
            raise LocalProtocolError(f"role must be 'offer' or 'answer', got {self.role!r}") from None
        object.__setattr__(self, "role", role)
        if self.suite not in SUITES:
            raise LocalProtocolError(f"unknown AEAD suite {self.suite!r}; known: {', '.join(SUITES)}")
        if not isinstance(self.local_private_key, PrivateKey):
            object.__setattr__(self, "local_private_key", PrivateKey(self.local_private_key))
        for name in ("remote_public_key", "transcript_hash"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 32:
                raise LocalProtocolError(f"{name} must be 32 bytes")
        for name in ("local_session_id", "remote_session_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
                raise LocalProtocolError(f"{name} must be an unsigned 32-bit integer, got {value!r}")
        host, port = self.peer_addr
        if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
            raise LocalProtocolError(f"peer_addr must be (host, port), got {self.peer_addr!r}")
