"""demo_game/render: drawing the field, the HUD and the setup / result screens with pygame.

The HUD is a band under the field. It shows what the session negotiated (players and regions,
game format, class, security suite, latency / jitter / loss budget, what each region reserved on
which access network) and the live channel figures against that budget, green when within it and
red when over. Drawing never changes game state; every function takes the values it shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import pygame

from demo_game import settings as S
from demo_game.assets import Fonts, load_fonts
from demo_game.link import LinkStats, PlayerInfo, SessionInfo, check_budget
from demo_game.play import Notice, Outcome
from demo_game.world import GUEST, HOST, Rules, Snapshot

__all__ = ["Renderer"]

Colour = tuple[int, int, int]

#: seconds a notice stays on screen (it fades over the last half)
NOTICE_S = 2.0
PAD_PX = 16
#: y of the HUD rows from the top of the band: names, reservations, session, live figures, hint
HUD_ROWS_PX = (7, 29, 50, 72, 100)


class Renderer:
    """Draws onto ``surface`` (the window, or any Surface in tests)."""

    def __init__(
        self, surface: pygame.Surface, *, rules: Rules | None = None, fonts: Fonts | None = None
    ) -> None:
        self.surface = surface
        self.rules = rules or Rules()
        self.fonts = fonts or load_fonts()
        w, _ = surface.get_size()
        self.field_rect = pygame.Rect(0, S.FIELD_TOP_PX, w, S.FIELD_H_PX)
        self.hud_rect = pygame.Rect(0, S.FIELD_TOP_PX + S.FIELD_H_PX, w, surface.get_height() - S.FIELD_H_PX)
        self._sx = self.field_rect.width / self.rules.field_w_u
        self._sy = self.field_rect.height / self.rules.field_h_u

    # ---- geometry --------------------------------------------------------------------------------

    def to_px(self, x_u: float, y_u: float) -> tuple[int, int]:
        """Screen pixel of a world position."""
        return (round(self.field_rect.x + x_u * self._sx), round(self.field_rect.y + y_u * self._sy))

    def paddle_rect(self, side: int, y_u: float) -> pygame.Rect:
        r = self.rules
        x_u = r.paddle_margin_u if side == HOST else r.field_w_u - r.paddle_margin_u - r.paddle_w_u
        left, top = self.to_px(x_u, y_u - r.paddle_h_u / 2)
        return pygame.Rect(left, top, round(r.paddle_w_u * self._sx), round(r.paddle_h_u * self._sy))

    # ---- text helpers ----------------------------------------------------------------------------

    def text(
        self,
        s: str,
        pos: tuple[int, int],
        *,
        font: pygame.font.Font | None = None,
        colour: Colour = S.COLOUR_TEXT,
        anchor: str = "topleft",
    ) -> pygame.Rect:
        img = (font or self.fonts.small).render(s, True, colour)
        rect = img.get_rect(**{anchor: pos})
        self.surface.blit(img, rect)
        return rect

    def runs(
        self,
        parts: Sequence[tuple[str, Colour]],
        pos: tuple[int, int],
        *,
        font: pygame.font.Font | None = None,
    ) -> int:
        """Draw coloured pieces of text one after the other; returns the x after the last."""
        x, y = pos
        for s, colour in parts:
            x = self.text(s, (x, y), font=font, colour=colour).right
        return x

    def _wrap(self, s: str, font: pygame.font.Font, width: int) -> list[str]:
        lines: list[str] = []
        line = ""
        for word in s.split():
            trial = f"{line} {word}".strip()
            if font.size(trial)[0] <= width or not line:
                line = trial
            else:
                lines.append(line)
                line = word
        return lines + ([line] if line else [])

    # ---- the field -----------------------------------------------------------------------------

    def draw_field(self, view: Snapshot | None, info: SessionInfo | None) -> None:
        surf = self.surface
        surf.fill(S.COLOUR_BG)
        pygame.draw.rect(surf, S.COLOUR_FIELD, self.field_rect)
        # the walls the ball bounces off
        pygame.draw.line(
            surf, S.COLOUR_NET, self.field_rect.topleft, (self.field_rect.right, self.field_rect.top), 3
        )
        pygame.draw.line(
            surf,
            S.COLOUR_NET,
            (0, self.field_rect.bottom - 2),
            (self.field_rect.right, self.field_rect.bottom - 2),
            3,
        )
        # the net: a dashed centre line
        cx = self.field_rect.centerx
        for y in range(self.field_rect.top + 10, self.field_rect.bottom - 10, 28):
            pygame.draw.rect(surf, S.COLOUR_NET, (cx - 2, y, 4, 16))
        if view is None:
            return
        # The score, each digit in its player's colour, toned down so it never hides the ball.
        top = self.field_rect.top + 12
        f = self.fonts.score
        self.text(
            str(view.score[HOST]),
            (cx - 40, top),
            font=f,
            colour=_blend(S.COLOUR_FIELD, S.COLOUR_PADDLE_HOST, 0.45),
            anchor="topright",
        )
        self.text(
            str(view.score[GUEST]),
            (cx + 40, top),
            font=f,
            colour=_blend(S.COLOUR_FIELD, S.COLOUR_PADDLE_GUEST, 0.45),
            anchor="topleft",
        )
        for side, colour in ((HOST, S.COLOUR_PADDLE_HOST), (GUEST, S.COLOUR_PADDLE_GUEST)):
            pygame.draw.rect(surf, colour, self.paddle_rect(side, view.paddle_y[side]), border_radius=4)
        if view.winner is None:
            r = max(2, round(self.rules.ball_r_u * self._sx))
            centre = self.to_px(view.ball_x, view.ball_y)
            # A short tail along the velocity, so fast balls and spin read at a glance.
            if view.ball_vx or view.ball_vy:
                for i, k in ((3, 0.12), (2, 0.22), (1, 0.38)):
                    back = self.to_px(
                        view.ball_x - view.ball_vx * 0.014 * i, view.ball_y - view.ball_vy * 0.014 * i
                    )
                    pygame.draw.circle(surf, _blend(S.COLOUR_FIELD, S.COLOUR_BALL, k), back, max(1, r - i))
            pygame.draw.circle(surf, S.COLOUR_BALL, centre, r)

    def draw_notices(self, notices: Sequence[Notice], now: float, *, banner: str | None = None) -> None:
        """Recent notices at the bottom of the field; ``banner`` (e.g. an interruption) above them."""
        y = self.field_rect.bottom - 18
        for notice in reversed([n for n in notices if now - n.at < NOTICE_S][-3:]):
            fade = min(1.0, 2.0 * (NOTICE_S - (now - notice.at)) / NOTICE_S)
            colour = _blend(S.COLOUR_FIELD, S.COLOUR_WARN if notice.warn else S.COLOUR_TEXT, fade)
            rect = self.text(
                notice.text,
                (self.field_rect.centerx, y),
                font=self.fonts.medium,
                colour=colour,
                anchor="midbottom",
            )
            y = rect.top - 4
        if banner:
            box = pygame.Rect(0, 0, self.field_rect.width * 2 // 3, 56)
            box.center = self.field_rect.center
            pygame.draw.rect(self.surface, S.COLOUR_HUD_BG, box, border_radius=8)
            pygame.draw.rect(self.surface, S.COLOUR_WARN, box, width=2, border_radius=8)
            self.text(banner, box.center, font=self.fonts.medium, colour=S.COLOUR_WARN, anchor="center")

    # ---- the HUD band --------------------------------------------------------------------------

    def draw_hud(self, info: SessionInfo | None, stats: LinkStats | None, hint: str = "") -> None:
        """The band under the field: who plays, what was negotiated and reserved, live figures, a hint.

        Rows: player names (left host, right guest); what each region reserved; the negotiated
        format, class, suite and budget; the live figures against the budget; the hint.
        """
        surf, hud = self.surface, self.hud_rect
        pygame.draw.rect(surf, S.COLOUR_HUD_BG, hud)
        pygame.draw.line(surf, S.COLOUR_HUD_LINE, hud.topleft, (hud.right, hud.top), 2)
        left, right, mid = hud.left + PAD_PX, hud.right - PAD_PX, hud.centerx
        names_y, reserved_y, session_y, _, hint_y = (hud.top + dy for dy in HUD_ROWS_PX)
        if info is None:
            self.text("no session established", (left, names_y), colour=S.COLOUR_TEXT_DIM)
        else:
            host, guest = info.players
            medium = self.fonts.medium
            self.text(
                _label(host, info.local_side == HOST),
                (left, names_y),
                font=medium,
                colour=S.COLOUR_PADDLE_HOST,
            )
            self.text(
                _label(guest, info.local_side == GUEST),
                (right, names_y),
                font=medium,
                colour=S.COLOUR_PADDLE_GUEST,
                anchor="topright",
            )
            self.text(_reservation(host), (left, reserved_y), colour=S.COLOUR_TEXT_DIM)
            self.text(_reservation(guest), (right, reserved_y), colour=S.COLOUR_TEXT_DIM, anchor="topright")
            b = info.budget
            self.text(
                f"{info.game_format}  |  class {info.classification}  |  {info.security_suite}  |  "
                f"budget: rtt {b.latency_ms:g} ms, jitter {b.jitter_ms:g} ms, loss {b.loss_ppm / 10_000:.2f}%",
                (mid, session_y),
                anchor="midtop",
            )
            row = self.stats_row_rect
            pygame.draw.line(surf, S.COLOUR_HUD_LINE, (left, row.top - 4), (right, row.top - 4), 1)
            if stats is not None:
                self._draw_stats(info, stats, (left, row.top + 2))
        if hint:
            self.text(hint, (mid, hint_y), colour=S.COLOUR_TEXT_DIM, anchor="midtop")

    @property
    def stats_row_rect(self) -> pygame.Rect:
        """Where the live figures are drawn (tests check its colours)."""
        return pygame.Rect(self.hud_rect.left, self.hud_rect.top + HUD_ROWS_PX[3], self.hud_rect.width, 24)

    def _draw_stats(self, info: SessionInfo, stats: LinkStats, pos: tuple[int, int]) -> None:
        b = info.budget
        check = check_budget(stats, b)
        dim, f = S.COLOUR_TEXT_DIM, self.fonts.medium

        def verdict(over: bool, measured: bool = True) -> Colour:
            return dim if not measured else (S.COLOUR_BAD if over else S.COLOUR_OK)

        rtt = "--" if stats.rtt_ms is None else f"{stats.rtt_ms:.1f}"
        parts: list[tuple[str, Colour]] = [
            ("RTT ", dim),
            (f"{rtt} ms", verdict(check.rtt_over, stats.rtt_ms is not None)),
            (f" / {b.latency_ms:g}     ", dim),
            ("jitter ", dim),
            (f"{stats.jitter_ms:.1f} ms", verdict(check.jitter_over)),
            (f" / {b.jitter_ms:g}     ", dim),
            ("loss ", dim),
            (f"{stats.loss_ppm / 10_000:.2f}%", verdict(check.loss_over)),
            (f" / {b.loss_ppm / 10_000:.2f}%     ", dim),
            ("in ", dim),
            (f"{stats.kbps_in:.0f}", S.COLOUR_TEXT),
            ("  out ", dim),
            (f"{stats.kbps_out:.0f} kbit/s", S.COLOUR_TEXT),
        ]
        x = self.runs(parts, pos, font=f)
        state = ("within budget", S.COLOUR_OK) if check.ok else ("OVER BUDGET", S.COLOUR_BAD)
        self.text(
            state[0],
            (max(x + 24, self.hud_rect.right - PAD_PX), pos[1]),
            font=f,
            colour=state[1],
            anchor="topright",
        )

    # ---- whole screens ---------------------------------------------------------------------------

    def draw_match(
        self,
        view: Snapshot | None,
        info: SessionInfo | None,
        stats: LinkStats | None,
        *,
        notices: Sequence[Notice] = (),
        now: float = 0.0,
        banner: str | None = None,
        hint: str = "",
    ) -> None:
        self.draw_field(view, info)
        if view is None:
            self.text(
                "waiting for the first snapshot...",
                self.field_rect.center,
                font=self.fonts.medium,
                anchor="center",
            )
        self.draw_notices(notices, now, banner=banner)
        self.draw_hud(info, stats, hint)

    def draw_connecting(
        self, steps: Sequence[str], now: float, *, title: str = "Setting up the game session"
    ) -> None:
        """The lobby: each setup step as the link reports it."""
        self.draw_field(None, None)
        panel = self.field_rect.inflate(-120, -60)
        pygame.draw.rect(self.surface, S.COLOUR_HUD_BG, panel, border_radius=10)
        dots = "." * (1 + int(now * 3) % 3)
        self.text(title + dots, (panel.left + 24, panel.top + 20), font=self.fonts.large)
        self._draw_steps(steps, panel, top=panel.top + 76, last_active=True)
        self.draw_hud(None, None, "Esc to give up")

    def draw_outcome(
        self,
        outcome: Outcome,
        steps: Sequence[str],
        info: SessionInfo | None,
        stats: LinkStats | None,
        *,
        view: Snapshot | None = None,
    ) -> None:
        """The results, or why there is no game (a policy refusal, a dropped peer)."""
        self.draw_field(view, info)
        panel = self.field_rect.inflate(-160, -110)
        pygame.draw.rect(self.surface, S.COLOUR_HUD_BG, panel, border_radius=10)
        if outcome.reason == "failed":
            title, colour = "The session was refused", S.COLOUR_BAD
        elif outcome.reason == "peer-dropped":
            title, colour = "Connection lost", S.COLOUR_BAD
        elif outcome.reason == "quit":
            title, colour = "Match abandoned", S.COLOUR_WARN
        else:
            title, colour = "Match over", S.COLOUR_OK
        pygame.draw.rect(self.surface, colour, panel, width=2, border_radius=10)
        self.text(
            title, (panel.centerx, panel.top + 22), font=self.fonts.large, colour=colour, anchor="midtop"
        )
        y = panel.top + 76
        for line in self._wrap(outcome.message, self.fonts.medium, panel.width - 60):
            y = self.text(line, (panel.centerx, y), font=self.fonts.medium, anchor="midtop").bottom + 4
        if outcome.reason == "failed":
            self._draw_steps(steps[-6:], panel, top=y + 14, last_active=False, last_failed=True)
        self.text(
            "Enter or Esc to close",
            (panel.centerx, panel.bottom - 16),
            colour=S.COLOUR_TEXT_DIM,
            anchor="midbottom",
        )
        self.draw_hud(info, stats)

    def _draw_steps(
        self,
        steps: Sequence[str],
        panel: pygame.Rect,
        *,
        top: int,
        last_active: bool,
        last_failed: bool = False,
    ) -> None:
        y = top
        font = self.fonts.small
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            active = last_active and last
            if last and last_failed:
                mark, colour = "x", S.COLOUR_BAD
            else:
                mark, colour = ("-", S.COLOUR_TEXT) if active else ("+", S.COLOUR_OK)
            self.text(mark, (panel.left + 28, y), font=font, colour=colour)
            for line in self._wrap(step, font, panel.width - 80):
                y = (
                    self.text(
                        line,
                        (panel.left + 48, y),
                        font=font,
                        colour=S.COLOUR_TEXT if active else S.COLOUR_TEXT_DIM,
                    ).bottom
                    + 2
                )
            y += 6
            if y > panel.bottom - 30:
                break


def _blend(a: Colour, b: Colour, k: float) -> Colour:
    return (round(a[0] + (b[0] - a[0]) * k), round(a[1] + (b[1] - a[1]) * k), round(a[2] + (b[2] - a[2]) * k))


def _label(p: PlayerInfo, is_you: bool) -> str:
    return f"{p.name} ({p.region})" + ("  [you]" if is_you else "")


def _reservation(p: PlayerInfo) -> str:
    r = p.reservation
    if r is None:
        return f"{p.region}: no reservation known"
    return f"{r.region} reserved {r.up_kbps} up / {r.down_kbps} down kbit/s on {r.access_network}"
