"""Identifier factories: RFC 3261 shapes from injected randomness, deterministic ones for tests."""

from __future__ import annotations

import itertools
import os
import re

from gamesdk.sip.ids import BRANCH_MAGIC_COOKIE, IdFactory, RandomIdFactory, SequentialIdFactory

TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def test_random_ids_are_tokens_with_the_cookie_and_host() -> None:
    ids: IdFactory = RandomIdFactory(os.urandom, call_id_host="eu.example")
    branch, tag, call_id, cnonce = ids.branch(), ids.tag(), ids.call_id(), ids.cnonce()
    assert branch.startswith(BRANCH_MAGIC_COOKIE) and TOKEN.fullmatch(branch)
    assert TOKEN.fullmatch(tag) and len(tag) >= 8  # 72 random bits, above the 32 of RFC 3261 19.3
    local, _, host = call_id.partition("@")
    assert host == "eu.example" and TOKEN.fullmatch(local)
    assert TOKEN.fullmatch(cnonce)
    assert len({ids.branch() for _ in range(1000)}) == 1000


def test_random_ids_come_only_from_the_injected_source() -> None:
    counter = itertools.count()
    first = RandomIdFactory(lambda n: bytes([next(counter) % 256]) * n)
    counter2 = itertools.count()
    second = RandomIdFactory(lambda n: bytes([next(counter2) % 256]) * n)
    assert [first.branch(), first.tag(), first.call_id()] == [second.branch(), second.tag(), second.call_id()]
    assert "@" not in first.call_id()


def test_sequential_ids_are_deterministic() -> None:
    ids = SequentialIdFactory()
    assert [ids.branch(), ids.tag(), ids.call_id(), ids.cnonce()] == [
        "z9hG4bK-t1",
        "tag-t2",
        "call-t3@test",
        "cnonce-t4",
    ]
    assert SequentialIdFactory("x").branch() == "z9hG4bK-x1"
