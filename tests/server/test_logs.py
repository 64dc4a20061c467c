"""What a region writes to its log: session lines at INFO, no bodies at DEBUG, messages with --trace alone,
JSON lines, UTC timestamps with the zone; the policy process logs the same way."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from process_kit import REPO, RegionProcess, cli, write_region
from server_kit import ANSWER, SocketUA
from test_restart import invite_through, next_request

UTC_TEXT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) \S+ ")


@pytest.fixture
def region(tmp_path: Path) -> Path:
    config = write_region(tmp_path)
    for user in ("alice", "bob"):
        assert cli("user", "add", user, "--password", f"{user}-pw", "--config", str(config))[0] == 0
    return config


def traffic(server: RegionProcess) -> None:
    """A failed login, a call set up, a call refused (unknown player)."""
    alice = SocketUA("alice", "eu.gamesdk.test", "alice-pw")
    bob = SocketUA("bob", "eu.gamesdk.test", "bob-pw")
    mallory = SocketUA("bob", "eu.gamesdk.test", "guess")
    try:
        assert mallory.login(server.address).status == 403
        assert alice.login(server.address).status == 200 and bob.login(server.address).status == 200
        invite_through(bob, "sip:alice@eu.gamesdk.test", server.address)
        alice.send(alice.answer(next_request(alice), 200, ANSWER), server.address)
        assert bob.final().status == 200
        invite_through(bob, "sip:nobody@eu.gamesdk.test", server.address)
        assert bob.final().status == 404
    finally:
        for ua in (alice, bob, mallory):
            ua.close()


def test_json_lines_with_session_and_login_lines(region: Path) -> None:
    server = RegionProcess(region, "--log-format", "json")
    try:
        traffic(server)
        server.wait_log("session refused")
    finally:
        assert server.stop() == 0
    records = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    assert records and all(r["time"].endswith("Z") and r["level"] and r["logger"] for r in records)
    messages = [r["message"] for r in records]
    assert any(m.startswith("session set up") and "caller=sip:bob@eu.gamesdk.test" in m and "status=200" in m
               for m in messages), messages
    assert any(m.startswith("session refused") and "status=404" in m and "by=eu.gamesdk.test" in m
               for m in messages), messages
    assert any("authentication failed for bob" in m for m in messages), messages


def test_debug_never_logs_bodies_and_trace_alone_does(region: Path) -> None:
    server = RegionProcess(region, "--log-level", "DEBUG")
    try:
        traffic(server)
        server.wait_log("session refused")
    finally:
        server.stop()
    debug_log = server.log()
    assert "server.trace" in debug_log and "Call-ID:" not in debug_log and "a=gsdk" not in debug_log
    assert all(UTC_TEXT.match(line) for line in debug_log.splitlines() if line and not line[0].isspace())

    server = RegionProcess(region, "--trace")
    try:
        traffic(server)
        server.wait_log("session refused")
    finally:
        server.stop()
    trace_log = server.log()
    assert "Call-ID:" in trace_log and "a=gsdk" in trace_log
    assert " DEBUG server.sessions" not in trace_log and " INFO server.sessions" in trace_log


def test_policy_process_logs_the_same_way(region: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    region.write_text(region.read_text() + f'\n[policy]\nlisten = "127.0.0.1:{port}"\ntoken = "{"t" * 32}"\n')
    log_path = tmp_path / "policy.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "server", "policy", "--config", str(region),
                                 "--log-format", "json"], stdout=subprocess.DEVNULL, stderr=log_file,
                                cwd=str(REPO))
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and "listening" not in log_path.read_text():
                assert proc.poll() is None, log_path.read_text()
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(10)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert any("listening" in r["message"] and r["time"].endswith("Z") for r in lines), log_path.read_text()
