"""Players at home behind NATs, in network namespaces the test builds (see netns_kit.py): both regions and coturn
in a "public" namespace, each player behind its own nftables NAT. Real sessions with game messages both ways; a
capture in the public namespace shows where the 2xx ACK went.

(a) endpoint-independent NATs both sides -> a direct (hole-punched) path;
(b) one symmetric NAT -> relayed through coturn;
(c) relay_only -> relayed, and no packet from or to the player's public address reaches the opponent's side.

Needs root, iproute2, nftables, conntrack, tcpdump and coturn (CI installs them); skipped with the reason otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from coturn_kit import coturn_missing, extra_lines, running_coturn
from netns_kit import HOME_IP, NAT_OUTSIDE, PUBLIC_SERVICE_IP, NatLab, lab_missing, read_pcap

from gamesdk import ClientConfig, Lane, PollingClient
from gamesdk.channel import packet as wire
from gamesdk.channel.events import PathChanged, SecurityError
from gamesdk.errors import LocalProtocolError
from gamesdk.events import InviteReceived, MessageReceived, SessionEnded, SessionFailed
from gamesdk.ice.candidate import Candidate
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
    channel_events: dict[str, list[object]] = field(default_factory=dict)
    failed: SessionFailed | None = None
    call_id: str | None = None
    packets: list[tuple[str, int, str, int, bytes]] = field(default_factory=list)
    home1_packets: list[tuple[str, int, str, int, bytes]] = field(default_factory=list)
    home2_packets: list[tuple[str, int, str, int, bytes]] = field(default_factory=list)


@dataclass
class Script:
    """What a case does besides the plain match: ``rounds`` exchanges of one reliable message each way, with
    ``between_rounds`` run after each but the last; ``after_accept`` runs right after bob accepts and
    ``each_tick`` on every loop pass until the match ends; ``before_invite`` once both players are ready."""

    rounds: int = 1
    between_rounds: Callable[[NatLab, dict[str, PollingClient], str], None] | None = None
    before_invite: Callable[[NatLab, dict[str, PollingClient]], None] | None = None
    after_accept: Callable[[NatLab, dict[str, PollingClient], str], None] | None = None
    each_tick: Callable[[float], None] | None = None
    #: Give up this long after the invitation (the match fails or never gets a path).
    limit_s: float = 25.0
    #: Both players idle this long after they are ready, before the invitation.
    idle_s: float = 0.0
    #: More ClientConfig fields for both players.
    client_changes: dict[str, object] = field(default_factory=dict)


def _play(lab: NatLab, tmp: Path, *, relay_only: bool = False, script: Script | None = None) -> Outcome:
    script = script or Script()
    servers: list[EmbeddedServer] = []
    with lab.inside("pub"):
        for region in ("eu", "na"):
            server = EmbeddedServer(load_config(_region_file(tmp, region)), port=None)
            server.add_user("alice" if region == "eu" else "bob", f"{'alice' if region == 'eu' else 'bob'}-pw")
            server.start_in_thread()
            servers.append(server)
    pcap, pcap1, pcap2 = tmp / "pub.pcap", tmp / "home1.pcap", tmp / "home2.pcap"
    dumps = [subprocess.Popen(["ip", "netns", "exec", lab.ns(role), "tcpdump", "-i", "any", "-U", "-n", "-w",
                               str(path), "udp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for role, path in (("pub", pcap), ("home1", pcap1), ("home2", pcap2))]
    clients: dict[str, PollingClient] = {}
    outcome = Outcome(received={"alice": [], "bob": []}, channel_events={"alice": [], "bob": []})
    try:
        conf = (f"listening-ip={PUBLIC_SERVICE_IP}\nlistening-port={TURN_PORT}\nrealm=gamesdk.test\nuse-auth-secret\n"
                f"static-auth-secret={SECRET}\nfingerprint\nno-multicast-peers\nno-cli\nno-tls\nno-dtls\n"
                "denied-peer-ip=192.168.0.0-192.168.255.255\n" + extra_lines(tmp, 49152, 49300))
        with running_coturn(conf, tmp, (PUBLIC_SERVICE_IP, TURN_PORT), netns=lab.ns("pub"),
                            inside=lambda: lab.inside("pub")):
            for path in (pcap, pcap1, pcap2):  # tcpdump writes the file header once it listens
                wait_until = time.monotonic() + 10
                while not (path.exists() and path.stat().st_size >= 24) and time.monotonic() < wait_until:
                    time.sleep(0.02)
            for name, home, region in (("alice", "home1", "eu"), ("bob", "home2", "na")):
                with lab.inside(home):
                    clients[name] = PollingClient(ClientConfig(
                        username=name, password=f"{name}-pw", domain=f"{region}.gamesdk.test",
                        server=(PUBLIC_SERVICE_IP, PORTS[region]), relay_only=relay_only,
                        **script.client_changes),  # type: ignore[arg-type]
                        bind=(HOME_IP[home][1], 0))
            alice, bob = clients["alice"], clients["bob"]
            homes = {"alice": "home1", "bob": "home2"}
            for name, client in clients.items():
                with lab.inside(homes[name]):
                    client.login(time.monotonic())
            call_id: str | None = None
            ready_at: float | None = None
            round_no = 0  # the exchange under way (sent, not yet received both ways)
            sent_round = -1
            ended = False
            deadline = time.monotonic() + 25 + script.idle_s
            while time.monotonic() < deadline and not ended:
                now = time.monotonic()
                for name, client in clients.items():
                    with lab.inside(homes[name]):
                        for event in client.poll(now):
                            if isinstance(event, InviteReceived):
                                bob.accept(event.call_id, now)
                                if script.after_accept is not None:
                                    script.after_accept(lab, clients, event.call_id)
                            if isinstance(event, SessionFailed) and name == "alice":
                                outcome.failed = event
                                ended = True
                            if isinstance(event, SessionEnded) and name == "bob":
                                ended = True
                if script.each_tick is not None:
                    script.each_tick(now)
                if call_id is None and alice.path_ready and bob.path_ready and ready_at is None:
                    ready_at = now
                if call_id is None and ready_at is not None and now >= ready_at + script.idle_s:
                    if script.before_invite is not None:
                        script.before_invite(lab, clients)
                    with lab.inside("home1"):
                        call_id = alice.invite("bob@na.gamesdk.test", now)
                    outcome.call_id = call_id
                    deadline = min(deadline + 5, time.monotonic() + script.limit_s)
                if call_id is not None and (call_id in alice.sessions or call_id in bob.sessions):
                    if sent_round < round_no and call_id in alice.sessions and call_id in bob.sessions:
                        alice.sessions[call_id].send(b"serve%d" % round_no, Lane.RELIABLE)
                        bob.sessions[call_id].send(b"return%d" % round_no, Lane.RELIABLE)
                        sent_round = round_no
                    for name, client in clients.items():
                        session = client.sessions.get(call_id)
                        if session is None:
                            continue
                        for ev in session.poll(now):
                            if isinstance(ev, MessageReceived):
                                outcome.received[name].append(ev.data)
                            else:
                                outcome.channel_events[name].append(ev)
                        path = client._core.paths.get(call_id)
                        if path is not None and path.agent.selected is not None:
                            outcome.paths[name] = "relayed" if path.agent.selected.relayed else "direct"
                    done = all(len(got) > round_no for got in outcome.received.values())
                    if done and round_no + 1 < script.rounds:
                        if script.between_rounds is not None:
                            script.between_rounds(lab, clients, call_id)
                        round_no += 1
                    elif done and call_id in alice.sessions:
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
    outcome.home1_packets = read_pcap(str(pcap1))
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


def _check_common(outcome: Outcome, rounds: int = 1) -> None:
    assert outcome.received == {"alice": [b"return%d" % i for i in range(rounds)],
                                "bob": [b"serve%d" % i for i in range(rounds)]}, (outcome.paths, outcome.channel_events)
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
    # and the other way: nothing at alice's from or about bob's public address
    bob_public = NAT_OUTSIDE["nat2"][1]
    assert outcome.home1_packets, "nothing captured at alice's"
    leaks = [p for p in outcome.home1_packets if bob_public in (p[0], p[2]) or _mentions(p[4], bob_public)]
    assert not leaks, leaks[0][4].decode("utf-8", "replace")


def _rebind(lab: NatLab, nat: str) -> None:
    """The NAT forgets its mappings and takes new ports from another range: every flow of the home behind it
    (the game's pair included) continues from a new public port, as after a home router's reboot or a carrier
    NAT's timeout."""
    index = nat[-1]
    out_iface = f"g{lab.tag}o{index}"
    lab.exec(nat, "nft", "flush", "chain", "ip", "lab", "outnat")
    lab.exec(nat, "nft", "add", "rule", "ip", "lab", "outnat", "oifname", out_iface, "meta", "l4proto", "udp",
             "masquerade", "to",
             ":20000-20999")
    lab.exec(nat, "conntrack", "-F")


def _forward_game_port(lab: NatLab, clients: dict[str, PollingClient], call_id: str) -> None:
    """Bob's NAT forwards his game port (as a router does for UPnP/PCP): endpoint-independent filtering for that
    mapping, which stock nftables has no other way to express."""
    agent = clients["bob"]._core.paths[call_id].agent
    mapped = next(c for c in agent.local_candidates if c.kind == "srflx").port
    local = agent.local_addr[1]
    outside = f"g{lab.tag}o2"
    rules = ("table ip lab {\n"
             f"  chain pre {{ type nat hook prerouting priority dstnat; iifname \"{outside}\" udp dport {mapped} "
             f"dnat to {HOME_IP['home2'][1]}:{local}; }}\n"
             "}\n")
    subprocess.run(["ip", "netns", "exec", lab.ns("nat2"), "nft", "-f", "-"], input=rules, text=True, check=True,
                   capture_output=True, timeout=20)
    lab.exec("nat2", "nft", "insert", "rule", "ip", "lab", "passing", "iifname", outside, "ct", "status", "dnat",
             "accept")


def test_a_nat_rebinding_mid_match_does_not_end_it(lab: NatLab, tmp_path: Path) -> None:
    """(d): after the first exchange alice's NAT gives her flows new public ports; the second exchange arrives,
    bob's channel moved to her new address after a path check (PathChanged), and the match ends normally.
    Bob's NAT must let the new port in: here it forwards his game port (endpoint-independent filtering); behind
    a port-restricted NAT nothing from alice's new port reaches him (docs/nat.md, "NAT rebinding")."""
    lab.build()

    def rebind(lab: NatLab, clients: dict[str, PollingClient], call_id: str) -> None:
        _forward_game_port(lab, clients, call_id)
        _rebind(lab, "nat1")

    outcome = _play(lab, tmp_path, script=Script(rounds=2, between_rounds=rebind))
    assert outcome.failed is None
    _check_common(outcome, rounds=2)
    moved = [e for e in outcome.channel_events["bob"] if isinstance(e, PathChanged)]
    assert len(moved) == 1, outcome.channel_events["bob"]
    old, new = moved[0].old_addr, moved[0].new_addr
    assert old[0] == new[0] == NAT_OUTSIDE["nat1"][1] and 20000 <= new[1] <= 20999 and old[1] != new[1]


@dataclass
class _Spoofing:
    clients: dict[str, PollingClient] | None = None
    call_id: str | None = None
    sent: int = 0
    counted: int = 0  # forged datagrams bob's path and channel dropped (the most seen at once)


def _raw_udp(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    """An IPv4 + UDP datagram with any source (UDP checksum 0: none)."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                       socket.inet_aton(src[0]), socket.inet_aton(dst[0])) + udp


def test_spoofed_packets_from_the_peers_address_before_confirmation(lab: NatLab, tmp_path: Path) -> None:
    """(e): from the moment bob accepts until both channels are up, a host on the public network sends bob's
    public game address datagrams that claim to come from alice's public game address (her srflx candidate):
    fake channel packets for bob's session id and others, fake STUN, garbage. They pass bob's NAT like hers
    do; the session still establishes, the match is played, and the forged datagrams were dropped and counted."""
    lab.build()
    with lab.inside("pub"):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    spoof = _Spoofing()

    def after_accept(_lab: NatLab, clients: dict[str, PollingClient], call_id: str) -> None:
        spoof.clients, spoof.call_id = clients, call_id

    def srflx(client: PollingClient, call_id: str) -> tuple[str, int] | None:
        path = client._core.paths.get(call_id)
        found = [c.address for c in path.agent.local_candidates if c.kind == "srflx"] if path is not None else []
        return found[0] if found else None

    def each_tick(_now: float) -> None:
        clients, call_id = spoof.clients, spoof.call_id
        if clients is None or call_id is None:
            return
        alice, bob = clients["alice"], clients["bob"]
        path = bob._core.paths.get(call_id)
        if path is not None:
            stats = bob.sessions[call_id].stats if call_id in bob.sessions else None
            seen = path.early_dropped + (stats.wrong_sid_dropped + stats.malformed_dropped + stats.decrypt_failures
                                         if stats is not None else 0)
            spoof.counted = max(spoof.counted, seen)
        if call_id in alice.sessions and call_id in bob.sessions and spoof.sent > 200:
            return  # both channels up: the spoofing window is over
        src, dst = srflx(alice, call_id), srflx(bob, call_id)
        call = bob.agent._calls.get(call_id)
        if src is None or dst is None or call is None or call.answer_game is None:
            return
        sids = [call.answer_game.session_id, *range(8)]
        payloads = [wire.encode_header(wire.PacketType.CONFIRM, sid, n) + os.urandom(48)
                    for n, sid in enumerate(sids)]
        payloads += [b"\x00\x01\x00\x00" + os.urandom(16), os.urandom(300)]
        for payload in payloads:
            raw.sendto(_raw_udp(src, dst, payload), (dst[0], 0))
        spoof.sent += len(payloads)

    try:
        outcome = _play(lab, tmp_path, script=Script(after_accept=after_accept, each_tick=each_tick))
    finally:
        raw.close()
    assert outcome.failed is None
    _check_common(outcome)
    assert not [e for e in outcome.channel_events["bob"] if isinstance(e, SecurityError)]
    assert spoof.sent > 0
    assert spoof.counted >= 1, "no forged datagram reached bob's game socket"


VICTIM = ("203.0.113.99", 4000)


@pytest.mark.parametrize("ice", [True, False], ids=["ice-candidates", "sdp-address"])
def test_an_answer_pointing_at_a_silent_victim(lab: NatLab, tmp_path: Path, ice: bool) -> None:
    """(f): bob answers with his game address replaced by a silent victim's on the public network: as his only
    ICE candidate, or (no ICE lines) as the c=/m= address. He never runs checks himself. Alice's side, with the
    game sending 100-byte messages at 60 Hz whenever it has a session, may send the victim only small probes
    (connectivity checks, path challenges): nothing came back from it, so the 3x allowance is zero."""
    lab.build()
    lab.exec("pub", "ip", "addr", "add", f"{VICTIM[0]}/32", "dev", "lo")
    with lab.inside("pub"):
        victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind(VICTIM)
    victim.setblocking(False)
    got = {"datagrams": 0, "bytes": 0, "queued": 0}
    state: dict[str, object] = {}

    def before_invite(_lab: NatLab, clients: dict[str, PollingClient]) -> None:
        bob = clients["bob"]._core
        state["clients"] = clients
        bob.remote_ice = lambda *_a, **_k: None  # type: ignore[method-assign]  # bob never checks
        if ice:
            real_ice = bob.local_ice
            fake = Candidate(foundation="1", priority=2130706431, host=VICTIM[0], port=VICTIM[1], kind="host")
            bob.local_ice = lambda call_id: dataclasses.replace(  # type: ignore[method-assign]
                real_ice(call_id), candidates=(fake,))
        else:
            real_addr = bob.agent._channel_addr
            bob.local_ice = lambda call_id: None  # type: ignore[method-assign]

            def to_victim(call_id: str) -> tuple[str, int]:
                real_addr(call_id)
                return VICTIM

            bob.agent._channel_addr = to_victim

    def each_tick(now: float) -> None:
        while True:
            try:
                data = victim.recv(65535)
            except BlockingIOError:
                break
            got["datagrams"] += 1
            got["bytes"] += len(data)
        clients = state.get("clients")
        if not isinstance(clients, dict):
            return
        alice = clients["alice"]
        for session in alice.sessions.values():
            if now >= float(state.get("next_send", 0.0)):  # type: ignore[arg-type]
                state["next_send"] = now + 1 / 60
                try:
                    session.send(b"x" * 100, Lane.UNRELIABLE)
                    got["queued"] += 100
                except LocalProtocolError:
                    pass  # the channel gave up on the victim: nothing more is queued

    try:
        outcome = _play(lab, tmp_path, script=Script(before_invite=before_invite, each_tick=each_tick,
                                                     limit_s=4.0))
    finally:
        victim.close()
    assert outcome.received == {"alice": [], "bob": []}
    assert got["bytes"] <= 2048, got  # before address validation: the whole 60 Hz stream
    if not ice:
        assert got["queued"] >= 6000, got  # the game did try to send to the victim for a second or more


def test_stun_keepalives_keep_the_way_to_the_callee_open(lab: NatLab, tmp_path: Path) -> None:
    """Bob's NAT forgets an idle UDP mapping after 2 s (conntrack timeouts; home NATs: 30 s and more). Both
    players idle 4 s after login, then alice calls: the region reaches bob at his REGISTER's public address
    only because his STUN keep-alives on the SIP socket (every 0.4-0.5 s here) kept that mapping open.
    Without them the INVITE is dropped at bob's NAT and no match starts."""
    lab.build()
    for key in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
        lab.exec("nat2", "sysctl", "-qw", f"net.netfilter.{key}=2")
    outcome = _play(lab, tmp_path, script=Script(idle_s=4.0, limit_s=8.0,
                                                 client_changes={"stun_keepalive_s": 0.5}))
    assert outcome.failed is None
    _check_common(outcome)
