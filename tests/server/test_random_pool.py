"""The server's random bytes (tags, branches, nonces, policy tokens) come from the system in chunks."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from server_kit import EXAMPLES

from server.config import load_config
from server.io import EmbeddedServer
from server.random_pool import HexTokens, RandomPool


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    reads: list[int] = []
    real = os.urandom

    def urandom(n: int) -> bytes:
        reads.append(n)
        return real(n)

    monkeypatch.setattr(os, "urandom", urandom)
    return reads


def test_the_pool_reads_the_system_source_once_per_chunk_and_hands_each_byte_out_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    reads = _counting(monkeypatch)
    pool = RandomPool(chunk=64)
    draws = [pool(12) for _ in range(10)]  # 120 bytes: two chunks (a draw never straddles two)
    assert reads == [64, 64]
    assert all(len(d) == 12 for d in draws) and len(set(draws)) == 10
    assert len(pool(100)) == 100 and reads[-1] == 100  # larger than a chunk: read on its own


def test_a_forked_child_does_not_hand_out_its_parent_s_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = RandomPool(chunk=64)
    pool(8)
    from server import random_pool

    random_pool._forget_pools_in_child()  # what os.register_at_fork runs in the child
    reads = _counting(monkeypatch)
    pool(8)
    assert reads == [64]


def test_the_server_s_random_bytes_come_from_a_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """100 tags' worth of random bytes cost one read of the system's source (before: one getrandom system call
    each, six per call through the server)."""
    reads = _counting(monkeypatch)
    config = dataclasses.replace(load_config(EXAMPLES / "eu.toml"), database=tmp_path / "eu.sqlite3")
    server = EmbeddedServer(config, port=0, policy=False)
    draws = {server._random_bytes(9) for _ in range(100)}
    assert len(draws) == 100 and len(reads) == 1


def test_the_policy_s_tokens_come_from_a_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from server.policy.config import PolicyConfig
    from server.policy.runner import build_policy_server, policy_document

    config = PolicyConfig.from_mapping(policy_document(load_config(EXAMPLES / "eu.toml")))
    reads = _counting(monkeypatch)
    policy = build_policy_server(config, tmp_path / "eu.sqlite3")
    tokens = {policy._token_factory() for _ in range(50)}
    assert len(tokens) == 50 and len(reads) == 1


def test_hex_tokens_read_the_system_source_once_per_chunk_and_hand_each_token_out_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    reads = _counting(monkeypatch)
    tokens = HexTokens(16, chunk=72)  # four tokens a read (the chunk's tail that makes no whole token is not read)
    drawn = [tokens() for _ in range(10)]
    assert reads == [64, 64, 64]
    assert len(set(drawn)) == 10
    assert all(len(t) == 32 and t == bytes.fromhex(t).hex() for t in drawn)  # os.urandom(16).hex()'s shape
    with pytest.raises(ValueError):
        HexTokens(16, chunk=8)


def test_a_forked_child_does_not_hand_out_its_parent_s_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = HexTokens(8, chunk=64)
    first = tokens()
    from server import random_pool

    random_pool._forget_pools_in_child()  # what os.register_at_fork runs in the child
    reads = _counting(monkeypatch)
    assert tokens() != first and reads == [64]


@pytest.mark.parametrize("nbytes", [1, 3, 16, 32])
def test_hex_tokens_of_any_width_are_whole_tokens_of_the_chunk(monkeypatch: pytest.MonkeyPatch, nbytes: int) -> None:
    # A chunk cut into tokens by hex()'s separator: each token is the hex of its own nbytes, in the chunk's order.
    chunks: list[bytes] = []
    real = os.urandom

    def urandom(n: int) -> bytes:
        chunks.append(real(n))
        return chunks[-1]

    monkeypatch.setattr(os, "urandom", urandom)
    tokens = HexTokens(nbytes, chunk=5 * nbytes - 1)  # (the tail that makes no whole token is not read)
    drawn = [tokens() for _ in range(6)]
    assert [len(c) for c in chunks] == [4 * nbytes, 4 * nbytes]
    assert "".join(drawn) == (chunks[0] + chunks[1][:2 * nbytes]).hex()
    assert all(len(t) == 2 * nbytes for t in drawn)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_real_forked_child_draws_neither_its_parent_s_tokens_nor_bytes() -> None:
    # What the parent draws next and what the child draws first would be the same without the at-fork hook.
    tokens = HexTokens(8, chunk=64)
    pool = RandomPool(chunk=64)
    tokens(), pool(8)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first token and bytes to the parent, then out without the test runner's exit
        try:
            os.write(write_end, (tokens() + pool(8).hex()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as got:
        child = got.read().decode()
    assert os.waitpid(pid, 0)[1] == 0
    assert len(child) == 32 and child != tokens() + pool(8).hex()


def test_pooled_ids_are_the_sdk_factory_s_ids_of_the_same_bytes() -> None:
    # The same source bytes give the same identifiers as gamesdk.sip.ids.RandomIdFactory's, each kind from its
    # own pool: one read of the source per chunk, then tokens cut in order.
    from gamesdk.sip.ids import RandomIdFactory
    from server.random_pool import PooledIdFactory

    reads: list[int] = []
    stream = os.urandom(20_000)

    def counter() -> Callable[[int], bytes]:
        at = [0]

        def source(n: int) -> bytes:  # the stream's next n bytes
            reads.append(n)
            at[0] += n
            return stream[at[0] - n:at[0]]
        return source

    pooled = PooledIdFactory(counter(), call_id_host="eu.example")
    tags = [pooled.tag() for _ in range(500)]  # over a chunk's 455
    assert reads == [4095, 4095]
    sdk = RandomIdFactory(counter())
    assert tags[:455] == [sdk.tag() for _ in range(455)]
    reads.clear()
    assert pooled.branch().startswith("z9hG4bK") and pooled.cnonce() and reads == [4092]
    call_id = pooled.call_id()
    assert reads == [4092, 4095] and call_id.endswith("@eu.example") and len(call_id) == 20 + len("@eu.example")
    assert len(set(tags)) == 500 and all(len(t) == 12 and _is_token(t) for t in tags)
    assert PooledIdFactory(counter()).call_id().count("@") == 0


def _is_token(text: str) -> bool:
    return bool(text) and all(c.isalnum() or c in "-_" for c in text)


@pytest.mark.parametrize("nbytes", [3, 9, 12, 15])
def test_url_tokens_are_whole_tokens_of_the_chunk_as_base64url(nbytes: int) -> None:
    import base64

    from server.random_pool import UrlTokens

    chunks: list[bytes] = []

    def source(n: int) -> bytes:
        chunks.append(os.urandom(n))
        return chunks[-1]

    tokens = UrlTokens(source, nbytes, chunk=5 * nbytes - 1)  # four a read (the tail of no whole token unread)
    drawn = [tokens() for _ in range(6)]
    assert [len(c) for c in chunks] == [4 * nbytes, 4 * nbytes]
    assert [base64.urlsafe_b64decode(t) for t in drawn] == [
        c[at:at + nbytes] for c in (chunks[0], chunks[1][:2 * nbytes]) for at in range(0, len(c), nbytes)]
    assert all(len(t) == nbytes // 3 * 4 and "=" not in t for t in drawn)
    with pytest.raises(ValueError):
        UrlTokens(source, 10)  # not a multiple of 3: the tokens would not be cut at a character


def test_a_forked_child_does_not_hand_out_its_parent_s_url_tokens() -> None:
    from server import random_pool

    reads: list[int] = []

    def source(n: int) -> bytes:
        reads.append(n)
        return os.urandom(n)

    tokens = random_pool.UrlTokens(source, 9, chunk=90)
    first = tokens()
    random_pool._forget_pools_in_child()  # what os.register_at_fork runs in the child
    assert tokens() != first and reads == [90, 90]


def test_the_server_s_tags_come_from_a_pool(tmp_path: Path) -> None:
    from server.node import RegionalServer
    from server.random_pool import PooledIdFactory

    reads: list[int] = []

    def source(n: int) -> bytes:
        reads.append(n)
        return os.urandom(n)

    config = dataclasses.replace(load_config(EXAMPLES / "eu.toml"), database=tmp_path / "eu.sqlite3")
    node = RegionalServer(config, _NoAccounts(), random_bytes=source)
    assert isinstance(node.ids, PooledIdFactory)
    reads.clear()
    assert len({node.ids.tag() for _ in range(100)}) == 100 and reads in ([], [4095])  # one read at most


class _NoAccounts:
    def ha1(self, name: str, algorithm: str) -> str | None:
        return None

    def exists(self, name: str) -> bool:
        return False
