"""Rendering under SDL's dummy video driver: pixels of the paddles, the ball and the HUD, and a screenshot."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # before pygame touches the display
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import pygame

from demo_game import settings as S
from demo_game.bot import Bot
from demo_game.link import LinkStats, Reservation
from demo_game.play import Notice, Outcome
from demo_game.render import Renderer
from demo_game.screenshot import draw_match_frame
from demo_game.testing import offline_session, sample_session_info
from demo_game.window import run_window
from demo_game.world import GUEST, HOST, Snapshot, World

INFO = sample_session_info(
    reservations=(
        Reservation(region="eu", access_network="eu-fibre", up_kbps=74, down_kbps=40),
        Reservation(region="na", access_network="na-cable", up_kbps=40, down_kbps=74),
    )
)
GOOD = LinkStats(rtt_ms=31.5, jitter_ms=0.8, kbps_in=36.0, kbps_out=68.0)
BAD = LinkStats(rtt_ms=95.0, jitter_ms=0.8, loss_in_ppm=50_000, kbps_in=36.0, kbps_out=68.0)


@pytest.fixture()
def renderer() -> Iterator[Renderer]:
    pygame.display.init()
    pygame.font.init()
    try:
        yield Renderer(pygame.Surface((S.WINDOW_W_PX, S.WINDOW_H_PX)))
    finally:
        pygame.quit()


def snapshot() -> Snapshot:
    w = World(seed=1)
    w.serve_ticks = 0
    w.ball_x, w.ball_y, w.ball_vx, w.ball_vy = 600.0, 300.0, 0.0, 0.0
    w.paddles[HOST].y, w.paddles[GUEST].y = 150.0, 380.0
    w.score = [3, 2]
    return w.snapshot()


def colours_in(surface: pygame.Surface, rect: pygame.Rect) -> set[tuple[int, int, int]]:
    out = set()
    for x in range(rect.left, rect.right):
        for y in range(rect.top, rect.bottom):
            c = surface.get_at((x, y))
            out.add((c.r, c.g, c.b))
    return out


def near(colours: set[tuple[int, int, int]], target: tuple[int, int, int], tol: int = 40) -> bool:
    """Anti-aliased text only reaches its colour at the core of the glyphs: allow some tolerance."""
    return any(sum(abs(a - b) for a, b in zip(c, target, strict=True)) <= tol for c in colours)


def test_field_pixels_show_paddles_and_ball_where_the_world_has_them(
    renderer: Renderer, tmp_path: Path
) -> None:
    snap = snapshot()
    renderer.draw_match(snap, INFO, GOOD, now=0.0, hint="W/S to move")
    surf = renderer.surface
    for side, colour in ((HOST, S.COLOUR_PADDLE_HOST), (GUEST, S.COLOUR_PADDLE_GUEST)):
        rect = renderer.paddle_rect(side, snap.paddle_y[side])
        assert tuple(surf.get_at(rect.center))[:3] == colour
        # and nothing of that colour a little above the paddle
        assert tuple(surf.get_at((rect.centerx, rect.top - 6)))[:3] == S.COLOUR_FIELD
    assert tuple(surf.get_at(renderer.to_px(snap.ball_x, snap.ball_y)))[:3] == S.COLOUR_BALL
    assert tuple(surf.get_at(renderer.to_px(snap.ball_x + 30, snap.ball_y)))[:3] == S.COLOUR_FIELD
    # the paddle sits where the world says: 150 u of a 480 u field on a 480 px field
    assert renderer.paddle_rect(HOST, 150.0).centery == pytest.approx(S.FIELD_TOP_PX + 150, abs=1)
    pygame.image.save(surf, str(tmp_path / "match.png"))
    assert pygame.image.load(str(tmp_path / "match.png")).get_size() == (S.WINDOW_W_PX, S.WINDOW_H_PX)


def test_hud_shows_players_and_live_figures_green_within_budget(renderer: Renderer) -> None:
    renderer.draw_match(snapshot(), INFO, GOOD, now=0.0)
    surf, hud = renderer.surface, renderer.hud_rect
    assert tuple(surf.get_at((hud.centerx, hud.bottom - 2)))[:3] == S.COLOUR_HUD_BG
    top_left = pygame.Rect(hud.left, hud.top + 4, 260, 24)  # host name, host colour
    top_right = pygame.Rect(hud.right - 260, hud.top + 4, 260, 24)  # guest name, guest colour
    assert near(colours_in(surf, top_left), S.COLOUR_PADDLE_HOST)
    assert near(colours_in(surf, top_right), S.COLOUR_PADDLE_GUEST)
    row = colours_in(surf, renderer.stats_row_rect)
    assert near(row, S.COLOUR_OK) and not near(row, S.COLOUR_BAD)


def test_hud_turns_red_when_over_budget(renderer: Renderer) -> None:
    renderer.draw_match(snapshot(), INFO, BAD, now=0.0)
    hud = renderer.hud_rect
    row = colours_in(renderer.surface, renderer.stats_row_rect)
    assert near(row, S.COLOUR_BAD)
    # the verdict at the right end says so in red
    stats = renderer.stats_row_rect
    verdict = colours_in(renderer.surface, pygame.Rect(hud.right - 140, stats.top, 140, stats.height))
    assert near(verdict, S.COLOUR_BAD) and not near(verdict, S.COLOUR_OK)


def test_interruption_banner_and_notices(renderer: Renderer) -> None:
    renderer.draw_match(
        snapshot(),
        INFO,
        GOOD,
        now=10.0,
        notices=[Notice(text="point bob@na.example", at=9.8)],
        banner="Connection interrupted",
    )
    field = renderer.field_rect
    assert near(
        colours_in(renderer.surface, pygame.Rect(field.centerx - 200, field.centery - 10, 400, 20)),
        S.COLOUR_WARN,
    )
    assert near(
        colours_in(renderer.surface, pygame.Rect(field.centerx - 150, field.bottom - 40, 300, 24)),
        S.COLOUR_TEXT,
    )


def test_refusal_screen_says_why_in_red(renderer: Renderer) -> None:
    outcome = Outcome(
        reason="failed",
        score=(0, 0),
        winner=None,
        message="session failed: 580 insufficient uplink in eu-dsl",
        status=580,
    )
    renderer.draw_outcome(outcome, ["login", "invite", "eu policy: refused"], None, None)
    field = renderer.field_rect
    title = colours_in(renderer.surface, pygame.Rect(field.centerx - 150, field.top + 60, 300, 40))
    assert near(title, S.COLOUR_BAD)


def test_screenshot_of_a_real_bot_match(tmp_path: Path) -> None:
    pygame.display.init()
    pygame.font.init()
    try:
        surface = draw_match_frame(9.3, seed=4)
        path = tmp_path / "demo-screenshot.png"
        pygame.image.save(surface, str(path))
        colours = colours_in(surface, surface.get_rect().inflate(-2, -2))
        for c in (S.COLOUR_PADDLE_HOST, S.COLOUR_PADDLE_GUEST, S.COLOUR_BALL, S.COLOUR_HUD_BG):
            assert c in colours
        assert path.stat().st_size > 5000
    finally:
        pygame.quit()


def test_window_runs_connecting_match_results_with_a_bot_at_the_keys(tmp_path: Path) -> None:
    session = offline_session("--sim-latency-ms", "1")
    assert session.host_link is not None
    shot = tmp_path / "window.png"
    result = run_window(
        session.host_link,
        session.guest_link,
        duration_s=0.8,
        human=Bot(HOST),
        max_frames=75,
        screenshot_at_s=0.3,
        screenshot_path=shot,
    )
    assert result.reason == "time" and result.players == ("alice@eu.gamesdk.test", "bob@na.gamesdk.test")
    assert 0.75 <= result.duration_s <= 1.5
    image = pygame.image.load(str(shot))
    assert image.get_size() == (S.WINDOW_W_PX, S.WINDOW_H_PX)
    colours = colours_in(image, image.get_rect().inflate(-2, -2))
    assert S.COLOUR_PADDLE_HOST in colours and S.COLOUR_PADDLE_GUEST in colours


def test_window_shows_a_refusal_and_returns_failed() -> None:
    session = offline_session("--access-kbps", "20")
    assert session.host_link is not None
    result = run_window(session.host_link, session.guest_link, human=Bot(HOST), max_frames=20)
    assert result.reason == "failed" and result.status == 580
    assert "insufficient uplink in eu-fibre" in result.message


def test_window_with_the_player_as_guest_draws_the_hosts_snapshots(tmp_path: Path) -> None:
    session = offline_session("--sim-latency-ms", "5")
    assert session.host_link is not None and session.guest_link is not None
    shot = tmp_path / "guest.png"
    result = run_window(
        session.guest_link,
        session.host_link,
        # 1.5 s of match: at load 6-8 the 0.6 s it had brought 16-19 snapshots, fewer than the 20 it asks for.
        duration_s=1.5,
        human=Bot(HOST),  # the session makes it the guest's bot
        max_frames=200,
        screenshot_at_s=0.4,
        screenshot_path=shot,
    )
    assert result.reason == "time"
    assert result.snapshots_received > 20
    image = pygame.image.load(str(shot))
    colours = colours_in(image, image.get_rect().inflate(-2, -2))
    assert S.COLOUR_PADDLE_HOST in colours and S.COLOUR_PADDLE_GUEST in colours
