"""Signed identities bound to the game channel's keys (RFC 8224 ``Identity`` carrying an RFC 8225 PASSporT).

The caller's region signs the INVITE it authenticated: ``orig`` (the caller's address), ``dest`` (the callee's),
``iat`` and ``mky``, a digest of the offer's channel key and session id. The callee's region signs the 2xx the
same way for the answer (``orig`` the callee, ``dest`` the caller): this project's extension, since RFC 8224
signs requests only. Each SDK verifies before it answers or ACKs: the signature (ES256), the signer's
certificate chain to a trusted region CA and its name (the domain of ``orig``), freshness, the From/To
addresses and the key digest. A transit that swaps both ``gsdk-kx`` keys changes ``mky`` and is caught.

The signer's certificate chain travels in the JWS header (``x5c``, RFC 7515 section 4.1.6) so that a player
needs no fetch; the header's ``info`` parameter names the signing domain (``<sip:eu.gamesdk.test>``).

``mky`` (RFC 8225 section 5.2.2) holds one ``{"alg": "sha-256", "dig": "AB:CD:..."}`` entry: SHA-256 over the
SDP's ``gsdk-kx`` values then ``gsdk-sid`` values, each as ``name:value`` CRLF-terminated, in SDP order.

No clock and no randomness here: times come from the ``clock`` callables the drivers pass in.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from gamesdk.errors import GameSdkError

__all__ = ["IdentityError", "IdentitySigner", "IdentityVerifier", "channel_key_digest", "load_pem_chain"]

#: RFC 8224 section 6.2.1.1: a PASSporT older (or newer) than this is not fresh.
MAX_AGE_S = 60.0
_KEY_LINES = (b"a=gsdk-kx:", b"a=gsdk-sid:")


class IdentityError(GameSdkError):
    """A missing or invalid ``Identity`` header. ``status`` is 428 (missing) or 438 (invalid)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def channel_key_digest(sdp: bytes) -> str | None:
    """The ``mky`` digest of an SDP body's channel keys and session ids; None when it carries none."""
    kx: list[bytes] = []
    sid: list[bytes] = []
    for raw in sdp.split(b"\n"):
        line = raw.rstrip(b"\r").strip()
        if line.startswith(_KEY_LINES[0]):
            kx.append(b"gsdk-kx:" + line[len(_KEY_LINES[0]):].strip() + b"\r\n")
        elif line.startswith(_KEY_LINES[1]):
            sid.append(b"gsdk-sid:" + line[len(_KEY_LINES[1]):].strip() + b"\r\n")
    if not kx:
        return None
    digest = hashlib.sha256(b"".join(kx + sid)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def load_pem_chain(data: bytes) -> list[x509.Certificate]:
    """Certificates of a PEM file, leaf first."""
    return x509.load_pem_x509_certificates(data)


def _domain_of(aor: str) -> str:
    return aor.rpartition("@")[2].split(";", 1)[0].split(">", 1)[0].lower()


@dataclass(frozen=True, slots=True)
class IdentitySigner:
    """A region's authentication service: signs PASSporTs with the region's ES256 key."""

    domain: str
    chain: tuple[x509.Certificate, ...]
    key: ec.EllipticCurvePrivateKey
    #: Wall-clock seconds (``time.time`` in the drivers): ``iat`` is absolute time.
    clock: Callable[[], float]

    @classmethod
    def from_pem(cls, domain: str, chain_pem: bytes, key_pem: bytes, clock: Callable[[], float]) -> IdentitySigner:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("identity signing needs an ECDSA P-256 key (ES256)")
        return cls(domain, tuple(load_pem_chain(chain_pem)), key, clock)

    def sign(self, orig: str, dest: str, sdp: bytes) -> str:
        """The ``Identity`` header value for a message from ``orig`` to ``dest`` carrying ``sdp``."""
        claims: dict[str, Any] = {
            "dest": {"uri": [dest]},
            "iat": int(self.clock()),
            "orig": {"uri": orig},
        }
        mky = channel_key_digest(sdp)
        if mky is not None:
            claims["mky"] = [{"alg": "sha-256", "dig": mky}]
        x5c = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii") for c in self.chain]
        token = jwt.encode(claims, self.key, algorithm="ES256", headers={"typ": "passport", "x5c": x5c})
        return f"{token};info=<sip:{self.domain}>;alg=ES256"


class IdentityVerifier:
    """A player's verification service: checks an ``Identity`` header against trusted region CAs."""

    def __init__(self, trusted: Sequence[x509.Certificate], clock: Callable[[], float], *,
                 max_age_s: float = MAX_AGE_S) -> None:
        if not trusted:
            raise ValueError("identity verification needs at least one trusted region CA")
        self._store = Store(list(trusted))
        self._clock = clock
        self.max_age_s = max_age_s

    def verify(self, header: str | None, *, orig: str, dest: str, sdp: bytes) -> None:
        """Raise :class:`IdentityError` unless ``header`` is a fresh PASSporT for ``orig`` -> ``dest`` and
        ``sdp``'s channel keys, signed by a certificate for ``orig``'s domain from a trusted CA."""
        if not header:
            raise IdentityError(428, "Use Identity Header")
        token = header.split(";", 1)[0].strip()
        try:
            jose = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise IdentityError(438, f"Invalid Identity Header: {exc}") from None
        if jose.get("alg") != "ES256" or jose.get("typ") != "passport":
            raise IdentityError(438, "Invalid Identity Header: not an ES256 PASSporT")
        chain = jose.get("x5c")
        if not isinstance(chain, list) or not chain or not all(isinstance(c, str) for c in chain):
            raise IdentityError(438, "Invalid Identity Header: no certificate (x5c)")
        try:
            certs = [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in chain[:4]]
        except ValueError:
            raise IdentityError(438, "Invalid Identity Header: unreadable certificate") from None
        now = self._clock()
        domain = _domain_of(orig)
        try:
            verifier = (PolicyBuilder().store(self._store)
                        .time(datetime.datetime.fromtimestamp(now, datetime.UTC))
                        .build_server_verifier(x509.DNSName(domain)))
            verifier.verify(certs[0], certs[1:])
        except (VerificationError, ValueError) as exc:
            raise IdentityError(438, f"Invalid Identity Header: certificate not trusted for {domain}: "
                                     f"{str(exc)[:120]}") from None
        key = certs[0].public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise IdentityError(438, "Invalid Identity Header: not an EC certificate")
        try:
            claims = jwt.decode(token, key, algorithms=["ES256"],
                                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                                         "verify_aud": False, "require": ["iat"]})
        except jwt.PyJWTError as exc:
            raise IdentityError(438, f"Invalid Identity Header: {exc}") from None
        iat = claims.get("iat")
        if not isinstance(iat, int) or abs(now - iat) > self.max_age_s:
            raise IdentityError(438, "Invalid Identity Header: stale")
        if (claims.get("orig") or {}).get("uri") != orig:
            raise IdentityError(438, "Invalid Identity Header: orig does not match From")
        dest_uris = (claims.get("dest") or {}).get("uri")
        if not isinstance(dest_uris, list) or dest not in dest_uris:
            raise IdentityError(438, "Invalid Identity Header: dest does not match To")
        expected = channel_key_digest(sdp)
        mky = claims.get("mky")
        signed = {m.get("dig") for m in mky if isinstance(m, dict) and m.get("alg") == "sha-256"} \
            if isinstance(mky, list) else set()
        if expected is not None and expected not in signed:
            raise IdentityError(438, "Invalid Identity Header: channel key does not match (mky)")
