"""NAT traversal in the NAT lab (network namespaces; needs root, iproute2, nftables, conntrack and coturn):
direct against relayed, side by side in one run.

The lab of ``tests/ice/netns_kit.py``: both regions and coturn in a "public" namespace, alice and carol (eu) in
one home behind a cone NAT, bob (na) in another. alice offers every candidate (the checks find the direct,
hole-punched pair); carol is ``relay_only`` (her game goes through coturn). Both call bob, alternately, with the
same regions, NATs and load:

1. setup: ``invite()`` called -> the first game message arrives at bob (the caller sends it as soon as its
   session opens), p50 / p99 / max; also ``invite()`` -> the caller's session open. The next call's candidates
   are gathered before each invitation (``path_ready``), as a game would wait for it after login;
2. round trip: one direct and one relayed session open at once, pings alternating between them (the caller
   sends its clock, bob echoes on the same lane): p50 / p99, and what the relay adds;
3. packets/s: each caller in turn sends 100-byte unreliable messages as fast as this one process drives it for
   ``--flood-s`` seconds (pacing lifted); what bob receives per second, direct and through coturn.

All players run in this process on one clock. Bounded: a session count and a time cap for each part. Prints a
table; no thresholds are asserted.

    sudo python bench/bench_nat.py [--sessions 14] [--pings 300] [--flood-s 2] [--seconds 120]
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "ice"))

from coturn_kit import coturn_missing, extra_lines, running_coturn
from netns_kit import HOME_IP, PUBLIC_SERVICE_IP, NatLab, lab_missing

from gamesdk import ClientConfig, Lane, PollingClient
from gamesdk.channel.config import ChannelConfig
from gamesdk.events import InviteReceived, MessageReceived
from server.config import load_config
from server.io import EmbeddedServer

SECRET = "nat-bench-secret-0123456789"
PORTS = {"eu": 5060, "na": 5062}
TURN_PORT = 3478
USERS = {"alice": ("eu", "home1"), "carol": ("eu", "home1"), "bob": ("na", "home2")}


def region_file(tmp: Path, region: str) -> Path:
    other = "na" if region == "eu" else "eu"
    text = (REPO / "examples" / f"{region}.toml").read_text()
    text = text.replace('prefixes = ["127.0.0.0/8"]', 'prefixes = ["127.0.0.0/8", "198.51.100.0/24"]')
    text = text.replace(f'listen = "udp:127.0.0.1:{PORTS[region]}"',
                        f'listen = "udp:{PUBLIC_SERVICE_IP}:{PORTS[region]}"')
    text = text.replace(f'address = "udp:127.0.0.1:{PORTS[other]}"',
                        f'address = "udp:{PUBLIC_SERVICE_IP}:{PORTS[other]}"')
    text += (f'\n[relay]\nurls = ["turn:{PUBLIC_SERVICE_IP}:{TURN_PORT}?transport=udp"]\n'
             f'shared_secret = "{SECRET}"\nrealm = "gamesdk.test"\n')
    path = tmp / f"{region}.toml"
    path.write_text(text.replace(f'database = "{region}.sqlite3"', f'database = "{tmp / region}.sqlite3"'))
    return path


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Bench:
    def __init__(self, lab: NatLab, deadline: float) -> None:
        self.lab = lab
        self.deadline = deadline
        self.clients: dict[str, PollingClient] = {}
        #: Per caller: messages bob received on its current session, with the time of arrival.
        self.at_bob: dict[str, list[tuple[float, bytes]]] = {}
        self.at_caller: dict[str, list[tuple[float, bytes]]] = {}
        self.echo = False
        self.call_of: dict[str, str] = {}  # call id -> caller name
        self.why: list[str] = []  # what went wrong, for the report
        self.events: list[object] = []  # the callers' session events, last ones

    def add(self, name: str, relay_only: bool) -> None:
        region, home = USERS[name]
        with self.lab.inside(home):
            self.clients[name] = PollingClient(ClientConfig(
                username=name, password=f"{name}-pw", domain=f"{region}.gamesdk.test",
                server=(PUBLIC_SERVICE_IP, PORTS[region]), relay_only=relay_only),
                bind=(HOME_IP[home][1], 0), channel_config=ChannelConfig(send_kbps=200_000.0))

    def pump(self) -> None:
        """One pass over every player: signalling, then every session's channel."""
        now = time.monotonic()
        bob = self.clients["bob"]
        for name, client in self.clients.items():
            with self.lab.inside(USERS[name][1]):
                for event in client.poll(now):
                    if name != "bob" and len(self.events) < 1000:
                        self.events.append(event)
                    if isinstance(event, InviteReceived):
                        bob.accept(event.call_id, now)
                for call_id, session in list(client.sessions.items()):
                    for ev in session.poll(now):
                        if not isinstance(ev, MessageReceived):
                            continue
                        arrived = time.monotonic()
                        caller = self.call_of.get(call_id, "?")
                        if name == "bob":
                            self.at_bob.setdefault(caller, []).append((arrived, ev.data))
                            if self.echo:
                                session.send(ev.data, Lane.UNRELIABLE)
                        else:
                            self.at_caller.setdefault(caller, []).append((arrived, ev.data))

    def until(self, check: Callable[[], bool], limit_s: float) -> bool:
        end = min(self.deadline, time.monotonic() + limit_s)
        while time.monotonic() < end:
            if check():
                return True
            self.pump()
            time.sleep(0.0005)
        return check()

    def invite(self, caller: str) -> str:
        client = self.clients[caller]
        with self.lab.inside(USERS[caller][1]):
            call_id = client.invite("bob@na.gamesdk.test", time.monotonic())
        self.call_of[call_id] = caller
        return call_id

    def end(self, caller: str, call_id: str) -> None:
        session = self.clients[caller].sessions.get(call_id)
        if session is not None:
            session.end(time.monotonic(), "done", linger_s=0.0)
        self.until(lambda: call_id not in self.clients["bob"].sessions
                   and call_id not in self.clients[caller].sessions, 10)

    def setup_once(self, caller: str) -> tuple[float, float] | None:
        """invite() -> first game message at bob, and invite() -> the caller's session open (seconds)."""
        client = self.clients[caller]
        if not self.until(lambda: client.path_ready and self.clients["bob"].path_ready, 10):
            self.why.append(f"{caller}: candidates not gathered in 10 s")
            return None
        self.at_bob[caller] = []
        start = time.monotonic()
        call_id = self.invite(caller)
        opened: list[float] = []

        def first_arrived() -> bool:
            session = client.sessions.get(call_id)
            if session is not None and not opened:
                opened.append(time.monotonic())
                session.send(b"first", Lane.RELIABLE)
            return bool(self.at_bob[caller])

        ok = self.until(first_arrived, 15)
        result = (self.at_bob[caller][0][0] - start, opened[0] - start) if ok and opened else None
        if result is None:
            self.why.append(f"{caller}: " + ("no first message in 15 s" if opened else
                                             f"no session in 15 s (events: {self.events[-3:]})"))
        self.end(caller, call_id)
        # the callee's region holds at most 4 reservations per player (policy max_reservations_per_player); a
        # finished match's goes when its "terminated" PUBLISH arrives, a moment after the BYE
        self.until(lambda: False, 0.5)
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=14,
                        help="sessions per path for the setup figures (both paths end at the same callee: keep "
                             "the total under the region's 32 publications per player within their 90 s lifetime)")
    parser.add_argument("--pings", type=int, default=300, help="pings per path")
    parser.add_argument("--flood-s", type=float, default=2.0, help="seconds of flood per path")
    parser.add_argument("--seconds", type=float, default=120.0, help="time cap for the whole run")
    args = parser.parse_args()
    reason = lab_missing() or coturn_missing()
    if reason:
        print(f"bench_nat: skipped: {reason}")
        return 0
    lab = NatLab()
    servers: list[EmbeddedServer] = []
    deadline = time.monotonic() + args.seconds
    try:
        lab.build()
        with tempfile.TemporaryDirectory(prefix="bench-nat-") as tmp_name:
            tmp = Path(tmp_name)
            with lab.inside("pub"):
                for region in ("eu", "na"):
                    server = EmbeddedServer(load_config(region_file(tmp, region)), port=None)
                    for name, (home_region, _) in USERS.items():
                        if home_region == region:
                            server.add_user(name, f"{name}-pw")
                    server.start_in_thread()
                    servers.append(server)
            conf = (f"listening-ip={PUBLIC_SERVICE_IP}\nlistening-port={TURN_PORT}\nrealm=gamesdk.test\n"
                    f"use-auth-secret\nstatic-auth-secret={SECRET}\nfingerprint\nno-multicast-peers\nno-cli\n"
                    "no-tls\nno-dtls\ndenied-peer-ip=192.168.0.0-192.168.255.255\n"
                    + extra_lines(tmp, 49152, 49300))
            with running_coturn(conf, tmp, (PUBLIC_SERVICE_IP, TURN_PORT), netns=lab.ns("pub"),
                                inside=lambda: lab.inside("pub")):
                bench = Bench(lab, deadline)
                bench.add("alice", relay_only=False)
                bench.add("carol", relay_only=True)
                bench.add("bob", relay_only=False)
                for name, client in bench.clients.items():
                    with lab.inside(USERS[name][1]):
                        client.login(time.monotonic())
                run(bench, args)
    finally:
        for server in servers:
            server.stop_thread()
        lab.close()
    return 0


def run(bench: Bench, args: argparse.Namespace) -> None:
    labels = {"alice": "direct", "carol": "relayed"}
    first: dict[str, list[float]] = {"alice": [], "carol": []}
    opened: dict[str, list[float]] = {"alice": [], "carol": []}
    failed = {"alice": 0, "carol": 0}
    for _ in range(args.sessions):
        for caller in ("alice", "carol"):  # alternately: the same load for both
            got = bench.setup_once(caller)
            if got is None:
                failed[caller] += 1
            else:
                first[caller].append(got[0] * 1000)
                opened[caller].append(got[1] * 1000)
        if time.monotonic() >= bench.deadline:
            break
    print("1. invite() -> first game message at the callee (ms), NAT lab, cone NATs both sides")
    print(f"   {'path':8} {'n':>4} {'p50':>8} {'p99':>8} {'max':>8}   {'open p50':>9} {'failed':>6}")
    for caller, label in labels.items():
        values = first[caller]
        print(f"   {label:8} {len(values):4d} {pct(values, 0.5):8.1f} {pct(values, 0.99):8.1f} "
              f"{max(values, default=float('nan')):8.1f}   {pct(opened[caller], 0.5):9.1f} {failed[caller]:6d}")
    for why in bench.why:
        print(f"   failed: {why}")
    if first["alice"] and first["carol"]:
        print(f"   relayed/direct p50: {pct(first['carol'], 0.5) / pct(first['alice'], 0.5):.2f}x")

    # 2. and 3.: both sessions open at once
    calls: dict[str, str] = {}
    for caller in ("alice", "carol"):
        client = bench.clients[caller]
        bench.until(lambda client=client: client.path_ready and bench.clients["bob"].path_ready, 10)  # type: ignore[misc]
        call_id = bench.invite(caller)
        if bench.until(lambda call_id=call_id, client=client: call_id in client.sessions  # type: ignore[misc]
                       and call_id in bench.clients["bob"].sessions, 15):
            calls[caller] = call_id
    if len(calls) < 2:
        print("2./3. skipped: a session did not open")
        return
    for caller, call_id in calls.items():
        pair = bench.clients[caller]._core.paths[call_id].agent.selected
        print(f"   {labels[caller]} session: {pair.local.kind} -> {pair.remote.kind}" if pair is not None
              else f"   {labels[caller]} session: no pair")
    bench.echo = True
    rtts: dict[str, list[float]] = {"alice": [], "carol": []}
    for n in range(args.pings):
        for caller in ("alice", "carol"):
            bench.at_caller[caller] = []
            stamp = struct.pack("!dI", time.monotonic(), n)
            bench.clients[caller].sessions[calls[caller]].send(stamp, Lane.UNRELIABLE)
            if bench.until(lambda caller=caller: bool(bench.at_caller.get(caller)), 2):  # type: ignore[misc]
                arrived, data = bench.at_caller[caller][0]
                rtts[caller].append((arrived - struct.unpack("!dI", data)[0]) * 1000)
        if time.monotonic() >= bench.deadline:
            break
    bench.echo = False
    print("2. round trip over the channel (ms; the callee echoes each ping)")
    print(f"   {'path':8} {'n':>5} {'p50':>8} {'p99':>8}")
    for caller, label in labels.items():
        print(f"   {label:8} {len(rtts[caller]):5d} {pct(rtts[caller], 0.5):8.3f} {pct(rtts[caller], 0.99):8.3f}")
    if rtts["alice"] and rtts["carol"]:
        print(f"   the relay adds {pct(rtts['carol'], 0.5) - pct(rtts['alice'], 0.5):.3f} ms at p50")

    print(f"3. packets/s received by the callee, 100-byte unreliable messages, {args.flood_s:.1f} s per path "
          "in 4 alternating slices")
    payload = b"x" * 100
    totals = {caller: [0, 0, 0.0] for caller in calls}  # sent, received, seconds
    for _ in range(4):
        for caller in ("alice", "carol"):
            session = bench.clients[caller].sessions[calls[caller]]
            bench.at_bob[caller] = []
            sent = 0
            start = time.monotonic()
            end = min(bench.deadline, start + args.flood_s / 4)
            while time.monotonic() < end and sent < 2_000_000:
                for _ in range(32):
                    session.send(payload, Lane.UNRELIABLE)
                    sent += 1
                bench.pump()
            bench.until(lambda: False, 0.2)  # what is still in flight
            totals[caller][0] += sent
            totals[caller][1] += sum(1 for _, data in bench.at_bob[caller] if data == payload)
            totals[caller][2] += end - start
    rates: dict[str, float] = {}
    for caller, (sent, received, seconds) in totals.items():
        rates[caller] = received / seconds if seconds else 0.0
        print(f"   {labels[caller]:8} sent {int(sent):8d}  received {int(received):8d}  {rates[caller]:9.0f}/s")
    if rates["alice"]:
        print(f"   relayed/direct: {rates['carol'] / rates['alice']:.2f}x")
    for caller, call_id in calls.items():
        bench.end(caller, call_id)
    print(f"   (statistics: setup stdev direct {statistics.pstdev(first['alice'] or [0]):.1f} ms, "
          f"relayed {statistics.pstdev(first['carol'] or [0]):.1f} ms)")


if __name__ == "__main__":
    raise SystemExit(main())
