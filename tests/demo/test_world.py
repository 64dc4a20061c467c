"""The pure Pong world: determinism, scoring, paddle physics, snapshots and interpolation."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from demo_game.world import (
    GUEST,
    HOST,
    BadSnapshot,
    MatchWon,
    PaddleHit,
    PointScored,
    Rules,
    Snapshot,
    SnapshotBuffer,
    WallBounce,
    World,
    interpolate,
    snapshot_from_fields_untrusted,
    snapshot_to_fields,
)

DT = 1 / 60


def run(world: World, moves: list[tuple[float, float]]) -> list[Snapshot]:
    out = []
    for m in moves:
        world.step(m, DT)
        out.append(world.snapshot())
    return out


def random_moves(seed: int, n: int) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [(rng.uniform(-1, 1), rng.uniform(-1, 1)) for _ in range(n)]


def in_play(world: World, *, x: float, y: float, vx: float, vy: float) -> World:
    """Put the ball somewhere in play, the serve over."""
    world.serve_ticks = 0
    world.ball_x, world.ball_y, world.ball_vx, world.ball_vy, world.spin = x, y, vx, vy, 0.0
    return world


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_and_inputs_give_identical_matches() -> None:
    moves = random_moves(7, 3000)
    a = run(World(seed=42), moves)
    b = run(World(seed=42), moves)
    assert a == b
    # The run covered real play, not only serves.
    assert a[-1].rally > 0 or any(s.hits for s in a)


def test_different_seeds_serve_differently() -> None:
    def first_flight(seed: int) -> tuple[float, float]:
        w = World(seed=seed)
        while w.serve_ticks:
            w.step((0.0, 0.0), DT)
        return (w.ball_vx, w.ball_vy)

    flights = {first_flight(seed) for seed in range(10)}
    assert len(flights) > 5


def test_serve_waits_then_launches_at_serve_speed() -> None:
    rules = Rules()
    w = World(rules=rules, seed=3)
    assert w.serve_ticks == round(rules.serve_delay_s * rules.tick_hz)
    for _ in range(w.serve_ticks - 1):
        w.step((0.0, 0.0), DT)
        assert (w.ball_vx, w.ball_vy) == (0.0, 0.0)
    w.step((0.0, 0.0), DT)
    assert math.hypot(w.ball_vx, w.ball_vy) == pytest.approx(rules.serve_speed_u_s)
    angle = math.degrees(math.atan2(abs(w.ball_vy), abs(w.ball_vx)))
    assert 12.0 <= angle <= 32.0


# --- scoring ----------------------------------------------------------------------------------


def test_ball_past_the_host_scores_for_the_guest_and_resets() -> None:
    w = in_play(World(seed=1), x=40.0, y=20.0, vx=-600.0, vy=0.0)
    w.paddles[HOST].y = 400.0  # far from the ball
    events: list[object] = []
    for _ in range(30):
        events += w.step((0.0, 0.0), DT)
        if any(isinstance(e, PointScored) for e in events):
            break
    points = [e for e in events if isinstance(e, PointScored)]
    assert points == [PointScored(tick=w.tick, scorer=GUEST, score=(0, 1))]
    snap = w.snapshot()
    assert snap.score == (0, 1) and snap.rally == 1 and snap.hits == 0
    assert (snap.ball_x, snap.ball_y) == (w.rules.field_w_u / 2, w.rules.field_h_u / 2)
    assert snap.serve_ticks > 0
    # The one who conceded (the host) receives the next serve.
    while w.serve_ticks:
        w.step((0.0, 0.0), DT)
    assert w.ball_vx < 0


def test_match_is_won_at_the_win_score_and_then_frozen() -> None:
    rules = Rules(win_score=2)
    w = World(rules=rules, seed=5)
    events: list[object] = []
    for _ in range(5000):
        # The host paddle hides in a corner, so every serve towards it scores for the guest.
        events += w.step((-1.0, 0.0), DT)
        if w.winner is not None:
            break
    assert w.winner is not None
    won = [e for e in events if isinstance(e, MatchWon)]
    assert len(won) == 1 and won[0].winner == w.winner
    assert max(w.score) == 2
    frozen = w.snapshot()
    w.step((1.0, 1.0), DT)
    after = w.snapshot()
    assert replace(after, tick=frozen.tick, paddle_vy=frozen.paddle_vy) == frozen


# --- paddles --------------------------------------------------------------------------------


def test_centre_hit_returns_the_ball_faster_and_flat() -> None:
    rules = Rules()
    w = World(rules=rules, seed=1)
    face = rules.face_x(HOST)
    in_play(w, x=face + rules.ball_r_u + 5.0, y=240.0, vx=-400.0, vy=0.0)
    w.paddles[HOST].y = 240.0
    events = w.step((0.0, 0.0), DT)
    assert [type(e) for e in events] == [PaddleHit]
    assert w.ball_vx > 0
    assert math.hypot(w.ball_vx, w.ball_vy) == pytest.approx(400.0 * rules.speedup)
    assert abs(w.ball_vy) < 1e-6
    assert w.ball_x - rules.ball_r_u >= face


def test_edge_hit_sends_the_ball_at_an_angle() -> None:
    rules = Rules()
    w = World(rules=rules, seed=1)
    face = rules.face_x(GUEST)
    in_play(w, x=face - rules.ball_r_u - 5.0, y=240.0 + rules.paddle_h_u / 2, vx=400.0, vy=0.0)
    w.paddles[GUEST].y = 240.0
    w.step((0.0, 0.0), DT)
    assert w.ball_vx < 0
    # Hit below the centre: the ball leaves downwards (y grows downwards).
    angle = math.degrees(math.atan2(w.ball_vy, -w.ball_vx))
    assert 30.0 < angle <= rules.max_bounce_deg + 1e-9


def test_moving_paddle_gives_spin_that_curves_the_ball() -> None:
    rules = Rules()
    w = World(rules=rules, seed=1)
    face = rules.face_x(HOST)
    in_play(w, x=face + rules.ball_r_u + 4.0, y=240.0, vx=-400.0, vy=0.0)
    w.paddles[HOST].y = 240.0 - 5.0
    w.step((1.0, 0.0), DT)  # paddle moving down at the hit
    assert w.spin > 0
    vy_after_hit = w.ball_vy
    w.step((0.0, 0.0), DT)
    assert w.ball_vy > vy_after_hit  # the spin keeps pushing the ball downwards
    spin_before = w.spin
    for _ in range(60):
        w.step((0.0, 0.0), DT)
    assert abs(w.spin) < abs(spin_before)  # and it decays


def test_fast_ball_does_not_tunnel_through_a_paddle() -> None:
    rules = Rules()
    w = World(rules=rules, seed=1)
    face = rules.face_x(HOST)
    # 6000 u/s moves 100 u per tick, far more than the paddle is thick.
    in_play(w, x=face + 60.0, y=240.0, vx=-6000.0, vy=0.0)
    w.paddles[HOST].y = 240.0
    events = w.step((0.0, 0.0), DT)
    assert any(isinstance(e, PaddleHit) for e in events)
    assert w.ball_vx > 0


def test_wall_bounce_keeps_the_ball_inside() -> None:
    rules = Rules()
    w = in_play(World(rules=rules, seed=1), x=480.0, y=rules.ball_r_u + 2.0, vx=100.0, vy=-600.0)
    events = w.step((0.0, 0.0), DT)
    assert any(isinstance(e, WallBounce) for e in events)
    assert w.ball_vy > 0 and w.ball_y >= rules.ball_r_u


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), moves_seed=st.integers(0, 2**31))
def test_ball_and_paddles_stay_in_the_field(seed: int, moves_seed: int) -> None:
    rules = Rules()
    w = World(rules=rules, seed=seed)
    half = rules.paddle_h_u / 2
    for move in random_moves(moves_seed, 600):
        w.step(move, DT)
        assert rules.ball_r_u - 1e-9 <= w.ball_y <= rules.field_h_u - rules.ball_r_u + 1e-9
        assert all(half <= p.y <= rules.field_h_u - half for p in w.paddles)
        assert math.hypot(w.ball_vx, w.ball_vy) <= rules.max_speed_u_s * 1.5


def test_bad_inputs_are_clamped_not_trusted() -> None:
    w = World(seed=1)
    w.step((float("nan"), 50.0), DT)
    assert w.paddles[HOST].y == 240.0
    assert w.paddles[GUEST].y == pytest.approx(240.0 + Rules().paddle_speed_u_s * DT)


# --- snapshots ----------------------------------------------------------------------------------


def test_snapshot_fields_round_trip() -> None:
    w = World(seed=9)
    for move in random_moves(1, 500):
        w.step(move, DT)
    snap = w.snapshot()
    assert snapshot_from_fields_untrusted(snapshot_to_fields(snap)) == snap


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"k": -1}, "tick"),
        ({"b": [1.0, 2.0]}, "ball"),
        ({"b": [1.0, 2.0, 3.0, float("inf"), 0.0]}, "ball[3]"),
        ({"p": "x"}, "paddles"),
        ({"sc": [1, True]}, "score[1]"),
        ({"w": 2}, "winner"),
    ],
)
def test_bad_snapshot_fields_name_the_field(change: dict[str, object], message: str) -> None:
    fields = snapshot_to_fields(World().snapshot()) | change
    with pytest.raises(BadSnapshot, match=message.replace("[", r"\[").replace("]", r"\]")):
        snapshot_from_fields_untrusted(fields)


def test_missing_snapshot_field_is_named() -> None:
    fields = snapshot_to_fields(World().snapshot())
    del fields["r"]
    with pytest.raises(BadSnapshot, match="'r'"):
        snapshot_from_fields_untrusted(fields)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=3), inner, max_size=6),
    max_leaves=8,
)


@settings(max_examples=120, deadline=None)
@given(
    fields=st.dictionaries(st.sampled_from(["k", "b", "p", "sc", "r", "h", "sv", "w", "x"]), _json) | _json
)
def test_untrusted_snapshot_fields_raise_only_bad_snapshot(fields: object) -> None:
    try:
        snapshot_from_fields_untrusted(fields)
    except BadSnapshot:
        pass


# --- interpolation ------------------------------------------------------------------------------


def two_ticks(rally_change: bool = False) -> tuple[Snapshot, Snapshot]:
    w = in_play(World(seed=1), x=300.0, y=200.0, vx=600.0, vy=120.0)
    a = w.snapshot()
    w.step((1.0, -1.0), DT)
    b = w.snapshot()
    if rally_change:
        b = replace(b, rally=a.rally + 1, ball_x=480.0, ball_y=240.0)
    return a, b


def test_interpolate_ends_and_middle() -> None:
    a, b = two_ticks()
    assert interpolate(a, b, 0.0) == a
    assert interpolate(a, b, 1.0) == b
    mid = interpolate(a, b, 0.5)
    assert mid.ball_x == pytest.approx((a.ball_x + b.ball_x) / 2)
    assert mid.ball_y == pytest.approx((a.ball_y + b.ball_y) / 2)
    assert mid.paddle_y[0] == pytest.approx((a.paddle_y[0] + b.paddle_y[0]) / 2)
    assert mid.paddle_y[1] == pytest.approx((a.paddle_y[1] + b.paddle_y[1]) / 2)
    # alpha is clamped
    assert interpolate(a, b, 7.0) == b


def test_interpolate_never_slides_the_ball_across_a_point() -> None:
    a, b = two_ticks(rally_change=True)
    for alpha in (0.1, 0.4, 0.6, 0.9):
        s = interpolate(a, b, alpha)
        assert (s.ball_x, s.ball_y) in ((a.ball_x, a.ball_y), (b.ball_x, b.ball_y))
        # paddles still blend
        assert min(a.paddle_y[0], b.paddle_y[0]) <= s.paddle_y[0] <= max(a.paddle_y[0], b.paddle_y[0])


def test_snapshot_buffer_samples_between_ticks_and_holds_at_the_ends() -> None:
    w = in_play(World(seed=1), x=300.0, y=200.0, vx=600.0, vy=0.0)
    buf = SnapshotBuffer(capacity=10)
    snaps = []
    for _ in range(6):
        w.step((0.0, 0.0), DT)
        snaps.append(w.snapshot())
    for s in snaps[::2]:  # every other tick arrives (ticks 1, 3, 5)
        assert buf.add(s)
    assert not buf.add(snaps[0])  # older than the newest: refused (sequenced)
    assert len(buf) == 3
    # tick 2 was never received: it is rebuilt from ticks 1 and 3.
    rebuilt = buf.sample(snaps[1].tick)
    assert rebuilt is not None and rebuilt.ball_x == pytest.approx(snaps[1].ball_x)
    assert buf.sample(0.0) == snaps[0]
    assert buf.sample(snaps[-1].tick + 10) == snaps[4]
    assert SnapshotBuffer().sample(3.0) is None
