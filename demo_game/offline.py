"""demo_game/offline: a stand-in session over :class:`~demo_game.loopback.LoopbackLink`, no servers.

``python -m demo_game --offline`` uses it, and so does ``--local`` until ``demo_game/local.py``
exists. It mimics the steps of the real setup (login, INVITE, the two policy decisions, ACK) and
says on every line that they are simulated, and it applies the same kinds of refusal the policy
servers would (a latency budget below what the path needs, an access network too small), so the
failure screens can be seen without servers.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import TextIO

from demo_game import settings
from demo_game.link import GameLink, PlayerInfo, QosBudget, Reservation, SessionInfo
from demo_game.loopback import WIRE_OVERHEAD_BYTES, LoopbackLink, NetSim

__all__ = ["OfflineSession", "setup_offline_session"]

#: Typical access round trips the offline regions pretend to have, ms (the real ones come from
#: each region's ``[[access_networks]]`` config, DESIGN section 4).
HOST_ACCESS = ("eu", "eu-fibre", 8.0)
GUEST_ACCESS = ("na", "na-cable", 14.0)

#: A snapshot message is about 90 bytes of msgpack (measured in tests/demo/test_protocol.py).
SNAPSHOT_BYTES = 96
#: The guest sends one input (about 20 bytes) per tick: (20 + 57) * 8 * 60 / 1000 = 37 kbit/s.
GUEST_KBPS = 40


def state_kbps(tick_hz: int) -> int:
    """kbit/s the host's snapshots take on the wire at ``tick_hz``."""
    return math.ceil((SNAPSHOT_BYTES + WIRE_OVERHEAD_BYTES) * 8 * tick_hz / 1000)


@dataclass(slots=True)
class OfflineSession:
    """A :class:`~demo_game.link.SessionHandle` over an in-memory pair."""

    host_link: GameLink | None
    guest_link: GameLink | None

    def pump(self, now: float) -> None:
        """Nothing else runs offline."""

    def finish(self, out: TextIO) -> None:
        out.write("billing: none (offline mode has no regional servers; run --local for real records)\n")


def setup_offline_session(args: argparse.Namespace) -> OfflineSession:
    """Build the simulated session the options ask for (see ``demo_game.main`` for the options)."""
    host_name = f"{args.user or 'alice'}@eu.gamesdk.test"
    guest_name = f"{args.peer or 'bob'}@na.gamesdk.test"
    tick_hz = settings.TICK_HZ
    big = state_kbps(tick_hz)
    budget = QosBudget(
        latency_ms=args.latency_ms, jitter_ms=args.jitter_ms, loss_ppm=args.loss_ppm, packets_per_s=tick_hz
    )
    info = SessionInfo(
        call_id="offline-1@127.0.0.1",
        players=(
            PlayerInfo(
                name=host_name,
                region=HOST_ACCESS[0],
                reservation=Reservation(
                    region=HOST_ACCESS[0], access_network=HOST_ACCESS[1], up_kbps=big, down_kbps=GUEST_KBPS
                ),
            ),
            PlayerInfo(
                name=guest_name,
                region=GUEST_ACCESS[0],
                reservation=Reservation(
                    region=GUEST_ACCESS[0], access_network=GUEST_ACCESS[1], up_kbps=GUEST_KBPS, down_kbps=big
                ),
            ),
        ),
        local_side=0,
        game_format=f"{args.format};tick={tick_hz}" if ";" not in args.format else args.format,
        classification=args.classification,
        budget=budget,
        security_suite="chacha20-poly1305",
    )
    sim = NetSim(
        latency_ms=args.sim_latency_ms, jitter_ms=args.sim_jitter_ms, loss=args.sim_loss, seed=args.seed
    )
    # What the admission control would compute: both access round trips plus the transit between them.
    path_ms = HOST_ACCESS[2] + GUEST_ACCESS[2] + 2 * args.sim_latency_ms + args.sim_jitter_ms
    failure: tuple[int, str] | None = None
    if args.access_kbps is not None and args.access_kbps < big:
        failure = (
            580,
            f"insufficient uplink in {HOST_ACCESS[1]}: {big} kbit/s asked, {args.access_kbps} available",
        )
    elif path_ms > args.latency_ms:
        failure = (
            580,
            f"latency budget: the path needs {path_ms:g} ms round trip, the session allows {args.latency_ms:g} ms",
        )

    steps = [
        "[simulated] offline mode: no servers, the steps below only imitate them (use --local)",
        f"[simulated] {host_name} logged in to region {HOST_ACCESS[0]}; {guest_name} to {GUEST_ACCESS[0]}",
        (
            f"[simulated] INVITE {guest_name}: format {info.game_format}, class {info.classification}, "
            f"rtt <= {args.latency_ms:g} ms, jitter <= {args.jitter_ms:g} ms"
        ),
    ]
    if failure is None:
        steps += [
            f"[simulated] {GUEST_ACCESS[0]} policy: reserved {GUEST_KBPS} up / {big} down kbit/s on {GUEST_ACCESS[1]}",
            f"[simulated] {HOST_ACCESS[0]} policy: reserved {big} up / {GUEST_KBPS} down kbit/s on {HOST_ACCESS[1]}",
            "[simulated] 200 OK accepted, ACK sent directly to the callee, channel confirmed",
        ]
    else:
        steps.append(f"[simulated] {HOST_ACCESS[0]} policy: refused ({failure[1]})")
    guest_steps = (
        f"[simulated] {guest_name} logged in to region {GUEST_ACCESS[0]}, waiting for an invite",
        f"[simulated] INVITE from {host_name} answered with 200 OK",
    )
    host, guest = LoopbackLink.pair(
        info,
        sim=sim,
        setup_steps=tuple(steps),
        guest_setup_steps=guest_steps,
        # Headless logs need no pacing; a window shows the steps appear one by one.
        step_interval_s=args.step_interval_s
        if args.step_interval_s is not None
        else (0.0 if args.headless else 0.35),
        failure=failure,
    )
    return OfflineSession(host_link=host, guest_link=guest)
