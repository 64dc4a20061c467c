"""The region-process kit's own guarantees (tests of the tests' tools)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import process_kit
import pytest
from process_kit import cli, listen_of, write_region

from server.cli import EXIT_OK


def test_the_dead_peer_never_gets_the_region_s_own_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Ports come back from the kernel as they are free: the same one twice in a row happens.
    ports: Iterator[int] = iter([41000, 41000, 41000, 41002])
    monkeypatch.setattr(process_kit, "free_udp_port", lambda host="127.0.0.1": next(ports))
    config = write_region(tmp_path)
    assert listen_of(config) == ("127.0.0.1", 41000)
    assert "127.0.0.1:41002" in config.read_text()
    code, _, err = cli("user", "add", "alice", "--password", "alice-pw", "--config", str(config))
    assert code == EXIT_OK, err
