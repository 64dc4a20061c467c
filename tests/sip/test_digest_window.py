"""Nonce counts out of order within a window, replays refused, and one account unable to fill the nonce tracker."""

from __future__ import annotations

import itertools

from gamesdk.sip.digest import (
    NC_WINDOW,
    Challenge,
    DigestAuthenticator,
    DigestClient,
    NonceManager,
    NonceStatus,
    Verdict,
)

SECRET = b"s" * 32


_COUNTER = itertools.count(1)


def counter_bytes(n: int) -> bytes:
    return next(_COUNTER).to_bytes(8, "big") * (n // 8 + 1)


def test_counts_out_of_order_within_the_window_each_once() -> None:
    manager = NonceManager(SECRET, lambda n: counter_bytes(n)[:n])
    nonce = manager.issue(10.0)
    assert manager.use(nonce, 5, 11.0, "alice") is NonceStatus.VALID
    assert manager.use(nonce, 3, 11.0, "alice") is NonceStatus.VALID  # arrived late: fine
    assert manager.use(nonce, 3, 11.0, "alice") is NonceStatus.REPLAYED
    assert manager.use(nonce, 4, 11.0, "alice") is NonceStatus.VALID
    assert manager.use(nonce, 5, 11.0, "alice") is NonceStatus.REPLAYED
    assert manager.use(nonce, 5 + NC_WINDOW + 10, 12.0, "alice") is NonceStatus.VALID
    # Far behind the window: cannot be told from a replay, so stale (a new nonce settles it), not a failure.
    assert manager.use(nonce, 4, 12.0, "alice") is NonceStatus.STALE
    # A nonce serves the account that first used it.
    assert manager.use(nonce, 200, 12.0, "bob") is NonceStatus.REPLAYED


def test_replayed_or_reordered_credentials_are_never_a_password_failure() -> None:
    auth = DigestAuthenticator("eu.example", secret=SECRET, random_bytes=lambda n: counter_bytes(n)[:n])
    nonce = Challenge.parse_untrusted(auth.challenges(10.0)[0]).nonce
    client = DigestClient("alice", "pw", cnonce=lambda: "cn")
    challenge = Challenge(realm="eu.example", nonce=nonce, algorithm="SHA-256")
    first = client.answer(challenge, method="REGISTER", uri="sip:eu.example").to_header_value()
    second = client.answer(challenge, method="PUBLISH", uri="sip:alice@eu.example").to_header_value()

    def ha1(user: str, alg: str) -> str | None:
        from gamesdk.sip.digest import compute_ha1
        return compute_ha1(user, "eu.example", "pw", alg) if user == "alice" else None

    # nc 2 (the PUBLISH) overtakes nc 1 (the REGISTER): both pass.
    assert auth.verify(second, method="PUBLISH", now=11.0, lookup_ha1=ha1).ok
    assert auth.verify(first, method="REGISTER", now=11.0, lookup_ha1=ha1).ok
    replay = auth.verify(first, method="REGISTER", now=12.0, lookup_ha1=ha1)
    assert not replay.ok and replay.verdict is Verdict.REPLAYED
    # A forged nonce with a wrong response: a new challenge, not a failure that counts.
    forged = auth.verify('Digest username="alice", realm="eu.example", nonce="x", uri="sip:eu.example", '
                         'response="00", qop=auth, nc=00000001, cnonce="c"', method="REGISTER", now=12.0,
                         lookup_ha1=ha1)
    assert forged.verdict is Verdict.CHALLENGE and not forged.stale


def test_one_account_cannot_fill_the_tracker_for_everybody() -> None:
    manager = NonceManager(SECRET, lambda n: counter_bytes(n)[:n], max_tracked=1000, max_per_user=16)
    bobs = manager.issue(1.0)
    assert manager.use(bobs, 1, 1.0, "bob") is NonceStatus.VALID
    for i in range(5000):  # alice churns through nonces
        assert manager.use(manager.issue(2.0 + i / 1000), 1, 2.0 + i / 1000, "alice") is NonceStatus.VALID
        assert manager.tracked <= 17
    assert manager.use(bobs, 2, 9.0, "bob") is NonceStatus.VALID  # bob's nonce is still good
    # alice's forgotten nonces are stale for her (never a restarted count), her newest still tracked.
    assert manager.tracked == 17


def test_a_response_with_non_ascii_characters_is_wrong_not_an_error() -> None:
    # Found by bench/bench_fuzz.py: hmac.compare_digest raised TypeError on a non-ASCII str.
    auth = DigestAuthenticator("eu.example", secret=SECRET, random_bytes=lambda n: counter_bytes(n)[:n])
    nonce = Challenge.parse_untrusted(auth.challenges(10.0)[0]).nonce
    header = (f'Digest username="alice", realm="eu.example", nonce="{nonce}", uri="sip:eu.example", '
              'response="\u00e9\u00e9", qop=auth, nc=00000001, cnonce="c", algorithm=SHA-256')
    result = auth.verify(header, method="REGISTER", now=11.0, lookup_ha1=lambda user, alg: "00" * 32)
    assert result.verdict is Verdict.WRONG


def test_a_nonce_the_user_never_used_stays_good_after_its_share_turned_over() -> None:
    """One account with many calls in flight (SIPp at 200 calls/s, or every call of a restart's backlog) answers
    its challenges out of order: a nonce it never used is good however many it used since; one whose counts were
    forgotten is stale (a new challenge), never accepted with a restarted count."""
    manager = NonceManager(SECRET, lambda n: counter_bytes(n)[:n], max_tracked=1000, max_per_user=2)
    nonces = [manager.issue(1.0 + i) for i in range(5)]
    for n in nonces[1:4]:  # the share of 2 turns over: nonces[1]'s counts are forgotten
        assert manager.use(n, 1, 6.0, "alice") is NonceStatus.VALID
    assert manager.use(nonces[0], 1, 6.0, "alice") is NonceStatus.VALID  # issued first, used last
    assert manager.use(nonces[1], 1, 6.0, "alice") is NonceStatus.STALE  # a replay of a forgotten count
    assert manager.use(nonces[1], 2, 6.0, "alice") is NonceStatus.STALE
    # The record of forgotten nonces is bounded too: past it, the user's older nonces are all stale.
    small = NonceManager(SECRET, lambda n: counter_bytes(n)[:n], max_per_user=1, max_forgotten_per_user=2)
    issued = [small.issue(1.0 + i) for i in range(6)]
    for n in issued[1:]:
        assert small.use(n, 1, 7.0, "alice") is NonceStatus.VALID
    assert small.use(issued[0], 1, 7.0, "alice") is NonceStatus.STALE
    assert small.use(issued[1], 1, 7.0, "alice") is NonceStatus.STALE

