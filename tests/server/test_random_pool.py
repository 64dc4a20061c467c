"""The server's random bytes (tags, branches, nonces, policy tokens) come from the system in chunks."""

from __future__ import annotations

import dataclasses
import os
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
