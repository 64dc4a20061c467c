"""Addresses an operator configures: wildcard listen + advertise, IPv6 health checks, check-config refusals."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from process_kit import RegionProcess, cli, free_udp_port, options, write_region
from server_kit import SocketUA
from test_restart import invite_through, next_request

from gamesdk.sip.parser import parse_message_untrusted
from server.cli import EXIT_OK, EXIT_USAGE


def check(config: Path) -> tuple[int, str]:
    code, out, err = cli("check-config", "--config", str(config))
    return code, out + err


@pytest.mark.parametrize(("change", "key"), [
    (lambda t, port: t.replace('address = "udp:127.0.0.1:', f'address = "udp:127.0.0.1:{port}"\n#', 1),
     "peers[0].address"),
    (lambda t, port: t + "\n[timers]\nt1_s = 5\nt2_s = 4\n", "timers.t1_s"),
    (lambda t, port: t.replace('database = "eu.sqlite3"', 'database = "missing/eu.sqlite3"'), "region.database"),
    (lambda t, port: t.replace('listen = "udp:127.0.0.1:', 'listen = "udp:0.0.0.0:'), "region.advertise"),
    (lambda t, port: t.replace('listen = "udp:127.0.0.1:', 'advertise = "0.0.0.0"\nlisten = "udp:0.0.0.0:'),
     "region.advertise"),
])
def test_check_config_refuses(tmp_path: Path, change: object, key: str) -> None:
    config = write_region(tmp_path)
    port = int(config.read_text().split('listen = "udp:127.0.0.1:')[1].split('"')[0])
    config.write_text(change(config.read_text(), port))  # type: ignore[operator]
    code, text = check(config)
    assert code == EXIT_USAGE and key in text and "Traceback" not in text, text
    assert not (tmp_path / "missing").exists()


def test_wildcard_listen_writes_the_advertised_address_into_via(tmp_path: Path) -> None:
    port = free_udp_port()
    config = write_region(tmp_path, port=port)
    config.write_text(config.read_text().replace(f'listen = "udp:127.0.0.1:{port}"',
                                                 f'listen = "udp:0.0.0.0:{port}"\nadvertise = "127.0.0.1"'))
    assert check(config)[0] == EXIT_OK
    for user in ("alice", "bob"):
        assert cli("user", "add", user, "--password", f"{user}-pw", "--config", str(config))[0] == EXIT_OK
    server = RegionProcess(config)
    alice = SocketUA("alice", "eu.gamesdk.test", "alice-pw")
    bob = SocketUA("bob", "eu.gamesdk.test", "bob-pw")
    target = ("127.0.0.1", port)
    try:
        assert alice.login(target).status == 200 and bob.login(target).status == 200
        invite_through(bob, "sip:alice@eu.gamesdk.test", target)
        arrived = next_request(alice)
        assert arrived.top_via.sent_by == ("127.0.0.1", port), arrived.headers.get("Via")
    finally:
        alice.close()
        bob.close()
        server.stop()


def test_ipv6_options_health_check_is_answered_200(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        port = free_udp_port("::1")
    except OSError:
        pytest.skip("no ::1 on this host")
    config = write_region(tmp_path)
    text = config.read_text()
    old = text.split('listen = "')[1].split('"')[0]
    config.write_text(text.replace(old, f"udp:[::1]:{port}"))
    server = RegionProcess(config)
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
            sock.settimeout(3)
            sock.sendto(options(("::1", port), "health6", sock.getsockname()[:2]), ("::1", port))
            answer = parse_message_untrusted(sock.recvfrom(65535)[0])
        assert getattr(answer, "status", None) == 200
    finally:
        server.stop()
