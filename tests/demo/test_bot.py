"""The bot plays a fair game: it returns easy balls, misses some hard ones, and is even with itself."""

from __future__ import annotations

from demo_game.bot import Bot, BotSkill
from demo_game.world import GUEST, HOST, PaddleHit, PointScored, Rules, World

DT = 1 / 60


def bot_match(seed: int, seconds: float, rules: Rules) -> tuple[list[int], list[int]]:
    """Bot against bot on the pure world; returns (score, hits per rally)."""
    w = World(rules=rules, seed=seed)
    bots = (Bot(HOST, rules, seed=seed * 2 + 1), Bot(GUEST, rules, seed=seed * 2 + 2))
    hits_per_rally = []
    hits = 0
    for i in range(int(seconds / DT)):
        view = w.snapshot()
        now = i * DT
        for ev in w.step((bots[0].decide(view, now), bots[1].decide(view, now)), DT):
            if isinstance(ev, PaddleHit):
                hits += 1
            elif isinstance(ev, PointScored):
                hits_per_rally.append(hits)
                hits = 0
    return w.score, hits_per_rally


def test_bots_are_even_and_rallies_are_neither_trivial_nor_endless() -> None:
    rules = Rules(win_score=10_000)
    total = [0, 0]
    rallies: list[int] = []
    for seed in range(4):
        score, per_rally = bot_match(seed, 120.0, rules)
        total[0] += score[0]
        total[1] += score[1]
        rallies += per_rally
    points = sum(total)
    # Eight minutes of play: a point every 5 to 30 seconds on average.
    assert 16 <= points <= 96, total
    # Neither side dominates: the loser of the pair takes at least a third of the points.
    assert min(total) >= points / 3, total
    mean_hits = sum(rallies) / len(rallies)
    assert 1.5 <= mean_hits <= 15, mean_hits


def test_bot_returns_a_slow_straight_ball() -> None:
    rules = Rules()
    w = World(rules=rules, seed=1)
    w.serve_ticks = 0
    w.ball_x, w.ball_y, w.ball_vx, w.ball_vy = 600.0, 300.0, -300.0, 0.0
    bot = Bot(HOST, rules, seed=1)
    hit = False
    for i in range(200):
        for ev in w.step((bot.decide(w.snapshot(), i * DT), 0.0), DT):
            hit = hit or isinstance(ev, PaddleHit)
        if hit:
            break
    assert hit


def test_a_slow_bot_misses_a_fast_ball_to_the_far_corner() -> None:
    rules = Rules()
    w = World(rules=rules, seed=1)
    w.serve_ticks = 0
    w.paddles[HOST].y = rules.paddle_h_u / 2  # top of the field
    w.ball_x, w.ball_y, w.ball_vx, w.ball_vy = 400.0, 400.0, -1100.0, 0.0
    bot = Bot(HOST, rules, seed=1, skill=BotSkill(reaction_s=0.25, max_speed=0.5))
    events = []
    for i in range(100):
        events += w.step((bot.decide(w.snapshot(), i * DT), 0.0), DT)
        if any(isinstance(e, PointScored) for e in events):
            break
    assert any(isinstance(e, PointScored) and e.scorer == GUEST for e in events)


def test_same_seed_same_decisions() -> None:
    rules = Rules()
    a, b = bot_match(11, 20.0, rules), bot_match(11, 20.0, rules)
    assert a == b
