"""gamesdk/channel/crypto: key agreement, key schedule and per-packet AEAD.

Key schedule (DESIGN section 6, research/channel.md (c)):

    TH  = SHA-256("gsdk-chan/1" || lp(offer gsdk lines) || lp(answer gsdk lines) || lp(E_offer) || lp(E_answer)
                  || lp(Call-ID) || lp(From-tag) || lp(To-tag))            lp(x) = u32 big-endian length || x
    dh  = X25519(our private key, peer public key)                          all-zero output rejected (RFC 7748 §6.1)
    PRK = HKDF-Extract(salt=TH, IKM=dh)                                     RFC 5869 §2.2
    key_o2a, key_a2o = HKDF-Expand(PRK, "gsdk-chan/1 key o2a" / "... key a2o", 32)
    iv_o2a,  iv_a2o  = HKDF-Expand(PRK, "gsdk-chan/1 iv o2a"  / "... iv a2o", 12)
    confirm_o, confirm_a = HKDF-Expand(PRK, "gsdk-chan/1 confirm offer" / "... answer", 16)
    secret_o2a, secret_a2o = HKDF-Expand(PRK, "gsdk-chan/1 secret o2a" / "... secret a2o", 32)

Key update (QUIC's key phase, RFC 9001 section 6), per direction, phase n -> n + 1:

    secret' = HKDF-Expand(secret, "gsdk-chan/1 ku", 32)                  (QUIC: HKDF-Expand-Label "quic ku")
    key'    = HKDF-Expand(secret', "gsdk-chan/1 key", 32);  iv' = HKDF-Expand(secret', "gsdk-chan/1 iv", 12)

Path challenges use a key only this side knows, derived from its own private key (so not even the peer can
predict them): path_key = HMAC-SHA256(private key, "gsdk-chan/1 path" || TH).

Directions are named by SDP role, never by who is "client". Binding TH into the salt means any edit of
either SDP gives different keys; the encrypted CONFIRM exchange turns that into a ``SecurityError``.
Nonce = IV XOR packet number (the TLS 1.3 / QUIC construction, RFC 8446 §5.3), packet numbers never repeat
within a direction, and keys are fresh per session, so a (key, nonce) pair is never reused.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from gamesdk.channel.config import SUITES, ChannelParams, PrivateKey, Role
from gamesdk.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "AEAD_LIMITS",
    "AEAD_TAG_BYTES",
    "DirectionKeys",
    "InvalidTag",
    "KeySchedule",
    "PacketCrypto",
    "PhaseKeys",
    "derive_keys",
    "generate_keypair",
    "public_key_from_private",
    "transcript_hash",
]

AEAD_TAG_BYTES = 16
#: Per suite: (confidentiality limit: packets sealed under one key; integrity limit: packets that failed to
#: open, across all keys), RFC 9001 section 6.6. AES-GCM's 2^23 is what forces key updates.
AEAD_LIMITS: dict[str, tuple[int, int]] = {
    "chacha20-poly1305": (1 << 62, 1 << 36),
    "aes-256-gcm": (1 << 23, 1 << 52),
}
_LABEL = b"gsdk-chan/1"
_LP = struct.Struct(">I")


def _lp(value: bytes) -> bytes:
    return _LP.pack(len(value)) + value


def transcript_hash(
    offer_gsdk: bytes,
    answer_gsdk: bytes,
    offer_public: bytes,
    answer_public: bytes,
    call_id: str,
    from_tag: str,
    to_tag: str,
) -> bytes:
    """Hash everything both sides must agree on; the result salts the key schedule.

    Args:
        offer_gsdk / answer_gsdk: the canonical `a=gsdk-*` lines (and `b=` if the SDK includes it) of the
            offer and of the answer, exactly as each side serialises them.
        offer_public / answer_public: the raw 32-byte X25519 keys from each `a=gsdk-kx`.
        call_id, from_tag, to_tag: the SIP dialog identifiers (From-tag is the caller's).

    Every field is length-prefixed, so no two different inputs hash the same way by shifting bytes.
    """
    for name, key in (("offer_public", offer_public), ("answer_public", answer_public)):
        if len(key) != 32:
            raise LocalProtocolError(f"{name} must be a 32-byte X25519 public key, got {len(key)} bytes")
    h = hashlib.sha256(_LABEL)
    for part in (offer_gsdk, answer_gsdk, offer_public, answer_public):
        h.update(_lp(part))
    for text in (call_id, from_tag, to_tag):
        h.update(_lp(text.encode("utf-8")))
    return h.digest()


def generate_keypair(random_bytes: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """Make an ephemeral X25519 key pair from an injected randomness source (``os.urandom`` in production).

    Returns ``(private_key, public_key)``, 32 raw bytes each; the public key goes into `a=gsdk-kx`.
    """
    seed = random_bytes(32)
    if len(seed) != 32:
        raise LocalProtocolError("the key factory must return 32 bytes")
    return seed, public_key_from_private(seed)


def public_key_from_private(private_key: bytes) -> bytes:
    """The raw 32-byte X25519 public key for a raw private key."""
    return X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()


@dataclass(frozen=True, slots=True)
class DirectionKeys:
    """AEAD key and IV for one direction (secret: never shown in ``repr``)."""

    key: bytes = field(repr=False)
    iv: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class KeySchedule:
    """Everything derived from one X25519 exchange and transcript hash, seen from one role (secret)."""

    send: DirectionKeys = field(repr=False)
    receive: DirectionKeys = field(repr=False)
    #: The CONFIRM value we send and the one we expect from the peer.
    confirm_send: bytes = field(repr=False)
    confirm_receive: bytes = field(repr=False)
    #: Traffic secrets each direction's key updates derive from.
    send_secret: bytes = field(repr=False, default=b"")
    receive_secret: bytes = field(repr=False, default=b"")
    #: This side's own key for path challenges (the peer cannot compute it).
    path_key: bytes = field(repr=False, default=b"")


def _expand(prk: bytes, label: str, length: int) -> bytes:
    return HKDFExpand(hashes.SHA256(), length, _LABEL + b" " + label.encode()).derive(prk)


def derive_keys(params: ChannelParams) -> KeySchedule:
    """Run the key schedule for ``params``, once: it takes (and so wipes) the params' private key.

    Raises:
        RemoteProtocolError: the peer's public key is unusable (status hint 488).
        LocalProtocolError: these params already keyed a channel (key material is single use).
    """
    key = params.local_private_key
    raw = key.take() if isinstance(key, PrivateKey) else key
    private = X25519PrivateKey.from_private_bytes(raw)
    path_key = hmac.new(raw, _LABEL + b" path" + params.transcript_hash, hashlib.sha256).digest()
    del raw
    try:
        peer = X25519PublicKey.from_public_bytes(params.remote_public_key)
        dh = private.exchange(peer)
    except ValueError as exc:  # cryptography refuses low-order points (all-zero output, RFC 7748 §6.1)
        raise RemoteProtocolError(f"peer's gsdk-kx key is unusable: {exc}", 488) from None
    if dh == bytes(32):
        raise RemoteProtocolError("peer's gsdk-kx key is a low-order point", 488)
    prk = hmac.new(params.transcript_hash, dh, hashlib.sha256).digest()  # HKDF-Extract, RFC 5869 §2.2
    o2a = DirectionKeys(_expand(prk, "key o2a", 32), _expand(prk, "iv o2a", 12))
    a2o = DirectionKeys(_expand(prk, "key a2o", 32), _expand(prk, "iv a2o", 12))
    confirm_o = _expand(prk, "confirm offer", 16)
    confirm_a = _expand(prk, "confirm answer", 16)
    secret_o2a, secret_a2o = _expand(prk, "secret o2a", 32), _expand(prk, "secret a2o", 32)
    if params.role is Role.OFFER:
        return KeySchedule(
            send=o2a, receive=a2o, confirm_send=confirm_o, confirm_receive=confirm_a,
            send_secret=secret_o2a, receive_secret=secret_a2o, path_key=path_key,
        )  # fmt: skip
    return KeySchedule(
        send=a2o, receive=o2a, confirm_send=confirm_a, confirm_receive=confirm_o,
        send_secret=secret_a2o, receive_secret=secret_o2a, path_key=path_key,
    )  # fmt: skip


class PhaseKeys:
    """The AEAD and IV of one key phase of one direction, and the secret the next phase derives from.

    Secret: nothing here shows in ``repr``.
    """

    __slots__ = ("_secret", "_suite", "aead", "iv", "phase")

    def __init__(self, suite: str, key: bytes, iv: bytes, secret: bytes, phase: int = 0) -> None:
        if suite not in SUITES:
            raise LocalProtocolError(f"unknown AEAD suite {suite!r}")
        self._suite = suite
        self._secret = secret
        #: ``encrypt`` / ``decrypt`` ``(nonce, data, associated_data)``.
        self.aead = (ChaCha20Poly1305 if suite == "chacha20-poly1305" else AESGCM)(key)
        #: The IV as an integer: nonce = iv XOR packet number.
        self.iv = int.from_bytes(iv, "big")
        #: 0, 1, 2, ...: the header carries its low bit.
        self.phase = phase

    def next(self) -> PhaseKeys:
        """The keys of the next phase (RFC 9001 section 6.1: a new secret, key and IV from the current secret)."""
        secret = _expand(self._secret, "ku", 32)
        return PhaseKeys(self._suite, _expand(secret, "key", 32), _expand(secret, "iv", 12), secret, self.phase + 1)

    def __repr__(self) -> str:
        return f"PhaseKeys(phase={self.phase}, <not shown>)"


class PacketCrypto:
    """Seal and open packets for one direction pair. The header is the associated data."""

    __slots__ = ("decrypt", "encrypt", "recv_iv", "send_iv")

    def __init__(self, suite: str, keys: KeySchedule) -> None:
        if suite not in SUITES:
            raise LocalProtocolError(f"unknown AEAD suite {suite!r}")
        aead = ChaCha20Poly1305 if suite == "chacha20-poly1305" else AESGCM
        #: The raw AEAD calls ``(nonce, data, associated_data)`` and the IVs as integers; the channel's hot
        #: path uses them directly to save a Python call per packet.
        self.encrypt = aead(keys.send.key).encrypt
        self.decrypt = aead(keys.receive.key).decrypt
        self.send_iv = int.from_bytes(keys.send.iv, "big")
        self.recv_iv = int.from_bytes(keys.receive.iv, "big")

    def seal(self, pn: int, header: bytes, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` as packet ``pn``; returns ciphertext || tag."""
        return self.encrypt((self.send_iv ^ pn).to_bytes(12, "big"), plaintext, header)

    def open(self, pn: int, header: bytes, ciphertext: bytes) -> bytes:
        """Decrypt and authenticate; raises ``InvalidTag`` on any tampering or wrong key."""
        return self.decrypt((self.recv_iv ^ pn).to_bytes(12, "big"), ciphertext, header)
