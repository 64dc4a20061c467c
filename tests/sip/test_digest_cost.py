"""One nonce HMAC per digest verification (it was computed twice, in check() and again in use())."""

from __future__ import annotations

import base64
import hmac
import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gamesdk.sip.digest import (
    Challenge,
    DigestAuthenticator,
    DigestClient,
    NonceManager,
    NonceStatus,
    compute_ha1,
)

SECRET = b"0123456789abcdef0123456789abcdef"


def mac_counter(manager: NonceManager) -> tuple[list[bytes], object]:
    """A stand-in for ``manager``'s keyed HMAC that counts the nonce MACs computed (each starts from a copy of it,
    made once from the secret), and the list it counts them in. The stand-in replaces an attribute, not a method:
    a compiled build's classes take no per-instance method patch."""
    macs: list[bytes] = []
    real = manager._mac

    class Counting:
        def copy(self) -> object:
            macs.append(b"")
            return real.copy()

    return macs, Counting()


def counting_manager(monkeypatch: pytest.MonkeyPatch, manager: NonceManager) -> list[bytes]:
    """Count the nonce MACs ``manager`` computes (:func:`mac_counter`), for the test's duration."""
    macs, stand_in = mac_counter(manager)
    monkeypatch.setattr(manager, "_mac", stand_in)
    return macs


def test_the_nonce_mac_is_hmac_sha256_of_the_secret() -> None:
    # The tag's computation from the prepared HMAC must stay HMAC-SHA256 (RFC 2104): nonces issued by an
    # older process (the secret is kept in the region database) still verify after a restart, and back.
    for secret in (SECRET, b"k" * 64, b"long" * 40):
        manager = NonceManager(secret, lambda n: b"\x05" * n, realm="eu.example")
        nonce = manager.issue(1234.5)
        raw = base64.urlsafe_b64decode(nonce + "=")
        body, tag = raw[:16], raw[16:]
        assert tag == hmac.digest(secret, body + b"eu.example", "sha256")[:16]
        assert manager.issued_ms(nonce) == 1234500
        forged = base64.urlsafe_b64encode(body + hmac.digest(secret + b"x", body + b"eu.example", "sha256")[:16])
        assert manager.issued_ms(forged.rstrip(b"=").decode()) is None
        for bad in ("é" * 43, "!" * 43, nonce[:-1] + "=", nonce.replace("-", "+").replace("_", "/")[:42] + "*"):
            assert manager.issued_ms(bad) is None


def test_verification_computes_the_nonce_mac_once(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = itertools.count()
    auth = DigestAuthenticator("eu.example", secret=SECRET,
                               random_bytes=lambda n: next(counter).to_bytes(n, "big"))
    # Issued by a predecessor with the same secret (a restart): a nonce this manager issued itself is found
    # without any MAC (test_a_nonce_issued_here_is_checked_without_its_mac).
    before = DigestAuthenticator("eu.example", secret=SECRET, random_bytes=lambda n: b"\x02" * n)
    nonce = Challenge.parse_untrusted(before.challenges(10.0)[0]).nonce
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
    nonce = NonceManager(SECRET, lambda n: b"\x01" * n).issue(50.0)  # a predecessor's (one issued here: no MAC)
    macs = counting_manager(monkeypatch, manager)
    expected = manager.check(nonce, 1, when)
    assert expected in (NonceStatus.INVALID, NonceStatus.STALE)
    assert manager.use(nonce, 1, when) is expected
    assert manager.tracked == 0 and len(macs) == 2  # one per call


def test_the_nonce_mac_is_computed_by_openssls_object_not_the_python_wrapper() -> None:
    # Every login computes two nonce tags (its challenge's, then the check of the nonce it brings back): through
    # the hmac module's Python class each took four of its methods around OpenSSL's object (copy, update twice,
    # digest); the manager now keeps OpenSSL's object itself when the build has one, and the tag is the same.
    wrapper = hmac.new(SECRET, digestmod="sha256")
    manager = NonceManager(SECRET, lambda n: b"\x07" * n, realm="eu.example")
    if getattr(wrapper, "_hmac", None) is not None:
        assert not isinstance(manager._mac, hmac.HMAC)
        assert type(manager._mac) is type(wrapper._hmac)
    nonce = manager.issue(99.0)
    raw = base64.urlsafe_b64decode(nonce + "=")
    assert raw[16:] == hmac.digest(SECRET, raw[:16] + b"eu.example", "sha256")[:16]


@settings(max_examples=200, deadline=None)
@given(nows=st.lists(st.floats(0.0, 4e9, allow_nan=False), min_size=1, max_size=20), data=st.data())
def test_a_nonce_issued_here_is_checked_without_its_mac(nows: list[float], data: st.DataObject) -> None:
    """The manager remembers the nonces it issued until they come back: their check is a lookup that gives what
    the MAC check gives (the same stamp), with no MAC computed; a nonce not issued here (a predecessor's, a
    forged or mangled one, one already brought back) takes the MAC check; a check records nothing else."""
    counter = itertools.count()
    manager = NonceManager(SECRET, lambda n: next(counter).to_bytes(n, "big"), realm="eu.example")
    twin = NonceManager(SECRET, lambda n: b"\x09" * n, realm="eu.example")  # same secret, nothing remembered
    issued = [manager.issue(now) for now in nows]
    macs, manager._mac = mac_counter(manager)  # (hypothesis runs it many times: no function-scoped monkeypatch)
    order = data.draw(st.permutations(range(len(issued))))
    for i in order:
        assert manager.issued_ms(issued[i]) == twin.issued_ms(issued[i]) == int(nows[i] * 1000)
    assert macs == []
    for i in order:  # brought back again: the MAC check, the same answer
        assert manager.issued_ms(issued[i]) == int(nows[i] * 1000)
    assert len(macs) == len(issued)
    mangled = data.draw(st.text(alphabet="ABCabc-_0", min_size=43, max_size=43))
    before = len(macs)
    assert manager.issued_ms(mangled) is twin.issued_ms(mangled) is None and len(macs) == before + 1
    assert manager.issued_ms(twin.issue(nows[0])) == int(nows[0] * 1000) and len(macs) == before + 2


def test_the_remembered_nonces_are_bounded() -> None:
    manager = NonceManager(SECRET, os.urandom)
    first = manager.issue(1.0)
    for _ in range(5000):  # challenges never answered (a flood of requests without credentials)
        manager.issue(2.0)
    assert len(manager._issued) <= 4096
    assert manager.issued_ms(first) == 1000  # forgotten here, still ours: the MAC check finds it
