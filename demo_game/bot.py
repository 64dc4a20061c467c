"""demo_game/bot: a computer player that plays a fair, beatable game.

The bot sees only what a player sees (the snapshot being drawn), and only as it was
``reaction_s`` ago. It predicts where the ball will cross its paddle's face (unfolding wall
bounces, ignoring spin, which is what makes curved shots dangerous), aims with an error that
grows with the ball's speed, and moves no faster than ``max_speed`` of the paddle's top speed.
So it returns most slow balls and misses some fast, spinning ones, like a person.

Randomness comes from a seeded ``random.Random`` owned by the bot, so a match is repeatable.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from demo_game.world import HOST, Rules, Snapshot

__all__ = ["Bot", "BotSkill"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BotSkill:
    """How well a bot plays. The defaults lose about as often as they win against themselves."""

    #: how old the snapshot the bot reacts to is; human visual reaction is 0.2-0.25 s
    reaction_s: float = 0.12
    #: share of the paddle's top speed the bot uses
    max_speed: float = 0.8
    #: aim error (one standard deviation, u) per 1000 u/s of ball speed
    error_u_per_1000_u_s: float = 95.0
    #: the bot aims this share of the paddle's half-height off-centre, to make angles
    angle_play: float = 0.45
    #: within this distance of its target (u) the paddle stays still (no jitter)
    dead_zone_u: float = 5.0


class Bot:
    """Decides one side's paddle command from what that side sees.

    Args:
        side: 0 (host, left) or 1 (guest, right).
        rules: the match rules (field size, paddle speed).
        seed: seeds the bot's own random generator.
        skill: how well it plays.
    """

    def __init__(
        self, side: int, rules: Rules | None = None, *, seed: int = 0, skill: BotSkill | None = None
    ):
        self.side = side
        self.rules = rules or Rules()
        self.skill = skill or BotSkill()
        self._rng = random.Random(seed)
        self._seen: deque[tuple[float, Snapshot]] = deque()
        self._plan_key: tuple[int, int, bool] | None = None
        self._aim_error_u = 0.0
        self._aim_offset_u = 0.0

    def decide(self, view: Snapshot, now: float) -> float:
        """The paddle command in [-1, 1] for this frame, given the snapshot the player sees at ``now``."""
        self._seen.append((now, view))
        # React to the newest snapshot that is at least reaction_s old (the oldest kept one).
        while len(self._seen) > 1 and now - self._seen[1][0] >= self.skill.reaction_s:
            self._seen.popleft()
        seen = self._seen[0][1]
        target = self._target_y(seen)
        # The paddle position is the current one: a player knows where their own hand is.
        my_y = view.paddle_y[self.side]
        diff = target - my_y
        if abs(diff) <= self.skill.dead_zone_u:
            return 0.0
        # Full speed when far, a proportional approach when close (avoids overshooting).
        full_at_u = self.rules.paddle_speed_u_s * self.skill.max_speed * 0.08
        move = diff / full_at_u
        return max(-self.skill.max_speed, min(self.skill.max_speed, move))

    def _target_y(self, s: Snapshot) -> float:
        r = self.rules
        coming = s.ball_vx < 0 if self.side == HOST else s.ball_vx > 0
        if s.winner is not None or s.serve_ticks > 0 or not coming:
            # Drift back towards the middle while the ball is away.
            return r.field_h_u / 2
        key = (s.rally, s.hits, coming)
        if key != self._plan_key:
            # A new approach of the ball: draw a fresh error and a fresh angle to play.
            self._plan_key = key
            speed = (s.ball_vx**2 + s.ball_vy**2) ** 0.5
            sigma = self.skill.error_u_per_1000_u_s * speed / 1000.0 + 0.02 * abs(s.spin)
            self._aim_error_u = self._rng.gauss(0.0, sigma)
            self._aim_offset_u = self._rng.uniform(-1.0, 1.0) * self.skill.angle_play * r.paddle_h_u / 2
        return self._predict_y(s) + self._aim_error_u + self._aim_offset_u

    def _predict_y(self, s: Snapshot) -> float:
        """Where the ball's centre will cross this side's paddle face, folding wall bounces."""
        r = self.rules
        face = r.face_x(self.side)
        edge = face + r.ball_r_u if self.side == HOST else face - r.ball_r_u
        if s.ball_vx == 0.0:
            return s.ball_y
        t = (edge - s.ball_x) / s.ball_vx
        if t < 0:
            return s.ball_y
        lo, hi = r.ball_r_u, r.field_h_u - r.ball_r_u
        span = hi - lo
        y = (s.ball_y + s.ball_vy * t) - lo
        # Unfold the reflections: the path bounces in [lo, hi] like a triangle wave.
        y %= 2 * span
        if y > span:
            y = 2 * span - y
        return y + lo
