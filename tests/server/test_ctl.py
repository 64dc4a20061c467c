"""``gamesdk-server ctl`` against a running region process, one test per command family."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from process_kit import RegionProcess, cli, listen_of, wait_answers, write_region
from server_kit import SocketUA

from server.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from server.config import load_config
from server.control import ControlServer, call
from server.io import serve_forever


@pytest.fixture
def region(tmp_path: Path) -> Iterator[tuple[Path, RegionProcess]]:
    config = write_region(tmp_path)
    text = config.read_text().replace('digest_algorithms = ["MD5", "SHA-256"]',
                                      'digest_algorithms = ["MD5", "SHA-256"]\nslow_after_failures = 2\n'
                                      'block_after_failures = 2\ndelay_step_s = 0')
    config.write_text(text)
    code, _, err = cli("user", "add", "alice", "--password", "alice-pw", "--config", str(config))
    assert code == EXIT_OK, err
    server = RegionProcess(config)
    yield config, server
    server.stop()


def login_status(ua: SocketUA, server: tuple[str, int]) -> int:
    request = ua.register(600)
    ua.send(request, server)
    first = ua.final()
    if first.status != 401:
        return first.status
    ua.send(ua.authorize(request, first), server)
    return ua.final().status


def ctl(config: Path, *argv: str) -> tuple[int, object, str]:
    code, out, err = cli("ctl", "--config", str(config), "--json", *argv)
    return code, json.loads(out) if out.strip() else None, err


def test_socket_is_private_and_stats_and_registrations_show_a_login(region: tuple[Path, RegionProcess]) -> None:
    config, server = region
    socket_path = Path(str(config.with_name("eu.sqlite3")) + ".ctl")
    assert stat.S_ISSOCK(socket_path.stat().st_mode) and stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    alice = SocketUA("alice", "eu.gamesdk.test", "alice-pw")
    try:
        assert alice.login(server.address).status == 200
    finally:
        alice.close()
    code, stats, _ = ctl(config, "stats")
    assert code == EXIT_OK and isinstance(stats, dict)
    assert stats["region"] == "eu" and stats["registrations"] == 1 and stats["node"]["requests"] >= 2
    code, regs, _ = ctl(config, "registrations")
    assert code == EXIT_OK and isinstance(regs, list)
    assert [r["aor"] for r in regs] == ["sip:alice@eu.gamesdk.test"]
    assert regs[0]["access_network"] == "eu-fiber" and regs[0]["expires_in_s"] > 0
    code, text, _ = cli("ctl", "--socket", str(socket_path), "stats")[0:3]
    assert code == EXIT_OK and '"region": "eu"' in text  # --socket works without the config


def test_ctl_works_as_soon_as_the_region_answers_sip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An init script may run ``ctl`` right after the region answers: its control socket is up before that.

    The control socket is made slow to open (a server preempted on a loaded host); the region must not answer
    SIP until it is open. It used to open the SIP socket first, so ``ctl`` right after the first answer found no
    control socket."""
    path = write_region(tmp_path)
    config = load_config(path)
    opened = ControlServer.start

    async def slow_start(self: ControlServer) -> None:
        await asyncio.sleep(1.0)
        await opened(self)

    monkeypatch.setattr(ControlServer, "start", slow_start)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    with ThreadPoolExecutor(1) as pool:
        served = pool.submit(loop.run_until_complete, serve_forever(config, policy=False, stop=stop))

        def alive() -> None:
            assert not served.done(), f"server stopped: {served.exception()}"

        try:
            assert wait_answers(listen_of(path), 20.0, alive)
            assert stat.S_ISSOCK(config.control_path.stat().st_mode)
            assert call(config.control_path, "stats", [])["region"] == "eu"
        finally:
            loop.call_soon_threadsafe(stop.set)
            served.result(15)
            loop.close()
    assert not config.control_path.exists()


def test_reservations_lists_capacity(region: tuple[Path, RegionProcess]) -> None:
    config, _ = region
    code, result, _ = ctl(config, "reservations")
    assert code == EXIT_OK and isinstance(result, dict)
    assert result["reservations"] == [] and {c["name"] for c in result["capacity"]} == {"eu-fiber", "eu-dsl"}


def test_blocked_and_unblock(region: tuple[Path, RegionProcess]) -> None:
    config, server = region
    mallory = SocketUA("alice", "eu.gamesdk.test", "wrong")
    alice = SocketUA("alice", "eu.gamesdk.test", "alice-pw")
    try:
        for _ in range(2):
            assert login_status(mallory, server.address) == 403
        assert login_status(alice, server.address) == 403  # the user is blocked now, even with the password
        code, blocked, _ = ctl(config, "blocked")
        assert code == EXIT_OK and isinstance(blocked, list)
        assert "user:alice" in [b["key"] for b in blocked]
        assert ctl(config, "unblock", "user:alice")[0] == EXIT_OK
        assert login_status(alice, server.address) == 200
        code, _, err = ctl(config, "unblock", "user:alice")
        assert code == EXIT_FAILED and "not blocked" in err
    finally:
        mallory.close()
        alice.close()


def test_flush_log_level_and_reload(region: tuple[Path, RegionProcess]) -> None:
    config, server = region
    assert ctl(config, "flush")[0] == EXIT_OK
    assert ctl(config, "log-level", "debug")[0] == EXIT_OK
    server.wait_log("log level set to DEBUG")
    code, _, err = ctl(config, "log-level", "chatty")
    assert code == EXIT_FAILED and "chatty" in err
    good = config.read_text()
    config.write_text(good.replace("[registrar]", "[registrar]\ndefault_expires_s = 'soon'", 1))
    socket_path = str(config.with_name("eu.sqlite3")) + ".ctl"
    code, _, err = cli("ctl", "--socket", socket_path, "reload")  # --config would refuse the file itself
    assert code == EXIT_FAILED and "registrar.default_expires_s" in err and "kept" in err
    config.write_text(good)
    assert ctl(config, "reload")[0] == EXIT_OK
    assert server.proc.poll() is None


def test_drain_stops_the_server(region: tuple[Path, RegionProcess]) -> None:
    config, server = region
    code, result, _ = ctl(config, "drain")
    assert code == EXIT_OK and "draining" in str(result)
    assert server.proc.wait(15) == 0
    code, _, err = ctl(config, "stats")
    assert code == EXIT_UNREACHABLE and "is the region running" in err


def test_usage_errors(region: tuple[Path, RegionProcess]) -> None:
    config, _ = region
    assert cli("ctl", "--config", str(config), "explode")[0] == EXIT_USAGE
    code, _, err = cli("ctl", "--config", str(config), "unblock")
    assert code == EXIT_FAILED and "KEY" in err
    assert cli("ctl", "stats")[0] == EXIT_USAGE
