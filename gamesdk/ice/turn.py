"""A sans-IO TURN client for one allocation (RFC 8656 over UDP): Allocate, Refresh, CreatePermission, ChannelBind,
Send and Data indications, ChannelData. Messages are encoded and signed with aioice's ``stun`` module.

The owner (the ICE agent) feeds it every datagram from the TURN server's address and sends what
:meth:`TurnAllocation.datagrams_to_send` returns to that address.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from gamesdk.address import Address
from gamesdk.ice import stun
from gamesdk.ice.servers import TurnServer

__all__ = ["TurnAllocation", "TurnState", "is_channel_data"]


#: UDP transport in REQUESTED-TRANSPORT (protocol number in the first byte).
_UDP = 17 << 24
_FIRST_CHANNEL = 0x4000
_PERMISSION_REFRESH_S = 240.0  # permissions last 300 s (RFC 8656 section 9)
_CHANNEL_REFRESH_S = 480.0  # channel bindings last 600 s (RFC 8656 section 12)
_RTO_S = 0.25
_MAX_TRIES = 6


def is_channel_data(data: bytes) -> bool:
    """First byte 64-79 (RFC 7983): a ChannelData message, when it comes from the TURN server's address."""
    return len(data) >= 4 and 0x40 <= data[0] <= 0x4F


class TurnState:
    ALLOCATING = "allocating"
    READY = "ready"
    FAILED = "failed"


@dataclass(slots=True)
class _Txn:
    kind: str
    message: stun.Message
    peer: Address | None
    sent_at: float
    tries: int = 1
    rto: float = _RTO_S


@dataclass(slots=True)
class TurnAllocation:
    """One allocation at ``server``; ``relayed`` is our relayed transport address once READY."""

    server: TurnServer
    random_bytes: Callable[[int], bytes]
    state: str = TurnState.ALLOCATING
    relayed: Address | None = None
    mapped: Address | None = None
    error: str = ""
    _realm: str = ""
    _nonce: bytes = b""
    _key: bytes = b""
    _lifetime_s: float = 600.0
    _refresh_at: float | None = None
    _txns: dict[bytes, _Txn] = field(default_factory=dict)
    _out: list[bytes] = field(default_factory=list)
    #: peer IP -> when its permission needs refreshing (None while being created).
    _permissions: dict[str, float | None] = field(default_factory=dict)
    #: peer address -> (channel number, bound?, refresh at).
    _channels: dict[Address, tuple[int, bool, float]] = field(default_factory=dict)
    _by_channel: dict[int, Address] = field(default_factory=dict)
    _auth_retries: int = 0

    # -- life cycle -----------------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        self._request("allocate", stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": _UDP}, now, sign=False)

    def close(self, now: float) -> None:
        """Release the allocation (Refresh with LIFETIME 0)."""
        if self.state == TurnState.READY:
            self._request("release", stun.Method.REFRESH, {"LIFETIME": 0}, now)
        self.state = TurnState.FAILED
        self.error = self.error or "closed"

    # -- peers ----------------------------------------------------------------------------------------------

    def permit(self, peer_ip: str, now: float) -> None:
        """Install a permission for ``peer_ip`` (needed before anything from or to it is relayed)."""
        if peer_ip in self._permissions or self.state != TurnState.READY:
            return
        self._permissions[peer_ip] = None
        self._request("permission", stun.Method.CREATE_PERMISSION, {"XOR-PEER-ADDRESS": (peer_ip, 0)}, now)

    def has_permission(self, peer_ip: str) -> bool:
        return self._permissions.get(peer_ip) is not None

    def bind_channel(self, peer: Address, now: float) -> None:
        """Bind a channel to ``peer`` so data goes as 4-byte-header ChannelData instead of Send indications."""
        if peer in self._channels or self.state != TurnState.READY or len(self._channels) >= 0x3FFF:
            return
        number = _FIRST_CHANNEL + len(self._channels)
        self._channels[peer] = (number, False, now + _CHANNEL_REFRESH_S)
        self._by_channel[number] = peer
        self._request("channel", stun.Method.CHANNEL_BIND,
                      {"CHANNEL-NUMBER": number, "XOR-PEER-ADDRESS": peer}, now, peer=peer)

    def wrap(self, data: bytes, peer: Address) -> bytes:
        """``data`` for ``peer`` as it goes to the TURN server: ChannelData once bound, else a Send indication."""
        channel = self._channels.get(peer)
        if channel is not None and channel[1]:
            return struct.pack("!HH", channel[0], len(data)) + data
        message = stun.Message(stun.Method.SEND, stun.Class.INDICATION, transaction_id=self.random_bytes(12),
                               attributes={"XOR-PEER-ADDRESS": peer, "DATA": data})
        return bytes(message)

    # -- input ----------------------------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> tuple[bytes, Address] | None:
        """A datagram from the TURN server: returns ``(payload, peer)`` for relayed data, else ``None``."""
        if is_channel_data(data):
            number, length = struct.unpack_from("!HH", data)
            peer = self._by_channel.get(number)
            if peer is None or length > len(data) - 4:
                return None
            return data[4:4 + length], peer
        message = stun.parse_untrusted(data)
        if message is None:
            return None
        if message.message_class == stun.Class.INDICATION and message.message_method == stun.Method.DATA:
            peer = message.attributes.get("XOR-PEER-ADDRESS")
            payload = message.attributes.get("DATA")
            if peer is None or payload is None or not self.has_permission(peer[0]):
                return None
            return payload, (peer[0], peer[1])
        txn = self._txns.get(message.transaction_id)
        if txn is None or message.message_class not in (stun.Class.RESPONSE, stun.Class.ERROR):
            return None
        if self._key and not message.check_message_integrity(self._key) and message.error_code not in (401, 438):
            return None  # forged answer: the real one may still come (RFC 8489 section 9.2.5)
        del self._txns[message.transaction_id]
        self._on_answer(txn, message, now)
        return None

    def _on_answer(self, txn: _Txn, message: stun.Message, now: float) -> None:
        code = message.error_code
        if code in (401, 438) and self._auth_retries < 3 and "NONCE" in message.attributes:
            # first contact (401) or a stale nonce (438): answer the challenge with our credentials
            self._auth_retries += 1
            self._realm = message.attributes.get("REALM", self._realm)
            self._nonce = message.attributes["NONCE"]
            key_text = f"{self.server.username}:{self._realm}:{self.server.password}"
            self._key = hashlib.md5(key_text.encode("utf-8")).digest()
            attributes = {k: v for k, v in txn.message.attributes.items()
                          if k not in ("USERNAME", "REALM", "NONCE", "MESSAGE-INTEGRITY", "FINGERPRINT")}
            method = txn.message.message_method
            self._request(txn.kind, method, attributes, now, peer=txn.peer)
            return
        if message.message_class == stun.Class.RESPONSE:
            self._auth_retries = 0
        if txn.kind == "allocate":
            if message.message_class != stun.Class.RESPONSE:
                self._fail(f"Allocate refused: {message.attributes.get('ERROR-CODE', ('?', ''))}")
                return
            relayed = message.attributes.get("XOR-RELAYED-ADDRESS")
            if relayed is None:
                self._fail("Allocate answer without XOR-RELAYED-ADDRESS")
                return
            self.relayed = (relayed[0], relayed[1])
            mapped = message.attributes.get("XOR-MAPPED-ADDRESS")
            self.mapped = (mapped[0], mapped[1]) if mapped else None
            self._lifetime_s = float(message.attributes.get("LIFETIME", 600))
            self._refresh_at = now + max(30.0, self._lifetime_s - 60.0)
            self.state = TurnState.READY
        elif txn.kind == "refresh":
            if message.message_class == stun.Class.RESPONSE:
                self._lifetime_s = float(message.attributes.get("LIFETIME", self._lifetime_s))
                self._refresh_at = now + max(30.0, self._lifetime_s - 60.0)
            else:
                self._fail("allocation refresh refused")
        elif txn.kind == "permission":
            peer_ip = txn.message.attributes["XOR-PEER-ADDRESS"][0]
            if message.message_class == stun.Class.RESPONSE:
                self._permissions[peer_ip] = now + _PERMISSION_REFRESH_S
            else:
                self._permissions.pop(peer_ip, None)  # e.g. 403 for a denied (private) peer address
        elif txn.kind == "channel" and txn.peer is not None:
            entry = self._channels.get(txn.peer)
            if entry is None:
                return
            if message.message_class == stun.Class.RESPONSE:
                self._channels[txn.peer] = (entry[0], True, now + _CHANNEL_REFRESH_S)
                self._permissions[txn.peer[0]] = now + _PERMISSION_REFRESH_S  # ChannelBind installs one too
            else:
                del self._channels[txn.peer]
                self._by_channel.pop(entry[0], None)

    def _fail(self, reason: str) -> None:
        self.state = TurnState.FAILED
        self.error = reason

    # -- output and timers ----------------------------------------------------------------------------------

    def _request(self, kind: str, method: stun.Method, attributes: dict[str, object], now: float, *,
                 sign: bool = True, peer: Address | None = None) -> None:
        message = stun.Message(method, stun.Class.REQUEST, transaction_id=self.random_bytes(12),
                               attributes=dict(attributes))
        if sign and self._key:
            message.attributes["USERNAME"] = self.server.username
            message.attributes["REALM"] = self._realm
            message.attributes["NONCE"] = self._nonce
            message.add_message_integrity(self._key)
        else:
            message.add_fingerprint()
        self._txns[message.transaction_id] = _Txn(kind, message, peer, now)
        self._out.append(bytes(message))

    def datagrams_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        times = [t.sent_at + t.rto for t in self._txns.values()]
        if self._refresh_at is not None and self.state == TurnState.READY:
            times.append(self._refresh_at)
        times += [at for at in self._permissions.values() if at is not None]
        times += [at for _, bound, at in self._channels.values() if bound]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for tid, txn in list(self._txns.items()):
            if now < txn.sent_at + txn.rto:
                continue
            if txn.tries >= _MAX_TRIES:
                del self._txns[tid]
                if txn.kind == "allocate":
                    self._fail(f"no answer from the TURN server {self.server.host}:{self.server.port}")
                elif txn.kind == "permission":
                    self._permissions.pop(txn.message.attributes["XOR-PEER-ADDRESS"][0], None)
                continue
            txn.tries += 1
            txn.sent_at = now
            txn.rto *= 2
            self._out.append(bytes(txn.message))
        if self.state != TurnState.READY:
            return
        if self._refresh_at is not None and now >= self._refresh_at:
            self._refresh_at = None
            self._request("refresh", stun.Method.REFRESH, {"LIFETIME": int(self._lifetime_s)}, now)
        for peer_ip, at in list(self._permissions.items()):
            if at is not None and now >= at:
                self._permissions[peer_ip] = now + _PERMISSION_REFRESH_S
                self._request("permission-refresh", stun.Method.CREATE_PERMISSION,
                              {"XOR-PEER-ADDRESS": (peer_ip, 0)}, now)
        for peer, (number, bound, at) in list(self._channels.items()):
            if bound and now >= at:
                self._channels[peer] = (number, True, now + _CHANNEL_REFRESH_S)
                self._request("channel-refresh", stun.Method.CHANNEL_BIND,
                              {"CHANNEL-NUMBER": number, "XOR-PEER-ADDRESS": peer}, now, peer=peer)
