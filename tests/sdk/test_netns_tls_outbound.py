"""A player with no inbound port open receives an invitation over its own TLS connection (RFC 5626 outbound).

The player runs in a network namespace this test makes, behind an nftables input policy that drops everything
except packets of connections the player opened. It logs in to its region over TLS and is invited by a player
of the other region: the INVITE arrives over the player's connection, and its answer (486) goes back the same
way. A probe datagram to the player's SIP UDP port shows that nothing unsolicited gets in.

Needs root, iproute2 and nftables (CI installs them); skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from regions import DOMAINS, add_users
from tls_regions import tls_config

from gamesdk import ClientConfig, GameClient, SessionError
from server.io import EmbeddedServer

ROOT = Path(__file__).resolve().parents[2]
_COUNTER = itertools.count()

PLAYER = r'''
import sys, time
from gamesdk import ClientConfig, InviteReceived, PollingClient, Registered, RegistrationFailed
server, ca, bind = sys.argv[1], sys.argv[2], sys.argv[3]
client = PollingClient(ClientConfig(username="bob", password="bob-pw", domain="na.gamesdk.test", server=server,
                                    ca=ca), bind=(bind, 0))
client.login(time.monotonic())
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    now = time.monotonic()
    for event in client.poll(now):
        if isinstance(event, Registered):
            print("REGISTERED", client.local_addr[1], flush=True)
        elif isinstance(event, RegistrationFailed):
            print("FAILED", event.status, event.reason, flush=True)
            sys.exit(1)
        elif isinstance(event, InviteReceived):
            print("INVITE", event.caller, flush=True)
            client.decline(event.call_id, now, status=486, reason="Busy Here")
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                client.poll(time.monotonic())
                time.sleep(0.01)
            client.close()
            sys.exit(0)
    time.sleep(0.005)
sys.exit(2)
'''


@dataclass(frozen=True)
class Lab:
    ns: str
    host_ip: str
    ns_ip: str


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, timeout=10, text=True).stdout


@pytest.fixture
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    tag = f"t{os.getpid() % 100000}{next(_COUNTER)}"
    ns, host_if, ns_if = f"gsdk-{tag}", f"{tag}a", f"{tag}b"
    try:
        _run("ip", "netns", "add", ns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"network namespaces unavailable here: {exc.stderr.strip()}")
    used = _run("ip", "-o", "-4", "addr")
    subnet = next(s for s in ((os.getpid() + i) % 200 + 20 for i in range(200)) if f"10.214.{s}." not in used)
    host_ip, ns_ip = f"10.214.{subnet}.1", f"10.214.{subnet}.2"
    try:
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _run("ip", "link", "set", ns_if, "netns", ns)
        _run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        _run("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        # No inbound port: only packets of connections the player opened get in.
        rules = ("table inet gsdk {\n chain input {\n type filter hook input priority 0; policy drop;\n"
                 " iif lo accept\n ct state established,related accept\n counter drop\n }\n}\n")
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True, check=True,
                       capture_output=True, timeout=10)
        yield Lab(ns, host_ip, ns_ip)
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10, check=False)


def _dropped(lab: Lab) -> int:
    text = _run("ip", "netns", "exec", lab.ns, "nft", "list", "chain", "inet", "gsdk", "input")
    for line in text.splitlines():
        if "counter packets" in line and "drop" in line:
            return int(line.split("counter packets")[1].split()[0])
    raise AssertionError(text)


def test_player_without_inbound_port_gets_the_invite_over_its_tls_connection(lab: Lab, tmp_path: Path) -> None:
    eu = EmbeddedServer(tls_config("eu", tmp_path), port=0, host=lab.host_ip, policy=False)
    na = EmbeddedServer(tls_config("na", tmp_path, player_transports=("tls",)), port=0, host=lab.host_ip,
                        policy=False)
    eu.start_in_thread()
    na.start_in_thread()
    player: subprocess.Popen[str] | None = None
    try:
        eu.set_peer(DOMAINS["na"], na.address)
        na.set_peer(DOMAINS["eu"], eu.address)
        add_users(eu, na)
        assert na.tls_address is not None
        server = f"tls:{na.tls_address[0]}:{na.tls_address[1]}"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        player = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns, sys.executable, "-c", PLAYER, server, str(tmp_path / "pki" / "ca.crt"),
             lab.ns_ip], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert player.stdout is not None
        first = player.stdout.readline().split()
        assert first[:1] == ["REGISTERED"], (first, player.stderr.read() if player.poll() is not None else "")

        before = _dropped(lab)
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.sendto(b"OPTIONS sip:bob@x SIP/2.0\r\n\r\n", (lab.ns_ip, int(first[1])))
        probe.close()

        async def call() -> str:
            alice = GameClient(ClientConfig(username="alice", password="alice-pw", domain="eu.gamesdk.test",
                                            server=eu.address), bind=(lab.host_ip, 0))
            try:
                await alice.login()
                with pytest.raises(SessionError) as failure:
                    await alice.invite("bob@na.gamesdk.test")
                return str(failure.value)
            finally:
                await alice.close()

        failure = asyncio.run(asyncio.wait_for(call(), 20))
        assert "486" in failure or "Busy" in failure, failure
        assert player.stdout.readline().split()[:2] == ["INVITE", "sip:alice@eu.gamesdk.test"]
        assert player.wait(10) == 0
        deadline = time.monotonic() + 5
        while _dropped(lab) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _dropped(lab) > before  # the probe to the player's UDP port was dropped at its door
    finally:
        if player is not None and player.poll() is None:
            player.kill()
            player.wait(5)
        eu.stop_thread()
        na.stop_thread()
