"""One nonce HMAC per digest verification (it was computed twice, in check() and again in use())."""

from __future__ import annotations

import hmac
import itertools

import pytest

from gamesdk.sip.digest import (
    Challenge,
    DigestAuthenticator,
    DigestClient,
    NonceManager,
    NonceStatus,
    compute_ha1,
)

SECRET = b"0123456789abcdef0123456789abcdef"


def counting_manager(monkeypatch: pytest.MonkeyPatch, manager: NonceManager) -> list[bytes]:
    """Count the nonce MACs ``manager`` computes. The HMAC function is counted where the module finds it (a
    compiled build's classes take no per-instance method patch), keeping only calls with ``manager``'s secret."""
    macs: list[bytes] = []
    real = hmac.digest
    secret = manager._secret

    def counting(key: bytes, msg: bytes, digest: str) -> bytes:
        if key == secret:
            macs.append(msg)
        return real(key, msg, digest)

    monkeypatch.setattr(hmac, "digest", counting)
    return macs


def test_verification_computes_the_nonce_mac_once(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = itertools.count()
    auth = DigestAuthenticator("eu.example", secret=SECRET,
                               random_bytes=lambda n: next(counter).to_bytes(n, "big"))
    nonce = Challenge.parse_untrusted(auth.challenges(10.0)[0]).nonce
    macs = counting_manager(monkeypatch, auth.nonces)
    client = DigestClient("alice", "pw", cnonce=lambda: "cn")
    challenge = Challenge(realm="eu.example", nonce=nonce, algorithm="SHA-256")
    first = client.answer(challenge, method="INVITE", uri="sip:bob@eu.example").to_header_value()

    def ha1(user: str, alg: str) -> str:
        return compute_ha1(user, "eu.example", "pw", alg)

    assert auth.verify(first, method="INVITE", now=11.0, lookup_ha1=ha1).ok
    assert len(macs) == 1
    # The behaviour around it is unchanged: the same count again is a replay, the next count passes.
    replay = auth.verify(first, method="INVITE", now=12.0, lookup_ha1=ha1)
    assert not replay.ok and "replayed" in replay.reason
    second = client.answer(challenge, method="INVITE", uri="sip:bob@eu.example").to_header_value()
    assert auth.verify(second, method="INVITE", now=13.0, lookup_ha1=ha1).ok
    assert len(macs) == 3


@pytest.mark.parametrize("when", [5.0, 400.0])  # issued in the future / past its lifetime
def test_use_refuses_like_check_and_records_nothing(monkeypatch: pytest.MonkeyPatch, when: float) -> None:
    manager = NonceManager(SECRET, lambda n: b"\x01" * n, lifetime_s=300.0)
    nonce = manager.issue(50.0)
    macs = counting_manager(monkeypatch, manager)
    expected = manager.check(nonce, 1, when)
    assert expected in (NonceStatus.INVALID, NonceStatus.STALE)
    assert manager.use(nonce, 1, when) is expected
    assert manager.tracked == 0 and len(macs) == 2  # one per call
