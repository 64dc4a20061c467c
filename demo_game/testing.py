"""demo_game/testing: a conformance check for any :class:`~demo_game.link.GameLink` pair, and the
virtual clock, offline session and sample session info the demo's tests and screenshot run on.

The game relies on a few promises of its links (DESIGN section 6 lanes). ``check_link_pair``
drives a connected pair the way the game does and raises ``AssertionError`` with a message
naming the broken promise. It runs against :class:`~demo_game.loopback.LoopbackLink` in
``tests/demo/test_linktest.py``, and against the real ``GamesdkLink`` (``demo_game/net.py``) of
``--local`` over loopback UDP in ``tests/demo/test_local_link.py``:

    report = check_link_pair(handle.host_link, handle.guest_link, pump=handle.pump)

The promises:
1. both ends report :class:`SessionReady`, each with its own ``local_side`` and the same call;
2. the state lane never delivers an older message after a newer one, nor one twice;
3. the reliable lane delivers every message, once, in order, both ways;
4. ``stats()`` counts what was sent and, once traffic flowed, has a round-trip time;
5. ``close()`` on one end reaches the other as :class:`PeerDisconnected`.

Whether a reliable message sent just before ``close()`` still arrives is reported
(``LinkReport.last_before_close_delivered``), not required: the game does not rely on it (a
:class:`~demo_game.play.Peer` waits ``CLOSE_LINGER_S`` after its end message before hanging up).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from demo_game.link import (
    GameLink,
    Lane,
    LinkStats,
    MessageReceived,
    PeerDisconnected,
    PlayerInfo,
    QosBudget,
    Reservation,
    SessionFailed,
    SessionInfo,
    SessionReady,
)
from demo_game.main import build_parser
from demo_game.offline import OfflineSession, setup_offline_session

__all__ = ["LinkReport", "VirtualClock", "check_link_pair", "offline_session", "sample_session_info"]


class VirtualClock:
    """A clock that only moves when told to: a whole match runs in milliseconds.

    Call it for the time; ``sleep`` (or setting ``t``) moves it on. ``sleep`` moves at least 1 ms,
    so a runner that asks for a zero sleep still gets closer to its deadline.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 0.001)


def offline_session(*argv: str) -> OfflineSession:
    """The session ``python -m demo_game --offline --headless ARGV`` plays over (no paced setup steps)."""
    args = build_parser().parse_args(["--offline", *argv])
    args.headless = True
    return setup_offline_session(args)


def sample_session_info(
    call_id: str = "c1",
    *,
    latency_ms: float = 50,
    jitter_ms: float = 10,
    reservations: tuple[Reservation | None, Reservation | None] = (None, None),
) -> SessionInfo:
    """The host's view of a 60 Hz pong call between alice@eu.example and bob@na.example (1 % loss budget)."""
    return SessionInfo(
        call_id=call_id,
        players=(
            PlayerInfo(name="alice@eu.example", region="eu", reservation=reservations[0]),
            PlayerInfo(name="bob@na.example", region="na", reservation=reservations[1]),
        ),
        local_side=0,
        game_format="pong/1;tick=60",
        classification="action",
        budget=QosBudget(latency_ms=latency_ms, jitter_ms=jitter_ms, loss_ppm=10_000, packets_per_s=60),
        security_suite="chacha20-poly1305",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkReport:
    """What the check measured."""

    info: SessionInfo
    #: state messages sent by the host / delivered to the guest
    states_sent: int
    states_delivered: int
    reliable_each_way: int
    #: seconds from the first poll to both ends being ready
    setup_s: float
    host_stats: LinkStats
    #: did a reliable message sent right before close() reach the peer before PeerDisconnected?
    last_before_close_delivered: bool


def _require(ok: bool, message: str) -> None:
    # Not `assert`: the check must hold under `python -O` too.
    if not ok:
        raise AssertionError(message)


def _seq(data: bytes) -> int:
    return int.from_bytes(data[:4], "big")


def check_link_pair(
    host_link: GameLink,
    guest_link: GameLink,
    *,
    pump: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    messages: int = 120,
    interval_s: float = 1 / 60,
    timeout_s: float = 20.0,
) -> LinkReport:
    """Check the promises above on a connected pair; returns what was measured.

    Args:
        host_link, guest_link: the two ends, freshly created (before their first poll).
        pump: called before each poll round (embedded servers).
        clock, sleep: real time by default; ``sleep`` must advance ``clock``.
        messages: how many state and reliable messages each way.
        interval_s: time between two sends (one game tick by default).
        timeout_s: limit for the setup and for the delivery of the last messages.

    Raises:
        AssertionError: naming the promise that was broken.
    """
    start = clock()
    ready: dict[int, SessionInfo] = {}
    ends = (host_link, guest_link)

    def poll_all() -> list[list[object]]:
        now = clock()
        if pump is not None:
            pump(now)
        return [list(link.poll(now)) for link in ends]

    while len(ready) < 2:
        for i, events in enumerate(poll_all()):
            for ev in events:
                if isinstance(ev, SessionFailed):
                    _require(False, f"promise 1: end {i} failed to set up: {ev.status} {ev.reason}")
                if isinstance(ev, SessionReady):
                    ready[i] = ev.info
        _require(
            clock() - start < timeout_s, f"promise 1: no SessionReady on both ends within {timeout_s:g} s"
        )
        sleep(interval_s)
    setup_s = clock() - start
    host_info, guest_info = ready[0], ready[1]
    _require(
        (host_info.local_side, guest_info.local_side) == (0, 1),
        f"promise 1: local_side must be 0 for the host and 1 for the guest, got "
        f"{host_info.local_side} and {guest_info.local_side}",
    )
    _require(host_info.call_id == guest_info.call_id, "promise 1: both ends must report the same call")
    _require(
        host_link.session_info() == host_info, "promise 1: session_info() differs from SessionReady.info"
    )

    states: list[int] = []
    reliable: list[list[int]] = [[], []]  # what end 0 / end 1 received
    disconnected = [False, False]

    def collect(all_events: list[list[object]]) -> None:
        for i, events in enumerate(all_events):
            for ev in events:
                if isinstance(ev, MessageReceived):
                    if ev.lane is Lane.STATE:
                        _require(i == 1, "promise 2: only the host sent on the state lane")
                        states.append(_seq(ev.data))
                    else:
                        reliable[i].append(_seq(ev.data))
                elif isinstance(ev, PeerDisconnected):
                    disconnected[i] = True

    for n in range(messages):
        collect(poll_all())
        host_link.send_state(n.to_bytes(4, "big") + b"s" * 60)
        host_link.send_reliable(n.to_bytes(4, "big") + b"h")
        guest_link.send_reliable(n.to_bytes(4, "big") + b"g")
        now = clock()
        host_link.flush(now)
        guest_link.flush(now)
        sleep(interval_s)
    deadline = clock() + timeout_s
    while (len(reliable[0]) < messages or len(reliable[1]) < messages) and clock() < deadline:
        collect(poll_all())
        sleep(interval_s)

    _require(states == sorted(set(states)), "promise 2: the state lane delivered out of order or twice")
    _require(bool(states), "promise 2: no state message arrived at all")
    for i, who in ((1, "guest"), (0, "host")):
        _require(
            reliable[i] == list(range(messages)),
            f"promise 3: the {who} received reliable messages {reliable[i][:10]}... "
            f"({len(reliable[i])} of {messages}), not all of 0..{messages - 1} in order",
        )
    host_stats = host_link.stats()
    _require(host_stats.packets_out >= messages, "promise 4: stats() did not count the packets sent")
    _require(host_stats.rtt_ms is not None, "promise 4: no round-trip time after traffic flowed both ways")

    host_link.send_reliable((messages).to_bytes(4, "big") + b"last")
    host_link.flush(clock())
    host_link.close("test over")
    deadline = clock() + timeout_s
    while not disconnected[1] and clock() < deadline:
        collect(poll_all())
        sleep(interval_s)
    _require(
        disconnected[1], f"promise 5: the guest saw no PeerDisconnected within {timeout_s:g} s of close()"
    )
    return LinkReport(
        info=host_info,
        states_sent=messages,
        states_delivered=len(states),
        reliable_each_way=messages,
        setup_s=setup_s,
        host_stats=host_stats,
        last_before_close_delivered=reliable[1][-1] == messages,
    )
