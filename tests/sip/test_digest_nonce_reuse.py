"""A client reusing one nonce for a long time keeps counting nc up, however many other nonces it answers."""

from __future__ import annotations

import itertools

from gamesdk.sip.digest import Challenge, DigestClient


def test_a_busy_nonce_is_never_forgotten() -> None:
    counter = itertools.count()
    client = DigestClient("alice", "pw", lambda: f"c{next(counter)}")
    busy = Challenge(realm="eu.gamesdk.test", nonce="busy", algorithm="SHA-256")
    seen = []
    for i in range(200):
        seen.append(client.answer(busy, method="INVITE", uri="sip:bob@na.gamesdk.test").nc)
        # a fresh nonce for each PUBLISH in between (what a server that challenges every PUBLISH does)
        client.answer(Challenge(realm="eu.gamesdk.test", nonce=f"n{i}"), method="PUBLISH", uri="sip:x@y")
    assert seen == list(range(1, 201))
