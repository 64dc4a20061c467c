"""demo_game/play: one player's end of a match, driven over a :class:`~demo_game.link.GameLink`.

A :class:`Peer` follows its link through the session setup, then plays one of two roles:

- :class:`HostRole` (the caller): owns the :class:`~demo_game.world.World`, applies the guest's
  inputs, sends a snapshot every tick on the state lane and points and the end on the reliable lane;
- :class:`GuestRole` (the callee): sends its paddle command every tick on the reliable lane, draws
  the host's snapshots ``INTERP_DELAY_S`` in the past, interpolated, and its own paddle where it
  predicts it (client-side prediction, reconciled with the host's input acknowledgements).

No pygame here: the windowed and the headless runners share this code, and tests drive it on a
virtual clock. Who moves a paddle is a :class:`Controller` (a bot, or the keyboard in the window).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from demo_game import settings
from demo_game.link import (
    GameLink,
    Lane,
    LinkClosed,
    LinkEvent,
    MessageReceived,
    PeerDisconnected,
    PeerInterrupted,
    PeerResumed,
    SessionFailed,
    SessionInfo,
    SessionReady,
    SetupStep,
)
from demo_game.protocol import (
    BadMessage,
    EndMsg,
    InputMsg,
    Message,
    PointMsg,
    StateMsg,
    decode_message_untrusted,
    encode_message,
)
from demo_game.report import MatchResult
from demo_game.world import (
    GUEST,
    HOST,
    MatchWon,
    PaddleHit,
    PointScored,
    Rules,
    Snapshot,
    SnapshotBuffer,
    World,
    interpolate,
    move_paddle,
)

__all__ = [
    "Controller",
    "GuestRole",
    "HostRole",
    "Notice",
    "Outcome",
    "Peer",
    "Phase",
    "StillController",
    "match_result",
]


class Controller(Protocol):
    """Decides a paddle command in [-1, 1] (negative = up) from what the player sees."""

    def decide(self, view: Snapshot, now: float) -> float: ...


class StillController:
    """A controller whose command is set from outside (the keyboard), or that stands still."""

    def __init__(self) -> None:
        self.move = 0.0

    def decide(self, view: Snapshot, now: float) -> float:
        return self.move


class Phase(enum.Enum):
    #: the link is setting up the session
    CONNECTING = "connecting"
    #: the match runs
    PLAYING = "playing"
    #: the match ended (score, time, quit or peer drop); see Peer.outcome
    FINISHED = "finished"
    #: the session could not be set up; see Peer.outcome
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice:
    """A short message for the player (a point, a warning), with when it was raised."""

    text: str
    at: float
    warn: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How a peer's session ended."""

    #: "score", "time", "quit", "peer-dropped" or "failed"
    reason: str
    score: tuple[int, int]
    winner: int | None
    #: one line for the player, e.g. "alice@eu.example wins 5-3"
    message: str
    #: SIP status of a failed setup (e.g. 580), else None
    status: int | None = None


#: A snapshot this much later than the guest's clock estimate means the host's clock stopped (it
#: pauses while the guest is unheard): the guest resyncs instead of drifting back over seconds.
RESYNC_S = 0.25


def _quantise(move: float) -> float:
    steps = settings.INPUT_STEPS
    return round(max(-1.0, min(1.0, move)) * steps) / steps


def _name(info: SessionInfo | None, side: int) -> str:
    return info.players[side].name if info is not None else ("host", "guest")[side]


class HostRole:
    """The authoritative side: simulates and broadcasts."""

    def __init__(self, link: GameLink, info: SessionInfo, rules: Rules, seed: int) -> None:
        self.link = link
        self.info = info
        self.world = World(rules=rules, seed=seed)
        self.prev = self.cur = self.world.snapshot()
        self.total_hits = 0
        self.outcome: Outcome | None = None
        self.notices: list[Notice] = []
        self._inputs: deque[InputMsg] = deque()
        self._guest_move = 0.0
        self._input_ack = -1

    def receive(self, msg: Message, now: float) -> None:
        if isinstance(msg, InputMsg):
            if msg.seq > self._input_ack and (not self._inputs or msg.seq > self._inputs[-1].seq):
                self._inputs.append(msg)
        elif isinstance(msg, EndMsg) and msg.reason == "quit":
            self.outcome = Outcome(
                reason="quit",
                score=self.cur.score,
                winner=None,
                message=f"{_name(self.info, GUEST)} left the match",
            )
        # A guest never sends states or points; ignoring them keeps the host authoritative.

    def _next_guest_move(self) -> float:
        # One input per tick, as the guest applied them to its prediction. When inputs pile up
        # (a burst after a delay), skip ahead so the guest's paddle does not lag behind for good.
        while len(self._inputs) > settings.MAX_INPUT_BACKLOG:
            self._inputs.popleft()
        if self._inputs:
            msg = self._inputs.popleft()
            self._guest_move, self._input_ack = msg.move, msg.seq
        return self._guest_move

    def tick(self, local_move: float, dt: float, now: float) -> None:
        events = self.world.step((local_move, self._next_guest_move()), dt)
        self.prev, self.cur = self.cur, self.world.snapshot()
        self.link.send_state(encode_message(StateMsg(snapshot=self.cur, input_ack=self._input_ack)))
        for ev in events:
            if isinstance(ev, PaddleHit):
                self.total_hits += 1
            elif isinstance(ev, PointScored):
                self.link.send_reliable(
                    encode_message(PointMsg(tick=ev.tick, scorer=ev.scorer, score=ev.score))
                )
                self.notices.append(Notice(text=f"point {_name(self.info, ev.scorer)}", at=now))
            elif isinstance(ev, MatchWon):
                self.finish("score", now)

    def finish(self, reason: str, now: float) -> None:
        """End the match for both sides (the host decides: score reached, time up, or quit)."""
        if self.outcome is not None:
            return
        score = self.cur.score
        winner = self.world.winner
        if winner is None and reason == "time" and score[0] != score[1]:
            winner = HOST if score[0] > score[1] else GUEST
        self.link.send_reliable(encode_message(EndMsg(reason=reason, score=score, winner=winner)))
        self.outcome = _end_outcome(self.info, reason, score, winner)

    def view(self, now: float, alpha: float) -> Snapshot:
        # Render between the last two ticks (the accumulator's leftover, Gaffer's "Fix your timestep").
        return interpolate(self.prev, self.cur, alpha)


class GuestRole:
    """The viewing side: sends one input per tick, draws interpolated snapshots, predicts its own paddle."""

    def __init__(self, link: GameLink, info: SessionInfo, rules: Rules) -> None:
        self.link = link
        self.info = info
        self.rules = rules
        self.tick_s = 1.0 / rules.tick_hz
        self.buffer = SnapshotBuffer(settings.SNAPSHOT_BUFFER_LEN)
        self.snapshots_received = 0
        self.outcome: Outcome | None = None
        self.notices: list[Notice] = []
        self.score = (0, 0)
        self._offset_s: float | None = None
        self._seq = -1
        #: inputs sent but not yet applied by the host (InputMsg.seq > the newest input_ack)
        self._pending: deque[InputMsg] = deque()
        self._auth_y: float | None = None
        self._predicted_y: float | None = None

    def receive(self, msg: Message, now: float) -> None:
        if isinstance(msg, StateMsg):
            snap = msg.snapshot
            if self.buffer.add(snap):
                self.snapshots_received += 1
                self.score = snap.score
                # Where tick 0 sits on our clock. Take the earliest arrival (least delayed) at once
                # and follow later ones slowly, so jitter does not shake the picture.
                offset = now - snap.tick * self.tick_s
                if self._offset_s is None or offset < self._offset_s or offset - self._offset_s > RESYNC_S:
                    # (A jump forward means the host paused, e.g. while we were unheard: resync at once.)
                    self._offset_s = offset
                else:
                    self._offset_s += (offset - self._offset_s) * 0.02
                while self._pending and self._pending[0].seq <= msg.input_ack:
                    self._pending.popleft()
                self._auth_y = snap.paddle_y[GUEST]
                self._predicted_y = self._replay()
        elif isinstance(msg, PointMsg):
            self.score = msg.score
            self.notices.append(Notice(text=f"point {_name(self.info, msg.scorer)}", at=now))
        elif isinstance(msg, EndMsg):
            self.score = msg.score
            self.outcome = _end_outcome(self.info, msg.reason, msg.score, msg.winner)

    def _replay(self) -> float | None:
        # Client-side prediction with reconciliation: the host's position of our paddle, plus
        # every input it has not applied yet, through the same move_paddle the host uses.
        y = self._auth_y
        if y is None:
            return None
        for pending in self._pending:
            y = move_paddle(y, pending.move, self.rules, self.tick_s)
        return y

    def tick(self, local_move: float, dt: float, now: float) -> None:
        self._seq += 1
        msg = InputMsg(seq=self._seq, move=_quantise(local_move))
        self.link.send_reliable(encode_message(msg))
        self._pending.append(msg)
        if self._predicted_y is not None:
            self._predicted_y = move_paddle(self._predicted_y, msg.move, self.rules, dt)

    def finish(self, reason: str, now: float) -> None:
        """The guest can only quit; the host decides every other end."""
        if self.outcome is not None:
            return
        self.link.send_reliable(encode_message(EndMsg(reason="quit", score=self.score, winner=None)))
        self.outcome = Outcome(reason="quit", score=self.score, winner=None, message="you left the match")

    def view(self, now: float, alpha: float) -> Snapshot | None:
        """The host's state ``INTERP_DELAY_S`` in the past, with our own paddle where we predict it now."""
        if self._offset_s is None:
            return None
        render_tick = (now - settings.INTERP_DELAY_S - self._offset_s) / self.tick_s
        snap = self.buffer.sample(render_tick)
        if snap is None or self._predicted_y is None:
            return snap
        return replace(snap, paddle_y=(snap.paddle_y[HOST], self._predicted_y))


def _end_outcome(info: SessionInfo | None, reason: str, score: tuple[int, int], winner: int | None) -> Outcome:
    # The outcome of an end message the host sent (so a "quit" here is the host's).
    result = f"{score[0]}-{score[1]}"
    if reason == "quit":
        message = f"{_name(info, HOST)} left the match at {result}"
    elif winner is None:
        message = f"time is up: a draw at {result}"
    elif reason == "time":
        message = f"time is up: {_name(info, winner)} leads {result}"
    else:
        message = f"{_name(info, winner)} wins {result}"
    return Outcome(reason=reason, score=score, winner=winner, message=message)


class Peer:
    """One player's end of the match.

    Args:
        link: the network.
        controller: who moves this player's paddle.
        rules: must match the peer's (both come from the negotiated game format).
        seed: the host's world seed (serve angles).
    """

    def __init__(
        self, link: GameLink, controller: Controller, *, rules: Rules | None = None, seed: int = 1
    ) -> None:
        self.link = link
        self.controller = controller
        self.rules = rules or Rules()
        self.seed = seed
        self.phase = Phase.CONNECTING
        self.steps: list[str] = []
        self.info: SessionInfo | None = None
        self.role: HostRole | GuestRole | None = None
        self.outcome: Outcome | None = None
        self.notices: deque[Notice] = deque(maxlen=8)
        self.interrupted = False
        self.bad_messages = 0
        self.started_at: float | None = None
        #: called with every notice as it is raised (the headless log uses it)
        self.on_notice: Callable[[Notice], None] | None = None
        # The hang-up (BYE) waits a little after the end message: a real channel would drop the
        # reliable message still in flight when the session closes under it.
        self._close_reason: str | None = None
        self._close_at: float | None = None
        self._close_linger_s = settings.CLOSE_LINGER_S
        self._ending_here = False

    @property
    def side(self) -> int | None:
        return None if self.info is None else self.info.local_side

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.FINISHED, Phase.FAILED)

    def poll(self, now: float) -> list[LinkEvent]:
        """Poll the link (once per frame) and react; returns the link events for the caller's log."""
        events = self.link.poll(now)
        for ev in events:
            if isinstance(ev, SetupStep):
                self.steps.append(ev.text)
            elif isinstance(ev, SessionReady) and self.phase is Phase.CONNECTING:
                self._start(ev.info, now)
            elif isinstance(ev, SessionFailed):
                self.phase = Phase.FAILED
                self.outcome = Outcome(
                    reason="failed",
                    score=(0, 0),
                    winner=None,
                    message=f"session failed: {ev.status} {ev.reason}",
                    status=ev.status,
                )
            elif isinstance(ev, MessageReceived):
                self._receive(ev, now)
            elif isinstance(ev, PeerInterrupted):
                self.interrupted = True
                self._notice(
                    Notice(text="connection interrupted: nothing heard from the peer", at=now, warn=True)
                )
            elif isinstance(ev, PeerResumed):
                self.interrupted = False
                self._notice(Notice(text="connection resumed", at=now))
            elif isinstance(ev, PeerDisconnected):
                self._peer_dropped(ev.reason)
        self._collect()
        return events

    def tick(self, dt: float, now: float) -> None:
        """One fixed simulation tick."""
        if self.phase is not Phase.PLAYING or self.role is None:
            return
        if self.interrupted and isinstance(self.role, HostRole):
            # The host pauses while the guest cannot be heard: no points against a player who
            # cannot see the ball. The snapshots stop too; the guest's picture holds.
            return
        view = self.role.view(now, 1.0)
        move = self.controller.decide(view, now) if view is not None else 0.0
        try:
            self.role.tick(move, dt, now)
        except LinkClosed as exc:
            self._peer_dropped(str(exc))
        self._collect()

    @property
    def hanging_up(self) -> bool:
        """True while the end of the match is sent and the hang-up waits for it to be delivered."""
        return self._close_reason is not None

    def flush(self, now: float) -> None:
        """Send what this frame queued; hang up once the end of the match had time to arrive."""
        if self.role is None:
            return
        self.link.flush(now)
        if self._close_reason is None:
            return
        if self._close_at is None:
            self._close_at = now + self._close_linger_s
        if now >= self._close_at:
            self.hang_up(now)

    def hang_up(self, now: float) -> None:
        """Close the link now if the match ended and the hang-up is still pending (runners call it on exit)."""
        if self._close_reason is not None:
            self.link.flush(now)
            self.link.close(self._close_reason)
            self._close_reason = None

    def view(self, now: float, alpha: float) -> Snapshot | None:
        """What to draw now; None before the first snapshot."""
        return None if self.role is None else self.role.view(now, alpha)

    def end(self, reason: str, now: float) -> None:
        """End the match from this side: "time" (host only) or "quit"."""
        if self.role is not None and self.phase is Phase.PLAYING:
            self._ending_here = True
            try:
                self.role.finish(reason, now)
            except LinkClosed:
                pass
            self._collect()
            self.flush(now)
        elif self.phase is Phase.CONNECTING:
            self.phase = Phase.FAILED
            self.outcome = Outcome(reason="quit", score=(0, 0), winner=None, message="setup abandoned")
            self.link.close("quit")

    # ---- internals ------------------------------------------------------------------------------

    def _start(self, info: SessionInfo, now: float) -> None:
        self.info = info
        self.started_at = now
        self.phase = Phase.PLAYING
        if info.local_side == HOST:
            self.role = HostRole(self.link, info, self.rules, self.seed)
        else:
            self.role = GuestRole(self.link, info, self.rules)

    def _receive(self, ev: MessageReceived, now: float) -> None:
        if self.role is None:
            return
        try:
            msg = decode_message_untrusted(ev.data)
        except BadMessage:
            # A peer running another game version or a corrupted payload: count and carry on.
            self.bad_messages += 1
            return
        if isinstance(msg, StateMsg) and ev.lane is not Lane.STATE:
            self.bad_messages += 1
            return
        self.role.receive(msg, now)

    def _notice(self, notice: Notice) -> None:
        self.notices.append(notice)
        if self.on_notice is not None:
            self.on_notice(notice)

    def _peer_dropped(self, reason: str) -> None:
        if self.finished:
            return
        score = (
            self.role.cur.score if isinstance(self.role, HostRole) else getattr(self.role, "score", (0, 0))
        )
        other = _name(self.info, 1 - (self.side or 0))
        self.phase = Phase.FINISHED
        self.outcome = Outcome(
            reason="peer-dropped",
            score=score,
            winner=None,
            message=f"connection to {other} lost: {reason}",
        )
        # Nothing left to deliver: release the session at the next flush.
        self._close_reason, self._close_linger_s = "peer-dropped", 0.0

    def _collect(self) -> None:
        role = self.role
        if role is None:
            return
        for notice in role.notices:
            self._notice(notice)
        role.notices.clear()
        if role.outcome is not None and not self.finished:
            self.phase = Phase.FINISHED
            self.outcome = role.outcome
            # The host hangs up when its match ends, and so does whoever quits. A guest whose match
            # the host ended waits for the host's BYE instead of crossing it with its own.
            if isinstance(role, HostRole) or self._ending_here:
                self._close_reason = role.outcome.reason


def match_result(
    host: Peer | None,
    guest: Peer | None,
    ticks: int,
    match_started: float | None,
    match_ended: float | None,
    now: float,
) -> MatchResult:
    """Build the :class:`MatchResult` of the peers that ran in this process."""
    ran = [p for p in (host, guest) if p is not None]
    # A failed setup explains the run better than the other side's "abandoned".
    main = next((p for p in ran if p.outcome is not None and p.outcome.reason == "failed"), ran[0])
    # A run that stopped before its peer had an outcome counts as a quit.
    outcome = main.outcome or Outcome(reason="quit", score=(0, 0), winner=None, message="stopped")
    info = main.info
    players = (info.players[0].name, info.players[1].name) if info is not None else ("", "")
    duration = 0.0
    if match_started is not None:
        duration = (match_ended if match_ended is not None else now) - match_started
    hits = 0
    if host is not None and isinstance(host.role, HostRole):
        hits = host.role.total_hits
    return MatchResult(
        reason=outcome.reason,
        score=outcome.score,
        winner=outcome.winner,
        message=outcome.message,
        players=players,
        duration_s=duration,
        ticks=ticks,
        steps=tuple(main.steps),
        status=outcome.status,
        host_stats=host.link.stats() if host is not None else None,
        guest_stats=guest.link.stats() if guest is not None else None,
        snapshots_received=guest.role.snapshots_received
        if guest is not None and isinstance(guest.role, GuestRole)
        else 0,
        hits=hits,
    )
