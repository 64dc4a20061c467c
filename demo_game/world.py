"""demo_game/world: the pure, deterministic Pong simulation.

The host (the caller, DESIGN section 1) owns a :class:`World` and advances it with
:meth:`World.step` at a fixed timestep; the guest only ever sees :class:`Snapshot` values and
renders them with :func:`interpolate` through a :class:`SnapshotBuffer`.

This module imports neither pygame nor gamesdk nor ``random``: the serve angles come from a
tiny xorshift generator seeded by the caller, so two worlds fed the same seed and inputs
produce bit-identical snapshots (tested in ``tests/demo/test_world.py``).

A little richer than classic Pong:
- the ball speeds up by :attr:`Rules.speedup` on every paddle hit, up to :attr:`Rules.max_speed_u_s`;
- where the ball meets the paddle sets the bounce angle, and the paddle's own vertical speed adds
  *spin*, a sideways acceleration that curves the ball's path and decays over time.

Units: world units (u) match pixels of the default 960x480 field, seconds, u/s.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "BadSnapshot",
    "MatchWon",
    "PaddleHit",
    "PointScored",
    "Rules",
    "Snapshot",
    "SnapshotBuffer",
    "WallBounce",
    "World",
    "WorldEvent",
    "interpolate",
    "move_paddle",
    "snapshot_from_fields_untrusted",
    "snapshot_to_fields",
]

HOST = 0  #: side index of the host (left paddle)
GUEST = 1  #: side index of the guest (right paddle)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rules:
    """The tunable constants of a match; both sides must agree on them (they are part of ``pong/1``)."""

    field_w_u: float = 960.0
    field_h_u: float = 480.0
    paddle_h_u: float = 92.0
    paddle_w_u: float = 14.0
    #: distance from the field edge to the back of a paddle
    paddle_margin_u: float = 28.0
    paddle_speed_u_s: float = 560.0
    ball_r_u: float = 8.0
    serve_speed_u_s: float = 390.0
    #: speed factor per paddle hit; 6 % makes a 10-hit rally about 1.8x faster
    speedup: float = 1.06
    max_speed_u_s: float = 1150.0
    #: steepest bounce off a paddle edge, degrees from the horizontal
    max_bounce_deg: float = 55.0
    #: steepest the ball may ever travel, so spin cannot make it bounce between the walls forever
    max_angle_deg: float = 65.0
    #: share of the paddle's vertical speed added to the ball's at a hit
    paddle_carry: float = 0.25
    #: spin (u/s^2 of sideways acceleration) per u/s of paddle speed at the hit
    spin_per_paddle_speed: float = 1.6
    #: spin left after one second (exponential decay)
    spin_decay_per_s: float = 0.3
    serve_delay_s: float = 0.8
    win_score: int = 5
    #: ticks per second; the ``tick=`` parameter of the ``pong/1`` game format
    tick_hz: int = 60

    def face_x(self, side: int) -> float:
        """x of the face of ``side``'s paddle that the ball bounces off."""
        if side == HOST:
            return self.paddle_margin_u + self.paddle_w_u
        return self.field_w_u - self.paddle_margin_u - self.paddle_w_u


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """Everything a viewer needs to draw one tick; what the host sends on the state lane."""

    tick: int
    ball_x: float
    ball_y: float
    ball_vx: float
    ball_vy: float
    #: sideways acceleration of the ball, u/s^2
    spin: float
    paddle_y: tuple[float, float]
    paddle_vy: tuple[float, float]
    score: tuple[int, int]
    #: counts points played; a change means the ball was reset (never interpolate across it)
    rally: int
    #: paddle hits in the current rally
    hits: int
    #: ticks left before the ball is served (0 while in play)
    serve_ticks: int
    #: side that won the match, or None while it runs
    winner: int | None = None


# --- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WorldEvent:
    """Base class of what happened during one :meth:`World.step`."""

    tick: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PaddleHit(WorldEvent):
    side: int
    #: ball speed after the hit, u/s
    speed_u_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class WallBounce(WorldEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class PointScored(WorldEvent):
    scorer: int
    score: tuple[int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class MatchWon(WorldEvent):
    winner: int
    score: tuple[int, int]


# --- the simulation -----------------------------------------------------------------------


def _xorshift32(state: int) -> int:
    # Marsaglia 2003, "Xorshift RNGs", the (13, 17, 5) triple; never yields 0 from non-zero.
    state ^= (state << 13) & 0xFFFFFFFF
    state ^= state >> 17
    state ^= (state << 5) & 0xFFFFFFFF
    return state & 0xFFFFFFFF


@dataclass(slots=True)
class _Paddle:
    y: float
    vy: float = 0.0


@dataclass(slots=True)
class World:
    """The authoritative match state, advanced by :meth:`step`.

    Args:
        rules: the match constants.
        seed: any int; picks the serve angles. Same seed + same inputs = same match.
    """

    rules: Rules = field(default_factory=Rules)
    seed: int = 1
    tick: int = 0
    ball_x: float = 0.0
    ball_y: float = 0.0
    ball_vx: float = 0.0
    ball_vy: float = 0.0
    spin: float = 0.0
    paddles: tuple[_Paddle, _Paddle] = field(default_factory=lambda: (_Paddle(0.0), _Paddle(0.0)))
    score: list[int] = field(default_factory=lambda: [0, 0])
    rally: int = 0
    hits: int = 0
    serve_ticks: int = 0
    winner: int | None = None
    _rng: int = field(default=0, init=False, repr=False)
    _serve_to: int = field(default=GUEST, init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = (self.seed * 2654435761 + 0x9E3779B9) & 0xFFFFFFFF or 0x1234567
        r = self.rules
        for p in self.paddles:
            p.y = r.field_h_u / 2
        self._serve_to = HOST if self._next_unit() < 0.5 else GUEST
        self._reset_ball()

    # ---- public API -----------------------------------------------------------------------

    def step(self, moves: tuple[float, float], dt: float) -> list[WorldEvent]:
        """Advance one fixed tick.

        Args:
            moves: each side's paddle command in [-1, 1] (negative = up); clamped.
            dt: the tick length in seconds; always the same value in a match.

        Returns:
            What happened during the tick, in order.
        """
        self.tick += 1
        events: list[WorldEvent] = []
        if self.winner is not None:
            for p in self.paddles:
                p.vy = 0.0
            return events
        self._move_paddles(moves, dt)
        if self.serve_ticks > 0:
            self.serve_ticks -= 1
            if self.serve_ticks == 0:
                self._launch()
            return events
        self._move_ball(dt, events)
        return events

    def snapshot(self) -> Snapshot:
        """The state a viewer needs, as an immutable value."""
        return Snapshot(
            tick=self.tick,
            ball_x=self.ball_x,
            ball_y=self.ball_y,
            ball_vx=self.ball_vx,
            ball_vy=self.ball_vy,
            spin=self.spin,
            paddle_y=(self.paddles[0].y, self.paddles[1].y),
            paddle_vy=(self.paddles[0].vy, self.paddles[1].vy),
            score=(self.score[0], self.score[1]),
            rally=self.rally,
            hits=self.hits,
            serve_ticks=self.serve_ticks,
            winner=self.winner,
        )

    # ---- internals ------------------------------------------------------------------------

    def _next_unit(self) -> float:
        self._rng = _xorshift32(self._rng)
        return self._rng / 0x1_0000_0000

    def _reset_ball(self) -> None:
        r = self.rules
        self.ball_x, self.ball_y = r.field_w_u / 2, r.field_h_u / 2
        self.ball_vx = self.ball_vy = self.spin = 0.0
        self.hits = 0
        self.serve_ticks = max(1, round(r.serve_delay_s * r.tick_hz))

    def _launch(self) -> None:
        r = self.rules
        # 12..32 degrees up or down: never flat (boring), never steep (unfair).
        angle = math.radians(12.0 + 20.0 * self._next_unit())
        if self._next_unit() < 0.5:
            angle = -angle
        direction = -1.0 if self._serve_to == HOST else 1.0
        self.ball_vx = direction * r.serve_speed_u_s * math.cos(angle)
        self.ball_vy = r.serve_speed_u_s * math.sin(angle)

    def _move_paddles(self, moves: tuple[float, float], dt: float) -> None:
        for paddle, move in zip(self.paddles, moves, strict=True):
            old = paddle.y
            paddle.y = move_paddle(old, move, self.rules, dt)
            # The actual speed, so a paddle pressed against a wall gives no spin.
            paddle.vy = (paddle.y - old) / dt

    def _move_ball(self, dt: float, events: list[WorldEvent]) -> None:
        r = self.rules
        # Spin is a sideways acceleration (a crude Magnus effect) that decays exponentially.
        self.ball_vy += self.spin * dt
        self.spin *= r.spin_decay_per_s**dt
        old_x, old_y = self.ball_x, self.ball_y
        new_x = old_x + self.ball_vx * dt
        new_y = old_y + self.ball_vy * dt

        # Walls: reflect the overshoot, so the path length is kept.
        if new_y - r.ball_r_u < 0.0:
            new_y = 2 * r.ball_r_u - new_y
            self.ball_vy = abs(self.ball_vy)
            self.spin *= -0.5
            events.append(WallBounce(tick=self.tick))
        elif new_y + r.ball_r_u > r.field_h_u:
            new_y = 2 * (r.field_h_u - r.ball_r_u) - new_y
            self.ball_vy = -abs(self.ball_vy)
            self.spin *= -0.5
            events.append(WallBounce(tick=self.tick))

        # Paddles: a swept test against the face plane, so a fast ball cannot tunnel through.
        side = HOST if self.ball_vx < 0 else GUEST
        face = r.face_x(side)
        edge_old = old_x - r.ball_r_u if side == HOST else old_x + r.ball_r_u
        edge_new = new_x - r.ball_r_u if side == HOST else new_x + r.ball_r_u
        crossed = (edge_old >= face > edge_new) if side == HOST else (edge_old <= face < edge_new)
        if crossed:
            t = (edge_old - face) / (edge_old - edge_new)
            y_at = old_y + (new_y - old_y) * t
            paddle = self.paddles[side]
            reach = r.paddle_h_u / 2 + r.ball_r_u
            offset = (y_at - paddle.y) / reach
            if -1.0 <= offset <= 1.0:
                self._bounce(side, offset, paddle.vy, events)
                travelled = abs(new_x - old_x) * (1.0 - t)
                sign = 1.0 if side == HOST else -1.0
                new_x = face + sign * (r.ball_r_u + travelled)
                new_y = y_at + self.ball_vy * dt * (1.0 - t)
                new_y = min(r.field_h_u - r.ball_r_u, max(r.ball_r_u, new_y))

        self.ball_x, self.ball_y = new_x, new_y

        # A point: the ball has fully left the field.
        if self.ball_x + r.ball_r_u < 0.0:
            self._point(GUEST, events)
        elif self.ball_x - r.ball_r_u > r.field_w_u:
            self._point(HOST, events)

    def _bounce(self, side: int, offset: float, paddle_vy: float, events: list[WorldEvent]) -> None:
        r = self.rules
        speed = min(r.max_speed_u_s, math.hypot(self.ball_vx, self.ball_vy) * r.speedup)
        angle = math.radians(r.max_bounce_deg) * offset
        vx = speed * math.cos(angle)
        vy = speed * math.sin(angle) + r.paddle_carry * paddle_vy
        # Keep the travel angle below max_angle_deg while preserving the speed.
        limit = math.radians(r.max_angle_deg)
        theta = max(-limit, min(limit, math.atan2(vy, vx)))
        direction = 1.0 if side == HOST else -1.0
        self.ball_vx = direction * speed * math.cos(theta)
        self.ball_vy = speed * math.sin(theta)
        self.spin = r.spin_per_paddle_speed * paddle_vy
        self.hits += 1
        events.append(PaddleHit(tick=self.tick, side=side, speed_u_s=speed))

    def _point(self, scorer: int, events: list[WorldEvent]) -> None:
        self.score[scorer] += 1
        score = (self.score[0], self.score[1])
        events.append(PointScored(tick=self.tick, scorer=scorer, score=score))
        self.rally += 1
        # The one who conceded receives the next serve.
        self._serve_to = 1 - scorer
        self._reset_ball()
        if self.score[scorer] >= self.rules.win_score:
            self.winner = scorer
            self.serve_ticks = 0
            events.append(MatchWon(tick=self.tick, winner=scorer, score=score))


def move_paddle(y: float, move: float, rules: Rules, dt: float) -> float:
    """A paddle's centre after one tick of command ``move`` in [-1, 1] (clamped, NaN = still).

    The guest uses the same function to predict its own paddle, so prediction and the host's
    simulation agree exactly when they apply the same commands.
    """
    if not math.isfinite(move):
        move = 0.0
    move = min(1.0, max(-1.0, move))
    half = rules.paddle_h_u / 2
    return min(rules.field_h_u - half, max(half, y + move * rules.paddle_speed_u_s * dt))


# --- snapshot fields (msgpack framing lives in demo_game/protocol.py) ---------------------


class BadSnapshot(ValueError):
    """A snapshot from the peer that is malformed; the only error the untrusted decoder raises."""


def snapshot_to_fields(s: Snapshot) -> dict[str, Any]:
    """Plain, msgpack-friendly fields of a snapshot (short keys: it is sent 60 times a second)."""
    return {
        "k": s.tick,
        "b": [s.ball_x, s.ball_y, s.ball_vx, s.ball_vy, s.spin],
        "p": [s.paddle_y[0], s.paddle_y[1], s.paddle_vy[0], s.paddle_vy[1]],
        "sc": [s.score[0], s.score[1]],
        "r": s.rally,
        "h": s.hits,
        "sv": s.serve_ticks,
        "w": s.winner,
    }


def _num(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadSnapshot(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _count(value: object, what: str, limit: int = 2**53) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise BadSnapshot(f"{what} must be an integer in 0..{limit}, got {value!r}")
    return value


def _numbers(value: object, n: int, what: str) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise BadSnapshot(f"{what} must be a list of {n} numbers, got {value!r}")
    return [_num(v, f"{what}[{i}]") for i, v in enumerate(value)]


def snapshot_from_fields_untrusted(fields: object) -> Snapshot:
    """Validate fields received from the peer and build a Snapshot.

    Raises:
        BadSnapshot: on any missing, mistyped or non-finite field; nothing else.
    """
    if not isinstance(fields, dict):
        raise BadSnapshot(f"snapshot must be a map, got {type(fields).__name__}")
    try:
        b = _numbers(fields["b"], 5, "ball")
        p = _numbers(fields["p"], 4, "paddles")
        sc = fields["sc"]
        if not isinstance(sc, (list, tuple)) or len(sc) != 2:
            raise BadSnapshot(f"score must be a list of 2 integers, got {sc!r}")
        winner = fields.get("w")
        if winner is not None and winner not in (HOST, GUEST):
            raise BadSnapshot(f"winner must be 0, 1 or nil, got {winner!r}")
        return Snapshot(
            tick=_count(fields["k"], "tick"),
            ball_x=b[0],
            ball_y=b[1],
            ball_vx=b[2],
            ball_vy=b[3],
            spin=b[4],
            paddle_y=(p[0], p[1]),
            paddle_vy=(p[2], p[3]),
            score=(_count(sc[0], "score[0]", 10_000), _count(sc[1], "score[1]", 10_000)),
            rally=_count(fields["r"], "rally"),
            hits=_count(fields["h"], "hits"),
            serve_ticks=_count(fields["sv"], "serve_ticks", 100_000),
            winner=winner,
        )
    except KeyError as exc:
        raise BadSnapshot(f"snapshot lacks field {exc.args[0]!r}") from None


# --- interpolation ------------------------------------------------------------------------


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def interpolate(a: Snapshot, b: Snapshot, alpha: float) -> Snapshot:
    """The state ``alpha`` of the way from ``a`` to ``b`` (0 gives ``a``, 1 gives ``b``).

    Paddles always blend. The ball blends only within one rally: across a point the ball jumps
    back to the centre, and sliding it there across the field would show a ball that never was,
    so the nearer snapshot is shown as is. Discrete fields (score, hits...) come from the nearer one.
    """
    alpha = min(1.0, max(0.0, alpha))
    near = a if alpha < 0.5 else b
    paddle_y = (_lerp(a.paddle_y[0], b.paddle_y[0], alpha), _lerp(a.paddle_y[1], b.paddle_y[1], alpha))
    if a.rally != b.rally:
        ball = (near.ball_x, near.ball_y)
    else:
        ball = (_lerp(a.ball_x, b.ball_x, alpha), _lerp(a.ball_y, b.ball_y, alpha))
    return replace(
        near,
        tick=a.tick if alpha < 1.0 else b.tick,
        ball_x=ball[0],
        ball_y=ball[1],
        paddle_y=paddle_y,
    )


class SnapshotBuffer:
    """The guest's recent snapshots, sampled at a fractional tick for smooth rendering.

    Args:
        capacity: how many snapshots to keep (older ones are dropped).
    """

    def __init__(self, capacity: int = 60) -> None:
        self._snaps: deque[Snapshot] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._snaps)

    @property
    def newest(self) -> Snapshot | None:
        return self._snaps[-1] if self._snaps else None

    def add(self, snap: Snapshot) -> bool:
        """Keep ``snap`` if it is newer than every kept one; return whether it was kept.

        The state lane is unreliable-sequenced, so older snapshots should not arrive at all; this
        check makes the buffer correct over any lane.
        """
        if self._snaps and snap.tick <= self._snaps[-1].tick:
            return False
        self._snaps.append(snap)
        return True

    def sample(self, tick: float) -> Snapshot | None:
        """The state at fractional ``tick``: interpolated between the two kept snapshots around it,
        the oldest one before the buffer, the newest one after it (we hold rather than extrapolate:
        a wrong guess about a bounce looks worse than a short freeze)."""
        if not self._snaps:
            return None
        if tick <= self._snaps[0].tick:
            return self._snaps[0]
        if tick >= self._snaps[-1].tick:
            return self._snaps[-1]
        # Newest first: the render tick sits near the end of the buffer.
        later = self._snaps[-1]
        for snap in reversed(self._snaps):
            if snap.tick <= tick:
                return interpolate(snap, later, (tick - snap.tick) / (later.tick - snap.tick))
            later = snap
        return self._snaps[0]  # pragma: no cover - unreachable, the first check covers it
