"""Players at home behind NATs, in network namespaces the test builds (see netns_kit.py): both regions and coturn
in a "public" namespace, each player behind its own nftables NAT. Real sessions with game messages both ways; a
capture in the public namespace shows where the 2xx ACK went.

(a) endpoint-independent NATs both sides -> a direct (hole-punched) path;
(b) one symmetric NAT -> relayed through coturn;
(c) relay_only -> relayed, and no packet from or to the player's public address reaches the opponent's side.

Needs root, iproute2, nftables, conntrack, tcpdump and coturn (CI installs them); skipped with the reason otherwise.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from coturn_kit import coturn_missing, extra_lines, running_coturn
from netns_kit import HOME_IP, NAT_OUTSIDE, PUBLIC_SERVICE_IP, NatLab, lab_missing, read_pcap

from gamesdk import ClientConfig, Lane, PollingClient
from gamesdk.events import InviteReceived, MessageReceived, SessionEnded
from server.config import load_config
from server.io import EmbeddedServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRET = "nat-lab-secret-0123456789"
PORTS = {"eu": 5060, "na": 5062}
TURN_PORT = 3478


def _region_file(tmp: Path, region: str) -> Path:
    other = "na" if region == "eu" else "eu"
    text = (EXAMPLES / f"{region}.toml").read_text()
    text = text.replace('prefixes = ["127.0.0.0/8"]', 'prefixes = ["127.0.0.0/8", "198.51.100.0/24"]')
    text = text.replace(f'listen = "udp:127.0.0.1:{PORTS[region]}"', f'listen = "udp:{PUBLIC_SERVICE_IP}:{PORTS[region]}"')
    text = text.replace(f'address = "udp:127.0.0.1:{PORTS[other]}"', f'address = "udp:{PUBLIC_SERVICE_IP}:{PORTS[other]}"')
    text += (f'\n[relay]\nurls = ["turn:{PUBLIC_SERVICE_IP}:{TURN_PORT}?transport=udp"]\nshared_secret = "{SECRET}"\n'
             'realm = "gamesdk.test"\n')
    path = tmp / f"{region}.toml"
    path.write_text(text.replace(f'database = "{region}.sqlite3"', f'database = "{tmp / region}.sqlite3"'))
    return path


@dataclass
class Outcome:
    paths: dict[str, str] = field(default_factory=dict)  # player -> "direct" / "relayed"
    received: dict[str, list[bytes]] = field(default_factory=dict)
    packets: list[tuple[str, int, str, int, bytes]] = field(default_factory=list)
    home2_packets: list[tuple[str, int, str, int, bytes]] = field(default_factory=list)


def _play(lab: NatLab, tmp: Path, *, relay_only: bool = False) -> Outcome:
    servers: list[EmbeddedServer] = []
    with lab.inside("pub"):
        for region in ("eu", "na"):
            server = EmbeddedServer(load_config(_region_file(tmp, region)), port=None)
            server.add_user("alice" if region == "eu" else "bob", f"{'alice' if region == 'eu' else 'bob'}-pw")
            server.start_in_thread()
            servers.append(server)
    pcap, pcap2 = tmp / "pub.pcap", tmp / "home2.pcap"
    dumps = [subprocess.Popen(["ip", "netns", "exec", lab.ns(role), "tcpdump", "-i", "any", "-U", "-n", "-w",
                               str(path), "udp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for role, path in (("pub", pcap), ("home2", pcap2))]
    clients: dict[str, PollingClient] = {}
    outcome = Outcome(received={"alice": [], "bob": []})
    try:
        conf = (f"listening-ip={PUBLIC_SERVICE_IP}\nlistening-port={TURN_PORT}\nrealm=gamesdk.test\nuse-auth-secret\n"
                f"static-auth-secret={SECRET}\nfingerprint\nno-multicast-peers\nno-cli\nno-tls\nno-dtls\n"
                "denied-peer-ip=192.168.0.0-192.168.255.255\n" + extra_lines(tmp, 49152, 49300))
        with running_coturn(conf, tmp, (PUBLIC_SERVICE_IP, TURN_PORT), netns=lab.ns("pub"),
                            inside=lambda: lab.inside("pub")):
            for path in (pcap, pcap2):  # tcpdump writes the file header once it listens
                wait_until = time.monotonic() + 10
                while not (path.exists() and path.stat().st_size >= 24) and time.monotonic() < wait_until:
                    time.sleep(0.02)
            for name, home, region in (("alice", "home1", "eu"), ("bob", "home2", "na")):
                with lab.inside(home):
                    clients[name] = PollingClient(ClientConfig(
                        username=name, password=f"{name}-pw", domain=f"{region}.gamesdk.test",
                        server=(PUBLIC_SERVICE_IP, PORTS[region]), relay_only=relay_only),
                        bind=(HOME_IP[home][1], 0))
            alice, bob = clients["alice"], clients["bob"]
            homes = {"alice": "home1", "bob": "home2"}
            for name, client in clients.items():
                with lab.inside(homes[name]):
                    client.login(time.monotonic())
            call_id: str | None = None
            sent = False
            ended = False
            deadline = time.monotonic() + 25
            while time.monotonic() < deadline and not ended:
                now = time.monotonic()
                for name, client in clients.items():
                    with lab.inside(homes[name]):
                        for event in client.poll(now):
                            if isinstance(event, InviteReceived):
                                bob.accept(event.call_id, now)
                            if isinstance(event, SessionEnded) and name == "bob":
                                ended = True
                if call_id is None and alice.path_ready and bob.path_ready:
                    with lab.inside("home1"):
                        call_id = alice.invite("bob@na.gamesdk.test", now)
                if call_id is not None and (call_id in alice.sessions or call_id in bob.sessions):
                    if not sent and call_id in alice.sessions and call_id in bob.sessions:
                        alice.sessions[call_id].send(b"serve", Lane.RELIABLE)
                        bob.sessions[call_id].send(b"return", Lane.RELIABLE)
                        sent = True
                    for name, client in clients.items():
                        session = client.sessions.get(call_id)
                        if session is None:
                            continue
                        for ev in session.poll(now):
                            if isinstance(ev, MessageReceived):
                                outcome.received[name].append(ev.data)
                        path = client._core.paths.get(call_id)
                        if path is not None and path.agent.selected is not None:
                            outcome.paths[name] = "relayed" if path.agent.selected.relayed else "direct"
                    if all(outcome.received.values()) and call_id in alice.sessions:
                        alice.sessions[call_id].end(now, "done", linger_s=0.0)
                time.sleep(0.002)
            assert call_id is not None, "the players never got ready (login or gathering)"
    finally:
        for client in clients.values():
            client.close()
        for server in servers:
            server.stop_thread()
        time.sleep(1.0)  # tcpdump reads what its ring still holds
        for dump in dumps:
            dump.send_signal(signal.SIGINT)
            dump.wait(10)
    outcome.packets = read_pcap(str(pcap))
    outcome.home2_packets = read_pcap(str(pcap2))
    return outcome


def _mentions(payload: bytes, ip: str) -> bool:
    """Whether ``payload`` carries the IPv4 address ``ip`` as text (not as part of a longer number)."""
    return re.search(rb"(?<![0-9.])" + re.escape(ip.encode()) + rb"(?![0-9])", payload) is not None


def _two_xx_acks(packets: list[tuple[str, int, str, int, bytes]]) -> list[tuple[str, int, str, int, bytes]]:
    """Packets carrying the 2xx ACK (CSeq 2: the first INVITE was challenged, its ACK went hop by hop)."""
    return [p for p in packets if b"ACK sip:bob@" in p[4] and b"CSeq: 2 ACK" in p[4]]


@pytest.fixture
def lab() -> object:
    reason = lab_missing() or coturn_missing() or (None if shutil.which("tcpdump") else "needs tcpdump")
    if reason:
        pytest.skip(reason)
    made = NatLab()
    try:
        yield made
    finally:
        made.close()


def _check_common(outcome: Outcome) -> None:
    assert outcome.received == {"alice": [b"return"], "bob": [b"serve"]}
    acks = _two_xx_acks(outcome.packets)
    assert acks, "the 2xx ACK was not seen crossing the public network"
    # never to a regional server's SIP port: it went over the pair the checks validated
    assert all(dport not in PORTS.values() for _, _, _, dport, _ in acks), acks


def test_cone_nats_both_sides_get_a_direct_path(lab: NatLab, tmp_path: Path) -> None:
    lab.build()
    outcome = _play(lab, tmp_path)
    assert outcome.paths == {"alice": "direct", "bob": "direct"}
    _check_common(outcome)
    acks = _two_xx_acks(outcome.packets)
    assert all(src == NAT_OUTSIDE["nat1"][1] and dst == NAT_OUTSIDE["nat2"][1] for src, _, dst, _, _ in acks)


def test_one_symmetric_nat_is_relayed_through_coturn(lab: NatLab, tmp_path: Path) -> None:
    lab.build(symmetric=("nat1",))
    outcome = _play(lab, tmp_path)
    assert outcome.paths == {"alice": "relayed", "bob": "relayed"}
    _check_common(outcome)


def test_relay_only_hides_the_players_address(lab: NatLab, tmp_path: Path) -> None:
    lab.build()
    outcome = _play(lab, tmp_path, relay_only=True)
    assert outcome.paths == {"alice": "relayed", "bob": "relayed"}
    _check_common(outcome)
    alice_public = NAT_OUTSIDE["nat1"][1]
    assert outcome.home2_packets, "nothing captured at bob's"
    assert all(alice_public not in (src, dst) for src, _, dst, _, _ in outcome.home2_packets)
    # nor in what they carry: the INVITE reaches bob without alice's Via (whose received= is her public address)
    leaks = [p for p in outcome.home2_packets if _mentions(p[4], alice_public)]
    assert not leaks, leaks[0][4].decode("utf-8", "replace")
